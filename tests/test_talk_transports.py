"""The TCP active and UDP transports, and the RTP server, in memory (no sockets, no real time).

A talk session whose params name ``tcp-active`` dials the device through the
injected reactor (connect timeout = the wait timeout, ``src_port`` as the
bind address) and streams RFC 4571 over the connection once it is made; a
refused connect ends it with what failed, and ``TalkControl.when_connected``
hears that as DeviceUnreachable.  ``udp`` sends bare RTP datagrams from a
pool lease held as long as the link, ``udp-passive`` waits for the device's
first datagram; ``udp_rtcp_timeout`` sends sender reports on port + 1 and
ends a stream whose device stays silent.  An RTP server hears the device,
publishes its audio on the first packet, times out without audio, and lends
its device connection to a ``startSendRtpTalk`` session without losing it.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from gb28181talk.core.active import ActiveTcpTransport
from gb28181talk.core.identity import OnRepeat
from gb28181talk.core.manager import SessionManager
from gb28181talk.core.pacer import Pacer
from gb28181talk.core.params import (
    EndReason,
    SessionKey,
    SessionParams,
    SessionState,
    TransportKind,
)
from gb28181talk.core.ports import PortPool
from gb28181talk.core.request import TalkRequest
from gb28181talk.core.rtp_server import (
    TCP_PASSIVE,
    UDP,
    RtpServer,
    RtpServers,
    SharedLink,
    TalkBackTransport,
)
from gb28181talk.core.talk import TalkControl
from gb28181talk.core.transport import IDeviceHost, IDeviceLink, ITalkTransport
from gb28181talk.core.udp import RTCP_INTERVAL, UdpLink, UdpTalkTransport
from gb28181talk.device.media import DeviceMedia
from gb28181talk.device.voice import DeviceVoice
from gb28181talk.errors import DeviceUnreachable, RtpServerNotFound, SessionError
from gb28181talk.media import g711
from gb28181talk.media.framing import Framing
from gb28181talk.media.law import Law
from gb28181talk.media.rtp import parse_rtp
from gb28181talk.sources.registry import SourceRegistry
from gb28181talk.testing import BusyPortsReactor, ListSource, RecordingObserver, RecordingSink

SSRC = 100000777
DEVICE = ("192.0.2.9", 15060)


class FakeUdpPort:
    """A bound UDP socket in memory: records what is sent, can be stopped."""

    def __init__(self, reactor: UdpReactor, port: int, protocol: Any) -> None:
        self.reactor = reactor
        self.port = port
        self.protocol = protocol
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.stopped = False

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))

    def stopListening(self) -> None:
        self.stopped = True
        self.reactor.udp_bound.pop(self.port, None)

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", "127.0.0.1", self.port)

    def receive(self, data: bytes, addr: tuple[str, int]) -> None:
        self.protocol.datagramReceived(data, addr)


class UdpReactor(BusyPortsReactor):
    """BusyPortsReactor whose listenUDP gives FakeUdpPorts (busy ports refused too)."""

    def __init__(self, busy: Any = ()) -> None:
        super().__init__(busy)
        self.udp_bound: dict[int, FakeUdpPort] = {}

    def listenUDP(self, port: int, protocol: Any, interface: str = "",
                  maxPacketSize: int = 8192) -> FakeUdpPort:
        from twisted.internet.error import CannotListenError
        if port in self.busy or port in self.udp_bound:
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        bound = self.udp_bound[port] = FakeUdpPort(self, port, protocol)
        protocol.makeConnection(bound)
        return bound


def make_session(reactor: UdpReactor, **options: Any) -> tuple[Any, RecordingObserver,
                                                               RecordingSink, PortPool]:
    from gb28181talk.core.session import TalkSession

    pool = PortPool(reactor, 30000, 30003)
    observer = RecordingObserver()
    sink = RecordingSink()
    options.setdefault("preroll_ms", 0)
    session = TalkSession(
        "s1", SessionParams(key=SessionKey("v", "live", "tone", SSRC), **options),
        ListSource.counting(200, loop=True),
        reactor=reactor, pool=pool, pacer=Pacer(reactor), observer=observer, sinks=[sink],
        direct_send=False,
    )
    return session, observer, sink, pool


def device_packet(sequence: int, payload: bytes = b"\xd5" * 160, ssrc: int = 42) -> bytes:
    return struct.pack("!BBHII", 0x80, 8, sequence, sequence * 160, ssrc) + payload


# --------------------------------------------------------------------------- interfaces


def test_the_new_transports_and_links_provide_their_interfaces() -> None:
    reactor = UdpReactor()
    pool = PortPool(reactor, 30000, 30003)
    active = ActiveTcpTransport(reactor, DEVICE, timeout=5.0)
    assert verifyObject(ITalkTransport, active)
    udp = UdpTalkTransport(pool, "s", reactor, destination=DEVICE)
    assert verifyObject(ITalkTransport, udp)
    assert verifyObject(IDeviceLink, UdpLink(udp, DEVICE))
    server = RtpServer(("v", "rtp", "d1"), tcp_mode=UDP, reactor=reactor, pool=pool,
                       registry=SourceRegistry())
    assert verifyObject(IDeviceHost, server)
    assert verifyObject(ITalkTransport, TalkBackTransport(server))
    assert verifyObject(IDeviceLink, SharedLink(server, UdpLink(udp, DEVICE)))


def test_params_name_the_transport_and_check_the_destination() -> None:
    key = SessionKey("v", "a", "s", 1)
    assert SessionParams(key=key).transport is TransportKind.TCP_PASSIVE
    for kind in (TransportKind.TCP_ACTIVE, TransportKind.UDP):
        with pytest.raises(SessionError, match="dst_url, dst_port"):
            SessionParams(key=key, transport=kind)
    params = SessionParams(key=key, transport=TransportKind.UDP, dst_host="192.0.2.1",
                           dst_port=9, rtcp_timeout=30.0)
    assert params.destination == ("192.0.2.1", 9)
    with pytest.raises(SessionError, match="RTCP"):
        SessionParams(key=key, transport=TransportKind.TCP_ACTIVE, dst_host="h", dst_port=9,
                      rtcp_timeout=30.0)


# --------------------------------------------------------------------------- TCP active


def active_session(reactor: UdpReactor, **options: Any) -> tuple[Any, RecordingObserver,
                                                                 RecordingSink]:
    session, observer, sink, _ = make_session(
        reactor, transport=TransportKind.TCP_ACTIVE, dst_host=DEVICE[0], dst_port=DEVICE[1],
        **options)
    return session, observer, sink


def connect_device(reactor: UdpReactor, local_port: int = 41234) -> StringTransport:
    """Complete the dial the session made: the device accepted."""
    host, port, factory, _timeout, _bind = reactor.tcpClients[-1]
    protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
    wire = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", local_port),
                           peerAddress=IPv4Address("TCP", host, port))
    protocol.makeConnection(wire)
    return wire


def test_tcp_active_dials_the_device_with_the_wait_timeout_then_streams_rfc4571() -> None:
    reactor = UdpReactor()
    session, observer, _ = active_session(reactor, wait_timeout=7.0)
    session.start()
    assert session.state is SessionState.LISTENING
    [(host, port, _factory, timeout, bind)] = reactor.tcpClients
    assert (host, port, timeout, bind) == (DEVICE[0], DEVICE[1], 7.0, None)
    wire = connect_device(reactor, local_port=41234)
    assert session.state is SessionState.STREAMING
    assert session.port == 41234 and session.peer == DEVICE
    for _ in range(5):
        reactor.advance(0.02)
    media = DeviceMedia(framing=Framing.RFC4571, keep_packets=True, strict=True)
    media.receive(wire.value(), 0.0)
    packets = media.packets
    assert len(packets) >= 3
    assert {packet.ssrc for packet in packets} == {SSRC}
    first = packets[0].sequence
    assert [p.sequence for p in packets] == [(first + n) & 0xFFFF for n in range(len(packets))]
    assert session.stop()
    assert observer.ended()[0][2] == "stopped"


def test_tcp_active_binds_the_asked_src_port_and_hears_the_device_back() -> None:
    reactor = UdpReactor()
    session, _, sink = active_session(reactor, src_port=30002, receive=True)
    session.start()
    assert reactor.tcpClients[0][4] == ("0.0.0.0", 30002)
    connect_device(reactor, local_port=30002)
    protocol = session.transport.link  # the device's connection
    assert protocol is not None
    voice = DeviceVoice(42, framing=Framing.RFC4571)
    pcm = g711.decode(Law.ALAW, b"\xd5" * 320)
    session.data_from_device(voice.speak(pcm))
    assert sink.pcm == pcm


def test_a_refused_connect_ends_the_session_saying_what_failed() -> None:
    reactor = UdpReactor()
    session, observer, _ = active_session(reactor)
    session.start()
    _host, _port, factory, _timeout, _bind = reactor.tcpClients[0]
    factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
    assert session.state is SessionState.CLOSED
    assert session.end_reason is EndReason.DEVICE_CLOSED
    assert "connecting to the device at 192.0.2.9:15060 failed" in session.end_detail
    assert observer.ended()[0][2] == "device-closed"


def test_the_wait_timeout_stops_the_connect_and_ends_with_timeout() -> None:
    reactor = UdpReactor()
    session, _, _ = active_session(reactor, wait_timeout=2.0)
    session.start()
    connector = reactor.connectors[0]
    reactor.advance(2.0)
    assert session.end_reason is EndReason.TIMEOUT
    assert connector.stoppedConnecting


def test_when_connected_answers_after_the_connect_or_with_device_unreachable() -> None:
    reactor = UdpReactor()
    pool = PortPool(reactor, 30000, 30003)
    registry = SourceRegistry()
    registry.add(ListSource.counting(500, app="live", stream="tone"))
    control = TalkControl(reactor, SessionManager(reactor, pool, direct_send=False), registry)

    def request(ssrc: int) -> TalkRequest:
        return TalkRequest(SessionParams(
            key=SessionKey("v", "live", "tone", ssrc), transport=TransportKind.TCP_ACTIVE,
            dst_host=DEVICE[0], dst_port=DEVICE[1]), on_repeat=OnRepeat.REPLACE_UNLESS_WAITING)

    answers: list[Any] = []
    control.start(request(1)).addCallback(control.when_connected).addBoth(answers.append)
    assert answers == []  # no answer before the device is reached
    connect_device(reactor)
    assert answers[0].state is SessionState.STREAMING
    control.start(request(2)).addCallback(control.when_connected).addBoth(answers.append)
    reactor.tcpClients[-1][2].clientConnectionFailed(None, Failure(ConnectionRefusedError()))
    assert isinstance(answers[1], Failure) and answers[1].check(DeviceUnreachable)
    assert "failed" in str(answers[1].value)


# --------------------------------------------------------------------------- UDP


def test_udp_sends_bare_rtp_datagrams_from_a_pool_lease_held_as_long_as_the_link() -> None:
    reactor = UdpReactor()
    session, _, _, pool = make_session(
        reactor, transport=TransportKind.UDP, dst_host=DEVICE[0], dst_port=DEVICE[1])
    session.start()
    assert session.state is SessionState.STREAMING  # delivered from within open
    assert pool.leased_count == 1
    sock = reactor.udp_bound[session.port]
    for _ in range(5):
        reactor.advance(0.02)
    assert len(sock.sent) >= 3
    for data, addr in sock.sent:
        assert addr == DEVICE
        packet = parse_rtp(data)  # no RFC 4571 prefix: a whole packet per datagram
        assert packet.ssrc == SSRC and len(packet.payload) == 160
    session.stop()
    assert sock.stopped and pool.leased_count == 0


def test_udp_hears_the_device_back_and_an_explicit_src_port_is_used() -> None:
    reactor = UdpReactor()
    session, _, sink, _ = make_session(
        reactor, transport=TransportKind.UDP, dst_host=DEVICE[0], dst_port=DEVICE[1],
        src_port=30003, receive=True)
    session.start()
    assert session.port == 30003
    sock = reactor.udp_bound[30003]
    sock.receive(device_packet(1), DEVICE)
    sock.receive(device_packet(2), DEVICE)
    assert len(sink.pcm) == 2 * 320
    assert session.stats.packets_received == 2


def test_udp_passive_waits_for_the_expected_devices_first_datagram() -> None:
    reactor = UdpReactor()
    session, _, _, _ = make_session(reactor, transport=TransportKind.UDP_PASSIVE,
                                    expected_peer="192.0.2.9")
    session.start()
    assert session.state is SessionState.LISTENING
    sock = reactor.udp_bound[session.port]
    sock.receive(b"punch", ("198.51.100.1", 5000))
    assert session.state is SessionState.LISTENING  # not the expected device
    sock.receive(b"punch", ("192.0.2.9", 6000))
    assert session.state is SessionState.STREAMING and session.peer == ("192.0.2.9", 6000)
    reactor.advance(0.02)
    assert sock.sent and sock.sent[-1][1] == ("192.0.2.9", 6000)


def test_udp_passive_without_a_device_times_out_and_returns_the_port() -> None:
    reactor = UdpReactor()
    session, _, _, pool = make_session(reactor, transport=TransportKind.UDP_PASSIVE,
                                       wait_timeout=3.0)
    session.start()
    reactor.advance(3.0)
    assert session.end_reason is EndReason.TIMEOUT and pool.leased_count == 0


def test_udp_rtcp_timeout_sends_reports_on_port_plus_one_and_ends_when_the_device_is_silent(
) -> None:
    reactor = UdpReactor()
    session, _, _, _ = make_session(
        reactor, transport=TransportKind.UDP, dst_host=DEVICE[0], dst_port=DEVICE[1],
        rtcp_timeout=12.0)
    session.start()
    rtcp = reactor.udp_bound[session.port + 1]
    for _ in range(int(RTCP_INTERVAL / 0.02) + 1):
        reactor.advance(0.02)
    [(report, addr)] = rtcp.sent
    assert addr == (DEVICE[0], DEVICE[1] + 1)
    assert report[1] == 200 and struct.unpack("!I", report[4:8])[0] == SSRC
    packets, octets = struct.unpack("!II", report[20:28])
    assert packets > 200 and octets == packets * 160
    # A receiver report from the device keeps it going; silence past 12 s ends it.
    rtcp.receive(struct.pack("!BBHI", 0x80, 201, 1, 42), (DEVICE[0], 40001))
    reactor.advance(RTCP_INTERVAL)
    assert session.state is SessionState.STREAMING
    assert rtcp.sent[-1][1] == (DEVICE[0], 40001)  # reports go where the device's came from
    for _ in range(4):
        reactor.advance(RTCP_INTERVAL)
    assert session.end_reason is EndReason.DEVICE_CLOSED
    assert "no RTCP" in session.end_detail and rtcp.stopped


# --------------------------------------------------------------------------- RTP servers


def servers(reactor: UdpReactor, timeout: float = 15.0) -> tuple[RtpServers, SourceRegistry]:
    registry = SourceRegistry()
    return RtpServers(reactor, PortPool(reactor, 30000, 30003), registry, timeout), registry


def test_a_udp_rtp_server_publishes_the_devices_audio_on_its_first_packet() -> None:
    reactor = UdpReactor()
    rtp, registry = servers(reactor)
    server = rtp.open(("v", "rtp", "dev1"), tcp_mode=UDP)
    assert registry.find("rtp", "dev1") is None  # nothing heard yet
    sock = reactor.udp_bound[server.port]
    sock.receive(device_packet(1), DEVICE)
    source = registry.find("rtp", "dev1")
    assert source is not None and source.kind == "device"
    sock.receive(device_packet(2), DEVICE)
    assert server.packets_received == 2
    assert server.describe()["peer"] == "192.0.2.9:15060"
    with pytest.raises(SessionError, match="already exists"):
        rtp.open(("v", "rtp", "dev1"), tcp_mode=UDP)
    assert rtp.close(("v", "rtp", "dev1")) and not rtp.close(("v", "rtp", "dev1"))
    assert registry.find("rtp", "dev1") is None and sock.stopped


def test_an_rtp_server_without_audio_times_out_and_says_so_once() -> None:
    reactor = UdpReactor()
    rtp, _ = servers(reactor, timeout=4.0)
    timed_out: list[RtpServer] = []
    rtp.on_timeout(timed_out.append)
    server = rtp.open(("v", "rtp", "quiet"), tcp_mode=UDP, ssrc=5)
    reactor.advance(3.0)
    sock = reactor.udp_bound[server.port]
    sock.receive(device_packet(1, ssrc=5), DEVICE)  # audio restarts the count
    reactor.advance(3.9)
    assert not timed_out
    reactor.advance(0.2)
    assert timed_out == [server] and server.closed and rtp.list() == []
    closed_by_hand = rtp.open(("v", "rtp", "other"), tcp_mode=UDP)
    closed_by_hand.close()
    reactor.advance(10)
    assert timed_out == [server]


def test_a_tcp_rtp_server_lends_its_connection_to_start_send_rtp_talk() -> None:
    reactor = UdpReactor()
    pool = PortPool(reactor, 30000, 30003)
    registry = SourceRegistry()
    registry.add(ListSource.counting(500, app="rtp", stream="platform"))
    control = TalkControl(reactor, SessionManager(reactor, pool, direct_send=False), registry)
    server = control.rtp_servers.open(("v", "rtp", "dev2"), tcp_mode=TCP_PASSIVE)
    talk = TalkRequest(SessionParams(key=SessionKey("v", "rtp", "platform", SSRC),
                                     transport=TransportKind.RTP_SERVER, preroll_ms=0),
                       rtp_server="dev2")
    refused: list[Any] = []
    control.start(talk).addErrback(refused.append)
    assert refused and refused[0].check(RtpServerNotFound)  # no device yet
    factory = reactor.factory_on(server.port)
    protocol = factory.buildProtocol(IPv4Address("TCP", *DEVICE))
    wire = StringTransport(peerAddress=IPv4Address("TCP", *DEVICE))
    protocol.makeConnection(wire)
    voice = DeviceVoice(42, framing=Framing.RFC4571)
    protocol.dataReceived(voice.speak(g711.decode(Law.ALAW, b"\xd5" * 320)))
    assert registry.find("rtp", "dev2") is not None
    sessions: list[Any] = []
    control.start(talk).addCallback(sessions.append)
    [session] = sessions
    assert session.state is SessionState.STREAMING and session.port == server.port
    for _ in range(5):
        reactor.advance(0.02)
    media = DeviceMedia(framing=Framing.RFC4571, keep_packets=True, strict=True)
    media.receive(wire.value(), 0.0)
    assert media.packets and {p.ssrc for p in media.packets} == {SSRC}
    session.stop()
    assert not wire.disconnecting and server.link is not None  # the device stays
    protocol.dataReceived(voice.speak(g711.decode(Law.ALAW, b"\xd5" * 320)))
    assert server.packets_received == 4
    again: list[Any] = []
    control.start(talk).addCallback(again.append)
    server.close("closeRtpServer")
    assert again[0].end_reason is EndReason.DEVICE_CLOSED
    assert "RTP server" in again[0].end_detail and wire.disconnecting
