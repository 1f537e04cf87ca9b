"""Sockets the control process binds for a worker's sessions, on both sides of the hand-over.

The control keeps the one :class:`~gb28181talk.core.ports.PortPool`: it binds
and listens a session's port itself, synchronously (so busy and exhausted
ports are refused at once, as in one process), and sends the socket to the
worker (``amp.Descriptor``).  Control side, :func:`tcp_binder` and
:func:`udp_binder` make such sockets and :class:`HandedPort` is the pool's
view of one until the worker says its copy is closed.  Worker side,
:class:`HandedPool` is what the worker's transports lease from: it adopts
the socket handed for the session (``adoptStreamPort`` /
``adoptDatagramPort``) and reports when it is closed again.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol, ServerFactory

from gb28181talk.core.ports import Lease
from gb28181talk.errors import PortError


def _family(interface: str) -> int:
    return socket.AF_INET6 if ":" in interface else socket.AF_INET


class HandedPort:
    """The control's copy of a socket handed to a worker: closed once the worker closed its own.

    ``stopListening`` (the pool's release) fires when :meth:`worker_closed` is
    called (the worker's PortClosed, or the worker is gone); only then is the
    control's copy closed, so the port is free exactly when no socket holds it.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        self._closed: Deferred[None] = Deferred()

    @property
    def fileno(self) -> int:
        """The descriptor to hand over."""
        return self.socket.fileno()

    def getHost(self) -> Any:
        """The bound address (host, port)."""
        return self.socket.getsockname()

    def worker_closed(self) -> None:
        """The worker's copy is closed (or the worker is gone): close ours, free the port."""
        if not self._closed.called:
            self.socket.close()
            self._closed.callback(None)

    def stopListening(self) -> Deferred[None]:
        """Fires once the worker's copy and ours are closed."""
        return self._closed


def _bind(interface: str, port: int, kind: int, backlog: int) -> HandedPort:
    sock = socket.socket(_family(interface), kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((interface, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(backlog)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        raise CannotListenError(interface, port, error) from error
    return HandedPort(sock)


def tcp_binder(interface: str, backlog: int = 8) -> Callable[[int], HandedPort]:
    """Binds and listens a TCP port for a worker (the pool's Binder)."""
    return lambda port: _bind(interface, port, socket.SOCK_STREAM, backlog)


def udp_binder(interface: str) -> Callable[[int], HandedPort]:
    """Binds a UDP port for a worker (the pool's Binder)."""
    return lambda port: _bind(interface, port, socket.SOCK_DGRAM, 0)


class HandedPool:
    """The worker's pool: the socket the control handed for each session, adopted when leased.

    Offers what the transports ask of a PortPool (``listen``, ``listen_udp``,
    ``release``, ``interface``); ``on_closed(owner)`` is called once a
    session's socket is really closed in the worker.
    """

    def __init__(self, reactor: Any, interface: str,
                 on_closed: Callable[[str], None]) -> None:
        self._reactor = reactor
        self.interface = interface
        self._on_closed = on_closed
        self._handed: dict[str, tuple[int, int, int]] = {}
        self._leases: dict[str, Lease] = {}

    def hand(self, owner: str, fd: int, family: int, port: int) -> None:
        """The control sent ``fd`` (bound on ``port``) for the session ``owner``."""
        self._handed[owner] = (fd, family, port)

    def discard(self, owner: str) -> None:
        """The session did not take its socket: close it and tell the control."""
        handed = self._handed.pop(owner, None)
        if handed is not None:
            os.close(handed[0])
            self._on_closed(owner)

    def listen(self, factory: ServerFactory, owner: str, port: int = 0) -> Lease:
        """Adopt the listening TCP socket handed for ``owner``."""
        return self._adopt(owner, port, lambda fd, family: self._reactor.adoptStreamPort(
            fd, family, factory))

    def listen_udp(self, protocol: DatagramProtocol, owner: str, port: int = 0) -> Lease:
        """Adopt the UDP socket handed for ``owner``."""
        return self._adopt(owner, port, lambda fd, family: self._reactor.adoptDatagramPort(
            fd, family, protocol))

    def _adopt(self, owner: str, port: int,
               adopt: Callable[[int, int], IListeningPort]) -> Lease:
        handed = self._handed.pop(owner, None)
        if handed is None:
            raise PortError(f"no socket was handed to this worker for talk session {owner}")
        fd, family, handed_port = handed
        try:
            listening = adopt(fd, family)
        except BaseException:
            self._on_closed(owner)
            raise
        finally:
            os.close(fd)  # Twisted adopted a duplicate
        lease = Lease(port=handed_port, owner=owner, since=self._reactor.seconds(),
                      explicit=bool(port), listening_port=listening)
        self._leases[owner] = lease
        return lease

    def release(self, lease: Lease) -> Deferred[None]:
        """Close the adopted socket; the control hears of it once it is closed."""
        if lease.released:
            return lease.closed
        lease.released = True
        lease.state = "closing"
        listening, lease.listening_port = lease.listening_port, None
        stopped = maybeDeferred(listening.stopListening) if listening is not None else None

        def closed(_: object) -> None:
            self._leases.pop(lease.owner, None)
            lease.state = "released"
            self._on_closed(lease.owner)
            lease.closed.callback(None)

        if stopped is None:
            closed(None)
        else:
            stopped.addBoth(closed)
        return lease.closed

    def leases(self) -> list[Lease]:
        """The sockets adopted and not yet closed."""
        return list(self._leases.values())
