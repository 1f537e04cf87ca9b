"""ZLMediaKit's HTTP API as platforms call it: ``/index/api/startSendRtp*`` and friends.

Same paths, parameter names, defaults and reply shapes as ZLMediaKit
(``server/WebApi.cpp``): arguments from the query string, a form or a JSON
body (the query string wins), any HTTP method, HTTP 200 with ``code`` in the
body for every answer (0 success, -100 secret, -300 arguments, -400 port
busy or pool exhausted, -500 no such source, -1 nothing to act on).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request

from gb28181talk.core.session import TalkSession
from gb28181talk.core.talk import TalkControl
from gb28181talk.errors import DeviceUnreachable
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
from gb28181talk.web.start import parse_zlm_start, source_name, ssrc

ENDPOINTS = ("startSendRtpPassive", "startSendRtp", "startSendRtpTalk", "stopSendRtp",
             "listRtpSender", "getMediaList", "getMediaInfo", "isMediaOnline", "close_streams",
             "getServerConfig", "setServerConfig", "openRtpServer", "closeRtpServer",
             "listRtpServer", "connectRtpServer", "getRtpInfo")
"""Every endpoint served; getMediaList and after are added by web/zlm_streams, web/zlm_node
and web/zlm_rtp."""

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
    """Open a talk port for the device to reach (TCP, or UDP with ``is_udp=1``); answers at once."""

    mode = "passive"

    def answer(self, args: dict[str, str]) -> Deferred[dict[str, Any]]:  # type: ignore[override]
        request = parse_zlm_start(args, self.wait_timeout, self.mode)
        return self.control.start(request).addCallback(
            lambda session: {"local_port": session.port}
        )


class StartSendRtp(StartSendRtpPassive):
    """Send to the device at ``dst_url:dst_port``: UDP datagrams, or over our TCP connection.

    As ZLMediaKit, the answer leaves once the device is reached: at once for UDP,
    when the TCP connect succeeds, or ``{"code": -1, "msg": why, "local_port": N}``
    when it is refused or times out (after ``close_delay_ms``, default 5 s).
    """

    mode = "active"

    def answer(self, args: dict[str, str]) -> Deferred[dict[str, Any]]:  # type: ignore[override]
        request = parse_zlm_start(args, self.wait_timeout, self.mode)
        control = self.control
        connected = control.start(request).addCallback(control.when_connected)
        return connected.addCallbacks(
            lambda session: {"local_port": session.port}, _unreachable_reply)


class StartSendRtpTalk(StartSendRtpPassive):
    """Send back on the connection the device opened to the RTP server ``recv_stream_id``."""

    mode = "talk"


def _unreachable_reply(failure: Failure) -> dict[str, Any]:
    """ZLMediaKit's answer to a device it could not reach: code -1, why, the local port."""
    failure.trap(DeviceUnreachable)
    error = failure.value
    return {"code": codes.OTHER_FAILED, "msg": str(error), "local_port": error.local_port}


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
        speed = sum(bytes_speed(session) for session in sessions)
        return {
            "data": [session.params.ssrc_echo for session in sessions],
            "bytesSpeed": speed,
            "totalBytes": total,
            "senders": [self.control.describe(session) for session in sessions],
        }


def bytes_speed(session: TalkSession) -> int:
    """A session's mean send rate while streaming, in bytes per second."""
    stats = session.stats
    return int(stats.bytes_sent / stats.streaming_s) if stats.streaming_s > 0 else 0


class ZlmApi(Resource):
    """``/index/api``: the ZLMediaKit endpoints by name; anything else a JSON 404."""

    def __init__(self, auth: Authenticator, control: TalkControl, wait_timeout: float) -> None:
        super().__init__()
        self.auth = auth
        for name, endpoint in (
            ("startSendRtpPassive", StartSendRtpPassive),
            ("startSendRtp", StartSendRtp),
            ("startSendRtpTalk", StartSendRtpTalk),
            ("stopSendRtp", StopSendRtp),
            ("listRtpSender", ListRtpSender),
        ):
            self.putChild(name.encode("ascii"), endpoint(auth, control, wait_timeout))

    def getChild(self, path: bytes, request: Request) -> Resource:
        return NotFoundResource(self.auth, True, _HINT)

    def render(self, request: Request) -> bytes:
        return NotFoundResource(self.auth, True, _HINT).render(request)
