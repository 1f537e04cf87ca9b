"""Fuzzing the remaining ways bytes enter the service: RTP ingest, WebSocket push, device offers.

The wire parsers have their own properties (test_rtp, test_framing, test_ps,
test_sdp, test_manscdp, test_wav); the session's receive path is fuzzed in
test_fuzz_session and the HTTP API in test_fuzz_api.  What was left: the RTP
ingest source fed arbitrary datagrams (garbage, or RTP with random sequence
numbers, SSRCs, payload types and PS payloads), the push source fed arbitrary
messages in every input format, and the SIP seam (:class:`TalkSignalling`)
fed arbitrary and damaged SDP offers.  Each only ever refuses with its own
error type, keeps its buffers bounded and hands the pacer whole 20 ms frames.
There is no SIP message parser in this project (SIP stacks call the seam with
the offer's SDP), so none is fuzzed here.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gb28181talk.core.manager import SessionManager
from gb28181talk.core.params import SessionState
from gb28181talk.core.ports import PortPool
from gb28181talk.core.talk import TalkControl
from gb28181talk.errors import GbTalkError
from gb28181talk.interfaces import FRAME_BYTES
from gb28181talk.media.law import Law
from gb28181talk.media.ps import PsMuxer
from gb28181talk.media.rtp import RtpPacket
from gb28181talk.sip.seam import TalkSignalling
from gb28181talk.sources.ingest import RtpIngestSource
from gb28181talk.sources.push import FORMATS, PushSource
from gb28181talk.sources.registry import SourceRegistry
from gb28181talk.sources.tone import ToneSource
from gb28181talk.testing import BusyPortsReactor
from tests.test_fuzz_session import budget
from tests.test_sources import UdpMemoryReactor
from tests.test_talk_signalling import BROADCAST_OFFER


@st.composite
def datagrams(draw: st.DrawFn) -> bytes:
    """Garbage, or an RTP packet with fields drawn at random (PCMA, PCMU, PS or other)."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.binary(max_size=400))
    payload_type = draw(st.sampled_from([0, 8, 96, 97, 13]))
    payload = draw(st.binary(min_size=1, max_size=400))
    timestamp = draw(st.integers(0, 2**32 - 1))
    if payload_type == 96 and draw(st.booleans()):
        payload = PsMuxer(Law.ALAW).mux(payload, timestamp)
    packet = RtpPacket(payload_type, draw(st.integers(0, 2**16 - 1)), timestamp,
                       draw(st.sampled_from([1, 2, 2**32 - 1])), payload,
                       marker=draw(st.booleans()))
    return packet.encode()


@settings(max_examples=budget(150), deadline=None)
@given(stream=st.lists(st.tuples(datagrams(), st.integers(0, 3)), max_size=40),
       reorder_window=st.integers(0, 8))
def test_rtp_ingest_takes_any_datagrams_and_hands_out_whole_frames(
    stream: list[tuple[bytes, int]], reorder_window: int
) -> None:
    source = RtpIngestSource("live", "rtp", UdpMemoryReactor(), prefill_ms=0,
                             max_backlog_ms=200, reorder_window=reorder_window)
    for datagram, reads in stream:
        source.packet_received(datagram, ("127.0.0.1", 5004))
        for _ in range(reads):
            frame = source.read_frame()
            assert frame is None or len(frame) == FRAME_BYTES
        assert source.backlog_ms <= source.hard_limit_ms
    counted = source.packets + source.invalid + source.unsupported
    assert counted == len(stream), "every datagram is played, or counted as invalid/unsupported"
    source.close()
    assert source.ended


@settings(max_examples=budget(150), deadline=None)
@given(
    fmt=st.sampled_from(FORMATS),
    rate=st.sampled_from([8000, 16000, 22050, 32000, 44100, 48000]),
    channels=st.sampled_from([1, 2]),
    messages=st.lists(st.tuples(st.binary(max_size=3000), st.integers(0, 3)), max_size=20),
)
def test_push_takes_any_messages_and_hands_out_whole_frames(
    fmt: str, rate: int, channels: int, messages: list[tuple[bytes, int]]
) -> None:
    source = PushSource("live", "push", sample_rate=rate, channels=channels, format=fmt,
                        max_backlog_ms=200, prefill_ms=0)
    for message, reads in messages:
        source.push_bytes(message)
        for _ in range(reads):
            frame = source.read_frame()
            assert frame is None or len(frame) == FRAME_BYTES
        assert source.backlog_ms <= source.hard_limit_ms
    source.end_of_push()
    for _ in range(50):
        if source.read_frame() is None and source.ended:
            break


OFFER_LINES = BROADCAST_OFFER.split("\r\n")


@st.composite
def offers(draw: st.DrawFn) -> str:
    """A device offer: arbitrary text, or the GB28181 broadcast offer with lines damaged."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.text(max_size=300))
    lines = list(OFFER_LINES)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["drop", "replace", "mutate", "duplicate"]))
        if action == "drop":
            del lines[at]
        elif action == "duplicate":
            lines.insert(at, lines[at])
        elif action == "replace":
            lines[at] = draw(st.sampled_from([
                "m=audio 0 TCP/RTP/AVP 8", "m=audio 15062 RTP/AVP 8", "a=setup:passive",
                "a=setup:actpass", "a=sendrecv", "a=rtpmap:96 PS/90000", "m=audio 1 TCP/RTP/AVP 96",
                "y=99999999999", "y=abc", "c=IN IP6 ::1", "c=IN IP4 999.1.1.1", "a=rtpmap:8",
                "m=video 15062 TCP/RTP/AVP 96", "f=", "t=x y",
            ]))
        else:
            text = lines[at]
            cut = draw(st.integers(0, len(text)))
            lines[at] = text[:cut] + draw(st.text(max_size=8)) + text[cut:]
        if not lines:
            break
    return "\r\n".join(lines)


@settings(max_examples=budget(200), deadline=None)
@given(batch=st.lists(st.tuples(offers(), st.sampled_from(["call-1", "call-2"]),
                                st.booleans()), min_size=1, max_size=4))
def test_device_offers_get_an_answer_or_a_refusal_and_leak_nothing(
    batch: list[tuple[str, str, bool]]
) -> None:
    reactor = BusyPortsReactor()
    manager = SessionManager(reactor, PortPool(reactor, 30000, 30003))
    sources = SourceRegistry()
    sources.add(ToneSource("broadcast", "announce"))
    signalling = TalkSignalling(TalkControl(reactor, manager, sources),
                                advertise_ip="198.51.100.5", restrict_peer=True)
    for offer, call_id, release in batch:
        try:
            answer = signalling.prepare(call_id, offer, "broadcast", "announce")
        except GbTalkError:
            pass  # SdpError, SessionError, PortError: what the SIP stack turns into a 488/503
        else:
            assert "a=setup:passive" in answer
            assert any(s.state is SessionState.LISTENING for s in manager.sessions())
        if release:
            signalling.release(call_id)
        listening = sum(s.state is SessionState.LISTENING for s in manager.sessions())
        assert manager.pool.leased_count == listening
    for call_id in ("call-1", "call-2"):
        signalling.release(call_id)
    assert manager.sessions() == []
    assert manager.pool.leased_count == 0
    assert not reactor.getDelayedCalls()
