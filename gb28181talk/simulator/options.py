"""What one simulated device is: its identity, server, media offer, talk-back audio and quirks.

Plain values, checked by the command line (``cli``) and read by the UA and its calls, so a
test builds a device without parsing arguments.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from gb28181talk.media.law import Law
from gb28181talk.media.payload import PCMA, PCMU, PS, Payload

__all__ = ["CODECS", "DeviceConfig", "MediaMode", "Quirks"]


class MediaMode(enum.StrEnum):
    """How the device offers to receive a broadcast (its side of the connection)."""

    TCP_ACTIVE = "tcp-active"
    """``a=setup:active``: the device connects to the platform's port (GB28181's usual)."""
    TCP_PASSIVE = "tcp-passive"
    """``a=setup:passive``: the device listens, the platform connects."""
    UDP = "udp"
    """``RTP/AVP`` without setup: the platform sends datagrams to the device's port."""


CODECS: dict[str, Payload] = {"pcma": PCMA, "pcmu": PCMU, "ps": PS}
"""The codec names of ``--codec`` and the payload each offers."""


@dataclass(frozen=True, slots=True)
class Quirks:
    """Behaviours of real firmware, each off unless asked for."""

    wrong_ssrc: bool = False
    """The RTP it sends carries an SSRC other than the SDP's ``y=``."""
    no_ssrc: bool = False
    """Its offers and answers carry no ``y=`` line."""
    no_prefix: bool = False
    """The RTP it sends over TCP has no RFC 4571 length prefix."""
    ps_voice: bool = False
    """It talks back in MPEG-PS (payload type 96) whatever was agreed."""
    connect_before_ack: bool = False
    """It connects to the platform's port on the 200, and ACKs only once connected."""
    never_connect: bool = False
    """It never opens the media connection it offered (TCP active: never dials)."""
    slow_read: bool = False
    """It reads its media connection slowly (a small receive buffer, one read every 2 s)."""
    no_broadcast_response: bool = False
    """It answers Notify/Broadcast with 200 but never sends Response/Broadcast."""
    invent_nonce: bool = False
    """It answers the digest challenge with a nonce of its own making."""
    retransmit_invite: bool = False
    """It sends each INVITE twice (same transaction), even over TCP."""
    rtcp: bool = False
    """It sends RTCP receiver reports on the media connection every 5 s."""

    def names(self) -> list[str]:
        """The switches that are on, as their command-line names."""
        return [name.replace("_", "-") for name in self.__slots__ if getattr(self, name)]


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """One simulated device: who it is, where it registers, what it offers and says."""

    device_id: str = "34020000001320000001"
    domain: str = "3402000000"
    password: str = "12345678"
    server: tuple[str, int] = ("127.0.0.1", 5060)
    server_id: str = "34020000002000000001"
    sip_transport: str = "udp"
    """``udp`` or ``tcp``."""
    local_host: str = "127.0.0.1"
    """The address written in Via, Contact and SDP (and where media sockets listen)."""
    expires: int = 3600
    keepalive: float = 60.0
    mode: MediaMode = MediaMode.TCP_ACTIVE
    codec: str = "pcma"
    ssrc: int | None = None
    """The broadcast offer's ``y=``; None makes one from the domain and the device's number."""
    packet_ms: int = 20
    tone_hz: float = 1000.0
    """The tone it talks back with (when no WAV is given)."""
    talk_wav: str | None = None
    wav_dir: str = "."
    call_seconds: float | None = None
    """Hang up (BYE) this long after a call's media started; None: when the platform does."""
    report_seconds: float = 2.0
    """How often a call prints its figures (0: only at the end)."""
    quirks: Quirks = field(default_factory=Quirks)

    @property
    def payload(self) -> Payload:
        """The payload its broadcast offer lists."""
        return CODECS[self.codec]

    @property
    def law(self) -> Law:
        """The G.711 law of what it says back (PS carries A-law unless PCMU was chosen)."""
        return Law.ULAW if self.codec == "pcmu" else Law.ALAW

    @property
    def offer_ssrc(self) -> int:
        """The ``y=`` of its broadcast offers: ``0`` + domain digits 4-8 + the ID's last 4."""
        if self.ssrc is not None:
            return self.ssrc
        digits = (self.domain + "0" * 10)[3:8]
        tail = self.device_id[-4:] if self.device_id[-4:].isdigit() else "0001"
        return int(f"0{digits}{tail}")

    def numbered(self, index: int) -> DeviceConfig:
        """The ``index``-th device of ``--count`` (0 is this one): ID's sequence plus index."""
        if index == 0:
            return self
        head, sequence = self.device_id[:-6], self.device_id[-6:]
        number = (int(sequence) + index) % 1_000_000
        ssrc = None if self.ssrc is None else (self.ssrc + index) % 2**32
        return replace(self, device_id=f"{head}{number:06d}", ssrc=ssrc)
