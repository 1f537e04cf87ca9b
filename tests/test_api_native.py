"""The native JSON API over real loopback HTTP, and real feeders and devices through it."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest
from twisted.web.websocket import ConnectionRejected, WebSocketClientEndpoint

from gb28181talk.core.params import Packaging
from gb28181talk.media import resample
from gb28181talk.media.law import Law
from gb28181talk.media.wav import read_wav, write_wav
from gb28181talk.signalling.sdp import parse_sdp
from gb28181talk.sip.seam import TalkSignalling, device_stream_name
from gb28181talk.sources import file as file_source
from gb28181talk.web import codes
from gb28181talk.web.common import ApiError
from gb28181talk.web.start import NATIVE_FIELDS, parse_native_start
from tests.audiocheck import dominant_frequency, tone_power
from tests.conftest import require_program
from tests.devices import connect_device
from tests.httpapi import ServiceHarness, async_test, call, read_body, until
from tests.netutil import port_is_free
from tests.test_push import PushClientFactory
from tests.test_sources import goertzel_ratio, tone_pcm
from tests.test_talk_signalling import TALK_OFFER


class NativeApiTests(unittest.TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.harness = ServiceHarness(ports=3)
        self.harness.start()
        self.media = Path(tempfile.mkdtemp(prefix="gbtalk-media-"))
        self.addCleanup(shutil.rmtree, self.media, True)

    def tearDown(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.harness.stop())

    def url(self, path: str) -> str:
        return self.harness.url(path)

    async def start_session(self, **fields: Any) -> Any:
        body = {"app": "broadcast", "stream": "tone", "ssrc": 100000001, **fields}
        return await call("POST", self.url("/api/sessions"), json_body=body)

    # -- sources

    @async_test
    async def test_sources_create_list_inspect_delete(self) -> None:
        tone = await self.harness.add_tone(frequency=440)
        assert tone.status == 200 and tone.json["code"] == 0
        assert tone.json["source"]["kind"] == "tone"
        assert tone.json["source"]["frequency"] == 440
        wav = self.media / "hello.wav"
        write_wav(wav, tone_pcm(600, 0.5, rate=16000), 16000)
        made = await call("POST", self.url("/api/sources"), json_body={
            "app": "broadcast", "stream": "hello", "kind": "file", "path": str(wav),
            "loop": True,
        })
        assert made.json["code"] == 0, made.json
        assert made.json["source"]["duration_ms"] == 500
        listed = await call("GET", self.url("/api/sources"))
        assert [s["stream"] for s in listed.json["sources"]] == ["hello", "tone"]
        one = await call("GET", self.url("/api/sources/broadcast/hello"))
        assert one.json["source"]["path"] == str(wav)
        gone = await call("DELETE", self.url("/api/sources/broadcast/hello"))
        assert gone.json["code"] == 0 and gone.json["source"]["stream"] == "hello"
        again = await call("DELETE", self.url("/api/sources/broadcast/hello"))
        assert (again.status, again.json["code"]) == (404, codes.NOT_FOUND)

    @async_test
    async def test_a_big_file_loads_in_a_thread_in_short_pieces(self) -> None:
        """The API answers while a file loads, and the load decodes in pieces (so the loading
        thread yields the GIL to the reactor between them): order and counts, not timing."""
        wav = self.media / "big.wav"
        pcm = bytes(range(256)) * (3 * 1024 * 1024 // 256)
        write_wav(wav, pcm, 48000, 2)  # 16.4 s
        release = threading.Event()
        load = file_source.load_audio_file_within

        def held_load(*args: Any) -> Any:  # in the thread pool: waits for the health answer
            assert release.wait(10), "the API never answered while the file was loading"
            return load(*args)

        pieces: list[int] = []

        class CountingResampler(resample.StreamResampler):
            def feed(self, data: bytes) -> bytes:
                pieces.append(len(data))
                return super().feed(data)

        self.patch(file_source, "load_audio_file_within", held_load)
        self.patch(resample, "StreamResampler", CountingResampler)
        loading = Deferred.fromCoroutine(call("POST", self.url("/api/sources"), json_body={
            "app": "broadcast", "stream": "big", "kind": "file", "path": str(wav)}))
        health = await call("GET", self.url("/api/health"))
        assert health.status == 200 and not loading.called, "answered while the file loads"
        release.set()
        made = await loading
        assert made.json["code"] == 0, made.json
        assert made.json["source"]["duration_ms"] == 16384
        assert self.harness.service.registry.find("broadcast", "big") is not None
        step = file_source.DECODE_CHUNK_FRAMES * 2 * 2  # frames of 16-bit stereo
        assert sum(pieces) == len(pcm) and max(pieces) <= step, (len(pieces), max(pieces))

    @async_test
    async def test_file_source_errors_and_size_cap(self) -> None:
        huge = self.media / "huge.wav"
        with huge.open("wb") as sparse:
            sparse.truncate(64 * 1024 * 1024 + 1)
        too_big = await call("POST", self.url("/api/sources"), json_body={
            "app": "broadcast", "stream": "huge", "kind": "file", "path": str(huge)})
        assert (too_big.status, too_big.json["code"]) == (400, codes.INVALID_ARGS)
        assert "more than the 64 MiB" in too_big.json["msg"], too_big.json["msg"]
        text = self.media / "notes.wav"
        text.write_text("root:x:0:0:root:/root:/bin/bash\n")
        not_wav = await call("POST", self.url("/api/sources"), json_body={
            "app": "broadcast", "stream": "notes", "kind": "file", "path": str(text)})
        assert (not_wav.status, not_wav.json["code"]) == (400, codes.INVALID_ARGS)
        assert "not a RIFF/WAVE file" in not_wav.json["msg"]
        assert "/bin/bash" not in not_wav.json["msg"]
        assert len(self.harness.service.registry) == 0

    @async_test
    async def test_source_refusals_say_what_is_wrong(self) -> None:
        await self.harness.add_tone()
        for body, status, word in [
            ({"app": "broadcast", "stream": "tone", "kind": "tone"}, 409, "exists"),
            ({"app": "broadcast", "stream": "x", "kind": "video"}, 400, "kind"),
            ({"app": "broadcast", "stream": "x", "kind": "tone", "frequency": 9000}, 400,
             "frequency"),
            ({"app": "broadcast", "stream": "x", "kind": "file", "path": "/nonexistent.wav"},
             400, "/nonexistent.wav"),
            ({"app": "bad name", "stream": "x", "kind": "tone"}, 400, "app"),
        ]:
            reply = await call("POST", self.url("/api/sources"), json_body=body)
            assert (reply.status, reply.json["code"]) == (status, codes.INVALID_ARGS), reply.json
            assert word in reply.json["msg"], reply.json["msg"]
        not_json = await call("POST", self.url("/api/sources"), raw_body=b"kind=tone",
                              headers={"content-type": "application/json"})
        assert (not_json.status, not_json.json["code"]) == (400, codes.INVALID_ARGS)
        curl_style = await call(
            "POST", self.url("/api/sources"),
            raw_body=b'{"app": "broadcast", "stream": "curl", "kind": "tone"}',
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert (curl_style.status, curl_style.json["code"]) == (415, codes.INVALID_ARGS), (
            "JSON only as application/json (a page can send a form without asking)")
        assert "Content-Type: application/json" in curl_style.json["msg"]

    # -- sessions

    @async_test
    async def test_sessions_start_list_inspect_stop(self) -> None:
        await self.harness.add_tone()
        started = await self.start_session()
        assert started.json["code"] == 0, started.json
        session = started.json["session"]
        assert started.json["local_port"] == session["local_port"]
        assert session["state"] == "listening"
        assert (session["codec"], session["pt"], session["packaging"]) == ("PCMA", 8, "raw")
        assert session["local_ip"] == "127.0.0.1"
        for field in ("id", "peer", "age_s", "stats"):
            assert field in session
        assert "jitter_mean_ms" in session["stats"]
        device = await connect_device(session["local_port"])
        await until(lambda: len(device.received) > 4000)
        listed = await call("GET", self.url("/api/sessions"))
        [view] = listed.json["sessions"]
        assert view["state"] == "streaming" and view["peer"].startswith("127.0.0.1:")
        assert view["stats"]["packets_sent"] > 0
        streaming = await call("GET", self.url("/api/sessions"), query={"state": "listening"})
        assert streaming.json["sessions"] == []
        one = await call("GET", self.url(f"/api/sessions/{session['id']}"))
        assert one.json["session"]["id"] == session["id"]
        stopped = await call("DELETE", self.url(f"/api/sessions/{session['id']}"))
        assert stopped.json["session"]["state"] == "closed"
        assert stopped.json["session"]["end_reason"] == "stopped"
        await device.closed
        after = await call("GET", self.url(f"/api/sessions/{session['id']}"))
        assert (after.status, after.json["code"]) == (404, codes.NOT_FOUND)

    @async_test
    async def test_session_options_and_refusals(self) -> None:
        await self.harness.add_tone()
        ps = await self.start_session(packaging="ps", codec="pcmu", packet_ms=40,
                                      wait_timeout=2.5, framing="none")
        view = ps.json["session"]
        assert (view["packaging"], view["pt"], view["codec"]) == ("ps", 96, "PCMU")
        assert (view["packet_ms"], view["framing"]) == (40, "none")
        same = await self.start_session(packaging="ps", codec="pcmu", packet_ms=40,
                                        wait_timeout=2.5, framing="none")
        assert same.json["session"]["id"] == view["id"], "a live key gets its session again"
        fresh = await self.start_session(replace=True)
        assert fresh.json["session"]["id"] != view["id"]
        assert fresh.json["session"]["packaging"] == "raw"
        for fields, word in [
            ({"ssrc": "x"}, "ssrc"),
            ({"packet_ms": 30}, "packet duration"),
            ({"codec": "opus"}, "codec"),
            ({"colour": "red"}, "unknown field"),
            ({"expected_peer": "device.local"}, "expected_peer"),
            ({"is_udp": True}, "UDP"),
        ]:
            reply = await self.start_session(**fields)
            assert (reply.status, reply.json["code"]) == (400, codes.INVALID_ARGS), fields
            assert word in reply.json["msg"], reply.json["msg"]
        unknown = await self.start_session(stream="absent")
        assert (unknown.status, unknown.json["code"]) == (404, codes.NOT_FOUND)
        for n in range(2):
            assert (await self.start_session(ssrc=10 + n)).json["code"] == 0
        full = await self.start_session(ssrc=99)
        assert (full.status, full.json["code"]) == (503, codes.EXCEPTION)
        busy_port = fresh.json["local_port"]
        busy = await self.start_session(ssrc=98, src_port=busy_port)
        assert (busy.status, busy.json["code"]) == (409, codes.EXCEPTION)
        assert str(busy_port) in busy.json["msg"]

    @async_test
    async def test_a_connected_session_is_found_again_unless_replaced(self) -> None:
        await self.harness.add_tone()
        first = (await self.start_session(packet_ms=40)).json["session"]
        device = await connect_device(first["local_port"])
        await until(lambda: len(device.received) > 0)
        again = await self.start_session(packet_ms=40)
        assert (again.status, again.json["code"]) == (200, 0), again.json
        assert again.json["session"]["id"] == first["id"], "retried signalling: same session"
        assert again.json["session"]["state"] == "streaming"
        assert not device.closed.called, "the connected device keeps its audio"
        replaced = await self.start_session(packet_ms=40, replace=True)
        assert replaced.json["code"] == 0, replaced.json
        assert replaced.json["session"]["id"] != first["id"]
        assert replaced.json["session"]["state"] == "listening"
        await device.closed

    @async_test
    async def test_a_retry_with_other_settings_is_refused_naming_them(self) -> None:
        await self.harness.add_tone()
        first = (await self.start_session(packet_ms=40)).json
        port = first["local_port"]
        other = self.harness.low if port != self.harness.low else self.harness.high
        reply = await self.start_session(packet_ms=100, codec="pcmu", src_port=other)
        assert (reply.status, reply.json["code"]) == (409, codes.INVALID_ARGS), reply.json
        msg = reply.json["msg"]
        for words in (f"src_port {port} (asked {other})", "codec PCMA (asked PCMU)",
                      "packet_ms 40 (asked 100)", "pt 8 (asked 0)", '"replace": true'):
            assert words in msg, (words, msg)
        assert "packaging" not in msg and "framing" not in msg
        for fields, word in [({"packaging": "ps"}, "packaging raw (asked ps)"),
                             ({"framing": "none"}, "framing rfc4571 (asked none)"),
                             ({"pt": 97}, "pt 8 (asked 97)"),
                             ({"two_way": True}, "two_way False (asked True)")]:
            refused = await self.start_session(packet_ms=40, **fields)
            assert refused.status == 409 and word in refused.json["msg"], refused.json
        [session] = self.harness.service.manager.sessions()
        assert session.id == first["session"]["id"] and session.params.packet_ms == 40
        same_port = await self.start_session(packet_ms=40, src_port=port)
        assert same_port.json["session"]["id"] == first["session"]["id"], "its own port matches"

    @async_test
    async def test_replace_with_the_same_explicit_port_gets_that_port(self) -> None:
        await self.harness.add_tone()
        port = self.harness.low
        first = await self.start_session(src_port=port)
        assert (first.json["code"], first.json["local_port"]) == (0, port), first.json
        again = await self.start_session(src_port=port, codec="pcmu", replace=True)
        assert (again.status, again.json["code"]) == (200, 0), again.json
        assert again.json["local_port"] == port
        assert again.json["session"]["id"] != first.json["session"]["id"]
        assert again.json["session"]["codec"] == "PCMU"
        device = await connect_device(port)
        await until(lambda: len(device.received) > 0)
        streaming = await self.start_session(src_port=port, replace=True)
        assert (streaming.json["code"], streaming.json["local_port"]) == (0, port), streaming.json
        await device.closed
        [session] = self.harness.service.manager.sessions()
        assert session.id == streaming.json["session"]["id"]

    @async_test
    async def test_a_refused_replace_leaves_the_old_session_alone(self) -> None:
        await self.harness.add_tone()
        first = (await self.start_session()).json["session"]
        taken = (await self.start_session(ssrc=5)).json["local_port"]
        busy = await self.start_session(src_port=taken, replace=True)
        assert (busy.status, busy.json["code"]) == (409, codes.EXCEPTION), busy.json
        assert f"port {taken}" in busy.json["msg"]
        name_taken = await self.start_session(recv_stream_id="tone", replace=True)
        assert (name_taken.status, name_taken.json["code"]) == (409, codes.INVALID_ARGS)
        assert "recv_stream_id" in name_taken.json["msg"]
        manager = self.harness.service.manager
        assert first["id"] in {session.id for session in manager.sessions()}
        assert manager.get(first["id"]).state.value == "listening"

    @async_test
    async def test_pool_health_and_metrics(self) -> None:
        await self.harness.add_tone()
        started = await self.start_session()
        pool = await call("GET", self.url("/api/pool"))
        assert pool.json["code"] == 0
        assert pool.json["range"] == [self.harness.low, self.harness.high]
        assert (pool.json["free"], pool.json["leased"]) == (2, 1)
        [lease] = pool.json["leases"]
        assert lease["port"] == started.json["local_port"]
        assert lease["session"] == started.json["session"]["id"]
        health = await call("GET", self.url("/api/health"))
        assert health.status == 200 and health.json["status"] == "ok"
        metrics = await call("GET", self.url("/metrics"))
        assert metrics.status == 200
        assert metrics.content_type.startswith("text/plain; version=0.0.4")
        text = metrics.raw.decode()
        assert 'gbtalk_sessions{state="listening"} 1' in text
        assert "gbtalk_ports_leased 1" in text and "gbtalk_ports_free 2" in text

    @async_test
    async def test_unknown_paths_and_methods_answer_json(self) -> None:
        for path in ("/nope", "/api/nope", "/api/sources/a/b/c", "/index", "/index/api",
                     "/index/nope", "/api", "/api/sessions/x/y", "/metrics/x",
                     "/api/health/x", "/api/pool/x", "/index/api/getMediaList/x"):
            reply = await call("GET", self.url(path))
            assert reply.status == 404, path
            assert reply.json["code"] == codes.NOT_FOUND, path
        wrong = await call("PUT", self.url("/api/sources"))
        assert (wrong.status, wrong.json["code"]) == (405, codes.INVALID_ARGS)
        assert "GET or POST" in wrong.json["msg"]
        root = await call("GET", self.url("/"))
        assert root.json["code"] == 0

    @async_test
    async def test_unexpected_failures_answer_json_code_minus_1(self) -> None:
        def broken(*args: Any) -> Any:
            raise RuntimeError("boom")

        self.harness.service.pool.describe = broken  # inside a handler
        reply = await call("GET", self.url("/api/pool"))
        assert (reply.status, reply.json["code"]) == (500, codes.OTHER_FAILED)
        assert "boom" not in reply.json["msg"] and "log" in reply.json["msg"]
        self.harness.service.registry.get = broken  # below the handlers, in URL traversal
        traversal = await call("GET", self.url("/api/push/live/mic"))
        assert (traversal.status, traversal.json["code"]) == (500, codes.OTHER_FAILED)
        assert len(self.flushLoggedErrors(RuntimeError)) == 2

    # -- real feeders and devices

    @async_test
    async def test_websocket_push_source_is_heard_by_a_device(self) -> None:
        made = await call("POST", self.url("/api/sources"), json_body={
            "app": "live", "stream": "mic", "kind": "push", "sample_rate": 16000,
        })
        assert made.json["code"] == 0, made.json
        started = await call("POST", self.url("/api/sessions"), json_body={
            "app": "live", "stream": "mic", "ssrc": 7, "preroll_ms": 0,
        })
        device = await connect_device(started.json["local_port"])
        ws_url = self.harness.base.replace("http", "ws") + "/api/push/live/mic"
        endpoint = WebSocketClientEndpoint.new(reactor, ws_url)  # type: ignore[arg-type]
        pusher = await endpoint.connect(PushClientFactory())
        pcm = tone_pcm(700, 1.0, rate=16000)
        for start in range(0, len(pcm), 640):
            pusher.transport.sendBytesMessage(pcm[start:start + 640])
        await until(lambda: len(device.received) > 8_400, timeout=5)  # 1 s: 50 x 174 bytes
        pusher.transport.loseConnection()
        audio = device.audio(Law.ALAW)
        assert goertzel_ratio(audio[1600:12800], 700) > 0.9

    @async_test
    async def test_rtp_source_fed_by_ffmpeg_is_heard_by_a_device(self) -> None:
        ffmpeg = require_program("ffmpeg")
        made = await call("POST", self.url("/api/sources"), json_body={
            "app": "live", "stream": "rtp", "kind": "rtp", "port": 0,
        })
        assert made.json["code"] == 0, made.json
        udp_port = made.json["source"]["port"]
        started = await call("POST", self.url("/api/sessions"), json_body={
            "app": "live", "stream": "rtp", "ssrc": 8,
        })
        device = await connect_device(started.json["local_port"])
        _out, err, code = await getProcessOutputAndValue(
            ffmpeg,
            ["-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi",
             "-i", "sine=frequency=1000:duration=1", "-ar", "8000", "-ac", "1",
             "-acodec", "pcm_alaw", "-f", "rtp", f"rtp://127.0.0.1:{udp_port}"],
            env=os.environ, reactor=reactor,
        )
        assert code == 0, err
        # ffmpeg has sent the whole second; the session plays it out at its own pace.
        await until(lambda: len(device.audio(Law.ALAW)) > 8000, timeout=10)
        audio = device.audio(Law.ALAW)
        assert dominant_frequency(audio, range(200, 3800, 100)) == 1000

    @async_test
    async def test_gstreamer_device_hears_a_tone_started_through_zlm_api(self) -> None:
        gst = require_program("gst-launch-1.0")
        await self.harness.add_tone(frequency=1000, duration=1.5)
        reply = await self.harness.zlm("startSendRtpPassive", query={
            "app": "broadcast", "stream": "tone", "ssrc": "0100000001", "use_ps": "0",
            "pt": "8",
        })
        out = str(self.media / "out.wav")
        pipeline = (
            f"tcpclientsrc host=127.0.0.1 port={reply.json['local_port']} ! "
            "application/x-rtp-stream,media=audio,clock-rate=8000,encoding-name=PCMA,payload=8 ! "
            "rtpstreamdepay ! rtppcmadepay ! alawdec ! audioconvert ! wavenc ! "
            f"filesink location={out}"
        )
        _out, errors, code = await getProcessOutputAndValue(
            gst, ["-q", *pipeline.split()], env=os.environ, reactor=reactor
        )
        assert code == 0, errors
        audio = read_wav(out)
        assert len(audio.data) / 16000 > 1.4
        assert dominant_frequency(audio.data, range(200, 3800, 50)) == 1000
        assert tone_power(audio.data, 1000) > 100 * tone_power(audio.data, 1500)


class NativeSecretTests(unittest.TestCase):
    timeout = 20

    def setUp(self) -> None:
        self.harness = ServiceHarness(ports=2, secret="s3cret")
        self.harness.start()

    def tearDown(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.harness.stop())

    @async_test
    async def test_secret_from_bearer_query_or_body_health_stays_open(self) -> None:
        url = self.harness.url
        for path in ("/api/sources", "/api/sessions", "/api/pool", "/metrics"):
            reply = await call("GET", url(path))
            assert (reply.status, reply.json["code"]) == (401, codes.AUTH_FAILED), path
            wrong = await call("GET", url(path), headers={"Authorization": "Bearer nope"})
            assert wrong.json["code"] == codes.AUTH_FAILED
            right = await call("GET", url(path), headers={"Authorization": "Bearer s3cret"})
            assert right.status == 200, path
            by_query = await call("GET", url(path), query={"secret": "s3cret"})
            assert by_query.status == 200, path
        made = await call("POST", url("/api/sources"), json_body={
            "app": "a", "stream": "t", "kind": "tone", "secret": "s3cret",
        })
        assert made.json["code"] == 0, made.json
        health = await call("GET", url("/api/health"))
        assert health.status == 200

    @async_test
    async def test_websocket_push_needs_the_secret(self) -> None:
        await call("POST", self.harness.url("/api/sources"), query={"secret": "s3cret"},
                   json_body={"app": "live", "stream": "mic", "kind": "push"})
        ws = self.harness.base.replace("http", "ws") + "/api/push/live/mic"
        endpoint = WebSocketClientEndpoint.new(reactor, ws)  # type: ignore[arg-type]
        with self.assertRaises(ConnectionRejected) as refused:
            await endpoint.connect(PushClientFactory())
        assert refused.exception.response.code == 401
        body = await read_body(refused.exception.response)
        assert b'"code": -100' in body
        allowed = WebSocketClientEndpoint.new(reactor, ws + "?secret=s3cret")  # type: ignore[arg-type]
        pusher = await allowed.connect(PushClientFactory())
        source = self.harness.service.registry.find("live", "mic")
        await until(lambda: source.pusher is not None)
        pusher.transport.loseConnection()
        await pusher.lost
        assert port_is_free(self.harness.low)


# --------------------------------------------------------------------------- parser properties

_json_values = st.one_of(
    st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True),
    st.text(max_size=10), st.lists(st.integers(), max_size=2),
    st.sampled_from(["raw", "ps", "pcmu", "rfc4571", "none", "strict", "8", "0100000001"]),
)
_fields = st.sampled_from([*NATIVE_FIELDS, "colour"])


@given(st.dictionaries(_fields, _json_values, max_size=12))
def test_native_start_parser_only_ever_refuses_with_minus_300(body: dict[str, Any]) -> None:
    try:
        request = parse_native_start(body, 5.0)
    except ApiError as error:
        assert error.code == codes.INVALID_ARGS and error.msg
    else:
        assert request.params.wait_timeout > 0


def test_native_two_way_never_ends_for_silence_unless_asked() -> None:
    body = {"app": "a", "stream": "s", "ssrc": 1}
    assert parse_native_start({**body, "two_way": True}, 5.0).params.receive_timeout is None
    talk = parse_native_start({**body, "recv_stream_id": "back"}, 5.0).params
    assert talk.receive and talk.receive_timeout is None
    asked = parse_native_start({**body, "two_way": True, "receive_timeout": 15}, 5.0).params
    assert asked.receive_timeout == 15.0
    never = parse_native_start({**body, "two_way": True, "receive_timeout": 0}, 5.0).params
    assert never.receive_timeout is None


def test_native_defaults_are_raw_pcma_pt_8() -> None:
    params = parse_native_start({"app": "a", "stream": "s", "ssrc": 1}, 4.0).params
    assert (params.packaging, params.law, params.rtp_payload_type) == (Packaging.RAW, Law.ALAW, 8)
    assert params.wait_timeout == 4.0 and not params.receive


class OneCoreTests(unittest.TestCase):
    """HTTP and SIP drive the same core: a SIP call shows in the native API with its wiring."""

    timeout = 30

    def setUp(self) -> None:
        self.harness = ServiceHarness(ports=3)
        self.harness.start()

    def tearDown(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.harness.stop())

    @async_test
    async def test_a_sip_two_way_call_is_listed_with_its_device_source(self) -> None:
        await self.harness.add_tone()
        signalling = TalkSignalling(self.harness.service.control, advertise_ip="127.0.0.1")
        offer = TALK_OFFER.replace("192.0.2.20", "127.0.0.1")
        answer = parse_sdp(signalling.prepare("call-1", offer, "broadcast", "tone"))
        native = await call("POST", self.harness.url("/api/sessions"),
                            json_body={"app": "broadcast", "stream": "tone",
                                       "ssrc": 100000123})
        assert native.json["code"] == 0, native.json
        assert native.json["local_port"] != answer.port, "a key and a Call-ID: two sessions"
        listed = await call("GET", self.harness.url("/api/sessions"))
        views = {view["local_port"]: view for view in listed.json["sessions"]}
        assert views[answer.port]["recv_stream_id"] == device_stream_name("call-1")
        assert views[answer.port]["codec"] == "PCMU"
        sources = await call("GET", self.harness.url("/api/sources"))
        kinds = {source["stream"]: source["kind"] for source in sources.json["sources"]}
        assert kinds[device_stream_name("call-1")] == "device"
        signalling.release("call-1")
        after = await call("GET", self.harness.url("/api/sessions"))
        assert [view["local_port"] for view in after.json["sessions"]] == [
            native.json["local_port"]]
        gone = await call("GET", self.harness.url("/api/sources"))
        assert device_stream_name("call-1") not in {s["stream"] for s in gone.json["sources"]}
