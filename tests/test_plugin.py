"""The installed package exposes `twistd gbtalk` (plugin discovery works after pip install)."""

import subprocess
import sys
from pathlib import Path

TWISTD = Path(sys.executable).with_name("twistd")


def run_twistd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TWISTD), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_twistd_lists_gbtalk() -> None:
    result = run_twistd("--help")
    assert result.returncode == 0, result.stderr
    assert "gbtalk" in result.stdout


def test_gbtalk_help_prints_options() -> None:
    result = run_twistd("-n", "gbtalk", "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: twistd [options] gbtalk" in result.stdout
