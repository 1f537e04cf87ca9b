"""RTP packets (RFC 3550): parse, build, serial-number arithmetic and G.711 packetizing.

Sans-I/O: bytes in, values out.  Everything invalid raises `RtpError` with the offending values.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from gb28181talk.errors import RtpError

__all__ = [
    "FRAMED_RTP_HEADER",
    "RTP_HEADER",
    "RTP_VERSION",
    "Packetizer",
    "RtpPacket",
    "pack_header_into",
    "parse_rtp",
    "peek_ssrc",
    "seq_diff",
    "ts_diff",
]

RTP_VERSION = 2
RTP_HEADER = struct.Struct("!BBHII")
"""The 12-byte fixed header: V/P/X/CC, M/PT, sequence, timestamp, SSRC."""

FRAMED_RTP_HEADER = struct.Struct("!HBBHII")
"""RFC 4571's 2-byte length, then the 12-byte fixed header: what goes before a payload on TCP."""

_EXTENSION_HEADER = struct.Struct("!HH")
_SSRC = struct.Struct("!I")
_U16 = 0xFFFF
_U32 = 0xFFFFFFFF
_MAX_CSRCS = 15


def _check_uint(name: str, value: object, maximum: int) -> None:
    """Raise RtpError unless `value` is an int in 0..maximum; say which field and the range."""
    if not isinstance(value, int) or not 0 <= value <= maximum:
        raise RtpError(f"RTP {name} must be an integer 0..{maximum}, got {value!r}")


def _bad_version(first: int) -> RtpError:
    """The error for a first byte whose version bits are not 2."""
    return RtpError(f"RTP version {first >> 6} (first byte 0x{first:02x}); only version 2 is valid")


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet as values; `encode()` builds its wire bytes, `parse_rtp` the reverse.

    `extension` is (16-bit profile id, data) with len(data) a multiple of 4 (RFC 3550 §5.3.1).
    `padding` is the number of padding bytes appended, including the final count byte:
    0 for none, else 1..255.
    """

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None
    padding: int = 0

    def encode(self) -> bytes:
        """The packet's bytes on the wire; RtpError if a field is out of range."""
        _check_uint("payload type", self.payload_type, 127)
        _check_uint("sequence number", self.sequence, _U16)
        _check_uint("timestamp", self.timestamp, _U32)
        _check_uint("SSRC", self.ssrc, _U32)
        _check_uint("padding", self.padding, 255)
        csrcs = self.csrcs
        if len(csrcs) > _MAX_CSRCS:
            raise RtpError(f"RTP allows at most {_MAX_CSRCS} CSRCs, got {len(csrcs)}")
        for csrc in csrcs:
            _check_uint("CSRC", csrc, _U32)
        first = 0x80 | len(csrcs)
        if self.padding:
            first |= 0x20
        if self.extension is not None:
            first |= 0x10
        parts = [RTP_HEADER.pack(first, (0x80 if self.marker else 0) | self.payload_type,
                                 self.sequence, self.timestamp, self.ssrc)]
        if csrcs:
            parts.append(struct.pack(f"!{len(csrcs)}I", *csrcs))
        if self.extension is not None:
            profile, data = self.extension
            _check_uint("extension profile", profile, _U16)
            if len(data) % 4 or len(data) // 4 > _U16:
                raise RtpError(
                    f"RTP extension data must be a multiple of 4 bytes and at most "
                    f"{_U16 * 4} bytes, got {len(data)}"
                )
            parts.append(_EXTENSION_HEADER.pack(profile, len(data) // 4))
            parts.append(bytes(data))
        parts.append(bytes(self.payload))
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes((self.padding,)))
        return b"".join(parts)


def parse_rtp(data: bytes | bytearray | memoryview) -> RtpPacket:
    """Parse one whole RTP packet; RtpError if it is not valid RTP version 2."""
    view = memoryview(data).cast("B") if isinstance(data, memoryview) else memoryview(data)
    size = len(view)
    if size < RTP_HEADER.size:
        raise RtpError(f"RTP packet of {size} bytes is shorter than the 12-byte fixed header")
    first, second, sequence, timestamp, ssrc = RTP_HEADER.unpack_from(view)
    if first >> 6 != RTP_VERSION:
        raise _bad_version(first)
    count = first & 0x0F
    offset = RTP_HEADER.size + 4 * count
    if size < offset:
        raise RtpError(f"RTP packet of {size} bytes is truncated: {count} CSRCs need {offset}")
    csrcs: tuple[int, ...] = struct.unpack_from(f"!{count}I", view, 12) if count else ()
    extension: tuple[int, bytes] | None = None
    if first & 0x10:
        if size < offset + 4:
            raise RtpError(
                f"RTP packet of {size} bytes is truncated: the extension header needs {offset + 4}"
            )
        profile, words = _EXTENSION_HEADER.unpack_from(view, offset)
        end = offset + 4 + 4 * words
        if size < end:
            raise RtpError(
                f"RTP packet of {size} bytes is truncated: the {words}-word extension needs {end}"
            )
        extension = (profile, bytes(view[offset + 4 : end]))
        offset = end
    padding = 0
    end = size
    if first & 0x20:
        padding = view[size - 1]
        if padding == 0:
            raise RtpError("RTP padding bit is set but the padding count (last byte) is 0")
        if padding > size - offset:
            raise RtpError(
                f"RTP padding count {padding} exceeds the {size - offset} bytes after the header"
            )
        end = size - padding
    return RtpPacket(
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        payload=bytes(view[offset:end]),
        marker=bool(second & 0x80),
        csrcs=csrcs,
        extension=extension,
        padding=padding,
    )


def peek_ssrc(data: bytes | bytearray | memoryview) -> int:
    """The SSRC of an RTP packet without a full parse, for routing packets to sessions."""
    if len(data) < RTP_HEADER.size:
        raise RtpError(f"RTP packet of {len(data)} bytes is shorter than the 12-byte fixed header")
    first = data[0]
    if first >> 6 != RTP_VERSION:
        raise _bad_version(first)
    return int(_SSRC.unpack_from(data, 8)[0])


def seq_diff(a: int, b: int) -> int:
    """Signed distance a - b between 16-bit sequence numbers, in -32768..32767 (wraps at 65535)."""
    return ((a - b + 0x8000) & _U16) - 0x8000


def ts_diff(a: int, b: int) -> int:
    """Signed distance a - b between 32-bit RTP timestamps, in -2**31..2**31-1."""
    return ((a - b + 0x80000000) & _U32) - 0x80000000


def pack_header_into(
    buf: bytearray,
    offset: int,
    marker: bool,
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
) -> None:
    """Write a 12-byte RTP v2 header (no CSRC, extension or padding) into buf at offset.

    The per-packet hot path: no allocation.  RtpError on out-of-range fields or a short buffer.
    """
    if not 0 <= payload_type <= 127:
        raise RtpError(f"RTP payload type must be 0..127, got {payload_type}")
    try:
        RTP_HEADER.pack_into(buf, offset, 0x80, (0x80 if marker else 0) | payload_type,
                             sequence, timestamp, ssrc)
    except struct.error as exc:
        raise RtpError(
            f"cannot pack RTP header at offset {offset} of a {len(buf)}-byte buffer "
            f"(sequence={sequence}, timestamp={timestamp}, ssrc={ssrc}): {exc}"
        ) from None


_PACK_HEADER = RTP_HEADER.pack
_PACK_FRAMED_HEADER = FRAMED_RTP_HEADER.pack
_PACK_HEADER_INTO = RTP_HEADER.pack_into
_PACK_FRAMED_HEADER_INTO = FRAMED_RTP_HEADER.pack_into


class Packetizer:
    """Turns a G.711 byte stream (1 byte per sample, 8 kHz) into RTP packets of a fixed duration.

    Invariant: the next packet's timestamp is first_timestamp plus every sample pushed or
    skipped so far (mod 2**32), so the timestamp always tracks the audio's time line.

    Two ways in, one sequence/timestamp/marker state: :meth:`push`, :meth:`flush` and
    :meth:`skip` build :class:`RtpPacket` values from audio bytes; :meth:`header` and
    :meth:`framed_header` are the sender's per-packet fast path, packing just the header
    bytes for a payload the caller already holds (raw G.711 or an MPEG-PS pack) and moving
    the timestamp on by the ticks it spans (160 per 20 ms at 8 kHz, 1800 at PS's 90 kHz);
    :meth:`header_into` and :meth:`framed_header_into` pack the same bytes in place, in
    front of a payload shared by many sessions.
    """

    def __init__(
        self,
        ssrc: int,
        payload_type: int,
        packet_ms: int = 20,
        clock_rate: int = 8000,
        first_sequence: int = 0,
        first_timestamp: int = 0,
    ) -> None:
        if (
            not isinstance(packet_ms, int)
            or isinstance(packet_ms, bool)
            or not 20 <= packet_ms <= 180
            or packet_ms % 20
        ):
            raise RtpError(
                f"packet duration {packet_ms!r} ms is not supported; "
                "use 20 to 180 ms in steps of 20 (20, 40, ..., 180)"
            )
        if not isinstance(clock_rate, int) or clock_rate <= 0 or clock_rate * packet_ms % 1000:
            raise RtpError(
                f"clock rate {clock_rate!r} Hz does not give a whole number of samples "
                f"per {packet_ms} ms packet; use 8000 for G.711"
            )
        _check_uint("SSRC", ssrc, _U32)
        _check_uint("payload type", payload_type, 127)
        _check_uint("sequence number", first_sequence, _U16)
        _check_uint("timestamp", first_timestamp, _U32)
        self._ssrc = ssrc
        self._payload_type = payload_type
        self._packet_ms = packet_ms
        self._samples = clock_rate * packet_ms // 1000
        self._sequence = first_sequence
        self._timestamp = first_timestamp
        self._marker = True
        self._last_marker = True
        self._marked_type = 0x80 | payload_type
        self._pending = bytearray()

    @property
    def samples_per_packet(self) -> int:
        """Samples (= G.711 bytes) in each full packet: 160 for 20 ms at 8 kHz."""
        return self._samples

    @property
    def packet_ms(self) -> int:
        """The packet duration in milliseconds."""
        return self._packet_ms

    @property
    def next_sequence(self) -> int:
        """The sequence number the next packet will carry."""
        return self._sequence

    @property
    def next_timestamp(self) -> int:
        """The timestamp the next packet will carry (buffered samples come first)."""
        return self._timestamp

    @property
    def buffered(self) -> int:
        """Samples held back until a whole packet is available."""
        return len(self._pending)

    def _emit(self, payload: bytes) -> RtpPacket:
        """Build the next packet around payload and advance sequence and timestamp."""
        packet = RtpPacket(
            payload_type=self._payload_type,
            sequence=self._sequence,
            timestamp=self._timestamp,
            ssrc=self._ssrc,
            payload=payload,
            marker=self._marker,
        )
        self._marker = False
        self._sequence = (self._sequence + 1) & _U16
        self._timestamp = (self._timestamp + len(payload)) & _U32
        return packet

    def push(self, audio: bytes | bytearray | memoryview) -> list[RtpPacket]:
        """Packets for every whole packet duration now available; the remainder waits."""
        pending = self._pending
        pending += audio
        size = self._samples
        whole = len(pending) - len(pending) % size
        if not whole:
            return []
        with memoryview(pending) as view:
            packets = [self._emit(bytes(view[start : start + size]))
                       for start in range(0, whole, size)]
        del pending[:whole]
        return packets

    def flush(self) -> list[RtpPacket]:
        """Emit the buffered remainder as a final short packet (empty list if nothing is held)."""
        if not self._pending:
            return []
        packet = self._emit(bytes(self._pending))
        self._pending.clear()
        return [packet]

    def header(self, size: int, ticks: int) -> bytes:
        """The next packet's 12-byte header (for ``size`` payload bytes); advances by ``ticks``.

        The per-packet fast path: the bytes are those of ``RtpPacket(...).encode()`` without
        its payload.  The sequence moves on by one, the timestamp by ``ticks``, the marker
        clears.  ``size`` is not written (plain RTP carries no length); it keeps the
        signature of :meth:`framed_header`, so a sender holds either one.
        """
        marker = self._last_marker = self._marker
        sequence = self._sequence
        timestamp = self._timestamp
        self._marker = False
        self._sequence = (sequence + 1) & _U16
        self._timestamp = (timestamp + ticks) & _U32
        return _PACK_HEADER(0x80, self._marked_type if marker else self._payload_type,
                            sequence, timestamp, self._ssrc)

    def framed_header(self, size: int, ticks: int) -> bytes:
        """As :meth:`header`, behind RFC 4571's 2-byte length of the packet (14 bytes)."""
        marker = self._last_marker = self._marker
        sequence = self._sequence
        timestamp = self._timestamp
        self._marker = False
        self._sequence = (sequence + 1) & _U16
        self._timestamp = (timestamp + ticks) & _U32
        return _PACK_FRAMED_HEADER(12 + size, 0x80,
                                   self._marked_type if marker else self._payload_type,
                                   sequence, timestamp, self._ssrc)

    def header_into(self, packet: bytearray, ticks: int) -> None:
        """As :meth:`header`, packed in place into the first 12 bytes of ``packet``.

        ``packet`` holds the payload after those 12 bytes: one buffer per frame shared by
        every session of the same law (each packs its own header, then sends it whole).
        """
        marker = self._last_marker = self._marker
        sequence = self._sequence
        timestamp = self._timestamp
        self._marker = False
        self._sequence = (sequence + 1) & _U16
        self._timestamp = (timestamp + ticks) & _U32
        _PACK_HEADER_INTO(packet, 0, 0x80, self._marked_type if marker else self._payload_type,
                          sequence, timestamp, self._ssrc)

    def framed_header_into(self, packet: bytearray, ticks: int) -> None:
        """As :meth:`framed_header`, in place into the first 14 bytes of ``packet``.

        The RFC 4571 length is that of the rest of ``packet`` (12-byte header + payload).
        """
        marker = self._last_marker = self._marker
        sequence = self._sequence
        timestamp = self._timestamp
        self._marker = False
        self._sequence = (sequence + 1) & _U16
        self._timestamp = (timestamp + ticks) & _U32
        _PACK_FRAMED_HEADER_INTO(packet, 0, len(packet) - 2, 0x80,
                                 self._marked_type if marker else self._payload_type,
                                 sequence, timestamp, self._ssrc)

    def take_back(self) -> None:
        """The packet whose header was packed last was never sent (dropped): reuse its number.

        The next packet carries that sequence number and marker again, so a receiver sees
        no sequence gap; the timestamp keeps its advance, since that audio's time passed.
        """
        self._sequence = (self._sequence - 1) & _U16
        self._marker = self._last_marker

    def skip(self, samples: int) -> None:
        """A gap of `samples` in the audio: drop the buffered remainder, move the timestamp on.

        The timestamp advances by the dropped remainder plus `samples`, so it keeps the audio's
        time line; the sequence does not jump (RFC 3550 §5.1); the next packet has the marker
        bit set, as the first packet of a talk spurt.
        """
        if not isinstance(samples, int) or samples < 0:
            raise RtpError(f"cannot skip {samples!r} samples; give a count >= 0")
        self._timestamp = (self._timestamp + len(self._pending) + samples) & _U32
        self._pending.clear()
        self._marker = True
