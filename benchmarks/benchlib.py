"""Shared pieces of the service benchmarks: the service as a child process, /proc, HTTP, results.

The service under test is the real ``twistd -n gbtalk`` in its own process;
its CPU (user + system) and memory are read from ``/proc/PID`` so nothing in
the service is instrumented.  The load generator (benchmarks/loadgen_api.py)
is another process.  This module is imported by the benchmark scripts, which
are run as ``.venv/bin/python benchmarks/NAME.py`` (so ``benchmarks/`` is on
``sys.path``).
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
VENV_BIN = Path(sys.executable).parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SERVICE_CPU = 0
"""The core the service is pinned to (when the machine has two or more); the load generator
and the orchestrating script get the others, so they never take the service's core."""
DEFAULT_PORT_RANGE = (21000, 27999)
"""Talk ports for benchmarks: below Linux's ephemeral range (32768-60999), which the load
generator's own outgoing device connections use."""


# --------------------------------------------------------------------------- figures


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank) of ``values``; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, int(fraction * len(ordered) + 0.5) - 1))
    return float(ordered[rank])


def summary(values: Sequence[float], digits: int = 3) -> dict[str, float]:
    """Median, p99 and max of ``values`` (the figures every benchmark reports)."""
    return {
        "median": round(percentile(values, 0.5), digits),
        "p99": round(percentile(values, 0.99), digits),
        "max": round(max(values, default=0.0), digits),
        "count": len(values),
    }


def machine_info() -> dict[str, Any]:
    """What the figures came from: the commit, CPU model and count, kernel, Python, Twisted."""
    model = ""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import twisted

        twisted_version = twisted.__version__
    except ImportError:  # pragma: no cover
        twisted_version = "?"
    try:
        commit = subprocess.run(
            ["git", "-C", str(HERE), "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "commit": commit,
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "twisted": twisted_version,
        "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def cpu_probe_ms() -> float:
    """A fixed chunk of plain Python work, best of 5 (ms): the machine's speed today, so a
    reader can tell a slow day from a slow change."""
    best = float("inf")
    for _ in range(5):
        began = time.perf_counter()
        total, table = 0, {}
        for index in range(300_000):
            total += index * index % 7
            table[index & 1023] = total
        best = min(best, time.perf_counter() - began)
    return round(best * 1000, 1)


def write_result(name: str, report: dict[str, Any]) -> Path:
    """Write ``report`` (plus the machine) to benchmarks/results/NAME.json; return the path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine_info(), **report}, indent=2) + "\n")
    return path


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain aligned table on stdout."""
    cells = [[str(h) for h in headers]] + [[_cell(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        print("  ".join(value.rjust(width) for value, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


# --------------------------------------------------------------------------- cores


def other_cpus() -> set[int]:
    """The cores left for load generation (all of them on a one-core machine)."""
    cpus = os.sched_getaffinity(0) | {SERVICE_CPU}
    return (cpus - {SERVICE_CPU}) or cpus


def pin(cpus: set[int]) -> None:
    """Pin this process to ``cpus`` (used in children before exec)."""
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, cpus)


def pin_self_away_from_service() -> None:
    """Keep this (orchestrating) process off the service's core."""
    pin(other_cpus())


# --------------------------------------------------------------------------- /proc


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def proc_descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (a service's media workers), from /proc's children lists."""
    found: list[int] = []
    waiting = [pid]
    while waiting:
        parent = waiting.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as children:
                    kids = [int(kid) for kid in children.read().split()]
            except OSError:
                continue
            found.extend(kids)
            waiting.extend(kids)
    return found


def proc_tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and all its descendants (``--workers``: control + workers), the
    reaped ones included (the parent's cutime/cstime)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    total = sum(int(value) for value in fields[11:15]) / CLOCK_TICKS
    for child in proc_descendants(pid):
        try:
            total += proc_cpu_seconds(child)
        except OSError:
            continue  # it exited between the listing and the read
    return total


def proc_tree_rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` and its live descendants, in KiB."""
    total = proc_rss_kib(pid)
    for child in proc_descendants(pid):
        with contextlib.suppress(OSError):
            total += proc_rss_kib(child)
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy so far (from /proc/stat: everything but idle and iowait)."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / CLOCK_TICKS


def core_jiffies(cpu: int) -> list[int]:
    """The /proc/stat counters of one core: user nice system idle iowait irq softirq steal."""
    with open("/proc/stat") as stat:
        for line in stat:
            if line.startswith(f"cpu{cpu} "):
                return [int(v) for v in line.split()[1:9]]
    return [0] * 8


def proc_rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def proc_fd_count(pid: int) -> int:
    """Open file descriptors of ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def proc_socket_count(pid: int) -> int:
    """Open sockets of ``pid``."""
    count = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                count += 1
        except OSError:
            continue
    return count


@dataclass
class ProcSampler:
    """Samples a process's CPU seconds and RSS every ``interval`` seconds on a thread."""

    pid: int
    interval: float = 1.0
    samples: list[tuple[float, float, int, float]] = field(default_factory=list)
    core: list[tuple[float, list[int]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.samples.append(
                    (
                        time.monotonic(),
                        proc_tree_cpu_seconds(self.pid),
                        proc_tree_rss_kib(self.pid),
                        machine_busy_seconds(),
                    )
                )
                self.core.append((time.monotonic(), core_jiffies(SERVICE_CPU)))
            except OSError:
                return
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def window(self, start: float, end: float) -> dict[str, Any]:
        """CPU % of one core per interval (median, p99, mean) and RSS between two instants.

        ``machine_busy_percent`` is every process's CPU (out of 100 % per core), so a
        reader can see what else ran beside the service.
        """
        inside = [sample for sample in self.samples if start <= sample[0] <= end]
        percents = [
            (b[1] - a[1]) / (b[0] - a[0]) * 100
            for a, b in itertools.pairwise(inside)
            if b[0] > a[0]
        ]
        mean = (
            (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0]) * 100
            if len(inside) > 1
            else 0.0
        )
        busy = (
            (inside[-1][3] - inside[0][3]) / (inside[-1][0] - inside[0][0]) * 100
            if len(inside) > 1
            else 0.0
        )
        core = [sample for sample in self.core if start <= sample[0] <= end]
        service_core: dict[str, float] = {}
        if len(core) > 1:
            deltas = [b - a for a, b in zip(core[0][1], core[-1][1], strict=True)]
            total = sum(deltas) or 1
            names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
            service_core = {name: round(d / total * 100, 1) for name, d in zip(names, deltas,
                                                                             strict=True)}
        return {
            "cpu_percent": {**summary(percents, 1), "mean": round(mean, 1)},
            "service_core_percent": service_core,
            "machine_busy_percent": round(busy, 1),
            "rss_kib_max": max((sample[2] for sample in inside), default=0),
            "rss_kib_last": inside[-1][2] if inside else 0,
        }


# --------------------------------------------------------------------------- the service


def free_tcp_port() -> int:
    """A free loopback port for the API (the kernel picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServiceProcess:
    """``twistd -n gbtalk`` as a child process on loopback; stop() ends it with SIGTERM."""

    def __init__(
        self,
        port_range: tuple[int, int] = DEFAULT_PORT_RANGE,
        wait_timeout: float = 5.0,
        extra: Sequence[str] = (),
        log_name: str = "service",
        python_prefix: Sequence[str] = (),
        pinned: bool = True,
        probe_gc: bool = True,
        gc_freeze: bool = False,
        workers: int = 1,
    ) -> None:
        self.port_range = port_range
        self.workers = workers
        self.pinned = pinned
        self.gc_log: Path | None = (
            RESULTS / f"{log_name}.gc.jsonl" if probe_gc or gc_freeze else None
        )
        self.env = {**os.environ, "GBTALK_GC_FREEZE": "1" if gc_freeze else "0"}
        entry = (
            [sys.executable, str(HERE / "gc_probe.py"), str(self.gc_log)]
            if self.gc_log is not None
            else [str(VENV_BIN / "twistd")]
        )
        self.api_port = free_tcp_port()
        RESULTS.mkdir(exist_ok=True)
        self.log_path = RESULTS / f"{log_name}.log"
        self.command = [
            *python_prefix,
            *entry,
            "-n",
            "--pidfile=",
            f"--logfile={self.log_path}",
            "gbtalk",
            "--api",
            f"tcp:{self.api_port}:interface=127.0.0.1",
            "--port-range",
            f"{port_range[0]}-{port_range[1]}",
            "--media-interface",
            "127.0.0.1",
            "--advertise-ip",
            "127.0.0.1",
            "--wait-timeout",
            f"{wait_timeout:g}",
            *(["--workers", str(workers)] if workers > 1 else []),
            *extra,
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.api: Api | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, ready_timeout: float = 20.0) -> None:
        """Start the service and wait (bounded) until /api/health answers."""
        for stale in (self.log_path, self.gc_log):
            if stale is not None and stale.exists():
                stale.unlink()
        # Workers inherit the pinning: with --workers the service keeps every core.
        pinned = self.pinned and self.workers == 1 and (os.cpu_count() or 1) > 1
        cpus = {SERVICE_CPU} if pinned else None
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            env=self.env,
            preexec_fn=(lambda: pin(cpus)) if cpus else None,
        )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the service exited with {self.process.returncode}; see {self.log_path}"
                )
            try:
                api = Api("127.0.0.1", self.api_port)
                if api.call("GET", "/api/health")["code"] == 0:
                    self.api = api
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the service did not answer within {ready_timeout} s")

    def cpu_seconds(self) -> float:
        """CPU seconds of the service's whole process tree (control + media workers)."""
        return proc_tree_cpu_seconds(self.pid)

    def rss_kib(self) -> int:
        """Resident memory of the service's whole process tree."""
        return proc_tree_rss_kib(self.pid)

    def fd_count(self) -> int:
        return proc_fd_count(self.pid)

    def gc_pauses(self, start_wall: float, end_wall: float) -> dict[str, Any]:
        """The service's garbage-collector pauses over 1 ms between two wall-clock instants."""
        pauses: list[dict[str, Any]] = []
        totals: list[dict[str, Any]] = []
        if self.gc_log is not None and self.gc_log.exists():
            for line in self.gc_log.read_text().splitlines():
                record = json.loads(line)
                if start_wall <= record["t"] <= end_wall:
                    (totals if "total_ms" in record else pauses).append(record)
        share = 0.0
        if len(totals) > 1 and totals[-1]["t"] > totals[0]["t"]:
            share = ((totals[-1]["total_ms"] - totals[0]["total_ms"]) / 1000
                     / (totals[-1]["t"] - totals[0]["t"]) * 100)
        by_generation: dict[str, int] = {}
        for record in pauses:
            key = str(record["generation"])
            by_generation[key] = by_generation.get(key, 0) + 1
        return {
            "cpu_percent": round(share, 1),
            "collections_per_s": round(
                (totals[-1]["collections"] - totals[0]["collections"])
                / (totals[-1]["t"] - totals[0]["t"]), 1) if share else 0.0,
            "over_1ms": len(pauses),
            "max_ms": max((record["ms"] for record in pauses), default=0.0),
            "total_ms": round(sum(record["ms"] for record in pauses), 1),
            "by_generation": by_generation,
        }

    def metrics(self) -> dict[str, float]:
        """The /metrics page as {name{labels}: value}."""
        assert self.api is not None
        text = self.api.raw("GET", "/metrics").decode()
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait (bounded), then SIGKILL; returns the exit status."""
        if self.api is not None:
            self.api.close()
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(5)

    def __enter__(self) -> ServiceProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Api:
    """A blocking keep-alive JSON client for the orchestrating script's few calls."""

    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._connection: http.client.HTTPConnection | None = None

    def raw(self, method: str, path: str, body: Any = None) -> bytes:
        for attempt in range(2):
            if self._connection is None:
                self._connection = http.client.HTTPConnection(
                    self.host, self.port, timeout=self.timeout
                )
            try:
                data = json.dumps(body).encode() if body is not None else None
                headers = {"content-type": "application/json"} if data is not None else {}
                self._connection.request(method, path, body=data, headers=headers)
                return self._connection.getresponse().read()
            except (http.client.HTTPException, ConnectionError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        reply: dict[str, Any] = json.loads(self.raw(method, path, body))
        return reply

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


# --------------------------------------------------------------------------- the load generator


def run_loadgen(job: dict[str, Any], on_line: Any = None, timeout: float = 3600.0) -> dict:
    """Run benchmarks/loadgen_api.py with ``job`` (JSON on stdin); return its final report.

    Each line it prints before the report (``{"event": ...}``) goes to ``on_line``
    as it comes, so the caller can start sampling when measuring starts.
    """
    cpus = other_cpus()
    process = subprocess.Popen(
        [sys.executable, str(HERE / "loadgen_api.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: pin(cpus),
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(json.dumps(job))
    process.stdin.close()
    killer = threading.Timer(timeout, process.kill)
    killer.start()
    report: dict[str, Any] | None = None
    try:
        for line in process.stdout:
            message = json.loads(line)
            if "event" in message:
                if on_line is not None:
                    on_line(message)
            else:
                report = message
        process.wait(30)
    finally:
        killer.cancel()
    if report is None:
        raise RuntimeError(f"the load generator ended with {process.returncode} and no report")
    return report


def now() -> float:
    """The clock every process here shares (CLOCK_MONOTONIC)."""
    return time.monotonic()
