"""ZLMediaKit's HTTP API as platforms call it: ``/index/api/startSendRtpPassive`` and friends.

Same paths, parameter names, defaults and reply shapes as ZLMediaKit
(``server/WebApi.cpp``): arguments from the query string, a form or a JSON
body (the query string wins), any HTTP method, HTTP 200 with ``code`` in the
body for every answer (0 success, -100 secret, -300 arguments, -400 port
busy or pool exhausted, -500 no such source, -1 nothing to act on).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import Request

from gb28181talk.core.session import TalkSession
from gb28181talk.core.talk import TalkControl
from gb28181talk.interfaces import SAMPLE_RATE
from gb28181talk.web import codes
from gb28181talk.web.common import (
    ApiError,
    Authenticator,
    JsonResource,
    NotFoundResource,
    RequestArgs,
    zlm_args,
    zlm_value,
)
from gb28181talk.web.start import parse_zlm_start, source_name, ssrc, text

ENDPOINTS = ("startSendRtpPassive", "stopSendRtp", "listRtpSender", "getMediaList")

_HINT = "this server implements /index/api/" + ", /index/api/".join(ENDPOINTS)


def ssrc_text(value: int) -> str:
    """An SSRC as GB28181 writes it in ``y=``: ten decimal digits."""
    return f"{value:010d}"


def body_secret(args: RequestArgs) -> str | None:
    """The ``secret`` of the body (any case, as ZLMediaKit reads names), whatever else it holds.

    Only that field is read, so a malformed other field is refused (-300)
    once the secret has been checked, rather than hiding the secret (-100).
    """
    found: str | None = None
    for name, value in args.body().items():
        if str(name).lower() == "secret":
            try:
                found = zlm_value(str(name), value)
            except ApiError:
                found = None
    return found


class ZlmEndpoint(JsonResource):
    """One ``/index/api/<name>``: any method, ZLMediaKit's arguments and error style."""

    isLeaf = True
    http_errors = False
    accept_any_method = True
    hint = _HINT

    def __init__(self, auth: Authenticator, control: TalkControl, wait_timeout: float) -> None:
        super().__init__(auth)
        self.control = control
        self.wait_timeout = wait_timeout

    def check_secret(self, args: RequestArgs) -> None:
        self.auth.check(args, lambda: body_secret(args))

    def on_ANY(self, request: Request, args: RequestArgs) -> dict[str, Any]:
        return self.answer(zlm_args(args))

    def answer(self, args: dict[str, str]) -> dict[str, Any]:
        raise NotImplementedError

    def sessions(self, args: dict[str, str], with_ssrc: bool) -> tuple[str, str, str, list[Any]]:
        vhost, app, stream = source_name(args)
        wanted = ssrc(args, required=False) if with_ssrc else None
        return vhost, app, stream, self.control.manager.matching(vhost, app, stream, wanted)


class StartSendRtpPassive(ZlmEndpoint):
    """Open a talk port for the device to connect to; answers ``local_port`` at once."""

    def answer(self, args: dict[str, str]) -> Deferred[dict[str, Any]]:  # type: ignore[override]
        request = parse_zlm_start(args, self.wait_timeout)
        return self.control.start(request).addCallback(
            lambda session: {"local_port": session.port}
        )


class StopSendRtp(ZlmEndpoint):
    """Stop the sessions playing app/stream (one SSRC or all): listener and connection close now."""

    def answer(self, args: dict[str, str]) -> dict[str, Any]:
        _vhost, app, stream, sessions = self.sessions(args, with_ssrc=True)
        stopped = sum(session.stop() for session in sessions)
        if stopped:
            return {"stopped": stopped}
        if self.control.registry.find(app, stream) is None:
            raise ApiError(codes.NOT_FOUND, f"can not find the stream {app}/{stream}")
        which = f" with ssrc {args['ssrc']}" if args.get("ssrc") else ""
        raise ApiError(codes.OTHER_FAILED,
                       f"stopSendRtp failed: no talk session plays {app}/{stream}{which}")


class ListRtpSender(ZlmEndpoint):
    """The SSRCs sending app/stream (``data``), plus each session in full (``senders``)."""

    def answer(self, args: dict[str, str]) -> dict[str, Any]:
        _vhost, app, stream, sessions = self.sessions(args, with_ssrc=False)
        if not sessions and self.control.registry.find(app, stream) is None:
            raise ApiError(codes.NOT_FOUND, f"can not find the source stream {app}/{stream}")
        total = sum(session.stats.bytes_sent for session in sessions)
        speed = sum(_bytes_speed(session) for session in sessions)
        return {
            "data": [ssrc_text(session.key.ssrc) for session in sessions],
            "bytesSpeed": speed,
            "totalBytes": total,
            "senders": [self.control.describe(session) for session in sessions],
        }


class GetMediaList(ZlmEndpoint):
    """The audio sources, in ZLMediaKit's media-list shape (filters: vhost, app, stream)."""

    def answer(self, args: dict[str, str]) -> dict[str, Any]:
        vhost = text(args, "vhost", codes.DEFAULT_VHOST) or codes.DEFAULT_VHOST
        app = text(args, "app", None)
        stream = text(args, "stream", None)
        sessions = self.control.manager.sessions()
        data = []
        for source in self.control.registry.list():
            if (app and source.app != app) or (stream and source.stream != stream):
                continue
            readers = [s for s in sessions if (s.key.app, s.key.stream) ==
                       (source.app, source.stream)]
            data.append(media_entry(source, vhost, readers))
        return {"data": data}


def _bytes_speed(session: TalkSession) -> int:
    stats = session.stats
    return int(stats.bytes_sent / stats.streaming_s) if stats.streaming_s > 0 else 0


def media_entry(source: Any, vhost: str, readers: list[TalkSession]) -> dict[str, Any]:
    """One source as a ZLMediaKit ``getMediaList`` item (audio only, G.711 8 kHz)."""
    info = source.describe()
    origin, origin_name = codes.origin_type(source.kind)
    return {
        "schema": "rtp",
        "vhost": vhost,
        "app": source.app,
        "stream": source.stream,
        "params": "",
        "createStamp": 0,
        "aliveSecond": int(info.get("position_ms", 0) // 1000),
        "bytesSpeed": sum(_bytes_speed(session) for session in readers),
        "totalBytes": sum(session.stats.bytes_sent for session in readers),
        "readerCount": len(readers),
        "totalReaderCount": len(readers),
        "originType": origin,
        "originTypeStr": origin_name,
        "originUrl": "",
        "isRecordingMP4": False,
        "isRecordingHLS": False,
        "originSock": None,
        "tracks": [
            {
                "codec_id": 3,
                "codec_id_name": "G711A",
                "codec_type": 1,
                "ready": not source.ended,
                "sample_rate": SAMPLE_RATE,
                "channels": 1,
                "sample_bit": 16,
            }
        ],
        "source": info,
    }


class ZlmApi(Resource):
    """``/index/api``: the ZLMediaKit endpoints by name; anything else a JSON 404."""

    def __init__(self, auth: Authenticator, control: TalkControl, wait_timeout: float) -> None:
        super().__init__()
        self.auth = auth
        for name, endpoint in (
            ("startSendRtpPassive", StartSendRtpPassive),
            ("stopSendRtp", StopSendRtp),
            ("listRtpSender", ListRtpSender),
            ("getMediaList", GetMediaList),
        ):
            self.putChild(name.encode("ascii"), endpoint(auth, control, wait_timeout))

    def getChild(self, path: bytes, request: Request) -> Resource:
        return NotFoundResource(self.auth, True, _HINT)

    def render(self, request: Request) -> bytes:
        return NotFoundResource(self.auth, True, _HINT).render(request)
