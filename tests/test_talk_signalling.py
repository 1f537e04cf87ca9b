"""The SIP seam: a device's GB28181 offer opens a passive talk port and yields the right answer."""

from __future__ import annotations

import pytest
from zope.interface.verify import verifyObject

from gb28181talk.core.manager import SessionManager
from gb28181talk.core.params import Packaging, SessionState
from gb28181talk.core.ports import PortPool
from gb28181talk.errors import SdpError, SourceError
from gb28181talk.interfaces import ITalkSignalling
from gb28181talk.signalling.sdp import parse_sdp
from gb28181talk.sip.seam import TalkSignalling
from gb28181talk.sources.registry import SourceRegistry
from gb28181talk.sources.tone import ToneSource
from gb28181talk.testing import BusyPortsReactor, FakeDevice

BROADCAST_OFFER = (
    "v=0\r\n"
    "o=34020000001370000001 0 0 IN IP4 192.0.2.10\r\n"
    "s=Play\r\n"
    "c=IN IP4 192.0.2.10\r\n"
    "t=0 0\r\n"
    "m=audio 15062 TCP/RTP/AVP 8\r\n"
    "a=setup:active\r\n"
    "a=connection:new\r\n"
    "a=recvonly\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "y=0100000123\r\n"
    "f=v/////a/1/8/1\r\n"
)


def make(**options):
    reactor = BusyPortsReactor()
    manager = SessionManager(reactor, PortPool(reactor, 30000, 30009))
    sources = SourceRegistry()
    sources.add(ToneSource("broadcast", "announce", frequency=440))
    signalling = TalkSignalling(manager, sources, advertise_ip="198.51.100.5", **options)
    return reactor, manager, signalling


def test_provides_the_interface() -> None:
    assert verifyObject(ITalkSignalling, make()[2])


def test_broadcast_offer_gets_a_passive_answer_on_a_listening_port() -> None:
    _, manager, signalling = make()
    answer = parse_sdp(signalling.prepare("call-1", BROADCAST_OFFER, "broadcast", "announce"))
    (session,) = manager.sessions()
    assert session.state is SessionState.LISTENING, "the port listens before the 200 OK goes out"
    assert answer.port == session.port
    assert answer.connection_address == "198.51.100.5"
    assert (answer.setup, answer.connection, answer.direction) == ("passive", "new", "sendonly")
    assert answer.ssrc == 100000123 and answer.f_line == "v/////a/1/8/1"
    assert answer.payload_types == (8,)
    assert session.key.ssrc == 100000123
    assert session.params.packaging is Packaging.RAW and not session.params.receive


def test_a_retried_invite_gets_the_same_port() -> None:
    _, manager, signalling = make()
    first = parse_sdp(signalling.prepare("call-1", BROADCAST_OFFER, "broadcast", "announce"))
    again = parse_sdp(signalling.prepare("call-1", BROADCAST_OFFER, "broadcast", "announce"))
    assert first.port == again.port and len(manager.sessions()) == 1


def test_release_stops_the_call_and_is_harmless_twice() -> None:
    _, manager, signalling = make()
    signalling.prepare("call-1", BROADCAST_OFFER, "broadcast", "announce")
    (session,) = manager.sessions()
    signalling.release("call-1")
    signalling.release("call-1")
    signalling.release("never-seen")
    assert session.end_reason == "stopped" and manager.pool.leased_count == 0


def test_talk_offer_with_ps_enables_two_way_receive() -> None:
    _, manager, signalling = make()
    offer = (
        BROADCAST_OFFER.replace("s=Play", "s=Talk")
        .replace("TCP/RTP/AVP 8", "TCP/RTP/AVP 96")
        .replace("a=recvonly", "a=sendrecv")
        .replace("a=rtpmap:8 PCMA/8000", "a=rtpmap:96 PS/90000")
    )
    answer = parse_sdp(signalling.prepare("call-2", offer, "broadcast", "announce"))
    (session,) = manager.sessions()
    assert answer.direction == "sendrecv" and answer.payload_types == (96,)
    assert session.params.packaging is Packaging.PS and session.params.receive


def test_restricting_the_peer_uses_the_offer_address() -> None:
    reactor, manager, signalling = make(restrict_peer=True)
    signalling.prepare("call-1", BROADCAST_OFFER, "broadcast", "announce")
    (session,) = manager.sessions()
    assert not FakeDevice(host="127.0.0.2").connect(reactor, session.port)
    assert session.state is SessionState.LISTENING


def test_offers_without_y_line_do_not_collide() -> None:
    _, manager, signalling = make()
    offer = BROADCAST_OFFER.replace("y=0100000123\r\n", "")
    signalling.prepare("call-a", offer, "broadcast", "announce")
    signalling.prepare("call-b", offer, "broadcast", "announce")
    assert len({s.port for s in manager.sessions()}) == 2


@pytest.mark.parametrize(
    ("replacements", "message"),
    [
        ([("TCP/RTP/AVP 8", "RTP/AVP 8")], "UDP"),
        ([("a=setup:active", "a=setup:passive")], "TCP active"),
        ([("TCP/RTP/AVP 8", "TCP/RTP/AVP 18"), ("rtpmap:8 PCMA", "rtpmap:18 G729")], "no G.711"),
    ],
)
def test_unsupported_offers_are_refused_with_the_reason(replacements, message) -> None:
    _, manager, signalling = make()
    offer = BROADCAST_OFFER
    for old, new in replacements:
        offer = offer.replace(old, new)
    with pytest.raises(SdpError, match=message):
        signalling.prepare("call-1", offer, "broadcast", "announce")
    assert manager.sessions() == []


def test_unknown_source_is_refused() -> None:
    _, manager, signalling = make()
    with pytest.raises(SourceError):
        signalling.prepare("call-1", BROADCAST_OFFER, "broadcast", "missing")
    assert manager.sessions() == []
