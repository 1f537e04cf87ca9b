"""A broadcast end to end against SIPp playing the device over loopback: UDP and TCP active.

The whole service runs in this reactor with ``--sip udp:0``.  SIPp registers with digest
and gives its catalog (tests/sipp/register_keepalive.xml); a second SIPp on the same port
waits for the platform (tests/sipp/broadcast.xml): ``POST /api/broadcast`` sends it the
Notify, it answers Response/Broadcast OK and INVITEs from its audio output channel with a
UDP offer pointing at this test's socket (or a TCP active one, ``a=setup:passive``, at this
test's listening port, which we dial), which receives the tone's RTP until SIPp's BYE.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from gb28181talk.device.media import DeviceMedia
from gb28181talk.media import g711, wav
from gb28181talk.media.framing import Framing
from gb28181talk.media.law import Law
from gb28181talk.media.rtp import parse_rtp
from tests.audiocheck import dominant_frequency
from tests.conftest import require_program
from tests.httpapi import ServiceHarness, async_test, call, until
from tests.netutil import free_port

SCENARIOS = Path(__file__).with_name("sipp")
PLATFORM_ID = "34020000002000000001"
DOMAIN = "3402000000"
DEVICE_ID = "34020000001320000001"
AUDIO_OUT = "34020000001370000001"
PASSWORD = "12345678"


def udp_port_taken(port: int) -> bool:
    """Whether some socket (SIPp, once it has started) holds this UDP port.

    Read from /proc/net/udp rather than by binding a probe, which could take the port
    from SIPp at the moment it binds.
    """
    suffix = f":{port:04X}"
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines, None)
            if any(line.split()[1].endswith(suffix) for line in lines):
                return True
    return False


def tcp_port_listening(port: int) -> bool:
    """Whether some socket listens on this TCP port (state 0A in /proc/net/tcp)."""
    suffix = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines, None)
            for line in lines:
                fields = line.split()
                if fields[1].endswith(suffix) and fields[3] == "0A":
                    return True
    return False


class Heard(DatagramProtocol):
    """The device's media socket: keeps every datagram."""

    def __init__(self) -> None:
        self.datagrams: list[bytes] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.datagrams.append(datagram)


class Stream(Protocol):
    """The device's listening media socket (TCP active offer): keeps what arrives."""

    def __init__(self, heard: Heard) -> None:
        self.heard = heard

    def dataReceived(self, data: bytes) -> None:
        self.heard.datagrams.append(data)


class SippBroadcastTests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.sipp = require_program("sipp")
        self.directory = Path(tempfile.mkdtemp(prefix="gbtalk-sipp-bc-"))
        self.addCleanup(shutil.rmtree, self.directory, True)

    def sipp_run(self, harness: ServiceHarness, scenario: str, device_port: int,
                 *extra: str, transport: str = "u1") -> Any:
        sip_port = next(int(child.port.getHost().port) for child in harness.service.sip_services
                        if child.port is not None)
        args = [
            "-sf", str(SCENARIOS / scenario), "-m", "1",
            "-s", DEVICE_ID, "-au", DEVICE_ID, "-ap", PASSWORD,
            "-key", "platform", PLATFORM_ID, "-key", "domain", DOMAIN,
            "-key", "expires", "3600", "-key", "audio", AUDIO_OUT,
            "-i", "127.0.0.1", "-p", str(device_port), "-t", transport,
            "-nostdin", "-timeout", "20", "-timeout_error", "-trace_err", *extra,
            f"127.0.0.1:{sip_port}",
        ]
        return getProcessOutputAndValue(self.sipp, args, env=dict(os.environ),
                                        path=str(self.directory), reactor=reactor)

    def output(self, result: tuple[bytes, bytes, int]) -> str:
        out, err, _code = result
        errors = "".join(p.read_text(errors="replace") for p in self.directory.glob("*errors*"))
        return (out + err).decode(errors="replace")[-3000:] + errors[-3000:]

    async def broadcast_to_sipp(self, proto: str, setup: str,
                                media_port: int | None = None) -> list[Any]:
        """Register SIPp, broadcast the tone to it; the RTP packets its media socket got.

        With ``media_port``, the device's media endpoint is someone else's (GStreamer's)
        listening TCP port, and no packets are returned."""
        harness = ServiceHarness(sip=("udp:0:interface=127.0.0.1",), sip_password=PASSWORD,
                                 sip_advertise="127.0.0.1")
        harness.start()
        self.addCleanup(harness.stop)
        assert (await harness.add_tone("live", "tone", frequency=800)).status == 200
        heard = Heard()
        if media_port is not None:
            rtp_to = media_port
        else:
            if proto == "RTP/AVP":
                media = reactor.listenUDP(0, heard, interface="127.0.0.1")
            else:
                media = reactor.listenTCP(0, Factory.forProtocol(lambda: Stream(heard)),
                                          interface="127.0.0.1")
            self.addCleanup(media.stopListening)
            rtp_to = media.getHost().port
        device_port = free_port()
        registered = await self.sipp_run(harness, "register_keepalive.xml", device_port,
                                         "-oocsf", str(SCENARIOS / "catalog_answer.xml"))
        assert registered[2] == 0, self.output(registered)
        registry = harness.service.devices
        assert registry is not None
        await until(lambda: bool(registry.channel_ids(DEVICE_ID)), timeout=10)
        device = self.sipp_run(harness, "broadcast.xml", device_port,
                               "-key", "rtp_to", str(rtp_to),
                               "-key", "proto", proto, "-key", "setup", setup)
        await until(lambda: udp_port_taken(device_port), timeout=30)  # SIPp listens again
        reply = await call("POST", harness.url("/api/broadcast"), json_body={
            "device_ids": [DEVICE_ID], "app": "live", "stream": "tone"})
        assert reply.status == 200, reply.json
        [result] = reply.json["results"]
        if result["result"] != "OK":
            raise AssertionError(f"{result}\n{self.output(await device)}")
        assert result["channel"] == AUDIO_OUT
        assert result["transport"] == ("udp" if proto == "RTP/AVP" else "tcp-active")
        assert result["response"] == "OK" and result["ssrc"] == "0100000123"
        finished = await device
        assert finished[2] == 0, self.output(finished)
        await until(lambda: not harness.service.manager.sessions(), timeout=5)
        assert harness.service.broadcasts is not None
        assert not harness.service.broadcasts.describe()
        if media_port is not None:
            return []
        if proto == "RTP/AVP":
            return [parse_rtp(data) for data in heard.datagrams]
        stream = DeviceMedia(framing=Framing.RFC4571, keep_packets=True)
        stream.receive(b"".join(heard.datagrams), 0.0)
        return list(stream.packets)

    def check_tone(self, packets: list[Any]) -> None:
        assert len(packets) >= 20, "about 1.5 s of 20 ms packets reached the device"
        assert {p.ssrc for p in packets} == {100000123} and {p.payload_type for p in packets} == {8}
        pcm = g711.decode(Law.ALAW, b"".join(p.payload for p in packets))
        assert dominant_frequency(pcm, range(300, 1500, 20)) == 800, "the source's tone"

    @async_test
    async def test_sipp_device_takes_a_udp_broadcast_and_hangs_up(self) -> None:
        self.check_tone(await self.broadcast_to_sipp("RTP/AVP", "a=connection:new"))

    @async_test
    async def test_sipp_device_listening_for_tcp_takes_a_broadcast_we_dial(self) -> None:
        self.check_tone(await self.broadcast_to_sipp("TCP/RTP/AVP", "a=setup:passive"))

    @async_test
    async def test_gstreamer_decodes_the_tone_of_a_broadcast_sipp_took(self) -> None:
        """SIPp does the signalling, GStreamer is the device's media (tcpserversrc): we dial
        it after the TCP-active offer, and its own depayloader and decoder hear the tone."""
        gst = require_program("gst-launch-1.0")
        port = free_port()
        out = self.directory / "gst-heard.wav"
        pipeline = (
            f"tcpserversrc host=127.0.0.1 port={port} ! "
            "application/x-rtp-stream,media=audio,clock-rate=8000,encoding-name=PCMA,payload=8 ! "
            "rtpstreamdepay ! rtppcmadepay ! alawdec ! audioconvert ! "
            f"audio/x-raw,format=S16LE,channels=1,rate=8000 ! wavenc ! filesink location={out}"
        )
        player = getProcessOutputAndValue(gst, ["-q", "-e", *pipeline.split()],
                                          env=dict(os.environ), reactor=reactor)
        await until(lambda: tcp_port_listening(port), timeout=30)
        await self.broadcast_to_sipp("TCP/RTP/AVP", "a=setup:passive", media_port=port)
        _out, errors, code = await player  # EOS when our connection closes at the BYE
        assert code == 0, errors.decode(errors="replace")
        pcm = wav.load_8k_mono(str(out))
        assert len(pcm) >= 2 * 8000, "at least a second of the tone"
        assert dominant_frequency(pcm, range(300, 1500, 20)) == 800, "the source's tone"

    @async_test
    async def test_sipp_device_on_one_sip_tcp_connection_registers_and_takes_a_broadcast(
        self,
    ) -> None:
        """Over SIP/TCP the registry's route is the connection: the Notify, the answers to the
        device's INVITE and the BYE's answer all go down the one SIPp registered on."""
        harness = ServiceHarness(sip=("tcp:0:interface=127.0.0.1",), sip_password=PASSWORD,
                                 sip_advertise="127.0.0.1")
        harness.start()
        self.addCleanup(harness.stop)
        assert (await harness.add_tone("live", "tone", frequency=800)).status == 200
        heard = Heard()
        media = reactor.listenUDP(0, heard, interface="127.0.0.1")
        self.addCleanup(media.stopListening)
        device = self.sipp_run(
            harness, "register_wait_broadcast.xml", free_port(),
            "-oocsf", str(SCENARIOS / "catalog_broadcast_answer.xml"),
            "-key", "rtp_to", str(media.getHost().port), "-key", "proto", "RTP/AVP",
            "-key", "setup", "a=connection:new", transport="t1")
        registry = harness.service.devices
        assert registry is not None
        await until(lambda: bool(registry.channel_ids(DEVICE_ID)), timeout=10)
        [listed] = (await call("GET", harness.url("/api/devices"))).json["devices"]
        assert listed["transport"] == "TCP"
        reply = await call("POST", harness.url("/api/broadcast"), json_body={
            "device_ids": [DEVICE_ID], "app": "live", "stream": "tone"})
        assert reply.status == 200, reply.json
        [result] = reply.json["results"]
        if result["result"] != "OK":
            raise AssertionError(f"{result}\n{self.output(await device)}")
        assert result["channel"] == AUDIO_OUT and result["transport"] == "udp"
        finished = await device
        assert finished[2] == 0, self.output(finished)
        await until(lambda: not harness.service.manager.sessions(), timeout=5)
        assert harness.service.broadcasts is not None
        assert not harness.service.broadcasts.describe()
        self.check_tone([parse_rtp(data) for data in heard.datagrams])
