"""SIP broadcast with SIPp as the device (tests/test_sip_sipp_broadcast.py), again with
``--workers 2``: the INVITE's answer carries a port the control bound synchronously
(``TalkControl.start_now``), and the session runs on a worker."""

from __future__ import annotations

import functools
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from gb28181talk.interfaces import ISessionObserver
from tests import test_sip_sipp_broadcast as broadcast
from tests.httpapi import ServiceHarness
from tests.test_workers_modes import Placements


@implementer(ISessionObserver)
class Readiness:
    """Whether some worker was ready when each session started."""

    def __init__(self, test: Any) -> None:
        self.test = test
        self.ready: list[bool] = []

    def session_started(self, session: Any) -> None:
        self.ready.append(any(link is not None and link.ready
                              for link in self.test.manager.links))

    def session_connected(self, session: Any, peer: tuple[str, int]) -> None:
        """Not needed."""

    def device_refused(self, session: Any, peer: tuple[str, int], why: str) -> None:
        """Not needed."""

    def session_ended(self, session: Any, reason: str, stats: Any) -> None:
        """Not needed."""


class SippBroadcastOnWorkersTests(broadcast.SippBroadcastTests):
    """The same SIPp scenarios and assertions, on a service with two media workers."""

    def setUp(self) -> Any:
        self.placements = Placements()
        self.readiness = Readiness(self)

        def harness(*args: Any, **settings: Any) -> ServiceHarness:
            made = ServiceHarness(*args, workers=2, **settings)
            self.manager = made.service.manager
            made.service.manager.add_observer(self.placements)
            made.service.manager.add_observer(self.readiness)
            return made

        self.patch(broadcast, "ServiceHarness", functools.partial(harness))
        return super().setUp()

    def tearDown(self) -> Deferred[None] | None:
        assert self.placements.started, "no talk session was started"
        # A session runs on a worker unless it started before any worker was ready.
        for (_, on_worker), ready in zip(self.placements.started, self.readiness.ready,
                                         strict=True):
            assert on_worker is ready, (self.placements.started, self.readiness.ready)
        return super().tearDown()  # type: ignore[no-any-return]
