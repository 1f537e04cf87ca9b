"""A device's SDP and the talk session it asks for: every media mode real devices use.

The device's SDP (its broadcast offer, or its answer to our talk INVITE)
decides how the device is reached (:class:`~gb28181talk.core.params.TransportKind`):

* ``TCP/RTP/AVP`` with ``a=setup:active`` (or ``actpass``, or no setup): the
  device connects, we listen (``tcp-passive``, today's mode);
* ``TCP/RTP/AVP`` with ``a=setup:passive``: the device listens at ``c=``/``m=``
  and we connect (``tcp-active``);
* ``RTP/AVP``: datagrams to the device's ``c=``/``m=`` (``udp``; Hikvision
  firmware offers only this).

:func:`talk_request` turns that into the talk core's request (the Call-ID
its identity, so a retransmitted INVITE finds its session again);
:func:`answer_sdp` is our answer once the session is open (our advertised
address and port, ``a=setup`` inverted, ``a=connection:new``, the direction
inverted, the offered ``y=`` or the SSRC we chose, ``f=``, the payload type we
send); :func:`talk_offer` is our own offer for a platform-initiated talk.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from gb28181talk.core.identity import CallId, OnRepeat
from gb28181talk.core.params import Packaging, SessionKey, SessionParams, TransportKind
from gb28181talk.core.request import TalkRequest
from gb28181talk.errors import SdpError, SessionError
from gb28181talk.media.framing import Framing
from gb28181talk.media.law import Law
from gb28181talk.media.payload import PayloadError, choose_downlink, identify
from gb28181talk.signalling.sdp import AudioSdp, answer_for_offer, build_sdp, parse_sdp

DEFAULT_VHOST = "__defaultVhost__"

G711_F_LINE = "v/////a/1/8/1"
"""``f=`` for G.711 at 8 kHz, 64 kbit/s: what we write when the device wrote none."""


@dataclass(frozen=True, slots=True)
class MediaOptions:
    """What the API caller decides about the packets a device gets (checked by SessionParams)."""

    packet_ms: int = 20
    framing: Framing = Framing.RFC4571
    ps: bool = False
    """Prefer PS-packed audio (payload 96) when the device offers it; raw G.711 otherwise."""
    wait_timeout: float = 10.0
    """Seconds for the device to connect (or for our connect to it) before the call ends."""
    preroll_ms: int = 1000


def media_options(value: MediaOptions | Mapping[str, Any] | None) -> MediaOptions:
    """Options as given, or from the API's fields (``packet_ms``, ``framing``, ``packaging``,
    ``wait_timeout``, ``preroll_ms``); SessionError (the API's 400) names a bad one."""
    if value is None:
        return MediaOptions()
    if isinstance(value, MediaOptions):
        return value
    unknown = sorted(set(value) - _OPTION_FIELDS)
    if unknown:
        raise SessionError(f"unknown packet option(s) {', '.join(unknown)}; the options are "
                           f"{', '.join(sorted(_OPTION_FIELDS))}")
    try:
        framing = Framing(value.get("framing", "rfc4571"))
    except ValueError:
        raise SessionError(f"framing {value.get('framing')!r} is not rfc4571 or none") from None
    packaging = value.get("packaging", "raw")
    if packaging not in ("raw", "ps"):
        raise SessionError(f"packaging {packaging!r} is not raw or ps")
    numbers = {}
    for name, kind, default in (("packet_ms", int, 20), ("wait_timeout", float, 10.0),
                                ("preroll_ms", int, 1000)):
        raw = value.get(name, default)
        if isinstance(raw, bool) or not isinstance(raw, int | float) or (
            kind is int and raw != int(raw)
        ):
            what = "an integer" if kind is int else "a number"
            raise SessionError(f"{name} {raw!r} is not {what}")
        numbers[name] = kind(raw)
    options = MediaOptions(framing=framing, ps=packaging == "ps", **numbers)
    if framing is Framing.INTERLEAVED or not 20 <= options.packet_ms <= 180 or (
        options.packet_ms % 20
    ):
        raise SessionError(f"packet_ms {options.packet_ms} must be 20..180, a multiple of 20")
    if not 0 < options.wait_timeout <= 3600 or not 0 <= options.preroll_ms <= 10_000:
        raise SessionError("wait_timeout must be above 0 (at most 3600 s) and preroll_ms "
                           "0..10000")
    return options


_OPTION_FIELDS = frozenset({"packet_ms", "framing", "packaging", "wait_timeout", "preroll_ms"})


def transport_of(sdp: AudioSdp) -> TransportKind:
    """The transport a device's SDP asks for (see the module's list)."""
    if not sdp.is_tcp:
        return TransportKind.UDP
    if sdp.wants_passive_server:
        return TransportKind.TCP_PASSIVE
    if sdp.setup == "passive":
        return TransportKind.TCP_ACTIVE
    raise SdpError(f"the SDP says a=setup:{sdp.setup}: no connection can be made")


def ssrc_for(sdp: AudioSdp, call_id: str) -> int:
    """The SDP's ``y=``; without one, an SSRC we choose from the Call-ID (written in the answer)."""
    if sdp.ssrc is not None:
        return sdp.ssrc
    return zlib.crc32(call_id.encode("utf-8")) % 10**9  # fits ten digits, real-time ("0...")


def _payload(sdp: AudioSdp, prefer_ps: bool) -> tuple[int, Law, Packaging]:
    """Raw PCMA, then PCMU, then PS, as offered; PS first when asked for and offered."""
    rtpmaps = {pt: rtpmap for pt in sdp.payload_types
               if (rtpmap := sdp.rtpmap_for(pt)) is not None}
    try:
        payload_type, payload = choose_downlink(sdp.payload_types, rtpmaps)
    except PayloadError as error:
        raise SdpError(str(error)) from None
    if prefer_ps and payload.packaging is not Packaging.PS:
        for candidate in sdp.payload_types:
            kind = identify(candidate, rtpmaps.get(candidate))
            if kind is not None and kind.packaging is Packaging.PS:
                payload_type, payload = candidate, kind
                break
    return payload_type, payload.law or Law.ALAW, payload.packaging


def talk_request(
    sdp: AudioSdp,
    call_id: str,
    app: str,
    stream: str,
    options: MediaOptions,
    *,
    two_way: bool | None = None,
    recv_stream_id: str | None = None,
    on_repeat: OnRepeat = OnRepeat.REPLACE_IF_CHANGED,
) -> TalkRequest:
    """The talk core's request for the device that wrote ``sdp`` (our audio: ``app/stream``).

    ``two_way`` None: as the SDP's direction says (``sendrecv``/``sendonly``:
    the device speaks too).  The device's address and port are the SDP's
    ``c=`` (else ``o=``) and ``m=`` for the kinds that reach out to it.
    """
    kind = transport_of(sdp)
    payload_type, law, packaging = _payload(sdp, options.ps)
    if two_way is None:
        two_way = sdp.direction in ("sendrecv", "sendonly")
    reach_out = kind.needs_destination
    if reach_out and not sdp.port:
        raise SdpError(f"the SDP asks for {kind} but its m=audio port is 0")
    params = SessionParams(
        key=SessionKey(DEFAULT_VHOST, app, stream, ssrc_for(sdp, call_id)),
        law=law,
        payload_type=payload_type,
        packaging=packaging,
        framing=options.framing if sdp.is_tcp else Framing.RFC4571,
        packet_ms=options.packet_ms,
        wait_timeout=options.wait_timeout,
        preroll_ms=options.preroll_ms,
        receive=two_way,
        transport=kind,
        dst_host=sdp.device_address if reach_out else None,
        dst_port=sdp.port if reach_out else 0,
    )
    return TalkRequest(
        params,
        recv_stream_id=recv_stream_id if two_way else None,
        on_repeat=on_repeat,
        identity=CallId(call_id),
    )


def answer_sdp(
    offer: AudioSdp, session: Any, *, address: str, platform_id: str, call_id: str
) -> str:
    """Our answer to the device's offer, for its now open ``session``.

    The port is the session's (a TCP active session that has not connected
    yet answers 9, the RFC 4145 discard port for the side that connects);
    ``y=`` is the offer's or the one we chose; ``f=`` the offer's or G.711's.
    """
    port = session.port or 9
    answer = answer_for_offer(
        offer,
        address=address,
        port=port,
        origin_user=platform_id,
        payload_type=session.params.rtp_payload_type,
    )
    answer = replace(
        answer,
        ssrc=ssrc_for(offer, call_id),
        f_line=offer.f_line or G711_F_LINE,
        direction=answer.direction or "sendonly",
    )
    return build_sdp(answer)


def talk_offer(
    *,
    address: str,
    port: int,
    platform_id: str,
    ssrc: int,
    law: Law = Law.ALAW,
) -> str:
    """Our offer for a platform-initiated talk: ``s=Talk``, ``sendrecv``, we listen on ``port``.

    ``a=setup:passive`` (the device connects to us), ``a=connection:new``,
    the G.711 law we send and ``y=``/``f=``.
    """
    payload_type = law.payload_type
    return build_sdp(
        AudioSdp(
            session_name="Talk",
            origin_user=platform_id,
            origin_address=address,
            connection_address=address,
            port=port,
            transport="TCP/RTP/AVP",
            payload_types=(payload_type,),
            rtpmap=((payload_type, f"{law.encoding_name}/8000"),),
            setup="passive",
            connection="new",
            direction="sendrecv",
            ssrc=ssrc,
            f_line=G711_F_LINE,
        )
    )


def parse_device_sdp(body: bytes) -> AudioSdp:
    """The device's SDP from a SIP body; SdpError when it has none or it cannot be read."""
    if not body.strip():
        raise SdpError("the request has no SDP body")
    return parse_sdp(body)
