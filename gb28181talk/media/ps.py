"""MPEG-2 program stream (ISO/IEC 13818-1) carrying G.711, muxed and demuxed as GB28181 uses it.

Sans-I/O: `PsMuxer.mux` turns one G.711 packet into one PS pack; `PsDemuxer.feed` takes
PS bytes in whatever pieces the RTP layer hands over and returns the audio it completed.

A pack as we write it (all big-endian, sizes in bytes)::

    pack header      00 00 01 BA, SCR (6), program_mux_rate (3), stuffing length (1)   14
    system header    00 00 01 BB, length, rate_bound, bounds, one stream entry (C0)   15
    PSM              00 00 01 BC, length, version, info, one ES (type, C0), CRC-32     20
    PES              00 00 01 C0, length, '10' flags, PTS flags, 5, PTS (5), G.711   14 + n

The system header and PSM go before every `headers_every`-th pack (devices may join late).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from gb28181talk.errors import PsError
from gb28181talk.media.law import Law

__all__ = [
    "AUDIO_STREAM_ID",
    "MAX_PES_PAYLOAD",
    "PROGRAM_MUX_RATE",
    "PTS_MODULUS",
    "PsAudio",
    "PsDemuxer",
    "PsMuxer",
    "crc32_mpeg2",
    "decode_pts",
    "decode_scr",
    "encode_pts",
    "encode_scr",
]

AUDIO_STREAM_ID = 0xC0
"""PES stream_id of the (first) MPEG audio stream: what GB28181 devices use for G.711."""

PTS_MODULUS = 1 << 33
"""PTS and SCR are 33-bit counts of a 90 kHz clock; they wrap here (about 26.5 hours)."""

PROGRAM_MUX_RATE = 400
"""program_mux_rate in units of 50 bytes/s: 20,000 B/s (160 kbit/s).

64 kbit/s G.711 is 8,000 B/s; with all four headers in every pack (63 bytes of overhead)
10 ms packs need 14,300 B/s and 20 ms packs 11,150 B/s, so this leaves room.
"""

MAX_PES_PAYLOAD = 65_000
"""G.711 bytes per PES: PES_packet_length is 16 bits and counts 8 header bytes of ours.

A multiple of 4, so the PTS of each following PES (8,000 samples/s at 90 kHz: 45/4
ticks a byte) stays exact.
"""

_START = b"\x00\x00\x01"
_PACK = 0xBA
_SYSTEM_HEADER = 0xBB
_PSM = 0xBC
_END_CODE = 0xB9
_FIRST_STREAM_ID = 0xB9  # 00 00 01 xx with xx below this is not a system start code
_PACK_HEADER_SIZE = 14
_MPEG1_PACK_HEADER_SIZE = 12
_PES_HEADER_SIZE = 14  # start code, length, two flag bytes, header length 5, PTS
_MIN_BUFFER = 1024

_STREAM_TYPE_LAW = {law.ps_stream_type: law for law in Law}


# --- CRC-32/MPEG-2 ----------------------------------------------------------------------


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc32_mpeg2(data: bytes | bytearray | memoryview, crc: int = 0xFFFFFFFF) -> int:
    """CRC-32/MPEG-2 (poly 0x04C11DB7, init 0xFFFFFFFF, not reflected, no final xor).

    The PSM's CRC_32 field makes this zero over the whole map, start code included.
    (`zlib.crc32` is the reflected variant and does not fit.)
    """
    table = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[(crc >> 24) ^ byte]
    return crc


# --- timestamps ---------------------------------------------------------------------------


def _put_pts(out: bytearray, offset: int, pts: int, prefix: int = 0b0010) -> None:
    """Write a 33-bit PTS as 5 bytes: prefix(4) PTS[32..30] 1 PTS[29..15] 1 PTS[14..0] 1."""
    pts &= PTS_MODULUS - 1
    out[offset] = (prefix << 4) | ((pts >> 29) & 0x0E) | 1
    out[offset + 1] = (pts >> 22) & 0xFF
    out[offset + 2] = ((pts >> 14) & 0xFE) | 1
    out[offset + 3] = (pts >> 7) & 0xFF
    out[offset + 4] = ((pts << 1) & 0xFE) | 1


def encode_pts(pts: int, prefix: int = 0b0010) -> bytes:
    """The 5-byte PES PTS field ('0010' prefix: PTS only); `pts` is taken modulo 2**33."""
    out = bytearray(5)
    _put_pts(out, 0, pts, prefix)
    return bytes(out)


def decode_pts(field: bytes | bytearray | memoryview, offset: int = 0) -> int:
    """The 33-bit value of a 5-byte PTS/DTS field; prefix and marker bits are not checked."""
    b = field
    o = offset
    return (
        ((b[o] >> 1) & 0x07) << 30
        | b[o + 1] << 22
        | (b[o + 2] >> 1) << 15
        | b[o + 3] << 7
        | b[o + 4] >> 1
    )


def _put_scr(out: bytearray, offset: int, base: int, extension: int = 0) -> None:
    """Write '01' SCR_base[32..30] 1 [29..15] 1 [14..0] 1 SCR_extension(9) 1 in 6 bytes."""
    base &= PTS_MODULUS - 1
    extension %= 300
    out[offset] = 0x44 | ((base >> 27) & 0x38) | ((base >> 28) & 0x03)
    out[offset + 1] = (base >> 20) & 0xFF
    out[offset + 2] = ((base >> 12) & 0xF8) | 0x04 | ((base >> 13) & 0x03)
    out[offset + 3] = (base >> 5) & 0xFF
    out[offset + 4] = ((base << 3) & 0xF8) | 0x04 | ((extension >> 7) & 0x03)
    out[offset + 5] = ((extension << 1) & 0xFE) | 1


def encode_scr(base: int, extension: int = 0) -> bytes:
    """The 6-byte MPEG-2 pack header SCR field (90 kHz base modulo 2**33, 27 MHz extension)."""
    out = bytearray(6)
    _put_scr(out, 0, base, extension)
    return bytes(out)


def decode_scr(field: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int]:
    """(SCR_base, SCR_extension) of a 6-byte MPEG-2 SCR field; markers are not checked."""
    b = field
    o = offset
    base = (
        ((b[o] >> 3) & 0x07) << 30
        | (b[o] & 0x03) << 28
        | b[o + 1] << 20
        | ((b[o + 2] >> 3) & 0x1F) << 15
        | (b[o + 2] & 0x03) << 13
        | b[o + 3] << 5
        | (b[o + 4] >> 3) & 0x1F
    )
    extension = (b[o + 4] & 0x03) << 7 | b[o + 5] >> 1
    return base, extension


# --- muxer ---------------------------------------------------------------------------------


def _system_header() -> bytes:
    """System header for one audio stream (0xC0) and no video, rate_bound = our mux rate."""
    return (
        struct.pack(">IH", 0x100 | _SYSTEM_HEADER, 9)
        # marker, rate_bound(22), marker
        + ((1 << 23) | (PROGRAM_MUX_RATE << 1) | 1).to_bytes(3, "big")
        # audio_bound 1, fixed_flag 0, CSPS_flag 0
        + bytes([1 << 2])
        # system_audio_lock_flag 1, system_video_lock_flag 1, marker 1, video_bound 0
        + bytes([0xE0])
        # packet_rate_restriction_flag 0, reserved '1111111'
        + bytes([0x7F])
        # stream_id, '11', P-STD_buffer_bound_scale 0 (x128 bytes), size bound 512 (64 KiB)
        + bytes([AUDIO_STREAM_ID])
        + (0xC000 | 512).to_bytes(2, "big")
    )


def _program_stream_map(law: Law) -> bytes:
    """A PSM naming one elementary stream, 0xC0, of the law's stream_type, with its CRC."""
    body = (
        bytes([0xE0, 0xFF])  # current_next 1, reserved 11, version 0; reserved 1111111, marker 1
        + struct.pack(">H", 0)  # program_stream_info_length: no descriptors
        + struct.pack(">H", 4)  # elementary_stream_map_length: one entry
        + bytes([law.ps_stream_type, AUDIO_STREAM_ID])
        + struct.pack(">H", 0)  # elementary_stream_info_length
    )
    head = struct.pack(">IH", 0x100 | _PSM, len(body) + 4)
    return head + body + struct.pack(">I", crc32_mpeg2(head + body))


class PsMuxer:
    """Packs G.711 packets into MPEG-2 PS packs, one pack per call, for PS (PT 96) downlink.

    :meth:`mux` takes the PTS it is given; :meth:`mux_next` and :meth:`skip` keep the
    muxer's own 33-bit 90 kHz clock (from ``first_pts``), which a sender uses so that PS
    time runs on in 33 bits while its RTP timestamps wrap at 32.
    """

    def __init__(self, law: Law, headers_every: int = 1, *, first_pts: int = 0) -> None:
        if headers_every < 1:
            raise PsError(
                f"headers_every must be 1 or more (got {headers_every}); "
                "1 puts the system header and PSM before every pack"
            )
        self._law = law
        self._clock = first_pts % PTS_MODULUS
        self._headers_every = headers_every
        self._packs = 0
        self._headers = _system_header() + _program_stream_map(law)
        pack = bytearray(_PACK_HEADER_SIZE)
        pack[0:4] = _START + bytes([_PACK])
        pack[10:13] = ((PROGRAM_MUX_RATE << 2) | 0x03).to_bytes(3, "big")
        pack[13] = 0xF8  # reserved '11111', pack_stuffing_length 0
        self._pack_template = bytes(pack)

    @property
    def law(self) -> Law:
        """The G.711 law named in the PSM."""
        return self._law

    @property
    def headers_every(self) -> int:
        """The system header and PSM precede every this-many-th pack (the first always)."""
        return self._headers_every

    @property
    def next_pts(self) -> int:
        """The muxer's own 90 kHz clock: the SCR and PTS :meth:`mux_next` gives the next pack."""
        return self._clock

    def skip(self, ticks: int) -> None:
        """A gap in the audio: move the clock on by ``ticks`` (90 kHz) without a pack."""
        if ticks < 0:
            raise PsError(f"cannot skip {ticks} ticks; the 90 kHz clock only moves forward")
        self._clock = (self._clock + ticks) % PTS_MODULUS

    def mux_next(self, g711: bytes, ticks: int) -> bytes:
        """One pack at the muxer's clock (:attr:`next_pts`), then the clock moves on by ``ticks``.

        The clock is 33-bit and advanced only by ticks, never taken from a 32-bit RTP
        timestamp, so SCR and PTS go on past the RTP wrap (2**32 ticks, about 13 h 15 min
        at 90 kHz) and wrap only where MPEG-PS does, at 2**33.
        """
        if ticks < 0:
            raise PsError(f"a pack cannot span {ticks} ticks; give its duration at 90 kHz")
        pack = self.mux(g711, self._clock)
        self._clock = (self._clock + ticks) % PTS_MODULUS
        return pack

    def mux(self, g711: bytes, pts: int) -> bytes:
        """One pack carrying `g711` with PTS (and SCR) `pts` (90 kHz, taken modulo 2**33).

        Payloads over MAX_PES_PAYLOAD bytes go into several PES in the same pack; each
        later PES has the PTS of its first sample.
        """
        size = len(g711)
        if size == 0:
            raise PsError("cannot mux an empty G.711 payload; a pack must carry at least 1 sample")
        pts %= PTS_MODULUS
        with_headers = self._packs % self._headers_every == 0
        self._packs += 1
        pes_count = -(-size // MAX_PES_PAYLOAD)
        total = _PACK_HEADER_SIZE + pes_count * _PES_HEADER_SIZE + size
        if with_headers:
            total += len(self._headers)
        out = bytearray(total)
        out[0:_PACK_HEADER_SIZE] = self._pack_template
        _put_scr(out, 4, pts)
        at = _PACK_HEADER_SIZE
        if with_headers:
            out[at : at + len(self._headers)] = self._headers
            at += len(self._headers)
        view = memoryview(g711)
        for first in range(0, size, MAX_PES_PAYLOAD):
            chunk = view[first : first + MAX_PES_PAYLOAD]
            # start code + stream_id, PES_packet_length, '10' + flags 0, PTS only, 5 header bytes
            struct.pack_into(
                ">IHBBB", out, at, 0x100 | AUDIO_STREAM_ID, len(chunk) + 8, 0x80, 0x80, 5
            )
            _put_pts(out, at + 9, pts + first * 45 // 4)
            at += _PES_HEADER_SIZE
            out[at : at + len(chunk)] = chunk
            at += len(chunk)
        return bytes(out)


# --- demuxer -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PsAudio:
    """The G.711 payload of one audio PES packet."""

    law: Law | None
    """From the PSM's stream_type (0x90 A-law, 0x91 µ-law); for a stream the PSM does not
    list, the latest PSM's G.711 law; None if no PSM named one yet."""
    payload: bytes
    """The G.711 bytes of one PES packet (never empty, never partial)."""
    pts: int | None
    """90 kHz PTS if the PES carried one."""


def _is_audio(stream_id: int) -> bool:
    return 0xC0 <= stream_id <= 0xDF


class PsDemuxer:
    """Extracts G.711 from a PS byte stream as devices send it, fed in arbitrary pieces.

    RTP payloads split packs anywhere, so `feed` keeps an incomplete unit until the rest
    arrives; an audio payload is emitted only once its whole PES is in.

    Understood: MPEG-2 pack headers (with stuffing), system headers, program stream maps,
    MPEG-2 audio PES (stream ids 0xC0-0xDF) with or without PTS. Video PES (0xE0-0xEF),
    padding, private and any other streams are skipped by their length without being
    buffered. MPEG-1 pack headers and MPEG-1 style PES are skipped and counted in
    `skipped_bytes`, as are bytes that are not PS at all: the demuxer then scans for the
    next start code (00 00 01 and a stream id of 0xB9 or more) and carries on.
    Audio PES whose PSM stream_type is not G.711 (AAC, G.722...) are dropped and counted
    in `unsupported_audio_packets`. A PSM with a wrong CRC is still used (devices get it
    wrong) and counted in `psm_crc_errors`.

    Every audio stream (0xC0-0xDF) is emitted, in stream order; GB28181 devices send one.

    `feed` raises nothing on any bytes: damage costs audio, never an exception (only
    the constructor raises, PsError, for a max_buffer too small). The bytes held
    between calls never exceed `max_buffer`; an audio PES or PSM too big for it is
    skipped by its length and counted in `skipped_bytes`.
    """

    def __init__(self, max_buffer: int = 256 * 1024) -> None:
        if max_buffer < _MIN_BUFFER:
            raise PsError(
                f"max_buffer must be at least {_MIN_BUFFER} bytes (got {max_buffer}); "
                "the default of 262144 holds any PES"
            )
        self._max_buffer = max_buffer
        self._buf = bytearray()
        self._pos = 0
        self._skip = 0  # bytes of a unit being skipped by its length that are still to come
        self._skip_is_garbage = False  # count those bytes in skipped_bytes
        self._stream_types: dict[int, int] = {}  # audio stream_id -> stream_type, latest PSM
        self._law: Law | None = None
        # Bytes thrown away as not understood: garbage, MPEG-1, units too big to hold.
        self.skipped_bytes = 0
        # Program stream maps whose CRC_32 was wrong (used all the same).
        self.psm_crc_errors = 0
        # Audio PES dropped because the PSM gives a stream_type that is not G.711.
        self.unsupported_audio_packets = 0

    @property
    def law(self) -> Law | None:
        """The law of the first G.711 audio stream in the latest PSM; None before any."""
        return self._law

    @property
    def max_buffer(self) -> int:
        """The most bytes held between `feed` calls."""
        return self._max_buffer

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for a unit still incomplete (at most `max_buffer`)."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> list[PsAudio]:
        """Take the next bytes of the stream; return the audio PES they completed, in order."""
        out: list[PsAudio] = []
        view = memoryview(data).cast("B")
        taken = 0
        total = len(view)
        buf = self._buf
        while True:
            room = self._max_buffer - len(buf)
            if room <= 0:
                # Unreachable while every unit we wait for fits in max_buffer (they all
                # do); kept so that a broken invariant drops a byte instead of looping.
                self._pos += 1
                self.skipped_bytes += 1
            else:
                if taken >= total:
                    break
                piece = view[taken : taken + room]
                taken += len(piece)
                if self._skip and not buf:
                    # Skipping a video PES: do not copy what we would throw away.
                    drop = min(self._skip, len(piece))
                    self._skip -= drop
                    if self._skip_is_garbage:
                        self.skipped_bytes += drop
                    piece = piece[drop:]
                buf += piece
            self._parse(out)
            del buf[: self._pos]  # compact once per slice of at most max_buffer bytes
            self._pos = 0
        return out

    # The parser: consumes whole units from self._buf at self._pos, stops at an incomplete one.

    def _parse(self, out: list[PsAudio]) -> None:
        buf = self._buf
        pos = self._pos
        end = len(buf)
        try:
            while True:
                if self._skip:
                    drop = min(self._skip, end - pos)
                    pos += drop
                    self._skip -= drop
                    if self._skip_is_garbage:
                        self.skipped_bytes += drop
                    if self._skip:
                        return
                left = end - pos
                if left < 4:
                    return
                stream_id = buf[pos + 3]
                if (
                    buf[pos] != 0
                    or buf[pos + 1] != 0
                    or buf[pos + 2] != 1
                    or stream_id < _FIRST_STREAM_ID
                ):
                    found = buf.find(_START, pos + 1)
                    # Without a start code keep the last 2 bytes: they may begin one.
                    resume = end - 2 if found < 0 else found
                    self.skipped_bytes += resume - pos
                    pos = resume
                    continue
                if stream_id == _PACK:
                    if left < 5:
                        return
                    mark = buf[pos + 4]
                    if mark & 0xC0 == 0x40:  # MPEG-2: '01' before the SCR
                        if left < _PACK_HEADER_SIZE:
                            return
                        size = _PACK_HEADER_SIZE + (buf[pos + 13] & 0x07)
                        if left < size:
                            return
                        pos += size
                    elif mark & 0xF0 == 0x20:  # MPEG-1: '0010' before the SCR
                        self._skip = _MPEG1_PACK_HEADER_SIZE
                        self._skip_is_garbage = True
                    else:
                        pos += 1
                        self.skipped_bytes += 1
                    continue
                if stream_id == _END_CODE:
                    pos += 4
                    continue
                if left < 6:
                    return
                size = 6 + (buf[pos + 4] << 8 | buf[pos + 5])
                if stream_id == _PSM or _is_audio(stream_id):
                    if size > self._max_buffer:
                        self._skip = size
                        self._skip_is_garbage = True
                        continue
                    if _is_audio(stream_id):
                        if left < 9:
                            return
                        if buf[pos + 6] & 0xC0 != 0x80 or 9 + buf[pos + 8] > size:
                            # MPEG-1 PES syntax, or a header that does not fit its length
                            self._skip = size
                            self._skip_is_garbage = True
                            continue
                    if left < size:
                        return
                    if stream_id == _PSM:
                        self._read_psm(buf, pos, size)
                    else:
                        self._read_audio(buf, pos, size, stream_id, out)
                    pos += size
                    continue
                # System header, video, padding, private and other streams: not needed.
                self._skip = size
                self._skip_is_garbage = False
        finally:
            self._pos = pos

    def _read_psm(self, buf: bytearray, pos: int, size: int) -> None:
        """Take the audio stream types from a complete PSM of `size` bytes at `pos`."""
        end = pos + size - 4  # the CRC_32 closes the map
        if end < pos + 12:
            return  # too short to hold the fixed fields: ignore it
        if crc32_mpeg2(memoryview(buf)[pos : pos + size]) != 0:
            self.psm_crc_errors += 1
        at = pos + 10 + (buf[pos + 8] << 8 | buf[pos + 9])  # past the program descriptors
        if at + 2 > end:
            return
        map_end = min(end, at + 2 + (buf[at] << 8 | buf[at + 1]))
        at += 2
        stream_types: dict[int, int] = {}
        law: Law | None = None
        while at + 4 <= map_end:
            stream_type = buf[at]
            stream_id = buf[at + 1]
            if _is_audio(stream_id):
                stream_types[stream_id] = stream_type
                if law is None:
                    law = _STREAM_TYPE_LAW.get(stream_type)
            at += 4 + (buf[at + 2] << 8 | buf[at + 3])
        self._stream_types = stream_types
        self._law = law

    def _read_audio(
        self, buf: bytearray, pos: int, size: int, stream_id: int, out: list[PsAudio]
    ) -> None:
        """Emit the payload of a complete MPEG-2 audio PES of `size` bytes at `pos`."""
        header_end = pos + 9 + buf[pos + 8]
        if header_end >= pos + size:
            return  # no payload
        stream_type = self._stream_types.get(stream_id)
        if stream_type is None:
            law = self._law
        else:
            law = _STREAM_TYPE_LAW.get(stream_type)
            if law is None:
                self.unsupported_audio_packets += 1
                return
        pts = None
        if buf[pos + 7] & 0x80 and buf[pos + 8] >= 5:
            pts = decode_pts(buf, pos + 9)
        out.append(PsAudio(law, bytes(buf[header_end : pos + size]), pts))
