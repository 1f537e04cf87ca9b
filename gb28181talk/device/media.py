"""The device side's media core: what a camera or loudspeaker hears on its talk connection.

Sans-I/O (no Twisted, no sockets, no clock of its own): the owner hands in bytes from the
talk connection (`receive`) or whole RTP packets such as UDP datagrams (`receive_packet`),
each with its arrival time in seconds.  The core deframes them (RFC 4571, no prefix or `$`
interleaving, detected unless given), skips multiplexed RTCP, keeps the stream's figures
(`StreamFigures`: packets, loss, duplicates, reordering, SSRCs, payload types, jitter),
unpacks raw G.711 or MPEG-PS by the payload table, and keeps the G.711 it heard, decoded to
PCM16 or written as a WAV file on demand.  What the device says back is `DeviceVoice`'s job.

How deep it looks at each packet is its `Depth`, so one class serves a device that checks
every sample and a load generator draining thousands of connections:

* `Depth.BYTES`: counts bytes and arrival times, nothing else (drained devices);
* `Depth.HEADERS`: deframes and reads the 12-byte RTP header with one struct unpack; with
  ``timeline=True`` that is all it does per packet (it appends an `Arrival`), and the figures
  are worked out on demand, for any window of time (sampled devices of a benchmark);
* `Depth.AUDIO`: parses each packet fully, unpacks and keeps its audio (tests, the simulator).

Garbage never raises anything but a `MediaError`: a byte stream that is not framed RTP raises
`FramingError` (and every later `receive` the same: the stream is lost); a frame that is not
RTP is counted in ``invalid`` (or raises `RtpError` when ``strict``); PS damage costs audio.
"""

from __future__ import annotations

import enum
import os
import struct

from gb28181talk.device.figures import (
    Arrival,
    Gap,
    StreamAccount,
    StreamFigures,
    account_arrivals,
    arrival_gaps,
)
from gb28181talk.errors import FramingError, RtpError
from gb28181talk.media import g711, wav
from gb28181talk.media.framing import DEFAULT_MAX_FRAME, FrameDecoder, Framing
from gb28181talk.media.law import Law
from gb28181talk.media.payload import Packaging, by_payload_type
from gb28181talk.media.ps import PsDemuxer
from gb28181talk.media.rtp import RtpPacket, parse_rtp

__all__ = ["Depth", "DeviceMedia"]

_HEADER = struct.Struct("!BBHII")
_RTCP_PACKET_TYPES = frozenset(range(200, 205))
"""SR, RR, SDES, BYE, APP: the second byte of an RTCP packet (RFC 5761 demultiplexing)."""
_DYNAMIC = range(96, 128)
_new_arrival = tuple.__new__
"""Builds an `Arrival` without NamedTuple's keyword handling: a third of the cost per packet."""
_PS_CLOCK = 90_000
_G711_CLOCK = 8000


class Depth(enum.Enum):
    """How deep the core looks at each packet: bytes only, RTP headers, or the audio too."""

    BYTES = "bytes"
    HEADERS = "headers"
    AUDIO = "audio"


def _unpacking(payload_type: int) -> tuple[Packaging | None, Law | None, int]:
    """How to unpack a payload type: (raw, PS or None if not G.711, its law, its clock rate).

    The payload table decides (8 PCMA, 0 PCMU, 96 PS); any other dynamic type is taken as PS,
    as devices number their PS stream as they like.
    """
    payload = by_payload_type(payload_type)
    if payload is not None:
        return payload.packaging, payload.law, payload.clock_rate
    if payload_type in _DYNAMIC:
        return Packaging.PS, None, _PS_CLOCK
    return None, None, _G711_CLOCK


class DeviceMedia:
    """One received talk stream, fed bytes or packets with their arrival times (seconds).

    ``framing`` None detects it from the first bytes.  ``clock_rate`` None takes the RTP clock
    from the first packet's payload type (8,000 Hz for G.711, 90,000 Hz for PS).  ``law`` is
    the law of PS audio whose stream map names none (A-law if not given).  ``keep_packets``
    keeps every parsed `RtpPacket` (AUDIO depth); ``timeline`` keeps every packet's `Arrival`
    (HEADERS and AUDIO), which windowed figures and `gaps` need.
    """

    def __init__(
        self,
        depth: Depth = Depth.AUDIO,
        framing: Framing | None = None,
        *,
        clock_rate: int | None = None,
        law: Law | None = None,
        keep_packets: bool = False,
        timeline: bool = False,
        strict: bool = False,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        if not isinstance(depth, Depth):
            raise ValueError(f"depth must be a Depth member, got {depth!r}")
        if clock_rate is not None and (not isinstance(clock_rate, int) or clock_rate <= 0):
            raise ValueError(f"clock rate must be a positive number of Hz, got {clock_rate!r}")
        self._depth = depth
        self._decoder = FrameDecoder(framing, max_frame)
        self._clock_rate = clock_rate
        self._law = law
        self._strict = strict
        self._account: StreamAccount | None = None
        self._arrivals: list[Arrival] | None = (
            [] if timeline and depth is not Depth.BYTES else None
        )
        self._packets: list[RtpPacket] | None = (
            [] if keep_packets and depth is Depth.AUDIO else None
        )
        self._audio: list[tuple[Law | None, bytearray]] = []
        self._samples = 0
        self._demuxer: PsDemuxer | None = None
        self._error: FramingError | None = None
        self.stream_bytes = 0
        """Bytes received, framing included (datagrams: their whole size)."""
        self.frames = 0
        """Frames (or datagrams) completed: RTP, RTCP and invalid ones alike."""
        self.invalid = 0
        """Frames that are not RTP version 2 (HEADERS depth: shorter than 12 bytes or not v2)."""
        self.rtcp = 0
        """RTCP packets multiplexed on the connection (RFC 5761), skipped."""
        self.unsupported = 0
        """RTP packets of a payload type that carries no G.711 (AUDIO depth), not decoded."""
        self.first_arrival: float | None = None
        """When the first bytes came."""
        self.last_arrival: float | None = None
        """When the latest bytes came."""
        self._feed = None if depth is Depth.BYTES else self._decoder.feed
        self._take = {
            Depth.BYTES: self._take_nothing,
            Depth.HEADERS: self._take_header,
            Depth.AUDIO: self._take_audio,
        }[depth]

    # -- what it is told ------------------------------------------------------------------

    def receive(self, data: bytes | bytearray | memoryview, at: float) -> int:
        """Bytes from the talk connection that arrived at ``at``; the frames they completed.

        FramingError if the stream is not framed RTP; the stream is then lost and every later
        call raises the same error.
        """
        if not data:
            return 0
        self.stream_bytes += len(data)
        if self.first_arrival is None:
            self.first_arrival = at
        self.last_arrival = at
        feed = self._feed
        if feed is None:
            return 0
        try:
            frames = feed(data)
        except FramingError as error:
            self._error = error
            raise
        if not frames:
            return 0
        take = self._take
        for frame in frames:
            take(frame, at)
        self.frames += len(frames)
        return len(frames)

    def receive_packet(self, packet: bytes | bytearray | memoryview, at: float) -> None:
        """One whole RTP packet (a UDP datagram) that arrived at ``at``."""
        self.stream_bytes += len(packet)
        if self.first_arrival is None:
            self.first_arrival = at
        self.last_arrival = at
        self.frames += 1
        self._take(bytes(packet), at)

    def end_of_stream(self, at: float) -> int:
        """The connection ended: take the last raw (unprefixed) packet, drop a partial frame."""
        if self._depth is Depth.BYTES or self._error is not None:
            return 0
        frames = self._decoder.flush()
        for frame in frames:
            self._take(frame, at)
        self.frames += len(frames)
        return len(frames)

    # -- per packet, by depth -------------------------------------------------------------

    def _take_nothing(self, packet: bytes, at: float) -> None:
        """BYTES depth: packets are not looked at."""

    def _take_header(self, packet: bytes, at: float) -> None:
        """HEADERS depth: one unpack of the fixed header; the timeline or the account."""
        if len(packet) < 12:
            self._invalid(packet)
            return
        first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(packet)
        if first & 0xC0 != 0x80:
            self._invalid(packet)
            return
        if second in _RTCP_PACKET_TYPES:
            self.rtcp += 1
            return
        if self._arrivals is not None:
            self._arrivals.append(
                _new_arrival(Arrival, (at, sequence, timestamp, ssrc, second & 0x7F, len(packet)))
            )
        else:
            self._account_for(second & 0x7F).add(
                sequence, timestamp, ssrc, second & 0x7F, len(packet), at
            )

    def _take_audio(self, packet: bytes, at: float) -> None:
        """AUDIO depth: parse, account, keep the packet and its audio."""
        if len(packet) > 1 and packet[1] in _RTCP_PACKET_TYPES:
            self.rtcp += 1
            return
        try:
            rtp = parse_rtp(packet)
        except RtpError:
            self.invalid += 1
            if self._strict:
                raise
            return
        payload_type = rtp.payload_type
        if self._arrivals is not None:
            self._arrivals.append(
                Arrival(at, rtp.sequence, rtp.timestamp, rtp.ssrc, payload_type, len(packet))
            )
        else:
            self._account_for(payload_type).add(
                rtp.sequence, rtp.timestamp, rtp.ssrc, payload_type, len(packet), at
            )
        if self._packets is not None:
            self._packets.append(rtp)
        packaging, law, _clock = _unpacking(payload_type)
        if packaging is Packaging.RAW:
            self._keep(law, rtp.payload)
        elif packaging is Packaging.PS:
            if self._demuxer is None:
                self._demuxer = PsDemuxer()
            for audio in self._demuxer.feed(rtp.payload):
                self._keep(audio.law, audio.payload)
        else:
            self.unsupported += 1

    def _invalid(self, packet: bytes) -> None:
        """Count a frame that is not RTP; raise in strict mode."""
        self.invalid += 1
        if self._strict:
            raise RtpError(f"a {len(packet)}-byte frame is not an RTP version 2 packet")

    def _account_for(self, payload_type: int) -> StreamAccount:
        """The live account, made on the first packet with its payload type's clock."""
        account = self._account
        if account is None:
            account = self._account = StreamAccount(self._clock_for(payload_type))
        return account

    def _clock_for(self, payload_type: int) -> int:
        """The RTP clock rate given, else the one of this payload type."""
        if self._clock_rate is not None:
            return self._clock_rate
        return _unpacking(payload_type)[2]

    def _keep(self, law: Law | None, g711_bytes: bytes) -> None:
        """Append G.711 code words of ``law`` (None: PS that named none) to the audio heard."""
        if not g711_bytes:
            return
        self._samples += len(g711_bytes)
        if self._audio and self._audio[-1][0] is law:
            self._audio[-1][1].extend(g711_bytes)
        else:
            self._audio.append((law, bytearray(g711_bytes)))

    # -- what it tells --------------------------------------------------------------------

    @property
    def depth(self) -> Depth:
        """How deep each packet is looked at."""
        return self._depth

    @property
    def framing(self) -> Framing | None:
        """The framing given or detected; None until the first bytes decided it."""
        return self._decoder.mode

    @property
    def wanted(self) -> int:
        """Bytes that complete the frame in hand; 0 when unknown (no prefix) or BYTES depth.

        A timed reader reads exactly this many so each read carries one packet's timestamp.
        """
        return 0 if self._feed is None else self._decoder.wanted

    @property
    def error(self) -> FramingError | None:
        """The framing error that ended the stream, or None."""
        return self._error

    @property
    def arrivals(self) -> list[Arrival]:
        """Every packet's `Arrival`, in arrival order (empty unless ``timeline``)."""
        return self._arrivals if self._arrivals is not None else []

    @property
    def packets(self) -> list[RtpPacket]:
        """Every RTP packet parsed, in arrival order (empty unless ``keep_packets``)."""
        return self._packets if self._packets is not None else []

    @property
    def demuxer(self) -> PsDemuxer | None:
        """The PS demuxer, once a PS packet came (its counters tell what PS was damaged)."""
        return self._demuxer

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio heard (8,000 G.711 samples a second)."""
        return self._samples / _G711_CLOCK

    def figures(self, since: float | None = None, until: float | None = None) -> StreamFigures:
        """The stream's figures; with ``since``/``until``, of the packets that came then.

        A window needs the timeline (``timeline=True``); ValueError without it.
        """
        arrivals = self._arrivals
        if arrivals is not None:
            clock = self._clock_for(arrivals[0].payload_type) if arrivals else _G711_CLOCK
            return account_arrivals(arrivals, clock, since, until)
        if since is not None or until is not None:
            raise ValueError("figures over a window of time need the timeline (timeline=True)")
        if self._account is None:
            return StreamFigures()
        return self._account.figures()

    def gaps(self, since: float | None = None, until: float | None = None) -> list[Gap]:
        """Each arrival gap against its RTP timestamp gap (needs ``timeline=True``)."""
        arrivals = self._arrivals
        if arrivals is None:
            raise ValueError("arrival gaps need the timeline (timeline=True)")
        if not arrivals:
            return []
        return arrival_gaps(arrivals, self._clock_for(arrivals[0].payload_type), since, until)

    def g711(self) -> list[tuple[Law, bytes]]:
        """The G.711 heard, in arrival order, as (law, code words) runs of one law each."""
        fallback = self._law or Law.ALAW
        return [(law or fallback, bytes(chunk)) for law, chunk in self._audio]

    def pcm16(self, law: Law | None = None) -> bytes:
        """The audio heard as 8 kHz mono PCM16; ``law`` decodes all of it with that law."""
        return b"".join(g711.decode(law or run_law, chunk) for run_law, chunk in self.g711())

    def wav_bytes(self, law: Law | None = None) -> bytes:
        """The audio heard as a complete 8 kHz mono PCM16 WAV file."""
        return wav.wav_bytes(self.pcm16(law))

    def write_wav(self, path: str | os.PathLike[str], law: Law | None = None) -> None:
        """Write the audio heard to ``path`` as an 8 kHz mono PCM16 WAV file."""
        wav.write_wav(path, self.pcm16(law))
