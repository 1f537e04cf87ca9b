"""Audio sources: tone, file, live backlog, device, and the registry that builds them from JSON."""

from __future__ import annotations

import itertools
import json
import math
import struct
import wave
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IPushProducer
from twisted.internet.testing import MemoryReactor
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gb28181talk.errors import SourceError
from gb28181talk.interfaces import (
    FRAME_BYTES,
    FRAME_SAMPLES,
    IAudioSink,
    IAudioSource,
    ILiveSource,
    IPushSource,
)
from gb28181talk.media import g711
from gb28181talk.media.law import Law
from gb28181talk.media.wav import read_wav
from gb28181talk.sources import file as file_source
from gb28181talk.sources.device import DeviceAudioSource
from gb28181talk.sources.file import FileSource, load_audio_file
from gb28181talk.sources.live import LiveSource
from gb28181talk.sources.registry import SourceRegistry
from gb28181talk.sources.tone import ToneSource

# --------------------------------------------------------------------------- helpers


def tone_pcm(frequency: float, seconds: float, rate: int = 8000, channels: int = 1,
             amplitude: float = 0.5) -> bytes:
    """A sine as little-endian PCM16 (the same sample on every channel)."""
    count = round(seconds * rate)
    samples = []
    for n in range(count):
        value = round(amplitude * 32767 * math.sin(2 * math.pi * frequency * n / rate))
        samples.extend([value] * channels)
    return struct.pack(f"<{len(samples)}h", *samples)


def samples_of(pcm: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(pcm) // 2}h", pcm))


def zero_crossing_frequency(pcm: bytes, rate: int = 8000) -> float:
    """Frequency of a clean tone from its sign changes (two per cycle)."""
    samples = samples_of(pcm)
    crossings = sum(1 for a, b in itertools.pairwise(samples) if (a < 0) != (b < 0))
    return crossings / 2 / (len(samples) / rate)


def goertzel_ratio(pcm: bytes, frequency: float, rate: int = 8000) -> float:
    """Share of the signal's energy at ``frequency`` (about 1 for a pure tone there)."""
    samples = samples_of(pcm)
    coeff = 2 * math.cos(2 * math.pi * frequency / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    energy = sum(x * x for x in samples) or 1
    return 2 * power / (len(samples) * energy)


def read_all(source: Any, limit: int = 10_000) -> list[bytes]:
    """Frames until the source returns None."""
    frames = []
    for _ in range(limit):
        frame = source.read_frame()
        if frame is None:
            break
        frames.append(frame)
    return frames


def write_wav(path: Path, pcm: bytes, rate: int, channels: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)


class _FakeUdpPort:
    def __init__(self, interface: str, port: int) -> None:
        self.address = IPv4Address("UDP", interface, port)
        self.listening = True

    def getHost(self) -> IPv4Address:
        return self.address

    def stopListening(self) -> None:
        self.listening = False


class UdpMemoryReactor(MemoryReactor):
    """MemoryReactor plus a fake listenUDP; port 1 is "in use"."""

    def __init__(self) -> None:
        super().__init__()
        self.udp: list[tuple[int, Any, str, _FakeUdpPort]] = []

    def listenUDP(self, port: int, protocol: Any, interface: str = "",
                  maxPacketSize: int = 8192) -> _FakeUdpPort:
        if port == 1:
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        bound = _FakeUdpPort(interface, port or 40000 + len(self.udp))
        self.udp.append((port, protocol, interface, bound))
        return bound


@implementer(IPushProducer)
class RecordingProducer:
    """A producer that records the flow control calls it is given (pause, resume, stop)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


# --------------------------------------------------------------------------- interfaces


def test_every_source_class_provides_the_interfaces(tmp_path: Path) -> None:
    from gb28181talk.sources.ingest import RtpIngestSource
    from gb28181talk.sources.push import PushSource

    wav_path = tmp_path / "a.wav"
    write_wav(wav_path, tone_pcm(440, 0.1), 8000, 1)
    sources = [
        ToneSource("live", "tone"),
        FileSource("live", "file", str(wav_path)),
        LiveSource("live", "live", "push"),
        DeviceAudioSource("talk", "dev"),
        PushSource("live", "push"),
        RtpIngestSource("live", "rtp", UdpMemoryReactor()),
    ]
    for source in sources:
        assert verifyObject(IAudioSource, source)
        info = source.describe()
        json.dumps(info)
        assert info["app"] == source.app and info["stream"] == source.stream
        assert info["kind"] == source.kind
        source.close()
        assert source.ended
        assert source.read_frame() is None
    assert verifyObject(IAudioSink, sources[3])


def test_the_live_sources_and_only_they_declare_the_live_contract() -> None:
    from gb28181talk.sources.ingest import RtpIngestSource
    from gb28181talk.sources.push import PushSource
    from gb28181talk.testing import ListSource

    played = [ToneSource("live", "tone"), ListSource.counting(3)]
    live = [
        LiveSource("live", "live", "push"),
        DeviceAudioSource("talk", "dev"),
        PushSource("live", "push"),
        RtpIngestSource("live", "rtp", UdpMemoryReactor()),
    ]
    for source in played:
        assert verifyObject(IAudioSource, source)
        assert not ILiveSource.providedBy(source)
    assert not ILiveSource.implementedBy(FileSource)
    for source in live:
        assert verifyObject(ILiveSource, source)
    assert [IPushSource.providedBy(source) for source in live] == [False, False, True, False]
    assert verifyObject(IPushSource, live[2])
    assert [IAudioSink.providedBy(source) for source in played + live] == [
        False, False, False, True, False, False
    ]


# --------------------------------------------------------------------------- tone


@pytest.mark.parametrize("frequency", [440.0, 1000.0, 333.3, 3000.0])
def test_tone_has_its_frequency_and_amplitude(frequency: float) -> None:
    source = ToneSource("live", "t", frequency=frequency, amplitude=0.5)
    frames = [source.read_frame() for _ in range(50)]
    assert all(f is not None and len(f) == FRAME_BYTES for f in frames)
    pcm = b"".join(f for f in frames if f)
    if frequency < 2000:
        assert zero_crossing_frequency(pcm) == pytest.approx(frequency, abs=2)
    assert goertzel_ratio(pcm, frequency) > 0.95
    assert max(samples_of(pcm)) == pytest.approx(0.5 * 32767, rel=0.01)
    assert not source.ended


@pytest.mark.parametrize("frequency", [440.0, 333.3])
def test_tone_is_phase_continuous_across_frames(frequency: float) -> None:
    source = ToneSource("live", "t", frequency=frequency, amplitude=1.0)
    pcm = b"".join(source.read_frame() or b"" for _ in range(120))  # wraps the 50-frame cycle
    samples = samples_of(pcm)
    biggest_step = 32767 * 2 * math.pi * frequency / 8000 + 2
    assert max(abs(a - b) for a, b in itertools.pairwise(samples)) <= biggest_step
    reference = tone_pcm(frequency, 120 * FRAME_SAMPLES / 8000, amplitude=1.0)
    assert max(abs(a - b) for a, b in zip(samples, samples_of(reference), strict=True)) <= 2


def test_tone_duration_ends_it() -> None:
    source = ToneSource("live", "t", duration=0.1)
    assert len(read_all(source)) == 5
    assert source.ended
    assert source.describe()["position_ms"] == 100


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"frequency": 0}, "1 to 3999 Hz"),
        ({"frequency": 4000}, "1 to 3999 Hz"),
        ({"amplitude": 1.5}, "0.0 to 1.0"),
        ({"duration": 0}, "more than 0"),
    ],
)
def test_tone_rejects_bad_options(kwargs: dict[str, float], words: str) -> None:
    with pytest.raises(SourceError, match=words):
        ToneSource("live", "t", **kwargs)


# --------------------------------------------------------------------------- file


def test_file_source_resamples_a_16k_stereo_wav(tmp_path: Path) -> None:
    path = tmp_path / "voice.wav"
    write_wav(path, tone_pcm(500, 0.5, rate=16000, channels=2), 16000, 2)
    source = FileSource("live", "f", str(path))
    frames = read_all(source)
    assert len(frames) == 25
    assert all(len(f) == FRAME_BYTES for f in frames)
    pcm = b"".join(frames)
    assert zero_crossing_frequency(pcm[800:-800]) == pytest.approx(500, abs=5)
    assert goertzel_ratio(pcm[800:-800], 500) > 0.9
    assert source.ended
    info = source.describe()
    assert info["duration_ms"] == 500 and info["path"] == str(path)


@pytest.mark.parametrize(("rate", "channels", "tag"), [
    (48000, 2, 1), (44100, 1, 1), (8000, 2, 1), (8000, 1, 1), (16000, 2, 6), (8000, 1, 7),
])
def test_file_decoding_in_pieces_equals_decoding_whole(
    tmp_path: Path, monkeypatch: Any, rate: int, channels: int, tag: int
) -> None:
    monkeypatch.setattr(file_source, "DECODE_CHUNK_FRAMES", 37)  # many odd-sized pieces
    width = 2 if tag == 1 else 1
    frames = 1000 + 3
    data = bytes((i * 37 + (i >> 7)) & 0xFF for i in range(frames * channels * width))
    blob = b"".join([
        b"RIFF", struct.pack("<I", 36 + len(data)), b"WAVE", b"fmt ",
        struct.pack("<IHHIIHH", 16, tag, channels, rate, rate * channels * width,
                    channels * width, 8 * width),
        b"data", struct.pack("<I", len(data)), data,
    ])
    path = tmp_path / "a.wav"
    path.write_bytes(blob)
    assert load_audio_file(str(path)) == read_wav(blob).to_8k_mono_pcm16()


def test_file_source_reads_raw_alaw(tmp_path: Path) -> None:
    pcm = tone_pcm(1000, 0.2)
    path = tmp_path / "prompt.alaw"
    path.write_bytes(g711.encode(Law.ALAW, pcm))
    frames = read_all(FileSource("live", "f", str(path)))
    assert len(frames) == 10
    assert b"".join(frames) == g711.decode(Law.ALAW, g711.encode(Law.ALAW, pcm))


def test_file_source_reads_raw_ulaw(tmp_path: Path) -> None:
    pcm = tone_pcm(800, 0.1)
    path = tmp_path / "prompt.PCMU"
    path.write_bytes(g711.encode(Law.ULAW, pcm))
    frames = read_all(FileSource("live", "f", str(path)))
    assert b"".join(frames) == g711.decode(Law.ULAW, g711.encode(Law.ULAW, pcm))


def test_file_source_pads_the_last_frame_and_ends(tmp_path: Path) -> None:
    path = tmp_path / "short.alaw"
    path.write_bytes(g711.encode(Law.ALAW, tone_pcm(440, 0.05)))  # 2.5 frames
    source = FileSource("live", "f", str(path))
    frames = read_all(source)
    assert len(frames) == 3
    assert frames[2][FRAME_BYTES // 2 :] == bytes(FRAME_BYTES // 2)
    assert source.ended and source.read_frame() is None


def test_file_source_loops(tmp_path: Path) -> None:
    path = tmp_path / "short.alaw"
    path.write_bytes(g711.encode(Law.ALAW, tone_pcm(440, 0.05)))
    source = FileSource("live", "f", str(path), loop=True)
    frames = [source.read_frame() for _ in range(7)]
    assert frames[3] == frames[0] and frames[6] == frames[0]
    assert not source.ended
    assert source.describe()["loops"] == 2


def test_file_source_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.wav"
    with pytest.raises(SourceError, match=r"nope\.wav.*No such file"):
        FileSource("live", "f", str(path))


def test_file_source_bad_wav_names_it(tmp_path: Path) -> None:
    path = tmp_path / "broken.wav"
    path.write_bytes(b"this is not RIFF at all" * 10)
    with pytest.raises(SourceError, match=r"broken\.wav") as info:
        FileSource("live", "f", str(path))
    assert "WAV" in str(info.value)


def test_file_source_error_never_quotes_a_file_that_is_not_audio(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(SourceError) as info:
        SourceRegistry().create({"app": "a", "stream": "s", "kind": "file", "path": str(path)})
    said = str(info.value).replace(str(path), "<path>")
    assert "not a RIFF/WAVE file" in said
    assert "root" not in said and "/bin/bash" not in said


def test_file_source_refuses_a_directory_and_an_empty_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not a regular file"):
        FileSource("live", "f", str(tmp_path))
    empty = tmp_path / "empty.ulaw"
    empty.write_bytes(b"")
    with pytest.raises(SourceError, match=r"empty\.ulaw.*no audio"):
        FileSource("live", "f", str(empty))


# --------------------------------------------------------------------------- live


def ms(n: int, value: int = 1000) -> bytes:
    """``n`` ms of a constant sample."""
    return struct.pack("<h", value) * (8 * n)


def test_live_source_waits_for_prefill_then_underruns_and_prefills_again() -> None:
    source = LiveSource("live", "l", "push", prefill_ms=60)
    source.feed_pcm(ms(40))
    assert source.read_frame() is None
    source.feed_pcm(ms(20))
    assert [len(f or b"") for f in (source.read_frame() for _ in range(3))] == [320] * 3
    assert source.read_frame() is None  # underrun
    assert source.describe()["underruns"] == 1
    source.feed_pcm(ms(40))
    assert source.read_frame() is None  # prefilling again
    source.feed_pcm(ms(20))
    assert source.read_frame() is not None
    assert source.describe()["underruns"] == 1


def test_live_source_drops_the_oldest_audio_beyond_its_backlog() -> None:
    source = LiveSource("live", "l", "rtp", max_backlog_ms=100, prefill_ms=20)
    source.feed_pcm(ms(200, 1))
    source.feed_pcm(ms(100, 2))
    info = source.describe()
    assert info["backlog_ms"] == 100 and info["dropped_ms"] == 200
    frames = read_all(source)
    assert len(frames) == 5
    assert all(f == ms(20, 2) for f in frames)  # the newest audio survived


def test_live_source_pauses_a_producer_instead_of_dropping() -> None:
    source = LiveSource("live", "l", "push", max_backlog_ms=100, prefill_ms=20)
    producer = RecordingProducer()
    source.attach_producer(producer)
    source.feed_pcm(ms(300))
    assert producer.calls == ["pause"] and source.paused
    assert source.describe()["dropped_ms"] == 0 and source.backlog_ms == 300
    frames = 0
    while source.backlog_ms >= 50:
        assert source.read_frame() is not None
        frames += 1
        assert producer.calls == ["pause"] or source.backlog_ms < 50
    assert producer.calls == ["pause", "resume"] and not source.paused
    assert frames == 13  # 300 ms -> under 50 ms


def test_live_source_drops_beyond_the_hard_limit_even_when_flow_controlled() -> None:
    source = LiveSource("live", "l", "push", max_backlog_ms=100, prefill_ms=20)
    source.attach_producer(RecordingProducer())
    source.feed_pcm(ms(source.hard_limit_ms + 500))
    assert source.backlog_ms == source.hard_limit_ms
    assert source.describe()["dropped_ms"] == 500


def test_trim_backlog_keeps_the_newest_audio_unless_flow_controlled() -> None:
    source = LiveSource("live", "l", "rtp", prefill_ms=40)
    source.feed_pcm(ms(1000, 1) + ms(40, 2))
    assert source.trim_backlog() == 1000
    assert read_all(source) == [ms(20, 2), ms(20, 2)]
    assert source.describe()["dropped_ms"] == 1000
    source.feed_pcm(ms(100))
    assert source.trim_backlog(keep_ms=60) == 40 and source.backlog_ms == 60
    source.attach_producer(RecordingProducer())
    assert source.trim_backlog(keep_ms=0) == 0 and source.backlog_ms == 60


def test_live_source_finish_plays_out_and_pads() -> None:
    source = LiveSource("live", "l", "device")
    source.feed_pcm(ms(30))
    source.finish()
    assert not source.ended
    frames = read_all(source)
    assert len(frames) == 2 and frames[1][160:] == bytes(160)
    assert source.ended
    source.feed_pcm(ms(20))  # after finish: ignored
    assert source.read_frame() is None


def test_live_source_keeps_odd_bytes_for_the_next_feed() -> None:
    source = LiveSource("live", "l", "push", prefill_ms=20)
    data = ms(20, 0x1234)
    source.feed_pcm(data[:101])
    source.feed_pcm(data[101:])
    assert source.read_frame() == data


def test_live_source_rejects_bad_settings() -> None:
    with pytest.raises(SourceError, match="prefill_ms"):
        LiveSource("live", "l", "push", max_backlog_ms=100, prefill_ms=200)
    with pytest.raises(SourceError, match="max_backlog_ms"):
        LiveSource("live", "l", "push", max_backlog_ms=5)


def test_device_source_takes_a_sessions_audio_and_ends_with_it() -> None:
    source = DeviceAudioSource("talk", "34020000001320000001")
    assert source.kind == "device"
    for n in range(4):
        source.audio_received(ms(20, n + 1), n * 160)
    assert source.last_rtp_timestamp == 480
    source.audio_ended()
    assert read_all(source) == [ms(20, n + 1) for n in range(4)]
    assert source.ended


# --------------------------------------------------------------------------- registry


def test_registry_add_get_find_remove_list() -> None:
    registry = SourceRegistry()
    tone = registry.add(ToneSource("live", "b"))
    other = registry.add(ToneSource("live", "a"))
    assert registry.get("live", "b") is tone
    assert registry.find("live", "zzz") is None
    assert registry.list() == [other, tone]
    assert ("live", "a") in registry and len(registry) == 2
    with pytest.raises(SourceError) as info:
        registry.add(ToneSource("live", "b"))
    assert str(info.value) == (
        "source live/b exists; delete it first or pick another stream name"
    )
    assert registry.remove("live", "b") is tone and tone.ended
    with pytest.raises(SourceError) as info:
        registry.get("live", "b")
    assert str(info.value) == (
        "no source live/b; create it with POST /api/sources or list them with GET /api/sources"
    )
    with pytest.raises(SourceError, match="no source live/b"):
        registry.remove("live", "b")
    registry.close_all()
    assert other.ended and registry.list() == []


def test_registry_replaces_an_ended_source() -> None:
    registry = SourceRegistry()
    old = registry.add(DeviceAudioSource("talk", "dev"))
    old.audio_ended()
    new = registry.add(DeviceAudioSource("talk", "dev"))
    assert registry.get("talk", "dev") is new


def test_create_every_kind(tmp_path: Path) -> None:
    from gb28181talk.sources.ingest import RtpIngestSource
    from gb28181talk.sources.push import PushSource

    wav_path = tmp_path / "a.wav"
    write_wav(wav_path, tone_pcm(440, 0.1), 8000, 1)
    reactor = UdpMemoryReactor()
    registry = SourceRegistry()
    tone = registry.create(
        {"app": "live", "stream": "t", "kind": "tone", "frequency": 1000, "amplitude": 0.25,
         "duration": 2}, reactor)
    assert isinstance(tone, ToneSource)
    assert (tone.frequency, tone.amplitude, tone.duration) == (1000, 0.25, 2)
    default_tone = registry.create({"app": "live", "stream": "t2", "kind": "tone"})
    assert default_tone.describe()["frequency"] == 440
    file = registry.create(
        {"app": "live", "stream": "f", "kind": "file", "path": str(wav_path), "loop": True})
    assert isinstance(file, FileSource) and file.loop
    push = registry.create(
        {"app": "live", "stream": "p", "kind": "push", "sample_rate": 16000, "channels": 2,
         "format": "pcm16", "max_backlog_ms": 1000, "prefill_ms": 100})
    assert isinstance(push, PushSource)
    assert (push.sample_rate, push.channels, push.format) == (16000, 2, "pcm16")
    assert push.describe()["max_backlog_ms"] == 1000
    alaw = registry.create({"app": "live", "stream": "pa", "kind": "push", "format": "alaw"})
    assert alaw.format == "alaw"
    rtp = registry.create(
        {"app": "live", "stream": "r", "kind": "rtp", "port": 30000, "interface": "0.0.0.0"},
        reactor)
    assert isinstance(rtp, RtpIngestSource) and rtp.port == 30000
    assert reactor.udp[0][0] == 30000 and reactor.udp[0][2] == "0.0.0.0"
    assert registry.find("live", "r") is rtp
    assert [s.stream for s in registry.list()] == ["f", "p", "pa", "r", "t", "t2"]
    registry.close_all()
    assert not reactor.udp[0][3].listening


BASE = {"app": "live", "stream": "s"}


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ([1, 2], "JSON object"),
        ({"app": "live", "stream": "s"}, "field 'kind' is None; allowed: 'tone'"),
        ({**BASE, "kind": "mp3"}, "field 'kind' is 'mp3'"),
        ({**BASE, "kind": "device"}, "made by two-way talk"),
        ({**BASE, "kind": "tone", "volume": 3}, "unknown field.*'volume'.*allowed: app"),
        ({"stream": "s", "kind": "tone"}, "field 'app' is None"),
        ({**BASE, "app": "a/b", "kind": "tone"}, "field 'app' is 'a/b'; allowed"),
        ({**BASE, "stream": "", "kind": "tone"}, "field 'stream' is ''"),
        ({**BASE, "stream": 7, "kind": "tone"}, "field 'stream' is 7"),
        ({**BASE, "kind": "tone", "frequency": "440"}, "'frequency' must be a number.*'440'"),
        ({**BASE, "kind": "tone", "frequency": True}, "'frequency' must be a number"),
        ({**BASE, "kind": "tone", "frequency": 5000}, "'frequency' is 5000; allowed.*1 to 3999"),
        ({**BASE, "kind": "tone", "frequency": float("nan")}, "'frequency' is nan"),
        ({**BASE, "kind": "tone", "amplitude": -1}, "'amplitude' is -1"),
        ({**BASE, "kind": "tone", "duration": 0}, "'duration' is 0"),
        ({**BASE, "kind": "tone", "duration": 10**400}, "'duration' is 1000"),
        ({**BASE, "kind": "file"}, "needs field 'path'"),
        ({**BASE, "kind": "file", "path": 3}, "'path' must be a non-empty string, got 3"),
        ({**BASE, "kind": "file", "path": "/no/such.wav"}, r"/no/such\.wav"),
        ({**BASE, "kind": "file", "path": "a\x00b"}, "NUL"),
        ({**BASE, "kind": "file", "path": "x.wav", "loop": "yes"}, "'loop' must be true or"),
        ({**BASE, "kind": "push", "sample_rate": 11025}, "'sample_rate' is 11025; allowed: 8000"),
        ({**BASE, "kind": "push", "sample_rate": 8000.0}, "'sample_rate' must be 8000 or"),
        ({**BASE, "kind": "push", "channels": 3}, "'channels' is 3; allowed: 1 or 2"),
        ({**BASE, "kind": "push", "format": "mp3"}, "'format' is 'mp3'; allowed: 'pcm16'"),
        ({**BASE, "kind": "push", "prefill_ms": 2000}, "'prefill_ms' is 2000; allowed"),
        ({**BASE, "kind": "push", "max_backlog_ms": 200, "prefill_ms": 300},
         "'prefill_ms' is 300; allowed: at most max_backlog_ms"),
        ({**BASE, "kind": "push", "port": 3}, "unknown field.*'port'"),
        ({**BASE, "kind": "rtp", "port": 70000}, "'port' is 70000; allowed: an integer from 0"),
        ({**BASE, "kind": "rtp", "port": -1}, "'port' is -1"),
        ({**BASE, "kind": "rtp", "interface": ""}, "'interface' must be a non-empty string"),
        ({**BASE, "kind": "rtp", "port": 1}, "cannot listen for RTP on UDP 127.0.0.1:1"),
    ],
)
def test_create_explains_every_bad_field(spec: Any, words: str) -> None:
    registry = SourceRegistry()
    with pytest.raises(SourceError, match=words):
        registry.create(spec, UdpMemoryReactor())
    assert registry.list() == []


def test_create_rtp_without_a_reactor() -> None:
    with pytest.raises(SourceError, match="needs a reactor"):
        SourceRegistry().create({**BASE, "kind": "rtp"})


def test_create_refuses_an_existing_name_before_binding() -> None:
    registry = SourceRegistry()
    reactor = UdpMemoryReactor()
    registry.create({**BASE, "kind": "tone"})
    with pytest.raises(SourceError, match="source live/s exists"):
        registry.create({**BASE, "kind": "rtp"}, reactor)
    assert reactor.udp == []


class _HeldThreadPool:
    """A thread pool that runs its calls only when told (deferToThreadPool's side of it)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, Any, tuple[Any, ...]]] = []

    def callInThreadWithCallback(self, on_result: Any, function: Any, *args: Any) -> None:
        self.calls.append((on_result, function, args))

    def run(self) -> None:
        calls, self.calls = self.calls, []
        for on_result, function, args in calls:
            try:
                result = function(*args)
            except Exception:
                on_result(False, Failure())
            else:
                on_result(True, result)


class _ThreadedReactor(MemoryReactor):
    def __init__(self) -> None:
        super().__init__()
        self.pool = _HeldThreadPool()

    def getThreadPool(self) -> _HeldThreadPool:
        return self.pool

    def callFromThread(self, function: Any, *args: Any) -> None:
        function(*args)


def test_create_async_loads_a_file_in_the_thread_pool(tmp_path: Path) -> None:
    write_wav(tmp_path / "a.wav", tone_pcm(440, 0.5), 8000, 1)
    reactor = _ThreadedReactor()
    registry = SourceRegistry()
    spec = {**BASE, "kind": "file", "path": str(tmp_path / "a.wav"), "loop": True}
    results: list[Any] = []
    registry.create_async(spec, reactor).addBoth(results.append)
    assert results == [] and len(reactor.pool.calls) == 1, "nothing is read on the reactor"
    assert registry.loading("live", "s") and registry.find("live", "s") is None
    for again in (lambda: registry.create(spec), lambda: registry.create({**BASE, "kind": "tone"})):
        with pytest.raises(SourceError, match="being loaded"):
            again()
    second: list[Any] = []
    registry.create_async(spec, reactor).addErrback(second.append)
    assert second[0].check(SourceError) and len(reactor.pool.calls) == 1
    reactor.pool.run()
    [source] = results
    assert isinstance(source, FileSource) and source.loop and source.duration_ms == 500
    assert registry.find("live", "s") is source and not registry.loading("live", "s")


def test_create_async_failures_and_a_close_while_loading(tmp_path: Path) -> None:
    reactor = _ThreadedReactor()
    registry = SourceRegistry()
    failed: list[Any] = []
    missing = {**BASE, "kind": "file", "path": str(tmp_path / "missing.wav")}
    registry.create_async(missing, reactor).addErrback(failed.append)
    reactor.pool.run()
    assert failed[0].check(SourceError) and "No such file" in failed[0].getErrorMessage()
    assert not registry.loading("live", "s")
    write_wav(tmp_path / "a.wav", tone_pcm(440, 0.1), 8000, 1)
    registry.create_async({**missing, "path": str(tmp_path / "a.wav")}, reactor).addErrback(
        failed.append)
    registry.close_all()
    reactor.pool.run()
    assert "closed" in failed[1].getErrorMessage() and registry.list() == []
    tone: list[Any] = []
    registry.create_async({**BASE, "kind": "tone"}, reactor).addCallback(tone.append)
    assert tone[0].kind == "tone", "other kinds are made at once"


def test_media_root_confines_file_sources(tmp_path: Path) -> None:
    inside = tmp_path / "media"
    inside.mkdir()
    write_wav(inside / "ok.wav", tone_pcm(440, 0.1), 8000, 1)
    write_wav(tmp_path / "secret.wav", tone_pcm(440, 0.1), 8000, 1)
    registry = SourceRegistry(media_root=str(inside))
    source = registry.create({**BASE, "kind": "file", "path": "ok.wav"})
    assert source.path == str(inside / "ok.wav")
    for path in ("../secret.wav", str(tmp_path / "secret.wav")):
        with pytest.raises(SourceError, match="outside the media directory"):
            registry.create({"app": "live", "stream": "x", "kind": "file", "path": path})


# --------------------------------------------------------------------------- property

_FIELD_NAMES = [
    "app", "stream", "kind", "frequency", "amplitude", "duration", "path", "loop",
    "sample_rate", "channels", "format", "max_backlog_ms", "prefill_ms", "port", "interface",
]
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                  max_size=3),
    max_leaves=6,
)
_value = st.one_of(
    _json,
    st.sampled_from(["tone", "file", "push", "rtp", "device", "live", "s", "alaw", "pcm16",
                     "a.wav", "x.alaw", "..", "/", "127.0.0.1", "::1", "nonsense"]),
    st.sampled_from([0, 1, 2, 440, 8000, 16000, 48000, 65535, 65536, 0.5, -1]),
)
_spec = st.dictionaries(st.sampled_from(_FIELD_NAMES) | st.text(max_size=8), _value,
                        max_size=8)


@given(spec=st.one_of(_spec, _json), kind=st.sampled_from(["tone", "file", "push", "rtp", None]))
def test_create_raises_only_source_error(tmp_path_factory: Any, spec: Any, kind: Any) -> None:
    if isinstance(spec, dict) and kind is not None:
        spec = {"app": "live", "stream": "s", **spec, "kind": kind}
    root = tmp_path_factory.getbasetemp() / "hypothesis-media"
    root.mkdir(exist_ok=True)
    registry = SourceRegistry(media_root=str(root))
    try:
        source = registry.create(spec, UdpMemoryReactor())
    except SourceError:
        assert registry.list() == []
    else:
        assert verifyObject(IAudioSource, source)
        assert registry.list() == [source]
        frame = source.read_frame()
        assert frame is None or len(frame) == FRAME_BYTES
    finally:
        registry.close_all()
