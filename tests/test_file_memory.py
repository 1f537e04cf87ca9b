"""File sources share one memory budget, and a file is read and handed over in pieces."""

from __future__ import annotations

import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.trial import unittest

from gb28181talk import errors
from gb28181talk.config import ConfigError, build_config
from gb28181talk.media.wav import read_wav, write_wav
from gb28181talk.sources import file as file_source
from gb28181talk.sources.file import DecodedAudio, FileMemory, FileSource, load_audio_file
from gb28181talk.sources.registry import SourceRegistry
from gb28181talk.web import codes
from gb28181talk.web.errors import api_error
from tests.httpapi import ServiceHarness, async_test, call
from tests.test_sources import _ThreadedReactor, read_all

MIB = 1024 * 1024


def wav_of_seconds(path: Path, seconds: int) -> Path:
    """An 8 kHz mono PCM16 WAV file: ``seconds`` * 16,000 bytes of decoded audio."""
    write_wav(path, struct.pack("<h", 1000) * (8000 * seconds), 8000, 1)
    return path


def spec(stream: str, path: Path) -> dict[str, Any]:
    return {"app": "files", "stream": stream, "kind": "file", "path": str(path)}


def test_a_file_that_does_not_fit_beside_the_others_is_refused_until_one_goes(
    tmp_path: Path,
) -> None:
    slack = file_source.LOAD_SLACK_BYTES
    registry = SourceRegistry(max_file_memory=640_000 + 480_000 + slack - 1)
    memory = registry.file_memory
    registry.create(spec("a", wav_of_seconds(tmp_path / "a.wav", 20)))
    registry.create(spec("b", wav_of_seconds(tmp_path / "b.wav", 20)))
    assert memory.used == 640_000 and memory.files == 2
    c = spec("c", wav_of_seconds(tmp_path / "c.wav", 30))
    with pytest.raises(errors.FileMemoryFull) as refused:
        registry.create(c)
    said = str(refused.value)
    assert "c.wav" in said and "needs 0.7 MiB while loading" in said, said
    assert "file sources already use 0.6 MiB of the 1.3 MiB budget (2 files)" in said, said
    assert "DELETE /api/sources/{app}/{stream}" in said and "--max-file-memory" in said
    assert memory.used == 640_000 and registry.find("files", "c") is None, "nothing is held"
    registry.remove("files", "a")
    assert memory.used == 320_000
    registry.create(c)
    assert memory.used == 800_000
    registry.close_all()
    assert memory.used == 0 and memory.files == 0


def test_a_file_bigger_than_the_whole_budget_says_so(tmp_path: Path) -> None:
    registry = SourceRegistry(max_file_memory=1 * MIB)
    with pytest.raises(errors.FileTooLargeForMemory) as refused:
        registry.create(spec("d", wav_of_seconds(tmp_path / "d.wav", 70)))
    said = str(refused.value)
    assert "more than the whole 1.0 MiB budget of file sources" in said, said
    assert "cut it into parts" in said and "--max-file-memory" in said
    assert registry.file_memory.used == 0


def test_a_file_being_loaded_counts_against_the_budget(tmp_path: Path, monkeypatch: Any) -> None:
    slack = file_source.LOAD_SLACK_BYTES
    registry = SourceRegistry(max_file_memory=320_000 + slack + 320_000 + slack - 1)
    a, b = wav_of_seconds(tmp_path / "a.wav", 20), wav_of_seconds(tmp_path / "b.wav", 20)
    decode = file_source.decode_audio
    seen: list[Any] = []

    def decode_while_b_asks(layout: Any) -> DecodedAudio:  # in the thread, loading a
        seen.append(registry.file_memory.used)
        with pytest.raises(errors.FileMemoryFull):
            registry.create(spec("b", b))
        return decode(layout)

    monkeypatch.setattr(file_source, "decode_audio", decode_while_b_asks)
    reactor = _ThreadedReactor()
    loaded: list[Any] = []
    registry.create_async(spec("a", a), reactor).addBoth(loaded.append)
    reactor.pool.run()
    needs = file_source.probe_audio_file(str(a)).decoded_bytes + slack
    assert 320_000 < needs - slack < 320_100
    assert seen == [needs], "a reserves what it needs before decoding"
    assert isinstance(loaded[0], FileSource) and registry.file_memory.used == 320_000


def test_a_failed_or_abandoned_load_gives_its_memory_back(tmp_path: Path) -> None:
    registry = SourceRegistry(max_file_memory=4 * MIB)
    reactor = _ThreadedReactor()
    failed: list[Any] = []
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    registry.create_async(spec("x", broken), reactor).addErrback(failed.append)
    registry.create_async(spec("y", wav_of_seconds(tmp_path / "y.wav", 2)), reactor
                          ).addErrback(failed.append)
    registry.close_all()  # y loads after the sources were closed: not added
    reactor.pool.run()
    assert len(failed) == 2 and registry.file_memory.used == 0


class CountingFile:
    """Wraps a file object and records the size of every read."""

    def __init__(self, inner: Any, reads: list[int]) -> None:
        self.inner = inner
        self.reads = reads

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.reads.append(len(data) if size >= 0 else -1)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __enter__(self) -> CountingFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.inner.close()


@pytest.mark.parametrize(("rate", "channels"), [(48000, 2), (8000, 1), (16000, 1)])
def test_a_file_is_read_decoded_and_handed_over_in_pieces(
    tmp_path: Path, monkeypatch: Any, rate: int, channels: int
) -> None:
    """No read of the whole file, no buffer of the whole audio: the reactor gets segments
    it plays from as they are, and they hold exactly what decoding the whole file gives."""
    monkeypatch.setattr(file_source, "SEGMENT_FRAMES", 7)
    pcm = bytes((i * 31 + (i >> 9)) & 0xFF for i in range(rate * channels * 2 * 3 // 2))
    path = tmp_path / "voice.wav"
    write_wav(path, pcm[: len(pcm) - len(pcm) % (2 * channels)], rate, channels)
    expected = read_wav(path).to_8k_mono_pcm16()
    reads: list[int] = []

    def counting_open(*args: Any, **kwargs: Any) -> CountingFile:
        return CountingFile(open(*args, **kwargs), reads)

    monkeypatch.setattr(file_source, "open", counting_open, raising=False)
    monkeypatch.setattr(DecodedAudio, "join", None)  # the service path never joins
    reactor = _ThreadedReactor()
    registry = SourceRegistry()
    made: list[Any] = []
    registry.create_async(spec("v", path), reactor).addBoth(made.append)
    reactor.pool.run()
    [source] = made
    assert isinstance(source, FileSource), source
    step = file_source.DECODE_CHUNK_FRAMES * channels * 2
    assert reads and -1 not in reads and max(reads) <= step, reads[:5]
    assert sum(reads) >= len(pcm) - len(pcm) % (2 * channels)
    audio = source.audio
    assert len(audio.segments) > 1
    assert all(len(s) == 7 * 320 for s in audio.segments[:-1])
    assert 0 < len(audio.segments[-1]) <= 7 * 320
    assert audio.nbytes == len(expected) == registry.file_memory.used
    played = b"".join(read_all(source))
    assert played[: len(expected)] == expected and not played[len(expected):].strip(b"\0")


def test_library_load_still_gives_the_whole_audio(tmp_path: Path) -> None:
    path = wav_of_seconds(tmp_path / "a.wav", 1)
    assert load_audio_file(str(path)) == struct.pack("<h", 1000) * 8000
    source = FileSource("files", "a", str(path), pcm=struct.pack("<h", 7) * 480)
    assert [len(f) for f in read_all(source)] == [320, 320, 320]


def test_file_memory_reservations_add_up() -> None:
    memory = FileMemory(1000)
    first = memory.reserve("a.wav", 600)
    with pytest.raises(errors.FileMemoryFull):
        memory.reserve("b.wav", 500)
    first.resize(300)
    second = memory.reserve("b.wav", 500)
    assert (memory.used, memory.files) == (800, 2)
    first.release()
    first.release()  # twice is harmless
    second.release()
    assert (memory.used, memory.files) == (0, 0)


def test_the_budget_refusals_answer_503_and_413_with_json_codes() -> None:
    full = api_error(errors.FileMemoryFull("f"))
    too_large = api_error(errors.FileTooLargeForMemory("f"))
    assert full is not None and (full.code, full.status) == (codes.EXCEPTION, 503)
    assert too_large is not None and (too_large.code, too_large.status) == (
        codes.INVALID_ARGS, 413)


def test_max_file_memory_is_an_option_in_mib() -> None:
    assert build_config({}).max_file_memory == 256 * MIB
    assert build_config({"max-file-memory": "64"}).max_file_memory == 64 * MIB
    assert build_config({}, {"max-file-memory": 1024}).max_file_memory == 1024 * MIB
    for bad in ("0", "lots", "-5", True, "1000000"):
        with pytest.raises(ConfigError, match="--max-file-memory"):
            build_config({"max-file-memory": bad})


class FileMemoryOverTheApi(unittest.TestCase):
    """The service wired with --max-file-memory answers a file that does not fit in JSON."""

    timeout = 30

    def setUp(self) -> None:
        self.media = Path(tempfile.mkdtemp(prefix="gbtalk-media-"))
        self.addCleanup(shutil.rmtree, self.media, True)
        self.harness = ServiceHarness(ports=1, max_file_memory=1 * MIB)
        self.harness.start()

    def tearDown(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.harness.stop())

    @async_test
    async def test_files_beyond_the_budget_are_refused_with_503_and_413(self) -> None:
        url = self.harness.url("/api/sources")
        first = await call("POST", url, json_body=spec("a", wav_of_seconds(
            self.media / "a.wav", 30)))
        assert first.json["code"] == 0, first.json
        second = await call("POST", url, json_body=spec("b", wav_of_seconds(
            self.media / "b.wav", 30)))
        assert (second.status, second.json["code"]) == (503, codes.EXCEPTION), second.json
        assert "of the 1.0 MiB budget (1 files)" in second.json["msg"], second.json["msg"]
        huge = await call("POST", url, json_body=spec("c", wav_of_seconds(
            self.media / "c.wav", 70)))
        assert (huge.status, huge.json["code"]) == (413, codes.INVALID_ARGS), huge.json
        gone = await call("DELETE", self.harness.url("/api/sources/files/a"))
        assert gone.json["code"] == 0
        again = await call("POST", url, json_body=spec("b", self.media / "b.wav"))
        assert again.json["code"] == 0, again.json
