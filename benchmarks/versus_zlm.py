"""gb28181talk against ZLMediaKit in the same run: the same load generator, interleaved, ratios.

Point ``--zlm`` at a MediaServer you built from ZLMediaKit's sources by its
own instructions (this repository holds none of its code and no recipe for
it); give it several times, each with its own ``--zlm-label`` (for instance a
build with TCP_NODELAY kept on for talk sockets, and the stock one).  For
each server in turn (ours, then each MediaServer; ``--rounds`` times, so the
points interleave: us, zlm, us, zlm) the script starts it on loopback, opens
an RTP server on it (``/index/api/openRtpServer``, UDP) and feeds it the same
G.711 A-law RTP from a small pusher process (20 ms packets, a 400 Hz tone),
then runs benchmarks/loadgen_api.py in its own process: N sessions started
through ``/index/api/startSendRtpPassive`` (raw PCMA, payload type 8), N
devices connected on loopback, a sample of them timed packet by packet with
the kernel's receive timestamps.  Figures per point: the devices' p50/p99
jitter, packets delivered against expected and lost, the server's CPU
(user + system from /proc, summed over its process tree, so ``--workers``
counts every worker) and RSS per session; then ours/ZLMediaKit ratios.

The MediaServer gets a config.ini written here into a temporary directory:
every listener on 127.0.0.1 or off, only the HTTP API on a free port, its
RTP port range (``--zlm-port-range``) apart from ours and below Linux's
ephemeral range, no hooks, the muxers nobody reads off (RTSP stays: its
source is the one ``startSendRtpPassive`` finds), and
``rtp_proxy.rtp_g711_dur_ms`` = ``--packet-ms``.  Our API sends 20 ms
packets through ``startSendRtpPassive`` (it takes no packet duration), so
for other ``--packet-ms`` our sessions start through ``POST /api/sessions``
with ``packet_ms`` (the same session, another door).  With ``--workers 1``
both servers are pinned to core 0 and the load generator and the pusher to
the others; with more workers neither is pinned.

``--starts``: session starts per second through ``startSendRtpPassive``,
one connection (sequential) and 8 keep-alive connections, then the stops.

    .venv/bin/python benchmarks/versus_zlm.py --zlm /path/MediaServer --zlm-label nodelay \\
        --zlm /path/stock/MediaServer --zlm-label stock --sessions 1000 --duration 15
    .venv/bin/python benchmarks/versus_zlm.py --zlm /path/MediaServer --starts --sessions 3000

Writes benchmarks/results/versus_zlm-<N>x<ms>ms[-<workers>workers].json or
versus_zlm-starts-<N>.json (every point, the machine, the commit, the date,
a CPU probe before and after).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import math
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import (
    DEFAULT_PORT_RANGE,
    SERVICE_CPU,
    Api,
    ProcSampler,
    ServiceProcess,
    cpu_probe_ms,
    free_tcp_port,
    other_cpus,
    pin,
    pin_self_away_from_service,
    print_table,
    proc_tree_rss_kib,
    run_loadgen,
    write_result,
)
from service_load import raise_fd_limit

SOURCE_STREAM = "versus"
"""The RTP server's stream_id on both servers: the live source every session plays."""
SOURCE_APP = "rtp"
VHOST = "__defaultVhost__"
ZLM_SECRET = "versus-zlm-benchmark"
"""The MediaServer's API secret (loopback only); ours runs with none and ignores it."""
ZLM_PORT_RANGE = (10000, 20999)
"""ZLMediaKit takes two ports per passive session (an even/odd pair): 5,500 sessions here,
below our benchmark range (21000-...) and below Linux's ephemeral range (32768-60999)."""
FEED_SSRC = 0x5EED0001


# --------------------------------------------------------------------------- the pusher


def feed(host: str, port: int, seconds: float) -> None:
    """Send 20 ms G.711 A-law RTP packets (PT 8, a 400 Hz tone) to host:port for ``seconds``."""
    from gb28181talk.media.g711 import alaw_encode

    samples = [int(8000 * math.sin(2 * math.pi * 400 * n / 8000)) for n in range(8000)]
    tone = alaw_encode(struct.pack(f"<{len(samples)}h", *samples))  # 1 s: 50 whole frames
    frames = [tone[i : i + 160] for i in range(0, len(tone), 160)]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    began = time.monotonic()
    for index in itertools.count():
        due = began + index * 0.020
        if due - began > seconds:
            break
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        header = struct.pack("!BBHII", 0x80, 8, index & 0xFFFF, index * 160 & 0xFFFFFFFF,
                             FEED_SSRC)
        with contextlib.suppress(OSError):  # nothing listens yet, or any more
            sock.sendto(header + frames[index % len(frames)], (host, port))


def start_feeder(port: int) -> subprocess.Popen[bytes]:
    """The pusher as its own process, off the server's core."""
    cpus = other_cpus()
    return subprocess.Popen(
        [sys.executable, __file__, "--feed", f"127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL, preexec_fn=lambda: pin(cpus),
    )


# --------------------------------------------------------------------------- the servers


ZLM_CONFIG = """\
; written by benchmarks/versus_zlm.py for one run: loopback only, the API on {api_port}
[api]
apiDebug=0
secret={secret}
snapRoot={root}/snap/
defaultSnap=
downloadRoot={root}/www
[general]
mediaServerId=versus_zlm
listen_ip=127.0.0.1
enableVhost=0
mergeWriteMS=0
streamNoneReaderDelayMS=600000
maxStreamWaitMS=15000
wait_track_ready_ms=10000
wait_add_track_ms=3000
[protocol]
add_mute_audio=0
auto_close=0
enable_hls=0
enable_hls_fmp4=0
enable_mp4=0
enable_rtsp=1
enable_rtmp=0
enable_ts=0
enable_fmp4=0
hls_save_path={root}/www
mp4_save_path={root}/www
[hook]
enable=0
[http]
port={api_port}
sslport=0
rootPath={root}/www
dirMenu=0
allow_ip_range=127.0.0.1,::1
[rtsp]
port=0
sslport=0
[rtmp]
port=0
sslport=0
[shell]
port=0
[rtc]
port=0
tcpPort=0
signalingPort=0
signalingSslPort=0
icePort=0
iceTcpPort=0
[srt]
port=0
[onvif]
port=0
[rtp_proxy]
port=0
port_range={port_low}-{port_high}
timeoutSec=30
rtp_g711_dur_ms={packet_ms}
"""


class ZlmProcess:
    """A MediaServer built elsewhere, run with a config.ini of our own in a temporary folder."""

    def __init__(self, binary: Path, packet_ms: int, port_range: tuple[int, int],
                 pinned: bool, label: str) -> None:
        self.binary = binary
        self.label = label
        self.pinned = pinned
        self.api_port = free_tcp_port()
        self.folder = tempfile.TemporaryDirectory(prefix="versus_zlm-")
        root = Path(self.folder.name)
        (root / "www").mkdir()
        (root / "log").mkdir()
        self.config = root / "config.ini"
        self.config.write_text(ZLM_CONFIG.format(
            api_port=self.api_port, secret=ZLM_SECRET, root=root, packet_ms=packet_ms,
            port_low=port_range[0], port_high=port_range[1]))
        self.command = [str(binary), "-c", str(self.config), "-l", "3",
                        "--log-dir", f"{root}/log/"]
        self.process: subprocess.Popen[bytes] | None = None
        self.api: Api | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, ready_timeout: float = 20.0) -> None:
        """Start it and wait (bounded) until its API answers with the secret."""
        cpus = {SERVICE_CPU} if self.pinned else None
        self.process = subprocess.Popen(
            self.command, cwd=self.folder.name, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=(lambda: pin(cpus)) if cpus else None,
        )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"MediaServer {self.binary} exited with "
                                   f"{self.process.returncode}; logs in {self.folder.name}/log")
            try:
                api = Api("127.0.0.1", self.api_port, timeout=5)
                reply = api.call("GET", f"/index/api/getServerConfig?secret={ZLM_SECRET}")
                if reply.get("code") == 0:
                    self.api = api
                    return
                api.close()
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"MediaServer did not answer within {ready_timeout} s")

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait (bounded), then SIGKILL; the temporary folder goes too."""
        if self.api is not None:
            self.api.close()
        status = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(5)
            status = self.process.returncode
        self.folder.cleanup()
        return status


@dataclass
class Server:
    """One side of the comparison: how to start it, call it and measure it."""

    label: str
    kind: str  # "ours" or "zlm"
    binary: Path | None = None
    process: Any = None
    extra_query: dict[str, Any] = field(default_factory=dict)

    def start(self, args: argparse.Namespace) -> None:
        pinned = args.workers == 1
        if self.kind == "ours":
            high = args.port_low + args.sessions + 600
            self.process = ServiceProcess((args.port_low, high), wait_timeout=120,
                                          log_name=f"versus_zlm-{self.label}", probe_gc=False,
                                          workers=args.workers, pinned=pinned)
            self.extra_query = {"vhost": VHOST}
        else:
            assert self.binary is not None
            self.process = ZlmProcess(self.binary, args.packet_ms, args.zlm_port_range,
                                      pinned, self.label)
            self.extra_query = {"vhost": VHOST, "secret": ZLM_SECRET}
        self.process.start()

    def stop(self) -> int | None:
        status: int | None = self.process.stop()
        return status

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.process.api_port}"

    def query(self, path: str, **values: Any) -> dict[str, Any]:
        api: Api = self.process.api
        text = "&".join(f"{k}={v}" for k, v in {**self.extra_query, **values}.items())
        return api.call("GET", f"{path}?{text}")

    def start_job(self, args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
        """(endpoint, params) for the load generator's session starts."""
        if self.kind == "ours" and args.packet_ms != 20:
            return "native", {"packet_ms": args.packet_ms, "codec": "pcma", "packaging": "raw",
                              "wait_timeout": 120, "preroll_ms": 0}
        return "zlm", {**self.extra_query, "use_ps": 0, "pt": 8, "only_audio": 1,
                       "close_delay_ms": 120000}


def open_source(server: Server) -> tuple[int, subprocess.Popen[bytes]]:
    """An RTP server on ``server`` fed by the pusher; waits until a session can play it."""
    reply = server.query("/index/api/openRtpServer", port=0, tcp_mode=0,
                         stream_id=SOURCE_STREAM, only_audio=1)
    if reply.get("code") != 0:
        raise RuntimeError(f"{server.label}: openRtpServer refused: {reply}")
    port = int(reply["port"])
    feeder = start_feeder(port)
    deadline = time.monotonic() + 20
    probe_ssrc = 99999999
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = server.query("/index/api/startSendRtpPassive", app=SOURCE_APP,
                            stream=SOURCE_STREAM, ssrc=probe_ssrc, use_ps=0, pt=8,
                            only_audio=1, close_delay_ms=2000)
        if last.get("code") == 0:
            server.query("/index/api/stopSendRtp", app=SOURCE_APP, stream=SOURCE_STREAM,
                         ssrc=probe_ssrc)
            return port, feeder
        time.sleep(0.25)
    stop_feeder(feeder)
    raise RuntimeError(f"{server.label}: the fed source never became playable: {last}")


def stop_feeder(feeder: subprocess.Popen[bytes]) -> None:
    """End the pusher we started (by its own handle)."""
    if feeder.poll() is None:
        feeder.terminate()
        try:
            feeder.wait(5)
        except subprocess.TimeoutExpired:
            feeder.kill()
            feeder.wait(5)


def binary_info(path: Path) -> dict[str, Any]:
    """Which MediaServer: its path, size, SHA-256 (first 16 hex) and modification time."""
    data = path.read_bytes()
    return {"path": str(path), "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()[:16],
            "mtime": time.strftime("%Y-%m-%d %H:%M", time.gmtime(path.stat().st_mtime))}


# --------------------------------------------------------------------------- one point


def stream_point(server: Server, args: argparse.Namespace, round_index: int) -> dict[str, Any]:
    """N sessions on ``server`` for ``--duration`` s: CPU, RSS, jitter, delivered, lost."""
    server.start(args)
    feeder = None
    sampler = None
    try:
        _port, feeder = open_source(server)
        time.sleep(0.5)
        rss_base = proc_tree_rss_kib(server.process.pid)
        sampler = ProcSampler(server.process.pid, interval=1.0)
        sampler.start()
        marks: dict[str, float] = {}
        endpoint, params = server.start_job(args)
        job = {
            "mode": "stream", "api": server.address, "sessions": args.sessions,
            "sources": [[SOURCE_APP, SOURCE_STREAM]], "endpoint": endpoint, "params": params,
            "concurrency": 8, "connect_seconds": args.connect_seconds, "warmup": args.warmup,
            "duration": args.duration, "sample": args.sample, "drain_ms": 200,
            "jitter_bound_ms": args.jitter_bound,
        }
        devices = run_loadgen(job, lambda e: marks.__setitem__(e["event"], e["t"]),
                              timeout=args.duration + args.sessions / 50 + 300)
        sampler.stop()
        window = sampler.window(marks.get("measuring", 0), marks.get("measured", 1e18))
    finally:
        if sampler is not None:
            sampler.stop()
        if feeder is not None:
            stop_feeder(feeder)
        status = server.stop()
    expected = devices["sampled_devices"] * round(args.duration * 1000 / args.packet_ms)
    cpu = window["cpu_percent"]
    return {
        "server": server.label, "round": round_index + 1, "sessions": args.sessions,
        "packet_ms": args.packet_ms,
        "cpu_percent_mean": cpu["mean"], "cpu_percent": cpu,
        "rss_kib_per_session": round((window["rss_kib_max"] - rss_base) / args.sessions, 2),
        "jitter_p50_ms": devices["jitter_ms"]["median"],
        "jitter_p99_ms": devices["jitter_ms"]["p99"],
        "jitter_max_ms": devices["jitter_ms"]["max"],
        "delivered": devices["packets"], "expected": expected, "lost": devices["lost"],
        "start_failed": devices["start_failed"], "start_errors": devices["start_errors"],
        "connected": devices["connected"], "closed_early": devices["closed_early"],
        "loadgen_cpu_percent": devices["loadgen_cpu_percent"],
        "others_cpu_percent": max(0.0, round(
            window["machine_busy_percent"] - cpu["mean"] - devices["loadgen_cpu_percent"], 1)),
        "exit_status": status,
        "devices": devices,
    }


def starts_point(server: Server, args: argparse.Namespace, round_index: int) -> dict[str, Any]:
    """Starts (then stops) per second through startSendRtpPassive: 1 and 8 connections."""
    server.start(args)
    feeder = None
    figures: dict[str, Any] = {"server": server.label, "round": round_index + 1,
                               "sessions": args.sessions}
    try:
        _port, feeder = open_source(server)
        for base, connections in ((100000000, 1), (200000000, 8)):
            job = {
                "mode": "setup", "api": server.address, "sessions": args.sessions,
                "sources": [[SOURCE_APP, SOURCE_STREAM]], "endpoint": "zlm",
                "params": {**server.extra_query, "use_ps": 0, "pt": 8, "only_audio": 1,
                           "close_delay_ms": 60000},
                "stop_params": server.extra_query, "concurrency": connections,
                "latency_probes": 0, "ssrc_base": base,
            }
            result = run_loadgen(job, timeout=args.sessions / 20 + 300)
            figures[f"c{connections}"] = {
                "starts_per_second": result["starts_per_second"],
                "stops_per_second": result["stops_per_second"],
                "start_failed": result["start_failed"],
                "start_errors": result["start_errors"],
                "start_latency_ms": result["start_latency_ms"],
            }
    finally:
        if feeder is not None:
            stop_feeder(feeder)
        figures["exit_status"] = server.stop()
    return figures


# --------------------------------------------------------------------------- the report


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def ratio(ours: float, theirs: float) -> float | None:
    return round(ours / theirs, 3) if theirs else None


def stream_summary(points: list[dict[str, Any]], labels: list[str]) -> dict[str, Any]:
    """Per server the values of each round; per ZLMediaKit build the ratios ours/theirs."""
    by: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    for point in points:
        by[point["server"]].append(point)
    ours = by[labels[0]]
    result: dict[str, Any] = {}
    for label in labels[1:]:
        theirs = by[label]
        result[label] = {
            "cpu_ratio_of_means": ratio(mean([p["cpu_percent_mean"] for p in ours]),
                                        mean([p["cpu_percent_mean"] for p in theirs])),
            "p99_ratio_of_means": ratio(mean([p["jitter_p99_ms"] for p in ours]),
                                        mean([p["jitter_p99_ms"] for p in theirs])),
            "cpu_ratio_per_round": [ratio(a["cpu_percent_mean"], b["cpu_percent_mean"])
                                    for a, b in zip(ours, theirs, strict=False)],
            "p99_ratio_per_round": [ratio(a["jitter_p99_ms"], b["jitter_p99_ms"])
                                    for a, b in zip(ours, theirs, strict=False)],
        }
    return result


def print_stream(points: list[dict[str, Any]], ratios: dict[str, Any], ours: str) -> None:
    rows = [[p["server"], p["round"], p["sessions"], p["packet_ms"], p["cpu_percent_mean"],
             p["cpu_percent"]["median"], p["jitter_p50_ms"], p["jitter_p99_ms"],
             p["jitter_max_ms"], f"{p['delivered']}/{p['expected']}", p["lost"],
             p["start_failed"], p["rss_kib_per_session"], p["loadgen_cpu_percent"],
             p["others_cpu_percent"]] for p in points]
    print_table(["server", "round", "N", "pkt ms", "CPU% mean", "CPU% med", "jit p50",
                 "jit p99", "jit max", "delivered/expected", "lost", "refused", "KiB/sess",
                 "loadgen CPU%", "others CPU%"], rows)
    for label, figures in ratios.items():
        print(f"{ours} / {label}: CPU {figures['cpu_ratio_of_means']} "
              f"(per round {figures['cpu_ratio_per_round']}), p99 jitter "
              f"{figures['p99_ratio_of_means']} (per round {figures['p99_ratio_per_round']})")


def starts_summary(points: list[dict[str, Any]], labels: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key in ("c1", "c8"):
        ours = [p[key]["starts_per_second"] for p in points if p["server"] == labels[0]]
        for label in labels[1:]:
            theirs = [p[key]["starts_per_second"] for p in points if p["server"] == label]
            result.setdefault(label, {})[key] = {
                "starts_ratio_of_means": ratio(mean(ours), mean(theirs)),
                "starts_ratio_per_round": [ratio(a, b)
                                           for a, b in zip(ours, theirs, strict=False)],
            }
    return result


def print_starts(points: list[dict[str, Any]], ratios: dict[str, Any], ours: str) -> None:
    rows = [[p["server"], p["round"], p["sessions"], p["c1"]["starts_per_second"],
             p["c8"]["starts_per_second"], p["c1"]["stops_per_second"],
             p["c8"]["stops_per_second"], p["c1"]["start_failed"] + p["c8"]["start_failed"]]
            for p in points]
    print_table(["server", "round", "N", "starts/s 1 conn", "starts/s 8 conn", "stops/s 1",
                 "stops/s 8", "refused"], rows)
    for label, figures in ratios.items():
        print(f"{ours} / {label}: starts/s sequential {figures['c1']['starts_ratio_of_means']} "
              f"{figures['c1']['starts_ratio_per_round']}, 8 connections "
              f"{figures['c8']['starts_ratio_of_means']} "
              f"{figures['c8']['starts_ratio_per_round']}")


# --------------------------------------------------------------------------- main


def port_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    return int(low), int(high)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zlm", action="append", type=Path, default=[], metavar="MEDIASERVER",
                        help="a MediaServer binary you built from ZLMediaKit's sources by its "
                             "own instructions (repeat for several builds)")
    parser.add_argument("--zlm-label", action="append", default=[],
                        help="a name for each --zlm, in order [default: zlm, zlm2, ...]")
    parser.add_argument("--ours-label", default="gb28181talk")
    parser.add_argument("--starts", action="store_true",
                        help="measure session starts per second instead of streaming")
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--packet-ms", type=int, default=20, choices=range(20, 181, 20),
                        metavar="MS", help="G.711 packet duration, 20..180 in steps of 20")
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2, help="points per server (interleaved)")
    parser.add_argument("--workers", type=int, default=1, help="our service's --workers")
    parser.add_argument("--sample", type=int, default=40, help="devices timed packet by packet")
    parser.add_argument("--connect-seconds", type=float, default=3.0)
    parser.add_argument("--jitter-bound", type=float, default=5.0, help="late above, ms")
    parser.add_argument("--port-low", type=int, default=DEFAULT_PORT_RANGE[0],
                        help="the first of our talk ports")
    parser.add_argument("--zlm-port-range", type=port_range, default=ZLM_PORT_RANGE,
                        metavar="LO-HI", help="ZLMediaKit's rtp_proxy.port_range "
                        f"[default: {ZLM_PORT_RANGE[0]}-{ZLM_PORT_RANGE[1]}]")
    parser.add_argument("--feed", metavar="HOST:PORT", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.feed:
        host, _, port = args.feed.rpartition(":")
        feed(host, int(port), 24 * 3600)
        return
    if not args.zlm:
        raise SystemExit("give --zlm PATH_TO_MediaServer (built from ZLMediaKit's sources)")
    labels = args.zlm_label + [f"zlm{i + 1}" if i else "zlm"
                               for i in range(len(args.zlm_label), len(args.zlm))]
    for binary in args.zlm:
        if not os.access(binary, os.X_OK):
            raise SystemExit(f"--zlm {binary}: not an executable file")
    pairs = (args.zlm_port_range[1] - args.zlm_port_range[0] + 1) // 2
    if args.sessions > pairs - 10:
        raise SystemExit(f"--zlm-port-range holds {pairs} port pairs; ZLMediaKit needs one "
                         f"per session: widen it for {args.sessions} sessions")
    raise_fd_limit()
    pin_self_away_from_service()
    servers = [Server(args.ours_label, "ours")] + [
        Server(label, "zlm", binary) for label, binary in zip(labels, args.zlm, strict=True)]
    names = [server.label for server in servers]
    probe_before = cpu_probe_ms()
    points: list[dict[str, Any]] = []
    measure = starts_point if args.starts else stream_point
    for round_index in range(args.rounds):
        for server in servers:
            print(f"round {round_index + 1}: {server.label} ...", flush=True)
            points.append(measure(server, args, round_index))
    probe_after = cpu_probe_ms()
    report: dict[str, Any] = {
        "command": sys.argv,
        "cpu_probe_ms": {"before": probe_before, "after": probe_after},
        "zlm_binaries": {label: binary_info(binary)
                         for label, binary in zip(labels, args.zlm, strict=True)},
        "points": points,
    }
    print()
    if args.starts:
        report["ratios"] = starts_summary(points, names)
        print_starts(points, report["ratios"], names[0])
        name = f"versus_zlm-starts-{args.sessions}"
    else:
        report["ratios"] = stream_summary(points, names)
        print_stream(points, report["ratios"], names[0])
        name = f"versus_zlm-{args.sessions}x{args.packet_ms}ms"
    if args.workers > 1:
        name += f"-{args.workers}workers"
    print(f"CPU probe {probe_before} ms before, {probe_after} ms after "
          "(a fixed chunk of Python work: higher is a slower machine)")
    path = write_result(name, report)
    print(f"written {path}")


if __name__ == "__main__":
    main()
