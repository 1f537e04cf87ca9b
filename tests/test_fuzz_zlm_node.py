"""Fuzzing the node's new ZLMediaKit endpoints and parameters through the in-memory API.

As tests/test_fuzz_api.py does for the rest of the API: the whole resource
tree on a memory reactor, fed requests to getServerConfig, setServerConfig
(every settable key in any case, read-only and unknown keys, odd values),
getMediaList/getMediaInfo/isMediaOnline/close_streams (``schema``,
``force``) and startSendRtpPassive with ``close_delay_ms`` over and beyond
ZLMediaKit's uint32 and ``ssrc`` texts with leading zeros.  Every answer is
HTTP 200 with a JSON body and a documented code, nothing is logged as a
failure, getServerConfig always holds every key wvp reads and never the
secret, a successful setServerConfig repeated changes nothing, and the
``ssrc`` of a started session comes back in listRtpSender as it was given.
"""

from __future__ import annotations

import json
import tempfile
from typing import Any
from urllib.parse import urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gb28181talk.core.ports import PortPool
from gb28181talk.testing import BusyPortsReactor
from gb28181talk.web import codes
from gb28181talk.web.common import ApiError
from gb28181talk.web.zlm_node import HOOKS, NodeSettings
from tests.fuzzing import SECRET, InMemoryApi, failures_forbidden, zlm_reply
from tests.test_fuzz_session import budget
from tests.test_wvp_sequence import WVP_READS

ZLM = "/index/api/"
ENDPOINTS = ["getServerConfig", "setServerConfig", "getMediaList", "getMediaInfo",
             "isMediaOnline", "close_streams", "startSendRtpPassive", "listRtpSender"]
SETTABLE = ["general.mediaServerId", "hook.enable", "hook.timeoutSec", "hook.alive_interval",
            "hook.retry", "hook.retry_delay", "hook.stream_changed_schemas",
            "rtp_proxy.port_range", *(f"hook.{name}" for name in HOOKS)]
OTHER_KEYS = ["http.port", "rtsp.port", "api.secret", "protocol.continue_push_ms",
              "schema", "vhost", "app", "stream", "force", "ssrc", "close_delay_ms", "pt",
              "use_ps", "secret", "x"]

setting_values = st.one_of(
    st.sampled_from(["", "0", "1", "-1", "10", "10.0", "0.5", "1e9", "nan", "inf", "yes",
                     "30000-30005", "30002-30003", "31000-31001", "1-70000", "30005-30000",
                     "rtsp", "rtsp/rtmp", "rtsp//hls.fmp4", "a/b/c", "../x",
                     "http://127.0.0.1:9/index/hook/on_play", "https://h/x", "ftp://h/x",
                     "broadcast", "tone", "4294967295", "4294967296", "10000000",
                     "777", "0000000777", " 7 ", SECRET]),
    st.integers(-(2**40), 2**40).map(str),
    st.text(max_size=30),
)
names = st.one_of(
    st.sampled_from(SETTABLE + OTHER_KEYS),
    st.sampled_from(SETTABLE).map(str.upper),
    st.text(max_size=12),
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, bytes, bytes, dict[bytes, bytes]]:
    """A call to one of the new endpoints, its parameters in the query, a form or JSON."""
    endpoint = draw(st.sampled_from(ENDPOINTS))
    params: dict[str, str] = {}
    if endpoint in ("getMediaInfo", "isMediaOnline", "startSendRtpPassive", "listRtpSender"):
        params.update({"app": "broadcast", "stream": "tone", "schema": "rtsp",
                       "ssrc": draw(st.sampled_from(["1", "0000000777", "777", "x"]))})
    params.update(draw(st.dictionaries(names, setting_values, max_size=6)))
    if draw(st.booleans()):
        params["secret"] = SECRET
    method = draw(st.sampled_from([b"GET", b"POST"]))
    shape = draw(st.sampled_from(["query", "form", "json"]))
    headers: dict[bytes, bytes] = {}
    if shape == "query" or method == b"GET":
        return method, f"{ZLM}{endpoint}?{urlencode(params)}".encode(), b"", headers
    if shape == "form":
        headers[b"content-type"] = b"application/x-www-form-urlencoded"
        return method, f"{ZLM}{endpoint}".encode(), urlencode(params).encode(), headers
    headers[b"content-type"] = b"application/json"
    return method, f"{ZLM}{endpoint}".encode(), json.dumps(params).encode(), headers


@settings(max_examples=budget(120), suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(batch=st.lists(requests(), min_size=1, max_size=6), secret=st.sampled_from([None, SECRET]))
def test_the_new_endpoints_answer_documented_json_and_keep_the_node_sound(
    batch: list[tuple[bytes, bytes, bytes, dict[bytes, bytes]]], secret: str | None
) -> None:
    with tempfile.TemporaryDirectory() as media_dir:
        service = InMemoryApi(secret, media_dir)
        with failures_forbidden():
            for method, uri, body, headers in batch:
                reply = answer(service, method, uri, body, headers)
                endpoint = uri.split(b"?")[0].decode().rsplit("/", 1)[-1]
                if reply["code"] == codes.SUCCESS:
                    check_success(service, endpoint, uri, body, headers, reply, method)
                check_node(service)
        for session in service.manager.sessions():
            session.stop()
        assert service.manager.pool.leased_count == 0


def answer(service: InMemoryApi, method: bytes, uri: bytes, body: bytes,
           headers: dict[bytes, bytes]) -> dict[str, Any]:
    return zlm_reply(*service.request(method, uri, body, headers))


def config(service: InMemoryApi) -> dict[str, str]:
    reply = answer(service, b"GET", f"{ZLM}getServerConfig?secret={SECRET}".encode(), b"", {})
    [data] = reply["data"]
    return dict(data)


def check_node(service: InMemoryApi) -> None:
    """getServerConfig holds every key wvp reads, usable, never the secret; pool as it says."""
    data = config(service)
    assert all(key in data for key in WVP_READS)
    assert not any("secret" in key for key in data) and SECRET not in data.values()
    assert all(isinstance(value, str) for value in data.values())
    assert float(data["hook.alive_interval"]) > 0 and data["general.mediaServerId"]
    pool = service.manager.pool
    assert data["rtp_proxy.port_range"] == f"{pool.low}-{pool.high}"
    listening = sum(1 for session in service.manager.sessions()
                    if str(session.state) == "listening")
    assert pool.leased_count >= listening


def check_success(service: InMemoryApi, endpoint: str, uri: bytes, body: bytes,
                  headers: dict[bytes, bytes], reply: dict[str, Any], method: bytes) -> None:
    if endpoint == "setServerConfig":
        assert isinstance(reply["changed"], int) and reply["changed"] >= 0
        again = answer(service, method, uri, body, headers)
        assert again == {"code": 0, "changed": 0}, "the same settings again change nothing"
    elif endpoint == "startSendRtpPassive":
        session = service.manager.sessions()[-1]
        query = urlencode({"vhost": session.key.vhost, "app": "broadcast", "stream": "tone",
                           "secret": SECRET})
        listed = answer(service, b"GET", f"{ZLM}listRtpSender?{query}".encode(), b"", {})
        assert session.params.ssrc_echo in listed["data"]
        assert session.params.ssrc_text is None or int(session.params.ssrc_text) == (
            session.key.ssrc)
    elif endpoint in ("getMediaInfo",):
        assert reply["app"] == "broadcast" and reply["schema"] == "rtsp"
    elif endpoint == "isMediaOnline":
        assert isinstance(reply["online"], bool)
    elif endpoint == "close_streams":
        assert 0 <= reply["count_closed"] <= reply["count_hit"]


@settings(max_examples=budget(300), deadline=None)
@given(args=st.dictionaries(names, setting_values, max_size=8))
def test_apply_changes_everything_asked_or_nothing(args: dict[str, str]) -> None:
    reactor = BusyPortsReactor()
    node = NodeSettings(PortPool(reactor, 30000, 30005))
    before = node.config()
    try:
        changed = node.apply(args)
    except ApiError as refused:
        assert refused.code == codes.INVALID_ARGS
        assert node.config() == before
        return
    after = node.config()
    assert changed == sum(1 for key in after if after[key] != before[key])
    assert node.apply(args) == 0
    assert node.alive_interval > 0 and node.hook_timeout > 0 and node.schemas
