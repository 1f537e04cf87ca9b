"""Twisted adapters that put a device's media core on a real connection: TCP or UDP.

Thin: they translate connection events into `DeviceMedia` inputs, stamped with the injected
reactor's clock, and write what `DeviceVoice` says.  A device either dials the talk port
(`connect_talk_port`: the platform listens, TCP passive on its side) or listens for the
platform (`DeviceMediaFactory`: the platform dials, TCP active on its side); a UDP device
receives datagrams (`DeviceDatagramProtocol`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IAddress, IReactorTCP, IReactorTime
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from gb28181talk.device.media import DeviceMedia
from gb28181talk.device.voice import DeviceVoice
from gb28181talk.errors import MediaError
from gb28181talk.media.law import Law
from gb28181talk.media.rtp import RtpPacket

__all__ = [
    "DeviceDatagramProtocol",
    "DeviceMediaFactory",
    "DeviceMediaProtocol",
    "connect_talk_port",
]

log = Logger()

_P = TypeVar("_P", bound="DeviceMediaProtocol")


class DeviceMediaProtocol(Protocol):
    """One device's talk connection: what arrives feeds ``media``; ``speak`` talks back.

    ``made`` fires with the protocol once connected, ``closed`` with None once the connection
    is gone (``close_reason`` says why); `next_data` fires when more bytes came.  A stream that
    is not framed RTP is kept in ``error`` and nothing more is fed (the connection stays up:
    its owner decides).
    """

    def __init__(
        self,
        clock: IReactorTime,
        media: DeviceMedia | None = None,
        voice: DeviceVoice | None = None,
    ) -> None:
        self.clock = clock
        self.media = media if media is not None else DeviceMedia(keep_packets=True)
        self.voice = voice
        self.made: Deferred[DeviceMediaProtocol] = Deferred()
        self.closed: Deferred[None] = Deferred()
        self.close_reason: Failure | None = None
        self.error: MediaError | None = None
        self.data_arrived: Deferred[None] | None = None

    def connectionMade(self) -> None:
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)  # small audio packets must not wait in the kernel
        self.made.callback(self)

    def dataReceived(self, data: bytes) -> None:
        if self.error is None:
            try:
                self.media.receive(data, self.clock.seconds())
            except MediaError as error:
                self.error = error
                log.warn("device: the talk stream is not RTP: {error}", error=error)
        waiter, self.data_arrived = self.data_arrived, None
        if waiter is not None:
            waiter.callback(None)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.error is None:
            try:
                self.media.end_of_stream(self.clock.seconds())
            except MediaError as error:
                self.error = error
        self.close_reason = reason
        self.closed.callback(None)

    def next_data(self) -> Deferred[None]:
        """Fires when the next bytes arrive."""
        if self.data_arrived is None:
            self.data_arrived = Deferred()
        return self.data_arrived

    def packets(self) -> list[RtpPacket]:
        """The RTP packets heard so far (the media core keeps them with ``keep_packets``)."""
        return self.media.packets

    def audio(self, law: Law | None = None) -> bytes:
        """The PCM16 heard so far; ``law`` decodes it all with that law."""
        return self.media.pcm16(law)

    def speak(self, pcm16: bytes) -> int:
        """Send the whole packets of ``pcm16`` through the voice; the bytes written."""
        if self.voice is None:
            raise RuntimeError("this device has no voice: give DeviceMediaProtocol a DeviceVoice")
        data = self.voice.speak(pcm16)
        if data and self.transport is not None:
            self.transport.write(data)
        return len(data)

    def send(self, data: bytes) -> None:
        """Write raw bytes to the platform (anything: a test's hand-made packets, garbage)."""
        if self.transport is not None:
            self.transport.write(data)

    def hang_up(self) -> None:
        """Close the connection after what was written has gone."""
        if self.transport is not None:
            self.transport.loseConnection()


def connect_talk_port(
    reactor: IReactorTCP,
    port: int,
    protocol: _P,
    host: str = "127.0.0.1",
    timeout: float = 5,
) -> Deferred[_P]:
    """Dial the platform's talk port as a device with ``a=setup:active`` does."""
    endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
    return connectProtocol(endpoint, protocol)


class DeviceMediaFactory(Factory):
    """A device listening for the platform (it offered ``a=setup:passive``); first one wins.

    ``build`` makes the protocol for the connection; ``accepted`` fires with it.  Later
    connections are refused (None), as a device has one talk connection.
    """

    def __init__(self, build: Callable[[], DeviceMediaProtocol]) -> None:
        self._build = build
        self.protocol_instance: DeviceMediaProtocol | None = None
        self.accepted: Deferred[DeviceMediaProtocol] = Deferred()

    def buildProtocol(self, addr: IAddress) -> DeviceMediaProtocol | None:
        if self.protocol_instance is not None:
            return None
        protocol = self.protocol_instance = self._build()
        protocol.made.addCallback(self._fire)
        return protocol

    def _fire(self, protocol: DeviceMediaProtocol) -> DeviceMediaProtocol:
        self.accepted.callback(protocol)
        return protocol


class DeviceDatagramProtocol(DatagramProtocol):
    """A device receiving its talk stream as UDP datagrams (``RTP/AVP`` without setup)."""

    def __init__(
        self,
        clock: IReactorTime,
        media: DeviceMedia | None = None,
        voice: DeviceVoice | None = None,
        platform: tuple[str, int] | None = None,
    ) -> None:
        self.clock = clock
        self.media = media if media is not None else DeviceMedia(keep_packets=True)
        self.voice = voice
        self.platform = platform
        """Where the device's voice goes; the first sender's address if not given."""

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if self.platform is None:
            self.platform = addr
        self.media.receive_packet(datagram, self.clock.seconds())

    def speak(self, pcm16: bytes) -> int:
        """Send the whole packets of ``pcm16`` as datagrams to the platform; the bytes sent."""
        if self.voice is None:
            raise RuntimeError("this device has no voice: give it a DeviceVoice")
        if self.platform is None or self.transport is None:
            return 0
        sent = 0
        for datagram in self.voice.datagrams(pcm16):
            self.transport.write(datagram, self.platform)
            sent += len(datagram)
        return sent
