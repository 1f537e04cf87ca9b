"""The talk core: the one place that starts, finds, replaces and stops talk sessions.

Every front end drives it: the ZLMediaKit API (``startSendRtpPassive``), the
native API (``POST /api/sessions``), the SIP seam
(:class:`gb28181talk.sip.seam.TalkSignalling`) and later the browser.  Each
builds a :class:`~gb28181talk.core.request.TalkRequest`; the core finds the
source, applies the identity rule, wires two-way audio (the device's voice
published as ``app/recv_stream_id`` and recorded under ``record_dir``) and
raises domain errors (:mod:`gb28181talk.errors`) that the web layer maps to
codes and statuses (``web/errors.py``) and a SIP stack to SIP answers.

The identity rule (one rule for every front end).  A session's identity is
the caller's key (ZLMediaKit: vhost/app/stream/ssrc) or a SIP Call-ID; at
most one session per identity is live.  A start whose identity has a live
session:

* with the **same settings** gets that session (a retried call or a
  retransmitted INVITE gets the port it was given) -- except that
  ``OnRepeat.REPLACE`` (``"replace": true``) always replaces, and
  ``OnRepeat.REPLACE_UNLESS_WAITING`` (ZLMediaKit's API) replaces a session
  whose device is already connected, as ZLMediaKit re-creates its sender;
* with **other settings** is refused with ``SessionConflict`` naming each
  difference under ``OnRepeat.CONFLICT`` (the native API's default), and
  replaces the session under every other policy (a SIP re-INVITE:
  ``OnRepeat.REPLACE_IF_CHANGED``; ZLMediaKit's API);
* a **replacement** is checked first (source, name of the device's audio,
  record directory, an explicit port held by another session), then the old
  session stops (reason ``stopped``); when the new one asks for an explicit
  port the old one holds, the start waits until that port is really closed.
  It is decided once and never loops.

Settings are what the device sees (codec, packaging, payload type, framing,
packet duration, two-way, the expected peer, an explicit port, the name of
the device's audio); see :func:`gb28181talk.core.identity.differences`.
Sessions that end on their own are forgotten (the manager's bookkeeping and
this core's wiring), so a later start with their identity starts afresh.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from gb28181talk.core.identity import Identity, Outcome, decide, differences
from gb28181talk.core.manager import SessionManager
from gb28181talk.core.params import EndReason, SessionState, TransportKind
from gb28181talk.core.request import TalkRequest
from gb28181talk.core.rtp_server import RtpServers, TalkBackTransport
from gb28181talk.core.session import TalkSession
from gb28181talk.core.wiring import TwoWayWiring, Wiring
from gb28181talk.errors import (
    DeviceUnreachable,
    PortBusy,
    ReplaceFailed,
    RtpServerNotFound,
    SessionConflict,
    SessionNotFound,
    ShuttingDown,
    SourceEnded,
    SourceNotFound,
)
from gb28181talk.interfaces import ISessionObserver
from gb28181talk.sources.registry import SourceRegistry


@implementer(ISessionObserver)
class TalkControl:
    """The application core over the session manager and the source registry.

    ``start`` (or ``start_now`` for callers that cannot wait) starts a
    session or finds the live one of the request's identity by the rule of
    this module; ``find``, ``stop`` and ``when_ended`` act by identity;
    ``describe`` is a session's JSON view with its wiring.
    """

    def __init__(
        self,
        clock: Any,
        manager: SessionManager,
        registry: SourceRegistry,
        *,
        record_dir: str | None = None,
        advertise_ip: str | None = None,
        rtp_servers: RtpServers | None = None,
    ) -> None:
        self.clock = clock
        self.manager = manager
        self.registry = registry
        self.advertise_ip = advertise_ip
        self.wiring = TwoWayWiring(clock, registry, record_dir)
        self._wirings: dict[str, Wiring] = {}
        self._replacing: set[str] = set()
        self._end_waiters: dict[Identity, list[Deferred[str]]] = {}
        self._connect_waiters: dict[str, list[Deferred[TalkSession]]] = {}
        self.rtp_servers = rtp_servers if rtp_servers is not None else RtpServers(
            clock, manager.pool, registry)
        """The open RTP servers (``openRtpServer``), whose connections talk sessions reuse."""
        manager.add_observer(self)

    @property
    def record_dir(self) -> str | None:
        """Where two-way sessions record the device's audio (None: not recorded)."""
        return self.wiring.record_dir

    # -- finding

    def source(self, app: str, stream: str) -> Any:
        """The playable source app/stream; SourceNotFound or SourceEnded if there is none."""
        source = self.registry.find(app, stream)
        if source is None:
            raise SourceNotFound(app, stream)
        if source.ended:
            raise SourceEnded(app, stream)
        return source

    def find(self, identity: Identity) -> TalkSession | None:
        """The live session of this identity (a SessionKey or a CallId), if any."""
        return self.manager.find(identity)

    def request_of(self, session: TalkSession) -> TalkRequest | None:
        """The request a live session was started with through the core, if it was."""
        wiring = self._wirings.get(session.id)
        return wiring.request if wiring is not None else None

    # -- starting

    def start(self, request: TalkRequest) -> Deferred[TalkSession]:
        """Start a session, or find again the live one of its identity (the module's rule).

        The Deferred has fired already unless a replaced session's explicit
        port had to close first; it fails with the domain error of a refusal.
        """
        return Deferred.fromCoroutine(self._start(request, can_wait=True))

    def start_now(self, request: TalkRequest) -> TalkSession:
        """``start`` for callers that must answer at once (a SIP stack's ``prepare``).

        Same rule; a replacement that would have to wait for its explicit port
        to close is refused with PortBusy instead (a pool port never waits).
        """
        outcome: list[Any] = []
        Deferred.fromCoroutine(self._start(request, can_wait=False)).addBoth(outcome.append)
        (result,) = outcome  # without waiting, the coroutine has finished
        if isinstance(result, Failure):
            result.raiseException()
        return result  # type: ignore[no-any-return]

    async def _start(self, request: TalkRequest, can_wait: bool) -> TalkSession:
        identity = request.session_identity
        replaced: list[TalkSession] = []
        try:
            return await self._decide_and_start(request, identity, can_wait, replaced)
        except Exception:
            if replaced and self.manager.find(identity) is None:
                # The old session ended for a replacement that failed: the call is over.
                self._call_ended(identity, str(EndReason.STOPPED))
            raise

    async def _decide_and_start(self, request: TalkRequest, identity: Identity, can_wait: bool,
                                replaced: list[TalkSession]) -> TalkSession:
        stopped: TalkSession | None = None
        while True:
            self._refuse_when_shutting_down()
            existing = self.manager.find(identity)
            if existing is None:
                return self._start_new(request, identity)
            if existing is stopped:  # stop() did not end it: never loop on it
                raise ReplaceFailed(existing.id, identity)
            found = self.differences(existing, request)
            outcome = decide(request.on_repeat, found,
                             existing.state is SessionState.STREAMING)
            if outcome is Outcome.REUSE:
                return existing
            if outcome is Outcome.CONFLICT:
                raise SessionConflict(existing.id, identity, existing.port,
                                      str(existing.state), found)
            # Replaced: check what can be checked before ending the old one.
            self._check_startable(request, replacing=existing)
            port = request.params.src_port
            closing = [lease for lease in self.manager.pool.leases()
                       if port and lease.port == port and lease.owner == existing.id
                       and not lease.closed.called]
            if closing and not can_wait:
                raise PortBusy(port, existing.id, str(existing.state))
            self._replacing.add(existing.id)
            try:
                self.manager.stop(existing.id)
            finally:
                self._replacing.discard(existing.id)
            stopped = existing
            replaced.append(existing)
            for lease in closing:
                await lease.closed  # its port is really free again
            # Another call may have started this identity meanwhile: decide again.

    def _refuse_when_shutting_down(self) -> None:
        if self.manager.shutting_down:
            raise ShuttingDown()

    def differences(self, existing: TalkSession, request: TalkRequest) -> list[str]:
        """What a live session has that ``request`` asks otherwise: ``codec PCMA (asked PCMU)``."""
        have = self.request_of(existing)
        return differences(
            existing.params, existing.port, request.params,
            have.recv_stream_id if have is not None else None, request.recv_stream_id,
        )

    def _check_startable(self, request: TalkRequest, replacing: TalkSession | None) -> Any:
        """The source to play, once every check that needs no port has passed."""
        key = request.params.key
        source = self.source(key.app, key.stream)
        self.wiring.check(request, self._wirings.get(replacing.id) if replacing else None)
        port = request.params.src_port
        if port and replacing is not None:
            for lease in self.manager.pool.leases():
                if lease.port == port and lease.owner != replacing.id:
                    raise PortBusy(port, lease.owner, lease.state)
        return source

    def _start_new(self, request: TalkRequest, identity: Identity) -> TalkSession:
        source = self._check_startable(request, replacing=None)
        transport = self._talk_back_transport(request)
        wiring = self.wiring.build(request)
        try:
            session = self.manager.start(request.params, source, sinks=wiring.sinks,
                                         identity=identity, transport=transport)
        except Exception:
            self.wiring.discard(wiring)
            raise
        self._wirings[session.id] = wiring
        self.wiring.publish(session.id, wiring)
        return session

    def _talk_back_transport(self, request: TalkRequest) -> TalkBackTransport | None:
        """``rtp-server`` sessions go back on an RTP server's device connection."""
        params = request.params
        if params.transport is not TransportKind.RTP_SERVER:
            return None
        key = params.key
        name = request.rtp_server or ""
        server = self.rtp_servers.find_stream(key.vhost, key.app, name)
        if server is None:
            raise RtpServerNotFound(f"can not find the target stream: no RTP server "
                                    f"{key.app}/{name} is open (openRtpServer)")
        return TalkBackTransport(server)

    def when_connected(self, session: TalkSession) -> Deferred[TalkSession]:
        """Fires with ``session`` once its device is connected; DeviceUnreachable if it ends first.

        What ``startSendRtp`` answers after, as ZLMediaKit answers once its
        connect to the device succeeded or failed.  Fires at once for a session
        that streams already (a passive or datagram one delivered at open).
        """
        if session.state is SessionState.STREAMING:
            return succeed(session)
        if session.state is SessionState.CLOSED:
            return fail(self._unreachable(session))
        waiting: Deferred[TalkSession] = Deferred()
        self._connect_waiters.setdefault(session.id, []).append(waiting)
        return waiting

    @staticmethod
    def _unreachable(session: TalkSession) -> DeviceUnreachable:
        detail = session.end_detail or f"the talk session ended ({session.end_reason})"
        return DeviceUnreachable(detail, session.port)

    # -- stopping and ends

    def stop(self, identity: Identity, reason: EndReason = EndReason.STOPPED) -> bool:
        """Stop the live session of this identity; False if it has none."""
        session = self.manager.find(identity)
        return self.manager.stop(session.id, reason) if session is not None else False

    def when_ended(self, identity: Identity) -> Deferred[str]:
        """Fires with the end reason once the identity's session ends and is not replaced.

        For a SIP stack: the device hung up, timed out or was stopped, so
        send BYE.  Fails with SessionNotFound if the identity has no live
        session now.
        """
        if self.manager.find(identity) is None:
            return fail(SessionNotFound(f"no live talk session for {identity}"))
        waiting: Deferred[str] = Deferred()
        self._end_waiters.setdefault(identity, []).append(waiting)
        return waiting

    def _call_ended(self, identity: Identity, reason: str) -> None:
        for waiting in self._end_waiters.pop(identity, []):
            waiting.callback(reason)

    # -- views

    def describe(self, session: TalkSession) -> dict[str, Any]:
        """The session's JSON view plus the core's wiring (device source, recording, address)."""
        view = session.describe()
        view["local_ip"] = self.advertise_ip
        wiring = self._wirings.get(session.id)
        device = wiring.device if wiring is not None else None
        view["recv_stream_id"] = device.stream if device is not None else None
        recorder = wiring.recorder if wiring is not None else None
        view["recording"] = recorder.describe() if recorder is not None else None
        return view

    # -- ISessionObserver

    def session_started(self, session: Any) -> None:
        """Nothing to do: ``_start_new`` records the wiring."""

    def session_connected(self, session: Any, peer: tuple[str, int]) -> None:
        """Tell who waits for this session's device (``when_connected``)."""
        for waiting in self._connect_waiters.pop(session.id, []):
            waiting.callback(session)

    def device_refused(self, session: Any, peer: tuple[str, int], why: str) -> None:
        """Nothing to do."""

    def session_ended(self, session: Any, reason: str, stats: Any) -> None:
        """Unpublish the device's audio source; tell who waits for the identity's end."""
        for waiting in self._connect_waiters.pop(session.id, []):
            waiting.errback(self._unreachable(session))
        wiring = self._wirings.pop(session.id, None)
        if wiring is None:
            return
        self.wiring.unpublish(wiring)
        if session.id not in self._replacing:
            self._call_ended(wiring.request.session_identity, str(reason))

