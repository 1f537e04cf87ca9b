"""Every receiver's owner hands it the device's link to pause: RTP servers and both TCP transports.

A device flooding an ``openRtpServer`` port over TCP (passive, or dialled by
``connectRtpServer``) has its reading paused once its second's budget is
spent and is ended with ``receive-flood`` after so many such seconds in a
row, not merely backlogged until the backlog cap ends it; meanwhile a talk
session on the same reactor and pacer keeps sending contiguous packets.  A
UDP device has nothing to pause: its datagrams over budget are dropped
unread and counted.  All on a MemoryReactorClock: counts, order and reasons.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.address import IPv4Address

from gb28181talk.core.params import EndReason, SessionState, TransportKind
from gb28181talk.core.ports import PortPool
from gb28181talk.core.receiver import Receiver
from gb28181talk.core.rtp_server import TCP_ACTIVE, TCP_PASSIVE, UDP, RtpServer, RtpServers
from gb28181talk.sources.registry import SourceRegistry
from gb28181talk.testing import FakeDevice
from tests.test_receiver_budget import TINY
from tests.test_talk_transports import DEVICE, UdpReactor, connect_device, make_session

FLOOD = TINY * 3000
"""One read of a tiny-frame flood: 3,000 RFC 4571 frames, over the 2,000 a second allowed."""
HEALTHY = ("192.0.2.20", 5000)
TICK = 0.02


def rtp_servers(reactor: UdpReactor) -> RtpServers:
    """RTP servers on their own ports of the reactor, beside the talk session's pool."""
    return RtpServers(reactor, PortPool(reactor, 30010, 30013), SourceRegistry())


def flooding_device(reactor: UdpReactor, server: RtpServer) -> FakeDevice:
    """The device's TCP connection to the RTP server (it dialled in, or we dialled it)."""
    device = FakeDevice(*DEVICE)
    if server.tcp_mode == TCP_PASSIVE:
        assert device.connect(reactor, server.port)
    else:
        server.connect(*DEVICE)
        factory = reactor.tcpClients[-1][2]
        device.protocol = factory.buildProtocol(IPv4Address("TCP", *DEVICE))
        device.protocol.makeConnection(device.transport)
    assert server.link is not None
    return device


def healthy_session(reactor: UdpReactor) -> tuple[Any, FakeDevice]:
    """A one-way talk session with its device connected (passive TCP), streaming."""
    session, _, _, _ = make_session(reactor)
    session.start()
    device = FakeDevice(*HEALTHY)
    assert device.connect(reactor, session.port)
    assert session.state is SessionState.STREAMING
    return session, device


@pytest.mark.parametrize("tcp_mode", [TCP_PASSIVE, TCP_ACTIVE])
def test_a_device_flooding_a_tcp_rtp_server_is_paused_then_ended_while_others_stream(
    tcp_mode: int,
) -> None:
    reactor = UdpReactor()
    session, healthy = healthy_session(reactor)
    server = rtp_servers(reactor).open(("v", "rtp", "flood"), tcp_mode=tcp_mode)
    flooder = flooding_device(reactor, server)
    wire = flooder.transport
    reads = ticks = pauses = 0
    while not server.closed and ticks < 500:
        if wire.producerState == "producing":  # it sends whenever it is read
            reads += 1
            flooder.send(FLOOD)
        pauses += wire.producerState == "paused"
        reactor.advance(TICK)
        ticks += 1
    assert server.closed and server.close_reason.startswith(str(EndReason.RECEIVE_FLOOD))
    # Ended for spending its budget second after second, not for a backlog it could not pause.
    assert "5 seconds in a row" in server.close_reason, server.close_reason
    assert server.receiver.receive_throttles == 5
    assert pauses > 0 and reads <= 6, (pauses, reads)
    assert server.receiver.invalid_packets == 5 * server.receiver.budget.frames_per_second
    assert wire.disconnecting
    # The healthy session streamed all along: every tick one packet, none lost or dropped.
    sequences = [packet.sequence for packet in healthy.receive()]
    assert len(sequences) >= ticks - 1
    assert sequences == [(sequences[0] + n) & 0xFFFF for n in range(len(sequences))]
    assert session.state is SessionState.STREAMING and session.stats.packets_dropped == 0
    session.stop()


def test_a_device_sending_at_real_time_to_a_tcp_rtp_server_is_never_paused() -> None:
    reactor = UdpReactor()
    server = rtp_servers(reactor).open(("v", "rtp", "calm"), tcp_mode=TCP_PASSIVE)
    device = flooding_device(reactor, server)
    for _ in range(100):
        device.send(TINY)  # 50 frames a second
        assert device.transport.producerState == "producing"
        reactor.advance(TICK)
    assert server.receiver.receive_throttles == 0 and not server.closed
    server.close()


def test_datagrams_flooding_a_udp_rtp_server_are_dropped_unread_then_it_is_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    heard: list[int] = []
    packet = Receiver._packet

    def counted(self: Receiver, data: bytes) -> None:
        heard.append(len(data))
        packet(self, data)

    monkeypatch.setattr(Receiver, "_packet", counted)
    reactor = UdpReactor()
    server = rtp_servers(reactor).open(("v", "rtp", "udp-flood"), tcp_mode=UDP)
    sock = reactor.udp_bound[server.port]
    budget = server.receiver.budget.frames_per_second
    for _ in range(budget + 1000):
        sock.receive(TINY, DEVICE)
    assert len(heard) == budget, "the datagrams over budget are never parsed"
    assert server.receiver.packets_over_budget == 1000
    assert server.receiver.receive_throttles == 1 and not server.closed
    for _ in range(4):  # four more seconds over budget: ended
        reactor.advance(1.0)
        for _ in range(budget):
            sock.receive(TINY, DEVICE)
    assert server.closed and "5 seconds in a row" in server.close_reason
    assert len(heard) == 5 * budget and sock.stopped


def test_a_tcp_active_talk_sessions_device_is_paused_through_the_session() -> None:
    reactor = UdpReactor()
    session, _, _, _ = make_session(reactor, transport=TransportKind.TCP_ACTIVE,
                                    dst_host=DEVICE[0], dst_port=DEVICE[1], receive=True)
    session.start()
    wire = connect_device(reactor)
    session.data_from_device(FLOOD)
    assert wire.producerState == "paused", "more than a read's share: the rest waits"
    reactor.advance(0)
    assert wire.producerState == "paused"
    assert session.stats.receive_throttles == 1
    reactor.advance(1.0)
    assert wire.producerState == "producing", "the next second: read again"
    session.stop()
