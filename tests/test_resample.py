"""Resampling to 8 kHz mono: tones keep pitch and level, aliases go, chunking does not matter."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gb28181talk.media.resample import SUPPORTED_RATES, StreamResampler, to_8k_mono

EDGE = 100  # output samples at each end where the filter sees the silence around the clip


def tone(rate: int, frequency: float, seconds: float, amplitude: float = 10000.0) -> list[int]:
    return [
        round(amplitude * math.sin(2 * math.pi * frequency * n / rate))
        for n in range(round(rate * seconds))
    ]


def pcm16(samples: list[int]) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def interleave(left: list[int], right: list[int]) -> list[int]:
    return [sample for pair in zip(left, right, strict=True) for sample in pair]


def samples_of(pcm: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(pcm) // 2}h", pcm))


def goertzel_amplitude(samples: list[int], rate: int, frequency: float) -> float:
    """Amplitude of the ``frequency`` component (a one-bin DFT)."""
    coefficient = 2 * math.cos(2 * math.pi * frequency / rate)
    previous = before = 0.0
    for sample in samples:
        previous, before = sample + coefficient * previous - before, previous
    power = previous * previous + before * before - coefficient * previous * before
    return 2 * math.sqrt(max(power, 0.0)) / len(samples)


def zero_crossing_frequency(samples: list[int], rate: int) -> float:
    crossings = [n for n in range(1, len(samples)) if (samples[n - 1] < 0) != (samples[n] < 0)]
    # Half a period between consecutive crossings.
    return rate * (len(crossings) - 1) / (2 * (crossings[-1] - crossings[0]))


def rms(samples: list[int]) -> float:
    return math.sqrt(sum(s * s for s in samples) / len(samples))


def db(ratio: float) -> float:
    return 20 * math.log10(max(ratio, 1e-12))


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", SUPPORTED_RATES)
def test_1khz_tone_comes_out_as_1khz_at_the_same_level(rate: int, channels: int) -> None:
    source = tone(rate, 1000, 0.5)
    frames = source if channels == 1 else interleave(source, source)
    out = samples_of(to_8k_mono(pcm16(frames), rate, channels))
    core = out[EDGE:-EDGE]
    assert zero_crossing_frequency(core, 8000) == pytest.approx(1000, rel=0.002)
    level = goertzel_amplitude(core, 8000, 1000)
    assert abs(db(level / 10000)) < 1.0
    for neighbour in (800, 900, 1100, 1200):
        assert db(goertzel_amplitude(core, 8000, neighbour) / level) < -30


@pytest.mark.parametrize("rate", SUPPORTED_RATES)
def test_stereo_is_mixed_down_by_averaging(rate: int) -> None:
    left = tone(rate, 1000, 0.25)
    silence = [0] * len(left)
    half = samples_of(to_8k_mono(pcm16(interleave(left, silence)), rate, 2))[EDGE:-EDGE]
    assert db(goertzel_amplitude(half, 8000, 1000) / 5000) == pytest.approx(0, abs=0.5)
    inverted = [-s for s in left]
    cancelled = samples_of(to_8k_mono(pcm16(interleave(left, inverted)), rate, 2))
    assert max(map(abs, cancelled)) <= 1


def test_8k_stereo_average_rounds_half_up() -> None:
    frames = pcm16([1, 2, -1, -2, 32767, 32767, -32768, -32768, 100, -101])
    assert samples_of(to_8k_mono(frames, 8000, 2)) == [2, -1, 32767, -32768, 0]


@pytest.mark.parametrize("rate", [r for r in SUPPORTED_RATES if r > 12000])
@pytest.mark.parametrize("frequency", [4600, 6000, 7000])
def test_tones_that_would_alias_are_removed(rate: int, frequency: int) -> None:
    out = samples_of(to_8k_mono(pcm16(tone(rate, frequency, 0.25)), rate, 1))
    attenuation = db(rms(out[EDGE:-EDGE]) / (10000 / math.sqrt(2)))
    assert attenuation < -40  # the filter gives > 50 dB; 30 dB is the requirement


@pytest.mark.parametrize("rate", [r for r in SUPPORTED_RATES if r > 8000])
def test_passband_is_flat_to_3khz(rate: int) -> None:
    out = samples_of(to_8k_mono(pcm16(tone(rate, 3000, 0.25)), rate, 1))
    assert db(goertzel_amplitude(out[EDGE:-EDGE], 8000, 3000) / 10000) > -1.0


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", SUPPORTED_RATES)
@pytest.mark.parametrize("frames", [0, 1, 5, 441, 1000, 12345])
def test_output_length_follows_duration(rate: int, channels: int, frames: int) -> None:
    out = to_8k_mono(bytes(2 * channels * frames), rate, channels)
    assert abs(len(out) // 2 - frames * 8000 / rate) < 1  # ceil(duration * 8000)
    assert out == bytes(len(out))  # silence stays silence


@pytest.mark.parametrize("rate", SUPPORTED_RATES)
def test_dc_gain_is_one(rate: int) -> None:
    out = samples_of(to_8k_mono(pcm16([1234] * rate), rate, 1))
    assert set(out[EDGE:-EDGE]) == {1234}


@pytest.mark.parametrize("rate", [r for r in SUPPORTED_RATES if r > 8000])
def test_output_is_clipped_to_int16(rate: int) -> None:
    period = rate // 500
    square = ([32767] * (period // 2) + [-32768] * (period - period // 2)) * 200
    out = samples_of(to_8k_mono(pcm16(square), rate, 1))
    assert max(out) == 32767  # Gibbs overshoot, clipped
    assert min(out) == -32768


def test_8k_mono_passes_through_unchanged() -> None:
    pcm = pcm16([*tone(8000, 1234, 0.1), 32767, -32768, 0, 1, -1])
    assert to_8k_mono(pcm, 8000, 1) == pcm
    resampler = StreamResampler(8000, 1)
    assert resampler.feed(pcm[:3]) + resampler.feed(pcm[3:]) + resampler.flush() == pcm


def test_partial_frames_wait_for_the_next_feed() -> None:
    resampler = StreamResampler(16000, 2)
    assert resampler.feed(b"\x01") == b""
    assert resampler.feed(b"\x00\x02") == b""
    whole = pcm16(tone(16000, 500, 0.1, 3000))
    expected = to_8k_mono(b"\x01\x00\x02\x00" + whole[4:], 16000, 2)
    assert resampler.feed(b"\x00" + whole[4:]) + resampler.flush() == expected


def test_flush_starts_a_fresh_stream() -> None:
    pcm = pcm16(tone(44100, 700, 0.05))
    resampler = StreamResampler(44100, 1)
    first = resampler.feed(pcm) + resampler.flush()
    second = resampler.feed(pcm) + resampler.flush()
    assert first == second == to_8k_mono(pcm, 44100, 1)


def test_flush_drops_a_partial_frame() -> None:
    resampler = StreamResampler(48000, 1)
    out = resampler.feed(pcm16([1000] * 60) + b"\x07") + resampler.flush()
    assert out == to_8k_mono(pcm16([1000] * 60), 48000, 1)


@pytest.mark.parametrize("rate", [11025, 24000, 96000, 0, -8000])
def test_unsupported_rates_are_refused(rate: int) -> None:
    with pytest.raises(ValueError, match=f"sample rate {rate} Hz is not supported"):
        to_8k_mono(b"", rate, 1)
    with pytest.raises(ValueError, match="8000, 16000, 22050, 32000, 44100, 48000"):
        StreamResampler(rate, 1)


@pytest.mark.parametrize("channels", [0, 3, 6])
def test_unsupported_channel_counts_are_refused(channels: int) -> None:
    with pytest.raises(ValueError, match=f"{channels} channels are not supported"):
        StreamResampler(8000, channels)


def test_whole_shot_refuses_partial_frames() -> None:
    with pytest.raises(ValueError, match="whole frames of 4 bytes; got 6 bytes"):
        to_8k_mono(bytes(6), 16000, 2)
    with pytest.raises(ValueError, match="got 3 bytes"):
        to_8k_mono(bytes(3), 8000, 1)


@given(
    rate=st.sampled_from(SUPPORTED_RATES),
    channels=st.sampled_from([1, 2]),
    frames=st.integers(min_value=0, max_value=700),
    data=st.data(),
)
def test_any_chunking_gives_the_whole_shot_output(
    rate: int, channels: int, frames: int, data: st.DataObject
) -> None:
    length = 2 * channels * frames
    pcm = data.draw(st.binary(min_size=length, max_size=length), label="pcm")
    cuts = data.draw(
        st.lists(st.integers(min_value=0, max_value=length), max_size=12).map(sorted),
        label="cuts",
    )
    resampler = StreamResampler(rate, channels)
    pieces = []
    for start, end in zip([0, *cuts], [*cuts, length], strict=True):
        pieces.append(resampler.feed(pcm[start:end]))
    pieces.append(resampler.flush())
    assert b"".join(pieces) == to_8k_mono(pcm, rate, channels)
