"""The push source: audio bytes from one pusher at a time, decoded and resampled to 8 kHz.

A client (a browser's microphone, a script streaming a file) creates a push
source with ``POST /api/sources`` (``kind: push`` with its sample rate,
channels and format) and pushes its audio over a WebSocket: the protocol and
the HTTP resource live in :mod:`gb28181talk.web.push`; this module only turns
bytes into PCM.  The pusher's socket is flow-controlled through the live
backlog (:class:`~gb28181talk.sources.live.LiveSource`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zope.interface import implementer

from gb28181talk.errors import MediaError, SourceError
from gb28181talk.interfaces import IPushSource
from gb28181talk.media import g711
from gb28181talk.media.law import Law
from gb28181talk.sources.base import integer_field
from gb28181talk.sources.live import LIVE_SPEC_FIELDS, LiveSource, live_options

FORMATS = ("pcm16", "alaw", "ulaw")
"""What a pusher's binary messages hold: little-endian PCM16, or G.711 code words."""

SPEC_FIELDS = ("sample_rate", "channels", "format", *LIVE_SPEC_FIELDS)
"""The API body's fields of a ``push`` source, beside app, stream and kind."""


@implementer(IPushSource)
class PushSource(LiveSource):
    """A live source fed by :meth:`push_bytes`, from one WebSocket pusher at a time.

    ``format`` says what the pushed bytes are ("pcm16" little-endian, "alaw",
    "ulaw"), at ``sample_rate`` Hz with ``channels`` interleaved channels;
    they are decoded and resampled to 8 kHz mono on arrival.  Partial samples
    at the end of a message are kept for the next one.
    """

    def __init__(
        self,
        app: str,
        stream: str,
        sample_rate: int = 8000,
        channels: int = 1,
        format: str = "pcm16",
        max_backlog_ms: int = 2000,
        prefill_ms: int = 60,
    ) -> None:
        super().__init__(app, stream, "push", max_backlog_ms, prefill_ms)
        if format not in FORMATS:
            raise SourceError(
                f"push format {format!r} is not supported; use {', '.join(map(repr, FORMATS))}"
            )
        if channels not in (1, 2):
            raise SourceError(f"push channels {channels!r} is not supported; use 1 or 2")
        self.sample_rate = sample_rate
        self.channels = channels
        self.format = format
        self._law = None if format == "pcm16" else Law.from_name(format)
        self._sample_bytes = (2 if self._law is None else 1) * channels
        self._carry = b""
        self._resampler: Any = self._new_resampler()
        self.pusher: Any = None
        """The connected pusher (an IPusher: the web layer's ``PushProtocol``), or None."""
        self._bytes_received = 0
        self._messages_received = 0
        self._pushers_total = 0
        self.pace: Any = None
        """The pushers' pace (the web layer's ``PushPace``), kept across pushers so that
        reconnecting gives no fresh burst; None until the first paced pusher."""

    @property
    def bytes_per_second(self) -> int:
        """Real time in the declared format: the bytes a pusher sends per second of audio."""
        return self.sample_rate * self._sample_bytes

    def _new_resampler(self) -> Any:
        """A StreamResampler to 8 kHz mono, or None when the input is already that."""
        if self.sample_rate == 8000 and self.channels == 1:
            return None
        from gb28181talk.media.resample import StreamResampler

        try:
            return StreamResampler(self.sample_rate, self.channels)
        except (MediaError, ValueError) as e:
            raise SourceError(
                f"push audio at {self.sample_rate} Hz, {self.channels} channel(s) cannot be "
                f"resampled: {e}"
            ) from e

    def push_bytes(self, data: bytes | bytearray, message_end: bool = True) -> None:
        """Decode and resample pushed bytes and feed them to the backlog.

        ``data`` is a whole message, or (``message_end=False``) one fragment of
        a message as it arrives; ``push_bytes(b"", message_end=True)`` ends
        a message given in fragments.  Only ended messages are counted.
        """
        if self._closed:
            return
        if message_end:
            self._messages_received += 1
        self._bytes_received += len(data)
        if self._carry:
            data = self._carry + data
        whole = len(data) - len(data) % self._sample_bytes
        self._carry = bytes(data[whole:])
        if not whole:
            return
        pcm = bytes(data[:whole]) if whole != len(data) or type(data) is not bytes else data
        if self._law is not None:
            pcm = g711.decode(self._law, pcm)
        if self._resampler is not None:
            pcm = self._resampler.feed(pcm)
        self.feed_pcm(pcm)

    def claim(self, pusher: Any) -> bool:
        """Make ``pusher`` the one pusher; False if there is one already or the source ended."""
        if self.pusher is not None or self.ended:
            return False
        self.pusher = pusher
        self._pushers_total += 1
        return True

    def release(self, pusher: Any) -> bool:
        """``pusher`` left: stop flow-controlling it and flush its audio; False if not ours."""
        if self.pusher is not pusher:
            return False
        self.pusher = None
        self.detach_producer()
        self.end_of_push()
        return True

    def end_of_push(self) -> None:
        """A pusher left: flush the resampler so its last audio plays, start clean for the next."""
        self._carry = b""
        if self._resampler is not None:
            tail = self._resampler.flush()  # also starts it afresh
            if tail:
                self.feed_pcm(tail)

    def describe(self) -> dict[str, Any]:
        """Live counters plus the push format and who is pushing."""
        info = super().describe()
        info.update(
            sample_rate=self.sample_rate,
            channels=self.channels,
            format=self.format,
            pusher=None if self.pusher is None else getattr(self.pusher, "peer", "?"),
            bytes_received=self._bytes_received,
            messages_received=self._messages_received,
            pushers_total=self._pushers_total,
        )
        return info

    def close(self) -> None:
        """End the source and tell its pusher, which hangs up saying why."""
        pusher = self.pusher
        super().close()
        if pusher is not None:
            pusher.source_closed("the push source was deleted")


def push_from_spec(app: str, stream: str, spec: Mapping[str, Any]) -> PushSource:
    """A PushSource from the API body's push fields, or SourceError naming the bad one."""
    from gb28181talk.media.resample import SUPPORTED_RATES

    sample_rate = integer_field(spec, "sample_rate", 8000, tuple(SUPPORTED_RATES), "push")
    channels = integer_field(spec, "channels", 1, (1, 2), "push")
    fmt = spec.get("format", "pcm16")
    if fmt is None:
        fmt = "pcm16"
    if fmt not in FORMATS:
        raise SourceError(
            f"push field 'format' is {fmt!r}; allowed: {', '.join(map(repr, FORMATS))}"
        )
    backlog, prefill = live_options(spec, "push")
    return PushSource(app, stream, sample_rate, channels, fmt, backlog, prefill)
