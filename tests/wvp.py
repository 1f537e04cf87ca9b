"""wvp-GB28181-pro as a test client: its calls, its hook settings and the devices it sends to.

What wvp's source does, shared by the tests that play it against the real
service: ``ZLMRESTfulUtils.sendPost`` (a form POST, ``secret`` in the body),
``ZLMMediaServerStatusManager`` (the keys it reads from getServerConfig, the
settings it pushes with setServerConfig), ``ZLMMediaNodeServerService``'s
``startSendRtp`` fields, and the two devices ``startSendRtp`` reaches: a UDP
device (``DeviceDatagramProtocol``) and a listening TCP device
(``DeviceMediaFactory``), both the project's own device media core on real
loopback sockets.  :class:`WvpPlatform` is a mixin for trial test cases.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred

from gb28181talk.device.protocol import DeviceDatagramProtocol, DeviceMediaFactory
from gb28181talk.device.voice import DeviceVoice
from gb28181talk.web import codes
from tests.devices import DeviceClient
from tests.httpapi import HookReceiver, Reply, ServiceHarness, call

VHOST = codes.DEFAULT_VHOST
CANDIDATES = range(300, 1600, 100)
"""The frequencies a device's audio is checked against (its dominant one is the tone's)."""

WVP_READS = (
    # ZLMServerConfig fields wvp uses (ZLMMediaServerStatusManager.initPort/online,
    # ZLMMediaNodeServerService.checkNodeId, MediaServer(ZLMServerConfig, ...)).
    "general.mediaServerId", "hook.alive_interval", "http.port", "http.sslport", "rtmp.port",
    "rtmp.sslport", "rtsp.port", "rtsp.sslport", "rtp_proxy.port", "rtp_proxy.port_range",
)


def wvp_hook_config(prefix: str, low: int, high: int) -> dict[str, str]:
    """The settings wvp's setZLMConfig pushes (ZLMMediaServerStatusManager.java)."""
    names = ("on_play", "on_publish", "on_server_started", "on_stream_changed",
             "on_stream_none_reader", "on_stream_not_found", "on_server_keepalive",
             "on_send_rtp_stopped", "on_rtp_server_timeout", "on_record_mp4")
    return {
        "hook.enable": "1", "hook.on_flow_report": "", "hook.on_http_access": "",
        "hook.on_record_ts": "", "hook.on_rtsp_auth": "", "hook.on_rtsp_realm": "",
        "hook.on_shell_login": "", **{f"hook.{name}": f"{prefix}/{name}" for name in names},
        "hook.timeoutSec": "30", "protocol.continue_push_ms": "3000",
        "rtp_proxy.port_range": f"{low}-{high}",
    }


class WvpPlatform:
    """wvp's calls and devices for a trial test case with wvp's ``secret``.

    Its setUp calls :meth:`start_node`: the node (``harness``) and wvp's hook
    receiver (``receiver``, its URL prefix ``prefix``); tearDown stops both and
    the devices' listening ports (``ports``).
    """

    secret: str
    harness: ServiceHarness
    receiver: HookReceiver
    prefix: str
    ports: list[Any]

    def start_node(self, ports: int, **settings: Any) -> None:
        """Start wvp's hook receiver, then the node with ``ports`` talk ports and wvp's secret."""
        self.receiver = HookReceiver()
        self.prefix = self.receiver.start()
        self.harness = ServiceHarness(ports=ports, secret=self.secret, **settings)
        self.harness.start()
        self.ports = []

    def tearDown(self) -> Deferred[None]:
        """Stop the node, the devices' listening ports and the hook receiver, in that order."""
        return Deferred.fromCoroutine(self._stop_node())

    async def _stop_node(self) -> None:
        await self.harness.stop()
        await self.close_devices()
        await self.receiver.stop()

    async def add_talk_tone(self) -> Reply:
        """Add the platform's audio, broadcast/talk: a 1000 Hz tone, by the native API."""
        return await call("POST", self.harness.url("/api/sources"),
                          headers={"Authorization": f"Bearer {self.secret}"},
                          json_body={"app": "broadcast", "stream": "talk", "kind": "tone",
                                     "frequency": 1000})

    async def wvp(self, api: str, **params: Any) -> Reply:
        """One call as ZLMRESTfulUtils.sendPost makes it: a form POST, secret in the body."""
        form = {"secret": self.secret, **{name: str(value) for name, value in params.items()}}
        reply = await call("POST", self.harness.url(f"/index/api/{api}"), form=form)
        assert reply.status == 200 and reply.content_type.startswith("application/json")
        return reply

    def hooks(self, name: str) -> list[dict[str, Any]]:
        """The bodies of the hook ``name`` received so far, in order."""
        return [body for path, body in zip(self.receiver.paths, self.receiver.bodies,
                                           strict=True) if path.endswith("/" + name)]

    def udp_device(self, platform: tuple[str, int] | None = None,
                   voice: DeviceVoice | None = None) -> tuple[DeviceDatagramProtocol, int]:
        """A UDP device on loopback: what it hears, and its port."""
        device = DeviceDatagramProtocol(reactor, voice=voice, platform=platform)
        port = reactor.listenUDP(0, device, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.ports.append(port)
        return device, port.getHost().port

    def tcp_device(self) -> tuple[DeviceMediaFactory, int]:
        """A device listening for our TCP connection (it offered ``a=setup:passive``): its
        factory (``accepted`` fires with the connected DeviceClient) and its port."""
        factory = DeviceMediaFactory(DeviceClient)
        listening = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.ports.append(listening)
        return factory, listening.getHost().port

    def send_rtp(self, ssrc: str, dst_port: int, is_udp: int, **extra: Any) -> Any:
        """startSendRtp with the fields wvp sends a device that is not TCP active
        (ZLMMediaNodeServerService / ZLMServerFactory: ``udp_rtcp_timeout`` for UDP only,
        ``0`` without RTCP keepalive), to broadcast/talk unless ``extra`` says otherwise."""
        fields: dict[str, Any] = {
            "vhost": VHOST, "app": "broadcast", "stream": "talk", "ssrc": ssrc,
            "dst_url": "127.0.0.1", "dst_port": dst_port, "is_udp": is_udp, "src_port": 0,
            "pt": 8, "use_ps": 0, "only_audio": 1,
        }
        if is_udp:
            fields["udp_rtcp_timeout"] = 0
        fields.update(extra)
        return self.wvp("startSendRtp", **fields)

    async def close_devices(self) -> None:
        """Stop every device's listening port."""
        for port in self.ports:
            await port.stopListening()
