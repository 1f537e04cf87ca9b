"""The talk session's lifecycle on a memory reactor: every path ends once, with one reason.

Each way a session can end is driven on a Clock-driven memory reactor; after it,
the session is ``closed`` with exactly that reason, the observers heard exactly
one ``session_ended``, and nothing is left behind: no timer, no port lease, no
pacer listener, no open connection, no sink still waiting for its end.  A second
ending (of any reason) changes nothing and returns False.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gb28181talk.core.manager import SessionManager
from gb28181talk.core.params import EndReason, SessionKey, SessionParams, SessionState, SsrcPolicy
from gb28181talk.core.ports import PortPool
from gb28181talk.media.framing import frame_rfc4571
from gb28181talk.media.rtp import RtpPacket
from gb28181talk.testing import (
    BusyPortsReactor,
    FakeDevice,
    ListSource,
    RecordingObserver,
    RecordingSink,
)

SSRC = 100000321


class World:
    """One manager on a memory reactor, an observer and a sink."""

    def __init__(self, **overrides: Any) -> None:
        self.reactor = BusyPortsReactor()
        self.manager = SessionManager(self.reactor, PortPool(self.reactor, 30000, 30003))
        self.observer = RecordingObserver()
        self.manager.add_observer(self.observer)
        self.sink = RecordingSink()
        self.source = overrides.pop("source", None) or ListSource.counting(50, loop=True)
        options = {"preroll_ms": 100, **overrides}
        self.session = self.manager.start(
            SessionParams(key=SessionKey("v", "live", "life", SSRC), **options),
            self.source,
            sinks=[self.sink],
        )
        self.device = FakeDevice()

    def connect(self) -> None:
        assert self.device.connect(self.reactor, self.session.port)
        assert self.session.state is SessionState.STREAMING

    def ticks(self, count: int) -> None:
        for _ in range(count):
            self.reactor.advance(0.02)
            if self.session.state is SessionState.CLOSED:
                return

    def assert_ended_once_leaving_nothing(self, reason: str, by_device: bool = False) -> None:
        session = self.session
        assert session.state is SessionState.CLOSED
        assert session.end_reason == reason, session.end_detail
        assert [event[2] for event in self.observer.ended(session.id)] == [reason]
        assert session.ended_at is not None
        assert not self.reactor.getDelayedCalls(), "no timer may outlive the session"
        assert self.manager.pool.leased_count == 0, "the port is back in the pool"
        assert self.manager.pacer.taps() == [], "the pacer let go of the sender"
        assert not self.manager.pacer.running
        assert self.sink.ended
        assert self.manager.sessions() == []
        if self.device.protocol is not None and not by_device:
            # (A connection the device closed unregisters its producer in Twisted itself.)
            assert self.device.transport.disconnecting or self.device.transport.disconnected
            assert self.device.transport.producer is None, "the writer unregistered"
        sent = session.stats.packets_sent
        for again in EndReason:
            assert session.end(again) is False
        assert session.stop() is False
        self.reactor.advance(10)
        assert [event[2] for event in self.observer.ended(session.id)] == [reason]
        assert session.stats.packets_sent == sent, "nothing is sent after the end"


# -- listening -> closed -----------------------------------------------------------------


def test_listening_times_out() -> None:
    world = World(wait_timeout=1.0)
    world.reactor.advance(0.999)
    assert world.session.state is SessionState.LISTENING
    world.reactor.advance(0.001)
    world.assert_ended_once_leaving_nothing("timeout")
    assert "port 3000" in world.session.end_detail and "1 s" in world.session.end_detail


@pytest.mark.parametrize("reason", [EndReason.STOPPED, EndReason.SHUTDOWN, EndReason.ERROR])
def test_listening_is_ended(reason: EndReason) -> None:
    world = World()
    world.ticks(3)
    assert world.session.end(reason, "asked") is True
    world.assert_ended_once_leaving_nothing(str(reason))
    assert world.session.end_detail == "asked"


def test_listening_source_ends() -> None:
    world = World(source=ListSource.counting(3))
    world.ticks(10)
    world.assert_ended_once_leaving_nothing("source-ended")


def test_shutdown_ends_listening_and_streaming_sessions_once() -> None:
    world = World()
    world.connect()
    done = world.manager.shutdown()
    assert done.called
    world.assert_ended_once_leaving_nothing("shutdown")


# -- listening -> streaming -> closed ------------------------------------------------------


@pytest.mark.parametrize("reason", [EndReason.STOPPED, EndReason.SHUTDOWN, EndReason.ERROR])
def test_streaming_is_ended(reason: EndReason) -> None:
    world = World()
    world.connect()
    world.ticks(5)
    assert world.session.end(reason) is True
    world.assert_ended_once_leaving_nothing(str(reason))


def test_streaming_device_hangs_up() -> None:
    world = World()
    world.connect()
    world.ticks(5)
    world.device.hang_up()
    world.assert_ended_once_leaving_nothing("device-closed", by_device=True)


def test_streaming_source_ends_after_sending_what_is_pending() -> None:
    world = World(source=ListSource.counting(5), packet_ms=40, preroll_ms=0)
    world.connect()
    world.ticks(10)
    world.assert_ended_once_leaving_nothing("source-ended")
    assert world.session.stats.packets_sent == 3, "two whole packets and the short last one"


def test_streaming_send_stalls() -> None:
    world = World(max_send_buffer=2048, stall_timeout=0.5, preroll_ms=0)
    world.connect()
    world.device.stop_reading()
    world.ticks(100)
    world.assert_ended_once_leaving_nothing("send-stalled")
    assert world.device.transport.disconnected, "aborted: its bytes are never drained"


def test_a_stall_that_drains_cancels_its_timer_and_a_later_stop_leaves_none() -> None:
    world = World(max_send_buffer=2048, stall_timeout=5.0, preroll_ms=0)
    world.connect()
    world.device.stop_reading()
    world.ticks(20)
    assert world.session.stats.packets_dropped > 0
    world.device.resume_reading()
    world.ticks(2)
    world.session.stop()
    world.assert_ended_once_leaving_nothing("stopped")


def _device_packet(ssrc: int, sequence: int) -> bytes:
    return frame_rfc4571(RtpPacket(8, sequence, sequence * 160, ssrc, b"\xd5" * 160).encode())


def test_streaming_ssrc_violations() -> None:
    world = World(receive=True, ssrc_policy=SsrcPolicy.STRICT, max_ssrc_violations=2)
    world.connect()
    world.device.send(b"".join(_device_packet(5, n) for n in range(4)))
    world.assert_ended_once_leaving_nothing("ssrc-violation")
    assert world.session.stats.ssrc_violations == 2, "nothing is heard after the end"


def test_streaming_device_sends_garbage() -> None:
    world = World(receive=True)
    world.connect()
    world.device.send(b"\xff" * 64)
    world.assert_ended_once_leaving_nothing("error")


def test_streaming_receive_timeout() -> None:
    world = World(receive=True, receive_timeout=0.5)
    world.connect()
    world.device.send(_device_packet(SSRC, 1))
    world.ticks(100)
    world.assert_ended_once_leaving_nothing("receive-timeout")


# -- re-entrancy: an ending asked for while a transition runs -------------------------------


class _Reentrant(RecordingObserver):
    """An observer that acts on the session from inside its notifications."""

    def __init__(self, on: str, act: Callable[[Any], Any]) -> None:
        super().__init__()
        self.on = on
        self.act = act
        self.results: list[Any] = []

    def session_connected(self, session: Any, peer: tuple[str, int]) -> None:
        super().session_connected(session, peer)
        if self.on == "connected":
            self.results.append(self.act(session))

    def session_ended(self, session: Any, reason: str, stats: Any) -> None:
        super().session_ended(session, reason, stats)
        if self.on == "ended":
            self.results.append(self.act(session))


def test_a_stop_from_inside_session_connected_ends_once_after_it() -> None:
    world = World()
    observer = _Reentrant("connected", lambda session: session.stop())
    world.manager.add_observer(observer)
    assert world.device.connect(world.reactor, world.session.port)
    assert observer.results == [True]
    assert [event[0] for event in observer.events] == ["connected", "ended"]
    world.assert_ended_once_leaving_nothing("stopped")


def test_an_end_from_inside_session_ended_is_refused() -> None:
    world = World()
    observer = _Reentrant("ended", lambda session: session.end(EndReason.ERROR))
    world.manager.add_observer(observer)
    world.session.stop()
    assert observer.results == [False]
    world.assert_ended_once_leaving_nothing("stopped")


def test_a_session_is_started_once() -> None:
    world = World()
    with pytest.raises(Exception, match="already started"):
        world.session.start()
    world.session.stop()
    world.assert_ended_once_leaving_nothing("stopped")
