"""A request to the talk core: start (or find again) the talk session of one identity."""

from __future__ import annotations

from dataclasses import dataclass

from gb28181talk.core.identity import Identity, OnRepeat
from gb28181talk.core.params import SessionParams


@dataclass(frozen=True, slots=True)
class TalkRequest:
    """What a front end (HTTP, SIP, browser) asks of the core for one talk session.

    ``identity`` is what the session is found again by (``None``: the key of
    ``params``); ``params`` is what the device gets; ``recv_stream_id`` names
    the source the device's voice is published as (``params.key.app`` /
    ``recv_stream_id``) in two-way talk; ``on_repeat`` is the caller's policy
    for an identity that has a live session (see :mod:`gb28181talk.core.identity`).
    """

    params: SessionParams
    recv_stream_id: str | None = None
    on_repeat: OnRepeat = OnRepeat.CONFLICT
    identity: Identity | None = None
    rtp_server: str | None = None
    """``transport`` ``rtp-server`` only: the stream_id of the RTP server whose device
    connection the audio goes back on (``startSendRtpTalk``'s ``recv_stream_id``)."""

    @property
    def session_identity(self) -> Identity:
        """The identity: as given, else the session key."""
        return self.identity if self.identity is not None else self.params.key
