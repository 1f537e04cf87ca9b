"""Resample PCM16 at common rates to the 8 kHz mono that G.711 talk sessions carry.

A windowed-sinc low-pass (cutoff 3.6 kHz, 2 ms long) is evaluated only at the output
instants, in polyphase form: one set of taps per fractional position, so 44.1 and
22.05 kHz are interpolated exactly as well as the integer ratios are decimated.
"""

from __future__ import annotations

import math
import sys
from array import array
from operator import add, mul

__all__ = ["OUTPUT_RATE", "SUPPORTED_RATES", "StreamResampler", "to_8k_mono"]

OUTPUT_RATE = 8000
SUPPORTED_RATES = (8000, 16000, 22050, 32000, 44100, 48000)

_CUTOFF_HZ = 3600.0  # -6 dB point: -3 dB at 3.4 kHz, below -50 dB from 4.6 kHz up
_FILTER_SECONDS = 0.002  # 96 taps at 48 kHz; the cost of a sample is its number of taps
_BIG_ENDIAN = sys.byteorder == "big"


class _Design:
    """The polyphase low-pass for one input rate: taps per phase, and the rate ratio."""

    __slots__ = ("_by_channels", "half", "step_den", "step_num", "taps")

    def __init__(self, sample_rate: int) -> None:
        common = math.gcd(sample_rate, OUTPUT_RATE)  # step = num/den input samples per output
        self.step_num, self.step_den = sample_rate // common, OUTPUT_RATE // common
        self.half = max(1, round(sample_rate * _FILTER_SECONDS / 2))
        self.taps = 2 * self.half
        # Output n sits at input position n*step = base + phase/den and reads inputs
        # base-half+1 .. base+half; tap j weighs input base-half+1+j at distance t.
        phases: list[list[float]] = []
        for phase in range(self.step_den):
            if 2 * phase > self.step_den:  # fraction 1-f has the taps of f, reversed
                phases.append(phases[self.step_den - phase][::-1])
            else:
                phases.append(self._phase(sample_rate, phase / self.step_den))
        self._by_channels = {1: phases}

    def _phase(self, sample_rate: int, fraction: float) -> list[float]:
        scale = 2 * _CUTOFF_HZ / sample_rate
        taps = []
        for j in range(self.taps):
            distance = fraction + self.half - 1 - j
            x = math.pi * scale * distance
            sinc = 1.0 if x == 0 else math.sin(x) / x
            hamming = 0.54 + 0.46 * math.cos(math.pi * distance / self.half)
            taps.append(sinc * hamming)
        total = sum(taps)  # unity gain at DC for every phase, so no ripple between phases
        return [tap / total for tap in taps]

    def phases(self, channels: int) -> list[list[float]]:
        """Taps per phase for inputs that are sums over ``channels`` (shared by all users)."""
        if channels not in self._by_channels:
            factor = 1.0 / channels
            self._by_channels[channels] = [
                [tap * factor for tap in phase] for phase in self._by_channels[1]
            ]
        return self._by_channels[channels]


_DESIGNS = {rate: _Design(rate) for rate in SUPPORTED_RATES if rate != OUTPUT_RATE}


def _check_format(sample_rate: int, channels: int) -> None:
    if sample_rate not in SUPPORTED_RATES:
        rates = ", ".join(str(rate) for rate in SUPPORTED_RATES)
        raise ValueError(f"sample rate {sample_rate} Hz is not supported; use one of {rates} Hz")
    if channels not in (1, 2):
        raise ValueError(f"{channels} channels are not supported; give mono (1) or stereo (2)")


def _samples(pcm16: bytes) -> array:
    samples = array("h")
    samples.frombytes(pcm16)
    if _BIG_ENDIAN:
        samples.byteswap()
    return samples


def _pcm16(samples: array) -> bytes:
    if _BIG_ENDIAN:
        samples.byteswap()
    return samples.tobytes()


def _mix_sums(pcm16: bytes, channels: int) -> array | list[int]:
    """The samples of whole frames, summed over channels (the filter taps divide by channels)."""
    samples = _samples(pcm16)
    if channels == 1:
        return samples
    return list(map(add, samples[0::2], samples[1::2]))


def _round_clip(value: float) -> int:
    sample = math.floor(value + 0.5)
    return -32768 if sample < -32768 else 32767 if sample > 32767 else sample


class StreamResampler:
    """Incremental resampler for live audio pushed in chunks.

    Feeding in any chunking gives the same output as feeding it whole.
    """

    def __init__(self, sample_rate: int, channels: int) -> None:
        _check_format(sample_rate, channels)
        self.sample_rate = sample_rate
        self.channels = channels
        self._frame_bytes = 2 * channels
        self._design = _DESIGNS.get(sample_rate)  # None at 8 kHz: nothing to filter
        self._phases = self._design.phases(channels) if self._design else []
        self._reset()

    def _reset(self) -> None:
        self._partial = b""  # bytes of a frame not yet whole
        self._received = 0  # input frames fed since the start of the stream
        self._emitted = 0  # output samples produced since the start of the stream
        if self._design is not None:
            # Inputs before the stream's start read as silence.
            self._history: list[int] = [0] * self._design.half
            self._history_start = -self._design.half  # input index of _history[0]

    def feed(self, pcm16: bytes) -> bytes:
        """Take PCM16 frames; return the 8 kHz mono PCM16 now computable (partial frames wait)."""
        data = self._partial + pcm16 if self._partial else bytes(pcm16)
        whole = len(data) - len(data) % self._frame_bytes
        self._partial = data[whole:]
        if self._design is None:
            return self._pass_through(data[:whole])
        frames = _mix_sums(data[:whole], self.channels)
        self._history.extend(frames)
        self._received += len(frames)
        return self._emit(self._received)

    def flush(self) -> bytes:
        """End the stream: return the rest of the output and start afresh.

        A partial frame still held is dropped: half a sample cannot be played.
        """
        if self._design is None:
            self._reset()
            return b""
        # Inputs after the end read as silence; that makes every output before the end
        # computable: ceil(received / step) samples in all, i.e. duration * 8000 rounded up.
        self._history.extend([0] * self._design.half)
        out = self._emit(self._received + self._design.half)
        self._reset()
        return out

    def _pass_through(self, data: bytes) -> bytes:
        if self.channels == 1:
            return data
        samples = _samples(data)
        left, right = samples[0::2], samples[1::2]
        return _pcm16(array("h", [(a + b + 1) >> 1 for a, b in zip(left, right, strict=True)]))

    def _emit(self, available: int) -> bytes:
        """Compute every output whose inputs all lie below input index ``available``."""
        design = self._design
        assert design is not None
        half, taps, num, den = design.half, design.taps, design.step_num, design.step_den
        phases, history, origin = self._phases, self._history, self._history_start
        # Output n needs inputs up to floor(n*num/den) + half < available.
        end = -(-(available - half) * den // num)
        values = []
        for n in range(self._emitted, end):
            base, phase = divmod(n * num, den)
            first = base - half + 1 - origin
            values.append(sum(map(mul, phases[phase], history[first : first + taps])))
        self._emitted = max(self._emitted, end)
        keep_from = self._emitted * num // den - half + 1 - origin
        if keep_from > 0:
            del history[:keep_from]
            self._history_start += keep_from
        return _pcm16(array("h", map(_round_clip, values)))


def to_8k_mono(pcm16: bytes, sample_rate: int, channels: int) -> bytes:
    """Resample whole PCM16 audio (stereo mixed down by averaging) to 8 kHz mono PCM16."""
    _check_format(sample_rate, channels)
    frame_bytes = 2 * channels
    if len(pcm16) % frame_bytes:
        raise ValueError(
            f"PCM16 {'stereo' if channels == 2 else 'mono'} audio must be whole frames of "
            f"{frame_bytes} bytes; got {len(pcm16)} bytes"
        )
    if sample_rate == OUTPUT_RATE and channels == 1:
        return bytes(pcm16)
    resampler = StreamResampler(sample_rate, channels)
    return resampler.feed(pcm16) + resampler.flush()
