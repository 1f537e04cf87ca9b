"""The broadcast flow over bytes on a Clock: our SIP stack plays the device, the core plays media.

Notify/Broadcast -> 200 -> Response/Broadcast -> the device's INVITE (TCP passive, TCP
active, UDP offers) -> 100 then 200 with the right SDP, the session open before it ->
ACK -> media -> BYE either way; no INVITE in 10 s; the device never connecting; a busy
device (486) and replace; a duplicate INVITE getting the same answer and port; a start
that takes a round trip (Proceeding until it fires, CANCEL -> 200 + 487 and the late session
stopped, 503 when it never comes); a CANCEL after our 200 leaves the call up.
"""

from __future__ import annotations

from typing import Any

import pytest

from gb28181talk.core.manager import SessionManager
from gb28181talk.core.params import SessionState
from gb28181talk.core.ports import PortPool
from gb28181talk.core.talk import TalkControl
from gb28181talk.media.framing import Framing
from gb28181talk.media.rtp import parse_rtp
from gb28181talk.signalling.manscdp import BroadcastNotify, BroadcastResponse, build_xml, parse_xml
from gb28181talk.signalling.sdp import parse_sdp
from gb28181talk.sip.broadcast import Broadcasts
from gb28181talk.sip.calls import CallFlows, audio_output
from gb28181talk.sip.message import SipResponse, request
from gb28181talk.sip.offer import MediaOptions
from gb28181talk.sip.platform import Route
from gb28181talk.sip.transport import via_for
from gb28181talk.sources.registry import SourceRegistry
from gb28181talk.sources.tone import ToneSource
from gb28181talk.testing import FakeDevice
from tests.sipdevice import DEVICE, DEVICE_ID, PLATFORM_ID, REALM, Device, connect, pump
from tests.sipdevice import new_platform as _new_platform
from tests.test_talk_transports import UdpReactor, connect_device

AUDIO_ID = "34020000001370000001"
ADVERTISED = "198.51.100.5"
MEDIA = "192.0.2.10"

PASSIVE_OFFER = (
    "v=0\r\n"
    f"o={AUDIO_ID} 0 0 IN IP4 {MEDIA}\r\n"
    "s=Play\r\n"
    f"c=IN IP4 {MEDIA}\r\n"
    "t=0 0\r\n"
    "m=audio 15062 TCP/RTP/AVP 8\r\n"
    "a=setup:active\r\n"
    "a=connection:new\r\n"
    "a=recvonly\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "y=0100000123\r\n"
    "f=v/////a/1/8/1\r\n"
)
ACTIVE_OFFER = PASSIVE_OFFER.replace("a=setup:active", "a=setup:passive")
UDP_OFFER = (
    PASSIVE_OFFER.replace("TCP/RTP/AVP", "RTP/AVP")
    .replace("a=setup:active\r\n", "")
    .replace("a=connection:new\r\n", "")
    .replace("y=0100000123\r\n", "")
)


class CallDevice(Device):
    """The device of tests.sipdevice that also places broadcast INVITEs and hangs up."""

    def __init__(self, clock: Any, **kwargs: Any) -> None:
        super().__init__(clock, **kwargs)
        self.dialogs: list[Any] = []
        self.ended: list[str] = []
        self.invites: list[Any] = []
        self.wire: Any = None
        self.uplink: Any = None

    def dialog_confirmed(self, dialog: Any) -> None:
        self.dialogs.append(dialog)

    def dialog_ended(self, dialog: Any, reason: str) -> None:
        self.ended.append(reason)

    @property
    def notifies(self) -> list[BroadcastNotify]:
        found = []
        for req in self.requests:
            if req.method == "MESSAGE":
                message = parse_xml(req.body)
                if isinstance(message, BroadcastNotify):
                    found.append(message)
        return found

    def respond(self, result: str = "OK", reason: str | None = None, sn: int | None = None,
                from_id: str | None = None) -> None:
        sn = self.notifies[-1].sn if sn is None else sn
        self.message(build_xml(BroadcastResponse(sn, from_id or self.device_id, result, reason)))

    def invite(self, offer: str, call_id: str = "bc-1", *, caller: str = AUDIO_ID) -> Any:
        assert self.out is not None
        self._seq += 1
        headers = [
            ("Via", via_for(self.out, *self.address)),
            ("From", f"<sip:{caller}@{REALM}>;tag=inv{self._seq}"),
            ("To", f"<sip:{PLATFORM_ID}@{REALM}>"),
            ("Call-ID", call_id),
            ("CSeq", f"{self._seq} INVITE"),
            ("Contact", f"<sip:{caller}@{self.address[0]}:{self.address[1]}>"),
            ("Subject", f"{caller}:0100000123,{PLATFORM_ID}:0"),
            ("Max-Forwards", "70"),
            ("Content-Type", "application/sdp"),
        ]
        invite = request("INVITE", f"sip:{PLATFORM_ID}@{REALM}", headers, offer.encode())
        self.invites.append(invite)
        return self.layer.send(invite, self.out)

    def answers(self, call_id: str) -> list[SipResponse]:
        return [r for r in self.responses if r is not None and r.call_id == call_id]

    def bye(self) -> None:
        self.layer.bye(self.dialogs[-1])


def _setup(record_dir: str | None = None, **options: Any) -> Any:
    reactor = UdpReactor()
    manager = SessionManager(reactor, PortPool(reactor, 30000, 30009))
    sources = SourceRegistry()
    sources.add(ToneSource("broadcast", "announce", frequency=440))
    core = TalkControl(reactor, manager, sources, record_dir=record_dir)
    platform = _new_platform(reactor)
    device = CallDevice(reactor)
    to_platform, to_device = connect(reactor, platform, device)
    device.wire, device.uplink = to_device, to_platform
    platform.locate = lambda device_id: (
        Route(device_id, to_device, f"sip:{device_id}@{DEVICE[0]}:{DEVICE[1]}")
        if device_id == DEVICE_ID else None
    )
    broadcasts = Broadcasts(reactor, platform, core, advertise_ip=ADVERTISED,
                            channels_of=lambda device_id: [DEVICE_ID, AUDIO_ID], **options)
    platform.invite_handler = CallFlows(broadcasts)
    return reactor, manager, core, platform, device, broadcasts


def _start(broadcasts: Broadcasts, *ids: str, **options: Any) -> list[Any]:
    results: list[Any] = []
    broadcasts.start(list(ids or [DEVICE_ID]), "broadcast", "announce",
                     **options).addCallback(results.extend)
    return results


def _accept(reactor: Any, device: CallDevice, offer: str, call_id: str = "bc-1") -> Any:
    device.respond("OK")
    pump(reactor)
    device.invite(offer, call_id)
    pump(reactor)


def _run(reactor: Any, seconds: float) -> None:
    for _ in range(int(seconds / 0.02)):
        reactor.advance(0.02)


def test_the_voice_output_channel_is_the_type_137_one() -> None:
    assert audio_output([DEVICE_ID, AUDIO_ID]) == AUDIO_ID
    assert audio_output([DEVICE_ID, "1234"]) is None


@pytest.mark.parametrize(
    ("offer", "transport", "setup"),
    [(PASSIVE_OFFER, "tcp-passive", "passive"), (ACTIVE_OFFER, "tcp-active", "active"),
     (UDP_OFFER, "udp", None)],
)
def test_notify_response_invite_answer_ack_media_bye(offer: str, transport: str,
                                                     setup: str | None) -> None:
    reactor, manager, _core, _platform, device, broadcasts = _setup()
    results = _start(broadcasts)
    pump(reactor)
    (notify,) = device.notifies
    assert (notify.source_id, notify.target_id) == (PLATFORM_ID, AUDIO_ID)
    assert results == []
    _accept(reactor, device, offer)
    statuses = [r.status for r in device.answers("bc-1")]
    assert statuses == [100, 200], "100 Trying, then our answer"
    (session,) = manager.sessions()
    ok = device.answers("bc-1")[-1]
    answer = parse_sdp(ok.body)
    assert ok.header("Content-Type") == "application/sdp"
    assert answer.connection_address == ADVERTISED and answer.setup == setup
    assert answer.connection == ("new" if setup else None)
    assert answer.direction == "sendonly" and answer.payload_types == (8,)
    assert answer.ssrc == session.key.ssrc and answer.f_line == "v/////a/1/8/1"
    [result] = results
    assert result["result"] == "OK" and result["response"] == "OK"
    assert result["transport"] == transport and result["call_id"] == "bc-1"
    assert result["ssrc"] == f"{session.key.ssrc:010d}"
    assert device.dialogs, "the device ACKed our 200"
    if transport == "tcp-passive":
        assert answer.port == session.port == result["port"]
        assert session.state is SessionState.LISTENING, "listening before the 200 went out"
        media = FakeDevice()
        assert media.connect(reactor, session.port)
        _run(reactor, 0.2)
        packets = media.receive()
    elif transport == "tcp-active":
        assert answer.port == 9, "the side that connects answers the discard port"
        host, port, *_ = reactor.tcpClients[-1]
        assert (host, port) == (MEDIA, 15062), "we dial the device's c= and m="
        wire = connect_device(reactor)
        _run(reactor, 0.2)
        media = FakeDevice(framing=Framing.RFC4571)
        media.media.receive(wire.value(), 0.0)
        packets = media.packets
    else:
        assert answer.ssrc is not None and answer.ssrc < 10**10, "an SSRC we chose and wrote"
        assert answer.port == session.port
        sock = reactor.udp_bound[session.port]
        _run(reactor, 0.2)
        assert {addr for _, addr in sock.sent} == {(MEDIA, 15062)}
        packets = [parse_rtp(data) for data, _ in sock.sent]
    assert len(packets) >= 3 and {p.ssrc for p in packets} == {session.key.ssrc}
    assert session.state is SessionState.STREAMING
    device.bye()
    pump(reactor)
    assert session.end_reason == "stopped"
    assert not manager.sessions() and not broadcasts.describe()
    pump(reactor, 100)
    assert not manager.pool.leased_count


def test_the_session_ending_sends_bye_to_the_device() -> None:
    reactor, manager, _core, platform, device, broadcasts = _setup()
    _start(broadcasts)
    pump(reactor)
    _accept(reactor, device, PASSIVE_OFFER)
    (session,) = manager.sessions()
    media = FakeDevice()
    media.connect(reactor, session.port)
    _run(reactor, 0.1)
    media.hang_up()
    pump(reactor)
    assert session.end_reason == "device-closed"
    assert device.ended == ["bye"], "the platform hung up with BYE"
    assert not platform.layer.dialogs and not device.layer.dialogs


def test_a_device_that_never_connects_after_ack_times_out_and_gets_bye() -> None:
    reactor, manager, _core, _platform, device, broadcasts = _setup()
    _start(broadcasts, options=MediaOptions(wait_timeout=3.0))
    pump(reactor)
    _accept(reactor, device, PASSIVE_OFFER)
    (session,) = manager.sessions()
    assert device.dialogs
    pump(reactor, 3.5)
    assert session.end_reason == "timeout"
    assert device.ended == ["bye"]
    assert not broadcasts.describe()


def test_no_invite_within_ten_seconds_is_reported() -> None:
    reactor, manager, _core, _platform, device, broadcasts = _setup()
    results = _start(broadcasts)
    pump(reactor)
    device.respond("OK")
    pump(reactor, 9.5)
    assert results == []
    pump(reactor, 1.0)
    [result] = results
    assert result["result"] == "ERROR" and result["status"] == 408
    assert "no INVITE" in result["reason"] and result["response"] == "OK"
    assert not manager.sessions() and not broadcasts.describe()
    device.invite(PASSIVE_OFFER, "late")
    pump(reactor)
    assert device.answers("late")[-1].status == 403, "a late INVITE is no broadcast's"


def test_the_devices_error_response_is_reported_with_its_reason() -> None:
    reactor, _manager, _core, _platform, device, broadcasts = _setup()
    results = _start(broadcasts)
    pump(reactor)
    device.respond("ERROR", "设备忙")
    pump(reactor)
    [result] = results
    assert result["result"] == "ERROR" and result["response"] == "ERROR"
    assert "设备忙" in result["reason"]
    assert not reactor.getDelayedCalls() or not broadcasts.describe()


def test_one_call_many_devices_one_result_each() -> None:
    reactor, _manager, _core, _platform, device, broadcasts = _setup()
    results = _start(broadcasts, DEVICE_ID, "34020000001320000099")
    pump(reactor)
    _accept(reactor, device, PASSIVE_OFFER)
    assert [r["device_id"] for r in results] == [DEVICE_ID, "34020000001320000099"]
    assert [r["result"] for r in results] == ["OK", "ERROR"]
    assert results[1]["status"] == 404


def test_a_busy_device_gets_486_unless_replaced() -> None:
    reactor, manager, _core, _platform, device, broadcasts = _setup()
    _start(broadcasts)
    pump(reactor)
    _accept(reactor, device, PASSIVE_OFFER)
    (first,) = manager.sessions()
    [busy] = _start(broadcasts)
    assert busy["status"] == 486 and "replace" in busy["reason"]
    device.invite(PASSIVE_OFFER, "bc-other")
    pump(reactor)
    assert device.answers("bc-other")[-1].status == 486
    assert manager.sessions() == [first]
    results = _start(broadcasts, replace=True)
    pump(reactor)
    assert first.end_reason == "stopped" and device.ended == ["bye"]
    assert len(device.notifies) == 2
    _accept(reactor, device, PASSIVE_OFFER, "bc-2")
    assert results[0]["result"] == "OK" and results[0]["call_id"] == "bc-2"


def test_a_duplicate_invite_of_the_same_call_gets_the_same_answer_and_port() -> None:
    reactor, manager, _core, _platform, device, broadcasts = _setup()
    _start(broadcasts)
    pump(reactor)
    _accept(reactor, device, PASSIVE_OFFER)
    (session,) = manager.sessions()
    first = parse_sdp(device.answers("bc-1")[-1].body)
    # the same INVITE again through a new transaction (the dialog layer answers it), then
    # the call's INVITE with another CSeq (it reaches the flow: the Call-ID finds the session)
    again = device.invites[-1].with_top_via(
        device.invites[-1].top_via.with_param("branch", "z9hG4bKagain"))
    other = again.with_top_via(again.top_via.with_param("branch", "z9hG4bKother")).with_replaced(
        "CSeq", "77 INVITE").with_replaced("From", f"<sip:{AUDIO_ID}@{REALM}>;tag=another")
    assert device.out is not None
    for repeat in (again, other):
        device.out.send(repeat)
        pump(reactor)
    oks = [m for m in device.wire.sent
           if isinstance(m, SipResponse) and m.status == 200 and m.call_id == "bc-1"]
    assert len(oks) >= 3
    assert manager.sessions() == [session]
    assert {parse_sdp(ok.body).port for ok in oks} == {first.port} == {session.port}


def test_a_lost_ack_means_the_200_is_resent_then_bye_and_the_session_ends() -> None:
    reactor, manager, _core, platform, device, broadcasts = _setup()
    _start(broadcasts, options={"wait_timeout": 60})  # the device's wait outlasts Timer H
    pump(reactor)
    device.respond("OK")
    pump(reactor)
    send = device.uplink.send
    device.uplink.send = lambda m: None if getattr(m, "method", "") == "ACK" else send(m)
    device.invite(PASSIVE_OFFER)  # every ACK of the device is lost
    pump(reactor, 1.0)
    (session,) = manager.sessions()
    oks = [m for m in device.wire.sent if isinstance(m, SipResponse) and m.status == 200]
    assert len(oks) >= 2, "the 2xx is retransmitted while no ACK comes"
    pump(reactor, 32.0)
    assert session.end_reason == "stopped" and device.ended == ["bye"]
    assert not manager.sessions() and not broadcasts.describe()
    pump(reactor, 10.0)  # our BYE's transaction ends (Timer K)
    assert not platform.layer.pending_timers()


# --------------------------------------------------------------------------- a start that waits


class SlowCore:
    """The talk core behind a start that takes a round trip (a worker process): ``start``
    returns an unfired Deferred; ``fire`` starts the session for real then."""

    def __init__(self, core: TalkControl) -> None:
        self.core = core
        self.pending: list[tuple[Any, Any]] = []

    def start(self, request: Any) -> Any:
        from twisted.internet.defer import Deferred

        waiting: Any = Deferred()
        self.pending.append((waiting, request))
        return waiting

    def fire(self) -> Any:
        waiting, request = self.pending.pop(0)
        session = self.core.start_now(request)
        waiting.callback(session)
        return session

    def __getattr__(self, name: str) -> Any:
        return getattr(self.core, name)


def _slow_setup(**options: Any) -> Any:
    reactor, manager, core, platform, device, broadcasts = _setup(**options)
    slow = SlowCore(core)
    broadcasts.core = slow  # type: ignore[assignment]
    return reactor, manager, slow, platform, device, broadcasts


def _sent_to_device(device: CallDevice, call_id: str) -> list[tuple[str, int]]:
    """(CSeq method, status) of every response the platform sent the device in this call."""
    return [(m.cseq.method, m.status) for m in device.wire.sent
            if isinstance(m, SipResponse) and m.call_id == call_id]


def test_while_the_session_starts_the_invite_stays_proceeding_then_is_answered() -> None:
    reactor, manager, slow, _platform, device, broadcasts = _slow_setup()
    results = _start(broadcasts)
    pump(reactor)
    _accept(reactor, device, PASSIVE_OFFER)
    pump(reactor, 2.0)  # retransmissions of the INVITE are absorbed: 100 again, nothing else
    assert {s for _, s in _sent_to_device(device, "bc-1")} == {100}
    assert results == [] and not manager.sessions() and len(slow.pending) == 1
    assert broadcasts.describe()[0]["state"] == "starting"
    session = slow.fire()
    pump(reactor)
    assert device.answers("bc-1")[-1].status == 200 and device.dialogs, "answered and ACKed"
    assert parse_sdp(device.answers("bc-1")[-1].body).port == session.port
    assert results[0]["result"] == "OK" and results[0]["session_id"] == session.id
    device.bye()
    pump(reactor, 100)
    assert not manager.sessions() and not manager.pool.leased_count


def test_cancel_while_the_session_starts_gets_200_and_487_and_the_late_session_is_stopped(
) -> None:
    reactor, manager, slow, platform, device, broadcasts = _slow_setup()
    results = _start(broadcasts)
    pump(reactor)
    device.respond("OK")
    pump(reactor)
    invite = device.invite(PASSIVE_OFFER)
    pump(reactor)
    assert invite.state == "Proceeding" and slow.pending
    assert device.layer.cancel(invite)
    pump(reactor)
    sent = _sent_to_device(device, "bc-1")
    assert ("CANCEL", 200) in sent and ("INVITE", 487) in sent
    assert ("INVITE", 200) not in sent
    [result] = results
    assert result["result"] == "ERROR" and result["status"] == 487
    assert not broadcasts.describe()
    session = slow.fire()  # the worker answers after all: the session is stopped at once
    pump(reactor)
    assert session.end_reason == "stopped" and not manager.sessions()
    assert ("INVITE", 200) not in _sent_to_device(device, "bc-1"), "no answer after the 487"
    assert not device.ended and not platform.layer.dialogs, "no call, so no BYE"
    pump(reactor, 100)
    assert not manager.pool.leased_count, "the port is back in the pool"
    assert not platform.layer.pending_timers() and not reactor.getDelayedCalls()


def test_a_start_that_never_comes_gets_503_and_a_very_late_session_is_stopped() -> None:
    reactor, manager, slow, _platform, device, broadcasts = _slow_setup(start_timeout=5.0)
    results = _start(broadcasts)
    pump(reactor)
    _accept(reactor, device, PASSIVE_OFFER)
    pump(reactor, 5.5)
    assert ("INVITE", 503) in _sent_to_device(device, "bc-1")
    [result] = results
    assert result["status"] == 503 and "did not start" in result["reason"]
    session = slow.fire()
    pump(reactor, 100)
    assert session.end_reason == "stopped" and not manager.pool.leased_count


def test_a_refused_start_answers_503_with_the_cores_reason() -> None:
    from gb28181talk.errors import PortError

    reactor, _manager, slow, _platform, device, broadcasts = _slow_setup()
    results = _start(broadcasts)
    pump(reactor)
    _accept(reactor, device, PASSIVE_OFFER)
    waiting, _request = slow.pending.pop()
    waiting.errback(PortError("no free port in 30000-30009"))
    pump(reactor)
    assert ("INVITE", 503) in _sent_to_device(device, "bc-1")
    assert results[0]["status"] == 503 and "no free port" in results[0]["reason"]
    assert not broadcasts.describe()


def test_cancel_after_our_200_gets_200_and_leaves_the_call_up() -> None:
    reactor, manager, _core, platform, device, broadcasts = _setup()
    results = _start(broadcasts)
    pump(reactor)
    device.respond("OK")
    pump(reactor)
    invite = device.invite(PASSIVE_OFFER)
    pump(reactor)
    assert device.dialogs and results[0]["result"] == "OK"
    device.layer._send_cancel(invite)  # a CANCEL that crossed our 200 (RFC 3261 §9.2)
    pump(reactor)
    sent = _sent_to_device(device, "bc-1")
    assert ("CANCEL", 200) in sent and ("INVITE", 487) not in sent
    (session,) = manager.sessions()
    assert session.state is SessionState.LISTENING and not device.ended
    assert broadcasts.describe()[0]["state"] == "confirmed" and platform.layer.dialogs
    device.bye()
    pump(reactor, 100)
    assert not manager.sessions() and not manager.pool.leased_count
