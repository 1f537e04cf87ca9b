"""The device-side media core: chunking-independence, loss accounting, PS/raw, WAV, garbage.

Also its voice (what a device says back), the header-only fast path agreeing with the full
parse, the timed reader's one-frame-per-read, and the Twisted adapters over in-memory
transports.  No wall-clock timing is asserted anywhere: arrival times are given numbers.
"""

from __future__ import annotations

import itertools
import math
import socket
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from gb28181talk.core.manager import SessionManager
from gb28181talk.core.params import SessionKey, SessionParams
from gb28181talk.core.ports import PortPool
from gb28181talk.device.figures import (
    SEQUENCE_WINDOW,
    Arrival,
    StreamAccount,
    account_arrivals,
    arrival_gaps,
)
from gb28181talk.device.media import Depth, DeviceMedia
from gb28181talk.device.protocol import (
    DeviceDatagramProtocol,
    DeviceMediaFactory,
    DeviceMediaProtocol,
)
from gb28181talk.device.timed import SO_TIMESTAMPNS, TimedReader, kernel_arrival
from gb28181talk.device.voice import DeviceVoice
from gb28181talk.errors import FramingError, MediaError, RtpError
from gb28181talk.media import g711
from gb28181talk.media.framing import Framing, frame
from gb28181talk.media.law import Law
from gb28181talk.media.payload import Packaging
from gb28181talk.media.rtp import RtpPacket
from gb28181talk.media.wav import read_wav
from gb28181talk.testing import BusyPortsReactor, FakeDevice, ListSource, RecordingSink

SSRC = 100000123


def tone(samples: int, frequency: float = 440.0) -> bytes:
    """PCM16 of a sine tone at 8 kHz."""
    return b"".join(
        struct.pack("<h", int(9000 * math.sin(2 * math.pi * frequency * n / 8000)))
        for n in range(samples)
    )


def rtp(sequence: int, ssrc: int = SSRC, payload: bytes = b"\xd5" * 160, pt: int = 8) -> bytes:
    """One packet's bytes, timestamp 160 a packet."""
    return RtpPacket(pt, sequence & 0xFFFF, sequence * 160 & 0xFFFFFFFF, ssrc, payload).encode()


def cut(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` split at the given offsets."""
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def hear(media: DeviceMedia, chunks: list[bytes], at: float = 1.0) -> DeviceMedia:
    """Feed every chunk at the same arrival time, then end the stream."""
    for chunk in chunks:
        media.receive(chunk, at)
    media.end_of_stream(at)
    return media


# --- chunking never matters --------------------------------------------------------------

sequences = st.lists(st.integers(0, 70000), min_size=1, max_size=40)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    seqs=sequences,
    framing=st.sampled_from([Framing.RFC4571, Framing.INTERLEAVED]),
    detect=st.booleans(),
    cuts=st.lists(st.integers(0, 10_000), max_size=30),
)
def test_any_chunking_gives_the_same_figures_and_audio(
    seqs: list[int], framing: Framing, detect: bool, cuts: list[int]
) -> None:
    payloads = [bytes([n % 256]) * 80 for n in range(len(seqs))]
    stream = b"".join(
        frame(rtp(seq, payload=payload), framing)
        for seq, payload in zip(seqs, payloads, strict=True)
    )
    whole = hear(DeviceMedia(framing=None if detect else framing), [stream])
    pieces = hear(DeviceMedia(framing=None if detect else framing), cut(stream, cuts))
    assert pieces.figures() == whole.figures()
    assert pieces.pcm16() == whole.pcm16() == g711.decode(Law.ALAW, b"".join(payloads))
    assert whole.figures().packets == len(seqs)
    assert whole.framing is framing


@given(count=st.integers(1, 30), first=st.integers(0, 65535),
       cuts=st.lists(st.integers(0, 10_000), max_size=30))
def test_unprefixed_raw_rtp_in_any_chunks_is_heard_whole(
    count: int, first: int, cuts: list[int]
) -> None:
    stream = b"".join(rtp(first + n) for n in range(count))
    media = hear(DeviceMedia(), cut(stream, cuts))
    assert media.framing is Framing.NONE
    figures = media.figures()
    assert (figures.packets, figures.lost, figures.duplicates) == (count, 0, 0)
    assert media.pcm16() == g711.decode(Law.ALAW, b"\xd5" * 160 * count)


@given(seqs=sequences, cuts=st.lists(st.integers(0, 10_000), max_size=30))
def test_header_only_and_timeline_agree_with_the_full_parse(
    seqs: list[int], cuts: list[int]
) -> None:
    stream = b"".join(frame(rtp(seq), Framing.RFC4571) for seq in seqs)
    chunks = cut(stream, cuts)
    full = hear(DeviceMedia(Depth.AUDIO), chunks)
    headers = hear(DeviceMedia(Depth.HEADERS), chunks)
    timeline = hear(DeviceMedia(Depth.HEADERS, timeline=True), chunks)
    assert headers.figures() == full.figures() == timeline.figures()
    assert [a.sequence for a in timeline.arrivals] == [seq & 0xFFFF for seq in seqs]
    counted = hear(DeviceMedia(Depth.BYTES), chunks)
    assert counted.stream_bytes == len(stream) == full.stream_bytes
    assert counted.figures().packets == 0


# --- loss, duplicates, reordering ----------------------------------------------------------


@st.composite
def extended_sequences(draw: st.DrawFn) -> list[int]:
    """Extended sequence numbers as a network delivers them: gaps, repeats, late ones, wraps."""
    start = draw(st.one_of(st.integers(0, 65535), st.integers(65500, 65535)))
    steps = draw(st.lists(st.integers(-40, 40), max_size=80))
    seqs = [start]
    highest = start
    for step in steps:
        seq = max(highest - SEQUENCE_WINDOW + 50, highest + step)
        seqs.append(seq)
        highest = max(highest, seq)
    return seqs


@given(seqs=extended_sequences())
def test_loss_duplicates_and_reordering_match_a_model(seqs: list[int]) -> None:
    account = StreamAccount()
    for n, seq in enumerate(seqs):
        account.add(seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, SSRC, 8, 172, n * 0.02)
    heard: set[int] = set()
    duplicates = reordered = 0
    highest = seqs[0]
    for seq in seqs:
        if seq in heard:
            duplicates += 1
        elif seq < highest:
            reordered += 1
        heard.add(seq)
        highest = max(highest, seq)
    expected = max(seqs) - min(seqs) + 1
    figures = account.figures()
    assert figures.packets == len(seqs)
    assert figures.expected == expected
    assert figures.lost == expected - len(heard)
    assert figures.duplicates == duplicates
    assert figures.reordered == reordered
    assert figures.ssrcs == (SSRC,)


def test_a_wrap_is_not_a_loss() -> None:
    account = StreamAccount()
    for n, seq in enumerate([65533, 65534, 65535, 0, 1, 2]):
        account.add(seq, n * 160, SSRC, 8, 172, n * 0.02)
    figures = account.figures()
    assert (figures.expected, figures.lost, figures.reordered, figures.duplicates) == (6, 0, 0, 0)


def test_a_new_ssrc_starts_a_new_run_and_both_are_listed() -> None:
    account = StreamAccount()
    for n, (ssrc, seq) in enumerate([(1, 10), (1, 11), (1, 13), (2, 500), (2, 501)]):
        account.add(seq, n * 160, ssrc, 8, 172, n * 0.02)
    figures = account.figures()
    assert figures.ssrcs == (1, 2)
    assert (figures.expected, figures.lost) == (4 + 2, 1)


def test_jitter_is_zero_for_a_stream_that_keeps_time_and_seen_for_one_that_does_not() -> None:
    steady = [Arrival(n * 0.02, n, n * 160, SSRC, 8, 172) for n in range(50)]
    figures = account_arrivals(steady)
    assert figures.gap_jitter_max_ms == pytest.approx(0, abs=1e-9)
    assert figures.jitter_ms == pytest.approx(0, abs=1e-9)
    late = [*steady[:10], Arrival(steady[10].at + 0.03, 10, 1600, SSRC, 8, 172)]
    gaps = arrival_gaps(late)
    assert gaps[-1].jitter_ms == pytest.approx(30)
    assert account_arrivals(late).jitter_ms == pytest.approx(30 / 16)


def test_a_window_counts_its_own_packets_and_follows_on_from_the_one_before() -> None:
    arrivals = [Arrival(float(n), n, n * 160, SSRC, 8, 172) for n in range(10) if n != 6]
    figures = account_arrivals(arrivals, since=5.0, until=8.0)
    assert figures.packets == 3  # 5, 7, 8
    assert figures.lost == 1  # 6, after the 4 just before the window
    assert len(arrival_gaps(arrivals, since=5.0, until=8.0)) == 3


# --- depacketizing, decoding, WAV ----------------------------------------------------------


@given(
    law=st.sampled_from(list(Law)),
    packaging=st.sampled_from(list(Packaging)),
    packet_ms=st.sampled_from([20, 40, 100]),
    seconds=st.integers(1, 3),
    cuts=st.lists(st.integers(0, 100_000), max_size=20),
)
def test_what_a_voice_says_the_core_hears_raw_or_ps(
    law: Law, packaging: Packaging, packet_ms: int, seconds: int, cuts: list[int]
) -> None:
    pcm = tone(8000 * seconds // 5)
    voice = DeviceVoice(SSRC, law, packaging=packaging, packet_ms=packet_ms)
    stream = voice.speak(pcm) + voice.flush()
    media = hear(DeviceMedia(keep_packets=True), cut(stream, cuts))
    assert media.pcm16() == g711.decode(law, g711.encode(law, pcm))
    assert media.g711()[0][0] is law
    figures = media.figures()
    assert figures.packets == voice.packets_sent and figures.lost == 0
    assert figures.payload_types == ((96,) if packaging is Packaging.PS else (law.payload_type,))
    ticks = (90 if packaging is Packaging.PS else 8) * packet_ms
    stamps = [p.timestamp for p in media.packets]
    assert all(b - a == ticks for a, b in itertools.pairwise(stamps[:-1]))
    assert figures.gaps == figures.packets - 1


def test_the_wav_written_decodes_back(tmp_path: Path) -> None:
    pcm = tone(1600)
    voice = DeviceVoice(SSRC, Law.ULAW)
    media = hear(DeviceMedia(), [voice.speak(pcm)])
    path = tmp_path / "heard.wav"
    media.write_wav(path)
    audio = read_wav(path)
    assert (audio.sample_rate, audio.channels, audio.encoding) == (8000, 1, "pcm16")
    assert audio.data == media.pcm16() == g711.decode(Law.ULAW, g711.encode(Law.ULAW, pcm))
    assert read_wav(media.wav_bytes()).data == audio.data
    assert media.audio_seconds == pytest.approx(0.2)


def test_rtcp_on_the_connection_is_skipped_and_counted() -> None:
    sender_report = struct.pack("!BBHI", 0x80, 200, 6, SSRC) + bytes(20)
    stream = b"".join(frame(p, Framing.RFC4571) for p in [rtp(1), sender_report, rtp(2)])
    for depth in (Depth.AUDIO, Depth.HEADERS):
        media = hear(DeviceMedia(depth), [stream])
        assert media.rtcp == 1 and media.figures().packets == 2 and media.invalid == 0


def test_a_payload_that_is_not_g711_is_counted_not_decoded() -> None:
    media = hear(DeviceMedia(), [frame(rtp(1, pt=18), Framing.RFC4571)])
    assert media.unsupported == 1 and media.pcm16() == b""
    assert media.figures().payload_types == (18,)


# --- garbage -------------------------------------------------------------------------------


@given(
    data=st.binary(max_size=600),
    cuts=st.lists(st.integers(0, 1000), max_size=10),
    depth=st.sampled_from(list(Depth)),
    framing=st.sampled_from([None, *Framing]),
    strict=st.booleans(),
)
def test_garbage_raises_only_media_errors(
    data: bytes, cuts: list[int], depth: Depth, framing: Framing | None, strict: bool
) -> None:
    media = DeviceMedia(depth, framing, strict=strict, timeline=True, keep_packets=True)
    try:
        for chunk in cut(data, cuts):
            media.receive(chunk, 0.0)
        media.end_of_stream(0.0)
    except FramingError:
        assert media.error is not None
        with pytest.raises(FramingError):
            media.receive(b"\x80" * 20, 0.0)
    except RtpError:
        assert strict
    media.figures()
    if depth is not Depth.BYTES:
        media.gaps()
    media.pcm16()
    media.wav_bytes()


@given(datagram=st.binary(max_size=300))
def test_a_garbage_datagram_is_counted_never_raised(datagram: bytes) -> None:
    media = DeviceMedia()
    media.receive_packet(datagram, 0.0)
    assert media.invalid + media.rtcp + media.figures().packets == 1
    with pytest.raises(MediaError):
        DeviceMedia(strict=True).receive_packet(b"\x00" * 12, 0.0)


# --- the timed reader ----------------------------------------------------------------------


@pytest.mark.parametrize("framing", [Framing.RFC4571, Framing.INTERLEAVED])
def test_a_timed_reader_reads_one_frame_per_read(framing: Framing) -> None:
    ours, theirs = socket.socketpair()
    try:
        theirs.setblocking(False)
        media = DeviceMedia(Depth.HEADERS, framing, timeline=True)
        reads: list[int] = []
        original = media.receive

        def counting(data: bytes, at: float) -> int:
            reads.append(len(data))
            return original(data, at)

        media.receive = counting  # type: ignore[method-assign]
        reader = TimedReader(theirs, media, clock=lambda: 7.0)
        ours.sendall(b"".join(frame(rtp(n), framing) for n in range(5)))
        assert reader.read() == 5 * (172 + (2 if framing is Framing.RFC4571 else 4))
        header = 2 if framing is Framing.RFC4571 else 4
        assert reads == [header, 172] * 5, "each packet: its length, then its body"
        assert [a.sequence for a in media.arrivals] == [0, 1, 2, 3, 4]
        assert {a.at for a in media.arrivals} == {7.0}
        assert not reader.closed
        ours.close()
        reader.read()
        assert reader.closed
    finally:
        ours.close()
        theirs.close()


def test_a_detecting_reader_is_told_how_much_completes_each_frame() -> None:
    media = DeviceMedia(Depth.HEADERS, timeline=True)
    stream = b"".join(frame(rtp(n), Framing.RFC4571) for n in range(3))
    reads = []
    while stream:
        wanted = media.wanted
        reads.append(wanted)
        media.receive(stream[:wanted], 0.0)
        stream = stream[wanted:]
    assert reads == [3, 171, 2, 172, 2, 172]
    assert len(media.arrivals) == 3
    assert DeviceMedia(Depth.BYTES).wanted == 0
    assert DeviceMedia(framing=Framing.NONE).wanted == 0


def test_the_kernel_stamp_is_read_from_the_ancillary_data() -> None:
    stamp = struct.pack("@qq", 1_700_000_000, 250_000_000)
    assert kernel_arrival([(socket.SOL_SOCKET, SO_TIMESTAMPNS, stamp)]) == 1_700_000_000.25
    assert kernel_arrival([]) is None


# --- the Twisted adapters ------------------------------------------------------------------


def test_the_protocol_hears_speaks_and_closes() -> None:
    clock = Clock()
    voice = DeviceVoice(777, Law.ALAW)
    device = DeviceMediaProtocol(clock, voice=voice)
    made = []
    device.made.addCallback(made.append)
    transport = StringTransport()
    device.makeConnection(transport)
    assert made == [device]
    waiting = device.next_data()
    clock.advance(3)
    device.dataReceived(frame(rtp(1), Framing.RFC4571))
    assert waiting.called
    assert device.media.arrivals == [] and device.media.figures().first_arrival == 3.0
    assert [p.sequence for p in device.packets()] == [1]
    assert device.audio() == g711.decode(Law.ALAW, b"\xd5" * 160)
    assert device.speak(tone(320)) == 2 * (2 + 172)
    heard = hear(DeviceMedia(keep_packets=True), [transport.value()])
    assert [p.ssrc for p in heard.packets] == [777, 777]
    device.dataReceived(b"\x00\x00garbage")
    assert isinstance(device.error, FramingError)
    device.connectionLost(Failure(ConnectionError("gone")))
    assert device.closed.called and device.close_reason is not None


def test_a_listening_device_takes_the_first_connection_only() -> None:
    factory = DeviceMediaFactory(lambda: DeviceMediaProtocol(Clock()))
    first = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 30000))
    assert first is not None
    assert factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 30001)) is None
    first.makeConnection(StringTransport())
    assert factory.accepted.called


def test_a_udp_device_hears_datagrams_and_answers_their_sender() -> None:
    clock = Clock()
    device = DeviceDatagramProtocol(clock, voice=DeviceVoice(5, Law.ULAW))
    sent: list[tuple[bytes, tuple[str, int]]] = []

    class Transport:
        def write(self, datagram: bytes, addr: tuple[str, int]) -> None:
            sent.append((datagram, addr))

    device.transport = Transport()  # type: ignore[assignment]
    for n in range(3):
        device.datagramReceived(rtp(n), ("127.0.0.1", 30002))
    assert device.media.figures().packets == 3
    assert device.speak(tone(160)) == 172
    assert [addr for _, addr in sent] == [("127.0.0.1", 30002)]
    assert sent[0][0][1] == 0x80, "PCMU (payload type 0), the first packet marked"


def test_a_fake_device_talks_back_through_its_voice() -> None:
    reactor = BusyPortsReactor()
    manager = SessionManager(reactor, PortPool(reactor, 30000, 30001))
    sink = RecordingSink()
    session = manager.start(
        SessionParams(key=SessionKey("__defaultVhost__", "live", "talk", SSRC), receive=True,
                      preroll_ms=0),
        ListSource.counting(20),
        sinks=[sink],
    )
    device = FakeDevice(voice=DeviceVoice(SSRC, Law.ALAW))
    assert device.connect(reactor, session.port)
    pcm = tone(800)
    device.speak(pcm)
    assert sink.pcm == g711.decode(Law.ALAW, g711.encode(Law.ALAW, pcm))
    for _ in range(5):
        reactor.advance(0.02)
    assert len(device.receive()) >= 5
    assert device.media.figures().lost == 0
    session.stop()
