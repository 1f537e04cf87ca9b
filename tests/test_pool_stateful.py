"""Stateful property test: sessions on a small pool, in any order, never leak or double-lease."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)
from twisted.internet.address import IPv4Address

from gb28181talk.core.manager import SessionManager
from gb28181talk.core.params import SessionKey, SessionParams, SessionState
from gb28181talk.core.ports import PortPool
from gb28181talk.errors import PoolExhaustedError, PortInUseError
from gb28181talk.testing import BusyPortsReactor, FakeDevice, ListSource, RecordingObserver

LOW, HIGH = 31000, 31005
BUSY = {31002}  # held by "another process": always skipped, never leased


class TalkPoolMachine(RuleBasedStateMachine):
    """Sessions on a 6-port pool (one port busy elsewhere) under every order of events."""

    def __init__(self) -> None:
        super().__init__()
        self.reactor = BusyPortsReactor(BUSY)
        self.pool = PortPool(self.reactor, LOW, HIGH, rng=random.Random(0))
        self.manager = SessionManager(self.reactor, self.pool)
        self.observer = RecordingObserver()
        self.manager.add_observer(self.observer)
        self.source = ListSource.counting(50, loop=True)
        self.sessions: list = []
        self.devices: dict[str, FakeDevice] = {}
        self.next_ssrc = 1

    def _params(self, **extra) -> SessionParams:
        key = SessionKey("v", "app", "stream", self.next_ssrc)
        self.next_ssrc += 1
        return SessionParams(key=key, wait_timeout=5.0, preroll_ms=100, **extra)

    def _live(self, state: SessionState) -> list:
        return [s for s in self.sessions if s.state is state]

    @rule()
    def start_from_pool(self) -> None:
        leased_before = self.pool.leased_count
        try:
            session = self.manager.start(self._params(), self.source)
        except PoolExhaustedError:
            event("pool exhausted")
            usable = set(range(LOW, HIGH + 1)) - BUSY
            assert {lease.port for lease in self.pool.leases()} >= usable
            assert self.pool.leased_count == leased_before
            return
        assert session.port not in BUSY
        self.sessions.append(session)

    @rule(port=st.integers(LOW, HIGH))
    def start_explicit(self, port: int) -> None:
        leased_before = {lease.port for lease in self.pool.leases()}
        try:
            session = self.manager.start(self._params(src_port=port), self.source)
        except PortInUseError as error:
            event("explicit port refused: " + ("busy elsewhere" if port in BUSY else "leased"))
            assert error.port == port
            assert port in BUSY or port in leased_before
            assert {lease.port for lease in self.pool.leases()} == leased_before
            return
        assert port not in BUSY and port not in leased_before
        assert session.port == port
        self.sessions.append(session)

    @precondition(lambda self: self._live(SessionState.STREAMING))
    @rule(data=st.data())
    def restart_same_key(self, data: st.DataObject) -> None:
        session = data.draw(st.sampled_from(self._live(SessionState.STREAMING)))
        again = self.manager.start(session.params, self.source)
        assert again is session, "a live key is idempotent"

    @precondition(lambda self: self._live(SessionState.LISTENING))
    @rule(data=st.data())
    def device_connects(self, data: st.DataObject) -> None:
        session = data.draw(st.sampled_from(self._live(SessionState.LISTENING)))
        device = FakeDevice()
        assert device.connect(self.reactor, session.port)
        assert session.state is SessionState.STREAMING
        self.devices[session.id] = device

    @precondition(lambda self: self._live(SessionState.STREAMING))
    @rule(data=st.data())
    def second_device_is_refused(self, data: st.DataObject) -> None:
        session = data.draw(st.sampled_from(self._live(SessionState.STREAMING)))
        assert session.transport.buildProtocol(IPv4Address("TCP", "127.0.0.3", 5)) is None

    @precondition(lambda self: self._live(SessionState.STREAMING))
    @rule(data=st.data())
    def device_hangs_up(self, data: st.DataObject) -> None:
        session = data.draw(st.sampled_from(self._live(SessionState.STREAMING)))
        self.devices[session.id].hang_up()
        assert session.end_reason == "device-closed"

    @precondition(lambda self: self.sessions)
    @rule(data=st.data())
    def stop(self, data: st.DataObject) -> None:
        session = data.draw(st.sampled_from(self.sessions))
        was_open = session.state is not SessionState.CLOSED
        assert session.stop() is was_open

    @rule(seconds=st.sampled_from([0.02, 0.5, 2.5, 4.99, 5.0, 7.0]))
    def time_passes(self, seconds: float) -> None:
        self.reactor.advance(seconds)
        if any(s.end_reason == "timeout" for s in self.sessions):
            event("a session timed out")

    @invariant()
    def no_port_leased_twice_and_none_lost(self) -> None:
        leases = self.pool.leases()
        ports = [lease.port for lease in leases]
        assert len(ports) == len(set(ports))
        assert self.pool.leased_count + self.pool.free_count == HIGH - LOW + 1

    @invariant()
    def only_listening_sessions_hold_leases(self) -> None:
        holders = Counter(lease.owner for lease in self.pool.leases())
        for session in self.sessions:
            expected = 1 if session.state is SessionState.LISTENING else 0
            assert holders[session.id] == expected, (session.state, session.end_reason)

    @invariant()
    def every_ended_session_was_reported_exactly_once(self) -> None:
        ended = Counter(event[1] for event in self.observer.ended())
        for session in self.sessions:
            assert ended[session.id] == (1 if session.state is SessionState.CLOSED else 0)

    @invariant()
    def timers_only_while_something_waits_or_plays(self) -> None:
        live = [s for s in self.sessions if s.state is not SessionState.CLOSED]
        calls = self.reactor.getDelayedCalls()
        assert len(calls) <= len(self._live(SessionState.LISTENING)) + 1
        if not live:
            assert not calls

    def teardown(self) -> None:
        self.manager.shutdown()
        assert self.pool.leased_count == 0
        assert self.pool.free_count == HIGH - LOW + 1
        assert not self.reactor.getDelayedCalls()
        ended = Counter(event[1] for event in self.observer.ended())
        assert all(ended[s.id] == 1 for s in self.sessions)


TalkPoolMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
test_talk_pool = TalkPoolMachine.TestCase
