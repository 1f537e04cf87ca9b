"""Time port-pool lease/release in-process at several occupancies: `python benchmarks/pool_ops.py`.

Only the pool's own logic is measured: ports are "bound" on a memory reactor
(``BusyPortsReactor``), so no system call is made.  The reactor double's own
cost per lease/release is printed too, for reference.  One operation is a
lease or a release; a cycle is one of each.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.protocol import Protocol, ServerFactory

from gb28181talk.core.ports import DEFAULT_PORT_RANGE, PortPool
from gb28181talk.testing import BusyPortsReactor

OCCUPANCIES = (0.0, 0.90, 0.99)
CYCLES = 20_000
REPEATS = 7


def median_cycle_seconds(cycle: Callable[[], None], reset: Callable[[], None]) -> float:
    """Median time of one cycle over REPEATS runs of CYCLES cycles each."""
    times = []
    for _ in range(REPEATS):
        reset()
        start = time.perf_counter()
        for _ in range(CYCLES):
            cycle()
        times.append((time.perf_counter() - start) / CYCLES)
    return statistics.median(times)


def occupied_pool(occupancy: float) -> tuple[BusyPortsReactor, PortPool]:
    """A pool over the default range with ``occupancy`` of its ports leased."""
    memory = BusyPortsReactor()
    pool = PortPool(memory, *DEFAULT_PORT_RANGE, rng=random.Random(1))
    for number in range(round(occupancy * pool.size)):
        pool.listen(ServerFactory.forProtocol(Protocol), f"held-{number}")
    return memory, pool


def pool_cycle_seconds(occupancy: float, explicit: bool) -> float:
    """One lease (from the pool, or of an explicit free port of the range) and its release."""
    memory, pool = occupied_pool(occupancy)
    factory = ServerFactory.forProtocol(Protocol)
    leased = {lease.port for lease in pool.leases()}
    free_ports = [port for port in range(pool.low, pool.high + 1) if port not in leased]
    turn = iter(range(1 << 62))

    def cycle() -> None:
        port = free_ports[next(turn) % len(free_ports)] if explicit else 0
        pool.release(pool.listen(factory, "bench", port=port))

    def reset() -> None:
        memory.tcpServers.clear()

    seconds = median_cycle_seconds(cycle, reset)
    assert pool.leased_count == len(leased)
    return seconds


def reactor_cycle_seconds() -> float:
    """The memory reactor's own listenTCP + stopListening, which the pool figures include."""
    memory = BusyPortsReactor()
    factory = ServerFactory.forProtocol(Protocol)

    def cycle() -> None:
        memory.listenTCP(30000, factory, backlog=8, interface="").stopListening()

    return median_cycle_seconds(cycle, memory.tcpServers.clear)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    low, high = DEFAULT_PORT_RANGE
    print(
        f"port pool {low}-{high} ({high - low + 1} ports), {CYCLES} lease+release cycles, "
        f"median of {REPEATS} runs, Python {sys.version.split()[0]}"
    )
    print(f"{'occupancy':>10} {'kind':>9} {'ops/s':>12} {'cycles/s':>12} {'µs/cycle':>9}")
    for occupancy in OCCUPANCIES:
        for explicit in (False, True):
            seconds = pool_cycle_seconds(occupancy, explicit)
            print(
                f"{occupancy:>10.0%} {'explicit' if explicit else 'pool':>9} "
                f"{2 / seconds:>12,.0f} {1 / seconds:>12,.0f} {seconds * 1e6:>9.2f}"
            )
    seconds = reactor_cycle_seconds()
    print(
        f"{'(reactor double alone)':>20} {2 / seconds:>12,.0f} {1 / seconds:>12,.0f} "
        f"{seconds * 1e6:>9.2f}"
    )


if __name__ == "__main__":
    main()
