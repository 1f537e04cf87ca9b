"""Fuzzing the talk session's receive path: whatever a device sends, the session stays sound.

A device on a memory reactor (:class:`gb28181talk.testing.FakeDevice`) sends
arbitrary bytes, or valid RTP (raw or PS, any SSRC) with bytes flipped,
dropped or inserted, in arbitrary chunks, while the pacer runs.  Whatever it
sends, ``dataReceived`` never raises; the session either streams on or ends
exactly once with a reason a device can cause (``error``, ``ssrc-violation``);
once ended, its port is back in the pool, no timer of its is pending, the
pacer has let go of it and its sinks heard the end; and the sinks only ever
get whole 16-bit PCM.  The parsers behind it (framing, RTP, PS) are fuzzed on
their own in test_framing, test_rtp and test_ps.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gb28181talk.core.manager import SessionManager
from gb28181talk.core.params import SessionKey, SessionParams, SessionState, SsrcPolicy
from gb28181talk.core.ports import PortPool
from gb28181talk.media.framing import Framing, frame_interleaved, frame_rfc4571
from gb28181talk.media.law import Law
from gb28181talk.media.ps import PsMuxer
from gb28181talk.media.rtp import RtpPacket
from gb28181talk.testing import (
    BusyPortsReactor,
    FakeDevice,
    ListSource,
    RecordingObserver,
    RecordingSink,
)

SSRC = 100000777


def budget(examples: int) -> int:
    """Examples per property: modest for CI; ``GBTALK_FUZZ_EXAMPLES=5000`` hunts deeper."""
    return int(os.environ.get("GBTALK_FUZZ_EXAMPLES", examples))
DEVICE_REASONS = {"error", "ssrc-violation"}

session_options = st.fixed_dictionaries({
    "receive": st.booleans(),
    "ssrc_policy": st.sampled_from(list(SsrcPolicy)),
    "max_ssrc_violations": st.one_of(st.none(), st.integers(1, 5)),
    "law": st.sampled_from(list(Law)),
})


def _packet(kind: str, sequence: int, ssrc: int, payload: bytes, muxer: PsMuxer) -> bytes:
    if kind == "ps":
        return RtpPacket(96, sequence, sequence * 3600, ssrc,
                         muxer.mux(payload, sequence * 3600)).encode()
    return RtpPacket(8 if kind == "pcma" else 0, sequence, sequence * 160, ssrc, payload).encode()


@st.composite
def device_streams(draw: st.DrawFn) -> bytes:
    """What a device might send: valid framed RTP, damaged, mixed with garbage, or just garbage."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=3000))
    framing = draw(st.sampled_from(["rfc4571", "interleaved", "none"]))
    kind = draw(st.sampled_from(["pcma", "pcmu", "ps"]))
    muxer = PsMuxer(Law.ALAW if kind != "pcmu" else Law.ULAW)
    ssrcs = draw(st.lists(st.sampled_from([SSRC, SSRC + 1, 0, 2**32 - 1]), min_size=1,
                          max_size=3))
    parts = []
    for sequence in range(draw(st.integers(1, 12))):
        payload = draw(st.binary(min_size=1, max_size=320))
        packet = _packet(kind, sequence, draw(st.sampled_from(ssrcs)), payload, muxer)
        if framing == "rfc4571":
            parts.append(frame_rfc4571(packet))
        elif framing == "interleaved":
            parts.append(frame_interleaved(packet, draw(st.sampled_from([0, 1, 2]))))
        else:
            parts.append(packet)
    stream = bytearray(b"".join(parts))
    for _ in range(draw(st.integers(0, 4))):  # damage: flip, cut or insert bytes
        if not stream:
            break
        at = draw(st.integers(0, len(stream) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            stream[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del stream[at : at + draw(st.integers(1, 16))]
        else:
            stream[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(stream)


@st.composite
def chunked(draw: st.DrawFn) -> list[bytes]:
    data = draw(device_streams())
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


class _ObservedSink(RecordingSink):
    """A sink that checks what it is given is whole 16-bit PCM."""

    def audio_received(self, pcm16: bytes, rtp_timestamp: int) -> None:
        assert isinstance(pcm16, bytes) and len(pcm16) % 2 == 0
        assert 0 <= rtp_timestamp < 2**32
        super().audio_received(pcm16, rtp_timestamp)


@settings(max_examples=budget(150), suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(options=session_options, chunks=chunked(), ticks_between=st.integers(0, 2))
def test_whatever_a_device_sends_the_session_streams_on_or_ends_cleanly(
    options: dict[str, Any], chunks: list[bytes], ticks_between: int
) -> None:
    reactor = BusyPortsReactor()
    manager = SessionManager(reactor, PortPool(reactor, 30000, 30003))
    observer = RecordingObserver()
    manager.add_observer(observer)
    sink = _ObservedSink()
    session = manager.start(
        SessionParams(key=SessionKey("__defaultVhost__", "live", "fuzz", SSRC), preroll_ms=0,
                      receive_timeout=None, **options),
        ListSource.counting(50, loop=True),
        sinks=[sink],
    )
    device = FakeDevice()
    assert device.connect(reactor, session.port)
    for chunk in chunks:
        device.send(chunk)  # must never raise
        for _ in range(ticks_between):
            reactor.advance(0.02)
    reactor.advance(0.02)
    device.receive()  # what the session sent is still valid framed RTP
    endings = observer.ended(session.id)
    event(f"{session.state}: {session.end_reason}, two-way {options['receive']}, "
          f"audio heard {bool(sink.chunks)}")
    if session.state is SessionState.STREAMING:
        assert endings == []
        assert manager.pacer.running
        stats = session.stats
        assert stats.bytes_received == sum(map(len, chunks))
        assert stats.packets_received + stats.invalid_packets + stats.ssrc_violations >= 0
        session.stop()
        endings = observer.ended(session.id)
        assert [event[2] for event in endings] == ["stopped"]
    else:
        assert session.state is SessionState.CLOSED
        assert [event[2] for event in endings] == [session.end_reason]
        assert session.end_reason in DEVICE_REASONS, session.end_detail
        assert options["receive"], "a one-way session ignores what the device says"
        assert device.transport.disconnecting
    assert sink.ended
    assert manager.pool.leased_count == 0
    assert manager.sessions() == []
    assert not manager.pacer.running
    assert not reactor.getDelayedCalls(), "no timer may outlive the session"
    device.send(b"\x80\x08late bytes after the end")  # a late packet is harmless
    assert len(observer.ended(session.id)) == 1


@settings(max_examples=60, deadline=None)
@given(chunks=chunked(), framing=st.sampled_from([Framing.RFC4571, Framing.NONE]))
def test_bytes_from_a_device_before_and_after_hanging_up_are_harmless(
    chunks: list[bytes], framing: Framing
) -> None:
    reactor = BusyPortsReactor()
    manager = SessionManager(reactor, PortPool(reactor, 30000, 30001))
    observer = RecordingObserver()
    manager.add_observer(observer)
    session = manager.start(
        SessionParams(key=SessionKey("__defaultVhost__", "live", "fuzz", SSRC), receive=True,
                      framing=framing),
        ListSource.counting(10, loop=True),
    )
    device = FakeDevice(framing=framing)
    assert device.connect(reactor, session.port)
    for chunk in chunks[: len(chunks) // 2]:
        device.send(chunk)
    device.hang_up()
    for chunk in chunks[len(chunks) // 2 :]:
        device.send(chunk)
    reactor.advance(1)
    assert len(observer.ended(session.id)) == 1
    assert session.end_reason in DEVICE_REASONS | {"device-closed"}
    assert manager.pool.leased_count == 0
    assert not reactor.getDelayedCalls()
