"""The service tree: which child services there are, the order they stop in, start failures."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import CannotListenError, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from gb28181talk.config import ServiceConfig
from gb28181talk.core.params import SessionKey, SessionParams, SessionState
from gb28181talk.service import (
    HOOK_DRAIN_SECONDS,
    START_FAILURE_STATUS,
    CannotStart,
    GbTalkService,
    ListeningService,
)
from gb28181talk.testing import ListSource, RecordingObserver

API = "tcp:0:interface=127.0.0.1"


def build(reactor: MemoryReactorClock, **settings: Any) -> GbTalkService:
    options = settings.pop("service", {})
    settings.setdefault("api", API)
    config = ServiceConfig(port_range=(30000, 30003), media_interface="127.0.0.1",
                           advertise_ip="127.0.0.1", **settings)
    return GbTalkService(config, reactor, **options)


class FakePort:
    """A listening port that records whether it was stopped."""

    def __init__(self) -> None:
        self.stopped = 0

    def getHost(self) -> Any:
        return type("Address", (), {"host": "127.0.0.1", "port": 8080})()

    def stopListening(self) -> Deferred[None]:
        self.stopped += 1
        return succeed(None)


def refuse_connections(reactor: MemoryReactorClock, seconds: float) -> None:
    """Let ``seconds`` pass, refusing every outgoing connection (nothing listens there)."""
    refused = 0
    for _ in range(int(seconds * 10) + 1):
        for _host, _port, factory, _timeout, _bind in reactor.tcpClients[refused:]:
            factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        refused = len(reactor.tcpClients)
        reactor.advance(0.1)


def test_the_children_in_start_order() -> None:
    with_hooks = build(MemoryReactorClock(), hook_url="http://127.0.0.1:9/hook")
    assert [child.name for child in with_hooks] == [
        "sources", "webhooks", "talk sessions", "node events", f"HTTP API {API}"]
    # Without --hook-url the webhooks are still there: setServerConfig may set their URLs.
    without = build(MemoryReactorClock())
    assert [child.name for child in without] == [
        "sources", "webhooks", "talk sessions", "node events", f"HTTP API {API}"]


def test_the_api_listens_on_its_endpoint_when_started() -> None:
    reactor = MemoryReactorClock()
    service = build(reactor)
    assert service.api_port is None
    service.startService()
    assert [(port, site, interface) for port, site, _, interface in reactor.tcpServers] == [
        (0, service.site, "127.0.0.1")]
    assert service.api_port is not None and all(child.running for child in service)


def test_stop_order_api_then_sessions_then_hooks_then_sources() -> None:
    reactor = MemoryReactorClock()
    service = build(reactor, hook_url="http://127.0.0.1:9/hook")
    observer = RecordingObserver()
    service.manager.add_observer(observer)
    service.startService()
    session = service.manager.start(
        SessionParams(key=SessionKey("__defaultVhost__", "a", "s", 1)), ListSource.counting(5))
    assert session.state is SessionState.LISTENING
    seen: list[tuple[str, Any]] = []
    for child in service:
        if child.name == "sources":
            original_close = service.registry.close_all

            def close_all(original: Any = original_close) -> None:
                seen.append(("sources", service.hooks.pending))
                original()

            service.registry.close_all = close_all  # type: ignore[method-assign]
        elif child.name == "webhooks":
            step = child.step  # type: ignore[attr-defined]

            async def drain(step: Any = step) -> None:
                seen.append(("webhooks", [event[2] for event in observer.ended()]))
                await step()

            child.step = drain  # type: ignore[attr-defined]
        elif child.name == "talk sessions":
            step = child.step  # type: ignore[attr-defined]

            async def end(step: Any = step) -> None:
                seen.append(("talk sessions", service.api_port))
                await step()

            child.step = end  # type: ignore[attr-defined]

    stopped: list[Any] = []
    service.stopService().addBoth(stopped.append)
    refuse_connections(reactor, HOOK_DRAIN_SECONDS)  # nothing listens at the webhook URL
    assert stopped == [None]
    assert seen == [
        ("talk sessions", None),  # the API stopped listening first
        ("webhooks", ["shutdown"]),  # the session ended with shutdown before the drain
        ("sources", 0),  # the drain was over (delivered or cancelled) before sources closed
    ]
    assert reactor.tcpClients and service.hooks.pending == 0, "tried, then given up"
    assert session.state is SessionState.CLOSED
    assert service.pool.leased_count == 0
    assert not any(child.running for child in service) and not service.running


def test_a_refused_listen_is_one_line() -> None:
    refusal = CannotListenError("127.0.0.1", 8080, OSError(98, "Address already in use"))
    listener = ListeningService("HTTP API", "tcp:8080", lambda: fail(refusal))
    with pytest.raises(CannotStart) as raised:
        listener.startService()
    message = str(raised.value)
    assert message.startswith("cannot start the HTTP API on tcp:8080: ")
    assert "Address already in use" in message and "\n" not in message
    assert listener.port is None


def test_under_twistd_a_refused_api_exits_with_status_1() -> None:
    reactor = MemoryReactorClock()
    service = build(reactor, service={"exit_on_start_failure": True})
    refusal = CannotListenError("127.0.0.1", 8080, OSError(98, "Address already in use"))
    service.api_services[0].listen = lambda: fail(refusal)
    with pytest.raises(SystemExit) as exited:
        service.privilegedStartService()
    assert exited.value.code == START_FAILURE_STATUS == 1


def test_in_process_a_refused_api_raises_cannot_start() -> None:
    service = build(MemoryReactorClock())
    service.api_services[0].listen = lambda: fail(
        CannotListenError("127.0.0.1", 8080, OSError(98, "Address already in use")))
    with pytest.raises(CannotStart, match="cannot start the HTTP API on tcp:0"):
        service.startService()


def test_privileged_start_listens_once() -> None:
    port = FakePort()
    calls: list[int] = []

    def listen() -> Deferred[Any]:
        calls.append(1)
        return succeed(port)

    listener = ListeningService("HTTP API", "tcp:8080", listen)
    listener.privilegedStartService()
    listener.startService()
    assert calls == [1] and listener.port is port
    listener.stopService()
    assert port.stopped == 1 and listener.port is None and not listener.running


def test_a_listen_still_under_way_is_cancelled_at_stop() -> None:
    cancelled: list[Deferred[Any]] = []
    pending: Deferred[Any] = Deferred(cancelled.append)
    listener = ListeningService("SIP TCP", "tcp:5060", lambda: pending)
    listener.startService()
    assert listener.port is None
    done: list[Any] = []
    listener.stopService().addBoth(done.append)
    assert cancelled == [pending] and done == [None]


def test_a_listen_refused_later_is_logged_not_raised() -> None:
    pending: Deferred[Any] = Deferred()
    listener = ListeningService("SIP TCP", "tcp:5060", lambda: pending)
    listener.startService()
    pending.errback(Failure(CannotListenError("0.0.0.0", 5060, OSError(98, "in use"))))
    assert listener.port is None and listener.running


def test_another_listener_is_one_call_and_stops_before_the_sessions() -> None:
    reactor = MemoryReactorClock()
    service = build(reactor)
    port = FakePort()
    sip = service.add_listener("SIP TCP", "tcp:5060", lambda: succeed(port))
    assert [child.name for child in service][-2:] == [f"HTTP API {API}", "SIP TCP tcp:5060"]
    service.startService()
    assert sip.port is port
    order: list[str] = []
    sessions = service.getServiceNamed("talk sessions")
    step = sessions.step  # type: ignore[attr-defined]

    async def end() -> None:
        order.append(f"sessions, sip stopped {port.stopped}")
        await step()

    sessions.step = end  # type: ignore[attr-defined]
    service.stopService()
    assert order == ["sessions, sip stopped 1"]
