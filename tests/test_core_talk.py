"""The talk core: one identity rule for every front end, two-way wiring, domain errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from gb28181talk.core.identity import CallId, OnRepeat, Outcome, decide, differences
from gb28181talk.core.manager import SessionManager
from gb28181talk.core.params import SessionKey, SessionParams, SessionState
from gb28181talk.core.ports import PortPool
from gb28181talk.core.request import TalkRequest
from gb28181talk.core.talk import TalkControl
from gb28181talk.errors import (
    NameTaken,
    PortBusy,
    RecordingUnavailable,
    SessionConflict,
    SessionNotFound,
    ShuttingDown,
    SourceEnded,
    SourceNotFound,
)
from gb28181talk.interfaces import ISessionObserver
from gb28181talk.media.law import Law
from gb28181talk.sources.registry import SourceRegistry
from gb28181talk.sources.tone import ToneSource
from gb28181talk.testing import BusyPortsReactor, FakeDevice, ListSource
from tests.test_fuzz_session import budget

KEY = SessionKey("__defaultVhost__", "broadcast", "tone", 100000001)


class SlowCloseReactor(BusyPortsReactor):
    """A memory reactor whose listeners close only when the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.closing: list[Deferred[None]] = []

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        listening = super().listenTCP(port, factory, backlog, interface)
        closing = self.closing

        def stop_listening() -> Deferred[None]:
            closed: Deferred[None] = Deferred()
            closing.append(closed)
            return closed

        listening.stopListening = stop_listening
        return listening

    def close_all(self) -> None:
        while self.closing:
            self.closing.pop(0).callback(None)


def make(reactor: Any = None, record_dir: str | None = None, ports: int = 6):
    reactor = reactor if reactor is not None else BusyPortsReactor()
    manager = SessionManager(reactor, PortPool(reactor, 30000, 30000 + ports - 1))
    registry = SourceRegistry()
    registry.add(ToneSource("broadcast", "tone", frequency=440))
    core = TalkControl(reactor, manager, registry, record_dir=record_dir)
    return reactor, manager, core


def request(identity: Any = None, policy: OnRepeat = OnRepeat.CONFLICT,
            recv_stream_id: str | None = None, key: SessionKey = KEY, **fields: Any) -> TalkRequest:
    if recv_stream_id is not None:
        fields.setdefault("receive", True)
    return TalkRequest(SessionParams(key=key, **fields), recv_stream_id, policy, identity)


def started(deferred: Deferred[Any]) -> Any:
    """The result of a start that must have finished already (a Failure raises)."""
    outcome: list[Any] = []
    deferred.addBoth(outcome.append)
    assert outcome, "the start has not finished"
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]


def test_the_core_is_a_session_observer() -> None:
    assert verifyObject(ISessionObserver, make()[2])


# --------------------------------------------------------------------------- the rule itself


@pytest.mark.parametrize(
    ("policy", "changed", "connected", "expected"),
    [
        (OnRepeat.CONFLICT, False, False, Outcome.REUSE),
        (OnRepeat.CONFLICT, False, True, Outcome.REUSE),
        (OnRepeat.CONFLICT, True, False, Outcome.CONFLICT),
        (OnRepeat.REPLACE_IF_CHANGED, False, True, Outcome.REUSE),
        (OnRepeat.REPLACE_IF_CHANGED, True, False, Outcome.REPLACE),
        (OnRepeat.REPLACE_UNLESS_WAITING, False, False, Outcome.REUSE),
        (OnRepeat.REPLACE_UNLESS_WAITING, False, True, Outcome.REPLACE),
        (OnRepeat.REPLACE_UNLESS_WAITING, True, False, Outcome.REPLACE),
        (OnRepeat.REPLACE, False, False, Outcome.REPLACE),
        (OnRepeat.REPLACE, True, True, Outcome.REPLACE),
    ],
)
def test_the_one_rule(policy: OnRepeat, changed: bool, connected: bool,
                      expected: Outcome) -> None:
    assert decide(policy, ["codec PCMA (asked PCMU)"] if changed else [], connected) is expected


def test_differences_name_what_the_device_sees_only() -> None:
    old = SessionParams(key=KEY, packet_ms=40)
    assert differences(old, 30001, SessionParams(key=KEY, packet_ms=40, wait_timeout=9,
                                                 preroll_ms=0)) == []
    found = differences(old, 30001, SessionParams(key=KEY, law=Law.ULAW, src_port=30002))
    assert found == ["src_port 30001 (asked 30002)", "codec PCMA (asked PCMU)",
                     "pt 8 (asked 0)", "packet_ms 40 (asked 20)"]
    two_way = SessionParams(key=KEY, receive=True)
    assert differences(two_way, 1, two_way, "a", "b") == ["recv_stream_id a (asked b)"]


# --------------------------------------------------------------------------- identities


def test_same_identity_and_settings_get_the_live_session() -> None:
    _reactor, manager, core = make()
    first = started(core.start(request(packet_ms=40)))
    again = started(core.start(request(packet_ms=40, wait_timeout=9.0)))
    assert again is first and manager.pool.leased_count == 1


def test_other_settings_conflict_and_leave_the_live_session_alone() -> None:
    _reactor, manager, core = make()
    first = started(core.start(request(packet_ms=40)))
    with pytest.raises(SessionConflict) as caught:
        started(core.start(request(packet_ms=100, law=Law.ULAW)))
    message = str(caught.value)
    assert f"talk session {first.id}" in message and f"port {first.port}" in message
    assert "packet_ms 40 (asked 100)" in message and "codec PCMA (asked PCMU)" in message
    assert '"replace": true' in message
    assert caught.value.differences and caught.value.identity == KEY
    assert manager.sessions() == [first] and first.state is SessionState.LISTENING


def test_replace_starts_a_new_session_after_the_old_port_closed() -> None:
    reactor, manager, core = make(SlowCloseReactor())
    first = started(core.start(request(src_port=30003)))
    pending = core.start(request(src_port=30003, law=Law.ULAW, policy=OnRepeat.REPLACE))
    outcome: list[Any] = []
    pending.addBoth(outcome.append)
    assert first.end_reason == "stopped"
    assert outcome == [], "the new session waits while the old port is still closing"
    assert [lease.state for lease in manager.pool.leases()] == ["closing"]
    reactor.close_all()
    [second] = outcome
    assert second is not first and second.port == 30003 and second.params.law is Law.ULAW
    assert manager.sessions() == [second]


def test_start_now_refuses_a_replace_that_would_wait_and_changes_nothing() -> None:
    _reactor, manager, core = make(SlowCloseReactor())
    first = started(core.start(request(src_port=30003)))
    with pytest.raises(PortBusy, match="port 30003"):
        core.start_now(request(src_port=30003, policy=OnRepeat.REPLACE))
    assert manager.sessions() == [first] and first.state is SessionState.LISTENING
    replaced = core.start_now(request(policy=OnRepeat.REPLACE))
    assert replaced is not first and replaced.port != 30003, "a pool port never waits"


def test_zlmediakit_policy_replaces_a_connected_session_but_not_a_waiting_one() -> None:
    reactor, _manager, core = make()
    first = started(core.start(request(policy=OnRepeat.REPLACE_UNLESS_WAITING)))
    assert started(core.start(request(policy=OnRepeat.REPLACE_UNLESS_WAITING))) is first
    assert FakeDevice().connect(reactor, first.port)
    second = started(core.start(request(policy=OnRepeat.REPLACE_UNLESS_WAITING)))
    assert second is not first and first.end_reason == "stopped"
    assert second.state is SessionState.LISTENING


def test_call_ids_with_the_same_key_are_two_sessions() -> None:
    _reactor, manager, core = make()
    a = core.start_now(request(CallId("a"), OnRepeat.REPLACE_IF_CHANGED))
    b = core.start_now(request(CallId("b"), OnRepeat.REPLACE_IF_CHANGED, law=Law.ULAW))
    by_key = core.start_now(request())
    assert len({a.id, b.id, by_key.id}) == 3 and len({a.port, b.port, by_key.port}) == 3
    assert core.find(CallId("a")) is a and core.find(KEY) is by_key
    assert manager.identity_of(b) == CallId("b")
    assert core.stop(CallId("a"))
    assert not core.stop(CallId("a")), "stopping twice finds nothing"
    assert b.state is SessionState.LISTENING and by_key.state is SessionState.LISTENING


def test_when_ended_fires_once_on_the_end_not_on_a_replace() -> None:
    reactor, _manager, core = make()
    core.start_now(request(CallId("a"), OnRepeat.REPLACE_IF_CHANGED))
    ended: list[str] = []
    core.when_ended(CallId("a")).addCallback(ended.append)
    second = core.start_now(request(CallId("a"), OnRepeat.REPLACE_IF_CHANGED, packet_ms=40))
    assert ended == []
    device = FakeDevice()
    assert device.connect(reactor, second.port)
    device.hang_up()
    assert ended == ["device-closed"]
    with pytest.raises(SessionNotFound):
        started(core.when_ended(CallId("a")))


# --------------------------------------------------------------------------- refusals


def test_missing_and_ended_sources_are_refused() -> None:
    _reactor, manager, core = make()
    with pytest.raises(SourceNotFound, match="broadcast/absent"):
        started(core.start(request(key=SessionKey("v", "broadcast", "absent", 1))))
    core.registry.add(ListSource([], app="broadcast", stream="over"))
    with pytest.raises(SourceEnded, match="broadcast/over has ended"):
        started(core.start(request(key=SessionKey("v", "broadcast", "over", 1))))
    assert manager.sessions() == []


def test_a_device_name_that_is_taken_is_refused() -> None:
    _reactor, manager, core = make()
    with pytest.raises(NameTaken, match="recv_stream_id 'tone'"):
        started(core.start(request(recv_stream_id="tone")))
    assert manager.sessions() == []


def test_an_unusable_record_dir_is_refused(tmp_path: Path) -> None:
    _reactor, manager, core = make(record_dir=str(tmp_path / "missing"))
    with pytest.raises(RecordingUnavailable, match="not writable; check --record-dir"):
        started(core.start(request(recv_stream_id="talk")))
    assert manager.sessions() == [] and core.registry.find("broadcast", "talk") is None
    one_way = started(core.start(request()))
    assert core.describe(one_way)["recording"] is None, "one-way talk records nothing"


def test_shutting_down_refuses_new_sessions() -> None:
    _reactor, manager, core = make()
    manager.shutdown()
    with pytest.raises(ShuttingDown, match="shutting down"):
        started(core.start(request()))


def test_two_way_wiring_is_published_and_undone(tmp_path: Path) -> None:
    _reactor, _manager, core = make(record_dir=str(tmp_path))
    session = started(core.start(request(recv_stream_id="talk")))
    device = core.registry.find("broadcast", "talk")
    assert device is not None and device.kind == "device"
    view = core.describe(session)
    assert view["recv_stream_id"] == "talk" and view["recording"]["closed"] is False
    session.stop()
    assert core.registry.find("broadcast", "talk") is None
    assert len(list(tmp_path.glob("broadcast-talk-*.wav"))) == 1


def test_a_failed_start_leaves_no_recording(tmp_path: Path) -> None:
    _reactor, manager, core = make(BusyPortsReactor(busy={30002}), record_dir=str(tmp_path))
    with pytest.raises(Exception, match="30002"):
        started(core.start(request(recv_stream_id="talk", src_port=30002)))
    assert list(tmp_path.iterdir()) == [] and core.registry.find("broadcast", "talk") is None
    assert manager.sessions() == []


# --------------------------------------------------------------------------- stateful


IDENTITIES = [CallId("a"), CallId("b"), SessionKey("__defaultVhost__", "broadcast", "tone", 2),
              SessionKey("__defaultVhost__", "broadcast", "tone", 3)]
"""Two calls sharing one key (the same y=), and two API keys."""


class CoreMachine(RuleBasedStateMachine):
    """Random starts, stops, replaces, connects and hang-ups of a few identities."""

    def __init__(self) -> None:
        super().__init__()
        self.reactor, self.manager, self.core = make(ports=6)
        self.ended: dict[Any, list[str]] = {}
        self.live: dict[Any, Any] = {}

    def _request(self, identity: Any, variant: int, policy: OnRepeat) -> TalkRequest:
        key = identity if isinstance(identity, SessionKey) else KEY
        name = f"dev-{IDENTITIES.index(identity)}"
        return request(identity, policy, recv_stream_id=name if variant == 2 else None,
                       key=key, packet_ms=40 if variant == 1 else 20, wait_timeout=1.0)

    def _current(self, identity: Any) -> Any:
        session = self.live.get(identity)
        if session is not None and session.state is SessionState.CLOSED:
            del self.live[identity]
            return None
        return session

    @rule(identity=st.sampled_from(IDENTITIES), variant=st.integers(0, 2),
          policy=st.sampled_from(list(OnRepeat)))
    def start(self, identity: Any, variant: int, policy: OnRepeat) -> None:
        existing = self._current(identity)
        wanted = self._request(identity, variant, policy)
        if existing is None:
            expected = "new"
        else:
            changed = self.core.differences(existing, wanted) != []
            if policy is OnRepeat.REPLACE:
                expected = "replace"
            elif changed:
                expected = "conflict" if policy is OnRepeat.CONFLICT else "replace"
            elif policy is OnRepeat.REPLACE_UNLESS_WAITING and (
                existing.state is SessionState.STREAMING
            ):
                expected = "replace"
            else:
                expected = "reuse"
        try:
            session = started(self.core.start(wanted))
        except SessionConflict:
            assert expected == "conflict"
            assert existing.state is not SessionState.CLOSED
            return
        assert expected != "conflict"
        if expected == "reuse":
            assert session is existing
        else:
            assert session is not existing and session.state is SessionState.LISTENING
            if existing is not None:
                assert existing.end_reason == "stopped"
        self.live[identity] = session

    @rule(identity=st.sampled_from(IDENTITIES))
    def stop(self, identity: Any) -> None:
        existing = self._current(identity)
        assert self.core.stop(identity) is (existing is not None)
        self.live.pop(identity, None)

    @precondition(lambda self: any(s.state is SessionState.LISTENING
                                   for s in self.live.values()))
    @rule(data=st.data())
    def connect(self, data: st.DataObject) -> None:
        waiting = [s for s in self.live.values() if s.state is SessionState.LISTENING]
        session = data.draw(st.sampled_from(waiting))
        device = FakeDevice()
        assert device.connect(self.reactor, session.port)
        if data.draw(st.booleans()):
            device.hang_up()
            assert session.end_reason == "device-closed"

    @rule()
    def time_passes(self) -> None:
        self.reactor.advance(0.6)

    @invariant()
    def one_live_session_per_identity(self) -> None:
        identities = [self.manager.identity_of(s) for s in self.manager.sessions()]
        assert len(identities) == len(set(identities))
        for identity in IDENTITIES:
            found = self.core.find(identity)
            assert found is self._current(identity)

    @invariant()
    def leases_and_free_ports_are_the_range(self) -> None:
        pool = self.manager.pool
        assert pool.leased_count + pool.free_count == pool.size
        listening = sum(s.state is SessionState.LISTENING for s in self.manager.sessions())
        assert pool.leased_count == listening

    @invariant()
    def device_sources_belong_to_live_two_way_sessions(self) -> None:
        published = {source.stream for source in self.core.registry.list()
                     if source.kind == "device" and not source.ended}
        wired = {self.core.describe(s)["recv_stream_id"] for s in self.manager.sessions()}
        assert published <= wired


TestCoreMachine = CoreMachine.TestCase
TestCoreMachine.settings = settings(max_examples=budget(60), stateful_step_count=30,
                                    deadline=None)
