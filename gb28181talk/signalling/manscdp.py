"""MANSCDP XML bodies for GB28181 broadcast: build and parse them, safely, without I/O.

Covers the broadcast Notify, the device's broadcast Response and the Keepalive Notify.
Parsing uses expat directly and refuses any DOCTYPE before the parser can expand an entity,
so billion-laughs and external-entity documents cost nothing.  Devices often declare GB2312
and send UTF-8 (or the reverse): the body is decoded by its declaration, then by the other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from xml.parsers import expat

from gb28181talk.errors import ManscdpError

__all__ = [
    "MAX_BODY",
    "MAX_DEPTH",
    "RESULTS",
    "BroadcastNotify",
    "BroadcastResponse",
    "Keepalive",
    "ManscdpMessage",
    "build_xml",
    "parse_xml",
]

#: Bodies larger than this are refused unread; a real broadcast body is about 200 bytes.
MAX_BODY = 64 * 1024
#: Elements nested deeper than this are refused (the deepest we read is Response/Info/Reason).
MAX_DEPTH = 16

RESULTS = frozenset({"OK", "ERROR"})

# Encoding name (lower case) -> (Python codec, the name to declare).
_GB = "gb18030"
_UTF8 = "utf-8"
_ENCODINGS = {
    "gb2312": ("gb2312", "GB2312"),
    "gbk": ("gbk", "GBK"),
    "gb18030": ("gb18030", "GB18030"),
    "utf-8": ("utf-8", "UTF-8"),
    "utf8": ("utf-8", "UTF-8"),
}
_DECLARATION = re.compile(
    rb"\s*<\?xml\s[^>]*?\bencoding\s*=\s*[\"']([A-Za-z0-9._-]{1,40})[\"']", re.IGNORECASE
)
# Characters XML 1.0 does not allow anywhere in a document.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_DIGITS = re.compile(r"[0-9]+")


def _check_sn(sn: object) -> None:
    if isinstance(sn, bool) or not isinstance(sn, int) or sn < 0:
        raise ManscdpError(f"SN must be a non-negative integer, not {sn!r}")


def _check_text(name: str, value: object, *, allow_none: bool = False) -> None:
    """Non-empty text of characters XML can carry (None only where the field is optional)."""
    if value is None and allow_none:
        return
    if not isinstance(value, str) or not value:
        raise ManscdpError(f"{name} must be a non-empty string, not {value!r}")
    bad = _NOT_XML_CHAR.search(value)
    if bad is not None:
        raise ManscdpError(f"{name} {value!r} contains {bad.group()!r}, which XML cannot carry")


@dataclass(frozen=True, slots=True)
class BroadcastNotify:
    """Platform -> device: start a voice broadcast from ``source_id`` to ``target_id``."""

    sn: int
    source_id: str
    """The platform's (or audio source's) id: the device sends its INVITE to it."""
    target_id: str
    """The device's audio output channel id."""

    def __post_init__(self) -> None:
        _check_sn(self.sn)
        _check_text("source_id", self.source_id)
        _check_text("target_id", self.target_id)


@dataclass(frozen=True, slots=True)
class BroadcastResponse:
    """Device -> platform: whether it accepts the broadcast (then it sends an INVITE)."""

    sn: int
    device_id: str
    result: str
    """"OK" or "ERROR"."""
    reason: str | None = None
    """Why not, as ``<Info><Reason>``; often Chinese text (设备忙: device busy)."""

    def __post_init__(self) -> None:
        _check_sn(self.sn)
        _check_text("device_id", self.device_id)
        if self.result not in RESULTS:
            raise ManscdpError(f"result must be 'OK' or 'ERROR', not {self.result!r}")
        _check_text("reason", self.reason, allow_none=True)


@dataclass(frozen=True, slots=True)
class Keepalive:
    """Device -> platform heartbeat."""

    sn: int
    device_id: str
    status: str = "OK"

    def __post_init__(self) -> None:
        _check_sn(self.sn)
        _check_text("device_id", self.device_id)
        _check_text("status", self.status)


ManscdpMessage = BroadcastNotify | BroadcastResponse | Keepalive


# --------------------------------------------------------------------------- building


def _escape(text: str) -> str:
    """Element content: escape markup, and CR so that the parser does not fold it into LF."""
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\r", "&#13;"))


def _elements(message: ManscdpMessage) -> tuple[str, list[str]]:
    """The root element's name and its child elements, in GB28181 order."""
    def element(name: str, value: object) -> str:
        return f"<{name}>{_escape(str(value))}</{name}>"

    if isinstance(message, BroadcastNotify):
        return "Notify", [element("CmdType", "Broadcast"), element("SN", message.sn),
                          element("SourceID", message.source_id),
                          element("TargetID", message.target_id)]
    if isinstance(message, BroadcastResponse):
        children = [element("CmdType", "Broadcast"), element("SN", message.sn),
                    element("DeviceID", message.device_id), element("Result", message.result)]
        if message.reason is not None:
            children.append(f"<Info>\r\n{element('Reason', message.reason)}\r\n</Info>")
        return "Response", children
    if isinstance(message, Keepalive):
        return "Notify", [element("CmdType", "Keepalive"), element("SN", message.sn),
                          element("DeviceID", message.device_id),
                          element("Status", message.status)]
    raise TypeError(f"build_xml() takes a MANSCDP message, not {type(message).__name__}")


def build_xml(message: ManscdpMessage, encoding: str = "GB2312") -> bytes:
    """The MANSCDP body for ``message``, declared and encoded as ``encoding``.

    ``encoding`` is GB2312 (the GB28181 default), GBK, GB18030 or UTF-8.  Characters the
    encoding lacks are written as XML character references, so any message can be sent.
    """
    try:
        codec, declared = _ENCODINGS[encoding.strip().lower()]
    except KeyError:
        raise ManscdpError(f"cannot write MANSCDP as {encoding!r}; use GB2312, GBK, GB18030 "
                           "or UTF-8") from None
    root, children = _elements(message)
    text = "\r\n".join([f'<?xml version="1.0" encoding="{declared}"?>', f"<{root}>",
                        *children, f"</{root}>", ""])
    return text.encode(codec, "xmlcharrefreplace")


# ---------------------------------------------------------------------------- parsing


def _describe(error: UnicodeDecodeError) -> str:
    return f"{error.reason} at byte {error.start} (0x{error.object[error.start]:02x})"


def _decode(body: bytes) -> str:
    """Decode by the XML declaration, then by the other of the GB family and UTF-8.

    A GB2312 or GBK declaration is tried as declared, then as GB18030 (its superset:
    devices declaring GB2312 often send GBK characters), then as UTF-8.
    """
    if body.startswith(b"\xef\xbb\xbf"):
        declared, codecs = "a UTF-8 byte order mark", (_UTF8, _GB)
        body = body[3:]
    else:
        match = _DECLARATION.match(body)
        name = match.group(1).decode("ascii") if match else None
        codec = _ENCODINGS.get(name.lower(), ("", ""))[0] if name else ""
        if name is None:
            declared, codecs = "no encoding (UTF-8 by default)", (_UTF8, _GB)
        elif codec == _UTF8:
            declared, codecs = f"encoding {name}", (_UTF8, _GB)
        elif codec:
            declared, codecs = f"encoding {name}", tuple(dict.fromkeys((codec, _GB, _UTF8)))
        else:
            declared, codecs = f"unsupported encoding {name}", (_UTF8, _GB)
    errors = []
    for codec in codecs:
        try:
            return body.decode(codec)
        except UnicodeDecodeError as error:
            errors.append(f"not {codec.upper()} ({_describe(error)})")
    raise ManscdpError(f"MANSCDP body declares {declared} but is {', '.join(errors)}")


class _Collector:
    """expat handlers that gather element text by path and refuse hostile constructs."""

    def __init__(self) -> None:
        self.root: str | None = None
        self.path: list[str] = []
        self.pieces: list[list[str]] = []
        self.texts: dict[tuple[str, ...], list[str]] = {}

    def start_element(self, name: str, attributes: object) -> None:
        if len(self.path) >= MAX_DEPTH:
            raise ManscdpError(f"MANSCDP elements are nested deeper than {MAX_DEPTH}")
        if self.root is None:
            self.root = name
        self.path.append(name.lower())
        self.pieces.append([])

    def end_element(self, name: str) -> None:
        text = "".join(self.pieces.pop())
        self.texts.setdefault(tuple(self.path), []).append(text)
        self.path.pop()

    def character_data(self, data: str) -> None:
        if self.pieces:
            self.pieces[-1].append(data)

    @staticmethod
    def refuse_doctype(name: str, *_: object) -> None:
        raise ManscdpError(f"MANSCDP body has a DOCTYPE ({name!r}); DTDs and entity "
                           "declarations are refused")

    @staticmethod
    def refuse_entity(name: str, *_: object) -> None:
        raise ManscdpError(f"MANSCDP body declares entity {name!r}; entities are refused")

    @staticmethod
    def refuse_external(*_: object) -> int:
        raise ManscdpError("MANSCDP body refers to an external entity; entities are refused")


def _parse_tree(text: str, collector: _Collector | None = None) -> _Collector:
    """Parse with expat behind the guards (no DOCTYPE, no entities) into ``collector``."""
    collector = collector if collector is not None else _Collector()
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.buffer_text = True
    parser.StartElementHandler = collector.start_element
    parser.EndElementHandler = collector.end_element
    parser.CharacterDataHandler = collector.character_data
    parser.StartDoctypeDeclHandler = collector.refuse_doctype
    parser.EntityDeclHandler = collector.refuse_entity
    parser.UnparsedEntityDeclHandler = collector.refuse_entity
    parser.ExternalEntityRefHandler = collector.refuse_external
    try:
        parser.Parse(text, True)
    except expat.ExpatError as error:
        raise ManscdpError(f"MANSCDP body is not well-formed XML: {error}") from None
    if collector.root is None:  # pragma: no cover - expat reports "no element found" first
        raise ManscdpError("MANSCDP body has no root element")
    return collector


class _Fields:
    """The child elements of one parsed message, looked up case-insensitively."""

    def __init__(self, collector: _Collector) -> None:
        assert collector.root is not None
        self.root = collector.root
        self.texts = collector.texts

    def get(self, *names: str) -> str | None:
        """Stripped text of root/names..., None if absent; an error if it appears twice."""
        values = self.texts.get((self.root.lower(), *(name.lower() for name in names)))
        if not values:
            return None
        if len(values) > 1:
            raise ManscdpError(f"MANSCDP <{self.root}> has {len(values)} <{'/'.join(names)}> "
                               "elements; expected one")
        return values[0].strip()

    def require(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise ManscdpError(f"MANSCDP <{self.root}> has no <{name}> element")
        if not value:
            raise ManscdpError(f"MANSCDP <{self.root}> has an empty <{name}> element")
        return value

    def sn(self) -> int:
        text = self.require("SN")
        if not _DIGITS.fullmatch(text):
            raise ManscdpError(f"MANSCDP <SN> {text[:40]!r} is not a non-negative integer")
        try:
            return int(text)
        except ValueError:  # more digits than int() will convert
            raise ManscdpError(f"MANSCDP <SN> has {len(text)} digits; too many") from None


def parse_xml(body: bytes) -> ManscdpMessage:
    """Parse a MANSCDP body into a ``BroadcastNotify``, ``BroadcastResponse`` or ``Keepalive``.

    Element names, the root and CmdType match case-insensitively and text is stripped.
    Raises ``ManscdpError`` for anything else: too big, undecodable, not well-formed, a
    DOCTYPE or entity, nesting deeper than ``MAX_DEPTH``, an unknown root or CmdType, a
    missing or non-integer SN, a missing id.
    """
    if not isinstance(body, bytes | bytearray | memoryview):
        raise TypeError(f"parse_xml() takes bytes, not {type(body).__name__}")
    if len(body) > MAX_BODY:
        raise ManscdpError(f"MANSCDP body is {len(body)} bytes; the limit is {MAX_BODY}")
    data = bytes(body).rstrip(b"\x00")  # some devices end the body with NULs
    fields = _Fields(_parse_tree(_decode(data)))
    root = fields.root.lower()
    if root not in ("notify", "response"):
        raise ManscdpError(f"unsupported MANSCDP root <{fields.root}>; expected <Notify> "
                           "or <Response>")
    command = fields.require("CmdType")
    kind = (root, command.lower())
    if kind == ("notify", "broadcast"):
        return BroadcastNotify(fields.sn(), fields.require("SourceID"),
                               fields.require("TargetID"))
    if kind == ("response", "broadcast"):
        result = fields.require("Result").upper()
        if result not in RESULTS:
            raise ManscdpError(f"MANSCDP broadcast <Result> {result[:40]!r} is not OK or "
                               "ERROR")
        reason = fields.get("Info", "Reason") or fields.get("Reason") or None
        return BroadcastResponse(fields.sn(), fields.require("DeviceID"), result, reason)
    if kind == ("notify", "keepalive"):
        return Keepalive(fields.sn(), fields.require("DeviceID"), fields.get("Status") or "OK")
    raise ManscdpError(f"unsupported MANSCDP <{fields.root}> CmdType {command[:40]!r}; this "
                       "module handles Notify Broadcast/Keepalive and Response Broadcast")
