"""Live audio pushed over a WebSocket (``/api/push/{app}/{stream}``) into a push source.

A client (a browser's microphone, a script streaming a file) creates a push
source with ``POST /api/sources`` (``kind: push`` with its sample rate,
channels and format), then opens a WebSocket to ``/api/push/{app}/{stream}``
and sends its audio as binary messages of any size.  The audio is decoded
and resampled to 8 kHz mono as it arrives.

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
from typing import Any

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

from gb28181talk.errors import MediaError, SourceError
from gb28181talk.media import g711
from gb28181talk.media.law import Law
from gb28181talk.sources.registry import LiveSource, SourceRegistry

log = Logger()

FORMATS = ("pcm16", "alaw", "ulaw")
"""What a pusher's binary messages hold: little-endian PCM16, or G.711 code words."""

CLOSE_UNSUPPORTED_DATA = 1003
"""WebSocket close code for a text message (RFC 6455 §7.4.1)."""

CLOSE_POLICY = 1008
"""WebSocket close code for a pusher refused by policy (the source has one already)."""

CLOSE_GOING_AWAY = 1001
"""WebSocket close code sent when the push source is deleted."""

ERROR_CODE = -500
"""The ``code`` of every JSON refusal, as the ZLMediaKit-style API answers failures."""


class PushSource(LiveSource):
    """A live source fed by :meth:`push_bytes`, from one WebSocket pusher at a time.

    ``format`` says what the pushed bytes are ("pcm16" little-endian, "alaw",
    "ulaw"), at ``sample_rate`` Hz with ``channels`` interleaved channels;
    they are decoded and resampled to 8 kHz mono on arrival.  Partial samples
    at the end of a message are kept for the next one.
    """

    def __init__(
        self,
        app: str,
        stream: str,
        sample_rate: int = 8000,
        channels: int = 1,
        format: str = "pcm16",
        max_backlog_ms: int = 2000,
        prefill_ms: int = 60,
    ) -> None:
        super().__init__(app, stream, "push", max_backlog_ms, prefill_ms)
        if format not in FORMATS:
            raise SourceError(
                f"push format {format!r} is not supported; use {', '.join(map(repr, FORMATS))}"
            )
        if channels not in (1, 2):
            raise SourceError(f"push channels {channels!r} is not supported; use 1 or 2")
        self.sample_rate = sample_rate
        self.channels = channels
        self.format = format
        self._law = None if format == "pcm16" else Law.from_name(format)
        self._sample_bytes = (2 if self._law is None else 1) * channels
        self._carry = b""
        self._resampler: Any = self._new_resampler()
        self.pusher: Any = None
        """The connected pusher (a :class:`PushProtocol`), or None."""
        self._bytes_received = 0
        self._messages_received = 0
        self._pushers_total = 0

    def _new_resampler(self) -> Any:
        """A StreamResampler to 8 kHz mono, or None when the input is already that."""
        if self.sample_rate == 8000 and self.channels == 1:
            return None
        from gb28181talk.media.resample import StreamResampler

        try:
            return StreamResampler(self.sample_rate, self.channels)
        except (MediaError, ValueError) as e:
            raise SourceError(
                f"push audio at {self.sample_rate} Hz, {self.channels} channel(s) cannot be "
                f"resampled: {e}"
            ) from e

    def push_bytes(self, data: bytes | bytearray) -> None:
        """Decode and resample one pushed message and feed it to the backlog."""
        if self._closed:
            return
        self._messages_received += 1
        self._bytes_received += len(data)
        if self._carry:
            data = self._carry + data
        whole = len(data) - len(data) % self._sample_bytes
        self._carry = bytes(data[whole:])
        if not whole:
            return
        pcm = bytes(data[:whole]) if whole != len(data) or type(data) is not bytes else data
        if self._law is not None:
            pcm = g711.decode(self._law, pcm)
        if self._resampler is not None:
            pcm = self._resampler.feed(pcm)
        self.feed_pcm(pcm)

    def claim(self, pusher: Any) -> bool:
        """Make ``pusher`` the one pusher; False if there is one already or the source ended."""
        if self.pusher is not None or self.ended:
            return False
        self.pusher = pusher
        self._pushers_total += 1
        return True

    def release(self, pusher: Any) -> bool:
        """``pusher`` left: stop flow-controlling it and flush its audio; False if not ours."""
        if self.pusher is not pusher:
            return False
        self.pusher = None
        self.detach_producer()
        self.end_of_push()
        return True

    def end_of_push(self) -> None:
        """A pusher left: flush the resampler so its last audio plays, start clean for the next."""
        self._carry = b""
        if self._resampler is not None:
            tail = self._resampler.flush()  # also starts it afresh
            if tail:
                self.feed_pcm(tail)

    def describe(self) -> dict[str, Any]:
        """Live counters plus the push format and who is pushing."""
        info = super().describe()
        info.update(
            sample_rate=self.sample_rate,
            channels=self.channels,
            format=self.format,
            pusher=None if self.pusher is None else getattr(self.pusher, "peer", "?"),
            bytes_received=self._bytes_received,
            messages_received=self._messages_received,
            pushers_total=self._pushers_total,
        )
        return info

    def close(self) -> None:
        """End the source and disconnect its pusher (close code 1001)."""
        pusher = self.pusher
        super().close()
        if pusher is not None:
            pusher.refuse(CLOSE_GOING_AWAY, "the push source was deleted")


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


class PushProtocol:
    """One pusher's WebSocket: binary messages are audio for its push source."""

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

    # -- ours

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
        if not isinstance(source, PushSource):
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
