"""Audio checks for tests: how strong a frequency is in PCM16 (Goertzel), and the dominant tone."""

from __future__ import annotations

import math
from array import array


def samples(pcm16: bytes) -> array:
    """Little-endian PCM16 bytes as an array of ints."""
    values = array("h")
    values.frombytes(pcm16[: len(pcm16) // 2 * 2])
    return values


def tone_power(pcm16: bytes, frequency: float, rate: int = 8000) -> float:
    """Goertzel power of ``frequency`` in the signal, normalised by its length."""
    data = samples(pcm16)
    coefficient = 2 * math.cos(2 * math.pi * frequency / rate)
    previous = before = 0.0
    for value in data:
        previous, before = value + coefficient * previous - before, previous
    power = previous * previous + before * before - coefficient * previous * before
    return power / max(len(data), 1)


def dominant_frequency(pcm16: bytes, candidates: range, rate: int = 8000) -> int:
    """The candidate frequency with the most power."""
    return max(candidates, key=lambda frequency: tone_power(pcm16, frequency, rate))
