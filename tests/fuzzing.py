"""The in-memory harness the HTTP API fuzz tests share: the API on a memory reactor, no sockets.

``InMemoryApi`` is the whole resource tree (``/index/api/*``, ``/api/*``,
``/metrics``) over a session manager on a memory reactor, with one tone
source ``broadcast/tone``; ``failures_forbidden`` fails a test when anything
is logged as a failure (what an unexpected exception becomes);
``zlm_reply`` checks an answer as ZLMediaKit's API gives it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from typing import Any

from twisted.logger import globalLogPublisher
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from gb28181talk.core.manager import SessionManager
from gb28181talk.core.ports import PortPool
from gb28181talk.core.talk import TalkControl
from gb28181talk.sources.registry import SourceRegistry
from gb28181talk.sources.tone import ToneSource
from gb28181talk.testing import BusyPortsReactor
from gb28181talk.web import codes
from gb28181talk.web.common import Authenticator
from gb28181talk.web.metrics import Metrics
from gb28181talk.web.root import build_root, build_site

SECRET = "s3cret"
DOCUMENTED_CODES = {codes.SUCCESS, codes.OTHER_FAILED, codes.AUTH_FAILED, codes.INVALID_ARGS,
                    codes.EXCEPTION, codes.NOT_FOUND}
INTERNAL_ERROR = "internal error"


class InMemoryApi:
    """The resource tree over a memory reactor, with one tone source broadcast/tone.

    ``reactor`` defaults to a :class:`BusyPortsReactor`; ``manager_options`` go
    to the :class:`SessionManager` (whose pool is ports 30000-30005).
    """

    def __init__(self, secret: str | None, media_dir: str, reactor: Any = None,
                 **manager_options: Any) -> None:
        self.reactor = BusyPortsReactor() if reactor is None else reactor
        self.manager = SessionManager(self.reactor, PortPool(self.reactor, 30000, 30005),
                                      **manager_options)
        self.registry = SourceRegistry(media_root=media_dir)
        self.registry.add(ToneSource("broadcast", "tone"))
        self.control = TalkControl(self.reactor, self.manager, self.registry,
                                   advertise_ip="127.0.0.1")
        metrics = Metrics(self.manager, self.registry, None)
        self.site = build_site(build_root(Authenticator(secret), self.control, metrics,
                                          self.reactor, 5.0))

    def deliver(self, method: bytes, uri: bytes, body: bytes,
                headers: dict[bytes, bytes]) -> DummyChannel:
        """Hand one request to the site; the channel holds what has been answered so far."""
        channel = DummyChannel()
        channel.site = self.site
        request = Request(channel)
        request.content = BytesIO(body)
        for name, value in headers.items():
            request.requestHeaders.addRawHeader(name, value)
        request.requestHeaders.addRawHeader(b"content-length", str(len(body)).encode())
        request.requestReceived(method, uri, b"HTTP/1.1")
        return channel

    def request(self, method: bytes, uri: bytes, body: bytes,
                headers: dict[bytes, bytes]) -> tuple[int, dict[str, str], bytes]:
        """Serve one request in memory; (status, headers, body) of the answer."""
        return answer_on(self.deliver(method, uri, body, headers))


def answer_on(channel: DummyChannel) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of what the site has written to ``channel``."""
    return parse_response(channel.transport.written.getvalue())


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-cased headers, body) of a raw HTTP/1.1 answer, chunked bodies joined."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        decoded = b""
        while body:
            size_line, _, body = body.partition(b"\r\n")
            size = int(size_line, 16)
            if not size:
                break
            decoded, body = decoded + body[:size], body[size + 2 :]
        body = decoded
    return status, headers, body


def zlm_reply(status: int, headers: dict[str, str], raw: bytes) -> dict[str, Any]:
    """The JSON of a ZLMediaKit endpoint's answer: HTTP 200, a documented code, a reason."""
    assert status == 200, "ZLMediaKit's API answers HTTP 200 with the code in the body"
    assert headers["content-type"].startswith("application/json")
    reply = json.loads(raw)
    assert reply["code"] in DOCUMENTED_CODES, reply
    assert INTERNAL_ERROR not in str(reply.get("msg", ""))
    if reply["code"] != codes.SUCCESS:
        assert isinstance(reply.get("msg"), str) and reply["msg"]
    return dict(reply)


@contextmanager
def failures_forbidden() -> Iterator[None]:
    """Fail, once the block has run without raising, if anything was logged as a failure."""
    failures: list[dict[str, Any]] = []

    def observe(log_event: dict[str, Any]) -> None:
        if "log_failure" in log_event:
            failures.append(log_event)

    globalLogPublisher.addObserver(observe)
    try:
        yield
    finally:
        globalLogPublisher.removeObserver(observe)
    assert not failures, [event.get("log_failure") for event in failures]
