"""`twistd -n gbtalk` as a real process, started as README.rst says, driven end to end, stopped."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial import unittest

from gb28181talk.media.law import Law
from tests.devices import connect_device
from tests.httpapi import HookReceiver, async_test, call, sleep, until
from tests.netutil import free_port, free_port_range
from tests.test_sources import goertzel_ratio

TWISTD = Path(sys.executable).with_name("twistd")


class ServiceProcessTests(unittest.TestCase):
    timeout = 40

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="gbtalk-run-"))
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.directory / "twistd.out"

    def tearDown(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def spawn(self, *args: str) -> None:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(  # the README's command, with free ports
                [str(TWISTD), "-n", "gbtalk", *args],
                cwd=self.directory, stdout=log, stderr=subprocess.STDOUT, env=os.environ,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_healthy(self, base: str) -> None:
        for _ in range(200):
            assert self.process is not None and self.process.poll() is None, self.log()
            try:
                reply = await call("GET", base + "/api/health")
            except Exception:
                await sleep(0.05)
                continue
            assert reply.status == 200
            return
        raise AssertionError("the service never answered /api/health:\n" + self.log())

    @async_test
    async def test_start_drive_and_sigterm_ends_every_session_with_shutdown(self) -> None:
        receiver = HookReceiver()
        hook_url = receiver.start()
        self.addCleanup(receiver.stop)
        api_port = free_port()
        low, high = free_port_range(3)
        self.spawn("--api", f"tcp:{api_port}:interface=127.0.0.1", "--port-range",
                   f"{low}-{high}", "--media-interface", "127.0.0.1", "--hook-url", hook_url)
        base = f"http://127.0.0.1:{api_port}"
        await self.wait_healthy(base)

        tone = await call("POST", base + "/api/sources",
                          json_body={"app": "broadcast", "stream": "tone", "kind": "tone",
                                     "frequency": 440})
        assert tone.json["code"] == 0, tone.json
        started = await call("GET", base + "/index/api/startSendRtpPassive", query={
            "app": "broadcast", "stream": "tone", "ssrc": "0100000001", "use_ps": "0",
            "pt": "8"})
        assert started.json["code"] == 0, started.json
        port = started.json["local_port"]
        assert low <= port <= high
        device = await connect_device(port)
        await until(lambda: len(device.received) > 9000, timeout=5)
        assert goertzel_ratio(device.audio(Law.ALAW)[:16000], 440) > 0.9
        waiting = await call("POST", base + "/api/sessions",
                             json_body={"app": "broadcast", "stream": "tone", "ssrc": 2})
        assert waiting.json["session"]["state"] == "listening"
        sessions = await call("GET", base + "/api/sessions")
        assert sorted(s["state"] for s in sessions.json["sessions"]) == ["listening",
                                                                         "streaming"]

        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        await until(lambda: self.process.poll() is not None, timeout=10)
        log = self.log()
        assert self.process.returncode == 0, log
        assert "open-file limit" in log
        assert "heap frozen after start-up" in log, log
        assert log.count("ended: shutdown") == 2, log
        assert "Traceback" not in log, log
        await device.closed
        assert sorted(body["reason"] for body in receiver.bodies) == ["shutdown", "shutdown"]

    @async_test
    async def test_an_api_port_in_use_is_one_log_line_and_exit_1(self) -> None:
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        taken = holder.getsockname()[1]
        self.spawn("--api", f"tcp:{taken}:interface=127.0.0.1")
        await until(lambda: self.process is not None and self.process.poll() is not None,
                    timeout=15)
        log = self.log()
        assert self.process is not None and self.process.returncode == 1, log
        assert f"cannot start the HTTP API on tcp:{taken}" in log
        assert "Traceback" not in log, log

