"""The one payload table: RTP payload type <-> G.711 law <-> raw or MPEG-PS <-> SDP rtpmap.

GB28181 talk carries G.711 either raw (PCMA, payload type 8; PCMU, 0; 8 kHz
clock) or wrapped in MPEG-PS (payload type 96 by convention, 90 kHz clock, the
law named by the PS stream map).  The sender, the receiver, RTP ingest, the
SDP answer and the SIP payload choice all read this table, so a payload type
means the same thing everywhere.  Sans-I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gb28181talk.errors import MediaError
from gb28181talk.media.law import Law

__all__ = [
    "DOWNLINK_PREFERENCE",
    "PCMA",
    "PCMU",
    "PS",
    "Packaging",
    "Payload",
    "PayloadError",
    "by_payload_type",
    "choose_downlink",
    "identify",
    "payload_for",
]


class PayloadError(MediaError):
    """No payload of the table fits: the offer or packet names none we can carry."""


class Packaging(enum.StrEnum):
    """How G.711 goes into RTP: raw (PCMA/PCMU payload) or wrapped in MPEG-PS."""

    RAW = "raw"
    PS = "ps"


@dataclass(frozen=True, slots=True)
class Payload:
    """One way of carrying G.711 in RTP: its static payload type, rtpmap name, clock, packaging.

    ``law`` is the G.711 law of a raw payload; None for PS, whose stream map names the law
    (GB28181 audio is A-law unless the PSM says otherwise).
    """

    payload_type: int
    encoding_name: str
    clock_rate: int
    packaging: Packaging
    law: Law | None

    @property
    def rtpmap(self) -> str:
        """The SDP ``a=rtpmap`` encoding: ``PCMA/8000``, ``PCMU/8000``, ``PS/90000``."""
        return f"{self.encoding_name}/{self.clock_rate}"

    def ticks(self, milliseconds: int) -> int:
        """RTP timestamp ticks in ``milliseconds`` of audio: 160 per 20 ms raw, 1800 for PS."""
        return self.clock_rate * milliseconds // 1000


PCMA = Payload(8, "PCMA", 8000, Packaging.RAW, Law.ALAW)
PCMU = Payload(0, "PCMU", 8000, Packaging.RAW, Law.ULAW)
PS = Payload(96, "PS", 90_000, Packaging.PS, None)

DOWNLINK_PREFERENCE = (PCMA, PCMU, PS)
"""The order a payload is chosen for the downlink: raw G.711 is what every device plays."""

_BY_PAYLOAD_TYPE = {payload.payload_type: payload for payload in DOWNLINK_PREFERENCE}
_BY_ENCODING = {payload.encoding_name: payload for payload in DOWNLINK_PREFERENCE}
_RAW_BY_LAW = {Law.ALAW: PCMA, Law.ULAW: PCMU}


def by_payload_type(payload_type: int) -> Payload | None:
    """The table's payload for a GB28181 payload type number (8, 0, 96), else None."""
    return _BY_PAYLOAD_TYPE.get(payload_type)


def payload_for(packaging: Packaging, law: Law) -> Payload:
    """The payload that carries ``law`` packaged as ``packaging``: PCMA, PCMU or PS."""
    return PS if packaging is Packaging.PS else _RAW_BY_LAW[law]


def identify(payload_type: int, rtpmap: str | None = None) -> Payload | None:
    """What an SDP format carries: by its rtpmap encoding name if given, else by its number."""
    if rtpmap:
        return _BY_ENCODING.get(rtpmap.split("/", 1)[0].strip().upper())
    return _BY_PAYLOAD_TYPE.get(payload_type)


def choose_downlink(
    payload_types: Iterable[int], rtpmaps: Mapping[int, str] | None = None
) -> tuple[int, Payload]:
    """The offered payload type to send on, and what it carries: PCMA, then PCMU, then PS.

    ``rtpmaps`` maps offered payload types to their ``a=rtpmap`` encodings; a format without
    one is judged by its static number.  Among formats of the same kind the first offered
    wins.  PayloadError if nothing offered is G.711 or PS.
    """
    offered = list(payload_types)
    rtpmaps = rtpmaps or {}
    kinds = [(payload_type, identify(payload_type, rtpmaps.get(payload_type)))
             for payload_type in offered]
    for wanted in DOWNLINK_PREFERENCE:
        for payload_type, kind in kinds:
            if kind is wanted:
                return payload_type, wanted
    raise PayloadError(f"the offer has no G.711 (PCMA/PCMU) or PS payload: {offered}")
