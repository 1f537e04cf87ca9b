"""Loopback helpers for tests: free TCP ports below the ephemeral range."""

from __future__ import annotations

import random
import socket

EPHEMERAL_LOW = 32768


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a listening socket can bind ``host:port`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port_range(count: int, host: str = "127.0.0.1") -> tuple[int, int]:
    """``count`` consecutive free ports in 20000-32767 (never handed to outgoing connections)."""
    rng = random.Random()
    for _ in range(200):
        low = rng.randrange(20000, EPHEMERAL_LOW - count)
        if all(port_is_free(port, host) for port in range(low, low + count)):
            return low, low + count - 1
    raise RuntimeError(f"no {count} consecutive free ports found on {host}")


def free_port(host: str = "127.0.0.1") -> int:
    """One free port below the ephemeral range."""
    return free_port_range(1, host)[0]
