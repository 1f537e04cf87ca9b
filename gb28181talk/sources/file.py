"""The file source: a WAV or raw G.711 file decoded once (in a thread) and played by slicing."""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from zope.interface import implementer

from gb28181talk.errors import MediaError, SourceError
from gb28181talk.interfaces import FRAME_BYTES, FRAME_MS, IAudioSource
from gb28181talk.sources.base import BYTES_PER_MS, SILENT_FRAME, string_field

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
8 kHz mono 16-bit); it is read whole and held in memory as PCM."""

DECODE_CHUNK_FRAMES = 4000
"""Input frames decoded and resampled at a time when loading a file (83 ms at 48 kHz)."""


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


def load_audio_file_in_thread(reactor: Any, path: str) -> Deferred[bytes]:
    """:func:`load_audio_file` in ``reactor``'s thread pool, so the reactor keeps running."""
    return deferToThreadPool(reactor, reactor.getThreadPool(), load_audio_file, path)


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
    :func:`load_audio_file_in_thread`, as ``SourceRegistry.create_async``
    does for the API.
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


def file_options(spec: Mapping[str, Any]) -> tuple[str, bool]:
    """The path (as given: the registry confines it) and the loop flag of a file body."""
    path = string_field(spec, "path", None, "file")
    loop = spec.get("loop", False)
    if loop is None:
        loop = False
    if not isinstance(loop, bool):
        raise SourceError(f"file field 'loop' must be true or false, got {loop!r}")
    return path, loop
