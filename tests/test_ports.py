"""The talk-port pool: explicit and pool ports, FIFO order, bind retries, leases until closed."""

from __future__ import annotations

import errno
import random
import socket
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.trial import unittest

from gb28181talk.core.ports import (
    DEFAULT_PORT_RANGE,
    HIGHEST_PORT,
    LOWEST_PORT,
    Lease,
    PortPool,
    check_port_range,
    ephemeral_overlap,
    parse_port_range,
)
from gb28181talk.errors import PoolExhaustedError, PortError, PortInUseError
from gb28181talk.testing import BusyPortsReactor

LOW, HIGH = 30000, 30004


def factory() -> ServerFactory:
    return ServerFactory.forProtocol(Protocol)


def pool_of(
    low: int = LOW,
    high: int = HIGH,
    busy: set[int] | None = None,
    seed: int = 7,
    **kwargs: Any,
) -> tuple[BusyPortsReactor, PortPool]:
    memory = BusyPortsReactor(busy or set())
    return memory, PortPool(memory, low, high, rng=random.Random(seed), **kwargs)


def allocation_order(low: int = LOW, high: int = HIGH, seed: int = 7) -> list[int]:
    """The order in which a fresh pool with this seed hands out its ports."""
    _memory, pool = pool_of(low, high, seed=seed)
    return [pool.listen(factory(), f"probe{i}").port for i in range(high - low + 1)]


def lease_all(pool: PortPool, prefix: str = "s") -> list[int]:
    """Lease from the pool until it is exhausted; the ports in the order given."""
    ports = []
    for i in range(pool.size + 1):
        try:
            ports.append(pool.listen(factory(), f"{prefix}{i}").port)
        except PoolExhaustedError:
            return ports
    raise AssertionError("the pool gave more ports than it holds")


def bound_ports(memory: BusyPortsReactor) -> list[int]:
    return [port for port, _factory, _backlog, _interface in memory.tcpServers]


# -- explicit ports ------------------------------------------------------------


def test_explicit_port_in_range_is_leased_and_listed() -> None:
    memory, pool = pool_of()
    lease = pool.listen(factory(), "s1", port=30002)
    assert (lease.port, lease.owner, lease.explicit) == (30002, "s1", True)
    assert lease.state == "listening"
    assert bound_ports(memory) == [30002]
    assert pool.leases() == [lease]
    assert (pool.free_count, pool.leased_count) == (4, 1)
    assert 30002 not in lease_all(pool)


def test_explicit_port_held_by_another_session_names_it_and_changes_nothing() -> None:
    memory, pool = pool_of()
    pool.listen(factory(), "announce-1", port=30002)
    with pytest.raises(PortInUseError) as caught:
        pool.listen(factory(), "announce-2", port=30002)
    message = str(caught.value)
    assert caught.value.port == 30002
    assert "port 30002" in message
    assert "talk session announce-1 (listening)" in message
    assert "30000-30004, 4 free" in message
    assert bound_ports(memory) == [30002]
    assert [lease.owner for lease in pool.leases()] == ["announce-1"]


def test_explicit_port_held_by_another_process_names_the_port() -> None:
    memory, pool = pool_of(busy={30003})
    with pytest.raises(PortInUseError) as caught:
        pool.listen(factory(), "s1", port=30003)
    message = str(caught.value)
    assert "port 30003" in message
    assert "another process" in message
    assert "Address already in use" in message
    assert pool.leases() == []
    assert pool.free_count == 5
    memory.busy.clear()
    assert sorted(lease_all(pool)) == list(range(LOW, HIGH + 1))


@pytest.mark.parametrize("port", [-1, 1, 80, 1023, 65536, 70000])
def test_explicit_port_outside_1024_65535_is_refused(port: int) -> None:
    memory, pool = pool_of()
    with pytest.raises(PortInUseError) as caught:
        pool.listen(factory(), "s1", port=port)
    assert str(caught.value) == (
        f"port {port} cannot be used: talk ports must be in 1024-{HIGHEST_PORT} (below 1024 "
        "are system services' ports); leave src_port empty to use the pool"
    )
    assert memory.tcpServers == []
    assert pool.leases() == []


def test_explicit_port_outside_the_range_is_leased_listed_but_never_queued() -> None:
    memory, pool = pool_of()
    lease = pool.listen(factory(), "outsider", port=40000)
    assert lease.explicit
    assert pool.describe()["leases"][0]["port"] == 40000
    assert (pool.free_count, pool.leased_count) == (5, 1)
    pool.release(lease)
    assert (pool.free_count, pool.leased_count) == (5, 0)
    for _ in range(3):
        given_ports = lease_all(pool)
        assert sorted(given_ports) == list(range(LOW, HIGH + 1))
        for each in list(pool.leases()):
            pool.release(each)
    assert 40000 not in bound_ports(memory)[1:]


def test_port_zero_means_the_pool() -> None:
    _memory, pool = pool_of()
    lease = pool.listen(factory(), "s1", port=0)
    assert not lease.explicit
    assert pool.in_range(lease.port)


# -- pool order ------------------------------------------------------------------


def test_pool_allocation_is_a_shuffled_permutation_of_the_range() -> None:
    low, high = 30000, 30099
    order = allocation_order(low, high, seed=1)
    assert sorted(order) == list(range(low, high + 1))
    assert order != sorted(order)
    assert order == allocation_order(low, high, seed=1)
    assert order != allocation_order(low, high, seed=2)


def test_pool_without_a_seed_is_shuffled_differently_each_time() -> None:
    orders = set()
    for _ in range(3):
        memory = BusyPortsReactor()
        pool = PortPool(memory, 30000, 30099)
        orders.add(tuple(lease_all(pool)))
    assert len(orders) > 1


def test_a_released_port_goes_to_the_back_of_the_line() -> None:
    _memory, pool = pool_of()
    first = pool.listen(factory(), "s0")
    pool.release(first)
    next_four = [pool.listen(factory(), f"s{i}").port for i in range(1, 5)]
    assert first.port not in next_four
    assert sorted([*next_four, first.port]) == list(range(LOW, HIGH + 1))
    assert pool.listen(factory(), "s5").port == first.port


def test_released_ports_come_back_in_release_order() -> None:
    _memory, pool = pool_of()
    leases = [pool.listen(factory(), f"s{i}") for i in range(5)]
    for index in (3, 0, 4):
        pool.release(leases[index])
    assert lease_all(pool, "again") == [leases[3].port, leases[0].port, leases[4].port]


def test_an_explicitly_leased_pool_port_also_goes_to_the_back_when_released() -> None:
    order = allocation_order()
    _memory, pool = pool_of()
    lease = pool.listen(factory(), "explicit", port=order[0])
    pool.release(lease)
    assert lease_all(pool) == [*order[1:], order[0]]


# -- ports held by other processes -------------------------------------------------


def test_busy_pool_ports_are_skipped_stay_free_and_go_to_the_back() -> None:
    order = allocation_order()
    memory, pool = pool_of(busy=set(order[:2]))
    lease = pool.listen(factory(), "s1")
    assert lease.port == order[2]
    assert bound_ports(memory) == [order[2]]
    assert pool.free_count == 4
    memory.busy.clear()
    assert lease_all(pool) == [order[3], order[4], order[0], order[1]]


def test_bind_attempts_bound_the_tries_and_the_message_lists_them() -> None:
    low, high = 30000, 30009
    order = allocation_order(low, high)
    memory, pool = pool_of(low, high, busy=set(range(low, high + 1)), bind_attempts=3)
    with pytest.raises(PoolExhaustedError) as caught:
        pool.listen(factory(), "s1")
    message = str(caught.value)
    assert f"could not bind any of the 3 pool ports tried ({', '.join(map(str, order[:3]))})" in (
        message
    )
    assert "Address already in use" in message and "other processes may hold them" in message
    assert "10 of 10 ports in 30000-30009 are not leased by us" in message
    assert memory.tcpServers == []
    assert pool.leases() == []
    with pytest.raises(PoolExhaustedError) as again:
        pool.listen(factory(), "s2")
    assert f"({', '.join(map(str, order[3:6]))})" in str(again.value)
    memory.busy = {order[6]}
    assert pool.listen(factory(), "s3").port == order[7]


def test_pool_exhaustion_says_all_ports_are_leased() -> None:
    _memory, pool = pool_of(30000, 30002)
    assert len(lease_all(pool)) == 3
    with pytest.raises(PoolExhaustedError) as caught:
        pool.listen(factory(), "one-too-many")
    message = str(caught.value)
    assert "all 3 ports are leased" in message
    assert "30000-30002" in message
    assert "widen the port range" in message


def test_a_pool_with_only_other_processes_ports_left_says_so() -> None:
    order = allocation_order()
    memory, pool = pool_of(busy={order[4]})
    assert lease_all(pool) == order[:4]
    with pytest.raises(PoolExhaustedError) as caught:
        pool.listen(factory(), "s9")
    assert f"could not bind any of the 1 pool ports tried ({order[4]})" in str(caught.value)
    assert memory.busy == {order[4]}


def test_an_oserror_from_listen_skips_the_port_and_loses_nothing() -> None:
    """Twisted wraps bind() errors in CannotListenError but not listen()'s."""

    class ListenFailsOnce(BusyPortsReactor):
        failed_on: int | None = None

        def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
            if self.failed_on is None:
                self.failed_on = port
                raise OSError(errno.EADDRINUSE, "Address already in use")
            return super().listenTCP(port, factory, backlog, interface)

    order = allocation_order()
    memory = ListenFailsOnce()
    pool = PortPool(memory, LOW, HIGH, rng=random.Random(7))
    first = pool.listen(factory(), "s1")
    assert memory.failed_on == order[0]
    assert first.port == order[1]
    assert pool.free_count == 4
    assert lease_all(pool) == [*order[2:], order[0]]


def test_an_oserror_from_listen_on_an_explicit_port_is_a_port_in_use_error() -> None:
    class ListenFails(BusyPortsReactor):
        def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
            raise OSError(errno.EADDRINUSE, "Address already in use")

    pool = PortPool(ListenFails(), LOW, HIGH)
    with pytest.raises(PortInUseError, match=r"port 30001 cannot be used.*another process"):
        pool.listen(factory(), "s1", port=30001)
    assert (pool.free_count, pool.leased_count) == (5, 0)


# -- release --------------------------------------------------------------------


def test_release_twice_acts_once_and_returns_the_same_deferred() -> None:
    _memory, pool = pool_of()
    lease = pool.listen(factory(), "s1")
    returned: list[None] = []
    first = pool.release(lease)
    first.addCallback(returned.append)
    second = pool.release(lease)
    assert second is first
    assert returned == [None]
    assert lease.state == "released"
    assert (pool.free_count, pool.leased_count) == (5, 0)
    assert sorted(lease_all(pool)) == list(range(LOW, HIGH + 1))


def test_release_of_a_memory_port_is_immediate() -> None:
    _memory, pool = pool_of()
    lease = pool.listen(factory(), "s1")
    closed = pool.release(lease)
    assert closed.called
    assert lease.listening_port is None
    assert pool.leases() == []


# -- listings -------------------------------------------------------------------


def test_leases_and_describe_show_port_session_since_and_state() -> None:
    memory, pool = pool_of()
    memory.advance(5.0)
    pooled = pool.listen(factory(), "announce")
    memory.advance(2.5)
    explicit = pool.listen(factory(), "talk", port=40000)
    assert pool.leases() == [pooled, explicit]
    assert pool.describe() == {
        "range": [LOW, HIGH],
        "interface": "",
        "free": 4,
        "leased": 2,
        "leases": [
            {
                "port": pooled.port,
                "session": "announce",
                "since": 5.0,
                "state": "listening",
                "explicit": False,
            },
            {
                "port": 40000,
                "session": "talk",
                "since": 7.5,
                "state": "listening",
                "explicit": True,
            },
        ],
    }
    pool.release(pooled)
    assert pooled.state == "released"
    assert [lease["session"] for lease in pool.describe()["leases"]] == ["talk"]
    assert pool.describe()["free"] == 5


def test_leases_are_listed_oldest_first_then_by_port() -> None:
    memory, pool = pool_of()
    late = pool.listen(factory(), "b", port=30004)
    early = pool.listen(factory(), "a", port=30001)
    memory.advance(1)
    latest = pool.listen(factory(), "c", port=30000)
    assert pool.leases() == [early, late, latest]


# -- ranges ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30000-35000", (30000, 35000)),
        ("  30000 - 35000\n", (30000, 35000)),
        ("40000", (40000, 40000)),
        ("1024-65535", (1024, 65535)),
    ],
)
def test_parse_port_range_accepts(text: str, expected: tuple[int, int]) -> None:
    assert parse_port_range(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "is not LO-HI with whole numbers, e.g. 20000-24999"),
        ("abc", "'abc' is not LO-HI with whole numbers"),
        ("-30000", "is not LO-HI"),
        ("30000-31000-32000", "is not LO-HI"),
        ("3e4-35000", "is not LO-HI"),
        ("35000-30000", "port range 35000-30000 is not valid: it must satisfy 1024 <= LO <= HI"),
        ("80-90", "port range 80-90 is not valid"),
        ("30000-70000", "<= 65535"),
        ("0", "port range 0-0 is not valid"),
    ],
)
def test_parse_port_range_rejects_with_a_clear_message(text: str, fragment: str) -> None:
    with pytest.raises(PortError) as caught:
        parse_port_range(text)
    assert fragment in str(caught.value)


def test_parse_port_range_rejects_a_missing_high_end() -> None:
    with pytest.raises(PortError, match="is not LO-HI"):
        parse_port_range("30000-")


@pytest.mark.parametrize(
    ("low", "high"), [(1023, 2000), (30000, 29999), (60000, 65536), (0, 0), (-5, 10)]
)
def test_check_port_range_rejects(low: int, high: int) -> None:
    with pytest.raises(PortError, match=f"port range {low}-{high} is not valid"):
        check_port_range(low, high)


def test_check_port_range_accepts_the_edges() -> None:
    check_port_range(LOWEST_PORT, LOWEST_PORT)
    check_port_range(HIGHEST_PORT, HIGHEST_PORT)
    check_port_range(*DEFAULT_PORT_RANGE)


def test_pool_checks_its_range_and_its_reactor() -> None:
    with pytest.raises(PortError, match="35000-30000"):
        PortPool(BusyPortsReactor(), 35000, 30000)
    with pytest.raises(TypeError, match="IReactorTCP and IReactorTime"):
        PortPool(object(), 30000, 35000)


@given(st.text())
def test_parse_port_range_gives_a_valid_range_or_port_error(text: str) -> None:
    try:
        low, high = parse_port_range(text)
    except PortError:
        return
    assert LOWEST_PORT <= low <= high <= HIGHEST_PORT


@given(st.integers(LOWEST_PORT, HIGHEST_PORT), st.integers(LOWEST_PORT, HIGHEST_PORT))
def test_parse_port_range_round_trips_valid_ranges(one: int, other: int) -> None:
    low, high = min(one, other), max(one, other)
    assert parse_port_range(f"{low}-{high}") == (low, high)
    assert parse_port_range(str(low)) == (low, low)


@given(st.integers(-100_000, 100_000), st.integers(-100_000, 100_000))
def test_check_port_range_agrees_with_its_rule(low: int, high: int) -> None:
    valid = LOWEST_PORT <= low <= high <= HIGHEST_PORT
    try:
        check_port_range(low, high)
    except PortError:
        assert not valid
    else:
        assert valid


# -- the ephemeral range ----------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "low", "high", "expected"),
    [
        ("32768\t60999\n", 30000, 35000, (32768, 35000)),
        ("32768\t60999\n", 30000, 32000, None),
        ("32768\t60999\n", 40000, 41000, (40000, 41000)),
        ("32768\t60999\n", 60999, 65000, (60999, 60999)),
        ("49152 65535", 30000, 35000, None),
        ("", 30000, 35000, None),
        ("not numbers", 30000, 35000, None),
        ("1 2 3", 30000, 35000, None),
    ],
)
def test_ephemeral_overlap_reads_the_proc_file(
    tmp_path: Path, content: str, low: int, high: int, expected: tuple[int, int] | None
) -> None:
    proc = tmp_path / "ip_local_port_range"
    proc.write_text(content)
    assert ephemeral_overlap(low, high, str(proc)) == expected


def test_ephemeral_overlap_without_the_proc_file_is_none(tmp_path: Path) -> None:
    assert ephemeral_overlap(30000, 35000, str(tmp_path / "missing")) is None


# -- the queue stays bounded -------------------------------------------------------


def test_repeated_explicit_leases_of_pool_ports_keep_the_queue_bounded() -> None:
    memory, pool = pool_of()
    for round_number in range(1000):
        port = LOW + round_number % pool.size
        pool.release(pool.listen(factory(), f"explicit{round_number}", port=port))
        assert len(pool._queue) <= 2 * pool.size + 1  # the deque's stale entries
    assert (pool.free_count, pool.leased_count) == (5, 0)
    given_ports = lease_all(pool)
    assert sorted(given_ports) == list(range(LOW, HIGH + 1))
    for lease in pool.leases():
        pool.release(lease)
    assert sorted(lease_all(pool, "again")) == list(range(LOW, HIGH + 1))
    assert len(memory.tcpServers) == 1000 + 2 * pool.size


def test_explicit_leases_mixed_with_pool_leases_never_give_a_port_twice() -> None:
    rng = random.Random(3)
    _memory, pool = pool_of(30000, 30019)
    held: dict[int, Lease] = {}
    for step in range(3000):
        action = rng.random()
        if action < 0.4 and held:
            pool.release(held.pop(rng.choice(list(held))))
        elif action < 0.7:
            port = rng.randint(30000, 30021)
            if port in held:
                with pytest.raises(PortInUseError):
                    pool.listen(factory(), f"x{step}", port=port)
            else:
                held[port] = pool.listen(factory(), f"x{step}", port=port)
        else:
            try:
                lease = pool.listen(factory(), f"p{step}")
            except PoolExhaustedError:
                assert pool.free_count == 0
                continue
            assert lease.port not in held
            held[lease.port] = lease
        assert pool.leased_count == len(held)
        assert pool.free_count == 20 - sum(1 for port in held if pool.in_range(port))
        assert len(pool._queue) <= 2 * pool.size + 1


# -- real sockets on loopback -------------------------------------------------------


def async_test(
    method: Callable[..., Coroutine[Any, Any, None]],
) -> Callable[..., Deferred[None]]:
    """Run an ``async def`` test method as a Deferred, which trial waits for."""

    def run(self: Any) -> Deferred[None]:
        return Deferred.fromCoroutine(method(self))

    run.__name__ = method.__name__
    return run


def kernel_port(family: socket.AddressFamily = socket.AF_INET, host: str = "127.0.0.1") -> int:
    """A port the kernel just had free (closed again at once)."""
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def can_bind(
    port: int, family: socket.AddressFamily = socket.AF_INET, host: str = "127.0.0.1"
) -> bool:
    """Whether a plain socket (no SO_REUSEADDR) can bind ``host:port`` now."""
    with socket.socket(family, socket.SOCK_STREAM) as plain:
        try:
            plain.bind((host, port))
        except OSError as error:
            assert error.errno == errno.EADDRINUSE
            return False
        return True


def ipv6_loopback_missing() -> str | None:
    """Why IPv6 loopback tests cannot run here, or None if they can."""
    if not socket.has_ipv6:
        return "this Python was built without IPv6"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError as error:
        return f"the kernel has no IPv6 loopback (binding [::1]:0 failed: {error})"
    return None


class RealSocketPoolTests(unittest.TestCase):
    """The pool on the real reactor, on loopback."""

    timeout = 15

    def held_by_another_process(
        self, family: socket.AddressFamily = socket.AF_INET, host: str = "127.0.0.1"
    ) -> int:
        """Bind and listen a plain socket (standing for another process); its port."""
        other = socket.socket(family, socket.SOCK_STREAM)
        self.addCleanup(other.close)
        other.bind((host, 0))
        other.listen(1)
        return int(other.getsockname()[1])

    def test_explicit_port_held_by_another_process(self) -> None:
        port = self.held_by_another_process()
        pool = PortPool(reactor, interface="127.0.0.1")
        with self.assertRaises(PortInUseError) as caught:
            pool.listen(factory(), "s1", port=port)
        message = str(caught.exception)
        self.assertIn(f"port {port} cannot be used", message)
        self.assertIn(f"binding 127.0.0.1:{port} failed", message)
        self.assertIn("another process", message)
        self.assertEqual(pool.leases(), [])

    def test_pool_port_held_by_another_process_is_skipped(self) -> None:
        port = self.held_by_another_process()
        pool = PortPool(reactor, port, port, interface="127.0.0.1")
        with self.assertRaises(PoolExhaustedError) as caught:
            pool.listen(factory(), "s1")
        self.assertIn(
            f"could not bind any of the 1 pool ports tried ({port})", str(caught.exception)
        )
        self.assertEqual(pool.free_count, 1)

    @async_test
    async def test_explicit_port_is_bound_then_returned_once_closed(self) -> None:
        port = kernel_port()
        pool = PortPool(reactor, interface="127.0.0.1")
        lease = pool.listen(factory(), "s1", port=port)
        self.assertEqual(lease.listening_port.getHost().port, port)  # type: ignore[union-attr]
        self.assertFalse(can_bind(port))
        await pool.release(lease)
        self.assertTrue(can_bind(port))

    @async_test
    async def test_lease_stays_closing_until_the_socket_is_closed(self) -> None:
        pool = PortPool(reactor, interface="127.0.0.1")
        lease = pool.listen(factory(), "announce")
        port = lease.port
        self.assertTrue(pool.in_range(port))
        self.assertEqual(pool.free_count, pool.size - 1)

        closed = pool.release(lease)
        self.assertIs(pool.release(lease), closed)
        self.assertFalse(closed.called)
        self.assertEqual(lease.state, "closing")
        self.assertEqual(
            [(each["port"], each["session"], each["state"]) for each in pool.describe()["leases"]],
            [(port, "announce", "closing")],
        )
        self.assertEqual(pool.free_count, pool.size - 1)
        self.assertFalse(can_bind(port), "the listening socket should still be open")
        with self.assertRaises(PortInUseError) as caught:
            pool.listen(factory(), "other", port=port)
        self.assertIn("talk session announce (closing)", str(caught.exception))

        await closed
        self.assertEqual(lease.state, "released")
        self.assertEqual(pool.leases(), [])
        self.assertEqual(pool.free_count, pool.size)
        self.assertTrue(can_bind(port))

    @async_test
    async def test_a_connection_reaches_the_pool_port(self) -> None:
        connected: Deferred[None] = Deferred()

        class Accepting(Protocol):
            def connectionMade(self) -> None:
                connected.callback(None)
                self.transport.loseConnection()  # type: ignore[union-attr]

        pool = PortPool(reactor, interface="127.0.0.1")
        lease = pool.listen(ServerFactory.forProtocol(Accepting), "s1")
        self.addCleanup(pool.release, lease)
        with socket.create_connection(("127.0.0.1", lease.port), timeout=5):
            await connected

    @async_test
    async def test_ipv6_loopback_pool(self) -> None:
        missing = ipv6_loopback_missing()
        if missing is not None:
            raise unittest.SkipTest(missing)
        pool = PortPool(reactor, interface="::1")
        lease = pool.listen(factory(), "v6")
        host = lease.listening_port.getHost()  # type: ignore[union-attr]
        self.assertEqual((host.type, host.host, host.port), ("TCP", "::1", lease.port))
        self.assertFalse(can_bind(lease.port, socket.AF_INET6, "::1"))
        with socket.create_connection(("::1", lease.port), timeout=5):
            pass

        other = self.held_by_another_process(socket.AF_INET6, "::1")
        with self.assertRaises(PortInUseError) as caught:
            pool.listen(factory(), "v6-explicit", port=other)
        self.assertIn(f"binding ::1:{other} failed", str(caught.exception))

        await pool.release(lease)
        self.assertTrue(can_bind(lease.port, socket.AF_INET6, "::1"))
