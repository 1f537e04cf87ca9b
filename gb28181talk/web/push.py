"""Live audio pushed over a WebSocket (``/api/push/{app}/{stream}``) into a push source.

A client (a browser's microphone, a script streaming a file) creates a push
source with ``POST /api/sources`` (``kind: push`` with its sample rate,
channels and format), then opens a WebSocket to ``/api/push/{app}/{stream}``
and sends its audio as binary messages of any size.  This module is the web
side only: the protocol hands each message to the source
(:class:`~gb28181talk.sources.push.PushSource`, which decodes and resamples
it to 8 kHz mono) through the :class:`~gb28181talk.interfaces.IPushSource`
contract.

Refusals before the WebSocket opens are HTTP answers with a JSON body
``{"code": -500, "msg": ...}``: 404 for an unknown source, 409 for a source
that is not a push source or already has a pusher; a request that is not a
WebSocket handshake (a plain ``curl``) gets ``{"code": -300, ...}`` with 426
(no upgrade asked) or 400 (a malformed handshake) saying how to connect.  After it opens, a text
message (or a pusher that lost a race for the source) gets a text message
with the same JSON, then a close frame with code 1003 (text) or 1008 (policy)
and the reason.

Flow control: when the source's backlog passes ``max_backlog_ms`` the
pusher's TCP transport stops reading (``pauseProducing``), so the client's
sends back up in the kernel and a client pushing a whole file faster than
real time is slowed to the pace the pacer reads; reading resumes once the
backlog drains under half.  A push source nobody listens to is not read, so
its pusher stays paused until a talk session listens.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request
from twisted.web.websocket import WebSocketResource, WebSocketTransport
from wsproto import ConnectionType
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError
from zope.interface import implementer

from gb28181talk.errors import SourceError
from gb28181talk.interfaces import IPusher, IPushSource
from gb28181talk.sources.registry import SourceRegistry

if TYPE_CHECKING:
    from gb28181talk.sources.push import PushSource

log = Logger()

CLOSE_UNSUPPORTED_DATA = 1003
"""WebSocket close code for a text message (RFC 6455 §7.4.1)."""

CLOSE_POLICY = 1008
"""WebSocket close code for a pusher refused by policy (the source has one already)."""

CLOSE_GOING_AWAY = 1001
"""WebSocket close code sent when the push source is deleted."""

ERROR_CODE = -500
"""The ``code`` of every JSON refusal, as the ZLMediaKit-style API answers failures."""


NOT_WEBSOCKET_CODE = -300
"""The ``code`` of the refusal of a request that is not a WebSocket handshake."""


def _json_error(message: str, code: int = ERROR_CODE) -> str:
    return json.dumps({"code": code, "msg": message}, ensure_ascii=False)


@implementer(IPushProducer)
class _ReadPauser:
    """Pauses and resumes reading from the pusher's TCP connection for flow control."""

    def __init__(self, network: Any) -> None:
        self._network = network
        self.connected = True

    def pauseProducing(self) -> None:
        if self.connected:
            self._network.pauseProducing()

    def resumeProducing(self) -> None:
        if self.connected:
            self._network.resumeProducing()

    def stopProducing(self) -> None:
        if self.connected:
            self._network.loseConnection()


@implementer(IPusher)
class PushProtocol:
    """One pusher's WebSocket: binary messages are audio for its push source.

    ``source`` provides :class:`~gb28181talk.interfaces.IPushSource`; the
    protocol is its :class:`~gb28181talk.interfaces.IPusher`.
    """

    def __init__(self, source: PushSource, peer: str) -> None:
        self.source = source
        self.peer = peer
        self.transport: WebSocketTransport | None = None
        self._refusal: tuple[int, str] | None = None
        self._pauser: _ReadPauser | None = None
        self._gone = False
        if not source.claim(self):
            self._refusal = (CLOSE_POLICY, _busy_message(source))

    # -- WebSocketProtocol

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        if self._refusal is not None:
            code, reason = self._refusal
            log.info(
                "pusher {peer} refused for {app}/{stream}: {reason}",
                peer=self.peer, app=self.source.app, stream=self.source.stream, reason=reason,
            )
            self.refuse(code, reason)
            return
        network = getattr(self.transport, "transport", None)
        if network is not None and IPushProducer.providedBy(network):
            self._pauser = _ReadPauser(network)
            self.source.attach_producer(self._pauser)
        log.info(
            "pusher {peer} connected to {app}/{stream}",
            peer=self.peer, app=self.source.app, stream=self.source.stream,
        )

    def bytesMessageReceived(self, data: bytes | bytearray) -> None:
        if self._refusal is None and not self._gone:
            self.source.push_bytes(data)

    def textMessageReceived(self, message: str) -> None:
        if self._refusal is None and not self._gone:
            self.refuse(
                CLOSE_UNSUPPORTED_DATA,
                f"text messages are not audio; send binary {self.source.format} messages",
            )

    def pongReceived(self, payload: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        self._gone = True
        if self._pauser is not None:
            self._pauser.connected = False
        if self.source.release(self):
            log.info(
                "pusher {peer} left {app}/{stream}",
                peer=self.peer, app=self.source.app, stream=self.source.stream,
            )

    # -- ours: the pusher the source knows

    def source_closed(self, reason: str) -> None:
        """The source was deleted: hang up with close code 1001 and ``reason``."""
        self.refuse(CLOSE_GOING_AWAY, reason)

    def refuse(self, code: int, reason: str) -> None:
        """Tell the client why (a JSON text message), then close with ``code`` and ``reason``."""
        if self._refusal is None:
            self._refusal = (code, reason)
        if self._gone or self.transport is None:
            return
        self._gone = True
        if self._pauser is not None:
            self._pauser.connected = False
        self.transport.sendTextMessage(_json_error(reason))
        short = reason.encode("utf-8")[:123].decode("utf-8", "ignore")  # RFC 6455 limit
        self.transport.loseConnection(code, short)  # type: ignore[call-arg]


def _busy_message(source: PushSource) -> str:
    if source.ended:
        return f"push source {source.app}/{source.stream} has ended; create it again"
    peer = getattr(source.pusher, "peer", "another client")
    return (
        f"push source {source.app}/{source.stream} already has a pusher ({peer}); "
        "one pusher at a time, try again when it disconnects"
    )


class _PushFactory:
    """Builds the WebSocket protocol for one push source (a WebSocketServerFactory)."""

    def __init__(self, source: PushSource) -> None:
        self.source = source

    def buildProtocol(self, request: Request) -> PushProtocol:
        address = request.getClientAddress()
        host, port = getattr(address, "host", None), getattr(address, "port", None)
        peer = f"{host}:{port}" if host is not None else str(address)
        return PushProtocol(self.source, peer)


class _JsonRefusal(Resource):
    """An HTTP refusal with the API's JSON error body."""

    isLeaf = True

    def __init__(self, status: int, message: str, code: int = ERROR_CODE) -> None:
        super().__init__()
        self.status = status
        self.message = message
        self.code = code

    def render(self, request: Request) -> bytes:
        request.setResponseCode(self.status)
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        if self.status == 426:
            request.setHeader(b"upgrade", b"websocket")
            request.setHeader(b"connection", b"Upgrade")
        return _json_error(self.message, self.code).encode("utf-8")


def _not_a_handshake(request: Request, app: str, stream: str) -> _JsonRefusal | None:
    """The JSON refusal of a request that is not a valid WebSocket handshake, or None."""
    upgrade = request.getHeader(b"upgrade") or b""
    upgrade_text = upgrade.decode("latin-1") if isinstance(upgrade, bytes) else upgrade
    asked = request.method == b"GET" and "websocket" in upgrade_text.lower()
    problem = ""
    if asked:
        headers = [(name, value) for name, values in request.requestHeaders.getAllRawHeaders()
                   for value in values]
        try:
            H11Handshake(ConnectionType.SERVER).initiate_upgrade_connection(
                headers, request.path
            )
        except RemoteProtocolError as error:
            problem = f" (the handshake was refused: {error})"
        else:
            return None
    host = request.getHeader(b"host") or b"127.0.0.1:8080"
    host_text = host.decode("latin-1") if isinstance(host, bytes) else host
    url = f"ws://{host_text}/api/push/{app}/{stream}"
    return _JsonRefusal(
        400 if asked else 426,
        f"this is a WebSocket endpoint: connect with a WebSocket client (e.g. websocat "
        f"--binary {url}) and send binary audio messages{problem}",
        NOT_WEBSOCKET_CODE,
    )


_USAGE = (
    "open a WebSocket to /api/push/{app}/{stream} for a push source made with "
    'POST /api/sources {"kind": "push", ...}'
)


class PushResource(Resource):
    """``/api/push``: the WebSocket endpoint of every push source in ``registry``.

    Mount it as the ``push`` child of the ``api`` resource.  It looks the
    source up per request, so sources created later are reachable at once.
    """

    def __init__(self, registry: SourceRegistry) -> None:
        super().__init__()
        self.registry = registry

    def getChild(self, path: bytes, request: Request) -> Resource:
        app = path.decode("utf-8", "replace")
        postpath = request.postpath
        if not app or not postpath or not postpath[0]:
            return _JsonRefusal(404, f"no push source named in the URL; {_USAGE}")
        stream = postpath.pop(0).decode("utf-8", "replace")
        request.prepath.append(stream.encode("utf-8"))
        if postpath and any(postpath):
            return _JsonRefusal(404, f"nothing at {request.path.decode('utf-8', 'replace')}; "
                                f"{_USAGE}")
        postpath.clear()
        try:
            source = self.registry.get(app, stream)
        except SourceError as e:
            return _JsonRefusal(404, str(e))
        if not IPushSource.providedBy(source):
            return _JsonRefusal(
                409,
                f"source {app}/{stream} is a {source.kind} source; only push sources take "
                "WebSocket audio (create one with kind push)",
            )
        refusal = _not_a_handshake(request, app, stream)
        if refusal is not None:
            return refusal
        if source.pusher is not None or source.ended:
            return _JsonRefusal(409, _busy_message(source))
        return WebSocketResource(_PushFactory(source))

    def render(self, request: Request) -> bytes:
        return _JsonRefusal(404, f"no push source named in the URL; {_USAGE}").render(request)
