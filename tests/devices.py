"""A real TCP device for loopback tests: connects to a talk port, records and decodes the RTP."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from gb28181talk.media import g711
from gb28181talk.media.framing import FrameDecoder, Framing
from gb28181talk.media.law import Law
from gb28181talk.media.rtp import RtpPacket, parse_rtp


class DeviceClient(Protocol):
    """Records everything the media server sends; fires ``closed`` when the connection ends."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.made = Deferred()
        self.closed: Deferred[None] = Deferred()
        self.close_reason: Failure | None = None
        self.data_arrived: Deferred[None] | None = None

    def connectionMade(self) -> None:
        self.made.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        waiter, self.data_arrived = self.data_arrived, None
        if waiter is not None:
            waiter.callback(None)

    def connectionLost(self, reason: Failure) -> None:
        self.close_reason = reason
        self.closed.callback(None)

    def packets(self, framing: Framing = Framing.RFC4571) -> list[RtpPacket]:
        decoder = FrameDecoder(framing)
        frames = decoder.feed(bytes(self.received))
        if framing is Framing.NONE:
            frames += decoder.flush()
        return [parse_rtp(frame) for frame in frames]

    def audio(self, law: Law = Law.ALAW) -> bytes:
        return g711.decode(law, b"".join(packet.payload for packet in self.packets()))


def connect_device(port: int, host: str = "127.0.0.1") -> Deferred[DeviceClient]:
    """Dial a talk port as a device would."""
    return connectProtocol(TCP4ClientEndpoint(reactor, host, port, timeout=5), DeviceClient())


def sleep(seconds: float) -> Deferred[None]:
    """Wait on the real reactor."""
    waiter: Deferred[None] = Deferred()
    reactor.callLater(seconds, waiter.callback, None)
    return waiter
