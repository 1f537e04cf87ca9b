"""A real TCP device for loopback tests: the package's device adapter, keeping the raw bytes too."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred

from gb28181talk.device.media import DeviceMedia
from gb28181talk.device.protocol import DeviceMediaProtocol, connect_talk_port
from gb28181talk.media.framing import Framing
from gb28181talk.media.law import Law
from gb28181talk.media.rtp import RtpPacket


class DeviceClient(DeviceMediaProtocol):
    """Hears everything the media server sends; fires ``closed`` when the connection ends.

    ``received`` keeps the raw bytes as well, for tests that wait for an amount of them.
    """

    def __init__(self, framing: Framing = Framing.RFC4571) -> None:
        super().__init__(reactor, DeviceMedia(framing=framing, keep_packets=True, strict=True))
        self.received = bytearray()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        super().dataReceived(data)

    def packets(self) -> list[RtpPacket]:
        """The RTP packets heard; the media error if the stream was not framed RTP."""
        if self.error is not None:
            raise self.error
        return self.media.packets

    def audio(self, law: Law | None = Law.ALAW) -> bytes:
        """The PCM16 heard (decoded with ``law``; None: by payload type)."""
        self.packets()
        return self.media.pcm16(law)


def connect_device(port: int, host: str = "127.0.0.1") -> Deferred[DeviceClient]:
    """Dial a talk port as a device would."""
    return connect_talk_port(reactor, port, DeviceClient(), host)


def sleep(seconds: float) -> Deferred[None]:
    """Wait on the real reactor."""
    waiter: Deferred[None] = Deferred()
    reactor.callLater(seconds, waiter.callback, None)
    return waiter
