"""The hostile clients of benchmarks/attackers.py, one kind per run, each bounded in count and time.

Run as a child process (pinned off the service's core) with one JSON job on standard
input: ``{"kind", "api": "host:port", "secret", "seconds", "source": [app, stream],
"ssrc", ...}``; it attacks for at most ``seconds`` (a few kinds stop sooner, once their
count is done), cleans up what it created through the API, and prints one JSON report of
what it saw: the service's answers, close codes, bytes accepted.  The kinds are issue 12's
attackers:

``pcma-flood``    a two-way device sending valid PCMA as fast as the socket takes it
                  (item 2); the report has the WAV the recorder wrote, its audio seconds
                  against the wall seconds of the flood;
``tiny-frames``   a two-way device sending 1-byte RFC 4571 frames as fast as it can (item 3);
``ws-endless``    a WebSocket pusher sending one message that never ends (continuation
                  frames), again on a new connection each time it is closed (item 4);
``ws-big``        six 30 MB WebSocket messages, one connection each (item 4);
``paused-pusher`` a pusher the service has paused hangs up, then a new pusher asks for the
                  source at once: accepted (101) or 409 (item 5);
``wav-loads``     three concurrent loads of large WAV files as file sources, then deleted
                  (item 7);
``http-body``     1 GiB bodies without the secret, by Content-Length and chunked (item 6);
``http-json``     JSON nested 100,000 deep, lone surrogates in a text field and in the
                  secret, a query string over 16 KiB (items 9, 8, 12a), in turn;
``http-benign``   not an attacker: harmless API calls one at a time as fast as answered.

The device side uses the package's device core (`DeviceVoice` packetizes the flood).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import select
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchlib import summary

from gb28181talk.device.voice import DeviceVoice

CHUNK = 64 * 1024


# --------------------------------------------------------------------------- HTTP


class Http:
    """A blocking keep-alive HTTP client that returns (status, JSON or None) per call."""

    def __init__(self, address: str, secret: str, timeout: float = 60.0) -> None:
        host, _, port = address.rpartition(":")
        self.host, self.port, self.secret, self.timeout = host, int(port), secret, timeout
        self._connection: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
             secret: bool = True) -> tuple[int, Any]:
        """One request (the secret in the query unless ``secret`` is False)."""
        if secret:
            path += ("&" if "?" in path else "?") + f"secret={self.secret}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                            else None)
        headers = {"content-type": "application/json"} if data is not None else {}
        for attempt in range(2):
            if self._connection is None:
                self._connection = http.client.HTTPConnection(self.host, self.port,
                                                              timeout=self.timeout)
            try:
                self._connection.request(method, path, body=data, headers=headers)
                response = self._connection.getresponse()
                content = response.read()
                if response.getheader("connection", "").lower() == "close":
                    self.close()
                try:
                    return response.status, json.loads(content)
                except ValueError:
                    return response.status, None
            except (http.client.HTTPException, ConnectionError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def api_of(job: dict[str, Any]) -> Http:
    return Http(job["api"], job["secret"])


def start_session(api: Http, job: dict[str, Any], app: str, stream: str, ssrc: int,
                  **extra: Any) -> tuple[str, int]:
    """A talk session through the native API; returns (its id, its talk port)."""
    status, reply = api.call("POST", "/api/sessions", {"app": app, "stream": stream,
                                                       "ssrc": ssrc, **extra})
    if not reply or reply.get("code") != 0:
        raise RuntimeError(f"cannot start a session on {app}/{stream}: {status} {reply}")
    return str(reply["session"]["id"]), int(reply["local_port"])


def end_session(api: Http, session_id: str) -> dict[str, Any]:
    """The session's last view: stopped now if it still lives, else what ended it."""
    status, reply = api.call("GET", f"/api/sessions/{session_id}")
    if status == 200 and reply and reply.get("code") == 0:
        _, stopped = api.call("DELETE", f"/api/sessions/{session_id}")
        view = (stopped or {}).get("session", {})
        return {"ended_by": "us (it was still live)", "state": view.get("state"),
                "stats": view.get("stats")}
    return {"ended_by": "the service", "answer": status}


def connect(port: int, host: str = "127.0.0.1") -> socket.socket:
    """A device's connection to its talk port, non-blocking once connected."""
    sock = socket.create_connection((host, port), timeout=5)
    sock.setblocking(False)
    return sock


# --------------------------------------------------------------------------- devices


def flood(sock: socket.socket, next_chunk: Callable[[], bytes], deadline: float,
          max_bytes: int) -> dict[str, Any]:
    """Send ``next_chunk()`` after chunk as fast as the socket takes it, reading and dropping
    what the service sends, until the deadline, ``max_bytes`` or the service closes."""
    sent = received = 0
    pending = memoryview(b"")
    began = time.monotonic()
    closed_after: float | None = None
    while time.monotonic() < deadline and sent < max_bytes:
        if not pending:
            pending = memoryview(next_chunk())
        readable, writable, _ = select.select([sock], [sock], [], 0.05)
        if readable:
            try:
                data = sock.recv(CHUNK)
            except BlockingIOError:
                data = b"-"
            except OSError:
                data = b""
            if not data:
                closed_after = time.monotonic() - began
                break
            received += len(data)
        if writable:
            try:
                count = sock.send(pending)
            except BlockingIOError:
                count = 0
            except OSError:
                closed_after = time.monotonic() - began
                break
            sent += count
            pending = pending[count:]
    return {"bytes_sent": sent, "bytes_heard": received,
            "seconds": round(time.monotonic() - began, 2),
            "closed_by_service_after_s": None if closed_after is None else round(closed_after, 2)}


def recording_of(record_dir: str, ssrc: int) -> dict[str, Any] | None:
    """The WAV the recorder wrote for ``ssrc`` (size, audio seconds), then deleted."""
    for _ in range(20):
        found = [path for path in Path(record_dir).glob(f"*-{ssrc:010d}-*.wav")]
        if found:
            break
        time.sleep(0.1)
    else:
        return None
    size = sum(path.stat().st_size for path in found)
    for path in found:
        path.unlink()
    return {"files": len(found), "bytes": size,
            "audio_seconds": round(max(0, size - 44 * len(found)) / 16000, 1)}


def device_attack(job: dict[str, Any], chunks: Callable[[int], Callable[[], bytes]]
                  ) -> dict[str, Any]:
    """Two-way sessions, one after another until the deadline (at most ``max_sessions``,
    0.1 s apart), each with a device sending ``chunks(ssrc)()`` as fast as the socket takes
    it; the recordings are measured and deleted as each session ends."""
    api, (app, stream) = api_of(job), job["source"]
    deadline = time.monotonic() + job["seconds"]
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline and len(runs) < job.get("max_sessions", 100):
        if runs:
            time.sleep(0.1)
        ssrc = job["ssrc"] + len(runs)
        session_id, port = start_session(api, job, app, stream, ssrc, two_way=True)
        sock = connect(port)
        sent = flood(sock, chunks(ssrc), deadline, job.get("max_bytes", 2 * 1024**3))
        sock.close()
        time.sleep(0.1)
        runs.append({**sent, "session": end_session(api, session_id),
                     "recording": recording_of(job["record_dir"], ssrc)})
    wall = sum(run["seconds"] for run in runs)
    recorded = [run["recording"] for run in runs if run["recording"]]
    return {"sessions": len(runs), "bytes_sent": sum(run["bytes_sent"] for run in runs),
            "seconds": round(wall, 2),
            "closed_by_service": sum(run["closed_by_service_after_s"] is not None
                                     for run in runs),
            "recording": {"files": len(recorded),
                          "bytes": sum(r["bytes"] for r in recorded),
                          "audio_seconds": round(sum(r["audio_seconds"] for r in recorded), 1)}
            if recorded else None,
            "first": runs[:3]}


def pcma_flood(job: dict[str, Any]) -> dict[str, Any]:
    """A two-way device sending valid PCMA (RFC 4571 RTP) as fast as it can (item 2)."""
    silence = b"\xd5" * 160 * 400  # 400 packets (8 s of audio) per chunk

    def chunks(ssrc: int) -> Callable[[], bytes]:
        voice = DeviceVoice(ssrc)
        return lambda: voice.speak_g711(silence)

    report = device_attack(job, chunks)
    packets = report["bytes_sent"] // (2 + 12 + 160)
    wav = report["recording"]
    return {**report, "packets_sent": packets, "audio_seconds_sent": round(packets * 0.02, 1),
            "recorded_audio_per_wall_second": (round(wav["audio_seconds"] / report["seconds"], 2)
                                               if wav and report["seconds"] else None)}


def tiny_frames(job: dict[str, Any]) -> dict[str, Any]:
    """A two-way device sending 1-byte RFC 4571 frames as fast as it can (item 3)."""
    chunk = b"\x00\x01\x80" * (CHUNK // 3)
    report = device_attack(job, lambda _ssrc: lambda: chunk)
    return {**report, "frames_sent": report["bytes_sent"] // 3}


# --------------------------------------------------------------------------- WebSocket push


def ws_header(opcode: int, fin: bool, length: int) -> bytes:
    """A client frame's header with a zero masking key (so the payload goes unchanged)."""
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        head = bytes((first, 0x80 | length))
    elif length < 65536:
        head = bytes((first, 0x80 | 126)) + struct.pack("!H", length)
    else:
        head = bytes((first, 0x80 | 127)) + struct.pack("!Q", length)
    return head + b"\x00\x00\x00\x00"


def server_close_code(data: bytes) -> int | None:
    """The code of the first close frame in the server's (unmasked) frames, if any."""
    offset = 0
    while offset + 2 <= len(data):
        opcode, length = data[offset] & 0x0F, data[offset + 1] & 0x7F
        offset += 2
        if length == 126:
            length = struct.unpack_from("!H", data, offset)[0]
            offset += 2
        elif length == 127:
            length = struct.unpack_from("!Q", data, offset)[0]
            offset += 8
        payload = data[offset: offset + length]
        offset += length
        if opcode == 8:
            return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
    return None


class Pusher:
    """One WebSocket pusher on ``/api/push/{app}/{stream}``."""

    def __init__(self, job: dict[str, Any], app: str, stream: str) -> None:
        host, _, port = job["api"].rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((
            f"GET /api/push/{app}/{stream}?secret={job['secret']} HTTP/1.1\r\n"
            f"Host: {job['api']}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = self.sock.recv(CHUNK)
            if not data:
                break
            answer += data
        head, _, self.heard = answer.partition(b"\r\n\r\n")
        parts = head.split(b" ", 2)
        self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        self.sock.setblocking(False)

    def send_for(self, data: bytes, deadline: float) -> tuple[int, bool]:
        """Send ``data`` until done, closed or the deadline; (bytes sent, closed by service)."""
        view, sent = memoryview(data), 0
        while view and time.monotonic() < deadline:
            readable, writable, _ = select.select([self.sock], [self.sock], [], 0.05)
            if readable and not self._read():
                return sent, True
            if writable:
                try:
                    count = self.sock.send(view)
                except BlockingIOError:
                    continue
                except OSError:
                    return sent, True
                sent += count
                view = view[count:]
        return sent, False

    def _read(self) -> bool:
        """Read what the service sent; False once it closed."""
        try:
            data = self.sock.recv(CHUNK)
        except BlockingIOError:
            return True
        except OSError:
            return False
        self.heard += data
        return bool(data)

    def wait_closed(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            readable, _, _ = select.select([self.sock], [], [], 0.05)
            if readable and not self._read():
                return

    @property
    def close_code(self) -> int | None:
        return server_close_code(self.heard)

    def close(self) -> None:
        self.sock.close()


def push_source(api: Http, app: str, stream: str, **spec: Any) -> None:
    status, reply = api.call("POST", "/api/sources", {"app": app, "stream": stream,
                                                      "kind": "push", **spec})
    if not reply or reply.get("code") != 0:
        raise RuntimeError(f"cannot create push source {app}/{stream}: {status} {reply}")


def listened_push_source(api: Http, job: dict[str, Any], stream: str
                         ) -> tuple[str, socket.socket]:
    """A push source (``job["push_spec"]``) with a session and a device listening, since
    nobody reads a push source nobody listens to."""
    app = job["source"][0]
    push_source(api, app, stream, **job.get("push_spec", {}))
    session_id, port = start_session(api, job, app, stream, job["ssrc"])
    return session_id, connect(port)


def drain(sock: socket.socket) -> None:
    with contextlib.suppress(BlockingIOError, OSError):
        while sock.recv(CHUNK):
            pass


def ws_endless(job: dict[str, Any]) -> dict[str, Any]:
    """One message of continuation frames that never ends, repeated on a new connection."""
    api, app, stream = api_of(job), job["source"][0], f"endless{job['ssrc']}"
    session_id, device = listened_push_source(api, job, stream)
    deadline = time.monotonic() + job["seconds"]
    frame = b"\x00" * CHUNK
    attempts: list[dict[str, Any]] = []
    while time.monotonic() < deadline and len(attempts) < job.get("max_attempts", 200):
        pusher = Pusher(job, app, stream)
        began, total, closed = time.monotonic(), 0, False
        opcode = 2
        while not closed and time.monotonic() < deadline:
            sent, closed = pusher.send_for(ws_header(opcode, False, CHUNK) + frame,
                                           min(deadline, time.monotonic() + 1))
            total += sent
            opcode = 0
            drain(device)
        pusher.wait_closed(0.5)
        attempts.append({"status": pusher.status, "bytes_sent": total, "closed": closed,
                         "close_code": pusher.close_code,
                         "seconds": round(time.monotonic() - began, 2)})
        pusher.close()
        if pusher.status != 101:
            time.sleep(0.2)
    ended = end_session(api, session_id)
    device.close()
    api.call("DELETE", f"/api/sources/{app}/{stream}")
    return {"attempts": len(attempts), "bytes_sent": sum(a["bytes_sent"] for a in attempts),
            "close_codes": dict(Counter(str(a["close_code"]) for a in attempts)),
            "statuses": dict(Counter(str(a["status"]) for a in attempts)),
            "largest_sent_before_close": max((a["bytes_sent"] for a in attempts), default=0),
            "session": ended, "first": attempts[:3]}


def ws_big(job: dict[str, Any]) -> dict[str, Any]:
    """Six 30 MB messages, each on its own connection (closed or not)."""
    api, app, stream = api_of(job), job["source"][0], f"big{job['ssrc']}"
    session_id, device = listened_push_source(api, job, stream)
    deadline = time.monotonic() + job["seconds"]
    size = job.get("message_bytes", 30_000_000)
    payload = b"\x00" * size
    messages: list[dict[str, Any]] = []
    for _ in range(job.get("messages", 6)):
        if time.monotonic() >= deadline:
            break
        pusher = Pusher(job, app, stream)
        began = time.monotonic()
        sent, closed = pusher.send_for(ws_header(2, True, size) + payload,
                                       min(deadline, time.monotonic() + 5))
        drain(device)
        pusher.wait_closed(0.5)
        messages.append({"status": pusher.status, "bytes_sent": sent, "closed": closed,
                         "close_code": pusher.close_code,
                         "seconds": round(time.monotonic() - began, 2)})
        pusher.close()
    ended = end_session(api, session_id)
    device.close()
    api.call("DELETE", f"/api/sources/{app}/{stream}")
    return {"messages": messages, "session": ended,
            "close_codes": dict(Counter(str(m["close_code"]) for m in messages))}


def paused_pusher(job: dict[str, Any]) -> dict[str, Any]:
    """A pusher paused by a source nobody reads hangs up; does the next pusher get the source?"""
    api, app, stream = api_of(job), job["source"][0], f"paused{job['ssrc']}"
    push_source(api, app, stream)
    deadline = time.monotonic() + job["seconds"]
    cycles: list[dict[str, Any]] = []
    while time.monotonic() < deadline and len(cycles) < job.get("cycles", 8):
        first = Pusher(job, app, stream)
        # 8 kHz mono PCM16: 2 s of audio fills the default backlog; nobody reads it.
        sent, _ = first.send_for(ws_header(2, True, 48000) + b"\x00" * 48000,
                                 time.monotonic() + 1)
        time.sleep(0.2)
        first.close()
        hung_up = time.monotonic()
        answers = []
        accepted_after: float | None = None
        while time.monotonic() < min(deadline + 2, hung_up + 3):
            second = Pusher(job, app, stream)
            answers.append(second.status)
            second.close()
            if second.status == 101:
                accepted_after = time.monotonic() - hung_up
                break
            time.sleep(0.25)
        cycles.append({"first_status": first.status, "first_sent": sent, "answers": answers,
                       "accepted_after_s": None if accepted_after is None
                       else round(accepted_after, 3)})
        time.sleep(0.3)
    api.call("DELETE", f"/api/sources/{app}/{stream}")
    return {"cycles": len(cycles),
            "next_pusher_first_answer": dict(Counter(str(c["answers"][0]) for c in cycles
                                                     if c["answers"])),
            "accepted_within_3s": sum(c["accepted_after_s"] is not None for c in cycles),
            "refused_409": sum(a == 409 for c in cycles for a in c["answers"]),
            "first": cycles[:3]}


# --------------------------------------------------------------------------- file sources


def wav_loads(job: dict[str, Any]) -> dict[str, Any]:
    """Three concurrent loads of large WAV files as file sources; deleted once answered."""
    app = job["source"][0]
    loads: list[dict[str, Any]] = []

    def load(index: int, path: str) -> None:
        stream = f"file{job['ssrc']}-{index}"
        began = time.monotonic()
        status, reply = Http(job["api"], job["secret"], timeout=job["seconds"] + 30).call(
            "POST", "/api/sources", {"app": app, "stream": stream, "kind": "file",
                                     "path": path})
        loads.append({"stream": stream, "status": status,
                      "code": (reply or {}).get("code"),
                      "msg": str((reply or {}).get("msg", ""))[:160],
                      "seconds": round(time.monotonic() - began, 2)})

    threads = [threading.Thread(target=load, args=(index, path))
               for index, path in enumerate(job["files"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(job["seconds"] + 40)
    time.sleep(1)
    api = api_of(job)
    deleted = [api.call("DELETE", f"/api/sources/{app}/{entry['stream']}")[0]
               for entry in loads if entry["code"] == 0]
    return {"loads": sorted(loads, key=lambda entry: entry["stream"]), "deleted": deleted}


# --------------------------------------------------------------------------- HTTP


def huge_body(job: dict[str, Any], chunked: bool, seconds: float = 2.0) -> dict[str, Any]:
    """POST 1 GiB without the secret as fast as the socket takes it; when is it answered?"""
    host, _, port = job["api"].rpartition(":")
    total = 1024**3
    sock = socket.create_connection((host, int(port)), timeout=5)
    framing = ("Transfer-Encoding: chunked\r\n" if chunked
               else f"Content-Length: {total}\r\n")
    sock.sendall((f"POST /api/sources HTTP/1.1\r\nHost: {job['api']}\r\n"
                  f"Content-Type: application/json\r\n{framing}\r\n").encode())
    sock.setblocking(False)
    block = b"\x20" * (1024 * 1024)
    chunk = (b"%x\r\n" % len(block)) + block + b"\r\n" if chunked else block
    began = time.monotonic()
    sent, answer, reset = 0, b"", False
    view = memoryview(b"")
    while time.monotonic() - began < seconds and sent < total:
        if not view:
            view = memoryview(chunk)
        readable, writable, _ = select.select([sock], [sock], [], 0.05)
        if readable:
            try:
                data = sock.recv(CHUNK)
            except BlockingIOError:
                continue
            except OSError:  # reset: the service closed with our body unread, answer lost
                reset = True
                break
            answer += data
            if not data or b"\r\n\r\n" in answer:
                break
        if writable:
            try:
                count = sock.send(view)
            except BlockingIOError:
                count = 0
            except OSError:
                reset = True
                break
            sent += count
            view = view[count:]
    seconds_taken = time.monotonic() - began
    sock.close()
    line = answer.split(b"\r\n", 1)[0].split(b" ")
    status: int | str | None = int(line[1]) if len(line) > 1 and line[1].isdigit() else None
    if status is None:
        status = "reset" if reset else ("closed" if time.monotonic() - began < seconds
                                        else "no answer")
    return {"status": status,
            "body_bytes_sent": sent, "seconds": round(seconds_taken, 3)}


def http_attack(job: dict[str, Any], requests: list[tuple[str, Callable[[], tuple[Any, ...]]]],
                rounds_at_most: int = 1000) -> dict[str, Any]:
    """``requests`` (name, call returning (status, code, extras...)) in turn until the
    deadline, at most ``rounds`` times; per name the answers and their latency."""
    deadline = time.monotonic() + job["seconds"]
    seen: dict[str, list[dict[str, Any]]] = {}
    rounds = 0
    while time.monotonic() < deadline and rounds < job.get("rounds", rounds_at_most):
        rounds += 1
        for name, call in requests:
            began = time.monotonic()
            status, code, *extra = call()
            seen.setdefault(name, []).append({
                "status": status, "code": code, "ms": (time.monotonic() - began) * 1000,
                **({"body_bytes_sent": extra[0]} if extra else {})})
    return {"rounds": rounds, "kinds": {
        name: {"count": len(entries),
               "answers": dict(Counter(f"{e['status']}/{e['code']}" for e in entries)),
               "ms": summary([e["ms"] for e in entries], 1),
               **({"body_bytes_sent_max": max(e["body_bytes_sent"] for e in entries)}
                  if "body_bytes_sent" in entries[0] else {})}
        for name, entries in seen.items()}}


def http_body(job: dict[str, Any]) -> dict[str, Any]:
    """1 GiB bodies without the secret, by Content-Length and chunked (item 6)."""

    def body(chunked: bool) -> tuple[Any, ...]:
        result = huge_body(job, chunked)
        return result["status"], None, result["body_bytes_sent"]

    return http_attack(job, [("body-1GiB-no-secret", lambda: body(False)),
                             ("body-1GiB-chunked-no-secret", lambda: body(True))])


def http_json(job: dict[str, Any]) -> dict[str, Any]:
    """JSON nested 100,000 deep, lone surrogates (a text field, the secret), a 20 KB query
    (items 9, 8, 12a), then the session list, which must still answer."""
    api = api_of(job)
    app, stream = job["source"]
    ssrc = job["ssrc"]
    deep = b"[" * 100_000 + b"]" * 100_000

    def answer(reply: tuple[int, Any]) -> tuple[Any, ...]:
        return reply[0], (reply[1] or {}).get("code")

    def stop_stray() -> tuple[Any, ...]:
        # A surrogate session that was wrongly created must not outlive the round.
        return answer(api.call("GET", f"/index/api/stopSendRtp?app={app}&stream={stream}"
                               f"&ssrc={ssrc}"))

    return http_attack(job, [
        ("json-100000-deep", lambda: answer(api.call("POST", "/api/sessions", raw=deep))),
        ("lone-surrogate-vhost", lambda: answer(api.call("POST", "/api/sessions", {
            "app": app, "stream": stream, "ssrc": ssrc, "vhost": "\ud800"}))),
        ("list-after-surrogate", lambda: answer(api.call("GET", "/api/sessions"))),
        ("lone-surrogate-secret", lambda: answer(api.call("POST", "/api/sessions", {
            "app": app, "stream": stream, "ssrc": ssrc, "secret": "\ud800"}, secret=False))),
        ("query-20KB", lambda: answer(api.call("GET", "/api/sessions?filler=" + "a" * 20_000))),
        ("stop-stray", stop_stray),
    ])


def http_benign(job: dict[str, Any]) -> dict[str, Any]:
    """The HTTP attackers' control: harmless calls (health, pool), one at a time as fast as
    they are answered, so a cost of the request rate is told from one of the hostile input."""
    api = api_of(job)

    def answer(reply: tuple[int, Any]) -> tuple[Any, ...]:
        return reply[0], (reply[1] or {}).get("code")

    return http_attack(job, [("health", lambda: answer(api.call("GET", "/api/health"))),
                             ("pool", lambda: answer(api.call("GET", "/api/pool")))],
                       rounds_at_most=5000)


KINDS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "pcma-flood": pcma_flood,
    "tiny-frames": tiny_frames,
    "ws-endless": ws_endless,
    "ws-big": ws_big,
    "paused-pusher": paused_pusher,
    "wav-loads": wav_loads,
    "http-body": http_body,
    "http-json": http_json,
    "http-benign": http_benign,
}


def main() -> None:
    job = json.loads(sys.stdin.read())
    began = time.monotonic()
    try:
        report = KINDS[job["kind"]](job)
    except (OSError, RuntimeError, http.client.HTTPException) as error:
        report = {"error": f"{type(error).__name__}: {error}"}
    print(json.dumps({"kind": job["kind"], "wall_seconds": round(time.monotonic() - began, 2),
                      **report}), flush=True)


if __name__ == "__main__":
    main()
