"""Hostile clients beside healthy sessions: the healthy sessions' gaps and loss with and without.

The fault benchmark of issue 12.  Starts the real service (``twistd -n gbtalk`` on
loopback, its core to itself, with a secret and a record directory) and one tone source;
a child process (benchmarks/healthy_stream.py) streams ``--healthy`` 20 ms sessions for
the whole run and times a sample of them packet by packet with kernel timestamps.  Then,
interleaved, a baseline window (nothing else) and an attacker window (one attacker of
benchmarks/attack_kinds.py, in its own process, bounded in count and time), for each
attacker in turn, ``--rounds`` times.  For every window: the healthy sessions' gap
(|arrival gap - RTP timestamp gap|) p99 and max, packets lost, devices closed, the
``/api/health`` probe's latency (every 100 ms), the service's RSS at the start, peak and
end, its CPU, and the service's counters that moved (endings by reason, drops).  The
goal (issue 12): with any one attacker running, the healthy p99 within ``--gap-goal`` ms
of the baseline window before it, no loss, and RSS back within ``--rss-goal`` % of its
start once the attackers stop.  Prints a table and writes benchmarks/results/attackers.json
with the commit, the date and a fixed CPU probe (so a slow day shows as a slow day).

    .venv/bin/python benchmarks/attackers.py --healthy 200 --window 10 --rounds 2

``--service-tree DIR`` runs the service from another checkout (e.g. ``git archive HEAD``
unpacked), so the figures belong to a commit even while the working tree has edits.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import resource
import secrets
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchlib import (
    HERE,
    Api,
    ProcSampler,
    ServiceProcess,
    machine_busy_seconds,
    other_cpus,
    percentile,
    pin,
    pin_self_away_from_service,
    print_table,
    proc_cpu_seconds,
    summary,
    write_result,
)
from service_load import raise_fd_limit

ATTACKERS = ("pcma-flood", "tiny-frames", "ws-endless", "ws-big", "paused-pusher",
             "wav-loads", "http-body", "http-json", "http-benign")
"""In the order they run in each round (benchmarks/attack_kinds.py has each one's story);
``http-benign`` is the HTTP attackers' control: harmless calls at the same pace."""


def cpu_probe_ms() -> float:
    """A fixed chunk of plain Python work, best of 5 (ms): the machine's speed today."""
    best = float("inf")
    for _ in range(5):
        began = time.perf_counter()
        total, table = 0, {}
        for index in range(300_000):
            total += index * index % 7
            table[index & 1023] = total
        best = min(best, time.perf_counter() - began)
    return round(best * 1000, 1)


def make_wav(path: Path, mib: int) -> None:
    """A WAV file of ``mib`` MiB of 8 kHz mono PCM16 noise (written once per run)."""
    data_bytes = mib * 1024 * 1024
    header = b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16) + b"data" + struct.pack("<I", data_bytes)
    block = os.urandom(1024 * 1024)
    with open(path, "wb") as output:
        output.write(header)
        for _ in range(mib):
            output.write(block)


class HealthProbe:
    """GET /api/health every ``interval`` s on one keep-alive connection; latencies kept."""

    def __init__(self, port: int, interval: float = 0.1) -> None:
        self.port, self.interval = port, interval
        self.samples: list[tuple[float, float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        connection: http.client.HTTPConnection | None = None
        while not self._stop.wait(self.interval):
            began, wall, ok = time.perf_counter(), time.time(), False
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                connection.request("GET", "/api/health")
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                if connection is not None:
                    connection.close()
                connection = None
            self.samples.append((wall, (time.perf_counter() - began) * 1000, ok))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def window(self, start: float, end: float) -> dict[str, Any]:
        inside = [s for s in self.samples if start <= s[0] <= end]
        return {**summary([s[1] for s in inside], 1), "failed": sum(not s[2] for s in inside)}


class Healthy:
    """The healthy streamer child (benchmarks/healthy_stream.py) and its progress lines."""

    def __init__(self, job: dict[str, Any]) -> None:
        cpus = other_cpus()
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "healthy_stream.py")], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, preexec_fn=lambda: pin(cpus))
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        self.measuring = threading.Event()
        self.report: dict[str, Any] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            message = json.loads(line)
            if message.get("event") == "measuring":
                self.measuring.set()
            elif "event" not in message:
                self.report = message

    def finish(self, windows: list[list[Any]], timeout: float = 120) -> dict[str, Any]:
        """Hand over the windows; the per-window figures."""
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.write(json.dumps({"windows": windows}) + "\n")
            self.process.stdin.close()
        self._reader.join(timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        if self.process.poll() is None:
            self.process.kill()
        return self.report


def run_attacker(job: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One attacker child (benchmarks/attack_kinds.py); its report (killed after timeout)."""
    cpus = other_cpus()
    try:
        done = subprocess.run([sys.executable, str(HERE / "attack_kinds.py")],
                              input=json.dumps(job), capture_output=True, text=True,
                              timeout=timeout, preexec_fn=lambda: pin(cpus), check=False)
    except subprocess.TimeoutExpired:
        return {"kind": job["kind"], "error": f"killed after {timeout:g} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"kind": job["kind"], "error": f"exit {done.returncode}: {done.stderr[-800:]}"}
    report: dict[str, Any] = json.loads(lines[-1])
    return report


def our_cpu(service_pid: int, healthy_pid: int) -> dict[str, float]:
    """CPU seconds so far: the service, this benchmark's processes (this one, the healthy
    streamer, finished attacker children) and the whole machine, to tell others' load.

    Rough: on this machine "others" reads 12-16 points below zero when nothing else runs
    (the machine's and the processes' counters do not quite agree); read it as a hint.
    """
    own = os.times()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    healthy = 0.0
    with contextlib.suppress(OSError):
        healthy = proc_cpu_seconds(healthy_pid)
    return {"service": proc_cpu_seconds(service_pid),
            "ours": own.user + own.system + children.ru_utime + children.ru_stime + healthy,
            "machine": machine_busy_seconds()}


def counters(api: Api, secret: str) -> dict[str, float]:
    """The service's /metrics as {name{labels}: value}."""
    values: dict[str, float] = {}
    with contextlib.suppress(OSError, http.client.HTTPException):
        for line in api.raw("GET", f"/metrics?secret={secret}").decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    values[name] = float(value)
    return values


PUSH_SPEC = {"sample_rate": 48000, "channels": 2, "max_backlog_ms": 60000}
"""The WebSocket attackers' push source: 1 MiB is 5.5 s of 48 kHz stereo, under the 60 s
backlog, so the message cap (not flow control) is what stops a hostile message."""

SHORT = {"body-1GiB-no-secret": "1GiB", "body-1GiB-chunked-no-secret": "chunked",
         "json-100000-deep": "deep", "lone-surrogate-vhost": "surrogate",
         "list-after-surrogate": "list", "lone-surrogate-secret": "secret",
         "query-20KB": "query", "stop-stray": "stop"}
"""Short names of the HTTP attacks for the table."""

MOVED = ("gbtalk_sessions_ended_total", "gbtalk_packets_dropped_total",
         "gbtalk_invalid_packets_total", "gbtalk_device_refused_total",
         "gbtalk_ssrc_violations_total")


def moved(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """The counters of interest that changed between two readings."""
    return {name: after[name] - before.get(name, 0.0) for name in after
            if name.startswith(MOVED) and after[name] != before.get(name, 0.0)}


def attacker_summary(report: dict[str, Any]) -> str:
    """What the attacker saw, in a few words, for the table."""
    if "error" in report:
        return f"error: {report['error'][:60]}"
    kind = report["kind"]
    if kind in ("pcma-flood", "tiny-frames"):
        text = (f"{report['sessions']} sessions, {report['closed_by_service']} closed by it, "
                f"{report['bytes_sent'] / 1e6:.1f} MB sent")
        wav = report.get("recording")
        if wav:
            text += (f"; WAV {wav['bytes'] / 1e6:.2f} MB = {wav['audio_seconds']} s audio "
                     f"in {report['seconds']} s")
        return text
    if kind == "ws-endless":
        return (f"{report['attempts']} msgs, closes {report['close_codes']}")
    if kind == "ws-big":
        return (f"{len(report['messages'])} msgs, sent "
                f"{sum(m['bytes_sent'] for m in report['messages']) / 1e6:.1f} MB, "
                f"closes {report['close_codes']}")
    if kind == "paused-pusher":
        return (f"{report['cycles']} cycles, next pusher first answer "
                f"{report['next_pusher_first_answer']}, 409s {report['refused_409']}")
    if kind == "wav-loads":
        return "; ".join(f"{load['status']}/{load['code']} {load['seconds']} s"
                         for load in report["loads"])
    if kind in ("http-body", "http-json", "http-benign"):
        return " ".join(f"{SHORT.get(name, name)}:{','.join(info['answers'])}"
                        for name, info in report["kinds"].items())
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--healthy", type=int, default=200, help="healthy streaming sessions")
    parser.add_argument("--window", type=float, default=10.0, help="seconds per window")
    parser.add_argument("--rounds", type=int, default=2, help="times each point is measured")
    parser.add_argument("--attackers", default=",".join(ATTACKERS),
                        help=f"comma-separated, of {', '.join(ATTACKERS)}")
    parser.add_argument("--wav-mib", type=int, default=60, help="size of each loaded WAV file")
    parser.add_argument("--gap-goal", type=float, default=5.0,
                        help="ms: healthy p99 under attack at most this above the baseline")
    parser.add_argument("--rss-goal", type=float, default=10.0,
                        help="%%: RSS after the attackers within this of its start")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds after each attacker before the next window")
    parser.add_argument("--service-tree", default=None,
                        help="run the service's code from this checkout (PYTHONPATH)")
    parser.add_argument("--push-spec", default=json.dumps(PUSH_SPEC),
                        help="JSON: the WebSocket attackers' push source fields (e.g. "
                             '\'{"sample_rate": 48000, "channels": 2, "max_backlog_ms": 60000}\')')
    parser.add_argument("--port-low", type=int, default=21000)
    args = parser.parse_args()
    chosen = [name for name in args.attackers.split(",") if name]
    unknown = set(chosen) - set(ATTACKERS)
    if unknown:
        parser.error(f"unknown attackers {sorted(unknown)}; use {', '.join(ATTACKERS)}")
    raise_fd_limit()
    pin_self_away_from_service()
    probe_before = cpu_probe_ms()
    scratch = Path(tempfile.mkdtemp(prefix="gbtalk-attackers-"))
    record_dir = scratch / "recordings"
    record_dir.mkdir()
    files = []
    if "wav-loads" in chosen:
        for index in range(3):
            files.append(str(scratch / f"load{index}.wav"))
            make_wav(Path(files[-1]), args.wav_mib)
    secret = secrets.token_hex(8)
    service = ServiceProcess((args.port_low, args.port_low + args.healthy + 500),
                             wait_timeout=5, log_name="attackers", probe_gc=False,
                             extra=["--secret", secret, "--record-dir", str(record_dir)])
    if args.service_tree:
        tree = str(Path(args.service_tree).resolve())
        service.env["PYTHONPATH"] = tree
        marker = Path(tree) / ".commit"  # written by whoever exported the tree
        commit = marker.read_text().strip() if marker.exists() else subprocess.run(
            ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=False).stdout.strip()
    else:
        commit = ""
    service.start()
    api = Api("127.0.0.1", service.api_port)
    address = f"127.0.0.1:{service.api_port}"
    windows: list[dict[str, Any]] = []
    rss_rounds: list[int] = []
    reports: list[dict[str, Any]] = []
    sampler = ProcSampler(service.pid, interval=0.25)
    probe = HealthProbe(service.api_port)
    healthy_report: dict[str, Any] = {}
    try:
        reply = api.call("POST", f"/api/sources?secret={secret}",
                         {"app": "bench", "stream": "tone0", "kind": "tone", "frequency": 440})
        if reply.get("code") != 0:
            raise RuntimeError(f"cannot create the tone source: {reply}")
        sampler.start()
        probe.start()
        healthy = Healthy({
            "api": address, "sessions": args.healthy, "sources": [["bench", "tone0"]],
            "endpoint": "native", "sample": 40, "connect_seconds": 2, "warmup": 3,
            "params": {"packet_ms": 20, "wait_timeout": 60, "preroll_ms": 0,
                       "secret": secret},
            "ssrc_base": 500_000_000, "jitter_bound_ms": args.gap_goal,
            "max_seconds": 3600})
        if not healthy.measuring.wait(120):
            raise RuntimeError("the healthy sessions did not start streaming within 120 s")
        time.sleep(2)
        rss_start = service.rss_kib()
        began = time.monotonic()
        ssrc = 1_000_000_000
        for round_index in range(args.rounds):
            for name in chosen:
                for phase in ("baseline", name):
                    ssrc += 100
                    before = counters(api, secret)
                    rss_before = service.rss_kib()
                    start_wall, start = time.time(), time.monotonic()
                    cpu_before = our_cpu(service.pid, healthy.process.pid)
                    report: dict[str, Any] | None = None
                    if phase == "baseline":
                        time.sleep(args.window)
                    else:
                        report = run_attacker({
                            "kind": name, "api": address, "secret": secret,
                            "seconds": args.window, "source": ["bench", "tone0"],
                            "ssrc": ssrc, "record_dir": str(record_dir), "files": files,
                            "push_spec": json.loads(args.push_spec),
                        }, timeout=args.window + 90)
                        reports.append({"round": round_index + 1, **report})
                    end_wall, end = time.time(), time.monotonic()
                    cpu_after = our_cpu(service.pid, healthy.process.pid)
                    shares = {name: round((cpu_after[name] - cpu_before[name]) / (end - start)
                                          * 100, 1) for name in cpu_after}
                    shares["others"] = round(shares["machine"] - shares["service"]
                                             - shares["ours"], 1)
                    sampled = sampler.window(start, end)
                    if report is not None:
                        time.sleep(args.settle)
                    windows.append({
                        "round": round_index + 1, "point": name, "phase": phase,
                        "start_wall": start_wall, "end_wall": end_wall,
                        "seconds": round(end - start, 1),
                        "health_ms": probe.window(start_wall, end_wall),
                        "service_cpu_percent": sampled["cpu_percent"]["mean"],
                        "machine_busy_percent": sampled["machine_busy_percent"],
                        "cpu_percent": shares,
                        "rss_kib_before": rss_before, "rss_kib_peak": sampled["rss_kib_max"],
                        "rss_kib_after": service.rss_kib(),
                        "counters": moved(before, counters(api, secret)),
                        "pacer_max_lateness_s": counters(api, secret).get(
                            "gbtalk_pacer_max_lateness_seconds"),
                        "attacker": report,
                    })
                    print(f"[{time.monotonic() - began:5.0f} s] round {round_index + 1} "
                          f"{phase:13s} {windows[-1]['seconds']:5.1f} s"
                          + (f"  {attacker_summary(report)}" if report else ""), flush=True)
            rss_rounds.append(service.rss_kib())
        time.sleep(3)
        rss_end = service.rss_kib()
        healthy_report = healthy.finish([[f"{w['round']}:{w['point']}:{w['phase']}",
                                          w["start_wall"], w["end_wall"]] for w in windows])
        final = counters(api, secret)
    finally:
        probe.stop()
        sampler.stop()
        status = service.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    probe_after = cpu_probe_ms()
    figures = {entry["name"]: entry for entry in healthy_report.get("windows", [])}
    for window in windows:
        entry = figures.get(f"{window['round']}:{window['point']}:{window['phase']}", {})
        gaps = entry.get("jitter_ms", {})
        window["healthy"] = {"packets": entry.get("packets"), "lost": entry.get("lost"),
                             "late": entry.get("late"), "closed": entry.get("closed"),
                             "gap_p99_ms": gaps.get("p99"), "gap_max_ms": gaps.get("max"),
                             "gap_median_ms": gaps.get("median")}
    verdicts = judge(windows, chosen, args.gap_goal)
    rss_back = abs(rss_end - rss_start) / rss_start * 100 if rss_start else None
    rows = []
    for window in windows:
        h = window["healthy"]
        rows.append([window["round"], window["phase"], window["seconds"], h["gap_p99_ms"],
                     h["gap_max_ms"], h["lost"], h["closed"], window["health_ms"]["p99"],
                     window["health_ms"]["max"], window["service_cpu_percent"],
                     window["cpu_percent"]["others"],
                     f"{window['rss_kib_before'] / 1024:.0f}/{window['rss_kib_peak'] / 1024:.0f}"
                     f"/{window['rss_kib_after'] / 1024:.0f}",
                     attacker_summary(window["attacker"]) if window["attacker"] else ""])
    print_table(["round", "window", "s", "gap p99 ms", "gap max", "lost", "closed",
                 "health p99 ms", "health max", "CPU %", "others % (rough)",
                 "RSS MiB before/peak/after",
                 "attacker saw"], rows)
    print()
    print_table(["attacker", "p99 baseline -> attack (ms)", "worst delta",
                 "vs all-baseline median", "lost", "closed",
                 f"gap within {args.gap_goal:g} ms", "0 loss"],
                [[v["attacker"], v["pairs"], v["worst_delta_ms"], v["worst_vs_median_ms"],
                  v["lost"], v["closed"], "yes" if v["gap_met"] else "NO",
                  "yes" if v["loss_met"] else "NO"]
                 for v in verdicts])
    print(f"RSS: {rss_start / 1024:.1f} MiB at the start, {rss_end / 1024:.1f} MiB after the "
          f"attackers ({rss_back:.1f} % off; goal {args.rss_goal:g} %: "
          f"{'met' if rss_back is not None and rss_back <= args.rss_goal else 'NOT met'}); "
          f"at the end of each round: {', '.join(f'{r / 1024:.1f}' for r in rss_rounds)} MiB")
    print(f"CPU probe: {probe_before} ms before, {probe_after} ms after; healthy sessions "
          f"{healthy_report.get('connected')} connected, {healthy_report.get('closed_total')} "
          f"closed by the service; service exit {status}")
    path = write_result("attackers", {
        "command": sys.argv, "service_commit": commit or None,
        "service_tree": args.service_tree, "date": time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                                                   time.gmtime()),
        "cpu_probe_ms": {"before": probe_before, "after": probe_after},
        "args": vars(args), "rss_kib": {"start": rss_start, "end": rss_end,
                                        "percent_off": round(rss_back or 0, 2),
                                        "end_of_each_round": rss_rounds,
                                        "goal_met": rss_back is not None
                                        and rss_back <= args.rss_goal},
        "verdicts": verdicts, "windows": windows, "attackers": reports,
        "healthy": {k: v for k, v in healthy_report.items() if k != "windows"},
        "final_counters": {k: v for k, v in final.items() if k.startswith(MOVED)},
        "service_exit_status": status,
    })
    print(f"written {path}")


def judge(windows: list[dict[str, Any]], chosen: list[str], goal_ms: float
          ) -> list[dict[str, Any]]:
    """Per attacker: each attack window's p99 against the baseline just before it."""
    verdicts = []
    baselines = [w["healthy"]["gap_p99_ms"] for w in windows
                 if w["phase"] == "baseline" and w["healthy"]["gap_p99_ms"] is not None]
    typical = percentile(baselines, 0.5)
    for name in chosen:
        pairs, deltas, lost, closed = [], [], 0, 0
        for index, window in enumerate(windows):
            if window["phase"] != name or index == 0:
                continue
            base, attack = windows[index - 1]["healthy"], window["healthy"]
            if base["gap_p99_ms"] is None or attack["gap_p99_ms"] is None:
                continue
            pairs.append(f"{base['gap_p99_ms']:.2f}->{attack['gap_p99_ms']:.2f}")
            deltas.append(attack["gap_p99_ms"] - base["gap_p99_ms"])
            lost += attack["lost"] or 0
            closed += attack["closed"] or 0
        verdicts.append({
            "attacker": name, "pairs": ", ".join(pairs),
            "worst_delta_ms": round(max(deltas), 2) if deltas else None,
            "median_delta_ms": round(percentile(deltas, 0.5), 2) if deltas else None,
            "baseline_median_ms": typical,
            "worst_vs_median_ms": round(max(w["healthy"]["gap_p99_ms"] for w in windows
                                            if w["phase"] == name) - typical, 2)
            if deltas else None,
            "lost": lost, "closed": closed,
            "gap_met": bool(deltas) and max(deltas) <= goal_ms,
            "loss_met": bool(deltas) and lost == 0 and closed == 0,
        })
    return verdicts


if __name__ == "__main__":
    main()
