"""SIP over UDP, TCP and TLS: thin Twisted adapters that feed the parsers and answer the source.

Each adapter turns bytes into messages (:func:`parse_datagram` per UDP
datagram, a :class:`StreamParser` per connection), stamps the top Via of a
request with ``received`` and ``rport`` (RFC 3261 §18.2.1, RFC 3581), and
hands the message with its :class:`~gb28181talk.sip.transaction.Channel` to
a receiver (a ``TransactionLayer``).  The channel of a datagram is the
address it came from, the channel of a stream is its connection: answers and
later requests go where the device's requests came from, through its NAT.

A message the parsers refuse gets its 400/413/505 answer when it can be
answered, and is dropped otherwise, with one log line either way; a refused
stream is closed (it cannot be framed again).  Each source has a budget, one
:class:`TokenBucket` rule: a UDP source (address and port) 50 datagrams a
second with a burst of 200, its excess dropped unread; a TCP/TLS connection
the same in messages plus a budget of bytes, past which it is not read until
the buckets refill, and closed if it stays over budget (:class:`StreamLimits`).

Where to listen is a string:
``udp:5060[:interface=ADDR]`` (Twisted has no UDP server endpoint string),
or any Twisted server endpoint for streams (``tcp:5060``, ``ssl:5061:...``).
"""

from __future__ import annotations

import contextlib
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.error import MessageLengthError
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime, ISSLTransport
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.internet.protocol import Protocol as StreamProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from gb28181talk.errors import SipError
from gb28181talk.sip.message import (
    SipMessage,
    SipRequest,
    StreamParser,
    build,
    error_response,
    parse_datagram,
)
from gb28181talk.sip.transaction import new_branch

_log = Logger()


class MessageReceiver(Protocol):
    """Who takes the parsed messages: a ``TransactionLayer`` (its ``receive``)."""

    def receive(self, message: SipMessage, channel: Any) -> None:
        """A message came in on ``channel``."""


def stamped(message: SipMessage, host: str, port: int) -> SipMessage:
    """A request with its top Via stamped with where it really came from (RFC 3581)."""
    if not isinstance(message, SipRequest):
        return message
    via = message.top_via
    stamp = via.stamped(host, port)
    return message if stamp == via else message.with_top_via(stamp)


def via_for(channel: Any, host: str, port: int) -> str:
    """The Via of a request we send on ``channel`` from ``host:port``: new branch, rport asked."""
    return f"SIP/2.0/{channel.transport_name} {host}:{port};rport;branch={new_branch()}"


def _refused(error: SipError, peer: tuple[str, int], how: str) -> bytes | None:
    answer = error_response(error)
    _log.info(
        "SIP from {host}:{port} refused ({status} {reason}): {detail}; {what}",
        host=peer[0],
        port=peer[1],
        status=error.status,
        reason=error.reason,
        detail=error.detail,
        what=f"answered, {how}" if answer is not None else f"dropped, {how}",
    )
    return build(answer) if answer is not None else None


def _hand_on(receiver: MessageReceiver, message: SipMessage, channel: Any) -> None:
    """Give the message to the stack; a failure there is logged and costs only this message."""
    try:
        receiver.receive(message, channel)
    except Exception:
        what = message.method if isinstance(message, SipRequest) else message.status
        _log.failure("SIP {what} on {channel} failed in the stack", what=what, channel=channel)


# --------------------------------------------------------------------------- UDP


class DatagramChannel:
    """One UDP peer of a SIP socket: what is sent goes to that address."""

    reliable = False
    transport_name = "UDP"

    def __init__(self, endpoint: SipDatagramProtocol, peer: tuple[str, int]) -> None:
        self.endpoint = endpoint
        self.peer = peer

    def send(self, message: SipMessage) -> None:
        """Send one datagram to the peer; OSError when it cannot go."""
        self.endpoint.write(build(message), self.peer)

    def __repr__(self) -> str:
        return f"<DatagramChannel udp {self.peer[0]}:{self.peer[1]}>"


UDP_READ_PER_TURN = 8 * 1024
"""Bytes the SIP UDP port reads per reactor turn (Twisted's default is 256 KiB).

A flood of REGISTER/MESSAGE datagrams would otherwise be parsed by the hundred
before the media timers run: benchmarks/sip_load.py measured 100 healthy
sessions' p99 gap at 200-800 ms under a flood with 256 KiB, 22-86 ms with 4 KiB."""

SOURCE_RATE = 50.0
"""Datagrams a second one source (address and port: one device, even behind a NAT) may send."""

SOURCE_BURST = 200.0
"""Datagrams one source may send at once (a catalog of many parts, retransmissions)."""

MAX_TRACKED_SOURCES = 65_536
"""Sources whose rate is remembered; past that the table starts afresh (bounded memory)."""


class TokenBucket:
    """One token bucket: ``rate`` tokens a second, at most ``burst`` held (the one rate rule).

    Every SIP rate limit is one of these: per UDP source (datagrams), per TCP
    connection (messages, and bytes read)."""

    __slots__ = ("_now", "_then", "burst", "rate", "tokens")

    def __init__(self, now: Callable[[], float], rate: float, burst: float) -> None:
        self._now = now
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self._then = now()

    def _refill(self) -> None:
        now = self._now()
        self.tokens = min(self.burst, self.tokens + (now - self._then) * self.rate)
        self._then = now

    def take(self, amount: float = 1.0) -> bool:
        """Take ``amount`` tokens if the bucket holds them; False (nothing taken) if not."""
        self._refill()
        if self.tokens >= amount:
            self.tokens -= amount
            return True
        return False

    def charge(self, amount: float) -> bool:
        """Take ``amount`` tokens even into debt (bytes already read); False if now in debt."""
        self._refill()
        self.tokens -= amount
        return self.tokens >= 0.0

    def wait(self, amount: float = 1.0) -> float:
        """Seconds until the bucket holds ``amount`` tokens (0 if it does now)."""
        self._refill()
        return max(0.0, (amount - self.tokens) / self.rate) if self.rate > 0 else float("inf")


class SourceRate:
    """A token bucket per source (host, port): a flooding device's excess is dropped unread."""

    def __init__(self, now: Callable[[], float], rate: float = SOURCE_RATE,
                 burst: float = SOURCE_BURST) -> None:
        self._now = now
        self.rate = rate
        self.burst = burst
        self._buckets: dict[tuple[str, int], TokenBucket] = {}
        self.dropped = 0
        """Datagrams dropped because their source was over its rate."""
        self._warned: set[tuple[str, int]] = set()

    def allow(self, source: tuple[str, int]) -> bool:
        """Whether one more datagram from ``source`` may be read; counts and logs a refusal."""
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED_SOURCES:
                self._buckets.clear()
                self._warned.clear()
            bucket = self._buckets[source] = TokenBucket(self._now, self.rate, self.burst)
        if bucket.take():
            return True
        self.dropped += 1
        if source not in self._warned:
            self._warned.add(source)
            _log.warn("SIP: {host}:{port} sends more than {rate:g} datagrams a second; "
                      "the excess is dropped unread", host=source[0], port=source[1],
                      rate=self.rate)
        return False


class SipDatagramProtocol(DatagramProtocol):
    """A SIP UDP socket: each datagram is one message (or a keepalive of blank lines)."""

    def __init__(self, receiver: MessageReceiver,
                 now: Callable[[], float] | None = None) -> None:
        self.receiver = receiver
        self.refused = 0
        """Datagrams the parser refused (answered or dropped)."""
        self.source_rate = SourceRate(now or time.monotonic)

    def channel_to(self, peer: tuple[str, int]) -> DatagramChannel:
        """The channel to ``peer`` (for requests to a device that registered over UDP)."""
        return DatagramChannel(self, peer)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """Parse, stamp, hand on; answer or drop what cannot be read."""
        peer = (str(addr[0]), int(addr[1]))
        if not self.source_rate.allow(peer):
            return
        try:
            message = parse_datagram(datagram)
        except SipError as error:
            self.refused += 1
            answer = _refused(error, peer, "datagram")
            if answer is not None:
                self._write_quietly(answer, peer)
            return
        if message is None:
            return
        _hand_on(self.receiver, stamped(message, *peer), self.channel_to(peer))

    def write(self, data: bytes, peer: tuple[str, int]) -> None:
        """Send a datagram; every failure as OSError (the transactions' transport error)."""
        if self.transport is None:
            raise OSError("the SIP UDP socket is closed")
        try:
            self.transport.write(data, peer)
        except MessageLengthError as e:
            raise OSError(f"datagram of {len(data)} bytes too long for UDP") from e

    def _write_quietly(self, data: bytes, peer: tuple[str, int]) -> None:
        try:
            self.write(data, peer)
        except OSError as e:
            _log.info("SIP answer to {peer} not sent: {error}", peer=peer, error=e)


# --------------------------------------------------------------------------- TCP and TLS


CONNECTION_RATE = SOURCE_RATE
"""Messages a second one SIP connection may send (a TCP/TLS device: the same as a UDP source)."""

CONNECTION_BURST = SOURCE_BURST
"""Messages one SIP connection may send at once."""

CONNECTION_BYTE_RATE = 256 * 1024
"""Bytes a second read from one SIP connection (a catalog of a few hundred channels is less)."""

CONNECTION_BYTE_BURST = 1024 * 1024
"""Bytes one SIP connection may send at once (sixteen largest messages)."""

FLOOD_CLOSE_AFTER = 30.0
"""Seconds a connection may stay over its budget, throttled without a pause, before it is closed."""

FLOOD_QUIET = 1.0
"""A connection read again for this long without being throttled is no longer flooding."""


@dataclass(frozen=True)
class StreamLimits:
    """The budget of one SIP connection: messages and bytes a second, and when a flood closes it."""

    rate: float = CONNECTION_RATE
    burst: float = CONNECTION_BURST
    byte_rate: float = CONNECTION_BYTE_RATE
    byte_burst: float = CONNECTION_BYTE_BURST
    flood_close_after: float = FLOOD_CLOSE_AFTER


class SipStreamProtocol(StreamProtocol):
    """One SIP connection (TCP or TLS): Content-Length framing; the connection is the channel.

    Its budget (:class:`StreamLimits`) is two :class:`TokenBucket`: messages and
    bytes.  Past it the connection is not read (``pauseProducing``: the device's
    own TCP waits) until the buckets refill; the messages already read wait in
    order.  A connection held over its budget for ``flood_close_after`` seconds
    is closed with one log line.  Other connections are read as usual.
    """

    reliable = True

    def __init__(self, receiver: MessageReceiver, clock: IReactorTime | None = None,
                 limits: StreamLimits | None = None) -> None:
        self.receiver = receiver
        self.parser = StreamParser()
        self.peer: tuple[str, int] = ("", 0)
        self.open = False
        self.on_close: list[Callable[[SipStreamProtocol], None]] = []
        """Called once when the connection is gone (a registry forgets the device's channel)."""
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[assignment]
        self.clock: IReactorTime = clock  # type: ignore[assignment]
        self.limits = limits or StreamLimits()
        self.messages = TokenBucket(self.clock.seconds, self.limits.rate, self.limits.burst)
        self.bytes = TokenBucket(self.clock.seconds, self.limits.byte_rate,
                                 self.limits.byte_burst)
        self.backlog: deque[SipMessage] = deque()
        """Messages read but over the budget: handed on, in order, as the bucket refills."""
        self.paused = False
        self.throttled = 0
        """Times the connection was paused for being over its budget."""
        self._over_since: float | None = None
        self._resumed_at: float | None = None
        self._timer: IDelayedCall | None = None

    @property
    def transport_name(self) -> str:
        """``TLS`` over TLS, else ``TCP``."""
        return "TLS" if ISSLTransport.providedBy(self.transport) else "TCP"

    def connectionMade(self) -> None:
        """Note the peer; the connection is open for sending."""
        address = self.transport.getPeer()
        self.peer = (str(getattr(address, "host", "")), int(getattr(address, "port", 0)))
        self.open = True
        if hasattr(self.transport, "setTcpNoDelay"):
            self.transport.setTcpNoDelay(True)

    def dataReceived(self, data: bytes) -> None:
        """Feed the parser; complete messages go on within the budget; a refused stream closes."""
        if not self.open:
            return
        self.bytes.charge(len(data))
        try:
            messages = self.parser.feed(data)
        except SipError as error:
            answer = _refused(error, self.peer, "connection closed")
            if answer is not None:
                self.transport.write(answer)
            self._close()
            return
        self.backlog.extend(messages)
        self._pump()

    def _pump(self) -> None:
        """Hand on what the budget allows; pause reading while over it, resume once refilled."""
        while self.backlog and self.open:
            if not self.messages.take():
                break
            message = self.backlog.popleft()
            _hand_on(self.receiver, stamped(message, *self.peer), self)
        if not self.open:
            return
        delay = self.messages.wait() if self.backlog else self.bytes.wait(0.0)
        if delay <= 0.0:
            if self.paused:
                self.paused = False
                self._resumed_at = self.clock.seconds()
                self.transport.resumeProducing()
            return
        self._throttle(delay)

    def _throttle(self, delay: float) -> None:
        now = self.clock.seconds()
        if not self.paused:
            self.paused = True
            self.throttled += 1
            self.transport.pauseProducing()
            quiet = self._resumed_at is None or now - self._resumed_at > FLOOD_QUIET
            if self._over_since is None or quiet:
                self._over_since = now
            if self.throttled == 1:
                _log.info("SIP: connection {host}:{port} is over its budget ({rate:g} messages, "
                          "{bytes:g} bytes a second); reading it more slowly",
                          host=self.peer[0], port=self.peer[1], rate=self.limits.rate,
                          bytes=self.limits.byte_rate)
        assert self._over_since is not None
        if now - self._over_since >= self.limits.flood_close_after:
            _log.warn("SIP: connection {host}:{port} stayed over its budget for {seconds:g} s "
                      "({count} messages waiting); closed", host=self.peer[0],
                      port=self.peer[1], seconds=now - self._over_since,
                      count=len(self.backlog))
            self._close()
            return
        if self._timer is None or not self._timer.active():
            self._timer = self.clock.callLater(delay, self._refilled)

    def _refilled(self) -> None:
        self._timer = None
        self._pump()

    def _close(self) -> None:
        self.open = False
        self.backlog.clear()
        self._cancel_timer()
        self.transport.loseConnection()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def send(self, message: SipMessage) -> None:
        """Write a message on the connection; OSError once it is closed."""
        if not self.open:
            raise OSError(f"the SIP connection to {self.peer[0]}:{self.peer[1]} is closed")
        self.transport.write(build(message))

    def connectionLost(self, reason: Failure | None = None) -> None:
        """Closed: sending fails from now on; tell who asked."""
        self.open = False
        self.backlog.clear()
        self._cancel_timer()
        callbacks, self.on_close = self.on_close, []
        for callback in callbacks:
            callback(self)

    def __repr__(self) -> str:
        return f"<SipStreamProtocol {self.peer[0]}:{self.peer[1]}>"


class SipStreamFactory(Factory):
    """Builds a :class:`SipStreamProtocol` per connection, all feeding one receiver."""

    def __init__(self, receiver: MessageReceiver, clock: IReactorTime | None = None,
                 limits: StreamLimits | None = None) -> None:
        self.receiver = receiver
        self.clock = clock
        self.limits = limits

    def buildProtocol(self, addr: Any) -> SipStreamProtocol:
        """A new connection's protocol, with its own budget."""
        return SipStreamProtocol(self.receiver, self.clock, self.limits)


# --------------------------------------------------------------------------- endpoints


def parse_udp(description: str) -> tuple[int, str]:
    """``udp:5060[:interface=ADDR]`` -> (port, interface); ValueError says what is wrong."""
    parts = description.split(":")
    if len(parts) < 2 or parts[0].lower() != "udp":
        raise ValueError(f"{description!r} is not udp:PORT[:interface=ADDR]")
    port_text, options = parts[1], parts[2:]
    if port_text.startswith("port="):
        port_text = port_text[5:]
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{description!r}: port {port_text!r} is not 0-65535")
    interface = ""
    for option in options:
        name, eq, value = option.partition("=")
        if name != "interface" or not eq:
            raise ValueError(f"{description!r}: option {option!r} is not interface=ADDR")
        interface = value
    return int(port_text), interface


UDP_RECEIVE_BUFFER = 4 * 1024 * 1024
_LINUX_SO_RCVBUFFORCE = 33 if sys.platform.startswith("linux") else None
"""Kernel receive buffer asked for the SIP UDP socket: with small reads per turn, the answers
of 500 devices to one broadcast wait there instead of being dropped (Linux's default is
about 208 KiB; raising it past net.core.rmem_max needs SO_RCVBUFFORCE, allowed to root)."""


def _cap_reads(port: IListeningPort) -> IListeningPort:
    """Read at most UDP_READ_PER_TURN bytes per turn, so media timers keep their turn,
    and let the kernel hold a burst meanwhile."""
    if hasattr(port, "maxThroughput"):
        port.maxThroughput = UDP_READ_PER_TURN  # type: ignore[attr-defined]
    sock = getattr(port, "socket", None)
    if sock is not None:
        force = getattr(socket, "SO_RCVBUFFORCE", _LINUX_SO_RCVBUFFORCE)
        try:
            if force is None:
                raise OSError("no SO_RCVBUFFORCE here")
            sock.setsockopt(socket.SOL_SOCKET, force, UDP_RECEIVE_BUFFER)
        except OSError:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
    return port


def listen_sip(
    reactor: Any, description: str, receiver: MessageReceiver
) -> Deferred[IListeningPort]:
    """Listen for SIP as ``description`` says: ``udp:...``, or a Twisted server endpoint."""
    if description.lower().startswith("udp:"):
        port, interface = parse_udp(description)
        listening = maybeDeferred(
            reactor.listenUDP, port, SipDatagramProtocol(receiver, reactor.seconds),
            interface=interface,
        )
        return listening.addCallback(_cap_reads)
    return serverFromString(reactor, description).listen(SipStreamFactory(receiver, reactor))


def connect_sip(
    reactor: Any, description: str, receiver: MessageReceiver
) -> Deferred[SipStreamProtocol]:
    """Connect out (``tcp:HOST:PORT``, ``tls:...``): the connection is a channel to the peer."""
    return clientFromString(reactor, description).connect(SipStreamFactory(receiver, reactor))
