"""The ZLMediaKit-compatible API over real loopback HTTP: shapes, codes, secret, a real device."""

from __future__ import annotations

import shutil
import socket
import struct
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.error import ConnectionRefusedError
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from gb28181talk.core.params import Packaging
from gb28181talk.media import g711
from gb28181talk.media.framing import frame_rfc4571
from gb28181talk.media.law import Law
from gb28181talk.media.ps import PsDemuxer
from gb28181talk.media.rtp import RtpPacket
from gb28181talk.media.wav import read_wav
from gb28181talk.web import codes
from gb28181talk.web.common import ApiError
from gb28181talk.web.start import parse_zlm_start
from tests.devices import connect_device
from tests.httpapi import ServiceHarness, async_test, call, until
from tests.netutil import port_is_free
from tests.test_sources import goertzel_ratio, tone_pcm

SSRC = "0100000001"


class ZlmApiTests(unittest.TestCase):
    """A service without a secret, a tone source broadcast/tone."""

    timeout = 20

    def setUp(self) -> None:
        self.harness = ServiceHarness(ports=3)
        self.harness.start()

    def tearDown(self) -> Any:
        from twisted.internet.defer import Deferred

        return Deferred.fromCoroutine(self.harness.stop())

    async def start(self, **args: Any) -> Any:
        query = {"app": "broadcast", "stream": "tone", "ssrc": SSRC, **args}
        return await self.harness.zlm("startSendRtpPassive", query=query)

    @async_test
    async def test_start_answers_local_port_at_once_and_again_for_the_same_key(self) -> None:
        await self.harness.add_tone()
        reply = await self.start()
        assert reply.status == 200
        assert reply.content_type == "application/json; charset=utf-8"
        assert set(reply.json) == {"code", "local_port"}
        port = reply.json["local_port"]
        assert self.harness.low <= port <= self.harness.high
        assert not port_is_free(port, "127.0.0.1"), "the port listens before the reply"
        again = await self.start()
        assert again.json == {"code": 0, "local_port": port}
        other = await self.start(ssrc="0100000002")
        assert other.json["local_port"] != port

    @async_test
    async def test_a_new_call_for_a_connected_session_takes_over_as_in_zlmediakit(self) -> None:
        await self.harness.add_tone()
        port = (await self.start(use_ps="0", pt="8")).json["local_port"]
        device = await connect_device(port)
        await until(lambda: len(device.received) > 0)
        again = await self.start(use_ps="0", pt="8")
        assert again.json["code"] == 0 and again.json["local_port"] != port
        await device.closed
        [session] = self.harness.service.manager.sessions()
        assert session.port == again.json["local_port"]

    @async_test
    async def test_a_different_call_for_a_waiting_key_replaces_it(self) -> None:
        await self.harness.add_tone()
        first = (await self.start(use_ps="0", pt="8")).json["local_port"]
        [old] = self.harness.service.manager.sessions()
        again = await self.start(use_ps="0", pt="0")
        assert again.json["code"] == 0, again.json
        [session] = self.harness.service.manager.sessions()
        assert session is not old and old.end_reason.value == "stopped"
        assert (session.params.law, session.params.rtp_payload_type) == (Law.ULAW, 0)
        assert session.port == again.json["local_port"]
        await until(lambda: port_is_free(first) or first == session.port, timeout=1)
        same_port = await self.start(use_ps="0", pt="8", src_port=str(session.port))
        assert same_port.json == {"code": 0, "local_port": session.port}, same_port.json
        [newest] = self.harness.service.manager.sessions()
        assert newest is not session and newest.params.law is Law.ALAW

    @async_test
    async def test_arguments_from_form_and_json_bodies_with_the_query_winning(self) -> None:
        await self.harness.add_tone()
        form = await self.harness.zlm(
            "startSendRtpPassive", "POST",
            form={"app": "broadcast", "stream": "tone", "ssrc": SSRC, "use_ps": "0", "pt": "8"},
        )
        assert form.json["code"] == 0, form.json
        session = self.harness.service.manager.sessions()[0]
        assert session.params.packaging is Packaging.RAW
        assert session.params.rtp_payload_type == 8
        body = {"app": "broadcast", "stream": "tone", "ssrc": 100000002, "type": 1,
                "close_delay_ms": 3000}
        json_reply = await self.harness.zlm(
            "startSendRtpPassive", "POST", json_body=body, query={"ssrc": "100000003"}
        )
        assert json_reply.json["code"] == 0, json_reply.json
        sessions = {s.key.ssrc: s for s in self.harness.service.manager.sessions()}
        assert set(sessions) == {100000001, 100000003}, "the query's ssrc wins over the body's"
        assert sessions[100000003].params.packaging is Packaging.PS
        assert sessions[100000003].params.rtp_payload_type == 96
        assert sessions[100000003].params.wait_timeout == 3.0

    @async_test
    async def test_missing_or_malformed_arguments_are_minus_300(self) -> None:
        await self.harness.add_tone()
        for args, word in [
            ({"app": "broadcast", "stream": "tone"}, "ssrc is required"),
            ({"app": "broadcast", "stream": "tone", "ssrc": "12ab"}, "ssrc"),
            ({"app": "broadcast", "stream": "tone", "ssrc": "99999999999"}, "ssrc"),
            ({"stream": "tone", "ssrc": SSRC}, "app is required"),
            ({"app": "broadcast", "stream": "tone", "ssrc": SSRC, "pt": "300"}, "pt"),
            ({"app": "broadcast", "stream": "tone", "ssrc": SSRC, "src_port": "x"}, "src_port"),
            # is_udp=1 is UDP passive now (ZLMediaKit's kUdpPassive); a non-flag is refused.
            ({"app": "broadcast", "stream": "tone", "ssrc": SSRC, "is_udp": "maybe"}, "is_udp"),
            ({"app": "broadcast", "stream": "tone", "ssrc": SSRC, "type": "2"}, "MPEG-TS"),
            ({"app": "broadcast", "stream": "tone", "ssrc": SSRC, "close_delay_ms": "-5"},
             "close_delay_ms"),
        ]:
            reply = await self.harness.zlm("startSendRtpPassive", query=args)
            assert reply.status == 200
            assert reply.json["code"] == codes.INVALID_ARGS, (args, reply.json)
            assert word in reply.json["msg"], (word, reply.json["msg"])
        bad_json = await self.harness.zlm(
            "startSendRtpPassive", "POST", raw_body=b"{oops",
            headers={"content-type": "application/json"},
        )
        assert bad_json.json["code"] == codes.INVALID_ARGS
        assert self.harness.service.manager.sessions() == []

    @async_test
    async def test_unknown_source_is_minus_500(self) -> None:
        reply = await self.start(stream="nothing")
        assert reply.json["code"] == codes.NOT_FOUND
        assert "broadcast/nothing" in reply.json["msg"]
        assert "POST /api/sources" in reply.json["msg"]

    @async_test
    async def test_busy_port_and_exhausted_pool_are_minus_400_saying_which(self) -> None:
        await self.harness.add_tone()
        holder = socket.socket()  # the kernel's pick: no probe-then-bind race with TIME_WAIT
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        busy = holder.getsockname()[1]
        reply = await self.start(src_port=str(busy))
        assert reply.json["code"] == codes.EXCEPTION
        assert f"port {busy}" in reply.json["msg"]
        assert "another process" in reply.json["msg"]
        for n in range(3):
            ok = await self.start(ssrc=str(200 + n))
            assert ok.json["code"] == 0
        full = await self.start(ssrc="299")
        assert full.json["code"] == codes.EXCEPTION
        assert "exhausted" in full.json["msg"]

    @async_test
    async def test_stop_closes_the_listener_at_once_and_list_shows_senders(self) -> None:
        await self.harness.add_tone()
        first = (await self.start()).json["local_port"]
        await self.start(ssrc="0100000002")
        listed = await self.harness.zlm(
            "listRtpSender", query={"vhost": "__defaultVhost__", "app": "broadcast",
                                    "stream": "tone"},
        )
        assert listed.json["code"] == 0
        assert sorted(listed.json["data"]) == ["0100000001", "0100000002"]
        assert {s["local_port"] for s in listed.json["senders"]} >= {first}
        assert "totalBytes" in listed.json and "bytesSpeed" in listed.json
        stopped = await self.harness.zlm(
            "stopSendRtp", query={"app": "broadcast", "stream": "tone", "ssrc": SSRC}
        )
        assert stopped.json["code"] == 0
        await until(lambda: port_is_free(first), timeout=0.5)
        with self.assertRaises(ConnectionRefusedError):
            await connect_device(first)
        left = await self.harness.zlm("listRtpSender", query={"app": "broadcast",
                                                              "stream": "tone"})
        assert left.json["data"] == ["0100000002"]
        everything = await self.harness.zlm(
            "stopSendRtp", "POST", json_body={"app": "broadcast", "stream": "tone"}
        )
        assert everything.json["code"] == 0
        nothing = await self.harness.zlm("stopSendRtp",
                                         query={"app": "broadcast", "stream": "tone"})
        assert nothing.json["code"] == codes.OTHER_FAILED
        unknown = await self.harness.zlm("stopSendRtp", query={"app": "no", "stream": "pe"})
        assert unknown.json["code"] == codes.NOT_FOUND
        missing = await self.harness.zlm("listRtpSender", query={"app": "no", "stream": "pe"})
        assert missing.json["code"] == codes.NOT_FOUND
        no_args = await self.harness.zlm("stopSendRtp")
        assert no_args.json["code"] == codes.INVALID_ARGS

    @async_test
    async def test_get_media_list_shows_the_sources_in_zlmediakit_shape(self) -> None:
        await self.harness.add_tone()
        await self.harness.add_tone(stream="other", frequency=1000)
        await self.start()
        reply = await self.harness.zlm("getMediaList")
        assert reply.json["code"] == 0
        entries = {(e["app"], e["stream"]): e for e in reply.json["data"]}
        assert set(entries) == {("broadcast", "tone"), ("broadcast", "other")}
        tone = entries[("broadcast", "tone")]
        for field in ("schema", "vhost", "app", "stream", "readerCount", "totalReaderCount",
                      "originType", "originTypeStr", "aliveSecond", "bytesSpeed", "tracks"):
            assert field in tone
        assert tone["vhost"] == "__defaultVhost__"
        assert tone["readerCount"] == 1
        assert tone["tracks"][0]["codec_type"] == 1
        assert tone["tracks"][0]["sample_rate"] == 8000
        one = await self.harness.zlm("getMediaList", query={"app": "broadcast",
                                                            "stream": "other"})
        assert [e["stream"] for e in one.json["data"]] == ["other"]
        none = await self.harness.zlm("getMediaList", query={"stream": "absent"})
        assert none.json == {"code": 0, "data": []}

    @async_test
    async def test_unknown_zlm_api_is_a_json_404(self) -> None:
        reply = await self.harness.zlm("addStreamProxy")
        assert reply.status == 404
        assert reply.json["code"] == codes.NOT_FOUND
        assert "startSendRtpPassive" in reply.json["msg"]

    @async_test
    async def test_a_device_hears_the_tone_raw_pcma(self) -> None:
        await self.harness.add_tone(frequency=440)
        port = (await self.start(use_ps="0", pt="8")).json["local_port"]
        device = await connect_device(port)
        await until(lambda: len(device.received) > 12_000, timeout=3)
        device.transport.loseConnection()
        packets = device.packets()
        assert {p.ssrc for p in packets} == {int(SSRC)}
        assert {p.payload_type for p in packets} == {8}
        pcm = device.audio(Law.ALAW)
        assert goertzel_ratio(pcm[:16000], 440) > 0.9

    @async_test
    async def test_ps_default_carries_g711_in_program_stream(self) -> None:
        await self.harness.add_tone(frequency=440)
        port = (await self.start()).json["local_port"]
        device = await connect_device(port)
        await until(lambda: len(device.received) > 8_000, timeout=3)
        device.transport.loseConnection()
        packets = device.packets()
        assert {p.payload_type for p in packets} == {96}
        demuxer = PsDemuxer()
        audio = b"".join(
            g711.decode(a.law or Law.ALAW, a.payload)
            for p in packets for a in demuxer.feed(p.payload)
        )
        assert goertzel_ratio(audio[:8000], 440) > 0.9

    @async_test
    async def test_two_way_device_audio_becomes_a_source_and_a_recording(self) -> None:
        await self.harness.stop()
        record_dir = Path(tempfile.mkdtemp(prefix="gbtalk-rec-"))
        self.addCleanup(shutil.rmtree, record_dir, True)
        self.harness = ServiceHarness(ports=2, record_dir=str(record_dir))
        self.harness.start()
        await self.harness.add_tone()
        reply = await self.start(recv_stream_id="talkback", use_ps="0", pt="8")
        device = await connect_device(reply.json["local_port"])
        uplink = tone_pcm(1000, 0.6)
        for n, start in enumerate(range(0, len(uplink), 320)):
            payload = g711.encode(Law.ALAW, uplink[start:start + 320])
            packet = RtpPacket(8, n, n * 160, 0x0BADBEEF, payload)
            device.transport.write(frame_rfc4571(packet.encode()))
        await until(lambda: self.harness.service.registry.find("broadcast", "talkback"))
        listed = await self.harness.zlm("getMediaList", query={"stream": "talkback"})
        assert listed.json["data"][0]["originTypeStr"] == "rtp_push"
        session = self.harness.service.manager.sessions()[0]
        await until(lambda: session.stats.packets_received == 30)
        device.transport.loseConnection()
        await until(lambda: self.harness.service.registry.find("broadcast", "talkback") is None)
        recordings = list(record_dir.glob("broadcast-talkback-0100000001-*.wav"))
        assert len(recordings) == 1
        audio = read_wav(recordings[0])
        assert (audio.sample_rate, audio.channels, audio.encoding) == (8000, 1, "pcm16")
        assert len(audio.data) == len(uplink)
        assert goertzel_ratio(audio.data, 1000) > 0.9
        header = recordings[0].read_bytes()[:44]
        assert struct.unpack_from("<I", header, 40)[0] == len(uplink)


class ZlmSecretTests(unittest.TestCase):
    """With --secret, ZLMediaKit's API wants it as an argument (or a bearer token)."""

    timeout = 20

    def setUp(self) -> None:
        self.harness = ServiceHarness(ports=4, secret="s3cret")
        self.harness.start()

    def tearDown(self) -> Any:
        from twisted.internet.defer import Deferred

        return Deferred.fromCoroutine(self.harness.stop())

    @async_test
    async def test_missing_or_wrong_secret_is_minus_100_and_changes_nothing(self) -> None:
        query = {"app": "broadcast", "stream": "tone", "ssrc": SSRC}
        for extra in ({}, {"secret": "wrong"}, {"secret": ""}):
            reply = await self.harness.zlm("startSendRtpPassive", query={**query, **extra})
            assert reply.status == 200
            assert reply.json["code"] == codes.AUTH_FAILED, reply.json
        assert self.harness.service.manager.sessions() == []

    @async_test
    async def test_secret_accepted_from_query_form_json_and_bearer(self) -> None:
        tone = await call("POST", self.harness.url("/api/sources"),
                          json_body={"app": "broadcast", "stream": "tone", "kind": "tone"},
                          headers={"Authorization": "Bearer s3cret"})
        assert tone.json["code"] == 0, tone.json
        args = {"app": "broadcast", "stream": "tone"}
        by_query = await self.harness.zlm("startSendRtpPassive",
                                          query={**args, "ssrc": "1", "secret": "s3cret"})
        by_form = await self.harness.zlm("startSendRtpPassive", "POST",
                                         form={**args, "ssrc": "2", "secret": "s3cret"})
        by_json = await self.harness.zlm("startSendRtpPassive", "POST",
                                         json_body={**args, "ssrc": 3, "secret": "s3cret"})
        by_bearer = await self.harness.zlm("startSendRtpPassive", query={**args, "ssrc": "4"},
                                           headers={"Authorization": "Bearer s3cret"})
        replies = (by_query, by_form, by_json, by_bearer)
        assert [r.json["code"] for r in replies] == [0, 0, 0, 0], [r.json for r in replies]
        listed = await self.harness.zlm("getMediaList", query={"secret": "s3cret"})
        assert listed.json["code"] == 0

    @async_test
    async def test_a_malformed_field_beside_a_body_secret_is_minus_300(self) -> None:
        body = {"app": "broadcast", "stream": "tone", "ssrc": 5, "secret": "s3cret",
                "pt": [8]}
        reply = await self.harness.zlm("startSendRtpPassive", "POST", json_body=body)
        assert reply.json["code"] == codes.INVALID_ARGS, reply.json
        assert "pt" in reply.json["msg"]
        wrong = await self.harness.zlm("startSendRtpPassive", "POST",
                                       json_body={**body, "secret": "nope"})
        assert wrong.json["code"] == codes.AUTH_FAILED
        upper_body = {name: value for name, value in body.items() if name != "secret"}
        upper = await self.harness.zlm("startSendRtpPassive", "POST",
                                       json_body={**upper_body, "SECRET": "s3cret"})
        assert upper.json["code"] == codes.INVALID_ARGS, upper.json


    @async_test
    async def test_the_access_log_masks_the_secret(self) -> None:
        lines: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        await self.harness.zlm("getMediaList", query={"app": "a", "secret": "s3cret"})
        await until(lambda: any("getMediaList" in line for line in lines))
        [line] = [line for line in lines if "getMediaList" in line]
        assert "secret=***" in line and "s3cret" not in line


# --------------------------------------------------------------------------- parser properties

_names = st.sampled_from(
    ["app", "stream", "ssrc", "vhost", "src_port", "pt", "use_ps", "type", "only_audio",
     "is_udp", "recv_stream_id", "close_delay_ms", "from_mp4", "secret"]
)
_values = st.one_of(
    st.text(max_size=12),
    st.integers(-2**40, 2**40).map(str),
    st.sampled_from(["", "0", "1", "true", "false", "96", "8", "0100000001", "x y", "-1"]),
)


@given(st.dictionaries(_names, _values, max_size=14))
def test_zlm_start_parser_only_ever_refuses_with_minus_300(args: dict[str, str]) -> None:
    try:
        request = parse_zlm_start(args, 5.0)
    except ApiError as error:
        assert error.code == codes.INVALID_ARGS
        assert error.msg
    else:
        assert 0 <= request.params.key.ssrc <= 2**32 - 1
        assert request.params.wait_timeout > 0


@given(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=6))
def test_zlm_start_parser_refuses_random_names_with_minus_300(args: dict[str, str]) -> None:
    try:
        parse_zlm_start(args, 5.0)
    except ApiError as error:
        assert error.code == codes.INVALID_ARGS


def test_zlm_defaults_are_zlmediakits() -> None:
    request = parse_zlm_start({"app": "a", "stream": "s", "ssrc": "0100000001"}, 5.0)
    params = request.params
    assert params.packaging is Packaging.PS and params.rtp_payload_type == 96
    assert params.key.vhost == "__defaultVhost__" and params.wait_timeout == 5.0
    raw = parse_zlm_start({"app": "a", "stream": "s", "ssrc": "1", "use_ps": "0"}, 5.0).params
    assert raw.packaging is Packaging.RAW and raw.rtp_payload_type == 96  # as ZLMediaKit
    pcmu = parse_zlm_start({"app": "a", "stream": "s", "ssrc": "1", "use_ps": "0", "pt": "0"},
                           5.0).params
    assert pcmu.law is Law.ULAW and pcmu.rtp_payload_type == 0
    talk = parse_zlm_start({"app": "a", "stream": "s", "ssrc": "1", "recv_stream_id": "r"},
                           5.0)
    assert talk.recv_stream_id == "r" and talk.params.receive
    assert talk.params.receive_timeout == 15.0
