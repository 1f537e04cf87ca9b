"""GET /api/sessions cost: a session's figures are listed without a deep copy, same view."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from gb28181talk.core.params import SessionStats

_FIELDS = dataclasses.fields(SessionStats)


@given(st.tuples(*[st.integers(0, 2**63) if f.type == "int" else st.floats(0, 1e9)
                   for f in _FIELDS]))
def test_the_figures_view_is_what_asdict_gives_in_the_same_order(values: tuple) -> None:
    stats = SessionStats(*values)
    view = stats.as_dict()
    assert view == dataclasses.asdict(stats)
    assert list(view) == [f.name for f in _FIELDS]
