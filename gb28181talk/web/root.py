"""The HTTP tree: ``/index/api`` (ZLMediaKit), ``/api`` (native), ``/metrics``; JSON 404s."""

from __future__ import annotations

import json
import re
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import combinedLogFormatter
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from gb28181talk import __version__
from gb28181talk.core.talk import TalkControl
from gb28181talk.web import codes
from gb28181talk.web.broadcast import BroadcastFlow, BroadcastResource, TalkFlow, TalkResource
from gb28181talk.web.channel import ApiSite, LimitedRequest
from gb28181talk.web.common import (
    Authenticator,
    JsonResource,
    NotFoundResource,
    RequestArgs,
    TextReply,
)
from gb28181talk.web.console import ConsoleFiles, serve, wants_page
from gb28181talk.web.devices import DeviceDirectory, DevicesResource
from gb28181talk.web.metrics import CONTENT_TYPE, Metrics
from gb28181talk.web.native import NativeApi
from gb28181talk.web.push import PushResource
from gb28181talk.web.zlm import ZlmApi
from gb28181talk.web.zlm_node import GetServerConfig, NodeSettings, SetServerConfig
from gb28181talk.web.zlm_rtp import RTP_ENDPOINTS
from gb28181talk.web.zlm_streams import CloseStreams, GetMediaInfo, GetMediaList, IsMediaOnline

log = Logger()

_HINT = "the API lives under /index/api/ (ZLMediaKit), /api/ (native) and /metrics"


class MetricsResource(JsonResource):
    """``/metrics``: the Prometheus text page (the secret, when set, as for the API)."""

    isLeaf = True

    def __init__(self, auth: Authenticator, metrics: Metrics) -> None:
        super().__init__(auth)
        self.metrics = metrics

    def on_GET(self, request: Request, args: RequestArgs) -> TextReply:
        return TextReply(self.metrics.render(), CONTENT_TYPE)

    def check_secret(self, args: RequestArgs) -> None:
        self.auth.check(args)


class RootResource(JsonResource):
    """``/``: the console page for browsers, a short JSON index for programs; unknown paths
    a JSON 404."""

    public = True

    def __init__(self, auth: Authenticator, console: ConsoleFiles | None = None) -> None:
        super().__init__(auth)
        self.hint = _HINT
        self.console = console

    def render(self, request: Request) -> bytes | int:
        if self.console is not None and wants_page(request):
            return serve(request, self.console.page)
        return super().render(request)

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"" and not request.postpath:
            return self
        return NotFoundResource(self.auth, True, _HINT)

    def on_GET(self, request: Request, args: RequestArgs) -> dict[str, Any]:
        return {"service": "gb28181talk", "version": __version__,
                "api": ["/index/api/", "/api/", "/metrics"], "console": "/"}


def build_root(
    auth: Authenticator, control: TalkControl, metrics: Metrics, reactor: Any,
    wait_timeout: float, node: NodeSettings | None = None,
    devices: DeviceDirectory | None = None,
    broadcasts: BroadcastFlow | None = None,
    talks: TalkFlow | None = None,
) -> Resource:
    """The whole resource tree of the service (``node``: the ZLMediaKit settings, else defaults;
    ``devices``: the SIP registry behind ``/api/devices``, ``broadcasts``/``talks`` the SIP
    flows behind ``/api/broadcast`` and ``/api/talk``; None when SIP is off)."""
    console = ConsoleFiles(auth)
    root = RootResource(auth, console)
    root.putChild(b"console", console)
    for own_name in (control.advertise_ip, control.manager.pool.interface):
        if own_name:
            auth.site.add_host(own_name)  # the API's own names beside localhost (crosssite.py)
    index = Resource()
    zlm_api = ZlmApi(auth, control, wait_timeout)
    node = node if node is not None else NodeSettings(control.manager.pool)
    for name, endpoint in (
        ("getMediaList", GetMediaList), ("getMediaInfo", GetMediaInfo),
        ("isMediaOnline", IsMediaOnline), ("close_streams", CloseStreams),
        ("getServerConfig", GetServerConfig), ("setServerConfig", SetServerConfig),
    ):
        zlm_api.putChild(name.encode("ascii"), endpoint(auth, control, wait_timeout, node))
    for name, rtp_endpoint in RTP_ENDPOINTS:
        zlm_api.putChild(name.encode("ascii"), rtp_endpoint(auth, control, wait_timeout))
    index.putChild(b"api", zlm_api)
    root.putChild(b"index", _Branch(auth, index))
    native = NativeApi(auth, control, reactor, wait_timeout, push=PushResource(control.registry))
    native.putChild(b"devices", DevicesResource(auth, devices))
    native.putChild(b"broadcast", BroadcastResource(auth, broadcasts))
    native.putChild(b"talk", TalkResource(auth, talks))
    root.putChild(b"api", native)
    root.putChild(b"metrics", MetricsResource(auth, metrics))
    return root


class _Branch(Resource):
    """A plain directory whose unknown children are JSON 404s."""

    def __init__(self, auth: Authenticator, inner: Resource) -> None:
        super().__init__()
        self.auth = auth
        self.inner = inner

    def getChildWithDefault(self, path: bytes, request: Request) -> Resource:
        if path in self.inner.children:
            return self.inner.children[path]
        return NotFoundResource(self.auth, True, _HINT)

    def render(self, request: Request) -> bytes:
        return NotFoundResource(self.auth, True, _HINT).render(request)


class JsonErrorRequest(LimitedRequest):
    """A request whose unexpected failures (outside our handlers) still answer JSON, not HTML."""

    def processingFailed(self, reason: Failure) -> Failure:
        log.failure("HTTP request {path} failed", failure=reason,
                    path=self.path.decode("utf-8", "replace"))
        body = json.dumps({"code": codes.OTHER_FAILED,
                           "msg": "internal error; the service log has the details"}).encode()
        self.setResponseCode(500)
        self.setHeader(b"content-type", b"application/json; charset=utf-8")
        self.setHeader(b"content-length", b"%d" % len(body))
        self.write(body)
        self.finish()
        return reason


_SECRET_IN_URI = re.compile(rb"(?i)([?&]secret=)[^&]*")


class _Redacted:
    """A request as the access log sees it, its ``secret`` parameter masked."""

    def __init__(self, request: Request) -> None:
        self._request = request
        self.uri = _SECRET_IN_URI.sub(rb"\1***", request.uri)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


def access_log_line(timestamp: str, request: Request) -> str:
    """The combined log format, without the API secret ZLMediaKit clients put in URLs."""
    return combinedLogFormatter(timestamp, _Redacted(request))


def build_site(root: Resource) -> Site:
    """A Site for the tree: JSON even for failures, secrets kept out of the access log."""
    site = ApiSite(root, getattr(root, "auth", None), requestFactory=JsonErrorRequest,
                   logFormatter=access_log_line)
    site.displayTracebacks = False
    site.noisy = False
    return site
