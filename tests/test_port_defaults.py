"""The default talk-port range is outside Linux's ephemeral range; an overlap is warned at start."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial import unittest

from gb28181talk.core import ports
from gb28181talk.core.ports import DEFAULT_PORT_RANGE, ephemeral_overlap, warn_ephemeral_overlap
from tests.httpapi import ServiceHarness

LINUX_DEFAULT = "32768\t60999\n"


def _proc(tmp_path: Path, content: str = LINUX_DEFAULT) -> str:
    proc = tmp_path / "ip_local_port_range"
    proc.write_text(content)
    return str(proc)


def test_the_default_range_is_outside_linux_default_ephemeral_range(tmp_path: Path) -> None:
    low, high = DEFAULT_PORT_RANGE
    assert ephemeral_overlap(low, high, _proc(tmp_path)) is None
    assert high - low + 1 >= 4000
    assert low % 2 == 0 and (high - low + 1) % 2 == 0, "whole even/odd pairs (RTP/RTCP)"


def test_the_default_range_is_outside_this_machine_ephemeral_range() -> None:
    assert ephemeral_overlap(*DEFAULT_PORT_RANGE) is None


def _capture() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    return events


def test_an_overlapping_range_is_one_warning_naming_both_ranges(tmp_path: Path) -> None:
    events = _capture()
    try:
        overlap = warn_ephemeral_overlap(30000, 35000, _proc(tmp_path))
        quiet = warn_ephemeral_overlap(*DEFAULT_PORT_RANGE, _proc(tmp_path))
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert (overlap, quiet) == ((32768, 35000), None)
    warned = [formatEvent(event) for event in events if event["log_level"] >= LogLevel.warn]
    assert len(warned) == 1, warned
    assert "30000-35000" in warned[0] and "32768-60999" in warned[0]
    assert "32768-35000" in warned[0] and "--port-range" in warned[0]


class StartUpWarningTests(unittest.TestCase):
    """The running service says at start when its configured range overlaps the ephemeral one."""

    def test_the_service_warns_at_start(self) -> None:
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        proc = _proc(Path(folder.name), "20000 60999\n")  # the harness's free range overlaps it
        self.patch(ports, "EPHEMERAL_RANGE_PATH", proc)
        events = _capture()
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        harness = ServiceHarness(ports=2)
        harness.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(harness.stop()))
        warned = [formatEvent(event) for event in events
                  if event["log_level"] >= LogLevel.warn and "ephemeral" in formatEvent(event)]
        assert len(warned) == 1, warned
        assert f"{harness.low}-{harness.high}" in warned[0]
