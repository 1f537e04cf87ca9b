"""RTCP sender and receiver reports (RFC 3550 §6.4), the two a UDP talk stream exchanges.

Sans-I/O: values in, bytes out.  A UDP sender with ``udp_rtcp_timeout`` (ZLMediaKit's
name) sends an SR every few seconds on its RTP port + 1 and ends the stream when no
report comes back; :func:`is_rtcp` tells such packets from RTP on a shared port.
"""

from __future__ import annotations

import struct

__all__ = ["NTP_EPOCH_OFFSET", "is_rtcp", "receiver_report", "sender_report"]

NTP_EPOCH_OFFSET = 2_208_988_800
"""Seconds from the NTP epoch (1900) to the Unix epoch (1970)."""

_SR = struct.Struct("!BBHIIIIII")
_RR = struct.Struct("!BBHI")
_U32 = 0xFFFFFFFF
_RTCP_TYPES = frozenset(range(200, 205))


def sender_report(ssrc: int, unix_time: float, rtp_timestamp: int, packets: int,
                  octets: int) -> bytes:
    """An SR without report blocks: who sends, when (NTP and RTP clocks), how much so far."""
    ntp = unix_time + NTP_EPOCH_OFFSET
    seconds = int(ntp)
    fraction = int((ntp - seconds) * (1 << 32)) & _U32
    return _SR.pack(0x80, 200, 6, ssrc & _U32, seconds & _U32, fraction,
                    rtp_timestamp & _U32, packets & _U32, octets & _U32)


def receiver_report(ssrc: int) -> bytes:
    """An RR without report blocks (what a receiver sends to say it is there)."""
    return _RR.pack(0x80, 201, 1, ssrc & _U32)


def is_rtcp(packet: bytes) -> bool:
    """Whether ``packet`` looks like RTCP (version 2, packet type 200-204; RFC 5761 demux)."""
    return len(packet) >= 8 and packet[0] >> 6 == 2 and packet[1] in _RTCP_TYPES
