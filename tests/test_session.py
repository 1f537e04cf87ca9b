"""Talk session lifecycle on a memory reactor: timeout, first device wins, stop in every state."""

from __future__ import annotations

import itertools

import pytest
from twisted.internet.address import IPv4Address
from zope.interface.verify import verifyObject

from gb28181talk.core.manager import SessionManager
from gb28181talk.core.params import Packaging, SessionKey, SessionParams, SessionState, SsrcPolicy
from gb28181talk.core.ports import PortPool
from gb28181talk.errors import PoolExhaustedError, PortInUseError, SessionError
from gb28181talk.interfaces import FRAME_BYTES, IAudioSink, IAudioSource, ISessionObserver
from gb28181talk.media import g711
from gb28181talk.media.framing import Framing, frame_rfc4571
from gb28181talk.media.law import Law
from gb28181talk.media.ps import PsDemuxer
from gb28181talk.media.rtp import RtpPacket
from gb28181talk.testing import (
    BusyPortsReactor,
    FakeDevice,
    ListSource,
    RecordingObserver,
    RecordingSink,
)

SSRC = 100000123


def make(busy: set[int] | None = None, low: int = 30000, high: int = 30009):
    reactor = BusyPortsReactor(busy or set())
    manager = SessionManager(reactor, PortPool(reactor, low, high))
    observer = RecordingObserver()
    manager.add_observer(observer)
    return reactor, manager, observer


def params(**overrides) -> SessionParams:
    key = overrides.pop("key", SessionKey("__defaultVhost__", "live", "announce", SSRC))
    return SessionParams(key=key, **overrides)


def tone_source(count: int = 500, loop: bool = True) -> ListSource:
    return ListSource.counting(count, loop=loop)


def test_test_doubles_provide_their_interfaces() -> None:
    assert verifyObject(IAudioSource, tone_source())
    assert verifyObject(ISessionObserver, RecordingObserver())
    assert verifyObject(IAudioSink, RecordingSink())


def test_timeout_at_exactly_the_configured_time_returns_the_port() -> None:
    reactor, manager, observer = make()
    session = manager.start(params(wait_timeout=5.0), tone_source())
    port = session.port
    assert manager.pool.leased_count == 1
    reactor.advance(4.999)
    assert session.state is SessionState.LISTENING
    reactor.advance(0.001)
    assert session.state is SessionState.CLOSED
    assert session.end_reason == "timeout"
    assert manager.pool.leased_count == 0
    assert manager.pool.free_count == manager.pool.size
    assert [e[:3] for e in observer.ended()] == [("ended", session.id, "timeout")]
    assert manager.get(session.id) is None
    assert not reactor.getDelayedCalls(), "no timer may outlive the session"
    assert port in range(30000, 30010)


def test_first_device_cancels_timer_and_stops_listening() -> None:
    reactor, manager, observer = make()
    session = manager.start(params(), tone_source())
    device = FakeDevice()
    assert device.connect(reactor, session.port)
    assert session.state is SessionState.STREAMING
    assert manager.pool.leased_count == 0, "the port goes back to the pool at the first accept"
    assert session.peer == ("127.0.0.2", 40000)
    for _ in range(500):  # 10 s, far past the wait timeout: the session must still stream
        reactor.advance(0.02)
    assert session.state is SessionState.STREAMING
    assert len(device.receive()) >= 499
    assert ("connected", session.id, ("127.0.0.2", 40000)) in observer.events


def test_second_connection_is_refused_while_first_streams() -> None:
    reactor, manager, observer = make()
    session = manager.start(params(), tone_source())
    factory = reactor.factory_on(session.port)
    assert FakeDevice().connect(reactor, session.port)
    assert factory.buildProtocol(IPv4Address("TCP", "127.0.0.3", 1)) is None
    assert session.stats.refused_connections == 1
    assert any(event[0] == "refused" for event in observer.events)


def test_expected_peer_refuses_others_and_keeps_waiting() -> None:
    reactor, manager, _ = make()
    session = manager.start(params(expected_peer="127.0.0.9"), tone_source())
    assert not FakeDevice(host="127.0.0.2").connect(reactor, session.port)
    assert session.state is SessionState.LISTENING
    assert manager.pool.leased_count == 1
    assert FakeDevice(host="127.0.0.9").connect(reactor, session.port)
    assert session.state is SessionState.STREAMING


def test_expected_peer_matches_ipv4_mapped_addresses() -> None:
    reactor, manager, _ = make()
    session = manager.start(params(expected_peer="127.0.0.9"), tone_source())
    assert FakeDevice(host="::ffff:127.0.0.9").connect(reactor, session.port)


@pytest.mark.parametrize("connected", [False, True])
def test_stop_in_each_state_releases_everything_once(connected: bool) -> None:
    reactor, manager, observer = make()
    source = tone_source()
    session = manager.start(params(), source)
    device = FakeDevice()
    if connected:
        device.connect(reactor, session.port)
        reactor.advance(0.1)
    assert manager.stop(session.id)
    assert not manager.stop(session.id), "a second stop does nothing"
    assert not session.stop()
    assert session.end_reason == "stopped"
    assert manager.pool.leased_count == 0
    assert len(observer.ended()) == 1
    assert not reactor.getDelayedCalls()
    assert not manager.pacer.running
    if connected:
        assert device.transport.disconnecting
        assert device.transport.producer is None, "the writer unregistered before closing"


def test_connect_after_stop_is_refused() -> None:
    reactor, manager, _ = make()
    session = manager.start(params(), tone_source())
    factory = reactor.factory_on(session.port)
    session.stop()
    assert factory.buildProtocol(IPv4Address("TCP", "127.0.0.2", 1)) is None


def test_device_hang_up_ends_with_device_closed() -> None:
    reactor, manager, observer = make()
    session = manager.start(params(), tone_source())
    device = FakeDevice()
    device.connect(reactor, session.port)
    reactor.advance(0.2)
    device.hang_up()
    assert session.end_reason == "device-closed"
    assert len(observer.ended()) == 1
    assert not reactor.getDelayedCalls()


def test_stream_is_continuous_rtp_with_the_session_ssrc() -> None:
    reactor, manager, _ = make()
    source = ListSource.counting(100)
    session = manager.start(params(packet_ms=40, preroll_ms=0), source)
    device = FakeDevice()
    device.connect(reactor, session.port)
    for _ in range(110):
        reactor.advance(0.02)
    packets = device.receive()
    assert len(packets) == 50  # 100 frames of 20 ms in 40 ms packets
    assert {p.ssrc for p in packets} == {SSRC}
    assert {p.payload_type for p in packets} == {8}
    assert [p.marker for p in packets] == [True] + [False] * 49
    for before, after in itertools.pairwise(packets):
        assert (after.sequence - before.sequence) % 65536 == 1
        assert (after.timestamp - before.timestamp) % 2**32 == 320
    expected = g711.decode(Law.ALAW, b"".join(g711.encode(Law.ALAW, f) for f in source.frames))
    assert device.audio() == expected
    assert session.end_reason == "source-ended"


def test_preroll_keeps_audio_from_before_the_device_connected() -> None:
    reactor, manager, _ = make()
    source = ListSource.counting(200)
    session = manager.start(params(preroll_ms=200), source)
    for _ in range(25):  # 0.5 s of audio plays before the device connects
        reactor.advance(0.02)
    device = FakeDevice()
    device.connect(reactor, session.port)
    packets = device.receive()
    assert len(packets) == 10, "exactly the last 200 ms are sent at once"
    assert session.stats.preroll_packets == 10
    last_ten = range(source.position - 10, source.position)  # the newest frames before connect
    expected = b"".join(g711.encode(Law.ALAW, source.frames[i]) for i in last_ten)
    assert b"".join(p.payload for p in packets) == expected


def test_gap_in_live_source_keeps_time_and_marks_restart() -> None:
    reactor, manager, _ = make()
    frame = b"\x00\x10" * (FRAME_BYTES // 2)
    source = ListSource([frame, frame, None, None, frame, frame])
    session = manager.start(params(preroll_ms=0), source)
    FakeDevice().connect(reactor, session.port)
    device = FakeDevice()
    session = manager.start(params(preroll_ms=0, key=SessionKey("v", "a", "b", 1)), source)
    device.connect(reactor, session.port)
    for _ in range(10):
        reactor.advance(0.02)
    packets = device.receive()
    assert [p.marker for p in packets] == [True, False, True, False]
    assert (packets[2].timestamp - packets[1].timestamp) % 2**32 == 3 * 160


def test_ps_packaging_uses_90khz_timestamps_and_demuxes_back() -> None:
    reactor, manager, _ = make()
    source = ListSource.counting(10)
    session = manager.start(params(packaging=Packaging.PS, preroll_ms=0), source)
    device = FakeDevice()
    device.connect(reactor, session.port)
    for _ in range(12):
        reactor.advance(0.02)
    packets = device.receive()
    assert {p.payload_type for p in packets} == {96}
    assert (packets[1].timestamp - packets[0].timestamp) % 2**32 == 1800
    demuxer = PsDemuxer()
    audio = [a for p in packets for a in demuxer.feed(p.payload)]
    assert {a.law for a in audio} == {Law.ALAW}
    assert b"".join(a.payload for a in audio) == b"".join(
        g711.encode(Law.ALAW, f) for f in source.frames
    )


def test_no_prefix_framing_sends_raw_rtp_back_to_back() -> None:
    reactor, manager, _ = make()
    session = manager.start(params(framing=Framing.NONE, preroll_ms=0), ListSource.counting(5))
    device = FakeDevice()
    device.connect(reactor, session.port)
    for _ in range(6):
        reactor.advance(0.02)
    data = device.transport.value()
    assert len(data) == 5 * (12 + 160)
    assert data[0] == 0x80 and data[172] == 0x80


def two_way(policy: SsrcPolicy, **extra):
    reactor, manager, observer = make()
    sink = RecordingSink()
    session = manager.start(
        params(receive=True, ssrc_policy=policy, **extra), tone_source(), sinks=[sink]
    )
    device = FakeDevice()
    device.connect(reactor, session.port)
    return reactor, session, device, sink, observer


def device_packet(ssrc: int, seq: int, payload: bytes = b"\xd5" * 160, pt: int = 8) -> bytes:
    return frame_rfc4571(RtpPacket(pt, seq, seq * 160, ssrc, payload).encode())


def test_two_way_strict_drops_and_counts_wrong_ssrc() -> None:
    _, session, device, sink, _ = two_way(SsrcPolicy.STRICT)
    device.send(device_packet(SSRC, 1) + device_packet(999, 2) + device_packet(SSRC, 3))
    assert len(sink.chunks) == 2
    assert session.stats.ssrc_violations == 1
    assert sink.pcm == g711.decode(Law.ALAW, b"\xd5" * 320)


def test_two_way_learn_adopts_first_ssrc() -> None:
    _, session, device, sink, _ = two_way(SsrcPolicy.LEARN)
    device.send(device_packet(777, 1) + device_packet(SSRC, 2) + device_packet(777, 3))
    assert len(sink.chunks) == 2
    assert session.stats.ssrc_violations == 1


def test_two_way_off_accepts_all() -> None:
    _, session, device, sink, _ = two_way(SsrcPolicy.OFF)
    device.send(device_packet(1, 1) + device_packet(2, 2))
    assert len(sink.chunks) == 2 and session.stats.ssrc_violations == 0


def test_ssrc_violation_limit_ends_the_session() -> None:
    _, session, device, sink, observer = two_way(SsrcPolicy.STRICT, max_ssrc_violations=3)
    device.send(b"".join(device_packet(5, n) for n in range(5)))
    assert session.end_reason == "ssrc-violation"
    assert sink.ended
    assert len(observer.ended()) == 1


def test_two_way_accepts_ps_uplink_in_chunks() -> None:
    from gb28181talk.media.ps import PsMuxer

    _, _, device, sink, _ = two_way(SsrcPolicy.LEARN)
    muxer = PsMuxer(Law.ULAW)
    stream = b"".join(
        device_packet(SSRC, n, muxer.mux(bytes([n]) * 160, n * 3600), pt=96) for n in range(4)
    )
    for offset in range(0, len(stream), 7):
        device.send(stream[offset : offset + 7])
    assert sink.pcm == g711.decode(Law.ULAW, b"".join(bytes([n]) * 160 for n in range(4)))


def test_garbage_from_device_ends_with_error_not_an_exception() -> None:
    reactor, session, device, _, observer = two_way(SsrcPolicy.LEARN)
    device.send(b"\xff" * 64)
    assert session.end_reason == "error"
    assert device.transport.disconnecting
    assert len(observer.ended()) == 1
    assert not reactor.getDelayedCalls()


def test_receive_timeout_only_when_asked() -> None:
    reactor, session, device, _, _ = two_way(SsrcPolicy.LEARN, receive_timeout=1.0)
    reactor.advance(0.5)
    device.send(device_packet(SSRC, 1))
    for _ in range(40):  # 0.8 s of silence from the device: still within the 1 s allowed
        reactor.advance(0.02)
    assert session.state is SessionState.STREAMING
    for _ in range(30):
        reactor.advance(0.02)
    assert session.end_reason == "receive-timeout"
    reactor2, session2, _, _, _ = two_way(SsrcPolicy.LEARN)
    for _ in range(100):
        reactor2.advance(0.3)
    assert session2.state is SessionState.STREAMING


def test_device_that_stops_reading_ends_with_send_stalled() -> None:
    reactor, manager, _observer = make()
    session = manager.start(
        params(max_send_buffer=2048, stall_timeout=1.0, preroll_ms=0), tone_source()
    )
    device = FakeDevice()
    device.connect(reactor, session.port)
    device.stop_reading()  # after ~2 KiB the writer drops packets and the stall timer runs
    for _ in range(200):
        reactor.advance(0.02)
        if session.state is SessionState.CLOSED:
            break
    assert session.end_reason == "send-stalled"
    assert session.stats.packets_dropped > 0
    assert len(device.transport.value()) <= 2048 + 200
    assert not reactor.getDelayedCalls()


def test_send_stall_recovers_when_the_device_reads_again() -> None:
    reactor, manager, _ = make()
    session = manager.start(
        params(max_send_buffer=2048, stall_timeout=1.0, preroll_ms=0), tone_source()
    )
    device = FakeDevice()
    device.connect(reactor, session.port)
    device.stop_reading()
    for _ in range(40):  # stalls for 0.8 s (< 1 s allowed) and then reads again
        reactor.advance(0.02)
    assert session.stats.packets_dropped > 0
    device.resume_reading()
    for _ in range(100):
        reactor.advance(0.02)
    assert session.state is SessionState.STREAMING


def test_source_fans_out_encoded_once() -> None:
    reactor, manager, _ = make()
    source = ListSource.counting(50, loop=True)
    sessions = [manager.start(params(key=SessionKey("v", "a", "s", n)), source) for n in range(5)]
    devices = []
    for session in sessions:
        device = FakeDevice()
        device.connect(reactor, session.port)
        devices.append(device)
    for _ in range(10):
        reactor.advance(0.02)
    assert source.reads == 10, "the source is read once per frame, not once per session"
    payloads = [b"".join(p.payload for p in d.receive()) for d in devices]
    assert len(set(payloads)) == 1


def test_start_same_key_is_idempotent_unless_replaced() -> None:
    _reactor, manager, _observer = make()
    first = manager.start(params(), tone_source())
    again = manager.start(params(), tone_source())
    assert again is first and manager.pool.leased_count == 1
    replaced = manager.start(params(), tone_source(), replace=True)
    assert replaced is not first
    assert first.end_reason == "stopped"
    assert manager.pool.leased_count == 1


def test_explicit_port_in_use_fails_cleanly() -> None:
    reactor, manager, observer = make(busy={30004})
    with pytest.raises(PortInUseError) as caught:
        manager.start(params(src_port=30004), tone_source())
    assert caught.value.port == 30004
    assert "30004" in str(caught.value) and "another process" in str(caught.value)
    assert manager.pool.leased_count == 0 and manager.sessions() == []
    assert observer.events == [] and not reactor.getDelayedCalls()


def test_explicit_port_held_by_a_session() -> None:
    _reactor, manager, _ = make()
    first = manager.start(params(src_port=30005), tone_source())
    with pytest.raises(PortInUseError, match=f"talk session {first.id}"):
        manager.start(params(src_port=30005, key=SessionKey("v", "a", "b", 2)), tone_source())
    assert first.state is SessionState.LISTENING


def test_pool_exhausts_with_a_clear_error_and_recovers() -> None:
    _reactor, manager, _ = make(low=30000, high=30004)
    sessions = [
        manager.start(params(key=SessionKey("v", "a", "s", n)), tone_source()) for n in range(5)
    ]
    with pytest.raises(PoolExhaustedError, match="all 5 ports are leased"):
        manager.start(params(key=SessionKey("v", "a", "s", 9)), tone_source())
    sessions[2].stop()
    again = manager.start(params(key=SessionKey("v", "a", "s", 9)), tone_source())
    assert again.port == sessions[2].port


def test_pool_skips_ports_held_by_other_processes() -> None:
    _reactor, manager, _ = make(busy={30000, 30001, 30002}, low=30000, high=30003)
    session = manager.start(params(), tone_source())
    assert session.port == 30003


def test_shutdown_ends_everything_with_shutdown() -> None:
    reactor, manager, observer = make()
    listening = manager.start(params(key=SessionKey("v", "a", "s", 1)), tone_source())
    streaming = manager.start(params(key=SessionKey("v", "a", "s", 2)), tone_source())
    FakeDevice().connect(reactor, streaming.port)
    done = manager.shutdown()
    assert done.called
    assert {e[2] for e in observer.ended()} == {"shutdown"}
    assert listening.state is streaming.state is SessionState.CLOSED
    assert manager.pool.leased_count == 0 and not reactor.getDelayedCalls()
    with pytest.raises(SessionError, match="shutting down"):
        manager.start(params(), tone_source())


def test_invalid_params_are_rejected_with_every_problem() -> None:
    with pytest.raises(SessionError) as caught:
        params(packet_ms=30, wait_timeout=0, src_port=70000)
    message = str(caught.value)
    assert "30 ms" in message and "wait timeout" in message and "70000" in message


def test_rtcp_on_the_uplink_is_skipped_not_learnt_as_ssrc() -> None:
    _, session, device, sink, _ = two_way(SsrcPolicy.LEARN)
    # An RTCP sender report (PT 200) first: its sender SSRC must not be adopted.
    sender_report = bytes([0x80, 200, 0, 6]) + (777).to_bytes(4, "big") + bytes(20)
    device.send(frame_rfc4571(sender_report) + device_packet(SSRC, 1) + device_packet(SSRC, 2))
    assert len(sink.chunks) == 2
    assert session.stats.ssrc_violations == 0 and session.stats.rtcp_packets == 1


def test_strict_policy_does_not_count_rtcp_as_violations() -> None:
    _, session, device, sink, _ = two_way(SsrcPolicy.STRICT)
    receiver_report = bytes([0x81, 201, 0, 7]) + (5).to_bytes(4, "big") + bytes(24)
    device.send(frame_rfc4571(receiver_report) + device_packet(SSRC, 1))
    assert len(sink.chunks) == 1 and session.stats.ssrc_violations == 0


def test_a_start_that_fails_after_binding_leaves_nothing_behind() -> None:
    reactor, manager, observer = make()

    def broken_attach(source, listener):
        raise RuntimeError("attach failed")

    manager.pacer.attach = broken_attach
    with pytest.raises(RuntimeError):
        manager.start(params(), tone_source())
    assert manager.pool.leased_count == 0 and manager.sessions() == []
    assert not reactor.getDelayedCalls() and observer.events == []


def test_stop_aborts_a_device_that_is_not_reading() -> None:
    reactor, manager, _ = make()
    session = manager.start(params(preroll_ms=0), tone_source())
    device = FakeDevice()
    device.connect(reactor, session.port)
    device.stop_reading()
    for _ in range(10):
        reactor.advance(0.02)
    session.stop()
    assert device.transport.disconnected, "aborted at once, not waiting for a drain"


def test_send_jitter_is_recorded_against_the_packet_duration() -> None:
    reactor, manager, _ = make()
    session = manager.start(params(preroll_ms=0), tone_source())
    reactor.advance(0)  # the pacer's first tick, so nothing is due twice after the connect
    FakeDevice().connect(reactor, session.port)

    def next_tick() -> None:  # to the pacer's exact time (summing 0.02 s drifts in floats)
        due = min(call.getTime() for call in reactor.getDelayedCalls())
        reactor.advance(due - reactor.seconds())

    for _ in range(20):  # on the 20 ms grid: no jitter
        next_tick()
    assert session.stats.jitter_max_ms == pytest.approx(0.0, abs=1e-6)
    reactor.advance(0.06)  # a reactor stall: a 60 ms gap where 20 ms was due, 40 ms of jitter
    for _ in range(5):
        next_tick()
    stats = session.stats
    assert stats.jitter_max_ms == pytest.approx(40.0, abs=0.5)
    assert 0 < stats.jitter_mean_ms < stats.jitter_max_ms


# -- PS timestamps across the RTP wrap (issue 12 item 10) -------------------------------------


class _Tap:
    """A pacer tap holding one frame (None: a gap) at a time."""

    def __init__(self) -> None:
        self.frame: bytes | None = None
        self.now = 0.0

    def g711(self, law: Law) -> bytes | None:
        return self.frame


class _Link:
    """A device link that keeps what it is sent; drops the packets it is told to."""

    framing = Framing.RFC4571
    peer = ("127.0.0.2", 40000)
    whole_packets = False
    queued = 0

    def __init__(self, drop: set[int]) -> None:
        self.sent: list[bytes] = []
        self.drop = drop
        self.writes = 0

    def write(self, header: bytes, payload: bytes) -> bool:
        self.writes += 1
        if self.writes in self.drop:
            return False
        self.sent.append(header[2:] + payload)
        return True

    def close(self, abort: bool) -> None:
        pass


def test_ps_pts_and_scr_keep_counting_in_33_bits_when_the_rtp_timestamp_wraps() -> None:
    from gb28181talk.core.sender import Sender
    from gb28181talk.media.ps import decode_scr
    from gb28181talk.media.rtp import parse_rtp

    first = 2**32 - 3 * 1800  # the RTP timestamp wraps at the fourth packet
    sender = Sender(
        params(packaging=Packaging.PS, preroll_ms=0), lambda *_: None, rng_seed=first << 16
    )
    assert sender.packetizer.next_timestamp == first
    link = _Link(drop={6})
    sender.start_sending(link)
    tap = _Tap()
    frames = [b"\x01" * 160] * 5 + [None] + [b"\x02" * 160] * 5  # a gap, then a dropped packet
    for frame in frames:
        tap.frame = None if frame is None else g711.encode(Law.ALAW, frame)
        sender.frame_ready(tap)
    packets = [parse_rtp(data) for data in link.sent]
    assert len(packets) == 9  # 10 packets made, the sixth dropped by the link
    rtp = [p.timestamp for p in packets]
    assert rtp[3] < rtp[2], "the 32-bit RTP timestamp wrapped"
    scr = [decode_scr(p.payload, 4)[0] for p in packets]
    pts = [a.pts for p in packets for a in PsDemuxer().feed(p.payload)]
    unwrapped = [first + n * 1800 for n in (0, 1, 2, 3, 4, 7, 8, 9, 10)]
    assert scr == pts == unwrapped, "90 kHz time goes on past 2**32 instead of back to 0"
    assert [(t - first) % 2**32 for t in rtp] == [(u - first) % 2**32 for u in unwrapped]


# -- receive budgets through the whole session (issue 12 items 2 and 3) ------------------------


def _flood(reactor, device: FakeDevice, data: bytes, seconds: float, session) -> None:
    """The device sends ``data`` every reactor turn it is read, for ``seconds`` of 20 ms turns."""
    for _ in range(round(seconds / 0.02)):
        if session.state is SessionState.CLOSED:
            return
        if device.transport.producerState == "producing":  # its reading is not paused
            device.send(data)
        reactor.advance(0.02)


def test_a_device_flooding_valid_audio_cannot_fill_the_recording(tmp_path) -> None:
    from gb28181talk.core.recorder import WavRecorder

    reactor, manager, observer = make()
    recorder = WavRecorder(str(tmp_path / "flood.wav"))
    session = manager.start(params(receive=True), tone_source(), sinks=[recorder])
    device = FakeDevice()
    device.connect(reactor, session.port)
    burst = b"".join(device_packet(SSRC, n) for n in range(200))  # 4 s of audio a turn
    _flood(reactor, device, burst, 5.0, session)
    assert session.end_reason == "receive-flood", session.end_detail
    elapsed = session.ended_at - session.connected_at
    assert recorder.closed
    assert recorder.bytes_written <= (elapsed + 2.0) * 16_000, "no more than time + allowance"
    stats = session.describe()["stats"]
    assert stats["excess_audio_packets"] > 0 and stats["excess_audio_s"] > 0
    assert [e[2] for e in observer.ended()] == ["receive-flood"]


def test_tiny_frames_pause_the_flooding_device_and_end_it_while_others_stream() -> None:
    reactor, manager, _ = make()
    healthy = manager.start(params(key=SessionKey("v", "a", "healthy", 5)), tone_source())
    listener = FakeDevice(port=40001)
    listener.connect(reactor, healthy.port)
    flooder = manager.start(params(receive=True), tone_source())
    device = FakeDevice()
    device.connect(reactor, flooder.port)
    tiny = b"\x00\x01\x80" * 20_000  # 20,000 one-byte frames per read
    paused_seen = False
    for _ in range(500):
        if flooder.state is SessionState.CLOSED:
            break
        if device.transport.producerState == "producing":
            device.send(tiny)
        else:
            paused_seen = True
        reactor.advance(0.02)
    assert paused_seen, "the flooding device's reading was paused"
    assert flooder.end_reason == "receive-flood", flooder.end_detail
    stats = flooder.stats
    assert stats.receive_throttles == 5
    assert stats.invalid_packets <= 5 * 2000, "at most the budget's frames were looked at"
    assert healthy.state is SessionState.STREAMING
    packets = listener.receive()
    assert [p.sequence for p in packets] == [
        (packets[0].sequence + n) & 0xFFFF for n in range(len(packets))
    ]
    assert len(packets) >= 50 * 4, "the healthy device heard every 20 ms of the flood's 4 s"


def test_a_one_way_session_ignores_what_its_device_sends() -> None:
    reactor, manager, _ = make()
    session = manager.start(params(), tone_source())
    device = FakeDevice()
    device.connect(reactor, session.port)
    for _ in range(50):
        device.send(b"\x00\x01\x80" * 20_000 + b"\xff" * 64)  # nothing here is even parsed
        reactor.advance(0.02)
    assert session.state is SessionState.STREAMING
    stats = session.stats
    assert stats.bytes_received == 50 * 60_064
    assert stats.invalid_packets == stats.packets_received == stats.receive_throttles == 0
    assert device.transport.producerState == "producing"


def test_the_receive_budget_figures_are_in_the_metrics() -> None:
    from gb28181talk.web.metrics import Metrics

    reactor, manager, _ = make()
    metrics = Metrics(manager)
    manager.add_observer(metrics)
    session = manager.start(params(receive=True), tone_source())
    device = FakeDevice()
    device.connect(reactor, session.port)
    device.send(b"".join(device_packet(SSRC, n) for n in range(150)))
    page = metrics.render()
    assert "gbtalk_excess_audio_packets_total 50" in page
    assert "gbtalk_excess_audio_seconds_total 1" in page
    assert "gbtalk_receive_throttles_total 0" in page
    session.stop()
    assert "gbtalk_excess_audio_packets_total 50" in metrics.render()
    assert 'gbtalk_sessions_ended_total{reason="receive-flood"} 0' in metrics.render()
