""""Your first broadcast in two minutes" runs as written: service, simulator, two curl calls.

``WALKTHROUGH`` is the README section's text (proposed for README.rst; once it is there this
test should read it from the README instead).  Its commands run in order on the section's
fixed ports (5060, 8080), so the test is skipped when either is taken.  ``./scripts/serve``
installs the package before it execs ``twistd -n gbtalk``; the test runs that twistd command
with the same arguments, as the shared venv is already installed.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gb28181talk.media import wav
from tests.audiocheck import dominant_frequency

WALKTHROUGH = """\
Your first broadcast in two minutes
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~

The package ships a GB28181 device simulator, ``gb28181talk-device``: it registers
with digest, keeps alive, answers the catalog with an audio output channel, and
answers a broadcast with its own INVITE, then writes what it hears to a WAV file.
Start the service with SIP on::

    ./scripts/serve --sip udp:5060 --sip-password 12345678

In a second terminal, start the device; it stays until it heard one call::

    .venv/bin/gb28181talk-device --server 127.0.0.1:5060 --password 12345678 \\
        --expect-audio --exit-after-calls 1

In a third, add a 440 Hz tone of 5 s and broadcast it to the device::

    curl -s -X POST http://127.0.0.1:8080/api/sources -H 'Content-Type: application/json' \\
        -d '{"app": "broadcast", "stream": "tone", "kind": "tone", "frequency": 440, "duration": 5}'
    curl -s -X POST http://127.0.0.1:8080/api/broadcast -H 'Content-Type: application/json' \\
        -d '{"device_ids": ["34020000001320000001"], "app": "broadcast", "stream": "tone"}'

The device prints the stream's figures every 2 s (packets, lost, jitter, SSRC);
when the tone ends the platform hangs up, the device writes
``34020000001320000001-broadcast-1.wav``, unregisters and exits 0.  Listen to it
with ``gst-play-1.0 34020000001320000001-broadcast-1.wav``.  ``--mode tcp-passive``
or ``--mode udp`` offer the other media modes, ``--count 100`` plays a hundred
devices, and ``gb28181talk-device --help`` lists the quirks of real firmware it can
play (no ``y=``, no length prefix, connecting before ACK, ...).
"""

ROOT = Path(__file__).resolve().parent.parent


def commands() -> list[str]:
    """The section's commands, in order: its literal blocks' lines, continuations joined."""
    found: list[str] = []
    pending = ""
    for line in WALKTHROUGH.splitlines():
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
        time.sleep(1.5)  # registered and catalogued (the catalog names its audio output)
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
