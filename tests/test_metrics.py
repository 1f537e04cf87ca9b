"""Prometheus metrics: counts that follow sessions' lives, in valid text exposition format."""

from __future__ import annotations

import re

from gb28181talk.core.manager import SessionManager
from gb28181talk.core.params import SessionKey, SessionParams, SsrcPolicy
from gb28181talk.core.ports import PortPool
from gb28181talk.media.framing import frame_rfc4571
from gb28181talk.media.rtp import RtpPacket
from gb28181talk.sources.registry import SourceRegistry
from gb28181talk.sources.tone import ToneSource
from gb28181talk.testing import BusyPortsReactor, FakeDevice
from gb28181talk.web.metrics import Metrics

_SAMPLE = re.compile(r'[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?\d+(\.\d+)?(e-?\d+)?')


def values(text: str) -> dict[str, float]:
    """Samples by their full name (labels included); every line checked against the format."""
    found = {}
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        assert _SAMPLE.fullmatch(line), line
        name, _, value = line.rpartition(" ")
        found[name] = float(value)
    return found


def setup() -> tuple[BusyPortsReactor, SessionManager, Metrics, SourceRegistry]:
    memory = BusyPortsReactor()
    manager = SessionManager(memory, PortPool(memory, 30000, 30009))
    registry = SourceRegistry()
    metrics = Metrics(manager, registry, open_file_limit=1024)
    manager.add_observer(metrics)
    return memory, manager, metrics, registry


def key(n: int) -> SessionKey:
    return SessionKey("v", "broadcast", "tone", n)


def test_counts_follow_sessions() -> None:
    memory, manager, metrics, registry = setup()
    tone = registry.add(ToneSource("broadcast", "tone"))
    first = manager.start(SessionParams(key=key(1), wait_timeout=1), tone)
    manager.start(SessionParams(key=key(2), wait_timeout=1), tone)
    talk = manager.start(
        SessionParams(key=key(3), receive=True, ssrc_policy=SsrcPolicy.STRICT), tone
    )
    device = FakeDevice()
    assert device.connect(memory, talk.port)
    assert not FakeDevice(port=40001).connect(memory, talk.port)  # refused
    wrong = RtpPacket(8, 1, 160, 999, bytes(160)).encode()
    device.send(frame_rfc4571(wrong) * 3)
    first.stop()
    memory.advance(0.5)
    page = metrics.render()
    numbers = values(page)
    assert numbers['gbtalk_sessions{state="listening"}'] == 1
    assert numbers['gbtalk_sessions{state="streaming"}'] == 1
    assert numbers["gbtalk_sessions_started_total"] == 3
    assert numbers["gbtalk_device_connections_total"] == 1
    assert numbers["gbtalk_device_refused_total"] == 1
    assert numbers['gbtalk_sessions_ended_total{reason="stopped"}'] == 1
    assert numbers['gbtalk_sessions_ended_total{reason="shutdown"}'] == 0
    assert numbers["gbtalk_ssrc_violations_total"] == 3
    assert numbers["gbtalk_ports_leased"] == 1
    assert numbers["gbtalk_ports_free"] == 9
    assert numbers["gbtalk_ports_total"] == 10
    assert numbers['gbtalk_sources{kind="tone"}'] == 1
    assert numbers["gbtalk_open_file_limit"] == 1024
    sent = numbers["gbtalk_packets_sent_total"]
    assert sent > 0
    assert "# TYPE gbtalk_packets_sent_total counter" in page
    memory.advance(1.0)  # the other listener times out; the talk goes on
    later = values(metrics.render())
    assert later['gbtalk_sessions_ended_total{reason="timeout"}'] == 1
    assert later["gbtalk_packets_sent_total"] > sent
    device.hang_up()
    final = values(metrics.render())
    assert final["gbtalk_packets_sent_total"] >= later["gbtalk_packets_sent_total"]
    assert final['gbtalk_sessions{state="streaming"}'] == 0
    assert final['gbtalk_sessions_ended_total{reason="device-closed"}'] == 1
