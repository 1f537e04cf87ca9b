"""A talk session: one device gets one source's audio, and in two-way talk is heard back.

Composed of four parts, each in its own module:

- the **lifecycle** (:mod:`~gb28181talk.core.lifecycle`): ``listening`` ->
  ``streaming`` -> ``closed``, one machine whose states hold their own timers,
  every ending with exactly one :class:`EndReason`;
- the **transport** (:class:`~gb28181talk.core.transport.ITalkTransport`), which
  delivers the one connected device: the one ``params.transport`` asks for
  (:mod:`~gb28181talk.core.transports`), by default the passive TCP acceptor
  (:mod:`~gb28181talk.core.passive`: a leased port, the first device wins);
- the **sender** (:mod:`~gb28181talk.core.sender`): pre-roll, packetizing, PS,
  the device link, send figures; it is the pacer's listener;
- the **receiver** (:mod:`~gb28181talk.core.receiver`): framing, RTCP skip,
  SSRC policy, depacketizing, decoding, the sinks.

:class:`TalkSession` wires them and is what the manager, the APIs, the
observers and signalling see: its id, key, port, peer, state and figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from gb28181talk.core.lifecycle import SessionCore, new_lifecycle
from gb28181talk.core.pacer import Pacer
from gb28181talk.core.params import (
    EndReason,
    SessionParams,
    SessionState,
    SessionStats,
)
from gb28181talk.core.ports import PortPool
from gb28181talk.core.receiver import Receiver
from gb28181talk.core.sender import Sender
from gb28181talk.core.transport import IDeviceHost, IDeviceLink, ITalkTransport
from gb28181talk.core.transports import build_transport
from gb28181talk.errors import SessionError
from gb28181talk.interfaces import FRAME_MS, IAudioSink, IAudioSource
from gb28181talk.media.payload import PS

log = Logger()

PS_TICKS_PER_FRAME = PS.ticks(FRAME_MS)
"""RTP timestamp ticks per 20 ms frame for PS payloads (90 kHz clock): 1800."""


@implementer(IDeviceHost)
class TalkSession:
    """One talk session: lifecycle + transport + sender + receiver, and its public view."""

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
        transport: ITalkTransport | None = None,
    ) -> None:
        self.id = session_id
        self.params = params
        self.key = params.key
        self.source = source
        self._reactor = reactor
        self._pacer = pacer
        self._observer = observer
        self._refused = 0
        self._started = False
        self._opening = False
        self._early_link: IDeviceLink | None = None
        if transport is None:  # the one params.transport asks for (passive TCP by default)
            transport = build_transport(
                params, session_id, reactor=reactor, pool=pool, direct_send=direct_send
            )
        self.transport = transport
        self._core = core = SessionCore(
            session=self,
            params=params,
            source=source,
            reactor=reactor,
            pacer=pacer,
            observer=observer,
            transport=transport,
            created_at=reactor.seconds(),
        )
        end = core.end
        self.sender = core.sender = Sender(params, end, rng_seed=rng_seed, name=session_id)
        self.receiver = core.receiver = Receiver(params, sinks, end, reactor, name=session_id)
        self._machine = new_lifecycle(core)

    # -- the public view -----------------------------------------------------

    @property
    def sinks(self) -> list[IAudioSink]:
        """Where the device's audio goes in two-way talk."""
        return self.receiver.sinks

    @property
    def state(self) -> SessionState:
        """``listening``, ``streaming`` or ``closed``."""
        return self._core.state

    @property
    def port(self) -> int:
        """The local port the device reaches (0 before start)."""
        return self.transport.port

    @property
    def peer(self) -> tuple[str, int] | None:
        """The connected device's (host, port), once it connected."""
        return self._core.peer

    @property
    def end_reason(self) -> EndReason | None:
        """Why the session ended (None while it lives)."""
        return self._core.end_reason

    @property
    def end_detail(self) -> str:
        """What exactly ended it, for operators ("" while it lives)."""
        return self._core.end_detail

    @property
    def created_at(self) -> float:
        """Reactor time the session was made."""
        return self._core.created_at

    @property
    def connected_at(self) -> float | None:
        """Reactor time the device connected."""
        return self._core.connected_at

    @property
    def ended_at(self) -> float | None:
        """Reactor time the session closed."""
        return self._core.ended_at

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Open the transport (lease the port) and wait for the device; on failure nothing stays."""
        if self._started:
            raise SessionError(f"talk session {self.id} was already started")
        self._started = True
        self._opening = True
        try:
            self.transport.open(self)
            self._pacer.attach(self.source, self.sender)
        except BaseException:
            self.transport.close()
            self._pacer.detach(self.source, self.sender)
            self._core.state = SessionState.CLOSED
            early, self._early_link = self._early_link, None
            if early is not None:
                early.close(abort=True)
            raise
        finally:
            self._opening = False
        self._machine.start()
        early, self._early_link = self._early_link, None
        if early is not None:  # a transport that had its device at once (a datagram one)
            self._deliver(early)

    def stop(self, reason: EndReason = EndReason.STOPPED) -> bool:
        """End the session now, in any state; False if it had already ended."""
        return self.end(reason)

    def end(self, reason: EndReason, detail: str = "") -> bool:
        """The one way to ``closed``: everything is released, observers are told once."""
        return self._core.end(reason, detail)

    # -- what the transport tells us (IDeviceHost) ----------------------------

    def device_connected(self, link: IDeviceLink) -> None:
        """The device is here: stream to it (pre-roll first)."""
        if self._opening:  # delivered from within open(): streams once listening began
            self._early_link = link
            return
        self._deliver(link)

    def _deliver(self, link: IDeviceLink) -> None:
        """Hand the link to the lifecycle; the one it streams to is also the receiver's to
        throttle (pause its reading) when the device is over its receive budget."""
        waiting = self._core.connected_at is None
        self._machine.device_connected(link)
        if waiting and self._core.connected_at is not None:
            self.receiver.throttle_by(link)

    def device_refused(self, peer: tuple[str, int], why: str) -> None:
        """A connection was turned away: counted, logged, observers told."""
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

    def data_from_device(self, data: bytes) -> None:
        """Bytes from the device, for the receiver."""
        self.receiver.data_received(data)

    def device_closed(self, why: str) -> None:
        """The device hung up (or the connection broke)."""
        self.end(EndReason.DEVICE_CLOSED, why)

    def send_stalled(self) -> None:
        """The device stopped reading: end unless it drains within the stall timeout."""
        self._machine.send_stalled()

    def send_drained(self) -> None:
        """The device reads again."""
        self._machine.send_drained()

    # -- views ---------------------------------------------------------------

    @property
    def stats(self) -> SessionStats:
        """The session's figures now (final once closed)."""
        core, sender, receiver = self._core, self.sender, self.receiver
        end = core.ended_at if core.ended_at is not None else self._reactor.seconds()
        streaming = end - core.connected_at if core.connected_at is not None else 0.0
        return SessionStats(
            packets_sent=sender.packets_sent,
            bytes_sent=sender.bytes_sent,
            preroll_packets=sender.preroll_packets,
            packets_dropped=sender.packets_dropped,
            packets_received=receiver.packets_received,
            bytes_received=receiver.bytes_received,
            invalid_packets=receiver.invalid_packets,
            rtcp_packets=receiver.rtcp_packets,
            ssrc_violations=receiver.ssrc_violations,
            excess_audio_packets=receiver.excess_audio_packets,
            excess_audio_s=receiver.excess_audio_s,
            receive_throttles=receiver.receive_throttles,
            packets_over_budget=receiver.packets_over_budget,
            refused_connections=self._refused,
            jitter_mean_ms=sender.jitter_mean_ms,
            jitter_max_ms=sender.jitter_max_ms,
            duration_s=end - core.created_at,
            streaming_s=streaming,
        )

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view for the API's listings."""
        params = self.params
        peer = self.peer
        return {
            "id": self.id,
            "vhost": self.key.vhost,
            "app": self.key.app,
            "stream": self.key.stream,
            "ssrc": self.key.ssrc,
            "state": str(self.state),
            "local_port": self.port,
            "peer": f"{peer[0]}:{peer[1]}" if peer else None,
            "age_s": round(self._reactor.seconds() - self.created_at, 3),
            "packaging": str(params.packaging),
            "codec": params.law.encoding_name,
            "pt": params.rtp_payload_type,
            "framing": params.framing.value,
            "packet_ms": params.packet_ms,
            "two_way": params.receive,
            "ssrc_policy": str(params.ssrc_policy),
            "transport": str(params.transport),
            "destination": (f"{params.dst_host}:{params.dst_port}"
                            if params.destination else None),
            "end_reason": str(self.end_reason) if self.end_reason else None,
            "stats": self.stats.as_dict(),
        }
