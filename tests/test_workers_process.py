"""``--workers 2`` end to end: real worker processes, real loopback devices, a worker killed.

The service runs in this test's reactor (ServiceHarness), so its media workers
are this test's own children.  No timing is asserted: states, reasons, ports
returned, RTP sequence continuity and packet counts.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from gb28181talk.device.voice import DeviceVoice
from gb28181talk.media.framing import Framing
from gb28181talk.media.law import Law
from gb28181talk.media.rtp import RtpPacket
from tests.audiocheck import dominant_frequency
from tests.devices import DeviceClient, connect_device
from tests.httpapi import ServiceHarness, async_test, call, sleep, until
from tests.netutil import free_port, free_port_range
from tests.test_sources import goertzel_ratio
from tests.test_zlm_send_modes import tone_pcm
from tests.wvp import CANDIDATES

TWISTD = Path(sys.executable).with_name("twistd")


def continuous(packets: list[RtpPacket]) -> bool:
    """Every packet's sequence number follows the one before it."""
    return all((later.sequence - earlier.sequence) % 65536 == 1
               for earlier, later in itertools.pairwise(packets))


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has exited: it only waits to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def worker_pids(parent: int) -> dict[int, int]:
    """The live media workers of process ``parent``: slot -> pid, read from /proc."""
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) != parent or b"gb28181talk.workers.child" not in argv:
            continue
        if stat[0] in ("Z", "X"):
            continue
        found[int(argv[argv.index(b"--index") + 1])] = int(entry.name)
    return found


class WorkersEndToEndTests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.harness = ServiceHarness(ports=8, workers=2)
        self.harness.start()
        self.addCleanup(self.harness.stop)
        self.devices: list[DeviceClient] = []

    def tearDown(self) -> None:
        for device in self.devices:
            if device.transport is not None:
                device.transport.abortConnection()

    async def ready(self, count: int = 2) -> list[dict[str, Any]]:
        """Wait until ``count`` workers answered (before that, sessions run in the control)."""
        views: list[dict[str, Any]] = []
        for _ in range(400):
            views = (await self.pool())["workers"]
            if sum(view["ready"] for view in views) >= count:
                return views
            await sleep(0.025)
        raise AssertionError(f"the workers never became ready: {views}")

    async def passive(self, ssrc: int, stream: str = "tone") -> dict[str, Any]:
        reply = await self.harness.zlm("startSendRtpPassive", query={
            "app": "broadcast", "stream": stream, "ssrc": str(ssrc), "use_ps": "0", "pt": "8"})
        assert reply.json["code"] == 0, reply.json
        return reply.json  # type: ignore[no-any-return]

    async def sessions(self) -> list[dict[str, Any]]:
        reply = await call("GET", self.harness.url("/api/sessions"))
        return reply.json["sessions"]  # type: ignore[no-any-return]

    async def pool(self) -> dict[str, Any]:
        return (await call("GET", self.harness.url("/api/pool"))).json  # type: ignore[no-any-return]

    async def device(self, port: int) -> DeviceClient:
        device = await connect_device(port)
        self.devices.append(device)
        return device

    @async_test
    async def test_sessions_on_two_workers_play_the_tone_to_real_devices(self) -> None:
        assert (await self.harness.add_tone()).json["code"] == 0
        await self.ready()
        first = await self.passive(1)
        native = await call("POST", self.harness.url("/api/sessions"),
                            json_body={"app": "broadcast", "stream": "tone", "ssrc": 2})
        assert native.json["code"] == 0, native.json
        ports = [first["local_port"], native.json["session"]["local_port"]]
        listed = await self.sessions()
        assert sorted(view["worker"] for view in listed) == [0, 1]  # least loaded: one each
        assert all(view["state"] == "listening" for view in listed)
        devices = [await self.device(port) for port in ports]
        for device in devices:
            await until(lambda device=device: len(device.packets()) >= 60, timeout=10)
            packets = device.packets()
            assert continuous(packets)
            assert {packet.payload_type for packet in packets} == {8}
            assert goertzel_ratio(device.audio(Law.ALAW)[:16000], 440) > 0.9
        listed = await self.sessions()
        assert [view["state"] for view in listed] == ["streaming", "streaming"]
        pool = await self.pool()
        assert pool["leased"] == 0 and pool["free"] == 8  # both ports back at the connects
        # The ZLMediaKit view is one service: both sessions, one answer.
        streams = await self.harness.zlm("getMediaList")
        assert streams.json["code"] == 0

    @async_test
    async def test_a_killed_worker_ends_its_sessions_only_and_is_restarted(self) -> None:
        assert (await self.harness.add_tone()).json["code"] == 0
        await self.ready()
        started = [await self.passive(ssrc) for ssrc in (11, 12, 13, 14)]
        by_port = {view["local_port"]: view for view in await self.sessions()}
        devices = {start["local_port"]: await self.device(start["local_port"])
                   for start in started}
        waiting = await self.passive(15)  # a listening session: its port must return too
        views = {view["id"]: view for view in await self.sessions()}
        doomed = [view for view in views.values() if view["worker"] == 0]
        assert len(doomed) == 3 and len(views) == 5, views  # 11, 13, 15 on worker 0
        for device in devices.values():
            await until(lambda device=device: len(device.packets()) >= 20, timeout=10)
        pids = worker_pids(os.getpid())
        assert sorted(pids) == [0, 1], pids
        survivors = [devices[port] for port, view in by_port.items() if view["worker"] == 1]
        assert len(survivors) == 2
        heard_before = [len(device.packets()) for device in survivors]

        os.kill(pids[0], signal.SIGKILL)

        await until(lambda: all(devices[port].closed.called for port, view in by_port.items()
                                if view["worker"] == 0), timeout=10)
        listed = await self.sessions()
        assert sorted(view["id"] for view in listed) == sorted(
            view["id"] for view in views.values() if view["worker"] == 1)
        pool = await self.pool()
        assert pool["leased"] == 0 and pool["free"] == 8, pool  # the listening one's port too
        # A new worker 0 comes up and takes the new sessions (it is the least loaded).
        await until(lambda: 0 in worker_pids(os.getpid())
                    and worker_pids(os.getpid())[0] != pids[0], timeout=10)
        workers = await self.ready()
        assert [view["sessions"] for view in workers] == [0, 2], workers
        assert worker_pids(os.getpid())[1] == pids[1]
        fresh = await self.passive(21)
        fresh_device = await self.device(fresh["local_port"])
        await until(lambda: len(fresh_device.packets()) >= 20, timeout=10)
        assert continuous(fresh_device.packets())
        assert [view["worker"] for view in await self.sessions()
                if view["local_port"] == fresh["local_port"]] == [0]
        # The other worker's devices never noticed: one continuous sequence, still growing.
        for device, before in zip(survivors, heard_before, strict=True):
            await until(lambda device=device, before=before: len(device.packets()) >= before + 50,
                        timeout=10)
            assert continuous(device.packets())
            assert not device.closed.called
        assert waiting["local_port"] not in devices

    @async_test
    async def test_two_way_the_voice_heard_on_one_worker_is_played_on_the_other(self) -> None:
        assert (await self.harness.add_tone()).json["code"] == 0
        await self.ready()
        talk = await self.harness.zlm("startSendRtpPassive", query={
            "app": "broadcast", "stream": "tone", "ssrc": "41", "use_ps": "0", "pt": "8",
            "recv_stream_id": "voice"})
        assert talk.json["code"] == 0, talk.json
        speaker = await self.device(talk.json["local_port"])
        assert self.harness.service.registry.find("broadcast", "voice") is not None
        hears = await self.passive(42, stream="voice")
        listener = await self.device(hears["local_port"])
        assert sorted(view["worker"] for view in await self.sessions()) == [0, 1]
        voice = DeviceVoice(0x5151, framing=Framing.RFC4571)
        speaker.send(voice.speak(tone_pcm(700, 1.5)))
        await until(lambda: listener.media.audio_seconds >= 1.0, timeout=10)
        assert dominant_frequency(listener.audio(), CANDIDATES) == 700
        assert continuous(listener.packets())
        assert goertzel_ratio(speaker.audio(Law.ALAW)[:8000], 440) > 0.9  # it hears the tone

        async def received() -> int:
            views = {view["local_port"]: view for view in await self.sessions()}
            return views[talk.json["local_port"]]["stats"]["packets_received"]  # type: ignore[no-any-return]

        for _ in range(200):
            if await received() >= 75:  # the worker's figures reach the control
                break
            await sleep(0.05)
        assert await received() >= 75

    @async_test
    async def test_worker_lost_is_the_reason_hooks_and_observers_hear(self) -> None:
        assert (await self.harness.add_tone()).json["code"] == 0
        await self.ready()
        heard: list[tuple[str, str]] = []

        from zope.interface import implementer

        from gb28181talk.interfaces import ISessionObserver

        @implementer(ISessionObserver)
        class Ends:
            def session_started(self, session: Any) -> None: ...
            def session_connected(self, session: Any, peer: Any) -> None: ...
            def device_refused(self, session: Any, peer: Any, why: str) -> None: ...
            def session_ended(self, session: Any, reason: str, stats: Any) -> None:
                heard.append((session.id, str(reason)))

        self.harness.service.manager.add_observer(Ends())
        started = await self.passive(31)
        pids = worker_pids(os.getpid())
        [view] = await self.sessions()
        os.kill(pids[view["worker"]], signal.SIGKILL)
        await until(lambda: heard, timeout=10)
        assert heard == [(view["id"], "worker-lost")]
        del started


class WorkersProcessTests(unittest.TestCase):
    """``twistd -n gbtalk --workers 2`` as a real process: no worker outlives it."""

    timeout = 40

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="gbtalk-workers-"))
        self.process: subprocess.Popen[bytes] | None = None

    def tearDown(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def spawn(self) -> str:
        api_port = free_port()
        low, high = free_port_range(4)
        with open(self.directory / "twistd.out", "wb") as log:
            self.process = subprocess.Popen(
                [str(TWISTD), "-n", "gbtalk", "--api", f"tcp:{api_port}:interface=127.0.0.1",
                 "--port-range", f"{low}-{high}", "--media-interface", "127.0.0.1",
                 "--workers", "2"],
                cwd=self.directory, stdout=log, stderr=subprocess.STDOUT, env=os.environ)
        return f"http://127.0.0.1:{api_port}"

    def log(self) -> str:
        return (self.directory / "twistd.out").read_text(errors="replace")

    async def healthy(self, base: str) -> dict[int, int]:
        assert self.process is not None
        for _ in range(400):
            assert self.process.poll() is None, self.log()
            pids = worker_pids(self.process.pid)
            try:
                reply = await call("GET", base + "/api/health")
            except Exception:
                reply = None
            if reply is not None and reply.status == 200 and len(pids) == 2:
                return pids
            await sleep(0.05)
        raise AssertionError("the service never came up:\n" + self.log())

    @async_test
    async def test_sigkill_of_the_control_leaves_no_worker(self) -> None:
        pids = await self.healthy(self.spawn())
        assert self.process is not None
        self.process.kill()  # SIGKILL: the control cannot clean up; the workers must notice
        self.process.wait(10)
        await until(lambda: not any(alive(pid) for pid in pids.values()), timeout=15)

    @async_test
    async def test_sigterm_stops_the_workers_and_exits_0(self) -> None:
        base = self.spawn()
        pids = await self.healthy(base)
        tone = await call("POST", base + "/api/sources", json_body={
            "app": "broadcast", "stream": "tone", "kind": "tone", "frequency": 440})
        assert tone.json["code"] == 0
        started = await call("GET", base + "/index/api/startSendRtpPassive", query={
            "app": "broadcast", "stream": "tone", "ssrc": "1", "use_ps": "0", "pt": "8"})
        assert started.json["code"] == 0, started.json
        device = await connect_device(started.json["local_port"])
        await until(lambda: len(device.packets()) >= 10, timeout=10)
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        await until(lambda: self.process.poll() is not None, timeout=15)
        log = self.log()
        assert self.process.returncode == 0, log
        assert "ended: shutdown" in log, log
        assert "Traceback" not in log, log
        assert not any(alive(pid) for pid in pids.values())
        await device.closed


def test_bad_workers_values_exit_2() -> None:
    for bad in ("0", "-1", "two", "100000"):
        done = subprocess.run([str(TWISTD), "-n", "gbtalk", "--workers", bad],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 2, (bad, done)
        assert "--workers" in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr

