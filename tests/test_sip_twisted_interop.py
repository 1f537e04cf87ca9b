"""Our SIP messages and twisted.protocols.sip's read each other (for stacks built on Twisted's)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.protocols import sip as tsip

from gb28181talk.sip.message import SipRequest, SipResponse, build, parse_message, request

HEADERS = [
    ("Via", "SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK77"),
    ("From", "<sip:34020000001320000001@3402000000>;tag=1"),
    ("To", "<sip:34020000002000000001@3402000000>"),
    ("Call-ID", "interop-1"),
    ("CSeq", "3 MESSAGE"),
    ("Content-Type", "Application/MANSCDP+xml"),
]


def _twisted_parse(data: bytes) -> list[tsip.Message]:
    got: list[tsip.Message] = []
    parser = tsip.MessagesParser(got.append)
    parser.dataReceived(data)
    parser.dataDone()
    return got


def test_twisted_reads_what_we_build():
    body = "<Notify><CmdType>Keepalive</CmdType></Notify>"
    ours = request("MESSAGE", "sip:34020000002000000001@3402000000", HEADERS, body.encode())
    (theirs,) = _twisted_parse(build(ours))
    assert isinstance(theirs, tsip.Request) and theirs.method == "MESSAGE"
    assert theirs.headers["call-id"] == ["interop-1"]
    assert theirs.headers["via"] == [HEADERS[0][1]]
    assert theirs.body == body


def test_we_read_what_twisted_builds():
    theirs = tsip.Request("REGISTER", "sip:34020000002000000001@3402000000")
    for name, value in HEADERS:
        theirs.addHeader(name, value.replace("MESSAGE", "REGISTER"))
    theirs.addHeader("content-length", "0")
    ours = parse_message(theirs.toString().encode())
    assert isinstance(ours, SipRequest) and ours.method == "REGISTER"
    assert ours.call_id == "interop-1" and ours.cseq.method == "REGISTER"
    assert ours.top_via.branch == "z9hG4bK77"
    answer = tsip.Response(401)
    for name, value in HEADERS[:5]:
        answer.addHeader(name, value)
    answer.addHeader("www-authenticate", 'Digest realm="3402000000", nonce="abc"')
    answer.addHeader("content-length", "0")
    parsed = parse_message(answer.toString().encode())
    assert isinstance(parsed, SipResponse) and parsed.status == 401
    assert parsed.header("WWW-Authenticate") == 'Digest realm="3402000000", nonce="abc"'


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789 <>/", max_size=60))
def test_any_ascii_body_crosses_both_ways(body):
    ours = request("MESSAGE", "sip:a@b", HEADERS, body.encode())
    (theirs,) = _twisted_parse(build(ours))
    assert theirs.body == body
    assert parse_message(theirs.toString().encode()).body == body.encode()
