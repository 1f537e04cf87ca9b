"""Helpers for API tests: the whole service on loopback, an HTTP client on Twisted's Agent.

``ServiceHarness`` runs a real :class:`GbTalkService` (API on 127.0.0.1, a
few free talk ports) in the test's reactor; ``call`` makes one HTTP request
and decodes the JSON reply; ``HookReceiver`` is a webhook endpoint that
records what it is sent.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any
from urllib.parse import urlencode

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from gb28181talk.config import ServiceConfig
from gb28181talk.service import GbTalkService
from tests.netutil import free_port_range


def async_test(
    method: Callable[..., Coroutine[Any, Any, None]],
) -> Callable[..., Deferred[None]]:
    """Run an ``async def`` test method as a Deferred, which trial waits for."""

    @functools.wraps(method)
    def run(self: Any) -> Deferred[None]:
        return Deferred.fromCoroutine(method(self))

    return run


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds)  # type: ignore[arg-type]


async def until(condition: Callable[[], Any], timeout: float = 5.0, step: float = 0.01) -> None:
    """Turn the reactor until ``condition()`` is true."""
    waited = 0.0
    while not condition():
        if waited > timeout:
            raise AssertionError("condition not met in time")
        await sleep(step)
        waited += step


class _Collector(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        if reason.check(ResponseDone, ConnectionDone):  # the WebSocket client ends so
            self.done.callback(self.data)
        else:
            self.done.errback(reason)


async def read_body(response: Any) -> bytes:
    """The whole body of an Agent response."""
    collector = _Collector()
    response.deliverBody(collector)
    return await collector.done


@dataclass
class Reply:
    """An HTTP answer: status, content type, raw body and (when JSON) the decoded body."""

    status: int
    content_type: str
    raw: bytes
    json: Any = None

    @property
    def code(self) -> int:
        return int(self.json["code"])


_POOL = HTTPConnectionPool(reactor, persistent=False)


async def call(
    method: str,
    url: str,
    *,
    query: dict[str, Any] | None = None,
    json_body: Any = None,
    form: dict[str, Any] | None = None,
    raw_body: bytes | None = None,
    headers: dict[str, str] | None = None,
    agent: Any = None,
) -> Reply:
    """One HTTP request with Twisted's Agent; the reply decoded when it is JSON."""
    if query:
        url += ("&" if "?" in url else "?") + urlencode(query)
    header_map = {name.lower(): value for name, value in (headers or {}).items()}
    body: bytes | None = raw_body
    if json_body is not None:
        body = json.dumps(json_body).encode()
        header_map.setdefault("content-type", "application/json")
    elif form is not None:
        body = urlencode(form).encode()
        header_map.setdefault("content-type", "application/x-www-form-urlencoded")
    raw_headers = Headers({name.encode(): [value.encode()] for name, value in header_map.items()})
    client = agent or Agent(reactor, pool=_POOL)
    response = await client.request(
        method.encode(),
        url.encode(),
        raw_headers,
        FileBodyProducer(BytesIO(body)) if body is not None else None,
    )
    data = await read_body(response)
    kind = (response.headers.getRawHeaders(b"content-type") or [b""])[0].decode()
    decoded = json.loads(data) if kind.startswith("application/json") else None
    return Reply(response.code, kind, data, decoded)


class ServiceHarness:
    """A GbTalkService on 127.0.0.1 with ``ports`` free talk ports, in this reactor."""

    def __init__(self, ports: int = 4, **settings: Any) -> None:
        low, high = free_port_range(ports)
        settings.setdefault("api", "tcp:0:interface=127.0.0.1")
        settings.setdefault("media_interface", "127.0.0.1")
        settings.setdefault("advertise_ip", "127.0.0.1")
        self.config = ServiceConfig(port_range=(low, high), **settings)
        self.service = GbTalkService(self.config, reactor)
        self.low, self.high = low, high

    def start(self) -> None:
        self.service.startService()

    async def stop(self) -> None:
        if self.service.running:
            await self.service.stopService()

    @property
    def base(self) -> str:
        scheme = "https" if self.config.api.startswith("ssl:") else "http"
        return f"{scheme}://127.0.0.1:{self.service.api_port.getHost().port}"

    def url(self, path: str) -> str:
        return self.base + path

    async def zlm(self, name: str, method: str = "GET", **kwargs: Any) -> Reply:
        return await call(method, self.url(f"/index/api/{name}"), **kwargs)

    async def add_tone(
        self, app: str = "broadcast", stream: str = "tone", frequency: float = 440, **extra: Any
    ) -> Reply:
        body = {"app": app, "stream": stream, "kind": "tone", "frequency": frequency, **extra}
        return await call("POST", self.url("/api/sources"), json_body=body)


@dataclass
class HookReceiver:
    """A webhook endpoint on 127.0.0.1 recording every POST; it can fail the first N."""

    fail_first: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    attempts: int = 0
    port: Any = None

    def start(self) -> str:
        receiver = self

        class Hook(Resource):
            isLeaf = True

            def render_POST(self, request: Request) -> bytes:
                receiver.attempts += 1
                if receiver.attempts <= receiver.fail_first:
                    request.setResponseCode(500)
                    return b"try again"
                receiver.paths.append(request.path.decode())
                receiver.bodies.append(json.loads(request.content.read()))
                request.setHeader(b"content-type", b"application/json")
                return b'{"code": 0, "msg": "success"}'

        self.port = reactor.listenTCP(0, Site(Hook()), interface="127.0.0.1")  # type: ignore[attr-defined]
        return f"http://127.0.0.1:{self.port.getHost().port}/index/hook"

    async def stop(self) -> None:
        if self.port is not None:
            await self.port.stopListening()
