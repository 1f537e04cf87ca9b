"""The load generator: starts talk sessions through the HTTP API and plays their devices.

Runs in its own process (so it does not share the service's core) and reads
one JSON job on standard input; prints progress events (``{"event": ...}``,
one per line) and then one JSON report.  Modes:

``stream``  start N sessions (``--concurrency`` keep-alive HTTP connections),
            connect N devices, measure for ``duration`` seconds: a sample of
            devices is decoded packet by packet with the kernel's receive
            timestamps (SO_TIMESTAMPNS: what the loopback delivered when, not
            when this process got round to reading), the rest are drained
            cheaply every ``drain_ms``;
``setup``   sessions started per second through ``startSendRtpPassive``
            at full speed, then API-call-to-first-packet latency one at a time;
``churn``   session lifecycles (start; connect or not; stop, device close,
            device reset or timeout), ``window`` of them in flight.

Jitter is |arrival gap − RTP timestamp gap| between consecutive packets of
one device; lost packets are RTP sequence gaps; late packets are those whose
jitter exceeds ``jitter_bound_ms``.  One hand-rolled selector loop, because a
general event loop would cost this process more than the service it measures.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import heapq
import itertools
import json
import os
import random
import selectors
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

from benchlib import percentile, summary

from gb28181talk.device.media import Depth, DeviceMedia
from gb28181talk.device.timed import TimedReader, enable_kernel_timestamps
from gb28181talk.errors import FramingError
from gb28181talk.media.framing import Framing, frame_rfc4571
from gb28181talk.media.rtp import RtpPacket

DRAIN_CHUNK = 256
"""Drained sockets read between two looks at the sampled ones."""


def log_event(event: str, **fields: Any) -> None:
    """A progress line for the orchestrating script."""
    print(json.dumps({"event": event, "t": time.monotonic(), "wall": time.time(), **fields}),
          flush=True)


# --------------------------------------------------------------------------- the loop


class Loop:
    """A selector with timers: just enough of an event loop for many sockets, cheaply."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()

    def call_at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (when, next(self._order), action))

    def call_later(self, delay: float, action: Callable[[], None]) -> None:
        self.call_at(time.monotonic() + delay, action)

    def poll(self, timeout: float) -> None:
        """Handle ready sockets (waiting at most ``timeout``), then due timers."""
        if self._timers:
            timeout = min(timeout, max(0.0, self._timers[0][0] - time.monotonic()))
        for key, events in self.selector.select(timeout):
            key.data(events)
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, action = heapq.heappop(self._timers)
            action()

    def run_until(self, done: Callable[[], bool], deadline: float, step: float = 0.05) -> bool:
        """Turn until ``done()`` or the (monotonic) deadline; True if done."""
        while not done():
            if time.monotonic() >= deadline:
                return False
            self.poll(min(step, max(0.0, deadline - time.monotonic())))
        return True


# --------------------------------------------------------------------------- HTTP


class HttpConnection:
    """One keep-alive HTTP/1.1 connection doing one request at a time from a queue."""

    def __init__(self, loop: Loop, host: str, port: int) -> None:
        self.loop, self.host, self.port = loop, host, port
        self.sock: socket.socket | None = None
        self.queue: list[tuple[bytes, Callable[[int, bytes, float], None]]] = []
        self.busy = False
        self.buffer = bytearray()
        self.sent_at = 0.0
        self.reconnects = 0

    def _connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self.sock = sock
        self.loop.selector.register(sock, selectors.EVENT_READ, self._readable)

    def _close(self) -> None:
        if self.sock is not None:
            self.loop.selector.unregister(self.sock)
            self.sock.close()
            self.sock = None

    def request(
        self, method: str, path: str, body: Any, done: Callable[[int, bytes, float], None]
    ) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Length: {len(data)}\r\n"
            + ("Content-Type: application/json\r\n" if data else "")
            + "\r\n"
        )
        self.queue.append((head.encode() + data, done))
        if not self.busy:
            self._next()

    def _next(self) -> None:
        if not self.queue:
            self.busy = False
            return
        self.busy = True
        if self.sock is None:
            self._connect()
        assert self.sock is not None
        self.sent_at = time.time()
        self.sock.sendall(self.queue[0][0])

    def _readable(self, _events: int) -> None:
        assert self.sock is not None
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close()
            self.buffer.clear()
            if self.busy:  # the server closed mid-request: send it again on a new connection
                self.reconnects += 1
                self._next()
            return
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        length = 0
        close = False
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                close = True
        if len(self.buffer) < end + 4 + length:
            return
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        status = int(head[0].split()[1])
        _, done = self.queue.pop(0)
        sent_at = self.sent_at
        if close:
            self._close()
        self.busy = False
        done(status, body, sent_at)
        if not self.busy:
            self._next()


class ApiClient:
    """Spreads requests over ``size`` keep-alive connections; counts what is in flight."""

    def __init__(self, loop: Loop, address: str, size: int) -> None:
        host, _, port = address.rpartition(":")
        self.connections = [HttpConnection(loop, host, int(port)) for _ in range(size)]
        self.in_flight = 0
        self._turn = itertools.cycle(self.connections)

    def request(
        self, method: str, path: str, body: Any, done: Callable[[dict[str, Any], float], None]
    ) -> None:
        """Send; ``done(reply_json, seconds_from_send_to_reply)`` is called with the reply."""
        connection = min(self.connections, key=lambda c: len(c.queue))
        self.in_flight += 1

        def finished(status: int, body_bytes: bytes, sent_at: float) -> None:
            self.in_flight -= 1
            try:
                reply = json.loads(body_bytes)
            except ValueError:
                reply = {"code": -9999, "msg": f"HTTP {status}: {body_bytes[:200]!r}"}
            done(reply, time.time() - sent_at)

        connection.request(method, path, body, finished)


def start_path(endpoint: str, app: str, stream: str, ssrc: int, extra: dict[str, Any]) -> tuple:
    """(method, path, body) starting one session through the chosen API."""
    if endpoint == "zlm":
        query = "&".join(
            f"{name}={value}"
            for name, value in {"app": app, "stream": stream, "ssrc": ssrc, **extra}.items()
        )
        return "GET", f"/index/api/startSendRtpPassive?{query}", None
    return "POST", "/api/sessions", {"app": app, "stream": stream, "ssrc": ssrc, **extra}


def stop_path(app: str, stream: str, ssrc: int, extra: dict[str, Any] | None = None) -> tuple:
    """(method, path, body) stopping one session; ``extra`` adds query arguments (a server
    that wants ``vhost`` and ``secret``, as ZLMediaKit does)."""
    query = "".join(f"&{name}={value}" for name, value in (extra or {}).items())
    return "GET", f"/index/api/stopSendRtp?app={app}&stream={stream}&ssrc={ssrc}{query}", None


# --------------------------------------------------------------------------- devices


class Device:
    """One device's TCP connection to its talk port, heard by the package's device media core.

    Sampled devices read packet by packet (the core's timed reader asks for one
    frame per recvmsg) so each packet's kernel timestamp is its arrival, and the
    core keeps each packet's header (one struct unpack); the rest only count bytes.
    """

    def __init__(self, loop: Loop, port: int, sampled: bool, host: str = "127.0.0.1",
                 rcvbuf: int | None = None, clock_rate: int | None = None) -> None:
        self.loop = loop
        self.rcvbuf = rcvbuf
        self.port = port
        self.host = host
        self.sampled = sampled
        self.sock: socket.socket | None = None
        self.connected = False
        self.failed: str | None = None
        self.closed_by_peer = False
        self.connect_started = 0.0
        self.connected_at = 0.0
        self.first_packet_at = 0.0
        self.on_connected: Callable[[Device], None] | None = None
        self.on_first_packet: Callable[[Device], None] | None = None
        self.on_closed: Callable[[Device], None] | None = None
        self.media = (
            DeviceMedia(Depth.HEADERS, Framing.RFC4571, clock_rate=clock_rate, timeline=True)
            if sampled else DeviceMedia(Depth.BYTES)
        )
        self._reader: TimedReader | None = None

    @property
    def bytes(self) -> int:
        """Bytes heard, framing included."""
        return self.media.stream_bytes

    def connect(self) -> None:
        """Dial the talk port without blocking."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if self.rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        if self.sampled:
            enable_kernel_timestamps(sock)
            self._reader = TimedReader(sock, self.media)
        self.sock = sock
        self.connect_started = time.time()
        code = sock.connect_ex((self.host, self.port))
        if code in (0, errno.EINPROGRESS):
            self.loop.selector.register(sock, selectors.EVENT_WRITE, self._writable)
        else:
            self._fail(os.strerror(code))

    def _fail(self, why: str) -> None:
        self.failed = why
        self.close()
        if self.on_closed is not None:
            self.on_closed(self)

    def _writable(self, _events: int) -> None:
        assert self.sock is not None
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self.loop.selector.unregister(self.sock)
            self._fail(os.strerror(code))
            return
        self.connected = True
        self.connected_at = time.time()
        # Sampled devices (and setup/churn devices) read through the selector;
        # the drained rest are read in passes (drain()).
        if self.sampled or self.on_first_packet is not None:
            self.loop.selector.modify(self.sock, selectors.EVENT_READ, self._readable)
        else:
            self.loop.selector.unregister(self.sock)
        if self.on_connected is not None:
            self.on_connected(self)

    def _readable(self, _events: int) -> None:
        if self.sampled:
            self._read_packets()
        else:
            self.drain()

    def _heard(self, before: int) -> None:
        """After a read: the device's first bytes make its first packet."""
        if not before and self.media.first_arrival is not None:
            self.first_packet_at = self.media.first_arrival
            if self.on_first_packet is not None:
                self.on_first_packet(self)

    def _peer_closed(self) -> None:
        self.closed_by_peer = True
        self.close()
        if self.on_closed is not None:
            self.on_closed(self)

    def drain(self) -> int:
        """Read whatever waits, counting bytes; returns how many."""
        sock = self.sock
        if sock is None:
            return 0
        media = self.media
        before = media.stream_bytes
        now = 0.0
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data = b""
            if not data:
                self._peer_closed()
                break
            now = now or time.time()
            media.receive(data, now)
            if len(data) < 65536:
                break
        self._heard(before)
        return media.stream_bytes - before

    def _read_packets(self) -> None:
        reader = self._reader
        if reader is None or self.sock is None:
            return
        before = self.media.stream_bytes
        try:
            reader.read()
        except FramingError as error:
            self._fail(f"the talk stream is not RFC 4571 RTP: {error}")
            return
        self._heard(before)
        if reader.closed:
            self._peer_closed()

    def send(self, data: bytes) -> None:
        """Device to service (small amounts: a loopback socket buffer takes them at once)."""
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.send(data)

    def close(self, reset: bool = False) -> None:
        sock, self.sock = self.sock, None
        if sock is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self.loop.selector.unregister(sock)
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


def packet_figures(devices: list[Device], start: float, end: float, bound_ms: float
                   ) -> dict[str, Any]:
    """Jitter, loss and lateness of the sampled devices' packets that arrived in [start, end]."""
    jitters: list[float] = []
    lost = packets = 0
    for device in devices:
        figures = device.media.figures(since=start, until=end)
        packets += figures.packets
        lost += figures.lost
        jitters.extend(gap.jitter_ms for gap in device.media.gaps(since=start, until=end))
    return {
        "sampled_devices": len(devices),
        "packets": packets,
        "lost": lost,
        "late": sum(jitter > bound_ms for jitter in jitters),
        "jitter_ms": summary(jitters),
        "jitter_p999_ms": round(percentile(jitters, 0.999), 3),
    }


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


# --------------------------------------------------------------------------- modes


def start_sessions(
    loop: Loop, api: ApiClient, job: dict[str, Any], count: int, deadline: float
) -> tuple[list[int | None], list[float], list[str]]:
    """Start ``count`` sessions as fast as the API takes them; returns ports, latencies, errors."""
    sources = job["sources"]
    ports: list[int | None] = [None] * count
    latencies: list[float] = []
    errors: list[str] = []
    window = job.get("concurrency", 8) * 2
    issued = itertools.count()

    def issue() -> None:
        index = next(issued)
        if index >= count:
            return
        app, stream = sources[index % len(sources)]
        method, path, body = start_path(
            job.get("endpoint", "native"), app, stream, job.get("ssrc_base", 100000000) + index,
            job.get("params", {}),
        )

        def done(reply: dict[str, Any], seconds: float) -> None:
            latencies.append(seconds * 1000)
            if reply.get("code") == 0:
                ports[index] = int(reply["local_port"])
            else:
                errors.append(str(reply.get("msg")))
            issue()

        api.request(method, path, body, done)

    for _ in range(min(window, count)):
        issue()
    loop.run_until(lambda: len(latencies) >= count, deadline)
    return ports, latencies, errors


def mode_stream(job: dict[str, Any]) -> dict[str, Any]:
    """N sessions streaming: start, connect, warm up, measure."""
    loop = Loop()
    api = ApiClient(loop, job["api"], job.get("concurrency", 8))
    count = job["sessions"]
    cpu0 = cpu_seconds()
    began = time.monotonic()
    ports, latencies, errors = start_sessions(loop, api, job, count, began + 600)
    start_seconds = time.monotonic() - began
    log_event("started", sessions=count, errors=len(errors), seconds=start_seconds)
    sample_every = max(1, count // max(job.get("sample", 40), 1))
    devices: list[Device] = []
    connect_seconds = job.get("connect_seconds", 2.0)
    t0 = time.monotonic()
    for index, port in enumerate(ports):
        if port is None:
            continue
        device = Device(loop, port, sampled=index % sample_every == 0,
                        clock_rate=job.get("clock_rate"))
        devices.append(device)
        loop.call_at(t0 + connect_seconds * index / max(count, 1), device.connect)
    drained = [device for device in devices if not device.sampled]
    sampled = [device for device in devices if device.sampled]
    drain_s = job.get("drain_ms", 200) / 1000

    def drain_pass() -> None:
        for offset in range(0, len(drained), DRAIN_CHUNK):
            for device in drained[offset : offset + DRAIN_CHUNK]:
                if device.connected:
                    device.drain()
            loop.poll(0)  # keep the sampled devices' reads prompt
        loop.call_later(drain_s, drain_pass)

    loop.call_later(drain_s, drain_pass)
    loop.run_until(
        lambda: all(d.connected or d.failed for d in devices), t0 + connect_seconds + 30
    )
    log_event("connected", devices=sum(d.connected for d in devices))
    settle = time.monotonic() + job.get("warmup", 3.0)
    loop.run_until(lambda: False, settle)
    measure_start_wall, measure_start = time.time(), time.monotonic()
    cpu_measure0 = cpu_seconds()
    log_event("measuring")
    duration = job.get("duration", 30.0)
    loop.run_until(lambda: False, measure_start + duration)
    measure_end_wall = time.time()
    log_event("measured")
    loadgen_cpu = (cpu_seconds() - cpu_measure0) / duration * 100
    figures = packet_figures(
        sampled, measure_start_wall, measure_end_wall, job.get("jitter_bound_ms", 5.0)
    )
    closed_early = sum(d.closed_by_peer for d in devices)
    drained_bytes = sum(d.bytes for d in drained)
    for device in devices:
        device.close()
    return {
        "mode": "stream",
        "sessions": count,
        "start_errors": errors[:5],
        "start_failed": len(errors),
        "start_rate_per_s": round(count / start_seconds, 1) if start_seconds else 0,
        "start_latency_ms": summary(latencies),
        "connected": sum(d.connected for d in devices),
        "connect_failed": sum(bool(d.failed) for d in devices),
        "closed_early": closed_early,
        "drained_bytes": drained_bytes,
        "measured_seconds": duration,
        "loadgen_cpu_percent": round(loadgen_cpu, 1),
        "loadgen_cpu_total_s": round(cpu_seconds() - cpu0, 1),
        **figures,
    }


def mode_setup(job: dict[str, Any]) -> dict[str, Any]:
    """Start rate at full speed (no devices), then call-to-first-packet latency one at a time."""
    loop = Loop()
    api = ApiClient(loop, job["api"], job.get("concurrency", 8))
    count = job["sessions"]
    began = time.monotonic()
    _ports, latencies, errors = start_sessions(loop, api, job, count, began + 600)
    seconds = time.monotonic() - began
    log_event("started", sessions=count, seconds=seconds)
    # Stop them all through the API (what a platform does on BYE), also at full speed.
    app, stream = job["sources"][0]
    stopped: list[float] = []
    stop_began = time.monotonic()
    pending = iter(range(count))

    def stop_next() -> None:
        index = next(pending, None)
        if index is None:
            return
        method, path, body = stop_path(app, stream, job.get("ssrc_base", 100000000) + index,
                                       job.get("stop_params"))
        api.request(method, path, body, lambda _reply, s: (stopped.append(s * 1000), stop_next()))

    for _ in range(job.get("concurrency", 8) * 2):
        stop_next()
    loop.run_until(lambda: len(stopped) >= count, stop_began + 600)
    stop_seconds = time.monotonic() - stop_began
    # Latency, one session at a time: API call -> reply -> connect -> first packet.  One
    # session that never connects keeps the pacer running, as on a service in use: a device
    # that connects before the session's first 20 ms frame waits for the next tick.
    keeper: list[dict[str, Any]] = []
    method, path, body = start_path(job.get("endpoint", "zlm"), app, stream,
                                    job.get("ssrc_base", 100000000) - 1, job.get("params", {}))
    api.request(method, path, body, lambda reply, _s: keeper.append(reply))
    loop.run_until(lambda: bool(keeper), time.monotonic() + 30)
    probes = job.get("latency_probes", 500)
    phases: dict[str, list[float]] = {"api_ms": [], "connect_ms": [], "first_packet_ms": [],
                                      "total_ms": []}
    base = job.get("ssrc_base", 100000000) + count
    state: dict[str, Any] = {"done": 0, "failed": 0}

    def probe(index: int) -> None:
        if index >= probes:
            return
        called = time.time()
        method, path, body = start_path(job.get("endpoint", "zlm"), app, stream, base + index,
                                        job.get("params", {}))

        def started(reply: dict[str, Any], _s: float) -> None:
            replied = time.time()
            if reply.get("code") != 0:
                state["failed"] += 1
                state["done"] += 1
                probe(index + 1)
                return
            device = Device(loop, int(reply["local_port"]), sampled=False)

            def first(dev: Device) -> None:
                phases["api_ms"].append((replied - called) * 1000)
                phases["connect_ms"].append((dev.connected_at - replied) * 1000)
                phases["first_packet_ms"].append((dev.first_packet_at - dev.connected_at) * 1000)
                phases["total_ms"].append((dev.first_packet_at - called) * 1000)
                dev.close()
                state["done"] += 1
                # A random pause, so the calls do not lock onto the pacer's 20 ms phase.
                loop.call_later(random.uniform(0.005, 0.045), lambda: probe(index + 1))

            def closed(dev: Device) -> None:
                if not dev.bytes:
                    state["failed"] += 1
                    state["done"] += 1
                    probe(index + 1)

            device.on_first_packet = first
            device.on_closed = closed
            device.connect()

        api.request(method, path, body, started)

    probe(0)
    loop.run_until(lambda: state["done"] >= probes, time.monotonic() + probes * 1.0 + 30)
    return {
        "mode": "setup",
        "sessions": count,
        "start_failed": len(errors),
        "start_errors": errors[:5],
        "starts_per_second": round(count / seconds, 1),
        "start_latency_ms": summary(latencies),
        "stops_per_second": round(count / stop_seconds, 1),
        "stop_latency_ms": summary(stopped),
        "probes": probes,
        "probes_failed": state["failed"],
        "first_packet": {name: summary(values) for name, values in phases.items()},
    }


CHURN_KINDS = ("stop-before-connect", "timeout", "connect-then-stop", "device-closes",
               "device-resets", "connect-after-stop")
FAULT_KINDS = ("two-way-garbage", "oversized-frame", "wrong-ssrc", "connects-twice",
               "stops-reading", "malformed-call")
"""Further kinds for the soak (benchmarks/soak.py): each must end the way the service promises."""


def device_rtp(sequence: int, ssrc: int) -> bytes:
    """One RFC 4571-framed PCMA packet as a device sends it."""
    packet = RtpPacket(8, sequence & 0xFFFF, sequence * 160 & 0xFFFFFFFF, ssrc, b"\xd5" * 160)
    return frame_rfc4571(packet.encode())


def mode_churn(job: dict[str, Any]) -> dict[str, Any]:
    """``lifecycles`` session lifecycles of every kind, ``window`` at a time."""
    loop = Loop()
    api = ApiClient(loop, job["api"], job.get("concurrency", 8))
    total = job["lifecycles"]
    window = job.get("window", 64)
    app, stream = job["sources"][0]
    base = job.get("ssrc_base", 100000000)
    timeout_ms = job.get("timeout_ms", 300)
    kinds = tuple(job.get("kinds", CHURN_KINDS))
    issue_until = time.monotonic() + job.get("issue_seconds", 1e9)
    counts = dict.fromkeys(kinds, 0)
    problems: list[str] = []
    state = {"issued": 0, "done": 0, "failed": 0}
    began = time.monotonic()
    last_report = [began]

    def finish() -> None:
        state["done"] += 1
        now = time.monotonic()
        if now - last_report[0] >= 5:
            last_report[0] = now
            log_event("progress", done=state["done"])
        begin()

    def failed(why: str) -> None:
        state["failed"] += 1
        if len(problems) < 10:
            problems.append(why)
        finish()

    def begin() -> None:
        index = state["issued"]
        if index >= total or time.monotonic() >= issue_until:
            return
        state["issued"] += 1
        kind = kinds[index % len(kinds)]
        counts[kind] += 1
        ssrc = (base + index) % 2**32
        extra: dict[str, Any] = {"use_ps": 0, "pt": 8}
        if kind == "timeout":
            extra["close_delay_ms"] = timeout_ms
        elif kind in ("two-way-garbage", "oversized-frame"):
            extra["recv_stream_id"] = f"voice{ssrc}"
        elif kind == "malformed-call":
            extra = {"pt": "x", "src_port": "70000"}
        method, path, body = start_path("zlm", app, stream, ssrc, extra)
        if kind == "wrong-ssrc":
            method, path, body = start_path("native", app, stream, ssrc, {
                "two_way": True, "ssrc_policy": "strict", "max_ssrc_violations": 2})

        def stop(then: Callable[[], None]) -> None:
            m, p, b = stop_path(app, stream, ssrc)
            api.request(m, p, b, lambda reply, _s: (
                then() if reply.get("code") == 0 else failed(f"{kind}: stop {reply}")
            ))

        def started(reply: dict[str, Any], _s: float) -> None:
            if kind == "malformed-call":
                if reply.get("code") == -300:
                    finish()
                else:
                    failed(f"malformed-call answered {reply}")
                return
            if reply.get("code") != 0:
                failed(f"{kind}: start {reply.get('msg')}")
                return
            port = int(reply["local_port"])
            if kind in FAULT_KINDS:
                fault(kind, port, ssrc)
            elif kind == "stop-before-connect":
                stop(finish)
            elif kind == "timeout":
                finish()
            elif kind == "connect-after-stop":
                def dial() -> None:
                    device = Device(loop, port, sampled=False)
                    device.on_closed = lambda d: finish()  # refused: what we want
                    device.on_connected = lambda d: (d.close(), failed(
                        f"connect-after-stop: port {port} accepted a device after stop"))
                    device.connect()
                stop(dial)
            else:
                device = Device(loop, port, sampled=False)

                def first(dev: Device) -> None:
                    if kind == "connect-then-stop":
                        stop(lambda: (dev.close(), finish()))
                    else:
                        dev.close(reset=kind == "device-resets")
                        finish()

                device.on_first_packet = first
                device.on_closed = lambda d: None if d.bytes else failed(
                    f"{kind}: device got nothing ({d.failed or 'closed'})")
                device.connect()

        api.request(method, path, body, started)

    def fault(kind: str, port: int, ssrc: int) -> None:
        """A misbehaving device; done when the service has closed its connection."""
        if kind == "stops-reading":
            stuck = Device(loop, port, sampled=False, rcvbuf=2048)
            deadline = time.monotonic() + 120

            def check() -> None:
                if stuck.sock is None and not stuck.closed_by_peer:
                    failed(f"stops-reading: {stuck.failed}")
                    return
                if stuck.connected:
                    stuck.drain()  # reads only to see the close; the buffers are long full
                if stuck.closed_by_peer:
                    finish()
                elif time.monotonic() > deadline:
                    stuck.close()
                    failed("stops-reading: the service kept a stuck device for 120 s")
                else:
                    loop.call_later(5 if stuck.connected else 0.2, check)

            stuck.connect()
            loop.call_later(10, check)  # the device reads nothing for 10 s first
            return
        device = Device(loop, port, sampled=False)

        def first(dev: Device) -> None:
            if kind == "two-way-garbage":
                dev.send(b"\x00\x07\x00" + os.urandom(64))
            elif kind == "oversized-frame":
                dev.send(device_rtp(0, ssrc) + b"\xff\xf0" + b"\x80" * 100)
            elif kind == "wrong-ssrc":
                dev.send(device_rtp(0, ssrc + 1) + device_rtp(1, ssrc + 2))
            elif kind == "connects-twice":
                second = Device(loop, port, sampled=False)
                second.on_first_packet = lambda d: (d.close(), dev.close(), failed(
                    f"connects-twice: a second device on port {port} was fed audio"))

                def second_gone(d: Device) -> None:
                    dev.close()
                    finish()

                second.on_closed = second_gone  # refused, or accepted and closed at once
                second.connect()

        def closed(dev: Device) -> None:
            if kind == "connects-twice":
                return
            if dev.closed_by_peer:
                finish()
            else:
                failed(f"{kind}: {dev.failed or 'closed by us'}")

        device.on_first_packet = first
        device.on_closed = closed
        device.connect()
        if kind == "connects-twice":
            return

        def overdue() -> None:
            if device.sock is not None:
                device.close()
                failed(f"{kind}: the service kept the device for 30 s")

        loop.call_later(30, overdue)

    for _ in range(min(window, total)):
        begin()
    complete = loop.run_until(
        lambda: state["done"] >= state["issued"] and (
            state["issued"] >= total or time.monotonic() >= issue_until),
        began + job.get("max_seconds", 1800))
    seconds = time.monotonic() - began
    return {
        "mode": "churn",
        "lifecycles": total,
        "done": state["done"],
        "complete": complete,
        "failed": state["failed"],
        "problems": problems,
        "kinds": counts,
        "seconds": round(seconds, 1),
        "lifecycles_per_second": round(state["done"] / seconds, 1),
    }


def main() -> None:
    argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="The job is one JSON object on standard input (see the module's docstring).",
    ).parse_args()
    job = json.loads(sys.stdin.read())
    modes = {"stream": mode_stream, "setup": mode_setup, "churn": mode_churn}
    report = modes[job["mode"]](job)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
