"""Who a talk session is for, and the one rule for a second start with the same identity.

A session's identity is what its caller calls it by: the ZLMediaKit key
(vhost/app/stream/ssrc, :class:`SessionKey`) for the HTTP APIs, or the SIP
Call-ID (:class:`CallId`) for a SIP call.  Two SIP calls whose offers carry
the same ``y=`` are two identities, so two sessions on two ports.

The rule, for a start whose identity has a live session (``OnRepeat`` is the
caller's policy):

* **same settings** (no :func:`differences`): the live session is the answer
  (a retried API call or a retransmitted INVITE gets the port it was given);
  except that ``REPLACE`` always replaces, and ``REPLACE_UNLESS_WAITING``
  (ZLMediaKit's ``startSendRtpPassive``) replaces a session whose device is
  already connected, as ZLMediaKit re-creates its sender;
* **other settings**: ``CONFLICT`` (the native API's default, and the
  manager's) refuses with :class:`~gb28181talk.errors.SessionConflict` naming
  each difference; every other policy replaces;
* **replace**: the old session ends (``stopped``) and a new one starts; when
  the new one asks for an explicit port the old one holds, it waits until that
  port is really closed.  A replacement is decided once and never loops.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from gb28181talk.core.params import SessionKey, SessionParams


@dataclass(frozen=True, slots=True)
class CallId:
    """The identity of a SIP call's talk session: its Call-ID."""

    call_id: str

    def __str__(self) -> str:
        return f"call {self.call_id}"


Identity = SessionKey | CallId
"""What a talk session is found again by: the caller's key or a SIP Call-ID."""


class OnRepeat(enum.StrEnum):
    """What a start does when its identity already has a live session (see the module rule)."""

    CONFLICT = "conflict"
    """Same settings: the live session; other settings: SessionConflict (native API)."""
    REPLACE_IF_CHANGED = "replace-if-changed"
    """Same settings: the live session; other settings: replace (a SIP re-INVITE)."""
    REPLACE_UNLESS_WAITING = "replace-unless-waiting"
    """The live session only while it waits with the same settings; else replace (ZLMediaKit)."""
    REPLACE = "replace"
    """Always end the live session and start afresh (``replace: true``)."""


class Outcome(enum.Enum):
    """What the rule decides for one repeated start."""

    REUSE = "reuse"
    CONFLICT = "conflict"
    REPLACE = "replace"


def decide(policy: OnRepeat, differences: list[str], connected: bool) -> Outcome:
    """The one rule: reuse, conflict or replace, from the policy, the differences, the state."""
    if policy is OnRepeat.REPLACE:
        return Outcome.REPLACE
    if differences:
        return Outcome.CONFLICT if policy is OnRepeat.CONFLICT else Outcome.REPLACE
    if policy is OnRepeat.REPLACE_UNLESS_WAITING and connected:
        return Outcome.REPLACE
    return Outcome.REUSE


def differences(
    old: SessionParams,
    old_port: int,
    new: SessionParams,
    old_recv_stream_id: str | None = None,
    new_recv_stream_id: str | None = None,
) -> list[str]:
    """What a live session has that a new start asks otherwise: ``codec PCMA (asked PCMU)``.

    Only what the device sees counts (codec, packaging, payload type, framing,
    packet duration, two-way, the expected peer, the transport and the device's
    address, an explicit port, the name of the device's audio); timeouts and
    pre-roll do not make a retry different.
    """
    asked: list[tuple[str, Any, Any]] = [
        ("codec", old.law.encoding_name, new.law.encoding_name),
        ("packaging", str(old.packaging), str(new.packaging)),
        ("pt", old.rtp_payload_type, new.rtp_payload_type),
        ("framing", old.framing.value, new.framing.value),
        ("packet_ms", old.packet_ms, new.packet_ms),
        ("two_way", old.receive, new.receive),
        ("expected_peer", old.expected_peer, new.expected_peer),
        ("transport", str(old.transport), str(new.transport)),
        ("destination", old.destination, new.destination),
    ]
    if new.src_port:
        asked.insert(0, ("src_port", old_port, new.src_port))
    found = [f"{name} {have} (asked {want})" for name, have, want in asked if have != want]
    if new.receive and old.receive and new_recv_stream_id != old_recv_stream_id:
        found.append(f"recv_stream_id {old_recv_stream_id} (asked {new_recv_stream_id})")
    return found
