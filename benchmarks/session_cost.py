"""Talk sessions started per second, and the CPU cost of each active session.

The service side (pool, manager, pacer, one shared tone source) runs in this
process on the real reactor; the devices run in a separate process
(benchmarks/loadgen_devices.py) so they do not share this core.  Prints a table
and writes benchmarks/results/session_cost.json.

    .venv/bin/python benchmarks/session_cost.py --sessions 500 --packet-ms 20 --duration 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from twisted.internet import reactor, task
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread

from gb28181talk.core.manager import SessionManager
from gb28181talk.core.params import SessionKey, SessionParams
from gb28181talk.core.ports import PortPool
from gb28181talk.sources.tone import ToneSource

HERE = Path(__file__).resolve().parent


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far."""
    times = os.times()
    return times.user + times.system


def rss_kib() -> int:
    """Resident set size of this process now, in KiB (from /proc)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def make_manager(low: int, high: int) -> SessionManager:
    return SessionManager(reactor, PortPool(reactor, low, high, interface="127.0.0.1"))


@inlineCallbacks
def measure_starts(args: argparse.Namespace):
    """Start ``args.starts`` listening sessions as fast as possible, then stop them all."""
    manager = make_manager(args.low, args.high)
    source = ToneSource("bench", "tone", frequency=440)
    began = time.perf_counter()
    sessions = [
        manager.start(SessionParams(key=SessionKey("v", "bench", "tone", n)), source)
        for n in range(args.starts)
    ]
    started = time.perf_counter() - began
    began = time.perf_counter()
    for session in sessions:
        session.stop()
    stopped = time.perf_counter() - began
    yield manager.shutdown()
    return {
        "sessions": args.starts,
        "starts_per_second": round(args.starts / started),
        "stops_per_second": round(args.starts / stopped),
    }


@inlineCallbacks
def measure_streaming(args: argparse.Namespace):
    """N sessions streaming to N devices in another process: CPU, RSS, jitter, loss."""
    manager = make_manager(args.low, args.high)
    source = ToneSource("bench", "tone", frequency=440)
    rss_before = rss_kib()
    sessions = [
        manager.start(
            SessionParams(
                key=SessionKey("v", "bench", "tone", n),
                packet_ms=args.packet_ms,
                wait_timeout=60,
                preroll_ms=0,
            ),
            source,
        )
        for n in range(args.sessions)
    ]
    loadgen = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "loadgen_devices.py"),
            "--duration",
            str(args.duration),
            "--warmup",
            "2",
            "--connect-seconds",
            str(args.connect_seconds),
            "--sample",
            str(args.sample),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    ports = json.dumps([session.port for session in sessions])
    result = deferToThread(loadgen.communicate, ports)
    yield task.deferLater(reactor, args.connect_seconds + 2, lambda: None)
    streaming = sum(1 for session in sessions if str(session.state) == "streaming")
    cpu0, wall0 = cpu_seconds(), time.monotonic()
    manager.pacer.stats.__init__()
    yield task.deferLater(reactor, args.duration, lambda: None)
    cpu1, wall1 = cpu_seconds(), time.monotonic()
    rss_after = rss_kib()
    output, _ = yield result
    devices = json.loads(output)
    lateness = manager.pacer.stats
    yield manager.shutdown()
    core = (cpu1 - cpu0) / (wall1 - wall0)
    return {
        "sessions": args.sessions,
        "streaming": streaming,
        "packet_ms": args.packet_ms,
        "service_cpu_percent_of_core": round(core * 100, 1),
        "cpu_us_per_session_per_second": round(core / max(streaming, 1) * 1e6, 1),
        "cpu_us_per_packet": round(core / max(streaming, 1) / (1000 / args.packet_ms) * 1e6, 2),
        "rss_kib_per_session": round((rss_after - rss_before) / max(args.sessions, 1), 1),
        "pacer_tick_lateness_p99_ms": lateness.percentile_ms(0.99),
        "pacer_shifted_frames": lateness.shifted_frames,
        "devices": devices,
    }


@inlineCallbacks
def main(_reactor, args: argparse.Namespace):
    # Streaming first, in a fresh process, so RSS per session is not hidden by freed memory.
    streaming = yield measure_streaming(args)
    starts = yield measure_starts(args)
    report = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "starts": starts,
        "streaming": streaming,
    }
    print(
        f"session starts: {starts['starts_per_second']}/s "
        f"(stops {starts['stops_per_second']}/s) over {starts['sessions']} sessions"
    )
    dev = streaming["devices"]
    print(
        f"{streaming['streaming']} sessions streaming {args.packet_ms} ms packets "
        f"for {args.duration:g} s:"
    )
    print(
        f"  service CPU {streaming['service_cpu_percent_of_core']}% of one core, "
        f"{streaming['cpu_us_per_session_per_second']} µs/s per session, "
        f"{streaming['cpu_us_per_packet']} µs per packet"
    )
    print(
        f"  RSS {streaming['rss_kib_per_session']} KiB per session; "
        f"pacer lateness p99 {streaming['pacer_tick_lateness_p99_ms']} ms"
    )
    print(
        f"  devices (sampled {dev['sampled']}): jitter p50 {dev['jitter_p50_ms']} ms, "
        f"p99 {dev['jitter_p99_ms']} ms, max {dev['jitter_max_ms']} ms, "
        f"lost {dev['lost_sampled']} of {dev['packets_sampled']}"
    )
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "session_cost.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--starts", type=int, default=2000)
    parser.add_argument("--packet-ms", type=int, default=20)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connect-seconds", type=float, default=2.0)
    parser.add_argument("--sample", type=int, default=40)
    parser.add_argument("--low", type=int, default=30000)
    parser.add_argument("--high", type=int, default=35000)
    task.react(main, [parser.parse_args()])
