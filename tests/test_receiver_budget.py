"""The receiver's budgets: no device delivers more audio than time allows, or more frames than
its share of the reactor (issue 12 items 2 and 3).

Driven on a :class:`Clock`; every assertion is about counts, sizes and reasons.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from gb28181talk.core import receiver as receiver_module
from gb28181talk.core.params import EndReason, SessionKey, SessionParams, SsrcPolicy
from gb28181talk.core.receiver import ReceiveBudget, Receiver
from gb28181talk.media.framing import frame_rfc4571
from gb28181talk.media.law import Law
from gb28181talk.media.ps import PsMuxer
from gb28181talk.media.rtp import RtpPacket
from gb28181talk.testing import RecordingSink

SSRC = 100000777
PCM_PER_PACKET = 2 * 160
"""PCM16 bytes of one 20 ms packet."""

ROOMY = ReceiveBudget(frames_per_read=100_000, frames_per_second=100_000,
                      bytes_per_read=1 << 30, bytes_per_second=1 << 30)
"""Frame and byte budgets out of the way, to look at the audio budget alone."""


class TurnClock(Clock):
    """A Clock whose ``advance`` runs only the calls due when it began, as one reactor turn does.

    (A plain Clock also runs, in the same ``advance``, a ``callLater(0)`` made by a call it
    runs; a reactor leaves that for its next turn, after it has read its sockets.)
    """

    def advance(self, amount: float) -> None:
        self.rightNow += amount
        self._sortCalls()
        due = [call for call in self.calls if call.getTime() <= self.seconds()]
        for call in due:
            if call in self.calls:
                self.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)


class Ended:
    """Records the endings the receiver asks for; the first stops it, as a session's end does."""

    def __init__(self) -> None:
        self.calls: list[tuple[EndReason, str]] = []
        self.receiver: Receiver | None = None

    def __call__(self, reason: EndReason, detail: str) -> None:
        self.calls.append((reason, detail))
        if self.receiver is not None and len(self.calls) == 1:
            self.receiver.stop()

    @property
    def reasons(self) -> list[EndReason]:
        return [reason for reason, _ in self.calls]


class PausableLink:
    """The part of a device link the receiver throttles: reading paused and resumed."""

    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0
        self.resumes = 0

    def pause_reading(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        self.paused = False
        self.resumes += 1


class Harness:
    """One receiver on a Clock, started at t=100, with a sink, a link and an end recorder."""

    def __init__(self, budget: ReceiveBudget | None = None, *, receive: bool = True,
                 whole_packets: bool = False, link: Any = "pausable", sinks: int = 1) -> None:
        self.clock = TurnClock()
        self.clock.advance(100.0)
        params = SessionParams(key=SessionKey("v", "live", "budget", SSRC), receive=receive,
                               ssrc_policy=SsrcPolicy.STRICT)
        self.sinks = [RecordingSink() for _ in range(sinks)]
        self.ended = Ended()
        extra = {} if budget is None else {"budget": budget}
        self.receiver = Receiver(params, self.sinks, self.ended, self.clock, name="t", **extra)
        self.ended.receiver = self.receiver
        self.receiver.start(self.clock.seconds(), whole_packets)
        self.link = PausableLink() if link == "pausable" else link
        if self.link is not None:
            self.receiver.throttle_by(self.link)

    @property
    def sink(self) -> RecordingSink:
        return self.sinks[0]

    def send(self, data: bytes) -> None:
        self.receiver.data_received(data)

    def advance(self, seconds: float, step: float = 0.02) -> None:
        """Let ``seconds`` of reactor time pass in ``step`` turns (timers run as they fall due)."""
        for _ in range(round(seconds / step)):
            self.clock.advance(step)


def rtp(seq: int, payload: bytes = b"\xd5" * 160, pt: int = 8) -> bytes:
    return RtpPacket(pt, seq & 0xFFFF, seq * 160, SSRC, payload).encode()


def packets(first: int, count: int) -> bytes:
    return b"".join(frame_rfc4571(rtp(n)) for n in range(first, first + count))


# -- item 2: no more audio than time has passed ----------------------------------------------


def test_a_flood_of_valid_audio_is_cut_to_the_time_since_connect_plus_the_allowance() -> None:
    world = Harness(ROOMY)
    world.send(packets(0, 150))  # 3 s of audio the moment the device connects
    assert len(world.sink.chunks) == 100, "2 s of allowance"
    assert world.receiver.excess_audio_packets == 50
    assert world.receiver.excess_audio_s == pytest.approx(1.0)
    assert world.receiver.packets_received == 100
    world.clock.advance(1.0)
    world.send(packets(150, 100))
    assert len(world.sink.chunks) == 150, "one more second passed: 50 more packets"
    assert world.receiver.excess_audio_packets == 100
    assert world.ended.calls == []


def test_every_sink_gets_the_same_capped_audio() -> None:
    world = Harness(ROOMY, sinks=3)
    world.send(packets(0, 400))
    heard = {len(sink.pcm) for sink in world.sinks}
    assert heard == {100 * PCM_PER_PACKET}


def test_a_persistent_flood_ends_the_session_with_receive_flood() -> None:
    world = Harness(ROOMY)
    world.send(packets(0, 5000))  # 100 s of audio at once
    assert world.ended.reasons == [EndReason.RECEIVE_FLOOD]
    detail = world.ended.calls[0][1]
    assert "more audio than" in detail and "2 s" in detail, detail
    # It ended once the excess passed 10 s: 2 s heard, 10 s (500 packets) and one over.
    assert len(world.sink.chunks) == 100
    assert world.receiver.excess_audio_packets == 501


def test_a_device_at_real_time_loses_nothing_even_after_a_stall() -> None:
    world = Harness()
    seq = 0
    for second in range(30):
        if second in (10, 11, 12):  # the network held 3 s of audio back
            world.advance(1.0)
            continue
        count = 200 if second == 13 else 50  # ... and hands it over at once
        for _ in range(count // 50):
            for _ in range(50):
                world.send(packets(seq, 1))
                seq += 1
        world.advance(1.0)
    assert len(world.sink.chunks) == seq == 27 * 50 + 150
    assert world.receiver.excess_audio_packets == 0
    assert world.receiver.receive_throttles == 0
    assert world.link.pauses == 0
    assert world.ended.calls == []


def test_a_slightly_fast_device_is_trimmed_but_not_ended() -> None:
    world = Harness(ROOMY)
    seq = 0
    for _ in range(100):  # 100 s of a device whose clock runs 20 % fast
        world.send(packets(seq, 60))
        seq += 60
        world.clock.advance(1.0)
    assert world.ended.calls == []
    heard = len(world.sink.chunks)
    assert heard <= (99 + 2) * 50 + 1, "never more than the time passed plus the allowance"
    assert heard + world.receiver.excess_audio_packets == seq


@given(st.lists(st.tuples(st.sampled_from([0.0, 0.02, 0.5, 3.0]), st.integers(0, 300)),
                max_size=30))
def test_heard_audio_never_runs_ahead_of_time(schedule: list[tuple[float, int]]) -> None:
    """Whatever the device's pattern: heard <= time since connect + allowance, and every
    packet is heard, counted as excess, or after the flood's end not looked at."""
    world = Harness(ROOMY)
    sent = 0
    for delay, count in schedule:
        world.clock.advance(delay)
        world.send(packets(sent, count))
        sent += count
        elapsed = world.clock.seconds() - 100.0
        assert len(world.sink.pcm) <= (elapsed + 2.0) * 16_000
    heard = len(world.sink.chunks)
    if world.ended.calls:
        assert world.ended.reasons == [EndReason.RECEIVE_FLOOD]
        assert world.receiver.excess_audio_s > 10.0, "only past 10 s of excess"
    else:
        assert heard + world.receiver.excess_audio_packets == sent


@pytest.mark.parametrize("ps", [False, True], ids=["raw", "ps"])
def test_the_budget_counts_audio_before_decoding_whatever_the_packaging(
    ps: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = Harness(ROOMY)
    decoded: list[int] = []
    real_decode = receiver_module.g711.decode

    def counting_decode(law: Law, audio: bytes) -> bytes:
        decoded.append(len(audio))
        return real_decode(law, audio)

    monkeypatch.setattr(receiver_module.g711, "decode", counting_decode)
    muxer = PsMuxer(Law.ALAW)
    for n in range(300):
        payload = muxer.mux_next(b"\xd5" * 160, 1800) if ps else b"\xd5" * 160
        world.send(frame_rfc4571(rtp(n, payload, pt=96 if ps else 8)))
    assert len(decoded) == 100, "excess audio is dropped before it is decoded"
    assert world.receiver.excess_audio_packets == 200


# -- item 3: a per-connection budget of frames and bytes ---------------------------------------


TINY = b"\x00\x01\x80"
"""One RFC 4571 frame of one byte: framed correctly, not RTP."""


def test_tiny_frames_are_invalid_without_parsing_them(monkeypatch: pytest.MonkeyPatch) -> None:
    world = Harness()
    parsed: list[int] = []
    real_parse = receiver_module.parse_rtp

    def counting_parse(data: bytes) -> Any:
        parsed.append(len(data))
        return real_parse(data)

    monkeypatch.setattr(receiver_module, "parse_rtp", counting_parse)
    world.send(TINY * 10 + b"\x00\x05" + b"\x80" * 5 + frame_rfc4571(rtp(1)))
    assert world.receiver.invalid_packets == 11
    assert parsed == [172], "only a frame long enough for an RTP header is parsed"
    assert len(world.sink.chunks) == 1


def test_frames_per_read_are_bounded_and_the_rest_waits_for_the_next_turn() -> None:
    world = Harness(ReceiveBudget(frames_per_read=100, frames_per_second=1000))
    world.send(TINY * 450)
    assert world.receiver.invalid_packets == 100, "one read: at most 100 frames"
    assert world.link.paused, "no more reads while the rest waits"
    for turn in range(2, 6):
        world.clock.advance(0)
        assert world.receiver.invalid_packets == min(100 * turn, 450)
    assert not world.link.paused, "all taken: reading again"
    assert world.receiver.receive_throttles == 0, "within the second's budget"
    assert world.ended.calls == []


def test_frames_per_second_throttle_the_device_for_the_rest_of_the_second() -> None:
    world = Harness(ReceiveBudget(frames_per_read=1000, frames_per_second=300))
    world.clock.advance(0.25)
    world.send(TINY * 1000)
    assert world.receiver.invalid_packets == 300
    assert world.receiver.receive_throttles == 1
    assert world.link.paused
    world.clock.advance(0.5)
    world.clock.advance(0)
    assert world.receiver.invalid_packets == 300, "paused until the second is over"
    world.clock.advance(0.25)  # the second since the device connected is over
    assert world.receiver.invalid_packets == 600
    assert world.receiver.receive_throttles == 2
    assert world.ended.calls == []


def test_bytes_per_second_throttle_big_frames() -> None:
    world = Harness(ReceiveBudget(bytes_per_second=20_000, bytes_per_read=20_000))
    big = frame_rfc4571(rtp(1, b"\x00" * 9_000, pt=100))  # not audio: skipped, but costs bytes
    world.send(big * 5)
    assert world.receiver.invalid_packets + world.receiver.packets_received == 2
    assert world.receiver.receive_throttles == 1 and world.link.paused
    world.clock.advance(1.0)
    assert world.receiver.packets_received + world.receiver.invalid_packets == 4


def test_a_device_over_budget_second_after_second_is_ended() -> None:
    world = Harness(ReceiveBudget(frames_per_second=1000, overloaded_seconds=5))
    for _ in range(12):  # it sends far more than 1,000 frames a second, all the time
        if not world.link.paused:
            world.send(TINY * 3000)
        world.advance(1.0, step=0.25)
        if world.ended.calls:
            break
    assert world.ended.reasons == [EndReason.RECEIVE_FLOOD]
    assert "1000 frames" in world.ended.calls[0][1], world.ended.calls[0][1]
    assert world.receiver.receive_throttles == 5
    assert world.receiver.invalid_packets == 5000


def test_a_link_that_cannot_pause_is_ended_when_its_backlog_overflows() -> None:
    world = Harness(ReceiveBudget(frames_per_read=10, max_backlog=3_000), link=None)
    world.send(TINY * 100)
    assert world.ended.calls == []
    world.send(TINY * 1000)  # more arrives before the backlog is taken
    assert world.ended.reasons == [EndReason.RECEIVE_FLOOD]
    assert "waiting" in world.ended.calls[0][1]


def test_datagrams_over_the_budget_are_dropped_unread() -> None:
    world = Harness(ReceiveBudget(frames_per_second=50), whole_packets=True)
    for n in range(80):
        world.send(rtp(n))
    assert len(world.sink.chunks) == 50
    assert world.receiver.packets_over_budget == 30
    assert world.receiver.receive_throttles == 1 and world.link.paused
    world.clock.advance(1.0)
    assert not world.link.paused
    world.send(rtp(80))
    assert len(world.sink.chunks) == 51


def test_a_one_way_session_counts_device_bytes_and_parses_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def never(*args: Any) -> Any:
        raise AssertionError("a one-way session parses nothing")

    monkeypatch.setattr(receiver_module, "parse_rtp", never)
    monkeypatch.setattr(receiver_module.FrameDecoder, "feed", never)
    world = Harness(receive=False)
    for _ in range(100):
        world.send(TINY * 20_000 + b"\xff" * 100)
    assert world.receiver.bytes_received == 100 * 60_100
    assert world.receiver.invalid_packets == 0
    assert world.link.pauses == 0
    assert world.ended.calls == []
    assert world.clock.getDelayedCalls() == []


def test_stop_cancels_the_budget_timers() -> None:
    world = Harness(ReceiveBudget(frames_per_read=10, frames_per_second=20))
    world.send(TINY * 100)
    assert world.clock.getDelayedCalls()
    world.receiver.stop()
    assert world.clock.getDelayedCalls() == []
    world.clock.advance(2.0)
    assert world.receiver.invalid_packets == 10


def test_a_second_opened_by_data_before_its_timer_keeps_its_count() -> None:
    world = Harness(ReceiveBudget(frames_per_second=100), link=None)
    world.send(TINY * 100)  # exactly the second's budget: spent, nothing left over
    assert world.receiver.receive_throttles == 1
    world.clock.rightNow = 101.0  # the second is over; data comes before its timer runs
    world.send(TINY * 50)
    world.clock.advance(0)  # the timer, late: the second the data opened goes on
    world.send(TINY * 60)
    assert world.receiver.invalid_packets == 200
    assert world.receiver.receive_throttles == 2


def test_a_short_rtcp_report_is_rtcp_not_invalid() -> None:
    world = Harness()
    empty_receiver_report = bytes([0x80, 201, 0, 1]) + SSRC.to_bytes(4, "big")
    world.send(frame_rfc4571(empty_receiver_report) + TINY)
    assert world.receiver.rtcp_packets == 1
    assert world.receiver.invalid_packets == 1


def test_one_budget_timer_at_most_whatever_comes_first() -> None:
    world = Harness(ReceiveBudget(frames_per_read=10, frames_per_second=100), link=None)
    world.send(TINY * 100)  # the second's budget spent: a timer for its end
    world.clock.rightNow = 101.0  # over; before that timer runs, more than a turn's share comes
    world.send(TINY * 50)
    assert len(world.clock.getDelayedCalls()) == 1
    world.receiver.stop()
    assert world.clock.getDelayedCalls() == []
