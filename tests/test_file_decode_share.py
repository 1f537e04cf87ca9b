"""Issue 12 (fault benchmark): file loads share the reactor's core: one at a time, yielding.

The decoding is pure Python holding the interpreter lock; these check that the
service's loads decode one at a time (their memory reserved while they wait) and
that a loading thread sleeps after every piece.  Order and counts only, no timing.
"""

from __future__ import annotations

import struct
import threading
from pathlib import Path
from typing import Any

import pytest

from gb28181talk.media.wav import write_wav
from gb28181talk.sources import file as file_source
from gb28181talk.sources.file import FileMemory, load_audio_file_within


def wav_of_frames(path: Path, frames: int, rate: int = 8000) -> Path:
    write_wav(path, struct.pack("<h", 500) * frames, rate, 1)
    return path


def test_a_load_in_a_thread_sleeps_after_every_piece(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(file_source, "DECODE_CHUNK_FRAMES", 100)
    path = wav_of_frames(tmp_path / "a.wav", 1050)  # 11 pieces
    sleeps: list[float] = []
    monkeypatch.setattr(file_source.time, "sleep", sleeps.append)
    done: list[Any] = []
    worker = threading.Thread(target=lambda: done.append(load_audio_file_within(
        str(path), None, file_source.DECODE_LOCK)))
    worker.start()
    worker.join(30)
    assert done and done[0].audio.nbytes == 1050 * 2
    assert len(sleeps) == 11, "one yield per piece"
    assert all(0 <= s <= file_source.MAX_YIELD_SECONDS for s in sleeps)


def test_the_main_thread_library_load_does_not_sleep(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(file_source, "DECODE_CHUNK_FRAMES", 100)
    path = wav_of_frames(tmp_path / "a.wav", 1050)
    monkeypatch.setattr(file_source.time, "sleep", pytest.fail)
    assert len(file_source.load_audio_file(str(path))) == 1050 * 2


def test_loads_decode_one_at_a_time_with_their_memory_reserved(tmp_path: Path) -> None:
    memory = FileMemory(10 * 1024 * 1024)
    path = wav_of_frames(tmp_path / "b.wav", 8000)
    lock = threading.Lock()
    reserved = threading.Event()
    original = memory.reserve

    def reserve(*args: Any) -> Any:
        lease = original(*args)
        reserved.set()
        return lease

    memory.reserve = reserve  # type: ignore[method-assign]
    done: list[Any] = []
    with lock:  # another load is decoding
        worker = threading.Thread(target=lambda: done.append(
            load_audio_file_within(str(path), memory, lock)))
        worker.start()
        assert reserved.wait(30), "the waiting load has reserved its memory"
        assert memory.files == 1 and memory.used > 16000
        assert not done, "and waits for the decoding before it"
    worker.join(30)
    assert done and done[0].audio.nbytes == 16000 and memory.used == 16000
    done[0].lease.release()
    assert memory.used == 0 and memory.files == 0


def test_the_service_path_takes_the_decode_lock(monkeypatch: Any) -> None:
    calls: list[tuple[Any, ...]] = []

    class Reactor:
        def getThreadPool(self) -> str:
            return "pool"

    def defer(reactor: Any, pool: Any, function: Any, *args: Any) -> str:
        calls.append((pool, function, *args))
        return "deferred"

    monkeypatch.setattr(file_source, "deferToThreadPool", defer)
    assert file_source.load_audio_file_in_thread(Reactor(), "x.wav", None) == "deferred"
    assert calls == [("pool", load_audio_file_within, "x.wav", None, file_source.DECODE_LOCK)]
