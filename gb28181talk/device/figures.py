"""The figures of one received RTP stream: packets, loss, duplicates, reordering, jitter.

Sans-I/O and allocation-light: `StreamAccount.add` takes one packet's header fields and its
arrival time (seconds, any clock) and updates the running figures; `figures()` is a frozen
snapshot.  A device that keeps its packets' `Arrival` records instead (the load generator's
fast path) gets the same figures, for any window of time, from `account_arrivals`.

Definitions (RFC 3550 where it has one):

* sequence numbers are extended over their 16-bit wrap relative to the highest seen;
  ``expected`` is highest - lowest + 1 per SSRC run (a new SSRC starts a new run);
  ``lost`` is expected minus the distinct sequence numbers heard (never negative);
* a ``duplicate`` repeats a sequence number heard within the last `SEQUENCE_WINDOW`;
  ``reordered`` arrived after a higher sequence number (and is not a duplicate);
  a packet older than the window is counted ``reordered`` and stays lost;
* ``transit`` D between consecutive arrivals of one SSRC is (arrival gap) - (timestamp gap)
  in seconds; ``gap jitter`` is |D| (what a device's jitter buffer must absorb), summarised as
  mean and max; ``jitter`` is RFC 3550's interarrival jitter J += (|D| - J) / 16.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "SEQUENCE_WINDOW",
    "Arrival",
    "Gap",
    "StreamAccount",
    "StreamFigures",
    "account_arrivals",
    "arrival_gaps",
]

SEQUENCE_WINDOW = 1024
"""Sequence numbers remembered behind the highest, to tell a duplicate from a late packet."""

_U16 = 0xFFFF
_U32 = 0xFFFFFFFF


class Arrival(NamedTuple):
    """One packet as a timed device records it: when it came and its RTP header fields."""

    at: float
    """Arrival time in seconds (the kernel's receive timestamp where there is one)."""
    sequence: int
    timestamp: int
    ssrc: int
    payload_type: int
    size: int
    """The RTP packet's size in bytes (header included, framing not)."""


class Gap(NamedTuple):
    """The gap between two consecutive arrivals of one SSRC, against their timestamps."""

    jitter_ms: float
    """|arrival gap - RTP timestamp gap| in milliseconds."""
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class StreamFigures:
    """A received stream's figures at one moment (see the module's definitions)."""

    packets: int = 0
    bytes: int = 0
    expected: int = 0
    lost: int = 0
    duplicates: int = 0
    reordered: int = 0
    ssrcs: tuple[int, ...] = ()
    """Every SSRC heard, in the order first heard."""
    payload_types: tuple[int, ...] = ()
    """Every payload type heard, in the order first heard."""
    first_arrival: float | None = None
    last_arrival: float | None = None
    gaps: int = 0
    """Arrival gaps measured (consecutive packets of one SSRC)."""
    gap_jitter_mean_ms: float = 0.0
    gap_jitter_max_ms: float = 0.0
    jitter_ms: float = 0.0
    """RFC 3550 interarrival jitter, in milliseconds."""

    def describe(self) -> dict[str, object]:
        """The figures as JSON-ready values (SSRCs as 10-digit strings, as GB28181 writes them)."""
        return {
            "packets": self.packets,
            "bytes": self.bytes,
            "expected": self.expected,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "ssrcs": [f"{ssrc:010d}" for ssrc in self.ssrcs],
            "payload_types": list(self.payload_types),
            "first_arrival": self.first_arrival,
            "last_arrival": self.last_arrival,
            "gap_jitter_mean_ms": round(self.gap_jitter_mean_ms, 3),
            "gap_jitter_max_ms": round(self.gap_jitter_max_ms, 3),
            "jitter_ms": round(self.jitter_ms, 3),
        }


class StreamAccount:
    """Running figures of one received stream, updated one packet at a time in arrival order."""

    def __init__(self, clock_rate: int = 8000) -> None:
        if not isinstance(clock_rate, int) or clock_rate <= 0:
            raise ValueError(f"clock rate must be a positive number of Hz, got {clock_rate!r}")
        self.clock_rate = clock_rate
        self._packets = 0
        self._bytes = 0
        self._duplicates = 0
        self._reordered = 0
        self._ssrcs: dict[int, None] = {}
        self._payload_types: dict[int, None] = {}
        self._first_arrival: float | None = None
        self._last_arrival = 0.0
        # the current SSRC run
        self._ssrc: int | None = None
        self._highest = 0  # extended sequence numbers
        self._lowest = 0
        self._unique = 0
        self._expected_before = 0  # expected in earlier SSRC runs
        self._unique_before = 0
        self._seen = bytearray(SEQUENCE_WINDOW)  # 1 where (extended sequence % window) was heard
        # transit, of the previous arrival of the current SSRC
        self._last_timestamp = 0
        self._gaps = 0
        self._gap_sum = 0.0
        self._gap_max = 0.0
        self._jitter = 0.0  # seconds
        self._since: float | None = None

    def start_after(self, previous: Arrival) -> None:
        """Seed the account with the packet heard just before a window, without counting it.

        The window's first packet then has a gap to measure and a sequence to follow from,
        so a window's loss and jitter match the whole stream's over the same packets.
        """
        self._begin_run(previous.ssrc, previous.sequence)
        self._lowest = self._highest + 1  # the seed itself is not expected in the window
        self._seen[self._highest % SEQUENCE_WINDOW] = 0
        self._unique = 0
        self._last_arrival = previous.at
        self._last_timestamp = previous.timestamp
        self._since = previous.at

    def add(
        self, sequence: int, timestamp: int, ssrc: int, payload_type: int, size: int, at: float
    ) -> None:
        """Account one packet that arrived at ``at`` (seconds); call in arrival order."""
        self._packets += 1
        self._bytes += size
        if payload_type not in self._payload_types:
            self._payload_types[payload_type] = None
        if self._first_arrival is None:
            self._first_arrival = at
        if ssrc not in self._ssrcs:
            self._ssrcs[ssrc] = None
        if ssrc != self._ssrc:
            self._begin_run(ssrc, sequence)
            self._last_arrival = at
            self._last_timestamp = timestamp
            return
        seen = self._seen
        delta = ((sequence - self._highest + 0x8000) & _U16) - 0x8000
        if delta > 0:
            highest = self._highest + delta
            if delta >= SEQUENCE_WINDOW:
                seen[:] = bytes(SEQUENCE_WINDOW)
            else:
                for skipped in range(self._highest + 1, highest):
                    seen[skipped % SEQUENCE_WINDOW] = 0
            seen[highest % SEQUENCE_WINDOW] = 1
            self._highest = highest
            self._unique += 1
        else:
            extended = self._highest + delta
            if delta <= -SEQUENCE_WINDOW:
                self._reordered += 1
            elif seen[extended % SEQUENCE_WINDOW]:
                self._duplicates += 1
            else:
                seen[extended % SEQUENCE_WINDOW] = 1
                self._unique += 1
                self._reordered += 1
                if extended < self._lowest:
                    self._lowest = extended
        # transit: arrival gap minus timestamp gap, in seconds
        stamp_gap = ((timestamp - self._last_timestamp + 0x80000000) & _U32) - 0x80000000
        transit = (at - self._last_arrival) - stamp_gap / self.clock_rate
        if transit < 0:
            transit = -transit
        self._gaps += 1
        self._gap_sum += transit
        if transit > self._gap_max:
            self._gap_max = transit
        self._jitter += (transit - self._jitter) / 16
        self._last_arrival = at
        self._last_timestamp = timestamp

    def _begin_run(self, ssrc: int, sequence: int) -> None:
        """Close the current SSRC run's loss figures and start a run for ``ssrc``."""
        if self._ssrc is not None:
            self._expected_before += self._highest - self._lowest + 1
            self._unique_before += self._unique
        self._ssrc = ssrc
        self._highest = self._lowest = sequence
        self._seen[:] = bytes(SEQUENCE_WINDOW)
        self._seen[sequence % SEQUENCE_WINDOW] = 1
        self._unique = 1

    def figures(self) -> StreamFigures:
        """A frozen snapshot of the figures so far."""
        if self._ssrc is None:
            return StreamFigures()
        expected = self._expected_before + self._highest - self._lowest + 1
        unique = self._unique_before + self._unique
        gaps = self._gaps
        return StreamFigures(
            packets=self._packets,
            bytes=self._bytes,
            expected=expected,
            lost=max(0, expected - unique),
            duplicates=self._duplicates,
            reordered=self._reordered,
            ssrcs=tuple(self._ssrcs),
            payload_types=tuple(self._payload_types),
            first_arrival=self._first_arrival,
            last_arrival=self._last_arrival if self._packets else None,
            gaps=gaps,
            gap_jitter_mean_ms=self._gap_sum / gaps * 1000 if gaps else 0.0,
            gap_jitter_max_ms=self._gap_max * 1000,
            jitter_ms=self._jitter * 1000,
        )


def _window(
    arrivals: Sequence[Arrival], since: float | None, until: float | None
) -> tuple[Arrival | None, Iterable[Arrival]]:
    """The arrival just before ``since`` (if any) and the arrivals in [since, until]."""
    if since is None and until is None:
        return None, arrivals
    previous: Arrival | None = None
    inside: list[Arrival] = []
    for arrival in arrivals:
        if since is not None and arrival.at < since:
            previous = arrival
        elif until is None or arrival.at <= until:
            inside.append(arrival)
    return previous, inside


def account_arrivals(
    arrivals: Sequence[Arrival],
    clock_rate: int = 8000,
    since: float | None = None,
    until: float | None = None,
) -> StreamFigures:
    """The figures of the recorded arrivals in [since, until] (all of them by default).

    The packet just before ``since`` seeds sequence and transit, not the counts.
    """
    account = StreamAccount(clock_rate)
    previous, inside = _window(arrivals, since, until)
    if previous is not None:
        account.start_after(previous)
    add = account.add
    for at, sequence, timestamp, ssrc, payload_type, size in inside:
        add(sequence, timestamp, ssrc, payload_type, size, at)
    return account.figures()


def arrival_gaps(
    arrivals: Sequence[Arrival],
    clock_rate: int = 8000,
    since: float | None = None,
    until: float | None = None,
) -> list[Gap]:
    """Each gap between consecutive arrivals of one SSRC in [since, until], against timestamps.

    The packet just before ``since`` gives the window's first packet its gap.
    """
    previous, inside = _window(arrivals, since, until)
    gaps: list[Gap] = []
    for arrival in inside:
        if previous is not None and previous.ssrc == arrival.ssrc:
            stamp_gap = (
                ((arrival.timestamp - previous.timestamp + 0x80000000) & _U32) - 0x80000000
            )
            transit = abs((arrival.at - previous.at) - stamp_gap / clock_rate)
            gaps.append(Gap(transit * 1000, previous.at, arrival.at))
        previous = arrival
    return gaps
