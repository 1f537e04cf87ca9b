"""The send path of one talk session: pre-roll, packetizing, PS, the device link, send figures.

The sender is the pacer's listener itself (``frame_ready``/``source_ended``),
so a frame costs no hop between the pacer and the packet.  While the session
listens it keeps the newest frames as pre-roll (1 s by default); once a
device link is given (:meth:`Sender.start_sending`) it sends the pre-roll at
once and then every frame as it comes.  Packets are built by the media
layer's :class:`~gb28181talk.media.rtp.Packetizer` (its header fast path),
PS packs by :class:`~gb28181talk.media.ps.PsMuxer`.  The lifecycle is never
consulted per packet: ``start_sending`` and ``stop`` set plain attributes.
No reactor here: time comes in with each tick.

Once streaming at a packet boundary (and with no receive timeout to watch per
frame), the sender sets its ``due`` slot and the pacer calls it only on the
frames that end its packets (:meth:`Sender.packet_due`), with the payload
joined once for every sender of that law and packet length.  On a TCP link
(one with ``write_packet``) and raw G.711 that payload is a buffer with room
in front: the packetizer packs this session's header in place and the writer
sends the buffer whole, so a packet costs three Python calls (``packet_due``,
``framed_header_into``, ``write_packet``) and one ``send``.  A gap in the
packet, or the source's end, is replayed from the pacer's frame history
through the per-frame path (the pacer calls every due sender on a gap, whose
short packet goes at once, as on the per-frame path).
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from gb28181talk.core.pacer import DueSlot, SourceTap
from gb28181talk.core.params import EndReason, SessionParams
from gb28181talk.interfaces import FRAME_MS
from gb28181talk.media import g711
from gb28181talk.media.framing import Framing
from gb28181talk.media.payload import Packaging
from gb28181talk.media.ps import PsMuxer
from gb28181talk.media.rtp import Packetizer

if TYPE_CHECKING:
    from gb28181talk.core.transport import IDeviceLink

log = Logger()


class Sender:
    """Turns the source's frames into RTP for one device, counting what it sends."""

    def __init__(
        self,
        params: SessionParams,
        end: Callable[[EndReason, str], Any],
        *,
        rng_seed: int | None = None,
        name: str = "",
    ) -> None:
        payload = params.payload
        seed = rng_seed if rng_seed is not None else secrets.randbits(48)
        self.packetizer = Packetizer(
            ssrc=params.key.ssrc,
            payload_type=params.rtp_payload_type,
            packet_ms=params.packet_ms,
            clock_rate=payload.clock_rate,
            first_sequence=seed & 0xFFFF,
            first_timestamp=(seed >> 16) & 0xFFFFFFFF,
        )
        self.name = name
        self.watch: Callable[[float], Any] | None = None
        """Called with the tick's time after each frame while streaming (a receive timeout)."""
        self._end = end
        # Read on every frame: plain attributes, not looked up through params.
        self._law = params.law
        self._packet_ms = params.packet_ms
        self._frames_per_packet = params.packet_ms // FRAME_MS
        self._ticks_per_frame = payload.ticks(FRAME_MS)
        self._ticks_per_packet = self._ticks_per_frame * self._frames_per_packet
        # PS time is the muxer's own 33-bit clock, started at the first RTP timestamp and
        # moved on by the same ticks: it runs past the 32-bit RTP wrap instead of jumping back.
        self._ps_muxer = (
            PsMuxer(params.law, first_pts=self.packetizer.next_timestamp)
            if payload.packaging is Packaging.PS
            else None
        )
        self._preroll: deque[bytes | None] | None = deque(maxlen=params.preroll_ms // FRAME_MS)
        self._chunks: list[bytes] = []
        self._write: Callable[[bytes, bytes], bool] | None = None
        self._header: Callable[[int, int], bytes] | None = None
        self._write_packet: Callable[[bytearray], bool] | None = None
        self._header_into: Callable[[bytearray, int], None] | None = None
        self._room: int | None = None
        self.due: DueSlot | None = None
        """When the pacer calls :meth:`packet_due` instead of ``frame_ready`` (None: never)."""
        self._last_send_at: float | None = None
        self._jitter_total = 0.0
        self._jitter_count = 0
        self.jitter_max_ms = 0.0
        self.packets_sent = 0
        self.bytes_sent = 0
        self.preroll_packets = 0
        self.packets_dropped = 0

    @property
    def jitter_mean_ms(self) -> float:
        """Mean distance of live sends from the packet duration, in milliseconds."""
        return self._jitter_total / self._jitter_count if self._jitter_count else 0.0

    @property
    def sending(self) -> bool:
        """Whether a device link is set (the session streams)."""
        return self._write is not None

    # -- the pacer's listener ------------------------------------------------

    def frame_ready(self, tap: SourceTap) -> None:
        """Pacer: the source's next frame is current (kept as pre-roll until a device connects)."""
        try:
            frame = tap.g711(self._law)
            if self._write is None:
                if self._preroll is not None:
                    self._preroll.append(frame)
                return
            if frame is None:
                self._gap(tap.now, False)
            else:
                chunks = self._chunks
                chunks.append(frame)
                if len(chunks) >= self._frames_per_packet:
                    self._send(tap.now, False)
                    if self.watch is None and self._write is not None:
                        self._align(tap)
            if self.watch is not None:
                self.watch(tap.now)
        except Exception as error:
            self._failed(error)

    def packet_due(self, tap: SourceTap, payload: bytes | bytearray | None) -> None:
        """Pacer: this frame ends one of our packets; ``payload`` is its audio, None over a gap.

        The payload is shared with every sender of the same slot: as a bytearray (TCP, raw)
        this session's header is packed into its front and it is sent whole; as bytes it is
        muxed (PS) and sent behind a header as on the per-frame path.
        """
        try:
            if payload is None:  # a gap (or no payload): the frames since our last packet
                due = self.due
                every = self._frames_per_packet
                count = (tap.index - due.phase - 1) % every + 1 if due is not None else every
                self._replay(tap, tap.recent(count))
                return
            write_packet = self._write_packet
            if write_packet is None:
                if self._write is not None:
                    self._packet(payload, self._ticks_per_packet, tap.now, False)  # type: ignore[arg-type]
                return
            self._header_into(payload, self._ticks_per_packet)  # type: ignore[misc, arg-type]
            if not write_packet(payload):  # type: ignore[arg-type]
                self.packetizer.take_back()
                self.packets_dropped += 1
                return
            self.packets_sent += 1
            self.bytes_sent += len(payload)
            now = tap.now  # as _sent_live, inlined: this runs once per packet of every session
            last, self._last_send_at = self._last_send_at, now
            if last is not None:
                jitter = abs((now - last) * 1000 - self._packet_ms)
                self._jitter_total += jitter
                self._jitter_count += 1
                if jitter > self.jitter_max_ms:
                    self.jitter_max_ms = jitter
        except Exception as error:
            self._failed(error)

    def source_ended(self, tap: SourceTap) -> None:
        """Pacer: the source is finished; send what is pending and end."""
        due = self.due
        if due is not None and self._write is not None:
            # The frames since our last packet were not handed to us: take them now.
            pending = (tap.index - 1 - due.phase) % due.every
            if pending:
                self._replay(tap, tap.recent(pending + 1)[:-1], realign=False)
        if self._chunks and self._write is not None:
            self._send(tap.now, False)
        source = tap.source
        self._end(EndReason.SOURCE_ENDED, f"source {source.app}/{source.stream} ended")

    # -- set by the lifecycle ------------------------------------------------

    def start_sending(self, link: IDeviceLink) -> None:
        """A device is connected: send the pre-roll at once, then every frame as it comes."""
        packetizer = self.packetizer
        self._header = (
            packetizer.framed_header if link.framing is Framing.RFC4571 else packetizer.header
        )
        self._write = link.write
        write_packet = getattr(link, "write_packet", None)  # an optional IDeviceLink method
        if write_packet is not None and self._ps_muxer is None:
            framed = link.framing is Framing.RFC4571
            self._write_packet = write_packet
            self._header_into = packetizer.framed_header_into if framed else packetizer.header_into
            self._room = 14 if framed else 12
        preroll, self._preroll = self._preroll, None
        try:
            for frame in preroll or ():
                if self._write is None:  # ended while sending it
                    return
                if frame is None:
                    self._gap(0.0, True)
                    continue
                self._chunks.append(frame)
                if len(self._chunks) >= self._frames_per_packet:
                    self._send(0.0, True)
        except Exception as error:
            self._failed(error)

    def stop(self) -> None:
        """The session ended: nothing more is kept or sent."""
        self._write = None
        self._write_packet = None
        self._preroll = None
        self.watch = None
        self.due = None
        self._chunks.clear()

    # -- packets -------------------------------------------------------------

    def _align(self, tap: SourceTap) -> None:
        """A packet just ended on this frame: from now on be called only when one is due."""
        if self.due is None and isinstance(tap, SourceTap):
            every = self._frames_per_packet
            self.due = DueSlot(every, tap.index % every, self._law, self._room)
            tap.regroup()

    def _replay(self, tap: SourceTap, frames: list[bytes | None], realign: bool = True) -> None:
        """Frames the per-frame path would have seen one by one (a gap, or the source's end)."""
        now = tap.now
        law = self._law
        for pcm in frames:
            if self._write is None:  # ended meanwhile
                return
            if pcm is None:
                self._gap(now, False)
                continue
            self._chunks.append(g711.encode(law, pcm))
            if len(self._chunks) >= self._frames_per_packet:
                self._send(now, False)
        due = self.due
        if realign and due is not None:
            if self._chunks:  # the boundary moved into a packet: every frame until the next
                self.due = None
                tap.regroup()
            elif due.phase != tap.index % due.every:  # a gap: the next packet starts after it
                self.due = due._replace(phase=tap.index % due.every)
                tap.regroup()

    def _gap(self, now: float, preroll: bool) -> None:
        """A gap (live source underrun): send what we have, keep time, mark the restart."""
        if self._chunks:
            self._send(now, preroll)
        self.packetizer.skip(self._ticks_per_frame)
        if self._ps_muxer is not None:
            self._ps_muxer.skip(self._ticks_per_frame)

    def _send(self, now: float, preroll: bool) -> None:
        write = self._write
        if write is None:
            return
        chunks = self._chunks
        count = len(chunks)
        audio = chunks[0] if count == 1 else b"".join(chunks)
        chunks.clear()
        self._packet(audio, count * self._ticks_per_frame, now, preroll)

    def _packet(self, audio: bytes, ticks: int, now: float, preroll: bool) -> None:
        """One packet of ``audio`` spanning ``ticks``: PS pack, header, write, figures."""
        write = self._write
        assert write is not None and self._header is not None
        if self._ps_muxer is not None:
            audio = self._ps_muxer.mux_next(audio, ticks)
        header = self._header(len(audio), ticks)
        if not write(header, audio):
            self.packetizer.take_back()
            self.packets_dropped += 1
            return
        self.packets_sent += 1
        self.bytes_sent += len(header) + len(audio)
        if preroll:
            self.preroll_packets += 1
            return
        self._sent_live(now)

    def _sent_live(self, now: float) -> None:
        """A live packet went at ``now``: its distance from the packet duration is jitter."""
        last, self._last_send_at = self._last_send_at, now
        if last is not None:
            jitter = abs((now - last) * 1000 - self._packet_ms)
            self._jitter_total += jitter
            self._jitter_count += 1
            if jitter > self.jitter_max_ms:
                self.jitter_max_ms = jitter

    def _failed(self, error: Exception) -> None:
        log.failure("talk session {id}: sending failed", id=self.name)
        self._end(EndReason.ERROR, f"sending failed: {error!r}")
