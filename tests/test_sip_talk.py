"""Platform-placed two-way talk over bytes on a Clock: our INVITE, the device's answer, both ways.

The offer is ``s=Talk``, ``sendrecv``, ``a=setup:passive`` on a port that already
listens; the device's 200 picks the transport (it connects, it listens, or UDP); its
voice becomes the live source ``<app>/talk-<id>``; BYE either way ends both
directions; a talk ended before the device answers is CANCELled (487).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from gb28181talk.core.params import SessionState
from gb28181talk.device.voice import DeviceVoice
from gb28181talk.media.law import Law
from gb28181talk.media.rtp import parse_rtp
from gb28181talk.media.wav import read_wav
from gb28181talk.signalling.sdp import AudioSdp, build_sdp, parse_sdp
from gb28181talk.sip.calls import CallFlows
from gb28181talk.sip.message import response_for
from gb28181talk.sip.platform import Route
from gb28181talk.sip.talk import Talks, device_audio_name
from gb28181talk.testing import FakeDevice
from tests.sipdevice import DEVICE, DEVICE_ID, PLATFORM_ID, REALM, connect, pump
from tests.test_sip_broadcast import ADVERTISED, AUDIO_ID, MEDIA, CallDevice, _run, _setup


def _accept_our_dial(reactor: Any) -> tuple[Any, StringTransport]:
    """The listening device accepts the connection we dialled: (its protocol, its wire)."""
    host, port, factory, _timeout, _bind = reactor.tcpClients[-1]
    protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
    wire = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 41234),
                           peerAddress=IPv4Address("TCP", host, port))
    protocol.makeConnection(wire)
    return protocol, wire


class TalkDevice(CallDevice):
    """Answers the platform's talk INVITE as ``mode`` says, or rings until told."""

    mode = "connects"

    def invite_received(self, transaction: Any, invite: Any) -> None:
        self.requests.append(invite)
        self.offer = parse_sdp(invite.body)
        self.pending = transaction
        if self.mode == "rings":
            transaction.respond(response_for(invite, 180, to_tag="ring"))
            return
        self.answer_now()

    def answer_now(self) -> None:
        tcp = self.mode != "udp"
        answer = AudioSdp(
            session_name="Talk", origin_user=AUDIO_ID, origin_address=MEDIA,
            connection_address=MEDIA, port=15064 if self.mode != "connects" else 9,
            transport="TCP/RTP/AVP" if tcp else "RTP/AVP", payload_types=(8,),
            rtpmap=((8, "PCMA/8000"),),
            setup=("active" if self.mode == "connects" else "passive") if tcp else None,
            connection="new" if tcp else None, direction="sendrecv",
            ssrc=self.offer.ssrc, f_line="v/////a/1/8/1")
        self.layer.answer(self.pending, contact=f"sip:{AUDIO_ID}@{DEVICE[0]}:{DEVICE[1]}",
                          headers=[("Content-Type", "application/sdp")],
                          body=build_sdp(answer).encode())

    def invite_cancelled(self, transaction: Any, cancel: Any) -> None:
        self.ended.append("cancelled")


def _talk_setup(mode: str, record_dir: str | None = None) -> Any:
    reactor, manager, core, platform, _device, broadcasts = _setup(record_dir)
    device = TalkDevice(reactor)
    device.mode = mode
    _, to_device = connect(reactor, platform, device)
    device.wire = to_device
    platform.locate = lambda device_id: (
        Route(device_id, to_device, f"sip:{device_id}@{DEVICE[0]}:{DEVICE[1]}")
        if device_id == DEVICE_ID else None)
    talks = Talks(platform, core, advertise_ip=ADVERTISED, domain=REALM,
                  channels_of=lambda device_id: [AUDIO_ID])
    platform.invite_handler = CallFlows(broadcasts, talks)
    return reactor, manager, core, platform, device, talks


def _start(talks: Talks) -> list[Any]:
    results: list[Any] = []
    talks.start(DEVICE_ID, "broadcast", "announce").addCallback(results.append)
    return results


@pytest.mark.parametrize("mode", ["connects", "listens", "udp"])
def test_talk_invite_answer_media_both_ways_and_bye(mode: str) -> None:
    reactor, manager, core, _platform, device, talks = _talk_setup(mode)
    results = _start(talks)
    (session,) = manager.sessions()
    assert session.state is SessionState.LISTENING, "the port listens before the INVITE"
    pump(reactor)
    invite = device.requests[-1]
    offer = device.offer
    assert invite.method == "INVITE" and invite.to.uri == f"sip:{AUDIO_ID}@{REALM}"
    assert offer.session_name == "Talk" and offer.direction == "sendrecv"
    assert (offer.setup, offer.connection) == ("passive", "new")
    assert offer.port == session.port and offer.connection_address == ADVERTISED
    assert offer.ssrc is not None and offer.f_line == "v/////a/1/8/1"
    assert invite.header("Subject") is not None and PLATFORM_ID in invite.header("Subject")
    [result] = results
    assert result["result"] == "OK" and result["device_audio"] == (
        f"broadcast/{device_audio_name(DEVICE_ID)}")
    assert device.dialogs, "we ACKed the device's 200"
    (session,) = manager.sessions()
    assert result["session_id"] == session.id and session.params.receive
    voice = DeviceVoice(offer.ssrc, Law.ALAW)
    if mode == "connects":
        assert result["transport"] == "tcp-passive"
        media = FakeDevice(voice=voice)
        assert media.connect(reactor, session.port)
        _run(reactor, 0.2)
        assert len(media.receive()) >= 3
        media.speak(b"\x10\x00" * 160 * 10)
    elif mode == "listens":
        assert result["transport"] == "tcp-active"
        host, port, *_ = reactor.tcpClients[-1]
        assert (host, port) == (MEDIA, 15064)
        protocol, wire = _accept_our_dial(reactor)
        _run(reactor, 0.2)
        assert len(wire.value()) > 0
        protocol.dataReceived(voice.speak(b"\x10\x00" * 160 * 10))
    else:
        assert result["transport"] == "udp"
        sock = reactor.udp_bound[session.port]
        _run(reactor, 0.2)
        assert {addr for _, addr in sock.sent} == {(MEDIA, 15064)}
        assert parse_rtp(sock.sent[0][0]).ssrc == offer.ssrc
        for packet in voice.packets(b"\x10\x00" * 160 * 10):
            sock.receive(packet.encode(), (MEDIA, 15064))
    _run(reactor, 0.2)
    heard = core.registry.find("broadcast", device_audio_name(DEVICE_ID))
    assert heard is not None, "the device's voice is a live source"
    assert session.stats.packets_received >= 5
    device.bye()
    pump(reactor)
    assert session.end_reason == "stopped" and not manager.sessions()
    assert not talks.describe()
    assert core.registry.find("broadcast", device_audio_name(DEVICE_ID)) is None or (
        core.registry.find("broadcast", device_audio_name(DEVICE_ID)).ended)


def test_the_session_ending_sends_bye() -> None:
    reactor, manager, _core, platform, device, talks = _talk_setup("connects")
    _start(talks)
    pump(reactor)
    (session,) = manager.sessions()
    media = FakeDevice()
    media.connect(reactor, session.port)
    _run(reactor, 0.1)
    media.hang_up()
    pump(reactor)
    assert session.end_reason == "device-closed" and device.ended == ["bye"]
    assert not platform.layer.dialogs and not device.layer.dialogs


def test_a_talk_stopped_before_the_device_answers_is_cancelled() -> None:
    reactor, manager, _core, _platform, device, talks = _talk_setup("rings")
    results = _start(talks)
    pump(reactor)
    assert results == [] and len(manager.sessions()) == 1
    assert talks.stop(DEVICE_ID)
    pump(reactor)
    assert device.ended == ["cancelled"]
    [result] = results
    assert result["result"] == "ERROR"
    assert not manager.sessions() and not talks.describe()
    pump(reactor, 100)
    assert not manager.pool.leased_count


def test_a_busy_device_and_an_unknown_one() -> None:
    reactor, _manager, _core, _platform, _device, talks = _talk_setup("connects")
    _start(talks)
    pump(reactor)
    [busy] = _start(talks)
    assert busy["status"] == 486
    results: list[Any] = []
    talks.start("34020000001320000099", "broadcast", "announce").addCallback(results.append)
    assert results[0]["status"] == 404


def test_the_devices_voice_is_recorded_under_the_record_dir(tmp_path: Path) -> None:
    reactor, manager, _core, _platform, device, talks = _talk_setup("connects", str(tmp_path))
    _start(talks)
    pump(reactor)
    (session,) = manager.sessions()
    media = FakeDevice(voice=DeviceVoice(device.offer.ssrc, Law.ALAW))
    media.connect(reactor, session.port)
    media.speak(b"\x10\x00" * 160 * 25)
    _run(reactor, 0.6)
    device.bye()
    pump(reactor)
    [recording] = list(tmp_path.glob("*.wav"))
    audio = read_wav(recording)
    assert audio.sample_rate == 8000 and len(audio.data) >= 160 * 20, "the device was heard"
