"""Hostile HTTP clients: each refusal is early, JSON, with a code and a reason, and harms no one.

The whole resource tree and Site over a memory reactor, fed raw bytes
through the Site's own HTTP channel (what a socket would deliver), so the
checks that happen before a body is read (its length, the secret) are
exercised as a client meets them.  Issue 12, items 6, 8, 9, 11 and 12.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial import unittest

from gb28181talk.core.manager import SessionManager
from gb28181talk.core.ports import PortPool
from gb28181talk.core.talk import TalkControl
from gb28181talk.sources.registry import SourceRegistry
from gb28181talk.sources.tone import ToneSource
from gb28181talk.testing import BusyPortsReactor
from gb28181talk.web import codes
from gb28181talk.web.body import MAX_BODY_BYTES, UNAUTHENTICATED_BODY_BYTES
from gb28181talk.web.common import Authenticator
from gb28181talk.web.metrics import Metrics
from gb28181talk.web.root import build_root, build_site
from tests.fuzzing import parse_response
from tests.httpapi import ServiceHarness, async_test

SECRET = "s3cret"
HOST = "127.0.0.1:8080"
START = {"app": "broadcast", "stream": "tone", "ssrc": 1}


@dataclass
class Answer:
    """What a client read back: status, headers, the JSON body, whether we hung up."""

    status: int
    headers: dict[str, str]
    json: Any
    closed: bool
    chunks_read: int

    @property
    def code(self) -> int:
        return int(self.json["code"])

    @property
    def msg(self) -> str:
        return str(self.json["msg"])


class Api:
    """The service's Site over a memory reactor, with one tone source broadcast/tone."""

    def __init__(self, secret: str | None = None) -> None:
        self.reactor = BusyPortsReactor()
        self.manager = SessionManager(self.reactor, PortPool(self.reactor, 30000, 30005))
        self.registry = SourceRegistry()
        self.registry.add(ToneSource("broadcast", "tone"))
        control = TalkControl(self.reactor, self.manager, self.registry,
                              advertise_ip="10.0.0.5")
        metrics = Metrics(self.manager, self.registry, None)
        self.site = build_site(build_root(Authenticator(secret), control, metrics,
                                          self.reactor, 5.0))

    def send(self, *chunks: bytes) -> Answer:
        """Deliver ``chunks`` as a connection would until we hang up; parse what came back."""
        channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
                                    hostAddress=IPv4Address("TCP", "127.0.0.1", 8080))
        channel.makeConnection(transport)
        read = 0
        for chunk in chunks:
            if transport.disconnecting:  # a TCP transport stops reading once told to close
                break
            channel.dataReceived(chunk)
            read += 1
        raw = transport.value()
        closed = bool(transport.disconnecting)
        channel.connectionLost(Failure(ConnectionDone()))
        if not raw:
            return Answer(0, {}, None, closed, read)
        status, headers, body = parse_response(raw)
        kind = headers.get("content-type", "")
        decoded = json.loads(body) if kind.startswith("application/json") and body else body
        return Answer(status, headers, decoded, closed, read)

    def request(self, method: str, target: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Answer:
        return self.send(head(method, target, headers, len(body) if body is not None else None)
                         + (body or b""))

    def json(self, method: str, target: str, value: Any, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> Answer:
        data = raw if raw is not None else json.dumps(value).encode()
        return self.request(method, target, data,
                            {"Content-Type": "application/json", **(headers or {})})

    def sessions(self) -> int:
        return len(self.manager.sessions())


def head(method: str, target: str, headers: dict[str, str] | None = None,
         length: int | None = None) -> bytes:
    """A request line and headers (Host first), ending with the blank line."""
    fields = {"Host": HOST, **(headers or {})}
    if length is not None:
        fields["Content-Length"] = str(length)
    lines = [f"{method} {target} HTTP/1.1"] + [f"{name}: {value}" for name, value in
                                                fields.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@pytest.fixture
def log_events() -> Any:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def failures(events: list[dict[str, Any]]) -> list[str]:
    return [formatEvent(event) for event in events
            if "log_failure" in event or event["log_level"] >= LogLevel.error]


# -- item 6: bodies refused before they are read ------------------------------------------


def test_a_body_over_the_limit_is_413_by_its_content_length_before_it_is_read() -> None:
    api = Api()
    answer = api.send(head("POST", "/api/sessions", {"Content-Type": "application/json",
                                                     "Expect": "100-continue"}, 2**30),
                      b"x" * 65536, b"x" * 65536)
    assert (answer.status, answer.code) == (413, codes.INVALID_ARGS)
    assert f"{MAX_BODY_BYTES}" in answer.msg and f"{2**30}" in answer.msg
    assert answer.closed and answer.chunks_read == 1, "refused on the headers, body unread"
    assert "100" not in str(answer.status)


def test_without_the_secret_a_body_over_the_small_cap_is_401_before_it_is_read() -> None:
    api = Api(SECRET)
    length = UNAUTHENTICATED_BODY_BYTES + 1
    answer = api.send(head("POST", "/index/api/startSendRtpPassive",
                           {"Content-Type": "application/x-www-form-urlencoded"}, length),
                      b"a" * length)
    assert (answer.status, answer.code) == (401, codes.AUTH_FAILED)
    assert "secret" in answer.msg and "query" in answer.msg
    assert answer.closed and answer.chunks_read == 1


def test_a_wrong_secret_in_the_query_does_not_open_the_full_cap() -> None:
    api = Api(SECRET)
    length = UNAUTHENTICATED_BODY_BYTES * 3
    answer = api.send(head("POST", "/api/sessions?secret=wrong",
                           {"Content-Type": "application/json"}, length), b"{" * length)
    assert (answer.status, answer.code) == (401, codes.AUTH_FAILED)
    assert answer.closed and answer.chunks_read == 1


def test_with_the_secret_in_the_query_or_header_a_larger_body_is_read() -> None:
    api = Api(SECRET)
    body = json.dumps({"kind": "nothing", "pad": "x" * (UNAUTHENTICATED_BODY_BYTES * 2)})
    for target, headers in ((f"/api/sources?secret={SECRET}", {}),
                            ("/api/sources", {"Authorization": f"Bearer {SECRET}"})):
        answer = api.json("POST", target, None, raw=body.encode(), headers=headers)
        assert (answer.status, answer.code) == (400, codes.INVALID_ARGS), answer.json
        assert "kind" in answer.msg


def test_a_form_with_the_secret_in_its_body_still_works() -> None:
    api = Api(SECRET)
    form = f"app=broadcast&stream=tone&ssrc=7&secret={SECRET}".encode()
    answer = api.request("POST", "/index/api/startSendRtpPassive", form,
                         {"Content-Type": "application/x-www-form-urlencoded"})
    assert (answer.status, answer.code) == (200, 0), answer.json
    assert api.sessions() == 1


def test_a_chunked_body_is_cut_off_once_over_the_cap() -> None:
    api = Api()
    piece = b"[" + b"0," * 32767 + b"0]"  # 64 KiB of valid JSON text per chunk
    chunks = [chunk(piece)] * (MAX_BODY_BYTES // len(piece) + 4)
    answer = api.send(head("POST", "/api/sessions", {"Content-Type": "application/json",
                                                     "Transfer-Encoding": "chunked"}),
                      *chunks, b"0\r\n\r\n")
    assert (answer.status, answer.code) == (413, codes.INVALID_ARGS)
    assert f"{MAX_BODY_BYTES}" in answer.msg
    assert answer.closed and answer.chunks_read < len(chunks)


def test_a_chunked_body_without_the_secret_is_cut_off_at_the_small_cap() -> None:
    api = Api(SECRET)
    piece = b"a" * 4096
    chunks = [chunk(piece)] * (UNAUTHENTICATED_BODY_BYTES // len(piece) + 4)
    answer = api.send(head("POST", "/api/sessions", {"Content-Type": "application/json",
                                                     "Transfer-Encoding": "chunked"}),
                      *chunks, b"0\r\n\r\n")
    assert (answer.status, answer.code) == (401, codes.AUTH_FAILED)
    assert answer.closed and answer.chunks_read < len(chunks)


def test_a_small_chunked_body_is_served() -> None:
    api = Api()
    data = json.dumps(START).encode()
    answer = api.send(head("POST", "/api/sessions", {"Content-Type": "application/json",
                                                     "Transfer-Encoding": "chunked"}),
                      chunk(data[:10]), chunk(data[10:]), b"0\r\n\r\n")
    assert (answer.status, answer.code) == (200, 0), answer.json
    assert api.sessions() == 1


def test_a_body_is_never_spooled_to_a_temporary_file(monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a request body went to a temporary file")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    api = Api()
    padded = json.dumps({**START, "pad": "x" * 200_000}).encode()
    answer = api.json("POST", "/api/sessions", None, raw=padded)
    assert answer.code == codes.INVALID_ARGS and "pad" in answer.msg, answer.json


# -- item 8: text that cannot be encoded is refused at the decode -------------------------


def test_a_lone_surrogate_anywhere_in_json_is_minus_300_and_nothing_is_stored() -> None:
    api = Api()
    for field in ("vhost", "app", "stream"):
        raw = json.dumps({**START, field: "PLACEHOLDER"}).replace("PLACEHOLDER", "\\ud800")
        answer = api.json("POST", "/api/sessions", None, raw=raw.encode())
        assert (answer.status, answer.code) == (400, codes.INVALID_ARGS), answer.json
        assert "surrogate" in answer.msg and field in answer.msg
        zlm = api.json("POST", "/index/api/startSendRtpPassive", None, raw=raw.encode())
        assert (zlm.status, zlm.code) == (200, codes.INVALID_ARGS)
    nested = b'{"app": "broadcast", "stream": "tone", "ssrc": 1, "x": [{"\\udfff": 1}]}'
    assert api.json("POST", "/api/sessions", None, raw=nested).code == codes.INVALID_ARGS
    assert api.sessions() == 0
    listed = api.request("GET", "/api/sessions")
    assert (listed.status, listed.code) == (200, 0)


def test_a_surrogate_pair_is_ordinary_text() -> None:
    api = Api()
    raw = json.dumps({**START, "vhost": "PLACEHOLDER"}).replace("PLACEHOLDER", "\\ud83d\\ude00")
    answer = api.json("POST", "/api/sessions", None, raw=raw.encode())
    assert answer.code == 0, answer.json
    assert api.request("GET", "/api/sessions").code == 0


def test_a_lone_surrogate_in_the_secret_is_an_authentication_refusal(
    log_events: list[dict[str, Any]],
) -> None:
    api = Api(SECRET)
    raw = b'{"app": "broadcast", "stream": "tone", "ssrc": 1, "secret": "\\ud800"}'
    for target in ("/api/sessions", "/index/api/startSendRtpPassive"):
        answer = api.json("POST", target, None, raw=raw)
        assert answer.code == codes.AUTH_FAILED, answer.json
        assert "surrogate" in answer.msg
    assert api.sessions() == 0
    assert not failures(log_events)


# -- item 9: deep JSON ---------------------------------------------------------------------


@pytest.mark.parametrize("opening", [b"[", b'{"a":'])
def test_json_nested_100000_deep_is_minus_300_with_one_log_line(
    opening: bytes, log_events: list[dict[str, Any]]
) -> None:
    api = Api()
    closing = b"]" if opening == b"[" else b"}"
    raw = opening * 100_000 + b"1" + closing * 100_000
    answer = api.json("POST", "/api/sessions", None, raw=raw)
    assert (answer.status, answer.code) == (400, codes.INVALID_ARGS)
    assert "not valid JSON" in answer.msg and "32" in answer.msg
    assert not failures(log_events)
    lines = [formatEvent(event) for event in log_events
             if "refused a JSON body" in formatEvent(event)]
    assert len(lines) == 1, lines


def test_deep_json_without_its_closing_brackets_is_minus_300() -> None:
    api = Api()
    answer = api.json("POST", "/api/sessions", None, raw=b"[" * 100_000)
    assert (answer.status, answer.code) == (400, codes.INVALID_ARGS)
    assert "not valid JSON" in answer.msg


def test_nesting_within_the_limit_and_brackets_in_strings_are_fine() -> None:
    api = Api()
    tricky = {**START, "vhost": "[[[[" * 40 + '\\"{{{{' * 40,
              "deep": json.loads("[" * 20 + "1" + "]" * 20)}
    answer = api.json("POST", "/api/sessions", tricky)
    assert "not valid JSON" not in answer.json.get("msg", ""), answer.json


# -- item 11: cross-site requests -----------------------------------------------------------


def test_json_sent_as_text_plain_is_refused() -> None:
    api = Api()
    answer = api.request("POST", "/api/sessions", json.dumps(START).encode(),
                         {"Content-Type": "text/plain"})
    assert (answer.status, answer.code) == (415, codes.INVALID_ARGS)
    assert "application/json" in answer.msg
    zlm = api.request("POST", "/index/api/startSendRtpPassive", json.dumps(START).encode(),
                      {"Content-Type": "text/plain;charset=UTF-8"})
    assert (zlm.status, zlm.code) == (200, codes.INVALID_ARGS)
    assert api.sessions() == 0


def test_json_sent_as_a_form_is_refused_with_the_fix() -> None:
    api = Api()
    answer = api.request("POST", "/api/sessions", json.dumps(START).encode(),
                         {"Content-Type": "application/x-www-form-urlencoded"})
    assert (answer.status, answer.code) == (415, codes.INVALID_ARGS)
    assert "Content-Type: application/json" in answer.msg
    assert api.sessions() == 0


@pytest.mark.parametrize("secret", [None, SECRET])
def test_a_foreign_origin_is_refused(secret: str | None) -> None:
    api = Api(secret)
    query = f"?secret={SECRET}" if secret else ""
    for origin in ("http://evil.example", "null", "http://127.0.0.1:9999"):
        answer = api.json("POST", "/api/sessions" + query, START, headers={"Origin": origin})
        assert (answer.status, answer.code) == (403, codes.AUTH_FAILED), answer.json
        assert origin in answer.msg and "cross-site" in answer.msg
        zlm = api.request("GET", "/index/api/startSendRtpPassive?app=broadcast&stream=tone"
                          f"&ssrc=1{query.replace('?', '&')}", headers={"Origin": origin})
        assert (zlm.status, zlm.code) == (200, codes.AUTH_FAILED)
    assert api.sessions() == 0
    same = api.json("POST", "/api/sessions" + query, START,
                    headers={"Origin": f"http://{HOST}"})
    assert same.code == 0, same.json


def test_the_api_own_page_behind_a_tls_proxy_is_same_origin() -> None:
    api = Api(SECRET)
    answer = api.json("POST", f"/api/sessions?secret={SECRET}", START,
                      headers={"Host": "talk.example.org", "Origin": "https://talk.example.org"})
    assert answer.code == 0, answer.json


def test_a_page_of_another_site_cannot_start_a_session_with_a_get() -> None:
    """An <img src=...> sends no Origin on a GET; browsers mark it Sec-Fetch-Site: cross-site."""
    api = Api()
    target = "/index/api/startSendRtpPassive?app=broadcast&stream=tone&ssrc=1"
    for site in ("cross-site", "same-site"):
        answer = api.request("GET", target, headers={"Sec-Fetch-Site": site})
        assert answer.code == codes.AUTH_FAILED and "cross-site" in answer.msg
    assert api.sessions() == 0
    for site in ("same-origin", "none"):  # the API's own page; the address bar
        assert api.request("GET", target, headers={"Sec-Fetch-Site": site}).code == 0
        target = target.replace("ssrc=1", "ssrc=2")
    assert api.sessions() == 2


def test_without_a_secret_a_foreign_host_is_refused_dns_rebinding() -> None:
    api = Api()
    for host in ("evil.example:8080", "evil.example", "127.0.0.1.evil.example"):
        answer = api.request("GET", "/api/sessions", headers={"Host": host})
        assert (answer.status, answer.code) == (403, codes.AUTH_FAILED), answer.json
        assert host in answer.msg
        started = api.json("POST", "/api/sessions", START, headers={"Host": host})
        assert started.code == codes.AUTH_FAILED
    assert api.sessions() == 0
    for host in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080", "LOCALHOST", "10.0.0.5:8080",
                 "127.0.0.2"):
        answer = api.request("GET", "/api/sessions", headers={"Host": host})
        assert answer.code == 0, (host, answer.json)


def test_with_a_secret_any_host_is_served() -> None:
    api = Api(SECRET)
    answer = api.request("GET", f"/api/sessions?secret={SECRET}",
                         headers={"Host": "talk.example.org:8080"})
    assert answer.code == 0


def test_no_get_changes_state() -> None:
    api = Api()
    assert api.json("POST", "/api/sessions", START).code == 0
    before = (api.sessions(), len(api.registry), api.manager.pool.leased_count)
    session_id = api.manager.sessions()[0].id
    for target in ("/api/sessions", f"/api/sessions/{session_id}", "/api/sources",
                   "/api/sources/broadcast/tone", "/api/pool", "/api/health", "/metrics", "/"):
        for method in ("GET", "HEAD"):
            api.request(method, target)
    assert (api.sessions(), len(api.registry), api.manager.pool.leased_count) == before


# -- item 12: small ones ------------------------------------------------------------------


def test_a_query_string_over_16_kib_is_414_json() -> None:
    api = Api()
    answer = api.send(head("GET", "/api/sessions?app=" + "a" * 17_000))
    assert (answer.status, answer.code) == (414, codes.INVALID_ARGS)
    assert "16" in answer.msg
    assert answer.closed


def test_a_header_line_over_16_kib_is_431_json() -> None:
    api = Api()
    answer = api.send(head("GET", "/api/sessions", {"X-Big": "b" * 17_000}))
    assert (answer.status, answer.code) == (431, codes.INVALID_ARGS)
    assert answer.closed


def test_a_malformed_request_is_400_json() -> None:
    api = Api()
    answer = api.send(b"GET /api/sessions HTTP/1.1\r\nHost: " + HOST.encode()
                      + b"\r\nno colon here\r\n\r\n")
    assert (answer.status, answer.code) == (400, codes.INVALID_ARGS)
    assert answer.closed


def test_the_secret_is_checked_before_the_method() -> None:
    api = Api(SECRET)
    refused = api.request("PUT", "/api/pool")
    assert (refused.status, refused.code) == (401, codes.AUTH_FAILED)
    assert "GET" not in refused.msg
    wrong = api.request("PUT", f"/api/pool?secret={SECRET}")
    assert (wrong.status, wrong.code) == (405, codes.INVALID_ARGS)
    assert "GET" in wrong.msg


def test_tls_never_negotiates_http_2_where_the_body_limits_do_not_hold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from twisted.web import http

    monkeypatch.setattr(http, "H2_ENABLED", True)  # as with the h2 package installed
    assert Api().site.acceptableProtocols() == [b"http/1.1"]


# -- the same over a real loopback socket -------------------------------------------------


class _RawClient(Protocol):
    """Sends one request head and records every byte back until the server hangs up."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = b""
        self.closed: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        self.closed.callback(self.received)


class LoopbackTests(unittest.TestCase):
    """The whole service: a gigabyte announced is answered at once, and the server hangs up."""

    timeout = 20

    def setUp(self) -> None:
        self.harness = ServiceHarness(ports=2, secret=SECRET)
        self.harness.start()

    def tearDown(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.harness.stop())

    async def exchange(self, request: bytes) -> tuple[int, dict[str, Any]]:
        port = self.harness.service.api_port.getHost().port
        client = _RawClient(request)
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        raw = await client.closed  # the server closes: the client need not send the body
        status, _headers, body = parse_response(raw)
        return status, json.loads(body)

    @async_test
    async def test_a_gigabyte_body_is_refused_before_a_byte_of_it_is_sent(self) -> None:
        without = await self.exchange(head("POST", "/api/sessions",
                                           {"Content-Type": "application/json"}, 2**30))
        assert (without[0], without[1]["code"]) == (401, codes.AUTH_FAILED)
        with_secret = await self.exchange(head("POST", f"/api/sessions?secret={SECRET}",
                                               {"Content-Type": "application/json"}, 2**30))
        assert (with_secret[0], with_secret[1]["code"]) == (413, codes.INVALID_ARGS)
        assert "1048576" in with_secret[1]["msg"]

    @async_test
    async def test_a_long_query_string_is_answered_414(self) -> None:
        status, reply = await self.exchange(head("GET", "/api/health?x=" + "y" * 20_000))
        assert (status, reply["code"]) == (414, codes.INVALID_ARGS)
