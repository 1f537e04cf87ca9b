"""The platform under ``gb28181talk-device --count N``: registration, keepalive CPU, set-up.

Starts the real ``twistd -n gbtalk --sip udp:PORT`` (benchlib's ServiceProcess, its own
core) and one simulator process playing ``--count`` devices on the other core (issue 10's
benchmark: 2,000 devices from one process).  Reports how fast all of them registered
(digest, 401 then 200, catalogued with their audio channel), the service's CPU while they
keep alive, and one broadcast to every device (POSTs of at most 1,000): the time until
every result is in and how many were OK.  Loopback only; every wait is bounded.

    .venv/bin/python benchmarks/simulator_load.py --count 2000 --keepalive 60 --window 20
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import (
    ProcSampler,
    ServiceProcess,
    pin_self_away_from_service,
    print_table,
    write_result,
)

HOST = "127.0.0.1"
PASSWORD = "12345678"
MAX_IDS_PER_POST = 1000
"""POST /api/broadcast takes at most this many device ids."""


def free_udp_port() -> int:
    """A UDP port the kernel says is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def ready_devices(service: ServiceProcess) -> list[str]:
    """Ids of the devices online with an audio output channel (what a broadcast needs)."""
    assert service.api is not None
    devices = service.api.call("GET", "/api/devices")["devices"]
    return [d["id"] for d in devices
            if d["online"] and any(c["audio_output"] for c in d["channels"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="devices in the one simulator")
    parser.add_argument("--keepalive", type=float, default=60.0, help="keepalive interval, s")
    parser.add_argument("--window", type=float, default=20.0, help="keepalive CPU window, s")
    parser.add_argument("--timeout", type=float, default=180.0, help="bound on each phase, s")
    args = parser.parse_args()
    pin_self_away_from_service()
    sip_port = free_udp_port()
    service = ServiceProcess(
        log_name="simulator_load", probe_gc=False,
        port_range=(20000, 20000 + max(args.count + 100, 1000)),
        extra=["--sip", f"udp:{sip_port}:interface={HOST}", "--sip-password", PASSWORD,
               "--sip-advertise", HOST, "--advertise-ip", HOST],
    )
    service.start()
    sampler = ProcSampler(service.pid, interval=0.5)
    sampler.start()
    wav_dir = tempfile.mkdtemp(prefix="gbtalk-simload-")
    device_bin = Path(sys.executable).with_name("gb28181talk-device")
    simulator = subprocess.Popen(
        [str(device_bin), "--server", f"{HOST}:{sip_port}", "--password", PASSWORD,
         "--local-ip", HOST, "--count", str(args.count), "--keepalive", str(args.keepalive),
         "--wav-dir", wav_dir, "--report-seconds", "0", "--exit-after-calls", "1",
         "--duration", str(3 * args.timeout)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    report: dict[str, Any] = {"args": vars(args)}
    try:
        assert service.api is not None
        service.api.call("POST", "/api/sources", {"app": "live", "stream": "tone",
                                                  "kind": "tone", "frequency": 800,
                                                  "duration": 20})
        began = time.monotonic()
        ready: list[str] = []
        while time.monotonic() - began < args.timeout and len(ready) < args.count:
            time.sleep(0.25)
            ready = ready_devices(service)
        took = time.monotonic() - began
        report["register"] = {"devices": len(ready), "seconds": round(took, 2),
                              "per_second": round(len(ready) / took, 1)}
        start = time.monotonic()
        time.sleep(args.window)
        report["keepalive"] = sampler.window(start, time.monotonic())
        began = time.monotonic()
        results: list[dict[str, Any]] = []
        for first in range(0, len(ready), MAX_IDS_PER_POST):
            reply = service.api.call("POST", "/api/broadcast", {
                "device_ids": ready[first:first + MAX_IDS_PER_POST], "app": "live",
                "stream": "tone"})
            results.extend(reply.get("results", [{"result": "ERROR", "reply": reply}]))
        took = time.monotonic() - began
        ok = sum(1 for result in results if result.get("result") == "OK")
        report["broadcast"] = {"devices": len(ready), "ok": ok, "seconds": round(took, 2),
                               "set_ups_per_second": round(ok / took, 1) if took else 0,
                               "first_errors": [r for r in results
                                                if r.get("result") != "OK"][:3]}
    finally:
        sampler.stop()
        if simulator.poll() is None:
            simulator.terminate()
            try:
                simulator.wait(30)
            except subprocess.TimeoutExpired:
                simulator.kill()
        service.stop()
    keepalive = report["keepalive"]
    print_table(["figure", "value"], [
        ["devices registered with their audio channel", report["register"]["devices"]],
        ["registrations/s (digest, catalogued)", report["register"]["per_second"]],
        [f"service CPU % while {args.count} keep alive every {args.keepalive:g} s (mean)",
         keepalive.get("cpu_percent", {}).get("mean")],
        ["broadcast: OK of devices", f"{report['broadcast']['ok']} of {len(ready)}"],
        ["broadcast: seconds until every result", report["broadcast"]["seconds"]],
        ["broadcast set-ups/s", report["broadcast"]["set_ups_per_second"]],
    ])
    for error in report["broadcast"]["first_errors"]:
        print("not OK:", error)
    write_result("simulator_load", report)


if __name__ == "__main__":
    main()
