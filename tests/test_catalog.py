"""MANSCDP envelopes and catalogs: what routing reads, the query we build, hostile bodies."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gb28181talk.errors import ManscdpError
from gb28181talk.signalling.catalog import catalog_query, id_type, parse_catalog, read_command


def test_the_query_reads_back_as_a_catalog_query():
    command = read_command(catalog_query(7, "34020000001320000001"))
    assert (command.root, command.cmd_type, command.sn, command.device_id) == (
        "Query", "Catalog", 7, "34020000001320000001")


def test_a_catalog_part_in_gb2312_with_every_item_field():
    body = ('<?xml version="1.0" encoding="GB2312"?><Response><CmdType>Catalog</CmdType>'
            "<SN>3</SN><DeviceID>34020000001320000001</DeviceID><SumNum>5</SumNum>"
            '<DeviceList Num="2"><Item><DeviceID>34020000001370000001</DeviceID>'
            "<Name>广播</Name><Status>ON</Status><ParentID>x</ParentID></Item>"
            "<Item><Name>no id</Name></Item></DeviceList></Response>").encode("gb2312")
    part = parse_catalog(body)
    assert (part.sn, part.device_id, part.sum_num) == (3, "34020000001320000001", 5)
    [item] = part.items
    assert item.name == "广播" and item.audio_output and item.fields == {"ParentID": "x"}
    assert id_type("34020000001370000001") == "137" and id_type("137") is None


@pytest.mark.parametrize("body", [
    b"", b"<Response>", b'<!DOCTYPE r [<!ENTITY e "x">]><Response/>',
    b"<Notify><CmdType>Catalog</CmdType><SN>1</SN><DeviceID>1</DeviceID></Notify>",
    b"<Response><CmdType>Catalog</CmdType><SN>1</SN><DeviceID>1</DeviceID>"
    b"<SumNum>-1</SumNum></Response>",
])
def test_bad_catalogs_are_manscdp_errors(body: bytes):
    with pytest.raises(ManscdpError):
        parse_catalog(body)


@given(st.binary(max_size=300))
def test_garbage_raises_only_manscdp_error(body: bytes):
    for reader in (read_command, parse_catalog):
        with contextlib.suppress(ManscdpError):
            reader(body)
