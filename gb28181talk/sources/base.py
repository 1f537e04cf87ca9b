"""What every source kind shares: frame constants, byte/ms arithmetic, API body field parsers.

Nothing here knows a particular kind of source, so every kind's module can
import it without importing another kind (and without the registry).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from gb28181talk.errors import SourceError
from gb28181talk.interfaces import FRAME_BYTES, SAMPLE_RATE

SILENT_FRAME = bytes(FRAME_BYTES)
"""20 ms of PCM16 silence."""

BYTES_PER_MS = SAMPLE_RATE * 2 // 1000
"""PCM16 bytes per millisecond at 8 kHz mono: 16."""


def ms_to_bytes(ms: float) -> int:
    """PCM16 bytes (whole samples) in ``ms`` milliseconds of 8 kHz mono audio."""
    return int(ms * SAMPLE_RATE / 1000) * 2


def source_key(app: str, stream: str) -> str:
    """The ``app/stream`` name a source is registered and reported under."""
    return f"{app}/{stream}"


def source_description(source: Any) -> dict[str, Any]:
    """The fields every kind's ``describe()`` starts with: app, stream, kind and ended."""
    return {
        "app": source.app,
        "stream": source.stream,
        "kind": source.kind,
        "ended": source.ended,
    }


# ------------------------------------------------------------------ API body fields


def number_field(
    spec: Mapping[str, Any], field: str, default: float | None, low: float, high: float,
    kind: str,
) -> float | None:
    """A finite number field within [low, high], or its default when absent/null."""
    value = spec.get(field)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SourceError(
            f"{kind} field {field!r} must be a number from {low:g} to {high:g}, "
            f"got {value!r}"
        )
    if (isinstance(value, float) and not math.isfinite(value)) or not low <= value <= high:
        raise SourceError(
            f"{kind} field {field!r} is {value!r}; allowed: a number from {low:g} to {high:g}"
        )
    return value


def integer_field(
    spec: Mapping[str, Any], field: str, default: int, allowed: range | tuple[int, ...],
    kind: str,
) -> int:
    """An integer field among ``allowed`` (a range or a few values), or its default."""
    value = spec.get(field)
    if value is None:
        return default
    if isinstance(allowed, range):
        what = f"an integer from {allowed.start} to {allowed.stop - 1}"
    else:
        what = " or ".join(str(a) for a in allowed)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SourceError(f"{kind} field {field!r} must be {what}, got {value!r}")
    if value not in allowed:
        raise SourceError(f"{kind} field {field!r} is {value!r}; allowed: {what}")
    return value


def string_field(spec: Mapping[str, Any], field: str, default: str | None, kind: str) -> str:
    """A non-empty string field; required when ``default`` is None."""
    value = spec.get(field)
    if value is None:
        if default is None:
            raise SourceError(f"{kind} source needs field {field!r} (a string)")
        return default
    if not isinstance(value, str) or not value:
        raise SourceError(f"{kind} field {field!r} must be a non-empty string, got {value!r}")
    return value
