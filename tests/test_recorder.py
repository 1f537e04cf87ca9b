"""The WAV recorder of device audio: streamed to disk, header completed on end, crash-readable."""

from __future__ import annotations

import struct
from pathlib import Path

from zope.interface.verify import verifyObject

from gb28181talk.core.recorder import WavRecorder, recording_path
from gb28181talk.interfaces import IAudioSink
from gb28181talk.media.wav import read_wav
from tests.test_sources import goertzel_ratio, tone_pcm


def test_records_a_readable_wav(tmp_path: Path) -> None:
    path = tmp_path / "talk.wav"
    recorder = WavRecorder(str(path))
    assert verifyObject(IAudioSink, recorder)
    pcm = tone_pcm(1000, 0.5)
    for start in range(0, len(pcm), 320):
        recorder.audio_received(pcm[start:start + 320], start // 2)
    recorder.audio_received(b"\x01", 0)  # half a sample is not kept
    assert path.stat().st_size >= len(pcm) - 8192, "all but the write buffer is on disk"
    recorder.audio_ended()
    recorder.audio_ended()
    recorder.audio_received(pcm[:320], 0)  # after the end: ignored
    audio = read_wav(path)
    assert (audio.sample_rate, audio.channels, audio.encoding) == (8000, 1, "pcm16")
    assert audio.data == pcm
    assert goertzel_ratio(audio.data, 1000) > 0.9
    header = path.read_bytes()[:44]
    assert struct.unpack_from("<I", header, 4)[0] == 36 + len(pcm)
    assert recorder.describe() == {"path": str(path), "bytes": len(pcm), "seconds": 0.5,
                                   "closed": True}


def test_a_recording_cut_short_is_still_readable(tmp_path: Path) -> None:
    path = tmp_path / "crash.wav"
    recorder = WavRecorder(str(path))
    recorder.audio_received(tone_pcm(500, 0.1), 0)
    recorder._file.flush()  # the process dies here: no header fix-up
    assert len(read_wav(path).data) == 1600
    recorder.audio_ended()


def test_recording_names_are_unique_and_say_what(tmp_path: Path) -> None:
    first = recording_path(str(tmp_path), "broadcast", "talkback", 1, 0.0)
    second = recording_path(str(tmp_path), "broadcast", "talkback", 1, 0.0)
    assert first != second
    assert Path(first).name.startswith("broadcast-talkback-0000000001-")
    assert first.endswith(".wav")
