"""What one talk session costs to set up and tear down, in-process: CPU per phase, GC, objects.

N listening sessions on the real reactor (real ports, one shared tone source,
no device), built by hand in the order ``TalkSession.start`` uses, so each
phase is timed on its own: construction (lifecycle, sender, receiver,
transport), the transport's ``open`` (lease + ``listenTCP``), the pacer's
``attach``, the lifecycle's ``start`` (machine, wait timer, observers), then
``stop``.  Times are this process's CPU time (not wall time, so other work on
a shared machine moves them less), in µs per session, with the collector on
(``--gc on``, what session_cost.py's "session starts" sees), off, or after
``gc.freeze()`` (what the service does after start-up).  Also: the
collections each round caused, per generation, and the garbage-collected
objects one listening session holds, by type.  ``--profile`` adds cProfile's
top functions over one more round.

    .venv/bin/python benchmarks/setup_cost.py --sessions 5000 --rounds 3
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import sys
import time
from collections import Counter
from typing import Any

from benchlib import print_table, write_result
from twisted.internet import reactor

from gb28181talk.core.manager import SessionManager
from gb28181talk.core.params import SessionKey, SessionParams
from gb28181talk.core.ports import PortPool
from gb28181talk.core.session import TalkSession
from gb28181talk.sources.tone import ToneSource

PHASES = ("construct", "transport.open", "pacer.attach", "lifecycle.start", "stop")


class GcWatch:
    """Counts the collector's runs and their time per generation (gc.callbacks)."""

    def __init__(self) -> None:
        self.counts = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._began = 0.0
        gc.callbacks.append(self._on_collection)

    def reset(self) -> None:
        self.counts = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]

    def _on_collection(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        generation = info["generation"]
        self.counts[generation] += 1
        self.seconds[generation] += time.perf_counter() - self._began


def one_round(manager: SessionManager, source: ToneSource, params: list[SessionParams],
              tag: str) -> dict[str, float]:
    """Build, open, attach, start and stop one session per params; CPU seconds per phase."""
    clock = time.process_time
    spent: dict[str, float] = {}
    began = clock()
    sessions = [
        TalkSession(f"{tag}-{n}", p, source, reactor=reactor, pool=manager.pool,
                    pacer=manager.pacer, observer=manager.observers)
        for n, p in enumerate(params)
    ]
    spent["construct"] = clock() - began
    began = clock()
    for session in sessions:  # TalkSession.start, one step at a time
        session._started = session._opening = True
        session.transport.open(session)
    spent["transport.open"] = clock() - began
    began = clock()
    for session in sessions:
        session._pacer.attach(session.source, session.sender)
        session._opening = False
    spent["pacer.attach"] = clock() - began
    began = clock()
    for session in sessions:
        session._machine.start()
    spent["lifecycle.start"] = clock() - began
    began = clock()
    for session in sessions:
        session.stop()
    spent["stop"] = clock() - began
    settle()
    return spent


def settle() -> None:
    """Let Twisted close the ports it was asked to close (their leases come back then)."""
    for _ in range(3):
        reactor.runUntilCurrent()  # type: ignore[attr-defined]
        reactor.doIteration(0)  # type: ignore[attr-defined]


def objects_per_session(manager: SessionManager, source: ToneSource,
                        count: int) -> tuple[float, list[tuple[str, float]]]:
    """GC-tracked objects that ``count`` listening sessions add, per session, by type."""
    def census() -> Counter[str]:
        return Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())

    params = [SessionParams(key=SessionKey("v", "census", "tone", n)) for n in range(count)]
    gc.collect()
    before = census()
    sessions = [manager.start(p, source) for p in params]
    gc.collect()
    added = census() - before
    for session in sessions:
        session.stop()
    del sessions
    settle()
    per_type = [(name, round(n / count, 2)) for name, n in added.most_common() if n >= count / 2]
    return round(sum(added.values()) / count, 1), per_type


def main() -> None:
    """Run the rounds, print the tables, write benchmarks/results/setup_cost.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gc", choices=["on", "off", "freeze"], default="on")
    parser.add_argument("--low", type=int, default=15000, help="first talk port")
    parser.add_argument("--profile", action="store_true", help="cProfile one more round")
    parser.add_argument("--top", type=int, default=25, help="functions shown by --profile")
    args = parser.parse_args()

    pool = PortPool(reactor, args.low, args.low + args.sessions + 400, interface="127.0.0.1")
    manager = SessionManager(reactor, pool)
    source = ToneSource("bench", "tone", frequency=440)
    per_session, per_type = objects_per_session(manager, source, 200)
    params = [SessionParams(key=SessionKey("v", "bench", "tone", n))
              for n in range(args.sessions)]
    gc.collect()
    if args.gc == "off":
        gc.disable()
    elif args.gc == "freeze":
        gc.freeze()
    watch = GcWatch()
    rows, rounds = [], []
    for number in range(args.rounds):
        watch.reset()
        spent = one_round(manager, source, params, f"r{number}")
        micro = {phase: round(spent[phase] / args.sessions * 1e6, 2) for phase in PHASES}
        total = sum(spent.values())
        start = total - spent["stop"]
        rounds.append({"us_per_session": micro, "starts_per_cpu_second": round(args.sessions
                       / start), "stops_per_cpu_second": round(args.sessions / spent["stop"]),
                       "gc_collections": list(watch.counts),
                       "gc_ms": [round(s * 1000, 1) for s in watch.seconds]})
        rows.append([number + 1, *micro.values(), round(total / args.sessions * 1e6, 1),
                     rounds[-1]["starts_per_cpu_second"], rounds[-1]["stops_per_cpu_second"],
                     "/".join(map(str, watch.counts)),
                     "/".join(f"{s * 1000:.0f}" for s in watch.seconds)])
    print(f"{args.sessions} sessions a round, collector {args.gc}; CPU µs per session")
    print_table(["round", *PHASES, "total", "starts/s", "stops/s", "GC runs 0/1/2",
                 "GC ms 0/1/2"], rows)
    print(f"\n{per_session} GC-tracked objects per listening session:")
    print_table(["per session", "type"], [[n, name] for name, n in per_type])
    profile_text = ""
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        one_round(manager, source, params, "profiled")
        profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top)
        profile_text = out.getvalue()
        print(profile_text)
    path = write_result("setup_cost", {
        "command": sys.argv, "sessions": args.sessions, "gc": args.gc, "rounds": rounds,
        "objects_per_session": per_session, "objects_by_type": per_type,
        "profile": profile_text,
    })
    print(f"written {path}")


if __name__ == "__main__":
    main()
