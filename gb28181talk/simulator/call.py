"""The media of one simulated call: open what the SDP says, hear it, talk back, write the WAV.

A broadcast call offers first (:meth:`DeviceCall.offer`: a TCP listener or UDP socket is
opened for the passive and UDP modes), then follows the platform's answer
(:meth:`DeviceCall.follow_answer`: dial, or wait).  A talk call answers the platform's offer
(:meth:`DeviceCall.answer_offer`) and starts on the ACK (:meth:`DeviceCall.start_talk`).
What arrives feeds a :class:`~gb28181talk.device.media.DeviceMedia`; a talk call also
speaks a tone or a WAV file through :class:`~gb28181talk.device.voice.DeviceVoice`.  The
quirks of :class:`~gb28181talk.simulator.options.Quirks` act here on the media.
"""

from __future__ import annotations

import math
import os
import socket
import struct
from array import array
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from gb28181talk.device.figures import StreamFigures
from gb28181talk.device.media import DeviceMedia
from gb28181talk.device.protocol import (
    DeviceDatagramProtocol,
    DeviceMediaFactory,
    DeviceMediaProtocol,
    connect_talk_port,
)
from gb28181talk.device.voice import DeviceVoice
from gb28181talk.media import wav
from gb28181talk.media.framing import Framing, frame
from gb28181talk.media.payload import Packaging
from gb28181talk.signalling.sdp import AudioSdp, answer_for_offer
from gb28181talk.simulator.options import DeviceConfig, MediaMode

__all__ = ["DeviceCall", "describe_figures", "receiver_report", "tone"]

_log = Logger()

RTCP_SECONDS = 5.0
SLOW_READ_SECONDS = 2.0
SLOW_READ_BUFFER = 4096
DISCARD_PORT = 9
"""The port a TCP-active side writes in its SDP (RFC 4145: it does not listen)."""


def tone(frequency: float, start: int, count: int, amplitude: int = 8000) -> bytes:
    """``count`` samples of a sine at ``frequency`` (8 kHz PCM16), from sample ``start`` on."""
    step = 2 * math.pi * frequency / 8000
    values = array("h", (int(amplitude * math.sin(step * n)) for n in range(start, start + count)))
    return values.tobytes()


def receiver_report(ssrc: int) -> bytes:
    """An 8-byte RTCP receiver report with no report block (RFC 3550 §6.4.2)."""
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc & 0xFFFFFFFF)


def describe_figures(figures: StreamFigures, audio_seconds: float) -> str:
    """One line of a stream's figures: packets, lost, jitter, SSRC, audio heard."""
    ssrcs = ",".join(f"{ssrc:010d}" for ssrc in figures.ssrcs) or "none"
    return (
        f"{figures.packets} packets, {figures.lost} lost, jitter {figures.jitter_ms:.1f} ms, "
        f"SSRC {ssrcs}, {audio_seconds:.1f} s audio"
    )


class _Listener(DeviceMediaFactory):
    """The device's media listener: the first connection wins and the port closes."""

    def __init__(self, build: Callable[[], DeviceMediaProtocol], accepted: Callable[[], None]):
        super().__init__(build)
        self._accepted_one = accepted

    def buildProtocol(self, addr: Any) -> DeviceMediaProtocol | None:
        protocol = super().buildProtocol(addr)
        if protocol is not None:
            self._accepted_one()
        return protocol


class _Heard(DeviceMediaProtocol):
    """A talk connection that tells its call when it closes."""

    on_lost: Callable[[], None] | None = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        if self.on_lost is not None:
            self.on_lost()


class DeviceCall:
    """One call's media on the device: broadcast (it hears) or talk (it hears and speaks)."""

    def __init__(
        self,
        reactor: Any,
        config: DeviceConfig,
        kind: str,
        number: int,
        *,
        say: Callable[[str], None] = print,
        on_media_closed: Callable[[DeviceCall], None] = lambda call: None,
    ) -> None:
        self.reactor = reactor
        self.config = config
        self.kind = kind
        self.number = number
        self.call_id = ""
        """The SIP Call-ID of the call (set by the UA)."""
        self.say = say
        self.on_media_closed = on_media_closed
        self.media = DeviceMedia()
        self.protocol: DeviceMediaProtocol | None = None
        self.datagram: DeviceDatagramProtocol | None = None
        self.listening: Any = None
        self.voice: DeviceVoice | None = None
        self.ssrc: int | None = None
        self.connected: Deferred[None] = Deferred()
        """Fires once the media path is up (connected, accepted, or the UDP socket open)."""
        self.connect_failed: str | None = None
        self.started_at: float | None = None
        self.ended = False
        self.wav_path: str | None = None
        self._loops: list[LoopingCall] = []
        self._calls: list[Any] = []
        self._spoken = 0
        self._talk_audio: bytes | None = None

    @property
    def name(self) -> str:
        """``<device id> broadcast 1``: how the call is named in what it prints."""
        return f"{self.config.device_id} {self.kind} {self.number}"

    @property
    def heard_audio(self) -> bool:
        """Whether any audio came."""
        return self.media.audio_seconds > 0

    # ---------------------------------------------------------------- broadcast
    def offer(self) -> AudioSdp:
        """The broadcast offer (``s=Play``, recvonly); the listener or socket it names is open."""
        config = self.config
        mode = config.mode
        port = DISCARD_PORT
        if mode is MediaMode.TCP_PASSIVE:
            port = self._listen_tcp()
        elif mode is MediaMode.UDP:
            port = self._listen_udp(None)
        payload = config.payload
        tcp = mode is not MediaMode.UDP
        return AudioSdp(
            session_name="Play",
            origin_user=config.device_id,
            origin_address=config.local_host,
            connection_address=config.local_host,
            port=port,
            transport="TCP/RTP/AVP" if tcp else "RTP/AVP",
            payload_types=(payload.payload_type,),
            rtpmap=((payload.payload_type, payload.rtpmap),),
            setup=("active" if mode is MediaMode.TCP_ACTIVE else "passive") if tcp else None,
            connection="new" if tcp else None,
            direction="recvonly",
            ssrc=None if config.quirks.no_ssrc else config.offer_ssrc,
            f_line="v/////a/1/8/1",
        )

    def follow_answer(self, answer: AudioSdp) -> None:
        """The platform's 200 came: dial it (TCP active), or keep waiting for it."""
        self.ssrc = answer.ssrc
        self._begin()
        if self.config.mode is MediaMode.TCP_ACTIVE:
            if self.config.quirks.never_connect:
                self.say(f"{self.name}: never connecting (quirk)")
                self._fail_connect("never-connect quirk")
                return
            self._dial(answer.device_address, answer.port)
        elif self.config.quirks.never_connect:
            self._close_listeners()
            self._fail_connect("never-connect quirk")

    # ---------------------------------------------------------------- talk
    def answer_offer(self, offer: AudioSdp) -> AudioSdp:
        """Our answer to a platform's talk offer; a listener or socket it names is open."""
        config = self.config
        self.ssrc = offer.ssrc
        port = DISCARD_PORT
        if not offer.is_tcp:
            port = self._listen_udp((offer.device_address, offer.port))
        elif not offer.wants_passive_server:  # the platform offered setup:passive? we dial
            pass
        elif offer.setup in ("active", "actpass", None):
            port = self._listen_tcp()
        answer = answer_for_offer(
            offer,
            address=config.local_host,
            port=port,
            origin_user=config.device_id,
            payload_type=config.payload.payload_type,
        )
        if config.quirks.no_ssrc:
            answer = replace(answer, ssrc=None)
        self._offer = offer
        return answer

    def start_talk(self) -> None:
        """The talk call is confirmed (or, connecting before ACK, answered): connect, speak."""
        if self.started_at is not None:
            return
        offer = self._offer
        self._begin()
        if offer.is_tcp and offer.setup == "passive":
            if self.config.quirks.never_connect:
                self.say(f"{self.name}: never connecting (quirk)")
                self._fail_connect("never-connect quirk")
                return
            self._dial(offer.device_address, offer.port)
        self._start_voice(offer)

    # ---------------------------------------------------------------- opening
    def _build_protocol(self) -> DeviceMediaProtocol:
        protocol = _Heard(self.reactor, self.media, self._make_voice())
        protocol.on_lost = self._lost
        self.protocol = protocol
        protocol.made.addCallback(self._made)
        return protocol

    def _listen_tcp(self) -> int:
        factory = _Listener(self._build_protocol, self._close_listeners)
        self.listening = self.reactor.listenTCP(0, factory, interface=self.config.local_host)
        return int(self.listening.getHost().port)

    def _listen_udp(self, platform: tuple[str, int] | None) -> int:
        self.datagram = DeviceDatagramProtocol(
            self.reactor, self.media, self._make_voice(), platform=platform
        )
        self.listening = self.reactor.listenUDP(
            0, self.datagram, interface=self.config.local_host
        )
        self._up()
        return int(self.listening.getHost().port)

    def _dial(self, host: str, port: int) -> None:
        self.say(f"{self.name}: connecting to {host}:{port}")
        dialing = connect_talk_port(self.reactor, port, self._build_protocol(), host=host)
        dialing.addErrback(lambda failure: self._fail_connect(failure.getErrorMessage()))

    def _made(self, protocol: DeviceMediaProtocol) -> DeviceMediaProtocol:
        if self.config.quirks.slow_read:
            self._read_slowly(protocol)
        self._up()
        return protocol

    def _up(self) -> None:
        if not self.connected.called:
            self.connected.callback(None)

    def _fail_connect(self, why: str) -> None:
        self.connect_failed = why
        if not self.connected.called:
            self.connected.callback(None)
        if why != "never-connect quirk":
            self.say(f"{self.name}: media connection failed: {why}")
            self.on_media_closed(self)

    def _read_slowly(self, protocol: DeviceMediaProtocol) -> None:
        transport = protocol.transport
        handle = getattr(transport, "getHandle", lambda: None)()
        if isinstance(handle, socket.socket):
            handle.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_READ_BUFFER)
        transport.pauseProducing()

        def window() -> None:
            if self.ended or protocol.close_reason is not None:
                return
            transport.resumeProducing()
            self._calls.append(self.reactor.callLater(0.01, transport.pauseProducing))

        self._every(SLOW_READ_SECONDS, window, now=False)

    def _begin(self) -> None:
        self.started_at = self.reactor.seconds()
        if self.config.report_seconds > 0:
            self._every(self.config.report_seconds, self.report, now=False)
        if self.config.call_seconds is not None:
            self._calls.append(
                self.reactor.callLater(self.config.call_seconds, self.on_media_closed, self)
            )
        if self.config.quirks.rtcp:
            self._every(RTCP_SECONDS, self._send_rtcp, now=False)

    def _every(self, seconds: float, work: Callable[[], None], *, now: bool) -> None:
        loop = LoopingCall(work)
        loop.clock = self.reactor
        loop.start(seconds, now=now).addErrback(
            lambda failure: _log.failure("simulator loop failed", failure)
        )
        self._loops.append(loop)

    # ---------------------------------------------------------------- speaking
    def _make_voice(self) -> DeviceVoice | None:
        if self.kind != "talk":
            return None
        if self.voice is None:
            config = self.config
            quirks = config.quirks
            ssrc = self.ssrc if self.ssrc is not None else config.offer_ssrc
            ps = quirks.ps_voice or config.codec == "ps"
            if quirks.wrong_ssrc:
                ssrc = (ssrc + 1) & 0xFFFFFFFF
            self.voice = DeviceVoice(
                ssrc,
                config.law,
                packaging=Packaging.PS if ps else Packaging.RAW,
                packet_ms=config.packet_ms,
                framing=Framing.NONE if quirks.no_prefix else Framing.RFC4571,
            )
        return self.voice

    def _start_voice(self, offer: AudioSdp) -> None:
        if offer.direction not in (None, "sendrecv", "recvonly"):
            return
        if self.config.talk_wav is not None:
            self._talk_audio = wav.load_8k_mono(self.config.talk_wav)
        self._every(self.config.packet_ms / 1000, self._speak, now=False)

    def _next_audio(self, count: int) -> bytes:
        start = self._spoken
        self._spoken += count
        audio = self._talk_audio
        if not audio:
            return tone(self.config.tone_hz, start, count)
        size = len(audio) // 2
        out = bytearray()
        offset = start % size
        while len(out) < count * 2:
            piece = audio[offset * 2 : (offset + count) * 2 - len(out)]
            out += piece
            offset = 0
        return bytes(out)

    def _speak(self) -> None:
        pcm = self._next_audio(8 * self.config.packet_ms)
        if self.datagram is not None:
            self.datagram.speak(pcm)
        elif self._can_write():
            assert self.protocol is not None
            self.protocol.speak(pcm)

    def _can_write(self) -> bool:
        protocol = self.protocol
        if protocol is None or protocol.close_reason is not None:
            return False
        return protocol.transport is not None

    def _send_rtcp(self) -> None:
        report = receiver_report(self.ssrc or self.config.offer_ssrc)
        if self.datagram is not None and self.datagram.platform is not None:
            if self.datagram.transport is not None:
                self.datagram.transport.write(report, self.datagram.platform)
        elif self.protocol is not None and self.protocol.close_reason is None:
            framing = Framing.NONE if self.config.quirks.no_prefix else Framing.RFC4571
            self.protocol.send(frame(report, framing))

    # ---------------------------------------------------------------- ending
    def _lost(self) -> None:
        if not self.ended:
            self.say(f"{self.name}: the platform closed the media connection")
            self.on_media_closed(self)

    def report(self) -> str:
        """Print (and return) the stream's figures now."""
        line = f"{self.name}: {describe_figures(self.media.figures(), self.media.audio_seconds)}"
        self.say(line)
        return line

    def _close_listeners(self) -> None:
        if self.listening is not None:
            listening, self.listening = self.listening, None
            stop = getattr(listening, "stopListening", None)
            if stop is not None:
                stop()

    def stop(self) -> None:
        """End the media: loops and timers stopped, sockets closed, figures printed, WAV written."""
        if self.ended:
            return
        self.ended = True
        for loop in self._loops:
            if loop.running:
                loop.stop()
        for call in self._calls:
            if call.active():
                call.cancel()
        if self.protocol is not None and self.protocol.close_reason is None:
            self.protocol.hang_up()
        self._close_listeners()
        self.report()
        if self.heard_audio:
            os.makedirs(self.config.wav_dir, exist_ok=True)
            path = os.path.join(
                self.config.wav_dir, f"{self.config.device_id}-{self.kind}-{self.number}.wav"
            )
            self.media.write_wav(path)
            self.wav_path = path
            self.say(f"{self.name}: wrote {path}")
        else:
            self.say(f"{self.name}: no audio heard")
