"""WAV reading and writing: round trips, RIFF chunk handling, and a clear error for each refusal."""

from __future__ import annotations

import contextlib
import math
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gb28181talk.errors import WavError
from gb28181talk.media import g711
from gb28181talk.media.law import Law
from gb28181talk.media.resample import SUPPORTED_RATES, to_8k_mono
from gb28181talk.media.wav import WavAudio, load_8k_mono, read_wav, wav_bytes, write_wav

PCM_GUID_TAIL = bytes.fromhex("00001000800000aa00389b71")


def chunk(chunk_id: bytes, body: bytes, size: int | None = None) -> bytes:
    """One RIFF chunk, padded to an even length; ``size`` overrides the declared size."""
    declared = len(body) if size is None else size
    return chunk_id + struct.pack("<I", declared) + body + b"\x00" * (len(body) & 1)


def fmt_body(tag: int, channels: int, rate: int, bits: int) -> bytes:
    block = channels * bits // 8
    return struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)


def extensible_fmt(subformat: int, channels: int, rate: int, bits: int, valid: int) -> bytes:
    guid = struct.pack("<I", subformat) + PCM_GUID_TAIL
    mask = 0x4 if channels == 1 else 0x3
    return fmt_body(0xFFFE, channels, rate, bits) + struct.pack("<HHI", 22, valid, mask) + guid


def riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def wav_file(tag: int, channels: int, rate: int, bits: int, data: bytes) -> bytes:
    return riff(chunk(b"fmt ", fmt_body(tag, channels, rate, bits)), chunk(b"data", data))


def speech(frames: int, channels: int) -> bytes:
    samples = [
        round(8000 * math.sin(n / 7.0) + 3000 * math.sin(n / 2.3 + c))
        for n in range(frames)
        for c in range(channels)
    ]
    return struct.pack(f"<{len(samples)}h", *samples)


# --- Writing, and reading back. ---


def test_known_answer_header_for_a_tiny_file() -> None:
    assert wav_bytes(b"\x01\x00\xff\x7f") == (
        b"RIFF\x28\x00\x00\x00WAVE"
        b"fmt \x10\x00\x00\x00"
        b"\x01\x00"  # PCM
        b"\x01\x00"  # mono
        b"\x40\x1f\x00\x00"  # 8000 Hz
        b"\x80\x3e\x00\x00"  # 16000 bytes/s
        b"\x02\x00"  # block align
        b"\x10\x00"  # 16 bits
        b"data\x04\x00\x00\x00"
        b"\x01\x00\xff\x7f"
    )
    stereo = wav_bytes(bytes(8), 44100, 2)
    assert stereo[22:36] == struct.pack("<HIIHH", 2, 44100, 176400, 4, 16)
    assert len(stereo) == 44 + 8


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", SUPPORTED_RATES)
def test_pcm16_round_trip_through_a_file(tmp_path: Path, rate: int, channels: int) -> None:
    pcm = speech(rate // 50, channels)
    path = tmp_path / "announce.wav"
    write_wav(path, pcm, rate, channels)
    audio = read_wav(path)
    assert audio == WavAudio(rate, channels, "pcm16", pcm)
    assert read_wav(str(path)) == audio
    assert read_wav(path.read_bytes()) == audio
    assert audio.duration == pytest.approx(0.02)
    assert audio.to_8k_mono_pcm16() == to_8k_mono(pcm, rate, channels)
    assert load_8k_mono(path) == to_8k_mono(pcm, rate, channels)


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", SUPPORTED_RATES)
@pytest.mark.parametrize(("tag", "encoding"), [(6, "alaw"), (7, "ulaw")])
def test_g711_files_are_read_and_decoded(rate: int, channels: int, tag: int, encoding: str) -> None:
    codes = bytes(range(256)) * (rate // 12800 + 1) * channels
    blob = wav_file(tag, channels, rate, 8, codes)
    audio = read_wav(blob)
    assert audio == WavAudio(rate, channels, encoding, codes)
    law = Law(encoding)
    assert audio.to_8k_mono_pcm16() == to_8k_mono(g711.decode(law, codes), rate, channels)


def test_g711_8k_mono_decodes_to_exactly_the_codec_output() -> None:
    codes = bytes(range(256))
    assert read_wav(wav_file(6, 1, 8000, 8, codes)).to_8k_mono_pcm16() == g711.alaw_decode(codes)
    assert read_wav(wav_file(7, 1, 8000, 8, codes)).to_8k_mono_pcm16() == g711.ulaw_decode(codes)


def test_wave_format_extensible_pcm16_is_accepted() -> None:
    pcm = speech(100, 2)
    blob = riff(chunk(b"fmt ", extensible_fmt(1, 2, 48000, 16, 16)), chunk(b"data", pcm))
    assert read_wav(blob) == WavAudio(48000, 2, "pcm16", pcm)


def test_wave_format_extensible_g711_is_accepted() -> None:
    blob = riff(chunk(b"fmt ", extensible_fmt(7, 1, 8000, 8, 8)), chunk(b"data", b"\xff\x00"))
    assert read_wav(blob) == WavAudio(8000, 1, "ulaw", b"\xff\x00")


def test_empty_audio_is_fine() -> None:
    audio = read_wav(wav_bytes(b""))
    assert audio == WavAudio(8000, 1, "pcm16", b"")
    assert audio.to_8k_mono_pcm16() == b""


def test_repr_leaves_out_the_samples() -> None:
    assert repr(WavAudio(8000, 1, "alaw", b"\xd5" * 8000)) == (
        "WavAudio(sample_rate=8000, channels=1, encoding='alaw')"
    )


def test_unknown_encoding_is_refused() -> None:
    with pytest.raises(ValueError, match="'pcm8' is not one of pcm16, alaw, ulaw"):
        WavAudio(8000, 1, "pcm8", b"")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((b"\x00",), "whole frames of 2 bytes; got 1 bytes"),
        ((bytes(6), 8000, 2), "whole frames of 4 bytes; got 6 bytes"),
        ((b"", 8000, 0), "1 to 65535 channels, not 0"),
        ((b"", 0, 1), "sample rate 0 Hz"),
    ],
)
def test_wav_bytes_refuses_what_it_cannot_write(arguments: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        wav_bytes(*arguments)


# --- RIFF chunk handling. ---


def test_unknown_chunks_are_skipped_and_odd_chunks_padded() -> None:
    pcm = speech(50, 1)
    blob = riff(
        chunk(b"LIST", b"INFOISFT\x05\x00\x00\x00sox!\x00"),
        chunk(b"fmt ", fmt_body(1, 1, 16000, 16)),
        chunk(b"junk", b"odd"),  # 3 bytes, then a pad byte
        chunk(b"fact", struct.pack("<I", 50)),
        chunk(b"data", pcm),
        chunk(b"cue ", b"\x00" * 5),
    )
    assert read_wav(blob) == WavAudio(16000, 1, "pcm16", pcm)


def test_data_before_fmt_and_an_18_byte_fmt_chunk() -> None:
    fmt18 = fmt_body(6, 1, 8000, 8) + b"\x00\x00"  # WAVEFORMATEX with cbSize 0
    blob = riff(chunk(b"data", b"\x01\x02\x03"), chunk(b"fmt ", fmt18))
    assert read_wav(blob) == WavAudio(8000, 1, "alaw", b"\x01\x02\x03")


@pytest.mark.parametrize("declared", [10_000, 0xFFFFFFFF])
def test_data_size_beyond_the_end_of_the_file_is_truncated(declared: int) -> None:
    pcm = speech(40, 2)
    blob = riff(chunk(b"fmt ", fmt_body(1, 2, 22050, 16)), chunk(b"data", pcm, size=declared))
    assert read_wav(blob) == WavAudio(22050, 2, "pcm16", pcm)
    assert read_wav(blob[:-3]).data == pcm[:-4]  # cut mid-frame: whole frames only


def test_riff_size_is_not_trusted() -> None:
    blob = bytearray(wav_bytes(speech(10, 1)))
    blob[4:8] = b"\x00\x00\x00\x00"
    assert read_wav(bytes(blob)).data == speech(10, 1)


def test_trailing_bytes_after_the_last_chunk_are_ignored() -> None:
    assert read_wav(wav_bytes(speech(10, 1)) + b"\x00\x01\x02").data == speech(10, 1)


# --- Refusals, each naming the file and what is wrong. ---

PCM_8K = wav_bytes(speech(16, 1))


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (wav_file(1, 1, 8000, 24, bytes(30)), "24-bit PCM is not supported; convert to 16-bit"),
        (wav_file(1, 1, 8000, 8, bytes(30)), "8-bit PCM is not supported; convert to 16-bit"),
        (wav_file(1, 2, 44100, 32, bytes(32)), "32-bit PCM is not supported"),
        (wav_file(3, 1, 48000, 32, bytes(32)), "32-bit floating-point audio is not supported"),
        (wav_file(6, 1, 8000, 16, bytes(8)), "16-bit A-law is not valid"),
        (wav_file(7, 1, 8000, 4, bytes(8)), "4-bit µ-law is not valid"),
        (wav_file(0x11, 1, 8000, 4, bytes(8)), r"format 0x0011 \(IMA ADPCM\) is not supported"),
        (wav_file(0x55, 2, 44100, 0, bytes(8)), r"format 0x0055 \(MP3\) is not supported"),
        (wav_file(0x1234, 1, 8000, 16, bytes(8)), "format 0x1234 is not supported"),
        (wav_file(1, 6, 48000, 16, bytes(24)), r"6 channels are not supported; mix down"),
        (wav_file(1, 0, 8000, 16, bytes(4)), "0 channels"),
        (wav_file(1, 1, 11025, 16, bytes(4)), "sample rate 11025 Hz is not supported; use 8000"),
        (wav_file(1, 1, 96000, 16, bytes(4)), "sample rate 96000 Hz is not supported"),
        (
            riff(chunk(b"fmt ", extensible_fmt(3, 1, 48000, 32, 32)), chunk(b"data", bytes(8))),
            "32-bit floating-point audio is not supported",
        ),
        (
            riff(chunk(b"fmt ", extensible_fmt(1, 1, 48000, 32, 24)), chunk(b"data", bytes(8))),
            "32-bit PCM is not supported",
        ),
        (
            riff(
                chunk(b"fmt ", extensible_fmt(1, 1, 8000, 16, 16)[:24] + bytes(16)),
                chunk(b"data", b""),
            ),
            "WAVE_FORMAT_EXTENSIBLE sub-format 0000",
        ),
        (
            riff(chunk(b"fmt ", fmt_body(0xFFFE, 1, 8000, 16)), chunk(b"data", b"")),
            "the WAVE_FORMAT_EXTENSIBLE fmt chunk is 16 bytes, not 40",
        ),
        (b"ID3\x04" + bytes(40), "not a RIFF/WAVE file"),
        (b"RIFF\x24\x00\x00\x00AVI " + bytes(40), "not a RIFF/WAVE file"),
        (b"RIFX" + PCM_8K[4:], "big-endian"),
        (b"RF64" + PCM_8K[4:], "RF64"),
        (b"", "0 bytes is too short for a WAV file"),
        (PCM_8K[:11], "11 bytes is too short for a WAV file"),
        (PCM_8K[:12], "no fmt chunk"),
        (PCM_8K[:30], "truncated: the fmt chunk declares 16 bytes but 10 remain"),
        (riff(chunk(b"fmt ", fmt_body(1, 1, 8000, 16))), "no data chunk"),
        (riff(chunk(b"data", bytes(8))), "no fmt chunk"),
        (
            riff(chunk(b"LIST", bytes(8), size=1000), chunk(b"fmt ", fmt_body(1, 1, 8000, 16))),
            "no fmt chunk, so the sample format is unknown .* inside a 'LIST' chunk",
        ),
        (riff(chunk(b"fmt ", bytes(14)), chunk(b"data", b"")), "fmt chunk is 14 bytes"),
    ],
)
def test_refusals_name_the_file_and_the_problem(blob: bytes, message: str) -> None:
    with pytest.raises(WavError, match=f"^<bytes>: .*{message}"):
        read_wav(blob)
    with pytest.raises(WavError, match=f"^announce.wav: .*{message}"):
        read_wav(blob, name="announce.wav")


def test_a_file_that_is_not_wav_is_never_quoted(tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_bytes(b"root:*:19000:0:99999:7:::\ndaemon:*:19000::::::\n")
    with pytest.raises(WavError) as raised:
        read_wav(secret)
    assert str(raised.value) == (
        f"{secret}: not a RIFF/WAVE file; give a WAV file (16-bit PCM, A-law or µ-law)"
    )
    said = str(raised.value)[len(str(secret)):]
    for fragment in ("root", "19000", "daemon", ":*:"):
        assert fragment not in said


def test_a_chunk_id_that_is_not_text_is_not_quoted() -> None:
    blob = riff(chunk(b"\xffk\x00y", bytes(8), size=1000), chunk(b"fmt ", fmt_body(1, 1, 8000, 16)))
    with pytest.raises(WavError, match="inside a 'unknown' chunk") as raised:
        read_wav(blob)
    assert "\\x" not in str(raised.value) and "\xff" not in str(raised.value)


def test_refusal_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "music.wav"
    path.write_bytes(wav_file(1, 2, 44100, 24, bytes(60)))
    expected = (
        f"{path}: 24-bit PCM is not supported; "
        "convert to 16-bit PCM (sox in.wav -b 16 -e signed-integer out.wav)"
    )
    with pytest.raises(WavError) as raised:
        read_wav(path)
    assert str(raised.value) == expected
    with pytest.raises(WavError, match=r"^music: 24-bit"):
        read_wav(path, name="music")


def test_a_missing_file_is_a_wav_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "missing.wav"
    with pytest.raises(WavError, match=f"^{path}: cannot be read: No such file") as raised:
        load_8k_mono(path)
    assert isinstance(raised.value.__cause__, FileNotFoundError)


# --- Nothing but WavError, whatever the bytes. ---


def mutate(blob: bytes, edits: list[tuple[int, int]], keep: int) -> bytes:
    mutable = bytearray(blob)
    for position, value in edits:
        mutable[position % len(mutable)] = value
    return bytes(mutable[:keep])


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_wav_error(blob: bytes) -> None:
    with contextlib.suppress(WavError):
        read_wav(blob)


VALID_FILES = [
    wav_bytes(speech(20, 2), 44100, 2),
    wav_file(6, 1, 8000, 8, bytes(range(40))),
    riff(chunk(b"fmt ", extensible_fmt(1, 1, 16000, 16, 16)), chunk(b"data", speech(9, 1))),
]


@given(
    st.sampled_from(VALID_FILES),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
    st.integers(0, 200),
)
def test_damaged_files_raise_only_wav_error(
    blob: bytes, edits: list[tuple[int, int]], keep: int
) -> None:
    try:
        audio = read_wav(mutate(blob, edits, keep))
    except WavError:
        return
    # Whatever is accepted can be played.
    assert len(audio.to_8k_mono_pcm16()) % 2 == 0
