"""Issue 12 (fault benchmark): a pusher is held to twice real time, and decoded in small turns.

Everything runs on a Clock with a fake TCP transport that records pause/resume: a
"client" here sends one read's worth whenever reading is not paused, as the kernel
would deliver it.  Nothing asserts wall-clock time.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import directlyProvides

from gb28181talk.sources.push import PushSource
from gb28181talk.web.push import PushProtocol
from gb28181talk.web.push_pace import BURST_MS, PACE_FACTOR, TURN_BYTES, PushPace
from tests.test_push import FakeNetwork, FakeWireSocket

READ = 65536
"""What one TCP read hands over at most (Twisted's read size)."""

STEREO_48K = 48000 * 2 * 2
"""Bytes per second of 48 kHz stereo PCM16: real time of the attackers' push source."""


def reading_paused(network: FakeNetwork) -> bool:
    """Whether the last flow-control call left the fake transport paused."""
    flow = [call for call in network.calls if call in ("pause", "resume")]
    return bool(flow) and flow[-1] == "pause"


def paced_pusher(
    clock: Clock, source: PushSource | None = None
) -> tuple[FakeNetwork, PushSource, PushProtocol, list[int]]:
    """A connected pusher of a 48 kHz stereo, 60 s backlog source; the sizes it decodes."""
    network = FakeNetwork(clock)
    directlyProvides(network, IPushProducer)
    if source is None:
        source = PushSource("live", "pace", 48000, 2, "pcm16", max_backlog_ms=60000)
    decoded: list[int] = []
    push_bytes = source.push_bytes

    def recording(data: Any, message_end: bool = True) -> None:
        decoded.append(len(data))
        push_bytes(data, message_end)

    source.push_bytes = recording  # type: ignore[method-assign]
    pusher = PushProtocol(source, "10.0.0.8:4000", max_message_bytes=1 << 40)
    pusher.negotiationStarted(FakeWireSocket(network))  # type: ignore[arg-type]
    pusher.negotiationFinished()
    return network, source, pusher, decoded


def flood(clock: Clock, network: FakeNetwork, pusher: PushProtocol, seconds: float,
          tick: float = 0.01) -> int:
    """A client sending as fast as it is read for ``seconds``; the bytes it got read."""
    sent = 0
    for _ in range(round(seconds / tick)):
        if not reading_paused(network):
            pusher.bytesMessageReceived(bytes(READ))
            sent += READ
        clock.advance(tick)
    return sent


def test_a_flooding_pusher_gets_twice_real_time_plus_the_burst() -> None:
    clock = Clock()
    network, source, pusher, decoded = paced_pusher(clock)
    seconds = 10.0
    flood(clock, network, pusher, seconds)
    pace = source.pace
    assert isinstance(pace, PushPace)
    ceiling = PACE_FACTOR * STEREO_48K * seconds + STEREO_48K * BURST_MS / 1000 + TURN_BYTES
    accepted = source.describe()["bytes_received"]
    assert accepted == pace.accepted == sum(decoded)
    assert accepted <= ceiling, "no more than the pace lets through"
    assert accepted >= ceiling - 2 * READ, "and the pace itself is not starved"
    assert pace.waits > 0 and network.calls.count("pause") > 10, "reading was paused often"
    assert max(decoded) <= TURN_BYTES, "no turn decodes more than TURN_BYTES"
    assert not source.paused, "the 60 s backlog never filled: the pace held it back"


def test_one_read_is_decoded_a_turn_at_a_time_with_reading_stopped() -> None:
    clock = Clock()
    network, source, pusher, decoded = paced_pusher(clock)
    pusher.bytesMessageReceived(bytes(READ))
    assert decoded == [TURN_BYTES], "one turn now; the rest (and the message's end) wait"
    assert decoded[0] == source.describe()["bytes_received"] and source.describe()[
        "messages_received"] == 0
    assert network.calls == ["pause"], "reading stops while bytes wait"
    assert [call.getTime() for call in clock.getDelayedCalls()] == [0.0]
    clock.advance(0)  # the next turns (callLater(0) each), within the burst
    assert decoded[:-1] == [TURN_BYTES] * (READ // TURN_BYTES) and decoded[-1] == 0
    assert source.describe()["messages_received"] == 1
    assert network.calls == ["pause", "resume"] and not clock.getDelayedCalls()


def test_reconnecting_gives_no_fresh_burst_and_a_hang_up_leaves_nothing_behind() -> None:
    clock = Clock()
    network, source, pusher, _ = paced_pusher(clock)
    pace = source.pace
    assert isinstance(pace, PushPace)
    while pace.available() > 0:  # no time passes: only the burst
        if not reading_paused(network):
            pusher.bytesMessageReceived(bytes(READ))
        clock.advance(0)
    assert clock.getDelayedCalls() and reading_paused(network), "bytes wait for the clock"
    before = source.describe()["bytes_received"]
    pusher.connectionLost(Failure(ConnectionError("gone")))
    assert source.pusher is None and not clock.getDelayedCalls(), "no turn left behind"
    network2, _, second, decoded = paced_pusher(clock, source)
    assert source.pace is pace, "the pace is the source's, not the connection's"
    second.bytesMessageReceived(bytes(READ))
    assert decoded == [], "nothing until the clock refills the bucket"
    assert network2.calls == ["pause"]
    assert source.describe()["bytes_received"] == before
    clock.advance(pace.wait_seconds())
    assert decoded and max(decoded) <= TURN_BYTES


def test_the_pace_is_a_bucket_on_the_clock() -> None:
    clock = Clock()
    pace = PushPace(1000, clock, factor=2.0, burst_ms=10_000)
    assert pace.available() == 10_000
    pace.take(12_000)
    assert pace.available() == -2000 and pace.wait_seconds() == pytest.approx(1.0005)
    clock.advance(1.0005)
    assert pace.available() > 0
    clock.advance(3600)
    assert pace.available() == 10_000, "idle time refills up to the burst only"
    with pytest.raises(ValueError):
        PushPace(0, clock)
