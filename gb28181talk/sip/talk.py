"""GB28181 two-way talk placed by the platform: our ``s=Talk`` INVITE, the device's voice back.

:meth:`Talks.start` opens a two-way TCP passive talk session first (its port
goes in the offer: ``s=Talk``, ``sendrecv``, ``a=setup:passive``,
``a=connection:new``, ``y=``, ``f=``), then INVITEs the device's channel.  The
device's 200 decides the transport (:mod:`gb28181talk.sip.offer`): it
connects to us (``a=setup:active``), or it listens and we connect to its
``c=``/``m=`` (``a=setup:passive``), or UDP (``RTP/AVP``); for the latter two
the session is replaced by one of that kind before the ACK (our layer ACKs).
The device's audio is published as the live source ``<app>/talk-<device id>``
(listenable by other sessions, recorded under ``--record-dir``: the core
does this for every two-way session).

A BYE from the device ends the session; any end of the session sends BYE,
or CANCEL while the device has not answered yet.  One talk per device: a
second is refused (486) unless it asks to replace.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from gb28181talk.core.identity import CallId, OnRepeat
from gb28181talk.core.params import SessionKey, SessionParams, TransportKind
from gb28181talk.core.request import TalkRequest
from gb28181talk.core.talk import TalkControl
from gb28181talk.errors import GbTalkError
from gb28181talk.sip.calls import PlatformPort, audio_output
from gb28181talk.sip.dialog import Dialog
from gb28181talk.sip.message import SipRequest, SipResponse
from gb28181talk.sip.offer import (
    DEFAULT_VHOST,
    MediaOptions,
    media_options,
    parse_device_sdp,
    talk_offer,
    talk_request,
    transport_of,
)
from gb28181talk.sip.transaction import ClientTransaction, ServerTransaction

_log = Logger()

BUSY = 486


def device_audio_name(device_id: str) -> str:
    """The stream name the device's voice is published under: ``talk-<device id>``."""
    return f"talk-{device_id}"


@dataclass(eq=False)
class _Talk:
    """One talk call, from our INVITE to BYE."""

    device_id: str
    channel: str
    app: str
    stream: str
    token: str
    """The session's identity in the core (known before the SIP Call-ID is)."""
    subject: str
    state: str = "inviting"
    """``inviting`` (our INVITE unanswered), ``up`` (answered and ACKed), ``ended``."""
    call_id: str | None = None
    dialog: Dialog | None = None
    session: Any = None
    transaction: ClientTransaction | None = None
    result: Deferred[dict[str, Any]] = field(default_factory=Deferred)

    @property
    def identity(self) -> CallId:
        """The core's identity of the call's session."""
        return CallId(self.token)

    def report(self, outcome: dict[str, Any]) -> None:
        """The API's result (the first one counts)."""
        if not self.result.called:
            self.result.callback({"device_id": self.device_id, "channel": self.channel,
                                  **outcome})


class Talks:
    """The talk flow of one SIP platform: ``start``/``stop`` for the API, dialog news from SIP."""

    def __init__(
        self,
        platform: PlatformPort,
        core: TalkControl,
        *,
        advertise_ip: str,
        domain: str = "",
        channels_of: Callable[[str], Iterable[str]] = lambda device_id: (),
    ) -> None:
        self.platform = platform
        self.core = core
        self.advertise_ip = advertise_ip
        self.domain = domain or getattr(platform, "domain", "") or platform.platform_id[:10]
        self.channels_of = channels_of
        self._by_device: dict[str, _Talk] = {}
        self._by_call: dict[str, _Talk] = {}
        self._seq = itertools.count(1)

    # ------------------------------------------------------------------ the API's side

    def start(
        self,
        device_id: str,
        app: str,
        stream: str,
        *,
        channel: str | None = None,
        options: MediaOptions | Mapping[str, Any] | None = None,
        replace: bool = False,
    ) -> Deferred[dict[str, Any]]:
        """Talk with the device, our audio from ``app/stream``; fires with the result.

        ``{"device_id", "channel", "result": "OK", "call_id", "session_id",
        "transport", "port", "ssrc", "device_audio": "<app>/talk-<id>"}`` once
        the device answered 200, or ``{"device_id", "channel", "result":
        "ERROR", "status", "reason"}``.  The source is checked first
        (SourceNotFound/SourceEnded raised); the core's refusals are raised too.
        """
        self.core.source(app, stream)
        options = media_options(options)
        target = channel or audio_output(self.channels_of(device_id)) or device_id
        if self.platform.locate(device_id) is None:
            return succeed(_error(device_id, target, 404,
                                  f"device {device_id} is not registered or not online"))
        old = self._by_device.get(device_id)
        if old is not None and old.state != "ended":
            if not replace:
                return succeed(_error(
                    device_id, target, BUSY,
                    f"device {device_id} is already in a talk ({old.state}, call "
                    f"{old.call_id or 'not yet answered'}); pass replace=true to replace it"))
            self._end(old, "replaced by a new talk")
        seq = next(self._seq)
        ssrc = int(f"0{self.domain[3:8].ljust(5, '0')}{seq % 10000:04d}")
        part = _Talk(device_id, target, app, stream, token=f"talk-{device_id}-{seq}",
                     subject=f"{target}:{ssrc:010d},{self.platform.platform_id}:{seq}")
        params = SessionParams(
            key=SessionKey(DEFAULT_VHOST, app, stream, ssrc), framing=options.framing,
            packet_ms=options.packet_ms, wait_timeout=options.wait_timeout,
            preroll_ms=options.preroll_ms, receive=True,
        )
        session = self.core.start_now(TalkRequest(
            params, recv_stream_id=device_audio_name(device_id), identity=part.identity,
            on_repeat=OnRepeat.REPLACE_IF_CHANGED))
        part.session = session
        self._by_device[device_id] = part
        self.core.when_ended(part.identity).addCallbacks(
            self._session_ended, lambda _: None, callbackArgs=(part,))
        offer = talk_offer(address=self.advertise_ip, port=session.port,
                           platform_id=self.platform.platform_id, ssrc=ssrc, law=session.params.law)
        answered = self.platform.send_request(
            device_id, "INVITE", body=offer.encode("utf-8"), content_type="application/sdp",
            headers=[("Subject", part.subject)],
            to_uri=f"sip:{target}@{self.domain}")
        part.transaction = self._transaction_of(part)
        answered.addCallbacks(self._answered, self._failed, callbackArgs=(part,),
                              errbackArgs=(part,))
        return part.result

    def stop(self, device_id: str) -> bool:
        """End the device's talk (BYE, or CANCEL if unanswered); False if it has none."""
        part = self._by_device.get(device_id)
        if part is None or part.state == "ended":
            return False
        self._end(part, "stopped")
        return True

    def describe(self) -> list[dict[str, Any]]:
        """The live talks: device, channel, state, call, session, where the device's audio is."""
        return [
            {"device_id": part.device_id, "channel": part.channel, "state": part.state,
             "app": part.app, "stream": part.stream, "call_id": part.call_id,
             "session_id": part.session.id if part.session is not None else None,
             "device_audio": f"{part.app}/{device_audio_name(part.device_id)}"}
            for part in self._by_device.values() if part.state != "ended"
        ]

    def _transaction_of(self, part: _Talk) -> ClientTransaction | None:
        """Our INVITE's client transaction (to CANCEL it), found by its unique Subject."""
        for transaction in self.platform.layer.transactions.clients.values():
            req = transaction.request
            if req.method == "INVITE" and req.header("Subject") == part.subject:
                return transaction
        return None

    # ------------------------------------------------------------------ the device's answer

    def _answered(self, resp: SipResponse, part: _Talk) -> None:
        if not resp.success:
            self._fail(part, resp.status, f"the device answered the talk INVITE "
                                          f"{resp.status} {resp.reason}")
            return
        part.call_id = resp.call_id
        self._by_call[resp.call_id] = part
        part.dialog = self.platform.dialog_for(resp)
        if part.state == "ended":  # ended while ringing, answered anyway: hang up
            if part.transaction is None:  # (a CANCELled INVITE's 2xx the layer hangs up)
                self._hang_up(part)
            return
        try:
            answer = parse_device_sdp(resp.body)
            kind = transport_of(answer)
            if kind is not TransportKind.TCP_PASSIVE:
                request = talk_request(
                    answer, part.token, part.app, part.stream, self._options(part),
                    two_way=True, recv_stream_id=device_audio_name(part.device_id))
                request = TalkRequest(replace_key(request.params, part.session.key),
                                      recv_stream_id=request.recv_stream_id,
                                      on_repeat=OnRepeat.REPLACE_IF_CHANGED,
                                      identity=part.identity)
                part.session = self.core.start_now(request)
        except GbTalkError as error:
            self._fail(part, 488, f"the device's answer cannot be served: {error}")
            return
        part.state = "up"
        session = part.session
        part.report({
            "result": "OK", "call_id": resp.call_id, "session_id": session.id,
            "transport": str(session.params.transport), "port": session.port,
            "ssrc": f"{session.key.ssrc:010d}",
            "device_audio": f"{part.app}/{device_audio_name(part.device_id)}",
        })

    def _options(self, part: _Talk) -> MediaOptions:
        params = part.session.params
        return MediaOptions(packet_ms=params.packet_ms, framing=params.framing,
                            wait_timeout=params.wait_timeout, preroll_ms=params.preroll_ms)

    def _failed(self, failure: Failure, part: _Talk) -> None:
        self._fail(part, 408, f"the device did not answer the talk INVITE "
                              f"({failure.getErrorMessage()})")

    # ------------------------------------------------------------------ CallFlow

    def owns(self, call_id: str) -> bool:
        """Whether the call is one of our talks."""
        return call_id in self._by_call

    def invite_received(self, transaction: ServerTransaction, invite: SipRequest) -> bool:
        """Talks are placed by us: a device's INVITE is never ours."""
        return False

    def invite_cancelled(self, transaction: ServerTransaction, cancel: SipRequest) -> None:
        """Not ours to hear (we place talk calls)."""

    def dialog_confirmed(self, dialog: Dialog) -> None:
        """We ACKed the device's 200: the call is up."""
        part = self._by_call.get(dialog.call_id)
        if part is not None and part.dialog is None:
            part.dialog = dialog

    def dialog_ended(self, dialog: Dialog, reason: str) -> None:
        """BYE from the device (or ours): the session ends, both directions."""
        part = self._by_call.get(dialog.call_id)
        if part is None:
            return
        self._forget(part)
        self.core.stop(part.identity)
        _log.info("SIP talk {call_id} with {device} ended: {reason}",
                  call_id=dialog.call_id, device=part.device_id, reason=reason)

    # ------------------------------------------------------------------ endings

    def _session_ended(self, reason: str, part: _Talk) -> None:
        """The session ended on its own or was stopped: BYE, or CANCEL if still ringing."""
        _log.info("SIP talk with {device}: the session ended ({reason})",
                  device=part.device_id, reason=reason)
        self._hang_up(part)
        part.report(_error(part.device_id, part.channel, 408 if reason == "timeout" else 409,
                           f"the talk session ended ({reason}) before the device answered"))
        self._forget(part)

    def _hang_up(self, part: _Talk) -> None:
        if part.dialog is not None:
            if part.dialog.state != "terminated":
                self.platform.layer.bye(part.dialog)
        elif part.transaction is not None:
            self.platform.layer.cancel(part.transaction)

    def _end(self, part: _Talk, why: str) -> None:
        if not self.core.stop(part.identity):  # no session left: hang up ourselves
            self._hang_up(part)
            self._fail(part, 409, why)

    def _fail(self, part: _Talk, status: int, why: str) -> None:
        part.report(_error(part.device_id, part.channel, status, why))
        self._forget(part)
        if not self.core.stop(part.identity):
            self._hang_up(part)

    def _forget(self, part: _Talk) -> None:
        part.state = "ended"
        if self._by_device.get(part.device_id) is part:
            del self._by_device[part.device_id]
        if part.call_id is not None and self._by_call.get(part.call_id) is part:
            del self._by_call[part.call_id]


def replace_key(params: SessionParams, key: SessionKey) -> SessionParams:
    """``params`` with the talk's own key (our ``y=``, the source), whatever the answer said."""
    return replace(params, key=key)


def _error(device_id: str, channel: str, status: int, reason: str) -> dict[str, Any]:
    return {"device_id": device_id, "channel": channel, "result": "ERROR", "status": status,
            "reason": reason}
