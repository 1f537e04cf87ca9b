"""The passive TCP transport: a leased port, and the first device that dials in gets the audio.

GB28181's ``a=setup:passive`` for the media server: we listen on a port of
the pool, the device connects.  The first connection (from the expected peer,
if one is set) wins; the listener is closed at once so the port goes back to
the pool while the connection lives on; every later connection is refused and
reported.  The accepted connection becomes a :class:`TcpLink`: Nagle off, a
:class:`~gb28181talk.core.writer.PacketWriter` with its bounded backlog.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IAddress, ITCPTransport
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from gb28181talk.core.ports import Lease, PortPool
from gb28181talk.core.transport import IDeviceHost, IDeviceLink, ITalkTransport
from gb28181talk.core.writer import PacketWriter
from gb28181talk.media.framing import Framing


def same_host(expected: str, actual: str) -> bool:
    """Compare addresses, seeing through IPv4-mapped IPv6 (dual-stack listeners)."""
    try:
        want, got = ipaddress.ip_address(expected), ipaddress.ip_address(actual)
    except ValueError:
        return expected == actual
    if isinstance(got, ipaddress.IPv6Address) and got.ipv4_mapped is not None:
        got = got.ipv4_mapped
    if isinstance(want, ipaddress.IPv6Address) and want.ipv4_mapped is not None:
        want = want.ipv4_mapped
    return want == got


@implementer(IDeviceHost)
class _NoHost:
    """The host of a transport whose link has ended: whatever still comes is dropped.

    A transport that kept its session as host after the link ended would keep the ended
    session in a reference cycle (session -> transport -> session) for the cyclic collector.
    """

    def device_connected(self, link: IDeviceLink) -> None:
        """No session wants it."""
        link.close(abort=True)

    def device_refused(self, peer: tuple[str, int], why: str) -> None:
        """Nobody to tell."""

    def data_from_device(self, data: bytes) -> None:
        """Dropped: the session is done with the device."""

    def device_closed(self, why: str) -> None:
        """The session has ended already."""

    def send_stalled(self) -> None:
        """Nothing is sent any more."""

    def send_drained(self) -> None:
        """Nothing is sent any more."""


DETACHED: Any = _NoHost()
"""The host of every transport once its link has ended (see :class:`_NoHost`)."""


@implementer(IDeviceLink)
class TcpLink:
    """The accepted device connection as the sender writes to it: RTP through a PacketWriter.

    ``write`` and ``write_packet`` (one whole buffer the sender reuses: the sender's fast
    path) are the writer's own bound methods, so a packet costs no extra call here.
    ``on_done`` is called once, when the link is closed or lost: the transport that made
    it lets go of its host then.
    """

    whole_packets = False

    def __init__(
        self, transport: ITCPTransport, writer: PacketWriter, peer: tuple[str, int],
        framing: Framing, on_done: Callable[[], None] | None = None,
    ) -> None:
        self.peer = peer
        self.framing = framing
        self.write = writer.write
        self.write_packet = writer.write_packet
        self.transport = transport
        self._writer = writer
        self._on_done = on_done
        self.lost = False

    @property
    def queued(self) -> int:
        """Bytes waiting in Twisted's buffer for this connection."""
        return self._writer.queued

    def pause_reading(self) -> None:
        """Read nothing more from the device for now (it is over its receive budget)."""
        if not self.lost:
            self.transport.pauseProducing()

    def resume_reading(self) -> None:
        """Read the device again."""
        if not self.lost:
            self.transport.resumeProducing()

    def close(self, abort: bool) -> None:
        """Close now; abort if asked or if bytes still wait for a device that is not reading.

        A plain loseConnection waits for Twisted's buffer to drain, which for a
        stuck device is never: the descriptor would outlive the session.
        """
        if self.lost:
            return
        self.lost = True
        abort = abort or self._writer.queued > 0
        self._writer.close()
        if abort:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()
        self._done()

    def connection_lost(self) -> None:
        """The device went: nothing more is written or closed."""
        self.lost = True
        self._writer.stopProducing()
        self._done()

    def _done(self) -> None:
        """Tell the transport, once, that the link has ended (it lets go of its host)."""
        done, self._on_done = self._on_done, None
        if done is not None:
            done()


class TalkProtocol(Protocol):
    """The device's TCP connection: a thin adapter from socket events to the transport's host."""

    def __init__(self, acceptor: PassiveTcpTransport, peer: tuple[str, int]) -> None:
        self.acceptor = acceptor
        self.peer = peer
        self.link: TcpLink | None = None

    def connectionMade(self) -> None:
        self.acceptor.connected(self)

    def dataReceived(self, data: bytes) -> None:
        self.acceptor.host.data_from_device(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        link, self.link = self.link, None
        if link is not None:
            host = self.acceptor.host  # (the link's end lets the acceptor go of it)
            link.connection_lost()
            host.device_closed(reason.getErrorMessage())


@implementer(ITalkTransport)
class PassiveTcpTransport(ServerFactory):
    """Listens on a leased port of the pool until the first (expected) device connects."""

    protocol = TalkProtocol
    noisy = False

    def __init__(
        self,
        pool: PortPool,
        owner: str,
        *,
        port: int = 0,
        expected_peer: str | None = None,
        framing: Framing = Framing.RFC4571,
        max_send_buffer: int = 32 * 1024,
        direct_send: bool = True,
    ) -> None:
        self.pool = pool
        self.owner = owner
        self.wanted_port = port
        self.expected_peer = expected_peer
        self.framing = framing
        self.max_send_buffer = max_send_buffer
        self.direct_send = direct_send
        self.port = 0
        self.host: Any = None
        self.link: TcpLink | None = None
        """The accepted device's link, once delivered."""
        self._lease: Lease | None = None
        self._waiting = False
        self._taken = False

    def open(self, host: IDeviceHost) -> int:
        """Lease the port (from the pool, or the explicit one) and listen on it."""
        self.host = host
        self._lease = self.pool.listen(self, owner=self.owner, port=self.wanted_port)
        self.port = self._lease.port
        self._waiting = True
        return self.port

    def close(self) -> None:
        """Stop listening; the port returns to the pool once its socket is closed."""
        self._waiting = False
        lease, self._lease = self._lease, None
        if lease is not None:
            self.pool.release(lease).addCallback(self._port_closed)

    def _port_closed(self, _: object) -> None:
        """The listening socket is closed: if no device came, nothing will; let go of the host.

        The host (the session) holds this transport, so keeping it would leave the
        ended session in a reference cycle for the cyclic collector.
        """
        if not self._taken:
            self.host = None

    def buildProtocol(self, addr: IAddress) -> TalkProtocol | None:
        """Accept the first device (if it is the expected one); refuse every other connection."""
        peer = (getattr(addr, "host", str(addr)), getattr(addr, "port", 0))
        if not self._waiting or self._taken:
            if self.host is not None:  # None: the port is closed and the session let go
                self.host.device_refused(peer, "a device is already connected or the session ended")
            return None
        expected = self.expected_peer
        if expected and not same_host(expected, peer[0]):
            self.host.device_refused(peer, f"not the expected device {expected}")
            return None
        self._taken = True
        return TalkProtocol(self, peer)

    def connected(self, protocol: TalkProtocol) -> None:
        """The first device is connected: stop listening, then hand its link to the host."""
        transport = protocol.transport
        if not self._waiting:  # the session ended between the accept and now
            transport.abortConnection()
            return
        self.close()
        set_no_delay = getattr(transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        writer = PacketWriter(transport, self.max_send_buffer, direct=self.direct_send)
        writer.on_stall = self.host.send_stalled
        writer.on_drain = self.host.send_drained
        link = protocol.link = self.link = TcpLink(
            transport, writer, protocol.peer, self.framing, on_done=self.link_done)
        self.host.device_connected(link)

    def link_done(self) -> None:
        """The device's link was closed or lost: let go of the host (the session).

        The session holds this transport, so keeping it would leave the ended session in
        a reference cycle for the cyclic collector; what still comes is dropped.
        """
        self.host = DETACHED
