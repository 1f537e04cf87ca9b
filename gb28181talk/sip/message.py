"""SIP messages (RFC 3261 §7, §20, §25) parsed from and built to bytes, without I/O.

A message is a frozen value: a :class:`SipRequest` or a :class:`SipResponse`
with its header lines in order, names in canonical form (compact forms such
as ``v`` and ``i`` expanded), and its body.  ``Content-Length`` is not kept as
a header: it is the length of the body, written by :func:`build` and used by
the parsers for framing, so ``parse_message(build(m)) == m``.

:func:`parse_datagram` reads one UDP datagram; :class:`StreamParser` reads a
TCP byte stream in any chunking (Content-Length framing).  Both enforce caps
(64 KiB per message, 100 header lines, 8 KiB per line) and raise only
:class:`~gb28181talk.errors.SipError` subclasses, each saying what was wrong
and which status to answer.

Structured views of the headers a stack needs (:class:`Via` with ``branch``,
``rport`` and ``received`` of RFC 3581; :class:`NameAddr` for From/To/Contact
with ``tag``; :class:`CSeq`; :class:`SipUri`) parse on demand and print back.
No Twisted import: the transports feed bytes in and take bytes out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Self

from gb28181talk.errors import SipError, SipParseError, SipTooLarge, SipVersionError

MAX_MESSAGE = 64 * 1024
"""Bytes in one message, start line, headers and body together."""
MAX_HEADERS = 100
"""Header lines (after unfolding) in one message."""
MAX_LINE = 8 * 1024
"""Bytes in one line of the start line or headers."""

SIP_VERSION = "SIP/2.0"
BRANCH_MAGIC = "z9hG4bK"
"""The prefix of an RFC 3261 branch (§8.1.1.7)."""

COMPACT = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
}
"""Compact header names (RFC 3261 §7.3.3 and the extensions that add some)."""

_CANONICAL = {
    name.lower(): name
    for name in (
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Authentication-Info",
        "Authorization",
        "Call-ID",
        "Call-Info",
        "Contact",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Content-Length",
        "Content-Type",
        "CSeq",
        "Date",
        "Error-Info",
        "Expires",
        "From",
        "In-Reply-To",
        "Max-Forwards",
        "MIME-Version",
        "Min-Expires",
        "Organization",
        "Priority",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Require",
        "Record-Route",
        "Reply-To",
        "Require",
        "Retry-After",
        "Route",
        "Server",
        "Subject",
        "Supported",
        "Timestamp",
        "To",
        "Unsupported",
        "User-Agent",
        "Via",
        "Warning",
        "WWW-Authenticate",
        "Event",
        "Allow-Events",
        "Session-Expires",
        "Refer-To",
        "Referred-By",
        "Accept-Contact",
        "Reject-Contact",
        "Request-Disposition",
        "Subscription-State",
        "RSeq",
        "RAck",
        *COMPACT.values(),
    )
}

LIST_HEADERS = frozenset(
    {
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Allow",
        "Allow-Events",
        "Contact",
        "Content-Encoding",
        "Content-Language",
        "In-Reply-To",
        "Proxy-Require",
        "Record-Route",
        "Require",
        "Route",
        "Supported",
        "Unsupported",
        "Via",
    }
)
"""Headers whose value may be a comma-separated list (RFC 3261 §7.3.1)."""

REASONS = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    420: "Bad Extension",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
}
"""Default reason phrases (RFC 3261 §21)."""

_TOKEN = re.compile(r"[A-Za-z0-9.!%*_+`'~\-]+")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_LINE = re.compile(r"\r?\n")
_SURROGATE = "surrogateescape"


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name: compact forms expanded, known names as in the RFC.

    Names this module does not know are capitalized per hyphen-separated word
    (``x-gb-id`` -> ``X-Gb-Id``), so lookups stay case-insensitive.
    """
    low = name.lower()
    if low in COMPACT:
        return COMPACT[low]
    known = _CANONICAL.get(low)
    if known is not None:
        return known
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def _check_value(name: str, value: str) -> None:
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"header {name} value {value!r} holds CR, LF or NUL")
    if value != value.strip(" \t"):
        raise ValueError(f"header {name} value {value!r} has surrounding white space")


def _normal_headers(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    out = []
    for name, value in headers:
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"header name {name!r} is not a token")
        canonical = canonical_name(name)
        if canonical == "Content-Length":
            continue  # the body's length, written by build()
        _check_value(canonical, value)
        out.append((canonical, value))
    return tuple(out)


# --------------------------------------------------------------------------- the messages


@dataclass(frozen=True)
class _Message:
    """What requests and responses share: the header lines and the body."""

    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", _normal_headers(self.headers))

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case or compact form), or None."""
        wanted = canonical_name(name)
        for have, value in self.headers:
            if have == wanted:
                return value
        return None

    def header_lines(self, name: str) -> list[str]:
        """Every line's value of header ``name``, in order (no comma splitting)."""
        wanted = canonical_name(name)
        return [value for have, value in self.headers if have == wanted]

    def values(self, name: str) -> list[str]:
        """Every value of header ``name``: repeated lines, comma lists split for list headers."""
        wanted = canonical_name(name)
        lines = self.header_lines(wanted)
        if wanted not in LIST_HEADERS:
            return lines
        return [item for line in lines for item in split_list(line)]

    def with_header(self, name: str, value: str) -> Self:
        """A copy with one more header line at the end."""
        return replace(self, headers=(*self.headers, (name, value)))

    def with_header_first(self, name: str, value: str) -> Self:
        """A copy with one more header line at the top (a new Via)."""
        return replace(self, headers=((name, value), *self.headers))

    def with_replaced(self, name: str, value: str | None) -> Self:
        """A copy where header ``name`` is one line ``value`` where the first was (None: gone)."""
        wanted = canonical_name(name)
        out: list[tuple[str, str]] = []
        done = False
        for have, old in self.headers:
            if have == wanted:
                if not done and value is not None:
                    out.append((wanted, value))
                done = True
            else:
                out.append((have, old))
        if not done and value is not None:
            out.append((wanted, value))
        return replace(self, headers=tuple(out))

    def without(self, name: str) -> Self:
        """A copy without any line of header ``name``."""
        return self.with_replaced(name, None)

    def with_top_via(self, via: Via) -> Self:
        """A copy whose topmost Via is ``via`` (the rest of a comma-separated line kept)."""
        out: list[tuple[str, str]] = []
        done = False
        for name, value in self.headers:
            if name == "Via" and not done:
                rest = split_list(value)[1:]
                value = ", ".join([str(via), *rest])
                done = True
            out.append((name, value))
        return replace(self, headers=tuple(out))

    # The headers every transaction and dialog reads.
    @property
    def call_id(self) -> str:
        """The Call-ID (the parsers guarantee one)."""
        return self.header("Call-ID") or ""

    @property
    def cseq(self) -> CSeq:
        """The CSeq number and method."""
        return CSeq.parse(self.header("CSeq") or "")

    @property
    def vias(self) -> list[Via]:
        """Every Via, top first, whether comma-separated or on repeated lines."""
        return [Via.parse(value) for value in self.values("Via")]

    @property
    def top_via(self) -> Via:
        """The topmost Via."""
        first = self.values("Via")
        if not first:
            raise SipParseError("no Via header")
        return Via.parse(first[0])

    @property
    def from_(self) -> NameAddr:
        """The From header."""
        return NameAddr.parse(self.header("From") or "")

    @property
    def to(self) -> NameAddr:
        """The To header."""
        return NameAddr.parse(self.header("To") or "")

    @property
    def contacts(self) -> list[NameAddr]:
        """Every Contact (empty for none or ``*``)."""
        return [NameAddr.parse(v) for v in self.values("Contact") if v.strip() != "*"]


@dataclass(frozen=True)
class SipRequest(_Message):
    """A SIP request: method, Request-URI, header lines, body."""

    method: str = ""
    uri: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not _TOKEN.fullmatch(self.method):
            raise ValueError(f"method {self.method!r} is not a token")
        if not self.uri or any(c in self.uri for c in " \t\r\n\0"):
            raise ValueError(f"Request-URI {self.uri!r} is empty or holds white space")

    def start_line(self) -> str:
        """``METHOD uri SIP/2.0``."""
        return f"{self.method} {self.uri} {SIP_VERSION}"


@dataclass(frozen=True)
class SipResponse(_Message):
    """A SIP response: status code, reason phrase, header lines, body."""

    status: int = 200
    reason: str = "OK"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 100 <= self.status <= 699:
            raise ValueError(f"status {self.status} is not 100-699")
        if any(c in self.reason for c in "\r\n\0") or self.reason != self.reason.strip(" \t"):
            raise ValueError(f"reason phrase {self.reason!r} holds CR, LF, NUL or edge spaces")

    def start_line(self) -> str:
        """``SIP/2.0 code reason``."""
        return f"{SIP_VERSION} {self.status} {self.reason}"

    @property
    def provisional(self) -> bool:
        """1xx."""
        return self.status < 200

    @property
    def success(self) -> bool:
        """2xx."""
        return 200 <= self.status < 300


SipMessage = SipRequest | SipResponse


def request(
    method: str, uri: str, headers: Iterable[tuple[str, str]] = (), body: bytes = b""
) -> SipRequest:
    """A request value (keywords read better than the dataclass's field order)."""
    return SipRequest(headers=tuple(headers), body=body, method=method, uri=uri)


def response(
    status: int,
    reason: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> SipResponse:
    """A response value; the reason defaults to the RFC's phrase for the status."""
    phrase = REASONS.get(status, "Unknown") if reason is None else reason
    return SipResponse(headers=tuple(headers), body=body, status=status, reason=phrase)


_RESPONSE_COPIES = ("Via", "From", "To", "Call-ID", "CSeq")


def response_for(
    req: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> SipResponse:
    """The response to ``req`` (RFC 3261 §8.2.6.2): its Via lines, From, To, Call-ID, CSeq copied.

    ``to_tag`` is added to To when To has no tag yet (never for 100 Trying).
    """
    copied: list[tuple[str, str]] = []
    for name, value in req.headers:
        if name in _RESPONSE_COPIES:
            if name == "To" and to_tag is not None and status != 100:
                to = NameAddr.parse(value)
                if to.tag is None:
                    value = str(to.with_param("tag", to_tag))
            copied.append((name, value))
    if status == 100:
        copied.extend((n, v) for n, v in req.headers if n == "Timestamp")
    return response(status, reason, (*copied, *headers), body)


def error_response(error: SipError) -> SipResponse | None:
    """The answer to a request refused by a parser (400, 413, 505...), or None: drop it."""
    req = error.message
    if not isinstance(req, SipRequest) or req.method == "ACK":
        return None
    return response_for(req, error.status, error.reason, headers=[("Warning", _warning(error))])


def _warning(error: SipError) -> str:
    """A Warning value (RFC 3261 §20.43, code 399) with the parser's words."""
    text = error.detail.replace("\\", "\\\\").replace('"', "'")
    text = "".join(c if c.isprintable() else "?" for c in text)[:200]
    return f'399 gb28181talk "{text}"'


# --------------------------------------------------------------------------- building


def build(message: SipMessage) -> bytes:
    """The bytes of ``message``: start line, headers, ``Content-Length``, blank line, body."""
    lines = [message.start_line()]
    lines.extend(f"{name}: {value}" for name, value in message.headers)
    lines.append(f"Content-Length: {len(message.body)}")
    head = "\r\n".join(lines) + "\r\n\r\n"
    return head.encode("utf-8", _SURROGATE) + message.body


# --------------------------------------------------------------------------- parsing


@dataclass
class _Head:
    """A parsed start line and header block, before the body is known."""

    start: str
    headers: list[tuple[str, str]]
    content_length: int | None


def _parse_head(raw: bytes, max_headers: int, max_line: int) -> _Head:
    text = raw.decode("utf-8", _SURROGATE)
    lines = _LINE.split(text)
    start = lines[0]
    if len(start.encode("utf-8", _SURROGATE)) > max_line:
        raise SipParseError(f"start line longer than {max_line} bytes")
    headers: list[tuple[str, str]] = []
    pending: list[str] | None = None
    count = 0
    for line in lines[1:]:
        if len(line) > max_line:
            raise SipParseError(f"header line longer than {max_line} bytes")
        if not line:
            continue
        if line[0] in " \t":
            if pending is None:
                raise SipParseError("a folded header line with no header before it")
            pending.append(line.strip(" \t"))
            continue
        if pending is not None:
            headers.append((pending[0], " ".join(p for p in pending[1:] if p)))
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not _TOKEN.fullmatch(name):
            raise SipParseError(f"header line {line[:80]!r} is not 'Name: value'")
        if "\0" in value:
            raise SipParseError(f"header {name} holds a NUL byte")
        pending = [canonical_name(name), value.strip(" \t")]
        count += 1
        if count > max_headers:
            raise SipParseError(f"more than {max_headers} header lines")
    if pending is not None:
        headers.append((pending[0], " ".join(p for p in pending[1:] if p)))
    length: int | None = None
    kept: list[tuple[str, str]] = []
    for name, value in headers:
        if name != "Content-Length":
            kept.append((name, value))
            continue
        if not value.isdigit() or not value.isascii():
            raise SipParseError(f"Content-Length {value[:40]!r} is not a number")
        number = int(value)
        if length is not None and number != length:
            raise SipParseError(f"two Content-Length headers: {length} and {number}")
        length = number
    return _Head(start, kept, length)


_REQUIRED = ("Via", "From", "To", "Call-ID", "CSeq")


def _finish(head: _Head, body: bytes) -> SipMessage:
    """The message value from a parsed head and its body; checks the start line and headers."""
    start = head.start
    parts = start.split(" ", 2)
    try:
        if start.upper().startswith("SIP/"):
            if len(parts) < 2 or not (len(parts[1]) == 3 and parts[1].isdigit()):
                raise SipParseError(f"status line {start[:80]!r} has no 3-digit status")
            status = int(parts[1])
            if not 100 <= status <= 699:
                raise SipParseError(f"status {status} is not 100-699")
            message: SipMessage = SipResponse(
                headers=tuple(head.headers),
                body=body,
                status=status,
                reason=parts[2].strip(" \t") if len(parts) > 2 else "",
            )
            version = parts[0]
        else:
            if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
                raise SipParseError(f"request line {start[:80]!r} is not 'METHOD URI SIP/2.0'")
            message = SipRequest(
                headers=tuple(head.headers), body=body, method=parts[0], uri=parts[1]
            )
            version = parts[2]
    except ValueError as e:  # a value the dataclasses refuse (white space, NUL...)
        raise SipParseError(f"start line {start[:80]!r}: {e}") from None
    missing = [name for name in _REQUIRED if message.header(name) is None]
    if missing:
        raise SipParseError(f"missing mandatory header {', '.join(missing)}")
    answerable = message if isinstance(message, SipRequest) else None
    if version.upper() != SIP_VERSION:
        raise SipVersionError(f"version {version[:20]!r} is not {SIP_VERSION}", answerable)
    try:
        # Every header the transactions and dialogs read must read: refuse it here, once.
        cseq = message.cseq
        message.vias  # noqa: B018
        message.from_  # noqa: B018
        message.to  # noqa: B018
        message.contacts  # noqa: B018
        if not message.call_id.strip():
            raise SipParseError("an empty Call-ID")
    except SipParseError as e:
        raise SipParseError(e.detail, answerable) from None
    if isinstance(message, SipRequest) and cseq.method != message.method:
        raise SipParseError(
            f"CSeq method {cseq.method} is not the request's {message.method}", message
        )
    return message


def _answerable(head: _Head) -> SipRequest | None:
    """The request in ``head`` (bodiless) when it is sound enough to answer, else None."""
    try:
        message = _finish(head, b"")
    except (SipParseError, SipVersionError):
        return None
    return message if isinstance(message, SipRequest) else None


def parse_datagram(
    data: bytes,
    *,
    max_message: int = MAX_MESSAGE,
    max_headers: int = MAX_HEADERS,
    max_line: int = MAX_LINE,
) -> SipMessage | None:
    """The message in one UDP datagram (RFC 3261 §18.3); None for a keepalive of blank lines.

    Without Content-Length the body is the rest of the datagram; bytes past
    Content-Length are dropped; a Content-Length past the datagram is refused.
    """
    if len(data) > max_message:
        raise SipTooLarge(f"datagram of {len(data)} bytes; at most {max_message}")
    stripped = data.lstrip(b"\r\n")
    if not stripped.strip(b" \t\r\n"):
        return None
    end = _HEADER_END.search(stripped)
    if end is None:
        head_bytes, body = stripped, b""
    else:
        head_bytes, body = stripped[: end.start()], stripped[end.end() :]
    head = _parse_head(head_bytes, max_headers, max_line)
    if head.content_length is not None:
        if head.content_length > len(body):
            raise SipParseError(
                f"Content-Length {head.content_length} but {len(body)} body bytes in the datagram",
                _answerable(head),
            )
        body = body[: head.content_length]
    return _finish(head, body)


def parse_message(data: bytes) -> SipMessage:
    """Exactly one message from ``data`` (a datagram or a whole framed message)."""
    message = parse_datagram(data)
    if message is None:
        raise SipParseError("no message: only blank lines")
    return message


class StreamParser:
    """Messages from a TCP byte stream, framed by Content-Length, in any chunking (§18.3).

    :meth:`feed` returns the messages completed by the new bytes.  Blank lines
    between messages (keepalives, RFC 5626 §4.4.1) are skipped.  A missing
    Content-Length means an empty body.  After an error the stream cannot be
    framed again: every later :meth:`feed` raises the same error (close the
    connection).
    """

    def __init__(
        self,
        *,
        max_message: int = MAX_MESSAGE,
        max_headers: int = MAX_HEADERS,
        max_line: int = MAX_LINE,
    ) -> None:
        self.max_message = max_message
        self.max_headers = max_headers
        self.max_line = max_line
        self._buffer = bytearray()
        self._head: _Head | None = None
        self._head_size = 0
        self._scanned = 0
        self._failed: Exception | None = None
        self.keepalives = 0
        """Blank lines (CRLF keepalives) skipped between messages."""

    @property
    def buffered(self) -> int:
        """Bytes held for a message not complete yet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[SipMessage]:
        """The messages completed by ``data``."""
        if self._failed is not None:
            raise self._failed
        self._buffer += data
        try:
            return list(self._messages())
        except (SipParseError, SipTooLarge, SipVersionError) as e:
            self._failed = e
            self._buffer.clear()
            raise

    def _messages(self) -> Iterator[SipMessage]:
        buf = self._buffer
        while True:
            if self._head is None:
                blank = 0
                while blank < len(buf) and buf[blank] in b"\r\n":
                    blank += 1
                if blank:
                    self.keepalives += buf.count(b"\n", 0, blank)
                    del buf[:blank]
                    self._scanned = 0
                if not buf:
                    self._scanned = 0
                    return
                end = _HEADER_END.search(buf, max(0, self._scanned - 3))
                self._scanned = len(buf)
                if end is None:
                    if len(buf) > self.max_message:
                        raise SipTooLarge(f"message head past {self.max_message} bytes")
                    last = buf.rfind(b"\n")
                    if len(buf) - last - 1 > self.max_line:
                        raise SipParseError(f"a line longer than {self.max_line} bytes")
                    return
                if end.start() > self.max_message:
                    raise SipTooLarge(f"message head past {self.max_message} bytes")
                self._head = _parse_head(bytes(buf[: end.start()]), self.max_headers, self.max_line)
                self._head_size = end.end()
                length = self._head.content_length or 0
                if self._head_size + length > self.max_message:
                    raise SipTooLarge(
                        f"Content-Length {length}: the message would be "
                        f"{self._head_size + length} bytes; at most {self.max_message}",
                        _answerable(self._head),
                    )
            length = self._head.content_length or 0
            total = self._head_size + length
            if len(buf) < total:
                return
            body = bytes(buf[self._head_size : total])
            head, self._head = self._head, None
            del buf[:total]
            self._scanned = 0
            yield _finish(head, body)


# --------------------------------------------------------------------------- header values


def split_list(value: str) -> list[str]:
    """The items of a comma-separated header value, commas in quotes or <> kept (§7.3.1)."""
    items: list[str] = []
    current: list[str] = []
    quoted = angle = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted and char == "<":
            angle = True
        elif not quoted and char == ">":
            angle = False
        elif char == "," and not quoted and not angle:
            items.append("".join(current).strip(" \t"))
            current = []
            continue
        current.append(char)
    items.append("".join(current).strip(" \t"))
    return [item for item in items if item]


Params = tuple[tuple[str, str | None], ...]


def _parse_params(text: str) -> Params:
    """``;a=1;b;c="x;y"`` -> (('a', '1'), ('b', None), ('c', '"x;y"')); quotes kept."""
    params: list[tuple[str, str | None]] = []
    for item in _split_outside_quotes(text, ";"):
        item = item.strip(" \t")
        if not item:
            continue
        name, eq, value = item.partition("=")
        name = name.strip(" \t")
        if not _TOKEN.fullmatch(name):
            raise SipParseError(f"parameter {item[:60]!r} has no token name")
        params.append((name, value.strip(" \t") if eq else None))
    return tuple(params)


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == sep and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if quoted:
        raise SipParseError(f"unclosed quote in {text[:60]!r}")
    parts.append("".join(current))
    return parts


def _print_params(params: Params) -> str:
    return "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)


def _param(params: Params, name: str) -> str | None:
    low = name.lower()
    for have, value in params:
        if have.lower() == low:
            return "" if value is None else value
    return None


def _set_param(params: Params, name: str, value: str | None) -> Params:
    low = name.lower()
    out = [(n, v) for n, v in params if n.lower() != low]
    if len(out) == len(params):
        return (*params, (name, value))
    kept = []
    placed = False
    for n, v in params:
        if n.lower() == low:
            if not placed:
                kept.append((name, value))
                placed = True
        else:
            kept.append((n, v))
    return tuple(kept)


_HOSTPORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-_]+)(?::(\d{1,5}))?$")


def _host_port(text: str, what: str) -> tuple[str, int | None]:
    match = _HOSTPORT.match(text.strip(" \t"))
    if match is None:
        raise SipParseError(f"{what} {text[:60]!r} is not host[:port]")
    port = match.group(2)
    number = int(port) if port is not None else None
    if number is not None and not 0 < number < 65536:
        raise SipParseError(f"{what} port {number} is not 1-65535")
    return match.group(1), number


def _print_host_port(host: str, port: int | None) -> str:
    return host if port is None else f"{host}:{port}"


@dataclass(frozen=True)
class Via:
    """One Via value (§20.42): transport, sent-by host and port, parameters (branch, rport...)."""

    transport: str
    host: str
    port: int | None = None
    params: Params = ()

    _FORM = re.compile(r"^\s*SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9\-]+)\s+([^;]+?)\s*(;.*)?$", re.S)

    @classmethod
    def parse(cls, value: str) -> Via:
        """A Via from its header value (one item of the list)."""
        match = cls._FORM.match(value)
        if match is None:
            raise SipParseError(f"Via {value[:80]!r} is not 'SIP/2.0/TRANSPORT host[:port]'")
        host, port = _host_port(match.group(2), "Via sent-by")
        return cls(match.group(1).upper(), host, port, _parse_params(match.group(3) or ""))

    def __str__(self) -> str:
        return (
            f"SIP/2.0/{self.transport} {_print_host_port(self.host, self.port)}"
            f"{_print_params(self.params)}"
        )

    def param(self, name: str) -> str | None:
        """A parameter's value ('' when it has none), or None when absent."""
        return _param(self.params, name)

    @property
    def branch(self) -> str | None:
        """The branch parameter (the transaction's id when it starts with z9hG4bK)."""
        return self.param("branch")

    @property
    def received(self) -> str | None:
        """The received parameter: the address a server saw the request come from."""
        return self.param("received")

    @property
    def rport(self) -> int | bool:
        """RFC 3581: False when absent, True when asked for (no value), else the port stamped."""
        value = self.param("rport")
        if value is None:
            return False
        if value == "":
            return True
        return int(value) if value.isdigit() else True

    @property
    def sent_by(self) -> tuple[str, int | None]:
        """Host and port the sender wrote."""
        return (self.host.lower(), self.port)

    def with_param(self, name: str, value: str | None) -> Via:
        """A copy with parameter ``name`` set (added at the end if new)."""
        return replace(self, params=_set_param(self.params, name, value))

    def stamped(self, source_host: str, source_port: int) -> Via:
        """The Via as a server keeps it (§18.2.1, RFC 3581 §4): received, and rport filled."""
        via = self
        asked_rport = self.param("rport") is not None
        if asked_rport or source_host != self.host:
            via = via.with_param("received", source_host)
        if asked_rport:
            via = via.with_param("rport", str(source_port))
        return via

    def response_address(self, default_port: int = 5060) -> tuple[str, int]:
        """Where a response to this Via goes over UDP (§18.2.2, RFC 3581 §4)."""
        host = self.received or self.host
        rport = self.rport
        if isinstance(rport, int) and not isinstance(rport, bool):
            return host, rport
        return host, self.port or default_port


@dataclass(frozen=True)
class NameAddr:
    """A From, To, Contact, Route or Record-Route value: display name, URI, parameters (tag)."""

    uri: str
    display: str | None = None
    params: Params = ()
    angle: bool = True

    @classmethod
    def parse(cls, value: str) -> NameAddr:
        """From ``"Name" <sip:a@b>;tag=1``, ``Name <sip:a@b>``, ``<sip:a@b>``, ``sip:a@b;tag=1``."""
        text = value.strip(" \t")
        if not text:
            raise SipParseError("an empty address header")
        display: str | None = None
        if text.startswith('"'):
            end = _closing_quote(text)
            display = text[: end + 1]
            text = text[end + 1 :].lstrip(" \t")
            if not text.startswith("<"):
                raise SipParseError(f"address {value[:80]!r}: a display name with no <URI>")
        elif "<" in text:
            display = text[: text.index("<")].strip(" \t") or None
            text = text[text.index("<") :]
        if text.startswith("<"):
            close = text.find(">")
            if close < 0:
                raise SipParseError(f"address {value[:80]!r} has no closing '>'")
            uri = text[1:close].strip(" \t")
            rest = text[close + 1 :]
            angle = True
        else:
            uri, _, rest = text.partition(";")
            rest = ";" + rest if rest else ""
            uri = uri.strip(" \t")
            angle = False
        if not uri or any(c in uri for c in " \t"):
            raise SipParseError(f"address {value[:80]!r} has no URI")
        rest = rest.strip(" \t")
        if rest and not rest.startswith(";"):
            raise SipParseError(f"address {value[:80]!r}: {rest[:40]!r} after the URI")
        return cls(uri, display, _parse_params(rest), angle)

    def __str__(self) -> str:
        if not self.angle and self.display is None and not any(c in self.uri for c in ";,?"):
            return f"{self.uri}{_print_params(self.params)}"
        name = f"{self.display} " if self.display else ""
        return f"{name}<{self.uri}>{_print_params(self.params)}"

    def param(self, name: str) -> str | None:
        """A header parameter's value ('' when it has none), or None when absent."""
        return _param(self.params, name)

    @property
    def tag(self) -> str | None:
        """The tag parameter (§19.3), or None."""
        return self.param("tag")

    def with_param(self, name: str, value: str | None) -> NameAddr:
        """A copy with header parameter ``name`` set."""
        return replace(self, params=_set_param(self.params, name, value))


def _closing_quote(text: str) -> int:
    escaped = False
    for index in range(1, len(text)):
        char = text[index]
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            return index
    raise SipParseError(f"unclosed quote in {text[:60]!r}")


@dataclass(frozen=True)
class CSeq:
    """The CSeq header (§20.16): a sequence number below 2**31 and a method."""

    number: int
    method: str

    @classmethod
    def parse(cls, value: str) -> CSeq:
        """``314159 INVITE`` -> CSeq(314159, 'INVITE')."""
        parts = value.split()
        if (
            len(parts) != 2
            or not parts[0].isdigit()
            or not parts[0].isascii()
            or len(parts[0]) > 10
            or not _TOKEN.fullmatch(parts[1])
        ):
            raise SipParseError(f"CSeq {value[:60]!r} is not 'number METHOD'")
        number = int(parts[0])
        if number >= 2**31:
            raise SipParseError(f"CSeq number {number} is not below 2**31")
        return cls(number, parts[1])

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


@dataclass(frozen=True)
class SipUri:
    """A sip: or sips: URI (§19.1): user, host, port, parameters (transport, lr...), headers."""

    host: str
    user: str | None = None
    port: int | None = None
    params: Params = ()
    scheme: str = "sip"
    headers: str = field(default="")

    @classmethod
    def parse(cls, value: str) -> SipUri:
        """``sip:34020000001320000001@192.0.2.7:5060;transport=udp`` -> its parts."""
        scheme, colon, rest = value.partition(":")
        if not colon or scheme.lower() not in ("sip", "sips"):
            raise SipParseError(f"URI {value[:80]!r} is not sip: or sips:")
        rest, _, headers = rest.partition("?")
        rest, semi, params = rest.partition(";")
        user: str | None = None
        if "@" in rest:
            user, _, rest = rest.rpartition("@")
        host, port = _host_port(rest, "URI host")
        return cls(host, user, port, _parse_params(params) if semi else (), scheme.lower(), headers)

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user is not None else ""
        headers = f"?{self.headers}" if self.headers else ""
        return (
            f"{self.scheme}:{user}{_print_host_port(self.host, self.port)}"
            f"{_print_params(self.params)}{headers}"
        )

    def param(self, name: str) -> str | None:
        """A URI parameter's value ('' when it has none), or None when absent."""
        return _param(self.params, name)

    @property
    def loose_route(self) -> bool:
        """The ``lr`` parameter (§16.12.1.1): a loose router."""
        return self.param("lr") is not None
