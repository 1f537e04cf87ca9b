"""An ended talk session is freed by reference counting at once, not left to the cyclic collector.

The split session's parts point back at it (core -> session, sender/receiver
-> the core's ``end``, machine -> core, transport -> host); left in place, every
ended session was a cycle of ~20 objects that only a garbage collection freed,
which made starting and stopping sessions in bursts markedly slower.  Checked
here with the collector off, for the endings of a session no device reached.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator

import pytest

from gb28181talk.core.manager import SessionManager
from gb28181talk.core.params import EndReason, SessionKey, SessionParams
from gb28181talk.core.ports import PortPool
from gb28181talk.core.session import TalkSession
from gb28181talk.testing import BusyPortsReactor, ListSource


@pytest.fixture
def no_collector() -> Iterator[None]:
    """The cyclic garbage collector off for the test (what is freed then, refcounting freed)."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def ended_session(end: Callable[[TalkSession, BusyPortsReactor], None]) -> weakref.ref[TalkSession]:
    """Start one session, end it with ``end``, check its views still work; a weak reference."""
    reactor = BusyPortsReactor()
    manager = SessionManager(reactor, PortPool(reactor, 30000, 30009))
    params = SessionParams(key=SessionKey("v", "app", "stream", 1), wait_timeout=5)
    session = manager.start(params, ListSource.counting(10, loop=True))
    reactor.advance(0.1)
    end(session, reactor)
    assert session.end_reason is not None
    assert session.stats.duration_s > 0
    assert session.describe()["end_reason"] == str(session.end_reason)
    assert manager.get(session.id) is None
    assert manager.pool.leased_count == 0
    return weakref.ref(session)


def test_a_session_stopped_while_listening_is_freed_at_once(no_collector: None) -> None:
    gone = ended_session(lambda session, reactor: session.stop(EndReason.STOPPED))
    assert gone() is None


def test_a_session_that_timed_out_is_freed_at_once(no_collector: None) -> None:
    gone = ended_session(lambda session, reactor: reactor.advance(6))
    assert gone() is None


def test_a_session_ended_at_shutdown_is_freed_at_once(no_collector: None) -> None:
    def shut_down(session: TalkSession, reactor: BusyPortsReactor) -> None:
        session.stop(EndReason.SHUTDOWN)
        assert session.end_reason == "shutdown"

    gone = ended_session(shut_down)
    assert gone() is None
