"""Session churn: many lifecycles through the API, then nothing may be left behind.

Starts the real service in a child process and runs ``--lifecycles`` talk
session lifecycles through ``startSendRtpPassive``/``stopSendRtp`` from the
load generator (its own process), ``--window`` at a time, cycling through:
stop before the device connects; never connect (the wait times out); connect
then stop through the API; connect then the device closes; connect then the
device resets (RST); stop then a device dials the closed port (must be
refused).  Samples the service's open descriptors, leased ports, live
sessions and RSS before, during and after (once every session has ended).
Prints a table and writes benchmarks/results/churn.json.

    .venv/bin/python benchmarks/churn.py --lifecycles 100000
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
    pin_self_away_from_service,
    print_table,
    proc_socket_count,
    run_loadgen,
    write_result,
)
from service_load import create_sources, raise_fd_limit


def wait_settled(service: Any, probe: Any, seconds: float, step: float) -> dict[str, Any]:
    """Snapshot the service until it holds no session and no lease, for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    after = snapshot(service, probe)
    while (after["sessions"] or after["leased"]) and time.monotonic() < deadline:
        time.sleep(step)
        after = snapshot(service, probe)
    return after


def snapshot(service: ServiceProcess, api: Api) -> dict[str, Any]:
    """Descriptors, sockets, leases, live sessions and RSS of the service now."""
    pool = api.call("GET", "/api/pool")
    health = api.call("GET", "/api/health")
    return {
        "fds": service.fd_count(),
        "sockets": proc_socket_count(service.pid),
        "leased": pool["leased"],
        "free": pool["free"],
        "sessions": health["sessions"],
        "rss_kib": service.rss_kib(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lifecycles", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=64, help="lifecycles in flight")
    parser.add_argument("--concurrency", type=int, default=8, help="API connections")
    parser.add_argument("--timeout-ms", type=int, default=300, help="wait of the timeout kind")
    parser.add_argument("--ports", type=int, default=2000, help="size of the talk-port range")
    parser.add_argument("--port-low", type=int, default=DEFAULT_PORT_RANGE[0])
    args = parser.parse_args()
    raise_fd_limit()
    pin_self_away_from_service()
    service = ServiceProcess((args.port_low, args.port_low + args.ports - 1), wait_timeout=5,
                             log_name="churn")
    service.start()
    samples: list[dict[str, Any]] = []
    try:
        sources = create_sources(service, 1)
        # A separate connection for sampling, so the load generator's are not disturbed.
        probe = Api("127.0.0.1", service.api_port)
        # Warm the service up (imports, first allocations) before the baseline.
        run_loadgen({"mode": "churn", "api": f"127.0.0.1:{service.api_port}", "lifecycles": 600,
                     "window": args.window, "sources": sources, "ssrc_base": 10})
        time.sleep(args.timeout_ms / 1000 + 1)
        before = snapshot(service, probe)
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(2):
                try:
                    samples.append({"t": round(time.monotonic() - began, 1),
                                    **snapshot(service, probe)})
                except (OSError, ValueError):
                    return

        began = time.monotonic()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        result = run_loadgen({
            "mode": "churn",
            "api": f"127.0.0.1:{service.api_port}",
            "lifecycles": args.lifecycles,
            "window": args.window,
            "concurrency": args.concurrency,
            "sources": sources,
            "timeout_ms": args.timeout_ms,
            "ssrc_base": 1_000_000,
        })
        stop.set()
        sampler.join(10)
        # Every session ends on its own (timeouts) or has ended; wait for them, bounded.
        after = wait_settled(service, probe, seconds=30, step=0.5)
        probe.close()
        metrics = service.metrics()
    finally:
        status = service.stop()
    endings = {name.split('"')[1]: int(value) for name, value in metrics.items()
               if name.startswith("gbtalk_sessions_ended_total{")}
    peak = {key: max((sample[key] for sample in samples), default=after[key]) for key in before}
    verdict = {
        "leaked_fds": after["fds"] - before["fds"],
        "leaked_sockets": after["sockets"] - before["sockets"],
        "leaked_leases": after["leased"],
        "live_sessions_after": after["sessions"],
        "rss_growth_kib": after["rss_kib"] - before["rss_kib"],
    }
    print_table(
        ["", "fds", "sockets", "leased", "free", "sessions", "RSS KiB"],
        [["before", *before.values()], ["peak", *peak.values()], ["after", *after.values()]],
    )
    print(f"{result['done']} of {result['lifecycles']} lifecycles in {result['seconds']} s "
          f"({result['lifecycles_per_second']}/s), {result['failed']} failed; kinds "
          f"{result['kinds']}")
    print(f"endings by reason: {endings}")
    print(f"left behind: {verdict}")
    for problem in result["problems"]:
        print(f"  problem: {problem}")
    path = write_result("churn", {
        "command": sys.argv, "result": result, "before": before, "after": after, "peak": peak,
        "samples": samples, "endings": endings, "verdict": verdict, "service_exit_status": status,
    })
    print(f"written {path}")


if __name__ == "__main__":
    main()
