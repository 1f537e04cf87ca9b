"""The control's session manager for ``--workers N``: what SessionManager offers, on workers.

:class:`WorkerManager` offers the talk core, the APIs and the service what
:class:`~gb28181talk.core.manager.SessionManager` offers (start, get, find,
matching, sessions, stop, shutdown, count_by_state, observers, the pool),
and runs each new session on the least-loaded live worker
(:func:`least_loaded`).  The control keeps the one PortPool: it binds and
listens the session's port itself, synchronously, so a busy or exhausted
port is refused at once, then hands the socket to the worker.  It relays
each source's frames once per worker that plays it (the control's pacer
reads it as ever) and forwards the device's voice to the session's sinks.

What stays in the control: sessions given their own transport (``rtp-server``
talk-back on an ``openRtpServer`` connection), and every session while no
worker is ready (it answered Hello: the first half second after start).
A worker that exits: its sessions end with ``worker-lost``, their ports
return, the slot is started again, the other workers go on.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from gb28181talk.core.identity import Identity, OnRepeat, Outcome, decide, differences
from gb28181talk.core.manager import SessionManager
from gb28181talk.core.pacer import Pacer
from gb28181talk.core.params import EndReason, SessionParams, SessionState, TransportKind
from gb28181talk.core.ports import Lease, PortPool
from gb28181talk.core.transport import ITalkTransport
from gb28181talk.errors import SessionConflict, ShuttingDown
from gb28181talk.interfaces import IAudioSink, IAudioSource
from gb28181talk.workers.commands import StartSession, StopSession, params_to_json, stats_from_dict
from gb28181talk.workers.handed import HandedPort, tcp_binder, udp_binder
from gb28181talk.workers.link import WorkerLink, spawn_worker
from gb28181talk.workers.relay import RelayListener
from gb28181talk.workers.remote import RemoteSession

log = Logger()

RESTART_DELAY = 0.5
"""Seconds before a worker slot whose process exited is started again."""
MAX_RESTART_DELAY = 30.0
"""The longest wait before a restart: a worker that keeps dying at start doubles it up to this."""
SHORT_LIFE = 5.0
"""A worker that lived less than this (seconds) died young: its next restart waits longer."""
STOP_GRACE = 5.0
"""Seconds a worker has to exit once its connection is closed at stop, before SIGKILL."""

Launcher = Callable[[int, Any], WorkerLink]
"""Starts worker ``index`` with ``handler`` for its events (spawn_worker, or a test double)."""


def least_loaded(links: Sequence[WorkerLink]) -> WorkerLink | None:
    """The ready worker with the fewest sessions (the lowest slot on a tie), or None."""
    best: WorkerLink | None = None
    for link in links:
        if link.up and link.ready and (best is None or link.load < best.load):
            best = link
    return best


class WorkerManager:
    """Talk sessions on media worker processes, offered as a SessionManager."""

    def __init__(self, reactor: Any, pool: PortPool, pacer: Pacer | None = None, *,
                 workers: int = 2, direct_send: bool = True,
                 launch: Launcher | None = None) -> None:
        self._reactor = reactor
        self.pool = pool
        self.pacer = pacer or Pacer(reactor)
        self.direct_send = direct_send
        self.count = workers
        self.local = SessionManager(reactor, pool, self.pacer, direct_send=direct_send)
        """The sessions that run in the control (rtp-server talk-back; no worker up)."""
        self.observers = self.local.observers
        self._launch = launch or self._spawn
        self.links: list[WorkerLink | None] = [None] * workers
        self._remote: dict[str, RemoteSession] = {}
        self._by_identity: dict[Identity, Any] = {}
        self._identities: dict[str, Identity] = {}
        self._leases: dict[str, Lease] = {}
        self._source_ids = 0
        self.running = False
        self.restarts = 0
        self._refills: dict[int, Any] = {}
        self._delays: dict[int, float] = {}

    @property
    def shutting_down(self) -> bool:
        """True once shutdown began: no new sessions."""
        return self.local.shutting_down

    # -- the workers

    def _spawn(self, index: int, handler: Any) -> WorkerLink:
        return spawn_worker(self._reactor, index, handler, interface=self.pool.interface,
                            direct_send=self.direct_send)

    def start_workers(self) -> None:
        """Start every worker slot."""
        self.running = True
        for index in range(self.count):
            self._fill(index)

    def _fill(self, index: int) -> None:
        if not self.running or self.shutting_down:
            return
        link = self._launch(index, self)
        link.started_at = self._reactor.seconds()
        link.on_lost = self._worker_lost
        link.on_exit = self._worker_exited
        self.links[index] = link

    def stop_workers(self) -> Deferred[None]:
        """Close every worker's connection (they exit); fires once every process has ended."""
        self.running = False
        for call in self._refills.values():
            if call.active():
                call.cancel()
        self._refills.clear()
        exits = [link.close(self._reactor, STOP_GRACE) for link in self.links
                 if link is not None]
        return gatherResults(exits).addCallback(lambda _: None)

    def _worker_lost(self, link: WorkerLink, why: str) -> None:
        """A worker is gone: its sessions end with worker-lost and their ports return."""
        if not self.running and not link.sessions:  # stopped with the service
            log.info("media worker {index} (pid {pid}) stopped", index=link.index, pid=link.pid)
        else:
            self._lost_warning(link, why)
        for session_id in list(link.sessions):
            session = self._remote.get(session_id)
            if session is not None:
                self._end(session, EndReason.WORKER_LOST,
                          f"media worker {link.index} (pid {link.pid}) exited", tell=False)
        for session_id in list(link.leased):
            self._port_returned(link, session_id)
        for source, relay in list(link.relays.items()):
            self.pacer.detach(source, relay)
        link.relays.clear()

    @staticmethod
    def _lost_warning(link: WorkerLink, why: str) -> None:
        log.warn("media worker {index} (pid {pid}) is gone: {why}; its {count} talk "
                 "session(s) end with worker-lost", index=link.index, pid=link.pid, why=why,
                 count=len(link.sessions))

    def _worker_exited(self, link: WorkerLink) -> None:
        if self.links[link.index] is link and self.running and not self.shutting_down:
            self.restarts += 1
            lived = self._reactor.seconds() - link.started_at
            delay = self._delays.get(link.index, RESTART_DELAY)
            delay = min(delay * 2, MAX_RESTART_DELAY) if lived < SHORT_LIFE else RESTART_DELAY
            self._delays[link.index] = delay
            log.info("media worker {index} starts again in {delay:g} s", index=link.index,
                     delay=delay)
            self._refills[link.index] = self._reactor.callLater(delay, self._refill, link)

    def _refill(self, link: WorkerLink) -> None:
        self._refills.pop(link.index, None)
        if self.links[link.index] is link:
            self._fill(link.index)

    # -- SessionManager's offer

    def add_observer(self, observer: Any) -> None:
        """Register an ISessionObserver for every session's events."""
        self.local.add_observer(observer)

    def start(self, params: SessionParams, source: IAudioSource, *,
              sinks: Sequence[IAudioSink] = (), replace: bool = False,
              identity: Identity | None = None,
              transport: ITalkTransport | None = None) -> Any:
        """Start (or, for a live identity, return) a session: SessionManager.start's rule."""
        if self.shutting_down:
            raise ShuttingDown("the service is shutting down; no new talk sessions")
        identity = identity if identity is not None else params.key
        existing = self.find(identity)
        if existing is not None:
            found = differences(existing.params, existing.port, params)
            policy = OnRepeat.REPLACE if replace else OnRepeat.CONFLICT
            outcome = decide(policy, found, existing.state is SessionState.STREAMING)
            if outcome is Outcome.REUSE:
                return existing
            if outcome is Outcome.CONFLICT:
                raise SessionConflict(existing.id, identity, existing.port, str(existing.state),
                                      found)
            existing.stop(EndReason.STOPPED)
        link = least_loaded([link for link in self.links if link is not None])
        if transport is not None or params.transport is TransportKind.RTP_SERVER or link is None:
            return self.local.start(params, source, sinks=sinks, identity=identity,
                                    transport=transport)
        return self._start_remote(link, params, source, sinks, identity)

    def _start_remote(self, link: WorkerLink, params: SessionParams, source: IAudioSource,
                      sinks: Sequence[IAudioSink], identity: Identity) -> RemoteSession:
        session_id = self._new_id()
        lease = self._lease(params, session_id)  # PortInUse/PoolExhausted: nothing changed
        handed: HandedPort | None = lease.listening_port if lease is not None else None  # type: ignore[assignment]
        relay = link.relays.get(source)
        if relay is None:
            self._source_ids += 1
            relay = link.relays[source] = RelayListener(self._source_ids, link.send_frame,
                                                        link.send_end)
            self.pacer.attach(source, relay)
        relay.sessions += 1
        session = RemoteSession(session_id, params, source, worker_index=link.index,
                                port=lease.port if lease is not None else params.src_port,
                                now=self._reactor.seconds, end=self._end, sinks=sinks)
        self._remote[session_id] = session
        self._by_identity[identity] = session
        self._identities[session_id] = identity
        link.sessions.add(session_id)
        if lease is not None:
            self._leases[session_id] = lease
            link.leased.add(session_id)
        asked = link.send(StartSession, session_id=session_id, params=params_to_json(params),
                          source_id=relay.source_id, port=session.port,
                          family=handed.socket.family if handed is not None else 0,
                          fd=handed.fileno if handed is not None else None)
        if asked is not None:
            asked.addCallbacks(lambda answer: self._started(session, answer),
                               lambda failure: self._start_failed(link, session, failure))
        self.observers.session_started(session)
        return session

    def _lease(self, params: SessionParams, session_id: str) -> Lease | None:
        kind = params.transport
        if kind is TransportKind.TCP_PASSIVE:
            bind = tcp_binder(self.pool.interface, self.pool.backlog)
        elif kind in (TransportKind.UDP, TransportKind.UDP_PASSIVE):
            bind = udp_binder(self.pool.interface)
        else:
            return None  # tcp-active: the worker dials out
        return self.pool.lease_with(bind, session_id, params.src_port)

    def _started(self, session: RemoteSession, answer: dict[str, Any]) -> None:
        if not session.port:
            session.port = answer["port"]

    def _start_failed(self, link: WorkerLink, session: RemoteSession, failure: Any) -> None:
        if not link.up:  # the worker is gone: its sessions ended with worker-lost
            return
        log.warn("media worker {index} could not start talk session {id}: {why}",
                 index=link.index, id=session.id, why=failure.getErrorMessage())
        self._end(session, EndReason.ERROR, f"the media worker refused it: "
                  f"{failure.getErrorMessage()}", tell=False)
        self._port_returned(link, session.id)

    def get(self, session_id: str) -> Any:
        """The live session with this id, if any."""
        return self._remote.get(session_id) or self.local.get(session_id)

    def find(self, identity: Identity) -> Any:
        """The live session with this identity (a key or a Call-ID), if any."""
        session = self._by_identity.get(identity)
        if session is not None and session.state is not SessionState.CLOSED:
            return session
        return self.local.find(identity)

    def identity_of(self, session: Any) -> Identity | None:
        """The identity ``session`` was started under, while it is live."""
        return self._identities.get(session.id) or self.local.identity_of(session)

    def matching(self, vhost: str, app: str, stream: str, ssrc: int | None = None) -> list[Any]:
        """Live sessions playing ``app/stream`` on ``vhost`` (one SSRC, or all)."""
        return [session for session in self.sessions()
                if (session.key.vhost, session.key.app, session.key.stream) == (vhost, app, stream)
                and (ssrc is None or session.key.ssrc == ssrc)]

    def sessions(self) -> list[Any]:
        """Every live session, oldest first, wherever it runs."""
        return sorted([*self._remote.values(), *self.local.sessions()],
                      key=lambda session: session.created_at)

    def stop(self, session_id: str, reason: EndReason = EndReason.STOPPED) -> bool:
        """Stop one session by id; False if there is no such live session."""
        session = self.get(session_id)
        return session.stop(reason) if session is not None else False

    def stop_matching(self, vhost: str, app: str, stream: str, ssrc: int | None = None) -> int:
        """Stop the sessions playing ``app/stream``; returns how many were stopped."""
        return sum(session.stop() for session in self.matching(vhost, app, stream, ssrc))

    def shutdown(self) -> Deferred[None]:
        """End every session with ``shutdown``; fires once every port is closed."""
        for session in list(self._remote.values()):
            session.stop(EndReason.SHUTDOWN)
        return self.local.shutdown()

    def count_by_state(self) -> dict[str, int]:
        """How many live sessions are in each state."""
        counts = self.local.count_by_state()
        for session in self._remote.values():
            if session.state is not SessionState.CLOSED:
                counts[str(session.state)] += 1
        return counts

    def describe_workers(self) -> list[dict[str, Any]]:
        """Each worker slot: its pid, whether it is up, how many sessions it runs."""
        return [{"index": index, "pid": link.pid if link else None,
                 "up": bool(link and link.up), "ready": bool(link and link.ready),
                 "sessions": link.load if link else 0}
                for index, link in enumerate(self.links)]

    # -- ends

    def _end(self, session: RemoteSession, reason: EndReason, detail: str,
             tell: bool = True) -> bool:
        """The one way a remote session ends: forgotten, relay released, observers told once."""
        if session.state is SessionState.CLOSED:
            return False
        session.state = SessionState.CLOSED
        session.end_reason = reason
        session.end_detail = detail
        session.ended_at = self._reactor.seconds()
        self._remote.pop(session.id, None)
        identity = self._identities.pop(session.id, None)
        if identity is not None and self._by_identity.get(identity) is session:
            del self._by_identity[identity]
        link = self._link(session)
        if link is not None:
            link.sessions.discard(session.id)
            relay = link.relays.get(session.source)
            if relay is not None:
                relay.sessions -= 1
                if relay.sessions <= 0:
                    del link.relays[session.source]
                    self.pacer.detach(session.source, relay)
            if tell:
                link.send(StopSession, session_id=session.id, reason=str(reason))
        for sink in session.sinks:
            try:
                sink.audio_ended()
            except Exception:
                log.failure("sink {sink!r} failed at the end", sink=sink)
        self.observers.session_ended(session, reason, session.stats)
        return True

    def _link(self, session: RemoteSession) -> WorkerLink | None:
        link = self.links[session.worker_index]
        return link if link is not None and session.id in link.sessions | link.leased else None

    def _port_returned(self, link: WorkerLink, session_id: str) -> None:
        link.leased.discard(session_id)
        lease = self._leases.pop(session_id, None)
        if lease is not None:
            handed = lease.listening_port
            if isinstance(handed, HandedPort):
                handed.worker_closed()
            self.pool.release(lease)

    def _new_id(self) -> str:
        while True:
            session_id = secrets.token_hex(6)
            if session_id not in self._remote and self.local.get(session_id) is None:
                return session_id

    # -- what the workers tell (ControlProtocol's handler)

    def _live(self, session_id: str) -> RemoteSession | None:
        return self._remote.get(session_id)

    def worker_connected(self, session_id: str, peer: tuple[str, int],
                         local_port: int = 0) -> None:
        """The session's device connected in its worker (to ``local_port``)."""
        session = self._live(session_id)
        if session is None:
            return
        if local_port:
            session.port = local_port
        session.peer = peer
        session.connected_at = self._reactor.seconds()
        session.state = SessionState.STREAMING
        self.observers.session_connected(session, peer)

    def worker_refused(self, session_id: str, peer: tuple[str, int], why: str) -> None:
        """A connection to the session was refused in its worker."""
        session = self._live(session_id)
        if session is not None:
            session.refused += 1
            self.observers.device_refused(session, peer, why)

    def worker_ended(self, session_id: str, reason: str, detail: str,
                     stats: dict[str, Any]) -> None:
        """The session ended in its worker (a stop from here has ended it already)."""
        session = self._live(session_id)
        if session is None:
            return
        session.reported = stats_from_dict(stats)
        self._end(session, EndReason(reason), detail, tell=False)

    def worker_port_closed(self, session_id: str) -> None:
        """The worker closed the session's socket: the port returns to the pool."""
        for link in self.links:
            if link is not None and session_id in link.leased:
                self._port_returned(link, session_id)
                return

    def worker_stats(self, figures: list[Any]) -> None:
        """The workers' periodic figures."""
        for session_id, stats in figures:
            session = self._remote.get(session_id)
            if session is not None:
                session.reported = stats_from_dict(stats)

    def worker_audio(self, session_id: str, pcm: bytes, rtp_timestamp: int) -> None:
        """One packet of the device's voice: to the session's sinks (device source, recorder)."""
        session = self._remote.get(session_id)
        if session is None:
            return
        for sink in session.sinks:
            sink.audio_received(pcm, rtp_timestamp)


class WorkersService(Service):
    """Starts the media workers with the service and stops them (after the sessions ended)."""

    name = "media workers"

    def __init__(self, manager: WorkerManager) -> None:
        self.manager = manager

    def startService(self) -> None:
        super().startService()
        self.manager.start_workers()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.manager.stop_workers()
