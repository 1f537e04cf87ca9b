"""Tests for SIP message parsing and building: RFC 3261 forms, caps, round trips, any chunking."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gb28181talk.errors import (
    SignallingError,
    SipError,
    SipParseError,
    SipTooLarge,
    SipVersionError,
)
from gb28181talk.sip.message import (
    MAX_MESSAGE,
    CSeq,
    NameAddr,
    SipRequest,
    SipResponse,
    SipUri,
    StreamParser,
    Via,
    build,
    canonical_name,
    error_response,
    parse_datagram,
    parse_message,
    request,
    response,
    response_for,
)

REGISTER = (
    b"REGISTER sip:34020000002000000001@3402000000 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1234\r\n"
    b"From: <sip:34020000001320000001@3402000000>;tag=866925\r\n"
    b"To: <sip:34020000001320000001@3402000000>\r\n"
    b"Call-ID: 1720283744\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b"Contact: <sip:34020000001320000001@192.168.1.64:5060>\r\n"
    b"Max-Forwards: 70\r\n"
    b"User-Agent: IP Camera\r\n"
    b"Expires: 3600\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def test_a_device_register_parses_into_its_parts():
    message = parse_message(REGISTER)
    assert isinstance(message, SipRequest)
    assert message.method == "REGISTER"
    assert message.uri == "sip:34020000002000000001@3402000000"
    assert message.call_id == "1720283744"
    assert message.cseq == CSeq(1, "REGISTER")
    assert message.from_.tag == "866925"
    assert message.to.tag is None
    assert message.top_via.branch == "z9hG4bK1234"
    assert message.top_via.rport is True
    assert message.header("expires") == "3600"
    assert message.header("Content-Length") is None  # framing, not a kept header
    assert message.body == b""
    assert build(message) == REGISTER


def test_compact_forms_expand_to_canonical_names():
    raw = (
        b"MESSAGE sip:a@b SIP/2.0\r\n"
        b"v: SIP/2.0/UDP h:5060;branch=z9hG4bKx\r\n"
        b"f: <sip:d@b>;tag=1\r\nt: <sip:a@b>\r\ni: cid\r\nCSeq: 2 MESSAGE\r\n"
        b"m: <sip:d@h>\r\nc: Application/MANSCDP+xml\r\nk: path\r\ns: hello\r\n"
        b"e: gzip\r\nl: 2\r\n\r\nhi"
    )
    message = parse_message(raw)
    names = [name for name, _ in message.headers]
    assert names == [
        "Via", "From", "To", "Call-ID", "CSeq", "Contact",
        "Content-Type", "Supported", "Subject", "Content-Encoding",
    ]  # fmt: skip
    assert message.body == b"hi"
    assert message.header("c") == "Application/MANSCDP+xml"


def test_header_names_are_case_insensitive_and_kept_canonical():
    assert canonical_name("call-id") == "Call-ID"
    assert canonical_name("CSEQ") == "CSeq"
    assert canonical_name("www-authenticate") == "WWW-Authenticate"
    assert canonical_name("x-gb-thing") == "X-Gb-Thing"
    raw = REGISTER.replace(b"Call-ID", b"CALL-id").replace(b"CSeq", b"cseq")
    message = parse_message(raw)
    assert message.call_id == "1720283744"
    assert ("Call-ID", "1720283744") in message.headers


def test_multiple_via_comma_separated_and_repeated_in_order():
    raw = REGISTER.replace(
        b"Via: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1234\r\n",
        b"Via: SIP/2.0/UDP proxy.example:5060;branch=z9hG4bKp1, SIP/2.0/TCP [2001:db8::1]:5070"
        b" ;branch=z9hG4bKp2\r\nv: SIP / 2.0 / udp 192.168.1.64;rport=1;received=10.0.0.1\r\n",
    )
    vias = parse_message(raw).vias
    assert [(v.transport, v.host, v.port) for v in vias] == [
        ("UDP", "proxy.example", 5060),
        ("TCP", "[2001:db8::1]", 5070),
        ("UDP", "192.168.1.64", None),
    ]
    assert vias[1].branch == "z9hG4bKp2"
    assert vias[2].rport == 1
    assert vias[2].received == "10.0.0.1"


def test_rport_and_received_are_stamped_and_responses_go_there():
    via = Via.parse("SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1")
    stamped = via.stamped("203.0.113.9", 40112)
    assert str(stamped) == (
        "SIP/2.0/UDP 192.168.1.64:5060;rport=40112;branch=z9hG4bK1;received=203.0.113.9"
    )
    assert stamped.response_address() == ("203.0.113.9", 40112)
    plain = Via.parse("SIP/2.0/UDP 192.168.1.64;branch=z9hG4bK1")
    assert plain.stamped("192.168.1.64", 5060) == plain  # same host, no rport: untouched
    assert plain.stamped("10.1.1.1", 5062).response_address() == ("10.1.1.1", 5060)
    assert Via.parse("SIP/2.0/UDP h:5070").response_address() == ("h", 5070)


def test_folded_header_lines_join_with_one_space():
    folded = b"User-Agent: IP\r\n   Camera\r\n\t v2\r\n"
    raw = REGISTER.replace(b"User-Agent: IP Camera\r\n", folded)
    assert parse_message(raw).header("User-Agent") == "IP Camera v2"


def test_lf_only_line_ends_are_tolerated():
    message = parse_message(REGISTER.replace(b"\r\n", b"\n"))
    assert message.call_id == "1720283744"


def test_address_forms_and_tags():
    quoted = NameAddr.parse('"Cam, 1" <sip:3402@3402000000>;tag=abc')
    assert (quoted.display, quoted.uri, quoted.tag) == ('"Cam, 1"', "sip:3402@3402000000", "abc")
    bare = NameAddr.parse("sip:3402@h;tag=9")
    assert (bare.uri, bare.tag, bare.angle) == ("sip:3402@h", "9", False)
    assert str(bare) == "sip:3402@h;tag=9"
    token = NameAddr.parse("Cam <sip:x@h;transport=tcp>")
    assert (token.display, token.uri, token.tag) == ("Cam", "sip:x@h;transport=tcp", None)
    assert str(token.with_param("tag", "1")) == "Cam <sip:x@h;transport=tcp>;tag=1"
    for bad in ("", '"unclosed <sip:a@b>', "<sip:a@b", "<sip:a@b> junk"):
        with pytest.raises(SipParseError):
            NameAddr.parse(bad)


def test_a_comma_inside_quotes_or_angle_brackets_is_not_a_list_separator():
    raw = REGISTER.replace(
        b"Contact: <sip:34020000001320000001@192.168.1.64:5060>",
        b'Contact: "a, b" <sip:x@h;p=1,2>, <sip:y@h>',
    )
    assert [c.uri for c in parse_message(raw).contacts] == ["sip:x@h;p=1,2", "sip:y@h"]


def test_sip_uri_parts():
    uri = SipUri.parse("sip:34020000001320000001@192.0.2.7:5060;transport=udp;lr")
    assert (uri.user, uri.host, uri.port) == ("34020000001320000001", "192.0.2.7", 5060)
    assert uri.param("transport") == "udp" and uri.loose_route
    assert str(uri) == "sip:34020000001320000001@192.0.2.7:5060;transport=udp;lr"
    assert SipUri.parse("sips:[::1]").host == "[::1]"
    for bad in ("tel:123", "sip:", "sip:a@b:99999"):
        with pytest.raises(SipParseError):
            SipUri.parse(bad)


def test_a_response_copies_the_request_headers_and_adds_the_to_tag():
    req = parse_message(REGISTER)
    assert isinstance(req, SipRequest)
    ok = response_for(req, 200, to_tag="t1", headers=[("Expires", "3600")])
    assert ok.reason == "OK"
    assert ok.to.tag == "t1"
    assert [n for n, _ in ok.headers] == ["Via", "From", "To", "Call-ID", "CSeq", "Expires"]
    trying = response_for(req, 100, to_tag="t1")
    assert trying.to.tag is None
    parsed = parse_message(build(ok))
    assert parsed == ok and isinstance(parsed, SipResponse)


def test_status_lines():
    raw = build(response_for(parse_message(REGISTER), 401))  # type: ignore[arg-type]
    assert raw.startswith(b"SIP/2.0 401 Unauthorized\r\n")
    bare = raw.replace(b"SIP/2.0 401 Unauthorized", b"SIP/2.0 200")
    assert parse_message(bare).reason == ""  # type: ignore[union-attr]
    for bad in (b"SIP/2.0 20 OK", b"SIP/2.0 999 Odd", b"SIP/2.0 abc OK"):
        with pytest.raises(SipParseError):
            parse_message(raw.replace(b"SIP/2.0 401 Unauthorized", bad))


# ------------------------------------------------------------------------ refusals


def _refused(data: bytes) -> SipError:
    with pytest.raises(SipError) as caught:
        parse_datagram(data)
    assert isinstance(caught.value, SignallingError)
    return caught.value


def test_missing_mandatory_headers_are_400():
    for name in (b"Via", b"From", b"To", b"Call-ID", b"CSeq"):
        lines = [ln for ln in REGISTER.split(b"\r\n") if not ln.startswith(name + b":")]
        error = _refused(b"\r\n".join(lines))
        assert error.status == 400
        assert name.decode() in error.detail


def test_an_other_sip_version_is_505_and_answerable():
    error = _refused(REGISTER.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1))
    assert isinstance(error, SipVersionError) and error.status == 505
    assert isinstance(error.message, SipRequest) and error.message.call_id == "1720283744"


def test_a_cseq_method_that_is_not_the_requests_is_400_and_answerable():
    error = _refused(REGISTER.replace(b"1 REGISTER", b"1 INVITE"))
    assert error.status == 400 and isinstance(error.message, SipRequest)


def test_bad_or_lying_content_length():
    assert "not a number" in _refused(REGISTER.replace(b"Length: 0", b"Length: -1")).detail
    lying = _refused(REGISTER.replace(b"Length: 0", b"Length: 10"))
    assert lying.status == 400 and isinstance(lying.message, SipRequest)
    two = REGISTER.replace(b"Content-Length: 0\r\n", b"Content-Length: 0\r\nl: 1\r\n") + b"x"
    assert "two Content-Length" in _refused(two).detail
    # bytes past Content-Length in a datagram are dropped (RFC 3261 §18.3)
    assert parse_message(REGISTER + b"trailing").body == b""


def test_caps_on_size_header_count_and_line_length():
    big = REGISTER.replace(b"Length: 0", b"Length: %d" % MAX_MESSAGE) + b"x" * MAX_MESSAGE
    error = _refused(big)
    assert isinstance(error, SipTooLarge) and error.status == 413
    many = REGISTER.replace(b"Expires: 3600\r\n", b"X-A: 1\r\n" * 100)
    assert "header lines" in _refused(many).detail
    long_line = REGISTER.replace(b"IP Camera", b"x" * (8 * 1024 + 1))
    assert "longer than" in _refused(long_line).detail


def test_malformed_lines():
    for raw in (
        b"garbage\r\n\r\n",
        b"REGISTER  SIP/2.0\r\n\r\n",
        REGISTER.replace(b"Expires: 3600", b"Expires 3600"),
        REGISTER.replace(b"Expires: 3600", b"Bad Name: 1"),
        b" folded: first\r\n" + REGISTER,
        REGISTER.replace(b"1 REGISTER", b"x REGISTER"),
        REGISTER.replace(b"1 REGISTER", b"4294967296 REGISTER"),
        REGISTER.replace(b"SIP/2.0/UDP 192.168.1.64:5060", b"HTTP/1.1 x"),
        REGISTER.replace(b"To: <sip:34020000001320000001@3402000000>", b"To: <sip:x@y"),
        REGISTER.replace(b"From: <sip:", b'From: "unclosed <sip:'),
        REGISTER.replace(b"Contact: <sip:34020000001320000001@192.168.1.64:5060>", b"m: <a"),
        REGISTER.replace(b"Call-ID: 1720283744", b"Call-ID:"),
    ):
        assert _refused(raw).status == 400


def test_blank_datagrams_are_keepalives():
    assert parse_datagram(b"\r\n\r\n") is None
    assert parse_datagram(b"") is None


def test_building_refuses_values_that_would_break_framing():
    for bad in ("a\r\nInjected: 1", " lead", "nul\0"):
        with pytest.raises(ValueError):
            request("MESSAGE", "sip:a@b", [("Subject", bad)])
    with pytest.raises(ValueError):
        request("MESS AGE", "sip:a@b")
    with pytest.raises(ValueError):
        response(200, "OK\r\n")
    # Content-Length is the body's: a header given by hand is dropped
    assert request("MESSAGE", "sip:a@b", [("l", "99")], b"ab").headers == ()


# ------------------------------------------------------------------------ the TCP stream


def test_a_stream_in_single_bytes_with_keepalives_between_messages():
    body = b"<Notify>...</Notify>"
    notify = build(
        request(
            "MESSAGE",
            "sip:a@b",
            [
                ("Via", "SIP/2.0/TCP h;branch=z9hG4bK9"),
                ("From", "<sip:p@b>;tag=1"),
                ("To", "<sip:a@b>"),
                ("Call-ID", "c2"),
                ("CSeq", "5 MESSAGE"),
            ],
            body,
        )
    )
    stream = b"\r\n\r\n" + REGISTER + b"\r\n\r\n" + notify
    parser = StreamParser()
    got = []
    for index in range(len(stream)):
        got.extend(parser.feed(stream[index : index + 1]))
    assert [m.call_id for m in got] == ["1720283744", "c2"]
    assert got[1].body == body
    assert parser.keepalives == 4 and parser.buffered == 0


def test_a_stream_error_is_sticky():
    parser = StreamParser()
    with pytest.raises(SipParseError):
        parser.feed(b"garbage\r\n\r\n")
    with pytest.raises(SipParseError):
        parser.feed(REGISTER)


def test_a_stream_refuses_an_oversized_head_or_line_before_it_ends():
    with pytest.raises(SipParseError, match="longer than"):
        StreamParser().feed(b"REGISTER sip:" + b"a" * 9000)
    parser = StreamParser(max_message=1000, max_line=2000)
    with pytest.raises(SipTooLarge):
        parser.feed(b"REGISTER sip:a SIP/2.0\r\n" + b"X-A: 1\r\n" * 200)
    huge = REGISTER.replace(b"Length: 0", b"Length: 70000")
    with pytest.raises(SipTooLarge) as caught:
        StreamParser().feed(huge)
    assert isinstance(caught.value.message, SipRequest)  # answerable with 413


# ------------------------------------------------------------------------ properties

_token = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~",
    min_size=1,
    max_size=12,
)
_value = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\r\n\0"), max_size=40
).map(lambda s: s.strip(" \t"))
_structured = {"Via", "From", "To", "Call-ID", "CSeq", "Content-Length"}
_extra = st.lists(
    st.tuples(_token.filter(lambda n: canonical_name(n) not in _structured), _value), max_size=8
)
_host = st.sampled_from(["192.168.1.64", "h.example", "[2001:db8::7]", "10.0.0.1"])
_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10)


@st.composite
def _messages(draw: st.DrawFn) -> SipRequest | SipResponse:
    method = draw(st.sampled_from(["REGISTER", "MESSAGE", "INVITE", "ACK", "BYE", "CANCEL"]))
    vias = draw(
        st.lists(
            st.builds(
                lambda t, h, p, b: f"SIP/2.0/{t} {h}{p};branch=z9hG4bK{b}",
                st.sampled_from(["UDP", "TCP"]),
                _host,
                st.sampled_from(["", ":5060", ":40000"]),
                _word,
            ),
            min_size=1,
            max_size=3,
        )
    )
    headers = [("Via", v) for v in vias]
    headers += [
        ("From", f"<sip:{draw(_word)}@{draw(_host)}>;tag={draw(_word)}"),
        ("To", f"<sip:{draw(_word)}@b>"),
        ("Call-ID", draw(_word)),
        ("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}"),
    ]
    headers += draw(_extra)
    headers = draw(st.permutations(headers))
    body = draw(st.binary(max_size=200))
    if draw(st.booleans()):
        return request(method, f"sip:{draw(_word)}@{draw(_host)}", headers, body)
    reason = draw(_value)
    return response(draw(st.integers(100, 699)), reason, headers, body)


@given(_messages())
def test_parse_of_build_is_the_message(message: SipRequest | SipResponse):
    assert parse_message(build(message)) == message
    assert parse_datagram(build(message)) == message


@given(st.lists(_messages(), min_size=1, max_size=4), st.data())
@settings(max_examples=150)
def test_any_chunking_of_a_stream_parses_the_same(messages, data):
    stream = b"".join(
        data.draw(st.sampled_from([b"", b"\r\n", b"\r\n\r\n"])) + build(m) for m in messages
    )
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    parser = StreamParser()
    got = []
    last = 0
    for cut in [*cuts, len(stream)]:
        got.extend(parser.feed(stream[last:cut]))
        last = cut
    assert got == messages
    assert parser.buffered == 0


@given(st.binary(max_size=400))
def test_garbage_raises_only_sip_errors(data: bytes):
    with contextlib.suppress(SipError):
        parse_datagram(data)
    with contextlib.suppress(SipError):
        StreamParser().feed(data)


@given(_messages(), st.data())
def test_damaged_messages_raise_only_sip_errors(message, data):
    raw = bytearray(build(message))
    for _ in range(data.draw(st.integers(1, 6))):
        index = data.draw(st.integers(0, len(raw) - 1))
        raw[index] = data.draw(st.sampled_from(b" \t\r\n:;,<>\"=/0aZ\x00\xff@"))
    try:
        parsed = parse_datagram(bytes(raw))
    except SipError as e:
        assert 400 <= e.status <= 599
    else:
        if parsed is not None:  # whatever parses builds and parses again the same
            assert parse_message(build(parsed)) == parsed
            # and every header the layers above read can be read
            assert parsed.cseq and parsed.vias and parsed.top_via and parsed.from_ and parsed.to
            assert isinstance(parsed.contacts, list)
    with contextlib.suppress(SipError):
        StreamParser().feed(bytes(raw))


def test_the_top_via_is_replaced_in_a_comma_separated_line():
    raw = REGISTER.replace(
        b"rport;branch=z9hG4bK1234", b"rport;branch=z9hG4bK1234, SIP/2.0/UDP next;branch=z9hG4bK2"
    )
    message = parse_message(raw)
    stamped = message.with_top_via(message.top_via.stamped("203.0.113.9", 40112))
    assert [v.host for v in stamped.vias] == ["192.168.1.64", "next"]
    assert stamped.top_via.rport == 40112 and stamped.top_via.received == "203.0.113.9"


def test_a_refused_request_is_answered_with_the_status_and_a_warning_when_it_can_be():
    error = _refused(REGISTER.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1))
    answer = error_response(error)
    assert answer is not None and (answer.status, answer.reason) == (505, "Version Not Supported")
    assert answer.call_id == "1720283744" and answer.cseq == CSeq(1, "REGISTER")
    assert (answer.header("Warning") or "").startswith('399 gb28181talk "version')
    assert parse_message(build(answer)) == answer
    assert error_response(_refused(b"garbage\r\n\r\n")) is None


_params = st.lists(
    st.tuples(_word, st.one_of(st.none(), _word)), max_size=4, unique_by=lambda p: p[0]
).map(tuple)


@given(st.sampled_from(["UDP", "TCP", "TLS"]), _host, st.one_of(st.none(), st.integers(1, 65535)),
       _params)  # fmt: skip
def test_a_via_prints_and_parses_back(transport, host, port, params):
    via = Via(transport, host, port, params)
    assert Via.parse(str(via)) == via


@given(
    st.builds(lambda u, h: f"sip:{u}@{h}", _word, _host),
    st.one_of(st.none(), st.just('"Cam 1"'), _word),
    _params,
)
def test_an_address_prints_and_parses_back(uri, display, params):
    address = NameAddr(uri, display, params)
    assert NameAddr.parse(str(address)) == address
