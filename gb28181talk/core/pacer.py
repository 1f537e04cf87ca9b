"""One timer that drives every talk session's packet clock, reading each source once per frame.

Each source with listeners is read once per 20 ms frame and its frame is
encoded at most once per G.711 law, however many sessions play it: broadcasting
one announcement to 500 loudspeakers decodes and encodes it once.  After a
reactor stall the pacer sends at most ``max_burst_frames`` frames at once and
moves its timeline on by the rest, so nothing is skipped from the audio and
devices never get a burst bigger than their jitter buffers expect.

Listeners are called in one of two ways.  A plain listener gets
``frame_ready`` on every frame.  A streaming sender whose packets hold *k*
frames says when its packets end (its :class:`DueSlot`: every *k* frames
from a phase) and is called with ``packet_due`` only on those frames, with
the packet's payload already made: the last *k* frames encoded and joined
once for every sender of that law and length, optionally behind room for the
sender's header, so each sender packs its header in place and sends it whole.
Per-tick work then follows the packets sent, not sessions x frames.  The tap
keeps the last :data:`HISTORY_FRAMES` frames.  A gap ends a packet early, so
on a gap every due listener is called (with None); it then replays its frames
since its last packet from that history (as it does when the source ends)
frame by frame, exactly as ``frame_ready`` would have seen them, and takes
the gap as its new packet boundary.

Within a tick, listeners are called group by group, a group being the plain
listeners or the due listeners of one slot, the groups in the order their
first member attached, each group's members in attach order.
"""

from __future__ import annotations

import math
from collections import deque
from typing import NamedTuple, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from gb28181talk.interfaces import FRAME_MS, IAudioSource, ILiveSource
from gb28181talk.media import g711
from gb28181talk.media.law import Law

LATENESS_BUCKET_MS = 0.5
LATENESS_BUCKETS = 400
DUE_TOLERANCE_FRAMES = 1e-3
"""A tick this close (20 µs) before a frame's time sends it: reactor clocks are
floats near 1.7e9 s, whose resolution (~0.24 µs) a tighter tolerance would miss."""

HISTORY_FRAMES = 9
"""Frames each tap keeps: one 180 ms packet, the longest there is."""

log = Logger()


class DueSlot(NamedTuple):
    """When a due listener's packets end and what payload it takes: shared by its group."""

    every: int
    """Frames per packet: the listener is due on every ``every``-th frame..."""
    phase: int
    """...those whose tap index is ``phase`` modulo ``every``."""
    law: Law
    room: int | None
    """Header bytes to leave free in front of the payload (a bytearray the listener packs
    its header into), or None for the payload as plain bytes."""


class FrameListener(Protocol):
    """What the pacer calls on a listener (a talk session) for each frame of its source."""

    def frame_ready(self, tap: SourceTap) -> None:
        """A frame of ``tap``'s source is current: ``tap.pcm`` is None for a gap."""

    def source_ended(self, tap: SourceTap) -> None:
        """The source will never produce audio again."""


class PacketListener(FrameListener, Protocol):
    """A listener that, once ``due`` is set, is called only on the frames that end its packets.

    It sets ``due`` (and calls ``tap.regroup()``) at a packet boundary, and back to None
    to get every frame again; ``source_ended`` it always gets.
    """

    due: DueSlot | None

    def packet_due(self, tap: SourceTap, payload: bytes | bytearray | None) -> None:
        """This frame ends a packet: ``payload`` as ``due`` asked.

        None if this frame is a gap (every due listener is called on a gap, whose packet it
        ends early) or the payload could not be made: the listener replays its frames since
        its last packet from ``tap.recent`` itself.
        """


_Group = tuple[DueSlot | None, tuple[FrameListener, ...]]


class SourceTap:
    """One source as the pacer reads it: the current frame, encoded at most once per law."""

    __slots__ = ("_encoded", "_groups", "_payloads", "history", "index", "listeners", "now",
                 "pcm", "source")

    def __init__(self, source: IAudioSource) -> None:
        self.source = source
        self.listeners: dict[FrameListener, None] = {}
        self.index = -1
        self.pcm: bytes | None = None
        self.now = 0.0
        self.history: deque[bytes | None] = deque(maxlen=HISTORY_FRAMES)
        """The last frames read (None for a gap), the current one last."""
        self._encoded: dict[Law, bytes] = {}
        self._payloads: dict[tuple[Law, int, int | None], bytes | bytearray | None] = {}
        self._groups: list[_Group] | None = None

    def regroup(self) -> None:
        """A listener came, went or changed its ``due``: group them again before the next call."""
        self._groups = None

    def recent(self, count: int) -> list[bytes | None]:
        """The last ``count`` frames read, oldest first (fewer if fewer were read)."""
        history = self.history
        return list(history)[-count:] if count < len(history) else list(history)

    def payload(self, slot: DueSlot) -> bytes | bytearray | None:
        """A packet's payload ending at this frame, made once per (law, frames, room) and tick.

        The last ``slot.every`` frames encoded and joined, behind ``slot.room`` free bytes
        if asked; None if one of them is a gap or could not be encoded (the listener then
        replays the frames one by one and meets the gap, or the error, itself).
        """
        key = (slot.law, slot.every, slot.room)
        payloads = self._payloads
        if key in payloads:
            return payloads[key]
        payload: bytes | bytearray | None = None
        try:
            if slot.every == 1:
                payload = self.g711(slot.law)
            else:
                frames = self.recent(slot.every)
                if len(frames) == slot.every and None not in frames:
                    law = slot.law
                    payload = b"".join([g711.encode(law, pcm) for pcm in frames])  # type: ignore[arg-type]
        except Exception:
            payload = None
        if payload is not None and slot.room is not None:
            packet = bytearray(slot.room + len(payload))
            packet[slot.room :] = payload
            payload = packet
        payloads[key] = payload
        return payload

    def g711(self, law: Law) -> bytes | None:
        """The current frame in ``law``, encoded on first request and shared after."""
        if self.pcm is None:
            return None
        encoded = self._encoded.get(law)
        if encoded is None:
            encoded = self._encoded[law] = g711.encode(law, self.pcm)
        return encoded

    def advance(self, now: float) -> bool:
        """Read the next frame and hand it to the listeners it is for; False once it ended."""
        source = self.source
        self.index += 1
        self.now = now
        self._encoded = {}
        self._payloads = {}
        try:
            self.pcm = source.read_frame()
            ended = self.pcm is None and source.ended
        except Exception:
            # A broken source (a plug-in's bug) ends for its listeners; the clock goes on.
            log.failure("pacer: source {source!r} failed; ending it", source=source)
            self.pcm = None
            ended = True
        self.history.append(self.pcm)
        if ended:
            for listener in tuple(self.listeners):
                try:
                    listener.source_ended(self)
                except Exception:
                    self._failed(listener)
            return False
        index = self.index
        gap = self.pcm is None  # ends every due listener's packet early: all are called
        for slot, members in self._groups if self._groups is not None else self._group():
            if slot is None:
                for listener in members:
                    try:
                        listener.frame_ready(self)
                    except Exception:
                        self._failed(listener)
            elif gap or (index - slot.phase) % slot.every == 0:
                payload = None if gap else self.payload(slot)
                for listener in members:
                    try:
                        listener.packet_due(self, payload)  # type: ignore[attr-defined]
                    except Exception:
                        self._failed(listener)
        return True

    def _group(self) -> list[_Group]:
        """The listeners by their ``due`` (None: every frame), in order of first attach."""
        grouped: dict[DueSlot | None, list[FrameListener]] = {}
        for listener in self.listeners:
            grouped.setdefault(getattr(listener, "due", None), []).append(listener)
        groups = self._groups = [(slot, tuple(members)) for slot, members in grouped.items()]
        return groups

    def _failed(self, listener: FrameListener) -> None:
        """One broken listener must not stop the clock every other session runs on."""
        log.failure("pacer: listener {listener!r} failed; detaching it", listener=listener)
        self.listeners.pop(listener, None)
        self.regroup()


class TickStats:
    """How late the pacer's ticks ran against their schedule: count, max and a histogram."""

    def __init__(self) -> None:
        self.ticks = 0
        self.frames = 0
        self.max_lateness_ms = 0.0
        self.shifted_frames = 0
        self._histogram = [0] * LATENESS_BUCKETS

    def record(self, lateness_ms: float) -> None:
        self.ticks += 1
        if lateness_ms > self.max_lateness_ms:
            self.max_lateness_ms = lateness_ms
        bucket = min(int(lateness_ms / LATENESS_BUCKET_MS), LATENESS_BUCKETS - 1)
        self._histogram[max(bucket, 0)] += 1

    def percentile_ms(self, fraction: float) -> float:
        """Upper edge of the histogram bucket holding the ``fraction`` quantile of lateness."""
        if not self.ticks:
            return 0.0
        wanted = max(1, math.ceil(round(fraction * self.ticks, 9)))  # nearest rank
        seen = 0
        for bucket, count in enumerate(self._histogram):
            seen += count
            if seen >= wanted:
                return (bucket + 1) * LATENESS_BUCKET_MS
        return LATENESS_BUCKETS * LATENESS_BUCKET_MS


class Pacer:
    """Reads every listened-to source once per frame on one shared timer."""

    def __init__(
        self, clock: IReactorTime, frame_ms: int = FRAME_MS, max_burst_frames: int = 5
    ) -> None:
        self._clock = clock
        self._frame_s = frame_ms / 1000
        self.max_burst_frames = max_burst_frames
        self._taps: dict[IAudioSource, SourceTap] = {}
        self._call: IDelayedCall | None = None
        self._epoch = 0.0
        self._frames_done = 0
        self._in_tick = False
        self.stats = TickStats()

    @property
    def running(self) -> bool:
        """Whether the timer is scheduled (only while some source has listeners)."""
        return self._call is not None

    def taps(self) -> list[SourceTap]:
        """The sources read now."""
        return list(self._taps.values())

    def attach(self, source: IAudioSource, listener: FrameListener) -> SourceTap:
        """Start handing ``source``'s frames to ``listener`` from the next tick on."""
        tap = self._taps.get(source)
        if tap is None:
            tap = self._taps[source] = SourceTap(source)
            # A live source nobody read has a backlog of stale audio; start from now.
            if ILiveSource.providedBy(source):
                source.trim_backlog()
        tap.listeners[listener] = None
        tap.regroup()
        if self._call is None and not self._in_tick:
            self._epoch = self._clock.seconds()
            self._frames_done = 0
            self._call = self._clock.callLater(0, self._tick)
        return tap

    def detach(self, source: IAudioSource, listener: FrameListener) -> None:
        """Stop handing frames to ``listener``; the source is no longer read once nobody listens."""
        tap = self._taps.get(source)
        if tap is None:
            return
        tap.listeners.pop(listener, None)
        tap.regroup()
        if not tap.listeners:
            del self._taps[source]
            if not self._taps and not self._in_tick:
                self.stop()

    def stop(self) -> None:
        """Cancel the timer (listeners stay attached; attach restarts it)."""
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None

    def _tick(self) -> None:
        self._call = None
        self._in_tick = True
        try:
            now = self._clock.seconds()
            self._send_due_frames(now)
        finally:
            self._in_tick = False
        if self._taps:
            # callLater counts from now, after the sends: measure from there, or every
            # tick would start late by the time the previous one took.
            next_at = self._epoch + self._frames_done * self._frame_s
            delay = next_at - self._clock.seconds()
            self._call = self._clock.callLater(max(delay, 0.0), self._tick)

    def _send_due_frames(self, now: float) -> None:
        scheduled = self._epoch + self._frames_done * self._frame_s
        self.stats.record((now - scheduled) * 1000)
        elapsed_frames = (now - self._epoch) / self._frame_s + DUE_TOLERANCE_FRAMES
        due = int(elapsed_frames) + 1 - self._frames_done
        if due > self.max_burst_frames:
            # A stall: send a bounded burst and move the timeline on by the rest.
            shift = due - self.max_burst_frames
            self._epoch += shift * self._frame_s
            self.stats.shifted_frames += shift
            due = self.max_burst_frames
        for _ in range(max(due, 0)):
            for source, tap in list(self._taps.items()):
                if not tap.listeners:
                    continue
                ended = not tap.advance(now)
                # Drop the tap if its source ended or its last listener failed, but not
                # a fresh tap some listener attached to the same source meanwhile.
                if (ended or not tap.listeners) and self._taps.get(source) is tap:
                    del self._taps[source]
            self._frames_done += 1
            self.stats.frames += 1
