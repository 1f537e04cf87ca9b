"""RTP over UDP into a live source, so ffmpeg, GStreamer or another media server can feed us.

``ffmpeg -re -i in.wav -ar 8000 -ac 1 -acodec pcm_alaw -f rtp rtp://127.0.0.1:PORT``
feeds an ``rtp`` source listening on PORT.  Accepted payload types: 8 (PCMA),
0 (PCMU) and 96 (MPEG-PS carrying G.711, as GB28181 devices send it).

Packets are put back in sequence order with a small reorder window; a
duplicate or a packet older than what was already played is dropped and
counted; a gap that the window cannot fill is skipped (counted as lost, and
filled with as much silence as the missing packets held, up to 200 ms, so
the audio after it keeps its place).  A new SSRC is a new sender: sequence
tracking starts over.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from gb28181talk.errors import RtpError, SourceError
from gb28181talk.media import g711
from gb28181talk.media.law import Law
from gb28181talk.media.payload import PCMA, PCMU, PS, by_payload_type
from gb28181talk.media.ps import PsDemuxer
from gb28181talk.media.rtp import parse_rtp, seq_diff
from gb28181talk.sources.base import integer_field, string_field
from gb28181talk.sources.live import LIVE_SPEC_FIELDS, LiveSource, live_options

log = Logger()

PT_PCMU = PCMU.payload_type
PT_PCMA = PCMA.payload_type
PT_PS = PS.payload_type
PAYLOAD_TYPES = {payload.payload_type: payload.encoding_name for payload in (PCMU, PCMA, PS)}
"""Payload types an RTP source accepts and what each carries."""

MAX_MISORDER = 100
"""A packet further behind than this (in sequence numbers) means the sender restarted."""

MAX_DROPOUT = 3000
"""A jump further ahead than this means the sender restarted rather than lost packets."""

MAX_GAP_FILL_SAMPLES = 1600
"""Most silence (200 ms at 8 kHz) put in place of lost packets."""

_RECENT = 64  # sequence numbers remembered to tell a duplicate from a late packet

SPEC_FIELDS = ("port", "interface", *LIVE_SPEC_FIELDS)
"""The API body's fields of an ``rtp`` source, beside app, stream and kind."""


class _RtpIngestProtocol(DatagramProtocol):
    """Thin adapter: hands each datagram to its source."""

    def __init__(self, source: RtpIngestSource) -> None:
        self.source = source

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.source.packet_received(datagram, addr)


class RtpIngestSource(LiveSource):
    """A live source fed by RTP packets on a UDP port (PCMA, PCMU or PS-wrapped G.711).

    ``reactor`` provides ``listenUDP``; ``port`` 0 takes any free port (read
    the bound one from :attr:`port`).  ``reorder_window`` is how many packets
    may wait for a missing one before it is given up as lost; when the pacer
    would otherwise underrun, the waiting packets are played at once.
    """

    def __init__(
        self,
        app: str,
        stream: str,
        reactor: Any,
        port: int = 0,
        interface: str = "127.0.0.1",
        max_backlog_ms: int = 2000,
        prefill_ms: int = 60,
        reorder_window: int = 4,
    ) -> None:
        super().__init__(app, stream, "rtp", max_backlog_ms, prefill_ms)
        if not 0 <= reorder_window <= 64:
            raise SourceError(f"reorder_window {reorder_window!r} is out of range; use 0 to 64")
        if not 0 <= port <= 65535:
            raise SourceError(f"rtp port {port!r} is out of range; use 0 (any free) to 65535")
        self.interface = interface
        self.reorder_window = reorder_window
        self._ssrc: int | None = None
        self._expected: int | None = None
        self._pending: dict[int, Any] = {}
        self._recent: deque[int] = deque(maxlen=_RECENT)
        self._demuxer = PsDemuxer()
        self._last_samples = 0
        self.sender: Any = None
        self.packets = 0
        self.invalid = 0
        self.unsupported = 0
        self.duplicates = 0
        self.late = 0
        self.lost = 0
        self.reordered = 0
        self.ssrc_changes = 0
        self.resyncs = 0
        self.stopped: Deferred[None] | None = None
        """Fires once the UDP port is closed (the port is free), after :meth:`close`."""
        try:
            self._listener: Any = reactor.listenUDP(
                port, _RtpIngestProtocol(self), interface=interface
            )
        except CannotListenError as e:
            raise SourceError(
                f"cannot listen for RTP on UDP {interface}:{port}: {e.socketError}; "
                "pick another port, or 0 for any free one"
            ) from e
        except (OSError, ValueError) as e:  # a bad interface string, for one
            raise SourceError(
                f"cannot listen for RTP on UDP {interface!r}:{port}: {e}; "
                "give an IP address of this host as interface"
            ) from e
        self._port = int(self._listener.getHost().port)
        log.info(
            "rtp source {app}/{stream} listening on udp {interface}:{port}",
            app=app, stream=stream, interface=interface, port=self.port,
        )

    @property
    def port(self) -> int:
        """The UDP port actually bound."""
        return self._port

    @property
    def ssrc(self) -> int | None:
        """SSRC of the current sender, None before the first packet."""
        return self._ssrc

    # -- packets in

    def packet_received(self, datagram: bytes, addr: Any = None) -> None:
        """Parse, order and decode one datagram; bad or unwanted packets are only counted."""
        if self._closed:
            return
        try:
            packet = parse_rtp(datagram)
        except RtpError:
            self.invalid += 1
            return
        if packet.payload_type not in PAYLOAD_TYPES:
            self.unsupported += 1
            return
        self.packets += 1
        if packet.ssrc != self._ssrc:
            if self._ssrc is not None:
                self.ssrc_changes += 1
                log.info(
                    "rtp source {app}/{stream}: new sender ssrc {ssrc:08x} from {addr}",
                    app=self.app, stream=self.stream, ssrc=packet.ssrc, addr=addr,
                )
            self._restart(packet.ssrc)
            self.sender = addr
        seq = packet.sequence
        if self._expected is None:
            self._expected = seq
        distance = seq_diff(seq, self._expected)
        if distance < -MAX_MISORDER or distance > MAX_DROPOUT:
            self.resyncs += 1
            self._flush_pending()
            self._expected = seq
            distance = 0
        if distance < 0:
            if seq in self._recent:
                self.duplicates += 1
            else:
                self.late += 1
            return
        if distance == 0:
            self._play(packet)
            self._drain()
            return
        if seq in self._pending:
            self.duplicates += 1
            return
        self.reordered += 1
        self._pending[seq] = packet
        if len(self._pending) > self.reorder_window:
            self._skip_gap()

    def _restart(self, ssrc: int) -> None:
        """A new sender: forget the old one's sequence numbers and PS state."""
        self._ssrc = ssrc
        self._expected = None
        self._pending.clear()
        self._recent.clear()
        self._demuxer = PsDemuxer()

    def _drain(self) -> None:
        """Play the waiting packets that now follow in order."""
        pending = self._pending
        while pending and self._expected in pending:
            self._play(pending.pop(self._expected))  # type: ignore[arg-type]

    def _skip_gap(self) -> None:
        """Give up on the missing packets before the earliest waiting one."""
        assert self._expected is not None
        expected = self._expected
        first = min(self._pending, key=lambda s: seq_diff(s, expected))
        gap = seq_diff(first, expected)
        self.lost += gap
        fill = min(gap * self._last_samples, MAX_GAP_FILL_SAMPLES)
        if fill:
            self.feed_pcm(bytes(2 * fill))
        self._expected = first
        # The gap's packets are past now: a straggler counts as late, not played.
        self._drain()

    def _flush_pending(self) -> None:
        """Play every waiting packet in order, skipping the gaps between them."""
        while self._pending:
            self._skip_gap()

    def _on_short(self) -> None:
        """About to underrun: waiting any longer for a missing packet only costs audio."""
        if self._pending:
            self._flush_pending()

    def _play(self, packet: Any) -> None:
        """Decode a packet that is next in order and feed its audio."""
        self._expected = (packet.sequence + 1) & 0xFFFF
        self._recent.append(packet.sequence)
        payload = by_payload_type(packet.payload_type)
        if payload is not None and payload.law is not None:  # raw PCMA or PCMU
            pcm = g711.decode(payload.law, packet.payload)
        else:
            parts = [
                # No PSM named the law yet: GB28181 audio is A-law unless said otherwise.
                g711.decode(audio.law or Law.ALAW, audio.payload)
                for audio in self._demuxer.feed(packet.payload)
            ]
            pcm = b"".join(parts)
            if not pcm:
                return
        self._last_samples = len(pcm) // 2
        self.feed_pcm(pcm)

    # -- IAudioSource

    def describe(self) -> dict[str, Any]:
        """Live counters plus the UDP port and the RTP packet counters."""
        info = super().describe()
        sender = self.sender
        if isinstance(sender, tuple) and len(sender) >= 2:
            sender = f"{sender[0]}:{sender[1]}"
        info.update(
            port=self._port,
            listening=not self._closed,
            interface=self.interface,
            ssrc=self._ssrc,
            sender=sender,
            packets=self.packets,
            invalid=self.invalid,
            unsupported=self.unsupported,
            duplicates=self.duplicates,
            late=self.late,
            lost=self.lost,
            reordered=self.reordered,
            ssrc_changes=self.ssrc_changes,
            resyncs=self.resyncs,
        )
        return info

    def close(self) -> None:
        """Stop listening and end the source."""
        if not self._closed:
            self.stopped = maybeDeferred(self._listener.stopListening)
            log.info(
                "rtp source {app}/{stream} stopped listening", app=self.app, stream=self.stream
            )
        super().close()


def rtp_from_spec(app: str, stream: str, spec: Mapping[str, Any], reactor: Any) -> RtpIngestSource:
    """An RtpIngestSource listening as the API body's rtp fields say (``reactor``: IReactorUDP)."""
    port = integer_field(spec, "port", 0, range(0, 65536), "rtp")
    interface = string_field(spec, "interface", "127.0.0.1", "rtp")
    backlog, prefill = live_options(spec, "rtp")
    if reactor is None:
        raise SourceError("an rtp source needs a reactor to listen with; none was given")
    return RtpIngestSource(app, stream, reactor, port, interface, backlog, prefill)
