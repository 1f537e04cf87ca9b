"""The per-packet send path, as it is and with due-only pacing of long packets: CPU per packet.

In this process, on the real reactor pinned to one core: a session manager
with N sessions on one shared tone source, N devices in another process
(benchmarks/loadgen_devices.py, pinned to the other core) reading them.
Each variant streams for ``--duration`` seconds and reports this process's
CPU per packet.

``current`` is gb28181talk as it is: the pacer calls every session's
:class:`~gb28181talk.core.sender.Sender` on every 20 ms frame, and a session
with 100 ms packets collects four frames before it sends on the fifth.
``due`` is proposal 2 of docs/performance.md (issue 14, item 2), built here
without touching the package: :class:`DuePacer` makes :class:`DueSourceTap`
taps, which group senders whose packets hold k > 1 frames by (k, phase) and
on tick *i* call only the groups with ``(i - phase) % k == 0``
(:meth:`DueSender.packet_due`), handing them one payload per law, the last k
frames encoded and joined once.  Per-tick work then follows the packets sent,
not sessions x frames.  A sender falls back to the general per-frame path
(``frame_ready``) until it is at a packet boundary while streaming, around a
gap in the source, with a receive timeout to watch, and for 20 ms packets;
the tap keeps the last 9 frames so a gap or the source's end is replayed
frame by frame exactly as the general path would have seen it.

Before measuring, both variants are run on a memory reactor with a real
socket pair (the direct ``sendmsg`` path) for 20-180 ms packets, raw and PS,
a source with gaps and a source that ends, and must send the same bytes
(``--check-only`` does only that).  Prints a table; writes
benchmarks/results/hot_path-<N>x<ms>ms.json.

    .venv/bin/python benchmarks/hot_path.py --sessions 5000 --packet-ms 100 --duration 20
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from benchlib import HERE, SERVICE_CPU, other_cpus, pin, print_table, summary, write_result
from twisted.internet import reactor, task
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

import gb28181talk.core.session
from gb28181talk.core.manager import SessionManager
from gb28181talk.core.pacer import FrameListener, Pacer, SourceTap
from gb28181talk.core.params import SessionKey, SessionParams, SessionState
from gb28181talk.core.ports import PortPool
from gb28181talk.core.sender import Sender
from gb28181talk.interfaces import IAudioSource, ILiveSource
from gb28181talk.media import g711
from gb28181talk.media.law import Law
from gb28181talk.media.payload import Packaging
from gb28181talk.sources.tone import ToneSource

log = Logger()

STREAMING = SessionState.STREAMING
HISTORY_FRAMES = 9
"""Frames the due tap keeps: one 180 ms packet, the longest there is."""

_GENERAL = None
"""The group key of listeners called on every frame (``frame_ready``)."""


class DueSourceTap(SourceTap):
    """A SourceTap that calls an aligned long-packet sender only on the ticks its packet is due.

    Listeners with a ``due_every`` > 1 and a ``due_phase`` are grouped by
    (every, phase) and called with ``packet_due``; every other listener gets
    ``frame_ready`` on every frame, as with the plain tap.  The groups are
    rebuilt whenever a listener comes, goes or changes its alignment
    (:meth:`regroup`).
    """

    __slots__ = ("_groups", "_joined", "history")

    def __init__(self, source: IAudioSource) -> None:
        super().__init__(source)
        self.history: deque[bytes | None] = deque(maxlen=HISTORY_FRAMES)
        self._joined: dict[tuple[Law, int], bytes | None] = {}
        self._groups: list[tuple[int, int, tuple[Any, ...]]] | None = None

    def regroup(self) -> None:
        """The listeners or their alignment changed: group them again before the next call."""
        self._groups = None

    def joined(self, law: Law, frames: int) -> bytes | None:
        """The last ``frames`` frames in ``law``, joined, once for every caller; None over a gap."""
        key = (law, frames)
        try:
            return self._joined[key]
        except KeyError:
            pass
        window = [pcm for pcm in list(self.history)[-frames:] if pcm is not None]
        payload = g711.encode(law, b"".join(window)) if len(window) == frames else None
        self._joined[key] = payload
        return payload

    def _build(self) -> list[tuple[int, int, tuple[Any, ...]]]:
        grouped: dict[Any, list[Any]] = {_GENERAL: []}
        for listener in self.listeners:
            phase = getattr(listener, "due_phase", None)
            key = _GENERAL if phase is None else (listener.due_every, phase)
            grouped.setdefault(key, []).append(listener)
        groups = [(1, 0, tuple(grouped.pop(_GENERAL)))]
        groups += [(every, phase, tuple(members)) for (every, phase), members in grouped.items()]
        self._groups = groups
        return groups

    def advance(self, now: float) -> bool:
        """Read the next frame; call the per-frame listeners and the groups whose packet is due."""
        source = self.source
        self.index += 1
        self.now = now
        self._encoded = {}
        self._joined = {}
        try:
            self.pcm = source.read_frame()
            ended = self.pcm is None and source.ended
        except Exception:
            log.failure("pacer: source {source!r} failed; ending it", source=source)
            self.pcm = None
            ended = True
        self.history.append(self.pcm)
        if ended:
            for listener in tuple(self.listeners):
                self._call(listener, listener.source_ended)
            return False
        groups = self._groups if self._groups is not None else self._build()
        index = self.index
        first = True
        for every, phase, members in groups:
            if first:  # the per-frame group
                first = False
                for listener in members:
                    self._call(listener, listener.frame_ready)
            elif (index - phase) % every == 0:
                for listener in members:
                    self._call(listener, listener.packet_due)
        return True

    def _call(self, listener: FrameListener, method: Any) -> None:
        try:
            method(self)
        except Exception:
            log.failure("pacer: listener {listener!r} failed; detaching it", listener=listener)
            self.listeners.pop(listener, None)
            self.regroup()


class DuePacer(Pacer):
    """The Pacer, with DueSourceTap taps that are regrouped whenever a listener comes or goes."""

    def attach(self, source: IAudioSource, listener: FrameListener) -> SourceTap:
        """As Pacer.attach, on a DueSourceTap."""
        if source not in self._taps:
            self._taps[source] = DueSourceTap(source)
            if ILiveSource.providedBy(source):
                source.trim_backlog()
        tap = super().attach(source, listener)
        if isinstance(tap, DueSourceTap):
            tap.regroup()
        return tap

    def detach(self, source: IAudioSource, listener: FrameListener) -> None:
        """As Pacer.detach, regrouping the tap."""
        tap = self._taps.get(source)
        super().detach(source, listener)
        if isinstance(tap, DueSourceTap):
            tap.regroup()


class DueSender(Sender):
    """A Sender that, once streaming at a packet boundary, is called only when its packet is due."""

    def __init__(self, params: SessionParams, *args: Any, **kwargs: Any) -> None:
        super().__init__(params, *args, **kwargs)
        self.due_every = self._frames_per_packet
        self.due_phase: int | None = None
        """Tap index mod ``due_every`` of the frames that end a packet; None: called per frame."""
        self._ticks_per_packet = self._ticks_per_frame * self.due_every
        self.due_calls = 0

    def frame_ready(self, tap: SourceTap) -> None:
        """The general path, and alignment once a packet has just been sent while streaming."""
        super().frame_ready(tap)
        if (
            self.due_every > 1
            and self._write is not None
            and not self._chunks
            and self.watch is None
            and isinstance(tap, DueSourceTap)
        ):
            self.due_phase = tap.index % self.due_every
            tap.regroup()

    def packet_due(self, tap: DueSourceTap) -> None:
        """The tap: this tick ends one of our packets; send the last k frames, joined once."""
        try:
            if self._write is None:
                return
            self.due_calls += 1
            payload = tap.joined(self._law, self.due_every)
            if payload is None:
                self._replay(tap, list(tap.history)[-self.due_every:])
                return
            ticks = self._ticks_per_packet
            if self._ps_muxer is not None:
                payload = self._ps_muxer.mux_next(payload, ticks)
            self._send_packet(payload, ticks, tap.now)
        except Exception as error:
            self._failed(error)

    def source_ended(self, tap: SourceTap) -> None:
        """Collect the frames since our last packet (the tap did not call us for them), then end."""
        phase = self.due_phase
        if phase is not None and isinstance(tap, DueSourceTap) and self._write is not None:
            pending = (tap.index - 1 - phase) % self.due_every
            if pending:
                self._replay(tap, list(tap.history)[-1 - pending : -1], regroup=False)
        super().source_ended(tap)

    def _replay(self, tap: DueSourceTap, frames: list[bytes | None], regroup: bool = True) -> None:
        """Frames the general path would have seen one by one (a gap among them)."""
        now = tap.now
        law = self._law
        for pcm in frames:
            if self._write is None:
                return
            if pcm is None:
                self._gap(now, False)
                continue
            self._chunks.append(g711.encode(law, pcm))
            if len(self._chunks) >= self._frames_per_packet:
                self._send(now, False)
        if regroup and self._chunks:  # the gap moved the packet boundary: per frame until aligned
            self.due_phase = None
            tap.regroup()

    def _send_packet(self, audio: bytes, ticks: int, now: float) -> None:
        """Sender._send for a payload already joined: the same header, write and figures."""
        write = self._write
        assert write is not None and self._header is not None
        header = self._header(len(audio), ticks)
        if not write(header, audio):
            self.packetizer.take_back()
            self.packets_dropped += 1
            return
        self.packets_sent += 1
        self.bytes_sent += len(header) + len(audio)
        last, self._last_send_at = self._last_send_at, now
        if last is not None:
            jitter = abs((now - last) * 1000 - self._packet_ms)
            self._jitter_total += jitter
            self._jitter_count += 1
            if jitter > self.jitter_max_ms:
                self.jitter_max_ms = jitter

    def stop(self) -> None:
        """As Sender.stop; the tap stops calling us once the session detaches."""
        super().stop()
        self.due_phase = None


VARIANTS: dict[str, tuple[type[Sender], type[Pacer]]] = {
    "current": (Sender, Pacer),
    "due": (DueSender, DuePacer),
}


@contextlib.contextmanager
def variant(name: str) -> Iterator[type[Pacer]]:
    """Sessions built meanwhile use this variant's Sender; yields the Pacer class to give them."""
    sender_class, pacer_class = VARIANTS[name]
    gb28181talk.core.session.Sender = sender_class  # type: ignore[misc]
    try:
        yield pacer_class
    finally:
        gb28181talk.core.session.Sender = Sender  # type: ignore[misc]


def _check_case(name: str, packet_ms: int, packaging: Packaging, frames: list[bytes | None],
                loop: bool) -> tuple[bytes, int]:
    """One variant's bytes at the device for one case (memory reactor, a real socket pair)."""
    from gb28181talk.core.session import TalkSession
    from gb28181talk.testing import BusyPortsReactor, FakeDevice, ListSource, RecordingObserver

    with variant(name) as pacer_class:
        clock = BusyPortsReactor()
        pacer = pacer_class(clock)
        source = ListSource(frames, loop=loop)
        params = SessionParams(key=SessionKey("v", "bench", "tone", 7), packet_ms=packet_ms,
                               packaging=packaging, preroll_ms=100)
        session = TalkSession("check", params, source, reactor=clock,
                              pool=PortPool(clock, 30000, 30001), pacer=pacer,
                              observer=RecordingObserver(), rng_seed=0x1234_5678_9ABC)
        session.start()
    clock.advance(0.05)  # some pre-roll before the device connects
    ours, theirs = socket.socketpair()  # a real socket, so the direct sendmsg path is taken
    theirs.setblocking(False)
    device = FakeDevice()
    device.transport.getHandle = lambda: ours  # type: ignore[attr-defined]
    device.connect(clock, session.port)
    received = bytearray()
    try:
        for _ in range(250):
            clock.advance(0.02)
            with contextlib.suppress(BlockingIOError):
                while chunk := theirs.recv(65536):
                    received += chunk
        assert device.transport.value() == b"", "everything went straight to the socket"
    finally:
        session.stop()
        ours.close()
        theirs.close()
    return bytes(received), getattr(session.sender, "due_calls", 0)


def check_same_bytes() -> None:
    """The due path sends byte for byte what the current one sends, and was really taken."""
    from gb28181talk.testing import ListSource

    tone = ListSource.counting(300).frames
    gappy: list[bytes | None] = list(tone)
    for at in (40, 41, 97, 150, 151, 152, 153, 154, 155, 156, 157, 158, 159, 160, 201):
        gappy[at] = None
    cases = [(f"{ms} ms raw", ms, Packaging.RAW, tone, True) for ms in (20, 40, 100, 180)]
    cases += [
        ("100 ms PS", 100, Packaging.PS, tone, True),
        ("100 ms with gaps", 100, Packaging.RAW, gappy, True),
        ("60 ms, source ends", 60, Packaging.RAW, tone[:187], False),
        ("180 ms PS, gaps, ends", 180, Packaging.PS, gappy[:233], False),
    ]
    for label, packet_ms, packaging, frames, loop in cases:
        current, _ = _check_case("current", packet_ms, packaging, frames, loop)
        due, due_calls = _check_case("due", packet_ms, packaging, frames, loop)
        assert current, f"{label}: nothing sent"
        assert due == current, f"{label}: the due path sends other bytes"
        assert due_calls or packet_ms == 20, f"{label}: the due path was never taken"
        print(f"{label:<24} {len(current):>7} bytes identical; {due_calls} due calls")


@inlineCallbacks
def run_variant(args: argparse.Namespace, name: str) -> Any:
    """Stream N sessions to the device process with one variant; CPU per packet."""
    pool = PortPool(reactor, args.low, args.low + args.sessions + 100, interface="127.0.0.1")
    source = ToneSource("bench", "tone", frequency=440)
    with variant(name) as pacer_class:
        manager = SessionManager(reactor, pool, pacer_class(reactor))
        sessions = [
            manager.start(SessionParams(key=SessionKey("v", "bench", "tone", n),
                                        packet_ms=args.packet_ms, wait_timeout=120,
                                        preroll_ms=0),
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
    sent0 = sum(s.sender.packets_sent for s in sessions)
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
    yield task.deferLater(reactor, max(args.duration - 2, 0.5), lambda: None)
    sampler.stop()
    times1, wall1 = os.times(), time.monotonic()
    sent = sum(s.sender.packets_sent for s in sessions) - sent0
    output, _ = yield result
    yield manager.shutdown()
    cpu = (times1.user + times1.system) - (times0.user + times0.system)
    devices = json.loads(output)
    return {
        "variant": name,
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
    """Check the variants agree, then measure each (interleaved, ``--repeat`` rounds)."""
    check_same_bytes()
    if args.check_only:
        return
    pin({SERVICE_CPU})
    results = []
    for _ in range(args.repeat):
        for name in args.variants:
            results.append((yield run_variant(args, name)))
    rows = [[r["variant"], r["streaming"], r["packets"], r["cpu_percent"],
             r["cpu_us_per_packet"], r["devices"]["jitter_p50_ms"], r["devices"]["jitter_p99_ms"],
             r["devices"]["lost_sampled"]] for r in results]
    print_table(["variant", "sessions", "packets", "CPU %", "µs/packet", "jitter p50",
                 "jitter p99", "lost"], rows)
    path = write_result(f"hot_path-{args.sessions}x{args.packet_ms}ms",
                        {"command": sys.argv, "results": results})
    print(f"written {path}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--packet-ms", type=int, default=100)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=1, help="rounds of all variants, interleaved")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--low", type=int, default=21000)
    parser.add_argument("--check-only", action="store_true",
                        help="only check that the variants send the same bytes")
    return parser.parse_args(argv)


if __name__ == "__main__":
    task.react(main, [parse_args()])
