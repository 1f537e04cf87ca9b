"""WebSocket push: real loopback clients push audio into push sources, with flow control."""

from __future__ import annotations

import functools
import json
import struct
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, deferLater
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.websocket import (
    ConnectionRejected,
    WebSocketClientEndpoint,
    WebSocketTransport,
)
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    RejectConnection,
    Request,
    TextMessage,
)
from zope.interface.verify import verifyObject

from gb28181talk.interfaces import FRAME_BYTES, IAudioSource
from gb28181talk.media import g711
from gb28181talk.media.law import Law
from gb28181talk.sources.push import PushSource
from gb28181talk.sources.registry import SourceRegistry
from gb28181talk.sources.tone import ToneSource
from gb28181talk.web import push as web_push
from gb28181talk.web.push import PushProtocol, PushResource, peer_hung_up
from tests.httpapi import call
from tests.test_sources import (
    RecordingProducer,
    goertzel_ratio,
    read_all,
    tone_pcm,
    zero_crossing_frequency,
)


def async_test(
    method: Callable[[Any], Coroutine[Any, Any, None]],
) -> Callable[[Any], Deferred[None]]:
    """Run an ``async def`` test method as a Deferred, which trial waits for."""

    @functools.wraps(method)
    def run(self: Any) -> Deferred[None]:
        return Deferred.fromCoroutine(method(self))

    return run


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds)  # type: ignore[arg-type]


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Turn the reactor until ``condition()`` holds."""
    waited = 0.0
    while not condition():
        if waited > timeout:
            raise AssertionError("condition not met in time")
        await sleep(0.005)
        waited += 0.005


class PushClient:
    """A WebSocketProtocol that records text messages and tells when it is gone."""

    def __init__(self) -> None:
        self.transport: WebSocketTransport | None = None
        self.texts: list[str] = []
        self.lost: Deferred[None] = Deferred()

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        pass

    def textMessageReceived(self, message: str) -> None:
        self.texts.append(message)

    def bytesMessageReceived(self, data: bytes | bytearray) -> None:
        pass

    def pongReceived(self, payload: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        self.lost.callback(None)


class PushClientFactory:
    def buildProtocol(self, url: str) -> PushClient:
        return PushClient()


class BodyCollector(Protocol):
    """Collects an HTTP refusal's body, whatever ends the connection."""

    def __init__(self) -> None:
        self.data = b""
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.done.callback(self.data)


class RawWebSocket(Protocol):
    """A bare wsproto client, to see the close code and reason the Twisted client hides."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: list[Any] = []
        self.opened: Deferred[None] = Deferred()
        self.done: Deferred[list[Any]] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.ws.send(Request(host="127.0.0.1", target=self.path)))

    def dataReceived(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events():
            self.events.append(event)
            if isinstance(event, AcceptConnection | RejectConnection):
                self.opened.callback(None)
            elif isinstance(event, CloseConnection):
                if self.ws.state is not ConnectionState.CLOSED:
                    self.transport.write(self.ws.send(event.response()))
                self.transport.loseConnection()

    def send_text(self, text: str) -> None:
        self.transport.write(self.ws.send(TextMessage(text)))

    def send_bytes(self, data: bytes, finished: bool = True) -> None:
        """One frame of a binary message; ``finished=False`` leaves the message open."""
        self.transport.write(self.ws.send(BytesMessage(data, message_finished=finished)))

    def texts(self) -> list[str]:
        return [e.data for e in self.events if isinstance(e, TextMessage)]

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.done.callback(self.events)

    def close_event(self) -> CloseConnection:
        closes = [e for e in self.events if isinstance(e, CloseConnection)]
        assert closes, self.events
        return closes[0]


class PushResourceTests(unittest.TestCase):
    """``/api/push/{app}/{stream}`` on a real loopback Site."""

    timeout = 20

    def setUp(self) -> None:
        self.registry = SourceRegistry()
        root = Resource()
        api = Resource()
        root.putChild(b"api", api)
        api.putChild(b"push", PushResource(self.registry))
        api.putChild(b"smallpush", PushResource(self.registry, max_message_bytes=4000))
        # Backlog flow control alone, with a pace no reader here can fall behind (the pace
        # is tested on a Clock in test_push_pace).
        api.putChild(b"fastpush", PushResource(self.registry, pace_factor=1000.0))
        self.connections = WrappingFactory(Site(root))
        self.listener = reactor.listenTCP(  # type: ignore[attr-defined]
            0, self.connections, interface="127.0.0.1"
        )
        self.port = self.listener.getHost().port

    async def _close_everything(self) -> None:
        self.registry.close_all()
        await self.listener.stopListening()
        await until(lambda: not self.connections.protocols)

    def tearDown(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._close_everything())

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    async def connect(self, path: str) -> PushClient:
        endpoint = WebSocketClientEndpoint.new(reactor, self.url(path))  # type: ignore[arg-type]
        return await endpoint.connect(PushClientFactory())

    async def refused(self, path: str) -> tuple[int, dict[str, Any]]:
        """Connect expecting an HTTP refusal; return its status and JSON body."""
        try:
            client = await self.connect(path)
        except ConnectionRejected as e:
            collector = BodyCollector()
            e.response.deliverBody(collector)
            body = await collector.done
            assert e.response.headers.getRawHeaders(b"content-type") == [
                b"application/json; charset=utf-8"
            ]
            return e.response.code, json.loads(body)
        client.transport.loseConnection()  # type: ignore[union-attr]
        raise AssertionError(f"{path} was accepted")

    async def raw(self, path: str) -> RawWebSocket:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        raw = RawWebSocket(path)
        await connectProtocol(endpoint, raw)
        await raw.opened
        return raw

    async def hang_up(self, client: PushClient, source: PushSource) -> None:
        """Close the client and wait until the source knows its pusher left."""
        client.transport.loseConnection()  # type: ignore[union-attr]
        await client.lost
        await until(lambda: source.pusher is None)

    @async_test
    async def test_push_16k_pcm16_comes_out_as_8k_frames_of_the_same_tone(self) -> None:
        source = self.registry.create(
            {"app": "live", "stream": "mic", "kind": "push", "sample_rate": 16000}
        )
        assert verifyObject(IAudioSource, source)
        client = await self.connect("/api/push/live/mic")
        await until(lambda: source.pusher is not None)
        assert source.describe()["pusher"].startswith("127.0.0.1:")
        pcm = tone_pcm(700, 1.0, rate=16000)
        for start in range(0, len(pcm), 640):  # 20 ms messages
            client.transport.sendBytesMessage(pcm[start : start + 640])  # type: ignore[union-attr]
        await until(lambda: source.describe()["bytes_received"] == len(pcm))
        await self.hang_up(client, source)
        frames = read_all(source)
        assert len(frames) == 50
        assert all(len(f) == FRAME_BYTES for f in frames)
        out = b"".join(frames)
        assert zero_crossing_frequency(out[1600:-1600]) == self.approx(700, 5)
        assert goertzel_ratio(out[1600:-1600], 700) > 0.95
        info = source.describe()
        assert info["messages_received"] == 50 and info["dropped_ms"] == 0
        assert not source.ended and self.registry.find("live", "mic") is source

    def approx(self, value: float, tolerance: float) -> Any:
        import pytest

        return pytest.approx(value, abs=tolerance)

    @async_test
    async def test_alaw_push_is_decoded(self) -> None:
        source = self.registry.create(
            {"app": "live", "stream": "a", "kind": "push", "format": "alaw"}
        )
        client = await self.connect("/api/push/live/a")
        pcm = tone_pcm(1000, 0.2)
        alaw = g711.encode(Law.ALAW, pcm)
        client.transport.sendBytesMessage(alaw[:333])  # type: ignore[union-attr]
        client.transport.sendBytesMessage(alaw[333:])  # type: ignore[union-attr]
        await until(lambda: source.backlog_ms == 200)
        assert b"".join(read_all(source)) == g711.decode(Law.ALAW, alaw)
        await self.hang_up(client, source)

    @async_test
    async def test_unknown_source_is_refused_with_404_json(self) -> None:
        status, body = await self.refused("/api/push/live/nope")
        assert status == 404
        assert body == {
            "code": -500,
            "msg": "no source live/nope; create it with POST /api/sources or list them "
            "with GET /api/sources",
        }
        for path in ("/api/push/live", "/api/push/live/nope/extra", "/api/push/"):
            status, body = await self.refused(path)
            assert status == 404 and body["code"] == -500, (path, body)

    @async_test
    async def test_a_source_that_is_not_push_is_refused_with_409(self) -> None:
        self.registry.add(ToneSource("live", "tone"))
        status, body = await self.refused("/api/push/live/tone")
        assert status == 409
        assert "is a tone source; only push sources" in body["msg"]

    @async_test
    async def test_text_message_is_refused_with_a_close_code(self) -> None:
        source = self.registry.create({"app": "live", "stream": "t", "kind": "push"})
        client = await self.connect("/api/push/live/t")
        client.transport.sendTextMessage("hello")  # type: ignore[union-attr]
        await client.lost
        assert json.loads(client.texts[0])["msg"].startswith("text messages are not audio")
        await until(lambda: source.pusher is None)
        raw = await self.raw("/api/push/live/t")
        raw.send_text("hello")
        await raw.done
        close = raw.close_event()
        assert close.code == 1003
        assert close.reason == "text messages are not audio; send binary pcm16 messages"
        assert not source.ended

    @async_test
    async def test_plain_http_is_told_to_use_a_websocket_client_in_json(self) -> None:
        source = self.registry.create({"app": "live", "stream": "mic", "kind": "push"})
        url = f"http://127.0.0.1:{self.port}/api/push/live/mic"
        for method in ("GET", "POST"):
            reply = await call(method, url)
            assert reply.status == 426, (method, reply.raw)
            assert reply.content_type == "application/json; charset=utf-8"
            assert reply.json["code"] == -300
            assert reply.json["msg"] == (
                "this is a WebSocket endpoint: connect with a WebSocket client (e.g. websocat "
                f"--binary ws://127.0.0.1:{self.port}/api/push/live/mic) and send binary audio "
                "messages"
            )
        broken = await call("GET", url, headers={"Upgrade": "websocket",
                                                 "Connection": "Upgrade"})
        assert (broken.status, broken.json["code"]) == (400, -300), broken.raw
        assert "this is a WebSocket endpoint" in broken.json["msg"]
        assert "handshake was refused" in broken.json["msg"]
        assert source.pusher is None and source.describe()["pushers_total"] == 0
        client = await self.connect("/api/push/live/mic")
        await until(lambda: source.pusher is not None)
        await self.hang_up(client, source)

    @async_test
    async def test_second_pusher_is_refused_and_the_first_keeps_pushing(self) -> None:
        source = self.registry.create({"app": "live", "stream": "one", "kind": "push"})
        first = await self.connect("/api/push/live/one")
        await until(lambda: source.pusher is not None)
        status, body = await self.refused("/api/push/live/one")
        assert status == 409
        assert "already has a pusher (127.0.0.1:" in body["msg"]
        first.transport.sendBytesMessage(bytes(FRAME_BYTES * 3))  # type: ignore[union-attr]
        await until(lambda: source.backlog_ms == 60)
        await self.hang_up(first, source)

    @async_test
    async def test_hanging_up_leaves_the_source_for_the_next_pusher(self) -> None:
        source = self.registry.create({"app": "live", "stream": "relay", "kind": "push"})
        first = await self.connect("/api/push/live/relay")
        first.transport.sendBytesMessage(b"\x01\x00" * 160)  # type: ignore[union-attr]
        await until(lambda: source.backlog_ms == 20)
        await self.hang_up(first, source)
        assert self.registry.find("live", "relay") is source and not source.ended
        second = await self.connect("/api/push/live/relay")
        second.transport.sendBytesMessage(b"\x02\x00" * 320)  # type: ignore[union-attr]
        await until(lambda: source.backlog_ms == 60)
        assert read_all(source) == [b"\x01\x00" * 160, b"\x02\x00" * 160, b"\x02\x00" * 160]
        assert source.describe()["pushers_total"] == 2
        await self.hang_up(second, source)

    @async_test
    async def test_deleting_the_source_disconnects_its_pusher(self) -> None:
        source = self.registry.create({"app": "live", "stream": "gone", "kind": "push"})
        raw = await self.raw("/api/push/live/gone")
        await until(lambda: source.pusher is not None)
        self.registry.remove("live", "gone")
        await raw.done
        assert raw.close_event().code == 1001
        assert source.ended

    @async_test
    async def test_a_fast_pusher_is_slowed_not_dropped(self) -> None:
        source = self.registry.create(
            {"app": "live", "stream": "file", "kind": "push", "max_backlog_ms": 200}
        )
        client = await self.connect("/api/fastpush/live/file")
        # 20 s of audio whose every sample says where it is, sent at once in 50 ms messages.
        pcm = struct.pack("<160000h", *(n % 32000 for n in range(160000)))
        for start in range(0, len(pcm), 800):
            client.transport.sendBytesMessage(pcm[start : start + 800])  # type: ignore[union-attr]
        await until(lambda: source.paused)
        await sleep(0.05)
        info = source.describe()
        assert info["paused"] and info["dropped_ms"] == 0
        assert info["received_ms"] < 10_000, "reading did not stop"
        frames: list[bytes] = []
        while len(frames) < 1000:
            frame = source.read_frame()
            if frame is None:
                await sleep(0.002)
            else:
                frames.append(frame)
        assert b"".join(frames) == pcm
        info = source.describe()
        assert info["dropped_ms"] == 0 and info["pauses"] >= 2
        await self.hang_up(client, source)

    # -- issue 12 item 4: a message is streamed fragment by fragment, and capped

    @async_test
    async def test_an_unfinished_message_is_played_fragment_by_fragment(self) -> None:
        """Each fragment reaches the source as it arrives: nothing waits for the message to
        end (so nothing is buffered and re-copied), and a hang-up mid-message leaves nothing."""
        source = self.registry.create({"app": "live", "stream": "frag", "kind": "push"})
        raw = await self.raw("/api/push/live/frag")
        await until(lambda: source.pusher is not None)
        for n in range(3):
            raw.send_bytes(bytes([n + 1, 0]) * 160, finished=False)
        await until(lambda: source.describe()["bytes_received"] == 960)
        assert source.backlog_ms == 60 and source.describe()["messages_received"] == 0
        raw.send_bytes(b"\x04\x00" * 160, finished=True)
        await until(lambda: source.describe()["messages_received"] == 1)
        raw.send_bytes(b"\x05\x00" * 160 + b"\x05", finished=False)  # half a sample over
        await until(lambda: source.describe()["bytes_received"] == 1601)
        raw.transport.loseConnection()
        await raw.done
        await until(lambda: source.pusher is None)
        assert source._carry == b"", "the half sample of the unfinished message is freed"
        frames = read_all(source)
        assert frames == [bytes([n, 0]) * 160 for n in range(1, 6)]
        assert source.describe()["messages_received"] == 1

    @async_test
    async def test_a_message_over_the_cap_is_closed_with_1009(self) -> None:
        source = self.registry.create({"app": "live", "stream": "big", "kind": "push"})
        raw = await self.raw("/api/smallpush/live/big")
        await until(lambda: source.pusher is not None)
        raw.send_bytes(bytes(4000))  # exactly the cap: fine
        await until(lambda: source.describe()["messages_received"] == 1)
        for _ in range(5):  # a message that never ends: 5000 bytes and counting
            raw.send_bytes(bytes(1000), finished=False)
        await raw.done
        close = raw.close_event()
        assert close.code == 1009
        assert close.reason.startswith("message too big: over 4000 bytes"), close.reason
        assert json.loads(raw.texts()[0]) == {"code": -500, "msg": close.reason}
        await until(lambda: source.pusher is None)
        info = source.describe()
        assert info["bytes_received"] == 8000, "the fragment over the cap is not played"
        assert info["messages_received"] == 1 and not source.ended

    @async_test
    async def test_a_text_message_is_refused_at_its_first_fragment(self) -> None:
        source = self.registry.create({"app": "live", "stream": "tx", "kind": "push"})
        raw = await self.raw("/api/push/live/tx")
        raw.transport.write(raw.ws.send(TextMessage("x" * 1000, message_finished=False)))
        await raw.done
        assert raw.close_event().code == 1003
        await until(lambda: source.pusher is None)


    # -- issue 12 item 5: a paused pusher that hangs up is noticed

    async def paused_pusher(self, stream: str) -> tuple[PushSource, RawWebSocket, Any]:
        """A pusher whose reading is paused (backlog full), with audio still unread."""
        source = self.registry.create(
            {"app": "live", "stream": stream, "kind": "push", "max_backlog_ms": 200}
        )
        raw = await self.raw(f"/api/push/live/{stream}")
        await until(lambda: source.pusher is not None)
        for _ in range(10):  # 10 s at once: more than one read, so some stays unread
            raw.send_bytes(bytes(16000))
        await until(lambda: source.paused)
        server_socket = source.pusher.transport.transport.getHandle()
        assert not peer_hung_up(server_socket)
        return source, raw, server_socket

    @async_test
    async def test_a_paused_pusher_that_hung_up_gives_way_to_the_next(self) -> None:
        source, raw, server_socket = await self.paused_pusher("gone")
        heard_ms = source.backlog_ms
        raw.transport.loseConnection()  # a FIN the paused server never reads
        await raw.done
        await until(lambda: peer_hung_up(server_socket))
        assert source.pusher is not None, "noticed before anyone asked (the test is moot)"
        second = await self.connect("/api/push/live/gone")  # not 409 "already has a pusher"
        await until(lambda: len(self.connections.protocols) == 1)
        assert source.pusher is not None and source.describe()["pushers_total"] == 2
        assert source.backlog_ms == heard_ms, "the audio it sent before is kept"
        assert len(read_all(source)) == heard_ms // 20
        left = source.backlog_ms  # under a frame
        second.transport.sendBytesMessage(bytes(320))  # type: ignore[union-attr]
        await until(lambda: source.backlog_ms == left + 20)
        await self.hang_up(second, source)

    @async_test
    async def test_a_paused_pusher_that_hung_up_is_freed_when_nobody_reads(self) -> None:
        source, raw, _ = await self.paused_pusher("idle")
        raw.transport.loseConnection()
        await raw.done
        await until(lambda: source.pusher is None)  # the paused check, nobody reading
        await until(lambda: not self.connections.protocols)
        assert not source.ended and source.backlog_ms > 0, "its audio stays to be played"
        assert source.describe()["pusher"] is None


class FakeWebSocket:
    """Records what a PushProtocol sends."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def sendTextMessage(self, text: str) -> None:
        self.sent.append(("text", text))

    def loseConnection(self, code: int = 1000, reason: str = "") -> None:
        self.sent.append(("close", code, reason))


def test_a_pusher_that_loses_the_race_is_closed_with_1008() -> None:
    source = PushSource("live", "race")
    assert source.claim(object())
    late = PushProtocol(source, "10.0.0.9:5000")
    socket = FakeWebSocket()
    late.negotiationStarted(socket)  # type: ignore[arg-type]
    late.negotiationFinished()
    assert socket.sent[0][0] == "text"
    assert json.loads(socket.sent[0][1])["code"] == -500
    assert socket.sent[1][:2] == ("close", 1008)
    assert "already has a pusher" in socket.sent[1][2]
    late.bytesMessageReceived(b"\x00" * 320)
    assert source.backlog_ms == 0


def test_push_source_keeps_partial_samples_between_messages() -> None:
    source = PushSource("live", "s", sample_rate=8000, channels=2, prefill_ms=0)
    stereo = struct.pack("<4h", 100, 300, -100, -300) * 80  # 160 stereo frames
    source.push_bytes(stereo[:3])
    source.push_bytes(stereo[3:])
    source.end_of_push()
    assert source.read_frame() == struct.pack("<2h", 200, -200) * 80
    info = source.describe()
    assert (info["channels"], info["format"], info["pusher"]) == (2, "pcm16", None)


# --------------------------------------------------------------- the paused check, on a Clock


class FakeNetwork(RecordingProducer):
    """A pusher's TCP transport: flow control calls, an abort, a reactor and a socket."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.reactor = clock
        self.hung_up = False

    def abortConnection(self) -> None:
        self.calls.append("abort")

    def loseConnection(self) -> None:
        self.calls.append("lose")

    def getHandle(self) -> FakeNetwork:
        return self


class FakeWireSocket(FakeWebSocket):
    def __init__(self, network: FakeNetwork) -> None:
        super().__init__()
        self.transport = network


def paused_protocol(monkeypatch: Any) -> tuple[Clock, FakeNetwork, PushSource, PushProtocol]:
    from twisted.internet.interfaces import IPushProducer
    from zope.interface import directlyProvides

    clock = Clock()
    network = FakeNetwork(clock)
    directlyProvides(network, IPushProducer)
    monkeypatch.setattr(web_push, "peer_hung_up", lambda handle: handle.hung_up)
    source = PushSource("live", "p", max_backlog_ms=100, prefill_ms=20)
    pusher = PushProtocol(source, "10.0.0.7:4000")
    pusher.negotiationStarted(FakeWireSocket(network))  # type: ignore[arg-type]
    pusher.negotiationFinished()
    source.push_bytes(bytes(16 * 1000))  # a second: over the backlog, so reading pauses
    assert network.calls == ["pause"] and source.paused
    return clock, network, source, pusher


def test_the_paused_check_frees_a_hung_up_pusher_nobody_reads(monkeypatch: Any) -> None:
    clock, network, source, pusher = paused_protocol(monkeypatch)
    clock.advance(web_push.HANGUP_CHECK_SECONDS * 3)
    assert source.pusher is pusher and network.calls == ["pause"], "alive: left alone"
    network.hung_up = True
    clock.advance(web_push.HANGUP_CHECK_SECONDS)
    assert source.pusher is None and network.calls == ["pause", "abort"]
    assert source.backlog_ms == 1000 and not source.ended
    assert not clock.getDelayedCalls(), "no check left behind"


def test_the_paused_check_leaves_a_hung_up_pusher_whose_audio_is_being_read(
    monkeypatch: Any,
) -> None:
    clock, network, source, pusher = paused_protocol(monkeypatch)
    network.hung_up = True
    source.read_frame()  # a listener plays it: reading resumes in time and hears the FIN
    clock.advance(web_push.HANGUP_CHECK_SECONDS)
    assert source.pusher is pusher and network.calls == ["pause"]
    clock.advance(web_push.HANGUP_CHECK_SECONDS)  # nothing read since: free it
    assert source.pusher is None and network.calls == ["pause", "abort"]


def test_resuming_stops_the_paused_check(monkeypatch: Any) -> None:
    clock, network, source, pusher = paused_protocol(monkeypatch)
    while source.paused:
        assert source.read_frame() is not None
    assert network.calls == ["pause", "resume"] and not clock.getDelayedCalls()
    pusher.connectionLost(Failure(ConnectionError("gone")))
    assert source.pusher is None and not clock.getDelayedCalls()
