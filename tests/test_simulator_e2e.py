"""End to end on loopback: ``twistd gbtalk --sip`` and ``gb28181talk-device`` as two processes.

The simulator registers (digest), ``POST /api/broadcast`` sends it the tone, and the WAV it
writes carries the tone (dominant frequency); the same over SIP/TCP and for every media mode
the device can offer (TCP active, TCP passive, UDP).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from gb28181talk.media import wav
from tests.audiocheck import dominant_frequency
from tests.httpapi import async_test, call, sleep, until
from tests.netutil import free_port, free_port_range

TWISTD = Path(sys.executable).with_name("twistd")
DEVICE = Path(sys.executable).with_name("gb28181talk-device")
DEVICE_ID = "34020000001320000001"
TONE_HZ = 800


class SimulatorEndToEndTests(unittest.TestCase):
    """The service and the simulator as the README's walkthrough runs them, with free ports."""

    timeout = 60

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="gbtalk-sim-"))
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.processes: list[subprocess.Popen[bytes]] = []

    def tearDown(self) -> None:
        for name in ("service", "device"):  # shown by pytest when the test failed
            if (self.directory / f"{name}.out").exists():
                print(f"---- {name}\n{self.log(name)[-4000:]}")
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with open(self.directory / f"{name}.out", "wb") as log:
            process = subprocess.Popen(argv, cwd=self.directory, stdout=log,
                                       stderr=subprocess.STDOUT, env=os.environ)
        self.processes.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.directory / f"{name}.out").read_text(errors="replace")

    async def _serve(self, sip: str, *extra: str, ports: int = 4) -> tuple[str, int]:
        api, sip_port = free_port(), free_port()
        low, high = free_port_range(ports)
        self.spawn("service", [
            str(TWISTD), "-n", "gbtalk", "--api", f"tcp:{api}:interface=127.0.0.1",
            "--port-range", f"{low}-{high}", "--sip", f"{sip}:{sip_port}:interface=127.0.0.1",
            "--sip-password", "12345678", "--sip-advertise", "127.0.0.1",
            "--advertise-ip", "127.0.0.1", *extra,
        ])
        base = f"http://127.0.0.1:{api}"
        for _ in range(200):
            assert self.processes[-1].poll() is None, self.log("service")
            try:
                reply = await call("GET", base + "/api/health")
            except Exception:
                await sleep(0.05)
                continue
            if reply.status == 200:
                return base, sip_port
        raise AssertionError("the service never answered:\n" + self.log("service"))

    async def _device(self, base: str, sip_port: int, sip: str, *args: str) -> Any:
        device = self.spawn("device", [
            str(DEVICE), "--server", f"127.0.0.1:{sip_port}", "--sip", sip,
            "--local-ip", "127.0.0.1", "--wav-dir", str(self.directory), "--expect-audio",
            "--exit-after-calls", "1", "--duration", "40", *args,
        ])

        async def online() -> bool:
            reply = await call("GET", base + "/api/devices")
            devices = reply.json.get("devices", [])
            return any(d["online"] and any(c["audio_output"] for c in d["channels"])
                       for d in devices)

        for _ in range(200):
            if await online():
                break
            await sleep(0.05)
        else:
            raise AssertionError("the device never registered:\n" + self.log("device"))
        return device

    async def _broadcast(self, sip: str, mode: str, *args: str, audio: bool = True,
                         seconds: float = 2) -> Any:
        base, sip_port = await self._serve(sip)
        device = await self._device(base, sip_port, sip, "--mode", mode, *args)
        tone = await call("POST", base + "/api/sources", json_body={
            "app": "broadcast", "stream": "tone", "kind": "tone", "frequency": TONE_HZ,
            "duration": seconds})
        assert tone.json["code"] == 0, tone.json
        started = await call("POST", base + "/api/broadcast", json_body={
            "device_ids": [DEVICE_ID], "app": "broadcast", "stream": "tone"})
        assert started.json["code"] == 0, (started.json, self.log("service"))
        await until(lambda: device.poll() is not None, timeout=30)
        out = self.log("device")
        if not audio:
            assert device.returncode == 1, out + self.log("service")
            return started.json
        assert device.returncode == 0, out + self.log("service")
        path = self.directory / f"{DEVICE_ID}-broadcast-1.wav"
        pcm = wav.load_8k_mono(str(path))
        assert len(pcm) > 8000, out
        assert dominant_frequency(pcm, range(200, 2000, 100)) == TONE_HZ, out
        assert "0 lost" in out, out
        return started.json

    @async_test
    async def test_udp_sip_tcp_active_device_hears_the_tone(self) -> None:
        await self._broadcast("udp", "tcp-active")

    @async_test
    async def test_tcp_sip_tcp_passive_device_hears_the_tone(self) -> None:
        await self._broadcast("tcp", "tcp-passive")

    @async_test
    async def test_udp_media_device_hears_the_tone(self) -> None:
        await self._broadcast("udp", "udp")

    @async_test
    async def test_quirky_devices_still_hear_the_tone(self) -> None:
        for args in (["--connect-before-ack"], ["--no-ssrc"], ["--retransmit-invite"],
                     ["--codec", "pcmu"], ["--codec", "ps"], ["--rtcp"]):
            for process in self.processes:
                if process.poll() is None:
                    process.kill()
                    process.wait(10)
            result = await self._broadcast("udp", "tcp-active", *args)
            assert [r["result"] for r in result["results"]] == ["OK"], (args, result)

    @async_test
    async def test_a_device_that_never_connects_is_hung_up_and_exits_1(self) -> None:
        result = await self._broadcast("udp", "tcp-active", "--never-connect", audio=False)
        assert [r["result"] for r in result["results"]] == ["OK"], result
        assert "ended (bye)" in self.log("device"), self.log("device")
        assert "no audio heard by 1 of 1 devices" in self.log("device")

    @async_test
    async def test_an_invented_nonce_never_registers(self) -> None:
        base, sip_port = await self._serve("udp")
        device = self.spawn("device", [
            str(DEVICE), "--server", f"127.0.0.1:{sip_port}", "--local-ip", "127.0.0.1",
            "--invent-nonce", "--duration", "2",
        ])
        await until(lambda: device.poll() is not None, timeout=20)
        assert device.returncode == 1
        out = self.log("device")
        assert "registration refused: 401 Unauthorized" in out, out
        assert "a nonce this server did not issue" in self.log("service")
        devices = await call("GET", base + "/api/devices")
        assert devices.json["devices"] == []

    @async_test
    async def test_talk_both_ways(self) -> None:
        await self._talk()

    @async_test
    async def test_talk_with_a_quirky_device_voice_is_still_recorded(self) -> None:
        for quirk in ("--wrong-ssrc", "--no-prefix", "--ps-voice"):
            for process in self.processes:
                if process.poll() is None:
                    process.kill()
                    process.wait(10)
            await self._talk(quirk, name=quirk.strip("-"))

    async def _heard_both_ways(self, base: str, packets: int = 75) -> None:
        """Wait until the talk session has sent and received 1.5 s of audio (its own figures)."""
        for _ in range(1200):
            listing = await call("GET", base + "/api/sessions")
            for session in listing.json.get("sessions", []):
                stats = session["stats"]
                if stats["packets_received"] >= packets and stats["packets_sent"] >= packets:
                    return
            await sleep(0.05)
        raise AssertionError(f"the talk never carried {packets} packets each way\n"
                             + self.log("service") + self.log("device"))

    async def _talk(self, *quirks: str, name: str = "records") -> None:
        record = self.directory / name
        record.mkdir()
        base, sip_port = await self._serve("udp", "--record-dir", str(record))
        for old in self.directory.glob("*-talk-1.wav"):
            old.unlink()
        device = await self._device(base, sip_port, "udp", "--tone", "1400", *quirks)
        tone = await call("POST", base + "/api/sources", json_body={
            "app": "broadcast", "stream": "tone", "kind": "tone", "frequency": TONE_HZ})
        assert tone.json["code"] == 0, tone.json
        talk = await call("POST", base + "/api/talk", json_body={
            "device_id": DEVICE_ID, "app": "broadcast", "stream": "tone"})
        assert talk.json["code"] == 0 and talk.json["result"] == "OK", (
            talk.json, self.log("service"), self.log("device"))
        await self._heard_both_ways(base)
        stopped = await call("POST", base + "/api/talk/stop", json_body={"device_id": DEVICE_ID})
        assert stopped.json["code"] == 0, stopped.json
        await until(lambda: device.poll() is not None, timeout=20)
        out = self.log("device")
        assert device.returncode == 0, out + self.log("service")
        heard = wav.load_8k_mono(str(self.directory / f"{DEVICE_ID}-talk-1.wav"))
        assert dominant_frequency(heard, range(200, 2000, 100)) == TONE_HZ, out
        await until(lambda: list(record.rglob("*.wav")), timeout=10)
        recorded = wav.load_8k_mono(str(sorted(record.rglob("*.wav"))[0]))
        assert len(recorded) > 8000
        assert dominant_frequency(recorded, range(200, 2000, 100)) == 1400, out

    @async_test
    async def test_count_200_devices_register_and_all_hear_one_broadcast(self) -> None:
        """Issue 10: ``--count 200`` registers 200 devices, and one broadcast reaches them all."""
        count = 200
        base, sip_port = await self._serve("udp", ports=count + 4)
        ids = [DEVICE_ID[:-6] + f"{n:06d}" for n in range(1, count + 1)]
        device = self.spawn("device", [
            str(DEVICE), "--server", f"127.0.0.1:{sip_port}", "--local-ip", "127.0.0.1",
            "--wav-dir", str(self.directory), "--expect-audio", "--exit-after-calls", "1",
            "--duration", "90", "--count", str(count), "--report-seconds", "0",
        ])

        async def registered() -> int:
            reply = await call("GET", base + "/api/devices")
            return sum(1 for d in reply.json["devices"]
                       if d["online"] and any(c["audio_output"] for c in d["channels"]))

        for _ in range(1200):  # a minute at most on a loaded machine
            if await registered() == count:
                break
            await sleep(0.05)
        assert await registered() == count, self.log("device")
        tone = await call("POST", base + "/api/sources", json_body={
            "app": "broadcast", "stream": "tone", "kind": "tone", "frequency": TONE_HZ,
            "duration": 2})
        assert tone.json["code"] == 0, tone.json
        started = await call("POST", base + "/api/broadcast", json_body={
            "device_ids": ids, "app": "broadcast", "stream": "tone"})
        errors = [r for r in started.json["results"] if r["result"] != "OK"]
        assert not errors, f"{errors}\n{self.log('device')[-3000:]}"
        await until(lambda: device.poll() is not None, timeout=60)
        assert device.returncode == 0, self.log("device")
        for device_id in ids:
            pcm = wav.load_8k_mono(str(self.directory / f"{device_id}-broadcast-1.wav"))
            assert dominant_frequency(pcm, range(200, 2000, 100)) == TONE_HZ

    @async_test
    async def test_no_broadcast_response_is_reported_as_none_and_the_call_goes_on(self) -> None:
        result = await self._broadcast("udp", "tcp-active", "--no-broadcast-response")
        assert [(r["result"], r["response"]) for r in result["results"]] == [("OK", None)]

    @async_test
    async def test_a_slow_reader_hears_less_than_was_sent_and_is_still_hung_up(self) -> None:
        result = await self._broadcast("udp", "tcp-passive", "--slow-read", seconds=5)
        assert [r["result"] for r in result["results"]] == ["OK"], result
        service, device = self.log("service"), self.log("device")
        sent = int(re.search(r"ended: source-ended.*?; sent (\d+) packets", service).group(1))
        heard = int(re.findall(r"broadcast 1: (\d+) packets", device)[-1])  # the end figures
        assert 0 < heard < sent, (heard, sent)
        assert "ended (bye)" in device
