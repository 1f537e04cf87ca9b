"""The node's ZLMediaKit settings as platforms read and push them: getServerConfig, setServerConfig.

A platform built on ZLMediaKit (wvp-GB28181-pro) brings a media node online
by reading ``/index/api/getServerConfig``: ``data[0]`` is ZLMediaKit's
configuration flattened to ``section.key`` strings, of which it reads
``general.mediaServerId``, ``hook.alive_interval`` (a missing one is a
NullPointerException in wvp), ``rtp_proxy.port_range`` and the ports.  It
then pushes its hook URLs with ``/index/api/setServerConfig``, answered with
the number of settings ``changed``.

:class:`NodeSettings` holds those settings.  The writable ones are the
``hook.*`` keys (the URLs of every ZLMediaKit hook, ``enable``,
``timeoutSec``, ``alive_interval``, ``retry``, ``retry_delay``,
``stream_changed_schemas``), ``general.mediaServerId`` and
``rtp_proxy.port_range``; they take effect at once (the port range for new
leases).  The ports are read-only, computed from what the node serves (the
API's port as ``http.port``; no RTSP, RTMP or single RTP port: 0).
``api.secret`` is never shown nor set through the API.  As in ZLMediaKit, an
unknown key is ignored and not counted; unlike it, a value we cannot use is
refused (-300 naming the key) and then nothing is applied.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from twisted.logger import Logger

from gb28181talk.core.ports import PortPool, parse_port_range
from gb28181talk.errors import PortError
from gb28181talk.web import codes
from gb28181talk.web.common import ApiError, Authenticator
from gb28181talk.web.zlm import ZlmEndpoint

log = Logger()

DEFAULT_ALIVE_INTERVAL = 10.0
"""Seconds between ``on_server_keepalive`` hooks: ZLMediaKit's shipped config.ini value."""

DEFAULT_HOOK_TIMEOUT = 10.0
"""ZLMediaKit's ``hook.timeoutSec``: how long one hook POST may take."""

DEFAULT_SCHEMAS = ("rtsp",)
"""The schemas an audio source is offered under (wvp reads ``schema=rtsp`` only)."""

HOOKS = (
    "on_flow_report", "on_http_access", "on_play", "on_publish", "on_record_mp4",
    "on_record_ts", "on_rtp_server_timeout", "on_rtsp_auth", "on_rtsp_realm",
    "on_send_rtp_stopped", "on_server_exited", "on_server_keepalive", "on_server_started",
    "on_shell_login", "on_stream_changed", "on_stream_none_reader", "on_stream_not_found",
)
"""Every hook URL ZLMediaKit has (``hook.<name>``): all are stored, see :data:`FIRED_HOOKS`."""

FIRED_HOOKS = ("on_send_rtp_stopped", "on_server_keepalive", "on_server_started",
               "on_stream_changed")
"""The hooks a talk node fires; the other URLs are kept only so a platform reads them back."""

SCHEMA = re.compile(r"[A-Za-z0-9][A-Za-z0-9.]{0,15}")
"""One schema name of ``hook.stream_changed_schemas`` (``rtsp``, ``hls.fmp4``)."""

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

ChangeListener = Callable[[frozenset[str]], None]


def _number(key: str, text: str, low: float, high: float, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not low <= value <= high:
        raise ApiError(codes.INVALID_ARGS,
                       f"{key}={text!r} is not usable: give {what} from {low:g} to {high:g}")
    return value


def _check(key: str, text: str) -> None:
    """Raise ApiError (-300) unless ``text`` is a value this node can use for ``key``."""
    if key == "general.mediaServerId":
        if not text or len(text) > 128 or not text.isprintable():
            raise ApiError(codes.INVALID_ARGS, f"{key}={text!r} is not usable: give 1 to 128 "
                           "printable characters, e.g. your_server_id")
    elif key == "hook.enable":
        if text.lower() not in _TRUE | _FALSE:
            raise ApiError(codes.INVALID_ARGS, f"{key}={text!r} is not usable: give 1 or 0")
    elif key == "hook.timeoutSec":
        _number(key, text, 0.1, 600, "seconds")
    elif key == "hook.alive_interval":
        _number(key, text, 0.5, 86400, "seconds")
    elif key == "hook.retry":
        if not text.isascii() or not text.isdigit() or int(text) > 10:
            raise ApiError(codes.INVALID_ARGS,
                           f"{key}={text!r} is not usable: give a whole number from 0 to 10")
    elif key == "hook.retry_delay":
        _number(key, text, 0, 600, "seconds")
    elif key == "hook.stream_changed_schemas":
        names = [name for name in text.split("/") if name]
        if len(names) > 16 or not all(SCHEMA.fullmatch(name) for name in names):
            raise ApiError(codes.INVALID_ARGS, f"{key}={text!r} is not usable: give schema "
                           "names separated by '/', e.g. rtsp/rtmp (empty: rtsp)")
    elif key == "rtp_proxy.port_range":
        try:
            parse_port_range(text)
        except PortError as error:
            raise ApiError(codes.INVALID_ARGS, f"{key}: {error}") from None
    elif key.startswith("hook.on_") and text:
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname or len(text) > 2048:
            raise ApiError(codes.INVALID_ARGS, f"{key}={text!r} is not usable: give an http:// "
                           "or https:// URL, or nothing to turn the hook off")


class NodeSettings:
    """The ZLMediaKit settings of this node (``section.key`` to text), read and changed at run time.

    ``hook_url`` (``--hook-url``) is the base the hook URLs start from, as wvp
    lays them out (``<base>/on_send_rtp_stopped``), with hooks enabled; it
    sets ``on_send_rtp_stopped``, and with ``node_hooks`` (``--node-hooks``)
    ``on_server_started``, ``on_server_keepalive`` and ``on_stream_changed``
    too, so the node announces itself to that platform after every restart.
    Without it every URL is empty and hooks are off until a platform pushes
    them.  ``http_port`` tells the API's listening port once it is known.
    Listeners added with :meth:`add_listener` hear the keys each change set.
    """

    def __init__(
        self,
        pool: PortPool,
        *,
        server_id: str = "gbtalk",
        hook_url: str | None = None,
        api: str = "",
        alive_interval: float = DEFAULT_ALIVE_INTERVAL,
        hook_timeout: float = DEFAULT_HOOK_TIMEOUT,
        schemas: tuple[str, ...] = DEFAULT_SCHEMAS,
        retries: int = 3,
        retry_delay: float = 1.0,
        node_hooks: bool = False,
    ) -> None:
        self.pool = pool
        self.api = api
        self.http_port: Callable[[], int | None] = lambda: None
        base = hook_url.rstrip("/") if hook_url else ""
        self._values: dict[str, str] = {
            "general.mediaServerId": server_id,
            "hook.enable": "1" if base else "0",
            "hook.timeoutSec": f"{hook_timeout:g}",
            "hook.alive_interval": f"{alive_interval:g}",
            "hook.retry": str(retries),
            "hook.retry_delay": f"{retry_delay:g}",
            "hook.stream_changed_schemas": "/".join(schemas),
        }
        from_base = FIRED_HOOKS if node_hooks else ("on_send_rtp_stopped",)
        for name in HOOKS:
            self._values[f"hook.{name}"] = f"{base}/{name}" if base and name in from_base else ""
        self._by_lower = {key.lower(): key for key in (*self._values, "rtp_proxy.port_range")}
        self._listeners: list[ChangeListener] = []

    # -- typed views

    @property
    def server_id(self) -> str:
        """``general.mediaServerId``: the node's id in every hook."""
        return self._values["general.mediaServerId"]

    @property
    def enabled(self) -> bool:
        """``hook.enable``: whether any hook is sent."""
        return self._values["hook.enable"].strip().lower() in _TRUE

    @property
    def alive_interval(self) -> float:
        """``hook.alive_interval``: seconds between keepalives."""
        return float(self._values["hook.alive_interval"])

    @property
    def hook_timeout(self) -> float:
        """``hook.timeoutSec``: seconds one hook POST may take."""
        return float(self._values["hook.timeoutSec"])

    @property
    def retries(self) -> int:
        """``hook.retry``: further attempts after a failed hook."""
        return int(self._values["hook.retry"])

    @property
    def retry_delay(self) -> float:
        """``hook.retry_delay``: seconds before the first retry (doubling after)."""
        return float(self._values["hook.retry_delay"])

    @property
    def schemas(self) -> tuple[str, ...]:
        """``hook.stream_changed_schemas``: the schemas each audio source is a stream under."""
        names = tuple(dict.fromkeys(
            name for name in self._values["hook.stream_changed_schemas"].split("/") if name))
        return names or DEFAULT_SCHEMAS

    def hook_url(self, name: str) -> str:
        """Where hook ``name`` goes now; empty when hooks are off or it has no URL."""
        return self._values.get(f"hook.{name}", "") if self.enabled else ""

    # -- the ZLMediaKit view

    def config(self) -> dict[str, str]:
        """``getServerConfig``'s ``data[0]``: every key as text, sorted, never the secret."""
        port = self.http_port() or 0
        tls = self.api.strip().lower().startswith("ssl:")
        view = {
            **self._values,
            "general.enableVhost": "0",
            "http.port": str(0 if tls else port),
            "http.sslport": str(port if tls else 0),
            "rtmp.port": "0",
            "rtmp.sslport": "0",
            "rtsp.port": "0",
            "rtsp.sslport": "0",
            "rtp_proxy.port": "0",
            "rtp_proxy.port_range": f"{self.pool.low}-{self.pool.high}",
        }
        return dict(sorted(view.items()))

    def apply(self, args: Mapping[str, str]) -> int:
        """``setServerConfig``: check every known key, then set them; how many changed.

        Names are matched without regard to case (ZLMediaKit's arguments are
        case-insensitive); unknown and read-only keys are ignored.
        """
        wanted: dict[str, str] = {}
        for name, value in args.items():
            key = self._by_lower.get(str(name).lower())
            if key is None:
                continue
            text = str(value).strip()
            _check(key, text)
            wanted[key] = text
        changed: set[str] = set()
        for key, text in wanted.items():
            if key == "rtp_proxy.port_range":
                low, high = parse_port_range(text)
                if (low, high) != (self.pool.low, self.pool.high):
                    self.pool.set_range(low, high)
                    changed.add(key)
            elif self._values[key] != text:
                self._values[key] = text
                changed.add(key)
        if changed:
            log.info("node settings changed by setServerConfig: {keys}",
                     keys=", ".join(sorted(changed)))
            for listener in tuple(self._listeners):
                listener(frozenset(changed))
        return len(changed)

    def add_listener(self, listener: ChangeListener) -> None:
        """Call ``listener(changed_keys)`` after every change that set something."""
        self._listeners.append(listener)

    def bind(self, deliverer: Any) -> None:
        """Keep a HookDeliverer's URL, id, timeout and retries in step with these settings."""

        def update(_: frozenset[str] = frozenset()) -> None:
            deliverer.url = self.hook_url("on_send_rtp_stopped")
            deliverer.server_id = self.server_id
            deliverer.timeout = self.hook_timeout
            deliverer.retries = self.retries
            deliverer.backoff = self.retry_delay

        update()
        self.add_listener(update)


class GetServerConfig(ZlmEndpoint):
    """``getServerConfig``: ``{"data": [{"general.mediaServerId": ..., ...}]}``."""

    def __init__(self, auth: Authenticator, control: Any, wait_timeout: float,
                 node: NodeSettings) -> None:
        super().__init__(auth, control, wait_timeout)
        self.node = node

    def answer(self, args: dict[str, str]) -> dict[str, Any]:
        return {"data": [self.node.config()]}


class SetServerConfig(ZlmEndpoint):
    """``setServerConfig``: the settings given as arguments, ``{"changed": n}``."""

    def __init__(self, auth: Authenticator, control: Any, wait_timeout: float,
                 node: NodeSettings) -> None:
        super().__init__(auth, control, wait_timeout)
        self.node = node

    def answer(self, args: dict[str, str]) -> dict[str, Any]:
        return {"changed": self.node.apply(args)}
