"""The worker machinery in memory: the AMP commands over an iosim loopback, placement, relays.

The control's WorkerManager and a real WorkerProtocol talk AMP over
``twisted.test.iosim``; both sides run on MemoryReactorClocks, so a session
is a tcp-active one (the worker's dial is recorded, not made) and nothing
needs a descriptor.  Handing sockets over and real processes are
tests/test_workers_process.py's.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.testing import MemoryReactorClock
from twisted.test import iosim
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gb28181talk.core.params import (
    EndReason,
    Packaging,
    SessionKey,
    SessionParams,
    SessionState,
    TransportKind,
)
from gb28181talk.core.ports import PortPool
from gb28181talk.interfaces import IAudioSink, ISessionObserver
from gb28181talk.media.law import Law
from gb28181talk.testing import ListSource
from gb28181talk.workers.commands import params_from_json, params_to_json, stats_from_dict
from gb28181talk.workers.link import ControlProtocol, WorkerLink
from gb28181talk.workers.manager import WorkerManager, least_loaded
from gb28181talk.workers.media import RelaySink, WorkerProtocol, _Reporter
from gb28181talk.workers.remote import RemoteSession

FRAME = b"\x01\x02" * 160


def active(ssrc: int, stream: str = "list") -> SessionParams:
    return SessionParams(SessionKey("__defaultVhost__", "test", stream, ssrc),
                         transport=TransportKind.TCP_ACTIVE, dst_host="127.0.0.1", dst_port=9)


@implementer(ISessionObserver)
class Heard:
    """Every observer event, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def session_started(self, session: Any) -> None:
        self.events.append(("started", session.id, ""))

    def session_connected(self, session: Any, peer: tuple[str, int]) -> None:
        self.events.append(("connected", session.id, f"{peer[0]}:{peer[1]}"))

    def device_refused(self, session: Any, peer: tuple[str, int], why: str) -> None:
        self.events.append(("refused", session.id, why))

    def session_ended(self, session: Any, reason: str, stats: Any) -> None:
        self.events.append(("ended", session.id, str(reason)))


class Loopback:
    """Worker slots whose worker is a WorkerProtocol over iosim (the manager's launcher)."""

    def __init__(self) -> None:
        self.workers: dict[int, WorkerProtocol] = {}
        self.pumps: list[iosim.IOPump] = []
        self.reactors: dict[int, MemoryReactorClock] = {}

    def __call__(self, index: int, handler: Any) -> WorkerLink:
        reactor = self.reactors[index] = MemoryReactorClock()
        control = ControlProtocol(handler)
        link = WorkerLink(index, control)
        worker = WorkerProtocol(reactor, "127.0.0.1")
        _, _, pump = iosim.connectedServerAndClient(lambda: worker, lambda: control)
        self.workers[index] = worker
        self.pumps.append(pump)
        link.greet()
        self.flush()
        return link

    def flush(self) -> None:
        for pump in self.pumps:
            pump.flush()


class WorkerManagerLoopbackTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.loop = Loopback()
        self.manager = WorkerManager(self.clock, PortPool(self.clock, 30000, 30009), workers=2,
                                     launch=self.loop)
        self.heard = Heard()
        self.manager.add_observer(self.heard)
        self.manager.start_workers()

    def start(self, ssrc: int, source: Any) -> Any:
        session = self.manager.start(active(ssrc), source)
        self.loop.flush()
        return session

    def test_sessions_go_to_the_least_loaded_worker_and_run_there(self) -> None:
        source = ListSource([FRAME], loop=True)
        sessions = [self.start(ssrc, source) for ssrc in (1, 2, 3)]
        assert all(isinstance(session, RemoteSession) for session in sessions)
        assert [session.worker_index for session in sessions] == [0, 1, 0]
        assert sorted(self.loop.workers[0].sessions) == sorted([sessions[0].id, sessions[2].id])
        assert list(self.loop.workers[1].sessions) == [sessions[1].id]
        # The worker dials the device itself (tcp-active): one connectTCP per session.
        assert [client[:2] for client in self.loop.reactors[0].tcpClients] == [
            ("127.0.0.1", 9), ("127.0.0.1", 9)]
        assert self.manager.stop(sessions[1].id)
        self.loop.flush()
        assert self.start(4, source).worker_index == 1  # worker 1 has none now
        assert [view["sessions"] for view in self.manager.describe_workers()] == [2, 1]

    def test_a_frame_goes_once_to_each_worker_that_plays_the_source(self) -> None:
        source = ListSource([FRAME], loop=True)
        for ssrc in (1, 2, 3):
            self.start(ssrc, source)
        for _ in range(5):
            self.clock.advance(0.02)
            self.loop.flush()
        links = [link for link in self.manager.links if link is not None]
        relays = [link.relays[source] for link in links]
        assert [relay.sessions for relay in relays] == [2, 1]
        assert relays[0].frames == relays[1].frames >= 5
        for index, relay in enumerate(relays):
            relayed = self.loop.workers[index].sources[relay.source_id]
            assert relayed.describe()["received_ms"] == 20 * relay.frames

    def test_a_stop_is_heard_once_and_the_worker_forgets_the_session(self) -> None:
        source = ListSource([FRAME], loop=True)
        session = self.start(1, source)
        assert self.manager.find(session.key) is session
        assert self.manager.stop(session.id)
        assert not self.manager.stop(session.id)
        assert session.state is SessionState.CLOSED and self.manager.find(session.key) is None
        self.loop.flush()
        assert self.loop.workers[0].sessions == {}
        assert self.loop.workers[0].sources == {}
        assert self.manager.pacer.taps() == []  # the relay let go of the source
        assert self.heard.events == [("started", session.id, ""), ("ended", session.id, "stopped")]

    def test_an_ending_in_the_worker_reaches_the_control_with_its_reason(self) -> None:
        session = self.start(1, ListSource([FRAME], loop=True))
        worker_session = self.loop.workers[0].sessions[session.id]
        worker_session.end(EndReason.TIMEOUT, "no device")
        self.loop.flush()
        assert (session.end_reason, session.end_detail) == (EndReason.TIMEOUT, "no device")
        assert self.heard.events[-1] == ("ended", session.id, "timeout")
        assert self.manager.sessions() == []

    def test_a_lost_worker_ends_its_sessions_with_worker_lost_only(self) -> None:
        source = ListSource([FRAME], loop=True)
        first, second = self.start(1, source), self.start(2, source)
        link = self.manager.links[0]
        assert link is not None
        link.protocol.transport.loseConnection()
        self.loop.flush()
        assert first.end_reason is EndReason.WORKER_LOST
        assert second.state is SessionState.LISTENING
        assert [event for event in self.heard.events if event[0] == "ended"] == [
            ("ended", first.id, "worker-lost")]
        assert self.start(3, source).worker_index == 1  # the only worker left
        assert not link.up and link.relays == {}

    def test_the_repeat_rule_holds_across_workers(self) -> None:
        source = ListSource([FRAME], loop=True)
        session = self.start(1, source)
        assert self.manager.start(active(1), source) is session  # same settings: the same one
        replaced = self.manager.start(active(1), source, replace=True)
        assert replaced is not session and session.end_reason is EndReason.STOPPED

    def test_a_start_before_any_worker_is_ready_runs_in_the_control(self) -> None:
        for link in self.manager.links:
            assert link is not None
            link.ready = False
        session = self.manager.start(active(1), ListSource([FRAME], loop=True))
        assert not isinstance(session, RemoteSession)
        assert self.manager.get(session.id) is session
        assert self.manager.count_by_state()["listening"] == 1

    def test_figures_and_voice_from_the_worker(self) -> None:
        voices: list[tuple[bytes, int]] = []

        @implementer(IAudioSink)
        class Sink:
            def audio_received(self, pcm16: bytes, rtp_timestamp: int) -> None:
                voices.append((pcm16, rtp_timestamp))

            def audio_ended(self) -> None:
                voices.append((b"end", -1))

        session = self.manager.start(active(1), ListSource([FRAME], loop=True), sinks=[Sink()])
        self.loop.flush()
        self.manager.worker_stats([[session.id, {"packets_sent": 7, "unknown": 1}]])
        assert session.stats.packets_sent == 7
        RelaySink(self.loop.workers[0], session.id).audio_received(FRAME, 160)
        self.loop.flush()
        assert voices == [(FRAME, 160)]
        session.stop()
        assert voices[-1] == (b"end", -1)


def test_least_loaded_is_the_ready_worker_with_fewest_sessions() -> None:
    links = [WorkerLink(index, ControlProtocol(None)) for index in range(3)]
    assert least_loaded(links) is None  # none answered Hello yet
    for link in links:
        link.ready = True
    links[0].sessions.update({"a", "b"})
    links[1].sessions.add("c")
    links[2].sessions.add("d")
    assert least_loaded(links) is links[1]  # a tie goes to the lower slot
    links[1].up = False
    assert least_loaded(links) is links[2]


def test_the_worker_side_provides_its_interfaces() -> None:
    worker = WorkerProtocol(MemoryReactorClock())
    assert verifyObject(IAudioSink, RelaySink(worker, "s"))
    assert verifyObject(ISessionObserver, _Reporter(worker))


@given(
    ssrc=st.integers(0, 2**32 - 1),
    packet_ms=st.sampled_from([20, 40, 100, 180]),
    law=st.sampled_from(list(Law)),
    packaging=st.sampled_from(list(Packaging)),
    receive=st.booleans(),
    peer=st.one_of(st.none(), st.sampled_from(["127.0.0.1", "::1"])),
    app=st.text(min_size=1, max_size=20),
)
def test_params_survive_the_wire(ssrc: int, packet_ms: int, law: Law, packaging: Packaging,
                                 receive: bool, peer: str | None, app: str) -> None:
    params = SessionParams(SessionKey("v", app, "s", ssrc), packet_ms=packet_ms, law=law,
                           packaging=packaging, receive=receive, expected_peer=peer,
                           transport=TransportKind.UDP, dst_host="10.0.0.2", dst_port=4000,
                           rtcp_timeout=3.0)
    assert params_from_json(params_to_json(params)) == params


def test_stats_from_a_newer_worker_ignore_unknown_figures() -> None:
    assert stats_from_dict({"packets_sent": 3, "brand_new": 1}).packets_sent == 3


class RestartTests(unittest.TestCase):
    def test_a_worker_that_keeps_dying_young_waits_longer_each_time(self) -> None:
        clock = MemoryReactorClock()
        loop = Loopback()
        manager = WorkerManager(clock, PortPool(clock, 30000, 30009), workers=1, launch=loop)
        manager.start_workers()
        delays = []
        for _ in range(3):
            link = manager.links[0]
            assert link is not None
            link.process_ended("killed")
            (call,) = [call for call in clock.getDelayedCalls() if call.active()
                       and call.func == manager._refill]
            delays.append(call.getTime() - clock.seconds())
            clock.advance(delays[-1])
            assert manager.links[0] is not link and manager.links[0] is not None
        assert delays == [1.0, 2.0, 4.0]
        assert manager.restarts == 3
        clock.advance(10)  # a worker that lived long: the next restart is quick again
        link = manager.links[0]
        assert link is not None
        link.process_ended("killed")
        assert [call.getTime() - clock.seconds() for call in clock.getDelayedCalls()
                if call.active() and call.func == manager._refill] == [0.5]
        manager.stop_workers()
        assert [call for call in clock.getDelayedCalls()
                if call.active() and call.func == manager._refill] == []


def test_a_remote_view_has_every_field_of_a_talk_sessions_view() -> None:
    """RemoteSession.describe mirrors TalkSession.describe: a field added there belongs here."""
    from gb28181talk.core.manager import SessionManager

    clock = MemoryReactorClock()
    params = active(5)
    local = SessionManager(clock, PortPool(clock, 30000, 30009)).start(
        params, ListSource([FRAME]))
    remote = RemoteSession("r", params, ListSource([FRAME]), worker_index=1, port=0,
                           now=clock.seconds, end=lambda *_: True)
    assert set(remote.describe()) - {"worker"} == set(local.describe())
    assert set(remote.describe()["stats"]) == set(local.describe()["stats"])
