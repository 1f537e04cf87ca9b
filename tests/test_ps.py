"""MPEG-PS mux/demux: known-answer bytes, timestamp codecs, round trips in any chunking, garbage."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from gb28181talk.errors import PsError
from gb28181talk.media.law import Law
from gb28181talk.media.ps import (
    AUDIO_STREAM_ID,
    MAX_PES_PAYLOAD,
    PTS_MODULUS,
    PsAudio,
    PsDemuxer,
    PsMuxer,
    crc32_mpeg2,
    decode_pts,
    decode_scr,
    encode_pts,
    encode_scr,
)

laws = st.sampled_from(list(Law))
pts_values = st.integers(0, PTS_MODULUS - 1)
packets = st.lists(st.tuples(st.binary(min_size=1, max_size=400), pts_values), max_size=12)


def feed_in_pieces(demuxer: PsDemuxer, stream: bytes, cuts: list[int]) -> list[PsAudio]:
    """Feed `stream` split at the sorted offsets `cuts`; check the buffer bound after each."""
    out: list[PsAudio] = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        out += demuxer.feed(stream[start:cut])
        assert demuxer.buffered_bytes <= demuxer.max_buffer
        start = max(start, cut)
    return out


def pes(stream_id: int, payload: bytes, header: bytes = b"\x80\x00\x00") -> bytes:
    """A PES packet built by hand: start code, stream_id, PES_packet_length, header, payload."""
    return struct.pack(">IH", 0x100 | stream_id, len(header) + len(payload)) + header + payload


def pts_header(pts: int) -> bytes:
    """MPEG-2 PES header bytes after the length: '10' flags, PTS only, 5 header bytes, PTS."""
    return b"\x80\x80\x05" + encode_pts(pts)


def psm(entries: list[tuple[int, int]], crc: bytes | None = None) -> bytes:
    """A PSM naming (stream_type, stream_id) entries, with a right CRC unless one is given."""
    es_map = b"".join(bytes([kind, sid]) + b"\x00\x00" for kind, sid in entries)
    body = b"\xe0\xff" + b"\x00\x00" + struct.pack(">H", len(es_map)) + es_map
    head = struct.pack(">IH", 0x1BC, len(body) + 4)
    if crc is None:
        crc = struct.pack(">I", crc32_mpeg2(head + body))
    return head + body + crc


PACK_HEADER = bytes.fromhex("000001ba 44000400 0401 000643 f8")  # SCR 0, rate 400, no stuffing


# --- known answers -------------------------------------------------------------------------


def test_crc32_mpeg2_check_value() -> None:
    # The catalogued check value of CRC-32/MPEG-2 over the ASCII digits 1..9.
    assert crc32_mpeg2(b"123456789") == 0x0376E6E7


def test_known_answer_pack() -> None:
    # PTS 0x123456789 = 33 bits 100 | 100011010001010 | 110011110001001
    #                            [32..30]  [29..15]          [14..0]
    expected = bytes.fromhex(
        # pack header
        "000001ba"  # pack_start_code
        "66"  # 01 (MPEG-2) | SCR[32..30]=100 | marker 1 | SCR[29..28]=10
        "34"  # SCR[27..20]=00110100
        "57"  # SCR[19..15]=01010 | marker 1 | SCR[14..13]=11
        "3c"  # SCR[12..5]=00111100
        "4c"  # SCR[4..0]=01001 | marker 1 | SCR_extension[8..7]=00
        "01"  # SCR_extension[6..0]=0 | marker 1
        "000643"  # program_mux_rate 400 (x50 B/s = 20 kB/s) << 2 | marker 1 | marker 1
        "f8"  # reserved 11111 | pack_stuffing_length 000
        # system header
        "000001bb 0009"  # start code, header_length 9
        "800321"  # marker 1 | rate_bound 400 | marker 1
        "04"  # audio_bound 000001 | fixed_flag 0 | CSPS_flag 0
        "e0"  # audio lock 1 | video lock 1 | marker 1 | video_bound 00000
        "7f"  # packet_rate_restriction_flag 0 | reserved 1111111
        "c0 c200"  # stream 0xC0: 11 | P-STD_buffer_bound_scale 0 | size bound 512 (x128 B)
        # program stream map
        "000001bc 000e"  # start code, program_stream_map_length 14
        "e0"  # current_next_indicator 1 | reserved 11 | program_stream_map_version 00000
        "ff"  # reserved 1111111 | marker 1
        "0000"  # program_stream_info_length 0
        "0004"  # elementary_stream_map_length 4
        "90 c0 0000"  # stream_type 0x90 (G.711 A-law), elementary_stream_id 0xC0, info 0
        "f0b23adc"  # CRC_32: CRC-32/MPEG-2 of the 16 bytes from 000001bc to here
        # PES
        "000001c0 000c"  # start code, stream_id 0xC0, PES_packet_length 12 (8 + 4 payload)
        "80"  # 10 | scrambling 00 | priority 0 | alignment 0 | copyright 0 | original 0
        "80"  # PTS_DTS_flags 10 (PTS only) | the other six flags 0
        "05"  # PES_header_data_length 5
        "29"  # 0010 | PTS[32..30]=100 | marker 1
        "8d15"  # PTS[29..15]=100011010001010 | marker 1
        "cf13"  # PTS[14..0]=110011110001001 | marker 1
        "d5d5d5d5"  # four A-law silence samples
    )
    pack = PsMuxer(Law.ALAW).mux(b"\xd5" * 4, 0x123456789)
    assert pack.hex(" ") == expected.hex(" ")
    demuxer = PsDemuxer()
    assert demuxer.feed(pack) == [PsAudio(Law.ALAW, b"\xd5" * 4, 0x123456789)]
    assert demuxer.law is Law.ALAW
    assert (demuxer.skipped_bytes, demuxer.psm_crc_errors) == (0, 0)


@pytest.mark.parametrize("law", list(Law))
def test_psm_crc_leaves_zero_over_the_whole_map(law: Law) -> None:
    pack = PsMuxer(law).mux(b"\xff", 0)
    start = pack.index(b"\x00\x00\x01\xbc")
    length = struct.unpack_from(">H", pack, start + 4)[0]
    assert pack[start + 12] == law.ps_stream_type
    assert crc32_mpeg2(pack[start : start + 6 + length]) == 0


# --- timestamps ----------------------------------------------------------------------------


@given(pts_values, st.integers(0, 3))
def test_pts_round_trip_and_wrap(pts: int, wraps: int) -> None:
    field = encode_pts(pts + wraps * PTS_MODULUS)
    assert field == encode_pts(pts)
    assert decode_pts(field) == pts
    assert field[0] >> 4 == 0b0010
    assert field[0] & 1 and field[2] & 1 and field[4] & 1  # marker bits


@given(pts_values, st.integers(0, 299))
def test_scr_round_trip(base: int, extension: int) -> None:
    field = encode_scr(base, extension)
    assert decode_scr(field) == (base, extension)
    assert field[0] >> 6 == 0b01
    assert field[0] & 0x04 and field[2] & 0x04 and field[4] & 0x04 and field[5] & 1


# --- round trips -----------------------------------------------------------------------------


@given(laws, packets, st.integers(1, 4), st.data())
def test_mux_demux_round_trip_in_any_chunking(
    law: Law, items: list[tuple[bytes, int]], headers_every: int, data: st.DataObject
) -> None:
    muxer = PsMuxer(law, headers_every=headers_every)
    stream = b"".join(muxer.mux(payload, pts) for payload, pts in items)
    expected = [PsAudio(law, payload, pts) for payload, pts in items]
    whole = PsDemuxer()
    assert whole.feed(stream) == expected
    assert whole.skipped_bytes == 0
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=40), label="cuts")
    pieces = PsDemuxer(max_buffer=data.draw(st.sampled_from([1024, 4096, 256 * 1024])))
    assert feed_in_pieces(pieces, stream, cuts) == expected
    assert pieces.skipped_bytes == 0
    assert pieces.buffered_bytes == 0


@pytest.mark.parametrize("law", list(Law))
def test_one_byte_at_a_time(law: Law) -> None:
    muxer = PsMuxer(law)
    items = [(bytes([n]) * (160 + n), n * 1800) for n in range(5)]
    stream = b"".join(muxer.mux(payload, pts) for payload, pts in items)
    demuxer = PsDemuxer()
    out = []
    for offset in range(len(stream)):
        out += demuxer.feed(stream[offset : offset + 1])
    assert out == [PsAudio(law, payload, pts) for payload, pts in items]


def test_mux_wraps_pts() -> None:
    pack = PsMuxer(Law.ULAW).mux(b"\x7f" * 8, PTS_MODULUS + 5)
    assert PsDemuxer().feed(pack) == [PsAudio(Law.ULAW, b"\x7f" * 8, 5)]
    assert decode_scr(pack, 4) == (5, 0)


def test_large_payload_is_split_into_several_pes() -> None:
    g711 = bytes(range(256)) * 600  # 153,600 bytes: 65,000 + 65,000 + 23,600
    pts = PTS_MODULUS - 10
    pack = PsMuxer(Law.ALAW).mux(g711, pts)
    assert pack.count(b"\x00\x00\x01\xc0") == 3
    out = PsDemuxer().feed(pack)
    assert [len(a.payload) for a in out] == [MAX_PES_PAYLOAD, MAX_PES_PAYLOAD, 23_600]
    assert b"".join(a.payload for a in out) == g711
    # 8,000 samples/s on a 90 kHz clock: 45/4 ticks a byte, wrapping at 2**33.
    assert [a.pts for a in out] == [
        pts,
        (pts + MAX_PES_PAYLOAD * 45 // 4) % PTS_MODULUS,
        (pts + 2 * MAX_PES_PAYLOAD * 45 // 4) % PTS_MODULUS,
    ]


def test_headers_every_nth_pack_and_late_join() -> None:
    muxer = PsMuxer(Law.ULAW, headers_every=3)
    packs = [muxer.mux(b"\xff" * 160, n * 1800) for n in range(7)]
    with_psm = [b"\x00\x00\x01\xbc" in p for p in packs]
    assert with_psm == [True, False, False, True, False, False, True]
    assert [b"\x00\x00\x01\xbb" in p for p in packs] == with_psm
    late = PsDemuxer()  # joins at the second pack: no PSM yet
    out = [a for p in packs[1:] for a in late.feed(p)]
    assert [a.law for a in out] == [None, None, Law.ULAW, Law.ULAW, Law.ULAW, Law.ULAW]
    assert [a.pts for a in out] == [n * 1800 for n in range(1, 7)]


def test_mux_rejects_bad_arguments() -> None:
    with pytest.raises(PsError, match="headers_every"):
        PsMuxer(Law.ALAW, headers_every=0)
    with pytest.raises(PsError, match="empty"):
        PsMuxer(Law.ALAW).mux(b"", 0)
    with pytest.raises(PsError, match="max_buffer"):
        PsDemuxer(max_buffer=100)


# --- streams as cameras send them -------------------------------------------------------------


def test_video_padding_and_private_streams_are_skipped() -> None:
    # A video PES whose payload looks like audio: it must be skipped by length, not scanned.
    fake_audio = pes(0xC0, b"\xaa" * 10, pts_header(1))
    video = pes(0xE0, b"\x00\x00\x00\x01\x65" + fake_audio + b"\x11" * 3000, pts_header(1))
    stuffed_pack = bytes.fromhex("000001ba 44000400 0401 000643 fb ffffff")  # 3 stuffing bytes
    stream = (
        PACK_HEADER
        + bytes.fromhex("000001bb 0009 800321 04 e1 7f e0e0e8")  # system header, video entry
        + psm([(0x1B, 0xE0), (0x90, 0xC0)])  # H.264 video and A-law audio
        + video
        + pes(0xC0, b"\x01" * 160, pts_header(3600))
        + stuffed_pack
        + pes(0xBE, b"\xff" * 500)  # padding_stream
        + pes(0xBD, b"\x80\x80\x05" + b"\x21\x00\x01\x00\x01" + b"private")  # private_stream_1
        + pes(0xE0, b"\x00\x00\x01\xc0\xff\xff" * 100, pts_header(7200))
        + pes(0xC0, b"\x02" * 320, pts_header(7200))
        + b"\x00\x00\x01\xb9"  # MPEG_program_end_code
    )
    expected = [
        PsAudio(Law.ALAW, b"\x01" * 160, 3600),
        PsAudio(Law.ALAW, b"\x02" * 320, 7200),
    ]
    demuxer = PsDemuxer()
    assert demuxer.feed(stream) == expected
    assert demuxer.skipped_bytes == 0
    small = PsDemuxer(max_buffer=1024)  # video is skipped without being held
    assert feed_in_pieces(small, stream, list(range(0, len(stream), 700))) == expected


def test_pes_header_extension_dts_and_no_pts() -> None:
    with_dts = b"\x80\xc0\x0d" + encode_pts(900, 0b0011) + encode_pts(800, 0b0001) + b"\xff" * 3
    stream = (
        PACK_HEADER
        + psm([(0x91, 0xC0)])
        + pes(0xC0, b"\x10" * 40, with_dts)  # PTS and DTS, 3 stuffing bytes
        + pes(0xC0, b"\x20" * 40, b"\x80\x00\x00")  # no PTS
        + pes(0xC0, b"", pts_header(5))  # nothing to emit
    )
    assert PsDemuxer().feed(stream) == [
        PsAudio(Law.ULAW, b"\x10" * 40, 900),
        PsAudio(Law.ULAW, b"\x20" * 40, None),
    ]


def test_latest_psm_decides_the_law() -> None:
    demuxer = PsDemuxer()
    audio = pes(0xC0, b"\x55" * 80, pts_header(0))
    assert demuxer.feed(PACK_HEADER + audio) == [PsAudio(None, b"\x55" * 80, 0)]
    assert demuxer.feed(PACK_HEADER + psm([(0x91, 0xC0)]) + audio)[0].law is Law.ULAW
    assert demuxer.feed(PACK_HEADER + psm([(0x90, 0xC0)]) + audio)[0].law is Law.ALAW
    assert demuxer.law is Law.ALAW


def test_non_g711_audio_is_dropped_and_counted() -> None:
    demuxer = PsDemuxer()
    aac = PACK_HEADER + psm([(0x0F, 0xC0)]) + pes(0xC0, b"\xff\xf1" * 50, pts_header(0))
    assert demuxer.feed(aac) == []
    assert demuxer.unsupported_audio_packets == 1
    assert demuxer.law is None


def test_psm_with_a_wrong_crc_is_counted_and_used() -> None:
    demuxer = PsDemuxer()
    stream = PACK_HEADER + psm([(0x91, 0xC0)], crc=b"\x00\x00\x00\x00")
    out = demuxer.feed(stream + pes(0xC0, b"\x33" * 10, pts_header(9)))
    assert out == [PsAudio(Law.ULAW, b"\x33" * 10, 9)]
    assert demuxer.psm_crc_errors == 1


def test_mpeg1_packs_are_skipped() -> None:
    mpeg1_pack = bytes.fromhex("000001ba 2100010001 800001")  # '0010' SCR marker, mux_rate
    mpeg1_audio = pes(0xC0, b"\x99" * 50, b"\xff\xff" + b"\x40\x20" + encode_pts(100))
    mpeg2 = PsMuxer(Law.ALAW).mux(b"\x42" * 160, 1800)
    demuxer = PsDemuxer()
    assert demuxer.feed(mpeg1_pack + mpeg1_audio + mpeg2) == [
        PsAudio(Law.ALAW, b"\x42" * 160, 1800)
    ]
    assert demuxer.skipped_bytes == len(mpeg1_pack) + len(mpeg1_audio)


# --- garbage --------------------------------------------------------------------------------

# Garbage that cannot contain a start code, so it cannot swallow the valid packs after it.
clean_garbage = st.binary(max_size=300).map(lambda b: b.replace(b"\x00\x00\x01", b"\x00\x02\x01"))


@given(laws, packets, st.data())
def test_valid_packs_after_garbage_are_found(
    law: Law, items: list[tuple[bytes, int]], data: st.DataObject
) -> None:
    muxer = PsMuxer(law)
    packs = [muxer.mux(payload, pts) for payload, pts in items]
    # garbage[i] goes before packs[i]; the last piece trails the stream
    garbage = data.draw(
        st.lists(clean_garbage, min_size=len(packs) + 1, max_size=len(packs) + 1), label="garbage"
    )
    assume(all(b"\x00\x00\x01" not in g for g in garbage))
    stream = b"".join(g + p for g, p in zip(garbage, [*packs, b""], strict=True))
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=30), label="cuts")
    demuxer = PsDemuxer(max_buffer=1024)
    assert feed_in_pieces(demuxer, stream, cuts) == [PsAudio(law, p, t) for p, t in items]
    # Every garbage byte is counted, but for up to 3 at the very end that could begin a start code.
    before_packs = sum(len(g) for g in garbage[:-1])
    assert before_packs + len(garbage[-1]) - 3 <= demuxer.skipped_bytes
    assert demuxer.skipped_bytes <= before_packs + len(garbage[-1])


def _fragments() -> st.SearchStrategy[bytes]:
    start_codes = [bytes([0, 0, 1, sid]) for sid in (0xB9, 0xBA, 0xBB, 0xBC, 0xBD, 0xBE, 0xC0)]
    start_codes += [b"\x00\x00\x01\xe0", b"\x00\x00\x01\xdf", b"\x00\x00\x01\x00"]
    return st.one_of(st.sampled_from(start_codes), st.binary(max_size=40))


@given(
    st.lists(_fragments(), max_size=60).map(b"".join),
    st.sampled_from([1024, 2048, 256 * 1024]),
    st.data(),
)
def test_arbitrary_bytes_never_raise_and_stay_bounded(
    junk: bytes, max_buffer: int, data: st.DataObject
) -> None:
    demuxer = PsDemuxer(max_buffer=max_buffer)
    cuts = data.draw(st.lists(st.integers(0, len(junk)), max_size=20), label="cuts")
    for audio in feed_in_pieces(demuxer, junk, cuts):
        assert audio.payload
    assert demuxer.skipped_bytes <= len(junk)


@given(packets.filter(bool), st.lists(st.tuples(st.integers(0), st.integers(0, 255))), st.data())
def test_damaged_streams_never_raise(
    items: list[tuple[bytes, int]], damage: list[tuple[int, int]], data: st.DataObject
) -> None:
    muxer = PsMuxer(Law.ALAW)
    stream = bytearray(b"".join(muxer.mux(payload, pts) for payload, pts in items))
    for where, value in damage:
        stream[where % len(stream)] = value
    demuxer = PsDemuxer(max_buffer=1024)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20), label="cuts")
    feed_in_pieces(demuxer, bytes(stream), cuts)
    # A stream that ends cleanly after the damage is read again.
    assert demuxer.feed(b"\x00" * 70_000 + muxer.mux(b"\x01" * 8, 0))[-1:] == [
        PsAudio(Law.ALAW, b"\x01" * 8, 0)
    ]


def test_oversized_units_are_dropped_and_the_buffer_stays_bounded() -> None:
    demuxer = PsDemuxer(max_buffer=1024)
    # Cannot fit in 1024 bytes: skipped by its length, so what looks like audio inside is not read.
    inner = pes(0xC0, b"\x66" * 100, pts_header(1))
    huge_audio = pes(0xC0, b"\x00" * 1000 + inner + b"\x00" * 1000, pts_header(0))
    good = PsMuxer(Law.ALAW).mux(b"\x07" * 160, 42)
    stream = huge_audio + good
    out = feed_in_pieces(demuxer, stream, list(range(0, len(stream), 100)))
    assert out == [PsAudio(Law.ALAW, b"\x07" * 160, 42)]
    assert demuxer.skipped_bytes == len(huge_audio)


def test_a_false_start_code_costs_only_its_own_bytes() -> None:
    good = PsMuxer(Law.ALAW).mux(b"\x07" * 160, 42)
    # 00 00 01 with a stream id below 0xB9 (a video slice, say) is not ours: scan on.
    not_system = b"\x00\x00\x01\x42\x99"
    # An audio PES that is not MPEG-2 shaped ('11' where '10' should be) goes by its length.
    not_mpeg2 = pes(AUDIO_STREAM_ID, b"\x00\x01", b"\xc1\x80")
    demuxer = PsDemuxer()
    assert demuxer.feed(not_system + not_mpeg2 + good) == [PsAudio(Law.ALAW, b"\x07" * 160, 42)]
    assert demuxer.skipped_bytes == len(not_system) + len(not_mpeg2)


# --- the muxer's own 33-bit clock --------------------------------------------------------------

frame_ticks = st.sampled_from([1800, 3600, 5400, 16200])
"""90 kHz ticks of a pack: 20, 40, 60 or 180 ms."""


@given(
    laws,
    st.one_of(st.integers(0, PTS_MODULUS - 1), st.integers(2**32 - 20_000, 2**32 + 20_000),
              st.integers(PTS_MODULUS - 20_000, PTS_MODULUS - 1)),
    st.lists(st.tuples(frame_ticks, st.sampled_from([0, 0, 0, 1800])), min_size=1, max_size=25),
)
def test_muxer_clock_advances_by_the_ticks_modulo_2_33(
    law: Law, first: int, items: list[tuple[int, int]]
) -> None:
    """SCR and PTS follow the muxer's clock: +ticks per pack, +gap per skip, wrapping at 2**33."""
    muxer = PsMuxer(law, first_pts=first)
    assert muxer.next_pts == first
    clock = first
    packs, expected = [], []
    for n, (ticks, gap) in enumerate(items):
        if gap:
            muxer.skip(gap)
            clock = (clock + gap) % PTS_MODULUS
        payload = bytes([n % 256]) * (ticks * 4 // 45)
        expected.append(PsAudio(law, payload, clock))
        packs.append(muxer.mux_next(payload, ticks))
        clock = (clock + ticks) % PTS_MODULUS
        assert muxer.next_pts == clock
    assert [decode_scr(pack, 4) for pack in packs] == [(a.pts, 0) for a in expected]
    assert PsDemuxer().feed(b"".join(packs)) == expected
    steps = [(b.pts - a.pts) % PTS_MODULUS for a, b in itertools.pairwise(expected)]
    assert steps == [
        items[n][0] + items[n + 1][1] for n in range(len(items) - 1)
    ], "each step is the previous pack's ticks plus any gap, never a jump back"


def test_muxer_clock_continues_past_the_32_bit_rtp_wrap() -> None:
    muxer = PsMuxer(Law.ALAW, first_pts=2**32 - 3600)
    packs = [muxer.mux_next(b"\xd5" * 160, 1800) for _ in range(4)]
    assert [decode_scr(p, 4)[0] for p in packs] == [2**32 - 3600, 2**32 - 1800, 2**32, 2**32 + 1800]


def test_muxer_clock_refuses_negative_ticks() -> None:
    with pytest.raises(PsError):
        PsMuxer(Law.ALAW).mux_next(b"\xd5", -1)
    with pytest.raises(PsError):
        PsMuxer(Law.ALAW).skip(-1)
