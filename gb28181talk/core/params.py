"""Value types of a talk session: its key, what the caller asked for, how it ended, its figures."""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import Any

from gb28181talk.errors import SessionError
from gb28181talk.media.framing import Framing
from gb28181talk.media.law import Law
from gb28181talk.media.payload import PS, Packaging, Payload, payload_for

__all__ = [
    "DEFAULT_WAIT_TIMEOUT",
    "MAX_SSRC",
    "PS_PAYLOAD_TYPE",
    "EndReason",
    "Packaging",
    "SessionKey",
    "SessionParams",
    "SessionState",
    "SessionStats",
    "SsrcPolicy",
    "TransportKind",
]

DEFAULT_WAIT_TIMEOUT = 5.0
PS_PAYLOAD_TYPE = PS.payload_type
MAX_SSRC = 2**32 - 1


class SessionState(enum.StrEnum):
    """Where a talk session is in its life; the listener exists only while ``listening``."""

    LISTENING = "listening"
    STREAMING = "streaming"
    CLOSED = "closed"


class EndReason(enum.StrEnum):
    """Why a talk session ended; every ending carries exactly one."""

    TIMEOUT = "timeout"
    DEVICE_CLOSED = "device-closed"
    STOPPED = "stopped"
    SEND_STALLED = "send-stalled"
    SSRC_VIOLATION = "ssrc-violation"
    SOURCE_ENDED = "source-ended"
    RECEIVE_TIMEOUT = "receive-timeout"
    RECEIVE_FLOOD = "receive-flood"
    """The device sent more than its receive budget: audio faster than time passes, or
    frames and bytes over its per-second share, persistently."""
    ERROR = "error"
    WORKER_LOST = "worker-lost"
    """The media worker process running the session exited (``--workers``)."""
    SHUTDOWN = "shutdown"


class SsrcPolicy(enum.StrEnum):
    """What to do with device RTP whose SSRC is not the expected one.

    ``strict`` drops and counts packets whose SSRC differs from the SDP ``y=``;
    ``learn`` adopts the first SSRC the device sends and drops others (what
    ZLMediaKit does, and what works with devices that ignore ``y=``), except
    that the SDP's own SSRC is always accepted and, once it appears, preferred
    (a device that sent something else first has picked up ``y=``); ``off``
    accepts everything.
    """

    STRICT = "strict"
    LEARN = "learn"
    OFF = "off"


class TransportKind(enum.StrEnum):
    """How the device is reached (GB28181's ``a=setup`` and the SDP's transport).

    ``tcp-passive``: we listen, the device connects (``startSendRtpPassive``);
    ``tcp-active``: we connect to the listening device (``startSendRtp``,
    ``is_udp=0``); ``udp``: we send datagrams to the device (``startSendRtp``,
    ``is_udp=1``); ``udp-passive``: we bind a port and the device's first datagram
    says where it is (``startSendRtpPassive``, ``is_udp=1``); ``rtp-server``: back
    on the connection the device opened to our RTP server (``startSendRtpTalk``).
    """

    TCP_PASSIVE = "tcp-passive"
    TCP_ACTIVE = "tcp-active"
    UDP = "udp"
    UDP_PASSIVE = "udp-passive"
    RTP_SERVER = "rtp-server"

    @property
    def needs_destination(self) -> bool:
        """Whether the device's address must be given (we reach out to it)."""
        return self in (TransportKind.TCP_ACTIVE, TransportKind.UDP)


@dataclass(frozen=True, slots=True)
class SessionKey:
    """What identifies a talk session to signalling: the source it plays and the call's SSRC."""

    vhost: str
    app: str
    stream: str
    ssrc: int

    def __str__(self) -> str:
        return f"{self.vhost}/{self.app}/{self.stream}/{self.ssrc:010d}"


@dataclass(frozen=True, slots=True)
class SessionParams:
    """Everything a caller decides about one talk session; checked on construction."""

    key: SessionKey
    src_port: int = 0
    law: Law = Law.ALAW
    payload_type: int | None = None
    packaging: Packaging = Packaging.RAW
    framing: Framing = Framing.RFC4571
    packet_ms: int = 20
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT
    expected_peer: str | None = None
    ssrc_policy: SsrcPolicy = SsrcPolicy.LEARN
    max_ssrc_violations: int | None = None
    receive: bool = False
    receive_timeout: float | None = None
    preroll_ms: int = 1000
    max_send_buffer: int = 32 * 1024
    stall_timeout: float = 5.0
    transport: TransportKind = TransportKind.TCP_PASSIVE
    """How the device is reached; ``dst_host``/``dst_port`` say where for the active kinds."""
    dst_host: str | None = None
    dst_port: int = 0
    rtcp_timeout: float | None = None
    """UDP only: end when the device sends no RTCP for this long (``udp_rtcp_timeout``)."""
    ssrc_text: str | None = None
    """The SSRC as the caller wrote it (``777``), echoed in hooks and listings as ZLMediaKit
    does; None: shown as the ten digits of ``y=``.  Not part of the key or the settings."""

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise SessionError("invalid talk session parameters: " + "; ".join(problems))

    def _problems(self) -> Any:
        if not 0 <= self.key.ssrc <= MAX_SSRC:
            yield f"ssrc {self.key.ssrc} is outside 0..{MAX_SSRC}"
        if self.ssrc_text is not None and not (
            self.ssrc_text.isascii() and self.ssrc_text.isdigit()
            and int(self.ssrc_text) == self.key.ssrc
        ):
            yield f"ssrc text {self.ssrc_text!r} is not the decimal SSRC {self.key.ssrc}"
        if not 0 <= self.src_port <= 65535:
            yield f"src_port {self.src_port} is not a TCP port (0 = from the pool)"
        if self.payload_type is not None and not 0 <= self.payload_type <= 127:
            yield f"payload type {self.payload_type} is outside 0..127"
        if self.packet_ms % 20 or not 20 <= self.packet_ms <= 180:
            yield f"packet duration {self.packet_ms} ms must be 20..180 and a multiple of 20"
        if self.framing is Framing.INTERLEAVED:
            yield "framing to the device must be rfc4571 or none"
        if not self.wait_timeout > 0:
            yield f"wait timeout {self.wait_timeout} s must be above 0"
        if self.receive_timeout is not None and not self.receive_timeout > 0:
            yield f"receive timeout {self.receive_timeout} s must be above 0"
        if self.max_ssrc_violations is not None and self.max_ssrc_violations < 1:
            yield "max_ssrc_violations must be at least 1 (or unset)"
        if not 0 <= self.preroll_ms <= 10_000:
            yield f"pre-roll {self.preroll_ms} ms must be 0..10000"
        if self.max_send_buffer < 1024:
            yield f"max send buffer {self.max_send_buffer} bytes must be at least 1024"
        if not self.stall_timeout > 0:
            yield f"stall timeout {self.stall_timeout} s must be above 0"
        if self.transport.needs_destination and not (self.dst_host and 0 < self.dst_port < 65536):
            yield (f"{self.transport} needs the device's address and port (dst_url, dst_port), "
                   f"not {self.dst_host!r}:{self.dst_port}")
        if self.rtcp_timeout is not None and not (
            self.rtcp_timeout > 0 and self.transport in (TransportKind.UDP,
                                                         TransportKind.UDP_PASSIVE)
        ):
            yield "an RTCP timeout needs a UDP transport and a time above 0"

    @property
    def destination(self) -> tuple[str, int] | None:
        """Where we reach the device (active kinds), else None."""
        return (self.dst_host, self.dst_port) if self.dst_host and self.dst_port else None

    @property
    def payload(self) -> Payload:
        """What the downlink carries, from the payload table: PCMA, PCMU or PS."""
        return payload_for(self.packaging, self.law)

    @property
    def ssrc_echo(self) -> str:
        """The SSRC as the caller gave it, else ten decimal digits (``0100000001``)."""
        return self.ssrc_text if self.ssrc_text is not None else f"{self.key.ssrc:010d}"

    @property
    def rtp_payload_type(self) -> int:
        """The payload type written to the device: as asked, else 96 for PS, 8/0 for raw."""
        if self.payload_type is not None:
            return self.payload_type
        return payload_for(self.packaging, self.law).payload_type


@dataclass(frozen=True, slots=True)
class SessionStats:
    """A talk session's figures at one moment (final ones at its end)."""

    packets_sent: int = 0
    bytes_sent: int = 0
    preroll_packets: int = 0
    packets_dropped: int = 0
    packets_received: int = 0
    bytes_received: int = 0
    invalid_packets: int = 0
    rtcp_packets: int = 0
    ssrc_violations: int = 0
    excess_audio_packets: int = 0
    """Device packets dropped before decoding: more audio than time had passed (+ allowance)."""
    excess_audio_s: float = 0.0
    """Their audio, in seconds."""
    receive_throttles: int = 0
    """Seconds in which the device spent its frame/byte budget and its reading was paused."""
    packets_over_budget: int = 0
    """Datagrams dropped unread because the device was over its per-second budget."""
    refused_connections: int = 0
    jitter_mean_ms: float = 0.0
    jitter_max_ms: float = 0.0
    duration_s: float = 0.0
    streaming_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures (every field is a number: no deep copy, unlike ``asdict``,
        which took most of a 200-session ``GET /api/sessions``)."""
        return {name: getattr(self, name) for name in _STATS_FIELDS}


_STATS_FIELDS = tuple(field.name for field in fields(SessionStats))
"""SessionStats' field names in order, for :meth:`SessionStats.as_dict`."""
