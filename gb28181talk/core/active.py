"""The active TCP transport: we dial the device that listens (it offered ``a=setup:passive``).

ZLMediaKit's ``startSendRtp`` with ``is_udp=0``: connect to
``dst_url:dst_port`` (from ``src_port`` when one is asked, bound with
``bindAddress``), giving up after the session's wait timeout, as ZLMediaKit
gives up after ``close_delay_ms``.  Once connected the connection is the
same :class:`~gb28181talk.core.passive.TcpLink` the passive acceptor makes:
Nagle off, RFC 4571 framing unless asked otherwise, a
:class:`~gb28181talk.core.writer.PacketWriter` with its bounded backlog, and
what the device sends on it (two-way talk) goes to the session.  A refused
or timed-out connect is reported as ``device_closed`` with what failed, so the
session ends and whoever waits for the connect hears why.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IAddress, IConnector
from twisted.internet.protocol import ClientFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from gb28181talk.core.passive import DETACHED, TalkProtocol, TcpLink
from gb28181talk.core.transport import IDeviceHost, ITalkTransport
from gb28181talk.core.writer import PacketWriter
from gb28181talk.media.framing import Framing


@implementer(ITalkTransport)
class ActiveTcpTransport(ClientFactory):
    """Connects to the listening device; the connection, once made, is the device's link.

    ``reactor`` provides ``connectTCP`` (a real reactor, or MemoryReactorClock in
    tests).  ``port`` is the local port to connect from (0: the kernel picks);
    ``interface`` the local address to bind it on.  ``port`` reads the local port
    once connected.
    """

    protocol = TalkProtocol
    noisy = False

    def __init__(
        self,
        reactor: Any,
        destination: tuple[str, int],
        *,
        timeout: float,
        port: int = 0,
        interface: str = "",
        framing: Framing = Framing.RFC4571,
        max_send_buffer: int = 32 * 1024,
        direct_send: bool = True,
    ) -> None:
        self.reactor = reactor
        self.destination = destination
        self.timeout = timeout
        self.wanted_port = port
        self.interface = interface
        self.framing = framing
        self.max_send_buffer = max_send_buffer
        self.direct_send = direct_send
        self.port = port
        self.host: Any = None
        self.link: TcpLink | None = None
        self.failure: str | None = None
        """What made the connect fail, once it did."""
        self._connector: IConnector | None = None
        self._waiting = False

    @property
    def describe_destination(self) -> str:
        """``host:port`` of the device."""
        return f"{self.destination[0]}:{self.destination[1]}"

    def open(self, host: IDeviceHost) -> int:
        """Start connecting; the local port is known now only if one was asked."""
        self.host = host
        self._waiting = True
        bind = (self.interface or "0.0.0.0", self.wanted_port) if self.wanted_port else None
        self._connector = self.reactor.connectTCP(
            self.destination[0], self.destination[1], self, timeout=self.timeout,
            bindAddress=bind)
        return self.port

    def close(self) -> None:
        """Stop connecting (idempotent); a connection already delivered lives on.

        Without a link nothing more will be delivered: the host (the session) is let go,
        since the reactor's connector holds this factory and would keep the session alive.
        """
        self._waiting = False
        connector, self._connector = self._connector, None
        if self.link is None:
            self.host = DETACHED
            if connector is not None:
                connector.stopConnecting()

    # -- ClientFactory

    def buildProtocol(self, addr: IAddress) -> TalkProtocol:
        """The device's connection (the one we dialled)."""
        return TalkProtocol(self, self.destination)  # type: ignore[arg-type]

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        """Refused, unreachable or timed out: the session ends with what failed."""
        if not self._waiting:  # we stopped connecting ourselves
            return
        self._waiting = False
        self._connector = None
        self.failure = (f"connecting to the device at {self.describe_destination} failed: "
                        f"{reason.getErrorMessage()}")
        host, self.host = self.host, DETACHED  # nothing more will come to it
        host.device_closed(self.failure)

    def clientConnectionLost(self, connector: IConnector, reason: Failure) -> None:
        """Reported by the protocol (``device_closed``) already."""

    # -- what the protocol tells (TalkProtocol calls ``connected``)

    def connected(self, protocol: TalkProtocol) -> None:
        """Connected: Nagle off, a PacketWriter, then the link to the host."""
        transport = protocol.transport
        if not self._waiting:  # the session ended while the connect completed
            transport.abortConnection()
            return
        self._waiting = False
        set_no_delay = getattr(transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        local = transport.getHost()
        self.port = getattr(local, "port", self.port)
        peer = transport.getPeer()
        protocol.peer = (getattr(peer, "host", self.destination[0]),
                         getattr(peer, "port", self.destination[1]))
        writer = PacketWriter(transport, self.max_send_buffer, direct=self.direct_send)
        writer.on_stall = self.host.send_stalled
        writer.on_drain = self.host.send_drained
        link = protocol.link = self.link = TcpLink(
            transport, writer, protocol.peer, self.framing, on_done=self.link_done)
        self.host.device_connected(link)

    def link_done(self) -> None:
        """The device's link was closed or lost: let go of the host (the session).

        The reactor's connector and the session both hold this factory, so keeping the
        host would leave the ended session in a reference cycle for the cyclic collector.
        """
        self.host = DETACHED
