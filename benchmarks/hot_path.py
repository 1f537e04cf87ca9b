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
other case.  Prints a table; writes benchmarks/results/hot_path-<N>x<ms>ms.json.

    .venv/bin/python benchmarks/hot_path.py --sessions 1000 --duration 20
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections import deque
from typing import Any

from benchlib import HERE, SERVICE_CPU, other_cpus, pin, print_table, summary, write_result
from twisted.internet import reactor, task
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread

import gb28181talk.core.manager
import gb28181talk.core.pacer
from gb28181talk.core.manager import SessionManager
from gb28181talk.core.pacer import SourceTap
from gb28181talk.core.params import Packaging, SessionKey, SessionParams, SessionState
from gb28181talk.core.ports import PortPool
from gb28181talk.core.session import TalkSession
from gb28181talk.media import g711
from gb28181talk.sources.tone import ToneSource

_FRAMED = struct.Struct("!HBBHII")
STREAMING = SessionState.STREAMING


class LeanTalkSession(TalkSession):
    """TalkSession with the proposed fast path for the common case; the rest unchanged."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        params = self.params
        self._fast = (
            params.packaging is Packaging.RAW
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
        if self._frames_per_packet > 1:
            # Longer packets: collect this frame and return until the packet is full (the same
            # state as the general path keeps, so either path can finish a packet).
            chunks = self._chunks
            if not chunks:
                self._packet_timestamp = self._timestamp
            chunks.append(frame)
            self._timestamp = (self._timestamp + self._ticks_per_frame) & 0xFFFFFFFF
            if len(chunks) < self._frames_per_packet:
                return
            self._chunks = []
            frame = b"".join(chunks)
            timestamp = self._packet_timestamp
        else:
            timestamp = self._timestamp
            self._timestamp = (timestamp + self._ticks_per_frame) & 0xFFFFFFFF
        header = self._header
        marker = self._marker
        _FRAMED.pack_into(header, 0, 12 + len(frame), 0x80,
                          self._payload_type | 0x80 if marker else self._payload_type,
                          self._sequence, timestamp, self._ssrc)
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
        self._packets_sent += 1
        self._bytes_sent += size
        # Per-packet jitter bookkeeping is left to the pacer's TickStats: every session of a
        # tick shares its ``now``, so the figures are the same, computed once per tick.


def check_same_bytes() -> None:
    """The lean path sends byte for byte what the current one sends (memory reactor, 5 s)."""
    from gb28181talk.testing import BusyPortsReactor, FakeDevice, ListSource

    for packet_ms in (20, 40, 100, 180):
        streams = []
        for variant in VARIANTS:
            use_variant(variant)
            clock = BusyPortsReactor()
            manager = SessionManager(clock, PortPool(clock, 30000, 30001))
            source = ListSource.counting(300, loop=True)
            params = SessionParams(key=SessionKey("v", "bench", "tone", 7), packet_ms=packet_ms,
                                   preroll_ms=100)
            session = manager.start(params, source, replace=False)
            session._sequence, session._timestamp = 100, 5000  # the same start for both
            clock.advance(0.05)  # some pre-roll before the device connects
            ours, theirs = socket.socketpair()  # a real socket, so the direct path is taken
            theirs.setblocking(False)
            device = FakeDevice()
            device.transport.getHandle = lambda ours=ours: ours
            device.connect(clock, session.port)
            received = bytearray()
            for _ in range(250):
                clock.advance(0.02)
                with contextlib.suppress(BlockingIOError):
                    while chunk := theirs.recv(65536):
                        received += chunk
            assert device.transport.value() == b"", "everything went straight to the socket"
            if variant == "due" and packet_ms > 20:
                assert session._due_phase is not None, "the due path was taken"
            ours.close()
            theirs.close()
            streams.append(bytes(received))
        use_variant("current")
        for variant, stream in zip(VARIANTS, streams, strict=True):
            assert stream == streams[0], f"{variant} differs at {packet_ms} ms packets"
        print(f"packet_ms {packet_ms}: {len(streams[0])} bytes, identical")


class DueSourceTap(SourceTap):
    """SourceTap that calls a long-packet session only on the ticks its packet is due.

    The second proposal (for pacer.py): sessions whose packets hold k > 1
    frames are grouped by (k, phase); on tick i only the groups with
    ``(i - phase) % k == 0`` are called, and they share one payload, the last
    k frames encoded and joined once per law.  Per-tick work then follows the
    packets sent, not sessions × frames.  A prototype: it assumes a source
    without gaps (a tone) and regroups when the listener count changes.
    """

    __slots__ = ("_count", "_groups", "_history", "_joined")

    def __init__(self, source: Any) -> None:
        super().__init__(source)
        self._history: deque[bytes | None] = deque(maxlen=9)
        self._joined: dict[tuple[Any, int], bytes] = {}
        self._groups: dict[Any, list[Any]] | None = None
        self._count = -1

    def regroup(self) -> None:
        self._groups = None

    def joined(self, law: Any, frames: int) -> bytes:
        """The last ``frames`` frames in ``law``, encoded and joined once for all callers."""
        key = (law, frames)
        payload = self._joined.get(key)
        if payload is None:
            pcm = b"".join(list(self._history)[-frames:])  # type: ignore[arg-type]
            payload = self._joined[key] = g711.encode(law, pcm)
        return payload

    def _build(self) -> dict[Any, list[Any]]:
        groups: dict[Any, list[Any]] = {None: []}
        for listener in self.listeners:
            phase = getattr(listener, "_due_phase", None)
            key = None if phase is None else (listener._frames_per_packet, phase)
            groups.setdefault(key, []).append(listener)
        self._groups, self._count = groups, len(self.listeners)
        return groups

    def advance(self, now: float) -> bool:
        source = self.source
        self.index += 1
        self.now = now
        self.pcm = source.read_frame()
        self._encoded = {}
        self._joined = {}
        self._history.append(self.pcm)
        if self.pcm is None and source.ended:
            for listener in tuple(self.listeners):
                listener.source_ended(self)
            return False
        groups = self._groups
        if groups is None or self._count != len(self.listeners):
            groups = self._build()
        index = self.index
        for key, members in list(groups.items()):
            if key is not None and (index - key[1]) % key[0]:
                continue
            for listener in members:
                listener.frame_ready(self)
        return True


class DueTalkSession(LeanTalkSession):
    """LeanTalkSession that, for k-frame packets, lets a DueSourceTap call it once per packet."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._due_phase: int | None = None

    def frame_ready(self, tap: SourceTap) -> None:
        every = self._frames_per_packet
        if every == 1 or not self._fast or not isinstance(tap, DueSourceTap):
            super().frame_ready(tap)
            return
        if self._due_phase is None:
            # Not aligned yet (listening, pre-roll, a packet half full): the general path, until
            # a packet boundary; from then on the tap calls only when a packet is due.
            TalkSession.frame_ready(self, tap)
            if self.state is STREAMING and not self._chunks and self._writer is not None:
                self._due_phase = tap.index % every
                tap.regroup()
            return
        writer = self._writer
        if self.state is not STREAMING or writer is None:
            return
        payload = tap.joined(self._law, every)
        timestamp = self._timestamp
        self._timestamp = (timestamp + self._ticks_per_frame * every) & 0xFFFFFFFF
        marker = self._marker
        header = _FRAMED.pack(12 + len(payload), 0x80,
                              self._payload_type | 0x80 if marker else self._payload_type,
                              self._sequence, timestamp, self._ssrc)
        if not writer.write(header, payload):
            self._packets_dropped += 1
            return
        if marker:
            self._marker = False
        self._sequence = (self._sequence + 1) & 0xFFFF
        self._packets_sent += 1
        self._bytes_sent += len(header) + len(payload)


VARIANTS = {"current": (TalkSession, SourceTap), "lean": (LeanTalkSession, SourceTap),
            "due": (DueTalkSession, DueSourceTap)}


def use_variant(variant: str) -> None:
    """Make the manager and pacer build this variant's sessions and taps."""
    session_class, tap_class = VARIANTS[variant]
    gb28181talk.core.manager.TalkSession = session_class
    gb28181talk.core.pacer.SourceTap = tap_class


@inlineCallbacks
def run_variant(args: argparse.Namespace, variant: str) -> Any:
    use_variant(variant)
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
    check_same_bytes()
    if args.check_only:
        return
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
    name = f"hot_path-{args.sessions}x{args.packet_ms}ms"
    path = write_result(name, {"command": sys.argv, "results": results})
    print(f"written {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--packet-ms", type=int, default=20)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--low", type=int, default=21000)
    parser.add_argument("--check-only", action="store_true",
                        help="only check that both paths send the same bytes")
    task.react(main, [parser.parse_args()])
