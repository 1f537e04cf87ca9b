"""Request bodies: how big they may be, which content types are read, and what JSON is held.

The API's bodies are a few hundred bytes of JSON or of a form, so the caps
are small; the channel (web/channel.py) enforces them before a body is read.
JSON is taken only as ``application/json`` and forms only as
``application/x-www-form-urlencoded``: a ``text/plain`` body is what a page
of another site can send without asking (no CORS preflight).  Decoded JSON
is nested at most :data:`MAX_JSON_DEPTH` deep and holds only text that can
be encoded (no lone surrogates from ``\\ud800`` escapes), so nothing stored
from it can fail later when it is listed, logged or posted in a webhook.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

from twisted.logger import Logger

from gb28181talk.web import codes
from gb28181talk.web.errors import ApiError

log = Logger()

MAX_BODY_BYTES = 1024 * 1024
"""Largest request body read; API bodies are a few hundred bytes."""

UNAUTHENTICATED_BODY_BYTES = 64 * 1024
"""Largest body read while the secret may be in it (not in the query or a bearer header)."""

MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects accepted in a JSON body (ours are 2 deep)."""

MAX_JSON_CONTAINERS = 4096
"""Most arrays and objects accepted in one JSON body (ours hold a handful); bounds the scan."""

JSON_TYPE = "application/json"
FORM_TYPE = "application/x-www-form-urlencoded"

_STRING = re.compile(rb'"[^"]*"')
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_INNERMOST_PAIR = re.compile(rb"\[\]|\{\}")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_OPENERS_IN_A_ROW = re.compile(rb"[\[{]{%d,}" % (MAX_JSON_DEPTH + 1))


def parse_body(data: bytes, content_type: str, path: str) -> dict[str, Any]:
    """A body as a dict: a JSON object or a form; {} when empty. Raises ApiError (-300)."""
    if not data.strip():
        return {}
    kind = content_type.split(";", 1)[0].strip().lower()
    looks_like_json = data.lstrip()[:1] in (b"{", b"[")
    if kind == FORM_TYPE:
        if looks_like_json:
            raise ApiError(
                codes.INVALID_ARGS,
                f"the request body looks like JSON but is sent as a form ({FORM_TYPE}, what "
                f"curl -d sends); send JSON with Content-Type: {JSON_TYPE} (curl --json, or "
                f"-H 'Content-Type: {JSON_TYPE}'), or send a form",
                415,
            )
        return dict(parse_qsl(data.decode("utf-8", "replace"), keep_blank_values=True))
    if kind == JSON_TYPE or kind.endswith("+json") or (not kind and looks_like_json):
        return parse_json(data, path)
    if not kind:
        return dict(parse_qsl(data.decode("utf-8", "replace"), keep_blank_values=True))
    raise ApiError(
        codes.INVALID_ARGS,
        f"the request body's Content-Type {kind} is not read by this API; send JSON with "
        f"Content-Type: {JSON_TYPE} or a form with Content-Type: {FORM_TYPE}",
        415,
    )


def parse_json(data: bytes, path: str) -> dict[str, Any]:
    """A JSON object nested at most MAX_JSON_DEPTH deep whose text can all be encoded."""
    problem = shape_problem(data)
    if problem is None:
        try:
            value = json.loads(data)
        except RecursionError:  # unbalanced brackets the scan could not pair
            problem = f"it is nested deeper than {MAX_JSON_DEPTH} levels"
        except (ValueError, UnicodeDecodeError) as error:
            raise _not_json(str(error)) from None
    if problem is not None:
        log.info("refused a JSON body for {path}: {problem}", path=path, problem=problem)
        raise _not_json(problem)
    if not isinstance(value, dict):
        raise ApiError(
            codes.INVALID_ARGS,
            f"the request body must be a JSON object, not a JSON {type(value).__name__}",
        )
    if _SURROGATE_ESCAPE.search(data):
        where = surrogate_at(value)
        if where is not None:
            raise ApiError(
                codes.INVALID_ARGS,
                f"the request body's {where} holds a lone surrogate (a \\ud800-\\udfff escape "
                "without its pair), which is not Unicode text; send UTF-8 text",
            )
    return value


def _not_json(detail: str) -> ApiError:
    return ApiError(
        codes.INVALID_ARGS,
        f"the request body is not valid JSON ({detail}); send a JSON object with Content-Type: "
        f"{JSON_TYPE}, or a form with Content-Type: {FORM_TYPE}",
    )


def shape_problem(data: bytes) -> str | None:
    """Why JSON text is refused before it is parsed (too deep, too many arrays), or None.

    Strings (and escapes) are blanked out and the brackets left are counted
    (at most MAX_JSON_CONTAINERS pairs), then innermost pairs are removed one
    level per pass, each pass a C-speed regex over at most 8 KiB: a body
    whose brackets do not all go in MAX_JSON_DEPTH passes is deeper.
    Brackets that never pair (invalid JSON) count as too deep when more than
    MAX_JSON_DEPTH open in a row; other invalid JSON is the parser's to report
    (and a RecursionError from it is still answered as too deep).
    """
    if data.count(b"[") + data.count(b"{") <= MAX_JSON_DEPTH:
        return None
    # Escaped backslashes, then escaped quotes, go first (bytes.replace pairs a run of
    # backslashes from its left, as JSON does), so every quote left bounds a string.
    unescaped = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside_strings = _STRING.sub(b"", unescaped)
    if outside_strings.count(b"[") + outside_strings.count(b"{") > MAX_JSON_CONTAINERS:
        return (f"it holds more than {MAX_JSON_CONTAINERS} arrays and objects; at most "
                f"{MAX_JSON_DEPTH} levels deep are read")
    if too_deep(_NOT_BRACKET.sub(b"", outside_strings)):
        return f"it is nested deeper than {MAX_JSON_DEPTH} levels"
    return None


def too_deep(brackets: bytes) -> bool:
    """Whether a string of JSON's brackets alone nests deeper than MAX_JSON_DEPTH."""
    for _ in range(MAX_JSON_DEPTH):
        if not brackets:
            return False
        fewer = _INNERMOST_PAIR.sub(b"", brackets)
        if fewer == brackets:
            return _OPENERS_IN_A_ROW.search(brackets) is not None
        brackets = fewer
    return bool(brackets) and _INNERMOST_PAIR.search(brackets) is not None


def surrogate_at(value: Any, where: str = "") -> str | None:
    """Where decoded JSON holds a lone surrogate (``field vhost``, ``field x[0]``), if anywhere."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"field {where}" if where else "text"
        return None
    if isinstance(value, dict):
        for name, item in value.items():
            if surrogate_at(name) is not None:
                return f"field name {name!a}" + (f" in {where}" if where else "")
            found = surrogate_at(item, f"{where}.{name}" if where else str(name))
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = surrogate_at(item, f"{where}[{index}]")
            if found is not None:
                return found
    return None
