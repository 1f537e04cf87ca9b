"""Test doubles for code that drives talk sessions: no sockets, no real time.

For people composing gb28181talk into their own SIP stack as much as for our
own tests: a reactor whose ports can be "held by another process", a source
that plays a given list of frames, an observer and a sink that record what
they are told, and a fake device that connects to a session in memory and
decodes the RTP it receives.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError, ConnectionDone
from twisted.internet.interfaces import IReactorTime
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from gb28181talk.device.media import Depth, DeviceMedia
from gb28181talk.device.voice import DeviceVoice
from gb28181talk.interfaces import FRAME_BYTES, IAudioSink, IAudioSource, ISessionObserver
from gb28181talk.media.framing import Framing
from gb28181talk.media.law import Law
from gb28181talk.media.rtp import RtpPacket


class BusyPortsReactor(MemoryReactorClock):
    """A memory reactor where the ports in ``busy`` are held by "another process"."""

    def __init__(self, busy: Iterable[int] = ()) -> None:
        super().__init__()
        self.busy = set(busy)

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        if port in self.busy:
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        return super().listenTCP(port, factory, backlog, interface)

    def factory_on(self, port: int) -> Any:
        """The factory most recently bound on ``port``."""
        for bound_port, factory, _backlog, _interface in reversed(self.tcpServers):
            if bound_port == port:
                return factory
        raise LookupError(f"nothing listened on port {port}")


@implementer(IAudioSource)
class ListSource:
    """Plays the given frames (320-byte PCM16 or None for a gap), then ends or repeats."""

    kind = "list"

    def __init__(
        self,
        frames: Iterable[bytes | None],
        app: str = "test",
        stream: str = "list",
        loop: bool = False,
    ) -> None:
        self.app = app
        self.stream = stream
        self.frames = list(frames)
        self.loop = loop
        self.position = 0
        self.reads = 0
        self.ended = not self.frames
        self.closed = False

    @classmethod
    def counting(cls, count: int, **kwargs: Any) -> ListSource:
        """Frames of constant level, each unlike its neighbours: easy to follow after G.711."""
        frames = [
            (((i % 128) - 64) * 256).to_bytes(2, "little", signed=True) * (FRAME_BYTES // 2)
            for i in range(count)
        ]
        return cls(frames, **kwargs)

    def read_frame(self) -> bytes | None:
        self.reads += 1
        if self.position >= len(self.frames):
            if not self.loop or not self.frames:
                self.ended = True
                return None
            self.position = 0
        frame = self.frames[self.position]
        self.position += 1
        return frame

    def describe(self) -> dict[str, Any]:
        return {"app": self.app, "stream": self.stream, "kind": self.kind}

    def close(self) -> None:
        self.closed = True
        self.ended = True


@implementer(ISessionObserver)
class RecordingObserver:
    """Records every session event as a tuple, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def session_started(self, session: Any) -> None:
        self.events.append(("started", session.id, session.port))

    def session_connected(self, session: Any, peer: tuple[str, int]) -> None:
        self.events.append(("connected", session.id, peer))

    def device_refused(self, session: Any, peer: tuple[str, int], why: str) -> None:
        self.events.append(("refused", session.id, peer, why))

    def session_ended(self, session: Any, reason: str, stats: Any) -> None:
        self.events.append(("ended", session.id, reason, stats))

    def ended(self, session_id: str | None = None) -> list[tuple[Any, ...]]:
        """The ``ended`` events (of one session, or all)."""
        return [
            event
            for event in self.events
            if event[0] == "ended" and (session_id is None or event[1] == session_id)
        ]


@implementer(IAudioSink)
class RecordingSink:
    """Keeps the device audio it receives."""

    def __init__(self) -> None:
        self.chunks: list[tuple[bytes, int]] = []
        self.ended = False

    @property
    def pcm(self) -> bytes:
        return b"".join(chunk for chunk, _timestamp in self.chunks)

    def audio_received(self, pcm16: bytes, rtp_timestamp: int) -> None:
        self.chunks.append((pcm16, rtp_timestamp))

    def audio_ended(self) -> None:
        self.ended = True


class _DeviceTransport(StringTransport):
    """A StringTransport that, while its device reads, drains at once (tells a pull producer)."""

    reading = True

    def write(self, data: bytes) -> None:
        super().write(data)
        self._drained()

    def writeSequence(self, data: Any) -> None:
        super().write(b"".join(data))
        self._drained()

    def _drained(self) -> None:
        if self.reading and self.producer is not None and not self.streaming:
            self.producer.resumeProducing()


class FakeDevice:
    """A device connected to a talk session in memory: the package's device media core hears it.

    It reads everything at once unless ``stop_reading()`` is called: then what
    the session writes piles up unacknowledged, as with a stuck device.  What it
    heard is in ``media`` (a `DeviceMedia`: figures, packets, audio, WAV); what it
    says goes through ``voice`` (`speak`), or as raw bytes through `send`.
    """

    def __init__(
        self,
        host: str = "127.0.0.2",
        port: int = 40000,
        framing: Framing = Framing.RFC4571,
        voice: DeviceVoice | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.transport = _DeviceTransport(peerAddress=IPv4Address("TCP", host, port))
        self.protocol: Any = None
        self.voice = voice
        self.media = DeviceMedia(Depth.AUDIO, framing, keep_packets=True, strict=True)
        self._reactor: IReactorTime | None = None
        self._consumed = 0

    @property
    def packets(self) -> list[RtpPacket]:
        """Every RTP packet received so far, in order (as far as `receive` has looked)."""
        return self.media.packets

    def connect(self, reactor: BusyPortsReactor, talk_port: int) -> bool:
        """Dial the session listening on ``talk_port``; False if it refused the connection."""
        self._reactor = reactor
        factory = reactor.factory_on(talk_port)
        self.protocol = factory.buildProtocol(IPv4Address("TCP", self.host, self.port))
        if self.protocol is None:
            return False
        self.protocol.makeConnection(self.transport)
        return True

    def stop_reading(self) -> None:
        """Stop reading: nothing written from now on is acknowledged."""
        self.transport.reading = False

    def resume_reading(self) -> None:
        """Read again: everything waiting is taken at once."""
        self.transport.reading = True
        if self.transport.producer is not None:
            self.transport.producer.resumeProducing()

    def receive(self) -> list[RtpPacket]:
        """Hand what arrived since the last call to the media core; returns the new packets.

        A frame that is not RTP raises RtpError, bytes that are not framed RTP FramingError.
        """
        data = self.transport.value()
        fresh, self._consumed = data[self._consumed :], len(data)
        before = len(self.media.packets)
        now = self._reactor.seconds() if self._reactor is not None else 0.0
        self.media.receive(fresh, now)
        return self.media.packets[before:]

    def audio(self, law: Law | None = None) -> bytes:
        """All PCM16 received so far (raw or PS by payload type; ``law`` forces a law)."""
        self.receive()
        return self.media.pcm16(law)

    def send(self, data: bytes) -> None:
        """Bytes from the device to the session."""
        self.protocol.dataReceived(data)

    def speak(self, pcm16: bytes) -> int:
        """The device talks back: the whole packets of ``pcm16`` through its voice."""
        if self.voice is None:
            raise RuntimeError("this FakeDevice has no voice: FakeDevice(voice=DeviceVoice(...))")
        data = self.voice.speak(pcm16)
        if data:
            self.send(data)
        return len(data)

    def hang_up(self) -> None:
        """The device closes the connection."""
        self.transport.loseConnection()
        self.protocol.connectionLost(Failure(ConnectionDone()))
