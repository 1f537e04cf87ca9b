"""Audio sources that talk sessions broadcast: tone, file, live (push, RTP, device); a registry.

Every source hands out 20 ms frames of 8 kHz mono PCM16 (see
:mod:`gb28181talk.interfaces`).  Decoding and resampling happen once, when
audio enters the source, so the pacer's per-frame pull is a slice.
"""

from __future__ import annotations

import math
import os
import re
import stat
import struct
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gb28181talk.errors import MediaError, SourceError
from gb28181talk.interfaces import (
    FRAME_BYTES,
    FRAME_MS,
    FRAME_SAMPLES,
    SAMPLE_RATE,
    IAudioSink,
    IAudioSource,
)

log = Logger()

SILENT_FRAME = bytes(FRAME_BYTES)
"""20 ms of PCM16 silence."""

BYTES_PER_MS = SAMPLE_RATE * 2 // 1000
"""PCM16 bytes per millisecond at 8 kHz mono: 16."""

G711_EXTENSIONS: Mapping[str, str] = {
    ".alaw": "alaw",
    ".pcma": "alaw",
    ".g711a": "alaw",
    ".ulaw": "ulaw",
    ".pcmu": "ulaw",
    ".g711u": "ulaw",
}
"""Raw (headerless) G.711 file name endings and the law each one holds."""

MAX_FILE_BYTES = 64 * 1024 * 1024
"""Largest audio file a FileSource loads: 64 MiB (6 min of 48 kHz stereo, 70 min of
8 kHz mono 16-bit); it is read whole and held in memory as PCM."""

KINDS = ("tone", "file", "push", "rtp")
"""Kinds that :meth:`SourceRegistry.create` builds from an API body."""


def _ms_to_bytes(ms: float) -> int:
    """PCM16 bytes (whole samples) in ``ms`` milliseconds of 8 kHz mono audio."""
    return int(ms * SAMPLE_RATE / 1000) * 2


def _key(app: str, stream: str) -> str:
    return f"{app}/{stream}"


# --------------------------------------------------------------------------- tone


@implementer(IAudioSource)
class ToneSource:
    """A sine wave, phase-continuous across frames: the test signal of every install.

    When the frequency is a whole number of hertz, one second (50 frames) holds
    a whole number of cycles, so those 50 frames are computed once and
    replayed; other frequencies are computed frame by frame from a running
    phase.
    """

    kind = "tone"

    def __init__(
        self,
        app: str,
        stream: str,
        frequency: float = 440.0,
        amplitude: float = 0.5,
        duration: float | None = None,
    ) -> None:
        if not 1 <= frequency <= 3999:
            raise SourceError(
                f"tone frequency {frequency!r} Hz is out of range; use 1 to 3999 Hz "
                f"(below half of the {SAMPLE_RATE} Hz sample rate)"
            )
        if not 0 <= amplitude <= 1:
            raise SourceError(
                f"tone amplitude {amplitude!r} is out of range; use 0.0 to 1.0 (full scale)"
            )
        if duration is not None and not 0 < duration <= 86400:
            raise SourceError(
                f"tone duration {duration!r} s is out of range; use more than 0 and at most "
                "86400 s, or leave it empty for an endless tone"
            )
        self.app = app
        self.stream = stream
        self.frequency = float(frequency)
        self.amplitude = float(amplitude)
        self.duration = None if duration is None else float(duration)
        self._total_frames = (
            None if duration is None else max(1, math.ceil(duration * 1000 / FRAME_MS))
        )
        self._frames_read = 0
        self._closed = False
        self._peak = round(self.amplitude * 32767)
        self._step = 2 * math.pi * self.frequency / SAMPLE_RATE
        self._phase = 0.0
        self._cycle: list[bytes] | None = None
        if self.frequency.is_integer():
            self._cycle = [self._compute_frame() for _ in range(1000 // FRAME_MS)]

    def _compute_frame(self) -> bytes:
        """Compute the next frame from the running phase and advance it."""
        phase, step, peak = self._phase, self._step, self._peak
        samples = [round(peak * math.sin(phase + i * step)) for i in range(FRAME_SAMPLES)]
        self._phase = (phase + FRAME_SAMPLES * step) % (2 * math.pi)
        return struct.pack(f"<{FRAME_SAMPLES}h", *samples)

    @property
    def ended(self) -> bool:
        """True once closed or ``duration`` seconds have been read."""
        return self._closed or (
            self._total_frames is not None and self._frames_read >= self._total_frames
        )

    def read_frame(self) -> bytes | None:
        """The next 20 ms of the sine, or None once ended."""
        if self.ended:
            return None
        if self._cycle is not None:
            frame = self._cycle[self._frames_read % len(self._cycle)]
        else:
            frame = self._compute_frame()
        self._frames_read += 1
        return frame

    def describe(self) -> dict[str, Any]:
        """App, stream, kind, the tone's options and how much has been read."""
        return {
            "app": self.app,
            "stream": self.stream,
            "kind": self.kind,
            "ended": self.ended,
            "frequency": self.frequency,
            "amplitude": self.amplitude,
            "duration": self.duration,
            "frames_read": self._frames_read,
            "position_ms": self._frames_read * FRAME_MS,
        }

    def close(self) -> None:
        """End the tone for every listener."""
        self._closed = True


# --------------------------------------------------------------------------- file


def load_audio_file(path: str) -> bytes:
    """Read a WAV or raw G.711 file into 8 kHz mono PCM16, or raise SourceError naming it.

    Raw G.711 is recognised by its name ending (``.alaw .pcma .g711a`` for
    A-law, ``.ulaw .pcmu .g711u`` for µ-law); anything else must be a WAV
    file that :mod:`gb28181talk.media.wav` can read.
    """
    from gb28181talk.media import wav

    try:
        info = os.stat(path)
    except (OSError, ValueError) as e:
        cause = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise SourceError(f"cannot open audio file {path!r}: {cause}") from e
    if not stat.S_ISREG(info.st_mode):
        raise SourceError(f"cannot use audio file {path!r}: it is not a regular file")
    if info.st_size > MAX_FILE_BYTES:
        raise SourceError(
            f"cannot use audio file {path!r}: it is {info.st_size:,} bytes, more than the "
            f"{MAX_FILE_BYTES // (1024 * 1024)} MiB a file source loads; convert it to 8 kHz "
            "mono (sox in.wav -r 8000 -c 1 out.wav) or cut it into parts"
        )
    law_name = G711_EXTENSIONS.get(os.path.splitext(path)[1].lower())
    try:
        if law_name is not None:
            with open(path, "rb") as f:
                raw = f.read()
            pcm = _decode_in_chunks(raw, 8000, 1, law_name)
        else:
            audio = wav.read_wav(path)
            pcm = _decode_in_chunks(audio.data, audio.sample_rate, audio.channels,
                                    audio.encoding)
    except OSError as e:
        raise SourceError(f"cannot read audio file {path!r}: {e.strerror or e}") from e
    except (MediaError, ValueError) as e:
        cause = str(e)
        if cause.startswith(f"{path}: "):  # WavError names the file itself
            cause = cause[len(path) + 2 :]
        if law_name is None and not path.lower().endswith(".wav"):
            endings = ", ".join("*" + ending for ending in sorted(G711_EXTENSIONS))
            cause += f" (give a WAV file, or raw G.711 named {endings})"
        raise SourceError(f"cannot use audio file {path!r}: {cause}") from e
    if len(pcm) < 2:
        raise SourceError(f"cannot use audio file {path!r}: it holds no audio samples")
    return pcm


DECODE_CHUNK_FRAMES = 4000
"""Input frames decoded and resampled at a time when loading a file (83 ms at 48 kHz)."""


def _decode_in_chunks(data: bytes, sample_rate: int, channels: int, encoding: str) -> bytes:
    """Stored audio to 8 kHz mono PCM16, exactly as a whole, but a short piece at a time.

    Loaded in a thread, the decoding must let the reactor thread run: one call
    over a whole file would hold the GIL for as long as its C loops take.
    """
    from gb28181talk.media import g711
    from gb28181talk.media.law import Law
    from gb28181talk.media.resample import StreamResampler

    law = None if encoding == "pcm16" else Law.from_name(encoding)
    step = DECODE_CHUNK_FRAMES * channels * (2 if law is None else 1)
    resampler = StreamResampler(sample_rate, channels)
    view = memoryview(data)
    out = bytearray()
    for start in range(0, len(view), step):
        chunk = bytes(view[start : start + step])
        out += resampler.feed(chunk if law is None else g711.decode(law, chunk))
    out += resampler.flush()
    return bytes(out)


@implementer(IAudioSource)
class FileSource:
    """A WAV or raw G.711 file, decoded once to 8 kHz PCM16 and played by slicing.

    The last frame is padded with silence; with ``loop`` the file restarts
    at its first frame, otherwise the source ends after the last frame.

    The constructor reads and decodes the file itself, synchronously (for
    library use and tests; a large file takes a while).  A program whose
    reactor must keep running passes ``pcm``, the result of
    :func:`load_audio_file` run in a thread, as
    :meth:`SourceRegistry.create_async` does for the API.
    """

    kind = "file"

    def __init__(
        self, app: str, stream: str, path: str, loop: bool = False, *, pcm: bytes | None = None
    ) -> None:
        self.app = app
        self.stream = stream
        self.path = path
        self.loop = bool(loop)
        self._pcm = load_audio_file(path) if pcm is None else pcm
        self._frame_count = math.ceil(len(self._pcm) / FRAME_BYTES)
        self._position = 0
        self._frames_read = 0
        self._loops = 0
        self._closed = False

    @property
    def ended(self) -> bool:
        """True once closed, or after the last frame when not looping."""
        return self._closed or (not self.loop and self._position >= self._frame_count)

    @property
    def duration_ms(self) -> int:
        """Length of the decoded audio in milliseconds."""
        return len(self._pcm) // BYTES_PER_MS

    def read_frame(self) -> bytes | None:
        """The next 20 ms slice of the file, or None once ended."""
        if self.ended:
            return None
        if self._position >= self._frame_count:  # looping: start over
            self._position = 0
            self._loops += 1
        start = self._position * FRAME_BYTES
        frame = self._pcm[start : start + FRAME_BYTES]
        if len(frame) < FRAME_BYTES:
            frame += SILENT_FRAME[len(frame) :]
        self._position += 1
        self._frames_read += 1
        return frame

    def describe(self) -> dict[str, Any]:
        """App, stream, kind, path, loop and the play position."""
        return {
            "app": self.app,
            "stream": self.stream,
            "kind": self.kind,
            "ended": self.ended,
            "path": self.path,
            "loop": self.loop,
            "duration_ms": self.duration_ms,
            "position_ms": self._position * FRAME_MS,
            "frames_read": self._frames_read,
            "loops": self._loops,
        }

    def close(self) -> None:
        """End the file for every listener and free its audio."""
        self._closed = True
        self._pcm = b""


# --------------------------------------------------------------------------- live


@implementer(IAudioSource)
class LiveSource:
    """Audio that arrives in real time (push, RTP, device), buffered for the pacer.

    :meth:`feed_pcm` appends 8 kHz PCM16 to a backlog.  :meth:`read_frame`
    waits until ``prefill_ms`` is buffered (absorbing network jitter), then
    hands out one frame per call; when the backlog runs dry it returns None
    (an underrun) and prefills again.

    The backlog is bounded by ``max_backlog_ms``.  Without flow control the
    oldest audio beyond it is dropped and counted in ``dropped_ms``.  A
    producer attached with :meth:`attach_producer` (a pusher's socket) is
    paused instead when the backlog passes the maximum and resumed once it
    drains under half, so a fast sender is slowed rather than losing audio;
    only beyond :attr:`hard_limit_ms` (audio that arrived before the pause
    took effect) is anything dropped.
    """

    def __init__(
        self, app: str, stream: str, kind: str, max_backlog_ms: int = 2000, prefill_ms: int = 60
    ) -> None:
        if not FRAME_MS <= max_backlog_ms <= 600_000:
            raise SourceError(
                f"max_backlog_ms {max_backlog_ms!r} is out of range; use {FRAME_MS} to 600000"
            )
        if not 0 <= prefill_ms <= max_backlog_ms:
            raise SourceError(
                f"prefill_ms {prefill_ms!r} is out of range; use 0 to max_backlog_ms "
                f"({max_backlog_ms})"
            )
        self.app = app
        self.stream = stream
        self.kind = kind
        self.max_backlog_ms = max_backlog_ms
        self.prefill_ms = prefill_ms
        self.hard_limit_ms = max(max_backlog_ms * 8, 60_000)
        self._max_bytes = _ms_to_bytes(max_backlog_ms)
        self._resume_bytes = self._max_bytes // 2
        self._hard_bytes = _ms_to_bytes(self.hard_limit_ms)
        self._prefill_bytes = max(_ms_to_bytes(prefill_ms), FRAME_BYTES)
        self._backlog = bytearray()
        self._odd = b""
        self._primed = False
        self._finishing = False
        self._closed = False
        self._producer: IPushProducer | None = None
        self._paused = False
        self._received_bytes = 0
        self._dropped_bytes = 0
        self._frames_read = 0
        self._underruns = 0
        self._pauses = 0

    # -- feeding

    def feed_pcm(self, pcm16: bytes) -> None:
        """Append 8 kHz mono PCM16; bound the backlog by pausing the producer or dropping."""
        if self._closed or self._finishing or not pcm16:
            return
        if self._odd:
            pcm16 = self._odd + pcm16
            self._odd = b""
        if len(pcm16) & 1:
            self._odd = pcm16[-1:]
            pcm16 = pcm16[:-1]
        backlog = self._backlog
        backlog += pcm16
        self._received_bytes += len(pcm16)
        size = len(backlog)
        if size <= self._max_bytes:
            return
        if self._producer is not None:
            if not self._paused:
                self._paused = True
                self._pauses += 1
                self._producer.pauseProducing()
            limit = self._hard_bytes
        else:
            limit = self._max_bytes
        if size > limit:
            excess = size - limit
            del backlog[:excess]
            self._dropped_bytes += excess

    def finish(self) -> None:
        """No more audio will come: play out the backlog, then end."""
        self._finishing = True
        if self._odd:
            self._odd = b""

    def attach_producer(self, producer: IPushProducer) -> None:
        """Flow-control ``producer`` (pause above the maximum backlog, resume under half)."""
        self._producer = producer
        self._paused = False
        if len(self._backlog) > self._max_bytes:
            self._paused = True
            self._pauses += 1
            producer.pauseProducing()

    def detach_producer(self) -> None:
        """Forget the producer (its connection is gone); the backlog bound drops again."""
        self._producer = None
        self._paused = False

    def trim_backlog(self, keep_ms: int | None = None) -> int:
        """Drop all but the newest ``keep_ms`` (default: prefill_ms) of a lossy backlog.

        Audio that queued while nobody listened is stale for a live feed: call
        this when the first session starts listening so it hears the present.
        A flow-controlled backlog (a pusher's file) is kept whole.  Returns
        the milliseconds dropped (also counted in ``dropped_ms``).
        """
        if self._producer is not None:
            return 0
        keep = self._prefill_bytes if keep_ms is None else _ms_to_bytes(max(keep_ms, 0))
        excess = len(self._backlog) - keep
        if excess <= 0:
            return 0
        del self._backlog[:excess]
        self._dropped_bytes += excess
        return excess // BYTES_PER_MS

    # -- reading

    def _on_short(self) -> None:
        """Hook: the backlog is short of what read_frame needs (RTP flushes reordering)."""

    @property
    def ended(self) -> bool:
        """True once closed, or finished and drained."""
        return self._closed or (self._finishing and not self._backlog)

    @property
    def backlog_ms(self) -> int:
        """Audio waiting to be read, in milliseconds."""
        return len(self._backlog) // BYTES_PER_MS

    @property
    def paused(self) -> bool:
        """True while the attached producer is paused by flow control."""
        return self._paused

    def read_frame(self) -> bytes | None:
        """The next 20 ms, or None while prefilling, on underrun, or once ended."""
        if self._closed:
            return None
        backlog = self._backlog
        need = FRAME_BYTES if self._primed else self._prefill_bytes
        if len(backlog) < need and not self._finishing:
            self._on_short()
        if not self._primed:
            if len(backlog) >= self._prefill_bytes or (self._finishing and backlog):
                self._primed = True
            else:
                return None
        if len(backlog) >= FRAME_BYTES:
            frame = bytes(backlog[:FRAME_BYTES])
            del backlog[:FRAME_BYTES]
        elif self._finishing:
            if not backlog:
                return None
            frame = bytes(backlog) + SILENT_FRAME[len(backlog) :]
            backlog.clear()
        else:
            self._primed = False
            self._underruns += 1
            return None
        self._frames_read += 1
        if self._paused and len(backlog) < self._resume_bytes:
            self._paused = False
            if self._producer is not None:
                self._producer.resumeProducing()
        return frame

    def describe(self) -> dict[str, Any]:
        """App, stream, kind, backlog settings and the live counters."""
        return {
            "app": self.app,
            "stream": self.stream,
            "kind": self.kind,
            "ended": self.ended,
            "max_backlog_ms": self.max_backlog_ms,
            "prefill_ms": self.prefill_ms,
            "backlog_ms": self.backlog_ms,
            "received_ms": self._received_bytes // BYTES_PER_MS,
            "dropped_ms": self._dropped_bytes // BYTES_PER_MS,
            "frames_read": self._frames_read,
            "underruns": self._underruns,
            "paused": self._paused,
            "pauses": self._pauses,
        }

    def close(self) -> None:
        """End the source for every listener and drop its backlog."""
        self._closed = True
        self._backlog.clear()
        self.detach_producer()


@implementer(IAudioSource, IAudioSink)
class DeviceAudioSource(LiveSource):
    """A device's voice in two-way talk, published as a source others can listen to.

    The talk session hands it decoded audio as an :class:`IAudioSink`; it ends
    when the session does (after its backlog plays out).
    """

    def __init__(
        self, app: str, stream: str, max_backlog_ms: int = 2000, prefill_ms: int = 60
    ) -> None:
        super().__init__(app, stream, "device", max_backlog_ms, prefill_ms)
        self.last_rtp_timestamp: int | None = None

    def audio_received(self, pcm16: bytes, rtp_timestamp: int) -> None:
        """Feed one packet's decoded audio from the device."""
        self.last_rtp_timestamp = rtp_timestamp
        self.feed_pcm(pcm16)

    def audio_ended(self) -> None:
        """The talk session ended: play out what is buffered, then end."""
        self.finish()


# --------------------------------------------------------------------------- registry

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")

_FIELDS: Mapping[str, tuple[str, ...]] = {
    "tone": ("frequency", "amplitude", "duration"),
    "file": ("path", "loop"),
    "push": ("sample_rate", "channels", "format", "max_backlog_ms", "prefill_ms"),
    "rtp": ("port", "interface", "max_backlog_ms", "prefill_ms"),
}
_COMMON = ("app", "stream", "kind")


def _number(
    spec: Mapping[str, Any], field: str, default: float | None, low: float, high: float,
    kind: str,
) -> float | None:
    """A finite number field within [low, high], or its default when absent/null."""
    value = spec.get(field)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SourceError(
            f"{kind} field {field!r} must be a number from {low:g} to {high:g}, "
            f"got {value!r}"
        )
    if (isinstance(value, float) and not math.isfinite(value)) or not low <= value <= high:
        raise SourceError(
            f"{kind} field {field!r} is {value!r}; allowed: a number from {low:g} to {high:g}"
        )
    return value


def _integer(
    spec: Mapping[str, Any], field: str, default: int, allowed: range | tuple[int, ...],
    kind: str,
) -> int:
    """An integer field among ``allowed`` (a range or a few values), or its default."""
    value = spec.get(field)
    if value is None:
        return default
    if isinstance(allowed, range):
        what = f"an integer from {allowed.start} to {allowed.stop - 1}"
    else:
        what = " or ".join(str(a) for a in allowed)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SourceError(f"{kind} field {field!r} must be {what}, got {value!r}")
    if value not in allowed:
        raise SourceError(f"{kind} field {field!r} is {value!r}; allowed: {what}")
    return value


def _string(spec: Mapping[str, Any], field: str, default: str | None, kind: str) -> str:
    """A non-empty string field; required when ``default`` is None."""
    value = spec.get(field)
    if value is None:
        if default is None:
            raise SourceError(f"{kind} source needs field {field!r} (a string)")
        return default
    if not isinstance(value, str) or not value:
        raise SourceError(f"{kind} field {field!r} must be a non-empty string, got {value!r}")
    return value


class SourceRegistry:
    """The named audio sources (``app/stream``) that talk sessions can broadcast.

    ``media_root``, when given, confines file sources to that directory
    (relative paths are taken inside it): the API must not read any file on
    the host just because a request names it.
    """

    def __init__(self, media_root: str | None = None) -> None:
        self._sources: dict[str, Any] = {}
        self._loading: set[str] = set()
        self.media_root = None if media_root is None else os.path.realpath(media_root)

    def __len__(self) -> int:
        return len(self._sources)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and len(key) == 2 and _key(*key) in self._sources

    def add(self, source: Any) -> Any:
        """Register ``source`` under its app/stream; an ended source of that name is replaced."""
        key = _key(source.app, source.stream)
        existing = self._sources.get(key)
        if existing is not None:
            if not existing.ended:
                raise SourceError(
                    f"source {key} exists; delete it first or pick another stream name"
                )
            existing.close()
        self._sources[key] = source
        log.info("audio source {key} added: {kind}", key=key, kind=source.kind)
        return source

    def find(self, app: str, stream: str) -> Any | None:
        """The source named app/stream, or None."""
        return self._sources.get(_key(app, stream))

    def get(self, app: str, stream: str) -> Any:
        """The source named app/stream, or SourceError saying how to make one."""
        source = self._sources.get(_key(app, stream))
        if source is None:
            raise SourceError(
                f"no source {_key(app, stream)}; create it with POST /api/sources "
                "or list them with GET /api/sources"
            )
        return source

    def remove(self, app: str, stream: str) -> Any:
        """Unregister and close the source (it ends for every listener); return it."""
        source = self.get(app, stream)
        del self._sources[_key(app, stream)]
        source.close()
        log.info("audio source {key} removed", key=_key(app, stream))
        return source

    def list(self) -> list[Any]:
        """Every source, sorted by app/stream."""
        return [self._sources[k] for k in sorted(self._sources)]

    def loading(self, app: str, stream: str) -> bool:
        """Whether a file source app/stream is being read by :meth:`create_async`."""
        return _key(app, stream) in self._loading

    def close_all(self) -> None:
        """Close and forget every source (service shutdown); files still loading are dropped."""
        sources = list(self._sources.values())
        self._sources.clear()
        self._loading.clear()
        for source in sources:
            source.close()

    # -- building from an API body

    def create(self, spec: Any, reactor: Any = None) -> Any:
        """Build, register and return a source from the native API body.

        ``{"app", "stream", "kind": "tone"|"file"|"push"|"rtp", ...kind options}``.
        Every missing, unknown or bad field is a SourceError naming the
        field, the value given and what is allowed.  ``reactor`` (an
        ``IReactorUDP``) is needed for ``rtp`` only.  A file is read and
        decoded here, synchronously: a service uses :meth:`create_async`.
        """
        kind, app, stream = self._check(spec)
        source = self._BUILDERS[kind](self, app, stream, spec, reactor)
        return self._register(source)

    def create_async(self, spec: Any, reactor: Any) -> Deferred[Any]:
        """As :meth:`create`, but a file is read and decoded in ``reactor``'s thread pool.

        The Deferred fires with the registered source once the file is
        loaded (the name is reserved meanwhile: see :meth:`loading`), or
        fails with SourceError; other kinds (and a reactor without a thread
        pool) are built at once and the Deferred has fired on return.
        """
        try:
            kind, app, stream = self._check(spec)
            if kind != "file" or not hasattr(reactor, "getThreadPool"):
                source = self._BUILDERS[kind](self, app, stream, spec, reactor)
                return succeed(self._register(source))
            path, loop = self._file_options(spec)
        except SourceError:
            return fail()
        key = _key(app, stream)
        self._loading.add(key)
        loading = deferToThreadPool(reactor, reactor.getThreadPool(), load_audio_file, path)

        def loaded(pcm: bytes) -> Any:
            if key not in self._loading:
                raise SourceError(f"source {key} was not added: the sources were closed "
                                  "(the service is stopping) while its file loaded")
            self._loading.discard(key)
            return self._register(FileSource(app, stream, path, loop, pcm=pcm))

        def not_loaded(failure: Failure) -> Failure:
            self._loading.discard(key)
            return failure

        return loading.addCallbacks(loaded, not_loaded)

    def _check(self, spec: Any) -> tuple[str, str, str]:
        """The kind, app and stream of an API body whose fields are all known and free."""
        if not isinstance(spec, Mapping):
            raise SourceError(
                f"a source is described by a JSON object with app, stream and kind; "
                f"got {type(spec).__name__}"
            )
        kind = spec.get("kind")
        if not isinstance(kind, str) or kind not in _FIELDS:
            hint = (
                "; device sources are made by two-way talk sessions"
                if kind == "device" else ""
            )
            raise SourceError(
                f"field 'kind' is {kind!r}; allowed: {', '.join(repr(k) for k in KINDS)}{hint}"
            )
        unknown = sorted(str(k) for k in spec if k not in _COMMON and k not in _FIELDS[kind])
        if unknown:
            raise SourceError(
                f"unknown field(s) {', '.join(repr(u) for u in unknown)} for a {kind} source; "
                f"allowed: {', '.join(_COMMON + _FIELDS[kind])}"
            )
        app = self._name(spec, "app")
        stream = self._name(spec, "stream")
        existing = self.find(app, stream)
        if existing is not None and not existing.ended:
            raise SourceError(
                f"source {app}/{stream} exists; delete it first or pick another stream name"
            )
        if self.loading(app, stream):
            raise SourceError(
                f"source {app}/{stream} is being loaded from its file; wait for that answer "
                "or pick another stream name"
            )
        return kind, app, stream

    def _register(self, source: Any) -> Any:
        try:
            return self.add(source)
        except SourceError:
            source.close()
            raise

    @staticmethod
    def _name(spec: Mapping[str, Any], field: str) -> str:
        value = spec.get(field)
        if not isinstance(value, str) or not _NAME.fullmatch(value):
            raise SourceError(
                f"field {field!r} is {value!r}; allowed: 1 to 128 characters of letters, "
                "digits, '_', '-', '.', not starting with '.' or '-'"
            )
        return value

    def _build_tone(self, app: str, stream: str, spec: Mapping[str, Any], reactor: Any) -> Any:
        frequency = _number(spec, "frequency", 440.0, 1, 3999, "tone")
        amplitude = _number(spec, "amplitude", 0.5, 0, 1, "tone")
        duration = _number(spec, "duration", None, 0, 86400, "tone")
        if duration is not None and duration <= 0:
            raise SourceError(
                f"tone field 'duration' is {duration!r}; allowed: more than 0 up to 86400 "
                "seconds, or null for an endless tone"
            )
        assert frequency is not None and amplitude is not None
        return ToneSource(app, stream, frequency, amplitude, duration)

    def _build_file(self, app: str, stream: str, spec: Mapping[str, Any], reactor: Any) -> Any:
        path, loop = self._file_options(spec)
        return FileSource(app, stream, path, loop)

    def _file_options(self, spec: Mapping[str, Any]) -> tuple[str, bool]:
        """The confined path and the loop flag of a file source's body."""
        path = _string(spec, "path", None, "file")
        loop = spec.get("loop", False)
        if loop is None:
            loop = False
        if not isinstance(loop, bool):
            raise SourceError(f"file field 'loop' must be true or false, got {loop!r}")
        return self._confine(path), loop

    def _confine(self, path: str) -> str:
        """Resolve ``path`` inside media_root (if set), refusing any way out of it."""
        if "\x00" in path:
            raise SourceError(f"file field 'path' {path!r} contains a NUL character")
        if self.media_root is None:
            return path
        full = os.path.realpath(os.path.join(self.media_root, path))
        if os.path.commonpath([full, self.media_root]) != self.media_root:
            raise SourceError(
                f"file path {path!r} is outside the media directory {self.media_root}; "
                "name a file inside it"
            )
        return full

    def _build_push(self, app: str, stream: str, spec: Mapping[str, Any], reactor: Any) -> Any:
        from gb28181talk.media.resample import SUPPORTED_RATES
        from gb28181talk.sources.push import FORMATS, PushSource

        sample_rate = _integer(spec, "sample_rate", 8000, tuple(SUPPORTED_RATES), "push")
        channels = _integer(spec, "channels", 1, (1, 2), "push")
        fmt = spec.get("format", "pcm16")
        if fmt is None:
            fmt = "pcm16"
        if fmt not in FORMATS:
            raise SourceError(
                f"push field 'format' is {fmt!r}; allowed: {', '.join(map(repr, FORMATS))}"
            )
        backlog, prefill = self._live_options(spec, "push")
        return PushSource(app, stream, sample_rate, channels, fmt, backlog, prefill)

    def _build_rtp(self, app: str, stream: str, spec: Mapping[str, Any], reactor: Any) -> Any:
        from gb28181talk.sources.ingest import RtpIngestSource

        port = _integer(spec, "port", 0, range(0, 65536), "rtp")
        interface = _string(spec, "interface", "127.0.0.1", "rtp")
        backlog, prefill = self._live_options(spec, "rtp")
        if reactor is None:
            raise SourceError("an rtp source needs a reactor to listen with; none was given")
        return RtpIngestSource(app, stream, reactor, port, interface, backlog, prefill)

    @staticmethod
    def _live_options(spec: Mapping[str, Any], kind: str) -> tuple[int, int]:
        backlog = _integer(spec, "max_backlog_ms", 2000, range(100, 60001), kind)
        prefill = _integer(spec, "prefill_ms", 60, range(0, 1001), kind)
        if prefill > backlog:
            raise SourceError(
                f"{kind} field 'prefill_ms' is {prefill}; allowed: at most max_backlog_ms "
                f"({backlog})"
            )
        return backlog, prefill

    _BUILDERS: Mapping[
        str, Callable[[SourceRegistry, str, str, Mapping[str, Any], Any], Any]
    ] = {
        "tone": _build_tone,
        "file": _build_file,
        "push": _build_push,
        "rtp": _build_rtp,
    }
