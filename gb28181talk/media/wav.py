"""Read WAV files (PCM16, A-law, µ-law) as talk-session audio, and write PCM16 WAV files."""

from __future__ import annotations

import io
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from gb28181talk.errors import WavError
from gb28181talk.media import g711
from gb28181talk.media.law import Law
from gb28181talk.media.resample import SUPPORTED_RATES, to_8k_mono

__all__ = [
    "ENCODINGS", "WavAudio", "WavLayout", "load_8k_mono", "read_wav", "read_wav_layout",
    "wav_bytes", "write_wav",
]

ENCODINGS = ("pcm16", "alaw", "ulaw")

_PCM = 0x0001
_FLOAT = 0x0003
_ALAW = 0x0006
_ULAW = 0x0007
_EXTENSIBLE = 0xFFFE
# WAVE_FORMAT_EXTENSIBLE sub-formats are GUIDs: the format tag, then this fixed tail.
_SUBFORMAT_TAIL = bytes.fromhex("00001000800000aa00389b71")
_FORMAT_NAMES = {
    0x0002: "Microsoft ADPCM",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0050: "MPEG audio",
    0x0055: "MP3",
    0x00FF: "AAC",
    0x1610: "AAC",
}
_TO_16BIT_PCM = "convert to 16-bit PCM (sox in.wav -b 16 -e signed-integer out.wav)"
_RATES = ", ".join(str(rate) for rate in SUPPORTED_RATES)
_CHUNK_ID = re.compile(rb"[A-Za-z0-9 ]{4}")
"""A chunk id worth naming in an error (anything else is not quoted)."""


@dataclass(frozen=True, slots=True)
class WavAudio:
    """The audio of a WAV file, as stored: rate, channels, sample encoding and the samples."""

    sample_rate: int
    channels: int
    encoding: str  # "pcm16" (little-endian), "alaw" or "ulaw" (one byte a sample)
    data: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding {self.encoding!r} is not one of {', '.join(ENCODINGS)}")

    @property
    def duration(self) -> float:
        """Length in seconds."""
        bytes_per_frame = self.channels * (2 if self.encoding == "pcm16" else 1)
        return len(self.data) / bytes_per_frame / self.sample_rate

    def to_8k_mono_pcm16(self) -> bytes:
        """The audio as a talk session sends it: G.711 decoded, mixed down, resampled."""
        pcm16 = (
            self.data if self.encoding == "pcm16" else g711.decode(Law(self.encoding), self.data)
        )
        return to_8k_mono(pcm16, self.sample_rate, self.channels)


def read_wav(source: str | os.PathLike[str] | bytes, name: str | None = None) -> WavAudio:
    """Parse a WAV file, from a path or from its bytes; ``name`` labels errors.

    Raises WavError naming the file (``name``, the path, or "<bytes>") and what is wrong.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        return _parse(bytes(source), name or "<bytes>")
    label = name or os.fsdecode(source)
    try:
        blob = Path(source).read_bytes()
    except OSError as error:
        raise WavError(f"{label}: cannot be read: {error.strerror or error}") from error
    return _parse(blob, label)


@dataclass(frozen=True, slots=True)
class WavLayout:
    """A WAV file's sample format and where its samples lie, read from its chunk headers."""

    sample_rate: int
    channels: int
    encoding: str
    data_offset: int
    data_bytes: int  # whole frames only


def read_wav_layout(path: str | os.PathLike[str], name: str | None = None) -> WavLayout:
    """Read only a WAV file's chunk headers: its format and where the samples are.

    For a file too big to read whole at once, whose samples are then read a
    piece at a time.  Raises WavError as :func:`read_wav` does.
    """
    label = name or os.fsdecode(path)
    try:
        with open(path, "rb") as wav_file:
            return _read_layout(wav_file, os.fstat(wav_file.fileno()).st_size, label)
    except OSError as error:
        raise WavError(f"{label}: cannot be read: {error.strerror or error}") from error


def _read_layout(wav_file: BinaryIO, size: int, label: str) -> WavLayout:
    """The format and sample span of the WAV file ``wav_file`` of ``size`` bytes, or WavError.

    The one reading of RIFF header, chunks and fmt, for a file on disk and for bytes in memory.
    """
    _check_riff(wav_file.read(12), size, label)
    fmt, data, cut_in = _find_chunks(wav_file, size, label)
    truncated = f" (the file is cut short inside a {cut_in!r} chunk)" if cut_in else ""
    if fmt is None:
        raise WavError(f"{label}: no fmt chunk, so the sample format is unknown{truncated}")
    if data is None:
        raise WavError(f"{label}: no data chunk, so there is no audio{truncated}")
    sample_rate, channels, encoding = _parse_fmt(fmt, label)
    frame_bytes = channels * (2 if encoding == "pcm16" else 1)
    offset, length = data
    # A recording cut short may end mid-frame: keep the whole frames.
    return WavLayout(sample_rate, channels, encoding, offset, length - length % frame_bytes)


def _check_riff(head: bytes, size: int, label: str) -> None:
    """WavError unless the first 12 bytes of a file of ``size`` bytes are a RIFF/WAVE header."""
    if size < 12 or len(head) < 12:
        raise WavError(
            f"{label}: {size} bytes is too short for a WAV file (the RIFF header is 12)"
        )
    riff, form = head[0:4], head[8:12]
    if riff == b"RIFX":
        raise WavError(f"{label}: big-endian (RIFX) WAV is not supported; {_TO_16BIT_PCM}")
    if riff == b"RF64":
        raise WavError(f"{label}: RF64 (over 4 GiB) WAV is not supported; {_TO_16BIT_PCM}")
    if riff != b"RIFF" or form != b"WAVE":
        # Never quote the file's bytes: the path may name any file the service can read.
        raise WavError(
            f"{label}: not a RIFF/WAVE file; give a WAV file (16-bit PCM, A-law or µ-law)"
        )


def _find_chunks(
    wav_file: BinaryIO, size: int, label: str
) -> tuple[bytes | None, tuple[int, int] | None, str]:
    """The first fmt chunk's body, the data chunk's (offset, size), the id of a chunk cut short.

    Seeks from header to header; other chunks (LIST, fact, cue, ...) are skipped.
    """
    fmt = data = None
    cut_in = ""
    offset = 12
    while offset + 8 <= size:
        wav_file.seek(offset)
        header = wav_file.read(8)
        if len(header) < 8:
            break
        chunk_id, chunk_size = struct.unpack("<4sI", header)
        start, end = offset + 8, offset + 8 + chunk_size
        if chunk_id == b"fmt " and fmt is None:
            if end > size:
                raise WavError(
                    f"{label}: truncated: the fmt chunk declares {chunk_size} bytes but "
                    f"{size - start} remain"
                )
            # Only the first 40 bytes are ever read (WAVE_FORMAT_EXTENSIBLE's length).
            fmt = wav_file.read(min(chunk_size, 4096))
        elif chunk_id == b"data" and data is None:
            # Some recorders never fix up the size (or write 0xFFFFFFFF): take what is there.
            data = (start, min(end, size) - start)
        elif end > size:
            cut_in = chunk_id.decode("latin-1") if _CHUNK_ID.fullmatch(chunk_id) else "unknown"
        offset = end + (chunk_size & 1)  # chunks are padded to an even length
    return fmt, data, cut_in


def load_8k_mono(path: str | os.PathLike[str]) -> bytes:
    """The 8 kHz mono PCM16 of a WAV file, ready to encode with G.711."""
    return read_wav(path).to_8k_mono_pcm16()


def wav_bytes(pcm16: bytes, sample_rate: int = 8000, channels: int = 1) -> bytes:
    """A complete PCM16 WAV file holding ``pcm16`` (little-endian, channels interleaved)."""
    if not 1 <= channels <= 0xFFFF:
        raise ValueError(f"a WAV file has 1 to 65535 channels, not {channels}")
    if not 1 <= sample_rate <= 0xFFFFFFFF // (2 * channels):
        raise ValueError(f"sample rate {sample_rate} Hz cannot be written to a WAV header")
    frame_bytes = 2 * channels
    if len(pcm16) % frame_bytes:
        raise ValueError(
            f"PCM16 with {channels} channel(s) must be whole frames of {frame_bytes} bytes; "
            f"got {len(pcm16)} bytes"
        )
    if len(pcm16) > 0xFFFFFFFF - 36:
        raise ValueError(f"{len(pcm16)} bytes of audio do not fit in a WAV file (4 GiB limit)")
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(pcm16),
        b"WAVE",
        b"fmt ",
        16,
        _PCM,
        channels,
        sample_rate,
        sample_rate * frame_bytes,
        frame_bytes,
        16,
        b"data",
        len(pcm16),
    )
    return header + bytes(pcm16)


def write_wav(
    path: str | os.PathLike[str], pcm16: bytes, sample_rate: int = 8000, channels: int = 1
) -> None:
    """Write ``pcm16`` to ``path`` as a PCM16 WAV file."""
    Path(path).write_bytes(wav_bytes(pcm16, sample_rate, channels))


def _parse(blob: bytes, label: str) -> WavAudio:
    """The audio of a whole WAV file held in memory, read as :func:`read_wav_layout` reads one."""
    layout = _read_layout(io.BytesIO(blob), len(blob), label)
    end = layout.data_offset + layout.data_bytes
    return WavAudio(
        layout.sample_rate, layout.channels, layout.encoding, blob[layout.data_offset : end]
    )


def _parse_fmt(fmt: bytes, label: str) -> tuple[int, int, str]:
    """Sample rate, channels and encoding from a fmt chunk, or WavError saying what to do."""
    if len(fmt) < 16:
        raise WavError(f"{label}: truncated: the fmt chunk is {len(fmt)} bytes, not at least 16")
    tag, channels, sample_rate, _byte_rate, _block_align, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == _EXTENSIBLE:
        if len(fmt) < 40:
            raise WavError(
                f"{label}: truncated: the WAVE_FORMAT_EXTENSIBLE fmt chunk is {len(fmt)} bytes, "
                "not 40"
            )
        subformat = fmt[24:40]
        if subformat[4:] != _SUBFORMAT_TAIL:
            raise WavError(
                f"{label}: WAVE_FORMAT_EXTENSIBLE sub-format {subformat.hex()} is not supported; "
                f"{_TO_16BIT_PCM}"
            )
        tag = int.from_bytes(subformat[:4], "little")
    encoding = _encoding(tag, bits, label)
    if channels == 0:
        raise WavError(f"{label}: the fmt chunk says 0 channels")
    if channels > 2:
        raise WavError(
            f"{label}: {channels} channels are not supported; "
            "mix down to mono (sox in.wav -c 1 out.wav)"
        )
    if sample_rate not in SUPPORTED_RATES:
        raise WavError(
            f"{label}: sample rate {sample_rate} Hz is not supported; use {_RATES} Hz "
            "(sox in.wav -r 8000 out.wav)"
        )
    return sample_rate, channels, encoding


def _encoding(tag: int, bits: int, label: str) -> str:
    if tag == _PCM:
        if bits == 16:
            return "pcm16"
        raise WavError(f"{label}: {bits}-bit PCM is not supported; {_TO_16BIT_PCM}")
    if tag in (_ALAW, _ULAW):
        law = "A-law" if tag == _ALAW else "µ-law"
        if bits == 8:
            return "alaw" if tag == _ALAW else "ulaw"
        raise WavError(f"{label}: {bits}-bit {law} is not valid (G.711 samples are 8 bits)")
    if tag == _FLOAT:
        raise WavError(
            f"{label}: {bits}-bit floating-point audio is not supported; {_TO_16BIT_PCM}"
        )
    described = f" ({_FORMAT_NAMES[tag]})" if tag in _FORMAT_NAMES else ""
    raise WavError(
        f"{label}: audio format 0x{tag:04X}{described} is not supported; use 16-bit PCM, "
        f"A-law or µ-law: {_TO_16BIT_PCM}"
    )
