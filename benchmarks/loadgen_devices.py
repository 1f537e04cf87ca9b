"""Plays N GB28181 devices on loopback in its own process: connect, read, measure, report JSON.

Reads a JSON list of talk ports on standard input, connects to each (spread
over ``--connect-seconds``), then reads everything for ``--duration`` seconds.
A sample of the connections (``--sample``) is decoded precisely: per packet,
the arrival gap is compared with the RTP timestamp gap (jitter =
|arrival gap − timestamp gap|) and sequence gaps count as lost.  The rest are
drained cheaply (bytes counted).  Both are heard by the package's device media
core: header-only with a timeline for the sample, byte counts for the rest.
Prints one JSON object on standard output.

Used by benchmarks/session_cost.py and benchmarks/service_load.py; runnable by
hand: ``echo '[30001, 30002]' | python benchmarks/loadgen_devices.py``.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import sys
import time

from gb28181talk.device.media import Depth, DeviceMedia
from gb28181talk.media.framing import Framing


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank) of ``values``; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(fraction * len(ordered) + 0.5) - 1))]


def run(ports: list[int], args: argparse.Namespace) -> dict:
    selector = selectors.DefaultSelector()
    sampled_every = max(1, len(ports) // max(args.sample, 1))
    devices: dict[socket.socket, DeviceMedia] = {}
    refused = 0
    start = time.monotonic()
    for index, port in enumerate(ports):
        target = start + args.connect_seconds * index / max(len(ports), 1)
        pause = target - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        try:
            sock = socket.create_connection((args.host, port), timeout=5)
        except OSError:
            refused += 1
            continue
        sock.setblocking(False)
        device = (
            DeviceMedia(Depth.HEADERS, Framing.RFC4571, clock_rate=args.clock_rate, timeline=True)
            if index % sampled_every == 0 else DeviceMedia(Depth.BYTES)
        )
        devices[sock] = device
        selector.register(sock, selectors.EVENT_READ, device)
    connected_at = time.monotonic()
    measure_from = connected_at + args.warmup
    deadline = measure_from + args.duration
    closed = 0
    while time.monotonic() < deadline and devices:
        for key, _ in selector.select(timeout=0.05):
            sock = key.fileobj
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                selector.unregister(sock)
                sock.close()
                devices.pop(sock, None)
                closed += 1
                continue
            key.data.receive(data, time.monotonic())
    sampled = [device for device in devices.values() if device.depth is Depth.HEADERS]
    drained_bytes = sum(device.stream_bytes for device in devices.values()
                        if device.depth is Depth.BYTES)
    measured = [device.figures(since=measure_from) for device in sampled]
    jitters = [gap.jitter_ms for device in sampled for gap in device.gaps(since=measure_from)]
    for sock in list(devices):
        sock.close()
    return {
        "devices": len(ports),
        "connected": len(ports) - refused,
        "refused": refused,
        "closed_early": closed,
        "sampled": len(sampled),
        "measured_seconds": args.duration,
        "packets_sampled": sum(device.figures().packets for device in sampled),
        "lost_sampled": sum(figures.lost for figures in measured),
        "jitter_p50_ms": round(percentile(jitters, 0.50), 3),
        "jitter_p99_ms": round(percentile(jitters, 0.99), 3),
        "jitter_max_ms": round(max(jitters, default=0.0), 3),
        "drained_bytes": drained_bytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--connect-seconds", type=float, default=1.0)
    parser.add_argument("--sample", type=int, default=40, help="devices decoded precisely")
    parser.add_argument("--clock-rate", type=int, default=8000)
    args = parser.parse_args()
    ports = json.loads(sys.stdin.read())
    print(json.dumps(run(ports, args)), flush=True)


if __name__ == "__main__":
    main()
