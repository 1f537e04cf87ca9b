"""The AMP commands between the control process and a media worker, and the values they carry.

Control -> worker: :class:`StartSession` (with the listening socket the control
bound, as an ``amp.Descriptor``), :class:`StopSession`, :class:`Frame` (one
source frame, 8 kHz PCM16, sent once per worker), :class:`SourceEnded`.
Worker -> control: :class:`Connected`, :class:`Refused`, :class:`Ended`,
:class:`PortClosed`, :class:`Stats` and :class:`DeviceAudio` (two-way talk).
Events that happen per frame or per report need no answer.
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from twisted.protocols import amp

from gb28181talk.core.params import (
    Packaging,
    SessionKey,
    SessionParams,
    SessionStats,
    SsrcPolicy,
    TransportKind,
)
from gb28181talk.media.framing import Framing
from gb28181talk.media.law import Law

_ENUMS: dict[str, Any] = {
    "law": Law, "packaging": Packaging, "framing": Framing,
    "ssrc_policy": SsrcPolicy, "transport": TransportKind,
}
"""The enum-valued fields of SessionParams and their types."""


def params_to_json(params: SessionParams) -> str:
    """SessionParams as JSON (enums by value, the key as a dict)."""
    out: dict[str, Any] = {}
    for field in fields(SessionParams):
        value = getattr(params, field.name)
        if field.name == "key":
            value = {"vhost": value.vhost, "app": value.app, "stream": value.stream,
                     "ssrc": value.ssrc}
        elif field.name in _ENUMS:
            value = value.value
        out[field.name] = value
    return json.dumps(out)


def params_from_json(text: str) -> SessionParams:
    """The SessionParams :func:`params_to_json` wrote."""
    data = json.loads(text)
    data["key"] = SessionKey(**data["key"])
    for name, kind in _ENUMS.items():
        data[name] = kind(data[name])
    return SessionParams(**data)


def stats_from_dict(data: dict[str, Any]) -> SessionStats:
    """SessionStats from its ``as_dict`` view (unknown names ignored)."""
    known = {field.name for field in fields(SessionStats)}
    return SessionStats(**{name: value for name, value in data.items() if name in known})


class Json(amp.Unicode):
    """An AMP argument holding one JSON value (a value of at most 64 KiB)."""

    def toString(self, inObject: Any) -> bytes:
        return super().toString(json.dumps(inObject, separators=(",", ":")))

    def fromString(self, inString: bytes) -> Any:
        return json.loads(super().fromString(inString))


# -- control -> worker


class Hello(amp.Command):
    """Is the worker up?  It answers with its pid once its reactor runs."""

    response = [(b"pid", amp.Integer())]


class StartSession(amp.Command):
    """Run this talk session; ``fd`` is the socket the control bound on ``port`` (or None)."""

    arguments = [
        (b"session_id", amp.Unicode()),
        (b"params", amp.Unicode()),
        (b"source_id", amp.Integer()),
        (b"port", amp.Integer()),
        (b"family", amp.Integer()),
        (b"fd", amp.Descriptor(optional=True)),
    ]
    response = [(b"port", amp.Integer())]
    errors = {Exception: b"START_FAILED"}


class StopSession(amp.Command):
    """End this session with ``reason`` (the control has ended its view already)."""

    arguments = [(b"session_id", amp.Unicode()), (b"reason", amp.Unicode())]
    requiresAnswer = False


class Frame(amp.Command):
    """One 20 ms frame (8 kHz PCM16) of the relayed source ``source_id``."""

    arguments = [(b"source_id", amp.Integer()), (b"pcm", amp.String())]
    requiresAnswer = False


class SourceEnded(amp.Command):
    """The relayed source ``source_id`` will send no more frames."""

    arguments = [(b"source_id", amp.Integer())]
    requiresAnswer = False


# -- worker -> control


class Connected(amp.Command):
    """The session's device connected from host:port (to ``local_port``: an active one's)."""

    arguments = [(b"session_id", amp.Unicode()), (b"host", amp.Unicode()),
                 (b"peer_port", amp.Integer()), (b"local_port", amp.Integer())]
    requiresAnswer = False


class Refused(amp.Command):
    """A connection to the session was refused, and why."""

    arguments = [(b"session_id", amp.Unicode()), (b"host", amp.Unicode()),
                 (b"peer_port", amp.Integer()), (b"why", amp.Unicode())]
    requiresAnswer = False


class Ended(amp.Command):
    """The session ended in the worker: its reason, detail and final figures."""

    arguments = [(b"session_id", amp.Unicode()), (b"reason", amp.Unicode()),
                 (b"detail", amp.Unicode()), (b"stats", Json())]
    requiresAnswer = False


class PortClosed(amp.Command):
    """The worker's copy of the session's listening socket is closed: the lease may return."""

    arguments = [(b"session_id", amp.Unicode())]
    requiresAnswer = False


class Stats(amp.Command):
    """Figures of live sessions: a list of ``[session_id, stats dict]``."""

    arguments = [(b"figures", Json())]
    requiresAnswer = False


class DeviceAudio(amp.Command):
    """One packet of the device's decoded voice (two-way talk) with its RTP timestamp."""

    arguments = [(b"session_id", amp.Unicode()), (b"pcm", amp.String()),
                 (b"rtp_timestamp", amp.Integer())]
    requiresAnswer = False
