"""The session manager: owns every talk session, the pool and the pacer; ends all on shutdown."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from zope.interface import implementer

from gb28181talk.core.identity import Identity, OnRepeat, Outcome, decide, differences
from gb28181talk.core.observers import ObserverSet
from gb28181talk.core.pacer import Pacer
from gb28181talk.core.params import EndReason, SessionParams, SessionState
from gb28181talk.core.ports import PortPool
from gb28181talk.core.session import TalkSession
from gb28181talk.core.transport import ITalkTransport
from gb28181talk.errors import SessionConflict, ShuttingDown
from gb28181talk.interfaces import IAudioSink, IAudioSource, ISessionObserver


@implementer(ISessionObserver)
class _Bookkeeper:
    """Forgets sessions when they end (registered first, so later observers see true listings)."""

    def __init__(self, manager: SessionManager) -> None:
        self._manager = manager

    def session_started(self, session: Any) -> None:
        """Nothing to do: start() registers the session itself."""

    def session_connected(self, session: Any, peer: tuple[str, int]) -> None:
        """Nothing to do."""

    def device_refused(self, session: Any, peer: tuple[str, int], why: str) -> None:
        """Nothing to do."""

    def session_ended(self, session: Any, reason: str, stats: Any) -> None:
        self._manager._forget(session)


class SessionManager:
    """Starts, finds and stops talk sessions; at most one live session per identity.

    A session's identity is its key unless the caller names another (a SIP
    Call-ID, :class:`~gb28181talk.core.identity.CallId`).  A start for an
    identity with a live session follows the one rule of
    :mod:`gb28181talk.core.identity` with policy ``CONFLICT`` (or ``REPLACE``
    for ``replace=True``): the same settings get that session again (the port
    a retried call must get again), other settings raise SessionConflict,
    ``replace=True`` stops the old one (reason ``stopped``) and starts afresh
    at once.  The talk core (:mod:`gb28181talk.core.talk`) applies the same
    rule with the front ends' policies and waits for a port to close.
    """

    def __init__(
        self,
        reactor: Any,
        pool: PortPool,
        pacer: Pacer | None = None,
        *,
        direct_send: bool = True,
    ) -> None:
        self._reactor = reactor
        self.pool = pool
        self.pacer = pacer or Pacer(reactor)
        self.direct_send = direct_send
        self.observers = ObserverSet()
        self.observers.add(_Bookkeeper(self))
        self._by_id: dict[str, TalkSession] = {}
        self._by_identity: dict[Identity, TalkSession] = {}
        self._identities: dict[str, Identity] = {}
        self.shutting_down = False

    def add_observer(self, observer: Any) -> None:
        """Register an ISessionObserver for every session's events."""
        self.observers.add(observer)

    def start(
        self,
        params: SessionParams,
        source: IAudioSource,
        *,
        sinks: Sequence[IAudioSink] = (),
        replace: bool = False,
        identity: Identity | None = None,
        transport: ITalkTransport | None = None,
    ) -> TalkSession:
        """Start (or, for a live identity, return) a talk session.

        ``identity`` defaults to ``params.key``; ``transport`` to the one
        ``params.transport`` names (core/transports.py).  Raises ShuttingDown,
        SessionConflict (a live identity asked with other settings), PortError.
        """
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
        session = TalkSession(
            self._new_id(),
            params,
            source,
            reactor=self._reactor,
            pool=self.pool,
            pacer=self.pacer,
            observer=self.observers,
            sinks=sinks,
            direct_send=self.direct_send,
            transport=transport,
        )
        self._by_id[session.id] = session
        self._by_identity[identity] = session
        self._identities[session.id] = identity
        try:
            session.start()
        except Exception:
            self._forget(session)
            raise
        return session

    def get(self, session_id: str) -> TalkSession | None:
        """The live session with this id, if any."""
        return self._by_id.get(session_id)

    def find(self, identity: Identity) -> TalkSession | None:
        """The live session with this identity (a key or a Call-ID), if any."""
        session = self._by_identity.get(identity)
        return session if session is not None and session.state is not SessionState.CLOSED else None

    def identity_of(self, session: TalkSession) -> Identity | None:
        """The identity ``session`` was started under, while it is live."""
        return self._identities.get(session.id)

    def matching(
        self, vhost: str, app: str, stream: str, ssrc: int | None = None
    ) -> list[TalkSession]:
        """Live sessions playing ``app/stream`` on ``vhost`` (one SSRC, or all)."""
        return [
            session
            for session in self._by_id.values()
            if (session.key.vhost, session.key.app, session.key.stream) == (vhost, app, stream)
            and (ssrc is None or session.key.ssrc == ssrc)
        ]

    def sessions(self) -> list[TalkSession]:
        """Every live session, oldest first."""
        return sorted(self._by_id.values(), key=lambda session: session.created_at)

    def stop(self, session_id: str, reason: EndReason = EndReason.STOPPED) -> bool:
        """Stop one session by id; False if there is no such live session."""
        session = self._by_id.get(session_id)
        return session.stop(reason) if session is not None else False

    def stop_matching(self, vhost: str, app: str, stream: str, ssrc: int | None = None) -> int:
        """Stop the sessions playing ``app/stream``; returns how many were stopped."""
        return sum(session.stop() for session in self.matching(vhost, app, stream, ssrc))

    def shutdown(self) -> Deferred[None]:
        """End every session with ``shutdown``; fires once every port is closed."""
        self.shutting_down = True
        leases = self.pool.leases()
        for session in self.sessions():
            session.stop(EndReason.SHUTDOWN)
        self.pacer.stop()
        closing = [lease.closed for lease in leases if not lease.closed.called]
        return gatherResults(closing).addCallback(lambda _: None)

    def count_by_state(self) -> dict[str, int]:
        """How many live sessions are in each state."""
        counts = {str(state): 0 for state in SessionState if state is not SessionState.CLOSED}
        for session in self._by_id.values():
            if session.state is not SessionState.CLOSED:
                counts[str(session.state)] += 1
        return counts

    def _forget(self, session: TalkSession) -> None:
        self._by_id.pop(session.id, None)
        identity = self._identities.pop(session.id, None)
        if identity is not None and self._by_identity.get(identity) is session:
            del self._by_identity[identity]

    def _new_id(self) -> str:
        while True:
            session_id = secrets.token_hex(6)
            if session_id not in self._by_id:
                return session_id
