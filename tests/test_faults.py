"""Faults under load: misbehaving devices, API callers and webhook receivers, on real loopback.

Every test runs the whole service in this reactor (API, pool, pacer, hooks)
with :data:`HEALTHY` healthy sessions streaming to devices that record each
packet they hear.  One fault is injected; then the test checks the faulty
session's ending reason (observer and webhook), that the healthy sessions
still stream and their devices heard every packet since, in order (sequence
numbers one apart, timestamps one packet apart, one SSRC), and, after the
service stops, that nothing is left: every port back in the pool and
bindable, no reader, writer or delayed call of ours in the reactor, no
webhook pending, as many descriptors as before.  No test here bounds a gap
or a jitter in wall-clock time (on a loaded machine it would fail by
chance): ``benchmarks/soak.py`` measures and reports those.
"""

from __future__ import annotations

import gc
import os
import socket
import struct
from collections.abc import Callable
from itertools import pairwise
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from gb28181talk.core.pacer import Pacer
from gb28181talk.core.params import SessionKey, SessionParams, SessionState
from gb28181talk.device.media import Depth, DeviceMedia
from gb28181talk.device.timed import TimedReader, enable_kernel_timestamps
from gb28181talk.media.framing import Framing, frame_rfc4571
from gb28181talk.media.rtp import RtpPacket
from gb28181talk.testing import ListSource, RecordingObserver
from gb28181talk.web import codes
from tests.httpapi import HookReceiver, ServiceHarness, call, sleep, until
from tests.netutil import free_port, port_is_free

HEALTHY = 6
"""Healthy sessions streaming beside every fault."""

SSRC_HEALTHY = 9_000_000
APP, STREAM = "broadcast", "tone"


# --------------------------------------------------------------------------- devices


@implementer(IReadDescriptor)
class TimedDevice:
    """A device read by the reactor, recording each packet's kernel arrival time.

    The package's timed reader reads one frame per recvmsg, so each read carries
    that packet's kernel timestamp, and hands it to a header-only device media core.
    """

    def __init__(self, port: int, timestamps: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if timestamps:
            enable_kernel_timestamps(self.sock)
        self.sock.setblocking(False)
        self.media = DeviceMedia(Depth.HEADERS, Framing.RFC4571, timeline=True)
        self.reader = TimedReader(self.sock, self.media)
        self.closed_by_peer = False
        reactor.addReader(self)  # type: ignore[attr-defined]

    @property
    def arrivals(self) -> list[tuple[float, int, int, int]]:
        """Every packet heard, in arrival order: (arrival, seq, ts, ssrc)."""
        return [arrival[:4] for arrival in self.media.arrivals]

    @property
    def bytes(self) -> int:
        """Bytes heard, framing included."""
        return self.media.stream_bytes

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return "TimedDevice"

    def doRead(self) -> None:
        self.reader.read()
        if self.reader.closed:
            self.closed_by_peer = True
            self.close()

    def connectionLost(self, reason: Failure) -> None:
        self.close()

    def close(self) -> None:
        """Stop reading and close (idempotent)."""
        if self.sock.fileno() >= 0:
            reactor.removeReader(self)  # type: ignore[attr-defined]
            self.sock.close()


def raw_device(port: int, rcvbuf: int | None = None) -> socket.socket:
    """A plain socket dialled to a talk port (the fault's own device), then non-blocking.

    The connect itself may block: on loopback the kernel completes it without the
    reactor (or refuses it at once).  Nothing after it may block the reactor.
    """
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


def readable(sock: socket.socket) -> bool:
    """Whether the service has sent this device something (without blocking the reactor)."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False


def closed_by_service(sock: socket.socket) -> bool:
    """Whether the service closed (or reset) this device's connection; reads what waits."""
    try:
        while sock.recv(65536):
            pass
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    return True


def reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a crashing device does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def rtp(seq: int, ssrc: int, payload: bytes = b"\xd5" * 160) -> bytes:
    """One framed PCMA packet as a device sends it."""
    return frame_rfc4571(RtpPacket(8, seq, seq * 160, ssrc, payload).encode())


# --------------------------------------------------------------------------- leftovers


def _ours(thing: Any) -> bool:
    """Whether an object (or the object a bound method belongs to) is gb28181talk's."""
    owner = getattr(thing, "__self__", thing)
    module = getattr(type(owner), "__module__", "") or ""
    func_module = getattr(thing, "__module__", "") or ""
    return module.startswith("gb28181talk") or func_module.startswith("gb28181talk")


def our_delayed_calls() -> list[Any]:
    """Pending reactor calls that our code scheduled (session timers, pacer, hooks)."""
    return [
        call
        for call in reactor.getDelayedCalls()  # type: ignore[attr-defined]
        if call.active()
        and (_ours(call.func) or any(_ours(arg) for arg in (*call.args, *call.kw.values())))
    ]


def talk_selectables(site: Any) -> list[Any]:
    """Readers/writers that are talk listeners, talk connections or the service's API."""
    found = []
    for selectable in {
        *reactor.getReaders(),  # type: ignore[attr-defined]
        *reactor.getWriters(),  # type: ignore[attr-defined]
    }:
        factory = getattr(selectable, "factory", None)
        protocol = getattr(selectable, "protocol", None)
        api = factory is site or getattr(protocol, "site", None) is site
        if api or _ours(factory) or _ours(protocol):
            found.append(selectable)
    return found


def open_descriptors() -> dict[str, str]:
    """This process's descriptors and what each is (``socket:[inode]``, a path...)."""
    found = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            found[name] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
    return found


class SlowHookReceiver:
    """A webhook endpoint that answers ``delay`` seconds late (a receiver under load)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.requests = 0
        self._calls: list[Any] = []
        self.port: Any = None

    def start(self) -> str:
        receiver = self

        class Slow(Resource):
            isLeaf = True

            def render_POST(self, request: Request) -> Any:
                receiver.requests += 1

                def answer() -> None:
                    if not request.finished and not request._disconnected:
                        request.write(b'{"code": 0}')
                        request.finish()

                receiver._calls.append(reactor.callLater(receiver.delay, answer))  # type: ignore[attr-defined]
                return NOT_DONE_YET

        site = Site(Slow())
        site.noisy = False
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined]
        return f"http://127.0.0.1:{self.port.getHost().port}/index/hook"

    async def stop(self) -> None:
        for pending in self._calls:
            if pending.active():
                pending.cancel()
        if self.port is not None:
            await self.port.stopListening()


# --------------------------------------------------------------------------- the harness


class FaultHarness:
    """The service with a tone source, healthy sessions and their timed devices."""

    def __init__(self, ports: int, hook: str = "ok") -> None:
        self.ports = ports
        self.hook_mode = hook
        self.receiver: Any = None
        self.healthy: list[TimedDevice] = []
        self.healthy_ids: list[str] = []
        self.observer = RecordingObserver()
        self.descriptors_before: dict[str, str] = {}
        self.heard_before: list[int] = []

    async def start(self) -> None:
        await sleep(0)  # the reactor is running (it opens its own descriptors when it starts)
        self.descriptors_before = open_descriptors()
        # Whatever earlier tests left on this worker's heap is not the service's: keep it out of
        # the collector's full passes, whose pauses grow with the heap (60 ms were seen here).
        gc.collect()
        gc.freeze()
        if self.hook_mode == "ok":
            self.receiver = HookReceiver()
            url = self.receiver.start()
        elif self.hook_mode == "slow":
            self.receiver = SlowHookReceiver(delay=0.6)
            url = self.receiver.start()
        else:  # down: nothing listens there
            url = f"http://127.0.0.1:{free_port()}/index/hook"
        self.harness = ServiceHarness(ports=self.ports, hook_url=url)
        self.service = self.harness.service
        hooks = self.service.hooks
        hooks.retries, hooks.backoff, hooks.timeout = 1, 0.05, 0.3
        self.harness.start()
        self.manager.add_observer(self.observer)
        self.leased_ports: set[int] = set()
        listen = self.pool.listen

        def listen_and_note(*args: Any, **kwargs: Any) -> Any:
            lease = listen(*args, **kwargs)
            self.leased_ports.add(lease.port)
            return lease

        self.pool.listen = listen_and_note  # which ports are ours to check at the end
        reply = await self.harness.add_tone(APP, STREAM)
        assert reply.json["code"] == 0, reply.json
        for n in range(HEALTHY):
            started = await self.native_start(ssrc=SSRC_HEALTHY + n, preroll_ms=0,
                                              wait_timeout=30)
            assert started.json["code"] == 0, started.json
            self.healthy_ids.append(started.json["session"]["id"])
            self.healthy.append(TimedDevice(started.json["local_port"]))
        await until(lambda: all(len(device.arrivals) >= 3 for device in self.healthy))
        # The leftover checks can see what they look for: the API and the healthy
        # connections are in the reactor, and the pacer's next tick is scheduled.
        assert len(talk_selectables(self.service.site)) >= HEALTHY + 1
        assert our_delayed_calls(), "the pacer's timer is visible"
        self.heard_before = [len(device.arrivals) for device in self.healthy]

    @property
    def manager(self) -> Any:
        return self.service.manager

    @property
    def pool(self) -> Any:
        return self.manager.pool

    async def zlm_start(self, ssrc: int, **args: Any) -> Any:
        query = {"app": APP, "stream": STREAM, "ssrc": str(ssrc), "use_ps": "0", "pt": "8",
                 **{name: str(value) for name, value in args.items()}}
        return await self.harness.zlm("startSendRtpPassive", query=query)

    async def zlm_stop(self, ssrc: int) -> Any:
        query = {"app": APP, "stream": STREAM, "ssrc": str(ssrc)}
        return await self.harness.zlm("stopSendRtp", query=query)

    async def native_start(self, **body: Any) -> Any:
        return await call("POST", self.harness.url("/api/sessions"),
                          json_body={"app": APP, "stream": STREAM, **body})

    def session_for(self, ssrc: int) -> Any:
        return self.manager.find(SessionKey("__defaultVhost__", APP, STREAM, ssrc))

    def reasons(self, session_id: str) -> list[str]:
        return [event[2] for event in self.observer.ended(session_id)]

    async def ended(self, session: Any, timeout: float = 10.0) -> str:
        """Wait for ``session`` to end; its one ending reason."""
        await until(lambda: session.state is SessionState.CLOSED, timeout=timeout)
        reasons = self.reasons(session.id)
        assert len(reasons) == 1, f"one ending per session, got {reasons}"
        return reasons[0]

    async def hear_more(self, packets: int = 3) -> None:
        """Wait until every healthy device has heard ``packets`` more (the streams go on)."""
        heard = [len(device.arrivals) for device in self.healthy]
        await until(lambda: all(len(device.arrivals) >= count + packets
                                for device, count in zip(self.healthy, heard, strict=True)))

    def check_healthy(self) -> None:
        """Every healthy session still streams, and its device heard every packet since the
        fault began: in order, sequence numbers one apart, timestamps one packet apart, one SSRC.

        How evenly the packets came (gaps, jitter) is not asserted: that is wall-clock
        timing, which a loaded machine upsets; ``benchmarks/soak.py`` reports it.
        """
        for n, (session_id, device) in enumerate(zip(self.healthy_ids, self.healthy,
                                                     strict=True)):
            session = self.manager.get(session_id)
            assert session is not None and session.state is SessionState.STREAMING, (
                f"healthy session {session_id} ended: {self.reasons(session_id)}"
            )
            # From the last packet heard before the fault on: the fault's whole span.
            heard = [(seq, stamp, ssrc)
                     for _, seq, stamp, ssrc in device.arrivals[self.heard_before[n] - 1:]]
            assert len(heard) >= 3, f"healthy device {n} stopped hearing packets: {heard}"
            assert {ssrc for *_, ssrc in heard} == {SSRC_HEALTHY + n}, heard
            step = session.params.packet_ms * 8  # RTP timestamp units (8 kHz) per packet
            breaks = [
                f"seq {seq} ts {stamp} -> seq {next_seq} ts {next_stamp}"
                for (seq, stamp, _), (next_seq, next_stamp, _) in pairwise(heard)
                if (next_seq - seq) % 2**16 != 1 or (next_stamp - stamp) % 2**32 != step
            ]
            assert not breaks, (
                f"healthy device {n} heard {len(heard)} packets with breaks in the sequence "
                f"(lost, repeated, reordered or mistimed): {breaks[:5]}"
            )

    async def hook_reasons(self, session_id: str, timeout: float = 5.0) -> list[str]:
        """The webhook reasons posted for ``session_id`` (when the receiver works)."""
        await until(
            lambda: any(body["session_id"] == session_id for body in self.receiver.bodies),
            timeout=timeout,
        )
        return [body["reason"] for body in self.receiver.bodies
                if body["session_id"] == session_id]

    async def stop_and_check_leftovers(self) -> None:
        """Stop everything; then nothing of ours may be left anywhere."""
        gc.unfreeze()
        for device in self.healthy:
            device.close()
        await self.harness.stop()
        hooks = self.service.hooks
        if self.receiver is not None:
            await self.receiver.stop()
        assert self.pool.leased_count == 0, self.pool.describe()
        assert self.pool.free_count == self.pool.size
        # Only the ports this service leased: other tests on the other xdist worker (and any
        # other process) may bind a port of the range meanwhile, which says nothing of ours.
        busy = [port for port in sorted(self.leased_ports) if not port_is_free(port)]
        assert busy == [], f"talk ports still bound: {busy}"
        assert self.manager.sessions() == []
        assert hooks.pending == 0, f"{hooks.pending} webhooks still pending"
        await until(lambda: not talk_selectables(self.service.site), timeout=2)
        await until(lambda: not our_delayed_calls(), timeout=2)
        gc.collect()
        try:
            await until(lambda: not self.new_descriptors(), timeout=3)
        except AssertionError:
            raise AssertionError(f"descriptors left open: {self.new_descriptors()}") from None

    def new_descriptors(self) -> dict[str, str]:
        now = open_descriptors()
        # Twisted keeps one /dev/null open from its first listen on (for EMFILE recovery).
        return {fd: what for fd, what in now.items()
                if self.descriptors_before.get(fd) != what and what != os.devnull}


class FaultTestCase(unittest.TestCase):
    """Starts a FaultHarness before each test and checks for leftovers after it."""

    timeout = 30
    hook = "ok"
    ports = 16

    def setUp(self) -> Deferred[None]:
        self.h = FaultHarness(self.ports, self.hook)
        return Deferred.fromCoroutine(self.h.start())

    def tearDown(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.h.stop_and_check_leftovers())


def fault_test(method: Callable[..., Any]) -> Callable[..., Deferred[None]]:
    """An ``async def`` fault test; the healthy sessions are checked after it."""

    def run(self: FaultTestCase) -> Deferred[None]:
        async def body() -> None:
            await method(self)
            await self.h.hear_more()
            self.h.check_healthy()

        return Deferred.fromCoroutine(body())

    run.__name__ = method.__name__
    run.__doc__ = method.__doc__
    return run


# --------------------------------------------------------------------------- device faults


class DeviceFaultTests(FaultTestCase):
    """Devices that misbehave, beside healthy ones."""

    @fault_test
    async def test_device_that_never_connects_times_out(self) -> None:
        reply = await self.h.zlm_start(1, close_delay_ms=200)
        session = self.h.session_for(1)
        assert await self.h.ended(session) == "timeout"
        assert await self.h.hook_reasons(session.id) == ["timeout"]
        assert port_is_free(reply.json["local_port"])

    @fault_test
    async def test_device_that_resets_ends_device_closed(self) -> None:
        reply = await self.h.zlm_start(2)
        device = raw_device(reply.json["local_port"])
        self.addCleanup(device.close)
        await until(lambda: readable(device))
        reset(device)
        session = self.h.session_for(2)
        assert await self.h.ended(session) == "device-closed"
        assert await self.h.hook_reasons(session.id) == ["device-closed"]

    @fault_test
    async def test_device_that_stops_reading_ends_send_stalled(self) -> None:
        source = self.h.service.registry.find(APP, STREAM)
        session = self.h.manager.start(
            SessionParams(key=SessionKey("__defaultVhost__", APP, STREAM, 3), packet_ms=100,
                          max_send_buffer=4096, stall_timeout=0.3, preroll_ms=0),
            source,
        )
        stuck = raw_device(session.port, rcvbuf=2048)  # and never reads
        self.addCleanup(stuck.close)
        assert await self.h.ended(session, timeout=20) == "send-stalled"
        assert session.stats.packets_dropped > 0

    @fault_test
    async def test_garbage_from_a_one_way_device_is_counted_and_ignored(self) -> None:
        reply = await self.h.zlm_start(4)
        device = raw_device(reply.json["local_port"])
        device.sendall(os.urandom(4096))
        session = self.h.session_for(4)
        await until(lambda: session.stats.bytes_received == 4096)
        assert session.state is SessionState.STREAMING, "one-way sessions ignore what devices say"
        device.close()
        assert await self.h.ended(session) == "device-closed"

    @fault_test
    async def test_garbage_from_a_two_way_device_ends_with_error(self) -> None:
        reply = await self.h.zlm_start(5, recv_stream_id="voice5")
        device = raw_device(reply.json["local_port"])
        self.addCleanup(device.close)
        device.sendall(b"\x00\x05hello, this is not RTP" * 20)
        session = self.h.session_for(5)
        assert await self.h.ended(session) == "error"
        assert "not RTP" in session.end_detail
        assert self.h.service.registry.find(APP, "voice5") is None, "device source unpublished"

    @fault_test
    async def test_oversized_frame_ends_two_way_with_error(self) -> None:
        reply = await self.h.zlm_start(6, recv_stream_id="voice6")
        device = raw_device(reply.json["local_port"])
        self.addCleanup(device.close)
        device.sendall(rtp(0, 6))
        session = self.h.session_for(6)
        await until(lambda: session.stats.packets_received == 1)
        device.sendall(b"\xff\xff" + b"\x80" * 4000)  # announces 65,535 bytes
        assert await self.h.ended(session) == "error"
        assert session.stats.packets_received == 1

    @fault_test
    async def test_wrong_ssrc_rtp_counts_then_ends_with_ssrc_violation(self) -> None:
        reply = await self.h.native_start(ssrc=7, two_way=True, ssrc_policy="strict",
                                          max_ssrc_violations=3)
        device = raw_device(reply.json["local_port"])
        self.addCleanup(device.close)
        device.sendall(rtp(0, 7) + rtp(1, 7))
        session = self.h.session_for(7)
        await until(lambda: session.stats.packets_received == 2)
        device.sendall(b"".join(rtp(2 + n, 777) for n in range(3)))
        assert await self.h.ended(session) == "ssrc-violation"
        assert session.stats.ssrc_violations == 3

    @fault_test
    async def test_a_second_connection_is_refused_and_the_first_streams_on(self) -> None:
        reply = await self.h.zlm_start(8)
        port = reply.json["local_port"]
        first = TimedDevice(port, timestamps=False)
        self.addCleanup(first.close)
        await until(lambda: len(first.arrivals) > 0)
        try:
            second = raw_device(port)
        except ConnectionRefusedError:
            pass  # the listener is already closed: the usual case
        else:  # raced into the backlog before the listener closed: it must be closed at once
            self.addCleanup(second.close)
            await until(lambda: closed_by_service(second))
        session = self.h.session_for(8)
        heard = len(first.arrivals)
        await until(lambda: len(first.arrivals) >= heard + 5)
        assert session.state is SessionState.STREAMING
        first.close()
        assert await self.h.ended(session) == "device-closed"

    @fault_test
    async def test_a_device_dialling_after_stop_is_refused(self) -> None:
        reply = await self.h.zlm_start(9)
        port = reply.json["local_port"]
        stopped = await self.h.zlm_stop(9)
        assert stopped.json["code"] == 0
        await sleep(0.05)
        with self.assertRaises(ConnectionRefusedError):
            raw_device(port)
        assert self.h.reasons(self.h.observer.events[-1][1]) == ["stopped"]


# --------------------------------------------------------------------------- API faults


class ApiFaultTests(FaultTestCase):
    """API callers that do surprising things, beside healthy sessions."""

    @fault_test
    async def test_stop_mid_stream_closes_the_device_with_reason_stopped(self) -> None:
        reply = await self.h.zlm_start(11)
        device = TimedDevice(reply.json["local_port"], timestamps=False)
        self.addCleanup(device.close)
        await until(lambda: len(device.arrivals) >= 5)
        session = self.h.session_for(11)
        assert (await self.h.zlm_stop(11)).json["code"] == 0
        assert await self.h.ended(session) == "stopped"
        await until(lambda: device.closed_by_peer)
        assert await self.h.hook_reasons(session.id) == ["stopped"]

    @fault_test
    async def test_the_same_key_twice_gets_the_same_port_and_one_session(self) -> None:
        first = await self.h.zlm_start(12)
        second = await self.h.zlm_start(12)
        assert first.json["local_port"] == second.json["local_port"]
        assert len(self.h.manager.matching("__defaultVhost__", APP, STREAM, 12)) == 1
        session = self.h.session_for(12)
        assert (await self.h.zlm_stop(12)).json["code"] == 0
        assert await self.h.ended(session) == "stopped"

    @fault_test
    async def test_an_exhausted_pool_refuses_then_recovers(self) -> None:
        ssrcs = []
        for n in range(self.h.pool.size + 1):
            reply = await self.h.zlm_start(100 + n)
            if reply.json["code"] != 0:
                assert reply.json["code"] == codes.EXCEPTION
                assert "exhausted" in reply.json["msg"]
                break
            ssrcs.append(100 + n)
        else:
            raise AssertionError("the pool never ran out")
        assert self.h.pool.free_count == 0
        assert (await self.h.zlm_stop(ssrcs[0])).json["code"] == 0
        await until(lambda: self.h.pool.free_count == 1)
        again = await self.h.zlm_start(999)
        assert again.json["code"] == 0
        for ssrc in [*ssrcs[1:], 999]:
            assert (await self.h.zlm_stop(ssrc)).json["code"] == 0
        await until(lambda: self.h.pool.leased_count == 0)

    @fault_test
    async def test_malformed_parameters_are_refused_and_change_nothing(self) -> None:
        before = (self.h.pool.leased_count, len(self.h.manager.sessions()))
        bad_queries: list[dict[str, str]] = [
            {"app": APP, "stream": STREAM},  # no ssrc
            {"app": APP, "stream": STREAM, "ssrc": "12345678901"},
            {"app": APP, "stream": STREAM, "ssrc": "-1"},
            {"app": APP, "stream": STREAM, "ssrc": "1", "src_port": "70000"},
            {"app": APP, "stream": STREAM, "ssrc": "1", "pt": "abc"},
            {"app": "../etc", "stream": STREAM, "ssrc": "1"},
            {"app": APP, "stream": STREAM, "ssrc": "1", "type": "2"},
            {"app": APP, "stream": STREAM, "ssrc": "1", "close_delay_ms": "1e9"},
            {"app": APP, "stream": STREAM, "ssrc": "1", "is_udp": "maybe"},
        ]
        for query in bad_queries:
            reply = await self.h.harness.zlm("startSendRtpPassive", query=query)
            assert reply.status == 200 and reply.json["code"] == codes.INVALID_ARGS, (query, reply)
        bodies: list[Any] = [[1, 2], {"app": APP, "stream": STREAM, "ssrc": 1, "packet_ms": 30},
                             {"app": APP, "stream": STREAM, "ssrc": 1, "nonsense": 1}]
        for body in bodies:
            reply = await call("POST", self.h.harness.url("/api/sessions"), json_body=body)
            assert reply.status == 400 and reply.json["code"] == codes.INVALID_ARGS, (body, reply)
        broken = await call("POST", self.h.harness.url("/api/sessions"), raw_body=b"{not json",
                            headers={"content-type": "application/json"})
        assert broken.json["code"] == codes.INVALID_ARGS
        assert (self.h.pool.leased_count, len(self.h.manager.sessions())) == before


# --------------------------------------------------------------------------- webhook faults


class HookDownTests(FaultTestCase):
    """Nothing listens at the webhook URL."""

    hook = "down"

    @fault_test
    async def test_sessions_end_and_stream_normally_with_the_receiver_down(self) -> None:
        hooks = self.h.service.hooks
        for n in range(3):
            await self.h.zlm_start(20 + n, close_delay_ms=100)
        reply = await self.h.zlm_start(30)
        device = TimedDevice(reply.json["local_port"], timestamps=False)
        await until(lambda: len(device.arrivals) >= 5)
        device.close()
        await until(lambda: hooks.failed == 4 and hooks.pending == 0, timeout=10)
        assert hooks.delivered == 0
        assert sorted(self.h.reasons(event[1])[0] for event in self.h.observer.ended()) == [
            "device-closed", "timeout", "timeout", "timeout"]


class HookSlowTests(FaultTestCase):
    """The webhook receiver answers later than the service waits."""

    hook = "slow"

    @fault_test
    async def test_a_slow_receiver_times_out_without_holding_anything(self) -> None:
        hooks = self.h.service.hooks
        for n in range(3):
            await self.h.zlm_start(40 + n, close_delay_ms=100)
        await until(lambda: hooks.failed == 3 and hooks.pending == 0, timeout=10)
        assert self.h.receiver.requests == 6, "each hook tried twice (retries=1)"


# --------------------------------------------------------------------------- pacer timing


class _WorkingListener:
    """A pacer listener whose every frame takes ``work`` seconds of the clock (sending)."""

    def __init__(self, clock: Any, work: float) -> None:
        self.clock = clock
        self.work = work
        self.frames_at: list[float] = []

    def frame_ready(self, tap: Any) -> None:
        self.frames_at.append(self.clock.seconds())
        self.clock.rightNow += self.work  # time passes while the tick sends, as it does

    def source_ended(self, tap: Any) -> None:
        """Never: the source loops."""


def test_the_time_a_tick_takes_does_not_delay_the_next_one() -> None:
    clock = Clock()
    pacer = Pacer(clock)
    listener = _WorkingListener(clock, work=0.008)  # 8 ms of sending per tick, as at ~1,200 N
    pacer.attach(ListSource.counting(10, loop=True), listener)
    for _ in range(50):
        clock.advance(0.001)
    starts = listener.frames_at
    assert len(starts) >= 2
    # Every frame on its 20 ms grid from the first, whatever the ticks cost.
    lateness_ms = [round((at - starts[0] - n * 0.020) * 1000, 3) for n, at in enumerate(starts)]
    assert max(lateness_ms) < 1.5, lateness_ms
