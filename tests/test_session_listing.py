"""GET /api/sessions is bounded: ``limit`` (default LIST_LIMIT) and the total that match.

Issue 12's fault benchmark: the listing of 200 live sessions is one reactor turn, so it
is bounded, and sessions that do not match a filter are not described at all.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial import unittest

from gb28181talk.web import codes, native
from tests.httpapi import ServiceHarness, async_test, call


class SessionListingTests(unittest.TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.harness = ServiceHarness(ports=4)
        self.harness.start()

    def tearDown(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.harness.stop())

    async def listing(self, **query: Any) -> Any:
        return (await call("GET", self.harness.url("/api/sessions"), query=query)).json

    @async_test
    async def test_a_listing_is_bounded_and_says_how_many_match(self) -> None:
        await self.harness.add_tone()
        for n in range(3):
            started = await call("POST", self.harness.url("/api/sessions"), json_body={
                "app": "broadcast", "stream": "tone", "ssrc": 100000001 + n})
            assert started.json["code"] == 0, started.json
        every = await self.listing()
        assert (len(every["sessions"]), every["total"], every["limit"]) == (
            3, 3, native.LIST_LIMIT)
        two = await self.listing(limit="2")
        assert (len(two["sessions"]), two["total"], two["limit"]) == (2, 3, 2)
        assert [v["id"] for v in two["sessions"]] == [v["id"] for v in every["sessions"][:2]]
        none = await self.listing(stream="other", limit="2")
        assert (none["sessions"], none["total"]) == ([], 0)
        listening = await self.listing(state="listening", app="broadcast")
        assert listening["total"] == 3 and {v["state"] for v in listening["sessions"]} == {
            "listening"}
        for bad in ("0", "-1", "abc", "١", str(native.MAX_LIST_LIMIT + 1)):
            refused = await self.listing(limit=bad)
            assert refused["code"] == codes.INVALID_ARGS and "limit=" in refused["msg"], bad
