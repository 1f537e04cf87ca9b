"""Fuzzing the HTTP API end to end in memory: any request gets a JSON answer, never a crash.

The whole resource tree (``/index/api/*``, ``/api/*``, ``/metrics``) over a
session manager on a memory reactor, fed sequences of requests with arbitrary
methods, paths, query strings, bodies and content types, the parameter names
the APIs know mixed with unknown ones.  Every answer must be well-formed
HTTP with a JSON body (the metrics page aside) carrying one of the documented
codes, ZLMediaKit's endpoints must answer HTTP 200 (codes in the body, as
ZLMediaKit does), nothing may be logged as a failure (which is what an
unexpected exception becomes), and the pool must hold exactly one lease per
listening session after every request.  The start-parameter parsers alone are
fuzzed in test_api_zlm and test_api_native.
"""

from __future__ import annotations

import json
import tempfile
from urllib.parse import quote, urlencode

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gb28181talk.core.params import SessionState
from gb28181talk.web import codes
from gb28181talk.web.start import NATIVE_FIELDS
from tests.fuzzing import (
    DOCUMENTED_CODES,
    INTERNAL_ERROR,
    SECRET,
    InMemoryApi,
    failures_forbidden,
)
from tests.test_fuzz_session import budget

ZLM = "/index/api/"
PATHS = [
    ZLM + "startSendRtpPassive", ZLM + "stopSendRtp", ZLM + "listRtpSender",
    ZLM + "getMediaList", ZLM + "nothing", "/index/api", "/index", "/",
    "/api/sources", "/api/sources/broadcast/tone", "/api/sources/broadcast",
    "/api/sources/a/b/c", "/api/sessions", "/api/sessions/0123456789ab",
    "/api/sessions/x/y", "/api/pool", "/api/health", "/api/push/broadcast/live",
    "/api/nothing", "/metrics", "/metrics/x",
]
NAMES = sorted({*NATIVE_FIELDS, "secret", "kind", "frequency", "amplitude", "duration", "path",
                "loop", "sample_rate", "channels", "format", "port", "state", "id", "x"})

values = st.one_of(
    st.sampled_from(["", "0", "1", "-1", "8", "96", "true", "no", "broadcast", "tone", "live",
                     "0100000001", "4294967296", "1e9", "nan", "inf", "pcma", "ps", "rfc4571",
                     "strict", "127.0.0.1", SECRET]),
    st.integers(-(2**40), 2**40).map(str),
    st.text(max_size=40),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
              st.floats(allow_nan=True, allow_infinity=True), values),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=3),
    max_leaves=6,
)
fields = st.dictionaries(st.one_of(st.sampled_from(NAMES), st.text(max_size=10)), values,
                         max_size=8)


@st.composite
def plausible(draw: st.DrawFn) -> tuple[bytes, bytes, bytes, dict[bytes, bytes]]:
    """A start, stop or listing a platform would send, with a few fields drawn at random."""
    known = {"app": "broadcast", "stream": "tone", "ssrc": str(draw(st.integers(0, 5)))}
    extra = draw(fields)
    endpoint = draw(st.sampled_from(["startSendRtpPassive", "stopSendRtp", "listRtpSender",
                                     "native-start", "native-list", "native-stop"]))
    if endpoint == "native-start":
        body = {**known, "ssrc": int(known["ssrc"]), **draw(st.dictionaries(
            st.sampled_from(NATIVE_FIELDS), json_values, max_size=3))}
        return b"POST", b"/api/sessions", json.dumps(body).encode(), {}
    if endpoint == "native-list":
        return b"GET", b"/api/sessions?" + urlencode(extra).encode(), b"", {}
    if endpoint == "native-stop":
        return b"DELETE", b"/api/sessions/" + quote(draw(values)).encode(), b"", {}
    query = urlencode({**known, **dict(list(extra.items())[:2])})
    return b"GET", f"{ZLM}{endpoint}?{query}".encode(), b"", {}


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, bytes, bytes, dict[bytes, bytes]]:
    """(method, uri, body, headers) of one request a client might send."""
    if draw(st.booleans()):
        return draw(plausible())
    method = draw(st.sampled_from([b"GET", b"POST", b"DELETE", b"PUT", b"HEAD", b"PATCH"]))
    if draw(st.integers(0, 9)):
        path = draw(st.sampled_from(PATHS))
    else:
        path = "/" + "/".join(quote(part, safe="") for part in draw(st.lists(
            st.text(max_size=12), max_size=4)))
    query = urlencode(draw(fields))
    if draw(st.integers(0, 9)) == 0:
        query += "&" + draw(st.text(max_size=20)).replace(" ", "%20").replace("#", "")
    uri = (path + ("?" + query if query else "")).encode("utf-8", "surrogatepass")
    headers: dict[bytes, bytes] = {}
    shape = draw(st.sampled_from(["none", "json", "form", "bytes", "json-any"]))
    if shape == "json":
        body = json.dumps(draw(st.dictionaries(st.one_of(st.sampled_from(NAMES),
                                                         st.text(max_size=10)),
                                               json_values, max_size=8))).encode()
    elif shape == "json-any":
        body = json.dumps(draw(json_values)).encode()
    elif shape == "form":
        body = urlencode(draw(fields)).encode()
    elif shape == "bytes":
        body = draw(st.binary(max_size=200))
    else:
        body = b""
    kind = draw(st.sampled_from([None, b"application/json", b"application/x-www-form-urlencoded",
                                 b"text/plain", b"application/json; charset=gb2312"]))
    if kind is not None:
        headers[b"content-type"] = kind
    if draw(st.integers(0, 5)) == 0:
        headers[b"authorization"] = draw(st.sampled_from([b"Bearer " + SECRET.encode(),
                                                          b"Bearer nope", b"Basic x", b""]))
    return method, uri, body, headers


@settings(max_examples=budget(120), suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(batch=st.lists(requests(), min_size=1, max_size=5), secret=st.sampled_from([None, SECRET]))
def test_any_request_gets_a_documented_json_answer(
    batch: list[tuple[bytes, bytes, bytes, dict[bytes, bytes]]], secret: str | None
) -> None:
    with tempfile.TemporaryDirectory() as media_dir:
        service = InMemoryApi(secret, media_dir)
        with failures_forbidden():
            for method, uri, body, headers in batch:
                status, reply_headers, reply = service.request(method, uri, body, headers)
                check_answer(method, uri, status, reply_headers, reply)
                check_pool(service)
        for session in service.manager.sessions():
            session.stop()
        assert service.manager.pool.leased_count == 0


def check_answer(method: bytes, uri: bytes, status: int, headers: dict[str, str],
                 body: bytes) -> None:
    path = uri.split(b"?")[0].decode("utf-8", "replace")
    kind = headers.get("content-type", "")
    if method == b"HEAD":
        assert status in (200, 400, 401, 404, 405, 409, 503), status
        return
    if path.split("/")[1:2] == ["metrics"] and status == 200:  # a leaf: /metrics/x too
        assert kind.startswith("text/plain")
        assert body.decode("utf-8").startswith("# HELP")
        return
    assert kind.startswith("application/json"), (uri, status, kind, body[:200])
    reply = json.loads(body)
    code = reply["code"]
    event(f"{path.rsplit('/', 1)[-1][:24] if path in PATHS else 'other path'}: code {code}")
    assert code in DOCUMENTED_CODES, reply
    assert INTERNAL_ERROR not in str(reply.get("msg", "")), reply
    if code != codes.SUCCESS:
        assert isinstance(reply.get("msg"), str) and reply["msg"], reply
    if path.startswith(ZLM) and path[len(ZLM):] in ("startSendRtpPassive", "stopSendRtp",
                                                     "listRtpSender", "getMediaList"):
        assert status == 200, "ZLMediaKit's API answers HTTP 200 with the code in the body"
    elif code == codes.SUCCESS:
        assert status == 200
    else:
        assert 400 <= status < 600, (status, reply)


def check_pool(service: InMemoryApi) -> None:
    """One lease per listening session, none for anything else."""
    listening = sum(1 for session in service.manager.sessions()
                    if session.state is SessionState.LISTENING)
    assert service.manager.pool.leased_count == listening
