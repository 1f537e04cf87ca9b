"""SIP digest authentication (RFC 2617, RFC 7616 with MD5), both sides, without I/O.

The registrar's side, :class:`DigestServer`, issues nonces that carry their
issue time and an HMAC of it under a secret, so it knows without a table
whether it issued a nonce and when it expires (the clock is injected).  It
checks an ``Authorization`` value with ``qop=auth`` (what RFC 2617 asks) or
without qop (RFC 2069 style, what many GB28181 devices send), and answers
with a :class:`DigestCheck`: accepted, refused, or ``stale`` (right password,
old nonce: challenge again with ``stale=true``).  With qop the nonce count
must grow; the last count of each nonce is kept in a bounded table, and a
nonce that fell out of it is treated as stale, so a replay is never accepted.

The device's side, :class:`DigestClient`, answers a challenge (the device
simulator and tests use it).  :func:`digest_response` is the RFC's formula.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from gb28181talk.errors import SipParseError

NONCE_LIFETIME = 300.0
"""Seconds a nonce is good for (a re-REGISTER within it needs no new challenge)."""
MAX_TRACKED_NONCES = 10_000
"""Nonces whose last nonce count is remembered (qop=auth replay check)."""

_PARAM = re.compile(r'\s*([A-Za-z0-9_\-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s"]*)\s*(?:,|$)', re.S)


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """``Digest realm="x", nonce="y"`` -> ('Digest', {'realm': 'x', 'nonce': 'y'}).

    Names are lower-cased; quoted values are unquoted (backslash escapes undone).
    """
    scheme, _, rest = value.strip().partition(" ")
    if not scheme:
        raise SipParseError("an empty authentication header")
    params: dict[str, str] = {}
    position = 0
    rest = rest.strip()
    while position < len(rest):
        match = _PARAM.match(rest, position)
        if match is None or match.end() == position:
            raise SipParseError(f"authentication parameters {rest[position:][:60]!r} unreadable")
        name, raw = match.group(1).lower(), match.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        if name in params:
            raise SipParseError(f"authentication parameter {name} given twice")
        params[name] = raw
        position = match.end()
    return scheme, params


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def digest_response(
    *,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """The ``response`` value (RFC 2617 §3.2.2.1, MD5): with qop=auth, or without qop."""
    ha1 = _md5(f"{username}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    if qop is None:
        return _md5(f"{ha1}:{nonce}:{ha2}")
    return _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


@dataclass(frozen=True)
class Challenge:
    """A ``WWW-Authenticate: Digest`` challenge, as a device reads it."""

    realm: str
    nonce: str
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    algorithm: str = "MD5"
    stale: bool = False

    @classmethod
    def parse(cls, value: str) -> Challenge:
        """The challenge in a WWW-Authenticate (or Proxy-Authenticate) value."""
        scheme, params = parse_auth_params(value)
        if scheme.lower() != "digest":
            raise SipParseError(f"authentication scheme {scheme!r} is not Digest")
        if "realm" not in params or "nonce" not in params:
            raise SipParseError("a digest challenge without realm or nonce")
        qop = tuple(q.strip() for q in params.get("qop", "").split(",") if q.strip())
        return cls(
            params["realm"],
            params["nonce"],
            qop,
            params.get("opaque"),
            params.get("algorithm", "MD5"),
            params.get("stale", "").lower() == "true",
        )

    def __str__(self) -> str:
        parts = [f"realm={_quote(self.realm)}", f"nonce={_quote(self.nonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        parts.append(f"algorithm={self.algorithm}")
        if self.qop:
            parts.append(f"qop={_quote(','.join(self.qop))}")
        if self.stale:
            parts.append("stale=true")
        return "Digest " + ", ".join(parts)


@dataclass(frozen=True)
class Credentials:
    """An ``Authorization: Digest`` value, as the registrar reads it."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None

    @classmethod
    def parse(cls, value: str) -> Credentials:
        """The credentials in an Authorization (or Proxy-Authorization) value."""
        scheme, params = parse_auth_params(value)
        if scheme.lower() != "digest":
            raise SipParseError(f"authorization scheme {scheme!r} is not Digest")
        missing = [n for n in ("username", "realm", "nonce", "uri", "response") if n not in params]
        if missing:
            raise SipParseError(f"digest credentials without {', '.join(missing)}")
        qop = params.get("qop")
        if qop is not None and ("nc" not in params or "cnonce" not in params):
            raise SipParseError("digest credentials with qop but without nc or cnonce")
        return cls(
            params["username"],
            params["realm"],
            params["nonce"],
            params["uri"],
            params["response"].lower(),
            params.get("algorithm", "MD5"),
            qop,
            params.get("nc"),
            params.get("cnonce"),
            params.get("opaque"),
        )

    def __str__(self) -> str:
        parts = [
            f"username={_quote(self.username)}",
            f"realm={_quote(self.realm)}",
            f"nonce={_quote(self.nonce)}",
            f"uri={_quote(self.uri)}",
            f"response={_quote(self.response)}",
            f"algorithm={self.algorithm}",
        ]
        if self.qop is not None:
            parts += [f"qop={self.qop}", f"nc={self.nc}", f"cnonce={_quote(self.cnonce or '')}"]
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        return "Digest " + ", ".join(parts)


# --------------------------------------------------------------------------- the registrar


@dataclass(frozen=True)
class DigestCheck:
    """The registrar's verdict on one Authorization: accepted, or why not (and if stale)."""

    ok: bool
    reason: str
    username: str | None = None
    stale: bool = False

    @property
    def challenge_again(self) -> bool:
        """Answer 401 with a new challenge (stale or not); otherwise 403 would do."""
        return not self.ok


class DigestServer:
    """Issues digest nonces and checks credentials against them, for one realm."""

    def __init__(
        self,
        realm: str,
        clock: Callable[[], float],
        *,
        secret: bytes | None = None,
        lifetime: float = NONCE_LIFETIME,
        qop: bool = True,
        require_qop: bool = False,
        max_tracked: int = MAX_TRACKED_NONCES,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.realm = realm
        self.clock = clock
        self.secret = secret if secret is not None else random(32)
        self.lifetime = lifetime
        self.qop = qop
        self.require_qop = require_qop
        self.max_tracked = max_tracked
        self._random = random
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._forgotten_up_to = -1
        """Issue time (ms) of the newest nonce dropped from the table: older ones are stale."""

    # -- nonces
    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self.secret, body + self.realm.encode(), hashlib.sha256).digest()[:12]

    def new_nonce(self) -> str:
        """A fresh nonce: issue time, 8 random bytes, and their HMAC, in URL-safe base64."""
        body = struct.pack(">Q", max(0, int(self.clock() * 1000))) + self._random(8)
        return base64.urlsafe_b64encode(body + self._mac(body)).decode("ascii")

    def _issued_at(self, nonce: str) -> int | None:
        """The issue time (ms) of a nonce this server issued, or None for any other string."""
        if len(nonce) != 40:
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            return None
        if len(raw) != 28 or not hmac.compare_digest(raw[16:], self._mac(raw[:16])):
            return None
        return int(struct.unpack(">Q", raw[:8])[0])

    def challenge(self, *, stale: bool = False) -> str:
        """A WWW-Authenticate value with a fresh nonce (``stale=true`` after a stale check)."""
        qop = ("auth",) if self.qop else ()
        return str(Challenge(self.realm, self.new_nonce(), qop, stale=stale))

    # -- checking
    def check(
        self, authorization: str, method: str, password_for: Callable[[str], str | None]
    ) -> DigestCheck:
        """The verdict on ``authorization`` for a request of ``method``.

        ``password_for(username)`` gives the user's password, or None for a user
        who may not register.
        """
        try:
            creds = Credentials.parse(authorization)
        except SipParseError as e:
            return DigestCheck(False, f"unreadable credentials: {e}")
        user = creds.username
        if creds.realm != self.realm:
            return DigestCheck(False, f"realm {creds.realm!r} is not {self.realm!r}", user)
        if creds.algorithm.upper() != "MD5":
            return DigestCheck(False, f"algorithm {creds.algorithm} is not MD5", user)
        issued = self._issued_at(creds.nonce)
        if issued is None:
            return DigestCheck(False, "a nonce this server did not issue", user)
        if creds.qop is None and self.require_qop:
            return DigestCheck(False, "credentials without qop=auth", user)
        if creds.qop is not None and creds.qop.lower() != "auth":
            return DigestCheck(False, f"qop {creds.qop} is not auth", user)
        password = password_for(user)
        if password is None:
            return DigestCheck(False, f"user {user!r} is unknown", user)
        expected = digest_response(
            username=user,
            realm=creds.realm,
            password=password,
            method=method,
            uri=creds.uri,
            nonce=creds.nonce,
            qop=creds.qop,
            nc=creds.nc,
            cnonce=creds.cnonce,
        )
        if not hmac.compare_digest(expected, creds.response):
            return DigestCheck(False, "wrong response (password)", user)
        now = int(self.clock() * 1000)
        if now - issued > self.lifetime * 1000 or issued > now + 1000:
            return DigestCheck(False, "the nonce has expired", user, stale=True)
        if creds.qop is not None:
            replay = self._count(creds.nonce, issued, creds.nc or "")
            if replay:
                return DigestCheck(False, replay, user, stale=True)
        return DigestCheck(True, "accepted", user)

    def _count(self, nonce: str, issued: int, nc_text: str) -> str | None:
        """Record nonce count ``nc_text`` for ``nonce``; the reason it is refused, or None."""
        if len(nc_text) != 8:
            return f"nonce count {nc_text!r} is not 8 hex digits"
        try:
            nc = int(nc_text, 16)
        except ValueError:
            return f"nonce count {nc_text!r} is not 8 hex digits"
        last = self._counts.get(nonce)
        if last is None and issued <= self._forgotten_up_to:
            return "the nonce is no longer tracked"
        if last is not None and nc <= last:
            return f"nonce count {nc} replayed (last {last})"
        self._counts[nonce] = nc
        self._counts.move_to_end(nonce)
        self._evict()
        return None

    def _evict(self) -> None:
        now = int(self.clock() * 1000)
        lifetime_ms = self.lifetime * 1000
        while self._counts:
            oldest = next(iter(self._counts))
            issued = self._issued_at(oldest) or 0
            if len(self._counts) <= self.max_tracked and now - issued <= lifetime_ms:
                break
            del self._counts[oldest]
            self._forgotten_up_to = max(self._forgotten_up_to, issued)

    @property
    def tracked(self) -> int:
        """Nonces whose count is remembered now (bounded by ``max_tracked``)."""
        return len(self._counts)


# --------------------------------------------------------------------------- the device


class DigestClient:
    """Answers digest challenges for one username and password (the device's side)."""

    def __init__(
        self,
        username: str,
        password: str,
        *,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.username = username
        self.password = password
        self._random = random
        self._counts: dict[str, int] = {}

    def authorization(self, challenge: Challenge | str, method: str, uri: str) -> str:
        """The Authorization value answering ``challenge`` for a request of ``method`` to ``uri``.

        With ``qop=auth`` offered it answers with qop, a new cnonce and the next
        nonce count; otherwise in the RFC 2069 form GB28181 devices use.
        """
        if isinstance(challenge, str):
            challenge = Challenge.parse(challenge)
        qop = "auth" if "auth" in challenge.qop else None
        nc = cnonce = None
        if qop is not None:
            count = self._counts.get(challenge.nonce, 0) + 1
            self._counts[challenge.nonce] = count
            nc = f"{count:08x}"
            cnonce = self._random(8).hex()
        response = digest_response(
            username=self.username,
            realm=challenge.realm,
            password=self.password,
            method=method,
            uri=uri,
            nonce=challenge.nonce,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
        )
        return str(
            Credentials(
                self.username,
                challenge.realm,
                challenge.nonce,
                uri,
                response,
                "MD5",
                qop,
                nc,
                cnonce,
                challenge.opaque,
            )
        )
