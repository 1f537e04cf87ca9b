"""The UDP transport: RTP datagrams to the device, and in two-way talk its datagrams back.

Two GB28181/ZLMediaKit modes share it.  **Active** (``startSendRtp`` with
``is_udp=1``): the device's address is known (``dst_url:dst_port``), so the
device link exists as soon as the port is bound and is delivered from within
``open``.  **Passive** (``startSendRtpPassive`` with ``is_udp=1``): we bind a
port and wait; the first datagram (the device's NAT "punch" or its own RTP)
tells where the device is, and it gets the audio from then on.

Either way the port is a lease of the pool (:meth:`PortPool.listen_udp`, or
the explicit ``src_port``) held for as long as the link lives, since the
socket is the link.  Each write is one datagram: a whole RTP packet without
RFC 4571's prefix.  Datagrams that come back (from the expected peer, if one
is set) go to the session as whole packets.

RTCP as ZLMediaKit does it (``RtpSender::createRtcpSocket``): only with
``udp_rtcp_timeout``, a socket on our RTP port + 1 sends a sender report to
the device's RTP port + 1 (or to where its first report came from) every
5 s, and the stream ends when no RTCP has come from the device for
``rtcp_timeout`` seconds (ZLMediaKit: 30 s).  RTCP multiplexed on the RTP
port counts too.  Without ``udp_rtcp_timeout`` no RTCP is sent or awaited.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.error import MessageLengthError
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from gb28181talk.core.passive import same_host
from gb28181talk.core.ports import Lease, PortPool
from gb28181talk.core.transport import IDeviceHost, IDeviceLink, ITalkTransport
from gb28181talk.media.framing import Framing
from gb28181talk.media.rtcp import is_rtcp, sender_report

log = Logger()

DEFAULT_RTCP_TIMEOUT = 30.0
"""ZLMediaKit's ``rtcp_timeout_ms``: seconds without RTCP from the device that end the stream."""
RTCP_INTERVAL = 5.0
"""ZLMediaKit's ``rtcp_send_interval_ms``: seconds between our sender reports."""


@implementer(IDeviceLink)
class UdpLink:
    """The device reached by datagrams: every write is one whole RTP packet, nothing queues."""

    framing = Framing.NONE
    queued = 0
    whole_packets = True

    def __init__(self, transport: UdpTalkTransport, peer: tuple[str, int]) -> None:
        self.peer = peer
        self.write = transport.send
        self._transport = transport

    def close(self, abort: bool) -> None:
        """The session is done with the device: the socket closes, the port goes back."""
        self._transport.link_closed()

    def pause_reading(self) -> None:
        """Nothing to pause: over its budget, the device's datagrams are dropped unread and
        counted by the receiver (``packets_over_budget``), a counter and a return each."""

    def resume_reading(self) -> None:
        """Nothing was paused."""


class _TalkDatagrams(DatagramProtocol):
    """The talk socket: a thin adapter from datagrams to the transport."""

    noisy = False

    def __init__(self, transport: UdpTalkTransport) -> None:
        self.owner = transport

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.owner.datagram(datagram, (addr[0], addr[1]))


class _RtcpDatagrams(DatagramProtocol):
    """The RTCP socket (RTP port + 1): reports from the device keep the stream alive."""

    noisy = False

    def __init__(self, transport: UdpTalkTransport) -> None:
        self.owner = transport

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.owner.rtcp_received(datagram, (addr[0], addr[1]))


@implementer(ITalkTransport)
class UdpTalkTransport:
    """Sends RTP datagrams to the device from a leased UDP port; hears its datagrams back.

    ``destination`` given: active (the link is delivered from within ``open``);
    None: passive (the first datagram from the expected peer, or anyone, is the
    device).  ``rtcp_timeout`` (seconds) turns RTCP on as ``udp_rtcp_timeout`` does.
    """

    def __init__(
        self,
        pool: PortPool,
        owner: str,
        reactor: Any,
        *,
        port: int = 0,
        destination: tuple[str, int] | None = None,
        expected_peer: str | None = None,
        rtcp_timeout: float | None = None,
    ) -> None:
        self.pool = pool
        self.owner = owner
        self.reactor = reactor
        self.wanted_port = port
        self.destination = destination
        self.expected_peer = expected_peer
        self.rtcp_timeout = rtcp_timeout
        self.port = 0
        self.host: Any = None
        self.link: UdpLink | None = None
        self.packets_sent = 0
        self.octets_sent = 0
        self.send_errors = 0
        self.foreign_datagrams = 0
        """Datagrams from anyone but the device (dropped)."""
        self.rtcp_received_count = 0
        self.rtcp_sent = 0
        self._lease: Lease | None = None
        self._socket: Any = None
        self._sendmsg: Any = None
        self._peer: tuple[str, int] | None = None
        self._last_header = b""
        self._rtcp_port: IListeningPort | None = None
        self._rtcp_peer: tuple[str, int] | None = None
        self._rtcp_bound_to_sender = False
        self._last_rtcp_at = 0.0
        self._rtcp_timer: IDelayedCall | None = None

    # -- ITalkTransport

    def open(self, host: IDeviceHost) -> int:
        """Lease the UDP port; active: deliver the device at once."""
        self.host = host
        # The socket's protocol points at this transport, not back (the port holds it).
        self._lease = self.pool.listen_udp(_TalkDatagrams(self), owner=self.owner,
                                           port=self.wanted_port)
        self.port = self._lease.port
        self._socket = self._lease.listening_port
        raw = getattr(self._socket, "socket", None)
        self._sendmsg = raw.sendmsg if isinstance(raw, socket.socket) else None
        if self.destination is not None:
            self._deliver(self.destination)
        return self.port

    def close(self) -> None:
        """Stop waiting; the port stays with a delivered link (its close returns the port).

        Without a link nothing more will be delivered: the host (the session) is let go.
        """
        if self.link is None:
            self.host = None
            self._release()

    # -- sending (the link's write)

    def send(self, header: bytes, payload: bytes) -> bool:
        """One RTP packet as one datagram to the device; False if the kernel refused it."""
        sock, peer = self._socket, self._peer
        if sock is None or peer is None:
            return False
        try:
            sendmsg = self._sendmsg
            if sendmsg is not None:  # one system call, header and payload not joined
                sendmsg((header, payload), (), 0, peer)
            else:
                sock.write(header + payload, peer)
        except (OSError, MessageLengthError):
            self.send_errors += 1
            return False
        self.packets_sent += 1
        self.octets_sent += len(payload)
        self._last_header = header
        return True

    # -- what the sockets tell

    def datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        """A datagram on the talk port: the device's (two-way talk), or the one it is found by."""
        if self.host is None:
            return
        if self.expected_peer and not same_host(self.expected_peer, addr[0]):
            self.foreign_datagrams += 1
            return
        if self.link is None:
            if self._lease is None:  # no longer waiting
                return
            self._deliver(addr)
        if is_rtcp(data):
            self._rtcp_heard()
        self.host.data_from_device(data)

    def rtcp_received(self, data: bytes, addr: tuple[str, int]) -> None:
        """A report on the RTCP port: the device is there; our reports go where it came from."""
        if self._peer is None or not same_host(self._peer[0], addr[0]):
            return
        if not self._rtcp_bound_to_sender:
            self._rtcp_bound_to_sender = True
            self._rtcp_peer = addr
        self._rtcp_heard()

    # -- the link's life

    def _deliver(self, peer: tuple[str, int]) -> None:
        self._peer = peer
        self.link = UdpLink(self, peer)
        if self.rtcp_timeout is not None:
            self._start_rtcp(peer)
        self.host.device_connected(self.link)

    def link_closed(self) -> None:
        """The session closed the link: RTCP stops, the socket closes, the port returns.

        The host (the session) and the link (which points back here) are let go too, so
        the ended session is freed at once instead of staying a cycle for the collector;
        datagrams that still come are dropped.
        """
        self._peer = None
        self.host = None
        self.link = None
        self._stop_rtcp()
        self._release()

    def _release(self) -> None:
        self._socket = self._sendmsg = None
        lease, self._lease = self._lease, None
        if lease is not None:
            self.pool.release(lease)

    # -- RTCP (udp_rtcp_timeout)

    def _start_rtcp(self, peer: tuple[str, int]) -> None:
        try:
            self._rtcp_port = self.reactor.listenUDP(
                self.port + 1, _RtcpDatagrams(self), interface=self.pool.interface)
        except Exception as error:  # ZLMediaKit too sends without RTCP then
            log.warn("UDP talk port {port}: no RTCP, port {rtcp} cannot be bound: {error}",
                     port=self.port, rtcp=self.port + 1, error=str(error))
            return
        self._rtcp_peer = (peer[0], peer[1] + 1)
        self._last_rtcp_at = self.reactor.seconds()
        self._rtcp_timer = self.reactor.callLater(RTCP_INTERVAL, self._rtcp_tick)

    def _rtcp_heard(self) -> None:
        self.rtcp_received_count += 1
        self._last_rtcp_at = self.reactor.seconds()

    def _rtcp_tick(self) -> None:
        """Every 5 s: send our report; end the stream if the device has been silent too long."""
        self._rtcp_timer = None
        timeout = self.rtcp_timeout
        assert timeout is not None
        silent = self.reactor.seconds() - self._last_rtcp_at
        if silent > timeout:
            self._stop_rtcp()
            self.host.device_closed(
                f"no RTCP from the device for {silent:g} s (udp_rtcp_timeout: {timeout:g} s)")
            return
        self._send_report()
        self._rtcp_timer = self.reactor.callLater(RTCP_INTERVAL, self._rtcp_tick)

    def _send_report(self) -> None:
        header, port, peer = self._last_header, self._rtcp_port, self._rtcp_peer
        if len(header) < 12 or port is None or peer is None:
            return
        ssrc = int.from_bytes(header[8:12], "big")
        timestamp = int.from_bytes(header[4:8], "big")
        report = sender_report(ssrc, self.reactor.seconds(), timestamp, self.packets_sent,
                               self.octets_sent)
        try:
            port.write(report, peer)  # type: ignore[attr-defined]
        except OSError:
            return
        self.rtcp_sent += 1

    def _stop_rtcp(self) -> None:
        timer, self._rtcp_timer = self._rtcp_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        port, self._rtcp_port = self._rtcp_port, None
        if port is not None:
            port.stopListening()
