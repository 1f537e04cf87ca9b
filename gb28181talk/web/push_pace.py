"""A pusher's pace: how many bytes it may hand to its push source, by the clock.

Decoding and resampling pushed audio runs in the reactor (48 kHz stereo costs
about 10 ms of pure Python per 64 KiB read), so a pusher that sends faster than
real time takes reactor time from every other session.  :class:`PushPace` is a
token bucket in the source's declared format: ``factor`` times real time (2x: a
client catching up after a stall, a script pushing a file) plus a burst of
``burst_ms`` of audio.  The WebSocket protocol stops reading the pusher's TCP
connection while the bucket is empty, so the excess waits in the client's
kernel buffers, not in ours.  The bucket belongs to the source, not to one
connection: a pusher that hangs up and reconnects does not get a fresh burst.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

PACE_FACTOR = 2.0
"""How much faster than real time (of the declared format) a pusher may push."""

BURST_MS = 2000
"""Audio a pusher may push at once beyond its pace, in milliseconds of its format."""

TURN_BYTES = 8192
"""Most pushed bytes decoded in one reactor turn (about 1.2 ms of resampling 48 kHz
stereo); the rest waits for the next turn (``callLater(0)``)."""


class PushPace:
    """A token bucket of pushed bytes on ``clock``: ``factor`` x real time plus a burst."""

    def __init__(
        self,
        bytes_per_second: float,
        clock: IReactorTime,
        factor: float = PACE_FACTOR,
        burst_ms: int = BURST_MS,
    ) -> None:
        if bytes_per_second <= 0 or factor <= 0 or burst_ms < 0:
            raise ValueError("a push pace needs a positive rate and factor, a burst >= 0")
        self.clock = clock
        self.rate = bytes_per_second * factor
        """Bytes per second the bucket refills with."""
        self.burst = max(bytes_per_second * burst_ms / 1000, float(TURN_BYTES))
        """Most bytes the bucket holds (the burst a pusher may send at once)."""
        self._tokens = self.burst
        self._at = clock.seconds()
        self.accepted = 0
        """Bytes taken so far (by every pusher of the source)."""
        self.waits = 0
        """Times the bucket ran empty and reading waited for the clock."""

    def _refill(self) -> None:
        now = self.clock.seconds()
        if now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = max(self._at, now)

    def available(self) -> float:
        """Bytes that may be taken now (<= 0: wait :meth:`wait_seconds` first)."""
        self._refill()
        return self._tokens

    def take(self, count: int) -> None:
        """``count`` bytes were handed on; the bucket may go below zero by one piece."""
        self._refill()
        self._tokens -= count
        self.accepted += count

    def wait_seconds(self) -> float:
        """Seconds until the bucket holds a byte again (0 when it does now)."""
        self._refill()
        if self._tokens > 0:
            return 0.0
        self.waits += 1
        return (1 - self._tokens) / self.rate
