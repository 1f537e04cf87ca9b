"""How fast PS muxing and demuxing run: packs per second for 20 ms G.711 packets.

Run: .venv/bin/python benchmarks/ps_speed.py
"""

from __future__ import annotations

import argparse
import time

from gb28181talk.media.law import Law
from gb28181talk.media.ps import PsDemuxer, PsMuxer

PACKS = 50_000  # 1,000 s of audio at 20 ms a pack
PAYLOAD = b"\xd5" * 160


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    muxer = PsMuxer(Law.ALAW)
    started = time.perf_counter()
    packs = [muxer.mux(PAYLOAD, n * 1800) for n in range(PACKS)]
    mux_seconds = time.perf_counter() - started

    stream = b"".join(packs)
    # Pieces the size of RTP payloads that do not line up with packs.
    pieces = [stream[at : at + 1400] for at in range(0, len(stream), 1400)]
    demuxer = PsDemuxer()
    started = time.perf_counter()
    found = sum(len(demuxer.feed(piece)) for piece in pieces)
    demux_seconds = time.perf_counter() - started
    assert found == PACKS, found

    print(f"mux:   {PACKS / mux_seconds:12,.0f} packs/s ({mux_seconds:.2f} s)")
    print(f"demux: {PACKS / demux_seconds:12,.0f} packs/s ({demux_seconds:.2f} s)")


if __name__ == "__main__":
    main()
