"""Runs ``twistd`` with the garbage collector's pauses recorded: for benchmarks only.

    python benchmarks/gc_probe.py OUTPUT.jsonl [twistd arguments...]

Every collection that takes longer than 1 ms is appended to OUTPUT.jsonl as
``{"t": wall time, "ms": pause, "generation": n, "collected": n}`` as it
happens (a pause that long is rare, so the writes cost nothing that matters),
so a benchmark can set jitter at the devices against the service's pauses.
Every 5 s a running total is appended too (``{"t", "total_ms", "collections"}``):
the share of the core the collector takes, however short its pauses.
The service itself is unchanged; this only wraps its entry point.

With ``GBTALK_GC_FREEZE=1`` in the environment it also tries the change
proposed for service.py: once the reactor runs, one full collection and then
``gc.freeze()``, so the objects of startup (Twisted, zope.interface, our
modules: most of the heap) are no longer scanned by every full collection.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from typing import Any

THRESHOLD_S = 0.001


def install(path: str) -> None:
    """Record collections longer than THRESHOLD_S to ``path`` (JSON lines)."""
    output = open(path, "a", buffering=1)  # noqa: SIM115 (open for the process's life)
    started = [0.0]
    totals = {"seconds": 0.0, "collections": 0, "reported": time.monotonic()}

    def on_collection(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        pause = time.perf_counter() - started[0]
        totals["seconds"] += pause
        totals["collections"] += 1
        if time.monotonic() - totals["reported"] >= 5:
            totals["reported"] = time.monotonic()
            output.write(json.dumps({"t": time.time(), "total_ms": round(totals["seconds"] * 1000,
                                                                           1),
                                     "collections": totals["collections"]}) + "\n")
        if pause >= THRESHOLD_S:
            output.write(json.dumps({
                "t": time.time(), "ms": round(pause * 1000, 3),
                "generation": info.get("generation"), "collected": info.get("collected"),
            }) + "\n")

    gc.callbacks.append(on_collection)


def freeze_when_running() -> None:
    """Collect once and freeze the survivors when the reactor starts (the proposed change)."""
    from twisted.internet import reactor

    def freeze() -> None:
        gc.collect()
        gc.freeze()

    reactor.callWhenRunning(freeze)  # type: ignore[attr-defined]


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(f"usage: gc_probe.py OUTPUT.jsonl [twistd arguments...]\n\n{__doc__}")
        sys.exit(0 if len(sys.argv) >= 2 else 2)
    install(sys.argv[1])
    if os.environ.get("GBTALK_GC_FREEZE") == "1":
        freeze_when_running()
    from twisted.scripts.twistd import run

    sys.argv = ["twistd", *sys.argv[2:]]
    run()


if __name__ == "__main__":
    main()
