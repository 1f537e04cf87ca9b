"""RTP packets, serial arithmetic and the G.711 packetizer: known answers and properties."""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gb28181talk.errors import RtpError
from gb28181talk.media.framing import frame_rfc4571
from gb28181talk.media.rtp import (
    RTP_HEADER,
    Packetizer,
    RtpPacket,
    pack_header_into,
    parse_rtp,
    peek_ssrc,
    seq_diff,
    ts_diff,
)

# A packet with every optional part, written out field by field.
KNOWN_PACKET = bytes.fromhex(
    "b2"  # V=2 (10), P=1, X=1, CC=2           -> 1011 0010
    "88"  # M=1, PT=8 (PCMA)                   -> 1000 1000
    "1234"  # sequence number 0x1234 = 4660
    "deadbeef"  # timestamp 0xDEADBEEF
    "05f5e17b"  # SSRC 100000123 (the GB28181 y= value 0100000123)
    "11111111"  # CSRC 1
    "22222222"  # CSRC 2
    "bede"  # extension profile 0xBEDE
    "0001"  # extension length: 1 32-bit word
    "01020304"  # extension data
    "d5d5d5"  # payload: three A-law silence bytes
    "000003"  # padding: two zero bytes and the count 3 (the count byte included)
)
KNOWN_VALUE = RtpPacket(
    payload_type=8,
    sequence=0x1234,
    timestamp=0xDEADBEEF,
    ssrc=100000123,
    payload=b"\xd5\xd5\xd5",
    marker=True,
    csrcs=(0x11111111, 0x22222222),
    extension=(0xBEDE, b"\x01\x02\x03\x04"),
    padding=3,
)

# The plainest packet: no marker, no CSRC, no extension, no padding.
PLAIN_PACKET = bytes.fromhex(
    "80"  # V=2, P=0, X=0, CC=0
    "00"  # M=0, PT=0 (PCMU)
    "ffff"  # sequence 65535
    "00000000"  # timestamp 0
    "00000001"  # SSRC 1
    "7f"  # payload: one µ-law byte
)


def test_parse_known_packet() -> None:
    assert parse_rtp(KNOWN_PACKET) == KNOWN_VALUE
    assert parse_rtp(bytearray(KNOWN_PACKET)) == KNOWN_VALUE
    assert parse_rtp(memoryview(KNOWN_PACKET)) == KNOWN_VALUE


def test_encode_known_packet() -> None:
    assert KNOWN_VALUE.encode() == KNOWN_PACKET
    assert len(KNOWN_PACKET) == 34


def test_plain_packet_both_ways() -> None:
    value = RtpPacket(payload_type=0, sequence=65535, timestamp=0, ssrc=1, payload=b"\x7f")
    assert value.encode() == PLAIN_PACKET
    assert parse_rtp(PLAIN_PACKET) == value


def test_header_only_packet() -> None:
    assert parse_rtp(PLAIN_PACKET[:12]).payload == b""


def test_padding_only_after_header() -> None:
    """Padding may take up every byte after the header."""
    packet = bytes([0xA0]) + PLAIN_PACKET[1:12] + b"\x00\x00\x03"
    parsed = parse_rtp(packet)
    assert parsed.payload == b""
    assert parsed.padding == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "shorter than the 12-byte"),
        (PLAIN_PACKET[:11], "shorter than the 12-byte"),
        (b"\x40" + PLAIN_PACKET[1:], "version 1"),
        (b"\x00" + PLAIN_PACKET[1:], "version 0"),
        (b"\xc0" + PLAIN_PACKET[1:], "version 3"),
        (KNOWN_PACKET[:19], "2 CSRCs need 20"),
        (KNOWN_PACKET[:23], "extension header needs 24"),
        (KNOWN_PACKET[:27], "extension needs 28"),
        (b"\xa0" + PLAIN_PACKET[1:12] + b"\x00", r"padding count \(last byte\) is 0"),
        (b"\xa0" + PLAIN_PACKET[1:12] + b"\x00\x05", "padding count 5 exceeds the 2 bytes"),
        # The padding count is the SSRC's last byte (1) when nothing follows the header.
        (b"\xa0" + PLAIN_PACKET[1:12], "padding count 1 exceeds the 0 bytes"),
    ],
)
def test_parse_rejects(data: bytes, message: str) -> None:
    with pytest.raises(RtpError, match=message):
        parse_rtp(data)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"payload_type": 128}, "payload type"),
        ({"payload_type": -1}, "payload type"),
        ({"sequence": 65536}, "sequence"),
        ({"timestamp": 2**32}, "timestamp"),
        ({"ssrc": -1}, "SSRC"),
        ({"ssrc": 1.5}, "SSRC"),
        ({"csrcs": tuple(range(16))}, "at most 15 CSRCs"),
        ({"csrcs": (2**32,)}, "CSRC"),
        ({"extension": (65536, b"")}, "extension profile"),
        ({"extension": (1, b"abc")}, "multiple of 4"),
        ({"padding": 256}, "padding"),
        ({"padding": -1}, "padding"),
    ],
)
def test_encode_rejects(fields: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"payload_type": 8, "sequence": 0, "timestamp": 0, "ssrc": 0}
    base.update(fields)
    with pytest.raises(RtpError, match=message):
        RtpPacket(**base).encode()  # type: ignore[arg-type]


def test_peek_ssrc() -> None:
    assert peek_ssrc(KNOWN_PACKET) == 100000123
    assert peek_ssrc(memoryview(PLAIN_PACKET)) == 1
    with pytest.raises(RtpError, match="shorter"):
        peek_ssrc(KNOWN_PACKET[:11])
    with pytest.raises(RtpError, match="version 1"):
        peek_ssrc(b"\x40" + KNOWN_PACKET[1:])


def test_seq_diff_wraps() -> None:
    assert seq_diff(0, 65535) == 1
    assert seq_diff(65535, 0) == -1
    assert seq_diff(5, 3) == 2
    assert seq_diff(3, 5) == -2
    assert seq_diff(32767, 0) == 32767
    assert seq_diff(32768, 0) == -32768
    assert seq_diff(100, 100) == 0


def test_ts_diff_wraps() -> None:
    assert ts_diff(0, 2**32 - 1) == 1
    assert ts_diff(2**32 - 1, 0) == -1
    assert ts_diff(160, 2**32 - 160) == 320
    assert ts_diff(2**31 - 1, 0) == 2**31 - 1
    assert ts_diff(2**31, 0) == -(2**31)


@given(st.integers(0, 65535), st.integers(0, 65535))
def test_seq_diff_property(a: int, b: int) -> None:
    diff = seq_diff(a, b)
    assert -32768 <= diff <= 32767
    assert (b + diff) % 65536 == a


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_ts_diff_property(a: int, b: int) -> None:
    diff = ts_diff(a, b)
    assert -(2**31) <= diff < 2**31
    assert (b + diff) % 2**32 == a


def test_pack_header_into_matches_encode() -> None:
    buf = bytearray(b"\xee" * 20)
    pack_header_into(buf, 4, True, 8, 0x1234, 0xDEADBEEF, 100000123)
    expected = RtpPacket(8, 0x1234, 0xDEADBEEF, 100000123, marker=True).encode()
    assert bytes(buf[4:16]) == expected
    assert buf[:4] == b"\xee" * 4
    assert buf[16:] == b"\xee" * 4
    assert RTP_HEADER.size == 12


@pytest.mark.parametrize(
    "args",
    [
        (bytearray(11), 0, False, 8, 0, 0, 0),  # buffer too short
        (bytearray(12), 1, False, 8, 0, 0, 0),  # offset leaves too little room
        (bytearray(12), 0, False, 128, 0, 0, 0),
        (bytearray(12), 0, False, 8, 65536, 0, 0),
        (bytearray(12), 0, False, 8, 0, 2**32, 0),
        (bytearray(12), 0, False, 8, 0, 0, -1),
    ],
)
def test_pack_header_into_rejects(args: tuple) -> None:  # type: ignore[type-arg]
    with pytest.raises(RtpError):
        pack_header_into(*args)


uint32 = st.integers(0, 2**32 - 1)
rtp_packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 65535),
    timestamp=uint32,
    ssrc=uint32,
    payload=st.binary(max_size=300),
    marker=st.booleans(),
    csrcs=st.lists(uint32, max_size=15).map(tuple),
    extension=st.none()
    | st.tuples(st.integers(0, 65535), st.binary(max_size=40).map(lambda b: b[: len(b) // 4 * 4])),
    padding=st.integers(0, 255),
)


@given(rtp_packets)
def test_encode_parse_round_trip(packet: RtpPacket) -> None:
    wire = packet.encode()
    assert parse_rtp(wire) == packet
    assert peek_ssrc(wire) == packet.ssrc


@given(st.binary(max_size=200))
def test_parse_arbitrary_bytes_raises_only_rtp_error(data: bytes) -> None:
    try:
        packet = parse_rtp(data)
    except RtpError:
        return
    # Whatever parses re-encodes to the same bytes except for the padding's filler bytes.
    wire = packet.encode()
    assert len(wire) == len(data)
    assert wire[: len(wire) - packet.padding] == data[: len(data) - packet.padding]


@given(rtp_packets, st.integers(0, 16))
def test_parse_truncated_raises_rtp_error(packet: RtpPacket, cut: int) -> None:
    wire = packet.encode()
    with contextlib.suppress(RtpError):
        parse_rtp(wire[: max(0, len(wire) - cut)])


# --- Packetizer ---------------------------------------------------------------------------

ONE_SECOND = bytes(range(256)) * 31 + bytes(64)  # 8000 bytes of G.711, 1 s at 8 kHz


@pytest.mark.parametrize(
    ("packet_ms", "samples", "whole", "remainder"),
    [(20, 160, 50, 0), (40, 320, 25, 0), (100, 800, 10, 0), (180, 1440, 5, 800)],
)
def test_packetizer_one_second(packet_ms: int, samples: int, whole: int, remainder: int) -> None:
    assert len(ONE_SECOND) == 8000
    packetizer = Packetizer(ssrc=100000123, payload_type=8, packet_ms=packet_ms,
                            first_sequence=1000, first_timestamp=5000)
    assert packetizer.samples_per_packet == samples
    packets = packetizer.push(ONE_SECOND)
    assert len(packets) == whole
    assert packetizer.buffered == remainder
    tail = packetizer.flush()
    assert len(tail) == (1 if remainder else 0)
    assert packetizer.flush() == []
    packets += tail
    assert b"".join(p.payload for p in packets) == ONE_SECOND
    for index, packet in enumerate(packets):
        assert packet.sequence == 1000 + index
        assert packet.timestamp == 5000 + index * samples
        assert packet.marker == (index == 0)
        assert packet.ssrc == 100000123
        assert packet.payload_type == 8
    assert [len(p.payload) for p in packets[:whole]] == [samples] * whole
    if remainder:
        assert len(packets[-1].payload) == remainder
    assert packetizer.next_sequence == 1000 + len(packets)
    assert packetizer.next_timestamp == 5000 + 8000


def test_packetizer_small_pushes_keep_remainder() -> None:
    packetizer = Packetizer(ssrc=1, payload_type=8)
    assert packetizer.push(b"\x01" * 100) == []
    assert packetizer.buffered == 100
    packets = packetizer.push(b"\x02" * 100)
    assert len(packets) == 1
    assert packets[0].payload == b"\x01" * 100 + b"\x02" * 60
    assert packetizer.buffered == 40
    assert packetizer.push(b"") == []


def test_packetizer_wraps_sequence_and_timestamp() -> None:
    packetizer = Packetizer(ssrc=7, payload_type=0, first_sequence=65534,
                            first_timestamp=2**32 - 320)
    packets = packetizer.push(bytes(160 * 4))
    assert [p.sequence for p in packets] == [65534, 65535, 0, 1]
    assert [p.timestamp for p in packets] == [2**32 - 320, 2**32 - 160, 0, 160]
    for earlier, later in itertools.pairwise(packets):
        assert seq_diff(later.sequence, earlier.sequence) == 1
        assert ts_diff(later.timestamp, earlier.timestamp) == 160


def test_packetizer_skip_marks_talk_spurt() -> None:
    packetizer = Packetizer(ssrc=1, payload_type=8)
    first = packetizer.push(bytes(160 + 100))  # one packet, 100 samples held
    packetizer.skip(800)  # 100 ms of silence; the held 100 samples are dropped
    assert packetizer.buffered == 0
    after = packetizer.push(bytes(160))
    assert [p.marker for p in first + after] == [True, True]
    assert after[0].sequence == 1
    assert after[0].timestamp == 160 + 100 + 800
    assert packetizer.push(bytes(160))[0].marker is False


def test_packetizer_flush_then_continue() -> None:
    packetizer = Packetizer(ssrc=1, payload_type=8)
    (whole,) = packetizer.push(bytes(200))
    (short,) = packetizer.flush()
    assert (len(whole.payload), len(short.payload)) == (160, 40)
    assert short.timestamp == 160
    (following,) = packetizer.push(bytes(160))
    assert following.timestamp == 200
    assert following.sequence == 2
    assert following.marker is False


@pytest.mark.parametrize("packet_ms", [0, 10, 15, 30, 190, 200, -20, 20.0, "20", True])
def test_packetizer_rejects_packet_ms(packet_ms: object) -> None:
    with pytest.raises(RtpError, match="20 to 180 ms"):
        Packetizer(ssrc=1, payload_type=8, packet_ms=packet_ms)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ssrc": 2**32},
        {"payload_type": 128},
        {"first_sequence": 65536},
        {"first_timestamp": -1},
        {"clock_rate": 0},
        {"clock_rate": 8001},
    ],
)
def test_packetizer_rejects_fields(kwargs: dict[str, int]) -> None:
    args = {"ssrc": 1, "payload_type": 8} | kwargs
    with pytest.raises(RtpError):
        Packetizer(**args)


def test_packetizer_rejects_negative_skip() -> None:
    with pytest.raises(RtpError, match="skip"):
        Packetizer(ssrc=1, payload_type=8).skip(-1)


operations = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(0, 700)),
        st.tuples(st.just("skip"), st.integers(0, 2000)),
        st.tuples(st.just("flush"), st.just(0)),
    ),
    max_size=30,
)


@given(
    st.sampled_from(range(20, 181, 20)),
    st.integers(0, 65535),
    st.integers(0, 2**32 - 1),
    operations,
)
def test_packetizer_timeline(packet_ms: int, first_seq: int, first_ts: int, ops: list) -> None:  # type: ignore[type-arg]
    """Timestamps follow every sample pushed or skipped; sequences step by 1; markers at spurts."""
    packetizer = Packetizer(ssrc=9, payload_type=8, packet_ms=packet_ms,
                            first_sequence=first_seq, first_timestamp=first_ts)
    position = 0  # samples of the time line handed in so far (pushed or skipped)
    held: list[int] = []  # time line position of each held sample
    spurt = True
    count = 0
    for op, amount in ops:
        if op == "push":
            held += range(position, position + amount)
            position += amount
            packets = packetizer.push(bytes(amount))
        elif op == "skip":
            packetizer.skip(amount)
            position += amount
            held = []
            spurt = True
            packets = []
        else:
            packets = packetizer.flush()
        for packet in packets:
            assert packet.sequence == (first_seq + count) % 65536
            assert packet.timestamp == (first_ts + held[0]) % 2**32
            assert packet.marker == spurt
            assert 0 < len(packet.payload) <= packetizer.samples_per_packet
            if op == "push":
                assert len(packet.payload) == packetizer.samples_per_packet
            held = held[len(packet.payload):]
            spurt = False
            count += 1
        assert packetizer.buffered == len(held)
        assert packetizer.buffered < packetizer.samples_per_packet
    assert packetizer.next_timestamp == (first_ts + position - len(held)) % 2**32


# --- the sender's fast path --------------------------------------------------------------

fast_steps = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, 1500), st.sampled_from([160, 320, 1800, 3600]),
                  st.booleans()),
        st.tuples(st.just("drop"), st.integers(0, 1500), st.sampled_from([160, 1800]),
                  st.booleans()),
        st.tuples(st.just("skip"), st.just(0), st.sampled_from([160, 1800]), st.just(False)),
        st.tuples(st.just("push"), st.integers(0, 400), st.just(0), st.just(False)),
    ),
    max_size=40,
)


@given(
    ssrc=st.integers(0, 2**32 - 1),
    payload_type=st.integers(0, 127),
    clock_rate=st.sampled_from([8000, 90_000]),
    first_seq=st.integers(0, 65535),
    first_ts=st.integers(0, 2**32 - 1),
    steps=fast_steps,
)
def test_fast_path_headers_are_byte_identical_to_encode(
    ssrc: int, payload_type: int, clock_rate: int, first_seq: int, first_ts: int,
    steps: list,  # type: ignore[type-arg]
) -> None:
    """header/framed_header + payload == RtpPacket(...).encode() (behind its RFC 4571 length).

    Mixed with push and skip on the same packetizer and with dropped packets taken back:
    sequences step by one per packet sent, timestamps by the ticks given, the marker is
    set on the first packet and after a skip, and a taken-back packet leaves no gap.
    """
    packetizer = Packetizer(ssrc=ssrc, payload_type=payload_type, clock_rate=clock_rate,
                            first_sequence=first_seq, first_timestamp=first_ts)
    sequence, timestamp, marker = first_seq, first_ts, True
    for op, size, ticks, framed in steps:
        if op == "skip":
            packetizer.skip(ticks)
            timestamp = (timestamp + ticks) % 2**32
            marker = True
            continue
        if op == "push":
            if clock_rate != 8000:
                continue
            packets = packetizer.push(bytes(size)) + packetizer.flush()
            for packet in packets:
                assert (packet.sequence, packet.timestamp, packet.marker) == (
                    sequence, timestamp, marker)
                sequence = (sequence + 1) % 65536
                timestamp = (timestamp + len(packet.payload)) % 2**32
                marker = False
            continue
        payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
        if framed:
            header = packetizer.framed_header(len(payload), ticks)
            expected = frame_rfc4571(
                RtpPacket(payload_type, sequence, timestamp, ssrc, payload, marker).encode())
        else:
            header = packetizer.header(len(payload), ticks)
            expected = RtpPacket(payload_type, sequence, timestamp, ssrc, payload, marker).encode()
        assert header + payload == expected
        assert parse_rtp(expected[2:] if framed else expected).payload == payload
        timestamp = (timestamp + ticks) % 2**32
        if op == "drop":
            packetizer.take_back()
        else:
            sequence = (sequence + 1) % 65536
            marker = False
        assert (packetizer.next_sequence, packetizer.next_timestamp) == (sequence, timestamp)


def test_fast_path_wraps_sequence_and_timestamp() -> None:
    packetizer = Packetizer(ssrc=5, payload_type=96, clock_rate=90_000,
                            first_sequence=65535, first_timestamp=2**32 - 900)
    first = parse_rtp(packetizer.header(3, 1800) + b"abc")
    second = parse_rtp(packetizer.framed_header(3, 1800)[2:] + b"abc")
    assert (first.sequence, first.timestamp, first.marker) == (65535, 2**32 - 900, True)
    assert (second.sequence, second.timestamp, second.marker) == (0, 900, False)
    assert packetizer.framed_header(160, 1800)[:2] == (172).to_bytes(2, "big")


@given(
    ssrc=st.integers(0, 2**32 - 1),
    payload_type=st.integers(0, 127),
    clock_rate=st.sampled_from([8000, 90_000]),
    first_seq=st.integers(0, 65535),
    first_ts=st.integers(0, 2**32 - 1),
    steps=fast_steps,
    junk=st.binary(min_size=14, max_size=14),
)
def test_headers_packed_in_place_are_byte_identical_to_encode(
    ssrc: int, payload_type: int, clock_rate: int, first_seq: int, first_ts: int,
    steps: list,  # type: ignore[type-arg]
    junk: bytes,
) -> None:
    """header_into/framed_header_into over a shared buffer == header/framed_header + payload
    == RtpPacket(...).encode(), step for step with a packetizer on the bytes path, through
    skips, pushes and taken-back packets; whatever the buffer held before is overwritten."""
    kwargs = dict(ssrc=ssrc, payload_type=payload_type, clock_rate=clock_rate,
                  first_sequence=first_seq, first_timestamp=first_ts)
    in_place, on_bytes = Packetizer(**kwargs), Packetizer(**kwargs)
    sequence, timestamp, marker = first_seq, first_ts, True
    for op, size, ticks, framed in steps:
        if op == "skip":
            in_place.skip(ticks)
            on_bytes.skip(ticks)
            timestamp = (timestamp + ticks) % 2**32
            marker = True
            continue
        if op == "push":
            if clock_rate == 8000:
                for packetizer in (in_place, on_bytes):
                    packets = packetizer.push(bytes(size)) + packetizer.flush()
                for _packet in packets:
                    sequence = (sequence + 1) % 65536
                    timestamp = (timestamp + len(_packet.payload)) % 2**32
                    marker = False
            continue
        payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
        room = 14 if framed else 12
        packet = bytearray(junk[:room]) + payload  # a buffer another session packed before
        encoded = RtpPacket(payload_type, sequence, timestamp, ssrc, payload, marker).encode()
        if framed:
            in_place.framed_header_into(packet, ticks)
            header = on_bytes.framed_header(len(payload), ticks)
            encoded = frame_rfc4571(encoded)
        else:
            in_place.header_into(packet, ticks)
            header = on_bytes.header(len(payload), ticks)
        assert bytes(packet) == header + payload == encoded
        timestamp = (timestamp + ticks) % 2**32
        if op == "drop":
            in_place.take_back()
            on_bytes.take_back()
        else:
            sequence = (sequence + 1) % 65536
            marker = False
        assert (in_place.next_sequence, in_place.next_timestamp) == (sequence, timestamp)


def test_in_place_headers_wrap_sequence_and_timestamp() -> None:
    packetizer = Packetizer(ssrc=5, payload_type=96, clock_rate=90_000,
                            first_sequence=65535, first_timestamp=2**32 - 900)
    first, second = bytearray(12) + b"abc", bytearray(14) + b"abc"
    packetizer.header_into(first, 1800)
    packetizer.framed_header_into(second, 1800)
    one, two = parse_rtp(bytes(first)), parse_rtp(bytes(second[2:]))
    assert (one.sequence, one.timestamp, one.marker) == (65535, 2**32 - 900, True)
    assert (two.sequence, two.timestamp, two.marker) == (0, 900, False)
    assert second[:2] == (15).to_bytes(2, "big")
