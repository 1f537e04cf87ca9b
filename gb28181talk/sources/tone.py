"""The tone source: a phase-continuous sine, the test signal of every install."""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import Any

from zope.interface import implementer

from gb28181talk.errors import SourceError
from gb28181talk.interfaces import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE, IAudioSource
from gb28181talk.sources.base import number_field, source_description

SPEC_FIELDS = ("frequency", "amplitude", "duration")
"""The API body's fields of a ``tone`` source, beside app, stream and kind."""


@implementer(IAudioSource)
class ToneSource:
    """A sine wave, phase-continuous across frames: the test signal of every install.

    When the frequency is a whole number of hertz, one second (50 frames) holds
    a whole number of cycles, so those 50 frames are computed once and
    replayed; other frequencies are computed frame by frame from a running
    phase.
    """

    kind = "tone"

    def __init__(
        self,
        app: str,
        stream: str,
        frequency: float = 440.0,
        amplitude: float = 0.5,
        duration: float | None = None,
    ) -> None:
        if not 1 <= frequency <= 3999:
            raise SourceError(
                f"tone frequency {frequency!r} Hz is out of range; use 1 to 3999 Hz "
                f"(below half of the {SAMPLE_RATE} Hz sample rate)"
            )
        if not 0 <= amplitude <= 1:
            raise SourceError(
                f"tone amplitude {amplitude!r} is out of range; use 0.0 to 1.0 (full scale)"
            )
        if duration is not None and not 0 < duration <= 86400:
            raise SourceError(
                f"tone duration {duration!r} s is out of range; use more than 0 and at most "
                "86400 s, or leave it empty for an endless tone"
            )
        self.app = app
        self.stream = stream
        self.frequency = float(frequency)
        self.amplitude = float(amplitude)
        self.duration = None if duration is None else float(duration)
        self._total_frames = (
            None if duration is None else max(1, math.ceil(duration * 1000 / FRAME_MS))
        )
        self._frames_read = 0
        self._closed = False
        self._peak = round(self.amplitude * 32767)
        self._step = 2 * math.pi * self.frequency / SAMPLE_RATE
        self._phase = 0.0
        self._cycle: list[bytes] | None = None
        if self.frequency.is_integer():
            self._cycle = [self._compute_frame() for _ in range(1000 // FRAME_MS)]

    def _compute_frame(self) -> bytes:
        """Compute the next frame from the running phase and advance it."""
        phase, step, peak = self._phase, self._step, self._peak
        samples = [round(peak * math.sin(phase + i * step)) for i in range(FRAME_SAMPLES)]
        self._phase = (phase + FRAME_SAMPLES * step) % (2 * math.pi)
        return struct.pack(f"<{FRAME_SAMPLES}h", *samples)

    @property
    def ended(self) -> bool:
        """True once closed or ``duration`` seconds have been read."""
        return self._closed or (
            self._total_frames is not None and self._frames_read >= self._total_frames
        )

    def read_frame(self) -> bytes | None:
        """The next 20 ms of the sine, or None once ended."""
        if self.ended:
            return None
        if self._cycle is not None:
            frame = self._cycle[self._frames_read % len(self._cycle)]
        else:
            frame = self._compute_frame()
        self._frames_read += 1
        return frame

    def describe(self) -> dict[str, Any]:
        """App, stream, kind, the tone's options and how much has been read."""
        return {
            **source_description(self),
            "frequency": self.frequency,
            "amplitude": self.amplitude,
            "duration": self.duration,
            "frames_read": self._frames_read,
            "position_ms": self._frames_read * FRAME_MS,
        }

    def close(self) -> None:
        """End the tone for every listener."""
        self._closed = True


def tone_from_spec(app: str, stream: str, spec: Mapping[str, Any]) -> ToneSource:
    """A ToneSource from the API body's tone fields, or SourceError naming the bad one."""
    frequency = number_field(spec, "frequency", 440.0, 1, 3999, "tone")
    amplitude = number_field(spec, "amplitude", 0.5, 0, 1, "tone")
    duration = number_field(spec, "duration", None, 0, 86400, "tone")
    if duration is not None and duration <= 0:
        raise SourceError(
            f"tone field 'duration' is {duration!r}; allowed: more than 0 up to 86400 "
            "seconds, or null for an endless tone"
        )
    assert frequency is not None and amplitude is not None
    return ToneSource(app, stream, frequency, amplitude, duration)
