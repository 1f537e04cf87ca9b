"""SipPlatform: devices' requests routed by method and CmdType; the platform's own requests."""

from __future__ import annotations

from twisted.internet.task import Clock

from gb28181talk.sip.message import response_for
from gb28181talk.sip.platform import IncomingMessage, RequestFailed, Route
from tests.sipdevice import DEVICE, DEVICE_ID, Device, connect, new_platform, pump


def _setup():
    clock = Clock()
    platform = new_platform(clock)
    device = Device(clock)
    to_platform, to_device = connect(clock, platform, device)
    return clock, platform, device, to_platform, to_device


def test_messages_go_to_the_handler_of_their_cmd_type_and_its_status_is_the_answer():
    clock, platform, device, _, _ = _setup()
    seen: list[IncomingMessage] = []

    def keepalive(message: IncomingMessage) -> int | None:
        seen.append(message)
        return None if len(seen) == 1 else 404

    platform.add_message_handler("KEEPALIVE", keepalive)
    device.keepalive(sn=7)
    pump(clock)
    assert device.last.status == 200
    assert seen[0].device_id == DEVICE_ID and seen[0].command.sn == 7
    assert seen[0].command.cmd_type == "Keepalive" and seen[0].command.root == "Notify"
    device.keepalive(sn=8)
    pump(clock)
    assert device.last.status == 404


def test_unhandled_cmd_type_is_200_unreadable_body_400_failing_handler_500():
    clock, platform, device, _, _ = _setup()
    device.message(b"<Notify><CmdType>Alarm</CmdType><SN>1</SN></Notify>")
    pump(clock)
    assert device.last.status == 200
    device.message(b"<Notify><CmdType>Alarm</CmdType>")
    pump(clock)
    assert device.last.status == 400
    device.message(b'<!DOCTYPE x [<!ENTITY a "b">]><Notify><CmdType>&a;</CmdType></Notify>')
    pump(clock)
    assert device.last.status == 400

    def broken(message: IncomingMessage) -> int | None:
        raise RuntimeError("boom")

    platform.add_message_handler("Alarm", broken)
    device.message(b"<Notify><CmdType>Alarm</CmdType><SN>2</SN></Notify>")
    pump(clock)
    assert device.last.status == 500


def test_register_without_registry_is_501_then_goes_to_the_register_handler():
    clock, platform, device, _, _ = _setup()
    device.register()
    pump(clock)
    assert device.last.status == 501
    calls = []
    platform.register_handler = lambda tx, req: (calls.append(req), tx.respond(
        response_for(req, 200, to_tag="r")))
    device.register()
    pump(clock)
    assert device.last.status == 200 and calls[0].method == "REGISTER"


def test_send_message_goes_where_the_device_is_and_fires_with_its_answer():
    clock, platform, device, _, to_device = _setup()
    platform.locate = lambda device_id: (
        Route(device_id, to_device, f"sip:{device_id}@{DEVICE[0]}:{DEVICE[1]}")
        if device_id == DEVICE_ID else None
    )
    answers = []
    platform.send_message(DEVICE_ID, b"<Query/>").addCallback(answers.append)
    pump(clock)
    assert [a.status for a in answers] == [200]
    got = device.requests[-1]
    assert got.method == "MESSAGE" and got.body == b"<Query/>"
    assert got.header("Content-Type") == "Application/MANSCDP+xml"
    assert got.uri == f"sip:{DEVICE_ID}@{DEVICE[0]}:{DEVICE[1]}"
    assert got.to.uri == f"sip:{DEVICE_ID}@3402000000"
    device.answer_status = 403
    platform.send_message(DEVICE_ID, b"<Query/>").addCallback(answers.append)
    pump(clock)
    assert answers[-1].status == 403
    assert platform.pending == 0


def test_unknown_device_and_no_answer_fail_with_their_reason():
    clock, platform, _, _, to_device = _setup()
    failures = []
    platform.send_message("34020000001320000099", b"x").addErrback(
        lambda f: failures.append(f.value))
    assert isinstance(failures[0], RequestFailed) and failures[0].reason == "unknown-device"
    to_device.cut = True
    platform.locate = lambda device_id: Route(device_id, to_device, f"sip:{device_id}@h")
    platform.send_message(DEVICE_ID, b"x").addErrback(lambda f: failures.append(f.value))
    pump(clock, 64 * 0.5 + 1)
    pump(clock, 5)
    assert failures[1].reason == "timeout"
    assert platform.pending == 0
    pump(clock, 100)
    assert not clock.getDelayedCalls()
