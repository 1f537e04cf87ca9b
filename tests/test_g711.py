"""G.711 codec: every sample and code word against a plain segment-search reference."""

from __future__ import annotations

import struct
import sys
from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gb28181talk.errors import G711Error
from gb28181talk.media import g711
from gb28181talk.media.law import Law

# --- An independent reference, written the way the ITU text / Sun g711.c describe it. ---

# Highest magnitude of each segment: A-law on 13-bit magnitudes, µ-law on biased 14-bit ones.
ALAW_SEGMENT_ENDS = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)
ULAW_SEGMENT_ENDS = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)


def segment_of(magnitude: int, ends: tuple[int, ...]) -> int:
    for segment, end in enumerate(ends):
        if magnitude <= end:
            return segment
    return len(ends)


def reference_linear_to_alaw(sample: int) -> int:
    value = sample >> 3  # top 13 bits
    if value >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        value = -value - 1
    segment = segment_of(value, ALAW_SEGMENT_ENDS)
    if segment >= 8:
        return 0x7F ^ mask
    code = segment << 4
    if segment < 2:
        code |= (value >> 1) & 0x0F
    else:
        code |= (value >> segment) & 0x0F
    return code ^ mask


def reference_alaw_to_linear(code: int) -> int:
    code ^= 0x55
    value = (code & 0x0F) << 4
    segment = (code & 0x70) >> 4
    if segment == 0:
        value += 8
    elif segment == 1:
        value += 0x108
    else:
        value += 0x108
        value <<= segment - 1
    return value if code & 0x80 else -value


def reference_linear_to_ulaw(sample: int) -> int:
    if sample >= 0:
        value = sample >> 2  # top 14 bits
        mask = 0xFF
    else:
        value = (-sample - 1) >> 2  # one's complement magnitude, as ITU G.191 does
        mask = 0x7F
    value = min(value, 32635 >> 2) + (0x84 >> 2)
    segment = segment_of(value, ULAW_SEGMENT_ENDS)
    if segment >= 8:
        return 0x7F ^ mask
    code = (segment << 4) | ((value >> (segment + 1)) & 0x0F)
    return code ^ mask


def reference_ulaw_to_linear(code: int) -> int:
    code = ~code & 0xFF
    value = ((code & 0x0F) << 3) + 0x84
    value <<= (code & 0x70) >> 4
    return 0x84 - value if code & 0x80 else value - 0x84


ALL_SAMPLES = range(-32768, 32768)
ALL_CODES = range(256)


def pcm16(samples) -> bytes:
    data = array("h", samples)
    if sys.byteorder == "big":
        data.byteswap()
    return data.tobytes()


def samples_of(pcm: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(pcm) // 2}h", pcm))


# --- Single-sample rules. ---


def test_linear_to_alaw_matches_reference_for_every_sample() -> None:
    assert [g711.linear_to_alaw(s) for s in ALL_SAMPLES] == [
        reference_linear_to_alaw(s) for s in ALL_SAMPLES
    ]


def test_linear_to_ulaw_matches_reference_for_every_sample() -> None:
    assert [g711.linear_to_ulaw(s) for s in ALL_SAMPLES] == [
        reference_linear_to_ulaw(s) for s in ALL_SAMPLES
    ]


def test_decoders_match_reference_for_every_code() -> None:
    for code in ALL_CODES:
        assert g711.alaw_to_linear(code) == reference_alaw_to_linear(code), hex(code)
        assert g711.ulaw_to_linear(code) == reference_ulaw_to_linear(code), hex(code)


@pytest.mark.parametrize(
    ("encoder", "sample", "code"),
    [
        (g711.linear_to_alaw, 0, 0xD5),
        (g711.linear_to_alaw, -1, 0x55),
        (g711.linear_to_alaw, -8, 0x55),
        (g711.linear_to_alaw, 32767, 0xAA),
        (g711.linear_to_alaw, -32768, 0x2A),
        (g711.linear_to_ulaw, 0, 0xFF),
        (g711.linear_to_ulaw, -1, 0x7F),
        (g711.linear_to_ulaw, 32767, 0x80),
        (g711.linear_to_ulaw, -32768, 0x00),
        (g711.linear_to_ulaw, -32124, 0x00),
        (g711.linear_to_ulaw, 1000, 0xCE),
    ],
)
def test_known_encodings(encoder, sample: int, code: int) -> None:
    assert encoder(sample) == code


@pytest.mark.parametrize(
    ("decoder", "code", "sample"),
    [
        (g711.alaw_to_linear, 0x55, -8),
        (g711.alaw_to_linear, 0xD5, 8),
        (g711.alaw_to_linear, 0xAA, 32256),
        (g711.alaw_to_linear, 0x2A, -32256),
        (g711.ulaw_to_linear, 0x00, -32124),
        (g711.ulaw_to_linear, 0x80, 32124),
        (g711.ulaw_to_linear, 0xFF, 0),
        (g711.ulaw_to_linear, 0x7F, 0),
    ],
)
def test_known_decodings(decoder, code: int, sample: int) -> None:
    assert decoder(code) == sample


def test_silence_is_the_code_for_zero() -> None:
    assert g711.SILENCE[Law.ALAW] == g711.linear_to_alaw(0) == 0xD5
    assert g711.SILENCE[Law.ULAW] == g711.linear_to_ulaw(0) == 0xFF
    assert set(g711.SILENCE) == set(Law)


@pytest.mark.parametrize("law", list(Law))
def test_encoding_is_odd_symmetric_about_minus_half(law: Law) -> None:
    encoder = g711.linear_to_alaw if law is Law.ALAW else g711.linear_to_ulaw
    for sample in range(0, 32768, 7):
        assert encoder(~sample) == encoder(sample) ^ 0x80


@pytest.mark.parametrize("law", list(Law))
def test_decode_encode_decode_is_idempotent(law: Law) -> None:
    encoder = g711.linear_to_alaw if law is Law.ALAW else g711.linear_to_ulaw
    decoder = g711.alaw_to_linear if law is Law.ALAW else g711.ulaw_to_linear
    for code in ALL_CODES:
        linear = decoder(code)
        assert decoder(encoder(linear)) == linear
    # Every code but µ-law's negative zero (0x7F, which decodes to 0 like 0xFF) survives.
    survivors = {code for code in ALL_CODES if encoder(decoder(code)) == code}
    assert set(ALL_CODES) - survivors == (set() if law is Law.ALAW else {0x7F})


def test_encoding_is_monotonic() -> None:
    for decoder, encoder in (
        (g711.alaw_to_linear, g711.linear_to_alaw),
        (g711.ulaw_to_linear, g711.linear_to_ulaw),
    ):
        decoded = [decoder(encoder(s)) for s in range(-32768, 32768, 3)]
        assert decoded == sorted(decoded)


@pytest.mark.parametrize("bad", [-32769, 32768, 1 << 20])
def test_single_sample_rejects_out_of_range(bad: int) -> None:
    with pytest.raises(G711Error, match=str(bad)):
        g711.linear_to_alaw(bad)
    with pytest.raises(G711Error, match=str(bad)):
        g711.linear_to_ulaw(bad)


@pytest.mark.parametrize("bad", [-1, 256])
def test_single_code_rejects_out_of_range(bad: int) -> None:
    with pytest.raises(G711Error):
        g711.alaw_to_linear(bad)
    with pytest.raises(G711Error):
        g711.ulaw_to_linear(bad)


# --- Bulk, table-driven codecs. ---

EVERY_SAMPLE_PCM = pcm16(ALL_SAMPLES)


def test_bulk_encode_matches_single_sample_rule_for_every_sample() -> None:
    assert g711.alaw_encode(EVERY_SAMPLE_PCM) == bytes(map(reference_linear_to_alaw, ALL_SAMPLES))
    assert g711.ulaw_encode(EVERY_SAMPLE_PCM) == bytes(map(reference_linear_to_ulaw, ALL_SAMPLES))


def test_bulk_decode_matches_single_code_rule_for_every_code() -> None:
    codes = bytes(ALL_CODES)
    assert samples_of(g711.alaw_decode(codes)) == [reference_alaw_to_linear(c) for c in codes]
    assert samples_of(g711.ulaw_decode(codes)) == [reference_ulaw_to_linear(c) for c in codes]


def test_bulk_output_is_little_endian() -> None:
    assert g711.alaw_decode(b"\x55") == b"\xf8\xff"  # -8
    assert g711.ulaw_decode(b"\x80") == struct.pack("<h", 32124)
    assert g711.alaw_encode(b"\x00\x80") == b"\x2a"  # -32768
    assert g711.ulaw_encode(b"\xff\x7f") == b"\x80"  # 32767


@pytest.mark.parametrize("law", list(Law))
def test_law_dispatch(law: Law) -> None:
    pcm = pcm16([0, 1, -1, 1000, -1000, 32767, -32768])
    direct_encode = g711.alaw_encode if law is Law.ALAW else g711.ulaw_encode
    direct_decode = g711.alaw_decode if law is Law.ALAW else g711.ulaw_decode
    assert g711.encode(law, pcm) == direct_encode(pcm)
    assert g711.decode(law, g711.encode(law, pcm)) == direct_decode(direct_encode(pcm))


@pytest.mark.parametrize("law", list(Law))
def test_bulk_accepts_any_bytes_like(law: Law) -> None:
    pcm = pcm16([5, -5, 300])
    expected = g711.encode(law, pcm)
    assert g711.encode(law, bytearray(pcm)) == expected
    assert g711.encode(law, memoryview(pcm)) == expected
    assert g711.decode(law, bytearray(expected)) == g711.decode(law, expected)
    assert g711.decode(law, memoryview(expected)) == g711.decode(law, expected)
    assert isinstance(g711.encode(law, bytearray(pcm)), bytes)
    assert isinstance(g711.decode(law, bytearray(expected)), bytes)


@pytest.mark.parametrize("law", list(Law))
def test_empty_input(law: Law) -> None:
    assert g711.encode(law, b"") == b""
    assert g711.decode(law, b"") == b""


@pytest.mark.parametrize("encoder", [g711.alaw_encode, g711.ulaw_encode])
def test_odd_length_pcm_is_rejected(encoder) -> None:
    with pytest.raises(G711Error, match="161 bytes"):
        encoder(bytes(161))


@given(st.binary(max_size=400).filter(lambda b: len(b) % 2 == 0), st.sampled_from(list(Law)))
def test_bulk_round_trip_is_a_fixed_point(pcm: bytes, law: Law) -> None:
    once = g711.decode(law, g711.encode(law, pcm))
    assert len(once) == len(pcm)
    assert g711.decode(law, g711.encode(law, once)) == once


@given(st.binary(max_size=400), st.sampled_from(list(Law)))
def test_bulk_decode_of_any_codes(codes: bytes, law: Law) -> None:
    assert len(g711.decode(law, codes)) == 2 * len(codes)
    assert g711.encode(law, g711.decode(law, codes)) == codes.translate(
        bytes.maketrans(b"\x7f", b"\xff") if law is Law.ULAW else bytes(range(256))
    )
