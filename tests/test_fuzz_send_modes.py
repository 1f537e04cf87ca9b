"""Fuzzing every new sending and RTP-server parameter through the in-memory API harness.

As tests/test_fuzz_api.py and tests/test_fuzz_zlm_node.py do for the rest:
the whole resource tree on a memory reactor (UDP sockets in memory too),
fed startSendRtp / startSendRtpPassive / startSendRtpTalk / openRtpServer /
closeRtpServer / listRtpServer / connectRtpServer / getRtpInfo with every
parameter they take (``dst_url``, ``dst_port``, ``is_udp``, ``src_port``,
``udp_rtcp_timeout``, ``close_delay_ms``, ``recv_stream_id``, ``port``,
``tcp_mode``, ``enable_tcp``, ``stream_id``, ``re_use_port``, ``ssrc``,
``only_track``, ``local_ip``...) in the query, a form or JSON.  A connect the
node makes is answered by the "device" as the draw says: accepted or refused.
Every answer is HTTP 200 with a JSON body and a documented code, nothing is
logged as a failure, a started sender is listed with its ssrc as given, an
opened RTP server is listed on its port, and once everything is stopped and
closed every port is back in the pool.
"""

from __future__ import annotations

import json
import struct
import tempfile
from typing import Any
from urllib.parse import urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from gb28181talk.core.rtp_server import TCP_PASSIVE, UDP
from gb28181talk.web import codes
from tests.fuzzing import SECRET, InMemoryApi, answer_on, failures_forbidden, zlm_reply
from tests.test_fuzz_session import budget
from tests.test_talk_transports import UdpReactor

ZLM = "/index/api/"
SENDING = ["startSendRtp", "startSendRtpPassive", "startSendRtpTalk"]
SERVING = ["openRtpServer", "closeRtpServer", "listRtpServer", "connectRtpServer", "getRtpInfo"]
ENDPOINTS = [*SENDING, *SERVING, "listRtpSender", "stopSendRtp"]
PARAMETERS = ["dst_url", "dst_port", "is_udp", "src_port", "udp_rtcp_timeout", "close_delay_ms",
              "recv_stream_id", "pt", "use_ps", "type", "only_audio", "port", "tcp_mode",
              "enable_tcp", "stream_id", "re_use_port", "ssrc", "only_track", "local_ip",
              "enable_origin_recv_limit", "app", "vhost", "stream", "x"]

values = st.one_of(
    st.sampled_from(["", "0", "1", "2", "3", "-1", "true", "no", "127.0.0.1", "192.0.2.9",
                     "::1", "device.example", "bad host!", "15060", "65535", "65536", "30001",
                     "30004", "80", "4294967295", "4294967296", "0000000777", "777", "rtp",
                     "dev1", "dev2", "broadcast", "tone", "../x", "8", "96", "10000000"]),
    st.integers(-(2**33), 2**33).map(str),
    st.text(max_size=16),
)
names = st.one_of(st.sampled_from(PARAMETERS), st.sampled_from(PARAMETERS).map(str.upper),
                  st.text(max_size=8))


class Service(InMemoryApi):
    """The in-memory API with UDP in memory too and devices that answer its connects."""

    reactor: UdpReactor

    def __init__(self, secret: str | None, media_dir: str) -> None:
        super().__init__(secret, media_dir, UdpReactor(), direct_send=False)
        self.dials = 0

    def request(self, method: bytes, uri: bytes, body: bytes, headers: dict[bytes, bytes],
                accept: bool = True) -> tuple[int, dict[str, str], bytes]:
        """Serve one request; a connect it makes is accepted or refused, as ``accept`` says."""
        channel = self.deliver(method, uri, body, headers)
        self.answer_dials(accept)
        if accept:
            self.devices_speak()
        self.reactor.advance(0.1)
        return answer_on(channel)

    def devices_speak(self) -> None:
        """A device reaches every open RTP server (datagram or connection) and sends RTP."""
        packet = struct.pack("!BBHII", 0x80, 8, 1, 160, 42) + b"\xd5" * 160
        for server in self.control.rtp_servers.list():
            if server.tcp_mode == TCP_PASSIVE and server.link is None:
                factory = self.reactor.factory_on(server.port)
                protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
                if protocol is not None:
                    protocol.makeConnection(StringTransport())
                    protocol.dataReceived(struct.pack("!H", len(packet)) + packet)
            elif server.tcp_mode == UDP:
                bound = self.reactor.udp_bound.get(server.port)
                if bound is not None:
                    bound.receive(packet, ("127.0.0.1", 50000))

    def answer_dials(self, accept: bool) -> None:
        """The devices the node dialled answer: they accept, or refuse."""
        while self.dials < len(self.reactor.tcpClients):
            host, port, factory, _timeout, _bind = self.reactor.tcpClients[self.dials]
            self.dials += 1
            if accept:
                protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
                protocol.makeConnection(StringTransport(
                    hostAddress=IPv4Address("TCP", "127.0.0.1", 40000 + self.dials),
                    peerAddress=IPv4Address("TCP", host, port)))
            else:
                factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, bytes, bytes, dict[bytes, bytes], bool]:
    """A call to a sending or RTP-server endpoint, parameters in the query, a form or JSON."""
    endpoint = draw(st.sampled_from(ENDPOINTS))
    params: dict[str, str] = {}
    if endpoint in SENDING or endpoint in ("listRtpSender", "stopSendRtp"):
        params.update({"app": "broadcast", "stream": "tone",
                       "ssrc": draw(st.sampled_from(["1", "0000000777", "777", "x"]))})
    if endpoint == "startSendRtp":
        params.update({"dst_url": "127.0.0.1", "dst_port": "15060",
                       "is_udp": draw(st.sampled_from(["0", "1"]))})
    if endpoint in SERVING or endpoint == "startSendRtpTalk":
        stream_id = draw(st.sampled_from(["dev1", "dev2"]))
        params.update({"stream_id": stream_id, "recv_stream_id": stream_id, "port": "0",
                       "tcp_mode": draw(st.sampled_from(["0", "1", "2"]))})
    if endpoint == "connectRtpServer":
        params.update({"dst_url": "127.0.0.1", "dst_port": "15060"})
    params.update(draw(st.dictionaries(names, values, max_size=6)))
    if draw(st.booleans()):
        params["secret"] = SECRET
    method = draw(st.sampled_from([b"GET", b"POST"]))
    shape = draw(st.sampled_from(["query", "form", "json"]))
    accept = draw(st.booleans())
    headers: dict[bytes, bytes] = {}
    if shape == "query" or method == b"GET":
        return method, f"{ZLM}{endpoint}?{urlencode(params)}".encode(), b"", headers, accept
    if shape == "form":
        headers[b"content-type"] = b"application/x-www-form-urlencoded"
        return (method, f"{ZLM}{endpoint}".encode(), urlencode(params).encode(), headers,
                accept)
    headers[b"content-type"] = b"application/json"
    return method, f"{ZLM}{endpoint}".encode(), json.dumps(params).encode(), headers, accept


def answer(service: Service, method: bytes, uri: bytes, body: bytes,
           headers: dict[bytes, bytes], accept: bool = True) -> dict[str, Any]:
    return zlm_reply(*service.request(method, uri, body, headers, accept))


def listed_servers(service: Service) -> list[dict[str, Any]]:
    reply = answer(service, b"GET", f"{ZLM}listRtpServer?secret={SECRET}".encode(), b"", {})
    return list(reply["data"])


def check_success(service: Service, endpoint: str, reply: dict[str, Any]) -> None:
    if endpoint in SENDING:
        assert isinstance(reply["local_port"], int) and 0 <= reply["local_port"] <= 65535
        query = urlencode({"app": "broadcast", "stream": "tone", "secret": SECRET})
        listed = answer(service, b"GET", f"{ZLM}listRtpSender?{query}".encode(), b"", {})
        assert all(isinstance(ssrc, str) for ssrc in listed["data"])
    elif endpoint == "openRtpServer":
        assert reply["port"] in [entry["port"] for entry in listed_servers(service)]
    elif endpoint == "connectRtpServer":
        assert reply == {"code": 0}
    elif endpoint == "closeRtpServer":
        assert reply["hit"] in (0, 1)
    elif endpoint == "getRtpInfo":
        assert isinstance(reply["exist"], bool)


@settings(max_examples=budget(150), suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(batch=st.lists(requests(), min_size=1, max_size=6), secret=st.sampled_from([None, SECRET]),
       tcp_mode=st.sampled_from(["0", "1", "2"]))
def test_every_new_parameter_gets_a_documented_answer_and_every_port_comes_back(
    batch: list[tuple[bytes, bytes, bytes, dict[bytes, bytes], bool]], secret: str | None,
    tcp_mode: str,
) -> None:
    with tempfile.TemporaryDirectory() as media_dir:
        service = Service(secret, media_dir)
        with failures_forbidden():
            # An RTP server dev1 a device reaches first, so talk back and connect can succeed.
            opened = urlencode({"stream_id": "dev1", "port": 0, "tcp_mode": tcp_mode,
                                "secret": SECRET})
            assert answer(service, b"POST", f"{ZLM}openRtpServer?{opened}".encode(), b"",
                          {})["code"] == codes.SUCCESS
            for method, uri, body, headers, accept in batch:
                reply = answer(service, method, uri, body, headers, accept)
                endpoint = uri.split(b"?")[0].decode().rsplit("/", 1)[-1]
                if reply["code"] == codes.SUCCESS:
                    check_success(service, endpoint, reply)
                pool = service.manager.pool
                assert pool.leased_count <= pool.size + len(pool.leases())
        for session in service.manager.sessions():
            session.stop()
        service.control.rtp_servers.close_all()
        service.reactor.advance(0.1)
        assert service.manager.pool.leased_count == 0
        assert service.reactor.udp_bound == {}
