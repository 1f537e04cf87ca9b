"""ZLMediaKit's vocabulary, which both APIs and the webhook speak: result codes and names.

Taken from ZLMediaKit's ``server/WebApi.h`` (``API::ApiErr``), its
``MediaOriginType`` and toolkit ``ErrCode`` enums, so platforms built on it
(wvp-GB28181-pro and others) read our answers as they read its own.
"""

from __future__ import annotations

from typing import Final

SUCCESS: Final = 0
OTHER_FAILED: Final = -1
"""The request was valid but could not be carried out (e.g. nothing to stop)."""
AUTH_FAILED: Final = -100
"""Missing or wrong secret."""
INVALID_ARGS: Final = -300
"""A parameter is missing or malformed."""
EXCEPTION: Final = -400
"""ZLMediaKit's code for a failure while acting; ours for a busy port or an exhausted pool."""
NOT_FOUND: Final = -500
"""No such source (or session)."""

DEFAULT_VHOST: Final = "__defaultVhost__"

ORIGIN_TYPES: Final = {
    "tone": (0, "unknown"),
    "push": (0, "unknown"),
    "rtp": (3, "rtp_push"),
    "device": (3, "rtp_push"),
    "file": (6, "mp4_vod"),
}
"""Our source kinds as ZLMediaKit ``MediaOriginType`` values (number, name)."""

SOCKET_ERRORS: Final = {
    "timeout": 2,
    "receive-timeout": 2,
    "send-stalled": 2,
    "device-closed": 1,
    "source-ended": 1,
    "stopped": 6,
    "shutdown": 6,
    "ssrc-violation": -1,
    "receive-flood": -1,
    "error": -1,
}
"""End reasons as ZLMediaKit ``ErrCode`` values (eof 1, timeout 2, shutdown 6, other -1)."""


def origin_type(kind: str) -> tuple[int, str]:
    """The ZLMediaKit origin type (number, name) of a source kind."""
    return ORIGIN_TYPES.get(kind, (0, "unknown"))
