"""The seam for SIP stacks: a device's SDP offer in; a listening talk session and our answer out.

A GB28181 SIP UAS (ours or one already in an existing Twisted SIP stack)
calls :meth:`TalkSignalling.prepare` when the device's INVITE arrives, puts the
answer in its 200 OK (the port already listens: some devices connect before
ACK) and calls :meth:`TalkSignalling.release` on BYE, CANCEL or failure.
"""

from __future__ import annotations

import zlib
from typing import Any

from zope.interface import implementer

from gb28181talk.core.params import Packaging, SessionKey, SessionParams, SsrcPolicy
from gb28181talk.errors import SdpError
from gb28181talk.interfaces import ITalkSignalling
from gb28181talk.media.law import Law
from gb28181talk.signalling.sdp import answer_for_offer, build_sdp, parse_sdp

DEFAULT_VHOST = "__defaultVhost__"


@implementer(ITalkSignalling)
class TalkSignalling:
    """Turns device offers into TCP passive talk sessions on a SessionManager."""

    def __init__(
        self,
        manager: Any,
        sources: Any,
        advertise_ip: str,
        platform_id: str = "gb28181talk",
        *,
        restrict_peer: bool = False,
        ssrc_policy: SsrcPolicy = SsrcPolicy.LEARN,
        wait_timeout: float = 5.0,
    ) -> None:
        self._manager = manager
        self._sources = sources
        self.advertise_ip = advertise_ip
        self.platform_id = platform_id
        self.restrict_peer = restrict_peer
        self.ssrc_policy = ssrc_policy
        self.wait_timeout = wait_timeout
        self._calls: dict[str, Any] = {}

    def prepare(self, call_id: str, offer_sdp: str, source_app: str, source_stream: str) -> str:
        """Open the talk port for this call (again, for a retried INVITE) and return the answer."""
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
        source = self._sources.get(source_app, source_stream)
        session = self._calls.get(call_id)
        if session is None or session.end_reason is not None:
            params = SessionParams(
                key=SessionKey(
                    DEFAULT_VHOST, source_app, source_stream, self._ssrc(offer, call_id)
                ),
                law=law,
                payload_type=payload_type,
                packaging=packaging,
                wait_timeout=self.wait_timeout,
                expected_peer=offer.device_address if self.restrict_peer else None,
                ssrc_policy=self.ssrc_policy,
                receive=offer.direction in ("sendrecv", "sendonly"),
            )
            session = self._manager.start(params, source)
            self._calls[call_id] = session
        answer = answer_for_offer(
            offer,
            address=self.advertise_ip,
            port=session.port,
            origin_user=self.platform_id,
            payload_type=payload_type,
        )
        return build_sdp(answer)

    def release(self, call_id: str) -> None:
        """End the call's session (reason ``stopped``); harmless if unknown or already ended."""
        session = self._calls.pop(call_id, None)
        if session is not None:
            session.stop()

    @staticmethod
    def _ssrc(offer: Any, call_id: str) -> int:
        """The offer's y= SSRC; without one, a stable number from the Call-ID keeps calls apart."""
        return offer.ssrc if offer.ssrc is not None else zlib.crc32(call_id.encode())

    @staticmethod
    def _choose_payload(offer: Any) -> tuple[int, Law, Packaging]:
        """Raw PCMA, then PCMU, then PS, as offered: raw G.711 is the safe downlink."""
        encodings = {
            pt: (offer.rtpmap_for(pt) or "").split("/")[0].upper() for pt in offer.payload_types
        }
        for pt, name in encodings.items():
            if name == "PCMA" or (not name and pt == 8):
                return pt, Law.ALAW, Packaging.RAW
        for pt, name in encodings.items():
            if name == "PCMU" or (not name and pt == 0):
                return pt, Law.ULAW, Packaging.RAW
        for pt, name in encodings.items():
            if name == "PS" or (not name and pt == 96):
                return pt, Law.ALAW, Packaging.PS
        raise SdpError(
            f"the offer has no G.711 (PCMA/PCMU) or PS payload: {list(offer.payload_types)}"
        )
