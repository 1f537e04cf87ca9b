"""The worker's side of the AMP connection: it runs the talk sessions the control places on it.

Each :class:`StartSession` becomes a real :class:`~gb28181talk.core.session.TalkSession`
(lifecycle, sender, receiver, the passive/active/UDP transports, the worker's
own pacer and writers), playing a relayed live source and leasing the socket
the control handed over (:class:`~gb28181talk.workers.handed.HandedPool`).
Its events go back as AMP commands; figures every :data:`STATS_INTERVAL` s.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import implementer

from gb28181talk.core.observers import ObserverSet
from gb28181talk.core.pacer import Pacer
from gb28181talk.core.params import EndReason
from gb28181talk.core.session import TalkSession
from gb28181talk.interfaces import IAudioSink, ISessionObserver
from gb28181talk.sources.live import LiveSource
from gb28181talk.workers.commands import (
    Connected,
    DeviceAudio,
    Ended,
    Frame,
    Hello,
    PortClosed,
    Refused,
    SourceEnded,
    StartSession,
    Stats,
    StopSession,
    params_from_json,
)
from gb28181talk.workers.handed import HandedPool
from gb28181talk.workers.relay import relayed_source

log = Logger()

STATS_INTERVAL = 1.0
"""How often a worker reports its live sessions' figures to the control."""
STATS_PER_MESSAGE = 100
"""Sessions per Stats message (an AMP value holds at most 64 KiB)."""


@implementer(IAudioSink)
class RelaySink:
    """A worker session's sink for the device's voice: each packet goes to the control."""

    def __init__(self, protocol: WorkerProtocol, session_id: str) -> None:
        self._protocol = protocol
        self._session_id = session_id

    def audio_received(self, pcm16: bytes, rtp_timestamp: int) -> None:
        """One packet of the device's audio, to the control's sinks."""
        self._protocol.tell(DeviceAudio, session_id=self._session_id, pcm=pcm16,
                                  rtp_timestamp=rtp_timestamp)

    def audio_ended(self) -> None:
        """The control ends its own sinks when it hears the session ended."""


@implementer(ISessionObserver)
class _Reporter:
    """Tells the control what happens to the worker's sessions."""

    def __init__(self, worker: WorkerProtocol) -> None:
        self._worker = worker

    def session_started(self, session: Any) -> None:
        """The control knows: it asked."""

    def session_connected(self, session: Any, peer: tuple[str, int]) -> None:
        self._worker.tell(Connected, session_id=session.id, host=peer[0],
                          peer_port=peer[1], local_port=session.port)

    def device_refused(self, session: Any, peer: tuple[str, int], why: str) -> None:
        self._worker.tell(Refused, session_id=session.id, host=peer[0],
                                peer_port=peer[1], why=why)

    def session_ended(self, session: Any, reason: str, stats: Any) -> None:
        self._worker.session_done(session)
        self._worker.tell(Ended, session_id=session.id, reason=str(reason),
                                detail=session.end_detail or "", stats=stats.as_dict())


class WorkerProtocol(amp.AMP):
    """AMP responder of a media worker: sessions, relayed sources, the pool of handed sockets."""

    def __init__(self, reactor: Any, interface: str = "", *, direct_send: bool = True,
                 stats_interval: float = STATS_INTERVAL) -> None:
        super().__init__()
        self.reactor = reactor
        self.pacer = Pacer(reactor)
        self.pool = HandedPool(reactor, interface, self._port_closed)
        self.direct_send = direct_send
        self.observers = ObserverSet()
        self.observers.add(_Reporter(self))
        self.sessions: dict[str, TalkSession] = {}
        self.sources: dict[int, LiveSource] = {}
        self._listeners: dict[int, int] = {}
        self._session_source: dict[str, int] = {}
        self._stats = LoopingCall(self.report_stats)
        self._stats.clock = reactor
        self._stats_interval = stats_interval
        self.lost = False
        self.on_lost: Any = None
        """Called when the control connection is gone (the process entry point exits)."""

    def tell(self, command: type[amp.Command], **arguments: Any) -> None:
        """Send an event that needs no answer; nothing once the control is gone."""
        if self.lost:
            return
        self.callRemote(command, **arguments)

    def connectionMade(self) -> None:
        super().connectionMade()
        self._stats.start(self._stats_interval, now=False)

    def connectionLost(self, reason: Failure) -> None:
        self.lost = True
        super().connectionLost(reason)
        if self._stats.running:
            self._stats.stop()
        for session in list(self.sessions.values()):
            session.stop(EndReason.SHUTDOWN)
        self.pacer.stop()
        if self.on_lost is not None:
            self.on_lost()

    # -- commands from the control

    @Hello.responder
    def hello(self) -> dict[str, int]:
        """The control asks whether this worker is up: it is, with this pid."""
        return {"pid": os.getpid()}

    @StartSession.responder
    def start_session(self, session_id: str, params: str, source_id: int, port: int,
                      family: int, fd: int | None = None) -> dict[str, int]:
        """Run one talk session on this worker; its port is the control's handed socket."""
        if fd is not None:
            self.pool.hand(session_id, fd, family, port)
        try:
            session_params = params_from_json(params)
            source = self.sources.get(source_id)
            if source is None:
                key = session_params.key
                source = self.sources[source_id] = relayed_source(key.app, key.stream)
            sinks = [RelaySink(self, session_id)] if session_params.receive else []
            session = TalkSession(session_id, session_params, source, reactor=self.reactor,
                                  pool=self.pool, pacer=self.pacer, observer=self.observers,
                                  sinks=sinks, direct_send=self.direct_send)
            self.sessions[session_id] = session
            self._session_source[session_id] = source_id
            self._listeners[source_id] = self._listeners.get(source_id, 0) + 1
            session.start()
        except BaseException:
            self.pool.discard(session_id)
            self.session_done_id(session_id)
            raise
        return {"port": session.port}

    @StopSession.responder
    def stop_session(self, session_id: str, reason: str) -> dict[str, Any]:
        """End one session (the control has ended its view of it already)."""
        session = self.sessions.get(session_id)
        if session is not None:
            session.stop(EndReason(reason))
        return {}

    @Frame.responder
    def frame(self, source_id: int, pcm: bytes) -> dict[str, Any]:
        """One frame of a relayed source."""
        source = self.sources.get(source_id)
        if source is not None:
            source.feed_pcm(pcm)
        return {}

    @SourceEnded.responder
    def source_ended(self, source_id: int) -> dict[str, Any]:
        """A relayed source ended: its sessions end once it is played out."""
        source = self.sources.get(source_id)
        if source is not None:
            source.finish()
        return {}

    # -- bookkeeping

    def session_done(self, session: TalkSession) -> None:
        """A session ended: forget it, and its relayed source once nobody here plays it."""
        self.session_done_id(session.id)

    def session_done_id(self, session_id: str) -> None:
        """Forget the session ``session_id`` (see :meth:`session_done`)."""
        self.sessions.pop(session_id, None)
        source_id = self._session_source.pop(session_id, None)
        if source_id is None:
            return
        left = self._listeners.get(source_id, 0) - 1
        if left > 0:
            self._listeners[source_id] = left
            return
        self._listeners.pop(source_id, None)
        source = self.sources.pop(source_id, None)
        if source is not None:
            source.close()

    def _port_closed(self, owner: str) -> None:
        self.tell(PortClosed, session_id=owner)

    def report_stats(self) -> None:
        """Send the live sessions' figures to the control, a hundred per message."""
        figures = [[session.id, session.stats.as_dict()] for session in self.sessions.values()]
        for start in range(0, len(figures), STATS_PER_MESSAGE):
            self.tell(Stats, figures=figures[start:start + STATS_PER_MESSAGE])
