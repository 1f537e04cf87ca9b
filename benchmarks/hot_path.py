"""The per-packet send path, as it is and as proposed: CPU per packet for each, same load.

In this process, on the real reactor pinned to one core: a session manager
with N sessions on one shared tone source, N devices in another process
(benchmarks/loadgen_devices.py, pinned to the other core) reading them.
Each variant streams for ``--duration`` seconds and reports this process's
CPU per packet.  ``current`` is gb28181talk as it is; ``lean`` swaps in
:class:`LeanTalkSession`, the fast path proposed for session.py (see
docs/performance.md, "What the profile showed"): for the common case (raw
G.711, one frame per packet, RFC 4571 framing, nothing waiting in Twisted's
buffer) it packs the header into a preallocated buffer and sends with one
``sendmsg``, without the per-packet chunk list, keyword calls, property
lookups and jitter bookkeeping of the general path, which stays for every
other case.  Prints a table; writes benchmarks/results/hot_path.json.

    .venv/bin/python benchmarks/hot_path.py --sessions 1000 --duration 20
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import time
from typing import Any

from benchlib import HERE, SERVICE_CPU, other_cpus, pin, print_table, summary, write_result
from twisted.internet import reactor, task
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread

import gb28181talk.manager
from gb28181talk.manager import SessionManager
from gb28181talk.pacer import SourceTap
from gb28181talk.params import Packaging, SessionKey, SessionParams, SessionState
from gb28181talk.ports import PortPool
from gb28181talk.session import TalkSession
from gb28181talk.sources import ToneSource

_FRAMED = struct.Struct("!HBBHII")
STREAMING = SessionState.STREAMING


class LeanTalkSession(TalkSession):
    """TalkSession with the proposed fast path for the common case; the rest unchanged."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        params = self.params
        self._fast = (
            params.packaging is Packaging.RAW
            and self._frames_per_packet == 1
            and self._framed
            and params.receive_timeout is None
        )
        self._payload_type = params.rtp_payload_type  # a property: computed once, not per packet
        self._law = params.law
        self._ssrc = self.key.ssrc
        self._header = bytearray(_FRAMED.size)

    def frame_ready(self, tap: SourceTap) -> None:
        writer = self._writer
        if not self._fast or self.state is not STREAMING or writer is None or writer.queued:
            super().frame_ready(tap)
            return
        sock = writer._socket
        frame = tap.g711(self._law)
        if frame is None or sock is None:
            super().frame_ready(tap)
            return
        header = self._header
        marker = self._marker
        _FRAMED.pack_into(header, 0, 12 + len(frame), 0x80,
                          self._payload_type | 0x80 if marker else self._payload_type,
                          self._sequence, self._timestamp, self._ssrc)
        try:
            sent = sock.sendmsg((header, frame))
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            writer._socket = None
            sent = 0
        size = len(header) + len(frame)
        if sent != size:  # the kernel took part: the rest waits in Twisted's buffer, in order
            rest = (bytes(header) + frame)[sent:]
            writer._transport.write(rest)
            writer.queued += len(rest)
        if marker:
            self._marker = False
        self._sequence = (self._sequence + 1) & 0xFFFF
        self._timestamp = (self._timestamp + self._ticks_per_frame) & 0xFFFFFFFF
        self._packets_sent += 1
        self._bytes_sent += size
        # Per-packet jitter bookkeeping is left to the pacer's TickStats: every session of a
        # tick shares its ``now``, so the figures are the same, computed once per tick.


@inlineCallbacks
def run_variant(args: argparse.Namespace, variant: str) -> Any:
    gb28181talk.manager.TalkSession = LeanTalkSession if variant == "lean" else TalkSession
    pool = PortPool(reactor, args.low, args.low + args.sessions + 100, interface="127.0.0.1")
    manager = SessionManager(reactor, pool)
    source = ToneSource("bench", "tone", frequency=440)
    sessions = [
        manager.start(SessionParams(key=SessionKey("v", "bench", "tone", n),
                                    packet_ms=args.packet_ms, wait_timeout=120, preroll_ms=0),
                      source)
        for n in range(args.sessions)
    ]
    cpus = other_cpus()
    loadgen = subprocess.Popen(
        [sys.executable, str(HERE / "loadgen_devices.py"), "--duration", str(args.duration),
         "--warmup", "2", "--connect-seconds", "2", "--sample", "40"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        preexec_fn=lambda: pin(cpus),
    )
    result = deferToThread(loadgen.communicate, json.dumps([s.port for s in sessions]))
    yield task.deferLater(reactor, 4, lambda: None)
    streaming = sum(1 for s in sessions if s.state is STREAMING)
    sent0 = sum(s._packets_sent for s in sessions)
    times0, wall0 = os.times(), time.monotonic()
    samples: list[float] = []
    last = [times0.user + times0.system, wall0]

    def sample() -> None:
        now_times, now = os.times(), time.monotonic()
        cpu = now_times.user + now_times.system
        samples.append((cpu - last[0]) / (now - last[1]) * 100)
        last[:] = [cpu, now]

    sampler = task.LoopingCall(sample)
    sampler.start(1.0, now=False)
    yield task.deferLater(reactor, args.duration - 2, lambda: None)
    sampler.stop()
    times1, wall1 = os.times(), time.monotonic()
    sent = sum(s._packets_sent for s in sessions) - sent0
    output, _ = yield result
    yield manager.shutdown()
    cpu = (times1.user + times1.system) - (times0.user + times0.system)
    devices = json.loads(output)
    return {
        "variant": variant,
        "sessions": args.sessions,
        "streaming": streaming,
        "packets": sent,
        "cpu_percent": round(cpu / (wall1 - wall0) * 100, 1),
        "cpu_percent_per_second": summary(samples, 1),
        "cpu_us_per_packet": round(cpu / max(sent, 1) * 1e6, 2),
        "devices": devices,
    }


@inlineCallbacks
def main(_reactor: Any, args: argparse.Namespace) -> Any:
    pin({SERVICE_CPU})
    results = []
    for variant in args.variants:
        for _ in range(args.repeat):
            results.append((yield run_variant(args, variant)))
    rows = [[r["variant"], r["streaming"], r["packets"], r["cpu_percent"],
             r["cpu_us_per_packet"], r["devices"]["jitter_p50_ms"], r["devices"]["jitter_p99_ms"],
             r["devices"]["lost_sampled"]] for r in results]
    print_table(["variant", "sessions", "packets", "CPU %", "µs/packet", "jitter p50",
                 "jitter p99", "lost"], rows)
    path = write_result("hot_path", {"command": sys.argv, "results": results})
    print(f"written {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--packet-ms", type=int, default=20)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=["current", "lean"],
                        choices=["current", "lean"])
    parser.add_argument("--low", type=int, default=21000)
    task.react(main, [parser.parse_args()])
