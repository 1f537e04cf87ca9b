"""An ended talk session is freed by reference counting at once, not left to the cyclic collector.

The split session's parts point back at it (core -> session, sender/receiver
-> the core's ``end``, machine -> core, transport -> host); left in place, every
ended session was a cycle of ~20 objects that only a garbage collection freed,
which made starting and stopping sessions in bursts markedly slower.  A streaming
session adds the link's back-references (its writer's ``on_stall``/``on_drain``, the
transport's ``host``, a UDP link and the socket's protocol pointing at the transport):
they are let go when the link is closed or lost.  Checked here with the collector off,
for the endings of a session no device reached, and of a streaming one on each transport
(passive and active TCP: the device hangs up, stop, send-stalled; UDP: stop, RTCP silence,
a passive UDP device found by its first datagram), while the device side is still alive.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from gb28181talk.core.manager import SessionManager
from gb28181talk.core.params import EndReason, SessionKey, SessionParams, TransportKind
from gb28181talk.core.ports import PortPool
from gb28181talk.core.session import TalkSession
from gb28181talk.core.udp import RTCP_INTERVAL
from gb28181talk.testing import BusyPortsReactor, FakeDevice, ListSource
from tests.test_talk_transports import UdpReactor


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


# --------------------------------------------------------------------------- streaming


DEVICE = ("192.0.2.9", 15060)


def streaming(reactor: BusyPortsReactor, **options: Any) -> tuple[SessionManager, TalkSession]:
    """A manager on ``reactor`` and one started session (not yet reached by its device)."""
    manager = SessionManager(reactor, PortPool(reactor, 30000, 30009), direct_send=False)
    params = SessionParams(key=SessionKey("v", "app", "stream", 1), wait_timeout=5,
                           preroll_ms=0, **options)
    return manager, manager.start(params, ListSource.counting(10, loop=True))


def parts(session: TalkSession) -> list[weakref.ref[Any]]:
    """Weak references to the session and the parts that used to point back at it (the
    slotted receiver takes none: it goes with the session, which alone holds it)."""
    return [weakref.ref(session), weakref.ref(session._core), weakref.ref(session.sender),
            weakref.ref(session._machine)]


def check_ended(manager: SessionManager, session: TalkSession, reason: EndReason) -> None:
    """Ended with ``reason``, its views still work, nothing of it is left in the manager."""
    assert session.end_reason is reason, session.end_detail
    assert session.stats.packets_sent > 0
    assert session.describe()["end_reason"] == str(reason)
    assert manager.get(session.id) is None


def passive_streaming(end: Callable[[TalkSession, BusyPortsReactor, FakeDevice], None],
                      reason: EndReason, **options: Any) -> tuple[list[weakref.ref[Any]], Any]:
    """A passive TCP session the device reached, ended by ``end``; refs and the device."""
    reactor = BusyPortsReactor()
    manager, session = streaming(reactor, **options)
    device = FakeDevice()
    assert device.connect(reactor, session.port)
    for _ in range(5):
        reactor.advance(0.02)
    assert session.stats.packets_sent > 0
    end(session, reactor, device)
    check_ended(manager, session, reason)
    writer = session.transport.link._writer  # type: ignore[union-attr]
    assert writer.on_stall is None and writer.on_drain is None
    return parts(session), device  # the device (and its connection) outlive the session


def test_a_passive_session_whose_device_hung_up_is_freed_at_once(no_collector: None) -> None:
    gone, _device = passive_streaming(lambda s, r, device: device.hang_up(),
                                      EndReason.DEVICE_CLOSED)
    assert [ref() for ref in gone] == [None] * len(gone)


def test_a_passive_session_stopped_while_streaming_is_freed_at_once(no_collector: None) -> None:
    def stop_then_hang_up(session: TalkSession, reactor: Any, device: FakeDevice) -> None:
        session.stop()
        device.hang_up()  # what the device does once we close; it tells nobody now

    gone, device = passive_streaming(lambda s, r, d: s.stop(), EndReason.STOPPED)
    assert device.transport.disconnecting
    assert [ref() for ref in gone] == [None] * len(gone)
    gone, device = passive_streaming(stop_then_hang_up, EndReason.STOPPED)
    assert [ref() for ref in gone] == [None] * len(gone)


def test_a_passive_session_that_send_stalled_is_freed_at_once(no_collector: None) -> None:
    def stall(session: TalkSession, reactor: BusyPortsReactor, device: FakeDevice) -> None:
        device.stop_reading()
        for _ in range(200):
            reactor.advance(0.02)

    gone, _device = passive_streaming(stall, EndReason.SEND_STALLED, max_send_buffer=2048,
                                      stall_timeout=1.0)
    assert [ref() for ref in gone] == [None] * len(gone)


def active_streaming(end: Callable[[TalkSession, UdpReactor, Any], None],
                     reason: EndReason, **options: Any) -> tuple[list[weakref.ref[Any]], Any]:
    """A TCP active session that reached its device, ended by ``end``; refs and the device."""
    reactor = UdpReactor()
    manager, session = streaming(reactor, transport=TransportKind.TCP_ACTIVE,
                                 dst_host=DEVICE[0], dst_port=DEVICE[1], **options)
    host, port, factory, _timeout, _bind = reactor.tcpClients[-1]
    protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
    wire = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 41234),
                           peerAddress=IPv4Address("TCP", host, port))
    protocol.makeConnection(wire)
    wire.producer.resumeProducing()  # the device reads what was sent
    for _ in range(5):
        reactor.advance(0.02)
        wire.producer.resumeProducing()
    end(session, reactor, protocol)
    check_ended(manager, session, reason)
    assert factory.host is not session
    return parts(session), (reactor, protocol, wire)  # the connector and connection live on


def test_an_active_session_whose_device_hung_up_is_freed_at_once(no_collector: None) -> None:
    def hang_up(session: TalkSession, reactor: Any, protocol: Any) -> None:
        protocol.connectionLost(Failure(ConnectionDone()))

    gone, _device = active_streaming(hang_up, EndReason.DEVICE_CLOSED)
    assert [ref() for ref in gone] == [None] * len(gone)


def test_an_active_session_stopped_while_streaming_is_freed_at_once(no_collector: None) -> None:
    gone, (_reactor, _protocol, wire) = active_streaming(lambda s, r, p: s.stop(),
                                                         EndReason.STOPPED)
    assert wire.disconnecting
    assert [ref() for ref in gone] == [None] * len(gone)


def test_an_active_session_that_send_stalled_is_freed_at_once(no_collector: None) -> None:
    def stall(session: TalkSession, reactor: UdpReactor, protocol: Any) -> None:
        for _ in range(200):  # the device reads nothing more: Twisted's buffer fills
            reactor.advance(0.02)

    gone, _device = active_streaming(stall, EndReason.SEND_STALLED, max_send_buffer=2048,
                                     stall_timeout=1.0)
    assert [ref() for ref in gone] == [None] * len(gone)


def test_an_active_session_whose_connect_failed_is_freed_at_once(no_collector: None) -> None:
    reactor = UdpReactor()
    manager, session = streaming(reactor, transport=TransportKind.TCP_ACTIVE,
                                 dst_host=DEVICE[0], dst_port=DEVICE[1])
    factory = reactor.tcpClients[-1][2]
    factory.clientConnectionFailed(None, Failure(ConnectionDone()))
    assert session.end_reason is EndReason.DEVICE_CLOSED and manager.get(session.id) is None
    gone = parts(session)
    del session
    assert [ref() for ref in gone] == [None] * len(gone)


def udp_streaming(end: Callable[[TalkSession, UdpReactor], None], reason: EndReason,
                  **options: Any) -> tuple[list[weakref.ref[Any]], UdpReactor]:
    """A UDP session streaming to its device, ended by ``end``; refs and the reactor."""
    reactor = UdpReactor()
    options.setdefault("transport", TransportKind.UDP)
    if options["transport"] is TransportKind.UDP:
        options.update(dst_host=DEVICE[0], dst_port=DEVICE[1])
    manager, session = streaming(reactor, **options)
    if options["transport"] is TransportKind.UDP_PASSIVE:  # found by its first datagram
        reactor.udp_bound[session.port].receive(b"punch", DEVICE)
    for _ in range(5):
        reactor.advance(0.02)
    end(session, reactor)
    check_ended(manager, session, reason)
    assert manager.pool.leased_count == 0
    return parts(session), reactor


def test_a_udp_session_stopped_while_streaming_is_freed_at_once(no_collector: None) -> None:
    gone, _reactor = udp_streaming(lambda session, reactor: session.stop(), EndReason.STOPPED)
    assert [ref() for ref in gone] == [None] * len(gone)


def test_a_udp_session_whose_device_fell_silent_is_freed_at_once(no_collector: None) -> None:
    def silent(session: TalkSession, reactor: UdpReactor) -> None:
        for _ in range(4):
            reactor.advance(RTCP_INTERVAL)

    gone, _reactor = udp_streaming(silent, EndReason.DEVICE_CLOSED, rtcp_timeout=12.0)
    assert [ref() for ref in gone] == [None] * len(gone)


def test_a_passive_udp_session_is_freed_at_once(no_collector: None) -> None:
    gone, _reactor = udp_streaming(lambda session, reactor: session.stop(), EndReason.STOPPED,
                                   transport=TransportKind.UDP_PASSIVE, receive=True)
    assert [ref() for ref in gone] == [None] * len(gone)


def test_a_passive_udp_session_no_device_reached_is_freed_at_once(no_collector: None) -> None:
    reactor = UdpReactor()
    manager, session = streaming(reactor, transport=TransportKind.UDP_PASSIVE)
    reactor.advance(6)
    assert session.end_reason is EndReason.TIMEOUT and manager.pool.leased_count == 0
    gone = parts(session)
    del session
    assert [ref() for ref in gone] == [None] * len(gone)
