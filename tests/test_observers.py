"""The operator's log: one structured line per session end, naming what the receive budget cut."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.logger import capturedLogs, formatEvent
from zope.interface.verify import verifyObject

from gb28181talk.core.observers import LoggingObserver
from gb28181talk.core.params import SessionStats
from gb28181talk.interfaces import ISessionObserver


def ended_lines(stats: SessionStats, detail: str = "") -> list[dict[str, Any]]:
    """The events LoggingObserver logs for one session end."""
    session = SimpleNamespace(id="s7", end_detail=detail)
    with capturedLogs() as events:
        LoggingObserver().session_ended(session, "receive-flood", stats)
    return list(events)


def test_the_logging_observer_provides_the_interface() -> None:
    assert verifyObject(ISessionObserver, LoggingObserver())


def test_an_end_line_names_the_excess_audio_and_the_throttles_when_there_were_any() -> None:
    stats = SessionStats(packets_received=500, excess_audio_s=12.25, receive_throttles=3)
    [event] = ended_lines(stats, "over its budget")
    text = formatEvent(event)
    assert "receive-flood (over its budget)" in text
    assert "12.2 s excess audio dropped" in text and "receive throttled in 3 s" in text
    assert (event["excess_audio_s"], event["receive_throttles"]) == (12.25, 3)
    assert event["id"] == "s7" and event["received"] == 500


def test_an_end_line_leaves_the_budget_out_of_the_text_when_it_cut_nothing() -> None:
    [event] = ended_lines(SessionStats(packets_sent=50))
    text = formatEvent(event)
    assert "excess" not in text and "throttle" not in text
    assert text.startswith("talk session s7 ended: receive-flood; sent 50 packets")
    # The fields are on the event all the same, for log processors.
    assert (event["excess_audio_s"], event["receive_throttles"]) == (0.0, 0)


def test_only_one_of_the_two_is_named_when_only_one_counts() -> None:
    [throttled] = ended_lines(SessionStats(receive_throttles=1))
    assert "receive throttled in 1 s" in formatEvent(throttled)
    assert "excess" not in formatEvent(throttled)
    [excess] = ended_lines(SessionStats(excess_audio_s=0.5))
    assert "0.5 s excess audio dropped" in formatEvent(excess)
    assert "throttle" not in formatEvent(excess)
