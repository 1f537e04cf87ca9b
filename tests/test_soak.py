"""A short soak: every fault of tests/test_faults.py, mixed at random and overlapping, under load.

For :data:`SOAK_SECONDS` (20 s; ``GBTALK_SOAK_SECONDS`` lengthens it) up to
:data:`IN_FLIGHT` faults run at once beside the healthy sessions, each one
drawn from a seeded RNG (``GBTALK_SOAK_SEED`` replays a run).  Each fault
checks its own session's ending reason; at the end the healthy sessions must
still stream and their devices must have heard every packet in order
(sequence numbers one apart, timestamps one packet apart), every session
started must have ended exactly once, and nothing may be left once the
service stops.  Nothing here bounds a gap or a jitter in wall-clock time: a
loaded machine would fail that by chance.  The long soak against the real
service in its own process, ``benchmarks/soak.py``, measures and reports the
healthy sessions' gaps, jitter and loss.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.trial import unittest

from gb28181talk.core.params import SessionKey, SessionParams, SessionState
from gb28181talk.web import codes
from tests import test_faults as faults
from tests.httpapi import sleep, until

SOAK_SECONDS = float(os.environ.get("GBTALK_SOAK_SECONDS", "20"))
IN_FLIGHT = 6
SEED = int(os.environ.get("GBTALK_SOAK_SEED", str(random.randrange(2**32))))


class Soak:
    """The fault kinds, each an async function of one fresh SSRC returning its ending reason."""

    def __init__(self, harness: faults.FaultHarness, rng: random.Random) -> None:
        self.h = harness
        self.rng = rng
        self.sockets: list[Any] = []
        self.outcomes: Counter[str] = Counter()

    def kinds(self) -> dict[str, Callable[[int], Awaitable[str | None]]]:
        return {
            "never-connects": self.never_connects,
            "device-resets": self.device_resets,
            "device-hangs-up": self.device_hangs_up,
            "one-way-garbage": self.one_way_garbage,
            "two-way-garbage": self.two_way_garbage,
            "oversized-frame": self.oversized_frame,
            "wrong-ssrc": self.wrong_ssrc,
            "connects-twice": self.connects_twice,
            "connects-after-stop": self.connects_after_stop,
            "stopped-mid-stream": self.stopped_mid_stream,
            "same-key-twice": self.same_key_twice,
            "malformed-call": self.malformed_call,
            "stops-reading": self.stops_reading,
        }

    def device(self, port: int, **options: Any) -> Any:
        sock = faults.raw_device(port, **options)
        self.sockets.append(sock)
        return sock

    async def started(self, ssrc: int, **args: Any) -> tuple[int, Any]:
        reply = await self.h.zlm_start(ssrc, **args)
        assert reply.json["code"] == 0, reply.json
        return reply.json["local_port"], self.h.session_for(ssrc)

    async def streaming(self, ssrc: int, **args: Any) -> tuple[Any, Any]:
        port, session = await self.started(ssrc, **args)
        sock = self.device(port)
        await until(lambda: faults.readable(sock))
        return sock, session

    async def never_connects(self, ssrc: int) -> str | None:
        _port, session = await self.started(ssrc, close_delay_ms=self.rng.choice([50, 150, 400]))
        return await self.h.ended(session)

    async def device_resets(self, ssrc: int) -> str | None:
        sock, session = await self.streaming(ssrc)
        await sleep(self.rng.uniform(0, 0.3))
        faults.reset(sock)
        return await self.h.ended(session)

    async def device_hangs_up(self, ssrc: int) -> str | None:
        sock, session = await self.streaming(ssrc)
        await sleep(self.rng.uniform(0, 0.3))
        sock.close()
        return await self.h.ended(session)

    async def one_way_garbage(self, ssrc: int) -> str | None:
        sock, session = await self.streaming(ssrc)
        sock.send(os.urandom(self.rng.randrange(1, 2048)))
        await sleep(0.1)
        assert session.state is SessionState.STREAMING
        sock.close()
        return await self.h.ended(session)

    async def two_way_garbage(self, ssrc: int) -> str | None:
        sock, session = await self.streaming(ssrc, recv_stream_id=f"voice{ssrc}")
        # Random bytes could be a valid length prefix announcing more bytes to come (the
        # session rightly waits for them); a third byte that is no RTP v2 byte is garbage.
        sock.send(b"\x00\x07\x00" + os.urandom(self.rng.randrange(16, 512)))
        return await self.h.ended(session)

    async def oversized_frame(self, ssrc: int) -> str | None:
        sock, session = await self.streaming(ssrc, recv_stream_id=f"voice{ssrc}")
        sock.send(faults.rtp(0, ssrc) + b"\xff\xf0" + b"\x80" * 100)
        return await self.h.ended(session)

    async def wrong_ssrc(self, ssrc: int) -> str | None:
        reply = await self.h.native_start(ssrc=ssrc, two_way=True, ssrc_policy="strict",
                                          max_ssrc_violations=2)
        sock = self.device(reply.json["local_port"])
        session = self.h.session_for(ssrc)
        sock.send(faults.rtp(0, ssrc) + faults.rtp(1, ssrc + 1) + faults.rtp(2, ssrc + 2))
        return await self.h.ended(session)

    async def connects_twice(self, ssrc: int) -> str | None:
        sock, session = await self.streaming(ssrc)
        with contextlib.suppress(ConnectionRefusedError):
            self.device(session.port)
        await sleep(0.1)
        assert session.state is SessionState.STREAMING
        sock.close()
        return await self.h.ended(session)

    async def connects_after_stop(self, ssrc: int) -> str | None:
        port, session = await self.started(ssrc)
        assert (await self.h.zlm_stop(ssrc)).json["code"] == 0
        await sleep(0.05)
        try:
            self.device(port)
        except ConnectionRefusedError:
            pass
        else:
            raise AssertionError(f"port {port} accepted a device after stopSendRtp")
        return await self.h.ended(session)

    async def stopped_mid_stream(self, ssrc: int) -> str | None:
        sock, session = await self.streaming(ssrc)
        await sleep(self.rng.uniform(0, 0.3))
        assert (await self.h.zlm_stop(ssrc)).json["code"] == 0
        await until(lambda: faults.closed_by_service(sock))
        return await self.h.ended(session)

    async def same_key_twice(self, ssrc: int) -> str | None:
        port, session = await self.started(ssrc)
        again, _ = await self.started(ssrc)
        assert again == port
        assert (await self.h.zlm_stop(ssrc)).json["code"] == 0
        return await self.h.ended(session)

    async def malformed_call(self, ssrc: int) -> str | None:
        query = self.rng.choice([
            {"app": faults.APP, "stream": faults.STREAM},
            {"app": faults.APP, "stream": faults.STREAM, "ssrc": "x"},
            {"app": faults.APP, "stream": faults.STREAM, "ssrc": str(ssrc), "pt": "300"},
            {"app": "", "stream": faults.STREAM, "ssrc": str(ssrc)},
        ])
        reply = await self.h.harness.zlm("startSendRtpPassive", query=query)
        assert reply.json["code"] == codes.INVALID_ARGS
        return None

    async def stops_reading(self, ssrc: int) -> str | None:
        source = self.h.service.registry.find(faults.APP, faults.STREAM)
        session = self.h.manager.start(
            SessionParams(key=SessionKey("__defaultVhost__", faults.APP, faults.STREAM, ssrc),
                          packet_ms=100, max_send_buffer=4096, stall_timeout=0.3,
                          preroll_ms=0),
            source,
        )
        self.device(session.port, rcvbuf=2048)
        return await self.h.ended(session, timeout=20)


EXPECTED = {
    "never-connects": "timeout",
    "device-resets": "device-closed",
    "device-hangs-up": "device-closed",
    "one-way-garbage": "device-closed",
    "two-way-garbage": "error",
    "oversized-frame": "error",
    "wrong-ssrc": "ssrc-violation",
    "connects-twice": "device-closed",
    "connects-after-stop": "stopped",
    "stopped-mid-stream": "stopped",
    "same-key-twice": "stopped",
    "malformed-call": None,
    "stops-reading": "send-stalled",
}


class SoakTests(unittest.TestCase):
    """All faults at once, at random, for SOAK_SECONDS."""

    timeout = SOAK_SECONDS + 60

    def setUp(self) -> Deferred[None]:
        self.h = faults.FaultHarness(ports=32)
        return Deferred.fromCoroutine(self.h.start())

    def tearDown(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.h.stop_and_check_leftovers())

    def test_mixed_faults_leave_healthy_sessions_and_the_service_clean(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.soak())

    async def soak(self) -> None:
        rng = random.Random(SEED)
        soak = Soak(self.h, rng)
        self.addCleanup(lambda: [sock.close() for sock in soak.sockets])
        kinds = soak.kinds()
        names = sorted(kinds)
        ssrcs = iter(range(1_000, 2**31))
        failures: list[str] = []
        running: set[Deferred[None]] = set()
        deadline = time.monotonic() + SOAK_SECONDS

        async def one(kind: str) -> None:
            ssrc = next(ssrcs)
            try:
                reason = await kinds[kind](ssrc)
                if reason != EXPECTED[kind]:
                    failures.append(f"{kind} (ssrc {ssrc}) ended {reason}, "
                                    f"expected {EXPECTED[kind]}")
                soak.outcomes[kind] += 1
            except Exception as error:  # reported below, with the seed
                failures.append(f"{kind} (ssrc {ssrc}): {type(error).__name__}: {error}")

        # Every kind once first (so even a short soak covers them all), then at random.
        queue = [*names]
        while time.monotonic() < deadline:
            while len(running) < IN_FLIGHT and time.monotonic() < deadline:
                kind = queue.pop() if queue else rng.choice(names)
                if kind == "stops-reading" and any(getattr(d, "slow", False) for d in running):
                    kind = "never-connects"  # one slow fault at a time is enough
                fault = Deferred.fromCoroutine(one(kind))
                fault.slow = kind == "stops-reading"  # type: ignore[attr-defined]
                running.add(fault)
                fault.addBoth(lambda _, f=fault: running.discard(f))
            await sleep(0.02)
        await DeferredList(list(running))
        assert not failures, f"seed {SEED}: " + "; ".join(failures[:10])
        missing = set(names) - set(soak.outcomes)
        assert not missing, f"kinds not exercised: {missing}"
        await self.h.hear_more()
        self.h.check_healthy()
        ended = Counter(event[1] for event in self.h.observer.ended())
        started = {event[1] for event in self.h.observer.events if event[0] == "started"}
        assert all(count == 1 for count in ended.values()), "every session ends exactly once"
        live = {session.id for session in self.h.manager.sessions()}
        assert started - set(ended) == live, "a session neither ended nor live"
        assert live == set(self.h.healthy_ids), "only the healthy sessions are left"
