"""Time G.711 encode/decode of one second of 8 kHz audio: `python benchmarks/g711_speed.py`."""

from __future__ import annotations

import argparse
import math
import statistics
import struct
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gb28181talk.media import g711
from gb28181talk.media.law import Law

SAMPLE_RATE = 8000
REPEATS = 15
PACKET_SAMPLES = 160  # one 20 ms packet


def speech_like_second() -> bytes:
    """One second of PCM16: a few tones at speech-like levels, so every segment is used."""
    samples = [
        int(
            9000 * math.sin(2 * math.pi * 440 * n / SAMPLE_RATE)
            + 3000 * math.sin(2 * math.pi * 1270 * n / SAMPLE_RATE)
            + 600 * math.sin(2 * math.pi * 3100 * n / SAMPLE_RATE)
        )
        for n in range(SAMPLE_RATE)
    ]
    return struct.pack(f"<{len(samples)}h", *samples)


def median_seconds(function, argument: bytes) -> float:
    """Median time of one call, over REPEATS runs of enough calls to last ~20 ms each."""
    timer = timeit.Timer(lambda: function(argument))
    calls, _ = timer.autorange()
    calls = max(1, calls // 10)
    return statistics.median(t / calls for t in timer.repeat(repeat=REPEATS, number=calls))


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    pcm = speech_like_second()
    packet = pcm[: 2 * PACKET_SAMPLES]
    print(f"Python {sys.version.split()[0]}; median of {REPEATS} repeats")
    print(f"{'operation':<16}{'per 1 s of audio':>18}{'per 20 ms packet':>18}")
    for law in Law:
        codes = g711.encode(law, pcm)
        for name, function, whole, part in (
            ("encode", lambda data, law=law: g711.encode(law, data), pcm, packet),
            ("decode", lambda data, law=law: g711.decode(law, data), codes, codes[:160]),
        ):
            per_second = median_seconds(function, whole)
            per_packet = median_seconds(function, part)
            label = f"{law.encoding_name} {name}"
            print(f"{label:<16}{per_second * 1e6:>15.1f} µs{per_packet * 1e6:>15.2f} µs")


if __name__ == "__main__":
    main()
