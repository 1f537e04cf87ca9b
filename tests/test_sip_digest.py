"""Tests for SIP digest: RFC vectors, nonces only we issued, expiry as stale, nonce-count replay."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from gb28181talk.sip.digest import (
    Challenge,
    Credentials,
    DigestClient,
    DigestServer,
    digest_response,
    parse_auth_params,
)

REALM = "3402000000"
DEVICE = "34020000001320000001"
URI = "sip:34020000002000000001@3402000000"


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


_COUNTER = itertools.count()


def _counter_random(n: int) -> bytes:
    return next(_COUNTER).to_bytes(n, "big")


def _server(clock: FakeClock, **kw) -> DigestServer:
    return DigestServer(REALM, clock, secret=b"k" * 32, **kw)


def _passwords(user: str) -> str | None:
    return {"34020000001320000001": "12345678", "Mufasa": "Circle Of Life"}.get(user)


def test_rfc_2617_section_3_5_vector():
    assert (
        digest_response(
            username="Mufasa",
            realm="testrealm@host.com",
            password="Circle Of Life",
            method="GET",
            uri="/dir/index.html",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
            qop="auth",
            nc="00000001",
            cnonce="0a4f113b",
        )
        == "6629fae49393a05397450978507c4ef1"
    )


def test_rfc_2069_vector_without_qop():
    assert (
        digest_response(
            username="Mufasa",
            realm="testrealm@host.com",
            password="CircleOfLife",
            method="GET",
            uri="/dir/index.html",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        )
        == "1949323746fe6a43ef61f9606e7febea"
    )


def test_the_rfc_authorization_header_parses():
    value = (
        'Digest username="Mufasa", realm="testrealm@host.com", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, '
        'nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    creds = Credentials.parse(value)
    assert (creds.username, creds.qop, creds.nc, creds.cnonce) == (
        "Mufasa",
        "auth",
        "00000001",
        "0a4f113b",
    )
    assert Credentials.parse(str(creds)) == creds
    assert parse_auth_params('Digest realm="a\\"b", x=1')[1] == {"realm": 'a"b', "x": "1"}


def test_a_device_answers_the_challenge_with_and_without_qop():
    clock = FakeClock()
    for qop in (True, False):
        server = _server(clock, qop=qop)
        challenge = server.challenge()
        assert ('qop="auth"' in challenge) is qop
        client = DigestClient(DEVICE, "12345678", random=_counter_random)
        authorization = client.authorization(challenge, "REGISTER", URI)
        check = server.check(authorization, "REGISTER", _passwords)
        assert check.ok and check.username == DEVICE and not check.stale


def test_a_wrong_password_is_refused_not_stale():
    clock = FakeClock()
    server = _server(clock)
    authorization = DigestClient(DEVICE, "wrong").authorization(
        server.challenge(), "REGISTER", URI
    )
    check = server.check(authorization, "REGISTER", _passwords)
    assert not check.ok and not check.stale and "password" in check.reason


def test_a_nonce_the_server_did_not_issue_is_refused():
    clock = FakeClock()
    server = _server(clock)
    other = DigestServer(REALM, clock, secret=b"z" * 32)
    authorization = DigestClient(DEVICE, "12345678").authorization(
        other.challenge(), "REGISTER", URI
    )
    check = server.check(authorization, "REGISTER", _passwords)
    assert not check.ok and not check.stale and "did not issue" in check.reason
    made_up = Challenge(REALM, "dcd98b7102dd2f0e8b11d0f600bfb0c093")
    check = server.check(
        DigestClient(DEVICE, "12345678").authorization(made_up, "REGISTER", URI),
        "REGISTER",
        _passwords,
    )
    assert not check.ok and "did not issue" in check.reason


def test_an_expired_nonce_is_stale_and_a_new_challenge_says_so():
    clock = FakeClock()
    server = _server(clock, lifetime=60)
    challenge = server.challenge()
    client = DigestClient(DEVICE, "12345678")
    clock.now += 61
    check = server.check(client.authorization(challenge, "REGISTER", URI), "REGISTER", _passwords)
    assert not check.ok and check.stale
    assert Challenge.parse(server.challenge(stale=check.stale)).stale


def test_a_nonce_count_replayed_is_refused_as_stale():
    clock = FakeClock()
    server = _server(clock)
    challenge = server.challenge()
    authorization = DigestClient(DEVICE, "12345678").authorization(challenge, "REGISTER", URI)
    assert server.check(authorization, "REGISTER", _passwords).ok
    again = server.check(authorization, "REGISTER", _passwords)
    assert not again.ok and again.stale and "replayed" in again.reason


def test_the_nonce_table_is_bounded_and_a_forgotten_nonce_is_never_accepted_again():
    clock = FakeClock()
    server = _server(clock, max_tracked=3)
    first = server.challenge()
    first_auth = DigestClient(DEVICE, "12345678").authorization(first, "REGISTER", URI)
    assert server.check(first_auth, "REGISTER", _passwords).ok
    for _ in range(5):
        clock.now += 0.01
        auth = DigestClient(DEVICE, "12345678").authorization(
            server.challenge(), "REGISTER", URI
        )
        assert server.check(auth, "REGISTER", _passwords).ok
    assert server.tracked == 3
    # the first nonce's count is forgotten: its replay is stale, not accepted
    replay = server.check(first_auth, "REGISTER", _passwords)
    assert not replay.ok and replay.stale


def test_other_realm_unknown_user_other_algorithm_and_junk_are_refused():
    clock = FakeClock()
    server = _server(clock)
    challenge = Challenge.parse(server.challenge())
    good = DigestClient(DEVICE, "12345678").authorization(challenge, "REGISTER", URI)
    assert not server.check(good.replace(REALM, "3402000001"), "REGISTER", _passwords).ok
    stranger = DigestClient("34020000001320000009", "x").authorization(challenge, "REGISTER", URI)
    assert "unknown" in server.check(stranger, "REGISTER", _passwords).reason
    sha = good.replace("algorithm=MD5", "algorithm=SHA-256")
    assert "algorithm" in server.check(sha, "REGISTER", _passwords).reason
    for junk in ("", "Basic abc", 'Digest username="a"', "Digest ,,,", 'Digest a="'):
        assert not server.check(junk, "REGISTER", _passwords).ok
    # the method is in the hash: credentials for REGISTER do not fit a MESSAGE
    assert not server.check(good, "MESSAGE", _passwords).ok


def test_require_qop_refuses_the_rfc_2069_form():
    clock = FakeClock()
    server = _server(clock, require_qop=True)
    no_qop = Challenge(REALM, server.new_nonce())
    auth = DigestClient(DEVICE, "12345678").authorization(no_qop, "REGISTER", URI)
    assert "qop" in server.check(auth, "REGISTER", _passwords).reason


_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\r\n\0"), min_size=1, max_size=20
)


@given(_text, _text, _text, st.booleans(), st.floats(0, 299))
def test_client_and_server_agree_for_any_user_password_and_uri(user, password, uri, qop, later):
    clock = FakeClock()
    server = _server(clock, qop=qop)
    client = DigestClient(user, password)
    challenge = server.challenge()
    clock.now += later
    for _ in range(3):  # the same nonce, the next count each time
        check = server.check(
            client.authorization(challenge, "REGISTER", uri), "REGISTER", {user: password}.get
        )
        assert check.ok, check.reason
    wrong = DigestClient(user, password + "x").authorization(challenge, "REGISTER", uri)
    assert not server.check(wrong, "REGISTER", {user: password}.get).ok


@given(st.text(max_size=200))
def test_any_authorization_text_gets_a_verdict(text):
    server = _server(FakeClock())
    assert not server.check(text, "REGISTER", _passwords).ok
