"""Every sending mode and the RTP server as wvp calls them (tests/test_zlm_send_modes.py),
again with ``--workers 2``: UDP, UDP-passive and TCP-active sessions run on workers;
``startSendRtpTalk`` (on an ``openRtpServer`` connection) stays in the control."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from gb28181talk.core.params import TransportKind
from gb28181talk.interfaces import ISessionObserver
from gb28181talk.workers.remote import RemoteSession
from tests import test_zlm_send_modes as modes
from tests.httpapi import sleep


@implementer(ISessionObserver)
class Placements:
    """Where each started session runs: (transport, on a worker?)."""

    def __init__(self) -> None:
        self.started: list[tuple[TransportKind, bool]] = []

    def session_started(self, session: Any) -> None:
        self.started.append((session.params.transport, isinstance(session, RemoteSession)))

    def session_connected(self, session: Any, peer: tuple[str, int]) -> None:
        """Not needed."""

    def device_refused(self, session: Any, peer: tuple[str, int], why: str) -> None:
        """Not needed."""

    def session_ended(self, session: Any, reason: str, stats: Any) -> None:
        """Not needed."""


async def workers_ready(manager: Any, count: int = 2) -> None:
    """Wait until ``count`` workers answered Hello (before that, sessions run in the control)."""
    for _ in range(400):
        if sum(bool(link and link.ready) for link in manager.links) >= count:
            return
        await sleep(0.025)
    raise AssertionError("the media workers never became ready")


class SendModesOnWorkersTests(modes.SendModeTests):
    """The same calls and assertions, on a node whose sessions run in two media workers."""

    def setUp(self) -> Deferred[None]:
        self.start_node(ports=12, server_id="talk-node", workers=2)
        self.placements = Placements()
        self.harness.service.manager.add_observer(self.placements)
        return Deferred.fromCoroutine(self._ready_then_setup())

    async def _ready_then_setup(self) -> None:
        await workers_ready(self.harness.service.manager)
        await self._setup()

    def tearDown(self) -> Deferred[None]:
        for kind, on_worker in self.placements.started:
            assert on_worker is (kind is not TransportKind.RTP_SERVER), self.placements.started
        return super().tearDown()
