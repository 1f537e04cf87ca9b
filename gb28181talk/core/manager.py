"""The session manager: owns every talk session, the pool and the pacer; ends all on shutdown."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from zope.interface import implementer

from gb28181talk.core.observers import ObserverSet
from gb28181talk.core.pacer import Pacer
from gb28181talk.core.params import EndReason, SessionKey, SessionParams, SessionState
from gb28181talk.core.ports import PortPool
from gb28181talk.core.session import TalkSession
from gb28181talk.errors import SessionError
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
    """Starts, finds and stops talk sessions; one per key unless replaced.

    Starting a key that already has a live session returns that session (the
    port a retried INVITE or API call must get again) unless ``replace=True``,
    which stops the old one (reason ``stopped``) and starts afresh.
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
        self._by_key: dict[SessionKey, TalkSession] = {}
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
    ) -> TalkSession:
        """Start (or, for a live key, return) a talk session; raises PortError, SessionError."""
        if self.shutting_down:
            raise SessionError("the service is shutting down; no new talk sessions")
        existing = self._by_key.get(params.key)
        if existing is not None and existing.state is not SessionState.CLOSED:
            if not replace:
                return existing
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
        )
        self._by_id[session.id] = session
        self._by_key[params.key] = session
        try:
            session.start()
        except Exception:
            self._forget(session)
            raise
        return session

    def get(self, session_id: str) -> TalkSession | None:
        """The live session with this id, if any."""
        return self._by_id.get(session_id)

    def find(self, key: SessionKey) -> TalkSession | None:
        """The live session with this key, if any."""
        return self._by_key.get(key)

    def matching(
        self, vhost: str, app: str, stream: str, ssrc: int | None = None
    ) -> list[TalkSession]:
        """Live sessions playing ``app/stream`` on ``vhost`` (one SSRC, or all)."""
        return [
            session
            for key, session in self._by_key.items()
            if (key.vhost, key.app, key.stream) == (vhost, app, stream)
            and (ssrc is None or key.ssrc == ssrc)
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
        if self._by_key.get(session.key) is session:
            del self._by_key[session.key]

    def _new_id(self) -> str:
        while True:
            session_id = secrets.token_hex(6)
            if session_id not in self._by_id:
                return session_id
