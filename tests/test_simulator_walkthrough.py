""""Your first broadcast in two minutes" runs as written: service, simulator, two curl calls.

The commands are read from README.rst's section of that name and run in order on the section's
fixed ports (5060, 8080), so the test is skipped when either is taken.  ``./scripts/serve``
installs the package before it execs ``twistd -n gbtalk``; the test runs that twistd command
with the same arguments, as the shared venv is already installed.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gb28181talk.media import wav
from tests.audiocheck import dominant_frequency

README = Path(__file__).resolve().parent.parent / "README.rst"
TITLE = "Your first broadcast in two minutes"


def walkthrough() -> str:
    """The README section's text, from its title to the next section's title."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index(TITLE)
    end = next(
        (i - 1 for i in range(start + 2, len(lines))
         if i > 0 and lines[i] and set(lines[i]) <= set("~-=^") and lines[i - 1]
         and len(lines[i]) >= len(lines[i - 1])),
        len(lines),
    )
    return "\n".join(lines[start:end])

ROOT = Path(__file__).resolve().parent.parent


def commands() -> list[str]:
    """The section's commands, in order: its literal blocks' lines, continuations joined."""
    found: list[str] = []
    pending = ""
    for line in walkthrough().splitlines():
        if not line.startswith("    "):
            continue
        text = pending + line.strip()
        if text.endswith("\\"):
            pending = text[:-1]
            continue
        found.append(text)
        pending = ""
    return found


def _taken(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _argv(command: str) -> list[str]:
    argv = shlex.split(command)
    if argv[0] == "./scripts/serve":
        return [str(Path(sys.executable).with_name("twistd")), "-n", "gbtalk", *argv[1:]]
    if argv[0].startswith(".venv/bin/"):
        return [str(Path(sys.executable).with_name(Path(argv[0]).name)), *argv[1:]]
    return argv


def wait_for_audio_channel(simulator: subprocess.Popen[bytes], seconds: float = 60.0) -> None:
    """Wait until the device is registered with its audio output channel (GET /api/devices)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and simulator.poll() is None:
        try:
            with urllib.request.urlopen("http://127.0.0.1:8080/api/devices", timeout=5) as reply:
                devices = json.load(reply)["devices"]
        except OSError:
            devices = []
        if any(channel.get("audio_output") for device in devices if device.get("online")
               for channel in device.get("channels", [])):
            return
        time.sleep(0.1)
    raise AssertionError("the device never registered with an audio output channel")


def test_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    if _taken(8080, socket.SOCK_STREAM) or _taken(5060, socket.SOCK_DGRAM):
        pytest.skip("port 8080 or 5060 is taken on this machine")
    serve, device, source, broadcast = commands()
    started: list[subprocess.Popen[bytes]] = []
    try:
        log = open(tmp_path / "service.out", "wb")  # noqa: SIM115
        started.append(subprocess.Popen(_argv(serve), cwd=tmp_path, stdout=log,
                                        stderr=subprocess.STDOUT, env=os.environ))
        for _ in range(200):
            if _taken(8080, socket.SOCK_STREAM):
                break
            time.sleep(0.05)
        simulator = subprocess.Popen(_argv(device), cwd=tmp_path, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=os.environ)
        started.append(simulator)
        wait_for_audio_channel(simulator)  # what a person sees before the third terminal
        for command in (source, broadcast):
            done = subprocess.run(_argv(command), capture_output=True, text=True, timeout=30)
            assert done.returncode == 0 and '"code": 0' in done.stdout, done.stdout
        out, _ = simulator.communicate(timeout=30)
        text = out.decode()
        assert simulator.returncode == 0, text + (tmp_path / "service.out").read_text()
        assert "registered" in text and "0 lost" in text and "unregistered" in text, text
        pcm = wav.load_8k_mono(str(tmp_path / "34020000001320000001-broadcast-1.wav"))
        assert len(pcm) >= 2 * 8000 * 4
        assert dominant_frequency(pcm, range(200, 2000, 20)) == 440
    finally:
        for process in started:
            if process.poll() is None:
                process.terminate()
                process.wait(10)
