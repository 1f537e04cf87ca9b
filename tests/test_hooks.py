"""on_send_rtp_stopped webhooks: ZLMediaKit's fields and ours, for every ending, retried."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web.client import ResponseDone, ResponseNeverReceived
from zope.interface.verify import verifyObject

from gb28181talk.core.manager import SessionManager
from gb28181talk.core.params import SessionKey, SessionParams, SessionState
from gb28181talk.core.ports import PortPool
from gb28181talk.core.talk import TalkControl
from gb28181talk.interfaces import ISessionObserver
from gb28181talk.sources.registry import SourceRegistry
from gb28181talk.sources.tone import ToneSource
from gb28181talk.testing import BusyPortsReactor, FakeDevice
from gb28181talk.web.hooks import HookDeliverer, hook_body
from gb28181talk.web.metrics import Metrics
from tests.devices import connect_device
from tests.httpapi import HookReceiver, ServiceHarness, async_test, sleep, until
from tests.netutil import free_port

ZLM_FIELDS = {"mediaServerId", "hook_index", "vhost", "app", "stream", "params", "ssrc",
              "originType", "originTypeStr", "originUrl", "msg", "err"}


def test_observers_provide_the_interface() -> None:
    memory = BusyPortsReactor()
    manager = SessionManager(memory, PortPool(memory, 30000, 30003))
    assert verifyObject(ISessionObserver, HookDeliverer(memory, "http://127.0.0.1:9/hook"))
    assert verifyObject(ISessionObserver, Metrics(manager))
    assert verifyObject(ISessionObserver, TalkControl(memory, manager, SourceRegistry()))


def test_hook_body_has_zlmediakit_fields_and_ours() -> None:
    memory = BusyPortsReactor()
    manager = SessionManager(memory, PortPool(memory, 30000, 30003))
    source = ToneSource("broadcast", "tone")
    session = manager.start(SessionParams(key=SessionKey("v", "broadcast", "tone", 123)), source)
    device = FakeDevice()
    assert device.connect(memory, session.port)
    memory.advance(0.1)
    device.hang_up()
    body = hook_body(session, str(session.end_reason), session.stats, "media-1", 7)
    assert set(body) >= ZLM_FIELDS
    assert body["ssrc"] == "0000000123"
    assert (body["mediaServerId"], body["hook_index"]) == ("media-1", 7)
    assert (body["vhost"], body["app"], body["stream"]) == ("v", "broadcast", "tone")
    assert (body["reason"], body["err"]) == ("device-closed", 1)
    assert body["peer"] == "127.0.0.2:40000"
    assert body["local_port"] == session.port
    assert body["stats"]["packets_sent"] > 0


class HookDeliveryTests(unittest.TestCase):
    """The whole service posting to a test receiver."""

    timeout = 20

    def setUp(self) -> None:
        self.receiver = HookReceiver()
        url = self.receiver.start()
        self.harness = ServiceHarness(ports=3, hook_url=url, server_id="talk-1")
        self.harness.start()

    async def _cleanup(self) -> None:
        await self.harness.stop()
        await self.receiver.stop()

    def tearDown(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._cleanup())

    async def start(self, **args: Any) -> int:
        reply = await self.harness.zlm("startSendRtpPassive", query={
            "app": "broadcast", "stream": "tone", "ssrc": "0100000001", **args})
        assert reply.json["code"] == 0, reply.json
        return int(reply.json["local_port"])

    @async_test
    async def test_timeout_stop_and_device_hang_up_each_post_one_hook(self) -> None:
        await self.harness.add_tone()
        await self.start(close_delay_ms="150")
        await until(lambda: len(self.receiver.bodies) == 1)
        timed_out = self.receiver.bodies[0]
        assert self.receiver.paths == ["/index/hook/on_send_rtp_stopped"]
        assert set(timed_out) >= ZLM_FIELDS
        assert (timed_out["reason"], timed_out["err"]) == ("timeout", 2)
        assert timed_out["mediaServerId"] == "talk-1"
        assert timed_out["ssrc"] == "0100000001"
        assert "no device connected" in timed_out["msg"]

        await self.start()
        stop = await self.harness.zlm("stopSendRtp", query={"app": "broadcast",
                                                            "stream": "tone"})
        assert stop.json["code"] == 0
        await until(lambda: len(self.receiver.bodies) == 2)
        assert self.receiver.bodies[1]["reason"] == "stopped"
        assert self.receiver.bodies[1]["hook_index"] == timed_out["hook_index"] + 1

        port = await self.start()
        device = await connect_device(port)
        await until(lambda: len(device.received) > 2000)
        device.transport.loseConnection()
        await until(lambda: len(self.receiver.bodies) == 3)
        hung_up = self.receiver.bodies[2]
        assert hung_up["reason"] == "device-closed"
        assert hung_up["peer"].startswith("127.0.0.1:")
        assert hung_up["stats"]["packets_sent"] > 0
        # The receiver has the body before the deliverer has read its answer: wait for that.
        await until(lambda: self.harness.service.hooks.delivered == 3)

    @async_test
    async def test_shutdown_endings_are_posted_before_the_service_stops(self) -> None:
        await self.harness.add_tone()
        await self.start()
        await self.start(ssrc="2")
        await self.harness.stop()
        assert sorted(body["reason"] for body in self.receiver.bodies) == ["shutdown"] * 2


class _Http10Receiver(Protocol):
    """An HTTP/1.0 receiver: reads one request, answers 200 without Content-Length, closes."""

    def __init__(self, posts: list[bytes]) -> None:
        self.posts = posts
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        head, found, body = self.buffer.partition(b"\r\n\r\n")
        if not found:
            return
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(body) < length:
            return
        self.posts.append(head.split(b"\r\n")[0])
        self.transport.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n"
                             b'{"code": 0, "msg": "success"}')
        self.transport.loseConnection()


def silent_receiver(test: unittest.TestCase) -> tuple[int, list[Protocol]]:
    """A webhook receiver on loopback that accepts connections and never answers.

    Its port and the connections it has accepted; it stops listening when ``test`` ends.
    """
    accepted: list[Protocol] = []

    class Silent(Protocol):
        def connectionMade(self) -> None:
            accepted.append(self)

    silent = reactor.listenTCP(0, Factory.forProtocol(Silent),  # type: ignore[attr-defined]
                               interface="127.0.0.1")
    test.addCleanup(silent.stopListening)
    return silent.getHost().port, accepted


class HookRetryTests(unittest.TestCase):
    timeout = 20

    @async_test
    async def test_an_http_1_0_reply_without_content_length_is_delivered_once(self) -> None:
        posts: list[bytes] = []
        factory = Factory.forProtocol(lambda: _Http10Receiver(posts))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        hooks = HookDeliverer(reactor, f"http://127.0.0.1:{port.getHost().port}/index/hook",
                              retries=3, backoff=0.05)
        delivered = await hooks.send({"session_id": "s1", "reason": "stopped"})
        await sleep(0.3)  # a wrongly retried POST would arrive within the back-off
        assert delivered is True
        assert posts == [b"POST /index/hook/on_send_rtp_stopped HTTP/1.1"]
        assert (hooks.delivered, hooks.failed) == (1, 0)

    @async_test
    async def test_failed_attempts_are_retried_with_back_off(self) -> None:
        receiver = HookReceiver(fail_first=2)
        url = receiver.start()
        self.addCleanup(receiver.stop)
        hooks = HookDeliverer(reactor, url, retries=3, backoff=0.05)
        delivered = await hooks.send({"session_id": "s1", "reason": "timeout"})
        assert delivered is True
        assert receiver.attempts == 3
        assert (hooks.delivered, hooks.failed) == (1, 0)

    @async_test
    async def test_a_receiver_that_never_answers_times_out_and_gives_up(self) -> None:
        port, _accepted = silent_receiver(self)
        hooks = HookDeliverer(reactor, f"http://127.0.0.1:{port}/hook",
                              timeout=0.2, retries=1, backoff=0.01)
        delivered = await hooks.send({"session_id": "s1", "reason": "timeout"})
        assert delivered is False
        assert (hooks.delivered, hooks.failed, hooks.pending) == (0, 1, 0)

    @async_test
    async def test_a_down_receiver_does_not_disturb_sessions(self) -> None:
        harness = ServiceHarness(ports=4, hook_url=f"http://127.0.0.1:{free_port()}/hook")
        harness.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(harness.stop()))
        hooks = harness.service.hooks
        hooks.retries, hooks.backoff = 2, 0.05
        await harness.add_tone()
        for n in range(3):  # sessions end while earlier hooks still retry
            reply = await harness.zlm("startSendRtpPassive", query={
                "app": "broadcast", "stream": "tone", "ssrc": str(n), "close_delay_ms": "50"})
            assert reply.json["code"] == 0
        reply = await harness.zlm("startSendRtpPassive", query={
            "app": "broadcast", "stream": "tone", "ssrc": "9", "use_ps": "0", "pt": "8"})
        device = await connect_device(reply.json["local_port"])
        await until(lambda: len(device.packets()) >= 25, timeout=10)
        session = harness.service.manager.sessions()[0]
        assert session.state is SessionState.STREAMING and session.stats.packets_dropped == 0
        heard = [(packet.sequence, packet.timestamp) for packet in device.packets()]
        breaks = [(a, b) for a, b in pairwise(heard)
                  if (b[0] - a[0]) % 2**16 != 1 or (b[1] - a[1]) % 2**32 != 160]
        assert breaks == [], f"the device heard every packet in order: {breaks[:5]}"
        device.transport.loseConnection()
        await until(lambda: hooks.failed == 4, timeout=5)
        assert hooks.delivered == 0 and hooks.pending == 0


class _SilentAgent:
    """An Agent whose requests never answer; cancelling one fails it as Twisted's Agent does.

    Agent reports a cancelled request as ``ResponseNeverReceived`` (not
    ``CancelledError``), which a retry loop can mistake for an ordinary failure.
    """

    def __init__(self, status: int | None = None) -> None:
        self.requests: list[Deferred[Any]] = []
        self.status = status

    def request(self, method: bytes, uri: bytes, headers: Any = None,
                body: Any = None) -> Deferred[Any]:
        if self.status is not None:
            self.requests.append(Deferred())
            return fail(_StatusError(self.status))

        def cancel(request: Deferred[Any]) -> None:
            request.errback(ResponseNeverReceived([Failure(CancelledError())]))

        request: Deferred[Any] = Deferred(cancel)
        self.requests.append(request)
        return request


class _StatusError(Exception):
    """Stands in for a quick network error (connection refused)."""


def _warnings(events: list[dict[str, Any]]) -> list[str]:
    return [formatEvent(event) for event in events if event["log_level"] >= LogLevel.warn]


class HookDrainTests(unittest.TestCase):
    """Shutdown's drain ends within its bound whatever the receiver does, and says what it lost."""

    timeout = 10

    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def test_a_receiver_that_never_answers_costs_the_drain_and_no_retry(self) -> None:
        clock = Clock()
        agent = _SilentAgent()
        hooks = HookDeliverer(clock, "http://192.0.2.1/hook", agent=agent, timeout=10.0,
                              retries=3, backoff=1.0)
        for n in range(500):
            hooks.send({"session_id": f"s{n}", "reason": "shutdown"})
        drained: list[Any] = []
        hooks.drain(3.0).addBoth(drained.append)
        clock.advance(2.9)
        assert drained == [] and hooks.pending == 500
        clock.advance(0.1)
        assert drained == [500], "the drain fires at its bound with how many it gave up on"
        assert hooks.pending == 0
        clock.advance(100.0)
        assert len(agent.requests) == 500, "no attempt is retried once the drain gave up"
        assert (hooks.delivered, hooks.failed, hooks.abandoned) == (0, 500, 500)
        assert not clock.getDelayedCalls(), "no back-off or timeout timer is left behind"
        warned = _warnings(self.events)
        assert any("gave up on 500 webhook" in line for line in warned), warned

    def test_hooks_waiting_to_retry_are_given_up_too(self) -> None:
        clock = Clock()
        agent = _SilentAgent(status=500)
        hooks = HookDeliverer(clock, "http://192.0.2.1/hook", agent=agent, retries=3,
                              backoff=2.0)
        for n in range(3):
            hooks.send({"session_id": f"s{n}", "reason": "shutdown"})
        drained: list[Any] = []
        hooks.drain(3.0).addBoth(drained.append)
        clock.advance(2.0)  # the first retries fail at once too; the next wait 4 s
        assert len(agent.requests) == 6 and drained == []
        clock.advance(1.0)
        assert drained == [3] and hooks.pending == 0
        clock.advance(60.0)
        assert len(agent.requests) == 6
        assert (hooks.failed, hooks.abandoned) == (3, 3)

    def test_the_drain_is_bounded_even_if_a_cancelled_attempt_never_ends(self) -> None:
        clock = Clock()
        stuck: Deferred[int] = Deferred()
        hooks = HookDeliverer(clock, "http://192.0.2.1/hook", agent=_SilentAgent())
        hooks._post = lambda data, url: stuck  # type: ignore[method-assign]
        stuck.pause()  # a cancel cannot fire it: it stays pending
        hooks.send({"session_id": "s1", "reason": "shutdown"})
        drained: list[Any] = []
        hooks.drain(3.0).addBoth(drained.append)
        clock.advance(3.0)
        assert drained == [1]

    def test_a_hook_after_the_drain_is_dropped_not_sent(self) -> None:
        clock = Clock()
        agent = _SilentAgent()
        hooks = HookDeliverer(clock, "http://192.0.2.1/hook", agent=agent)
        drained: list[Any] = []
        hooks.drain(3.0).addBoth(drained.append)
        assert drained == [0]
        assert hooks.send({"session_id": "late", "reason": "shutdown"}) is None
        assert (len(agent.requests), hooks.dropped) == (0, 1)

    def test_a_drain_that_finishes_early_gives_up_nothing(self) -> None:
        clock = Clock()
        agent = _SilentAgent()
        hooks = HookDeliverer(clock, "http://192.0.2.1/hook", agent=agent)
        delivered = hooks.send({"session_id": "s1", "reason": "shutdown"})
        drained: list[Any] = []
        hooks.drain(3.0).addBoth(drained.append)
        response = _Response(204)
        agent.requests[0].callback(response)
        assert drained == [0] and delivered is not None
        assert (hooks.delivered, hooks.abandoned) == (1, 0)
        assert not clock.getDelayedCalls()
        assert not _warnings(self.events)

    @async_test
    async def test_shutdown_with_a_receiver_that_never_answers_ends_within_the_drain(
        self,
    ) -> None:
        port, accepted = silent_receiver(self)
        hooks = HookDeliverer(reactor, f"http://127.0.0.1:{port}/hook",
                              timeout=30.0, retries=3, backoff=0.01)
        for n in range(3):
            hooks.send({"session_id": f"s{n}", "reason": "shutdown"})
        await until(lambda: len(accepted) == 3)
        given_up = await hooks.drain(0.05)
        await sleep(0.2)  # a wrongly retried attempt would connect within the back-off
        assert given_up == 3 and hooks.pending == 0
        assert len(accepted) == 3

    @async_test
    async def test_the_service_stops_within_its_drain_with_a_receiver_that_never_answers(
        self,
    ) -> None:
        from gb28181talk import service

        port, accepted = silent_receiver(self)
        self.patch(service, "HOOK_DRAIN_SECONDS", 0.1)
        harness = ServiceHarness(ports=3, hook_url=f"http://127.0.0.1:{port}/h")
        harness.start()
        hooks = harness.service.hooks
        hooks.backoff = 0.01  # a wrong retry would come at once
        await harness.add_tone()
        for ssrc in ("1", "2"):
            reply = await harness.zlm("startSendRtpPassive", query={
                "app": "broadcast", "stream": "tone", "ssrc": ssrc})
            assert reply.json["code"] == 0, reply.json
        await harness.stop()  # trial's timeout fails the test if this waits for the receiver
        attempts = len(accepted)
        await sleep(0.2)
        assert hooks.pending == 0 and hooks.abandoned >= 2
        assert len(accepted) == attempts, "nothing is retried after the drain gave up"
        warned = _warnings(self.events)
        assert any(f"gave up on {hooks.abandoned} webhook" in line for line in warned), warned


class _Response:
    """The least of an Agent response: a status and a body that ends at once."""

    def __init__(self, code: int) -> None:
        self.code = code

    def deliverBody(self, protocol: Protocol) -> None:
        protocol.makeConnection(None)  # type: ignore[arg-type]
        protocol.connectionLost(Failure(ResponseDone()))
