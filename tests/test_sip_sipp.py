"""End to end against SIPp, an independent SIP stack, playing a GB28181 device over loopback.

The whole service runs in this reactor with ``--sip udp:0 --sip tcp:0``; SIPp
registers with digest (401 then 200), sends a keepalive and answers the
platform's Catalog query (``-oocsf``) with an audio output channel; a wrong
password is refused with 403; a device whose keepalives stop goes offline.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from tests.conftest import require_program
from tests.httpapi import ServiceHarness, async_test, call, until
from tests.netutil import free_port

SCENARIOS = Path(__file__).with_name("sipp")
PLATFORM_ID = "34020000002000000001"
DOMAIN = "3402000000"
DEVICE_ID = "34020000001320000001"
AUDIO_OUT = "34020000001370000001"
PASSWORD = "12345678"


class SippDeviceTests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.sipp = require_program("sipp")
        self.directory = Path(tempfile.mkdtemp(prefix="gbtalk-sipp-"))
        self.addCleanup(shutil.rmtree, self.directory, True)

    def start(self, **settings: Any) -> ServiceHarness:
        settings.setdefault("sip", ("udp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1"))
        settings.setdefault("sip_password", PASSWORD)
        settings.setdefault("sip_advertise", "127.0.0.1")
        harness = ServiceHarness(**settings)
        harness.start()
        self.addCleanup(harness.stop)
        return harness

    def sip_port(self, harness: ServiceHarness, kind: str) -> int:
        for child in harness.service.sip_services:
            if child.description.startswith(kind) and child.port is not None:
                return int(child.port.getHost().port)
        raise AssertionError(f"no {kind} SIP listener")

    async def run_sipp(self, harness: ServiceHarness, scenario: str, *, transport: str = "udp",
                       password: str = PASSWORD, expires: int = 3600,
                       catalog: bool = True) -> tuple[int, str]:
        port = self.sip_port(harness, transport)
        args = [
            "-sf", str(SCENARIOS / scenario), "-m", "1",
            "-s", DEVICE_ID, "-au", DEVICE_ID, "-ap", password,
            "-key", "platform", PLATFORM_ID, "-key", "domain", DOMAIN,
            "-key", "expires", str(expires),
            "-i", "127.0.0.1", "-p", str(free_port()),
            "-t", "u1" if transport == "udp" else "t1",
            "-nostdin", "-timeout", "20", "-timeout_error", "-trace_err",
        ]
        if catalog:
            args += ["-oocsf", str(SCENARIOS / "catalog_answer.xml")]
        args.append(f"127.0.0.1:{port}")
        out, err, code = await getProcessOutputAndValue(
            self.sipp, args, env=dict(os.environ), path=str(self.directory), reactor=reactor)
        errors = "".join(p.read_text(errors="replace") for p in self.directory.glob("*errors*"))
        return code, (out + err).decode(errors="replace")[-3000:] + errors[-3000:]

    async def devices(self, harness: ServiceHarness) -> list[dict[str, Any]]:
        reply = await call("GET", harness.url("/api/devices"))
        assert reply.status == 200 and reply.json["sip"] is True, reply.json
        return list(reply.json["devices"])

    async def check_registered(self, harness: ServiceHarness, transport: str) -> None:
        code, output = await self.run_sipp(harness, "register_keepalive.xml",
                                           transport=transport)
        assert code == 0, output
        registry = harness.service.devices
        assert registry is not None
        await until(lambda: registry.devices.get(DEVICE_ID) is not None
                    and registry.devices[DEVICE_ID].channels, timeout=10)
        [device] = await self.devices(harness)
        assert device["id"] == DEVICE_ID and device["transport"] == transport.upper()
        assert device["address"].startswith("127.0.0.1:")
        assert device["online"] is True and device["last_keepalive"] is not None
        assert device["registered_at"] <= device["last_keepalive"]
        audio = [c["id"] for c in device["channels"] if c["audio_output"]]
        assert audio == [AUDIO_OUT]
        assert {c["id"] for c in device["channels"]} == {AUDIO_OUT, DEVICE_ID}
        metrics = (await call("GET", harness.url("/metrics"))).raw.decode()
        assert "gbtalk_sip_devices_registered 1" in metrics
        assert "gbtalk_sip_devices_online 1" in metrics

    @async_test
    async def test_a_device_registers_with_digest_keeps_alive_and_gives_its_catalog_udp(
        self,
    ) -> None:
        await self.check_registered(self.start(), "udp")

    @async_test
    async def test_the_same_over_sip_tcp(self) -> None:
        await self.check_registered(self.start(), "tcp")

    @async_test
    async def test_a_wrong_password_is_refused_with_403(self) -> None:
        harness = self.start()
        code, output = await self.run_sipp(harness, "register_refused.xml", password="wrong",
                                           catalog=False)
        assert code == 0, output
        assert await self.devices(harness) == []
        metrics = (await call("GET", harness.url("/metrics"))).raw.decode()
        assert "gbtalk_sip_devices_registered 0" in metrics

    @async_test
    async def test_a_device_whose_keepalives_stop_goes_offline(self) -> None:
        harness = self.start(keepalive_expiry=1.0)
        code, output = await self.run_sipp(harness, "register_keepalive.xml")
        assert code == 0, output
        registry = harness.service.devices
        assert registry is not None
        await until(lambda: registry.registered == 1 and registry.online == 0, timeout=10)
        [device] = await self.devices(harness)
        assert device["online"] is False and device["last_keepalive"] is not None
        metrics = (await call("GET", harness.url("/metrics"))).raw.decode()
        assert "gbtalk_sip_devices_registered 1" in metrics
        assert "gbtalk_sip_devices_online 0" in metrics
