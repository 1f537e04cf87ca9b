"""The seam for SIP stacks: a device's SDP offer in; a listening talk session and our answer out.

A GB28181 SIP UAS (ours or one already in an existing Twisted SIP stack)
calls :meth:`TalkSignalling.prepare` when the device's INVITE arrives, puts the
answer in its 200 OK (the port already listens: some devices connect before
ACK), may call :meth:`TalkSignalling.when_ended` to learn when to send BYE,
and calls :meth:`TalkSignalling.release` on BYE, CANCEL or failure.

Every call goes through the talk core (:class:`~gb28181talk.core.talk.TalkControl`)
with the Call-ID as the session's identity, so:

* two calls are two sessions on two ports, even when their offers carry the
  same ``y=``; each answer matches its own session (payload type, direction);
* a retransmitted INVITE (same Call-ID, same offer) gets the same session
  and port; a re-INVITE with other settings replaces the call's session;
* a two-way offer (``a=sendrecv`` or ``a=sendonly``) publishes the device's
  voice as the source ``source_app/<device stream name>`` (see
  :func:`device_stream_name`) and records it under the core's record dir;
* :meth:`release` ends only that call's session; nothing is kept for a call
  whose session ended (the core and the manager forget it).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from gb28181talk.core.identity import CallId, OnRepeat
from gb28181talk.core.params import Packaging, SessionKey, SessionParams, SsrcPolicy
from gb28181talk.core.request import TalkRequest
from gb28181talk.core.talk import TalkControl
from gb28181talk.errors import SdpError
from gb28181talk.interfaces import ITalkSignalling
from gb28181talk.media.law import Law
from gb28181talk.media.payload import PayloadError, choose_downlink
from gb28181talk.signalling.sdp import answer_for_offer, build_sdp, parse_sdp

DEFAULT_VHOST = "__defaultVhost__"

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def device_stream_name(call_id: str) -> str:
    """The default name of a SIP two-way call's device audio: ``sip-`` and the Call-ID.

    Characters a source name cannot hold become ``_``; when any did (or the
    Call-ID is long) the CRC-32 of the whole Call-ID is added, so two calls
    never share a name: ``a84b4c76@pc33.example.com`` -> ``sip-a84b4c76_pc33.example.com-<crc>``.
    """
    safe = _UNSAFE.sub("_", call_id)[:96]
    if safe == call_id:
        return f"sip-{safe}"
    return f"sip-{safe}-{zlib.crc32(call_id.encode('utf-8')):08x}"


@implementer(ITalkSignalling)
class TalkSignalling:
    """Turns device offers into TCP passive talk sessions through the talk core."""

    def __init__(
        self,
        core: TalkControl,
        advertise_ip: str,
        platform_id: str = "gb28181talk",
        *,
        restrict_peer: bool = False,
        ssrc_policy: SsrcPolicy = SsrcPolicy.LEARN,
        wait_timeout: float = 5.0,
        device_stream: Callable[[str], str] = device_stream_name,
    ) -> None:
        self.core = core
        self.advertise_ip = advertise_ip
        self.platform_id = platform_id
        self.restrict_peer = restrict_peer
        self.ssrc_policy = ssrc_policy
        self.wait_timeout = wait_timeout
        self.device_stream = device_stream

    def prepare(self, call_id: str, offer_sdp: str, source_app: str, source_stream: str) -> str:
        """Open the talk port for this call (the same one for a retried INVITE); the answer SDP.

        Raises SdpError for an offer we cannot serve, and the core's domain
        errors (SourceNotFound, PortError, ShuttingDown, ...) for a refusal:
        what the SIP stack turns into a 488 or 503.
        """
        offer = parse_sdp(offer_sdp)
        if not offer.is_tcp:
            raise SdpError(
                f"the offer asks for {offer.transport} (UDP); only TCP passive talk is supported"
            )
        if not offer.wants_passive_server:
            raise SdpError(
                f"the offer says a=setup:{offer.setup}, so the device expects us to connect "
                "(TCP active); only TCP passive (device connects) is supported"
            )
        payload_type, law, packaging = self._choose_payload(offer)
        two_way = offer.direction in ("sendrecv", "sendonly")
        params = SessionParams(
            key=SessionKey(DEFAULT_VHOST, source_app, source_stream, self._ssrc(offer, call_id)),
            law=law,
            payload_type=payload_type,
            packaging=packaging,
            wait_timeout=self.wait_timeout,
            expected_peer=offer.device_address if self.restrict_peer else None,
            ssrc_policy=self.ssrc_policy,
            receive=two_way,
        )
        request = TalkRequest(
            params,
            recv_stream_id=self.device_stream(call_id) if two_way else None,
            on_repeat=OnRepeat.REPLACE_IF_CHANGED,
            identity=CallId(call_id),
        )
        session = self.core.start_now(request)
        answer = answer_for_offer(
            offer,
            address=self.advertise_ip,
            port=session.port,
            origin_user=self.platform_id,
            payload_type=session.params.rtp_payload_type,
        )
        return build_sdp(answer)

    def release(self, call_id: str) -> None:
        """End the call's session (reason ``stopped``); harmless if unknown or already ended."""
        self.core.stop(CallId(call_id))

    def when_ended(self, call_id: str) -> Deferred[str]:
        """Fires with the end reason when the call's media ends (not on a re-INVITE's replace).

        ``device-closed``, ``timeout``, ``stopped`` ...: the moment to send
        BYE.  Fails with SessionNotFound if the call has no live session.
        """
        return self.core.when_ended(CallId(call_id))

    def session(self, call_id: str) -> Any:
        """The call's live talk session, or None."""
        return self.core.find(CallId(call_id))

    @staticmethod
    def _ssrc(offer: Any, call_id: str) -> int:
        """The offer's y= SSRC; without one, a stable number from the Call-ID."""
        return offer.ssrc if offer.ssrc is not None else zlib.crc32(call_id.encode())

    @staticmethod
    def _choose_payload(offer: Any) -> tuple[int, Law, Packaging]:
        """Raw PCMA, then PCMU, then PS, as offered (the payload table's downlink order)."""
        rtpmaps = {pt: rtpmap for pt in offer.payload_types
                   if (rtpmap := offer.rtpmap_for(pt)) is not None}
        try:
            payload_type, payload = choose_downlink(offer.payload_types, rtpmaps)
        except PayloadError as error:
            raise SdpError(str(error)) from None
        return payload_type, payload.law or Law.ALAW, payload.packaging
