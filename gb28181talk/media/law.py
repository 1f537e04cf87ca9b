"""The two G.711 companding laws and the numbers each goes by in RTP, SDP and MPEG-PS."""

from __future__ import annotations

import enum


class Law(enum.Enum):
    """G.711 A-law (PCMA, Europe/China default) or µ-law (PCMU)."""

    ALAW = "alaw"
    ULAW = "ulaw"

    @property
    def payload_type(self) -> int:
        """Static RTP payload type (RFC 3551): 8 for PCMA, 0 for PCMU."""
        return 8 if self is Law.ALAW else 0

    @property
    def encoding_name(self) -> str:
        """The SDP rtpmap encoding name."""
        return "PCMA" if self is Law.ALAW else "PCMU"

    @property
    def ps_stream_type(self) -> int:
        """MPEG-PS stream_type in the PSM as GB28181 uses it: 0x90 A-law, 0x91 µ-law."""
        return 0x90 if self is Law.ALAW else 0x91

    @classmethod
    def from_name(cls, name: str) -> Law:
        """Accept 'alaw', 'pcma', 'ulaw', 'pcmu', 'mulaw' in any case."""
        normal = name.strip().lower()
        if normal in ("alaw", "pcma", "a-law", "g711a"):
            return cls.ALAW
        if normal in ("ulaw", "mulaw", "pcmu", "µlaw", "u-law", "g711u"):
            return cls.ULAW
        raise ValueError(f"unknown G.711 law {name!r}; use 'alaw' (PCMA) or 'ulaw' (PCMU)")
