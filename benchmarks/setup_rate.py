"""Session setup through the API: starts per second, and API-call-to-first-packet latency.

Starts the real service (``twistd -n gbtalk``) in a child process; the load
generator (benchmarks/loadgen_api.py, its own process) calls
``/index/api/startSendRtpPassive`` for ``--sessions`` SSRCs as fast as the
service answers (``--concurrency`` keep-alive connections, two requests queued
on each), then ``stopSendRtp`` for each, then, one session at a time, measures
call → reply → device connected → first RTP packet.  Prints a table and
writes benchmarks/results/setup_rate.json.

    .venv/bin/python benchmarks/setup_rate.py --sessions 5000
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from typing import Any

from benchlib import (
    DEFAULT_PORT_RANGE,
    RESULTS,
    VENV_BIN,
    ProcSampler,
    ServiceProcess,
    pin_self_away_from_service,
    print_table,
    run_loadgen,
    write_result,
)
from service_load import create_sources, raise_fd_limit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=5000, help="sessions started")
    parser.add_argument("--concurrency", type=int, default=8, help="API connections")
    parser.add_argument("--probes", type=int, default=500, help="first-packet latency probes")
    parser.add_argument("--port-low", type=int, default=DEFAULT_PORT_RANGE[0])
    parser.add_argument("--profile", action="store_true",
                        help="py-spy the service while sessions start (profile-setup.raw)")
    args = parser.parse_args()
    raise_fd_limit()
    pin_self_away_from_service()
    port_range = (args.port_low, args.port_low + args.sessions + args.probes + 200)
    service = ServiceProcess(port_range, wait_timeout=120, log_name="setup_rate")
    service.start()
    marks: dict[str, float] = {}
    try:
        sources = create_sources(service, 1)
        sampler = ProcSampler(service.pid, interval=0.25)
        sampler.start()
        job: dict[str, Any] = {
            "mode": "setup",
            "api": f"127.0.0.1:{service.api_port}",
            "sessions": args.sessions,
            "sources": sources,
            "endpoint": "zlm",
            "params": {"use_ps": 0, "pt": 8, "close_delay_ms": 60000},
            "concurrency": args.concurrency,
            "latency_probes": args.probes,
        }
        began = sampler.samples[-1][0] if sampler.samples else 0.0
        profiler = None
        if args.profile:
            profiler = subprocess.Popen(
                [str(VENV_BIN / "py-spy"), "record", "--pid", str(service.pid), "--rate", "200",
                 "--format", "raw", "--output", str(RESULTS / "profile-setup.raw"),
                 "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def on_event(event: dict[str, Any]) -> None:
            marks.setdefault(event["event"], event["t"])
            if event["event"] == "started" and profiler is not None:
                profiler.send_signal(signal.SIGINT)  # py-spy writes its output and exits

        result = run_loadgen(job, on_event)
        if profiler is not None:
            profiler.wait(30)
        sampler.stop()
        starting = sampler.window(began, marks.get("started", began))
        leased = service.api.call("GET", "/api/pool")["leased"] if service.api else None
    finally:
        status = service.stop()
    result["service_cpu_percent_while_starting"] = starting["cpu_percent"]
    result["service_exit_status"] = status
    result["leased_after"] = leased
    rows = [
        ["startSendRtpPassive", f"{result['starts_per_second']:.0f}/s",
         result["start_latency_ms"]["median"], result["start_latency_ms"]["p99"]],
        ["stopSendRtp", f"{result['stops_per_second']:.0f}/s",
         result["stop_latency_ms"]["median"], result["stop_latency_ms"]["p99"]],
    ]
    for phase, figures in result["first_packet"].items():
        rows.append([f"first packet: {phase}", "", figures["median"], figures["p99"]])
    print_table(["operation", "rate", "median ms", "p99 ms"], rows)
    print(f"{result['sessions']} sessions, {result['start_failed']} refused; "
          f"{result['probes']} latency probes, {result['probes_failed']} failed; "
          f"service CPU while starting {starting['cpu_percent']['median']}% (median)")
    path = write_result("setup_rate", {"command": sys.argv, "result": result})
    print(f"written {path}")


if __name__ == "__main__":
    main()
