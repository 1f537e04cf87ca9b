"""RTP over TCP framing: known answers, detection, caps, and chunking-independence properties."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gb28181talk.errors import FramingError
from gb28181talk.media.framing import (
    DEFAULT_MAX_FRAME,
    FrameDecoder,
    Framing,
    frame,
    frame_interleaved,
    frame_rfc4571,
)
from gb28181talk.media.rtp import RtpPacket, parse_rtp

SSRC = 100000123


def rtp(sequence: int, payload: bytes = b"\xd5" * 160, ssrc: int = SSRC) -> bytes:
    """One PCMA packet's bytes."""
    return RtpPacket(8, sequence & 0xFFFF, sequence * 160, ssrc, payload).encode()


def feed_chunks(decoder: FrameDecoder, data: bytes, cuts: list[int]) -> list[bytes]:
    """Feed data split at the given offsets; check the buffer cap after every chunk."""
    packets: list[bytes] = []
    start = 0
    for end in [*sorted(cuts), len(data)]:
        packets += decoder.feed(data[start:end])
        assert decoder.buffered <= decoder.max_frame + 4
        start = end
    return packets


# --- framing one packet ---------------------------------------------------------------------


def test_frame_rfc4571_known_answer() -> None:
    packet = rtp(1)
    assert frame_rfc4571(packet) == b"\x00\xac" + packet  # 172 = 12 header + 160 payload
    assert frame(packet, Framing.RFC4571) == b"\x00\xac" + packet
    assert frame_rfc4571(b"x" * 65535)[:2] == b"\xff\xff"


def test_frame_interleaved_known_answer() -> None:
    packet = rtp(1)
    assert frame_interleaved(packet) == b"$\x00\x00\xac" + packet
    assert frame_interleaved(packet, 2) == b"$\x02\x00\xac" + packet
    assert frame(packet, Framing.INTERLEAVED, channel=1) == b"$\x01\x00\xac" + packet


def test_frame_none_is_the_packet() -> None:
    packet = rtp(1)
    assert frame(packet, Framing.NONE) == packet
    assert frame(bytearray(packet), Framing.NONE) == packet


@pytest.mark.parametrize("size", [0, 65536])
def test_frame_rejects_sizes(size: int) -> None:
    with pytest.raises(FramingError, match=f"{size}-byte packet"):
        frame_rfc4571(bytes(size))
    with pytest.raises(FramingError, match=f"{size}-byte packet"):
        frame_interleaved(bytes(size))


@pytest.mark.parametrize("channel", [-1, 256])
def test_frame_interleaved_rejects_channel(channel: int) -> None:
    with pytest.raises(FramingError, match="channel"):
        frame_interleaved(rtp(1), channel)


def test_framing_values() -> None:
    assert Framing("rfc4571") is Framing.RFC4571
    assert Framing("interleaved") is Framing.INTERLEAVED
    assert Framing("none") is Framing.NONE
    assert DEFAULT_MAX_FRAME == 16384


# --- decoding ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(Framing))
def test_decode_byte_by_byte_and_detect(mode: Framing) -> None:
    packets = [rtp(seq) for seq in range(65533, 65540)]  # sequence wraps inside the stream
    stream = b"".join(frame(p, mode) for p in packets)
    decoder = FrameDecoder()
    out: list[bytes] = []
    for index in range(len(stream)):
        out += decoder.feed(stream[index : index + 1])
    assert decoder.mode is mode
    if mode is Framing.NONE:
        assert out == packets[:-1]  # the last one waits for a next header or flush()
        assert decoder.buffered == len(packets[-1])
        out += decoder.flush()
    assert out == packets
    assert decoder.buffered == 0
    assert [parse_rtp(p).sequence for p in out] == [65533, 65534, 65535, 0, 1, 2, 3]


def test_detection_waits_for_enough_bytes() -> None:
    decoder = FrameDecoder()
    assert decoder.mode is None
    assert decoder.feed(b"") == []
    assert decoder.feed(b"$") == []
    assert decoder.feed(b"\x00\x00") == []
    assert decoder.feed(b"\xac") == []
    assert decoder.mode is None
    assert decoder.feed(b"\x80") == []  # fifth byte: RTP v2 -> interleaved
    assert decoder.mode is Framing.INTERLEAVED
    decoder = FrameDecoder()
    assert decoder.feed(b"\x00\xac") == []
    assert decoder.mode is None
    decoder.feed(b"\x80")
    assert decoder.mode is Framing.RFC4571


def test_detect_rfc4571_length_starting_with_dollar() -> None:
    """0x24 as the high byte of an RFC 4571 length 9216..9471: v2 at byte 2 says RFC 4571."""
    packets = [rtp(1, b"\x55" * (0x2400 - 12)), rtp(2, b"\x55" * 300)]
    stream = b"".join(frame_rfc4571(p) for p in packets)
    assert stream[0] == 0x24
    decoder = FrameDecoder()
    assert feed_chunks(decoder, stream, [1, 3, 5, 7]) == packets
    assert decoder.mode is Framing.RFC4571


def test_detect_prefers_rfc4571_when_both_fit() -> None:
    """With a cap >= 32768 a header can read both ways; RFC 4571 is preferred (documented)."""
    head = b"$\x00\x80\x80\x80"  # RFC 4571 length 0x2400 then v2; or '$', ch 0, len 0x8080, v2
    decoder = FrameDecoder(max_frame=65535)
    decoder.feed(head)
    assert decoder.mode is Framing.RFC4571
    # With the default cap the interleaved reading (length 32896) is impossible anyway.
    decoder = FrameDecoder()
    decoder.feed(head)
    assert decoder.mode is Framing.RFC4571


def test_detect_neither_reading_fits() -> None:
    """v2 at bytes 2 and 4 but a cap below 9216: too long as RFC 4571 and as interleaved."""
    decoder = FrameDecoder(max_frame=9000)
    with pytest.raises(FramingError, match="first bytes 24 00 80 80 80"):
        decoder.feed(b"$\x00\x80\x80\x80")


def test_forced_mode_is_not_detected() -> None:
    packets = [rtp(1), rtp(2)]
    decoder = FrameDecoder(Framing.RFC4571)
    assert decoder.mode is Framing.RFC4571
    assert decoder.feed(b"".join(frame_rfc4571(p) for p in packets)) == packets


def test_interleaved_drops_and_counts_odd_channels() -> None:
    rtcp = b"\x81\xc9\x00\x01" + bytes(4)  # a receiver report header (RTCP, PT 201)
    stream = (
        frame_interleaved(rtp(1), 0)
        + frame_interleaved(rtcp, 1)
        + frame_interleaved(rtp(2), 2)
        + frame_interleaved(rtcp, 3)
        + frame_interleaved(rtp(3), 0)
    )
    decoder = FrameDecoder()
    assert decoder.feed(stream) == [rtp(1), rtp(2), rtp(3)]
    assert decoder.rtcp_frames == 2
    assert decoder.buffered == 0


def test_raw_split_needs_same_ssrc_and_next_sequence() -> None:
    """Inside a payload, a v2 byte + SSRC with the wrong sequence is not a boundary."""
    fake_header = RtpPacket(8, 7, 0, SSRC).encode()  # sequence 7, but 2 is what comes next
    first = rtp(1, b"\x11" * 20 + fake_header + b"\x22" * 20)
    second = rtp(2)
    other = rtp(3, ssrc=SSRC + 1)  # a next sequence but a different SSRC
    third = rtp(3)
    decoder = FrameDecoder(Framing.NONE)
    assert decoder.feed(first + second + other[:12]) == [first]
    assert decoder.feed(other[12:] + third) == [second + other]
    assert decoder.flush() == [third]


def test_raw_packet_size_limit() -> None:
    """A raw packet may be max_frame - 8 bytes long; the buffer stays within max_frame + 4."""
    cap = 200
    fits = rtp(1, bytes(cap - 8 - 12))
    too_long = rtp(2, bytes(cap - 8 - 12 + 1))
    decoder = FrameDecoder(Framing.NONE, max_frame=cap)
    assert feed_chunks(decoder, fits + too_long[:11], list(range(len(fits) + 11))) == []
    assert decoder.buffered == cap + 3
    assert decoder.feed(too_long[11:12]) == [fits]
    rest = too_long[12:] + rtp(3)
    for index in range(len(rest)):
        try:
            assert decoder.feed(rest[index : index + 1]) == []
        except FramingError as error:
            assert "at most max_frame - 8 = 192 bytes" in str(error)
            break
        assert decoder.buffered <= cap + 3
    # It fails as soon as every place the next header could start (up to 192) has been seen.
    assert 12 + index + 1 == cap + 4


def test_raw_flush_without_a_packet() -> None:
    decoder = FrameDecoder(Framing.NONE)
    assert decoder.flush() == []
    decoder.feed(rtp(1)[:5])
    assert decoder.flush() == []  # a partial header is not a packet
    assert decoder.buffered == 0


class CountingBuffer(bytearray):
    """The decoder's buffer, counting its work: compactions and the bytes ``find`` looked at.

    Work counted, not time taken, so a linearity check cannot fail on a loaded machine.
    """

    def __init__(self) -> None:
        super().__init__()
        self.compactions = 0
        self.scanned = 0

    def __delitem__(self, key: Any) -> None:
        self.compactions += 1
        super().__delitem__(key)

    def find(self, sub: Any, start: Any = 0, end: Any = None) -> int:  # type: ignore[override]
        hit = super().find(sub, start, end)
        stop = len(self) if end is None else min(end, len(self))
        self.scanned += hit + len(sub) - start if hit >= 0 else max(0, stop - start)
        return hit


def counting(decoder: FrameDecoder) -> CountingBuffer:
    """Give ``decoder`` an empty counting buffer (before its first feed) and return it."""
    assert decoder.buffered == 0
    buffer = decoder._buffer = CountingBuffer()
    return buffer


def test_many_small_frames_in_one_chunk_is_linear() -> None:
    """Compaction happens once per feed; raw RTP is scanned at most once per byte."""
    packet = rtp(1, b"\x00" * 20)
    for mode in Framing:
        count = 50_000
        stream = b"".join(frame(rtp(n, b"\x00" * 20), mode) for n in range(count))
        decoder = FrameDecoder(mode)
        work = counting(decoder)
        out = decoder.feed(stream)
        assert work.compactions == 1, "one compaction for the one feed"
        assert work.scanned <= len(stream), f"{work.scanned} bytes scanned for {len(stream)}"
        assert len(out) == (count - 1 if mode is Framing.NONE else count)
        assert out[1] == rtp(1, b"\x00" * 20) == packet


def test_raw_byte_by_byte_large_packet_is_linear() -> None:
    """Scanning resumes where it stopped, so 1-byte chunks do not rescan the packet."""
    big = rtp(1, bytes(16000))
    decoder = FrameDecoder(Framing.NONE)
    work = counting(decoder)
    stream = big + rtp(2)
    out: list[bytes] = []
    for index in range(len(stream)):
        out += decoder.feed(stream[index : index + 1])
    assert out == [big]
    # Rescanning the held packet on every byte would look at ~len**2 / 2 = 131 million bytes.
    assert work.scanned <= 8 * len(stream), f"{work.scanned} bytes scanned for {len(stream)}"
    assert work.compactions <= 1, "the packet is cut from the buffer once"


# --- garbage -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "max_frame", "data", "message"),
    [
        (None, DEFAULT_MAX_FRAME, b"GET / HTTP/1.1\r\n", r"first bytes 47 45 54 20 2f"),
        (None, DEFAULT_MAX_FRAME, b"\x00\x00\x80", r"first bytes 00 00 80"),
        (None, DEFAULT_MAX_FRAME, b"\x50\x00\x80", "length 1..16384"),
        (None, 100, b"$\x00\x00\xac\x80", r"first bytes 24 00 00 ac 80"),
        (Framing.RFC4571, 100, b"\x00\xac", r"length 172 .* outside 1..100 \(max_frame\)"),
        (Framing.RFC4571, 100, b"\x00\x00", "length 0 at stream offset 0"),
        (Framing.INTERLEAVED, 100, b"$\x00\x00\xac", r"length 172 on channel 0 .* 1..100"),
        (Framing.INTERLEAVED, 100, b"$\x01\x00\x00", "length 0 on channel 1"),
        (Framing.INTERLEAVED, 100, b"X", r"starts with 0x58, not '\$'"),
        (Framing.NONE, 100, b"\x00" * 12, "does not start an RTP version 2 header"),
    ],
)
def test_garbage_raises_and_kills(
    mode: Framing | None, max_frame: int, data: bytes, message: str
) -> None:
    decoder = FrameDecoder(mode, max_frame=max_frame)
    with pytest.raises(FramingError, match=message) as first:
        decoder.feed(data)
    assert decoder.error is first.value
    assert decoder.buffered == 0
    for more in (rtp(1), frame_rfc4571(rtp(1)), b"x"):
        with pytest.raises(FramingError) as again:
            decoder.feed(more)
        assert again.value is first.value
    with pytest.raises(FramingError):
        decoder.flush()


def test_interleaved_out_of_sync_after_good_frames() -> None:
    decoder = FrameDecoder()
    good = frame_interleaved(rtp(1))
    assert decoder.feed(good) == [rtp(1)]
    with pytest.raises(FramingError, match=f"stream offset {len(good)} starts with 0x00"):
        decoder.feed(b"\x00\x00")


@pytest.mark.parametrize("max_frame", [0, 19, 65536, "big"])
def test_max_frame_range(max_frame: object) -> None:
    with pytest.raises(FramingError, match="max_frame"):
        FrameDecoder(max_frame=max_frame)  # type: ignore[arg-type]


# --- properties ----------------------------------------------------------------------------

uint32 = st.integers(0, 2**32 - 1)
any_packet = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 65535),
    timestamp=uint32,
    ssrc=uint32,
    payload=st.binary(max_size=400),
    marker=st.booleans(),
    csrcs=st.lists(uint32, max_size=3).map(tuple),
    extension=st.none() | st.tuples(st.integers(0, 65535), st.sampled_from([b"", b"abcd"])),
    padding=st.integers(0, 8),
).map(RtpPacket.encode)


@st.composite
def raw_stream_packets(draw: st.DrawFn) -> list[bytes]:
    """Packets as raw-RTP senders produce them: one SSRC, consecutive sequence numbers.

    Payload bytes stay below 0x80 so no payload byte can look like the start of a v2 header:
    a raw stream whose payload mimics the next header is ambiguous by nature.
    """
    ssrc = draw(uint32)
    first = draw(st.integers(0, 65535))
    payloads = draw(st.lists(st.binary(max_size=400).map(lambda b: bytes(x & 0x7F for x in b)),
                             min_size=1, max_size=8))
    return [
        RtpPacket(8, (first + index) & 0xFFFF, index * 160, ssrc, payload,
                  marker=index == 0).encode()
        for index, payload in enumerate(payloads)
    ]


@st.composite
def framed_streams(draw: st.DrawFn) -> tuple[Framing, list[bytes], bytes, int]:
    """(mode, packets expected out, the framed stream, odd-channel frames in it)."""
    mode = draw(st.sampled_from(list(Framing)))
    if mode is Framing.NONE:
        packets = draw(raw_stream_packets())
        return mode, packets, b"".join(packets), 0
    packets = draw(st.lists(any_packet, min_size=1, max_size=8))
    if mode is Framing.RFC4571:
        return mode, packets, b"".join(frame_rfc4571(p) for p in packets), 0
    parts = []
    rtcp = 0
    for packet in packets:
        parts.append(frame_interleaved(packet, draw(st.sampled_from([0, 2, 4]))))
        if draw(st.booleans()):
            parts.append(frame_interleaved(draw(st.binary(min_size=1, max_size=40)),
                                           draw(st.sampled_from([1, 3]))))
            rtcp += 1
    return mode, packets, b"".join(parts), rtcp


def cut_points(data: st.DataObject, size: int) -> list[int]:
    """Split offsets: anything from none to every byte (1-byte chunks)."""
    if size and data.draw(st.booleans(), label="byte by byte"):
        return list(range(1, size))
    return data.draw(st.lists(st.integers(0, size), max_size=40), label="cuts")


@given(framed_streams(), st.booleans(), st.data())
def test_round_trip_any_chunking(
    stream: tuple[Framing, list[bytes], bytes, int], detect: bool, data: st.DataObject
) -> None:
    mode, packets, wire, rtcp = stream
    whole = FrameDecoder(None if detect else mode)
    one_piece = whole.feed(wire) + whole.flush()
    assert one_piece == packets
    assert whole.mode is mode
    assert whole.rtcp_frames == rtcp
    chunked = FrameDecoder(None if detect else mode)
    out = feed_chunks(chunked, wire, cut_points(data, len(wire)))
    assert out + chunked.flush() == packets
    assert chunked.mode is mode
    assert chunked.rtcp_frames == rtcp


@st.composite
def mangled_streams(draw: st.DrawFn) -> bytes:
    """A valid framed stream with bytes flipped, inserted or removed, or plain noise."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=600))
    _, _, wire, _ = draw(framed_streams())
    data = bytearray(wire)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        index = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "insert", "delete"]))
        if action == "flip":
            data[index] = draw(st.integers(0, 255))
        elif action == "insert":
            data[index:index] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[index : index + draw(st.integers(1, 8))]
    return bytes(data)


@given(
    mangled_streams(),
    st.sampled_from([None, *Framing]),
    st.sampled_from([20, 64, 200, 1000, DEFAULT_MAX_FRAME, 65535]),
    st.data(),
)
def test_arbitrary_bytes_any_chunking(
    wire: bytes, mode: Framing | None, max_frame: int, data: st.DataObject
) -> None:
    """Only FramingError, a capped buffer, and the same outcome however the bytes are split."""
    try:
        expected: list[bytes] | None = FrameDecoder(mode, max_frame).feed(wire)
    except FramingError:
        expected = None
    decoder = FrameDecoder(mode, max_frame)
    try:
        out = feed_chunks(decoder, wire, cut_points(data, len(wire)))
    except FramingError as error:
        assert expected is None, "chunked feeding failed where one piece did not"
        assert decoder.error is error
        assert decoder.buffered == 0
        return
    assert out == expected
    assert decoder.buffered <= max_frame + 4
