"""The simulator on real loopback sockets against a platform double: the WAV carries the tone.

The platform double is the same SIP layer as the in-memory tests (digest registrar) on a real
UDP socket; its media side is a plain TCP listener or UDP socket sending PCMA RTP of a tone,
or, for talk, a TCP listener recording what the device says.  The simulator runs as
``gb28181talk-device`` does (``open_device`` on the real reactor), writing its WAV to a
temporary directory.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.trial.unittest import TestCase

from gb28181talk.device.media import DeviceMedia
from gb28181talk.media import g711, wav
from gb28181talk.media.framing import frame_rfc4571
from gb28181talk.media.law import Law
from gb28181talk.media.rtp import Packetizer
from gb28181talk.signalling.manscdp import BroadcastNotify, build_xml
from gb28181talk.signalling.sdp import answer_for_offer, build_sdp, parse_sdp
from gb28181talk.simulator.call import tone
from gb28181talk.simulator.cli import open_device
from gb28181talk.simulator.options import DeviceConfig, MediaMode
from gb28181talk.sip.dialog import DialogLayer
from gb28181talk.sip.message import request
from gb28181talk.sip.transaction import Timers
from gb28181talk.sip.transport import SipDatagramProtocol, via_for
from tests.audiocheck import dominant_frequency
from tests.httpapi import until
from tests.test_simulator_ua import (
    DEVICE_ID,
    PASSWORD,
    PLATFORM_ID,
    REALM,
    Platform,
    _talk_offer,
)

TONE_HZ = 600
TALK_HZ = 1400
SECONDS = 1.0


def waiting_for(condition: Any, timeout: float = 10.0) -> Deferred[None]:
    """Turn the reactor until ``condition()`` holds."""
    return Deferred.fromCoroutine(until(condition, timeout))


def _tone_packets(seconds: float) -> list[bytes]:
    packetizer = Packetizer(123456, 8, 20)
    pcm = tone(TONE_HZ, 0, int(8000 * seconds))
    return [packet.encode() for packet in packetizer.push(g711.encode(Law.ALAW, pcm))]


class _Speaker(Protocol):
    """The platform's media connection: sends the tone at once, records what comes back."""

    def __init__(self, heard: DeviceMedia) -> None:
        self.heard = heard

    def connectionMade(self) -> None:
        self.transport.write(b"".join(frame_rfc4571(p) for p in _tone_packets(SECONDS)))

    def dataReceived(self, data: bytes) -> None:
        self.heard.receive(data, reactor.seconds())


class SimulatorLoopbackTests(TestCase):
    """One platform double on a real UDP socket; the simulator as its command line runs it."""

    timeout = 30

    def setUp(self) -> None:
        self.platform = Platform(reactor)
        self.layer = DialogLayer(
            reactor, self.platform, via=lambda ch: via_for(ch, "127.0.0.1", self.sip_port),
            timers=Timers(t1=0.1, t2=0.4, t4=0.5, d=1.0),
        )
        self.sip = SipDatagramProtocol(self.layer.transactions)
        self.sip_listener = reactor.listenUDP(0, self.sip, interface="127.0.0.1")
        self.sip_port = self.sip_listener.getHost().port
        self.wav_dir = tempfile.mkdtemp()
        self.heard = DeviceMedia()
        self.closers: list[Any] = [self.sip_listener]
        self.devices: list[Any] = []

    @inlineCallbacks
    def tearDown(self):
        for ua in self.devices:
            ua.close()
        self.layer.transactions.shutdown()
        for closer in self.closers:
            yield closer.stopListening()

    @inlineCallbacks
    def _device(self, **settings: Any) -> Any:
        config = DeviceConfig(
            device_id=DEVICE_ID, domain=REALM, password=PASSWORD,
            server=("127.0.0.1", self.sip_port), server_id=PLATFORM_ID,
            local_host="127.0.0.1", wav_dir=self.wav_dir, report_seconds=0, **settings,
        )
        ua = yield open_device(reactor, config)
        self.closers.append(ua.sip_port)
        self.devices.append(ua)
        yield waiting_for(lambda: ua.registered)
        return ua

    def _channel(self, ua: Any) -> Any:
        return self.sip.channel_to(("127.0.0.1", ua.local_port))

    def _notify(self, ua: Any) -> None:
        headers = [
            ("Via", via_for(self.sip.channel_to(("127.0.0.1", 0)), "127.0.0.1", self.sip_port)),
            ("From", f"<sip:{PLATFORM_ID}@{REALM}>;tag=n"),
            ("To", f"<sip:{DEVICE_ID}@{REALM}>"),
            ("Call-ID", "notify-1"),
            ("CSeq", "1 MESSAGE"),
            ("Max-Forwards", "70"),
            ("Content-Type", "Application/MANSCDP+xml"),
        ]
        body = build_xml(BroadcastNotify(1, PLATFORM_ID, ua.audio_channel))
        self.layer.send(request("MESSAGE", f"sip:{DEVICE_ID}@127.0.0.1:{ua.local_port}",
                                headers, body), self._channel(ua))

    @inlineCallbacks
    def _broadcast(self, mode: MediaMode) -> Any:
        ua = yield self._device(mode=mode)
        self._notify(ua)
        yield waiting_for(lambda: self.platform.invites)
        transaction, invite = self.platform.invites[-1]
        offer = parse_sdp(invite.body)
        if mode is MediaMode.TCP_ACTIVE:
            factory = Factory.forProtocol(lambda: _Speaker(self.heard))
            listener = reactor.listenTCP(0, factory, interface="127.0.0.1")
            self.closers.append(listener)
            port = listener.getHost().port
        else:
            port = 9
        answer = answer_for_offer(offer, address="127.0.0.1", port=port, origin_user=PLATFORM_ID)
        self.layer.answer(transaction, contact=f"sip:{PLATFORM_ID}@127.0.0.1:{self.sip_port}",
                          headers=[("Content-Type", "application/sdp")],
                          body=build_sdp(answer).encode())
        yield waiting_for(lambda: self.platform.confirmed)
        if mode is MediaMode.UDP:
            sender = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
            self.closers.append(sender)
            for packet in _tone_packets(SECONDS):
                sender.write(packet, (offer.device_address, offer.port))
        call = next(iter(ua.calls.values()))
        yield waiting_for(lambda: call.media.audio_seconds >= SECONDS - 0.05)
        self.layer.bye(self.platform.confirmed[-1])
        yield waiting_for(lambda: call.wav_path is not None)
        pcm = wav.load_8k_mono(call.wav_path)
        self.assertEqual(dominant_frequency(pcm, range(200, 2000, 100)), TONE_HZ)
        figures = call.media.figures()
        self.assertEqual((figures.lost, figures.ssrcs), (0, (123456,)))
        yield ua.stop()
        self.assertEqual(self.platform.requests[-1].header("Expires"), "0")

    def test_tcp_active_broadcast_writes_the_tone_to_the_wav(self):
        return self._broadcast(MediaMode.TCP_ACTIVE)

    def test_udp_broadcast_writes_the_tone_to_the_wav(self):
        return self._broadcast(MediaMode.UDP)

    @inlineCallbacks
    def test_talk_device_dials_speaks_its_tone_and_records_ours(self):
        ua = yield self._device(tone_hz=TALK_HZ)
        factory = Factory.forProtocol(lambda: _Speaker(self.heard))
        listener = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.closers.append(listener)
        offer = _talk_offer("passive")
        offer = replace(offer, origin_address="127.0.0.1", connection_address="127.0.0.1",
                        port=listener.getHost().port)
        headers = [
            ("Via", via_for(self._channel(ua), "127.0.0.1", self.sip_port)),
            ("From", f"<sip:{PLATFORM_ID}@{REALM}>;tag=t"),
            ("To", f"<sip:{DEVICE_ID}@{REALM}>"),
            ("Call-ID", "talk-loop"),
            ("CSeq", "1 INVITE"),
            ("Contact", f"<sip:{PLATFORM_ID}@127.0.0.1:{self.sip_port}>"),
            ("Max-Forwards", "70"),
            ("Content-Type", "application/sdp"),
        ]
        self.layer.send(request("INVITE", f"sip:{DEVICE_ID}@127.0.0.1:{ua.local_port}", headers,
                                build_sdp(offer).encode()), self._channel(ua))
        yield waiting_for(lambda: self.platform.confirmed)
        yield waiting_for(lambda: self.heard.audio_seconds >= SECONDS)
        call = ua.calls["talk-loop"]
        yield waiting_for(lambda: call.media.audio_seconds >= SECONDS - 0.05)
        self.assertEqual(dominant_frequency(self.heard.pcm16(), range(200, 2000, 100)), TALK_HZ)
        self.assertEqual(self.heard.figures().ssrcs, (offer.ssrc,))
        self.layer.bye(self.platform.confirmed[-1])
        yield waiting_for(lambda: call.wav_path is not None)
        pcm = wav.load_8k_mono(call.wav_path)
        self.assertEqual(dominant_frequency(pcm, range(200, 2000, 100)), TONE_HZ)
        yield ua.stop()
