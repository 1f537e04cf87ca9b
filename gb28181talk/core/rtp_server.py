"""RTP servers: ports a device sends its talk audio to (ZLMediaKit's ``openRtpServer``).

ZLMediaKit's 2016-style talk: the platform opens an RTP server for
``app/stream_id`` (app ``rtp`` by default), the device sends its voice there,
the audio becomes a stream like any other, and ``startSendRtpTalk`` sends the
platform's audio back on the connection the device opened.  Here each
:class:`RtpServer` is an :class:`~gb28181talk.core.transport.IDeviceHost` over
the transports of the talk sessions: ``tcp_mode`` 0 a UDP port (the first
datagram's sender is the device), 1 a passive TCP port (the first device to
connect), 2 a reserved UDP port from which :meth:`RtpServer.connect` dials the
listening device (``connectRtpServer``).  What arrives is deframed, SSRC
checked (the given ``ssrc`` strictly, else the first one learnt), decoded by
the talk session's own :class:`~gb28181talk.core.receiver.Receiver` and fed to
a :class:`~gb28181talk.sources.device.DeviceAudioSource`, published in the
source registry as ``app/stream_id`` when the first audio arrives (as
ZLMediaKit registers the stream once data comes).

No audio for ``timeout`` seconds (ZLMediaKit's ``rtp_proxy.timeoutSec``,
15 s), counted from the open, closes the server and tells ``on_timeout``
(the ``on_rtp_server_timeout`` hook).  The device hanging up, a receive
error or ``closeRtpServer`` close it too, without that hook.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from zope.interface import implementer

from gb28181talk.core.active import ActiveTcpTransport
from gb28181talk.core.params import EndReason, SessionKey, SessionParams, SsrcPolicy
from gb28181talk.core.passive import PassiveTcpTransport
from gb28181talk.core.ports import PortPool
from gb28181talk.core.receiver import Receiver
from gb28181talk.core.transport import IDeviceHost, IDeviceLink, ITalkTransport
from gb28181talk.core.udp import UdpTalkTransport
from gb28181talk.errors import (
    DeviceUnreachable,
    NameTaken,
    RtpServerExists,
    RtpServerNotFound,
    SessionError,
)
from gb28181talk.interfaces import IAudioSink
from gb28181talk.sources.device import DeviceAudioSource

log = Logger()

DEFAULT_RTP_APP = "rtp"
"""ZLMediaKit's ``kRtpAppName``: the app of RTP server streams unless one is given."""
DEFAULT_RTP_TIMEOUT = 15.0
"""ZLMediaKit's ``rtp_proxy.timeoutSec``: seconds without audio that close an RTP server."""
CONNECT_TIMEOUT = 5.0
"""ZLMediaKit's ``connectRtpServer`` gives up after 5 s."""

UDP, TCP_PASSIVE, TCP_ACTIVE = 0, 1, 2
"""ZLMediaKit's ``tcp_mode`` values."""

RtpServerKey = tuple[str, str, str]
"""(vhost, app, stream_id)."""


@implementer(IAudioSink)
class _Publisher:
    """The device's audio into its source, published on the first audio (IAudioSink)."""

    def __init__(self, server: RtpServer) -> None:
        self.server = server

    def audio_received(self, pcm16: bytes, rtp_timestamp: int) -> None:
        server = self.server
        if not server.published:
            server.publish()
        server.source.audio_received(pcm16, rtp_timestamp)

    def audio_ended(self) -> None:
        self.server.source.audio_ended()


@implementer(IDeviceHost)
class RtpServer:
    """One ``openRtpServer``: a port the device sends its voice to, and its live source."""

    def __init__(
        self,
        key: RtpServerKey,
        *,
        tcp_mode: int,
        reactor: Any,
        pool: PortPool,
        registry: Any,
        port: int = 0,
        ssrc: int = 0,
        timeout: float = DEFAULT_RTP_TIMEOUT,
        only_track: int = 0,
        re_use_port: bool = False,
        on_closed: Callable[[RtpServer, str], None] | None = None,
    ) -> None:
        if tcp_mode not in (UDP, TCP_PASSIVE, TCP_ACTIVE):
            raise SessionError(f"tcp_mode {tcp_mode} is not 0 (UDP), 1 (TCP passive) or "
                               "2 (TCP active)")
        self.key = key
        self.vhost, self.app, self.stream_id = key
        self.tcp_mode = tcp_mode
        self.reactor = reactor
        self.pool = pool
        self.registry = registry
        self.wanted_port = port
        self.ssrc = ssrc
        self.timeout = timeout
        self.only_track = only_track
        self.re_use_port = re_use_port
        self.on_closed = on_closed
        self.owner = f"rtp:{self.app}/{self.stream_id}"
        self.port = 0
        self.link: IDeviceLink | None = None
        self.published = False
        self.closed = False
        self.close_reason = ""
        self.opened_at = 0.0
        self.talker: Any = None
        """The talk session sending back on this connection (``startSendRtpTalk``), if any."""
        self.source = DeviceAudioSource(self.app, self.stream_id)
        params = SessionParams(
            key=SessionKey(self.vhost, self.app, self.stream_id, ssrc),
            receive=True,
            ssrc_policy=SsrcPolicy.STRICT if ssrc else SsrcPolicy.LEARN,
        )
        self.receiver = Receiver(params, [_Publisher(self)], self._receiver_ended, reactor,
                                 name=self.owner)
        self._transport: ITalkTransport | None = None
        self._dialer: ActiveTcpTransport | None = None
        self._connecting: Deferred[None] | None = None
        self._timer: IDelayedCall | None = None

    # -- opening and closing

    def open(self) -> int:
        """Bind the port (from the pool unless one is given) and start the no-audio timer."""
        if self.tcp_mode == TCP_PASSIVE:
            transport: ITalkTransport = PassiveTcpTransport(self.pool, self.owner,
                                                            port=self.wanted_port)
        else:
            transport = UdpTalkTransport(self.pool, self.owner, self.reactor,
                                         port=self.wanted_port)
        self.port = transport.open(self)
        self._transport = transport
        self.opened_at = self.reactor.seconds()
        self._arm(self.timeout)
        log.info("RTP server {app}/{stream} open on port {port} (tcp_mode {mode})",
                 app=self.app, stream=self.stream_id, port=self.port, mode=self.tcp_mode)
        return self.port

    def connect(self, host: str, port: int) -> Deferred[None]:
        """``connectRtpServer``: dial the listening device from our port (``tcp_mode`` 2)."""
        if self.closed:
            return fail(RtpServerNotFound(f"the RTP server {self.app}/{self.stream_id} "
                                          "is closed"))
        if self.tcp_mode != TCP_ACTIVE:
            return fail(SessionError(f"connectRtpServer needs an RTP server opened with "
                                     f"tcp_mode=2; {self.app}/{self.stream_id} has "
                                     f"tcp_mode={self.tcp_mode}"))
        if self.link is not None or self._connecting is not None:
            return fail(SessionError(f"the RTP server {self.app}/{self.stream_id} has its "
                                     "device already (or is connecting)"))
        self._connecting = waiting = Deferred()
        self._dialer = ActiveTcpTransport(self.reactor, (host, port), timeout=CONNECT_TIMEOUT,
                                          port=self.port, interface=self.pool.interface)
        self._dialer.open(self)
        return waiting

    def close(self, why: str = "closeRtpServer") -> bool:
        """Close now: the port, the connection, the source; False if it was closed already."""
        if self.closed:
            return False
        self.closed = True
        self.close_reason = why
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        for transport in (self._transport, self._dialer):
            if transport is not None:
                transport.close()
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.errback(DeviceUnreachable(f"the RTP server closed: {why}", self.port))
        link, self.link = self.link, None
        if link is not None:
            link.close(abort=False)
        talker, self.talker = self.talker, None
        if talker is not None:
            talker.device_closed(f"the RTP server {self.app}/{self.stream_id} closed: {why}")
        self.receiver.stop()
        if self.published and self.registry.find(self.app, self.stream_id) is self.source:
            self.registry.remove(self.app, self.stream_id)
        log.info("RTP server {app}/{stream} port {port} closed: {why}", app=self.app,
                 stream=self.stream_id, port=self.port, why=why)
        if self.on_closed is not None:
            self.on_closed(self, why)
        return True

    def publish(self) -> None:
        """Publish the device's audio as ``app/stream_id`` (on its first audio)."""
        self.published = True
        existing = self.registry.find(self.app, self.stream_id)
        if existing is not None and not existing.ended:
            log.warn("RTP server {app}/{stream}: a source of that name exists; not published",
                     app=self.app, stream=self.stream_id)
            return
        self.registry.add(self.source)

    # -- the no-audio timer

    def _arm(self, delay: float) -> None:
        self._timer = self.reactor.callLater(max(delay, 0.0), self._check_timeout)

    def _check_timeout(self) -> None:
        self._timer = None
        last = max(self.opened_at, self.receiver.last_received_at if self.link else 0.0)
        silent = self.reactor.seconds() - last
        if silent >= self.timeout:
            self.close(f"timeout: no audio for {self.timeout:g} s")
            return
        self._arm(self.timeout - silent)

    @property
    def timed_out(self) -> bool:
        """Whether it closed because no audio came in time (the hook's case)."""
        return self.close_reason.startswith("timeout")

    # -- IDeviceHost: what its transports tell

    def device_connected(self, link: IDeviceLink) -> None:
        """The device is here (its first datagram, its connection, or ours to it)."""
        if self.closed or self.link is not None:
            link.close(abort=True)
            return
        self.link = link
        for transport in (self._transport, self._dialer):
            if transport is not None:
                transport.close()  # stop waiting; the delivered link lives on
        self.receiver.start(self.reactor.seconds(), link.whole_packets)
        self.receiver.throttle_by(link)  # a flooding device is paused, not only backlogged
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.callback(None)

    def device_refused(self, peer: tuple[str, int], why: str) -> None:
        """A second device was turned away."""
        log.info("RTP server {app}/{stream}: refused {host}:{port}: {why}", app=self.app,
                 stream=self.stream_id, host=peer[0], port=peer[1], why=why)

    def data_from_device(self, data: bytes) -> None:
        """The device's RTP: heard, decoded, into the source."""
        self.receiver.data_received(data)

    def device_closed(self, why: str) -> None:
        """The device hung up, or our connect to it failed."""
        connecting, self._connecting = self._connecting, None
        if connecting is not None and self.link is None:
            self._dialer = None
            connecting.errback(DeviceUnreachable(why, 0))
            return
        self.close(f"device-closed: {why}")

    def send_stalled(self) -> None:
        """The device stopped reading what a talk session sends back on this connection."""
        if self.talker is not None:
            self.talker.send_stalled()

    def send_drained(self) -> None:
        """It reads again."""
        if self.talker is not None:
            self.talker.send_drained()

    def _receiver_ended(self, reason: EndReason, detail: str) -> None:
        self.close(f"{reason}: {detail}")

    # -- views

    @property
    def packets_received(self) -> int:
        """RTP packets heard from the device."""
        return self.receiver.packets_received

    def describe(self) -> dict[str, Any]:
        """``listRtpServer``'s item (ZLMediaKit's fields), plus the device and figures."""
        link = self.link
        return {
            "vhost": self.vhost,
            "app": self.app,
            "stream_id": self.stream_id,
            "port": self.port,
            "ssrc": self.ssrc,
            "tcp_mode": self.tcp_mode,
            "only_track": self.only_track,
            "peer": f"{link.peer[0]}:{link.peer[1]}" if link is not None else None,
            "packets_received": self.receiver.packets_received,
            "bytes_received": self.receiver.bytes_received,
            "talking_back": self.talker is not None,
        }


@implementer(IDeviceLink)
class SharedLink:
    """The RTP server's device connection lent to a talk session: closing it only gives it back."""

    def __init__(self, server: RtpServer, link: IDeviceLink) -> None:
        self.peer = link.peer
        self.framing = link.framing
        self.whole_packets = link.whole_packets
        self.write = link.write
        self._server = server
        self._link = link
        self._host: Any = None

    @property
    def queued(self) -> int:
        """What waits on the device's connection."""
        return int(self._link.queued)

    def close(self, abort: bool) -> None:
        """The talk session ended: the device's connection stays the RTP server's."""
        if self._server.talker is self._host:
            self._server.talker = None

    def pause_reading(self) -> None:
        """Not the talk session's to pause: what the device sends goes to the RTP server,
        whose receiver throttles the connection itself."""

    def resume_reading(self) -> None:
        """Nothing was paused."""


@implementer(ITalkTransport)
class TalkBackTransport:
    """``startSendRtpTalk``: the talk session's device is the one connected to an RTP server."""

    def __init__(self, server: RtpServer) -> None:
        self.server = server
        self.port = 0

    def open(self, host: IDeviceHost) -> int:
        """Lend the server's connection to ``host`` at once; RtpServerNotFound without one."""
        server = self.server
        link = server.link
        if server.closed or link is None:
            raise RtpServerNotFound(
                f"no device is connected to the RTP server {server.app}/{server.stream_id} "
                "yet; startSendRtpTalk needs the device's own stream first")
        if server.talker is not None:
            server.talker.device_closed("another startSendRtpTalk took the connection")
        shared = SharedLink(server, link)
        shared._host = host
        server.talker = host
        self.port = server.port
        host.device_connected(shared)
        return self.port

    def close(self) -> None:
        """Nothing is held while waiting: the connection is the server's."""


class RtpServers:
    """Every open RTP server by (vhost, app, stream_id): open, find, close, list, timeouts."""

    def __init__(self, reactor: Any, pool: PortPool, registry: Any,
                 timeout: float = DEFAULT_RTP_TIMEOUT) -> None:
        self.reactor = reactor
        self.pool = pool
        self.registry = registry
        self.timeout = timeout
        self._servers: dict[RtpServerKey, RtpServer] = {}
        self._timeout_listeners: list[Callable[[RtpServer], Any]] = []

    def on_timeout(self, listener: Callable[[RtpServer], Any]) -> None:
        """Call ``listener(server)`` when a server closes for want of audio."""
        self._timeout_listeners.append(listener)

    def open(self, key: RtpServerKey, **options: Any) -> RtpServer:
        """Open an RTP server; RtpServerExists, NameTaken or a PortError if it cannot be."""
        if key in self._servers:
            raise RtpServerExists(f"This stream already exists: the RTP server {key[1]}/{key[2]} "
                                  "is open; close it first (closeRtpServer)")
        existing = self.registry.find(key[1], key[2])
        if existing is not None and not existing.ended:
            raise NameTaken(key[1], key[2])
        options.setdefault("timeout", self.timeout)
        server = RtpServer(key, reactor=self.reactor, pool=self.pool, registry=self.registry,
                           on_closed=self._closed, **options)
        server.open()
        self._servers[key] = server
        return server

    def find(self, key: RtpServerKey) -> RtpServer | None:
        """The open server of this key, if any."""
        return self._servers.get(key)

    def find_stream(self, vhost: str, app: str, stream_id: str) -> RtpServer | None:
        """The server of ``vhost/app/stream_id``, else the one server named ``stream_id``."""
        server = self._servers.get((vhost, app, stream_id))
        if server is not None:
            return server
        named = [found for found in self._servers.values() if found.stream_id == stream_id]
        return named[0] if len(named) == 1 else None

    def close(self, key: RtpServerKey) -> bool:
        """``closeRtpServer``: True if one was open (``hit``)."""
        server = self._servers.get(key)
        return server.close() if server is not None else False

    def list(self) -> list[RtpServer]:
        """Every open server, by key."""
        return [self._servers[key] for key in sorted(self._servers)]

    def close_all(self, why: str = "shutdown") -> None:
        """Close every server (service shutdown)."""
        for server in list(self._servers.values()):
            server.close(why)

    def _closed(self, server: RtpServer, why: str) -> None:
        if self._servers.get(server.key) is server:
            del self._servers[server.key]
        if server.timed_out:
            for listener in tuple(self._timeout_listeners):
                try:
                    listener(server)
                except Exception:
                    log.failure("RTP server timeout listener failed")
