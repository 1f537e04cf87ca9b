"""A simulated GB28181 device's SIP user agent, on the package's own sans-I/O SIP layer.

:class:`DeviceUA` is the :class:`~gb28181talk.sip.dialog.DialogUser` of one device: it
registers with digest (401, then the answer; re-registers before expiry; ``Expires: 0`` on
:meth:`DeviceUA.stop`), keeps alive with ``Notify/Keepalive`` MESSAGEs, answers ``Catalog``
and ``DeviceInfo`` queries, answers ``Notify/Broadcast`` with 200 and ``Response/Broadcast``
and places its broadcast INVITE, answers a platform's ``s=Talk`` INVITE, and hangs up.  The
media of each call is a :class:`~gb28181talk.simulator.call.DeviceCall`.

The SIP socket is not its business: it is handed a channel to the server (a UDP peer or a
TCP connection) and its transports feed ``ua.layer.transactions``; so tests run it on a
``Clock`` against a platform double made of the same layer.  Quirks that act on signalling
(an invented nonce, INVITE sent twice, ACK held until connected, no Response/Broadcast) are
here and in :class:`DeviceChannel`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from gb28181talk.errors import ManscdpError, SdpError, SipError
from gb28181talk.signalling.manscdp import (
    BroadcastNotify,
    BroadcastResponse,
    Keepalive,
    build_xml,
    parse_xml,
)
from gb28181talk.signalling.sdp import AudioSdp, build_sdp, parse_sdp
from gb28181talk.simulator.bodies import (
    audio_output_id,
    catalog_response,
    device_info_response,
    read_command,
)
from gb28181talk.simulator.call import DeviceCall
from gb28181talk.simulator.options import DeviceConfig, MediaMode
from gb28181talk.sip.dialog import Dialog, DialogLayer, new_tag
from gb28181talk.sip.digest import Challenge, DigestClient
from gb28181talk.sip.message import SipMessage, SipRequest, SipResponse, request, response_for
from gb28181talk.sip.transaction import (
    Channel,
    ClientTransaction,
    ServerTransaction,
    Timers,
)
from gb28181talk.sip.transport import via_for

__all__ = ["MANSCDP", "DeviceChannel", "DeviceUA"]

_log = Logger()

MANSCDP = "Application/MANSCDP+xml"
USER_AGENT = "gb28181talk-device"
MAX_CHALLENGES = 3
"""401s in a row before the device gives up registering (and tries again later)."""
RETRY_SECONDS = 30.0
INVITE_REPEAT_SECONDS = 0.2


class DeviceChannel:
    """The device's channel to the server, with the quirks that act on what it sends.

    ACKs of a held call wait until :meth:`release` (connecting before ACK); each INVITE
    goes twice when ``repeat_invites`` (a retransmission the platform must absorb).
    """

    def __init__(self, inner: Channel, clock: Any, *, repeat_invites: bool = False) -> None:
        self.inner = inner
        self.clock = clock
        self.repeat_invites = repeat_invites
        self._held: dict[str, SipRequest | None] = {}

    @property
    def reliable(self) -> bool:
        """As the channel underneath."""
        return self.inner.reliable

    @property
    def transport_name(self) -> str:
        """``UDP`` or ``TCP``, as the channel underneath (for the Via)."""
        return str(getattr(self.inner, "transport_name", "UDP"))

    def hold(self, call_id: str) -> None:
        """Keep the ACKs of ``call_id`` until :meth:`release`."""
        self._held[call_id] = None

    def release(self, call_id: str) -> None:
        """Send the ACK held for ``call_id`` (if any) and stop holding."""
        if call_id not in self._held:
            return
        ack = self._held.pop(call_id)
        if ack is not None:
            self.inner.send(ack)

    def send(self, message: SipMessage) -> None:
        """Send, holding a held call's ACK; repeat an INVITE when asked to."""
        if isinstance(message, SipRequest):
            if message.method == "ACK" and message.call_id in self._held:
                self._held[message.call_id] = message
                return
            if message.method == "INVITE" and self.repeat_invites:
                self.clock.callLater(INVITE_REPEAT_SECONDS, self._again, message)
        self.inner.send(message)

    def _again(self, message: SipMessage) -> None:
        try:
            self.inner.send(message)
        except OSError as error:
            _log.info("simulator: repeated INVITE not sent: {error}", error=error)


class DeviceUA:
    """One simulated device's SIP side: registration, keepalive, queries, broadcast, talk."""

    def __init__(
        self,
        reactor: Any,
        config: DeviceConfig,
        channel: Channel,
        local_port: int,
        *,
        timers: Timers | None = None,
        say: Callable[[str], None] = print,
    ) -> None:
        self.reactor = reactor
        self.config = config
        self.local_port = local_port
        self.say = say
        quirks = config.quirks
        self.channel = DeviceChannel(channel, reactor, repeat_invites=quirks.retransmit_invite)
        self.layer = DialogLayer(reactor, self, via=self._via, timers=timers)
        self.digest = DigestClient(config.device_id, config.password)
        self.challenge: Challenge | None = None
        self.register_call_id = f"{os.urandom(8).hex()}@{config.local_host}"
        self.register_tag = new_tag()
        self.register_cseq = 0
        self.challenges_in_a_row = 0
        self.registered = False
        self.registered_once: Deferred[bool] = Deferred()
        """Fires True at the first 200 to REGISTER, False when registering first failed."""
        self.unregistered: Deferred[None] | None = None
        self.stopping = False
        self.sn = 0
        self.keepalives_sent = 0
        self.keepalives_answered = 0
        self.calls: dict[str, DeviceCall] = {}
        self.dialogs: dict[str, Dialog] = {}
        self.invites: dict[str, ClientTransaction] = {}
        self.talk_answers: dict[str, AudioSdp] = {}
        self.ended_calls: list[DeviceCall] = []
        self.on_call_ended: Callable[[DeviceCall], None] = lambda call: None
        self.broadcast_notifies: list[BroadcastNotify] = []
        self.sip_port: Any = None
        """The SIP UDP port it listens on (the command line closes it), or None over TCP."""
        self._keepalive: LoopingCall | None = None
        self._refresh: Any = None
        self._numbers = 0

    # ---------------------------------------------------------------- helpers
    @property
    def device_id(self) -> str:
        """The device's 20-digit ID."""
        return self.config.device_id

    @property
    def audio_channel(self) -> str:
        """Its voice output channel's ID (type 137), as its catalog lists it."""
        return audio_output_id(self.config.device_id)

    @property
    def heard_audio(self) -> bool:
        """Whether any call (live or ended) heard audio."""
        return any(call.heard_audio for call in [*self.ended_calls, *self.calls.values()])

    def _via(self, channel: Any) -> str:
        return via_for(channel, self.config.local_host, self.local_port)

    def _contact(self) -> str:
        return f"sip:{self.device_id}@{self.config.local_host}:{self.local_port}"

    def _aor(self, user: str) -> str:
        return f"sip:{user}@{self.config.domain}"

    def _send(self, req: SipRequest) -> ClientTransaction | None:
        try:
            return self.layer.send(req, self.channel)
        except OSError as error:
            self.say(f"{self.device_id}: cannot send {req.method}: {error}")
            return None

    def _next_sn(self) -> int:
        self.sn += 1
        return self.sn

    # ---------------------------------------------------------------- registration
    def start(self) -> Deferred[bool]:
        """Register (the first REGISTER goes now); fires as :attr:`registered_once` does."""
        self.register()
        return self.registered_once

    def register(self, expires: int | None = None) -> None:
        """Send a REGISTER (with our answer to the last challenge, if there was one)."""
        config = self.config
        self.register_cseq += 1
        expires = config.expires if expires is None else expires
        headers = [
            ("Via", self._via(self.channel)),
            ("From", f"<{self._aor(self.device_id)}>;tag={self.register_tag}"),
            ("To", f"<{self._aor(self.device_id)}>"),
            ("Call-ID", self.register_call_id),
            ("CSeq", f"{self.register_cseq} REGISTER"),
            ("Contact", f"<{self._contact()}>"),
            ("Max-Forwards", "70"),
            ("User-Agent", USER_AGENT),
            ("Expires", str(expires)),
        ]
        uri = self._aor(config.server_id)
        if self.challenge is not None:
            headers.append(("Authorization", self._authorization(uri)))
        self._send(request("REGISTER", uri, headers))

    def _authorization(self, uri: str) -> str:
        assert self.challenge is not None
        challenge = self.challenge
        if self.config.quirks.invent_nonce:
            challenge = replace(challenge, nonce=os.urandom(16).hex())
        return self.digest.authorization(challenge, "REGISTER", uri)

    def _register_answered(self, req: SipRequest, resp: SipResponse) -> None:
        expires = int(req.header("Expires") or self.config.expires)
        if resp.status in (401, 407):
            self.challenges_in_a_row += 1
            header = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
            value = resp.header(header)
            if value is None or self.challenges_in_a_row > MAX_CHALLENGES:
                self._register_failed(f"{resp.status} {resp.reason} {self.challenges_in_a_row}"
                                      " times in a row", expires)
                return
            try:
                self.challenge = Challenge.parse(value)
            except SipError as error:
                self._register_failed(f"unreadable challenge: {error}", expires)
                return
            self.register(expires)
            return
        self.challenges_in_a_row = 0
        if not resp.success:
            self._register_failed(f"{resp.status} {resp.reason}", expires)
            return
        if expires == 0:
            self.registered = False
            self.say(f"{self.device_id}: unregistered")
            if self.unregistered is not None and not self.unregistered.called:
                self.unregistered.callback(None)
            return
        granted = int(resp.header("Expires") or expires)
        first = not self.registered
        self.registered = True
        if first:
            self.say(f"{self.device_id}: registered (expires {granted} s)")
        if not self.registered_once.called:
            self.registered_once.callback(True)
        self._cancel_refresh()
        if not self.stopping:
            self._refresh = self.reactor.callLater(max(1.0, granted * 0.8), self.register)
            self._start_keepalive()

    def _register_failed(self, why: str, expires: int) -> None:
        self.challenges_in_a_row = 0
        if expires == 0:
            self.say(f"{self.device_id}: unregister refused: {why}")
            if self.unregistered is not None and not self.unregistered.called:
                self.unregistered.callback(None)
            return
        self.registered = False
        self.say(f"{self.device_id}: registration refused: {why}; retrying in {RETRY_SECONDS:g} s")
        if not self.registered_once.called:
            self.registered_once.callback(False)
        self._cancel_refresh()
        if not self.stopping:
            self.challenge = None
            self._refresh = self.reactor.callLater(RETRY_SECONDS, self.register)

    def _cancel_refresh(self) -> None:
        if self._refresh is not None and self._refresh.active():
            self._refresh.cancel()
        self._refresh = None

    # ---------------------------------------------------------------- keepalive
    def _start_keepalive(self) -> None:
        if self._keepalive is not None:
            return
        self._keepalive = LoopingCall(self.keepalive)
        self._keepalive.clock = self.reactor
        self._keepalive.start(self.config.keepalive, now=True)

    def keepalive(self) -> None:
        """Send one ``Notify/Keepalive`` MESSAGE."""
        self.keepalives_sent += 1
        self.message(build_xml(Keepalive(self._next_sn(), self.device_id)))

    def message(self, body: bytes) -> ClientTransaction | None:
        """Send a MANSCDP MESSAGE to the server (outside any dialog)."""
        config = self.config
        headers = [
            ("Via", self._via(self.channel)),
            ("From", f"<{self._aor(self.device_id)}>;tag={new_tag()}"),
            ("To", f"<{self._aor(config.server_id)}>"),
            ("Call-ID", f"{os.urandom(8).hex()}@{config.local_host}"),
            ("CSeq", "1 MESSAGE"),
            ("Max-Forwards", "70"),
            ("User-Agent", USER_AGENT),
            ("Content-Type", MANSCDP),
        ]
        return self._send(request("MESSAGE", self._aor(config.server_id), headers, body))

    # ---------------------------------------------------------------- requests to us
    def request_received(self, transaction: ServerTransaction, req: SipRequest) -> None:
        """MESSAGE (queries, broadcast notify) answered and acted on; anything else 200."""
        if req.method != "MESSAGE":
            transaction.respond(response_for(req, 200, to_tag=new_tag()))
            return
        try:
            command = read_command(req.body)
        except ManscdpError as error:
            self.say(f"{self.device_id}: unreadable MESSAGE body: {error}")
            transaction.respond(response_for(req, 400, to_tag=new_tag()))
            return
        transaction.respond(response_for(req, 200, to_tag=new_tag()))
        kind = (command.root.lower(), command.cmd_type.lower())
        if kind == ("query", "catalog"):
            self.message(catalog_response(
                command.sn, self.device_id, self.config.domain, self.config.local_host
            ))
        elif kind == ("query", "deviceinfo"):
            self.message(device_info_response(command.sn, self.device_id))
        elif kind == ("notify", "broadcast"):
            try:
                notify = parse_xml(req.body)
            except ManscdpError as error:
                self.say(f"{self.device_id}: unreadable broadcast notify: {error}")
                return
            assert isinstance(notify, BroadcastNotify)
            self._broadcast(notify)

    def _broadcast(self, notify: BroadcastNotify) -> None:
        self.broadcast_notifies.append(notify)
        self.say(f"{self.device_id}: broadcast from {notify.source_id} to {notify.target_id}")
        if not self.config.quirks.no_broadcast_response:
            self.message(build_xml(BroadcastResponse(notify.sn, self.device_id, "OK")))
        else:
            self.say(f"{self.device_id}: not answering Response/Broadcast (quirk)")
        self.invite_broadcast(notify.source_id, notify.target_id)

    def invite_broadcast(self, source_id: str, target_id: str) -> DeviceCall:
        """Place the broadcast INVITE to ``source_id`` with our audio offer."""
        config = self.config
        call_id = f"{os.urandom(8).hex()}@{config.local_host}"
        call = self._new_call("broadcast")
        offer = call.offer()
        body = build_sdp(offer).encode("ascii")
        ssrc = offer.ssrc_text or "0"
        headers = [
            ("Via", self._via(self.channel)),
            ("From", f"<{self._aor(self.device_id)}>;tag={new_tag()}"),
            ("To", f"<{self._aor(source_id)}>"),
            ("Call-ID", call_id),
            ("CSeq", "1 INVITE"),
            ("Contact", f"<{self._contact()}>"),
            ("Max-Forwards", "70"),
            ("User-Agent", USER_AGENT),
            ("Subject", f"{source_id}:{ssrc},{target_id}:0"),
            ("Content-Type", "application/sdp"),
        ]
        host, port = config.server
        if config.quirks.connect_before_ack and config.mode is MediaMode.TCP_ACTIVE:
            self.channel.hold(call_id)
            call.connected.addCallback(lambda _: self.channel.release(call_id))
        self.calls[call_id] = call
        call.call_id = call_id
        transaction = self._send(request("INVITE", f"sip:{source_id}@{host}:{port}", headers,
                                         body))
        if transaction is None:
            self._call_over(call_id, "not sent")
        else:
            self.invites[call_id] = transaction
            mode = config.mode.value
            self.say(f"{call.name}: INVITE sent ({mode}, {config.codec}, y={ssrc})")
        return call

    def _new_call(self, kind: str) -> DeviceCall:
        self._numbers += 1
        return DeviceCall(
            self.reactor, self.config, kind, self._numbers,
            say=self.say, on_media_closed=self.hang_up,
        )

    def invite_received(self, transaction: ServerTransaction, invite: SipRequest) -> None:
        """A platform's INVITE: ``s=Talk`` (or sendrecv) is answered; others 488."""
        call_id = invite.call_id
        if call_id in self.talk_answers:  # a re-INVITE of a live talk call: the same answer
            self._answer(transaction, self.talk_answers[call_id])
            return
        try:
            offer = parse_sdp(invite.body)
        except SdpError as error:
            self.say(f"{self.device_id}: INVITE with unreadable SDP: {error}")
            transaction.respond(response_for(invite, 488, to_tag=new_tag()))
            return
        if offer.session_name.lower() != "talk" and offer.direction != "sendrecv":
            self.say(f"{self.device_id}: INVITE s={offer.session_name} refused (488)")
            transaction.respond(response_for(invite, 488, to_tag=new_tag()))
            return
        call = self._new_call("talk")
        call.call_id = call_id
        try:
            answer = call.answer_offer(offer)
        except (SdpError, OSError) as error:
            self.say(f"{call.name}: cannot answer the talk offer: {error}")
            transaction.respond(response_for(invite, 488, to_tag=new_tag()))
            return
        self.calls[call_id] = call
        self.talk_answers[call_id] = answer
        dialog = self._answer(transaction, answer)
        self.dialogs[call_id] = dialog
        self.say(f"{call.name}: talk answered ({'TCP' if offer.is_tcp else 'UDP'}, "
                 f"setup {answer.setup or '-'}, y={answer.ssrc_text or '-'})")
        if self.config.quirks.connect_before_ack:
            call.start_talk()

    def _answer(self, transaction: ServerTransaction, answer: AudioSdp) -> Dialog:
        return self.layer.answer(
            transaction,
            contact=self._contact(),
            headers=[("Content-Type", "application/sdp"), ("User-Agent", USER_AGENT)],
            body=build_sdp(answer).encode("ascii"),
        )

    def invite_cancelled(self, transaction: ServerTransaction, cancel: SipRequest) -> None:
        """The platform cancelled its talk INVITE."""
        self._call_over(cancel.call_id, "cancelled")

    def dialog_confirmed(self, dialog: Dialog) -> None:
        """Our 2xx was ACKed (talk: start), or we ACKed theirs (broadcast)."""
        self.dialogs[dialog.call_id] = dialog
        call = self.calls.get(dialog.call_id)
        if call is not None and call.kind == "talk":
            call.start_talk()

    def dialog_ended(self, dialog: Dialog, reason: str) -> None:
        """The call is over: its media ends, figures printed, WAV written."""
        self._call_over(dialog.call_id, reason)

    # ---------------------------------------------------------------- answers to us
    def response_received(self, transaction: ClientTransaction, resp: SipResponse) -> None:
        """REGISTER, MESSAGE and broadcast INVITE answers."""
        req = transaction.request
        if req.method == "REGISTER":
            self._register_answered(req, resp)
        elif req.method == "MESSAGE":
            if resp.success and b"Keepalive" in req.body:
                self.keepalives_answered += 1
        elif req.method == "INVITE":
            self._invite_answered(req, resp)

    def _invite_answered(self, req: SipRequest, resp: SipResponse) -> None:
        call = self.calls.get(req.call_id)
        if resp.provisional or call is None:
            return
        self.invites.pop(req.call_id, None)
        if not resp.success:
            self.say(f"{call.name}: the platform answered {resp.status} {resp.reason}")
            self._call_over(req.call_id, f"refused {resp.status}")
            return
        try:
            answer = parse_sdp(resp.body)
        except SdpError as error:
            self.say(f"{call.name}: unreadable answer SDP ({error}); hanging up")
            self.channel.release(req.call_id)
            self._hang_up_later(req.call_id)
            return
        self.say(f"{call.name}: answered: {answer.device_address}:{answer.port} "
                 f"setup {answer.setup or '-'} y={answer.ssrc_text or '-'}")
        call.follow_answer(answer)

    def _hang_up_later(self, call_id: str) -> None:
        self.reactor.callLater(0, lambda: self._bye(call_id))

    def request_failed(self, transaction: ClientTransaction, reason: str) -> None:
        """No answer at all: REGISTER retried later, INVITE's call over, MESSAGE noted."""
        req = transaction.request
        if req.method == "REGISTER":
            self._register_failed(f"no answer ({reason})", int(req.header("Expires") or 1))
        elif req.method == "INVITE":
            self.say(f"{self.device_id}: INVITE got no answer ({reason})")
            self._call_over(req.call_id, reason)
        else:
            self.say(f"{self.device_id}: {req.method} got no answer ({reason})")

    # ---------------------------------------------------------------- hanging up
    def hang_up(self, call: DeviceCall) -> None:
        """Hang up ``call`` (BYE, or CANCEL before its answer)."""
        if call.call_id:
            self._bye(call.call_id)

    def _bye(self, call_id: str) -> None:
        dialog = self.dialogs.get(call_id)
        if dialog is not None and dialog.state != "terminated":
            self.layer.bye(dialog)  # dialog_ended follows
            return
        invite = self.invites.get(call_id)
        if invite is not None and self.layer.cancel(invite):
            self._call_over(call_id, "cancelled")
            return
        self._call_over(call_id, "hung up")

    def _call_over(self, call_id: str, reason: str) -> None:
        self.channel.release(call_id)
        call = self.calls.pop(call_id, None)
        self.dialogs.pop(call_id, None)
        self.invites.pop(call_id, None)
        self.talk_answers.pop(call_id, None)
        if call is None:
            return
        self.say(f"{call.name}: ended ({reason})")
        call.stop()
        self.ended_calls.append(call)
        self.on_call_ended(call)

    def stop(self) -> Deferred[None]:
        """Hang up every call, stop keeping alive, unregister (``Expires: 0``)."""
        self.stopping = True
        for call_id in list(self.calls):
            self._bye(call_id)
        if self._keepalive is not None and self._keepalive.running:
            self._keepalive.stop()
        self._cancel_refresh()
        self.unregistered = Deferred()
        if self.registered:
            self.register(0)
        else:
            self.unregistered.callback(None)
        return self.unregistered

    def close(self) -> None:
        """Drop every transaction and timer now (after :meth:`stop`, before the socket closes)."""
        self.stopping = True
        if self._keepalive is not None and self._keepalive.running:
            self._keepalive.stop()
        self._cancel_refresh()
        for call_id in list(self.calls):
            self._call_over(call_id, "closed")
        self.layer.transactions.shutdown()

    def pending_timers(self) -> list[Any]:
        """The SIP layer's timers still to fire (tests check nothing leaks)."""
        return self.layer.pending_timers()
