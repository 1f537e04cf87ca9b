"""Tests for the SIP UDP/TCP adapters: answers go where requests came from; refusals answered;
a flooding TCP connection is held to its budget (paused, then closed) and others are not."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport, StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from gb28181talk.sip.message import (
    SipMessage,
    SipRequest,
    SipResponse,
    StreamParser,
    build,
    parse_datagram,
    request,
    response_for,
)
from gb28181talk.sip.transaction import Timers, TransactionLayer, new_branch
from gb28181talk.sip.transport import (
    CONNECTION_BURST,
    CONNECTION_RATE,
    FLOOD_CLOSE_AFTER,
    SipDatagramProtocol,
    SipStreamFactory,
    StreamLimits,
    connect_sip,
    listen_sip,
    parse_udp,
    via_for,
)
from tests.httpapi import until


def _register(transport: str = "UDP", host: str = "192.168.1.64") -> SipRequest:
    return request(
        "REGISTER",
        "sip:34020000002000000001@3402000000",
        [
            ("Via", f"SIP/2.0/{transport} {host}:5060;rport;branch={new_branch()}"),
            ("From", "<sip:34020000001320000001@3402000000>;tag=r1"),
            ("To", "<sip:34020000001320000001@3402000000>"),
            ("Call-ID", f"reg-{new_branch()}"),
            ("CSeq", "1 REGISTER"),
            ("Max-Forwards", "70"),
            ("Expires", "3600"),
        ],
    )


class Registrar:
    """A server TU that answers every request 200 and records what it saw."""

    def __init__(self) -> None:
        self.requests: list[SipRequest] = []
        self.channels: list[object] = []

    def request_received(self, transaction, req):
        self.requests.append(req)
        self.channels.append(transaction.channel)
        transaction.respond(response_for(req, 200, to_tag="plat"))

    def ack_received(self, ack, channel):
        pass

    def response_unmatched(self, resp, channel):
        pass

    def transaction_failed(self, transaction, reason):
        pass


def _udp():
    registrar = Registrar()
    layer = TransactionLayer(Clock(), registrar, Timers())
    protocol = SipDatagramProtocol(layer)
    transport = FakeDatagramTransport()
    protocol.makeConnection(transport)
    return registrar, protocol, transport


def test_a_udp_request_is_stamped_and_answered_to_the_address_it_came_from():
    registrar, protocol, transport = _udp()
    nat = ("203.0.113.9", 40112)
    protocol.datagramReceived(build(_register()), nat)
    (seen,) = registrar.requests
    assert seen.top_via.received == "203.0.113.9" and seen.top_via.rport == 40112
    ((data, addr),) = transport.written
    assert addr == nat
    answer = parse_datagram(data)
    assert isinstance(answer, SipResponse) and answer.status == 200
    assert answer.top_via.rport == 40112  # the stamped Via goes back (RFC 3581 §4)
    protocol.datagramReceived(build(_register()).replace(b"1 REGISTER", b"2 REGISTER"), nat)
    assert len(registrar.requests) == 2


def test_udp_garbage_is_dropped_and_an_answerable_refusal_is_answered():
    registrar, protocol, transport = _udp()
    protocol.datagramReceived(b"\x00\xffgarbage\r\n\r\n", ("192.0.2.1", 5060))
    protocol.datagramReceived(b"\r\n\r\n", ("192.0.2.1", 5060))  # a keepalive
    assert transport.written == [] and registrar.requests == []
    bad = build(_register()).replace(b"SIP/2.0\r\n", b"SIP/9.9\r\n", 1)
    protocol.datagramReceived(bad, ("192.0.2.1", 5070))
    ((data, addr),) = transport.written
    answer = parse_datagram(data)
    assert addr == ("192.0.2.1", 5070)
    assert isinstance(answer, SipResponse) and answer.status == 505
    assert protocol.refused == 2 and registrar.requests == []


def _tcp():
    registrar = Registrar()
    layer = TransactionLayer(Clock(), registrar, Timers())
    protocol = SipStreamFactory(layer).buildProtocol(None)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "198.51.100.4", 51000))
    protocol.makeConnection(transport)
    return registrar, protocol, transport


def test_a_tcp_stream_in_pieces_gives_each_request_once_answered_on_the_connection():
    registrar, protocol, transport = _tcp()
    data = build(_register("TCP")) + b"\r\n\r\n" + build(_register("TCP"))
    for start in range(0, len(data), 7):
        protocol.dataReceived(data[start : start + 7])
    assert len(registrar.requests) == 2
    assert registrar.channels[0] is protocol and protocol.reliable
    assert registrar.requests[0].top_via.received == "198.51.100.4"
    answers = StreamParser().feed(transport.value())
    assert [a.status for a in answers if isinstance(a, SipResponse)] == [200, 200]
    assert via_for(protocol, "192.168.1.10", 5060).startswith("SIP/2.0/TCP 192.168.1.10:5060;")


def test_a_refused_tcp_stream_is_answered_and_closed():
    registrar, protocol, transport = _tcp()
    huge = build(_register("TCP")).replace(b"Content-Length: 0", b"Content-Length: 999999")
    protocol.dataReceived(huge)
    answers = StreamParser().feed(transport.value())
    assert [a.status for a in answers if isinstance(a, SipResponse)] == [413]
    assert transport.disconnecting and registrar.requests == []
    closed: list[object] = []
    protocol.on_close.append(closed.append)
    protocol.connectionLost(None)
    assert closed == [protocol]
    try:
        protocol.send(response_for(_register(), 200))
    except OSError:
        pass
    else:
        raise AssertionError("a closed connection took a message")


def test_udp_endpoint_strings():
    assert parse_udp("udp:5060") == (5060, "")
    assert parse_udp("udp:port=5062:interface=127.0.0.1") == (5062, "127.0.0.1")
    for bad in ("udp:", "udp:70000", "udp:5060:backlog=5", "tcp:5060"):
        try:
            parse_udp(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} accepted")


class Collect:
    """A receiver that keeps every message with its channel."""

    def __init__(self) -> None:
        self.got: list[tuple[SipMessage, object]] = []

    def receive(self, message: SipMessage, channel: object) -> None:
        self.got.append((message, channel))


class LoopbackSipTests(TestCase):
    """The adapters on real loopback sockets, a device on each side."""

    timeout = 20

    @inlineCallbacks
    def test_udp_register_and_answer_over_loopback(self):
        registrar = Registrar()
        layer = TransactionLayer(reactor, registrar, Timers())
        self.addCleanup(layer.shutdown)
        server = yield listen_sip(reactor, "udp:0:interface=127.0.0.1", layer)
        self.addCleanup(server.stopListening)
        device = Collect()
        device_port = yield listen_sip(reactor, "udp:0:interface=127.0.0.1", device)
        self.addCleanup(device_port.stopListening)
        channel = device_port.protocol.channel_to(("127.0.0.1", server.getHost().port))
        channel.send(_register(host="10.0.0.7"))  # a Via that lies about where it is
        yield Deferred.fromCoroutine(until(lambda: device.got))
        answer, _ = device.got[0]
        assert isinstance(answer, SipResponse) and answer.status == 200
        assert answer.top_via.received == "127.0.0.1"
        assert answer.top_via.rport == device_port.getHost().port

    @inlineCallbacks
    def test_tcp_register_and_answer_over_loopback(self):
        registrar = Registrar()
        layer = TransactionLayer(reactor, registrar, Timers())
        self.addCleanup(layer.shutdown)
        server = yield listen_sip(reactor, "tcp:0:interface=127.0.0.1", layer)
        self.addCleanup(server.stopListening)
        device = Collect()
        connection = yield connect_sip(
            reactor, f"tcp:127.0.0.1:{server.getHost().port}", device
        )
        self.addCleanup(connection.transport.loseConnection)
        connection.send(_register("TCP"))
        yield Deferred.fromCoroutine(until(lambda: device.got))
        answer, channel = device.got[0]
        assert isinstance(answer, SipResponse) and answer.status == 200
        assert channel is connection
        # the registrar's channel is its side of this connection: it may send requests back
        assert registrar.channels[0].transport_name == "TCP"


class Failing:
    """A stack with a bug: every message raises."""

    def __init__(self) -> None:
        self.calls = 0

    def receive(self, message, channel):
        self.calls += 1
        raise RuntimeError("a bug in the stack")


def test_a_failure_in_the_stack_costs_one_message_not_the_socket_or_connection():
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        _feed_a_failing_stack()
    finally:
        globalLogPublisher.removeObserver(events.append)
    failures = [e for e in events if "log_failure" in e]
    assert len(failures) == 4
    assert all(e["log_failure"].check(RuntimeError) for e in failures)


def _feed_a_failing_stack() -> None:
    failing = Failing()
    udp = SipDatagramProtocol(failing)
    udp.makeConnection(FakeDatagramTransport())
    udp.datagramReceived(build(_register()), ("192.0.2.1", 5060))
    udp.datagramReceived(build(_register()), ("192.0.2.1", 5060))
    tcp = SipStreamFactory(failing).buildProtocol(None)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "198.51.100.4", 51000))
    tcp.makeConnection(transport)
    tcp.dataReceived(build(_register("TCP")) + build(_register("TCP")))
    assert failing.calls == 4 and not transport.disconnecting


# --------------------------------------------------------------------------- TCP budget


class Counting:
    """The transaction layer's place: the messages that reach it, per channel."""

    def __init__(self) -> None:
        self.by_channel: dict[object, int] = {}

    def receive(self, message: SipMessage, channel: object) -> None:
        self.by_channel[channel] = self.by_channel.get(channel, 0) + 1


def _connection(clock: Clock, receiver: Counting, port: int, **limits: float):
    protocol = SipStreamFactory(receiver, clock, StreamLimits(**limits) if limits else None
                                ).buildProtocol(None)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "198.51.100.4", port))
    protocol.makeConnection(transport)
    return protocol, transport


def test_a_flooding_connection_is_paused_at_its_budget_and_resumed_as_it_refills():
    clock, receiver = Clock(), Counting()
    flooder, flood_wire = _connection(clock, receiver, 51000)
    device, device_wire = _connection(clock, receiver, 51001)
    flooder.dataReceived(build(_register("TCP")) * 1000)  # one read of 1,000 messages
    assert receiver.by_channel[flooder] == CONNECTION_BURST
    assert flood_wire.producerState == "paused" and flooder.throttled == 1
    assert len(flooder.backlog) == 1000 - CONNECTION_BURST, "kept in order, not dropped"
    device.dataReceived(build(_register("TCP")))
    assert receiver.by_channel[device] == 1, "another connection is read as usual"
    assert device_wire.producerState == "producing"
    clock.advance(1.0)
    assert receiver.by_channel[flooder] == CONNECTION_BURST + CONNECTION_RATE
    assert flood_wire.producerState == "paused"
    for _ in range(20):  # the backlog drains at the rate, then reading resumes
        clock.advance(1.0)
    assert receiver.by_channel[flooder] == 1000 and not flooder.backlog
    assert flood_wire.producerState == "producing" and not flood_wire.disconnecting
    assert not clock.getDelayedCalls()


def test_a_connection_sending_too_many_bytes_is_paused_until_its_byte_bucket_refills():
    clock, receiver = Clock(), Counting()
    one = build(_register("TCP"))
    protocol, wire = _connection(clock, receiver, 51000, byte_rate=len(one), byte_burst=len(one))
    protocol.dataReceived(one * 3)  # three messages' bytes against one message's budget
    assert receiver.by_channel[protocol] == 3, "what was read is handed on"
    assert wire.producerState == "paused"
    clock.advance(1.0)
    assert wire.producerState == "paused", "two messages' worth of debt: still waiting"
    clock.advance(1.0)
    assert wire.producerState == "producing"


def test_a_persistent_flood_closes_the_connection_and_the_others_keep_being_served():
    clock, receiver = Clock(), Counting()
    flooder, flood_wire = _connection(clock, receiver, 51000)
    device, device_wire = _connection(clock, receiver, 51001)
    flood = build(_register("TCP")) * 400
    reads = 0
    while not flood_wire.disconnecting and reads < 1000:
        if flood_wire.producerState == "producing":  # the kernel gives the next read at once
            flooder.dataReceived(flood)
            reads += 1
        clock.advance(0.5)
        device.dataReceived(build(_register("TCP")))
    assert flood_wire.disconnecting, "closed"
    seconds = clock.seconds()
    assert FLOOD_CLOSE_AFTER <= seconds <= FLOOD_CLOSE_AFTER + 1
    assert receiver.by_channel[flooder] <= CONNECTION_BURST + CONNECTION_RATE * seconds
    assert receiver.by_channel[device] == seconds / 0.5, "every message of the device"
    assert not device_wire.disconnecting and device_wire.producerState == "producing"
    flooder.connectionLost(None)
    assert not flooder.backlog and flooder._timer is None


def test_bursts_with_quiet_between_them_are_throttled_but_never_closed():
    clock, receiver = Clock(), Counting()
    device, wire = _connection(clock, receiver, 51000)
    burst = build(_register("TCP")) * int(CONNECTION_BURST + 50)
    for _ in range(12):  # a burst over the budget every 10 s for two minutes
        device.dataReceived(burst)
        for _ in range(10):
            clock.advance(1.0)
    assert not wire.disconnecting and device.throttled == 12
    assert receiver.by_channel[device] == 12 * (CONNECTION_BURST + 50)
