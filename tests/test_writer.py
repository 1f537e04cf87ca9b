"""PacketWriter on loopback TCP: direct sends, Twisted's buffer when the kernel is full, the cap."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPullProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from gb28181talk.core.writer import PacketWriter

PEER_RCVBUF = 4096
PAYLOAD = 160
MAX_PACKETS = 20_000
"""Bound on every fill loop: far beyond what small loopback buffers take."""


def packet(number: int, payload_size: int = PAYLOAD) -> tuple[bytes, bytes]:
    """A 12-byte header and a payload, both unlike their neighbours' so order shows."""
    header = b"\x80\x08" + number.to_bytes(4, "big") + b"\x00\x00\x00\x00\x12\x34"
    payload = bytes((number + i) & 0xFF for i in range(payload_size))
    return header, payload


class SocketTransport:
    """Stands for a Twisted TCP transport: a real socket handle, writes recorded."""

    def __init__(self, handle: socket.socket) -> None:
        self.handle = handle
        self.calls: list[tuple[str, bytes]] = []
        self.producer: Any = None
        self.streaming: bool | None = None

    def getHandle(self) -> socket.socket:
        return self.handle

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def writeSequence(self, data: Any) -> None:
        self.calls.append(("writeSequence", b"".join(data)))

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        assert self.producer is None
        self.producer = producer
        self.streaming = streaming

    def unregisterProducer(self) -> None:
        self.producer = None

    @property
    def buffered(self) -> bytes:
        return b"".join(data for _kind, data in self.calls)


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected loopback TCP pair: our non-blocking end, the peer with a small receive buffer."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        peer = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, PEER_RCVBUF)
        peer.connect(listener.getsockname())
        ours, _address = listener.accept()
    ours.setblocking(False)
    peer.setblocking(False)
    try:
        yield ours, peer
    finally:
        ours.close()
        peer.close()


def read_available(peer: socket.socket, wanted: int, timeout: float = 5.0) -> bytes:
    """Read from ``peer`` until ``wanted`` bytes came (or fail after ``timeout``)."""
    received = bytearray()
    deadline = time.monotonic() + timeout
    while len(received) < wanted:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {len(received)} of {wanted} bytes arrived"
        readable, _w, _x = select.select([peer], [], [], remaining)
        if readable:
            chunk = peer.recv(65536)
            assert chunk, "the connection closed early"
            received += chunk
    return bytes(received)


def assert_nothing_more(peer: socket.socket) -> None:
    readable, _w, _x = select.select([peer], [], [], 0.05)
    assert not readable


def fill_kernel(writer: PacketWriter, transport: SocketTransport) -> list[bytes]:
    """Write numbered packets until one is not taken whole by the kernel; the packets written."""
    written = []
    for number in range(MAX_PACKETS):
        header, payload = packet(number)
        assert writer.write(header, payload)
        written.append(header + payload)
        if transport.calls:
            return written
    raise AssertionError(f"the kernel took {MAX_PACKETS} packets without filling up")


# -- a stand-in transport over a real socket -----------------------------------------


def test_the_writer_is_a_pull_producer_registered_on_its_transport(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    transport = SocketTransport(tcp_pair[0])
    writer = PacketWriter(transport, max_buffered=8192)
    assert verifyObject(IPullProducer, writer)
    assert transport.producer is writer
    assert transport.streaming is False


def test_direct_path_sends_exactly_the_bytes_in_order(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = tcp_pair
    transport = SocketTransport(ours)
    writer = PacketWriter(transport, max_buffered=8192)
    expected = b""
    for number in range(30):
        header, payload = packet(number)
        assert writer.write(header, payload)
        expected += header + payload
    assert transport.calls == []
    assert writer.queued == 0
    assert read_available(peer, len(expected)) == expected
    assert_nothing_more(peer)


def test_a_full_kernel_sends_the_rest_through_twisted_in_order_up_to_the_cap(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = tcp_pair
    transport = SocketTransport(ours)
    writer = PacketWriter(transport, max_buffered=8192)
    stalls: list[None] = []
    drains: list[None] = []
    writer.on_stall = lambda: stalls.append(None)
    writer.on_drain = lambda: drains.append(None)

    written = fill_kernel(writer, transport)
    first_kind, _data = transport.calls[0]
    assert first_kind == "write", "the unsent part of a direct packet goes through write()"
    assert writer.queued == len(transport.buffered) > 0

    for number in range(len(written), MAX_PACKETS):
        header, payload = packet(number)
        if not writer.write(header, payload):
            break
        written.append(header + payload)
        assert transport.calls[-1] == ("writeSequence", header + payload)
    else:
        raise AssertionError("the cap was never reached")
    assert writer.stalled
    assert stalls == [None]
    assert writer.max_buffered <= writer.queued < writer.max_buffered + 12 + PAYLOAD
    assert writer.queued == len(transport.buffered)
    for number in range(len(written) + 1, len(written) + 50):
        assert not writer.write(*packet(number))
    assert stalls == [None], "on_stall is called once per stall"
    assert drains == []

    stream = b"".join(written)
    direct = read_available(peer, len(stream) - len(transport.buffered))
    assert_nothing_more(peer)
    assert direct + transport.buffered == stream, "kernel bytes then Twisted's, in order"

    writer.resumeProducing()
    assert (writer.queued, writer.stalled, drains, stalls) == (0, False, [None], [None])
    writer.resumeProducing()
    assert drains == [None], "on_drain only ends a stall"


def test_a_packet_bigger_than_the_kernel_buffer_is_split_at_what_it_took(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = tcp_pair
    transport = SocketTransport(ours)
    writer = PacketWriter(transport, max_buffered=8192)
    header, payload = packet(1, payload_size=200_000)
    assert writer.write(header, payload)
    assert [kind for kind, _data in transport.calls] == ["write"]
    rest = transport.calls[0][1]
    assert 0 < len(rest) < len(header) + len(payload)
    assert writer.queued == len(rest)
    taken = read_available(peer, len(header) + len(payload) - len(rest))
    assert taken + rest == header + payload

    stalls: list[None] = []
    writer.on_stall = lambda: stalls.append(None)
    assert not writer.write(*packet(2)), "the remainder counts against the cap"
    assert stalls == [None]
    assert len(transport.calls) == 1
    assert_nothing_more(peer)


def test_resume_lets_direct_sends_start_again(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = tcp_pair
    transport = SocketTransport(ours)
    writer = PacketWriter(transport, max_buffered=8192)
    written = fill_kernel(writer, transport)
    read_available(peer, len(b"".join(written)) - len(transport.buffered))
    transport.calls.clear()
    writer.resumeProducing()  # as if Twisted had flushed its buffer
    header, payload = packet(99_999)
    assert writer.write(header, payload)
    assert transport.calls == []
    assert read_available(peer, len(header) + len(payload)) == header + payload


def test_a_socket_error_hands_over_to_twisted(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, _peer = tcp_pair
    transport = SocketTransport(ours)
    writer = PacketWriter(transport, max_buffered=8192)
    ours.close()  # sendmsg now fails with EBADF, as on a torn-down socket
    first, second = packet(1), packet(2)
    assert writer.write(*first)
    assert writer.write(*second)
    assert transport.calls == [
        ("write", b"".join(first)),
        ("writeSequence", b"".join(second)),
    ]


def test_direct_false_always_uses_twisted(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = tcp_pair
    transport = SocketTransport(ours)
    writer = PacketWriter(transport, max_buffered=8192, direct=False)
    header, payload = packet(1)
    assert writer.write(header, payload)
    assert transport.calls == [("writeSequence", header + payload)]
    assert_nothing_more(peer)


def test_stop_producing_ends_direct_sends(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = tcp_pair
    transport = SocketTransport(ours)
    writer = PacketWriter(transport, max_buffered=8192)
    writer.stopProducing()
    assert writer.queued == 0
    header, payload = packet(1)
    writer.write(header, payload)
    assert transport.calls == [("writeSequence", header + payload)]
    assert_nothing_more(peer)


def test_close_unregisters_only_itself(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    transport = SocketTransport(tcp_pair[0])
    writer = PacketWriter(transport, max_buffered=8192)
    writer.close()
    assert transport.producer is None
    successor = PacketWriter(transport, max_buffered=8192)
    writer.close()
    assert transport.producer is successor
    header, payload = packet(1)
    writer.write(header, payload)
    assert transport.calls == [("writeSequence", header + payload)]


# -- a transport without a socket handle ------------------------------------------------


def test_a_string_transport_always_goes_through_twisted_and_stalls_at_the_cap() -> None:
    transport = StringTransport()
    writer = PacketWriter(transport, max_buffered=1024)
    assert transport.producer is writer
    assert not transport.streaming
    stalls: list[None] = []
    writer.on_stall = lambda: stalls.append(None)
    expected = b""
    accepted = 0
    for number in range(100):
        header, payload = packet(number)
        if not writer.write(header, payload):
            break
        expected += header + payload
        accepted += 1
    assert accepted == 6  # 6 * 172 = 1032 >= 1024: the seventh is dropped
    assert transport.value() == expected
    assert writer.queued == len(expected)
    assert writer.stalled
    assert stalls == [None]
    writer.resumeProducing()
    assert writer.write(*packet(7))
    writer.close()
    assert transport.producer is None


# -- the real reactor on loopback -----------------------------------------------------


def async_test(
    method: Callable[..., Coroutine[Any, Any, None]],
) -> Callable[..., Deferred[None]]:
    """Run an ``async def`` test method as a Deferred, which trial waits for."""

    def run(self: Any) -> Deferred[None]:
        return Deferred.fromCoroutine(method(self))

    run.__name__ = method.__name__
    return run


class Sender(Protocol):
    """Our end of the device connection, as a talk session's protocol would be."""

    def __init__(self, on_connected: Deferred[Sender], on_lost: Deferred[None]) -> None:
        self.on_connected = on_connected
        self.on_lost = on_lost

    def connectionMade(self) -> None:
        self.on_connected.callback(self)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.on_lost.callback(None)


class RealTcpWriterTests(unittest.TestCase):
    """PacketWriter on a real Twisted TCP transport; the peer is a plain socket we read or not."""

    timeout = 15

    async def connect(self) -> tuple[Any, socket.socket]:
        connected: Deferred[Sender] = Deferred()
        lost: Deferred[None] = Deferred()
        factory = Factory.forProtocol(lambda: Sender(connected, lost))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        peer = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, PEER_RCVBUF)
        peer.connect(("127.0.0.1", port.getHost().port))
        peer.setblocking(False)
        sender = await connected

        async def hang_up() -> None:
            peer.close()
            sender.transport.loseConnection()
            await lost

        self.addCleanup(lambda: Deferred.fromCoroutine(hang_up()))
        return sender.transport, peer

    def spy(self, transport: Any) -> list[tuple[str, bytes]]:
        """Record what goes through Twisted's own write path."""
        calls: list[tuple[str, bytes]] = []
        write, write_sequence = transport.write, transport.writeSequence

        def spy_write(data: bytes) -> None:
            calls.append(("write", data))
            write(data)

        def spy_write_sequence(data: Any) -> None:
            calls.append(("writeSequence", b"".join(data)))
            write_sequence(data)

        transport.write = spy_write
        transport.writeSequence = spy_write_sequence
        return calls

    async def read(self, peer: socket.socket, wanted: int, until: Callable[[], bool]) -> bytes:
        """Read the peer while the reactor runs until ``wanted`` bytes came and ``until()``."""
        received = bytearray()
        deadline = time.monotonic() + 5.0
        while len(received) < wanted or not until():
            self.assertLess(time.monotonic(), deadline, f"{len(received)} of {wanted} bytes")
            try:
                chunk = peer.recv(65536)
            except BlockingIOError:
                await deferLater(reactor, 0.001)  # type: ignore[arg-type]
                continue
            self.assertTrue(chunk, "the connection closed early")
            received += chunk
        return bytes(received)

    @async_test
    async def test_direct_then_buffered_then_drained_on_a_real_connection(self) -> None:
        transport, peer = await self.connect()
        calls = self.spy(transport)
        writer = PacketWriter(transport, max_buffered=8192)
        self.assertIs(transport.producer, writer)
        stalls: list[None] = []
        drains: list[None] = []
        writer.on_stall = lambda: stalls.append(None)
        writer.on_drain = lambda: drains.append(None)

        direct = [b"".join(packet(number)) for number in range(20)]
        for number in range(20):
            self.assertTrue(writer.write(*packet(number)))
        self.assertEqual(calls, [])
        self.assertEqual(
            await self.read(peer, len(b"".join(direct)), lambda: True), b"".join(direct)
        )

        accepted: list[bytes] = []
        for number in range(20, MAX_PACKETS):
            header, payload = packet(number)
            if not writer.write(header, payload):
                break
            accepted.append(header + payload)
        else:
            self.fail("the cap was never reached")
        self.assertTrue(calls, "a full kernel sends through Twisted")
        self.assertEqual(calls[0][0], "write")
        self.assertTrue(all(kind == "writeSequence" for kind, _data in calls[1:]))
        self.assertEqual(writer.queued, sum(len(data) for _kind, data in calls))
        self.assertTrue(writer.stalled)
        self.assertEqual(stalls, [None])
        self.assertEqual(drains, [])

        stream = b"".join(accepted)
        received = await self.read(peer, len(stream), lambda: bool(drains))
        self.assertEqual(received, stream)
        self.assertEqual((writer.queued, writer.stalled, drains), (0, False, [None]))

        calls.clear()
        after = [b"".join(packet(number)) for number in range(70_000, 70_010)]
        for number in range(70_000, 70_010):
            self.assertTrue(writer.write(*packet(number)))
        self.assertEqual(calls, [], "direct sends resume once Twisted's buffer drained")
        self.assertEqual(await self.read(peer, len(b"".join(after)), lambda: True), b"".join(after))

        writer.close()
        self.assertIsNone(transport.producer)

    @async_test
    async def test_close_unregisters_from_a_real_transport(self) -> None:
        transport, _peer = await self.connect()
        writer = PacketWriter(transport, max_buffered=8192)
        self.assertIs(transport.producer, writer)
        writer.close()
        self.assertIsNone(transport.producer)
        second = PacketWriter(transport, max_buffered=8192)
        self.assertIs(transport.producer, second)
        second.close()


# -- write_packet: one shared buffer, sent whole and reused by the caller ------------------


def shared_packets(count: int, offset: int = 0) -> Iterator[tuple[bytearray, bytes]]:
    """One bytearray, rewritten in place for each packet (as the pacer's shared payload is)."""
    buffer = bytearray(12 + PAYLOAD)
    for number in range(offset, offset + count):
        header, payload = packet(number)
        buffer[:] = header + payload
        yield buffer, header + payload


def test_write_packet_sends_the_buffer_whole_and_in_order(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = tcp_pair
    transport = SocketTransport(ours)
    writer = PacketWriter(transport, max_buffered=8192)
    sent = []
    for buffer, expected in shared_packets(10):
        assert writer.write_packet(buffer)
        sent.append(expected)
    assert transport.calls == []
    assert read_available(peer, len(b"".join(sent))) == b"".join(sent)


def test_write_packet_copies_what_waits_so_the_reused_buffer_does_not_change_it(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = tcp_pair
    transport = SocketTransport(ours)
    writer = PacketWriter(transport, max_buffered=8192)
    stalls: list[None] = []
    writer.on_stall = lambda: stalls.append(None)
    written = []
    for buffer, expected in shared_packets(MAX_PACKETS):
        if not writer.write_packet(buffer):
            break
        written.append(expected)
    else:
        raise AssertionError("the cap was never reached")
    kinds = [kind for kind, _data in transport.calls]
    assert kinds[0] == "write" and set(kinds) == {"write"}
    assert all(isinstance(data, bytes) for _kind, data in transport.calls), "copies, not views"
    assert writer.stalled and stalls == [None]
    assert writer.queued == len(transport.buffered)
    stream = b"".join(written)
    direct = read_available(peer, len(stream) - len(transport.buffered))
    assert_nothing_more(peer)
    assert direct + transport.buffered == stream, "kernel bytes then Twisted's, in order"
    writer.resumeProducing()
    assert (writer.queued, writer.stalled) == (0, False)


def test_write_packet_and_write_share_one_order_and_one_cap() -> None:
    transport = StringTransport()
    writer = PacketWriter(transport, max_buffered=3 * (12 + PAYLOAD))
    buffers = shared_packets(2)
    first, first_bytes = next(buffers)
    assert writer.write_packet(first)
    assert writer.write(*packet(50))
    second, second_bytes = next(buffers)
    assert writer.write_packet(second)
    assert not writer.write_packet(second), "past the cap the packet is dropped"
    assert writer.stalled
    assert transport.value() == first_bytes + b"".join(packet(50)) + second_bytes


def test_write_packet_after_a_socket_error_hands_over_to_twisted(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, _peer = tcp_pair
    transport = SocketTransport(ours)
    writer = PacketWriter(transport, max_buffered=8192)
    ours.close()
    buffers = shared_packets(2)
    first, first_bytes = next(buffers)
    assert writer.write_packet(first)
    second, second_bytes = next(buffers)
    assert writer.write_packet(second)
    assert transport.calls == [("write", first_bytes), ("write", second_bytes)]
