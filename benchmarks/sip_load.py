"""SIP signalling load: registrations, keepalives, broadcast set-up and a flooding device.

The service is the real ``twistd -n gbtalk --sip udp:PORT`` (benchlib.ServiceProcess,
pinned to its own core, loopback only).  This process is the load generator: its devices
are plain UDP sockets (one SIP and one RTP socket per device) speaking through our own
sans-I/O SIP layer (``gb28181talk.sip.message`` to build and parse, ``digest.DigestClient``
to answer the registrar's challenges).  A device answers ``Notify/Broadcast`` with 200 and
``Response/Broadcast`` OK, then INVITEs with a UDP (``RTP/AVP``) offer whose ``y=`` is its
own SSRC; its RTP socket's kernel receive timestamps (``SO_TIMESTAMPNS``) time the first
packet and the gaps, so this process's own scheduling does not enter the figures.

Phases, each bounded: (a) registrations per second with digest (401 then 200 each);
(b) the registered devices keep alive at a 60 s interval (keepalives spread so the
aggregate rate is N/60 per second): service CPU from /proc, beside the same span idle;
(c) broadcast set-up per second and POST-to-first-RTP latency (one device per POST,
a few POSTs at a time; each device hangs up at its first packet); (d) one POST to
``--fanout`` devices: time until the POST's results and until every first packet;
(e) ``--healthy`` streaming sessions' p99 packet gap, with and without a device (a child
process of this script, ``--flood``) flooding REGISTER and MESSAGE as fast as it can,
interleaved twice.  Results: a table and benchmarks/results/sip_load.json.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import os
import re
import runpy
import selectors
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from benchlib import (
    Api,
    ProcSampler,
    ServiceProcess,
    other_cpus,
    pin,
    pin_self_away_from_service,
    print_table,
    summary,
    write_result,
)

from gb28181talk.sip.digest import DigestClient
from gb28181talk.sip.message import (
    SipRequest,
    SipResponse,
    build,
    parse_datagram,
    request,
    response_for,
)

PLATFORM_ID = "34020000002000000001"
DOMAIN = "3402000000"
PASSWORD = "12345678"
MANSCDP = "Application/MANSCDP+xml"
HOST = "127.0.0.1"
T1 = 0.5
"""RFC 3261's T1: the device's first retransmission interval (a UDP request unanswered)."""
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_SN = re.compile(rb"<SN>\s*(\d+)\s*</SN>")
_CMD = re.compile(rb"<CmdType>\s*(\w+)\s*</CmdType>")
_ROOT = re.compile(rb"<(Notify|Query|Control|Response)>")


def device_id(index: int) -> str:
    """The 20-digit ID of device ``index`` (type 132: a camera)."""
    return f"{DOMAIN}132{index:07d}"


def _branch() -> str:
    return "z9hG4bK" + os.urandom(6).hex()


# --------------------------------------------------------------------------- one device


@dataclass
class Device:
    """One simulated device: its SIP socket, digest client, calls and what it has seen."""

    index: int
    sock: socket.socket
    digest: DigestClient
    tag: str = field(default_factory=lambda: os.urandom(4).hex())
    cseq: int = 0
    register_call: str = ""
    register_started: float = 0.0
    registered_at: float = 0.0
    challenged: int = 0
    rtp: socket.socket | None = None
    ssrc: str = ""
    invite_call: str = ""
    invite_headers: tuple[str, str] = ("", "")
    """(request URI, To with tag) of the confirmed broadcast dialog."""
    bye_at_first: bool = True
    first_rtp: float = 0.0
    arrivals: list[float] | None = None
    notify_sns: set[str] = field(default_factory=set)

    @property
    def id(self) -> str:
        return device_id(self.index)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])


class LoadGenerator:
    """Many devices on UDP sockets, one selector loop with timers; no threads but HTTP."""

    def __init__(self, sip_port: int, count: int, password: str = PASSWORD) -> None:
        self.platform = (HOST, sip_port)
        self.selector = selectors.DefaultSelector()
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.devices: list[Device] = []
        self.by_call: dict[str, Device] = {}
        self.counts: dict[str, int] = {}
        self.retransmit = True
        self.pending: dict[tuple[str, int], bytes] = {}
        for index in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((HOST, 0))
            sock.setblocking(False)
            device = Device(index, sock, DigestClient(device_id(index), password))
            self.devices.append(device)
            self.selector.register(sock, selectors.EVENT_READ, (self._sip_readable, device))

    def close(self) -> None:
        for device in self.devices:
            device.sock.close()
            if device.rtp is not None:
                device.rtp.close()
        self.selector.close()

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    # ------------------------------------------------------------------ the loop

    def later(self, delay: float, action: Callable[[], None]) -> None:
        heapq.heappush(self.timers, (time.monotonic() + delay, next(self._seq), action))

    def pump(self, done: Callable[[], bool], timeout: float) -> bool:
        """Serve sockets and timers until ``done()`` or ``timeout`` seconds; whether done."""
        deadline = time.monotonic() + timeout
        while True:
            if done():
                return True
            current = time.monotonic()
            if current >= deadline:
                return False
            while self.timers and self.timers[0][0] <= current:
                heapq.heappop(self.timers)[2]()
            wait = min(deadline - current, 0.01)
            if self.timers:
                wait = max(0.0, min(wait, self.timers[0][0] - current))
            for key, _ in self.selector.select(wait):
                handler, device = key.data
                handler(device)

    def send(self, device: Device, message: SipRequest | SipResponse) -> None:
        data = build(message)
        self._send_bytes(device, data)
        if self.retransmit and isinstance(message, SipRequest) and message.method != "ACK":
            key = (message.call_id, message.cseq.number)
            self.pending[key] = data
            self.later(T1, lambda: self._again(device, key, data, T1))

    def _send_bytes(self, device: Device, data: bytes) -> None:
        try:
            device.sock.sendto(data, self.platform)
        except OSError:
            self.count("send_error")

    def _again(self, device: Device, key: tuple[str, int], data: bytes, interval: float) -> None:
        """Timer E/A as a device runs them: resend until any answer, give up after 7 tries."""
        if self.pending.get(key) is not data:
            return
        if interval > 16 * T1:
            del self.pending[key]
            self.count("request_timeout")
            return
        self.count("retransmitted")
        self._send_bytes(device, data)
        self.later(min(interval * 2, 4.0), lambda: self._again(device, key, data, interval * 2))

    # ------------------------------------------------------------------ requests we send

    def _headers(self, device: Device, method: str, call_id: str,
                 to: str) -> list[tuple[str, str]]:
        device.cseq += 1
        return [
            ("Via", f"SIP/2.0/UDP {HOST}:{device.port};rport;branch={_branch()}"),
            ("From", f"<sip:{device.id}@{DOMAIN}>;tag={device.tag}"),
            ("To", to),
            ("Call-ID", call_id),
            ("CSeq", f"{device.cseq} {method}"),
            ("Max-Forwards", "70"),
        ]

    def register(self, device: Device, authorization: str | None = None) -> None:
        """REGISTER (the first without credentials: the registrar answers 401)."""
        if not device.register_call:
            device.register_call = f"reg-{device.index}-{os.urandom(4).hex()}"
            device.register_started = time.time()
            self.by_call[device.register_call] = device
        uri = f"sip:{PLATFORM_ID}@{DOMAIN}"
        headers = self._headers(device, "REGISTER", device.register_call,
                                f"<sip:{device.id}@{DOMAIN}>")
        headers += [("Contact", f"<sip:{device.id}@{HOST}:{device.port}>"), ("Expires", "3600")]
        if authorization is not None:
            headers.append(("Authorization", authorization))
        self.send(device, request("REGISTER", uri, headers))

    def message(self, device: Device, body: bytes, kind: str) -> None:
        """A MANSCDP MESSAGE to the platform (its own Call-ID, answered 200)."""
        call_id = f"{kind}-{device.index}-{os.urandom(4).hex()}"
        self.by_call[call_id] = device
        headers = self._headers(device, "MESSAGE", call_id, f"<sip:{PLATFORM_ID}@{DOMAIN}>")
        headers.append(("Content-Type", MANSCDP))
        self.send(device, request("MESSAGE", f"sip:{PLATFORM_ID}@{DOMAIN}", headers, body))

    def keepalive(self, device: Device, sn: int) -> None:
        body = (f'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive'
                f"</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{device.id}</DeviceID>\r\n"
                "<Status>OK</Status>\r\n</Notify>\r\n")
        self.message(device, body.encode(), "ka")
        self.count("keepalive_sent")

    def invite(self, device: Device) -> None:
        """The broadcast INVITE with a UDP offer at the device's RTP socket."""
        if device.rtp is None:
            rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rtp.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
            rtp.bind((HOST, 0))
            rtp.setblocking(False)
            device.rtp = rtp
            device.ssrc = f"01{device.index:08d}"
            self.selector.register(rtp, selectors.EVENT_READ, (self._rtp_readable, device))
        device.invite_call = f"inv-{device.index}-{os.urandom(4).hex()}"
        device.first_rtp = 0.0
        self.by_call[device.invite_call] = device
        rtp_port = device.rtp.getsockname()[1]
        sdp = (f"v=0\r\no={device.id} 0 0 IN IP4 {HOST}\r\ns=Play\r\nc=IN IP4 {HOST}\r\n"
               f"t=0 0\r\nm=audio {rtp_port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
               f"a=recvonly\r\ny={device.ssrc}\r\nf=v/////a/1/8/1\r\n")
        headers = self._headers(device, "INVITE", device.invite_call,
                                f"<sip:{PLATFORM_ID}@{DOMAIN}>")
        headers += [
            ("Contact", f"<sip:{device.id}@{HOST}:{device.port}>"),
            ("Subject", f"{device.id}:{device.ssrc},{PLATFORM_ID}:0"),
            ("Content-Type", "application/sdp"),
        ]
        self.send(device, request("INVITE", f"sip:{PLATFORM_ID}@{DOMAIN}", headers,
                                  sdp.encode()))
        self.count("invite_sent")

    def in_dialog(self, device: Device, method: str) -> None:
        """ACK or BYE in the broadcast dialog (request URI: the platform's Contact)."""
        uri, to = device.invite_headers
        headers = self._headers(device, method, device.invite_call, to)
        if method == "ACK":  # the ACK of a 2xx has the INVITE's CSeq number
            device.cseq -= 1
            headers[4] = ("CSeq", f"{device.cseq} ACK")
        self.send(device, request(method, uri, headers))

    def hang_up(self, device: Device) -> None:
        if device.invite_call and device.invite_headers[0]:
            self.in_dialog(device, "BYE")
            self.count("bye_sent")

    # ------------------------------------------------------------------ what arrives

    def _sip_readable(self, device: Device) -> None:
        while True:
            try:
                data = device.sock.recv(65535)
            except BlockingIOError:
                return
            except OSError:
                return
            try:
                message = parse_datagram(data)
            except Exception:  # a load generator counts, never stops
                self.count("unparsable")
                continue
            if isinstance(message, SipResponse):
                self._response(device, message)
            elif isinstance(message, SipRequest):
                self._request(device, message)

    def _response(self, device: Device, resp: SipResponse) -> None:
        method = resp.cseq.method
        self.pending.pop((resp.call_id, resp.cseq.number), None)
        if method == "REGISTER":
            if resp.status == 401 and device.challenged < 3:
                device.challenged += 1
                challenge = resp.header("WWW-Authenticate") or ""
                self.register(device, device.digest.authorization(
                    challenge, "REGISTER", f"sip:{PLATFORM_ID}@{DOMAIN}"))
            elif resp.status == 200 and not device.registered_at:
                device.registered_at = time.time()
                self.count("registered")
            elif resp.status >= 300:
                self.count(f"register_{resp.status}")
        elif method == "MESSAGE":
            kind = resp.call_id.split("-", 1)[0]
            self.count(f"{kind}_{resp.status}")
            self.by_call.pop(resp.call_id, None)
            if kind == "bcr" and resp.status == 200:
                self.invite(device)
        elif method == "INVITE" and resp.call_id == device.invite_call:
            if resp.status == 200:
                contacts = resp.contacts
                uri = contacts[0].uri if contacts else f"sip:{PLATFORM_ID}@{HOST}"
                device.invite_headers = (uri, resp.header("To") or "")
                self.in_dialog(device, "ACK")
                self.count("invite_200")
            elif resp.status >= 300:
                self.count(f"invite_{resp.status}")
        elif method == "BYE":
            self.count(f"bye_{resp.status}")

    def _request(self, device: Device, req: SipRequest) -> None:
        self.send(device, response_for(req, 200, to_tag=device.tag))
        if req.method == "BYE":
            self.count("bye_received")
            if req.call_id == device.invite_call:
                device.invite_headers = ("", "")
            return
        if req.method != "MESSAGE":
            return
        command = _CMD.search(req.body)
        root = _ROOT.search(req.body)
        if command is None or root is None:
            return
        self.count(f"{root.group(1).decode()}_{command.group(1).decode()}_received")
        if root.group(1) == b"Notify" and command.group(1) == b"Broadcast":
            sn_match = _SN.search(req.body)
            sn = sn_match.group(1).decode() if sn_match else "0"
            if sn in device.notify_sns:
                return  # a retransmitted Notify: answered again, acted on once
            device.notify_sns.add(sn)
            body = (f'<?xml version="1.0" encoding="GB2312"?>\r\n<Response>\r\n<CmdType>'
                    f"Broadcast</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{device.id}</DeviceID>"
                    "\r\n<Result>OK</Result>\r\n</Response>\r\n")
            self.message(device, body.encode(), "bcr")

    def _rtp_readable(self, device: Device) -> None:
        assert device.rtp is not None
        while True:
            try:
                _data, ancillary, _flags, _addr = device.rtp.recvmsg(2048, 64)
            except (BlockingIOError, OSError):
                return
            stamp = time.time()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                    seconds, nanos = struct.unpack("qq", value[:16])
                    stamp = seconds + nanos / 1e9
            if not device.first_rtp:
                device.first_rtp = stamp
                if device.bye_at_first:
                    self.hang_up(device)
            if device.arrivals is not None:
                device.arrivals.append(stamp)


# --------------------------------------------------------------------------- phases


def phase_register(gen: LoadGenerator, window: int, timeout: float) -> dict[str, Any]:
    """(a) Every device registers (401, then digest, then 200), ``window`` at a time."""
    pending = iter(gen.devices)
    started = time.time()

    def in_flight() -> int:
        return sum(1 for d in gen.devices if d.register_call and not d.registered_at)

    def top_up() -> None:
        for _ in range(window - in_flight()):
            device = next(pending, None)
            if device is None:
                return
            gen.register(device)
        gen.later(0.002, top_up)

    top_up()
    gen.pump(lambda: all(d.registered_at for d in gen.devices), timeout)
    done = [d for d in gen.devices if d.registered_at]
    end = max((d.registered_at for d in done), default=started)
    latencies = [(d.registered_at - d.register_started) * 1000 for d in done]
    return {
        "devices": len(gen.devices), "registered": len(done), "window": window,
        "seconds": round(end - started, 3),
        "per_second": round(len(done) / (end - started), 1) if end > started else 0.0,
        "latency_ms": summary(latencies, 2),
    }


def start_keepalives(gen: LoadGenerator, interval: float) -> None:
    """Each device keeps alive every ``interval`` s, the devices spread evenly over it."""
    sn = itertools.count(1)

    def every(device: Device) -> Callable[[], None]:
        def send() -> None:
            gen.keepalive(device, next(sn))
            gen.later(interval, send)
        return send

    for position, device in enumerate(gen.devices):
        gen.later(interval * position / len(gen.devices), every(device))


def cpu_window(gen: LoadGenerator, sampler: ProcSampler, seconds: float) -> dict[str, Any]:
    start = time.monotonic()
    before = dict(gen.counts)
    gen.pump(lambda: False, seconds)
    figures = sampler.window(start, time.monotonic())
    sent = gen.counts.get("keepalive_sent", 0) - before.get("keepalive_sent", 0)
    answered = gen.counts.get("ka_200", 0) - before.get("ka_200", 0)
    return {"seconds": seconds, "keepalives_sent": sent, "keepalives_answered": answered,
            "keepalives_per_second": round(sent / seconds, 1), **figures}


class Poster:
    """POST /api/broadcast from a few threads (each its own keep-alive connection)."""

    def __init__(self, api_port: int, threads: int) -> None:
        self.api_port = api_port
        self.pool = ThreadPoolExecutor(threads)
        self.apis: dict[int, Api] = {}

    def _one(self, body: dict[str, Any]) -> tuple[float, float, dict[str, Any]]:
        import threading

        key = threading.get_ident()
        if key not in self.apis:
            self.apis[key] = Api(HOST, self.api_port, timeout=60)
        started = time.time()
        reply = self.apis[key].call("POST", "/api/broadcast", body)
        return started, time.time(), reply

    def post(self, device_ids: list[str]) -> Future[tuple[float, float, dict[str, Any]]]:
        return self.pool.submit(self._one, {"device_ids": device_ids, "app": "live",
                                            "stream": "tone"})

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        for api in self.apis.values():
            api.close()


def _oks(reply: dict[str, Any]) -> int:
    return sum(1 for r in reply.get("results", []) if r.get("result") == "OK")


def settle(gen: LoadGenerator, api: Api, timeout: float = 15.0) -> int:
    """Pump until the service has no sessions left (bounded); the sessions left."""
    deadline = time.monotonic() + timeout
    left = -1
    while time.monotonic() < deadline:
        gen.pump(lambda: False, 0.3)
        sessions = api.call("GET", "/api/sessions")
        data = sessions.get("data", sessions)
        if isinstance(data, dict):
            data = data.get("sessions", [])
        left = len(data) if isinstance(data, list) else -1
        if left == 0:
            return 0
    return left


def phase_setup_rate(gen: LoadGenerator, poster: Poster, setups: int,
                     concurrency: int, timeout: float) -> dict[str, Any]:
    """(c) ``setups`` broadcasts of one device each, ``concurrency`` POSTs at a time."""
    devices = gen.devices[:setups]
    waiting: list[tuple[Device, Future[Any]]] = []
    queue = iter(devices)
    results: list[tuple[Device, float, float, dict[str, Any]]] = []

    def top_up() -> None:
        for device, future in list(waiting):
            if future.done():
                waiting.remove((device, future))
                try:
                    started, ended, reply = future.result()
                except Exception as error:
                    reply, started, ended = {"error": str(error)}, 0.0, 0.0
                results.append((device, started, ended, reply))
        while len(waiting) < concurrency:
            device = next(queue, None)
            if device is None:
                break
            device.bye_at_first = True
            waiting.append((device, poster.post([device.id])))
        gen.later(0.001, top_up)

    top_up()
    gen.pump(lambda: len(results) == len(devices)
             and all(d.first_rtp or not _oks(r) for d, _, _, r in results), timeout)
    oks = [(d, s, e, r) for d, s, e, r in results if _oks(r)]
    first = [(d.first_rtp - s) * 1000 for d, s, _, _ in oks if d.first_rtp]
    api_ms = [(e - s) * 1000 for _, s, e, _ in oks]
    span = (max((e for _, _, e, _ in results), default=0.0)
            - min((s for _, s, _, _ in results if s), default=0.0))
    return {
        "setups": setups, "concurrency": concurrency, "ok": len(oks),
        "first_packets": len(first), "seconds": round(span, 3),
        "per_second": round(len(oks) / span, 1) if span > 0 else 0.0,
        "post_to_result_ms": summary(api_ms, 2),
        "post_to_first_rtp_ms": summary(first, 2),
        "failures": [r for _, _, _, r in results if not _oks(r)][:3],
    }


def phase_fanout(gen: LoadGenerator, poster: Poster, count: int,
                 timeout: float) -> dict[str, Any]:
    """(d) One POST /api/broadcast to ``count`` devices at once."""
    devices = gen.devices[:count]
    for device in devices:
        device.bye_at_first = True
        device.first_rtp = 0.0
    resent = gen.counts.get("retransmitted", 0)
    future = poster.post([d.id for d in devices])
    gen.pump(lambda: future.done() and all(d.first_rtp for d in devices), timeout)
    if not future.done():
        gen.pump(future.done, timeout)
    started, ended, reply = future.result()
    firsts = [(d.first_rtp - started) * 1000 for d in devices if d.first_rtp]
    return {
        "devices": count, "ok": _oks(reply), "first_packets": len(firsts),
        "all_results_ms": round((ended - started) * 1000, 1),
        "all_first_rtp_ms": round(max(firsts, default=0.0), 1),
        "first_rtp_ms": summary(firsts, 1),
        "failures": [r for r in reply.get("results", []) if r.get("result") != "OK"][:3],
        "device_retransmissions": gen.counts.get("retransmitted", 0) - resent,
    }


def _gaps(devices: list[Device], start: float, end: float) -> list[float]:
    gaps: list[float] = []
    for device in devices:
        inside = [t for t in device.arrivals or () if start <= t <= end]
        gaps.extend((b - a) * 1000 for a, b in itertools.pairwise(inside))
    return gaps


def phase_flood(gen: LoadGenerator, poster: Poster, sip_port: int, healthy: int,
                window: float, flooder_index: int) -> dict[str, Any]:
    """(e) ``healthy`` sessions streaming; their gaps without and with a flooding device."""
    devices = gen.devices[:healthy]
    for device in devices:
        device.bye_at_first = False
        device.first_rtp = 0.0
        device.arrivals = []
    future = poster.post([d.id for d in devices])
    gen.pump(lambda: future.done() and all(d.first_rtp for d in devices), 60)
    streaming = _oks(future.result()[2]) if future.done() else 0
    gen.pump(lambda: False, 1.0)
    rounds: list[dict[str, Any]] = []
    for round_index, flood in enumerate((False, True, False, True)):
        child = None
        flood_report: dict[str, Any] = {}
        if flood:
            child = subprocess.Popen(
                [sys.executable, __file__, "--flood", "--sip-port", str(sip_port),
                 "--flood-seconds", f"{window + 1:g}", "--flood-index", str(flooder_index)],
                stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                preexec_fn=lambda: pin(other_cpus()))
            assert child.stdout is not None
            child.stdout.readline()  # registered: flooding from now on
        start = time.time()
        gen.pump(lambda: False, window)
        end = time.time()
        if child is not None:
            assert child.stdout is not None
            try:
                flood_report = json.loads(child.stdout.readline() or "{}")
            finally:
                child.wait(30)
        gaps = _gaps(devices, start, end)
        rounds.append({"round": round_index + 1, "flood": flood, "gaps": len(gaps),
                       "gap_ms": summary(gaps, 2), **({"flooder": flood_report} if flood else {})})
        for device in devices:
            device.arrivals = []
    for device in devices:
        device.arrivals = None
        gen.hang_up(device)
    return {"healthy": healthy, "streaming": streaming, "window_s": window, "rounds": rounds}


# --------------------------------------------------------------------------- the flooder


def flood(sip_port: int, seconds: float, index: int) -> None:
    """One device: registers with digest, then REGISTER/MESSAGE as fast as it can."""
    gen = LoadGenerator(sip_port, 0)
    gen.retransmit = False
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    device = Device(index, sock, DigestClient(device_id(index), PASSWORD))
    gen.devices.append(device)
    gen.selector.register(sock, selectors.EVENT_READ, (gen._sip_readable, device))
    gen.register(device)
    gen.pump(lambda: bool(device.registered_at), 10)
    print(json.dumps({"event": "flooding", "registered": bool(device.registered_at)}), flush=True)
    sent = answered = 0
    deadline = time.monotonic() + seconds
    sn = itertools.count(1)
    while time.monotonic() < deadline:
        for _ in range(20):
            device.register_call = ""  # a fresh REGISTER (401) then a keepalive (200)
            device.challenged = 3
            gen.register(device)
            gen.keepalive(device, next(sn))
            sent += 2
        try:
            while True:
                sock.recv(65535)
                answered += 1
        except (BlockingIOError, OSError):
            pass
    print(json.dumps({"sent": sent, "answers_read": answered,
                      "sent_per_second": round(sent / seconds)}), flush=True)
    gen.close()


# --------------------------------------------------------------------------- main


def run_twistd_with_udp_read_cap() -> None:
    """``--run-twistd BYTES TWISTD ARGS...``: twistd with ``udp.Port.maxThroughput`` = BYTES.

    An experiment without touching the service: how much a UDP socket reads per reactor
    turn (Twisted's default 256 KiB) is what lets a flood hold the reactor.
    """
    cap, twistd = int(sys.argv[2]), sys.argv[3]
    from twisted.internet import udp

    udp.Port.maxThroughput = cap
    sys.argv = [twistd, *sys.argv[4:]]
    runpy.run_path(twistd, run_name="__main__")


def main() -> None:
    """Run the phases against one service and print and write the figures."""
    if sys.argv[1:2] == ["--run-twistd"]:
        run_twistd_with_udp_read_cap()
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000, help="devices registered (a, b)")
    parser.add_argument("--register-window", type=int, default=50,
                        help="registrations in flight at once")
    parser.add_argument("--keepalive-interval", type=float, default=60.0)
    parser.add_argument("--keepalive-seconds", type=float, default=30.0)
    parser.add_argument("--setups", type=int, default=200, help="broadcasts in (c)")
    parser.add_argument("--setup-concurrency", type=int, default=4)
    parser.add_argument("--fanout", type=int, default=500, help="devices of one POST (d)")
    parser.add_argument("--healthy", type=int, default=100, help="streaming sessions (e)")
    parser.add_argument("--flood-window", type=float, default=6.0, help="seconds per round")
    parser.add_argument("--udp-read-cap", type=int, default=0,
                        help="experiment: the service's UDP sockets read at most this many "
                             "bytes per reactor turn (Twisted's default: 262144)")
    parser.add_argument("--name", default="",
                        help="results file benchmarks/results/NAME.json (default: sip_load, "
                             "or sip_load-udpcapBYTES with --udp-read-cap)")
    parser.add_argument("--flood", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sip-port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--flood-seconds", type=float, default=6.0, help=argparse.SUPPRESS)
    parser.add_argument("--flood-index", type=int, default=9999999, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood:
        flood(args.sip_port, args.flood_seconds, args.flood_index)
        return
    pin_self_away_from_service()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((HOST, 0))
        sip_port = int(probe.getsockname()[1])
    prefix = ([sys.executable, __file__, "--run-twistd", str(args.udp_read_cap)]
              if args.udp_read_cap else [])
    service = ServiceProcess(
        log_name="sip_load", probe_gc=False, python_prefix=prefix,
        extra=["--sip", f"udp:{sip_port}:interface={HOST}", "--sip-id", PLATFORM_ID,
               "--sip-domain", DOMAIN, "--sip-password", PASSWORD, "--sip-advertise", HOST],
    )
    service.start()
    sampler = ProcSampler(service.pid, interval=0.5)
    sampler.start()
    gen = LoadGenerator(sip_port, max(args.devices, args.fanout, args.setups, args.healthy))
    poster = Poster(service.api_port, args.setup_concurrency)
    report: dict[str, Any] = {"args": vars(args)}
    try:
        assert service.api is not None
        service.api.call("POST", "/api/sources", {"app": "live", "stream": "tone",
                                                  "kind": "tone", "frequency": 800})
        report["register"] = phase_register(gen, args.register_window, 120)
        gen.pump(lambda: False, 2.0)  # the catalog queries after registering
        report["idle"] = cpu_window(gen, sampler, min(10.0, args.keepalive_seconds))
        start_keepalives(gen, args.keepalive_interval)
        report["keepalive"] = cpu_window(gen, sampler, args.keepalive_seconds)
        report["setup"] = phase_setup_rate(gen, poster, args.setups,
                                           args.setup_concurrency, 120)
        report["setup"]["sessions_left"] = settle(gen, service.api)
        report["fanout"] = phase_fanout(gen, poster, args.fanout, 120)
        report["fanout"]["sessions_left"] = settle(gen, service.api)
        report["flood"] = phase_flood(gen, poster, sip_port, args.healthy, args.flood_window,
                                      flooder_index=len(gen.devices) + 1)
        report["flood"]["sessions_left"] = settle(gen, service.api)
        report["counts"] = dict(sorted(gen.counts.items()))
    finally:
        poster.close()
        sampler.stop()
        gen.close()
        report["service_exit"] = service.stop()
    show(report)
    name = args.name or (f"sip_load-udpcap{args.udp_read_cap}" if args.udp_read_cap
                         else "sip_load")
    print(f"wrote {write_result(name, report)}")


def show(report: dict[str, Any]) -> None:
    """The figures as one table."""
    reg, idle, ka = report["register"], report["idle"], report["keepalive"]
    setup, fan, fl = report["setup"], report["fanout"], report["flood"]
    rows: list[list[Any]] = [
        ["(a) registrations/s with digest", reg["per_second"],
         f"{reg['registered']}/{reg['devices']} in {reg['seconds']} s, "
         f"{reg['window']} in flight, latency p99 {reg['latency_ms']['p99']} ms"],
        ["(b) service CPU %, idle registered", idle["cpu_percent"]["mean"],
         f"{report['args']['devices']} devices, {idle['seconds']} s"],
        ["(b) service CPU %, keepalives", ka["cpu_percent"]["mean"],
         f"{ka['keepalives_per_second']}/s ({ka['keepalives_answered']}/"
         f"{ka['keepalives_sent']} answered), p99 of 0.5 s samples "
         f"{ka['cpu_percent']['p99']}"],
        ["(c) broadcast set-ups/s", setup["per_second"],
         f"{setup['ok']}/{setup['setups']} OK, {setup['concurrency']} POSTs at a time"],
        ["(c) POST -> first RTP median ms", setup["post_to_first_rtp_ms"]["median"],
         f"p99 {setup['post_to_first_rtp_ms']['p99']} ms; POST -> result median "
         f"{setup['post_to_result_ms']['median']} ms"],
        [f"(d) one POST to {fan['devices']}: results ms", fan["all_results_ms"],
         f"{fan['ok']} OK; the devices resent {fan['device_retransmissions']} requests"],
        [f"(d) one POST to {fan['devices']}: all first RTP ms", fan["all_first_rtp_ms"],
         f"{fan['first_packets']} devices heard; median {fan['first_rtp_ms']['median']} ms"],
    ]
    for item in fl["rounds"]:
        extra = ""
        if item["flood"]:
            extra = f", flooder sent {item.get('flooder', {}).get('sent_per_second', '?')}/s"
        rows.append([f"(e) round {item['round']} {'flood' if item['flood'] else 'quiet'}: "
                     f"p99 gap ms", item["gap_ms"]["p99"],
                     f"{fl['streaming']} sessions, max {item['gap_ms']['max']} ms, "
                     f"median {item['gap_ms']['median']} ms{extra}"])
    print_table(["figure", "value", "notes"], rows)


if __name__ == "__main__":
    main()
