"""Properties of the body checks: the bracket scan agrees with the real nesting of any JSON."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gb28181talk.web.body import MAX_JSON_DEPTH, parse_json, shape_problem, surrogate_at
from gb28181talk.web.errors import ApiError

tricky_text = st.text(alphabet=st.sampled_from('[]{}"\\:,ab \n\u00e9\U0001f600'), max_size=12)
leaves = st.one_of(st.none(), st.booleans(), st.integers(), tricky_text)
trees = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(tricky_text, inner, max_size=3),
    max_leaves=8,
)


def depth(value: Any) -> int:
    """Nesting of arrays and objects: 0 for a scalar, 1 for [] or {}."""
    if isinstance(value, list):
        return 1 + max((depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(item) for item in value.values()), default=0)
    return 0


@given(core=trees, wraps=st.lists(st.sampled_from(["list", "dict"]), max_size=40),
       key=tricky_text)
def test_the_scan_agrees_with_the_nesting(core: Any, wraps: list[str], key: str) -> None:
    value = core
    for kind in wraps:
        value = [value] if kind == "list" else {key: value}
    data = json.dumps(value, ensure_ascii=bool(len(wraps) % 2)).encode()
    assert (shape_problem(data) is not None) == (depth(value) > MAX_JSON_DEPTH)


@given(wraps=st.integers(MAX_JSON_DEPTH + 1, 5000))
def test_unclosed_deep_brackets_are_too_deep(wraps: int) -> None:
    for opening in (b"[", b"[{", b'{"a":'):
        problem = shape_problem(opening * wraps)
        assert problem is not None and str(MAX_JSON_DEPTH) in problem


@given(value=st.dictionaries(tricky_text, trees, max_size=4))
def test_valid_text_is_accepted_and_decoded_as_sent(value: dict[str, Any]) -> None:
    if depth(value) <= MAX_JSON_DEPTH:
        assert parse_json(json.dumps(value).encode(), "/t") == value


@given(before=tricky_text, after=tricky_text, lone=st.integers(0xD800, 0xDFFF))
def test_a_lone_surrogate_is_always_found(before: str, after: str, lone: int) -> None:
    raw = json.dumps({"app": "a", "x": [before + "PLACE" + after]}).replace(
        "PLACE", f"\\u{lone:04x}")
    try:
        decoded = json.loads(raw)
    except ValueError:
        return
    if surrogate_at(decoded) is None:  # it paired with a neighbour: ordinary text
        json.dumps(decoded, ensure_ascii=False).encode("utf-8")
        return
    try:
        parse_json(raw.encode(), "/t")
    except ApiError as error:
        assert error.code == -300 and "x[0]" in error.msg
    else:
        raise AssertionError("a lone surrogate was accepted")
