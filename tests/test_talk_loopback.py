"""Talk sessions on real loopback sockets: the device gets the audio, the port closes at connect."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ConnectionRefusedError
from twisted.trial.unittest import TestCase

from gb28181talk.core.manager import SessionManager
from gb28181talk.core.params import SessionKey, SessionParams, SessionState, SsrcPolicy
from gb28181talk.core.ports import PortPool
from gb28181talk.errors import PoolExhaustedError, PortInUseError
from gb28181talk.media import g711
from gb28181talk.media.framing import frame_rfc4571
from gb28181talk.media.law import Law
from gb28181talk.media.rtp import RtpPacket
from gb28181talk.testing import ListSource, RecordingObserver, RecordingSink
from tests.devices import connect_device, sleep
from tests.httpapi import until
from tests.netutil import free_port_range, port_is_free

SSRC = 200000001


def key(n: int = 0) -> SessionKey:
    return SessionKey("__defaultVhost__", "live", "announce", SSRC + n)


def waiting_for(condition: Any, timeout: float = 5.0) -> Deferred[None]:
    """Turn the reactor until ``condition()`` holds (no fixed sleep a loaded machine outlasts)."""
    return Deferred.fromCoroutine(until(condition, timeout))


class LoopbackTalkTests(TestCase):
    """One manager on a fresh loopback port range per test, shut down after it."""

    timeout = 30

    def setUp(self) -> None:
        self.low, self.high = free_port_range(5)
        self.pool = PortPool(reactor, self.low, self.high, interface="127.0.0.1")
        self.manager = SessionManager(reactor, self.pool)
        self.observer = RecordingObserver()
        self.manager.add_observer(self.observer)

    @inlineCallbacks
    def tearDown(self):
        yield self.manager.shutdown()
        self.assertEqual(self.pool.leased_count, 0)
        for port in range(self.low, self.high + 1):
            self.assertTrue(port_is_free(port), f"port {port} still bound after shutdown")

    @inlineCallbacks
    def test_device_receives_framed_rtp_of_the_source(self):
        source = ListSource.counting(25)  # 0.5 s, then the session ends with source-ended
        # The default 1 s pre-roll keeps what played before the connect: nothing is lost.
        session = self.manager.start(SessionParams(key=key()), source)
        device = yield connect_device(session.port)
        yield device.closed
        packets = device.packets()
        self.assertEqual(len(packets), 25)
        self.assertEqual({p.ssrc for p in packets}, {SSRC})
        expected = b"".join(g711.encode(Law.ALAW, frame) for frame in source.frames)
        self.assertEqual(b"".join(p.payload for p in packets), expected)
        self.assertEqual(session.end_reason, "source-ended")
        self.assertEqual(len(self.observer.ended(session.id)), 1)

    @inlineCallbacks
    def test_port_closes_at_first_connect_and_second_device_is_refused(self):
        session = self.manager.start(SessionParams(key=key()), ListSource.counting(50, loop=True))
        first = yield connect_device(session.port)
        yield sleep(0.05)  # the listener's socket closes on the reactor turn after the accept
        self.assertIs(session.state, SessionState.STREAMING)
        self.assertEqual(self.pool.leased_count, 0)
        self.assertTrue(port_is_free(session.port), "the talk port is free while the call lives")
        with self.assertRaises(ConnectionRefusedError):
            yield connect_device(session.port)
        yield waiting_for(lambda: len(first.received) > 0)
        self.assertIs(session.state, SessionState.STREAMING)

    @inlineCallbacks
    def test_talk_socket_has_nagle_off(self):
        session = self.manager.start(SessionParams(key=key()), ListSource.counting(50, loop=True))
        yield connect_device(session.port)
        server_socket = session.transport.link.transport.getHandle()
        self.assertTrue(server_socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    @inlineCallbacks
    def test_devices_racing_for_the_port_only_one_wins(self):
        session = self.manager.start(SessionParams(key=key()), ListSource.counting(50, loop=True))
        clients = [socket.create_connection(("127.0.0.1", session.port)) for _ in range(3)]
        self.addCleanup(lambda: [c.close() for c in clients])
        fed: list[bytes | None] = [None] * len(clients)
        for client in clients:
            client.setblocking(False)

        def heard_from_each() -> bool:
            for index, client in enumerate(clients):
                if fed[index]:
                    continue  # a winner: it has been fed
                try:
                    fed[index] = client.recv(65536) if fed[index] is None else b""
                except BlockingIOError:
                    pass
                except ConnectionResetError:
                    fed[index] = b""
            return None not in fed

        yield waiting_for(heard_from_each)
        winners = [data for data in fed if data]
        self.assertEqual(len(winners), 1, f"exactly one device streams, got {fed!r}")
        self.assertEqual(fed.count(b""), 2, "the others are closed at once")
        self.assertGreaterEqual(session.stats.refused_connections, 2)

    @inlineCallbacks
    def test_no_device_times_out_and_frees_the_port(self):
        session = self.manager.start(
            SessionParams(key=key(), wait_timeout=0.2), ListSource.counting(50, loop=True)
        )
        yield waiting_for(lambda: session.state is SessionState.CLOSED
                          and self.pool.free_count == self.pool.size)  # the lease came back
        self.assertEqual(session.end_reason, "timeout")
        self.assertTrue(port_is_free(session.port))
        self.assertEqual(self.pool.free_count, self.pool.size)

    def test_explicit_port_held_by_another_socket_fails_cleanly(self):
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", self.low + 2))
        holder.listen()
        with self.assertRaises(PortInUseError) as caught:
            self.manager.start(SessionParams(key=key(), src_port=self.low + 2), ListSource([]))
        self.assertIn(str(self.low + 2), str(caught.exception))
        self.assertEqual(self.pool.leased_count, 0)
        self.assertEqual(self.manager.sessions(), [])
        self.assertEqual(self.observer.events, [])

    @inlineCallbacks
    def test_five_port_pool_exhausts_and_recovers(self):
        source = ListSource.counting(50, loop=True)
        sessions = [self.manager.start(SessionParams(key=key(n)), source) for n in range(5)]
        self.assertEqual(sorted(s.port for s in sessions), list(range(self.low, self.high + 1)))
        with self.assertRaises(PoolExhaustedError) as caught:
            self.manager.start(SessionParams(key=key(9)), source)
        self.assertIn("all 5 ports are leased", str(caught.exception))
        # A device connecting gives its port back at once; stopping another frees one more.
        yield connect_device(sessions[0].port)
        sessions[1].stop()
        yield waiting_for(lambda: self.pool.free_count == 2)
        again = [self.manager.start(SessionParams(key=key(10 + n)), source) for n in range(2)]
        self.assertEqual({s.port for s in again}, {sessions[0].port, sessions[1].port})

    @inlineCallbacks
    def test_stop_closes_listener_at_once(self):
        session = self.manager.start(SessionParams(key=key()), ListSource.counting(5, loop=True))
        session.stop()
        yield sleep(0.05)
        with self.assertRaises(ConnectionRefusedError):
            yield connect_device(session.port)
        self.assertEqual([e[2] for e in self.observer.ended()], ["stopped"])

    @inlineCallbacks
    def test_two_way_talk_on_the_same_connection(self):
        sink = RecordingSink()
        session = self.manager.start(
            SessionParams(key=key(), receive=True, ssrc_policy=SsrcPolicy.STRICT),
            ListSource.counting(50, loop=True),
            sinks=[sink],
        )
        device = yield connect_device(session.port)
        voice = bytes(range(256))[:160]
        for seq in range(10):
            packet = RtpPacket(8, seq, seq * 160, SSRC, voice).encode()
            device.transport.write(frame_rfc4571(packet))
        device.transport.write(frame_rfc4571(RtpPacket(8, 99, 0, 12345, voice).encode()))
        yield waiting_for(lambda: session.stats.ssrc_violations == 1)
        self.assertEqual(len(sink.chunks), 10)
        self.assertEqual(sink.pcm, g711.decode(Law.ALAW, voice * 10))
        self.assertEqual(session.stats.ssrc_violations, 1)
        self.assertGreater(len(device.received), 0, "audio flows to the device meanwhile")

    @inlineCallbacks
    def test_device_that_stops_reading_is_ended_as_send_stalled(self):
        session = self.manager.start(
            SessionParams(
                key=key(), packet_ms=100, max_send_buffer=4096, stall_timeout=0.3, preroll_ms=0
            ),
            ListSource([b"\x10\x20" * 160] * 5, loop=True),
        )
        stuck = socket.socket()
        self.addCleanup(stuck.close)
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        stuck.connect(("127.0.0.1", session.port))  # and never reads
        for _ in range(150):
            yield sleep(0.1)
            if session.state is SessionState.CLOSED:
                break
        self.assertEqual(session.end_reason, "send-stalled")
        self.assertGreater(session.stats.packets_dropped, 0)

    @inlineCallbacks
    def test_stop_closes_a_stuck_device_connection_at_once(self):
        session = self.manager.start(
            SessionParams(key=key(), packet_ms=100, max_send_buffer=4096, stall_timeout=60),
            ListSource([b"\x10\x20" * 160] * 5, loop=True),
        )
        stuck = socket.socket()
        self.addCleanup(stuck.close)
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        stuck.connect(("127.0.0.1", session.port))  # and never reads
        for _ in range(100):
            yield sleep(0.1)
            if session.transport.link is not None and session.transport.link.queued:
                break
        self.assertTrue(session.transport.link.queued, "bytes wait in Twisted's buffer")
        server_socket = session.transport.link.transport.getHandle()
        session.stop()
        yield sleep(0.1)
        self.assertEqual(server_socket.fileno(), -1, "the talk socket is closed, not draining")
