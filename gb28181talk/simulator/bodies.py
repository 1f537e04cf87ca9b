"""The MANSCDP bodies a simulated device reads and writes: queries in; catalog, info, keepalive out.

The broadcast Notify, its Response and the Keepalive come from ``signalling.manscdp``;
``Catalog`` and ``DeviceInfo`` (queries the platform sends after a device registers) are
read and answered here, as only the device side needs them.  Parsing is expat with DTDs and
entities refused, like the signalling module's.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.parsers import expat

from gb28181talk.errors import ManscdpError
from gb28181talk.signalling.manscdp import MAX_BODY, MAX_DEPTH

__all__ = [
    "AUDIO_OUTPUT_TYPE",
    "Command",
    "audio_output_id",
    "catalog_response",
    "device_info_response",
    "read_command",
]

AUDIO_OUTPUT_TYPE = "137"
"""Digits 11-13 of an ID that names a voice output channel (the broadcast target)."""


@dataclass(frozen=True, slots=True)
class Command:
    """Any MANSCDP body's root, CmdType, SN and DeviceID (what a device dispatches on)."""

    root: str
    """``Query``, ``Notify``, ``Control``, ``Response`` (as written)."""
    cmd_type: str
    sn: int
    device_id: str | None


def read_command(body: bytes) -> Command:
    """A MANSCDP body's root and its CmdType, SN and DeviceID; ManscdpError if unreadable."""
    if len(body) > MAX_BODY:
        raise ManscdpError(f"MANSCDP body is {len(body)} bytes; the limit is {MAX_BODY}")
    data = bytes(body).rstrip(b"\x00")
    try:
        text = data.decode("gb18030")
    except UnicodeDecodeError:
        text = data.decode("utf-8", "replace")
    path: list[str] = []
    texts: dict[str, str] = {}
    root: list[str] = []

    def start(name: str, attributes: object) -> None:
        if len(path) >= MAX_DEPTH:
            raise ManscdpError(f"MANSCDP elements are nested deeper than {MAX_DEPTH}")
        if not root:
            root.append(name)
        path.append(name.lower())

    def end(name: str) -> None:
        path.pop()

    def characters(data: str) -> None:
        if len(path) == 2:
            texts[path[1]] = texts.get(path[1], "") + data

    def refuse(*_: object) -> None:
        raise ManscdpError("MANSCDP body has a DOCTYPE or entity; refused")

    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = characters
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    try:
        parser.Parse(text, True)
    except expat.ExpatError as error:
        raise ManscdpError(f"MANSCDP body is not well-formed XML: {error}") from None
    if not root or not texts.get("cmdtype", "").strip():
        raise ManscdpError("MANSCDP body has no root or no <CmdType>")
    sn_text = texts.get("sn", "0").strip()
    if not sn_text.isdigit():
        raise ManscdpError(f"MANSCDP <SN> {sn_text[:40]!r} is not a number")
    device = texts.get("deviceid", "").strip() or None
    return Command(root[0], texts["cmdtype"].strip(), int(sn_text), device)


def audio_output_id(device_id: str) -> str:
    """The device's voice output channel: its ID with type 137 (digits 11-13), the rest kept.

    ``34020000001320000007`` -> ``34020000001370000007``: centre code, network and sequence
    kept, so the devices of ``--count`` have channels of their own.
    """
    if len(device_id) != 20 or not device_id.isdigit():
        return device_id + "-audio"
    return device_id[:10] + AUDIO_OUTPUT_TYPE + device_id[13:]


def _document(root: str, children: list[str]) -> bytes:
    text = "\r\n".join(['<?xml version="1.0" encoding="GB2312"?>', f"<{root}>", *children,
                        f"</{root}>", ""])
    return text.encode("gb2312", "xmlcharrefreplace")


def _item(channel_id: str, name: str, parent: str, domain: str, address: str) -> str:
    return "\r\n".join([
        "<Item>",
        f"<DeviceID>{channel_id}</DeviceID>",
        f"<Name>{name}</Name>",
        "<Manufacturer>gb28181talk</Manufacturer>",
        "<Model>simulator</Model>",
        "<Owner>Owner</Owner>",
        f"<CivilCode>{domain[:6]}</CivilCode>",
        "<Address>Address</Address>",
        "<Parental>0</Parental>",
        f"<ParentID>{parent}</ParentID>",
        "<SafetyWay>0</SafetyWay>",
        "<RegisterWay>1</RegisterWay>",
        "<Secrecy>0</Secrecy>",
        f"<IPAddress>{address}</IPAddress>",
        "<Status>ON</Status>",
        "</Item>",
    ])


def catalog_response(sn: int, device_id: str, domain: str, address: str) -> bytes:
    """The device's ``Response/Catalog``: itself and its one voice output channel (type 137)."""
    items = [
        _item(device_id, f"simulated device {device_id[-4:]}", domain, domain, address),
        _item(audio_output_id(device_id), "voice output", device_id, domain, address),
    ]
    return _document("Response", [
        "<CmdType>Catalog</CmdType>",
        f"<SN>{sn}</SN>",
        f"<DeviceID>{device_id}</DeviceID>",
        f"<SumNum>{len(items)}</SumNum>",
        f'<DeviceList Num="{len(items)}">',
        *items,
        "</DeviceList>",
    ])


def device_info_response(sn: int, device_id: str) -> bytes:
    """The device's ``Response/DeviceInfo``: maker, model, firmware, one channel."""
    return _document("Response", [
        "<CmdType>DeviceInfo</CmdType>",
        f"<SN>{sn}</SN>",
        f"<DeviceID>{device_id}</DeviceID>",
        f"<DeviceName>simulated device {device_id[-4:]}</DeviceName>",
        "<Result>OK</Result>",
        "<Manufacturer>gb28181talk</Manufacturer>",
        "<Model>gb28181talk-device</Model>",
        "<Firmware>1.0</Firmware>",
        "<Channel>1</Channel>",
    ])
