"""Tests for GB28181 audio SDP: known offers, the exact answer text, round trips, bad input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gb28181talk.errors import SdpError
from gb28181talk.signalling.sdp import (
    MAX_SDP,
    TRANSPORTS,
    AudioSdp,
    answer_for_offer,
    build_sdp,
    parse_sdp,
)

# A broadcast INVITE offer as Hikvision and Dahua devices send it (protocol.md, step 3).
BROADCAST_OFFER = (
    "v=0\r\n"
    "o=34020000001370000001 0 0 IN IP4 192.168.1.64\r\n"
    "s=Play\r\n"
    "c=IN IP4 192.168.1.64\r\n"
    "t=0 0\r\n"
    "m=audio 15062 TCP/RTP/AVP 8\r\n"
    "a=setup:active\r\n"
    "a=connection:new\r\n"
    "a=recvonly\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "y=0100000123\r\n"
    "f=v/////a/1/8/1\r\n"
)

BROADCAST_ANSWER = (
    "v=0\r\n"
    "o=34020000002000000001 0 0 IN IP4 10.0.0.5\r\n"
    "s=Play\r\n"
    "c=IN IP4 10.0.0.5\r\n"
    "t=0 0\r\n"
    "m=audio 30000 TCP/RTP/AVP 8\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=setup:passive\r\n"
    "a=connection:new\r\n"
    "a=sendonly\r\n"
    "y=0100000123\r\n"
    "f=v/////a/1/8/1\r\n"
)

# A two-way talk offer: sendrecv, PS first, bare \n line ends, extra spaces, session-level
# attributes, an unknown line and attribute, a video section whose attributes must not leak.
TALK_OFFER = (
    "v=0\n"
    "o=34020000001320000002   0 0 IN IP4   192.168.1.108  \n"
    "s=Talk\n"
    "u=http://example.invalid/\n"
    "c=IN IP4 192.168.1.108\n"
    "t=0 0\n"
    "a=setup:passive\n"
    "m=video 6000 RTP/AVP 96\n"
    "a=rtpmap:96 PS/90000\n"
    "a=setup:active\n"
    "a=recvonly\n"
    "m=audio  20000  TCP/RTP/AVP  96 8 0\n"
    "c=IN IP4 192.168.1.109\n"
    "a=rtpmap:96 PS/90000\n"
    "a=rtpmap:8 PCMA/8000\n"
    "a=rtpmap:0 PCMU/8000\n"
    "a=x-unknown:anything\n"
    "a=sendrecv\n"
    "a=connection:new\n"
    "y=0000000001\n"
    "f=v/2/4/25/1/4096a/1/8/1\n"
)

UDP_OFFER = (
    "v=0\r\n"
    "o=34020000001320000003 0 0 IN IP4 172.16.0.9\r\n"
    "s=Play\r\n"
    "t=0 0\r\n"
    "m=audio 5004 RTP/AVP 0 8\r\n"
    "a=recvonly\r\n"
)


def test_broadcast_offer_known_answer() -> None:
    offer = parse_sdp(BROADCAST_OFFER)
    assert offer == AudioSdp(
        session_name="Play",
        origin_user="34020000001370000001",
        origin_address="192.168.1.64",
        connection_address="192.168.1.64",
        port=15062,
        transport="TCP/RTP/AVP",
        payload_types=(8,),
        rtpmap=((8, "PCMA/8000"),),
        setup="active",
        connection="new",
        direction="recvonly",
        ssrc=100000123,
        f_line="v/////a/1/8/1",
    )
    assert offer.is_tcp
    assert offer.wants_passive_server
    assert offer.device_address == "192.168.1.64"
    assert offer.ssrc_text == "0100000123"
    assert offer.rtpmap_for(8) == "PCMA/8000"
    assert offer.rtpmap_for(0) is None


def test_broadcast_offer_as_gb2312_or_utf8_bytes() -> None:
    assert parse_sdp(BROADCAST_OFFER.encode("ascii")) == parse_sdp(BROADCAST_OFFER)
    chinese = BROADCAST_OFFER.replace("s=Play", "s=语音广播")
    assert parse_sdp(chinese.encode("gb2312")).session_name == "语音广播"
    assert parse_sdp(chinese.encode("utf-8")).session_name == "语音广播"


def test_talk_offer_known_answer() -> None:
    offer = parse_sdp(TALK_OFFER)
    assert offer == AudioSdp(
        session_name="Talk",
        origin_user="34020000001320000002",
        origin_address="192.168.1.108",
        connection_address="192.168.1.109",  # media-level c= wins over session-level
        port=20000,
        transport="TCP/RTP/AVP",
        payload_types=(96, 8, 0),
        rtpmap=((96, "PS/90000"), (8, "PCMA/8000"), (0, "PCMU/8000")),
        setup="passive",  # session level; the video section's setup:active is ignored
        connection="new",
        direction="sendrecv",
        ssrc=1,
        f_line="v/2/4/25/1/4096a/1/8/1",
    )
    assert not offer.wants_passive_server  # setup:passive: the server connects out


def test_udp_offer_known_answer() -> None:
    offer = parse_sdp(UDP_OFFER)
    assert offer == AudioSdp(
        session_name="Play",
        origin_user="34020000001320000003",
        origin_address="172.16.0.9",
        connection_address=None,
        port=5004,
        transport="RTP/AVP",
        payload_types=(0, 8),
        direction="recvonly",
    )
    assert not offer.is_tcp
    assert not offer.wants_passive_server
    assert offer.device_address == "172.16.0.9"  # no c=: fall back to o=
    assert offer.ssrc is None


@pytest.mark.parametrize(
    ("transport", "setup", "passive"),
    [
        ("TCP/RTP/AVP", "active", True),
        ("RTP/AVP/TCP", "active", True),
        ("TCP/RTP/AVP", "actpass", True),
        ("TCP/RTP/AVP", None, True),  # RFC 4145: an offer without setup is active
        ("TCP/RTP/AVP", "passive", False),
        ("TCP/RTP/AVP", "holdconn", False),
        ("RTP/AVP", "active", False),
    ],
)
def test_wants_passive_server(transport: str, setup: str | None, passive: bool) -> None:
    offer = AudioSdp("Play", "1", "1.2.3.4", None, 9, transport, (8,), setup=setup)
    assert offer.wants_passive_server is passive


def test_rtp_avp_tcp_is_tcp_and_kept_verbatim() -> None:
    offer = parse_sdp(BROADCAST_OFFER.replace("TCP/RTP/AVP", "rtp/avp/tcp"))
    assert offer.transport == "RTP/AVP/TCP"
    assert offer.is_tcp
    answer = answer_for_offer(offer, address="10.0.0.5", port=30000, origin_user="p")
    assert answer.transport == "RTP/AVP/TCP"


def test_answer_for_broadcast_offer_exact_text() -> None:
    offer = parse_sdp(BROADCAST_OFFER)
    answer = answer_for_offer(
        offer, address="10.0.0.5", port=30000, origin_user="34020000002000000001"
    )
    assert build_sdp(answer) == BROADCAST_ANSWER
    assert parse_sdp(BROADCAST_ANSWER) == answer


def test_answer_for_talk_offer() -> None:
    offer = parse_sdp(TALK_OFFER)
    answer = answer_for_offer(offer, address="10.0.0.5", port=30002, origin_user="p")
    assert answer.payload_types == (96,)  # the offer's first G.711/PS type
    assert answer.rtpmap == ((96, "PS/90000"),)
    assert answer.setup == "active"
    assert answer.direction == "sendrecv"
    assert answer.session_name == "Talk"
    assert answer.ssrc == 1
    assert answer.f_line == offer.f_line


@pytest.mark.parametrize(
    ("offered_setup", "answered_setup"),
    [("active", "passive"), ("passive", "active"), ("actpass", "passive"), (None, "passive"),
     ("holdconn", "holdconn")],
)
def test_answer_inverts_setup(offered_setup: str | None, answered_setup: str) -> None:
    offer = AudioSdp("Play", "1", "1.2.3.4", None, 9, "TCP/RTP/AVP", (8,), setup=offered_setup)
    answer = answer_for_offer(offer, address="10.0.0.5", port=30000, origin_user="p")
    assert answer.setup == answered_setup
    assert answer.connection == "new"


@pytest.mark.parametrize(
    ("offered", "answered"),
    [("recvonly", "sendonly"), ("sendonly", "recvonly"), ("sendrecv", "sendrecv"),
     ("inactive", "inactive"), (None, None)],
)
def test_answer_inverts_direction(offered: str | None, answered: str | None) -> None:
    offer = AudioSdp("Play", "1", "1.2.3.4", None, 9, "TCP/RTP/AVP", (8,), direction=offered)
    answer = answer_for_offer(offer, address="10.0.0.5", port=30000, origin_user="p")
    assert answer.direction == answered


def test_answer_for_udp_offer_has_no_tcp_lines() -> None:
    answer = answer_for_offer(parse_sdp(UDP_OFFER), address="10.0.0.5", port=30000,
                              origin_user="p")
    assert build_sdp(answer) == (
        "v=0\r\n"
        "o=p 0 0 IN IP4 10.0.0.5\r\n"
        "s=Play\r\n"
        "c=IN IP4 10.0.0.5\r\n"
        "t=0 0\r\n"
        "m=audio 30000 RTP/AVP 0\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=sendonly\r\n"
    )


def test_answer_payload_type_choice() -> None:
    offer = parse_sdp(TALK_OFFER)

    def choose(**kwargs: int) -> tuple[tuple[int, str], ...]:
        return answer_for_offer(offer, address="a", port=1, origin_user="p", **kwargs).rtpmap

    assert choose(payload_type=8) == ((8, "PCMA/8000"),)
    assert choose(payload_type=0) == ((0, "PCMU/8000"),)
    assert choose(payload_type=97) == ((96, "PS/90000"),)  # not offered: the first usable


def test_answer_skips_unusable_and_dynamic_non_ps_types() -> None:
    offer = AudioSdp("Talk", "1", "1.2.3.4", None, 9, "TCP/RTP/AVP", (4, 97, 98, 0),
                     rtpmap=((97, "G7221/16000"), (98, "PS/90000")))
    answer = answer_for_offer(offer, address="a", port=1, origin_user="p")
    assert answer.rtpmap == ((98, "PS/90000"),)
    assert answer.payload_types == (98,)


def test_answer_without_usable_payload_type_is_an_error() -> None:
    offer = AudioSdp("Talk", "1", "1.2.3.4", None, 9, "TCP/RTP/AVP", (4, 18))
    with pytest.raises(SdpError, match=r"\[4, 18\].*G\.711/PS"):
        answer_for_offer(offer, address="a", port=1, origin_user="p")
    with pytest.raises(SdpError, match=r"payload type 8 or G\.711/PS"):
        answer_for_offer(offer, address="a", port=1, origin_user="p", payload_type=8)
    # Explicitly asked for and offered: used even if this module would not pick it.
    answer = answer_for_offer(offer, address="a", port=1, origin_user="p", payload_type=4)
    assert answer.payload_types == (4,)
    assert answer.rtpmap == ()


def test_missing_y_and_f_are_none() -> None:
    text = BROADCAST_OFFER.replace("y=0100000123\r\n", "").replace("f=v/////a/1/8/1\r\n", "")
    offer = parse_sdp(text)
    assert offer.ssrc is None
    assert offer.f_line is None
    assert "y=" not in build_sdp(offer)


def test_short_y_is_written_back_as_ten_digits() -> None:
    offer = parse_sdp(BROADCAST_OFFER.replace("y=0100000123", "y=123"))
    assert offer.ssrc == 123
    assert "y=0000000123\r\n" in build_sdp(offer)


def test_largest_ssrc() -> None:
    assert parse_sdp(BROADCAST_OFFER.replace("y=0100000123", "y=4294967295")).ssrc == 2**32 - 1


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("m=audio 15062 TCP/RTP/AVP 8", "m=video 15062 TCP/RTP/AVP 96",
         "no m=audio line"),
        ("m=audio 15062", "m=audio abc", r"line 6 'm=audio abc .*port 'abc'"),
        ("m=audio 15062", "m=audio 65536", "port '65536' is not a number 0-65535"),
        ("m=audio 15062", "m=audio -1", "port '-1'"),
        ("m=audio 15062 TCP/RTP/AVP 8", "m=audio 15062 TCP/RTP/AVP",
         "needs a port, a transport and at least one payload type"),
        ("TCP/RTP/AVP", "RTP/SAVP", "transport 'RTP/SAVP'"),
        ("TCP/RTP/AVP 8", "TCP/RTP/AVP PCMA", "payload type 'PCMA'"),
        ("TCP/RTP/AVP 8", "TCP/RTP/AVP 128", "payload type '128'"),
        ("y=0100000123", "y=01000001x3", r"line 11 'y=01000001x3'.*decimal digits"),
        ("y=0100000123", "y=0x1234", "decimal digits"),
        ("y=0100000123", "y=-100", "decimal digits"),
        ("y=0100000123", "y=4294967296", "below 4294967296"),
        ("y=0100000123", "y=99999999999", "at most 10 digits"),
        ("y=0100000123", "y=٠١٢", "decimal digits"),  # Arabic-Indic digits are not decimal
        ("o=34020000001370000001 0 0 IN IP4 192.168.1.64", "o=3402 192.168.1.64",
         "o= needs 6 fields"),
        ("o=34020000001370000001 0 0 IN IP4 192.168.1.64\r\n", "", "no o= line"),
        ("c=IN IP4 192.168.1.64", "c=192.168.1.64", "c= needs 3 fields"),
        ("a=setup:active", "a=setup:server", "setup 'server'"),
        ("a=connection:new", "a=connection:old", "connection 'old'"),
        ("a=rtpmap:8 PCMA/8000", "a=rtpmap:8", "rtpmap needs"),
        ("s=Play", "s=Pl\x01ay", "session name"),
        ("t=0 0", "this is not sdp", r"line 5 'this is not sdp' is not of the form"),
    ],
)
def test_errors(old: str, new: str, message: str) -> None:
    text = BROADCAST_OFFER.replace(old, new)
    assert text != BROADCAST_OFFER
    with pytest.raises(SdpError, match=message):
        parse_sdp(text)


def test_undecodable_bytes() -> None:
    with pytest.raises(SdpError, match=r"neither UTF-8 .* nor GB2312/GBK/GB18030"):
        parse_sdp(BROADCAST_OFFER.encode() + b"\xff\xff")


def test_oversized_body() -> None:
    with pytest.raises(SdpError, match="limit"):
        parse_sdp("a=x\r\n" * MAX_SDP)
    with pytest.raises(SdpError, match="limit"):
        parse_sdp(b"a=x\r\n" * MAX_SDP)


def test_nul_padding_and_bom_are_tolerated() -> None:
    assert parse_sdp("\ufeff" + BROADCAST_OFFER + "\x00\x00") == parse_sdp(BROADCAST_OFFER)


def test_first_of_repeated_lines_wins() -> None:
    text = BROADCAST_OFFER + "m=audio 1 RTP/AVP 0\r\ny=0000000002\r\n" + "a=rtpmap:8 X/1\r\n"
    text = text.replace("a=rtpmap:8 PCMA/8000\r\n", "a=rtpmap:8 PCMA/8000\r\na=rtpmap:8 B/1\r\n")
    offer = parse_sdp(text)
    assert offer.port == 15062
    assert offer.ssrc == 100000123
    assert offer.rtpmap == ((8, "PCMA/8000"),)


@pytest.mark.parametrize(
    "changes",
    [
        {"session_name": "Play\r\na=sendonly"},
        {"session_name": " Play"},
        {"origin_user": "a b"},
        {"origin_address": ""},
        {"connection_address": "224.2.1.1/127"},
        {"port": 65536},
        {"port": True},
        {"transport": "UDP"},
        {"payload_types": ()},
        {"payload_types": (8, 200)},
        {"rtpmap": ((8, "PCMA/8000"), (8, "PCMU/8000"))},
        {"rtpmap": ((8, "PCMA 8000"),)},
        {"setup": "Active"},
        {"connection": "old"},
        {"direction": "both"},
        {"ssrc": 2**32},
        {"ssrc": -1},
        {"f_line": ""},
        {"f_line": "v\n"},
    ],
)
def test_invalid_values_are_refused_on_construction(changes: dict[str, object]) -> None:
    fields = {"session_name": "Play", "origin_user": "1", "origin_address": "1.2.3.4",
              "connection_address": None, "port": 9, "transport": "TCP/RTP/AVP",
              "payload_types": (8,)}
    fields.update(changes)
    with pytest.raises(SdpError):
        AudioSdp(**fields)  # type: ignore[arg-type]


def test_ipv6_addresses() -> None:
    offer = AudioSdp("Play", "1", "fe80::1", "fe80::2", 9, "TCP/RTP/AVP", (8,))
    text = build_sdp(offer)
    assert "o=1 0 0 IN IP6 fe80::1\r\n" in text
    assert "c=IN IP6 fe80::2\r\n" in text
    assert parse_sdp(text) == offer


# ------------------------------------------------------------------------ properties

_TOKEN_CHARS = st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp",
                                                 "Zs"))
tokens = st.text(_TOKEN_CHARS, min_size=1, max_size=20)
addresses = tokens.filter(lambda text: "/" not in text)
free_text = st.text(st.one_of(_TOKEN_CHARS, st.just(" ")), max_size=30).map(str.strip)
payload_types = st.integers(min_value=0, max_value=127)

audio_sdps = st.builds(
    AudioSdp,
    session_name=free_text,
    origin_user=tokens,
    origin_address=addresses,
    connection_address=st.none() | addresses,
    port=st.integers(min_value=0, max_value=65535),
    transport=st.sampled_from(sorted(TRANSPORTS)),
    payload_types=st.lists(payload_types, min_size=1, max_size=5).map(tuple),
    rtpmap=st.dictionaries(payload_types, tokens, max_size=4).map(lambda d: tuple(d.items())),
    setup=st.sampled_from([None, "active", "passive", "actpass", "holdconn"]),
    connection=st.sampled_from([None, "new", "existing"]),
    direction=st.sampled_from([None, "sendonly", "recvonly", "sendrecv", "inactive"]),
    ssrc=st.none() | st.integers(min_value=0, max_value=2**32 - 1),
    f_line=st.none() | free_text.filter(bool),
)


@given(audio_sdps)
def test_build_parse_round_trip(sdp: AudioSdp) -> None:
    text = build_sdp(sdp)
    assert parse_sdp(text) == sdp
    assert parse_sdp(text.encode("utf-8")) == sdp
    assert all(line for line in text.split("\r\n")[:-1])
    assert "\n" not in text.replace("\r\n", "")


@given(audio_sdps, st.integers(min_value=0, max_value=65535), payload_types)
def test_answer_is_valid_sdp(offer: AudioSdp, port: int, payload_type: int) -> None:
    try:
        answer = answer_for_offer(offer, address="10.0.0.5", port=port, origin_user="p",
                                  payload_type=payload_type)
    except SdpError:
        assert payload_type not in offer.payload_types
        return
    assert answer.port == port
    assert answer.device_address == "10.0.0.5"
    assert len(answer.payload_types) == 1
    assert answer.ssrc == offer.ssrc
    assert answer.f_line == offer.f_line
    assert parse_sdp(build_sdp(answer)) == answer


@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_sdp_error(text: str) -> None:
    with contextlib.suppress(SdpError):
        parse_sdp(text)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_sdp_error(data: bytes) -> None:
    with contextlib.suppress(SdpError):
        parse_sdp(data)


@given(st.data())
def test_mutated_offers_raise_only_sdp_error(data: st.DataObject) -> None:
    lines = TALK_OFFER.split("\n")
    index = data.draw(st.integers(min_value=0, max_value=len(lines) - 1))
    prefix = lines[index][:2]
    lines[index] = prefix + data.draw(st.text(max_size=40))
    with contextlib.suppress(SdpError):
        parse_sdp("\n".join(lines))
