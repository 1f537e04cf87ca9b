"""The README's library one-liners run as written: WAV -> RFC 4571 framed RTP -> parsed back."""

from __future__ import annotations

import math
import shlex
import subprocess
import sys
from array import array
from pathlib import Path

from gb28181talk.media.wav import write_wav

README = Path(__file__).resolve().parent.parent / "README.rst"


def readme_oneliners() -> list[str]:
    """The ``python -c`` commands of README.rst, in order."""
    return [
        line.strip()
        for line in README.read_text(encoding="utf-8").splitlines()
        if line.strip().startswith('python -c "')
    ]


def test_packetize_a_wav_and_parse_it_back(tmp_path: Path) -> None:
    commands = readme_oneliners()
    assert len(commands) == 2, "README.rst shows the packetize and parse-back one-liners"
    tone = array("h", [0] * 32000)  # 1 s of 440 Hz at 16 kHz, stereo: resampled on the way
    for i in range(16000):
        tone[2 * i] = tone[2 * i + 1] = int(8000 * math.sin(2 * math.pi * 440 * i / 16000))
    write_wav(tmp_path / "in.wav", tone.tobytes(), sample_rate=16000, channels=2)
    outputs = []
    for command in commands:
        argv = shlex.split(command)
        argv[0] = sys.executable
        result = subprocess.run(
            argv, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout.strip())
    assert (tmp_path / "out.rtp").stat().st_size == 50 * (2 + 12 + 160)
    assert outputs[1] == "50 packets, 1.0 s, ssrc 100000123"
