"""Live audio pushed over a WebSocket (``/api/push/{app}/{stream}``) into a push source.

A client (a browser's microphone, a script streaming a file) creates a push
source with ``POST /api/sources`` (``kind: push`` with its sample rate,
channels and format), then opens a WebSocket to ``/api/push/{app}/{stream}``
and sends its audio as binary messages of up to 1 MiB.  This module is the web
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

Messages are not assembled: Twisted's WebSocket layer would buffer each
message whole (re-copying it on every fragment) before handing it over, so the
protocol puts :class:`_StreamedMessage` in place of that buffer and each
fragment goes to the source as it arrives (wsproto hands over every TCP read's
part of a frame).  A message over ``max_message_bytes`` (1 MiB by default) is
closed with code 1009 "message too big"; a text message is refused at its
first fragment.  Nothing of a message is held, so a pusher that hangs up
mid-message leaves nothing behind.

Pace: a pusher may hand its source at most twice real time of its declared
format plus a 2 s burst (:class:`~gb28181talk.web.push_pace.PushPace`, kept by the
source across pushers), and at most 8 KiB is decoded per reactor turn; while
either bound holds bytes back the TCP reading is paused, so what a fast pusher
sends waits in its kernel buffers and its decoding never takes more than a
small slice of the reactor.  Bytes read but not yet decoded when the pusher
hangs up (at most one read) are dropped.

Flow control: when the source's backlog passes ``max_backlog_ms`` the
pusher's TCP transport stops reading (``pauseProducing``), so the client's
sends back up in the kernel and a client pushing a whole file faster than
real time is slowed to the pace the pacer reads; reading resumes once the
backlog drains under half.  A push source nobody listens to is not read, so
its pusher stays paused until a talk session listens.  A paused socket is not
read, so a client that hangs up then is noticed by peeking at the socket
(Linux sees the FIN behind unread data): when another pusher asks for the
source, or on a check every second while nobody reads the source, the gone
pusher is dropped (what it sent that was never read is discarded; what the
source already holds still plays) and the source is free again.
"""

from __future__ import annotations

import json
import select
import socket
import sys
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
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
from gb28181talk.web.push_pace import PACE_FACTOR, TURN_BYTES, PushPace

if TYPE_CHECKING:
    from gb28181talk.sources.push import PushSource

log = Logger()

CLOSE_UNSUPPORTED_DATA = 1003
"""WebSocket close code for a text message (RFC 6455 §7.4.1)."""

CLOSE_POLICY = 1008
"""WebSocket close code for a pusher refused by policy (the source has one already)."""

CLOSE_GOING_AWAY = 1001
"""WebSocket close code sent when the push source is deleted."""

CLOSE_TOO_BIG = 1009
"""WebSocket close code for a message over the size limit (RFC 6455 §7.4.1)."""

MAX_MESSAGE_BYTES = 1024 * 1024
"""Largest binary message a pusher may send: 1 MiB (5.5 s of 48 kHz stereo PCM16).

Messages are streamed, so this bounds no buffer; it ends a pusher that never
finishes a message (continuation frames forever), which is no audio client."""

ERROR_CODE = -500
"""The ``code`` of every JSON refusal, as the ZLMediaKit-style API answers failures."""


NOT_WEBSOCKET_CODE = -300
"""The ``code`` of the refusal of a request that is not a WebSocket handshake."""


HANGUP_CHECK_SECONDS = 1.0
"""How often a paused pusher's socket is checked for the client's hang-up (FIN or RST)."""


def peer_hung_up(handle: Any) -> bool:
    """Whether the peer has closed or reset the socket ``handle``, even with data unread.

    A paused pusher's socket is not read, so its FIN waits behind the unread
    audio; on Linux ``POLLRDHUP`` sees it there.  Elsewhere a peek sees the
    end only once nothing is left unread.
    """
    try:
        fd = handle.fileno()
    except (AttributeError, OSError, ValueError):
        return True
    if fd < 0:
        return True
    rdhup = getattr(select, "POLLRDHUP", 0)
    if rdhup and hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, rdhup)
        gone = rdhup | select.POLLHUP | select.POLLERR | select.POLLNVAL
        return any(events & gone for _, events in poller.poll(0))
    try:
        return handle.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def _json_error(message: str, code: int = ERROR_CODE) -> str:
    return json.dumps({"code": code, "msg": message}, ensure_ascii=False)


@implementer(IPushProducer)
class _ReadPauser:
    """Pauses and resumes reading from the pusher's TCP connection for flow control.

    A paused socket is not read, so the client's hang-up (its FIN) is never
    seen there: while paused, every :data:`HANGUP_CHECK_SECONDS` on ``clock``
    the socket is checked, and ``hung_up`` is called once the client has gone
    while nothing was read from the source since the last check (nobody
    listens, so reading would never resume).  While the source is read,
    reading resumes in time and the FIN is read as usual.
    """

    def __init__(
        self, network: Any, clock: IReactorTime | None, progress: Callable[[], int],
        hung_up: Callable[[], None],
    ) -> None:
        self._network = network
        self._clock = clock
        self._progress = progress
        self._hung_up = hung_up
        self._progress_at = 0
        self._check: IDelayedCall | None = None
        self.connected = True
        self.paused = False
        self.held = False
        """Reading is stopped by the pusher's pace, not by the backlog."""

    def pauseProducing(self) -> None:
        if self.connected:
            self.paused = True
            if not self.held:
                self._network.pauseProducing()
            self._progress_at = self._progress()
            self._schedule()

    def resumeProducing(self) -> None:
        self.paused = False
        self._cancel()
        if self.connected and not self.held:
            self._network.resumeProducing()

    def hold(self) -> None:
        """Stop reading for the pace (bytes wait for the clock or the next turn)."""
        if self.connected and not self.held:
            self.held = True
            if not self.paused:
                self._network.pauseProducing()

    def release_hold(self) -> None:
        """The pace lets bytes through again: read, unless the backlog pauses reading."""
        if self.held:
            self.held = False
            if self.connected and not self.paused:
                self._network.resumeProducing()

    def stopProducing(self) -> None:
        self._cancel()
        if self.connected:
            self._network.loseConnection()

    def peer_gone(self) -> bool:
        """Whether reading is paused and the client has hung up meanwhile."""
        if not (self.connected and self.paused):
            return False
        handle = _socket_of(self._network)
        return handle is not None and peer_hung_up(handle)

    def unread_bytes(self) -> int | None:
        """Bytes the client sent that wait unread in the kernel, where the OS tells."""
        handle = _socket_of(self._network)
        try:
            import fcntl
            import termios

            answer = fcntl.ioctl(handle.fileno(), termios.FIONREAD, b"\0\0\0\0")
        except (AttributeError, ImportError, OSError, ValueError):
            return None
        return int.from_bytes(answer, sys.byteorder)

    def disconnect(self) -> None:
        """The connection is gone or being dropped: touch it no more."""
        self.connected = False
        self._cancel()

    def abort(self) -> None:
        """Drop the connection at once; what it has not read is discarded."""
        self.disconnect()
        abort = getattr(self._network, "abortConnection", None)
        (abort or self._network.loseConnection)()

    def _schedule(self) -> None:
        if self._check is None and self._clock is not None:
            self._check = self._clock.callLater(HANGUP_CHECK_SECONDS, self._paused_check)

    def _cancel(self) -> None:
        if self._check is not None:
            if self._check.active():
                self._check.cancel()
            self._check = None

    def _paused_check(self) -> None:
        self._check = None
        if not (self.connected and self.paused):
            return
        progress = self._progress()
        if progress == self._progress_at and self.peer_gone():
            self._hung_up()
            return
        self._progress_at = progress
        self._schedule()


def _socket_of(network: Any) -> Any:
    """The socket under a pusher's transport (under TLS too), else the first handle, or None."""
    layer, first = network, None
    for _ in range(4):
        get_handle = getattr(layer, "getHandle", None)
        if get_handle is not None:
            handle = get_handle()
            if isinstance(handle, socket.socket):
                return handle
            first = handle if first is None else first
        layer = getattr(layer, "transport", None)
        if layer is None:
            break
    return first


def _reactor_of(network: Any) -> IReactorTime | None:
    """The reactor a pusher's connection runs on (under TLS too), for the paused check."""
    layer = network
    for _ in range(4):
        reactor = getattr(layer, "reactor", None)
        if reactor is not None and hasattr(reactor, "callLater"):
            return reactor  # type: ignore[no-any-return]
        layer = getattr(layer, "transport", None)
        if layer is None:
            break
    return None


class _StreamedMessage:
    """Stands in for Twisted's per-message buffer: each fragment is handed on as it arrives.

    Twisted's ``_WebSocketWireProtocol`` assembles a message with ``add`` per
    fragment and ``done`` at its end; this passes each fragment to
    ``fragment`` and tells ``ended`` at the end, holding nothing.  ``done``
    returns an empty message, which the protocol's ``...MessageReceived``
    ignores.
    """

    __slots__ = ("_empty", "_ended", "_fragment")

    def __init__(
        self, fragment: Callable[[Any], None], ended: Callable[[], None], empty: Any
    ) -> None:
        self._fragment = fragment
        self._ended = ended
        self._empty = empty

    def add(self, new: Any) -> None:
        self._fragment(new)

    def done(self) -> Any:
        self._ended()
        return self._empty


@implementer(IPusher)
class PushProtocol:
    """One pusher's WebSocket: binary messages are audio for its push source.

    ``source`` provides :class:`~gb28181talk.interfaces.IPushSource`; the
    protocol is its :class:`~gb28181talk.interfaces.IPusher`.
    """

    def __init__(
        self, source: PushSource, peer: str, max_message_bytes: int = MAX_MESSAGE_BYTES,
        clock: IReactorTime | None = None, pace_factor: float = PACE_FACTOR,
    ) -> None:
        self.source = source
        self.peer = peer
        self.max_message_bytes = max_message_bytes
        self.pace_factor = pace_factor
        """Times real time a pusher may push (the source's pace, made by its first pusher)."""
        self.clock = clock
        """Runs the paused check; None: the reactor the connection runs on."""
        self.transport: WebSocketTransport | None = None
        self._refusal: tuple[int, str] | None = None
        self._pauser: _ReadPauser | None = None
        self._gone = False
        self._streamed = False
        self._message_bytes = 0
        self._pace: PushPace | None = None
        self._pending: deque[tuple[Any, bool]] = deque()
        """Fragments read but not yet decoded, with whether each ends its message."""
        self._pending_bytes = 0
        self._turn: IDelayedCall | None = None
        free_if_hung_up(source)
        if not source.claim(self):
            self._refusal = (CLOSE_POLICY, _busy_message(source))

    # -- WebSocketProtocol

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self.transport = transport
        # Below Twisted's message assembly: take each fragment as it arrives.
        if hasattr(transport, "_bytesBuffer") and hasattr(transport, "_textBuffer"):
            transport._bytesBuffer = _StreamedMessage(  # type: ignore[attr-defined]
                self._binary_fragment, self._binary_ended, b""
            )
            transport._textBuffer = _StreamedMessage(  # type: ignore[attr-defined]
                self._text_fragment, _nothing, ""
            )
            self._streamed = True

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
            self._pauser = _ReadPauser(
                network, self.clock or _reactor_of(network),
                lambda: int(self.source.describe()["frames_read"]),
                lambda: self.abandon("nobody is reading the source"),
            )
            self.source.attach_producer(self._pauser)
            clock = self.clock or _reactor_of(network)
            if clock is not None:
                self._pace = _pace_of(self.source, clock, self.pace_factor)
        log.info(
            "pusher {peer} connected to {app}/{stream}",
            peer=self.peer, app=self.source.app, stream=self.source.stream,
        )

    def bytesMessageReceived(self, data: bytes | bytearray) -> None:
        if self._streamed:  # every fragment was taken as it came
            return
        self._binary_fragment(data)
        self._binary_ended()

    def textMessageReceived(self, message: str) -> None:
        if not self._streamed:
            self._text_fragment(message)

    # -- the fragments of a message, as they arrive

    def _binary_fragment(self, data: bytes | bytearray) -> None:
        if self._refusal is not None or self._gone:
            return
        self._message_bytes += len(data)
        if self._message_bytes > self.max_message_bytes:
            log.warn(
                "pusher {peer} of {app}/{stream} sent a message over {limit} bytes; closed "
                "with 1009", peer=self.peer, app=self.source.app, stream=self.source.stream,
                limit=self.max_message_bytes,
            )
            self.refuse(
                CLOSE_TOO_BIG,
                f"message too big: over {self.max_message_bytes} bytes; send the audio in "
                "smaller messages (20 to 100 ms each)",
            )
            return
        if self._pace is None:
            self.source.push_bytes(data, message_end=False)
        elif data:
            self._pending.append((data, False))
            self._pending_bytes += len(data)
            self._feed_pending()

    def _binary_ended(self) -> None:
        if self._refusal is None and not self._gone:
            self._message_bytes = 0
            if self._pace is None:
                self.source.push_bytes(b"", message_end=True)
            else:
                self._pending.append((b"", True))
                self._feed_pending()

    def _feed_pending(self) -> None:
        """Decode what was read, within the pace and at most TURN_BYTES this turn.

        What is left waits, with the TCP reading stopped, for the next turn
        (``callLater(0)``) or, when the pace is spent, for the clock.
        """
        pace = self._pace
        if pace is None or (self._turn is not None and self._turn.active()):
            return
        self._turn = None
        pending, turn = self._pending, TURN_BYTES
        while pending and turn > 0 and not self._gone:
            data, ends = pending[0]
            if not data:
                pending.popleft()
                self.source.push_bytes(b"", message_end=True)
                continue
            if pace.available() <= 0:
                break
            piece = data[:turn]
            if len(piece) < len(data):
                pending[0] = (data[len(piece):], ends)
            else:
                pending.popleft()
            self._pending_bytes -= len(piece)
            turn -= len(piece)
            pace.take(len(piece))
            self.source.push_bytes(piece, message_end=False)
        if self._gone or self._pauser is None:
            return
        if not pending:
            self._pauser.release_hold()
            return
        self._pauser.hold()
        delay = 0.0 if pace.available() > 0 else pace.wait_seconds()
        self._turn = pace.clock.callLater(delay, self._feed_pending)

    def _drop_pending(self) -> int:
        """Forget what was read but not decoded (the pusher is gone); the bytes dropped."""
        if self._turn is not None and self._turn.active():
            self._turn.cancel()
        self._turn = None
        dropped = self._pending_bytes
        self._pending.clear()
        self._pending_bytes = 0
        return dropped

    def _text_fragment(self, text: str) -> None:
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
            self._pauser.disconnect()
        dropped = self._drop_pending()
        if self.source.release(self):
            log.info(
                "pusher {peer} left {app}/{stream}{dropped}",
                peer=self.peer, app=self.source.app, stream=self.source.stream,
                dropped=f" ({dropped} bytes read but not yet decoded were dropped)"
                if dropped else "",
            )

    # -- ours: the pusher the source knows

    def source_closed(self, reason: str) -> None:
        """The source was deleted: hang up with close code 1001 and ``reason``."""
        self.refuse(CLOSE_GOING_AWAY, reason)

    def hung_up_while_paused(self) -> bool:
        """Whether the client hung up while its reading was paused (the FIN waits unread)."""
        return not self._gone and self._pauser is not None and self._pauser.peer_gone()

    def abandon(self, why: str) -> None:
        """The client hung up while paused: free the source (its audio stays) and drop us."""
        if self._gone or self._pauser is None:
            return
        self._gone = True
        self._drop_pending()
        pauser = self._pauser
        unread = pauser.unread_bytes()
        self.source.release(self)
        log.info(
            "pusher {peer} of {app}/{stream} hung up while its reading was paused (the "
            "backlog was full); {why}, so the source is free again ({unread} bytes it sent "
            "were never read)", peer=self.peer, app=self.source.app, stream=self.source.stream,
            why=why, unread="?" if unread is None else unread,
        )
        pauser.abort()

    def refuse(self, code: int, reason: str) -> None:
        """Tell the client why (a JSON text message), then close with ``code`` and ``reason``."""
        if self._refusal is None:
            self._refusal = (code, reason)
        if self._gone or self.transport is None:
            return
        self._gone = True
        if self._pauser is not None:
            self._pauser.disconnect()
        self._drop_pending()
        self.transport.sendTextMessage(_json_error(reason))
        short = reason.encode("utf-8")[:123].decode("utf-8", "ignore")  # RFC 6455 limit
        self.transport.loseConnection(code, short)  # type: ignore[call-arg]


def _pace_of(source: PushSource, clock: IReactorTime, factor: float) -> PushPace | None:
    """The source's pace on ``clock`` (made at its first paced pusher), or None (no format)."""
    pace = getattr(source, "pace", None)
    if isinstance(pace, PushPace) and pace.clock is clock:
        return pace
    rate = getattr(source, "bytes_per_second", 0)
    if not rate:
        return None
    pace = PushPace(rate, clock, factor)
    source.pace = pace
    return pace


def free_if_hung_up(source: PushSource) -> None:
    """Take ``source`` from a pusher that hung up while paused, so a new pusher can have it."""
    pusher = source.pusher
    if isinstance(pusher, PushProtocol) and pusher.hung_up_while_paused():
        pusher.abandon("a new pusher asks for the source")


def _nothing() -> None:
    """The end of a text message: it was refused at its first fragment."""


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

    def __init__(self, source: PushSource, max_message_bytes: int, pace_factor: float) -> None:
        self.source = source
        self.max_message_bytes = max_message_bytes
        self.pace_factor = pace_factor

    def buildProtocol(self, request: Request) -> PushProtocol:
        address = request.getClientAddress()
        host, port = getattr(address, "host", None), getattr(address, "port", None)
        peer = f"{host}:{port}" if host is not None else str(address)
        return PushProtocol(
            self.source, peer, self.max_message_bytes, pace_factor=self.pace_factor
        )


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
    A binary message over ``max_message_bytes`` is closed with 1009; a pusher
    may push ``pace_factor`` times real time (plus a burst).
    """

    def __init__(
        self, registry: SourceRegistry, max_message_bytes: int = MAX_MESSAGE_BYTES,
        pace_factor: float = PACE_FACTOR,
    ) -> None:
        super().__init__()
        self.registry = registry
        self.max_message_bytes = max_message_bytes
        self.pace_factor = pace_factor

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
        free_if_hung_up(source)
        if source.pusher is not None or source.ended:
            return _JsonRefusal(409, _busy_message(source))
        return WebSocketResource(
            _PushFactory(source, self.max_message_bytes, self.pace_factor)
        )

    def render(self, request: Request) -> bytes:
        return _JsonRefusal(404, f"no push source named in the URL; {_USAGE}").render(request)
