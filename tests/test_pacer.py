"""The shared pacer: one timer, 20 ms frames, one read per source and one encode per law."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from gb28181talk.core.pacer import (
    HISTORY_FRAMES,
    LATENESS_BUCKET_MS,
    LATENESS_BUCKETS,
    DueSlot,
    Pacer,
    SourceTap,
    TickStats,
)
from gb28181talk.core.params import EndReason, SessionKey, SessionParams
from gb28181talk.core.sender import Sender
from gb28181talk.interfaces import FRAME_BYTES
from gb28181talk.media import g711
from gb28181talk.media.framing import Framing
from gb28181talk.media.law import Law
from gb28181talk.media.payload import Packaging
from gb28181talk.testing import ListSource

FRAME_S = 0.020


class Recorder:
    """A listener that records what the pacer tells it, and may act on it."""

    def __init__(self, name: str = "listener", law: Law | None = None) -> None:
        self.name = name
        self.law = law
        self.frames: list[tuple[Any, int, float, bytes | None]] = []
        self.encoded: list[bytes | None] = []
        self.ended: list[SourceTap] = []
        self.on_frame: Callable[[SourceTap], None] | None = None
        self.on_end: Callable[[SourceTap], None] | None = None

    def frame_ready(self, tap: SourceTap) -> None:
        self.frames.append((tap.source, tap.index, tap.now, tap.pcm))
        if self.law is not None:
            self.encoded.append(tap.g711(self.law))
        if self.on_frame is not None:
            self.on_frame(tap)

    def source_ended(self, tap: SourceTap) -> None:
        self.ended.append(tap)
        if self.on_end is not None:
            self.on_end(tap)

    def __repr__(self) -> str:
        return f"Recorder({self.name})"

    @property
    def times(self) -> list[float]:
        return [now for _source, _index, now, _pcm in self.frames]


def run_next(clock: Clock) -> None:
    """Move the clock exactly to the pacer's next tick and run it (no float drift)."""
    calls = clock.getDelayedCalls()
    assert len(calls) == 1, calls
    clock.rightNow = calls[0].getTime()
    clock.advance(0)


def assert_one_timer_iff_listened(clock: Clock, pacer: Pacer) -> None:
    listened = any(tap.listeners for tap in pacer.taps())
    assert pacer.running == listened
    assert len(clock.getDelayedCalls()) == (1 if listened else 0)


def looping(count: int = 50, **kwargs: Any) -> ListSource:
    return ListSource.counting(count, loop=True, **kwargs)


def guard_runaway(pacer: Pacer, limit: int = 10_000) -> list[int]:
    """Make a tick loop at one instant fail instead of hanging; returns frames sent per tick."""
    per_tick: list[int] = []
    real_tick = pacer._tick

    def tick() -> None:
        if len(per_tick) >= limit:
            raise RuntimeError(f"the pacer ran {limit} ticks: a runaway loop")
        before = pacer.stats.frames
        real_tick()
        per_tick.append(pacer.stats.frames - before)

    pacer._tick = tick  # type: ignore[method-assign]
    return per_tick


# -- the schedule ----------------------------------------------------------------


@pytest.mark.parametrize("start", [0.0, 1000.0, 86_400.0])
def test_one_frame_every_20_ms_exactly(start: float) -> None:
    clock = Clock()
    clock.advance(start)
    pacer = Pacer(clock)
    per_tick = guard_runaway(pacer)
    source = looping()
    listener = Recorder()
    pacer.attach(source, listener)
    scheduled = []
    for _ in range(250):
        scheduled.append(clock.getDelayedCalls()[0].getTime())
        run_next(clock)
        assert_one_timer_iff_listened(clock, pacer)
    assert per_tick == [1] * 250
    assert scheduled[0] == start
    for k, at in enumerate(scheduled):
        assert at == pytest.approx(start + k * FRAME_S, abs=1e-9)
    assert listener.times == scheduled
    assert [index for _s, index, _n, _p in listener.frames] == list(range(250))
    assert source.reads == 250
    assert pacer.stats.frames == 250
    assert pacer.stats.shifted_frames == 0
    assert pacer.stats.max_lateness_ms == pytest.approx(0.0, abs=1e-6)


def test_one_frame_per_tick_on_an_epoch_sized_clock() -> None:
    clock = Clock()
    clock.advance(1_700_000_000.0)
    pacer = Pacer(clock)
    per_tick = guard_runaway(pacer, limit=1000)
    listener = Recorder()
    pacer.attach(looping(), listener)
    for _ in range(100):
        run_next(clock)
    assert per_tick == [1] * 100


def test_a_fine_grained_clock_sends_each_frame_within_a_step_of_its_time() -> None:
    clock = Clock()
    pacer = Pacer(clock)
    listener = Recorder()
    pacer.attach(looping(), listener)
    for _ in range(1000):
        clock.advance(0.001)
        assert len(clock.getDelayedCalls()) == 1
    assert len(listener.frames) in (50, 51)
    for k, now in enumerate(listener.times):
        assert k * FRAME_S - 1e-9 <= now <= k * FRAME_S + 0.001 + 1e-9
    assert pacer.stats.shifted_frames == 0


def test_no_timer_before_attach_and_none_once_every_listener_detached() -> None:
    clock = Clock()
    pacer = Pacer(clock)
    assert clock.getDelayedCalls() == []
    assert not pacer.running
    one, two = looping(), looping()
    first, second = Recorder("first"), Recorder("second")
    pacer.attach(one, first)
    pacer.attach(two, second)
    pacer.attach(one, second)
    assert len(clock.getDelayedCalls()) == 1
    for _ in range(5):
        run_next(clock)
        assert len(clock.getDelayedCalls()) == 1
    pacer.detach(one, first)
    pacer.detach(two, second)
    assert_one_timer_iff_listened(clock, pacer)
    pacer.detach(one, second)
    assert clock.getDelayedCalls() == []
    assert not pacer.running
    assert pacer.taps() == []
    clock.advance(10)
    assert (one.reads, two.reads) == (5, 5)


def test_detaching_what_was_never_attached_is_harmless() -> None:
    clock = Clock()
    pacer = Pacer(clock)
    source = looping()
    pacer.detach(source, Recorder())
    listener = Recorder()
    pacer.attach(source, listener)
    pacer.detach(source, Recorder("stranger"))
    pacer.detach(looping(), listener)
    assert_one_timer_iff_listened(clock, pacer)
    assert pacer.running


def test_reattaching_after_idle_starts_a_fresh_timeline() -> None:
    clock = Clock()
    pacer = Pacer(clock)
    source, listener = looping(), Recorder()
    pacer.attach(source, listener)
    run_next(clock)
    pacer.detach(source, listener)
    clock.advance(3.007)
    pacer.attach(source, listener)
    run_next(clock)
    run_next(clock)
    assert listener.times[1:] == pytest.approx([3.007, 3.027])
    assert pacer.stats.shifted_frames == 0


# -- sources and listeners -----------------------------------------------------------


def test_each_source_is_read_once_per_frame_whatever_its_listeners() -> None:
    clock = Clock()
    pacer = Pacer(clock)
    announce, music = looping(7, stream="announce"), looping(9, stream="music")
    one, two, three = Recorder("one"), Recorder("two"), Recorder("three")
    pacer.attach(announce, one)
    pacer.attach(announce, two)
    pacer.attach(music, three)
    assert len(pacer.taps()) == 2
    for _ in range(30):
        run_next(clock)
    assert (announce.reads, music.reads) == (30, 30)
    expected_announce = [announce.frames[i % 7] for i in range(30)]
    expected_music = [music.frames[i % 9] for i in range(30)]
    assert [pcm for *_rest, pcm in one.frames] == expected_announce
    assert [pcm for *_rest, pcm in two.frames] == expected_announce
    assert [pcm for *_rest, pcm in three.frames] == expected_music
    assert {source for source, *_rest in three.frames} == {music}
    assert one.times == two.times == three.times


def test_each_frame_is_encoded_once_per_law(monkeypatch: pytest.MonkeyPatch) -> None:
    real_encode = g711.encode
    calls: list[Law] = []

    def counting_encode(law: Law, pcm16: bytes) -> bytes:
        calls.append(law)
        return real_encode(law, pcm16)

    monkeypatch.setattr(g711, "encode", counting_encode)
    clock = Clock()
    pacer = Pacer(clock)
    frames: list[bytes | None] = [b"\x10\x20" * (FRAME_BYTES // 2), None, b"\x00\x80" * 160]
    source = ListSource(frames, loop=True)
    alaw = [Recorder("a1", Law.ALAW), Recorder("a2", Law.ALAW), Recorder("a3", Law.ALAW)]
    ulaw = [Recorder("u1", Law.ULAW), Recorder("u2", Law.ULAW)]
    for listener in (*alaw, *ulaw):
        pacer.attach(source, listener)
    for frame_number in range(6):
        calls.clear()
        run_next(clock)
        pcm = frames[frame_number % 3]
        if pcm is None:
            assert calls == []
        else:
            assert Counter(calls) == Counter([Law.ALAW, Law.ULAW])
    assert source.reads == 6
    for listener in alaw:
        assert listener.encoded == [
            None if pcm is None else real_encode(Law.ALAW, pcm) for pcm in frames * 2
        ]
    for listener in ulaw:
        assert listener.encoded == [
            None if pcm is None else real_encode(Law.ULAW, pcm) for pcm in frames * 2
        ]


def test_the_encoded_frame_is_shared_between_listeners() -> None:
    clock = Clock()
    pacer = Pacer(clock)
    source = looping()
    first, second = Recorder("first", Law.ALAW), Recorder("second", Law.ALAW)
    pacer.attach(source, first)
    pacer.attach(source, second)
    run_next(clock)
    assert first.encoded[0] is second.encoded[0]


# -- stalls -----------------------------------------------------------------------


@pytest.mark.parametrize("max_burst", [1, 3, 5])
def test_a_one_second_stall_sends_a_bounded_burst_and_shifts_the_rest(max_burst: int) -> None:
    clock = Clock()
    pacer = Pacer(clock, max_burst_frames=max_burst)
    per_tick = guard_runaway(pacer)
    source, listener = looping(), Recorder()
    pacer.attach(source, listener)
    run_next(clock)
    assert per_tick == [1]

    clock.advance(1.0)
    assert per_tick == [1, max_burst]
    assert pacer.stats.shifted_frames == 50 - max_burst
    assert listener.times[1:] == [1.0] * max_burst
    assert pacer.stats.max_lateness_ms == pytest.approx(980.0)
    assert len(clock.getDelayedCalls()) == 1

    after = []
    for _ in range(20):
        after.append(clock.getDelayedCalls()[0].getTime())
        run_next(clock)
    assert per_tick[2:] == [1] * 20
    assert after == pytest.approx([1.0 + FRAME_S * (k + 1) for k in range(20)], abs=1e-9)
    assert source.reads == 1 + max_burst + 20, "nothing is skipped from the audio"
    assert pacer.stats.shifted_frames == 50 - max_burst


def test_a_short_lateness_is_caught_up_without_shifting() -> None:
    clock = Clock()
    pacer = Pacer(clock, max_burst_frames=5)
    per_tick = guard_runaway(pacer)
    pacer.attach(looping(), Recorder())
    run_next(clock)
    clock.advance(0.085)
    assert per_tick == [1, 4]
    assert pacer.stats.shifted_frames == 0
    assert clock.getDelayedCalls()[0].getTime() == pytest.approx(0.1)


# -- re-entrancy ------------------------------------------------------------------


def test_a_listener_detaching_itself_in_frame_ready_stops_the_timer() -> None:
    clock = Clock()
    pacer = Pacer(clock)
    source, listener = looping(), Recorder()

    def leave_at_third(tap: SourceTap) -> None:
        if len(listener.frames) == 3:
            pacer.detach(tap.source, listener)

    listener.on_frame = leave_at_third
    pacer.attach(source, listener)
    for _ in range(3):
        run_next(clock)
    assert clock.getDelayedCalls() == []
    assert not pacer.running
    clock.advance(5)
    assert len(listener.frames) == 3
    assert source.reads == 3


def test_a_listener_detaching_itself_during_a_burst_gets_no_more_frames() -> None:
    clock = Clock()
    pacer = Pacer(clock)
    source, listener, stays = looping(), Recorder("leaves"), Recorder("stays")
    listener.on_frame = lambda tap: pacer.detach(tap.source, listener)
    pacer.attach(source, listener)
    pacer.attach(source, stays)
    run_next(clock)
    clock.advance(1.0)
    assert len(listener.frames) == 1
    assert len(stays.frames) == 6
    assert_one_timer_iff_listened(clock, pacer)


def test_a_listener_attaching_others_in_frame_ready_makes_no_second_timer() -> None:
    clock = Clock()
    pacer = Pacer(clock)
    source, other_source = looping(), looping(stream="other")
    host, guest, visitor = Recorder("host"), Recorder("guest"), Recorder("visitor")

    def invite(tap: SourceTap) -> None:
        if len(host.frames) == 2:
            pacer.attach(tap.source, guest)
            pacer.attach(other_source, visitor)

    host.on_frame = invite
    pacer.attach(source, host)
    for _ in range(5):
        run_next(clock)
        assert len(clock.getDelayedCalls()) == 1
    assert len(host.frames) == 5
    assert len(guest.frames) == 3
    assert len(visitor.frames) == 3
    assert guest.times == host.times[2:]


def test_the_last_listener_swapping_for_another_in_frame_ready_keeps_one_timer() -> None:
    clock = Clock()
    pacer = Pacer(clock)
    first_source, second_source = looping(), looping(stream="second")
    leaving, arriving = Recorder("leaving"), Recorder("arriving")

    def hand_over(tap: SourceTap) -> None:
        pacer.detach(tap.source, leaving)
        pacer.attach(second_source, arriving)

    leaving.on_frame = hand_over
    pacer.attach(first_source, leaving)
    run_next(clock)
    assert len(clock.getDelayedCalls()) == 1
    assert [tap.source for tap in pacer.taps()] == [second_source]
    for _ in range(3):
        run_next(clock)
    assert len(arriving.frames) == 3
    assert arriving.times == pytest.approx([0.02, 0.04, 0.06])
    assert first_source.reads == 1


def test_a_failing_listener_is_logged_and_detached_and_the_others_play_on() -> None:
    clock = Clock()
    pacer = Pacer(clock)
    broken, healthy, neighbour = Recorder("broken"), Recorder("healthy"), Recorder("neighbour")

    def fail(tap: SourceTap) -> None:
        raise RuntimeError("a session bug")

    broken.on_frame = fail
    shared, other = looping(stream="shared"), looping(stream="other")
    pacer.attach(shared, broken)
    pacer.attach(shared, neighbour)
    pacer.attach(other, healthy)
    with capturedLogs() as events:
        run_next(clock)
    failures = [event for event in events if "log_failure" in event]
    assert len(failures) == 1
    assert failures[0]["log_failure"].check(RuntimeError)
    assert len(clock.getDelayedCalls()) == 1
    for _ in range(3):
        run_next(clock)
    assert len(broken.frames) == 1
    assert len(neighbour.frames) == len(healthy.frames) == 4
    assert shared.reads == other.reads == 4
    assert_one_timer_iff_listened(clock, pacer)


def test_a_failing_only_listener_leaves_no_timer_behind() -> None:
    clock = Clock()
    pacer = Pacer(clock)
    broken = Recorder("broken")

    def fail(tap: SourceTap) -> None:
        raise RuntimeError("a session bug")

    broken.on_frame = fail
    pacer.attach(looping(), broken)
    with capturedLogs():
        run_next(clock)
    assert pacer.taps() == []
    assert clock.getDelayedCalls() == []
    assert not pacer.running


def test_a_failing_source_ended_handler_does_not_stop_the_others() -> None:
    clock = Clock()
    pacer = Pacer(clock)
    finite, endless = ListSource.counting(1), looping()
    broken, healthy, after = Recorder("broken"), Recorder("healthy"), Recorder("after")

    def fail(tap: SourceTap) -> None:
        raise RuntimeError("a cleanup bug")

    broken.on_end = fail
    pacer.attach(finite, broken)
    pacer.attach(finite, after)
    pacer.attach(endless, healthy)
    with capturedLogs() as events:
        for _ in range(4):
            run_next(clock)
    assert sum(1 for event in events if "log_failure" in event) == 1
    assert len(after.ended) == 1
    assert len(healthy.frames) == 4
    assert [tap.source for tap in pacer.taps()] == [endless]


# -- sources that end -------------------------------------------------------------


def test_an_ended_source_tells_each_listener_once_and_is_dropped() -> None:
    clock = Clock()
    pacer = Pacer(clock)
    finite = ListSource.counting(3)
    listeners = [Recorder(f"l{i}") for i in range(3)]
    for listener in listeners:
        pacer.attach(finite, listener)
    for _ in range(3):
        run_next(clock)
    assert all(len(listener.frames) == 3 for listener in listeners)
    assert all(listener.ended == [] for listener in listeners)
    run_next(clock)
    for listener in listeners:
        assert len(listener.ended) == 1
        assert listener.ended[0].source is finite
        assert len(listener.frames) == 3
    assert pacer.taps() == []
    assert clock.getDelayedCalls() == []
    clock.advance(10)
    assert finite.reads == 4
    assert all(len(listener.ended) == 1 for listener in listeners)
    pacer.detach(finite, listeners[0])  # late, as a session ending afterwards would


def test_an_ended_source_is_dropped_while_others_play_on() -> None:
    clock = Clock()
    pacer = Pacer(clock)
    finite, endless = ListSource.counting(2), looping()
    leaver, stayer = Recorder("leaver"), Recorder("stayer")
    leaver.on_end = lambda tap: pacer.detach(tap.source, leaver)  # as a talk session does
    pacer.attach(finite, leaver)
    pacer.attach(endless, stayer)
    for _ in range(10):
        run_next(clock)
        assert_one_timer_iff_listened(clock, pacer)
    assert len(leaver.ended) == 1
    assert [tap.source for tap in pacer.taps()] == [endless]
    assert (finite.reads, endless.reads) == (3, 10)
    assert len(stayer.frames) == 10


def test_a_listener_attached_inside_source_ended_still_hears_the_end() -> None:
    clock = Clock()
    pacer = Pacer(clock)
    finite = ListSource.counting(1)
    first, late = Recorder("first"), Recorder("late")

    def hand_over(tap: SourceTap) -> None:
        pacer.detach(tap.source, first)
        pacer.attach(tap.source, late)

    first.on_end = hand_over
    pacer.attach(finite, first)
    for _ in range(2):
        run_next(clock)
    assert len(first.ended) == 1
    assert [tap.source for tap in pacer.taps()] == [finite]
    assert len(clock.getDelayedCalls()) == 1
    run_next(clock)
    assert len(late.ended) == 1
    assert clock.getDelayedCalls() == []


def test_gaps_are_frames_not_the_end() -> None:
    clock = Clock()
    pacer = Pacer(clock)
    source = ListSource([None, b"\x01\x00" * 160, None])
    listener = Recorder()
    pacer.attach(source, listener)
    for _ in range(4):
        run_next(clock)
    assert [pcm is None for *_rest, pcm in listener.frames] == [True, False, True]
    assert len(listener.ended) == 1


def test_a_source_ended_before_attach_ends_at_the_first_tick() -> None:
    clock = Clock()
    pacer = Pacer(clock)
    listener = Recorder()
    pacer.attach(ListSource([]), listener)
    run_next(clock)
    assert len(listener.ended) == 1
    assert listener.frames == []
    assert clock.getDelayedCalls() == []


# -- TickStats ---------------------------------------------------------------------


def test_tick_stats_percentiles_on_known_lateness() -> None:
    stats = TickStats()
    assert stats.percentile_ms(0.5) == 0.0
    for lateness in range(100):
        stats.record(float(lateness))
    assert stats.ticks == 100
    assert stats.max_lateness_ms == 99.0
    assert stats.percentile_ms(0.01) == 0.5
    assert stats.percentile_ms(0.5) == 49.5
    assert stats.percentile_ms(0.99) == 98.5
    assert stats.percentile_ms(1.0) == 99.5


def test_tick_stats_clamp_below_zero_and_above_the_last_bucket() -> None:
    stats = TickStats()
    stats.record(-3.0)
    stats.record(0.2)
    stats.record(5000.0)
    assert stats.max_lateness_ms == 5000.0
    assert stats.percentile_ms(0.5) == LATENESS_BUCKET_MS
    assert stats.percentile_ms(1.0) == LATENESS_BUCKETS * LATENESS_BUCKET_MS


def test_tick_stats_are_monotonic_in_the_fraction() -> None:
    stats = TickStats()
    for lateness in (0.1, 0.1, 2.0, 7.3, 7.4, 19.0, 150.0):
        stats.record(lateness)
    fractions = [i / 20 for i in range(1, 21)]
    values = [stats.percentile_ms(f) for f in fractions]
    assert values == sorted(values)
    assert values[-1] == 150.5


def test_tick_stats_percentile_rank_is_exact() -> None:
    stats = TickStats()
    for _ in range(7):
        stats.record(0.0)
    for _ in range(93):
        stats.record(10.0)
    assert stats.percentile_ms(0.07) == 0.5


def test_tick_stats_lowest_percentile_is_the_minimum_bucket() -> None:
    stats = TickStats()
    for _ in range(10):
        stats.record(10.0)
    assert stats.percentile_ms(0.0) == 10.5


# -- property: timer scheduled iff some source has listeners --------------------------

SOURCES = 3
LISTENERS = 4

operations = st.lists(
    st.one_of(
        st.tuples(st.just("attach"), st.integers(0, SOURCES - 1), st.integers(0, LISTENERS - 1)),
        st.tuples(st.just("detach"), st.integers(0, SOURCES - 1), st.integers(0, LISTENERS - 1)),
        st.tuples(st.just("advance"), st.sampled_from([0.0, 0.001, 0.02, 0.05, 0.3, 1.5])),
        st.tuples(st.just("tick"), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=300)
@given(
    operations,
    st.lists(st.sampled_from(["loop", "short", "ended"]), min_size=SOURCES, max_size=SOURCES),
    st.lists(st.sampled_from(["plain", "leave", "leave-on-end"]), min_size=LISTENERS,
             max_size=LISTENERS),
)
def test_timer_scheduled_iff_some_source_has_listeners(
    ops: list[tuple[Any, ...]], source_kinds: list[str], listener_kinds: list[str]
) -> None:
    clock = Clock()
    pacer = Pacer(clock, max_burst_frames=3)
    per_tick = guard_runaway(pacer, limit=100_000)
    sources = [
        looping(5) if kind == "loop" else ListSource.counting(4 if kind == "short" else 0)
        for kind in source_kinds
    ]
    listeners = [Recorder(f"l{i}") for i in range(LISTENERS)]
    for listener, kind in zip(listeners, listener_kinds, strict=True):
        if kind == "leave":

            def leave_after_three(tap: SourceTap, listener: Recorder = listener) -> None:
                if len(listener.frames) % 3 == 0:
                    pacer.detach(tap.source, listener)

            listener.on_frame = leave_after_three
        elif kind == "leave-on-end":
            listener.on_end = lambda tap, listener=listener: pacer.detach(tap.source, listener)

    for op in ops:
        if op[0] == "attach":
            pacer.attach(sources[op[1]], listeners[op[2]])
        elif op[0] == "detach":
            pacer.detach(sources[op[1]], listeners[op[2]])
        elif op[0] == "advance":
            clock.advance(op[1])
        elif clock.getDelayedCalls():
            run_next(clock)
        assert_one_timer_iff_listened(clock, pacer)
        assert all(frames <= 3 for frames in per_tick)
        for source in sources:
            assert source.reads <= pacer.stats.frames


class _BrokenSource(ListSource):
    """A plug-in source whose read_frame raises."""

    def read_frame(self) -> bytes | None:
        raise RuntimeError("decoder crashed")


def test_a_failing_source_ends_for_its_listeners_and_the_clock_goes_on() -> None:
    clock = Clock()
    pacer = Pacer(clock)
    healthy = ListSource.counting(100, loop=True)
    broken_listener, healthy_listener = Recorder(), Recorder()
    pacer.attach(_BrokenSource([]), broken_listener)
    pacer.attach(healthy, healthy_listener)
    for _ in range(5):
        clock.advance(0.02)
    assert len(broken_listener.ended) == 1
    assert healthy.reads >= 5 and pacer.running


# -- due-only pacing: who is called on which frame, in which order ------------------------

class DueRecorder(Recorder):
    """A listener that may be due only on some frames; every call goes to one shared log."""

    def __init__(self, name: str, log: list[tuple[str, str, int, Any]],
                 due: DueSlot | None = None) -> None:
        super().__init__(name)
        self.log = log
        self.due = due

    def frame_ready(self, tap: SourceTap) -> None:
        self.log.append((self.name, "frame", tap.index, tap.pcm))
        super().frame_ready(tap)

    def packet_due(self, tap: SourceTap, payload: bytes | bytearray | None) -> None:
        self.log.append((self.name, "due", tap.index, payload))

    def source_ended(self, tap: SourceTap) -> None:
        self.log.append((self.name, "ended", tap.index, None))
        super().source_ended(tap)


def _calls(log: list[tuple[str, str, int, Any]], index: int) -> list[tuple[str, str]]:
    return [(name, kind) for name, kind, at, _payload in log if at == index]


def test_due_listeners_are_called_only_when_due_group_by_group_in_attach_order() -> None:
    clock = Clock()
    pacer = Pacer(clock)
    source = ListSource.counting(12)
    log: list[tuple[str, str, int, Any]] = []
    every5 = DueSlot(5, 2, Law.ALAW, 14)
    a = DueRecorder("a", log)
    b = DueRecorder("b", log, DueSlot(1, 0, Law.ALAW, None))
    c = DueRecorder("c", log, every5)
    d = DueRecorder("d", log)
    e = DueRecorder("e", log, DueSlot(5, 2, Law.ALAW, 14))  # an equal slot: c's group
    f = DueRecorder("f", log, DueSlot(2, 1, Law.ULAW, None))
    for listener in (a, b, c, d, e, f):
        pacer.attach(source, listener)
    for _ in range(13):
        run_next(clock)

    plain = [("a", "frame"), ("d", "frame"), ("b", "due")]
    assert _calls(log, 0) == plain
    assert _calls(log, 1) == [*plain, ("f", "due")]
    assert _calls(log, 2) == [*plain, ("c", "due"), ("e", "due")]
    assert _calls(log, 3) == [*plain, ("f", "due")]
    assert _calls(log, 7) == [*plain, ("c", "due"), ("e", "due"), ("f", "due")]
    assert _calls(log, 12) == [(name, "ended") for name in "abcdef"], "the end: everyone, in order"
    assert [at for name, kind, at, _p in log if name == "c"] == [2, 7, 12]

    payloads = {(name, at): payload for name, kind, at, payload in log if kind == "due"}
    frames = source.frames
    assert payloads["b", 4] == g711.encode(Law.ALAW, frames[4])
    assert payloads["f", 5] == g711.encode(Law.ULAW, frames[4] + frames[5])
    assert payloads["c", 7] is payloads["e", 7], "one shared buffer for the slot's group"
    assert payloads["c", 7] == bytearray(14) + g711.encode(Law.ALAW, b"".join(frames[3:8]))
    assert payloads["c", 2] is None, "fewer frames than a packet read yet: None (replay)"


def test_a_listener_changing_its_due_is_regrouped_from_the_next_frame() -> None:
    clock = Clock()
    pacer = Pacer(clock)
    source = looping()
    log: list[tuple[str, str, int, Any]] = []
    a = DueRecorder("a", log)
    b = DueRecorder("b", log)

    def align(tap: SourceTap) -> None:
        if tap.index == 3:
            a.due = DueSlot(3, 3, Law.ALAW, None)
            tap.regroup()

    a.on_frame = align
    pacer.attach(source, a)
    pacer.attach(source, b)
    for _ in range(10):
        run_next(clock)
    assert [(at, kind) for name, kind, at, _p in log if name == "a"] == [
        (0, "frame"), (1, "frame"), (2, "frame"), (3, "frame"), (6, "due"), (9, "due")]
    assert [at for name, _kind, at, _p in log if name == "b"] == list(range(10))
    assert _calls(log, 6) == [("a", "due"), ("b", "frame")], "a's group first: a attached first"
    a.due = None
    pacer.detach(source, b)  # detaching regroups too
    run_next(clock)
    assert _calls(log, 10) == [("a", "frame")]


def test_a_gap_calls_every_due_listener_with_none_and_the_history_holds_it() -> None:
    clock = Clock()
    pacer = Pacer(clock)
    frames: list[bytes | None] = list(ListSource.counting(20).frames)
    frames[6] = None
    source = ListSource(frames, loop=True)
    log: list[tuple[str, str, int, Any]] = []
    due = DueRecorder("due", log, DueSlot(4, 3, Law.ALAW, 14))
    pacer.attach(source, due)
    taps = pacer.taps()
    for _ in range(12):
        run_next(clock)
    assert [(at, payload is None) for _n, _k, at, payload in log] == [
        (3, False), (6, True), (7, True), (11, False)], "called on the gap too, with None"
    assert taps[0].recent(4) == frames[8:12]
    assert len(taps[0].recent(100)) == HISTORY_FRAMES


def test_a_failing_due_listener_is_detached_and_its_group_plays_on() -> None:
    clock = Clock()
    pacer = Pacer(clock)
    source = looping()
    log: list[tuple[str, str, int, Any]] = []
    slot = DueSlot(1, 0, Law.ALAW, None)
    broken = DueRecorder("broken", log, slot)
    broken.packet_due = lambda tap, payload: 1 / 0  # type: ignore[method-assign]
    other = DueRecorder("other", log, slot)
    pacer.attach(source, broken)
    pacer.attach(source, other)
    with capturedLogs() as events:
        for _ in range(3):
            run_next(clock)
    assert [at for name, _k, at, _p in log if name == "other"] == [0, 1, 2]
    assert broken not in pacer.taps()[0].listeners
    assert sum("failed" in str(event.get("log_format", "")) for event in events) == 1


# -- the sender's due path sends what its per-frame path sends ----------------------------


class _RecordingLink:
    """A device link that records every packet (the clock's time, its bytes); drops the writes
    numbered in ``drop``."""

    peer = ("127.0.0.2", 40000)
    queued = 0
    whole_packets = False

    def __init__(self, clock: Clock, framing: Framing, drop: set[int], in_place: bool) -> None:
        self.clock = clock
        self.framing = framing
        self.drop = drop
        self.sent: list[tuple[float, bytes]] = []
        self.writes = 0
        if in_place:
            self.write_packet = self._write_packet

    def _take(self, data: bytes) -> bool:
        self.writes += 1
        if self.writes in self.drop:
            return False
        self.sent.append((self.clock.seconds(), data))
        return True

    def write(self, header: bytes, payload: bytes) -> bool:
        return self._take(header + payload)

    def _write_packet(self, packet: bytearray) -> bool:
        return self._take(bytes(packet))

    def close(self, abort: bool) -> None:
        pass


def _stream(frames: list[bytes | None], ends: bool, packet_ms: int, packaging: Packaging,
            framing: Framing, law: Law, connect_after: int, drop: set[int],
            in_place: bool, per_frame: bool) -> tuple[Any, ...]:
    """A sender on a real pacer: what its device gets, its figures and its ending."""
    clock = Clock()
    pacer = Pacer(clock)
    source = ListSource(frames, loop=not ends)
    ended: list[EndReason] = []
    params = SessionParams(key=SessionKey("v", "live", "s", 7), packet_ms=packet_ms,
                           packaging=packaging, framing=framing, preroll_ms=100,
                           law=law)
    sender = Sender(params, lambda reason, detail: ended.append(reason), rng_seed=0xABCDEF123456)
    if per_frame:
        sender._align = lambda tap: None  # type: ignore[method-assign]
    due_calls = [0]
    real_due = sender.packet_due

    def counted(tap: SourceTap, payload: Any) -> None:
        due_calls[0] += 1
        real_due(tap, payload)

    sender.packet_due = counted  # type: ignore[method-assign]
    pacer.attach(source, sender)
    link = _RecordingLink(clock, framing, drop, in_place)
    for tick in range(len(frames) + 30):
        if tick == connect_after:
            sender.start_sending(link)  # type: ignore[arg-type]
        if ended:
            break
        run_next(clock)
    figures = (sender.packets_sent, sender.bytes_sent, sender.preroll_packets,
               sender.packets_dropped, sender.jitter_max_ms, sender.jitter_mean_ms)
    return link.sent, figures, ended, due_calls[0]


@settings(max_examples=150, deadline=None)
@given(
    pattern=st.lists(st.booleans(), min_size=1, max_size=60),
    ends=st.booleans(),
    packet_ms=st.sampled_from(range(20, 181, 20)),
    packaging=st.sampled_from([Packaging.RAW, Packaging.PS]),
    framing=st.sampled_from([Framing.RFC4571, Framing.NONE]),
    law=st.sampled_from([Law.ALAW, Law.ULAW]),
    connect_after=st.integers(0, 12),
    drop=st.sets(st.integers(1, 40), max_size=4),
    in_place=st.booleans(),
)
def test_the_due_path_sends_exactly_what_the_per_frame_path_sends(
    pattern: list[bool], ends: bool, packet_ms: int, packaging: Packaging, framing: Framing,
    law: Law, connect_after: int, drop: set[int], in_place: bool,
) -> None:
    """Gaps anywhere (True: a gap), pre-roll, dropped packets, the source's end, every packet
    length, raw and PS, both framings, with and without the in-place link method: the bytes,
    the figures and the ending are those of the per-frame path (the old one)."""
    tone = ListSource.counting(len(pattern)).frames
    frames = [None if gap else frame for gap, frame in zip(pattern, tone, strict=True)]
    args = (frames, ends, packet_ms, packaging, framing, law, connect_after, drop, in_place)
    due_sent, due_figures, due_ended, _calls = _stream(*args, per_frame=False)
    old_sent, old_figures, old_ended, old_calls = _stream(*args, per_frame=True)
    assert old_calls == 0
    assert due_sent == old_sent, "the same bytes, each packet on the same tick"
    assert due_figures == old_figures
    assert due_ended == old_ended


def test_a_streaming_sender_is_called_only_when_its_packet_is_due() -> None:
    frames = list(ListSource.counting(40).frames)
    sent, _figures, ended, due_calls = _stream(
        frames, True, 100, Packaging.RAW, Framing.RFC4571, Law.ALAW, 0, set(), True, False)
    assert ended == [EndReason.SOURCE_ENDED]
    assert len(sent) == 8 and due_calls == 7, "aligned after the first packet, due after"
    assert all(len(packet) == 14 + 800 for _at, packet in sent)
