"""The node's ZLMediaKit settings, its streams and its node-level hooks, on a Clock.

NodeSettings (getServerConfig's view, setServerConfig's ``changed``),
StreamView (schemas, filters) and NodeEvents (on_server_started,
on_server_keepalive every ``alive_interval``, on_stream_changed as a
difference) with a recording deliverer: counts, order and bodies, never
wall-clock time.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gb28181talk.core.manager import SessionManager
from gb28181talk.core.params import SessionKey, SessionParams
from gb28181talk.core.ports import PortPool
from gb28181talk.core.talk import TalkControl
from gb28181talk.sources.registry import SourceRegistry
from gb28181talk.sources.tone import ToneSource
from gb28181talk.testing import BusyPortsReactor
from gb28181talk.web import codes
from gb28181talk.web.common import ApiError
from gb28181talk.web.hooks import HookDeliverer
from gb28181talk.web.start import parse_zlm_start
from gb28181talk.web.zlm_events import CHECK_INTERVAL, NodeEvents
from gb28181talk.web.zlm_node import FIRED_HOOKS, HOOKS, NodeSettings
from gb28181talk.web.zlm_streams import StreamView

BASE = "http://127.0.0.1:18080/index/hook"


class RecordingDeliverer:
    """A HookDeliverer stand-in: records (hook, url, body) of every post."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str, dict[str, Any]]] = []
        self.url = ""

    def post(self, hook: str, url: str, body: dict[str, Any]) -> None:
        self.posts.append((hook, url, body))

    def names(self) -> list[str]:
        return [hook for hook, _url, _body in self.posts]

    def bodies(self, hook: str) -> list[dict[str, Any]]:
        return [body for name, _url, body in self.posts if name == hook]


class Node:
    """Settings, sources, sessions and node events over a memory reactor (a Clock)."""

    def __init__(self, **settings: Any) -> None:
        self.clock = BusyPortsReactor()
        self.pool = PortPool(self.clock, 30000, 30009)
        self.manager = SessionManager(self.clock, self.pool)
        self.registry = SourceRegistry()
        self.control = TalkControl(self.clock, self.manager, self.registry)
        self.settings = NodeSettings(self.pool, server_id="node-1", **settings)
        self.settings.http_port = lambda: 8080
        self.view = StreamView(self.control, lambda: self.settings.schemas)
        self.deliverer = RecordingDeliverer()
        self.events = NodeEvents(self.clock, self.settings, self.deliverer, self.view)


def test_settings_from_the_hook_url_and_node_hooks() -> None:
    plain = Node(hook_url=BASE).settings
    assert plain.enabled
    assert plain.hook_url("on_send_rtp_stopped") == BASE + "/on_send_rtp_stopped"
    assert plain.hook_url("on_server_keepalive") == ""
    announcing = Node(hook_url=BASE + "/", node_hooks=True).settings
    assert {name for name in HOOKS if announcing.hook_url(name)} == set(FIRED_HOOKS)
    assert announcing.hook_url("on_server_started") == BASE + "/on_server_started"
    off = Node().settings
    assert not off.enabled and not any(off.hook_url(name) for name in HOOKS)


def test_config_is_zlmediakit_flat_text_with_every_key_wvp_reads_and_no_secret() -> None:
    config = Node(hook_url=BASE).settings.config()
    for key in ("general.mediaServerId", "hook.alive_interval", "hook.enable",
                "hook.timeoutSec", "http.port", "http.sslport", "rtmp.port", "rtsp.port",
                "rtp_proxy.port", "rtp_proxy.port_range", *(f"hook.{n}" for n in HOOKS)):
        assert key in config
    assert all(isinstance(value, str) for value in config.values())
    assert (config["general.mediaServerId"], config["http.port"]) == ("node-1", "8080")
    assert config["rtp_proxy.port_range"] == "30000-30009"
    assert not any("secret" in key for key in config)


def test_an_ssl_api_is_the_sslport() -> None:
    node = Node(api="ssl:8443:privateKey=k.pem")
    config = node.settings.config()
    assert (config["http.port"], config["http.sslport"]) == ("0", "8080")


def test_set_counts_what_changed_ignores_unknown_keys_and_any_case() -> None:
    settings = Node().settings
    heard: list[frozenset[str]] = []
    settings.add_listener(heard.append)
    args = {"HOOK.ENABLE": "1", "hook.timeoutsec": "30", "hook.on_play": "",
            "protocol.continue_push_ms": "3000", "http.port": "80", "secret": "x",
            "hook.on_stream_changed": BASE + "/on_stream_changed"}
    assert settings.apply(args) == 3
    assert heard == [frozenset({"hook.enable", "hook.timeoutSec", "hook.on_stream_changed"})]
    assert settings.apply(args) == 0 and len(heard) == 1
    assert settings.hook_timeout == 30.0 and settings.enabled
    assert settings.config()["http.port"] == "8080", "read-only keys are not set"


@pytest.mark.parametrize(("key", "value"), [
    ("hook.alive_interval", "0"), ("hook.alive_interval", "nan"), ("hook.timeoutSec", "x"),
    ("hook.enable", "maybe"), ("hook.retry", "-1"), ("hook.on_play", "ftp://x/y"),
    ("rtp_proxy.port_range", "35000-30000"), ("general.mediaServerId", ""),
    ("hook.stream_changed_schemas", "rtsp/../x"),
])
def test_a_value_the_node_cannot_use_is_refused_and_nothing_is_applied(key: str,
                                                                        value: str) -> None:
    settings = Node().settings
    before = settings.config()
    with pytest.raises(ApiError) as refused:
        settings.apply({"hook.enable": "1", key: value})
    assert refused.value.code == codes.INVALID_ARGS and key in refused.value.msg
    assert settings.config() == before


def test_the_port_range_moves_for_new_leases_only() -> None:
    node = Node()
    lease = node.pool.listen(object(), "s1")  # type: ignore[arg-type]
    assert node.settings.apply({"rtp_proxy.port_range": "31000-31001"}) == 1
    assert node.settings.config()["rtp_proxy.port_range"] == "31000-31001"
    assert lease.port in range(30000, 30010) and not lease.released
    ports = {node.pool.listen(object(), f"n{i}").port for i in range(2)}  # type: ignore[arg-type]
    assert ports == {31000, 31001}
    node.pool.release(lease)
    assert node.pool.free_count == 0, "the old range's port does not come back"


def test_bind_keeps_the_deliverer_in_step() -> None:
    node = Node(hook_url=BASE)
    deliverer = HookDeliverer(node.clock, "")
    node.settings.bind(deliverer)
    assert deliverer.url == BASE + "/on_send_rtp_stopped" and deliverer.server_id == "node-1"
    node.settings.apply({"hook.enable": "0", "general.mediaServerId": "other",
                         "hook.timeoutSec": "3", "hook.retry": "1", "hook.retry_delay": "2"})
    assert (deliverer.url, deliverer.server_id) == ("", "other")
    assert (deliverer.timeout, deliverer.retries, deliverer.backoff) == (3.0, 1, 2.0)


def test_keepalives_every_alive_interval_on_the_clock() -> None:
    node = Node(hook_url=BASE, node_hooks=True, alive_interval=10)
    node.events.startService()
    node.clock.advance(0)
    assert node.deliverer.names() == ["on_server_started"]
    started = node.deliverer.bodies("on_server_started")[0]
    assert started == node.settings.config()
    for _ in range(95):
        node.clock.advance(1)
    assert node.deliverer.names().count("on_server_keepalive") == 9
    node.settings.apply({"hook.alive_interval": "2.5"})  # re-armed from now
    for _ in range(10):
        node.clock.advance(1)
    assert node.deliverer.names().count("on_server_keepalive") == 13
    _hook, url, body = node.deliverer.posts[-1]
    assert url == BASE + "/on_server_keepalive"
    assert set(body) == {"data"} and body["data"]["MediaSource"] == 0
    node.settings.apply({"hook.enable": "0"})
    node.clock.advance(30)
    assert node.deliverer.names().count("on_server_keepalive") == 13, "off: none sent"
    node.events.stopService()
    node.settings.apply({"hook.enable": "1"})
    node.clock.advance(30)
    assert node.deliverer.names().count("on_server_keepalive") == 13, "stopped: none sent"
    assert not node.clock.getDelayedCalls()


def test_streams_appear_and_go_once_per_schema() -> None:
    node = Node(hook_url=BASE, node_hooks=True, schemas=("rtsp", "rtmp"))
    node.events.startService()
    node.registry.add(ToneSource("broadcast", "a"))
    changes = node.deliverer.bodies("on_stream_changed")
    assert [(c["schema"], c["stream"], c["regist"]) for c in changes] == [
        ("rtmp", "a", True), ("rtsp", "a", True)]
    assert changes[1]["readerCount"] == 0 and changes[1]["tracks"][0]["sample_rate"] == 8000
    node.registry.remove("broadcast", "a")
    assert [(c["schema"], c["regist"]) for c in node.deliverer.bodies("on_stream_changed")[2:]
            ] == [("rtmp", False), ("rtsp", False)]
    assert set(node.deliverer.bodies("on_stream_changed")[-1]) == {
        "schema", "vhost", "app", "stream", "params", "regist"}


def test_a_source_that_ends_on_its_own_is_unregistered_by_the_next_check() -> None:
    node = Node(hook_url=BASE, node_hooks=True)
    node.events.startService()
    tone = node.registry.add(ToneSource("broadcast", "short", duration=0.04))
    assert [c["regist"] for c in node.deliverer.bodies("on_stream_changed")] == [True]
    tone.read_frame()
    tone.read_frame()
    assert tone.ended
    node.clock.advance(CHECK_INTERVAL)
    assert [c["regist"] for c in node.deliverer.bodies("on_stream_changed")] == [True, False]
    node.clock.advance(CHECK_INTERVAL * 5)
    assert len(node.deliverer.bodies("on_stream_changed")) == 2, "told once"


def test_while_hooks_are_off_nothing_is_sent_and_turning_them_on_tells_what_exists() -> None:
    node = Node()
    node.events.startService()
    node.registry.add(ToneSource("broadcast", "a"))
    node.registry.add(ToneSource("broadcast", "b"))
    node.registry.remove("broadcast", "b")
    node.clock.advance(60)
    assert node.deliverer.posts == []
    node.settings.apply({"hook.enable": "1", "hook.on_stream_changed": BASE + "/sc"})
    assert [(c["stream"], c["regist"]) for c in node.deliverer.bodies("on_stream_changed")] == [
        ("a", True)]
    node.settings.apply({"hook.stream_changed_schemas": "rtsp/ts"})
    assert [(c["schema"], c["regist"]) for c in node.deliverer.bodies("on_stream_changed")[1:]
            ] == [("ts", True)]
    node.events.stopService()


def test_the_view_filters_by_schema_app_and_stream_and_counts_readers() -> None:
    node = Node(schemas=("rtsp", "rtmp"))
    node.registry.add(ToneSource("broadcast", "a"))
    node.registry.add(ToneSource("live", "b"))
    assert [(s, src.stream) for s, src in node.view.streams()] == [
        ("rtsp", "a"), ("rtmp", "a"), ("rtsp", "b"), ("rtmp", "b")]
    assert [src.stream for _s, src in node.view.streams(schema="rtmp", app="live")] == ["b"]
    assert node.view.find("hls", "broadcast", "a") is None
    params = SessionParams(SessionKey(codes.DEFAULT_VHOST, "broadcast", "a", 1))
    node.manager.start(params, node.registry.find("broadcast", "a"))
    entry = node.view.entry("rtsp", node.view.find("rtsp", "broadcast", "a"))
    assert (entry["readerCount"], entry["schema"], entry["originTypeStr"]) == (1, "rtsp",
                                                                              "unknown")


@given(ssrc=st.integers(0, 2**32 - 1), zeros=st.integers(0, 5))
def test_the_ssrc_text_is_echoed_as_given(ssrc: int, zeros: int) -> None:
    text = "0" * zeros + str(ssrc)
    params = SessionParams(SessionKey(codes.DEFAULT_VHOST, "a", "b", ssrc), ssrc_text=text)
    assert params.ssrc_echo == text
    assert SessionParams(SessionKey(codes.DEFAULT_VHOST, "a", "b", ssrc)).ssrc_echo == (
        f"{ssrc:010d}")


@pytest.mark.parametrize(("delay", "seconds"), [
    ("10000000", 10_000.0), ("4294967295", 4_294_967.295), ("0", 5.0), ("", 5.0)])
def test_close_delay_ms_takes_zlmediakits_whole_uint32(delay: str, seconds: float) -> None:
    request = parse_zlm_start({"app": "broadcast", "stream": "tone", "ssrc": "777",
                               "close_delay_ms": delay}, 5.0)
    assert request.params.wait_timeout == seconds
    assert request.params.ssrc_text == "777" and request.params.key.ssrc == 777


@pytest.mark.parametrize("delay", ["4294967296", "-1", "1e9", "x"])
def test_close_delay_ms_beyond_uint32_is_refused(delay: str) -> None:
    with pytest.raises(ApiError) as refused:
        parse_zlm_start({"app": "broadcast", "stream": "tone", "ssrc": "1",
                         "close_delay_ms": delay}, 5.0)
    assert refused.value.code == codes.INVALID_ARGS and "close_delay_ms" in refused.value.msg
