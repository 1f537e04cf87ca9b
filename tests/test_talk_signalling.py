"""The SIP seam: a device's GB28181 offer opens a passive talk port and yields the right answer.

Every call goes through the talk core with its Call-ID as identity: calls
sharing a ``y=`` are two sessions, a SIP-started two-way talk publishes and
records the device's voice, a call's end can be observed for BYE.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from zope.interface.verify import verifyObject

from gb28181talk.core.manager import SessionManager
from gb28181talk.core.params import Packaging, SessionState
from gb28181talk.core.ports import PortPool
from gb28181talk.core.talk import TalkControl
from gb28181talk.errors import SdpError, SessionNotFound, SourceError
from gb28181talk.interfaces import FRAME_SAMPLES, ITalkSignalling
from gb28181talk.media import g711
from gb28181talk.media.framing import frame_rfc4571
from gb28181talk.media.law import Law
from gb28181talk.media.rtp import RtpPacket
from gb28181talk.media.wav import read_wav
from gb28181talk.signalling.sdp import parse_sdp
from gb28181talk.sip.seam import TalkSignalling, device_stream_name
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


TALK_OFFER = (
    BROADCAST_OFFER.replace("s=Play", "s=Talk")
    .replace("192.0.2.10", "192.0.2.20")
    .replace("TCP/RTP/AVP 8", "TCP/RTP/AVP 0")
    .replace("a=recvonly", "a=sendrecv")
    .replace("a=rtpmap:8 PCMA/8000", "a=rtpmap:0 PCMU/8000")
)
"""Another device's two-way offer, PCMU, with the broadcast offer's y=."""


def make(record_dir: str | None = None, **options):
    reactor = BusyPortsReactor()
    manager = SessionManager(reactor, PortPool(reactor, 30000, 30009))
    sources = SourceRegistry()
    sources.add(ToneSource("broadcast", "announce", frequency=440))
    core = TalkControl(reactor, manager, sources, record_dir=record_dir)
    signalling = TalkSignalling(core, advertise_ip="198.51.100.5", **options)
    return reactor, manager, signalling


def device_packets(law: Law, pcm16: bytes, ssrc: int, first_sequence: int = 0) -> bytes:
    """What a device says back: 20 ms G.711 RTP packets with RFC 4571 framing."""
    data = b""
    step = FRAME_SAMPLES * 2
    for index, start in enumerate(range(0, len(pcm16), step)):
        packet = RtpPacket(law.payload_type, first_sequence + index, index * FRAME_SAMPLES, ssrc,
                           g711.encode(law, pcm16[start:start + step]))
        data += frame_rfc4571(packet.encode())
    return data


def voice(frames: int) -> bytes:
    """Recognisable PCM16: each frame a constant level unlike its neighbours."""
    return b"".join(((n % 50) * 400 - 10000).to_bytes(2, "little", signed=True)
                    * FRAME_SAMPLES for n in range(frames))


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


def test_calls_sharing_a_y_line_get_two_sessions_that_match_their_answers() -> None:
    reactor, manager, signalling = make()
    answer_a = parse_sdp(signalling.prepare("call-A", BROADCAST_OFFER, "broadcast", "announce"))
    answer_b = parse_sdp(signalling.prepare("call-B", TALK_OFFER, "broadcast", "announce"))
    session_a, session_b = signalling.session("call-A"), signalling.session("call-B")
    assert session_a is not session_b and len(manager.sessions()) == 2
    assert session_a.key == session_b.key, "the same y=: the same key, yet two identities"
    assert (answer_a.port, answer_b.port) == (session_a.port, session_b.port)
    assert answer_a.port != answer_b.port
    assert (answer_a.payload_types, answer_a.direction) == ((8,), "sendonly")
    assert (answer_b.payload_types, answer_b.direction) == ((0,), "sendrecv")
    assert (session_a.params.rtp_payload_type, session_a.params.receive) == (8, False)
    assert (session_b.params.rtp_payload_type, session_b.params.receive) == (0, True)
    assert session_b.params.law is Law.ULAW
    device_a, device_b = FakeDevice(host="192.0.2.10"), FakeDevice(host="192.0.2.20")
    assert device_a.connect(reactor, session_a.port) and device_b.connect(reactor, session_b.port)
    for _ in range(10):
        reactor.advance(0.02)
    assert {packet.payload_type for packet in device_a.receive()} == {8}
    assert {packet.payload_type for packet in device_b.receive()} == {0}
    signalling.release("call-A")
    assert session_a.end_reason == "stopped"
    assert session_b.state is SessionState.STREAMING and session_b.end_reason is None
    for _ in range(10):
        reactor.advance(0.02)
    still = device_b.receive()
    assert len(still) >= 5 and {packet.payload_type for packet in still} == {0}
    assert signalling.session("call-A") is None and signalling.session("call-B") is session_b


def test_a_sip_started_two_way_talk_publishes_and_records_the_devices_audio(
    tmp_path: Path,
) -> None:
    reactor, _manager, signalling = make(record_dir=str(tmp_path))
    answer = parse_sdp(signalling.prepare("call-B", TALK_OFFER, "broadcast", "announce"))
    talk = signalling.session("call-B")
    name = device_stream_name("call-B")
    published = signalling.core.registry.find("broadcast", name)
    assert published is not None and published.kind == "device"
    assert signalling.core.describe(talk)["recv_stream_id"] == name
    # Someone listens to the device: a second call playing the published source.
    listener_offer = BROADCAST_OFFER.replace("y=0100000123", "y=0100000124")
    signalling.prepare("call-L", listener_offer, "broadcast", name)
    listener = signalling.session("call-L")
    assert listener.source is published
    device, hearer = FakeDevice(host="192.0.2.20"), FakeDevice(host="192.0.2.10")
    assert device.connect(reactor, answer.port) and hearer.connect(reactor, listener.port)
    spoken = voice(40)
    device.send(device_packets(Law.ULAW, spoken, ssrc=100000123))
    for _ in range(60):
        reactor.advance(0.02)
    assert talk.stats.packets_received == 40
    heard = g711.decode(Law.ALAW, b"".join(packet.payload for packet in hearer.receive()))
    levels = {heard[i:i + 2] for i in range(0, len(heard), 2)}
    assert len(levels) > 20, "the listener hears the device's many levels, not silence"
    device.hang_up()
    assert talk.end_reason == "device-closed"
    assert signalling.session("call-B") is None
    [recording] = list(tmp_path.glob(f"broadcast-{name}-0100000123-*.wav"))
    audio = read_wav(recording)
    assert (audio.sample_rate, audio.channels, audio.encoding) == (8000, 1, "pcm16")
    expected = g711.decode(Law.ULAW, g711.encode(Law.ULAW, spoken))
    assert audio.data == expected, "the WAV holds every sample the device said"


def test_a_re_invite_with_another_offer_replaces_the_calls_session() -> None:
    _reactor, manager, signalling = make()
    signalling.prepare("call-1", BROADCAST_OFFER, "broadcast", "announce")
    first = signalling.session("call-1")
    ended: list[str] = []
    signalling.when_ended("call-1").addCallback(ended.append)
    pcmu = BROADCAST_OFFER.replace("TCP/RTP/AVP 8", "TCP/RTP/AVP 0").replace(
        "a=rtpmap:8 PCMA/8000", "a=rtpmap:0 PCMU/8000")
    answer = parse_sdp(signalling.prepare("call-1", pcmu, "broadcast", "announce"))
    second = signalling.session("call-1")
    assert second is not first and first.end_reason == "stopped"
    assert answer.port == second.port and answer.payload_types == (0,)
    assert [s.id for s in manager.sessions()] == [second.id]
    assert ended == [], "a replaced session is not the end of the call"
    again = parse_sdp(signalling.prepare("call-1", pcmu, "broadcast", "announce"))
    assert again.port == second.port and signalling.session("call-1") is second
    signalling.release("call-1")
    assert ended == ["stopped"]


def test_the_end_of_a_call_can_be_observed_and_nothing_is_kept_after_it() -> None:
    reactor, manager, signalling = make()
    signalling.prepare("call-1", BROADCAST_OFFER, "broadcast", "announce")
    first = signalling.session("call-1")
    ended: list[str] = []
    signalling.when_ended("call-1").addCallback(ended.append)
    device = FakeDevice(host="192.0.2.10")
    assert device.connect(reactor, first.port)
    device.hang_up()
    assert ended == ["device-closed"], "the SIP stack learns to send BYE"
    assert signalling.session("call-1") is None and manager.sessions() == []
    failed: list = []
    signalling.when_ended("call-1").addErrback(failed.append)
    assert failed and failed[0].check(SessionNotFound)
    answer = parse_sdp(signalling.prepare("call-1", BROADCAST_OFFER, "broadcast", "announce"))
    fresh = signalling.session("call-1")
    assert fresh is not first and fresh.state is SessionState.LISTENING
    assert answer.port == fresh.port


def test_a_timed_out_call_is_forgotten() -> None:
    reactor, manager, signalling = make(wait_timeout=1.0)
    signalling.prepare("call-1", BROADCAST_OFFER, "broadcast", "announce")
    ended: list[str] = []
    signalling.when_ended("call-1").addCallback(ended.append)
    reactor.advance(1.5)
    assert ended == ["timeout"] and signalling.session("call-1") is None
    assert manager.pool.leased_count == 0


def test_device_stream_names_are_source_names_and_distinct() -> None:
    assert device_stream_name("abc-1") == "sip-abc-1"
    odd = device_stream_name("a84b4c76e66710@pc33.example.com")
    assert odd.startswith("sip-a84b4c76e66710_pc33.example.com-")
    assert device_stream_name("x@y") != device_stream_name("x#y")
    assert len(device_stream_name("z" * 500)) <= 128
