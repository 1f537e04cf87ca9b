"""The node-level hooks ZLMediaKit sends: on_server_started, on_server_keepalive, on_stream_changed.

A platform built on ZLMediaKit (wvp-GB28181-pro) keeps a media node online
only while ``on_server_keepalive`` arrives (wvp: within twice
``hook.alive_interval``), adopts a restarted node on ``on_server_started``
(the node's whole configuration, as ``getServerConfig`` shows it), and starts
a broadcast when ``on_stream_changed`` says the audio stream is registered.

:class:`NodeEvents` is a Twisted service that sends them through the
service's :class:`~gb28181talk.web.hooks.HookDeliverer` (same retries,
timeout and limits as ``on_send_rtp_stopped``), to the URLs and only while
``hook.enable`` says so, as the :class:`~gb28181talk.web.zlm_node.NodeSettings`
hold them now.  Its timers run on the clock it is given.

Stream events are a difference: the platform is told, once per schema, each
stream that appeared (``regist=true``, the stream's full ZLMediaKit JSON) or
went away (``regist=false``: schema, vhost, app, stream, params) since what
it was last told.  The registry's listener makes an added or removed source
known at once; a source that ends on its own (a tone with a duration, a file
without ``loop``) is seen by the next check, every :data:`CHECK_INTERVAL`
seconds.  While hooks are off nothing is sent and nothing is forgotten: when
a platform turns them on, it hears the streams that exist.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from gb28181talk import __version__
from gb28181talk.core.params import SessionState
from gb28181talk.web import codes
from gb28181talk.web.zlm_node import NodeSettings
from gb28181talk.web.zlm_streams import StreamView

log = Logger()

CHECK_INTERVAL = 1.0
"""Seconds between checks for sources that ended on their own."""

StreamName = tuple[str, str, str]
"""(schema, app, stream)."""


class NodeEvents(Service):
    """Sends on_server_started at start, on_server_keepalive on a timer, on_stream_changed."""

    name = "node events"

    def __init__(self, clock: Any, node: NodeSettings, deliverer: Any, view: StreamView) -> None:
        self.clock = clock
        self.node = node
        self.deliverer = deliverer
        self.view = view
        self.reported: set[StreamName] = set()
        self.keepalives_sent = 0
        self._keepalive: LoopingCall | None = None
        self._checker: LoopingCall | None = None
        self._starting: Any = None
        node.add_listener(self._settings_changed)
        add_listener = getattr(view.control.registry, "add_listener", None)
        if add_listener is not None:
            add_listener(lambda _event, _source: self.sync_streams())

    # -- the service

    def startService(self) -> None:
        super().startService()
        # A turn later: the services started after this one (the API) listen by then.
        self._starting = self.clock.callLater(0, self.server_started)
        self._arm_keepalive()
        self._checker = self._loop(self.sync_streams, CHECK_INTERVAL)
        self.sync_streams()

    def stopService(self) -> Any:
        if self._starting is not None and self._starting.active():
            self._starting.cancel()
        for loop in (self._keepalive, self._checker):
            if loop is not None and loop.running:
                loop.stop()
        self._keepalive = self._checker = None
        return super().stopService()

    def _loop(self, call: Any, interval: float) -> LoopingCall:
        loop = LoopingCall(call)
        loop.clock = self.clock
        loop.start(interval, now=False).addErrback(
            lambda failure: log.failure("node event timer failed", failure=failure))
        return loop

    def _arm_keepalive(self) -> None:
        if self._keepalive is not None and self._keepalive.running:
            self._keepalive.stop()
        self._keepalive = self._loop(self.keepalive, self.node.alive_interval)

    def _settings_changed(self, keys: frozenset[str]) -> None:
        if not self.running:
            return
        if "hook.alive_interval" in keys:
            self._arm_keepalive()
        self.sync_streams()

    # -- the hooks

    def _post(self, hook: str, body: dict[str, Any]) -> bool:
        url = self.node.hook_url(hook)
        if not url:
            return False
        self.deliverer.post(hook, url, body)  # it adds mediaServerId and hook_index
        return True

    def server_started(self) -> bool:
        """POST ``on_server_started``: the whole configuration; False when there is no URL."""
        return self._post("on_server_started", self.node.config())

    def keepalive(self) -> bool:
        """POST one ``on_server_keepalive`` with the node's figures (ZLMediaKit's ``data``)."""
        sessions = self.view.control.manager.sessions()
        listening = sum(1 for session in sessions if session.state is SessionState.LISTENING)
        data = {
            "MediaSource": len(self.view.streams()),
            "TcpServer": listening,
            "TcpSession": len(sessions) - listening,
            "sources": len(self.view.control.registry.list()),
            "talk_sessions": len(sessions),
            "version": __version__,
        }
        sent = self._post("on_server_keepalive", {"data": data})
        self.keepalives_sent += sent
        return sent

    def sync_streams(self) -> None:
        """Tell the platform each stream that appeared or went away since it was last told."""
        if not self.running or not self.node.hook_url("on_stream_changed"):
            return
        now = {(schema, source.app, source.stream): (schema, source)
               for schema, source in self.view.streams()}
        for name in sorted(self.reported - now.keys()):
            schema, app, stream = name
            self._post("on_stream_changed", {
                "schema": schema, "vhost": codes.DEFAULT_VHOST, "app": app, "stream": stream,
                "params": "", "regist": False,
            })
            self.reported.discard(name)
        for name in sorted(now.keys() - self.reported):
            schema, source = now[name]
            self._post("on_stream_changed", {**self.view.entry(schema, source), "regist": True})
            self.reported.add(name)
