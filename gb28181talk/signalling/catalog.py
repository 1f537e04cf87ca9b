"""MANSCDP beyond broadcast: any body's root and CmdType, the Catalog query and its responses.

:func:`read_command` reads the envelope every MANSCDP body shares (root,
CmdType, SN, DeviceID) so a SIP front end can route a MESSAGE by its CmdType
before any handler parses the rest.  :func:`catalog_query` builds the
platform's ``<Query><CmdType>Catalog</CmdType>``; :func:`parse_catalog` reads
one ``<Response><CmdType>Catalog</CmdType>`` (a long list comes split over
several MESSAGEs, each with ``SumNum`` and part of ``DeviceList``).  The same
hostile-input rules as :mod:`gb28181talk.signalling.manscdp` apply (its
decoder and expat guards are reused): no DOCTYPE, no entities, bounded size
and depth, GB2312/UTF-8 either way.  Sans-I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gb28181talk.errors import ManscdpError
from gb28181talk.signalling.manscdp import (
    _DIGITS,
    MAX_BODY,
    _Collector,
    _decode,
    _escape,
    _Fields,
    _parse_tree,
)

__all__ = [
    "AUDIO_OUTPUT_TYPE",
    "CatalogItem",
    "CatalogResponse",
    "Command",
    "catalog_query",
    "id_type",
    "parse_catalog",
    "read_command",
]

AUDIO_OUTPUT_TYPE = "137"
"""Digits 11-13 of a GB28181 ID for a voice output channel (the broadcast target)."""

MAX_ITEMS = 10_000
"""Catalog items one response may carry; more is refused (a real one carries a few dozen)."""


def id_type(device_id: str) -> str | None:
    """The type code (digits 11-13) of a 20-digit GB28181 ID, or None for another string."""
    if len(device_id) != 20 or not device_id.isdigit():
        return None
    return device_id[10:13]


@dataclass(frozen=True, slots=True)
class Command:
    """The envelope of any MANSCDP body: what a dispatcher routes by."""

    root: str
    """``Notify``, ``Response``, ``Query`` or ``Control`` (as written)."""
    cmd_type: str
    """As written (``Keepalive``, ``Catalog``...); compare case-insensitively."""
    sn: int | None
    device_id: str | None


@dataclass(frozen=True, slots=True)
class CatalogItem:
    """One ``<Item>`` of a catalog: a channel (or sub-device) of the device."""

    device_id: str
    name: str = ""
    status: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    """Every other child element's text, by its name as written (Manufacturer, ParentID...)."""

    @property
    def audio_output(self) -> bool:
        """A voice output channel: type code 137 at digits 11-13."""
        return id_type(self.device_id) == AUDIO_OUTPUT_TYPE


@dataclass(frozen=True, slots=True)
class CatalogResponse:
    """One Catalog response MESSAGE: its SN, the device, the total and this part's items."""

    sn: int
    device_id: str
    sum_num: int
    items: tuple[CatalogItem, ...]


class _ItemCollector(_Collector):
    """The envelope collector, also gathering each Response/DeviceList/Item as a record."""

    def __init__(self) -> None:
        super().__init__()
        self.items: list[dict[str, str]] = []
        self._item: dict[str, str] | None = None
        self._names: list[str] = []

    def start_element(self, name: str, attributes: object) -> None:
        super().start_element(name, attributes)
        self._names.append(name)
        if self.path[1:] == ["devicelist", "item"]:
            if len(self.items) >= MAX_ITEMS:
                raise ManscdpError(f"MANSCDP catalog has more than {MAX_ITEMS} items")
            self._item = {}

    def end_element(self, name: str) -> None:
        text = "".join(self.pieces[-1]).strip() if self.pieces else ""
        if self._item is not None and len(self.path) == 4 and self.path[1:3] == [
            "devicelist",
            "item",
        ]:
            self._item.setdefault(self._names[-1], text)
        elif self.path[1:] == ["devicelist", "item"] and self._item is not None:
            self.items.append(self._item)
            self._item = None
        self._names.pop()
        super().end_element(name)


def _parse(body: bytes, collector: _Collector) -> _Fields:
    if not isinstance(body, bytes | bytearray | memoryview):
        raise TypeError(f"MANSCDP bodies are bytes, not {type(body).__name__}")
    if len(body) > MAX_BODY:
        raise ManscdpError(f"MANSCDP body is {len(body)} bytes; the limit is {MAX_BODY}")
    _parse_tree(_decode(bytes(body).rstrip(b"\x00")), collector)
    return _Fields(collector)


def _optional_sn(fields: _Fields) -> int | None:
    text = fields.get("SN")
    if text is None or not _DIGITS.fullmatch(text) or len(text) > 18:
        return None
    return int(text)


def read_command(body: bytes) -> Command:
    """The root, CmdType, SN and DeviceID of a MANSCDP body; ``ManscdpError`` when unreadable."""
    fields = _parse(body, _Collector())
    return Command(fields.root, fields.require("CmdType"), _optional_sn(fields),
                   fields.get("DeviceID") or None)


def parse_catalog(body: bytes) -> CatalogResponse:
    """One ``<Response><CmdType>Catalog</CmdType>`` part: SN, DeviceID, SumNum and its items."""
    collector = _ItemCollector()
    fields = _parse(body, collector)
    if fields.root.lower() != "response" or fields.require("CmdType").lower() != "catalog":
        raise ManscdpError(f"MANSCDP <{fields.root}> is not a Catalog response")
    sum_text = fields.get("SumNum") or "0"
    if not _DIGITS.fullmatch(sum_text) or len(sum_text) > 9:
        raise ManscdpError(f"MANSCDP catalog <SumNum> {sum_text[:40]!r} is not a count")
    items = []
    for record in collector.items:
        lowered = {name.lower(): value for name, value in record.items()}
        device_id = lowered.get("deviceid", "")
        if not device_id:
            continue  # an item without an id names nothing we could address
        rest = {n: v for n, v in record.items() if n.lower() not in ("deviceid", "name", "status")}
        items.append(CatalogItem(device_id, lowered.get("name", ""), lowered.get("status", ""),
                                 rest))
    return CatalogResponse(fields.sn(), fields.require("DeviceID"), int(sum_text), tuple(items))


def catalog_query(sn: int, device_id: str, encoding: str = "GB2312") -> bytes:
    """The platform's Catalog query for ``device_id`` (answered by Response/Catalog MESSAGEs)."""
    if isinstance(sn, bool) or not isinstance(sn, int) or sn < 0:
        raise ManscdpError(f"SN must be a non-negative integer, not {sn!r}")
    text = (
        f'<?xml version="1.0" encoding="{encoding}"?>\r\n<Query>\r\n'
        f"<CmdType>Catalog</CmdType>\r\n<SN>{sn}</SN>\r\n"
        f"<DeviceID>{_escape(device_id)}</DeviceID>\r\n</Query>\r\n"
    )
    return text.encode("gb18030" if encoding.upper().startswith("GB") else "utf-8")
