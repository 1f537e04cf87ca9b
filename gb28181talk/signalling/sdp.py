"""GB28181 audio SDP: parse a device's offer, build the media server's answer (sans-I/O).

GB28181 adds two lines to plain SDP (RFC 4566): ``y=`` (the 10-digit decimal SSRC) and
``f=`` (media description).  TCP media follows RFC 4145: ``a=setup:active`` in a device's
offer means the device connects, so the media server listens (TCP passive mode).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from gb28181talk.errors import SdpError
from gb28181talk.media.payload import DOWNLINK_PREFERENCE, identify

__all__ = [
    "CONNECTION_VALUES",
    "DIRECTIONS",
    "MAX_SDP",
    "SETUP_ROLES",
    "TCP_TRANSPORTS",
    "TRANSPORTS",
    "AudioSdp",
    "answer_for_offer",
    "build_sdp",
    "parse_sdp",
]

#: Bodies longer than this (characters, or bytes before decoding) are refused: a real
#: GB28181 offer is a few hundred bytes, and a SIP message over UDP cannot exceed 64 KiB.
MAX_SDP = 64 * 1024

TCP_TRANSPORTS = frozenset({"TCP/RTP/AVP", "RTP/AVP/TCP"})
TRANSPORTS = TCP_TRANSPORTS | {"RTP/AVP"}
SETUP_ROLES = frozenset({"active", "passive", "actpass", "holdconn"})
CONNECTION_VALUES = frozenset({"new", "existing"})
DIRECTIONS = frozenset({"sendonly", "recvonly", "sendrecv", "inactive"})

_SSRC_LIMIT = 2**32
_INVERSE_SETUP = {"active": "passive", "passive": "active", "actpass": "passive",
                  "holdconn": "holdconn"}
_INVERSE_DIRECTION = {"recvonly": "sendonly", "sendonly": "recvonly", "sendrecv": "sendrecv",
                      "inactive": "inactive"}
# The rtpmap this project writes for a chosen payload type the offer did not map itself.
_DEFAULT_RTPMAP = {payload.payload_type: payload.rtpmap for payload in DOWNLINK_PREFERENCE}
"""The rtpmap an unmapped GB28181 payload type stands for, from the payload table."""

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_SDP_LINE = re.compile(r"([A-Za-z])\s*=(.*)", re.DOTALL)
_DIGITS = re.compile(r"[0-9]+")


def _check_token(name: str, value: object) -> None:
    """A single SDP field: printable, no whitespace (it is split on whitespace when parsed)."""
    if not isinstance(value, str) or not value or not value.isprintable() or " " in value:
        raise SdpError(f"{name} must be a non-empty printable string without spaces, "
                       f"not {value!r}")


def _check_text(name: str, value: object, *, allow_empty: bool = False) -> None:
    """Free text that ends a line (s=, f=): printable, no surrounding spaces (parsing strips)."""
    if not isinstance(value, str) or not value.isprintable() or value != value.strip():
        raise SdpError(f"{name} must be printable text without surrounding spaces, "
                       f"not {value!r}")
    if not value and not allow_empty:
        raise SdpError(f"{name} must not be empty; use None to leave the line out")


def _check_choice(name: str, value: object, choices: frozenset[str]) -> None:
    if value is not None and value not in choices:
        raise SdpError(f"{name} {value!r} is not one of {', '.join(sorted(choices))} (or None)")


def _check_payload_type(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 127:
        raise SdpError(f"{name} {value!r} is not an RTP payload type 0-127")


@dataclass(frozen=True, slots=True)
class AudioSdp:
    """The audio part of a GB28181 SDP offer or answer, as the talk service needs it.

    Only the first ``m=audio`` section is kept; video sections are ignored.  Values are
    checked on construction, so every ``AudioSdp`` builds to SDP that parses back to itself.
    """

    session_name: str
    """``s=``: "Play" for a broadcast offer, "Talk" for two-way talk; "" if absent."""
    origin_user: str
    """``o=`` username: the device or platform id."""
    origin_address: str
    """``o=`` unicast address."""
    connection_address: str | None
    """``c=`` address, media level over session level; None if neither is present."""
    port: int
    """``m=audio`` port (0 declines the stream; 9 is common for a TCP active side)."""
    transport: str
    """"TCP/RTP/AVP", "RTP/AVP/TCP" (both TCP) or "RTP/AVP" (UDP), upper case."""
    payload_types: tuple[int, ...]
    """``m=audio`` formats, in the offer's order of preference."""
    rtpmap: tuple[tuple[int, str], ...] = ()
    """``a=rtpmap`` entries as (payload type, "PCMA/8000"), one per payload type."""
    setup: str | None = None
    """``a=setup`` (RFC 4145): active, passive, actpass or holdconn."""
    connection: str | None = None
    """``a=connection`` (RFC 4145): new or existing."""
    direction: str | None = None
    """sendonly, recvonly, sendrecv or inactive; None if absent (SDP then means sendrecv)."""
    ssrc: int | None = None
    """``y=`` as an integer below 2**32; written back as 10 decimal digits."""
    f_line: str | None = None
    """``f=`` value, verbatim (e.g. "v/////a/1/8/1")."""

    def __post_init__(self) -> None:
        _check_text("session_name", self.session_name, allow_empty=True)
        _check_token("origin_user", self.origin_user)
        _check_token("origin_address", self.origin_address)
        if self.connection_address is not None:
            _check_token("connection_address", self.connection_address)
            if "/" in self.connection_address:
                raise SdpError(f"connection_address {self.connection_address!r} must be a "
                               "bare address, without a /ttl suffix")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not (
            0 <= self.port <= 65535
        ):
            raise SdpError(f"port {self.port!r} is not a port number 0-65535")
        if self.transport not in TRANSPORTS:
            raise SdpError(f"transport {self.transport!r} is not one of "
                           f"{', '.join(sorted(TRANSPORTS))}")
        if not isinstance(self.payload_types, tuple) or not self.payload_types:
            raise SdpError("payload_types must be a non-empty tuple of payload types")
        for payload_type in self.payload_types:
            _check_payload_type("payload type", payload_type)
        if not isinstance(self.rtpmap, tuple):
            raise SdpError("rtpmap must be a tuple of (payload type, 'NAME/RATE') pairs")
        seen: set[int] = set()
        for entry in self.rtpmap:
            if not isinstance(entry, tuple) or len(entry) != 2:
                raise SdpError(f"rtpmap entry {entry!r} is not a (payload type, 'NAME/RATE') "
                               "pair")
            _check_payload_type("rtpmap payload type", entry[0])
            _check_token("rtpmap encoding", entry[1])
            if entry[0] in seen:
                raise SdpError(f"rtpmap maps payload type {entry[0]} twice")
            seen.add(entry[0])
        _check_choice("setup", self.setup, SETUP_ROLES)
        _check_choice("connection", self.connection, CONNECTION_VALUES)
        _check_choice("direction", self.direction, DIRECTIONS)
        if self.ssrc is not None and (
            isinstance(self.ssrc, bool) or not isinstance(self.ssrc, int)
            or not 0 <= self.ssrc < _SSRC_LIMIT
        ):
            raise SdpError(f"ssrc {self.ssrc!r} is not an integer 0-{_SSRC_LIMIT - 1}")
        if self.f_line is not None:
            _check_text("f_line", self.f_line)

    @property
    def is_tcp(self) -> bool:
        """True for RTP over TCP (TCP/RTP/AVP or RTP/AVP/TCP)."""
        return self.transport in TCP_TRANSPORTS

    @property
    def device_address(self) -> str:
        """Where the peer's media is: ``c=`` if present, else ``o=`` (devices fill only one)."""
        return self.connection_address if self.connection_address is not None else (
            self.origin_address)

    @property
    def wants_passive_server(self) -> bool:
        """Read as an offer: the media server must listen for the peer's TCP connection.

        True over TCP when the offer says ``a=setup:active`` (GB28181 broadcast), ``actpass``
        (we choose passive) or nothing (RFC 4145: an offer without setup is active).
        """
        return self.is_tcp and self.setup in (None, "active", "actpass")

    @property
    def ssrc_text(self) -> str | None:
        """The ``y=`` value as GB28181 writes it: 10 decimal digits, zero-padded."""
        return None if self.ssrc is None else f"{self.ssrc:010d}"

    def rtpmap_for(self, payload_type: int) -> str | None:
        """The ``a=rtpmap`` encoding ("PCMA/8000") of a payload type, or None if unmapped."""
        for mapped, encoding in self.rtpmap:
            if mapped == payload_type:
                return encoding
        return None


# ---------------------------------------------------------------------------- parsing


@dataclass(slots=True)
class _Section:
    """Attributes gathered for the session level or one media section while parsing."""

    connection_address: str | None = None
    setup: str | None = None
    connection: str | None = None
    direction: str | None = None
    rtpmap: dict[int, str] = field(default_factory=dict)


def _decode(text: str | bytes | bytearray | memoryview) -> str:
    """Text as given; bytes as UTF-8, else GB18030 (a superset of GB2312 and GBK)."""
    if isinstance(text, str):
        if len(text) > MAX_SDP:
            raise SdpError(f"SDP body is {len(text)} characters; the limit is {MAX_SDP}")
        return text
    if not isinstance(text, bytes | bytearray | memoryview):
        raise TypeError(f"parse_sdp() takes str or bytes, not {type(text).__name__}")
    data = bytes(text)
    if len(data) > MAX_SDP:
        raise SdpError(f"SDP body is {len(data)} bytes; the limit is {MAX_SDP}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as utf8_error:
        try:
            return data.decode("gb18030")
        except UnicodeDecodeError:
            raise SdpError(
                f"SDP body is neither UTF-8 ({utf8_error.reason} at byte {utf8_error.start}) "
                "nor GB2312/GBK/GB18030 text"
            ) from None


class _Line:
    """One SDP line being parsed, so that every error names the line and what is wrong."""

    __slots__ = ("kind", "number", "text", "value")

    def __init__(self, number: int, text: str, kind: str, value: str) -> None:
        self.number = number
        self.text = text
        self.kind = kind
        self.value = value

    def error(self, problem: str) -> SdpError:
        shown = self.text if len(self.text) <= 80 else self.text[:77] + "..."
        return SdpError(f"SDP line {self.number} {shown!r}: {problem}")


def _printable(line: _Line, what: str, text: str) -> str:
    if not text.isprintable():
        raise line.error(f"{what} {text!r} contains control or non-printable characters")
    return text


def _parse_origin(line: _Line) -> tuple[str, str]:
    fields = line.value.split()
    if len(fields) != 6:
        raise line.error(f"o= needs 6 fields (username sess-id sess-version IN IP4 address), "
                         f"found {len(fields)}")
    return _printable(line, "username", fields[0]), _printable(line, "address", fields[5])


def _parse_connection_address(line: _Line) -> str:
    fields = line.value.split()
    if len(fields) != 3:
        raise line.error(f"c= needs 3 fields (IN IP4 address), found {len(fields)}")
    address = fields[2].split("/", 1)[0]  # drop a multicast /ttl
    if not address:
        raise line.error("c= has an empty address")
    return _printable(line, "address", address)


def _parse_payload_type(line: _Line, text: str) -> int:
    if not _DIGITS.fullmatch(text) or len(text) > 3 or int(text) > 127:
        raise line.error(f"payload type {text!r} is not a number 0-127")
    return int(text)


def _parse_audio_media(line: _Line, fields: list[str]) -> tuple[int, str, tuple[int, ...]]:
    if len(fields) < 4:
        raise line.error("m=audio needs a port, a transport and at least one payload type")
    port_text = fields[1].split("/", 1)[0]  # "port/count" is allowed by RFC 4566
    if not _DIGITS.fullmatch(port_text) or len(port_text) > 5 or int(port_text) > 65535:
        raise line.error(f"port {fields[1]!r} is not a number 0-65535")
    transport = fields[2].upper()
    if transport not in TRANSPORTS:
        raise line.error(f"transport {fields[2]!r} is not one of "
                         f"{', '.join(sorted(TRANSPORTS))}")
    payload_types = tuple(_parse_payload_type(line, text) for text in fields[3:])
    return int(port_text), transport, payload_types


def _parse_attribute(line: _Line, section: _Section, *, media: bool) -> None:
    name, _, value = line.value.partition(":")
    name = name.strip().lower()
    value = value.strip()
    if name in DIRECTIONS:
        section.direction = name
    elif name == "setup":
        role = value.lower()
        if role not in SETUP_ROLES:
            raise line.error(f"setup {value!r} is not one of {', '.join(sorted(SETUP_ROLES))}")
        section.setup = role
    elif name == "connection":
        connection = value.lower()
        if connection not in CONNECTION_VALUES:
            raise line.error(f"connection {value!r} is not 'new' or 'existing'")
        section.connection = connection
    elif name == "rtpmap" and media:
        parts = value.split()
        if len(parts) < 2:
            raise line.error("rtpmap needs a payload type and an encoding (8 PCMA/8000)")
        payload_type = _parse_payload_type(line, parts[0])
        encoding = _printable(line, "rtpmap encoding", parts[1])
        section.rtpmap.setdefault(payload_type, encoding)  # the first mapping wins


def _parse_ssrc(line: _Line) -> int | None:
    text = line.value.strip()
    if not text:
        return None
    if not _DIGITS.fullmatch(text):
        raise line.error("y= (the SSRC) must be decimal digits, e.g. y=0100000123")
    if len(text) > 10 or int(text) >= _SSRC_LIMIT:
        raise line.error(f"y= (the SSRC) must be at most 10 digits and below {_SSRC_LIMIT}")
    return int(text)


def parse_sdp(text: str | bytes) -> AudioSdp:
    """Parse a GB28181 SDP body (offer or answer) into its audio description.

    Tolerates ``\\n``, ``\\r\\n`` or ``\\r`` line ends, extra spaces, unknown lines and
    attributes, video sections and GB2312 or UTF-8 bytes.  Requires an ``o=`` line and an
    ``m=audio`` line.  ``y=`` and ``f=`` are read wherever they appear (devices put them
    after the last media section).  Raises ``SdpError`` naming the line and the problem.
    """
    body = _decode(text)
    session = _Section()
    audio: _Section | None = None
    current: _Section | None = session  # None while inside an ignored (non-audio) section
    session_name: str | None = None
    origin: tuple[str, str] | None = None
    media_line: tuple[int, str, tuple[int, ...]] | None = None
    ssrc: int | None = None
    f_line: str | None = None
    seen_y = seen_f = False

    for number, raw in enumerate(_LINE_BREAK.split(body), start=1):
        stripped = raw.strip().strip("\x00\ufeff").strip()
        if not stripped:
            continue
        match = _SDP_LINE.fullmatch(stripped)
        if match is None:
            shown = stripped if len(stripped) <= 80 else stripped[:77] + "..."
            raise SdpError(f"SDP line {number} {shown!r} is not of the form 'x=value'")
        line = _Line(number, stripped, match.group(1).lower(), match.group(2).strip())
        if line.kind == "m":
            fields = line.value.split()
            if audio is None and fields and fields[0].lower() == "audio":
                media_line = _parse_audio_media(line, fields)
                audio = current = _Section()
            else:
                current = None  # video, a second audio section, application...
        elif line.kind == "o" and origin is None:
            origin = _parse_origin(line)
        elif line.kind == "s" and session_name is None:
            session_name = _printable(line, "session name", line.value)
        elif line.kind == "c" and current is not None:
            current.connection_address = _parse_connection_address(line)
        elif line.kind == "a" and current is not None:
            _parse_attribute(line, current, media=current is audio)
        elif line.kind == "y" and not seen_y:
            ssrc, seen_y = _parse_ssrc(line), True
        elif line.kind == "f" and not seen_f:
            f_line, seen_f = (_printable(line, "f=", line.value) or None), True

    if origin is None:
        raise SdpError("SDP has no o= line (o=username sess-id sess-version IN IP4 address)")
    if audio is None or media_line is None:
        raise SdpError("SDP has no m=audio line: it offers no audio stream")
    port, transport, payload_types = media_line
    return AudioSdp(
        session_name=session_name or "",
        origin_user=origin[0],
        origin_address=origin[1],
        connection_address=audio.connection_address or session.connection_address,
        port=port,
        transport=transport,
        payload_types=payload_types,
        rtpmap=tuple(audio.rtpmap.items()),
        setup=audio.setup or session.setup,
        connection=audio.connection or session.connection,
        direction=audio.direction or session.direction,
        ssrc=ssrc,
        f_line=f_line,
    )


# --------------------------------------------------------------------------- building


def _address_type(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def build_sdp(sdp: AudioSdp) -> str:
    """Write ``sdp`` as a GB28181 SDP body with ``\\r\\n`` line ends (encode it as ASCII/UTF-8).

    The ``c=`` line is written at session level; ``y=`` as 10 digits; ``o=`` with session
    id and version 0.
    """
    lines = [
        "v=0",
        f"o={sdp.origin_user} 0 0 IN {_address_type(sdp.origin_address)} {sdp.origin_address}",
        f"s={sdp.session_name or ' '}",
    ]
    if sdp.connection_address is not None:
        lines.append(f"c=IN {_address_type(sdp.connection_address)} {sdp.connection_address}")
    lines.append("t=0 0")
    lines.append(f"m=audio {sdp.port} {sdp.transport} "
                 + " ".join(str(payload_type) for payload_type in sdp.payload_types))
    lines.extend(f"a=rtpmap:{payload_type} {encoding}" for payload_type, encoding in sdp.rtpmap)
    if sdp.setup is not None:
        lines.append(f"a=setup:{sdp.setup}")
    if sdp.connection is not None:
        lines.append(f"a=connection:{sdp.connection}")
    if sdp.direction is not None:
        lines.append(f"a={sdp.direction}")
    if sdp.ssrc_text is not None:
        lines.append(f"y={sdp.ssrc_text}")
    if sdp.f_line is not None:
        lines.append(f"f={sdp.f_line}")
    return "\r\n".join(lines) + "\r\n"


def _is_usable(offer: AudioSdp, payload_type: int) -> bool:
    """G.711 (PCMA, PCMU) or PS, judged by the rtpmap, else by the GB28181 numbers 8, 0, 96."""
    return identify(payload_type, offer.rtpmap_for(payload_type)) is not None


def answer_for_offer(
    offer: AudioSdp,
    *,
    address: str,
    port: int,
    origin_user: str,
    payload_type: int | None = None,
) -> AudioSdp:
    """The media server's answer to a device's offer.

    Our ``address`` (in ``c=`` and ``o=``) and ``port``; the offer's session name,
    transport, ``y=`` and ``f=``; over TCP ``a=setup`` inverted (active->passive,
    passive->active, actpass->passive; none -> passive, the RFC 4145 default) and
    ``a=connection:new`` (over UDP neither line); direction inverted (recvonly<->sendonly,
    sendrecv stays).

    The payload type is ``payload_type`` if the offer lists it, else the first of the
    offer's G.711/PS types (8, 0, 96); read the choice from ``answer.payload_types[0]``.
    Raises ``SdpError`` if the offer has none of them.
    """
    if payload_type is not None and payload_type in offer.payload_types:
        chosen = payload_type
    else:
        usable = [candidate for candidate in offer.payload_types if _is_usable(offer, candidate)]
        if not usable:
            wanted = "" if payload_type is None else f"payload type {payload_type} or "
            raise SdpError(
                f"the offer's payload types {list(offer.payload_types)} include no "
                f"{wanted}G.711/PS type (8 PCMA, 0 PCMU, 96 PS); the device cannot take "
                "our audio"
            )
        chosen = usable[0]
    encoding = offer.rtpmap_for(chosen) or _DEFAULT_RTPMAP.get(chosen)
    setup: str | None = None
    if offer.is_tcp:
        setup = "passive" if offer.setup is None else _INVERSE_SETUP[offer.setup]
    return replace(
        offer,
        origin_user=origin_user,
        origin_address=address,
        connection_address=address,
        port=port,
        payload_types=(chosen,),
        rtpmap=() if encoding is None else ((chosen, encoding),),
        setup=setup,
        connection="new" if offer.is_tcp else None,
        direction=None if offer.direction is None else _INVERSE_DIRECTION[offer.direction],
    )
