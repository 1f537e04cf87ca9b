"""``/api/broadcast`` and ``/api/talk``: GB28181 broadcast and two-way talk over our SIP platform.

* ``POST /api/broadcast`` ``{"device_ids": [...], "app", "stream", "channel"?,
  "replace"?, "packet_ms"?, "framing"?, "packaging"?, "wait_timeout"?}`` answers once
  every device's part is known (its INVITE answered, refused, or no INVITE in 10 s):
  ``{"code": 0, "results": [{"device_id", "channel", "result": "OK", "response",
  "call_id", "session_id", "transport", "port", "ssrc"} | {"device_id", "channel",
  "result": "ERROR", "status", "reason", "response"}]}``, one per device, in order;
* ``POST /api/talk`` ``{"device_id", "app", "stream", "channel"?, "replace"?, ...}``
  answers once the device answered: ``{"code": 0, "device_id", "channel", "result":
  "OK", "call_id", "session_id", "transport", "port", "ssrc", "device_audio"}``; a
  refusal is an error reply (404 unknown device, 409 busy, 504 no answer, 502 refused);
* ``GET`` lists the live ones; ``POST .../stop`` ``{"device_id"}`` ends one (BYE).

The flows are the SIP layer's (``sip/broadcast.py``, ``sip/talk.py``), handed in by
the service; without ``--sip`` these paths answer 503.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import Request

from gb28181talk.web import codes
from gb28181talk.web.common import ApiError, Authenticator, JsonResource, RequestArgs

MAX_DEVICES = 1000
"""Devices one broadcast call may name."""

PACKET_OPTIONS = ("packet_ms", "framing", "packaging", "wait_timeout", "preroll_ms")

_TALK_STATUS = {404: 404, 486: 409, 408: 504}


class BroadcastFlow(Protocol):
    """What ``/api/broadcast`` calls (``gb28181talk.sip.broadcast.Broadcasts``)."""

    def start(self, device_ids: list[str], app: str, stream: str, **options: Any) -> Deferred[
            list[dict[str, Any]]]:
        """One result per device."""

    def stop(self, device_id: str) -> bool:
        """End the device's broadcast."""

    def describe(self) -> list[dict[str, Any]]:
        """The live broadcasts."""


class TalkFlow(Protocol):
    """What ``/api/talk`` calls (``gb28181talk.sip.talk.Talks``)."""

    def start(self, device_id: str, app: str, stream: str, **options: Any) -> Deferred[
            dict[str, Any]]:
        """The device's result."""

    def stop(self, device_id: str) -> bool:
        """End the device's talk."""

    def describe(self) -> list[dict[str, Any]]:
        """The live talks."""


def _text(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > 128:
        raise ApiError(codes.INVALID_ARGS, f"{name} must be a non-empty string (at most 128 "
                                           f"characters), not {value!r}")
    return value


def _common(body: dict[str, Any]) -> dict[str, Any]:
    """channel, replace and the packet options, checked for their types."""
    replace = body.get("replace", False)
    if not isinstance(replace, bool):
        raise ApiError(codes.INVALID_ARGS, f"replace must be true or false, not {replace!r}")
    options = {name: body[name] for name in PACKET_OPTIONS if name in body}
    return {"channel": _text(body, "channel", required=False), "replace": replace,
            "options": options}


def _unknown(body: dict[str, Any], known: set[str]) -> None:
    extra = sorted(set(body) - known - {"secret"})
    if extra:
        raise ApiError(codes.INVALID_ARGS, f"unknown field(s) {', '.join(extra)}; the fields "
                                           f"are {', '.join(sorted(known))}")


_FIELDS = {"app", "stream", "channel", "replace", *PACKET_OPTIONS}


class _FlowResource(JsonResource):
    """Shared: the flow (None: SIP is off, 503), GET lists, ``stop`` below."""

    what = ""

    def __init__(self, auth: Authenticator, flow: Any) -> None:
        super().__init__(auth)
        self.flow = flow
        if flow is not None:
            self.putChild(b"stop", _StopResource(auth, flow, self.what))

    def require_flow(self) -> Any:
        if self.flow is None:
            raise ApiError(codes.OTHER_FAILED, f"{self.what} needs the SIP platform: start "
                                               "the service with --sip (e.g. --sip udp:5060)",
                           503)
        return self.flow

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path in self.children and not request.postpath:
            return self.children[path]
        return super().getChild(path, request)

    def on_GET(self, request: Request, args: RequestArgs) -> dict[str, Any]:
        return {f"{self.what}s": self.require_flow().describe()}


class BroadcastResource(_FlowResource):
    """``/api/broadcast``: one source to one or many devices, one result each."""

    what = "broadcast"

    def on_POST(self, request: Request, args: RequestArgs) -> Deferred[dict[str, Any]]:
        flow = self.require_flow()
        body = args.body()
        _unknown(body, {"device_ids", *_FIELDS})
        ids = body.get("device_ids")
        if isinstance(ids, str):
            ids = [ids]
        if not isinstance(ids, list) or not ids or len(ids) > MAX_DEVICES or not all(
            isinstance(i, str) and 0 < len(i) <= 64 for i in ids
        ) or len(set(ids)) != len(ids):
            raise ApiError(codes.INVALID_ARGS, "device_ids must be a list of 1.."
                                               f"{MAX_DEVICES} different device ids")
        app, stream = _text(body, "app"), _text(body, "stream")
        started = flow.start(ids, app, stream, **_common(body))
        return started.addCallback(lambda results: {"results": results})


class TalkResource(_FlowResource):
    """``/api/talk``: two-way talk with one device."""

    what = "talk"

    def on_POST(self, request: Request, args: RequestArgs) -> Deferred[dict[str, Any]]:
        flow = self.require_flow()
        body = args.body()
        _unknown(body, {"device_id", *_FIELDS})
        device_id = _text(body, "device_id")
        app, stream = _text(body, "app"), _text(body, "stream")
        return flow.start(device_id, app, stream, **_common(body)).addCallback(_talk_reply)


def _talk_reply(result: dict[str, Any]) -> dict[str, Any]:
    if result.get("result") == "OK":
        return result
    status = int(result.get("status") or 502)
    raise ApiError(codes.OTHER_FAILED, str(result.get("reason")), _TALK_STATUS.get(status, 502))


class _StopResource(JsonResource):
    """``POST /api/<what>/stop`` ``{"device_id"}``: BYE (or CANCEL); ``{"stopped": bool}``."""

    isLeaf = True

    def __init__(self, auth: Authenticator, flow: Any, what: str) -> None:
        super().__init__(auth)
        self.flow = flow
        self.what = what

    def on_POST(self, request: Request, args: RequestArgs) -> dict[str, Any]:
        body = args.body()
        _unknown(body, {"device_id"})
        device_id = _text(body, "device_id")
        return {"stopped": self.flow.stop(device_id)}
