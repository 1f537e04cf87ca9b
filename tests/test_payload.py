"""The payload table: payload type <-> law <-> raw/PS <-> rtpmap, and the downlink choice."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gb28181talk.core.params import PS_PAYLOAD_TYPE, SessionKey, SessionParams
from gb28181talk.media.law import Law
from gb28181talk.media.payload import (
    DOWNLINK_PREFERENCE,
    PCMA,
    PCMU,
    PS,
    Packaging,
    PayloadError,
    by_payload_type,
    choose_downlink,
    identify,
    payload_for,
)


def test_the_table_rows() -> None:
    assert (PCMA.payload_type, PCMA.law, PCMA.packaging, PCMA.rtpmap) == (
        8, Law.ALAW, Packaging.RAW, "PCMA/8000")
    assert (PCMU.payload_type, PCMU.law, PCMU.packaging, PCMU.rtpmap) == (
        0, Law.ULAW, Packaging.RAW, "PCMU/8000")
    assert (PS.payload_type, PS.law, PS.packaging, PS.rtpmap) == (
        96, None, Packaging.PS, "PS/90000")
    assert (PCMA.ticks(20), PS.ticks(20), PCMU.ticks(180)) == (160, 1800, 1440)
    assert PS.payload_type == PS_PAYLOAD_TYPE


@pytest.mark.parametrize("law", list(Law))
def test_raw_rows_agree_with_the_law(law: Law) -> None:
    payload = payload_for(Packaging.RAW, law)
    assert payload.law is law
    assert payload.payload_type == law.payload_type
    assert payload.encoding_name == law.encoding_name
    assert by_payload_type(payload.payload_type) is payload
    assert payload_for(Packaging.PS, law) is PS


@pytest.mark.parametrize(("packaging", "law", "expected"), [
    (Packaging.RAW, Law.ALAW, 8), (Packaging.RAW, Law.ULAW, 0),
    (Packaging.PS, Law.ALAW, 96), (Packaging.PS, Law.ULAW, 96),
])
def test_session_params_take_the_default_payload_type_from_the_table(
    packaging: Packaging, law: Law, expected: int
) -> None:
    params = SessionParams(key=SessionKey("v", "a", "s", 1), packaging=packaging, law=law)
    assert params.rtp_payload_type == expected
    assert params.payload is payload_for(packaging, law)
    asked = SessionParams(key=SessionKey("v", "a", "s", 1), packaging=packaging, payload_type=98)
    assert asked.rtp_payload_type == 98


def test_identify_by_rtpmap_first_then_number() -> None:
    assert identify(98, "PCMA/8000") is PCMA
    assert identify(8, "pcmu/8000") is PCMU
    assert identify(8, "H264/90000") is None
    assert identify(8) is PCMA and identify(0) is PCMU and identify(96) is PS
    assert identify(97) is None and by_payload_type(97) is None


def test_choose_downlink_prefers_pcma_then_pcmu_then_ps() -> None:
    assert choose_downlink([96, 0, 8]) == (8, PCMA)
    assert choose_downlink([96, 0]) == (0, PCMU)
    assert choose_downlink([96]) == (96, PS)
    assert choose_downlink([98, 96], {98: "PS/90000", 96: "H264/90000"}) == (98, PS)
    assert choose_downlink([100, 0], {100: "PCMA/8000"}) == (100, PCMA)
    with pytest.raises(PayloadError, match=r"no G.711 \(PCMA/PCMU\) or PS payload: \[97\]"):
        choose_downlink([97])


def _reference_choice(payload_types: list[int], rtpmaps: dict[int, str]):
    """The rule as sip/seam.py wrote it before the table: by name, else by number."""
    names = {pt: rtpmaps.get(pt, "").split("/")[0].upper() for pt in payload_types}
    for name, number, payload in (("PCMA", 8, PCMA), ("PCMU", 0, PCMU), ("PS", 96, PS)):
        for pt, offered in names.items():
            if offered == name or (not offered and pt == number):
                return pt, payload
    return None


encodings = st.sampled_from(["PCMA/8000", "PCMU/8000", "PS/90000", "H264/90000", "pcma/8000"])


@given(payload_types=st.lists(st.sampled_from([0, 8, 96, 97, 98, 100]), max_size=6, unique=True),
       data=st.data())
def test_choose_downlink_matches_the_rule_it_replaced(payload_types: list[int], data) -> None:
    rtpmaps = data.draw(st.dictionaries(st.sampled_from(payload_types), encodings)
                        if payload_types else st.just({}))
    expected = _reference_choice(payload_types, rtpmaps)
    if expected is None:
        with pytest.raises(PayloadError):
            choose_downlink(payload_types, rtpmaps)
        return
    chosen, payload = choose_downlink(payload_types, rtpmaps)
    assert (chosen, payload) == expected
    assert chosen in payload_types
    assert identify(chosen, rtpmaps.get(chosen)) is payload
    better = DOWNLINK_PREFERENCE[: DOWNLINK_PREFERENCE.index(payload)]
    assert all(identify(pt, rtpmaps.get(pt)) not in better for pt in payload_types)
