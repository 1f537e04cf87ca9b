"""Every sending mode and the RTP server, as wvp-GB28181-pro calls them, over loopback.

The calls are form POSTs with ``secret`` in the body, with the fields wvp's
``ZLMServerFactory.startSendRtp`` / ``createRTPServer`` and
``ZLMMediaNodeServerService.startSendRtpTalk`` send.  Devices are the
project's own device media core on real sockets: a UDP device
(``DeviceDatagramProtocol``) and a listening TCP device
(``DeviceMediaFactory``) hear the tone (its dominant frequency), an
unreachable device gets ZLMediaKit's ``code -1`` with ``local_port``; a
device sending to ``openRtpServer`` (UDP and TCP) becomes a source another
device hears, ``startSendRtpTalk`` answers on the device's own connection,
a silent RTP server ends with ``on_rtp_server_timeout``.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial import unittest

from gb28181talk.device.media import DeviceMedia
from gb28181talk.device.voice import DeviceVoice
from gb28181talk.media.framing import Framing
from gb28181talk.web import codes
from tests.audiocheck import dominant_frequency
from tests.devices import connect_device, sleep
from tests.httpapi import async_test, until
from tests.netutil import free_port
from tests.wvp import CANDIDATES, VHOST, WvpPlatform, wvp_hook_config

SECRET = "3e1b0c1e-talk-node"


def tone_pcm(frequency: float, seconds: float, rate: int = 8000) -> bytes:
    """A sine as 8 kHz PCM16, what a device says into its microphone."""
    count = int(seconds * rate)
    return struct.pack(f"<{count}h", *(int(12000 * math.sin(2 * math.pi * frequency * n / rate))
                                       for n in range(count)))


class SendModeTests(WvpPlatform, unittest.TestCase):
    """A node with a secret and the platform's hook URLs, as wvp leaves it."""

    timeout = 40
    secret = SECRET

    def setUp(self) -> Deferred[None]:
        self.start_node(ports=12, server_id="talk-node")
        return Deferred.fromCoroutine(self._setup())

    async def _setup(self) -> None:
        pushed = wvp_hook_config(self.prefix, self.harness.low, self.harness.high)
        assert (await self.wvp("setServerConfig", **pushed)).code == 0
        added = await self.add_talk_tone()
        assert added.code == 0, added.json

    # ----------------------------------------------------------------------- sending

    @async_test
    async def test_start_send_rtp_udp_the_device_hears_the_tone(self) -> None:
        device, device_port = self.udp_device()
        started = await self.send_rtp("777", device_port, 1)
        assert started.code == 0, started.json
        local_port = started.json["local_port"]
        assert self.harness.low <= local_port <= self.harness.high
        await until(lambda: device.media.audio_seconds >= 0.6)
        assert device.platform == ("127.0.0.1", local_port)  # sent from the leased port
        assert {packet.ssrc for packet in device.media.packets} == {777}
        assert dominant_frequency(device.media.pcm16(), CANDIDATES) == 1000
        senders = await self.wvp("listRtpSender", vhost=VHOST, app="broadcast", stream="talk")
        assert senders.json["data"] == ["777"]
        assert senders.json["senders"][0]["transport"] == "udp"
        stopped = await self.wvp("stopSendRtp", vhost=VHOST, app="broadcast", stream="talk",
                                 ssrc="777")
        assert stopped.code == 0
        await until(lambda: self.hooks("on_send_rtp_stopped"))
        assert self.hooks("on_send_rtp_stopped")[0]["ssrc"] == "777"
        await until(lambda: self.harness.service.pool.leased_count == 0)

    @async_test
    async def test_start_send_rtp_tcp_the_listening_device_hears_the_tone(self) -> None:
        factory, device_port = self.tcp_device()
        started = await self.send_rtp("0100000002", device_port, 0, close_delay_ms=3000)
        assert started.code == 0, started.json
        device = await factory.accepted  # the answer came once we were connected
        assert started.json["local_port"] == device.transport.getPeer().port
        await until(lambda: device.media.audio_seconds >= 0.6)
        assert device.media.framing is Framing.RFC4571
        assert {packet.ssrc for packet in device.media.packets} == {100000002}
        assert dominant_frequency(device.media.pcm16(), CANDIDATES) == 1000
        [session] = self.harness.service.manager.sessions()
        assert session.params.wait_timeout == 3.0
        assert session.describe()["transport"] == "tcp-active"
        assert (await self.wvp("stopSendRtp", vhost=VHOST, app="broadcast",
                               stream="talk")).code == 0
        await device.closed

    @async_test
    async def test_an_unreachable_device_gets_zlmediakits_minus_1_with_local_port(self) -> None:
        refused = await self.send_rtp("3", free_port(), 0)
        assert refused.code == codes.OTHER_FAILED
        assert "connecting to the device at 127.0.0.1" in refused.json["msg"]
        assert "local_port" in refused.json
        assert self.harness.service.manager.sessions() == []
        missing = await self.wvp("startSendRtp", vhost=VHOST, app="broadcast", stream="talk",
                                 ssrc="3", is_udp=0)
        assert missing.code == codes.INVALID_ARGS and "dst_url" in missing.json["msg"]
        named = await self.send_rtp("3", 9, 1, dst_url="device.example")
        assert named.code == codes.INVALID_ARGS and "IP address" in named.json["msg"]

    @async_test
    async def test_start_send_rtp_passive_udp_answers_the_devices_first_datagram(self) -> None:
        started = await self.wvp("startSendRtpPassive", vhost=VHOST, app="broadcast",
                                 stream="talk", ssrc="9", src_port=0, pt=8, use_ps=0,
                                 only_audio=1, is_udp=1, close_delay_ms=5000)
        assert started.code == 0, started.json
        local_port = started.json["local_port"]
        device, _ = self.udp_device(platform=("127.0.0.1", local_port))
        device.transport.write(b"\x00punch", ("127.0.0.1", local_port))
        await until(lambda: device.media.audio_seconds >= 0.6)
        assert dominant_frequency(device.media.pcm16(), CANDIDATES) == 1000
        [session] = self.harness.service.manager.sessions()
        assert session.describe()["transport"] == "udp-passive"

    # ----------------------------------------------------------------------- receiving

    async def open_rtp_server(self, stream_id: str, tcp_mode: int) -> int:
        """wvp's ZLMServerFactory.createRTPServer fields."""
        opened = await self.wvp("openRtpServer", tcp_mode=tcp_mode, app="rtp",
                                stream_id=stream_id, only_track=0, re_use_port="0", port=0,
                                ssrc=0)
        assert opened.code == 0, opened.json
        port: int = opened.json["port"]
        assert self.harness.low <= port <= self.harness.high
        return port

    async def speak_over_time(self, say: Any, seconds: float, frequency: float) -> None:
        for _ in range(int(seconds / 0.2)):
            say(tone_pcm(frequency, 0.2))
            await sleep(0.2)

    @async_test
    async def test_a_udp_device_sending_to_open_rtp_server_is_a_source_others_hear(self) -> None:
        port = await self.open_rtp_server("34020000001320000001", 0)
        info = await self.wvp("getRtpInfo", stream_id="34020000001320000001")
        assert info.json == {"code": 0, "exist": False}
        voice = DeviceVoice(0x1234, framing=Framing.NONE)
        speaker, _ = self.udp_device(platform=("127.0.0.1", port), voice=voice)
        speaker.speak(tone_pcm(600, 0.4))
        await until(lambda: self.harness.service.registry.find("rtp", "34020000001320000001"))
        listed = await self.wvp("getMediaList", app="rtp", stream="34020000001320000001",
                                schema="rtsp")
        assert len(listed.json["data"]) == 1
        info = await self.wvp("getRtpInfo", stream_id="34020000001320000001")
        assert info.json["exist"] is True and info.json["local_port"] == port
        # wvp learns of the device's stream as of any other: on_stream_changed, app rtp.
        await until(lambda: [body for body in self.hooks("on_stream_changed")
                             if body["app"] == "rtp" and body["regist"]])
        listener, listener_port = self.udp_device()
        heard = await self.wvp("startSendRtp", vhost=VHOST, app="rtp",
                               stream="34020000001320000001", ssrc="5", pt=8, use_ps=0,
                               is_udp=1, dst_url="127.0.0.1", dst_port=listener_port)
        assert heard.code == 0, heard.json
        await self.speak_over_time(speaker.speak, 1.6, 600)
        await until(lambda: listener.media.audio_seconds >= 0.6)
        assert dominant_frequency(listener.media.pcm16(), CANDIDATES) == 600
        servers = await self.wvp("listRtpServer")
        [entry] = servers.json["data"]
        assert (entry["stream_id"], entry["port"], entry["tcp_mode"]) == (
            "34020000001320000001", port, 0)
        closed = await self.wvp("closeRtpServer", app="rtp", stream_id="34020000001320000001")
        assert closed.json == {"code": 0, "hit": 1}
        again = await self.wvp("closeRtpServer", app="rtp", stream_id="34020000001320000001")
        assert again.json == {"code": 0, "hit": 0}
        assert self.harness.service.registry.find("rtp", "34020000001320000001") is None

    @async_test
    async def test_tcp_open_rtp_server_and_start_send_rtp_talk_on_the_same_connection(
        self,
    ) -> None:
        port = await self.open_rtp_server("dev-tcp", 1)
        device = await connect_device(port)
        voice = DeviceVoice(0x4321, framing=Framing.RFC4571)
        device.send(voice.speak(tone_pcm(500, 0.4)))
        await until(lambda: self.harness.service.registry.find("rtp", "dev-tcp"))
        exists = await self.wvp("openRtpServer", port=0, stream_id="dev-tcp", tcp_mode=1)
        assert exists.code == codes.INVALID_ARGS and "already exists" in exists.json["msg"]
        # ZLMMediaNodeServerService.startSendRtpTalk's fields.
        talk = await self.wvp("startSendRtpTalk", vhost=VHOST, app="broadcast", stream="talk",
                              ssrc="0200000001", pt=8, type=0, only_audio=1,
                              recv_stream_id="dev-tcp", enable_origin_recv_limit="0")
        assert talk.code == 0, talk.json
        assert talk.json["local_port"] == port
        await until(lambda: device.media.audio_seconds >= 0.6)
        assert dominant_frequency(device.audio(), CANDIDATES) == 1000
        assert {packet.ssrc for packet in device.packets()} == {200000001}
        [entry] = (await self.wvp("listRtpServer")).json["data"]
        assert entry["talking_back"] is True
        # The device keeps talking on the same connection while it hears us.
        device.send(voice.speak(tone_pcm(500, 0.2)))
        server = self.harness.service.control.rtp_servers.list()[0]
        await until(lambda: server.packets_received >= 30)
        assert (await self.wvp("stopSendRtp", vhost=VHOST, app="broadcast",
                               stream="talk")).code == 0
        assert not device.closed.called  # the connection is the RTP server's
        closed = await self.wvp("closeRtpServer", stream_id="dev-tcp")
        assert closed.json["hit"] == 1
        await device.closed
        no_server = await self.wvp("startSendRtpTalk", vhost=VHOST, app="broadcast",
                                   stream="talk", ssrc="1", recv_stream_id="dev-tcp")
        assert no_server.code == codes.OTHER_FAILED and "target stream" in no_server.json["msg"]

    @async_test
    async def test_a_silent_rtp_server_ends_with_on_rtp_server_timeout(self) -> None:
        self.harness.service.control.rtp_servers.timeout = 0.5
        port = await self.open_rtp_server("silent", 0)
        await until(lambda: self.hooks("on_rtp_server_timeout"))
        [body] = self.hooks("on_rtp_server_timeout")
        assert body["local_port"] == port and body["stream_id"] == "silent"
        assert (body["app"], body["vhost"], body["tcp_mode"]) == ("rtp", VHOST, 0)
        assert body["mediaServerId"] == "talk-node"
        assert (await self.wvp("listRtpServer")).json["data"] == []
        await until(lambda: self.harness.service.pool.leased_count == 0)


def test_tone_pcm_is_what_it_says() -> None:
    media = DeviceMedia()
    assert dominant_frequency(tone_pcm(700, 0.2), CANDIDATES) == 700
    assert media.audio_seconds == 0
