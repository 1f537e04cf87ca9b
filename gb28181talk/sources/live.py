"""The live source: audio arriving in real time, held in a bounded backlog with flow control.

Push, RTP ingest and a device's voice are live sources: each turns what it
receives into 8 kHz PCM16 and calls :meth:`LiveSource.feed_pcm`; the pacer
reads 20 ms frames from the backlog.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from gb28181talk.errors import SourceError
from gb28181talk.interfaces import FRAME_BYTES, FRAME_MS, ILiveSource
from gb28181talk.sources.base import (
    BYTES_PER_MS,
    SILENT_FRAME,
    integer_field,
    ms_to_bytes,
    source_description,
)

LIVE_SPEC_FIELDS = ("max_backlog_ms", "prefill_ms")
"""The API body's backlog fields every live kind (push, rtp) takes."""


@implementer(ILiveSource)
class LiveSource:
    """Audio that arrives in real time (push, RTP, device), buffered for the pacer.

    :meth:`feed_pcm` appends 8 kHz PCM16 to a backlog.  :meth:`read_frame`
    waits until ``prefill_ms`` is buffered (absorbing network jitter), then
    hands out one frame per call; when the backlog runs dry it returns None
    (an underrun) and prefills again.

    The backlog is bounded by ``max_backlog_ms``.  Without flow control the
    oldest audio beyond it is dropped and counted in ``dropped_ms``.  A
    producer attached with :meth:`attach_producer` (a pusher's socket) is
    paused instead when the backlog passes the maximum and resumed once it
    drains under half, so a fast sender is slowed rather than losing audio;
    only beyond :attr:`hard_limit_ms` (audio that arrived before the pause
    took effect) is anything dropped.
    """

    def __init__(
        self, app: str, stream: str, kind: str, max_backlog_ms: int = 2000, prefill_ms: int = 60
    ) -> None:
        if not FRAME_MS <= max_backlog_ms <= 600_000:
            raise SourceError(
                f"max_backlog_ms {max_backlog_ms!r} is out of range; use {FRAME_MS} to 600000"
            )
        if not 0 <= prefill_ms <= max_backlog_ms:
            raise SourceError(
                f"prefill_ms {prefill_ms!r} is out of range; use 0 to max_backlog_ms "
                f"({max_backlog_ms})"
            )
        self.app = app
        self.stream = stream
        self.kind = kind
        self.max_backlog_ms = max_backlog_ms
        self.prefill_ms = prefill_ms
        self.hard_limit_ms = max(max_backlog_ms * 8, 60_000)
        self._max_bytes = ms_to_bytes(max_backlog_ms)
        self._resume_bytes = self._max_bytes // 2
        self._hard_bytes = ms_to_bytes(self.hard_limit_ms)
        self._prefill_bytes = max(ms_to_bytes(prefill_ms), FRAME_BYTES)
        self._backlog = bytearray()
        self._odd = b""
        self._primed = False
        self._finishing = False
        self._closed = False
        self._producer: IPushProducer | None = None
        self._paused = False
        self._received_bytes = 0
        self._dropped_bytes = 0
        self._frames_read = 0
        self._underruns = 0
        self._pauses = 0

    # -- feeding

    def feed_pcm(self, pcm16: bytes) -> None:
        """Append 8 kHz mono PCM16; bound the backlog by pausing the producer or dropping."""
        if self._closed or self._finishing or not pcm16:
            return
        if self._odd:
            pcm16 = self._odd + pcm16
            self._odd = b""
        if len(pcm16) & 1:
            self._odd = pcm16[-1:]
            pcm16 = pcm16[:-1]
        backlog = self._backlog
        backlog += pcm16
        self._received_bytes += len(pcm16)
        size = len(backlog)
        if size <= self._max_bytes:
            return
        if self._producer is not None:
            if not self._paused:
                self._paused = True
                self._pauses += 1
                self._producer.pauseProducing()
            limit = self._hard_bytes
        else:
            limit = self._max_bytes
        if size > limit:
            excess = size - limit
            del backlog[:excess]
            self._dropped_bytes += excess

    def finish(self) -> None:
        """No more audio will come: play out the backlog, then end."""
        self._finishing = True
        if self._odd:
            self._odd = b""

    def attach_producer(self, producer: IPushProducer) -> None:
        """Flow-control ``producer`` (pause above the maximum backlog, resume under half)."""
        self._producer = producer
        self._paused = False
        if len(self._backlog) > self._max_bytes:
            self._paused = True
            self._pauses += 1
            producer.pauseProducing()

    def detach_producer(self) -> None:
        """Forget the producer (its connection is gone); the backlog bound drops again."""
        self._producer = None
        self._paused = False

    def trim_backlog(self, keep_ms: int | None = None) -> int:
        """Drop all but the newest ``keep_ms`` (default: prefill_ms) of a lossy backlog.

        Audio that queued while nobody listened is stale for a live feed: call
        this when the first session starts listening so it hears the present.
        A flow-controlled backlog (a pusher's file) is kept whole.  Returns
        the milliseconds dropped (also counted in ``dropped_ms``).
        """
        if self._producer is not None:
            return 0
        keep = self._prefill_bytes if keep_ms is None else ms_to_bytes(max(keep_ms, 0))
        excess = len(self._backlog) - keep
        if excess <= 0:
            return 0
        del self._backlog[:excess]
        self._dropped_bytes += excess
        return excess // BYTES_PER_MS

    # -- reading

    def _on_short(self) -> None:
        """Hook: the backlog is short of what read_frame needs (RTP flushes reordering)."""

    @property
    def ended(self) -> bool:
        """True once closed, or finished and drained."""
        return self._closed or (self._finishing and not self._backlog)

    @property
    def backlog_ms(self) -> int:
        """Audio waiting to be read, in milliseconds."""
        return len(self._backlog) // BYTES_PER_MS

    @property
    def paused(self) -> bool:
        """True while the attached producer is paused by flow control."""
        return self._paused

    def read_frame(self) -> bytes | None:
        """The next 20 ms, or None while prefilling, on underrun, or once ended."""
        if self._closed:
            return None
        backlog = self._backlog
        need = FRAME_BYTES if self._primed else self._prefill_bytes
        if len(backlog) < need and not self._finishing:
            self._on_short()
        if not self._primed:
            if len(backlog) >= self._prefill_bytes or (self._finishing and backlog):
                self._primed = True
            else:
                return None
        if len(backlog) >= FRAME_BYTES:
            frame = bytes(backlog[:FRAME_BYTES])
            del backlog[:FRAME_BYTES]
        elif self._finishing:
            if not backlog:
                return None
            frame = bytes(backlog) + SILENT_FRAME[len(backlog) :]
            backlog.clear()
        else:
            self._primed = False
            self._underruns += 1
            return None
        self._frames_read += 1
        if self._paused and len(backlog) < self._resume_bytes:
            self._paused = False
            if self._producer is not None:
                self._producer.resumeProducing()
        return frame

    def describe(self) -> dict[str, Any]:
        """App, stream, kind, backlog settings and the live counters."""
        return {
            **source_description(self),
            "max_backlog_ms": self.max_backlog_ms,
            "prefill_ms": self.prefill_ms,
            "backlog_ms": self.backlog_ms,
            "received_ms": self._received_bytes // BYTES_PER_MS,
            "dropped_ms": self._dropped_bytes // BYTES_PER_MS,
            "frames_read": self._frames_read,
            "underruns": self._underruns,
            "paused": self._paused,
            "pauses": self._pauses,
        }

    def close(self) -> None:
        """End the source for every listener and drop its backlog."""
        self._closed = True
        self._backlog.clear()
        self.detach_producer()


def live_options(spec: Mapping[str, Any], kind: str) -> tuple[int, int]:
    """The ``max_backlog_ms`` and ``prefill_ms`` of a live kind's API body, checked."""
    backlog = integer_field(spec, "max_backlog_ms", 2000, range(100, 60001), kind)
    prefill = integer_field(spec, "prefill_ms", 60, range(0, 1001), kind)
    if prefill > backlog:
        raise SourceError(
            f"{kind} field 'prefill_ms' is {prefill}; allowed: at most max_backlog_ms "
            f"({backlog})"
        )
    return backlog, prefill
