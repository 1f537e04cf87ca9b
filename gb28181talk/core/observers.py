"""Session observers: the fan-out that tells every registered observer, and the operator's log."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from zope.interface import implementer

from gb28181talk.interfaces import ISessionObserver

log = Logger()


@implementer(ISessionObserver)
class ObserverSet:
    """Tells each registered observer in turn; a failing one is logged, never breaks a session."""

    def __init__(self) -> None:
        self._observers: list[Any] = []

    def add(self, observer: Any) -> None:
        """Register an ISessionObserver."""
        if not ISessionObserver.providedBy(observer):
            raise TypeError(f"{observer!r} does not provide ISessionObserver")
        self._observers.append(observer)

    def remove(self, observer: Any) -> None:
        """Unregister; harmless if it was not registered."""
        if observer in self._observers:
            self._observers.remove(observer)

    def _tell(self, event: str, *args: Any) -> None:
        for observer in tuple(self._observers):
            try:
                getattr(observer, event)(*args)
            except Exception:
                log.failure(
                    "session observer {observer!r} failed on {event}",
                    observer=observer,
                    event=event,
                )

    def session_started(self, session: Any) -> None:
        self._tell("session_started", session)

    def session_connected(self, session: Any, peer: tuple[str, int]) -> None:
        self._tell("session_connected", session, peer)

    def device_refused(self, session: Any, peer: tuple[str, int], why: str) -> None:
        self._tell("device_refused", session, peer, why)

    def session_ended(self, session: Any, reason: str, stats: Any) -> None:
        self._tell("session_ended", session, reason, stats)


@implementer(ISessionObserver)
class LoggingObserver:
    """One structured log line per event an operator cares about."""

    def session_started(self, session: Any) -> None:
        log.info(
            "talk session {id} ({key}) listening on port {port}, waiting {wait:g} s for the device",
            id=session.id,
            key=str(session.key),
            port=session.port,
            wait=session.params.wait_timeout,
        )

    def session_connected(self, session: Any, peer: tuple[str, int]) -> None:
        log.info(
            "talk session {id}: device {host}:{peer_port} connected to port {port}",
            id=session.id,
            host=peer[0],
            peer_port=peer[1],
            port=session.port,
        )

    def device_refused(self, session: Any, peer: tuple[str, int], why: str) -> None:
        """Already logged by the session itself."""

    def session_ended(self, session: Any, reason: str, stats: Any) -> None:
        """One line per ended session; the receive budget's figures named only when they count.

        ``excess_audio_s`` and ``receive_throttles`` are fields of the event whatever
        their value, so a log processor finds them on every end line.
        """
        log.info(
            "talk session {id} ended: {reason}{detail}; sent {sent} packets, received {received}, "
            "{violations} SSRC violations{budget}, jitter mean {jitter:.2f} ms, {duration:.1f} s",
            id=session.id,
            reason=reason,
            detail=f" ({session.end_detail})" if session.end_detail else "",
            sent=stats.packets_sent,
            received=stats.packets_received,
            violations=stats.ssrc_violations,
            budget=_budget_text(stats.excess_audio_s, stats.receive_throttles),
            excess_audio_s=stats.excess_audio_s,
            receive_throttles=stats.receive_throttles,
            jitter=stats.jitter_mean_ms,
            duration=stats.duration_s,
        )


def _budget_text(excess_audio_s: float, receive_throttles: int) -> str:
    """What the receive budget cut, for the end line: nothing when it cut nothing."""
    parts = []
    if excess_audio_s:
        parts.append(f"{excess_audio_s:.1f} s excess audio dropped")
    if receive_throttles:
        parts.append(f"receive throttled in {receive_throttles} s")
    return "".join(f", {part}" for part in parts)
