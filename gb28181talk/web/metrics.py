"""Prometheus metrics of the service: sessions, ports, packets, endings, hooks, in text format.

:class:`Metrics` is a session observer that keeps the counters sessions
cannot keep themselves (endings by reason, totals of sessions already
gone) and reads the rest (live sessions, ports, sources) when scraped.
Counters of live sessions plus those of ended ones never go backwards.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from zope.interface import implementer

from gb28181talk.core.params import EndReason, SessionState
from gb28181talk.interfaces import ISessionObserver

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format's content type."""

_TOTALS = (
    ("packets_sent", "gbtalk_packets_sent_total", "RTP packets sent to devices."),
    ("bytes_sent", "gbtalk_bytes_sent_total", "Bytes sent to devices, framing included."),
    ("packets_received", "gbtalk_packets_received_total",
     "RTP packets accepted from devices (two-way talk)."),
    ("bytes_received", "gbtalk_bytes_received_total", "Bytes received from devices."),
    ("packets_dropped", "gbtalk_packets_dropped_total",
     "Packets not sent because a device's send buffer was full."),
    ("ssrc_violations", "gbtalk_ssrc_violations_total",
     "Device packets dropped for carrying an unexpected SSRC."),
    ("invalid_packets", "gbtalk_invalid_packets_total", "Device packets that were not RTP."),
    ("excess_audio_packets", "gbtalk_excess_audio_packets_total",
     "Device packets dropped before decoding: more audio than time had passed."),
    ("excess_audio_s", "gbtalk_excess_audio_seconds_total",
     "Seconds of device audio dropped for arriving faster than time passed."),
    ("receive_throttles", "gbtalk_receive_throttles_total",
     "Seconds in which a device spent its receive budget and its reading was paused."),
    ("packets_over_budget", "gbtalk_packets_over_budget_total",
     "Device datagrams dropped unread: the device was over its receive budget."),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class _Page:
    """Collects metric families in exposition order."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str,
               samples: Iterable[tuple[dict[str, str], float]]) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            if labels:
                rendered = ",".join(f'{key}="{_label(val)}"' for key, val in labels.items())
                self.lines.append(f"{name}{{{rendered}}} {_number(value)}")
            else:
                self.lines.append(f"{name} {_number(value)}")

    def single(self, name: str, kind: str, help_text: str, value: float) -> None:
        self.family(name, kind, help_text, [({}, value)])

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


@implementer(ISessionObserver)
class Metrics:
    """Counts session events; renders every metric on demand.

    ``manager`` is the SessionManager (live sessions, pool, pacer); ``registry``
    the SourceRegistry; ``hooks`` a HookDeliverer with delivered/failed/dropped
    counters; ``open_file_limit`` the descriptor limit the service runs with.
    """

    def __init__(
        self,
        manager: Any,
        registry: Any = None,
        hooks: Any = None,
        open_file_limit: int | None = None,
    ) -> None:
        self.manager = manager
        self.registry = registry
        self.hooks = hooks
        self.open_file_limit = open_file_limit
        self.devices: Any = None
        """The SIP registry (``registered`` and ``online`` counts), None when SIP is off."""
        self.started = 0
        self.connected = 0
        self.refused = 0
        self.endings: Counter[str] = Counter()
        self.ended_totals: Counter[str] = Counter()

    # -- ISessionObserver

    def session_started(self, session: Any) -> None:
        self.started += 1

    def session_connected(self, session: Any, peer: tuple[str, int]) -> None:
        self.connected += 1

    def device_refused(self, session: Any, peer: tuple[str, int], why: str) -> None:
        self.refused += 1

    def session_ended(self, session: Any, reason: str, stats: Any) -> None:
        self.endings[reason] += 1
        for field, _name, _help in _TOTALS:
            self.ended_totals[field] += getattr(stats, field)

    # -- exposition

    def render(self) -> str:
        """Every metric in the Prometheus text format (version 0.0.4)."""
        page = _Page()
        manager = self.manager
        by_state = manager.count_by_state()
        page.family("gbtalk_sessions", "gauge", "Live talk sessions by state.",
                    [({"state": str(state)}, by_state.get(str(state), 0))
                     for state in SessionState if state is not SessionState.CLOSED])
        page.single("gbtalk_sessions_started_total", "counter",
                    "Talk sessions started (ports opened).", self.started)
        page.single("gbtalk_device_connections_total", "counter",
                    "Devices that connected to a talk port.", self.connected)
        page.single("gbtalk_device_refused_total", "counter",
                    "Connections refused (not the expected device, or not the first).",
                    self.refused)
        reasons = [str(reason) for reason in EndReason]
        reasons += sorted(set(self.endings) - set(reasons))
        page.family("gbtalk_sessions_ended_total", "counter", "Talk sessions ended, by reason.",
                    [({"reason": reason}, self.endings.get(reason, 0)) for reason in reasons])
        live = [session.stats for session in manager.sessions()]
        for field, name, help_text in _TOTALS:
            total = self.ended_totals[field] + sum(getattr(stats, field) for stats in live)
            page.single(name, "counter", help_text, total)
        pool = manager.pool
        page.single("gbtalk_ports_leased", "gauge",
                    "Talk ports held (listening or closing).", pool.leased_count)
        page.single("gbtalk_ports_free", "gauge", "Talk ports of the range free to lease.",
                    pool.free_count)
        page.single("gbtalk_ports_total", "gauge", "Talk ports in the configured range.",
                    pool.size)
        if self.registry is not None:
            kinds = Counter(source.kind for source in self.registry.list())
            page.family("gbtalk_sources", "gauge", "Audio sources by kind.",
                        [({"kind": kind}, kinds.get(kind, 0))
                         for kind in sorted({"tone", "file", "push", "rtp", "device", *kinds})])
        pacer = getattr(manager, "pacer", None)
        if pacer is not None:
            page.single("gbtalk_pacer_frames_total", "counter",
                        "20 ms frames the pacer has sent.", pacer.stats.frames)
            page.single("gbtalk_pacer_max_lateness_seconds", "gauge",
                        "Latest the pacer's timer has run after its schedule.",
                        pacer.stats.max_lateness_ms / 1000)
        if self.hooks is not None:
            page.family("gbtalk_hook_deliveries_total", "counter",
                        "on_send_rtp_stopped webhooks by outcome.",
                        [({"result": "delivered"}, self.hooks.delivered),
                         ({"result": "failed"}, self.hooks.failed),
                         ({"result": "dropped"}, self.hooks.dropped)])
        if self.devices is not None:
            page.single("gbtalk_sip_devices_registered", "gauge",
                        "GB28181 devices registered over SIP.", self.devices.registered)
            page.single("gbtalk_sip_devices_online", "gauge",
                        "Registered devices whose keepalives are on time.", self.devices.online)
        if self.open_file_limit is not None:
            page.single("gbtalk_open_file_limit", "gauge",
                        "Open-file limit of the process (each talk port uses one).",
                        self.open_file_limit)
        return page.text()
