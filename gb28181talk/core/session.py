"""A TCP passive talk session: one listening port, the first device that connects gets the audio.

Life: ``listening`` (port leased, wait timer running, the source's audio kept
as a short pre-roll) → ``streaming`` (the first device connected: timer
cancelled, listener closed so the port returns to the pool, pre-roll then live
RTP sent, device audio received in two-way talk) → ``closed`` with exactly one
:class:`EndReason`.  Every path to ``closed`` goes through :meth:`TalkSession.end`,
which releases the lease, timers, pacer slot, connection and sinks, then tells
the observers.
"""

from __future__ import annotations

import ipaddress
import secrets
import struct
from collections import deque
from collections.abc import Sequence
from typing import Any

from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from gb28181talk.core.pacer import Pacer, SourceTap
from gb28181talk.core.params import (
    EndReason,
    Packaging,
    SessionParams,
    SessionState,
    SessionStats,
    SsrcPolicy,
)
from gb28181talk.core.ports import Lease, PortPool
from gb28181talk.core.writer import PacketWriter
from gb28181talk.errors import FramingError, MediaError
from gb28181talk.interfaces import FRAME_MS, FRAME_SAMPLES, IAudioSink, IAudioSource
from gb28181talk.media import g711
from gb28181talk.media.framing import FrameDecoder, Framing
from gb28181talk.media.law import Law
from gb28181talk.media.ps import PsDemuxer, PsMuxer
from gb28181talk.media.rtp import parse_rtp

log = Logger()

PS_TICKS_PER_FRAME = 90_000 * FRAME_MS // 1000
"""RTP timestamp ticks per 20 ms frame for PS payloads (90 kHz clock)."""

_STREAMING = SessionState.STREAMING
_LISTENING = SessionState.LISTENING

_RTCP_PACKET_TYPES = frozenset(range(200, 205))
"""SR, RR, SDES, BYE, APP: second byte of an RTCP packet (RFC 3550, RFC 5761 demux)."""

_RTP_HEADER = struct.Struct("!BBHII")
_FRAMED_RTP_HEADER = struct.Struct("!HBBHII")


def _same_host(expected: str, actual: str) -> bool:
    """Compare addresses, seeing through IPv4-mapped IPv6 (dual-stack listeners)."""
    try:
        want, got = ipaddress.ip_address(expected), ipaddress.ip_address(actual)
    except ValueError:
        return expected == actual
    if isinstance(got, ipaddress.IPv6Address) and got.ipv4_mapped is not None:
        got = got.ipv4_mapped
    if isinstance(want, ipaddress.IPv6Address) and want.ipv4_mapped is not None:
        want = want.ipv4_mapped
    return want == got


class TalkProtocol(Protocol):
    """The device's TCP connection: a thin adapter from socket events to its session."""

    def __init__(self, session: TalkSession) -> None:
        self.session = session

    def connectionMade(self) -> None:
        self.session.device_connected(self)

    def dataReceived(self, data: bytes) -> None:
        self.session.data_from_device(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.session.device_closed(reason)


class TalkSession(ServerFactory):
    """One talk session: its port lease, its device connection, its audio both ways."""

    protocol = TalkProtocol
    noisy = False

    def __init__(
        self,
        session_id: str,
        params: SessionParams,
        source: IAudioSource,
        *,
        reactor: IReactorTime,
        pool: PortPool,
        pacer: Pacer,
        observer: Any,
        sinks: Sequence[IAudioSink] = (),
        direct_send: bool = True,
        rng_seed: int | None = None,
    ) -> None:
        self.id = session_id
        self.params = params
        self.key = params.key
        self.source = source
        self.sinks = list(sinks)
        self._reactor = reactor
        self._pool = pool
        self._pacer = pacer
        self._observer = observer
        self._direct_send = direct_send
        self.state = SessionState.LISTENING
        self.port = 0
        self.peer: tuple[str, int] | None = None
        self.end_reason: EndReason | None = None
        self.end_detail = ""
        self.created_at = reactor.seconds()
        self.connected_at: float | None = None
        self.ended_at: float | None = None
        self._lease: Lease | None = None
        self._wait_call: IDelayedCall | None = None
        self._stall_call: IDelayedCall | None = None
        self._protocol: TalkProtocol | None = None
        self._writer: Any = None
        self._frames_per_packet = params.packet_ms // FRAME_MS
        self._preroll: deque[bytes | None] = deque(maxlen=params.preroll_ms // FRAME_MS)
        self._chunks: list[bytes] = []
        self._ps_muxer = PsMuxer(params.law) if params.packaging is Packaging.PS else None
        self._ticks_per_frame = (
            PS_TICKS_PER_FRAME if params.packaging is Packaging.PS else FRAME_SAMPLES
        )
        self._framed = params.framing is Framing.RFC4571
        # Read on every packet: kept as plain attributes, not looked up through params.
        self._law = params.law
        self._payload_type = params.rtp_payload_type
        self._ssrc = params.key.ssrc
        self._packet_ms = params.packet_ms
        self._receive_timeout = params.receive_timeout
        seed = rng_seed if rng_seed is not None else secrets.randbits(48)
        self._sequence = seed & 0xFFFF
        self._timestamp = (seed >> 16) & 0xFFFFFFFF
        self._packet_timestamp = self._timestamp
        self._marker = True
        self._last_send_at: float | None = None
        self._jitter_total = 0.0
        self._jitter_count = 0
        self._jitter_max = 0.0
        self._packets_sent = 0
        self._bytes_sent = 0
        self._preroll_packets = 0
        self._packets_dropped = 0
        self._packets_received = 0
        self._bytes_received = 0
        self._invalid_packets = 0
        self._rtcp_packets = 0
        self._ssrc_violations = 0
        self._refused = 0
        self._learned_ssrc: int | None = None
        self._decoder: FrameDecoder | None = None
        self._ps_demuxer: PsDemuxer | None = None
        self._last_received_at = 0.0

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Lease the port and wait for the device; on any failure nothing is left behind."""
        self._lease = self._pool.listen(self, owner=self.id, port=self.params.src_port)
        self.port = self._lease.port
        try:
            self._wait_call = self._reactor.callLater(
                self.params.wait_timeout, self._wait_expired
            )
            self._pacer.attach(self.source, self)
        except BaseException:
            self._cancel_timers()
            self._release_lease()
            self._pacer.detach(self.source, self)
            self.state = SessionState.CLOSED
            raise
        self._observer.session_started(self)

    def stop(self, reason: EndReason = EndReason.STOPPED) -> bool:
        """End the session now, in any state; False if it had already ended."""
        return self.end(reason)

    def end(self, reason: EndReason, detail: str = "") -> bool:
        """The one way to ``closed``: release everything, then tell the observers once."""
        if self.state is SessionState.CLOSED:
            return False
        self.state = SessionState.CLOSED
        self.end_reason = reason
        self.end_detail = detail
        self.ended_at = self._reactor.seconds()
        self._cancel_timers()
        self._release_lease()
        self._pacer.detach(self.source, self)
        self._close_connection(abort=reason in (EndReason.SEND_STALLED, EndReason.ERROR))
        for sink in self.sinks:
            self._guarded(sink.audio_ended)
        self._observer.session_ended(self, str(reason), self.stats)
        return True

    def _wait_expired(self) -> None:
        self._wait_call = None
        self.end(
            EndReason.TIMEOUT,
            f"no device connected to port {self.port} within {self.params.wait_timeout:g} s",
        )

    def _cancel_timers(self) -> None:
        for call in (self._wait_call, self._stall_call):
            if call is not None and call.active():
                call.cancel()
        self._wait_call = self._stall_call = None

    def _release_lease(self) -> None:
        if self._lease is not None:
            self._pool.release(self._lease)
            self._lease = None

    def _close_connection(self, abort: bool) -> None:
        """Close the device connection now; abort if bytes still wait for a device not reading.

        A plain loseConnection waits for Twisted's buffer to drain, which for a
        stuck device is never: the descriptor would outlive the session.
        """
        protocol, self._protocol = self._protocol, None
        if self._writer is not None:
            abort = abort or self._writer.queued > 0
            self._writer.close()
            self._writer = None
        if protocol is None or protocol.transport is None:
            return
        if abort:
            protocol.transport.abortConnection()
        else:
            protocol.transport.loseConnection()

    def _guarded(self, call: Any, *args: Any) -> None:
        """Call a plug-in (sink); its failure is logged, never allowed to break the session."""
        try:
            call(*args)
        except Exception:
            log.failure("talk session {id}: a sink failed", id=self.id)

    # -- the first device wins ----------------------------------------------

    def buildProtocol(self, addr: IAddress) -> TalkProtocol | None:
        """Accept the first device (if it is the expected one); refuse every other connection."""
        peer = (getattr(addr, "host", str(addr)), getattr(addr, "port", 0))
        if self.state is not SessionState.LISTENING or self._protocol is not None:
            self._refuse(peer, "a device is already connected or the session ended")
            return None
        expected = self.params.expected_peer
        if expected and not _same_host(expected, peer[0]):
            self._refuse(peer, f"not the expected device {expected}")
            return None
        protocol = TalkProtocol(self)
        self._protocol = protocol
        self.peer = peer
        return protocol

    def _refuse(self, peer: tuple[str, int], why: str) -> None:
        self._refused += 1
        log.info(
            "talk session {id} port {port}: refused {host}:{peer_port}: {why}",
            id=self.id,
            port=self.port,
            host=peer[0],
            peer_port=peer[1],
            why=why,
        )
        self._observer.device_refused(self, peer, why)

    def device_connected(self, protocol: TalkProtocol) -> None:
        """The first device is connected: stop listening, then send the pre-roll and go live."""
        if self.state is not SessionState.LISTENING or protocol is not self._protocol:
            protocol.transport.abortConnection()
            return
        self.state = SessionState.STREAMING
        self.connected_at = self._reactor.seconds()
        if self._wait_call is not None and self._wait_call.active():
            self._wait_call.cancel()
        self._wait_call = None
        self._release_lease()
        transport = protocol.transport
        set_no_delay = getattr(transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        writer = PacketWriter(transport, self.params.max_send_buffer, direct=self._direct_send)
        writer.on_stall = self._send_stalled
        writer.on_drain = self._send_drained
        self._writer = writer
        self._last_received_at = self.connected_at
        if self.params.receive:
            self._decoder = FrameDecoder()
        assert self.peer is not None
        self._observer.session_connected(self, self.peer)
        preroll, self._preroll = list(self._preroll), deque(maxlen=0)
        for frame in preroll:
            self._add_frame(frame, preroll=True)

    def device_closed(self, reason: Failure) -> None:
        """The device hung up (or the connection broke)."""
        if self._writer is not None:
            self._writer.stopProducing()
        self._protocol = None
        self._writer = None
        self.end(EndReason.DEVICE_CLOSED, reason.getErrorMessage())

    # -- sending -------------------------------------------------------------

    def frame_ready(self, tap: SourceTap) -> None:
        """Pacer: the source's next frame is current (kept as pre-roll until a device connects)."""
        try:
            self._take_frame(tap)
        except Exception as error:
            log.failure("talk session {id}: sending failed", id=self.id)
            self.end(EndReason.ERROR, f"sending failed: {error!r}")

    def _take_frame(self, tap: SourceTap) -> None:
        # Per session, per 20 ms: everything it reads was computed once in __init__.
        frame = tap.g711(self._law)
        state = self.state
        if state is _STREAMING:
            self._add_frame(frame, tap.now, False)
            timeout = self._receive_timeout
            if timeout is not None and tap.now - self._last_received_at > timeout:
                self.end(EndReason.RECEIVE_TIMEOUT, f"no audio from the device for {timeout:g} s")
        elif state is _LISTENING:
            self._preroll.append(frame)

    def source_ended(self, tap: SourceTap) -> None:
        """Pacer: the source is finished; send what is pending and end."""
        if self._chunks and self.state is SessionState.STREAMING:
            self._send_packet(tap.now, preroll=False)
        self.end(EndReason.SOURCE_ENDED, f"source {self.source.app}/{self.source.stream} ended")

    def _add_frame(self, frame: bytes | None, now: float = 0.0, preroll: bool = False) -> None:
        chunks = self._chunks
        if frame is None:
            # A gap (live source underrun): send what we have, keep time, mark the restart.
            if chunks:
                self._send_packet(now, preroll)
            self._timestamp = (self._timestamp + self._ticks_per_frame) & 0xFFFFFFFF
            self._marker = True
            return
        if not chunks:
            self._packet_timestamp = self._timestamp
        chunks.append(frame)
        self._timestamp = (self._timestamp + self._ticks_per_frame) & 0xFFFFFFFF
        if len(chunks) >= self._frames_per_packet:
            self._send_packet(now, preroll)

    def _send_packet(self, now: float, preroll: bool) -> None:
        chunks = self._chunks
        audio = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        timestamp = self._packet_timestamp
        if self._ps_muxer is not None:
            audio = self._ps_muxer.mux(audio, timestamp)
        second_byte = self._payload_type | 0x80 if self._marker else self._payload_type
        if self._framed:
            header = _FRAMED_RTP_HEADER.pack(
                12 + len(audio), 0x80, second_byte, self._sequence, timestamp, self._ssrc
            )
        else:
            header = _RTP_HEADER.pack(0x80, second_byte, self._sequence, timestamp, self._ssrc)
        writer = self._writer
        if writer is None:
            return
        if not writer.write(header, audio):
            self._packets_dropped += 1
            return
        self._marker = False
        self._sequence = (self._sequence + 1) & 0xFFFF
        self._packets_sent += 1
        self._bytes_sent += len(header) + len(audio)
        if preroll:
            self._preroll_packets += 1
            return
        last, self._last_send_at = self._last_send_at, now
        if last is not None:
            jitter = abs((now - last) * 1000 - self._packet_ms)
            self._jitter_total += jitter
            self._jitter_count += 1
            if jitter > self._jitter_max:
                self._jitter_max = jitter

    def _send_stalled(self) -> None:
        """The device stopped reading and the backlog is full: end unless it drains in time."""
        if self._stall_call is None and self.state is SessionState.STREAMING:
            self._stall_call = self._reactor.callLater(
                self.params.stall_timeout,
                self.end,
                EndReason.SEND_STALLED,
                f"the device read nothing for {self.params.stall_timeout:g} s "
                f"with {self.params.max_send_buffer} bytes waiting",
            )

    def _send_drained(self) -> None:
        if self._stall_call is not None and self._stall_call.active():
            self._stall_call.cancel()
        self._stall_call = None

    # -- receiving (two-way talk) ---------------------------------------------

    def data_from_device(self, data: bytes) -> None:
        """Bytes from the device: RTP audio in two-way talk, else counted and dropped."""
        self._bytes_received += len(data)
        decoder = self._decoder
        if decoder is None or self.state is not SessionState.STREAMING:
            return
        try:
            packets = decoder.feed(data)
        except FramingError as error:
            self.end(EndReason.ERROR, f"the device sent data that is not RTP over TCP: {error}")
            return
        for packet in packets:
            self._packet_from_device(packet)
            if self.state is not SessionState.STREAMING:
                return

    def _packet_from_device(self, packet: bytes) -> None:
        if len(packet) > 1 and packet[1] in _RTCP_PACKET_TYPES:
            # RTCP multiplexed on the talk connection (RFC 5761): not audio, and its
            # sender SSRC must not be learnt or counted as a violation.
            self._rtcp_packets += 1
            return
        try:
            rtp = parse_rtp(packet)
        except MediaError:
            self._invalid_packets += 1
            return
        if not self._ssrc_accepted(rtp.ssrc):
            return
        self._packets_received += 1
        self._last_received_at = self._reactor.seconds()
        for law, audio in self._depacketize(rtp.payload_type, rtp.payload):
            pcm = g711.decode(law, audio)
            for sink in self.sinks:
                self._guarded(sink.audio_received, pcm, rtp.timestamp)

    def _ssrc_accepted(self, ssrc: int) -> bool:
        policy = self.params.ssrc_policy
        if policy is SsrcPolicy.OFF:
            return True
        expected = self.key.ssrc
        if policy is SsrcPolicy.LEARN:
            if self._learned_ssrc is None:
                self._learned_ssrc = ssrc
                if ssrc != expected:
                    log.info(
                        "talk session {id}: device sends SSRC {got}, SDP said {want}; "
                        "adopted it (policy learn)",
                        id=self.id,
                        got=ssrc,
                        want=expected,
                    )
            expected = self._learned_ssrc
        if ssrc == expected:
            return True
        self._ssrc_violations += 1
        limit = self.params.max_ssrc_violations
        if limit is not None and self._ssrc_violations >= limit:
            self.end(
                EndReason.SSRC_VIOLATION,
                f"{self._ssrc_violations} packets with SSRC {ssrc}, expected {expected}",
            )
        return False

    def _depacketize(self, payload_type: int, payload: bytes) -> list[tuple[Law, bytes]]:
        if payload_type == Law.ALAW.payload_type:
            return [(Law.ALAW, payload)]
        if payload_type == Law.ULAW.payload_type:
            return [(Law.ULAW, payload)]
        if self._ps_demuxer is None:
            self._ps_demuxer = PsDemuxer()
        return [
            (audio.law or self.params.law, audio.payload)
            for audio in self._ps_demuxer.feed(payload)
        ]

    # -- views ---------------------------------------------------------------

    @property
    def stats(self) -> SessionStats:
        """The session's figures now (final once closed)."""
        end = self.ended_at if self.ended_at is not None else self._reactor.seconds()
        streaming = end - self.connected_at if self.connected_at is not None else 0.0
        return SessionStats(
            packets_sent=self._packets_sent,
            bytes_sent=self._bytes_sent,
            preroll_packets=self._preroll_packets,
            packets_dropped=self._packets_dropped,
            packets_received=self._packets_received,
            bytes_received=self._bytes_received,
            invalid_packets=self._invalid_packets,
            rtcp_packets=self._rtcp_packets,
            ssrc_violations=self._ssrc_violations,
            refused_connections=self._refused,
            jitter_mean_ms=self._jitter_total / self._jitter_count if self._jitter_count else 0.0,
            jitter_max_ms=self._jitter_max,
            duration_s=end - self.created_at,
            streaming_s=streaming,
        )

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view for the API's listings."""
        params = self.params
        return {
            "id": self.id,
            "vhost": self.key.vhost,
            "app": self.key.app,
            "stream": self.key.stream,
            "ssrc": self.key.ssrc,
            "state": str(self.state),
            "local_port": self.port,
            "peer": f"{self.peer[0]}:{self.peer[1]}" if self.peer else None,
            "age_s": round(self._reactor.seconds() - self.created_at, 3),
            "packaging": str(params.packaging),
            "codec": params.law.encoding_name,
            "pt": params.rtp_payload_type,
            "framing": params.framing.value,
            "packet_ms": params.packet_ms,
            "two_way": params.receive,
            "ssrc_policy": str(params.ssrc_policy),
            "end_reason": str(self.end_reason) if self.end_reason else None,
            "stats": self.stats.as_dict(),
        }
