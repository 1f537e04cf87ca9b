"""``POST /api/broadcast`` and ``/api/talk`` in memory: the resource tree over the real SIP flows.

The device is our SIP stack over bytes on the same memory reactor (tests.test_sip_broadcast),
so an API call is answered when the device's part is known: one result per device.
"""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any

from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from gb28181talk.sip.talk import Talks
from gb28181talk.web.common import Authenticator
from gb28181talk.web.metrics import Metrics
from gb28181talk.web.root import build_root, build_site
from tests.fuzzing import answer_on
from tests.sipdevice import DEVICE_ID, REALM, pump
from tests.test_sip_broadcast import ADVERTISED, AUDIO_ID, PASSIVE_OFFER, _setup


def _site(broadcasts: Any = None, talks: Any = None, core: Any = None, reactor: Any = None):
    metrics = Metrics(core.manager, core.registry, None)
    return build_site(build_root(Authenticator(None), core, metrics, reactor, 5.0,
                                 broadcasts=broadcasts, talks=talks))


def _post(site: Any, path: str, body: dict[str, Any] | None = None,
          method: bytes = b"POST") -> DummyChannel:
    channel = DummyChannel()
    channel.site = site
    request = Request(channel)
    data = json.dumps(body).encode() if body is not None else b""
    request.content = BytesIO(data)
    request.requestHeaders.addRawHeader(b"content-type", b"application/json")
    request.requestHeaders.addRawHeader(b"content-length", str(len(data)).encode())
    request.requestReceived(method, path.encode(), b"HTTP/1.1")
    return channel


def _reply(channel: DummyChannel) -> tuple[int, dict[str, Any]]:
    status, _headers, body = answer_on(channel)
    return status, json.loads(body)


def test_broadcast_answers_once_each_device_is_known_one_result_each() -> None:
    reactor, manager, core, _platform, device, broadcasts = _setup()
    site = _site(broadcasts, None, core, reactor)
    channel = _post(site, "/api/broadcast", {
        "device_ids": [DEVICE_ID, "34020000001320000099"], "app": "broadcast",
        "stream": "announce", "packet_ms": 40})
    pump(reactor)
    assert not channel.transport.written.getvalue(), "waits for the device's INVITE"
    device.respond("OK")
    pump(reactor)
    device.invite(PASSIVE_OFFER)
    pump(reactor)
    status, reply = _reply(channel)
    assert status == 200 and reply["code"] == 0
    ok, missing = reply["results"]
    assert ok["result"] == "OK" and ok["channel"] == AUDIO_ID and ok["transport"] == "tcp-passive"
    assert missing["result"] == "ERROR" and missing["status"] == 404
    (session,) = manager.sessions()
    assert ok["port"] == session.port and session.params.packet_ms == 40
    status, listing = _reply(_post(site, "/api/broadcast", method=b"GET"))
    assert [b["device_id"] for b in listing["broadcasts"]] == [DEVICE_ID]
    status, stopped = _reply(_post(site, "/api/broadcast/stop", {"device_id": DEVICE_ID}))
    assert stopped == {"code": 0, "stopped": True}
    pump(reactor)
    assert device.ended == ["bye"] and not manager.sessions()


def test_bad_requests_are_400_unknown_source_404_sip_off_503() -> None:
    reactor, _manager, core, _platform, _device, broadcasts = _setup()
    site = _site(broadcasts, None, core, reactor)
    for body in ({"device_ids": [], "app": "broadcast", "stream": "announce"},
                 {"device_ids": [DEVICE_ID], "app": "broadcast"},
                 {"device_ids": [DEVICE_ID], "app": "broadcast", "stream": "announce",
                  "packet_ms": 30},
                 {"device_ids": [DEVICE_ID], "app": "broadcast", "stream": "announce",
                  "bogus": 1}):
        status, reply = _reply(_post(site, "/api/broadcast", body))
        assert status == 400 and reply["code"] == -300, body
    status, reply = _reply(_post(site, "/api/broadcast", {
        "device_ids": [DEVICE_ID], "app": "broadcast", "stream": "nothing"}))
    assert status == 404
    off = _site(None, None, core, reactor)
    status, reply = _reply(_post(off, "/api/talk", {
        "device_id": DEVICE_ID, "app": "broadcast", "stream": "announce"}))
    assert status == 503 and "--sip" in reply["msg"]


def test_talk_to_an_unknown_device_is_404() -> None:
    reactor, _manager, core, platform, _device, broadcasts = _setup()
    talks = Talks(platform, core, advertise_ip=ADVERTISED, domain=REALM)
    site = _site(broadcasts, talks, core, reactor)
    status, reply = _reply(_post(site, "/api/talk", {
        "device_id": "34020000001320000099", "app": "broadcast", "stream": "announce"}))
    assert status == 404 and reply["code"] == -1
