"""Source frames relayed from the control process to a media worker, and played there.

The control's pacer reads each source once per frame, as it always does; a
:class:`RelayListener` per (source, worker) is one more listener of that
source and sends each frame to its worker once, however many of the
worker's sessions play it.  In the worker a :class:`LiveSource` per relayed
source (prefilled by :data:`RELAY_PREFILL_MS` against the two clocks'
jitter) is what the worker's own pacer and senders play, as any live source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from gb28181talk.sources.live import LiveSource

if TYPE_CHECKING:
    from gb28181talk.core.pacer import SourceTap

RELAY_PREFILL_MS = 40
"""What a worker buffers of a relayed source before playing it (and after an underrun)."""
RELAY_BACKLOG_MS = 400
"""The most a worker keeps of a relayed source; older audio is dropped."""


def relayed_source(app: str, stream: str) -> LiveSource:
    """The worker's live source for frames relayed from the control process."""
    return LiveSource(app, stream, "relay", max_backlog_ms=RELAY_BACKLOG_MS,
                      prefill_ms=RELAY_PREFILL_MS)


class RelayListener:
    """The control pacer's listener for one source played on one worker: frames go there once.

    ``send_frame(source_id, pcm)`` and ``send_end(source_id)`` are the worker's
    AMP calls; gaps (no audio this frame) send nothing, so the worker hears them too.
    """

    def __init__(self, source_id: int, send_frame: Callable[[int, bytes], None],
                 send_end: Callable[[int], None]) -> None:
        self.source_id = source_id
        self._send_frame = send_frame
        self._send_end = send_end
        self.frames = 0
        self.sessions = 0
        """How many of the worker's sessions play this source now."""

    def frame_ready(self, tap: SourceTap) -> None:
        """One frame of the source: to the worker, unless it is a gap."""
        pcm = tap.pcm
        if pcm is not None:
            self.frames += 1
            self._send_frame(self.source_id, pcm)

    def source_ended(self, tap: SourceTap) -> None:
        """The source ended: the worker's copy ends once played out."""
        self._send_end(self.source_id)
