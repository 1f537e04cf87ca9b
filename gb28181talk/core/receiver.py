"""The receive path of one talk session: the device's audio in two-way talk, into the sinks.

Bytes from the device are counted always; in two-way talk
(``params.receive``) they are deframed (:class:`FrameDecoder` detects RFC
4571, interleaved or bare RTP), RTCP multiplexed on the connection is
skipped, the SSRC policy is applied (``strict``/``learn``/``off``, with an
optional violation limit that ends the session), the payload is
depacketized by the payload table (raw G.711, or MPEG-PS demuxed), decoded
to PCM16 and handed to every :class:`IAudioSink`.  A sink that fails is
logged, never allowed to break the session.  No reactor here: the clock is
anything with ``seconds()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.logger import Logger

from gb28181talk.core.params import EndReason, SessionParams, SsrcPolicy
from gb28181talk.errors import FramingError, MediaError
from gb28181talk.interfaces import IAudioSink
from gb28181talk.media import g711
from gb28181talk.media.framing import FrameDecoder
from gb28181talk.media.law import Law
from gb28181talk.media.payload import by_payload_type
from gb28181talk.media.ps import PsDemuxer
from gb28181talk.media.rtp import parse_rtp

log = Logger()

_RTCP_PACKET_TYPES = frozenset(range(200, 205))
"""SR, RR, SDES, BYE, APP: second byte of an RTCP packet (RFC 3550, RFC 5761 demux)."""


class Receiver:
    """Deframes, checks, depacketizes and decodes what the device sends; feeds the sinks."""

    def __init__(
        self,
        params: SessionParams,
        sinks: Sequence[IAudioSink],
        end: Callable[[EndReason, str], Any],
        clock: Any,
        *,
        name: str = "",
    ) -> None:
        self.sinks = list(sinks)
        self.name = name
        self._end = end
        self._clock = clock
        self._two_way = params.receive
        self._policy = params.ssrc_policy
        self._expected_ssrc = params.key.ssrc
        self._max_violations = params.max_ssrc_violations
        self._law = params.law
        self._receive_timeout = params.receive_timeout
        self._decoder: FrameDecoder | None = None
        self._whole_packets = False
        self._ps_demuxer: PsDemuxer | None = None
        self._learned_ssrc: int | None = None
        self.last_received_at = 0.0
        self.packets_received = 0
        self.bytes_received = 0
        self.invalid_packets = 0
        self.rtcp_packets = 0
        self.ssrc_violations = 0

    def start(self, now: float, whole_packets: bool = False) -> None:
        """A device is connected: from now on its RTP is heard (in two-way talk).

        ``whole_packets``: every piece of data is one packet (datagrams), nothing to deframe.
        """
        self.last_received_at = now
        self._whole_packets = whole_packets
        if self._two_way:
            self._decoder = FrameDecoder()

    def stop(self) -> None:
        """The session ended: nothing more is heard; every sink hears the end."""
        self._decoder = None
        for sink in self.sinks:
            self._guarded(sink.audio_ended)

    def check_timeout(self, now: float) -> None:
        """End the session if the device sent nothing for ``receive_timeout`` seconds."""
        timeout = self._receive_timeout
        if timeout is not None and now - self.last_received_at > timeout:
            self._end(EndReason.RECEIVE_TIMEOUT, f"no audio from the device for {timeout:g} s")

    def data_received(self, data: bytes) -> None:
        """Bytes from the device: RTP audio in two-way talk, else counted and dropped."""
        self.bytes_received += len(data)
        decoder = self._decoder
        if decoder is None:
            return
        if self._whole_packets:
            self._packet(data)
            return
        try:
            packets = decoder.feed(data)
        except FramingError as error:
            self._end(EndReason.ERROR, f"the device sent data that is not RTP over TCP: {error}")
            return
        for packet in packets:
            self._packet(packet)
            if self._decoder is None:  # the session ended on this packet
                return

    def _packet(self, packet: bytes) -> None:
        if len(packet) > 1 and packet[1] in _RTCP_PACKET_TYPES:
            # RTCP multiplexed on the talk connection (RFC 5761): not audio, and its
            # sender SSRC must not be learnt or counted as a violation.
            self.rtcp_packets += 1
            return
        try:
            rtp = parse_rtp(packet)
        except MediaError:
            self.invalid_packets += 1
            return
        if self._policy is not SsrcPolicy.OFF and not self._ssrc_accepted(rtp.ssrc):
            return
        self.packets_received += 1
        self.last_received_at = self._clock.seconds()
        payload = by_payload_type(rtp.payload_type)
        if payload is not None and payload.law is not None:
            self._hear(payload.law, rtp.payload, rtp.timestamp)
            return
        if self._ps_demuxer is None:
            self._ps_demuxer = PsDemuxer()
        for audio in self._ps_demuxer.feed(rtp.payload):
            self._hear(audio.law or self._law, audio.payload, rtp.timestamp)

    def _hear(self, law: Law, audio: bytes, timestamp: int) -> None:
        pcm = g711.decode(law, audio)
        for sink in self.sinks:
            self._guarded(sink.audio_received, pcm, timestamp)

    def _ssrc_accepted(self, ssrc: int) -> bool:
        """The SSRC policy; the SDP's own SSRC (``y=``) is always accepted.

        Under ``learn`` the first SSRC is adopted; if the SDP's SSRC appears later, the
        receiver switches to it (the device has picked up ``y=``), so only an SSRC that
        is neither the SDP's nor the one heard until then counts as a violation.
        """
        expected = self._expected_ssrc
        if ssrc == expected:
            learned = self._learned_ssrc
            if learned != expected and self._policy is SsrcPolicy.LEARN:
                self._learned_ssrc = expected
                if learned is not None:
                    log.info(
                        "talk session {id}: device now sends the SDP's SSRC {want}; "
                        "switched to it from SSRC {old} (policy learn)",
                        id=self.name,
                        want=expected,
                        old=learned,
                    )
            return True
        if self._policy is SsrcPolicy.LEARN:
            if self._learned_ssrc is None:
                self._learned_ssrc = ssrc
                log.info(
                    "talk session {id}: device sends SSRC {got}, SDP said {want}; "
                    "adopted it until the SDP's appears (policy learn)",
                    id=self.name,
                    got=ssrc,
                    want=expected,
                )
            if ssrc == self._learned_ssrc:
                return True
            expected = self._learned_ssrc
        self.ssrc_violations += 1
        limit = self._max_violations
        if limit is not None and self.ssrc_violations >= limit:
            self._end(
                EndReason.SSRC_VIOLATION,
                f"{self.ssrc_violations} packets with SSRC {ssrc}, expected {expected}",
            )
        return False

    def _guarded(self, call: Any, *args: Any) -> None:
        """Call a sink; its failure is logged, never allowed to break the session."""
        try:
            call(*args)
        except Exception:
            log.failure("talk session {id}: a sink failed", id=self.name)
