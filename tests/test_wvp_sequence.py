"""wvp-GB28181-pro's calls against the real service over loopback: the node comes online, talks.

The calls and bodies are those read in wvp-GB28181-pro's source
(``ZLMRESTfulUtils.sendPost``: a form POST with ``secret`` in the body;
``ZLMMediaServerStatusManager``: getServerConfig, then setServerConfig with
its hook URLs; ``ZLMHttpHookListener``: the hook bodies it parses), played
in wvp's order: register the node, see the audio stream appear
(``on_stream_changed``, ``schema=rtsp``), check it with getMediaInfo and
isMediaOnline, open a talk port with a talk-length ``close_delay_ms``, send
with ``startSendRtp`` to a UDP device and to a listening TCP device (each
hears the tone), list the senders and stop each (the ``ssrc`` echoed as
given), end the stream.  One flow, so the README's claim that a platform
built on ZLMediaKit can drive the node unchanged is shown end to end.
"""

from __future__ import annotations

from twisted.trial import unittest

from gb28181talk.media.framing import Framing
from gb28181talk.web import codes
from tests.audiocheck import dominant_frequency
from tests.httpapi import HookReceiver, ServiceHarness, async_test, call, until
from tests.wvp import CANDIDATES, WVP_READS, WvpPlatform, wvp_hook_config

SECRET = "035c73f7-bb6b-4889-a715-d9eb2d1925cc"
SERVER_ID = "talk-node-1"

class WvpSequenceTests(WvpPlatform, unittest.TestCase):
    """A node with a secret and no hook URL of its own: wvp pushes them."""

    timeout = 30
    secret = SECRET

    def setUp(self) -> None:
        self.start_node(ports=6, server_id=SERVER_ID, alive_interval=0.5)

    @async_test
    async def test_wvp_brings_the_node_online_and_runs_a_talk_through_it(self) -> None:
        # 1. getServerConfig: data[0] has every key wvp reads, never the secret.
        config = await self.wvp("getServerConfig")
        assert config.code == 0
        [node] = config.json["data"]
        assert all(key in node for key in WVP_READS), [k for k in WVP_READS if k not in node]
        assert node["general.mediaServerId"] == SERVER_ID
        assert float(node["hook.alive_interval"]) == 0.5
        assert int(node["http.port"]) == self.harness.service.api_port.getHost().port
        assert node["rtp_proxy.port_range"] == f"{self.harness.low}-{self.harness.high}"
        assert all(isinstance(value, str) for value in node.values())  # as ZLMediaKit's
        assert "api.secret" not in node and SECRET not in str(config.json)

        # 2. setServerConfig with wvp's settings: hook URLs applied, ``changed`` counted.
        pushed = wvp_hook_config(self.prefix, self.harness.low, self.harness.high)
        changed = await self.wvp("setServerConfig", **pushed)
        assert changed.code == 0
        # enable, timeoutSec and the ten URLs changed; empty URLs, the same port range
        # and protocol.continue_push_ms (not a key of this node) did not.
        assert changed.json["changed"] == 12
        again = await self.wvp("setServerConfig", **pushed)
        assert again.json == {"code": 0, "changed": 0}
        after = (await self.wvp("getServerConfig")).json["data"][0]
        assert after["hook.on_server_keepalive"] == self.prefix + "/on_server_keepalive"
        assert (after["hook.enable"], after["hook.timeoutSec"]) == ("1", "30")

        # 3. Keepalives arrive, with wvp's mediaServerId.
        await until(lambda: len(self.hooks("on_server_keepalive")) >= 2)
        beat = self.hooks("on_server_keepalive")[0]
        assert beat["mediaServerId"] == SERVER_ID and isinstance(beat["data"], dict)

        # 4. The platform's audio source appears: on_stream_changed regist=true, schema rtsp.
        added = await self.add_talk_tone()
        assert added.code == 0
        await until(lambda: self.hooks("on_stream_changed"))
        [appeared] = self.hooks("on_stream_changed")
        assert (appeared["regist"], appeared["schema"]) == (True, "rtsp")
        assert (appeared["app"], appeared["stream"]) == ("broadcast", "talk")
        assert appeared["vhost"] == codes.DEFAULT_VHOST and appeared["params"] == ""
        assert appeared["mediaServerId"] == SERVER_ID
        assert appeared["tracks"][0]["codec_type"] == 1

        # 5. getMediaInfo (schema=rtsp, as wvp asks) and isMediaOnline.
        info = await self.wvp("getMediaInfo", app="broadcast", schema="rtsp",
                              stream="talk", vhost=codes.DEFAULT_VHOST)
        assert info.code == 0 and info.json["app"] == "broadcast"  # wvp's readiness check
        assert info.json["schema"] == "rtsp" and info.json["tracks"][0]["ready"] is True
        online = await self.wvp("isMediaOnline", app="broadcast", stream="talk",
                                schema="rtsp", vhost=codes.DEFAULT_VHOST)
        assert online.json == {"code": 0, "online": True}
        listed = await self.wvp("getMediaList", app="broadcast", stream="talk", schema="rtsp")
        assert [entry["schema"] for entry in listed.json["data"]] == ["rtsp"]
        unoffered = await self.wvp("getMediaList", schema="hls")
        assert unoffered.json == {"code": 0, "data": []}

        # 6. Talk: startSendRtpPassive with wvp's talk-length close_delay_ms, ssrc as given.
        # The fields of ZLMMediaNodeServerService.startSendRtpPassive (wvp), a TCP device.
        started = await self.wvp("startSendRtpPassive", vhost=codes.DEFAULT_VHOST,
                                 app="broadcast", stream="talk", ssrc="777", src_port=0,
                                 pt=8, use_ps=0, only_audio=1, is_udp=0,
                                 enable_origin_recv_limit=1, close_delay_ms=10_000_000)
        assert started.code == 0, started.json
        port = started.json["local_port"]
        assert self.harness.low <= port <= self.harness.high
        [session] = self.harness.service.manager.sessions()
        assert session.params.wait_timeout == 10_000.0
        # 7. Broadcast to the devices that answered is_udp or a=setup:passive: startSendRtp
        # with ZLMMediaNodeServerService's fields. A UDP device hears the tone from a pool port.
        udp_device, udp_port = self.udp_device()
        to_udp = await self.send_rtp("0100000011", udp_port, 1)
        assert to_udp.code == 0, to_udp.json
        udp_local = to_udp.json["local_port"]
        assert self.harness.low <= udp_local <= self.harness.high and udp_local != port
        # A listening TCP device: the answer comes once we are connected (RFC 4571).
        tcp_factory, tcp_port = self.tcp_device()
        to_tcp = await self.send_rtp("0100000012", tcp_port, 0)
        assert to_tcp.code == 0, to_tcp.json
        tcp_device = await tcp_factory.accepted
        assert to_tcp.json["local_port"] == tcp_device.transport.getPeer().port
        await until(lambda: udp_device.media.audio_seconds >= 0.6
                    and tcp_device.media.audio_seconds >= 0.6)
        assert udp_device.platform == ("127.0.0.1", udp_local)
        assert {packet.ssrc for packet in udp_device.media.packets} == {100000011}
        assert dominant_frequency(udp_device.media.pcm16(), CANDIDATES) == 1000
        assert tcp_device.media.framing is Framing.RFC4571
        assert {packet.ssrc for packet in tcp_device.packets()} == {100000012}
        assert dominant_frequency(tcp_device.audio(), CANDIDATES) == 1000
        transports = {entry["ssrc"]: entry["transport"] for entry in
                      (live.describe() for live in self.harness.service.manager.sessions())}
        assert set(transports.values()) == {"tcp-passive", "udp", "tcp-active"}, transports

        # 8. listRtpSender: every sender of the stream, each ssrc echoed as it was given.
        senders = await self.wvp("listRtpSender", vhost=codes.DEFAULT_VHOST, app="broadcast",
                                 stream="talk")
        assert sorted(senders.json["data"]) == ["0100000011", "0100000012", "777"]

        # 9. stopSendRtp on each BYE: on_send_rtp_stopped echoes each ssrc as given.
        for ssrc in ("777", "0100000011", "0100000012"):
            stopped = await self.wvp("stopSendRtp", vhost=codes.DEFAULT_VHOST, app="broadcast",
                                     stream="talk", ssrc=ssrc)
            assert stopped.code == 0, (ssrc, stopped.json)
        await until(lambda: len(self.hooks("on_send_rtp_stopped")) == 3)
        ended = self.hooks("on_send_rtp_stopped")
        assert [(body["ssrc"], body["reason"]) for body in ended] == [
            ("777", "stopped"), ("0100000011", "stopped"), ("0100000012", "stopped")]
        assert {body["mediaServerId"] for body in ended} == {SERVER_ID}
        await tcp_device.closed  # our connection to the TCP device is closed
        assert self.harness.service.manager.sessions() == []
        await until(lambda: self.harness.service.pool.leased_count == 0)
        heard = udp_device.media.audio_seconds
        none_after = await self.wvp("listRtpSender", vhost=codes.DEFAULT_VHOST, app="broadcast",
                                    stream="talk")
        assert none_after.json["data"] == []
        assert udp_device.media.audio_seconds == heard, "nothing is sent after stopSendRtp"

        # 10. close_streams (wvp's closeStreams, force=1): the stream ends, regist=false.
        closed = await self.wvp("close_streams", vhost=codes.DEFAULT_VHOST, app="broadcast",
                                stream="talk", force=1)
        assert closed.json == {"code": 0, "count_hit": 1, "count_closed": 1}
        await until(lambda: len(self.hooks("on_stream_changed")) == 2)
        gone = self.hooks("on_stream_changed")[1]
        assert gone == {"mediaServerId": SERVER_ID, "hook_index": gone["hook_index"],
                        "schema": "rtsp", "vhost": codes.DEFAULT_VHOST, "app": "broadcast",
                        "stream": "talk", "params": "", "regist": False}
        missing = await self.wvp("getMediaInfo", app="broadcast", schema="rtsp", stream="talk",
                                 vhost=codes.DEFAULT_VHOST)
        assert missing.code == codes.NOT_FOUND
        offline = await self.wvp("isMediaOnline", app="broadcast", stream="talk",
                                 schema="rtsp", vhost=codes.DEFAULT_VHOST)
        assert offline.json["online"] is False
        indexes = [body["hook_index"] for body in self.receiver.bodies]
        assert len(set(indexes)) == len(indexes), "every hook has its own hook_index"

    @async_test
    async def test_without_the_secret_nothing_is_read_or_changed(self) -> None:
        for api in ("getServerConfig", "setServerConfig", "getMediaInfo", "close_streams"):
            reply = await call("POST", self.harness.url(f"/index/api/{api}"),
                               form={"hook.enable": "1"})
            assert reply.status == 200 and reply.code == codes.AUTH_FAILED
        assert not self.harness.service.node.enabled


class NodeHooksTests(unittest.TestCase):
    """``--hook-url`` with ``--node-hooks yes``: the node announces itself at every start."""

    timeout = 20

    @async_test
    async def test_on_server_started_carries_the_config_and_keepalives_follow(self) -> None:
        receiver = HookReceiver()
        prefix = receiver.start()
        harness = ServiceHarness(ports=2, hook_url=prefix, node_hooks=True, server_id="n2",
                                 alive_interval=0.5)
        harness.start()
        try:
            await until(lambda: len(receiver.bodies) >= 2)
            assert receiver.paths[:2] == ["/index/hook/on_server_started",
                                          "/index/hook/on_server_keepalive"]
            started = receiver.bodies[0]
            # wvp's onServerStarted maps this body onto ZLMServerConfig.
            assert started["mediaServerId"] == started["general.mediaServerId"] == "n2"
            assert int(started["http.port"]) == harness.service.api_port.getHost().port
            assert started["hook.on_send_rtp_stopped"] == prefix + "/on_send_rtp_stopped"
            assert "api.secret" not in started
        finally:
            await harness.stop()
            await receiver.stop()
