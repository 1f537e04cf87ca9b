"""``GET /api/devices`` and the SIP gauges when SIP is off: today's users see no change."""

from __future__ import annotations

from twisted.trial import unittest

from tests.httpapi import ServiceHarness, async_test, call


class DevicesWithoutSipTests(unittest.TestCase):
    @async_test
    async def test_sip_off_lists_no_devices_and_has_no_sip_gauges(self) -> None:
        harness = ServiceHarness()
        harness.start()
        self.addCleanup(harness.stop)
        assert harness.service.sip is None and harness.service.sip_services == []
        reply = await call("GET", harness.url("/api/devices"))
        assert reply.status == 200 and reply.json == {"code": 0, "sip": False, "devices": []}
        metrics = (await call("GET", harness.url("/metrics"))).raw.decode()
        assert "gbtalk_sip_devices" not in metrics
