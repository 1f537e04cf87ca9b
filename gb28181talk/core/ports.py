"""The talk-port pool: one port per talk session (TCP listening or UDP), leased and returned once.

A lease is held from the moment a port is bound until its listening socket is
really closed: ``listening`` while the session waits for its device, then
``closing`` for the reactor turn Twisted takes to close the socket.  When the
first device connects the session releases its lease at once, so the port goes
back to the pool while the connection lives on.

Free ports wait in a FIFO queue shuffled once at start: allocation is O(1)
however full the pool is, and a released port goes to the back of the line, so
a late device dialling an old port finds it closed rather than reused.  Each
queue entry carries a ticket; only the entry whose ticket a free port holds now
is valid, so entries left behind by explicit leases are skipped in O(1).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorTCP, IReactorTime
from twisted.internet.protocol import DatagramProtocol, ServerFactory
from twisted.logger import Logger

from gb28181talk.errors import PoolExhaustedError, PortError, PortInUseError

DEFAULT_PORT_RANGE = (20000, 24999)
"""Talk ports by default: 5,000 (2,500 even/odd pairs), below Linux's ephemeral range.

Linux gives outgoing connections (webhooks, the devices' own, anything else
on the host) local ports from ``net.ipv4.ip_local_port_range``, 32768-60999
by default; a pool inside it now and then finds a port taken that way.
ZLMediaKit's 30000-35000 overlaps it, so ours is 20000-24999 instead.
"""
EPHEMERAL_RANGE_PATH = "/proc/sys/net/ipv4/ip_local_port_range"
"""Where Linux says which local ports it hands to outgoing connections."""
LOWEST_PORT = 1024
HIGHEST_PORT = 65535
DEFAULT_BIND_ATTEMPTS = 8

log = Logger()

Binder = Callable[[int], IListeningPort]
"""Binds one port (listenTCP or listenUDP) or raises CannotListenError."""


def parse_port_range(text: str) -> tuple[int, int]:
    """Parse ``"LO-HI"`` (or a single port) into a validated inclusive range."""
    low_text, dash, high_text = text.strip().partition("-")
    try:
        low = int(low_text)
        high = int(high_text) if dash else low
    except ValueError:
        raise PortError(
            f"port range {text!r} is not LO-HI with whole numbers, e.g. 20000-24999"
        ) from None
    check_port_range(low, high)
    return low, high


def check_port_range(low: int, high: int) -> None:
    """Raise PortError unless ``low..high`` is a non-empty range within 1024-65535."""
    if not LOWEST_PORT <= low <= high <= HIGHEST_PORT:
        raise PortError(
            f"port range {low}-{high} is not valid: it must satisfy "
            f"{LOWEST_PORT} <= LO <= HI <= {HIGHEST_PORT}"
        )


def ephemeral_range(path: str | None = None) -> tuple[int, int] | None:
    """The local ports Linux hands to outgoing connections, or None when unknown."""
    try:
        with open(path or EPHEMERAL_RANGE_PATH) as ranges:
            eph_low, eph_high = (int(part) for part in ranges.read().split())
    except (OSError, ValueError):
        return None
    return eph_low, eph_high


def ephemeral_overlap(low: int, high: int, path: str | None = None) -> tuple[int, int] | None:
    """The part of ``low..high`` that Linux also hands to outgoing connections, if any.

    Such ports are now and then taken by some outgoing connection; bind retries
    absorb that, but an operator should know (see docs/performance notes).
    """
    ephemeral = ephemeral_range(path)
    if ephemeral is None:
        return None
    start, end = max(low, ephemeral[0]), min(high, ephemeral[1])
    return (start, end) if start <= end else None


def warn_ephemeral_overlap(low: int, high: int, path: str | None = None) -> tuple[int, int] | None:
    """Log one warning when talk ports ``low..high`` overlap the ephemeral range (at start)."""
    overlap = ephemeral_overlap(low, high, path)
    ephemeral = ephemeral_range(path)
    if overlap is not None and ephemeral is not None:
        log.warn(
            "talk ports {low}-{high} overlap this host's ephemeral range {eph_low}-{eph_high} "
            "(net.ipv4.ip_local_port_range) in {start}-{end}: outgoing connections take ports "
            "there, so some talk ports will now and then be busy (skipped by bind retry); "
            "move --port-range outside it, e.g. {default_low}-{default_high}",
            low=low, high=high, eph_low=ephemeral[0], eph_high=ephemeral[1],
            start=overlap[0], end=overlap[1],
            default_low=DEFAULT_PORT_RANGE[0], default_high=DEFAULT_PORT_RANGE[1],
        )
    return overlap


@dataclass(eq=False, slots=True)
class Lease:
    """One port held for one talk session, from bind until its socket is closed."""

    port: int
    owner: str
    since: float
    explicit: bool
    listening_port: IListeningPort | None = None
    state: str = "listening"
    released: bool = False
    closed: Deferred[None] = field(default_factory=Deferred)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view for listings."""
        return {
            "port": self.port,
            "session": self.owner,
            "since": self.since,
            "state": self.state,
            "explicit": self.explicit,
        }


class PortPool:
    """Leases TCP listening ports from a range, or an explicit port, for talk sessions."""

    def __init__(
        self,
        reactor: Any,
        low: int = DEFAULT_PORT_RANGE[0],
        high: int = DEFAULT_PORT_RANGE[1],
        interface: str = "",
        bind_attempts: int = DEFAULT_BIND_ATTEMPTS,
        backlog: int = 8,
        rng: random.Random | None = None,
    ) -> None:
        check_port_range(low, high)
        if not (IReactorTCP.providedBy(reactor) and IReactorTime.providedBy(reactor)):
            raise TypeError("PortPool needs a reactor providing IReactorTCP and IReactorTime")
        self._reactor = reactor
        self.low = low
        self.high = high
        self.interface = interface
        self.bind_attempts = bind_attempts
        self.backlog = backlog
        self._rng = rng or random.Random()
        ports = list(range(low, high + 1))
        self._rng.shuffle(ports)
        # _free maps each free port to the ticket of its one valid queue entry;
        # entries whose ticket no longer matches (explicit leases) are skipped.
        self._queue: deque[tuple[int, int]] = deque((port, 0) for port in ports)
        self._free: dict[int, int] = dict.fromkeys(ports, 0)
        self._tickets = 0
        self._leases: dict[int, Lease] = {}

    @property
    def size(self) -> int:
        """How many ports the range holds."""
        return self.high - self.low + 1

    @property
    def free_count(self) -> int:
        """Ports of the range neither leased nor closing."""
        return len(self._free)

    @property
    def leased_count(self) -> int:
        """Ports held now (listening or closing), explicit ones outside the range included."""
        return len(self._leases)

    def in_range(self, port: int) -> bool:
        """Whether ``port`` belongs to the pool's range."""
        return self.low <= port <= self.high

    def leases(self) -> list[Lease]:
        """Every lease held now, oldest first."""
        return sorted(self._leases.values(), key=lambda lease: (lease.since, lease.port))

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view of the pool for the API."""
        return {
            "range": [self.low, self.high],
            "interface": self.interface,
            "free": self.free_count,
            "leased": self.leased_count,
            "leases": [lease.describe() for lease in self.leases()],
        }

    def set_range(self, low: int, high: int) -> None:
        """Lease new ports from ``low..high`` from now on (``rtp_proxy.port_range`` at run time).

        Leases held now keep their ports; a port outside the new range is not
        given out again once returned.  Raises PortError for a bad range.
        """
        check_port_range(low, high)
        self.low, self.high = low, high
        ports = [port for port in range(low, high + 1) if port not in self._leases]
        self._rng.shuffle(ports)
        self._tickets += 1
        self._queue = deque((port, self._tickets) for port in ports)
        self._free = dict.fromkeys(ports, self._tickets)

    def listen(self, factory: ServerFactory, owner: str, port: int = 0) -> Lease:
        """Bind ``factory`` on ``port`` (0: a free port of the pool) and return the lease.

        Raises PortInUseError for an explicit port that cannot be bound (nothing
        changes), PoolExhaustedError when the pool has no port to give.
        """
        if port:
            return self._listen_explicit(factory, owner, port)
        return self._listen_from_pool(factory, owner)

    def listen_udp(self, protocol: DatagramProtocol, owner: str, port: int = 0) -> Lease:
        """Bind a UDP ``protocol`` on ``port`` (0: a free port of the pool) and return the lease.

        The same ports, rules and errors as :meth:`listen`, for the transports that
        send or receive datagrams (UDP talk, the RTP server): a lease is a port number
        of the range whichever protocol holds it, released the same way.
        """
        bind = self._bind_udp(protocol)
        if port:
            return self._listen_explicit(None, owner, port, bind)
        return self._listen_from_pool(None, owner, bind)

    def lease_with(self, bind: Binder, owner: str, port: int = 0) -> Lease:
        """Lease ``port`` (0: a free one of the pool) with a socket ``bind`` makes.

        The rules and errors of :meth:`listen`, for sockets bound here and handed to
        a media worker (``--workers``): ``bind`` returns what ``release`` stops.
        """
        if port:
            return self._listen_explicit(None, owner, port, bind)
        return self._listen_from_pool(None, owner, bind)

    def release(self, lease: Lease) -> Deferred[None]:
        """Stop listening and return the port once its socket is closed; only the first call acts.

        The returned Deferred (``lease.closed``) fires when the port is back in
        the pool.  Later calls return the same Deferred and change nothing.
        """
        if lease.released:
            return lease.closed
        lease.released = True
        lease.state = "closing"
        listening_port, lease.listening_port = lease.listening_port, None
        stopped = maybeDeferred(listening_port.stopListening) if listening_port else None
        if stopped is None or stopped.called:
            self._returned(lease)
        else:
            stopped.addBoth(lambda _: self._returned(lease))
        return lease.closed

    def _returned(self, lease: Lease) -> None:
        """The socket is closed: the port is free again, at the back of the line."""
        del self._leases[lease.port]
        lease.state = "released"
        if self.in_range(lease.port):
            self._to_back(lease.port)
        lease.closed.callback(None)

    def _to_back(self, port: int) -> None:
        """Make ``port`` free with a fresh ticket at the back of the line."""
        self._tickets += 1
        self._free[port] = self._tickets
        self._queue.append((port, self._tickets))
        if len(self._queue) > 2 * self.size:
            self._queue = deque(entry for entry in self._queue if self._valid(entry))

    def _valid(self, entry: tuple[int, int]) -> bool:
        port, ticket = entry
        return self._free.get(port) == ticket

    def _listen_explicit(self, factory: ServerFactory | None, owner: str, port: int,
                         bind: Binder | None = None) -> Lease:
        if not LOWEST_PORT <= port <= HIGHEST_PORT:
            raise PortInUseError(
                port,
                f"talk ports must be in {LOWEST_PORT}-{HIGHEST_PORT} (below {LOWEST_PORT} are "
                "system services' ports); leave src_port empty to use the pool",
            )
        held = self._leases.get(port)
        if held is not None:
            raise PortInUseError(
                port,
                f"it is held by talk session {held.owner} ({held.state}); "
                f"choose another src_port or leave it empty to use the pool "
                f"({self.low}-{self.high}, {self.free_count} free)",
            )
        try:
            listening = bind(port) if bind is not None else self._bind(factory, port)
        except CannotListenError as failure:
            raise PortInUseError(
                port,
                f"binding {self.interface or '*'}:{port} failed ({failure.socketError}); "
                f"another process probably holds it: choose another src_port or leave it "
                f"empty to use the pool ({self.low}-{self.high}, {self.free_count} free)",
            ) from None
        self._free.pop(port, None)
        return self._add_lease(port, owner, listening, explicit=True)

    def _listen_from_pool(self, factory: ServerFactory | None, owner: str,
                          bind: Binder | None = None) -> Lease:
        held_elsewhere: list[int] = []
        last_error = ""
        try:
            for port in self._candidates():
                try:
                    listening = bind(port) if bind is not None else self._bind(factory, port)
                except CannotListenError as failure:
                    # Another process holds it: it stays free (it may come back) and
                    # goes to the back of the line; try the next one, a few times.
                    log.info(
                        "pool port {port} is held by another process ({error}); skipping it",
                        port=port,
                        error=failure.socketError,
                    )
                    held_elsewhere.append(port)
                    last_error = str(failure.socketError)
                    if len(held_elsewhere) >= self.bind_attempts:
                        break
                    continue
                del self._free[port]
                return self._add_lease(port, owner, listening, explicit=False)
        finally:
            for port in held_elsewhere:
                self._to_back(port)
        if not held_elsewhere:
            raise PoolExhaustedError(
                f"the talk port pool {self.low}-{self.high} is exhausted: all {self.size} "
                f"ports are leased ({self.leased_count} leases); stop a session or widen "
                f"the port range"
            )
        raise PoolExhaustedError(
            f"could not bind any of the {len(held_elsewhere)} pool ports tried "
            f"({', '.join(map(str, held_elsewhere))}) on {self.interface or '*'}: "
            f"{last_error}; other processes may hold them, or the address is not this host's; "
            f"{self.free_count} of {self.size} ports in {self.low}-{self.high} are not leased "
            f"by us; widen or move the port range"
        )

    def _candidates(self) -> Iterator[int]:
        """Free ports in FIFO order, skipping stale queue entries (leased or duplicated)."""
        while self._queue:
            entry = self._queue.popleft()
            if self._valid(entry):
                yield entry[0]

    def _bind(self, factory: ServerFactory, port: int) -> IListeningPort:
        """listenTCP, with every bind/listen failure as CannotListenError.

        Twisted wraps bind() errors but not listen()'s (e.g. EADDRINUSE when
        another socket listens with SO_REUSEPORT).
        """
        try:
            return self._reactor.listenTCP(
                port, factory, backlog=self.backlog, interface=self.interface
            )
        except CannotListenError:
            raise
        except OSError as error:
            raise CannotListenError(self.interface, port, error) from error

    def _bind_udp(self, protocol: DatagramProtocol) -> Binder:
        """listenUDP on a given port, with every bind failure as CannotListenError."""

        def bind(port: int) -> IListeningPort:
            try:
                return self._reactor.listenUDP(port, protocol, interface=self.interface)
            except CannotListenError:
                raise
            except OSError as error:
                raise CannotListenError(self.interface, port, error) from error

        return bind

    def _add_lease(self, port: int, owner: str, listening: IListeningPort, explicit: bool) -> Lease:
        lease = Lease(
            port=port,
            owner=owner,
            since=self._reactor.seconds(),
            explicit=explicit,
            listening_port=listening,
        )
        self._leases[port] = lease
        return lease
