"""The transport seam: a talk session streams over any ITalkTransport, not only passive TCP.

A UDP-like test double stands for the transports still to come (TCP active, UDP
sending): it has its device at once, delivers a datagram link (no RFC 4571
prefix, one datagram per packet) from within ``open``, and the session streams
over it unchanged: the lifecycle, the sender and the receiver are the same code.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.exceptions import MultipleInvalid
from zope.interface.verify import verifyObject

from gb28181talk.core.pacer import Pacer
from gb28181talk.core.params import EndReason, SessionKey, SessionParams, SessionState
from gb28181talk.core.passive import PassiveTcpTransport, TcpLink
from gb28181talk.core.ports import PortPool
from gb28181talk.core.session import TalkSession
from gb28181talk.core.transport import IDeviceHost, IDeviceLink, ITalkTransport
from gb28181talk.core.writer import PacketWriter
from gb28181talk.media import g711
from gb28181talk.media.framing import Framing
from gb28181talk.media.law import Law
from gb28181talk.media.rtp import RtpPacket, parse_rtp
from gb28181talk.testing import (
    BusyPortsReactor,
    FakeDevice,
    ListSource,
    RecordingObserver,
    RecordingSink,
)

SSRC = 100000555


@implementer(IDeviceLink)
class DatagramLink:
    """A device reached by datagrams: every write is one whole RTP packet, nothing queues."""

    framing = Framing.NONE
    queued = 0
    whole_packets = True

    def __init__(self, peer: tuple[str, int]) -> None:
        self.peer = peer
        self.datagrams: list[bytes] = []
        self.closed: bool | None = None
        self.pauses = self.resumes = 0

    def write(self, header: bytes, payload: bytes) -> bool:
        assert self.closed is None, "nothing is written after close"
        self.datagrams.append(header + payload)
        return True

    def close(self, abort: bool) -> None:
        self.closed = abort

    def pause_reading(self) -> None:
        """A datagram link cannot pause: over-budget datagrams are dropped and counted."""
        self.pauses += 1

    def resume_reading(self) -> None:
        self.resumes += 1


@implementer(ITalkTransport)
class UdpLikeTransport:
    """We send to the device at an address the SDP gave: its link exists as soon as we open."""

    def __init__(self, device: tuple[str, int], local_port: int = 40002) -> None:
        self.device = device
        self.local_port = local_port
        self.port = 0
        self.host: Any = None
        self.link: DatagramLink | None = None
        self.opened = 0
        self.closes = 0

    def open(self, host: IDeviceHost) -> int:
        self.opened += 1
        self.host = host
        self.port = self.local_port
        self.link = DatagramLink(self.device)
        host.device_connected(self.link)
        return self.port

    def close(self) -> None:
        self.closes += 1

    def datagram_received(self, data: bytes) -> None:
        """A datagram from the device (two-way talk over UDP)."""
        self.host.data_from_device(data)


def udp_session(**options: Any) -> tuple[TalkSession, UdpLikeTransport, Clock, Any]:
    clock = Clock()
    observer = RecordingObserver()
    transport = UdpLikeTransport(("192.0.2.7", 9000))
    sink = RecordingSink()
    session = TalkSession(
        "udp1",
        SessionParams(key=SessionKey("v", "live", "udp", SSRC), **options),
        ListSource.counting(20),
        reactor=clock,
        pool=PortPool(BusyPortsReactor(), 30000, 30001),
        pacer=Pacer(clock),
        observer=observer,
        sinks=[sink],
        rng_seed=0x1234_5678_9ABC,
        transport=transport,
    )
    return session, transport, clock, (observer, sink)


def test_the_transports_and_links_provide_their_interfaces() -> None:
    transport = UdpLikeTransport(("192.0.2.7", 9000))
    assert verifyObject(ITalkTransport, transport)
    assert verifyObject(IDeviceLink, DatagramLink(("192.0.2.7", 9000)))
    reactor = BusyPortsReactor()
    passive = PassiveTcpTransport(PortPool(reactor, 30000, 30001), "s1")
    assert verifyObject(ITalkTransport, passive)
    device = FakeDevice()
    link = TcpLink(device.transport, PacketWriter(device.transport, 4096), ("h", 1),
                   Framing.RFC4571)
    assert verifyObject(IDeviceLink, link)
    session, _, _, _ = udp_session()
    assert verifyObject(IDeviceHost, session)


def test_a_link_must_say_how_its_reading_is_paused() -> None:
    @implementer(IDeviceLink)
    class Unpausable:
        peer = ("h", 1)
        framing = Framing.NONE
        queued = 0
        whole_packets = True

        def write(self, header: bytes, payload: bytes) -> bool:
            return True

        def close(self, abort: bool) -> None:
            """Nothing to close."""

    with pytest.raises(MultipleInvalid) as broken:
        verifyObject(IDeviceLink, Unpausable())
    missing = {error.name.__name__ for error in broken.value.exceptions}
    assert missing == {"pause_reading", "resume_reading"}


def test_the_receive_budget_pauses_any_link_through_the_interface() -> None:
    session, transport, clock, _ = udp_session(receive=True, preroll_ms=0)
    session.start()
    link = transport.link
    assert link is not None
    for _ in range(session.receiver.budget.frames_per_second + 3):
        transport.datagram_received(b"\x80")  # too short for RTP: a frame all the same
    assert (link.pauses, link.resumes) == (1, 0), "the second's budget is spent: paused"
    assert session.stats.packets_over_budget == 3 and session.stats.receive_throttles == 1
    clock.advance(1.0)
    assert link.resumes == 1
    session.stop()


def test_a_datagram_transport_streams_bare_rtp_one_packet_per_datagram() -> None:
    session, transport, clock, (observer, _) = udp_session(preroll_ms=0)
    session.start()
    assert session.state is SessionState.STREAMING
    assert session.port == 40002 and session.peer == ("192.0.2.7", 9000)
    assert [event[0] for event in observer.events] == ["started", "connected"]
    for _ in range(25):
        clock.advance(0.02)
    assert transport.link is not None
    packets = [parse_rtp(datagram) for datagram in transport.link.datagrams]
    assert len(packets) == 20, "one datagram per 20 ms packet, no RFC 4571 prefix"
    assert {p.ssrc for p in packets} == {SSRC} and {p.payload_type for p in packets} == {8}
    for before, after in itertools.pairwise(packets):
        assert (after.sequence - before.sequence) % 65536 == 1
        assert (after.timestamp - before.timestamp) % 2**32 == 160
    assert packets[0].marker and not any(p.marker for p in packets[1:])
    source_frames = ListSource.counting(20).frames
    assert b"".join(p.payload for p in packets) == b"".join(
        g711.encode(Law.ALAW, frame) for frame in source_frames)
    assert session.end_reason == "source-ended"
    assert transport.link.closed is False, "closed, not aborted"
    assert transport.closes == 1 and transport.opened == 1
    assert not clock.getDelayedCalls()
    assert [event[2] for event in observer.ended("udp1")] == ["source-ended"]


def test_two_way_talk_over_datagrams_reaches_the_sinks() -> None:
    session, transport, _clock, (_, sink) = udp_session(receive=True)
    session.start()
    voice = bytes(range(160))
    for sequence in range(3):
        transport.datagram_received(RtpPacket(8, sequence, sequence * 160, SSRC, voice).encode())
    assert sink.pcm == g711.decode(Law.ALAW, voice * 3)
    assert session.stats.packets_received == 3
    assert session.stop() is True
    assert sink.ended and transport.link is not None and transport.link.closed is False
    assert session.stop(EndReason.ERROR) is False


def test_an_error_ending_aborts_the_datagram_link() -> None:
    session, transport, clock, _ = udp_session()
    session.start()
    clock.advance(0.02)
    session.end(EndReason.ERROR, "test")
    assert transport.link is not None and transport.link.closed is True
    assert not clock.getDelayedCalls()


def test_a_second_device_delivered_while_streaming_is_sent_away() -> None:
    session, transport, clock, (observer, _) = udp_session()
    session.start()
    intruder = DatagramLink(("192.0.2.9", 9000))
    session.device_connected(intruder)
    assert intruder.closed is True, "aborted"
    assert session.peer == ("192.0.2.7", 9000) and session.state is SessionState.STREAMING
    clock.advance(0.02)
    assert intruder.datagrams == []
    assert transport.link is not None and transport.link.datagrams
    session.stop()
    assert [event[0] for event in observer.events].count("connected") == 1


def test_a_start_that_fails_after_its_transport_delivered_leaves_nothing() -> None:
    session, transport, clock, (observer, _) = udp_session()

    def broken_attach(source: Any, listener: Any) -> None:
        raise RuntimeError("attach failed")

    session._pacer.attach = broken_attach  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="attach failed"):
        session.start()
    assert transport.link is not None and transport.link.closed is True
    assert transport.closes == 1
    assert session.state is SessionState.CLOSED and session.stop() is False
    assert observer.events == [] and not clock.getDelayedCalls()
