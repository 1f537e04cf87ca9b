"""GB28181 voice broadcast (§9.12): Notify, the device's Response, its INVITE, our answer, BYE.

For each device of one API call (one source to many devices):

1. ``Notify/Broadcast`` goes out (SourceID = our platform id, TargetID = the
   channel: as asked, else the device's voice output channel from its
   catalog, else the device id); the wait for its INVITE starts
   (``invite_timeout``, 10 s by default, on the injected clock);
2. the device's ``Response/Broadcast`` is noted: ``ERROR`` ends its part with
   the device's reason;
3. its INVITE (From: the device or the channel) opens the talk session
   **before** the answer (the transaction layer has sent 100 Trying already;
   some devices connect as soon as they see the 200): TCP passive, TCP
   active or UDP as the offer says (:mod:`gb28181talk.sip.offer`); then 200
   with our SDP; the API hears the result.  The start is the core's
   ``TalkControl.start``, a Deferred: fired already (answered in the same
   turn) or later (a worker process); meanwhile the INVITE stays in
   Proceeding, a CANCEL gets 200 and 487 and a session that starts after it
   is stopped; no start within ``start_timeout`` (8 s) is answered 503;
4. a BYE (or CANCEL, or no ACK) from the device ends the session; any end of
   the session (timeout, device closed, source ended, stopped, shutdown)
   sends BYE.

A device already in a broadcast is refused (486) unless the call asks to
replace; an INVITE from a busy device with another Call-ID gets 486 Busy
Here.  A retransmitted INVITE is absorbed by the transaction layer; a
duplicate with the same Call-ID finds the same session and gets the same
answer (the Call-ID is the session's identity).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from gb28181talk.core.identity import CallId
from gb28181talk.core.talk import TalkControl
from gb28181talk.errors import GbTalkError, ManscdpError, SdpError
from gb28181talk.signalling.manscdp import BroadcastNotify, BroadcastResponse, build_xml, parse_xml
from gb28181talk.sip.calls import PlatformPort, audio_output
from gb28181talk.sip.dialog import Dialog, new_tag
from gb28181talk.sip.message import SipRequest, SipResponse, response_for
from gb28181talk.sip.offer import (
    MediaOptions,
    answer_sdp,
    media_options,
    parse_device_sdp,
    talk_request,
)
from gb28181talk.sip.seam import device_stream_name
from gb28181talk.sip.transaction import ServerTransaction

_log = Logger()

DEFAULT_INVITE_TIMEOUT = 10.0
"""Seconds to wait for the device's INVITE after the Notify (what platforms wait)."""

DEFAULT_START_TIMEOUT = 8.0
"""Seconds the device's INVITE waits in Proceeding for the core to start the session (well
inside the device's Timer B, 32 s), before 503."""

BUSY = 486


def user_of(uri: str) -> str:
    """The user part of a SIP URI or name-addr: ``<sip:3402...@3402000000>`` -> ``3402...``."""
    text = uri.strip()
    if "<" in text:
        text = text[text.index("<") + 1 :].split(">", 1)[0]
    if ":" in text:
        text = text.split(":", 1)[1]
    return text.split("@", 1)[0].split(";", 1)[0]


@dataclass(eq=False)
class _Broadcast:
    """One device's part of a broadcast call, from Notify to BYE."""

    device_id: str
    channel: str
    sn: int
    app: str
    stream: str
    options: MediaOptions
    state: str = "notifying"
    """``notifying`` (Response and INVITE awaited), ``starting`` (INVITE in, the session
    starting), ``answered``, ``confirmed``, ``ended``."""
    response: str | None = None
    call_id: str | None = None
    dialog: Dialog | None = None
    session: Any = None
    timer: IDelayedCall | None = None
    starting: list[ServerTransaction] | None = None
    """The INVITE transactions waiting while the core starts the session (None: not starting)."""
    start_timer: IDelayedCall | None = None
    result: Deferred[dict[str, Any]] = field(default_factory=Deferred)

    @property
    def live(self) -> bool:
        """Not ended."""
        return self.state != "ended"

    def report(self, outcome: dict[str, Any]) -> None:
        """The API's result for this device (the first one counts)."""
        if not self.result.called:
            self.result.callback({"device_id": self.device_id, "channel": self.channel,
                                  "response": self.response, **outcome})

    def cancel_timer(self) -> None:
        """No more waiting for the INVITE."""
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def end_start(self) -> list[ServerTransaction]:
        """The start is over (done, failed, too slow): the INVITEs that waited for it."""
        if self.start_timer is not None and self.start_timer.active():
            self.start_timer.cancel()
        self.start_timer = None
        waiting, self.starting = self.starting or [], None
        return waiting


class Broadcasts:
    """The broadcast flow of one SIP platform: ``start`` for the API, the rest for the SIP layer."""

    def __init__(
        self,
        clock: IReactorTime,
        platform: PlatformPort,
        core: TalkControl,
        *,
        advertise_ip: str,
        invite_timeout: float = DEFAULT_INVITE_TIMEOUT,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        channels_of: Callable[[str], Iterable[str]] = lambda device_id: (),
    ) -> None:
        """``channels_of(device_id)``: the channel ids of the device's catalog (the registry)."""
        self.clock = clock
        self.platform = platform
        self.dialogs = platform.layer
        self.channels_of = channels_of
        self.core = core
        self.advertise_ip = advertise_ip
        self.invite_timeout = invite_timeout
        self.start_timeout = start_timeout
        self._by_device: dict[str, _Broadcast] = {}
        self._by_call: dict[str, _Broadcast] = {}
        self._sn = itertools.count(1)
        platform.add_message_handler("Broadcast", self.message_received)

    # ------------------------------------------------------------------ the API's side

    def start(
        self,
        device_ids: list[str],
        app: str,
        stream: str,
        *,
        channel: str | None = None,
        options: MediaOptions | Mapping[str, Any] | None = None,
        replace: bool = False,
    ) -> Deferred[list[dict[str, Any]]]:
        """Broadcast ``app/stream`` to each device; fires with one result per device, in order.

        Raises the core's SourceNotFound/SourceEnded before anything is sent.
        A result is ``{"device_id", "channel", "result": "OK", "response",
        "call_id", "session_id", "transport", "port", "ssrc"}`` once the device's
        INVITE is answered, or ``{"device_id", "channel", "result": "ERROR",
        "status", "reason", "response"}``.
        """
        self.core.source(app, stream)
        options = media_options(options)
        parts = [self._start_one(device_id, app, stream, channel, options, replace)
                 for device_id in device_ids]
        gathered = DeferredList(parts, consumeErrors=True)
        return gathered.addCallback(lambda results: [value for _, value in results])

    def _start_one(self, device_id: str, app: str, stream: str, channel: str | None,
                   options: MediaOptions, replace: bool) -> Deferred[dict[str, Any]]:
        route = self.platform.locate(device_id)
        target = channel or audio_output(self.channels_of(device_id)) or device_id
        failed: Deferred[dict[str, Any]] = Deferred()
        if route is None:
            failed.callback(_error(device_id, target, 404,
                                   f"device {device_id} is not registered or not online"))
            return failed
        old = self._by_device.get(device_id)
        if old is not None and old.live:
            if not replace:
                failed.callback(_error(
                    device_id, target, BUSY,
                    f"device {device_id} is already in a broadcast ({old.state}, call "
                    f"{old.call_id or 'not yet placed'}); pass replace=true to replace it"))
                return failed
            self._end(old, "replaced by a new broadcast")
        part = _Broadcast(device_id, target, next(self._sn), app, stream, options)
        self._by_device[device_id] = part
        part.timer = self.clock.callLater(self.invite_timeout, self._no_invite, part)
        body = build_xml(BroadcastNotify(part.sn, self.platform.platform_id, target))
        sent = self.platform.send_message(device_id, body)
        sent.addCallbacks(self._notify_answered, self._notify_failed,
                          callbackArgs=(part,), errbackArgs=(part,))
        return part.result

    def stop(self, device_id: str) -> bool:
        """End the device's broadcast (BYE if the call is up); False if it has none."""
        part = self._by_device.get(device_id)
        if part is None or not part.live:
            return False
        self._end(part, "stopped")
        return True

    def describe(self) -> list[dict[str, Any]]:
        """The live broadcasts: device, channel, state, call and session."""
        return [
            {"device_id": part.device_id, "channel": part.channel, "state": part.state,
             "app": part.app, "stream": part.stream, "call_id": part.call_id,
             "session_id": part.session.id if part.session is not None else None}
            for part in self._by_device.values() if part.live
        ]

    # ------------------------------------------------------------------ Notify and Response

    def _notify_answered(self, resp: SipResponse, part: _Broadcast) -> None:
        if resp.success or not part.live or part.state != "notifying":
            return
        self._fail(part, resp.status,
                   f"the device answered the Notify/Broadcast {resp.status} {resp.reason}")

    def _notify_failed(self, failure: Failure, part: _Broadcast) -> None:
        if part.live and part.state == "notifying":
            self._fail(part, 408, f"the device did not answer the Notify/Broadcast "
                                  f"({failure.getErrorMessage()})")

    def message_received(self, incoming: Any) -> int | None:
        """A ``Response/Broadcast`` MESSAGE (an ``IncomingMessage``): answered 200 (None)."""
        try:
            message = parse_xml(incoming.body)
        except ManscdpError as error:
            _log.info("SIP broadcast MESSAGE unreadable: {error}", error=error)
            return 400
        if not isinstance(message, BroadcastResponse):
            return None
        part = self._for_response(message)
        if part is None:
            _log.info("SIP Response/Broadcast SN {sn} from {device} matches no broadcast",
                      sn=message.sn, device=message.device_id)
            return
        part.response = message.result
        if message.result == "ERROR" and part.state == "notifying":
            self._fail(part, 603, f"the device refused the broadcast: "
                                  f"{message.reason or 'no reason given'}")
        return None

    def _for_response(self, message: BroadcastResponse) -> _Broadcast | None:
        live = [part for part in self._by_device.values()
                if part.state in ("notifying", "starting")]
        for part in live:
            if part.sn == message.sn and message.device_id in (part.device_id, part.channel):
                return part
        for part in live:
            if message.device_id in (part.device_id, part.channel):
                return part
        return None

    def _no_invite(self, part: _Broadcast) -> None:
        part.timer = None
        if part.state == "notifying":
            self._fail(part, 408, f"no INVITE from the device within {self.invite_timeout:g} s "
                                  "of the Notify/Broadcast")

    # ------------------------------------------------------------------ the INVITE (CallFlow)

    def owns(self, call_id: str) -> bool:
        """Whether the call is a broadcast's."""
        return call_id in self._by_call

    def invite_received(self, transaction: ServerTransaction, invite: SipRequest) -> bool:
        """The device's broadcast INVITE: open the session, then answer 200; False if not ours."""
        part = self._by_call.get(invite.call_id) or self._waiting_for(invite)
        if part is None:
            busy = self._busy_for(invite)
            if busy is None:
                return False
            transaction.respond(response_for(invite, BUSY, to_tag=_tag(transaction)))
            _log.info("SIP INVITE {call_id} from {device}: 486, already in broadcast {other}",
                      call_id=invite.call_id, device=busy.device_id, other=busy.call_id)
            return True
        if part.starting is not None:  # the same call again while its session starts
            part.starting.append(transaction)
            return True
        try:
            offer = parse_device_sdp(invite.body)
            request = talk_request(offer, invite.call_id, part.app, part.stream, part.options,
                                   recv_stream_id=device_stream_name(invite.call_id))
        except SdpError as error:
            self._refuse(transaction, invite, part, 488, str(error))
            return True
        part.cancel_timer()
        first = part.call_id is None
        part.call_id = invite.call_id
        self._by_call[invite.call_id] = part
        if part.state == "notifying":
            part.state = "starting"
        part.starting = [transaction]
        # The core may start the session at once (a fired Deferred: answered in this turn) or
        # later (a worker process): until then the INVITE stays in Proceeding (100 sent),
        # where a CANCEL gets 200 and 487.
        started = maybeDeferred(self.core.start, request)
        part.start_timer = self.clock.callLater(self.start_timeout, self._start_too_slow, part,
                                                started)
        started.addCallbacks(self._started, self._start_failed,
                             callbackArgs=(part, invite, offer, first),
                             errbackArgs=(part, invite))
        return True

    def _started(self, session: Any, part: _Broadcast, invite: SipRequest, offer: Any,
                 first: bool) -> None:
        """The session listens: answer 200 with our SDP, unless the INVITE is gone meanwhile."""
        waiting = part.end_start()
        if not part.live or part.call_id != invite.call_id:
            _log.info("SIP broadcast {call_id}: the session started after the call ended "
                      "(cancelled or failed); stopping it", call_id=invite.call_id)
            self.core.stop(CallId(invite.call_id))
            return
        try:
            answer = answer_sdp(offer, session, address=self.advertise_ip,
                                platform_id=self.platform.platform_id, call_id=invite.call_id)
        except SdpError as error:
            for transaction in waiting:
                self._refuse(transaction, invite, part, 488, str(error))
            return
        part.session = session
        dialog = None
        for transaction in waiting:
            dialog = self.dialogs.answer(
                transaction, contact=self.platform.contact_for(transaction.channel),
                headers=[("Content-Type", "application/sdp")],
                body=answer.encode("utf-8")) or dialog
        if dialog is None and part.dialog is None:  # the INVITE failed while the session opened
            self._fail(part, 487, "the device's INVITE ended before the session was ready")
            return
        part.dialog = dialog or part.dialog
        if part.state in ("notifying", "starting"):
            part.state = "answered"
        if first:
            self.core.when_ended(CallId(invite.call_id)).addCallbacks(
                self._session_ended, lambda _: None, callbackArgs=(part,))
        part.report({
            "result": "OK", "call_id": invite.call_id, "session_id": session.id,
            "transport": str(session.params.transport), "port": session.port,
            "ssrc": f"{session.key.ssrc:010d}",
        })

    def _start_failed(self, failure: Failure, part: _Broadcast, invite: SipRequest) -> None:
        """The core refused the session (503 with its reason), or failed (500)."""
        waiting = part.end_start()
        if failure.check(CancelledError) and not part.live:
            return
        status = 503 if failure.check(GbTalkError) else 500
        if status == 500:
            _log.failure("SIP broadcast {call_id}: the session did not start", failure,
                         call_id=invite.call_id)
        for transaction in waiting:
            if transaction.state == "Proceeding":
                self._refuse(transaction, invite, part, status, failure.getErrorMessage())
        if part.live and part.dialog is None:
            self._fail(part, status, failure.getErrorMessage())

    def _start_too_slow(self, part: _Broadcast, started: Deferred[Any]) -> None:
        """The core did not start the session in ``start_timeout``: 503 now; stop it if it comes."""
        part.start_timer = None
        waiting = part.end_start()
        why = f"the talk session did not start within {self.start_timeout:g} s"
        for transaction in waiting:
            if transaction.state == "Proceeding":
                self._refuse(transaction, transaction.request, part, 503, why)
        if part.live and part.dialog is None:
            self._fail(part, 503, why)

    def _waiting_for(self, invite: SipRequest) -> _Broadcast | None:
        """The broadcast waiting for this device's INVITE (From: the device or the channel)."""
        caller = user_of(invite.header("From") or "")
        subject = (invite.header("Subject") or "").split(":", 1)[0].strip()
        for part in self._by_device.values():
            if part.state == "notifying" and part.call_id is None and (
                caller in (part.device_id, part.channel) or subject == part.channel
            ):
                return part
        return None

    def _busy_for(self, invite: SipRequest) -> _Broadcast | None:
        caller = user_of(invite.header("From") or "")
        for part in self._by_device.values():
            if part.state in ("starting", "answered", "confirmed") and caller in (part.device_id,
                                                                       part.channel):
                return part
        return None

    def _refuse(self, transaction: ServerTransaction, invite: SipRequest, part: _Broadcast,
                status: int, why: str) -> None:
        _log.info("SIP broadcast INVITE {call_id} refused {status}: {why}",
                  call_id=invite.call_id, status=status, why=why)
        transaction.respond(response_for(invite, status, to_tag=_tag(transaction),
                                         headers=[("Warning", f'399 gb28181talk "{_q(why)}"')]))
        if part.dialog is None:  # no call is up: this broadcast's part has failed
            self._fail(part, status, why)

    def invite_cancelled(self, transaction: ServerTransaction, cancel: SipRequest) -> None:
        """The device cancelled before our answer (it got 200 and 487): the call ends, and a
        session that is still starting is stopped when it comes.  A cancelled re-INVITE leaves
        the call up (RFC 3261 §9.2)."""
        part = self._by_call.get(cancel.call_id)
        if part is None:
            return
        if part.starting is not None and transaction in part.starting:
            part.starting.remove(transaction)
            if part.starting or part.dialog is not None:
                return
        elif part.dialog is not None:
            return
        self._fail(part, 487, "the device cancelled its INVITE")

    def dialog_confirmed(self, dialog: Dialog) -> None:
        """The ACK came: streaming as soon as the device connects (or already)."""
        part = self._by_call.get(dialog.call_id)
        if part is not None and part.state == "answered":
            part.state = "confirmed"

    def dialog_ended(self, dialog: Dialog, reason: str) -> None:
        """BYE from the device (or no ACK, or our own BYE): the session ends, the call is over."""
        part = self._by_call.get(dialog.call_id)
        if part is None:
            return
        self._forget(part)
        self.core.stop(CallId(dialog.call_id))
        _log.info("SIP broadcast {call_id} to {device} ended: {reason}",
                  call_id=dialog.call_id, device=part.device_id, reason=reason)

    # ------------------------------------------------------------------ endings

    def _session_ended(self, reason: str, part: _Broadcast) -> None:
        """The session ended (timeout, device closed, source ended, stopped...): BYE."""
        dialog = part.dialog
        self._forget(part)
        if dialog is not None and dialog.state != "terminated":
            _log.info("SIP broadcast {call_id}: the session ended ({reason}); sending BYE",
                      call_id=dialog.call_id, reason=reason)
            self.dialogs.bye(dialog)

    def _end(self, part: _Broadcast, why: str) -> None:
        """End the part whatever its state: the session (and so BYE), or the wait."""
        if part.call_id is not None and self.core.stop(CallId(part.call_id)):
            return  # _session_ended sends BYE and forgets it
        if part.dialog is not None and part.dialog.state != "terminated":
            self.dialogs.bye(part.dialog)
        self._fail(part, 409, why)

    def _fail(self, part: _Broadcast, status: int, why: str) -> None:
        part.report(_error(part.device_id, part.channel, status, why))
        if part.call_id is not None:
            self.core.stop(CallId(part.call_id))
        self._forget(part)

    def _forget(self, part: _Broadcast) -> None:
        part.cancel_timer()
        part.end_start()
        part.state = "ended"
        if self._by_device.get(part.device_id) is part:
            del self._by_device[part.device_id]
        if part.call_id is not None and self._by_call.get(part.call_id) is part:
            del self._by_call[part.call_id]
        if not part.result.called:
            part.report(_error(part.device_id, part.channel, 409, "ended"))


def _error(device_id: str, channel: str, status: int, reason: str) -> dict[str, Any]:
    return {"device_id": device_id, "channel": channel, "result": "ERROR", "status": status,
            "reason": reason}


def _tag(transaction: ServerTransaction) -> str:
    if transaction.to_tag is None:
        transaction.to_tag = new_tag()
    return transaction.to_tag


def _q(text: str) -> str:
    return "".join(c if c.isprintable() and c not in '"\\' else "'" for c in text)[:200]
