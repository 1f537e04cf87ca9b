"""Records a device's voice in two-way talk to a WAV file, streamed to disk as it arrives.

The file gets a PCM16 8 kHz mono WAV header at once, with the "size
unknown" value 0xFFFFFFFF streaming writers use; audio is appended packet by
packet, and the real sizes are written when the session ends.  A recording
cut short by a crash stays readable by tools that take what is there (ours,
ffmpeg, sox).
"""

from __future__ import annotations

import os
import secrets
import struct
import time
from typing import IO, Any

from twisted.logger import Logger
from zope.interface import implementer

from gb28181talk.interfaces import SAMPLE_RATE, IAudioSink
from gb28181talk.media.wav import wav_bytes

log = Logger()

_UNKNOWN_SIZE = 0xFFFFFFFF
_MAX_DATA_BYTES = 0xFFFFFFFF - 36
"""Most audio a WAV file can describe (its sizes are 32-bit)."""


@implementer(IAudioSink)
class WavRecorder:
    """An IAudioSink writing 8 kHz mono PCM16 to ``path``; the header is completed on end."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.bytes_written = 0
        self.closed = False
        self._file: IO[bytes] | None = open(path, "wb")  # noqa: SIM115 - lives until audio_ended
        header = bytearray(wav_bytes(b"", SAMPLE_RATE, 1))
        struct.pack_into("<I", header, 4, _UNKNOWN_SIZE)
        struct.pack_into("<I", header, 40, _UNKNOWN_SIZE)
        self._file.write(header)
        self._full_logged = False

    def audio_received(self, pcm16: bytes, rtp_timestamp: int) -> None:
        """Append one packet's audio (whole samples only; beyond 4 GiB nothing more is kept)."""
        if self._file is None:
            return
        data = pcm16[: len(pcm16) & ~1]
        room = _MAX_DATA_BYTES - self.bytes_written
        if len(data) > room:
            data = data[:room & ~1]
            if not self._full_logged:
                self._full_logged = True
                log.warn("recording {path} reached the 4 GiB WAV limit; the rest is not kept",
                         path=self.path)
        if data:
            self._file.write(data)
            self.bytes_written += len(data)

    def audio_ended(self) -> None:
        """Write the final sizes into the header and close the file."""
        recording, self._file = self._file, None
        if recording is None:
            return
        self.closed = True
        try:
            recording.seek(4)
            recording.write(struct.pack("<I", 36 + self.bytes_written))
            recording.seek(40)
            recording.write(struct.pack("<I", self.bytes_written))
        finally:
            recording.close()
        log.info(
            "recording {path} closed: {seconds:.1f} s of device audio",
            path=self.path,
            seconds=self.bytes_written / (2 * SAMPLE_RATE),
        )

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view for session listings."""
        return {
            "path": self.path,
            "bytes": self.bytes_written,
            "seconds": round(self.bytes_written / (2 * SAMPLE_RATE), 3),
            "closed": self.closed,
        }


def recording_path(directory: str, app: str, stream: str, ssrc: int, started: float) -> str:
    """Where a two-way session's device audio goes: one new file per session, never reused."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    name = f"{app}-{stream}-{ssrc:010d}-{stamp}-{secrets.token_hex(3)}.wav"
    return os.path.join(directory, name)
