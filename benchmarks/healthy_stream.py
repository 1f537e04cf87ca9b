"""Healthy talk sessions that stream for as long as asked, their figures reported per window.

A child process of benchmarks/attackers.py (pinned off the service's core), so that one
set of sessions streams throughout a run in which attackers come and go, and each window
of time (a baseline, an attacker) gets its own figures from the same devices.  It reads a
job (one JSON line) on standard input, starts the sessions through the API with
loadgen_api's client, connects one device per session (a sample timed packet by packet
with the kernel's receive timestamps, the rest drained every ``drain_ms``), prints
``{"event": "measuring"}`` once they are connected and warmed up, and streams until a
second line comes: ``{"windows": [[name, start_wall, end_wall], ...]}``.  It answers with
one JSON report: per window the timed devices' gaps (|arrival gap - RTP timestamp gap|)
median/p99/max, packets, lost (sequence gaps), late (beyond ``jitter_bound_ms``), and the
devices the service closed inside it.
"""

from __future__ import annotations

import json
import os
import selectors
import time
from typing import Any

from loadgen_api import (
    DRAIN_CHUNK,
    ApiClient,
    Device,
    Loop,
    log_event,
    packet_figures,
    start_sessions,
)


def stream(job: dict[str, Any]) -> dict[str, Any]:
    """Start, connect and stream ``job["sessions"]`` sessions until the windows arrive."""
    loop = Loop()
    api = ApiClient(loop, job["api"], job.get("concurrency", 8))
    count = job["sessions"]
    began = time.monotonic()
    ports, _latencies, errors = start_sessions(loop, api, job, count, began + 120)
    log_event("started", sessions=count, errors=len(errors))
    sample_every = max(1, count // max(job.get("sample", 40), 1))
    closed_at: list[float] = []
    devices: list[Device] = []
    t0 = time.monotonic()
    for index, port in enumerate(ports):
        if port is None:
            continue
        device = Device(loop, port, sampled=index % sample_every == 0)
        device.on_closed = lambda _device: closed_at.append(time.time())
        devices.append(device)
        loop.call_at(t0 + job.get("connect_seconds", 2.0) * index / max(count, 1),
                     device.connect)
    drained = [device for device in devices if not device.sampled]
    sampled = [device for device in devices if device.sampled]
    drain_s = job.get("drain_ms", 200) / 1000

    def drain_pass() -> None:
        for offset in range(0, len(drained), DRAIN_CHUNK):
            for device in drained[offset: offset + DRAIN_CHUNK]:
                if device.connected:
                    device.drain()
            loop.poll(0)  # keep the timed devices' reads prompt
        loop.call_later(drain_s, drain_pass)

    loop.call_later(drain_s, drain_pass)
    loop.run_until(lambda: all(d.connected or d.failed for d in devices), t0 + 40)
    loop.run_until(lambda: False, time.monotonic() + job.get("warmup", 3.0))
    log_event("measuring", connected=sum(d.connected for d in devices))
    order: dict[str, Any] = {}
    pending = bytearray()

    def stdin_readable(_events: int) -> None:
        data = os.read(0, 65536)
        if not data:
            order.setdefault("windows", [])
            return
        pending.extend(data)
        if b"\n" in pending:
            order.update(json.loads(pending.split(b"\n", 1)[0]))

    loop.selector.register(0, selectors.EVENT_READ, stdin_readable)
    loop.run_until(lambda: "windows" in order, time.monotonic() + job.get("max_seconds", 1800))
    bound = job.get("jitter_bound_ms", 5.0)
    windows = []
    for name, start, end in order.get("windows", []):
        figures = packet_figures(sampled, start, end, bound)
        figures["closed"] = sum(start <= when <= end for when in closed_at)
        windows.append({"name": name, "start": start, "end": end, **figures})
    report = {
        "sessions": count,
        "start_failed": len(errors),
        "start_errors": errors[:5],
        "connected": sum(d.connected for d in devices),
        "closed_total": len(closed_at),
        "windows": windows,
    }
    for device in devices:
        device.close()
    return report


def first_line() -> bytes:
    """The job line, read unbuffered so the windows line later is left for the selector."""
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = os.read(0, 1)
        if not byte:
            break
        line += byte
    return bytes(line)


def main() -> None:
    job = json.loads(first_line())
    print(json.dumps(stream(job)), flush=True)


if __name__ == "__main__":
    main()
