"""Fan-out: one source played to N devices against N separate sources (encode once vs N times).

Two runs of benchmarks/service_load.py's measurement on a fresh service each:
N sessions all playing one tone source (the pacer reads and G.711-encodes
each 20 ms frame once for all of them), then N sessions each playing its own
tone source (N reads and N encodes per frame).  Prints both and the CPU the
sharing saves; writes benchmarks/results/fanout.json.

    .venv/bin/python benchmarks/fanout.py --sessions 1000 --duration 30
"""

from __future__ import annotations

import argparse
import sys

from benchlib import DEFAULT_PORT_RANGE, pin_self_away_from_service, print_table, write_result
from service_load import HEADERS, measure, raise_fd_limit, row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--packet-ms", type=int, default=20)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--connect-seconds", type=float, default=3.0)
    parser.add_argument("--port-low", type=int, default=DEFAULT_PORT_RANGE[0])
    args = parser.parse_args()
    # The measurement's other settings, as service_load.py's defaults.
    settings = argparse.Namespace(
        packet_ms=args.packet_ms, duration=args.duration, warmup=args.warmup, sample=40,
        concurrency=8, connect_seconds=args.connect_seconds, drain_ms=200, preroll_ms=0,
        jitter_bound=5.0, cpu_bound=100.0, port_low=args.port_low, profile=False, quiet=True,
        gc_freeze=False,
    )
    raise_fd_limit()
    pin_self_away_from_service()
    shared = measure(settings, args.sessions, 1, "-fanout-shared")
    separate = measure(settings, args.sessions, args.sessions, "-fanout-separate")
    print_table(HEADERS, [row(shared), row(separate)])
    saved = separate["service_cpu_percent"]["mean"] - shared["service_cpu_percent"]["mean"]
    per_source_us = saved / 100 / max(args.sessions - 1, 1) * 1e6
    print(f"sharing one source saves {saved:.1f}% of a core at N={args.sessions} "
          f"(about {per_source_us:.0f} µs of CPU per second per extra source read and encoded)")
    path = write_result("fanout", {
        "command": sys.argv, "shared": shared, "separate": separate,
        "cpu_saved_percent": round(saved, 1), "cpu_us_per_extra_source_per_s":
        round(per_source_us, 1),
    })
    print(f"written {path}")


if __name__ == "__main__":
    main()
