"""ZLMediaKit's RTP server API for the device's talk audio in: the HTTP side only.

``openRtpServer`` (``port``, ``stream_id``, ``tcp_mode`` 0 UDP / 1 TCP passive /
2 TCP active, ``enable_tcp``, ``ssrc``, ``re_use_port``, ``only_track`` /
``only_audio``, ``local_ip``, ``vhost``, ``app`` default ``rtp``) answers
``{"port": N}``; ``closeRtpServer`` ``{"hit": 0|1}``; ``listRtpServer``
``{"data": [...]}``; ``connectRtpServer`` (``stream_id``, ``dst_url``,
``dst_port``) answers once the connect succeeded or failed; ``getRtpInfo``
``{"exist": ...}`` with the device's address once its audio flows.  The
servers themselves live in the core (:mod:`gb28181talk.core.rtp_server`);
:func:`announce_rtp_timeouts` sends ``on_rtp_server_timeout`` with
ZLMediaKit's body when one closes for want of audio.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from gb28181talk.core.rtp_server import (
    DEFAULT_RTP_APP,
    TCP_PASSIVE,
    RtpServer,
    RtpServerKey,
    RtpServers,
)
from gb28181talk.errors import DeviceUnreachable, RtpServerNotFound, SessionError
from gb28181talk.web import codes
from gb28181talk.web.start import NAME, _destination, _given, boolean, integer, invalid, text
from gb28181talk.web.zlm import ZlmEndpoint

MAX_SSRC = 2**32 - 1


def server_key(args: Mapping[str, Any]) -> RtpServerKey:
    """(vhost, app, stream_id) as ZLMediaKit reads them (app ``rtp`` unless given)."""
    vhost = text(args, "vhost", codes.DEFAULT_VHOST)
    app = text(args, "app", DEFAULT_RTP_APP, NAME)
    stream_id = text(args, "stream_id", None, NAME,
                     "the name the device's audio is published under, e.g. 34020000001320000001")
    assert vhost is not None and app is not None and stream_id is not None
    return vhost, app, stream_id


def parse_open(args: Mapping[str, Any]) -> tuple[RtpServerKey, dict[str, Any]]:
    """``openRtpServer``'s arguments: the key and the RtpServer options; -300 otherwise."""
    if _given(args, "port") is None:
        raise invalid("parameter port is required: 0 for a port of the pool, or the port to "
                      "open")
    port = integer(args, "port", 0, 0, 65535)
    key = server_key(args)
    tcp_mode = integer(args, "tcp_mode", 0, 0, 2)
    if boolean(args, "enable_tcp", False) and not tcp_mode:
        tcp_mode = TCP_PASSIVE  # ZLMediaKit's older name for tcp_mode=1
    only_track = integer(args, "only_track", 0, 0, 2)
    if boolean(args, "only_audio", False):
        only_track = 1
    if only_track == 2:
        raise invalid("only_track=2 (video only) makes no sense for a talk node: it hears "
                      "audio only; use 0 or 1")
    text(args, "local_ip", None)  # we listen on the media interface (--media-interface)
    ssrc = integer(args, "ssrc", 0, 0, MAX_SSRC)
    options = {
        "tcp_mode": tcp_mode, "port": port, "ssrc": ssrc, "only_track": only_track,
        "re_use_port": boolean(args, "re_use_port", False),
    }
    return key, options


class _RtpEndpoint(ZlmEndpoint):
    """An RTP server endpoint: the core's RtpServers through the talk control."""

    @property
    def servers(self) -> RtpServers:
        return self.control.rtp_servers


class OpenRtpServer(_RtpEndpoint):
    """Open a port for the device's audio; ``{"port": N}``."""

    def answer(self, args: dict[str, str]) -> dict[str, Any]:
        key, options = parse_open(args)
        try:
            server = self.servers.open(key, **options)
        except SessionError as error:
            raise invalid(str(error)) from None
        return {"port": server.port}


class CloseRtpServer(_RtpEndpoint):
    """Close an RTP server now; ``{"hit": 1}`` if one was open, else ``{"hit": 0}``."""

    def answer(self, args: dict[str, str]) -> dict[str, Any]:
        return {"hit": int(self.servers.close(server_key(args)))}


class ListRtpServer(_RtpEndpoint):
    """Every open RTP server: ``{"data": [{"port", "stream_id", "tcp_mode", ...}]}``."""

    def answer(self, args: dict[str, str]) -> dict[str, Any]:
        return {"data": [server.describe() for server in self.servers.list()]}


class ConnectRtpServer(_RtpEndpoint):
    """Dial the listening device from an RTP server's port (``tcp_mode=2``); answers when done."""

    def answer(self, args: dict[str, str]) -> Deferred[dict[str, Any]] | dict[str, Any]:
        key = server_key(args)
        host, port = _destination(args, udp=False)
        server = self.servers.find(key)
        if server is None:
            return {"code": codes.OTHER_FAILED, "msg": "can not find the stream"}
        return server.connect(host, port).addCallbacks(lambda _: {}, _failed)


def _failed(failure: Failure) -> dict[str, Any]:
    failure.trap(DeviceUnreachable, RtpServerNotFound, SessionError)
    return {"code": codes.OTHER_FAILED, "msg": str(failure.value)}


class GetRtpInfo(_RtpEndpoint):
    """Whether the device's RTP has arrived at ``stream_id``, and from where."""

    def answer(self, args: dict[str, str]) -> dict[str, Any]:
        server = self.servers.find(server_key(args))
        if server is None or server.link is None or not server.packets_received:
            return {"exist": False}
        peer = server.link.peer
        return {
            "exist": True,
            "peer_ip": peer[0],
            "peer_port": peer[1],
            "local_ip": self.control.advertise_ip or self.servers.pool.interface or "0.0.0.0",
            "local_port": server.port,
            "identifier": server.owner,
        }


RTP_ENDPOINTS = (
    ("openRtpServer", OpenRtpServer), ("closeRtpServer", CloseRtpServer),
    ("listRtpServer", ListRtpServer), ("connectRtpServer", ConnectRtpServer),
    ("getRtpInfo", GetRtpInfo),
)
"""The RTP server endpoints by name, for web/root.py."""


def timeout_body(server: RtpServer) -> dict[str, Any]:
    """ZLMediaKit's ``on_rtp_server_timeout`` body (``mediaServerId`` added by the deliverer)."""
    return {
        "local_port": server.port,
        "vhost": server.vhost,
        "app": server.app,
        "stream_id": server.stream_id,
        "tcp_mode": server.tcp_mode,
        "re_use_port": server.re_use_port,
        "ssrc": server.ssrc,
    }


def announce_rtp_timeouts(servers: RtpServers, node: Any, deliverer: Any) -> None:
    """POST ``on_rtp_server_timeout`` to the node's URL for it whenever a server times out."""

    def timed_out(server: RtpServer) -> None:
        url = node.hook_url("on_rtp_server_timeout")
        if url:
            deliverer.post("on_rtp_server_timeout", url, timeout_body(server))

    servers.on_timeout(timed_out)
