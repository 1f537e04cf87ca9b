"""The per-packet send path in process: CPU per packet, this tree against a reference tree.

Each measurement runs in a child process started with ``PYTHONPATH`` set to
one tree (this one, or ``--reference``, e.g. a ``git worktree`` of an older
commit), so both run the same harness and only the package differs.  The
children are interleaved (reference, this, reference, this, ...) and each
point is repeated, since other work shares the machine: compare the ratio,
not the figures of different runs.

``micro`` (the default): a memory reactor driving the real sessions, pacer,
senders and writers, each session writing to its own real TCP loopback
socket (the direct ``send``/``sendmsg`` path); the thread's CPU time is
taken around the pacer's ticks only (the devices' reads are outside it), so
it is the service's cost per packet, the kernel's send included.
``--no-syscall`` swaps each writer's socket for one that takes everything at
once, leaving the Python part alone; ``--floor`` sends a ready packet per
socket and packet time with no session code, the kernel's part alone.
``real``: the real reactor, with the devices in another process
(benchmarks/loadgen_devices.py) reading at once, the process's CPU per
packet sent (as session_cost.py).

Before measuring, ``--check-only`` (and every run) checks on a memory reactor
that the due-only path (the pacer calls a sender only when its packet is
due, the header packed in place into a shared payload) sends byte for byte
what the per-frame path sends, for 20-180 ms packets, raw and PS, RFC 4571
and bare framing, a source with gaps and a source that ends; with
``--reference`` also that this tree sends what the reference sends.

    .venv/bin/python benchmarks/hot_path.py --reference /tmp/gbtalk-hot-base \\
        --points 1000x20 5000x100 --seconds 4 --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TREE = HERE.parent

# --------------------------------------------------------------------------- the set-ups


LOW_PORT = 27600
"""Talk ports from here (real mode): below Linux's ephemeral range, above the other benchmarks'
21000-27999, so a benchmark another person runs meanwhile does not take them."""


def _sessions(reactor: Any, count: int, packet_ms: int, **params: Any) -> tuple[Any, list[Any]]:
    """``count`` sessions of one shared tone on ``reactor``, listening (public API only)."""
    from gb28181talk.core.manager import SessionManager
    from gb28181talk.core.pacer import Pacer
    from gb28181talk.core.params import SessionKey, SessionParams
    from gb28181talk.core.ports import PortPool
    from gb28181talk.sources.tone import ToneSource

    pool = PortPool(reactor, LOW_PORT, LOW_PORT + count + 10, interface="127.0.0.1")
    manager = SessionManager(reactor, pool, Pacer(reactor))
    source = ToneSource("bench", "tone", frequency=440)
    sessions = [
        manager.start(SessionParams(key=SessionKey("v", "bench", "tone", n), packet_ms=packet_ms,
                                    wait_timeout=600, **params), source)
        for n in range(count)
    ]
    return manager, sessions


def _connect_loopback(reactor: Any, sessions: list[Any]) -> list[socket.socket]:
    """Each session's device on a real TCP loopback connection; the devices' ends."""
    from gb28181talk.testing import FakeDevice

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    devices = []
    for n, session in enumerate(sessions):
        theirs = socket.create_connection(listener.getsockname())
        ours, _ = listener.accept()
        theirs.setblocking(False)
        device = FakeDevice(port=40000 + n)
        device.transport.getHandle = lambda ours=ours: ours  # type: ignore[attr-defined]
        device.connect(reactor, session.port)
        devices.append(theirs)
    listener.close()
    return devices


def _drain(devices: list[socket.socket]) -> None:
    for device in devices:
        with contextlib.suppress(BlockingIOError):
            while device.recv(1 << 20):
                pass


class _TakesAll:
    """A socket stand-in that takes every byte at once: the Python part of the path alone."""

    def send(self, data: Any) -> int:
        return len(data)

    def sendmsg(self, buffers: Any) -> int:
        header, payload = buffers  # the writer's only use: (header, payload)
        return len(header) + len(payload)


def measure_micro(count: int, packet_ms: int, seconds: float, no_syscall: bool) -> dict[str, Any]:
    """CPU per packet of the pacer's ticks on a memory reactor, real loopback sockets."""
    from gb28181talk.testing import BusyPortsReactor

    reactor = BusyPortsReactor()
    _, sessions = _sessions(reactor, count, packet_ms, preroll_ms=0)
    devices = _connect_loopback(reactor, sessions)
    if no_syscall:
        for session in sessions:
            session.sender._write.__self__._socket = _TakesAll()
    for _ in range(50):  # 1 s of warm-up
        reactor.advance(0.02)
        _drain(devices)
    sent0 = sum(s.sender.packets_sent for s in sessions)
    cpu = 0.0
    for _ in range(round(seconds / 0.02)):
        began = time.thread_time()
        reactor.advance(0.02)
        cpu += time.thread_time() - began
        _drain(devices)
    sent = sum(s.sender.packets_sent for s in sessions) - sent0
    dropped = sum(s.sender.packets_dropped for s in sessions)
    return {"packets": sent, "dropped": dropped, "cpu_s": round(cpu, 4),
            "us_per_packet": round(cpu / max(sent, 1) * 1e6, 3)}


def measure_floor(count: int, packet_ms: int, seconds: float) -> dict[str, Any]:
    """The kernel's part alone: one ``send`` of a ready packet per socket and packet time."""
    from gb28181talk.testing import BusyPortsReactor

    reactor = BusyPortsReactor()
    _, sessions = _sessions(reactor, count, packet_ms, preroll_ms=0)
    devices = _connect_loopback(reactor, sessions)
    sockets = [session.sender._write.__self__._socket for session in sessions]
    packet = bytes(14 + 8 * packet_ms)
    frames_per_packet = packet_ms // 20
    sent, cpu = 0, 0.0
    for tick in range(round(seconds / 0.02)):
        due = sockets[tick % frames_per_packet :: frames_per_packet]
        began = time.thread_time()
        for handle in due:
            handle.send(packet)
        cpu += time.thread_time() - began
        sent += len(due)
        _drain(devices)
    return {"packets": sent, "cpu_s": round(cpu, 4),
            "us_per_packet": round(cpu / max(sent, 1) * 1e6, 3)}


def measure_real(count: int, packet_ms: int, seconds: float) -> dict[str, Any]:
    """CPU per packet of this process on the real reactor, the devices in another process."""
    from twisted.internet import reactor, task
    from twisted.internet.defer import inlineCallbacks
    from twisted.internet.threads import deferToThread

    sys.path.insert(0, str(HERE))
    from benchlib import SERVICE_CPU, other_cpus, pin

    out: dict[str, Any] = {}

    @inlineCallbacks
    def run(_reactor: Any) -> Any:
        pin({SERVICE_CPU})
        manager, sessions = _sessions(reactor, count, packet_ms, preroll_ms=0)
        cpus = other_cpus()
        loadgen = subprocess.Popen(
            [sys.executable, str(HERE / "loadgen_devices.py"), "--duration", str(seconds + 2),
             "--warmup", "2", "--connect-seconds", "2", "--sample", "40"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            preexec_fn=lambda: pin(cpus),
        )
        result = deferToThread(loadgen.communicate, json.dumps([s.port for s in sessions]))
        yield task.deferLater(reactor, 4, lambda: None)
        sent0 = sum(s.sender.packets_sent for s in sessions)
        times0, wall0 = os.times(), time.monotonic()
        yield task.deferLater(reactor, seconds, lambda: None)
        times1, wall1 = os.times(), time.monotonic()
        sent = sum(s.sender.packets_sent for s in sessions) - sent0
        yield result
        yield manager.shutdown()
        cpu = (times1.user + times1.system) - (times0.user + times0.system)
        out.update(packets=sent, cpu_percent=round(cpu / (wall1 - wall0) * 100, 1),
                   us_per_packet=round(cpu / max(sent, 1) * 1e6, 3))

    with contextlib.suppress(SystemExit):
        task.react(run)
    if not out:
        raise RuntimeError("the real-reactor run failed (its traceback is above)")
    return out


# --------------------------------------------------------------------------- the byte check


def _frames() -> dict[str, list[bytes | None]]:
    from gb28181talk.testing import ListSource

    tone = ListSource.counting(300).frames
    gappy: list[bytes | None] = list(tone)
    for at in (40, 41, 97, 150, 151, 152, 153, 154, 155, 156, 157, 158, 159, 160, 201):
        gappy[at] = None
    return {"tone": tone, "gappy": gappy}


CASES = [
    *[(f"{ms} ms raw", ms, "raw", "rfc4571", "tone", None) for ms in (20, 40, 100, 180)],
    ("100 ms raw, bare framing", 100, "raw", "none", "tone", None),
    ("100 ms PS", 100, "ps", "rfc4571", "tone", None),
    ("20 ms with gaps", 20, "raw", "rfc4571", "gappy", None),
    ("100 ms with gaps", 100, "raw", "rfc4571", "gappy", None),
    ("60 ms, source ends", 60, "raw", "rfc4571", "tone", 187),
    ("180 ms PS, gaps, ends", 180, "ps", "rfc4571", "gappy", 233),
]
"""(label, packet ms, packaging, framing, frames, frames before the source ends or None)."""


def _case_bytes(case: tuple[Any, ...], per_frame: bool) -> tuple[bytes, int]:
    """One case's bytes at the device (memory reactor, a real socket pair); due calls made."""
    from gb28181talk.core.pacer import Pacer
    from gb28181talk.core.params import SessionKey, SessionParams
    from gb28181talk.core.ports import PortPool
    from gb28181talk.core.session import TalkSession
    from gb28181talk.media.framing import Framing
    from gb28181talk.media.payload import Packaging
    from gb28181talk.testing import BusyPortsReactor, FakeDevice, ListSource, RecordingObserver

    _label, packet_ms, packaging, framing, frames_name, end = case
    frames = _frames()[frames_name]
    clock = BusyPortsReactor()
    pacer = Pacer(clock)
    source = ListSource(frames[:end] if end else frames, loop=end is None)
    params = SessionParams(key=SessionKey("v", "bench", "tone", 7), packet_ms=packet_ms,
                           packaging=Packaging(packaging), framing=Framing(framing),
                           preroll_ms=100)
    session = TalkSession("check", params, source, reactor=clock,
                          pool=PortPool(clock, 30000, 30001), pacer=pacer,
                          observer=RecordingObserver(), rng_seed=0x1234_5678_9ABC)
    session.start()
    sender = session.sender
    due_calls = [0]
    if hasattr(sender, "packet_due"):
        if per_frame:  # the reference: never aligned, every frame through frame_ready
            sender._align = lambda tap: None  # type: ignore[method-assign]
        real_due = sender.packet_due

        def counted(tap: Any, payload: Any) -> None:
            due_calls[0] += 1
            real_due(tap, payload)

        sender.packet_due = counted  # type: ignore[method-assign]
    clock.advance(0.05)  # some pre-roll before the device connects
    ours, theirs = socket.socketpair()  # a real socket, so the direct send path is taken
    theirs.setblocking(False)
    device = FakeDevice(framing=Framing(framing))
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
    return bytes(received), due_calls[0]


def case_digests(per_frame: bool = False) -> dict[str, Any]:
    """Every case's byte count, SHA-256 and due calls, from the package on ``sys.path``."""
    digests = {}
    for case in CASES:
        data, due_calls = _case_bytes(case, per_frame)
        digests[case[0]] = [len(data), hashlib.sha256(data).hexdigest(), due_calls]
    return digests


def check_same_bytes(reference: Path | None) -> None:
    """The due path sends the per-frame path's bytes (and the reference's), and is taken."""
    due = case_digests()
    per_frame = case_digests(per_frame=True)
    theirs = _child(reference, ["check"]) if reference is not None else None
    for label, (size, digest, due_calls) in due.items():
        assert size, f"{label}: nothing sent"
        assert per_frame[label][:2] == [size, digest], f"{label}: the due path sends other bytes"
        assert due_calls, f"{label}: the due path was never taken"
        if theirs is not None:
            assert theirs[label][:2] == [size, digest], f"{label}: the reference sends other bytes"
        print(f"{label:<26} {size:>7} bytes identical; {due_calls} due calls"
              + ("; as the reference" if theirs is not None else ""))


# --------------------------------------------------------------------------- orchestration


def _child(tree: Path | None, job: list[str]) -> Any:
    """Run one job of this script in a child process on ``tree``'s package; its JSON answer."""
    env = dict(os.environ, PYTHONPATH=str(tree if tree is not None else TREE))
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", *job],
                          env=env, capture_output=True, text=True, check=False)
    if done.returncode or not done.stdout.strip():
        raise RuntimeError(f"child {job} on {tree} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_child(job: list[str]) -> None:
    """The child's side: one job, one JSON line."""
    kind, *rest = job
    if kind == "check":
        print(json.dumps(case_digests()))
        return
    count, packet_ms, seconds = int(rest[0]), int(rest[1]), float(rest[2])
    if kind == "micro":
        print(json.dumps(measure_micro(count, packet_ms, seconds, no_syscall=False)))
    elif kind == "nosys":
        print(json.dumps(measure_micro(count, packet_ms, seconds, no_syscall=True)))
    elif kind == "floor":
        print(json.dumps(measure_floor(count, packet_ms, seconds)))
    else:
        print(json.dumps(measure_real(count, packet_ms, seconds)))


def main(args: argparse.Namespace) -> None:
    """Check the bytes, then measure each point, the trees interleaved, ``--repeat`` rounds."""
    check_same_bytes(args.reference)
    if args.check_only:
        return
    kind = "nosys" if args.no_syscall else args.mode
    if args.floor:
        kind = "floor"
    trees = [("reference", args.reference), ("this", TREE)] if args.reference else [("this", TREE)]
    report = []
    for point in args.points:
        count, packet_ms = (int(part) for part in point.split("x"))
        figures: dict[str, list[float]] = {name: [] for name, _ in trees}
        for _ in range(args.repeat):
            for name, tree in trees:
                result = _child(tree, [kind, str(count), str(packet_ms), str(args.seconds)])
                figures[name].append(result["us_per_packet"])
                print(f"{point} {kind:<5} {name:<9} {result}", flush=True)
        row: dict[str, Any] = {"point": point, "kind": kind, "us_per_packet": figures}
        if args.reference:
            pairs = zip(figures["this"], figures["reference"], strict=True)
            row["ratios"] = [round(ours / theirs, 3) for ours, theirs in pairs]
            print(f"{point} {kind}: this / reference = {row['ratios']}", flush=True)
        report.append(row)
    if args.output:
        Path(args.output).write_text(json.dumps({"command": sys.argv, "results": report},
                                                indent=2))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=None,
                        help="another tree (e.g. a git worktree) to measure against")
    parser.add_argument("--points", nargs="+", default=["1000x20", "5000x100"],
                        help="sessions x packet ms")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured per child")
    parser.add_argument("--repeat", type=int, default=3, help="rounds, the trees interleaved")
    parser.add_argument("--mode", choices=["micro", "real"], default="micro")
    parser.add_argument("--no-syscall", action="store_true",
                        help="micro with a socket that takes all: the Python part alone")
    parser.add_argument("--floor", action="store_true",
                        help="the kernel's part alone: a ready packet sent per socket")
    parser.add_argument("--output", help="write the figures as JSON here")
    parser.add_argument("--check-only", action="store_true",
                        help="only check that the paths send the same bytes")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.child:
        run_child(arguments.child)
    else:
        main(arguments)
