"""The long soak: healthy sessions stream while faults and churn run beside them for a long time.

Starts the real service (``twistd -n gbtalk``, its core to itself) with its
webhooks pointed at a receiver that is down, then runs two load generators
(benchmarks/loadgen_api.py, each its own process): one streams ``--healthy``
sessions for the whole soak and times a sample of them packet by packet; the
other runs session lifecycles of every kind, misbehaving devices included
(garbage, oversized frames, wrong SSRCs, a second connection, a device that
stops reading, malformed API calls, stop before or after connect, resets,
timeouts), ``--window`` at a time until ``--duration`` is over.  Every 10 s it
samples the service's descriptors, sockets, leases, live sessions, RSS and
CPU.  At the end: the healthy sessions' gaps (|arrival gap − RTP timestamp
gap| of consecutive packets, kernel-timestamped: p99 and max against
``--jitter-bound``) and loss (RTP sequence gaps), every lifecycle's outcome,
and what is left once all sessions have ended (descriptors, leases, memory
growth from the first minute to the end).  Prints a table and writes
benchmarks/results/soak.json.

The gap and jitter bounds live here, not in the test suite: the 20 s version
in the suite (tests/test_soak.py) asserts only order, continuity, counts,
reasons and leftovers, since a loaded machine stretches any wall-clock gap.

    .venv/bin/python benchmarks/soak.py --duration 600
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Any

from benchlib import (
    DEFAULT_PORT_RANGE,
    Api,
    ServiceProcess,
    free_tcp_port,
    pin_self_away_from_service,
    print_table,
    run_loadgen,
    write_result,
)
from churn import snapshot, wait_settled
from loadgen_api import CHURN_KINDS, FAULT_KINDS
from service_load import create_sources, raise_fd_limit


def healthy_figures(healthy: dict[str, Any], bound_ms: float) -> dict[str, Any]:
    """The healthy sessions' gap p99/max (ms), whether p99 kept the bound, and their loss."""
    gaps = healthy.get("jitter_ms") or {}
    heard, lost = healthy.get("packets") or 0, healthy.get("lost") or 0
    p99 = gaps.get("p99")
    return {
        "timed_devices": healthy.get("sampled_devices"),
        "packets": heard,
        "gap_median_ms": gaps.get("median"),
        "gap_p99_ms": p99,
        "gap_p999_ms": healthy.get("jitter_p999_ms"),
        "gap_max_ms": gaps.get("max"),
        "gap_p99_within_bound": p99 is not None and heard > 0 and p99 <= bound_ms,
        "beyond_bound": healthy.get("late"),
        "lost": lost,
        "loss_percent": round(lost / (heard + lost) * 100, 4) if heard + lost else None,
        "closed_early": healthy.get("closed_early"),
    }


def healthy_line(sessions: int, figures: dict[str, Any], bound_ms: float) -> str:
    """One line: the healthy sessions' gaps against the bound, and their loss."""
    verdict = "within" if figures["gap_p99_within_bound"] else "BEYOND"
    return (
        f"healthy: {sessions} sessions ({figures['timed_devices']} timed, "
        f"{figures['packets']} packets): gap p99 {figures['gap_p99_ms']} ms, "
        f"max {figures['gap_max_ms']} ms, median {figures['gap_median_ms']} ms; p99 {verdict} "
        f"the {bound_ms:g} ms bound ({figures['beyond_bound']} packets beyond it); "
        f"loss {figures['lost']} packets ({figures['loss_percent']} %); "
        f"closed early {figures['closed_early']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of faults")
    parser.add_argument("--healthy", type=int, default=200, help="healthy streaming sessions")
    parser.add_argument("--window", type=int, default=32, help="fault lifecycles in flight")
    parser.add_argument("--jitter-bound", type=float, default=5.0,
                        help="ms: the healthy sessions' gap p99 bound (docs/performance.md)")
    parser.add_argument("--port-low", type=int, default=DEFAULT_PORT_RANGE[0])
    parser.add_argument("--gc-freeze", action="store_true",
                        help="try the proposed gc.freeze() at start (benchmarks/gc_probe.py)")
    args = parser.parse_args()
    raise_fd_limit()
    pin_self_away_from_service()
    down_hook = f"http://127.0.0.1:{free_tcp_port()}/index/hook"
    service = ServiceProcess((args.port_low, args.port_low + args.healthy + 1500), wait_timeout=5,
                             extra=["--hook-url", down_hook], gc_freeze=args.gc_freeze,
                             log_name="soak-gc-freeze" if args.gc_freeze else "soak")
    service.start()
    samples: list[dict[str, Any]] = []
    results: dict[str, Any] = {}
    try:
        sources = create_sources(service, 1)
        probe = Api("127.0.0.1", service.api_port)
        before = snapshot(service, probe)
        began, began_wall = time.monotonic(), time.time()
        stop = threading.Event()
        cpu_last = [service.cpu_seconds(), began]

        def sample() -> None:
            while not stop.wait(10):
                try:
                    cpu, now = service.cpu_seconds(), time.monotonic()
                    samples.append({"t": round(now - began), **snapshot(service, probe),
                                    "cpu_percent": round((cpu - cpu_last[0]) /
                                                         (now - cpu_last[1]) * 100, 1)})
                    cpu_last[:] = [cpu, now]
                except (OSError, ValueError):
                    return

        def healthy() -> None:
            results["healthy"] = run_loadgen({
                "mode": "stream", "api": f"127.0.0.1:{service.api_port}",
                "sessions": args.healthy, "sources": sources, "endpoint": "native",
                "params": {"packet_ms": 20, "wait_timeout": 60, "preroll_ms": 0},
                "connect_seconds": 2, "warmup": 3, "duration": args.duration + 10,
                "sample": 40, "jitter_bound_ms": args.jitter_bound, "ssrc_base": 500_000_000,
            }, timeout=args.duration + 600)

        def faults() -> None:
            time.sleep(8)  # the healthy sessions are streaming and measured by now
            results["faults"] = run_loadgen({
                "mode": "churn", "api": f"127.0.0.1:{service.api_port}",
                "lifecycles": 10**9, "issue_seconds": args.duration, "window": args.window,
                "sources": sources, "kinds": [*CHURN_KINDS, *FAULT_KINDS],
                "max_seconds": args.duration + 300,
            }, timeout=args.duration + 600)

        threads = [threading.Thread(target=target) for target in (sample, healthy, faults)]
        for thread in threads:
            thread.start()
        for thread in threads[1:]:
            thread.join(args.duration + 900)
        stop.set()
        threads[0].join(15)
        after = wait_settled(service, probe, seconds=60, step=1)
        probe.close()
        metrics = service.metrics()
    finally:
        status = service.stop()
    endings = {name.split('"')[1]: int(value) for name, value in metrics.items()
               if name.startswith("gbtalk_sessions_ended_total{") and value}
    hooks = {name: int(value) for name, value in metrics.items() if name.startswith("gbtalk_hook")}
    healthy = results.get("healthy", {})
    faults_result = results.get("faults", {})
    early = next((s for s in samples if s["t"] >= 60), samples[0] if samples else after)
    late = samples[-1] if samples else after
    gc_pauses = service.gc_pauses(began_wall, 1e12)
    figures = healthy_figures(healthy, args.jitter_bound)
    verdict = {
        **{f"healthy_{name}": value for name, value in figures.items()},
        "healthy_closed_early": healthy.get("closed_early"),
        "fault_lifecycles": faults_result.get("done"),
        "fault_failures": faults_result.get("failed"),
        "leaked_fds": after["fds"] - before["fds"],
        "leaked_leases": after["leased"],
        "live_sessions_after": after["sessions"],
        "rss_growth_kib_after_first_minute": late["rss_kib"] - early["rss_kib"],
        "service_gc_max_pause_ms": gc_pauses["max_ms"],
    }
    print_table(["t s", "fds", "sockets", "leased", "sessions", "RSS KiB", "CPU %"],
                [[s["t"], s["fds"], s["sockets"], s["leased"], s["sessions"], s["rss_kib"],
                  s["cpu_percent"]] for s in samples[:: max(1, len(samples) // 20)]])
    print(healthy_line(args.healthy, figures, args.jitter_bound))
    print(f"faults: {faults_result.get('done')} lifecycles, {faults_result.get('failed')} "
          f"failed {faults_result.get('problems')}; kinds {faults_result.get('kinds')}")
    print(f"endings: {endings}; hooks: {hooks}")
    print(f"verdict: {verdict}")
    path = write_result("soak-gc-freeze" if args.gc_freeze else "soak", {
        "gc_freeze": args.gc_freeze, "service_gc_pauses": gc_pauses,
        "command": sys.argv, "before": before, "after": after, "samples": samples,
        "healthy": healthy, "faults": faults_result, "endings": endings, "hooks": hooks,
        "verdict": verdict, "service_exit_status": status,
    })
    print(f"written {path}")


if __name__ == "__main__":
    main()
