"""Shared test configuration: Hypothesis profiles and real-peer lookup."""

from __future__ import annotations

import os
import shutil

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci", deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else "default")


def require_program(name: str) -> str:
    """Return the path of a real peer program; fail (never silently skip) in CI.

    `scripts/test` installs every peer, so a missing one under it is a broken
    install, not a reason to skip.  Run by hand without the peer, the test skips
    and says how to get it.
    """
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed; `./scripts/test` installs it with apt-get"
    if os.environ.get("GBTALK_REQUIRE_PEERS") or os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
