"""RTP over a TCP byte stream: RFC 4571 length prefix, RTSP-style `$` interleaving, or none.

Sans-I/O: `frame*` add the framing to one packet; `FrameDecoder` splits an incoming byte stream,
delivered in arbitrary chunks, back into packets, detecting the framing if asked to.

Detection, on the first bytes of a stream (v2 = a byte whose top two bits are 10, the first
byte of any RTP/RTCP version 2 packet):

* byte 0 is v2 -> NONE (raw RTP back to back).  An RFC 4571 length can only start with a v2
  byte if it is >= 32768, which only a max_frame >= 32768 allows; raw RTP is preferred then.
* byte 0 is `$` (0x24) -> INTERLEAVED if byte 4 is v2 and the length at bytes 2-3 is 1..max_frame;
  RFC 4571 if byte 2 is v2 (0x24 is then the high byte of a length of 9216..9471).  When both
  fit, RFC 4571 wins; they can only both fit if max_frame >= 32768, as byte 2 being v2 makes the
  interleaved length >= 32768.  Five bytes are awaited before deciding.
* otherwise -> RFC 4571 if byte 2 is v2 and the length is 1..max_frame.
* anything else is a FramingError that shows the bytes seen.
"""

from __future__ import annotations

import enum
import struct

from gb28181talk.errors import FramingError

__all__ = [
    "DEFAULT_MAX_FRAME",
    "FrameDecoder",
    "Framing",
    "frame",
    "frame_interleaved",
    "frame_rfc4571",
]

DEFAULT_MAX_FRAME = 16 * 1024
"""Cap on one frame's size: far above any audio packet (180 ms of G.711 is 1,452 bytes)."""

_MAX_LENGTH = 0xFFFF
_MIN_MAX_FRAME = 20
_RTP_HEADER_SIZE = 12
_DOLLAR = 0x24
_LENGTH = struct.Struct("!H")
_INTERLEAVED_HEADER = struct.Struct("!BBH")


class Framing(enum.Enum):
    """How RTP packets are delimited on a TCP connection."""

    RFC4571 = "rfc4571"
    """A 2-byte big-endian length before each packet (RFC 4571); the GB28181 norm."""
    INTERLEAVED = "interleaved"
    """`$`, a channel byte, a 2-byte length (RFC 2326 §10.12); even channels RTP, odd RTCP."""
    NONE = "none"
    """Raw RTP packets back to back, as some Hikvision firmware sends and expects."""


def _is_v2(byte: int) -> bool:
    """True if byte can be the first byte of an RTP/RTCP version 2 packet."""
    return byte & 0xC0 == 0x80


def frame_rfc4571(packet: bytes | bytearray | memoryview) -> bytes:
    """Prefix packet with its 2-byte big-endian length (RFC 4571)."""
    size = len(packet)
    if not 0 < size <= _MAX_LENGTH:
        raise FramingError(
            f"cannot frame a {size}-byte packet with RFC 4571: the length must be 1..65535"
        )
    return _LENGTH.pack(size) + packet


def frame_interleaved(packet: bytes | bytearray | memoryview, channel: int = 0) -> bytes:
    """Prefix packet with `$`, the channel and its 2-byte length (RTSP interleaving)."""
    size = len(packet)
    if not 0 < size <= _MAX_LENGTH:
        raise FramingError(
            f"cannot frame a {size}-byte packet as interleaved: the length must be 1..65535"
        )
    if not isinstance(channel, int) or not 0 <= channel <= 255:
        raise FramingError(f"interleaved channel must be 0..255, got {channel!r}")
    return _INTERLEAVED_HEADER.pack(_DOLLAR, channel, size) + packet


def frame(packet: bytes | bytearray | memoryview, mode: Framing, channel: int = 0) -> bytes:
    """Frame packet for mode; NONE returns the packet's bytes unchanged."""
    if mode is Framing.RFC4571:
        return frame_rfc4571(packet)
    if mode is Framing.INTERLEAVED:
        return frame_interleaved(packet, channel)
    if mode is Framing.NONE:
        return bytes(packet)
    raise FramingError(f"unknown framing {mode!r}; use a Framing member")


class FrameDecoder:
    """Incremental: bytes arrive in arbitrary chunks (down to 1 byte); whole RTP packets come out.

    The result never depends on how the stream was chunked.  Garbage raises FramingError; the
    decoder is then dead and every later `feed` raises the same error (packets completed earlier
    in that same chunk are lost with it).  `buffered` never exceeds max_frame + 4.  Length-framed
    payloads are not checked to be RTP: `parse_rtp` is the caller's next step.

    NONE mode has no length field: a packet ends where the next one's 12-byte header begins
    (version 2, same SSRC, sequence + 1), so each packet is emitted only once the next packet's
    header has arrived: one packet of latency.  `flush()` releases the last one at end of
    stream.  The largest raw packet accepted is max_frame - 8 bytes, which keeps that packet
    plus the next header within max_frame + 4.
    """

    def __init__(self, mode: Framing | None = None, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if mode is not None and not isinstance(mode, Framing):
            raise FramingError(f"unknown framing {mode!r}; use a Framing member or None")
        if not isinstance(max_frame, int) or not _MIN_MAX_FRAME <= max_frame <= _MAX_LENGTH:
            raise FramingError(
                f"max_frame must be {_MIN_MAX_FRAME}..{_MAX_LENGTH} bytes, got {max_frame!r}"
            )
        self._mode = mode
        self._max_frame = max_frame
        self._buffer = bytearray()
        self._consumed = 0  # stream offset of self._buffer[0], for error messages
        self._error: FramingError | None = None
        self._rtcp_frames = 0
        self._scan_from = 0  # NONE mode: first candidate start not yet ruled out, buffer-relative

    @property
    def mode(self) -> Framing | None:
        """The framing forced or detected; None until the first bytes have decided it."""
        return self._mode

    @property
    def max_frame(self) -> int:
        """The cap on one frame's size in bytes."""
        return self._max_frame

    @property
    def buffered(self) -> int:
        """Bytes held now (a partial frame); at most max_frame + 4."""
        return len(self._buffer)

    @property
    def wanted(self) -> int:
        """Bytes that complete the frame in hand (or the next header); 0 if unknown (NONE).

        A reader that wants one packet per read (and so one kernel timestamp per packet)
        asks the socket for exactly this many bytes.
        """
        buffer = self._buffer
        held = len(buffer)
        mode = self._mode
        if mode is Framing.RFC4571:
            if held < 2:
                return 2 - held
            return 2 + ((buffer[0] << 8) | buffer[1]) - held
        if mode is Framing.INTERLEAVED:
            if held < 4:
                return 4 - held
            return 4 + ((buffer[2] << 8) | buffer[3]) - held
        if mode is None:
            return max(1, (5 if held and buffer[0] == _DOLLAR else 3) - held)
        return 0

    @property
    def rtcp_frames(self) -> int:
        """Interleaved frames on odd (RTCP) channels, dropped and counted."""
        return self._rtcp_frames

    @property
    def error(self) -> FramingError | None:
        """The error that killed this decoder, or None while it is alive."""
        return self._error

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """The RTP packets completed by data (interleaved: even-channel payloads only)."""
        if self._error is not None:
            raise self._error.with_traceback(None)
        if not data:
            return []
        buffer = self._buffer
        buffer += data
        if self._mode is Framing.RFC4571:
            # Fast path for a reader that reads a frame's length, then its body: a frame still
            # incomplete, or exactly one complete frame held.  Anything else (an invalid length
            # among them) takes the general path below.
            held = len(buffer)
            if held < 2:
                return []
            length = (buffer[0] << 8) | buffer[1]
            if 0 < length <= self._max_frame:
                if held < 2 + length:
                    return []
                if held == 2 + length:
                    packet = bytes(buffer[2:])
                    buffer.clear()
                    self._consumed += held
                    return [packet]
        try:
            if self._mode is None:
                self._mode = self._detect()
                if self._mode is None:
                    return []
            if self._mode is Framing.RFC4571:
                end, packets = self._split_rfc4571()
            elif self._mode is Framing.INTERLEAVED:
                end, packets = self._split_interleaved()
            else:
                end, packets = self._split_raw()
        except FramingError as error:
            self._die(error)
            raise
        if end:
            del buffer[:end]
            self._consumed += end
            self._scan_from = max(0, self._scan_from - end)
        return packets

    def flush(self) -> list[bytes]:
        """End of stream: in NONE mode return the held last packet; a partial frame is dropped.

        The buffer is emptied and the mode kept, so feeding may go on with a new packet.
        """
        if self._error is not None:
            raise self._error.with_traceback(None)
        held = bytes(self._buffer)
        self._consumed += len(self._buffer)
        self._buffer.clear()
        self._scan_from = 0
        if self._mode is Framing.NONE and len(held) >= _RTP_HEADER_SIZE:
            return [held]
        return []

    def _die(self, error: FramingError) -> None:
        """Remember the error for every later call and free the buffer."""
        self._error = error
        self._buffer.clear()
        self._scan_from = 0

    def _fail(self, what: str) -> FramingError:
        """A FramingError naming the framing mode and what was seen."""
        mode = self._mode.value if self._mode is not None else "undetected"
        return FramingError(f"{mode} RTP stream: {what}; the connection carries garbage")

    def _detect(self) -> Framing | None:
        """The framing the first buffered bytes show, None if more bytes are needed."""
        head = self._buffer
        cap = self._max_frame
        if _is_v2(head[0]):
            return Framing.NONE
        if head[0] == _DOLLAR:
            if len(head) < 5:
                return None
            rfc_length = (head[0] << 8) | head[1]
            if _is_v2(head[2]) and rfc_length <= cap:
                return Framing.RFC4571
            il_length = (head[2] << 8) | head[3]
            if _is_v2(head[4]) and 0 < il_length <= cap:
                return Framing.INTERLEAVED
        else:
            if len(head) < 3:
                return None
            rfc_length = (head[0] << 8) | head[1]
            if _is_v2(head[2]) and 0 < rfc_length <= cap:
                return Framing.RFC4571
        seen = head[:5].hex(" ")
        raise self._fail(
            f"cannot detect the framing from the first bytes {seen}: not raw RTP (byte 0 is not "
            f"RTP v2), not RFC 4571 (needs a length 1..{cap} then an RTP v2 byte), not "
            f"interleaved (needs '$', channel, length 1..{cap}, then an RTP v2 byte)"
        )

    def _split_rfc4571(self) -> tuple[int, list[bytes]]:
        """Complete frames from the buffer: (bytes consumed, packets)."""
        buffer = self._buffer
        size = len(buffer)
        cap = self._max_frame
        pos = 0
        packets: list[bytes] = []
        with memoryview(buffer) as view:
            while size - pos >= 2:
                length = (buffer[pos] << 8) | buffer[pos + 1]
                if not 0 < length <= cap:
                    raise self._fail(
                        f"RFC 4571 frame length {length} at stream offset {self._consumed + pos} "
                        f"is outside 1..{cap} (max_frame)"
                    )
                end = pos + 2 + length
                if end > size:
                    break
                packets.append(bytes(view[pos + 2 : end]))
                pos = end
        return pos, packets

    def _split_interleaved(self) -> tuple[int, list[bytes]]:
        """Complete `$` frames from the buffer: (bytes consumed, even-channel payloads)."""
        buffer = self._buffer
        size = len(buffer)
        cap = self._max_frame
        pos = 0
        packets: list[bytes] = []
        with memoryview(buffer) as view:
            while pos < size:
                if buffer[pos] != _DOLLAR:
                    raise self._fail(
                        f"interleaved frame at stream offset {self._consumed + pos} starts with "
                        f"0x{buffer[pos]:02x}, not '$' (0x24): out of sync"
                    )
                if size - pos < 4:
                    break
                channel = buffer[pos + 1]
                length = (buffer[pos + 2] << 8) | buffer[pos + 3]
                if not 0 < length <= cap:
                    raise self._fail(
                        f"interleaved frame length {length} on channel {channel} at stream "
                        f"offset {self._consumed + pos} is outside 1..{cap} (max_frame)"
                    )
                end = pos + 4 + length
                if end > size:
                    break
                if channel & 1:
                    self._rtcp_frames += 1
                else:
                    packets.append(bytes(view[pos + 4 : end]))
                pos = end
        return pos, packets

    def _split_raw(self) -> tuple[int, list[bytes]]:
        """Raw RTP back to back: split where the next header (v2, same SSRC, seq + 1) begins."""
        buffer = self._buffer
        size = len(buffer)
        longest = self._max_frame - 8
        pos = 0
        packets: list[bytes] = []
        with memoryview(buffer) as view:
            while size - pos >= _RTP_HEADER_SIZE:
                if not _is_v2(buffer[pos]):
                    raise self._fail(
                        f"byte 0x{buffer[pos]:02x} at stream offset {self._consumed + pos} "
                        "does not start an RTP version 2 header"
                    )
                ssrc = bytes(view[pos + 8 : pos + 12])
                want = (((buffer[pos + 2] << 8) | buffer[pos + 3]) + 1) & 0xFFFF
                want_high, want_low = want >> 8, want & 0xFF
                limit = pos + longest  # the last start a next packet may have
                start = max(self._scan_from, pos + _RTP_HEADER_SIZE)
                found = -1
                while start <= limit:
                    hit = buffer.find(ssrc, start + 8, limit + _RTP_HEADER_SIZE)
                    if hit < 0:
                        break
                    candidate = hit - 8
                    if (
                        _is_v2(buffer[candidate])
                        and buffer[candidate + 2] == want_high
                        and buffer[candidate + 3] == want_low
                    ):
                        found = candidate
                        break
                    start = candidate + 1
                if found < 0:
                    if size - pos >= longest + _RTP_HEADER_SIZE:
                        raise self._fail(
                            f"no next RTP header (SSRC {ssrc.hex()}, sequence {want}) within "
                            f"{longest} bytes of the packet at stream offset "
                            f"{self._consumed + pos}: a raw packet may be at most max_frame - 8 "
                            f"= {longest} bytes"
                        )
                    # Every start whose 12-byte header is wholly here has been ruled out.
                    self._scan_from = max(pos + _RTP_HEADER_SIZE, size - _RTP_HEADER_SIZE + 1)
                    break
                packets.append(bytes(view[pos:found]))
                pos = found
                self._scan_from = 0
        return pos, packets
