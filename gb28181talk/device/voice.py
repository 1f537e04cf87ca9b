"""What a device says back on a two-way talk connection: its audio as framed RTP.

Sans-I/O: PCM16 (or G.711) in, wire bytes out.  The audio goes through the media layer's
`Packetizer` (sequence, timestamp, marker), raw or wrapped in MPEG-PS by `PsMuxer` (then at
the PS payload's 90 kHz clock), and is framed for TCP (RFC 4571 by default, or none, or `$`
interleaving) or left whole for UDP datagrams.  A simulator's quirks (a wrong SSRC, no
length prefix, PS instead of raw) are its constructor's arguments.
"""

from __future__ import annotations

from gb28181talk.media import g711
from gb28181talk.media.framing import Framing, frame
from gb28181talk.media.law import Law
from gb28181talk.media.payload import Packaging, payload_for
from gb28181talk.media.ps import PsMuxer
from gb28181talk.media.rtp import Packetizer, RtpPacket

__all__ = ["DeviceVoice"]

_U32 = 0xFFFFFFFF


class DeviceVoice:
    """Packetizes a device's voice: G.711 of ``law``, raw or PS, ``packet_ms`` per packet.

    ``payload_type`` None takes the payload table's (8 PCMA, 0 PCMU, 96 PS).  Only whole
    packets leave `speak`; `flush` sends the remainder as one short packet.
    """

    def __init__(
        self,
        ssrc: int,
        law: Law = Law.ALAW,
        *,
        packaging: Packaging = Packaging.RAW,
        packet_ms: int = 20,
        framing: Framing = Framing.RFC4571,
        payload_type: int | None = None,
        first_sequence: int = 0,
        first_timestamp: int = 0,
    ) -> None:
        payload = payload_for(packaging, law)
        self._law = law
        self._framing = framing
        self._payload_type = payload.payload_type if payload_type is None else payload_type
        self._muxer = PsMuxer(law) if packaging is Packaging.PS else None
        self._clock_rate = payload.clock_rate
        self._packetizer = Packetizer(
            ssrc, self._payload_type, packet_ms, first_sequence=first_sequence,
            first_timestamp=0 if self._muxer is not None else first_timestamp,
        )
        self._first_timestamp = first_timestamp
        self.packets_sent = 0
        self.bytes_sent = 0
        """Bytes of RTP produced, framing included."""

    @property
    def framing(self) -> Framing:
        """How the packets are framed for TCP."""
        return self._framing

    @property
    def payload_type(self) -> int:
        """The payload type the packets carry."""
        return self._payload_type

    @property
    def next_sequence(self) -> int:
        """The sequence number of the next packet."""
        return self._packetizer.next_sequence

    def packets(self, pcm16: bytes) -> list[RtpPacket]:
        """The RTP packets for the whole packet durations now available (PCM16 in)."""
        return self.packets_g711(g711.encode(self._law, pcm16))

    def packets_g711(self, code_words: bytes) -> list[RtpPacket]:
        """The RTP packets for the whole packet durations now available (G.711 in)."""
        return self._finish(self._packetizer.push(code_words))

    def speak(self, pcm16: bytes) -> bytes:
        """The framed wire bytes of every whole packet now available (PCM16 in)."""
        return self._wire(self.packets(pcm16))

    def speak_g711(self, code_words: bytes) -> bytes:
        """The framed wire bytes of every whole packet now available (G.711 in)."""
        return self._wire(self.packets_g711(code_words))

    def datagrams(self, pcm16: bytes) -> list[bytes]:
        """The packets now available as UDP datagrams (no framing)."""
        datagrams = [packet.encode() for packet in self.packets(pcm16)]
        self.packets_sent += len(datagrams)
        self.bytes_sent += sum(map(len, datagrams))
        return datagrams

    def flush(self) -> bytes:
        """The remainder (less than one packet) as one short framed packet, or nothing."""
        return self._wire(self._finish(self._packetizer.flush()))

    def _finish(self, packets: list[RtpPacket]) -> list[RtpPacket]:
        """Raw: the packets as they are.  PS: each payload muxed, re-stamped at 90 kHz."""
        muxer = self._muxer
        if muxer is None:
            return packets
        finished = []
        for packet in packets:
            samples = packet.timestamp  # the packetizer's count of samples, started at 0
            ticks = samples * self._clock_rate // 8000
            finished.append(
                RtpPacket(
                    payload_type=packet.payload_type,
                    sequence=packet.sequence,
                    timestamp=(self._first_timestamp + ticks) & _U32,
                    ssrc=packet.ssrc,
                    payload=muxer.mux(packet.payload, ticks),
                    marker=packet.marker,
                )
            )
        return finished

    def _wire(self, packets: list[RtpPacket]) -> bytes:
        """The packets encoded and framed, counted as sent."""
        data = b"".join(frame(packet.encode(), self._framing) for packet in packets)
        self.packets_sent += len(packets)
        self.bytes_sent += len(data)
        return data
