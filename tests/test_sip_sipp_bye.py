"""The platform hangs up on SIPp: a broadcast the API stops (SIP/UDP) or whose source ends
(SIP/TCP, on the one connection SIPp registered on) sends BYE, and SIPp answers it 200.

As tests/test_sip_sipp_broadcast.py: the whole service runs in this reactor, SIPp registers
with digest and gives its catalog, then plays the device of the broadcast
(tests/sipp/broadcast_platform_bye.xml, or catalog_broadcast_bye_answer.xml beside
register_wait_broadcast.xml over TCP) with a UDP offer at this test's socket.  Once the tone's
RTP arrives the platform ends the session; SIPp's scenario passes only if our BYE came and
it answered it, and the session's end reason says why.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from gb28181talk.media.rtp import parse_rtp
from tests import test_sip_sipp_broadcast as broadcast_tests
from tests.httpapi import ServiceHarness, async_test, call, until
from tests.netutil import free_port
from tests.test_sip_sipp_broadcast import (
    AUDIO_OUT,
    DEVICE_ID,
    PASSWORD,
    SCENARIOS,
    Heard,
    udp_port_taken,
)


class SippPlatformByeTests(unittest.TestCase):
    timeout = 60

    # SippBroadcastTests' helpers (its tests are not collected twice: no module-level name)
    setUp = broadcast_tests.SippBroadcastTests.setUp
    sipp_run = broadcast_tests.SippBroadcastTests.sipp_run
    output = broadcast_tests.SippBroadcastTests.output
    check_tone = broadcast_tests.SippBroadcastTests.check_tone

    def service(self, sip: str) -> ServiceHarness:
        harness = ServiceHarness(sip=(sip,), sip_password=PASSWORD, sip_advertise="127.0.0.1")
        harness.start()
        self.addCleanup(harness.stop)
        return harness

    def media_socket(self) -> tuple[Heard, int]:
        heard = Heard()
        media = reactor.listenUDP(0, heard, interface="127.0.0.1")
        self.addCleanup(media.stopListening)
        return heard, int(media.getHost().port)

    async def broadcast(self, harness: ServiceHarness, device: Any) -> Any:
        """POST /api/broadcast to SIPp; the session it started."""
        reply = await call("POST", harness.url("/api/broadcast"), json_body={
            "device_ids": [DEVICE_ID], "app": "live", "stream": "tone"})
        assert reply.status == 200, reply.json
        [result] = reply.json["results"]
        if result["result"] != "OK":
            raise AssertionError(f"{result}\n{self.output(await device)}")
        assert result["channel"] == AUDIO_OUT and result["transport"] == "udp"
        [session] = [s for s in harness.service.manager.sessions()
                     if s.id == result["session_id"]]
        return session

    async def ended(self, harness: ServiceHarness, device: Any, session: Any,
                    heard: Heard) -> None:
        """SIPp got our BYE and answered it; nothing of the call is left."""
        finished = await device
        assert finished[2] == 0, self.output(finished)
        await until(lambda: not harness.service.manager.sessions(), timeout=5)
        assert harness.service.broadcasts is not None
        assert not harness.service.broadcasts.describe()
        sip = harness.service.sip
        assert sip is not None
        await until(lambda: not sip.layer.dialogs, timeout=5)
        self.check_tone([parse_rtp(data) for data in heard.datagrams])

    @async_test
    async def test_stopping_a_broadcast_through_the_api_sends_sipp_a_bye_over_udp(self) -> None:
        harness = self.service("udp:0:interface=127.0.0.1")
        assert (await harness.add_tone("live", "tone", frequency=800)).status == 200
        heard, rtp_to = self.media_socket()
        device_port = free_port()
        registered = await self.sipp_run(harness, "register_keepalive.xml", device_port,
                                         "-oocsf", str(SCENARIOS / "catalog_answer.xml"))
        assert registered[2] == 0, self.output(registered)
        registry = harness.service.devices
        assert registry is not None
        await until(lambda: bool(registry.channel_ids(DEVICE_ID)), timeout=10)
        device = self.sipp_run(harness, "broadcast_platform_bye.xml", device_port,
                               "-key", "rtp_to", str(rtp_to), "-key", "proto", "RTP/AVP",
                               "-key", "setup", "a=connection:new")
        await until(lambda: udp_port_taken(device_port), timeout=30)
        session = await self.broadcast(harness, device)
        await until(lambda: len(heard.datagrams) >= 40, timeout=10)
        reply = await call("POST", harness.url("/api/broadcast/stop"),
                           json_body={"device_id": DEVICE_ID})
        assert reply.status == 200 and reply.json["stopped"] is True, reply.json
        await self.ended(harness, device, session, heard)
        assert session.end_reason == "stopped"

    @async_test
    async def test_the_source_ending_sends_sipp_a_bye_on_its_sip_tcp_connection(self) -> None:
        harness = self.service("tcp:0:interface=127.0.0.1")
        heard, rtp_to = self.media_socket()
        device = self.sipp_run(
            harness, "register_wait_broadcast.xml", free_port(),
            "-oocsf", str(SCENARIOS / "catalog_broadcast_bye_answer.xml"),
            "-key", "rtp_to", str(rtp_to), "-key", "proto", "RTP/AVP",
            "-key", "setup", "a=connection:new", transport="t1")
        registry = harness.service.devices
        assert registry is not None
        await until(lambda: bool(registry.channel_ids(DEVICE_ID)), timeout=10)
        # a tone of 2 s: the source ends by itself while SIPp still waits (7 s)
        added = await harness.add_tone("live", "tone", frequency=800, duration=2)
        assert added.status == 200, added.json
        session = await self.broadcast(harness, device)
        await self.ended(harness, device, session, heard)
        assert session.end_reason == "source-ended"
