"""SIP dialogs (RFC 3261 §12-§15) over the transaction layer: INVITE, ACK, BYE, CANCEL, 481.

:class:`Dialog` is the state of one call: Call-ID, local and remote tags and
URIs, CSeq numbers, the remote target (Contact) and the route set (from
Record-Route), and builds requests inside the dialog (§12.2.1.1, loose and
strict routes).  :class:`DialogLayer` is the transaction layer's user: it
keeps the dialogs of one SIP stack and does what RFC 3261 asks of a UA core
whatever the application is:

* a 2xx to an INVITE is retransmitted (T1 doubling to T2) until its ACK
  arrives (§13.3.1.4); no ACK in 64*T1 ends the dialog with ``no-ack`` and a BYE;
* an ACK to a 2xx confirms its dialog; a retransmitted 2xx we received is ACKed again;
* BYE in either direction ends the dialog (§15); CANCEL of an INVITE not yet
  answered gets 200 and the INVITE 487 (§9.2);
* a request for a dialog or transaction that does not exist gets 481 (§12.2.2, §9.2),
  a CSeq lower than the last one 500, a method we do not know 501.

The application (the GB28181 platform part) is a :class:`DialogUser`: it is
told of a new INVITE and answers with :meth:`DialogLayer.answer` or a
failure, is told when a dialog is confirmed or ends (with the reason), and
gets the requests outside dialogs (REGISTER, MESSAGE...).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from gb28181talk.sip.message import (
    NameAddr,
    SipRequest,
    SipResponse,
    SipUri,
    request,
    response_for,
)
from gb28181talk.sip.transaction import (
    Channel,
    ClientTransaction,
    ServerTransaction,
    Timers,
    TransactionLayer,
)

_log = Logger()

KNOWN_METHODS = frozenset(
    {"INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "MESSAGE", "OPTIONS", "INFO", "NOTIFY",
     "SUBSCRIBE", "UPDATE", "PRACK", "REFER"}
)  # fmt: skip
"""Methods answered by the application or the dialog layer; any other gets 501."""

DialogId = tuple[str, str, str]

MAX_ENDED_REMEMBERED = 4096
"""Ended dialogs we called that are remembered, so a late retransmitted 2xx is only ACKed."""


def new_tag() -> str:
    """A fresh tag (§19.3): 64 random bits."""
    return os.urandom(8).hex()


@dataclass(eq=False)
class Dialog:
    """One dialog's state (§12): identity, sequence numbers, remote target, route set."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    remote_target: str
    route_set: list[str]
    local_seq: int
    remote_seq: int | None
    channel: Channel
    role: str
    """``uas`` when the other side's INVITE made it, ``uac`` when ours did."""
    state: str = "early"
    """``early`` (answered, no ACK yet, UAS), ``confirmed``, ``terminated``."""
    invite_cseq: int = 0
    end_reason: str | None = None
    local_contact: str | None = None
    answer: SipResponse | None = None
    """Our 2xx that made the dialog (UAS): a late duplicate of the INVITE gets it again."""
    answered_cseqs: list[int] = field(default_factory=list)
    """The CSeq numbers of the INVITEs we answered 2xx in this dialog."""

    @property
    def id(self) -> DialogId:
        """(Call-ID, local tag, remote tag): the dialog's identity (§12)."""
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def as_uas(cls, req: SipRequest, ok: SipResponse, channel: Channel) -> Dialog:
        """The dialog our 2xx to ``req`` makes (§12.1.1)."""
        contacts = req.contacts
        return cls(
            call_id=req.call_id,
            local_tag=ok.to.tag or "",
            remote_tag=req.from_.tag or "",
            local_uri=req.to.uri,
            remote_uri=req.from_.uri,
            remote_target=contacts[0].uri if contacts else req.from_.uri,
            route_set=req.values("Record-Route"),
            local_seq=int.from_bytes(os.urandom(2), "big"),
            remote_seq=req.cseq.number,
            channel=channel,
            role="uas",
            invite_cseq=req.cseq.number,
            local_contact=(ok.contacts[0].uri if ok.contacts else None),
        )

    @classmethod
    def as_uac(cls, req: SipRequest, ok: SipResponse, channel: Channel) -> Dialog:
        """The dialog the other side's 2xx to our ``req`` makes (§12.1.2)."""
        contacts = ok.contacts
        return cls(
            call_id=req.call_id,
            local_tag=req.from_.tag or "",
            remote_tag=ok.to.tag or "",
            local_uri=req.from_.uri,
            remote_uri=req.to.uri,
            remote_target=contacts[0].uri if contacts else req.uri,
            route_set=list(reversed(ok.values("Record-Route"))),
            local_seq=req.cseq.number,
            remote_seq=None,
            channel=channel,
            role="uac",
            state="confirmed",
            invite_cseq=req.cseq.number,
            local_contact=(req.contacts[0].uri if req.contacts else None),
        )

    def _target_and_routes(self) -> tuple[str, list[str]]:
        """Request-URI and Route lines (§12.2.1.1): loose routing, or the strict-router rewrite."""
        if not self.route_set:
            return self.remote_target, []
        first = NameAddr.parse(self.route_set[0])
        try:
            loose = SipUri.parse(first.uri).loose_route
        except Exception:  # a route we cannot read is taken as loose
            loose = True
        if loose:
            return self.remote_target, list(self.route_set)
        return first.uri, [*self.route_set[1:], f"<{self.remote_target}>"]

    def new_request(
        self,
        method: str,
        via: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        *,
        cseq: int | None = None,
    ) -> SipRequest:
        """A request inside the dialog (§12.2.1.1); the next local CSeq unless ``cseq`` is given."""
        if cseq is None:
            self.local_seq += 1
            cseq = self.local_seq
        uri, routes = self._target_and_routes()
        lines: list[tuple[str, str]] = [("Via", via)]
        lines += [("Route", route) for route in routes]
        lines += [
            ("From", str(NameAddr(self.local_uri).with_param("tag", self.local_tag))),
            ("To", str(NameAddr(self.remote_uri).with_param("tag", self.remote_tag))),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
            ("Max-Forwards", "70"),
        ]
        if self.local_contact is not None and method in ("INVITE", "UPDATE"):
            lines.append(("Contact", f"<{self.local_contact}>"))
        return request(method, uri, [*lines, *headers], body)

    def ack(self, via: str) -> SipRequest:
        """The ACK to the 2xx of our INVITE (§13.2.2.4): the INVITE's CSeq number."""
        return self.new_request("ACK", via, cseq=self.invite_cseq)

    def accept(self, req: SipRequest) -> int | None:
        """Take a request from the other side (§12.2.2); a status to refuse it with, or None."""
        number = req.cseq.number
        if req.method not in ("ACK", "CANCEL"):
            if self.remote_seq is not None and number < self.remote_seq:
                return 500
            if self.remote_seq is not None and number == self.remote_seq and req.method != "BYE":
                return 500
            self.remote_seq = number
        if req.method == "INVITE" and req.contacts:  # a target refresh (§12.2.2)
            self.remote_target = req.contacts[0].uri
        return None


class DialogUser(Protocol):
    """The application above the dialogs: the GB28181 platform, or a test."""

    def invite_received(self, transaction: ServerTransaction, invite: SipRequest) -> None:
        """A new INVITE: answer with :meth:`DialogLayer.answer` or ``transaction.respond``."""

    def invite_cancelled(self, transaction: ServerTransaction, cancel: SipRequest) -> None:
        """The INVITE of ``transaction`` was cancelled (it got 487)."""

    def dialog_confirmed(self, dialog: Dialog) -> None:
        """The ACK to our 2xx arrived (UAS), or we ACKed theirs (UAC)."""

    def dialog_ended(self, dialog: Dialog, reason: str) -> None:
        """Why: ``bye`` (they hung up), ``local-bye`` (we did), ``no-ack``, ``cancelled``."""

    def request_received(self, transaction: ServerTransaction, req: SipRequest) -> None:
        """Any other request: outside a dialog (REGISTER, MESSAGE...) or inside one (INFO...)."""

    def response_received(self, transaction: ClientTransaction, resp: SipResponse) -> None:
        """A response to a request the application sent through the layer."""

    def request_failed(self, transaction: ClientTransaction, reason: str) -> None:
        """A request the application sent got no final answer (``timeout``, ``transport``)."""


@dataclass(eq=False)
class _Answer:
    """A 2xx we sent to an INVITE, retransmitted until its ACK (§13.3.1.4)."""

    transaction: ServerTransaction
    ok: SipResponse
    dialog: Dialog
    interval: float
    timer: IDelayedCall | None = field(default=None)
    give_up: IDelayedCall | None = field(default=None)

    def stop(self) -> None:
        """The ACK came, or the dialog ended: no more retransmissions."""
        for timer in (self.timer, self.give_up):
            if timer is not None and timer.active():
                timer.cancel()
        self.timer = self.give_up = None

    def timers(self) -> list[IDelayedCall]:
        """The retransmission and give-up timers still to fire."""
        return [t for t in (self.timer, self.give_up) if t is not None and t.active()]


class DialogLayer:
    """The dialogs of one SIP stack: the transaction layer's user, the application's provider."""

    def __init__(
        self,
        clock: IReactorTime,
        app: DialogUser,
        *,
        via: Callable[[Channel], str],
        timers: Timers | None = None,
    ) -> None:
        """``via(channel)`` gives the Via value (with a fresh branch) for a request we send."""
        self.clock = clock
        self.app = app
        self.via = via
        self.transactions = TransactionLayer(clock, self, timers)
        self.dialogs: dict[DialogId, Dialog] = {}
        self._answers: dict[DialogId, _Answer] = {}
        self._ended: OrderedDict[DialogId, Dialog] = OrderedDict()
        """Recently ended dialogs we called: a late 2xx is ACKed, never a new call."""
        self._cancelled: set[Any] = set()
        self._cancel_waiting: set[Any] = set()
        self._answered: dict[tuple[str, str, int], Dialog] = {}
        """Answered calls by (Call-ID, their tag, INVITE CSeq), to know late duplicate INVITEs."""

    @property
    def timers(self) -> Timers:
        """The transaction layer's timer values."""
        return self.transactions.timers

    # ---------------------------------------------------------------- as the UAS
    def request_received(self, transaction: ServerTransaction, req: SipRequest) -> None:
        """The transaction layer's news of a new request (see the module's rules)."""
        if req.method not in KNOWN_METHODS:
            allow = ", ".join(sorted(KNOWN_METHODS))
            transaction.respond(response_for(req, 501, headers=[("Allow", allow)]))
            return
        if req.method == "CANCEL":
            self._cancel(transaction, req)
            return
        to_tag = req.to.tag
        if to_tag is None:
            if req.method == "BYE":
                transaction.respond(response_for(req, 481))
            elif req.method == "INVITE":
                answered = self._answered.get((req.call_id, req.from_.tag or "", req.cseq.number))
                if answered is not None and answered.answer is not None:
                    transaction.respond(answered.answer)  # a late duplicate: the same answer
                else:
                    self.app.invite_received(transaction, req)
            else:
                self.app.request_received(transaction, req)
            return
        dialog = self.dialogs.get((req.call_id, to_tag, req.from_.tag or ""))
        if dialog is None:
            transaction.respond(response_for(req, 481))
            return
        refused = dialog.accept(req)
        if refused is not None:
            transaction.respond(response_for(req, refused))
            return
        if req.method == "BYE":
            transaction.respond(response_for(req, 200))
            self._end(dialog, "bye")
        elif req.method == "INVITE":
            self.app.invite_received(transaction, req)  # a re-INVITE: same rules as the first
        else:
            self.app.request_received(transaction, req)

    def _cancel(self, transaction: ServerTransaction, cancel: SipRequest) -> None:
        invite = self.transactions.find_invite(cancel)
        if invite is None:
            transaction.respond(response_for(cancel, 481))
            return
        transaction.respond(response_for(cancel, 200, to_tag=self._tag_for(invite)))
        if invite.state == "Proceeding":
            invite.respond(response_for(invite.request, 487, to_tag=self._tag_for(invite)))
            self.app.invite_cancelled(invite, cancel)

    def _tag_for(self, transaction: ServerTransaction) -> str:
        """The To tag this INVITE's answers carry (a provisional may have set it)."""
        if transaction.to_tag is None:
            last = transaction.last_response
            tag = last.to.tag if last is not None else None
            transaction.to_tag = tag or new_tag()
        return transaction.to_tag

    def answer(
        self,
        transaction: ServerTransaction,
        status: int = 200,
        *,
        contact: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> Dialog | None:
        """Answer an INVITE with a 2xx: the dialog is made, and the 2xx resent until its ACK.

        None when the INVITE already has its final answer (it was cancelled, or the
        transaction failed while the application prepared the session): no dialog,
        nothing sent; the application releases what it prepared.
        """
        if transaction.state != "Proceeding":
            return None
        invite = transaction.request
        ok = response_for(
            invite,
            status,
            to_tag=self._tag_for(transaction),
            headers=[
                *((n, v) for n, v in invite.headers if n == "Record-Route"),
                ("Contact", f"<{contact}>"),
                *headers,
            ],
            body=body,
        )
        existing = self.dialogs.get((invite.call_id, ok.to.tag or "", invite.from_.tag or ""))
        dialog = existing or Dialog.as_uas(invite, ok, transaction.channel)
        dialog.state = "early" if existing is None else dialog.state
        dialog.answer = ok
        self.dialogs[dialog.id] = dialog
        self._answered[(invite.call_id, dialog.remote_tag, invite.cseq.number)] = dialog
        dialog.answered_cseqs.append(invite.cseq.number)
        transaction.respond(ok)
        answer = _Answer(transaction, ok, dialog, self.timers.t1)
        old = self._answers.pop(dialog.id, None)
        if old is not None:
            old.stop()
        self._answers[dialog.id] = answer
        answer.timer = self.clock.callLater(answer.interval, self._resend, answer)
        answer.give_up = self.clock.callLater(self.timers.timeout, self._no_ack, answer)
        return dialog

    def _no_ack(self, answer: _Answer) -> None:
        """64*T1 without the ACK (§13.3.1.4): the dialog ends and a BYE goes out."""
        answer.stop()
        self._answers.pop(answer.dialog.id, None)
        _log.info(
            "SIP call {call_id}: no ACK to our {status} in {seconds:g} s; sending BYE",
            call_id=answer.dialog.call_id,
            status=answer.ok.status,
            seconds=self.timers.timeout,
        )
        self._end(answer.dialog, "no-ack")
        self._send_bye(answer.dialog)

    def _resend(self, answer: _Answer) -> None:
        answer.timer = None
        answer.transaction.respond(answer.ok)
        answer.interval = min(answer.interval * 2, self.timers.t2)
        answer.timer = self.clock.callLater(answer.interval, self._resend, answer)

    def ack_received(self, ack: SipRequest, channel: Channel) -> None:
        """An ACK to a 2xx: stops that 2xx's retransmission and confirms the dialog."""
        dialog = self.dialogs.get((ack.call_id, ack.to.tag or "", ack.from_.tag or ""))
        if dialog is None:
            _log.debug("SIP ACK for no dialog (Call-ID {call_id}) dropped", call_id=ack.call_id)
            return
        answer = self._answers.pop(dialog.id, None)
        if answer is not None:
            answer.stop()
        if dialog.state == "early":
            dialog.state = "confirmed"
            self.app.dialog_confirmed(dialog)

    # ---------------------------------------------------------------- as the UAC
    def send(self, req: SipRequest, channel: Channel) -> ClientTransaction:
        """Send a request (MESSAGE, INVITE...) in a client transaction; answers go to the app."""
        return self.transactions.send_request(req, channel, self)

    def bye(self, dialog: Dialog) -> ClientTransaction | None:
        """Hang up: the dialog ends now (``local-bye``) and a BYE goes out (§15.1.1)."""
        if dialog.state == "terminated":
            return None
        self._end(dialog, "local-bye")
        return self._send_bye(dialog)

    def _send_bye(self, dialog: Dialog) -> ClientTransaction:
        bye = dialog.new_request("BYE", self.via(dialog.channel))
        return self.transactions.send_request(bye, dialog.channel, _Quiet())

    def response_received(self, transaction: ClientTransaction, resp: SipResponse) -> None:
        """A response to a request we sent: dialogs made from 2xx to INVITE, then the app."""
        req = transaction.request
        if req.method != "INVITE":
            self.app.response_received(transaction, resp)
            return
        if resp.provisional and transaction.key in self._cancel_waiting:
            self._cancel_waiting.discard(transaction.key)
            self._send_cancel(transaction)
        if not resp.success:
            self._cancel_waiting.discard(transaction.key)
            self._cancelled.discard(transaction.key)
            self.app.response_received(transaction, resp)
            return
        key = (req.call_id, req.from_.tag or "", resp.to.tag or "")
        known = self.dialogs.get(key) or self._ended.get(key)
        if known is not None:
            self._send_ack(known)  # a retransmitted 2xx: ACKed again, nothing new
            return
        dialog = Dialog.as_uac(req, resp, transaction.channel)
        self.dialogs[dialog.id] = dialog
        self._send_ack(dialog)
        self.app.response_received(transaction, resp)
        if transaction.key in self._cancelled:  # the 2xx crossed our CANCEL: hang up (§9.1)
            self._cancelled.discard(transaction.key)
            self._end(dialog, "cancelled")
            self._send_bye(dialog)
            return
        self.app.dialog_confirmed(dialog)

    def cancel(self, transaction: ClientTransaction) -> bool:
        """Cancel our INVITE (§9.1): CANCEL now if it was answered 1xx, else at its first 1xx.

        False when there is nothing to cancel (not an INVITE, or it has its final answer).
        A 2xx that crosses the CANCEL is ACKed and the call hung up (``cancelled``).
        """
        if transaction.request.method != "INVITE" or transaction.state not in (
            "Calling",
            "Proceeding",
        ):
            return False
        self._cancelled.add(transaction.key)
        if transaction.state == "Proceeding":
            self._send_cancel(transaction)
        else:
            self._cancel_waiting.add(transaction.key)  # no CANCEL before a provisional (§9.1)
        return True

    def _send_cancel(self, transaction: ClientTransaction) -> None:
        invite = transaction.request
        headers = [("Via", invite.values("Via")[0])]
        headers += [(n, v) for n, v in invite.headers if n == "Route"]
        headers += [
            ("From", invite.header("From") or ""),
            ("To", invite.header("To") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq.number} CANCEL"),
            ("Max-Forwards", "70"),
        ]
        cancel = request("CANCEL", invite.uri, headers)
        self.transactions.send_request(cancel, transaction.channel, _Quiet())

    def _send_ack(self, dialog: Dialog) -> None:
        try:
            dialog.channel.send(dialog.ack(self.via(dialog.channel)))
        except OSError as e:
            _log.info("SIP ACK for {call_id} not sent: {error}", call_id=dialog.call_id, error=e)

    def response_unmatched(self, resp: SipResponse, channel: Channel) -> None:
        """A 2xx to an INVITE after its transaction ended: ACK again (§13.2.2.4); else drop."""
        if resp.cseq.method == "INVITE" and resp.success:
            key = (resp.call_id, resp.from_.tag or "", resp.to.tag or "")
            dialog = self.dialogs.get(key) or self._ended.get(key)
            if dialog is not None and dialog.role == "uac":
                self._send_ack(dialog)

    def transaction_failed(self, transaction: Any, reason: str) -> None:
        """A transaction ended without its answer: dialogs that depended on it end too."""
        if isinstance(transaction, ClientTransaction):
            self._cancelled.discard(transaction.key)
            self._cancel_waiting.discard(transaction.key)
            self.app.request_failed(transaction, reason)
            return
        _log.info(
            "SIP {method} transaction failed: {reason}",
            method=transaction.request.method,
            reason=reason,
        )

    # ---------------------------------------------------------------- ending
    def _end(self, dialog: Dialog, reason: str) -> None:
        if dialog.state == "terminated":
            return
        dialog.state = "terminated"
        dialog.end_reason = reason
        self.dialogs.pop(dialog.id, None)
        for number in dialog.answered_cseqs:
            self._answered.pop((dialog.call_id, dialog.remote_tag, number), None)
        if dialog.role == "uac":
            self._ended[dialog.id] = dialog
            while len(self._ended) > MAX_ENDED_REMEMBERED:
                self._ended.popitem(last=False)
        answer = self._answers.pop(dialog.id, None)
        if answer is not None:
            answer.stop()
        self.app.dialog_ended(dialog, reason)

    def pending_timers(self) -> list[IDelayedCall]:
        """Every timer the layer and its transactions hold (tests check none leaks)."""
        mine = [timer for answer in self._answers.values() for timer in answer.timers()]
        return [*mine, *self.transactions.pending_timers()]


class _Quiet:
    """The user of our own BYEs: their answers change nothing (the dialog already ended)."""

    def response_received(self, transaction: ClientTransaction, resp: SipResponse) -> None:
        """Nothing to do."""

    def transaction_failed(self, transaction: ClientTransaction, reason: str) -> None:
        """Nothing to do."""
