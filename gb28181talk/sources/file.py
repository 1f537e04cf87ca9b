"""The file source: a WAV or raw G.711 file decoded once (in a thread) and played by slicing.

Every file source's decoded audio is held in memory, so all of them share one
budget (:class:`FileMemory`, ``--max-file-memory``): a file reserves what its
decoding needs before it starts (in the loading thread) and keeps what its
audio takes once loaded; a file that does not fit is refused, naming the
budget.  Loading never stalls the reactor: the file is read, decoded and
resampled in the thread a short piece at a time, and the audio is kept in
segments (:class:`DecodedAudio`) that the source plays from as they are, so
no whole-file buffer is ever read, built, joined or copied.

The decoding is pure Python and holds the interpreter lock while it runs, on
the core the reactor runs on: so the service decodes one file at a time
(:data:`DECODE_LOCK`; loads beyond it wait, their memory already reserved) and
after each piece the loading thread sleeps as long as the piece took, so the
reactor is never kept from the lock for more than one piece and a load takes
at most about half of the core.
"""

from __future__ import annotations

import math
import os
import stat
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from zope.interface import implementer

from gb28181talk.errors import FileMemoryFull, FileTooLargeForMemory, MediaError, SourceError
from gb28181talk.interfaces import FRAME_BYTES, FRAME_MS, SAMPLE_RATE, IAudioSource
from gb28181talk.sources.base import BYTES_PER_MS, SILENT_FRAME, source_description, string_field

SPEC_FIELDS = ("path", "loop")
"""The API body's fields of a ``file`` source, beside app, stream and kind."""

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
8 kHz mono 16-bit); its decoded audio is held in memory as PCM."""

DEFAULT_FILE_MEMORY = 256 * 1024 * 1024
"""The default budget of all file sources' memory (loaded and loading): 256 MiB."""

DECODE_CHUNK_FRAMES = 4000
"""Input frames read, decoded and resampled at a time when loading a file (83 ms at 48 kHz)."""

SEGMENT_FRAMES = 200
"""20 ms frames per segment of decoded audio (4 s, 64,000 bytes)."""

LOAD_SLACK_BYTES = 256 * 1024
"""What a load needs beyond its decoded audio while it runs (a piece read, decoded, resampled,
a segment being filled), reserved from the budget until the load ends."""

DECODE_LOCK = threading.Lock()
"""Held by the service's file load decoding now: one file is decoded at a time."""

MAX_YIELD_SECONDS = 0.005
"""Longest sleep after a piece (a piece of 48 kHz stereo takes about 2.5 ms)."""

_MIB = 1024 * 1024


def _mib(nbytes: int) -> str:
    return f"{nbytes / _MIB:.1f} MiB"


# ------------------------------------------------------------------ the memory budget


class FileMemory:
    """The memory budget of file sources: the decoded audio held plus the loads running.

    Thread-safe: loads reserve in the thread pool, sources give back on the reactor.
    """

    def __init__(self, limit: int = DEFAULT_FILE_MEMORY) -> None:
        self.limit = limit
        self.used = 0
        """Bytes reserved now (decoded audio of loaded files and what loads running need)."""
        self.files = 0
        """Files holding a reservation (loaded or loading)."""
        self._lock = threading.Lock()

    def reserve(self, path: str, nbytes: int) -> FileMemoryLease:
        """Reserve ``nbytes`` to load ``path``, or refuse saying what is used and what to do."""
        with self._lock:
            if nbytes > self.limit:
                raise FileTooLargeForMemory(
                    f"cannot load audio file {path!r}: it needs {_mib(nbytes)} while loading, "
                    f"more than the whole {_mib(self.limit)} budget of file sources; give a "
                    "shorter file (cut it into parts) or start the service with a larger "
                    "--max-file-memory (MiB)"
                )
            if self.used + nbytes > self.limit:
                raise FileMemoryFull(
                    f"cannot load audio file {path!r} now: it needs {_mib(nbytes)} while "
                    f"loading and file sources already use {_mib(self.used)} of the "
                    f"{_mib(self.limit)} budget ({self.files} files); delete a file source "
                    "you no longer need (DELETE /api/sources/{app}/{stream}), wait for the "
                    "loads in progress, or start the service with a larger --max-file-memory "
                    "(MiB)"
                )
            self.used += nbytes
            self.files += 1
        return FileMemoryLease(self, nbytes)

    def _change(self, delta: int, files: int = 0) -> None:
        with self._lock:
            self.used += delta
            self.files += files


class FileMemoryLease:
    """One file's share of the :class:`FileMemory` budget, resized once loaded, given back
    when the source closes."""

    def __init__(self, memory: FileMemory, nbytes: int) -> None:
        self._memory: FileMemory | None = memory
        self.nbytes = nbytes

    def resize(self, nbytes: int) -> None:
        """Hold ``nbytes`` from now on (what the loaded audio takes)."""
        if self._memory is not None:
            self._memory._change(nbytes - self.nbytes)
            self.nbytes = nbytes

    def release(self) -> None:
        """Give the share back; harmless twice."""
        memory, self._memory = self._memory, None
        if memory is not None:
            memory._change(-self.nbytes, -1)


# ------------------------------------------------------------------ reading and decoding


@dataclass(frozen=True, slots=True)
class AudioLayout:
    """Where an audio file's samples lie and what they are, from its header (or its name)."""

    path: str
    sample_rate: int
    channels: int
    encoding: str  # "pcm16", "alaw" or "ulaw"
    data_offset: int
    data_bytes: int  # whole frames

    @property
    def frame_bytes(self) -> int:
        """Bytes of one stored frame (a sample of every channel)."""
        return self.channels * (2 if self.encoding == "pcm16" else 1)

    @property
    def decoded_bytes(self) -> int:
        """About the bytes of its 8 kHz mono PCM16 (the resampler may add a few samples)."""
        frames = self.data_bytes // self.frame_bytes
        return (math.ceil(frames * SAMPLE_RATE / self.sample_rate) + 16) * 2


@dataclass(frozen=True, slots=True)
class DecodedAudio:
    """8 kHz mono PCM16 held as segments of ``segment_frames`` frames (the last may be short),
    so that no buffer of the whole audio is ever built, grown or joined."""

    segments: tuple[bytes, ...]
    segment_frames: int
    nbytes: int

    @classmethod
    def whole(cls, pcm: bytes) -> DecodedAudio:
        """Audio given in one piece (library use)."""
        frames = max(1, math.ceil(len(pcm) / FRAME_BYTES))
        return cls((bytes(pcm),) if pcm else (), frames, len(pcm))

    def frame(self, index: int) -> bytes:
        """The ``index``-th 20 ms frame (the last may be short)."""
        segment, within = divmod(index, self.segment_frames)
        start = within * FRAME_BYTES
        return self.segments[segment][start : start + FRAME_BYTES]

    def join(self) -> bytes:
        """All the audio in one buffer (library use: a full copy)."""
        return b"".join(self.segments)


@dataclass(frozen=True, slots=True)
class LoadedFile:
    """A file's decoded audio and its share of the memory budget."""

    audio: DecodedAudio
    lease: FileMemoryLease | None


def probe_audio_file(path: str) -> AudioLayout:
    """What a WAV or raw G.711 file holds and where, reading only its header; or SourceError.

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
    if law_name is not None:
        layout = AudioLayout(path, 8000, 1, law_name, 0, info.st_size)
    else:
        try:
            found = wav.read_wav_layout(path)
        except (MediaError, ValueError) as e:
            raise _unusable(path, e, law_name) from e
        layout = AudioLayout(path, found.sample_rate, found.channels, found.encoding,
                             found.data_offset, found.data_bytes)
    if layout.data_bytes < layout.frame_bytes:
        raise SourceError(f"cannot use audio file {path!r}: it holds no audio samples")
    return layout


def _unusable(path: str, error: Exception, law_name: str | None) -> SourceError:
    cause = str(error)
    if cause.startswith(f"{path}: "):  # WavError names the file itself
        cause = cause[len(path) + 2 :]
    if law_name is None and not path.lower().endswith(".wav"):
        endings = ", ".join("*" + ending for ending in sorted(G711_EXTENSIONS))
        cause += f" (give a WAV file, or raw G.711 named {endings})"
    return SourceError(f"cannot use audio file {path!r}: {cause}")


def decode_audio(layout: AudioLayout) -> DecodedAudio:
    """Read, decode and resample a file's samples to 8 kHz mono PCM16, a short piece at a time.

    Run in a thread, it must let the reactor thread run: no piece is big
    enough for a C loop (or a copy) to hold the GIL for long, the output
    goes into fixed segments instead of one growing buffer, and (off the main
    thread) the thread sleeps after each piece as long as the piece took.
    """
    from gb28181talk.media import g711
    from gb28181talk.media.law import Law
    from gb28181talk.media.resample import StreamResampler

    law = None if layout.encoding == "pcm16" else Law.from_name(layout.encoding)
    step = DECODE_CHUNK_FRAMES * layout.frame_bytes
    segment_bytes = SEGMENT_FRAMES * FRAME_BYTES
    resampler = StreamResampler(layout.sample_rate, layout.channels)
    segments: list[bytes] = []
    pending = bytearray()
    total = 0
    yielding = threading.current_thread() is not threading.main_thread()

    def take(pcm: bytes) -> None:
        nonlocal total
        pending.extend(pcm)
        total += len(pcm)
        while len(pending) >= segment_bytes:
            segments.append(bytes(pending[:segment_bytes]))
            del pending[:segment_bytes]

    try:
        with open(layout.path, "rb") as audio_file:
            audio_file.seek(layout.data_offset)
            left = layout.data_bytes
            while left > 0:
                chunk = audio_file.read(min(step, left))
                if not chunk:
                    break  # the file shrank under us: keep what was there
                began = time.perf_counter() if yielding else 0.0
                chunk = chunk[: len(chunk) - len(chunk) % layout.frame_bytes]
                left -= len(chunk)
                take(resampler.feed(chunk if law is None else g711.decode(law, chunk)))
                if yielding:  # give the reactor the lock and the core as long again
                    time.sleep(min(time.perf_counter() - began, MAX_YIELD_SECONDS))
    except OSError as e:
        raise SourceError(f"cannot read audio file {layout.path!r}: {e.strerror or e}") from e
    except (MediaError, ValueError) as e:
        raise _unusable(layout.path, e, None) from e
    take(resampler.flush())
    if pending:
        segments.append(bytes(pending))
    if total < 2:
        raise SourceError(f"cannot use audio file {layout.path!r}: it holds no audio samples")
    return DecodedAudio(tuple(segments), SEGMENT_FRAMES, total)


def load_audio_file_within(
    path: str, memory: FileMemory | None, one_at_a_time: threading.Lock | None = None
) -> LoadedFile:
    """Probe, reserve from ``memory`` what decoding needs, decode, keep what the audio takes.

    The whole load, for the thread pool: a file that does not fit the budget
    is refused (FileMemoryFull, FileTooLargeForMemory) before it is read.
    With ``one_at_a_time`` (a lock) the decoding waits for that lock, after
    the reservation, so a load that cannot fit is refused at once.
    """
    layout = probe_audio_file(path)
    lease = None
    if memory is not None:
        lease = memory.reserve(path, layout.decoded_bytes + LOAD_SLACK_BYTES)
    try:
        if one_at_a_time is None:
            audio = decode_audio(layout)
        else:
            with one_at_a_time:
                audio = decode_audio(layout)
    except BaseException:
        if lease is not None:
            lease.release()
        raise
    if lease is not None:
        lease.resize(audio.nbytes)
    return LoadedFile(audio, lease)


def load_audio_file(path: str) -> bytes:
    """Read a WAV or raw G.711 file into 8 kHz mono PCM16, or raise SourceError naming it.

    For library use: the audio comes back in one buffer, outside any budget;
    the service loads with :func:`load_audio_file_in_thread`.
    """
    return decode_audio(probe_audio_file(path)).join()


def load_audio_file_in_thread(
    reactor: Any, path: str, memory: FileMemory | None = None
) -> Deferred[LoadedFile]:
    """:func:`load_audio_file_within` in ``reactor``'s thread pool, one decoding at a time
    (:data:`DECODE_LOCK`), so the reactor keeps running; the result is handed over as it
    is (no copy on the reactor thread)."""
    return deferToThreadPool(
        reactor, reactor.getThreadPool(), load_audio_file_within, path, memory, DECODE_LOCK
    )


@implementer(IAudioSource)
class FileSource:
    """A WAV or raw G.711 file, decoded once to 8 kHz PCM16 and played by slicing.

    The last frame is padded with silence; with ``loop`` the file restarts
    at its first frame, otherwise the source ends after the last frame.

    The constructor reads and decodes the file itself, synchronously (for
    library use and tests; a large file takes a while).  A program whose
    reactor must keep running passes ``pcm``, the audio of
    :func:`load_audio_file_in_thread`, and its budget ``lease``, as
    ``SourceRegistry.create_async`` does for the API; closing the source
    gives the lease back.
    """

    kind = "file"

    def __init__(
        self, app: str, stream: str, path: str, loop: bool = False, *,
        pcm: bytes | DecodedAudio | None = None, lease: FileMemoryLease | None = None,
    ) -> None:
        self.app = app
        self.stream = stream
        self.path = path
        self.loop = bool(loop)
        if pcm is None:
            audio = decode_audio(probe_audio_file(path))
        elif isinstance(pcm, DecodedAudio):
            audio = pcm
        else:
            audio = DecodedAudio.whole(pcm)
        self.audio = audio
        """The decoded audio, in segments."""
        self._lease = lease
        self._frame_count = math.ceil(audio.nbytes / FRAME_BYTES)
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
        return self.audio.nbytes // BYTES_PER_MS

    def read_frame(self) -> bytes | None:
        """The next 20 ms slice of the file, or None once ended."""
        if self.ended:
            return None
        if self._position >= self._frame_count:  # looping: start over
            self._position = 0
            self._loops += 1
        frame = self.audio.frame(self._position)
        if len(frame) < FRAME_BYTES:
            frame += SILENT_FRAME[len(frame) :]
        self._position += 1
        self._frames_read += 1
        return frame

    def describe(self) -> dict[str, Any]:
        """App, stream, kind, path, loop and the play position."""
        return {
            **source_description(self),
            "path": self.path,
            "loop": self.loop,
            "duration_ms": self.duration_ms,
            "position_ms": self._position * FRAME_MS,
            "frames_read": self._frames_read,
            "loops": self._loops,
        }

    def close(self) -> None:
        """End the file for every listener, free its audio and give its memory back."""
        self._closed = True
        self.audio = DecodedAudio((), SEGMENT_FRAMES, 0)
        if self._lease is not None:
            self._lease.release()
            self._lease = None


def file_options(spec: Mapping[str, Any]) -> tuple[str, bool]:
    """The path (as given: the registry confines it) and the loop flag of a file body."""
    path = string_field(spec, "path", None, "file")
    loop = spec.get("loop", False)
    if loop is None:
        loop = False
    if not isinstance(loop, bool):
        raise SourceError(f"file field 'loop' must be true or false, got {loop!r}")
    return path, loop
