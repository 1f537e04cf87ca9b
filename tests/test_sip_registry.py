"""The registrar on a Clock: digest REGISTER, Expires, keepalives, offline, the catalog."""

from __future__ import annotations

from twisted.internet.task import Clock

from gb28181talk.sip.digest import Challenge
from gb28181talk.sip.registry import Registry
from tests.sipdevice import DEVICE, DEVICE_ID, REALM, Device, connect, new_platform, pump

AUDIO_OUT = "34020000001370000001"


def _setup(password: str = "12345678", device_password: str = "12345678", **options):
    clock = Clock()
    clock.advance(1_700_000_000)
    platform = new_platform(clock)
    registry = Registry(platform, default_password=password, secret=b"k" * 32, **options)
    device = Device(clock, password=device_password)
    _to_platform, to_device = connect(clock, platform, device)
    events: list[tuple[str, str]] = []
    registry.on_change.append(lambda d, what: events.append((d.device_id, what)))
    return clock, platform, registry, device, to_device, events


def _register(clock, device, expires: int = 3600):
    device.register(expires)
    pump(clock)
    challenge = device.last
    assert challenge.status == 401
    device.register(expires, challenge.header("WWW-Authenticate"))
    pump(clock)
    return challenge


def _catalog_part(sn: int, total: int, items: list[tuple[str, str]]) -> bytes:
    listed = "".join(
        f"<Item><DeviceID>{i}</DeviceID><Name>{n}</Name><Status>ON</Status>"
        f"<Manufacturer>X</Manufacturer></Item>"
        for i, n in items
    )
    return (
        f'<?xml version="1.0" encoding="GB2312"?><Response><CmdType>Catalog</CmdType>'
        f"<SN>{sn}</SN><DeviceID>{DEVICE_ID}</DeviceID><SumNum>{total}</SumNum>"
        f'<DeviceList Num="{len(items)}">{listed}</DeviceList></Response>'
    ).encode("gb18030")


def test_401_then_200_registers_the_device_where_it_came_from():
    clock, _platform, registry, device, _, events = _setup(query_catalog=False)
    challenge = _register(clock, device)
    parsed = Challenge.parse(challenge.header("WWW-Authenticate") or "")
    assert parsed.realm == REALM and not parsed.stale
    ok = device.last
    assert ok.status == 200 and ok.header("Expires") == "3600" and ok.header("Date")
    assert events == [(DEVICE_ID, "registered")]
    [listed] = registry.describe()
    assert listed["id"] == DEVICE_ID and listed["address"] == f"{DEVICE[0]}:{DEVICE[1]}"
    assert listed["transport"] == "UDP" and listed["online"] is True
    assert listed["registered_at"] == clock.seconds() and listed["last_keepalive"] is None
    route = registry.route_for(DEVICE_ID)
    assert route is not None and route.uri == f"sip:{DEVICE_ID}@{DEVICE[0]}:{DEVICE[1]}"


def test_a_wrong_password_against_our_nonce_is_403_and_registers_nothing():
    clock, _, registry, device, _, events = _setup(device_password="wrong", query_catalog=False)
    device.register()
    pump(clock)
    assert device.last.status == 401
    device.register(challenge=device.last.header("WWW-Authenticate"))
    pump(clock)
    assert device.last.status == 403
    assert registry.registered == 0 and events == []


def test_a_nonce_we_did_not_issue_is_challenged_again_and_an_expired_one_is_stale():
    clock, _, registry, device, _, _ = _setup(nonce_lifetime=30.0, query_catalog=False)
    forged = 'Digest realm="3402000000", nonce="' + "A" * 40 + '", algorithm=MD5, qop="auth"'
    device.register(challenge=forged)
    pump(clock)
    assert device.last.status == 401
    assert not Challenge.parse(device.last.header("WWW-Authenticate") or "").stale
    old = device.last.header("WWW-Authenticate")
    clock.advance(60)
    device.register(challenge=old)
    pump(clock)
    assert device.last.status == 401
    fresh = device.last.header("WWW-Authenticate") or ""
    assert Challenge.parse(fresh).stale
    device.register(challenge=fresh)
    pump(clock)
    assert device.last.status == 200 and registry.registered == 1


def test_an_empty_password_needs_no_digest_and_per_device_passwords_win():
    clock, _, registry, device, _, _ = _setup(password="", query_catalog=False)
    device.register()
    pump(clock)
    assert device.last.status == 200 and registry.registered == 1
    clock2, _, registry2, device2, _, _ = _setup(
        password="", device_password="own", passwords={DEVICE_ID: "own"}, query_catalog=False
    )
    device2.register()
    pump(clock2)
    assert device2.last.status == 401
    device2.register(challenge=device2.last.header("WWW-Authenticate"))
    pump(clock2)
    assert device2.last.status == 200 and registry2.registered == 1


def test_expires_0_unregisters_refresh_keeps_it_and_expiry_ends_it():
    clock, platform, registry, device, _, events = _setup(query_catalog=False)
    _register(clock, device, expires=100)
    registered_at = registry.devices[DEVICE_ID].registered_at
    pump(clock, 80)
    _register(clock, device, expires=100)  # a refresh: still the same registration
    assert registry.devices[DEVICE_ID].registered_at == registered_at
    pump(clock, 80)
    assert registry.registered == 1
    pump(clock, 30)
    assert registry.registered == 0 and events[-1] == (DEVICE_ID, "expired")
    _register(clock, device, expires=100)
    _register(clock, device, expires=0)
    assert device.last.header("Expires") == "0"
    assert registry.registered == 0 and events[-1] == (DEVICE_ID, "unregistered")
    assert [w for _, w in events] == ["registered", "refreshed", "expired", "registered",
                                      "unregistered"]
    assert not registry.pending_timers()
    assert registry.route_for(DEVICE_ID) is None and platform.locate(DEVICE_ID) is None


def test_keepalives_keep_it_online_missing_ones_make_it_offline_and_a_new_one_online():
    clock, _, registry, device, _, events = _setup(keepalive_expiry=180.0, query_catalog=False)
    _register(clock, device)
    for sn in range(5):
        pump(clock, 60)
        device.keepalive(sn)
        pump(clock)
        assert device.last.status == 200
    device_state = registry.devices[DEVICE_ID]
    assert device_state.online and device_state.last_keepalive == clock.seconds()
    assert registry.online == 1
    pump(clock, 179)
    assert registry.online == 1
    pump(clock, 2)
    assert registry.online == 0 and registry.registered == 1
    assert events[-1] == (DEVICE_ID, "offline")
    assert registry.describe()[0]["online"] is False
    device.keepalive(9)
    pump(clock)
    assert registry.online == 1 and events[-1] == (DEVICE_ID, "online")


def test_a_keepalive_from_an_unregistered_device_is_404():
    clock, _, _, device, _, _ = _setup()
    device.keepalive()
    pump(clock)
    assert device.last.status == 404


def test_the_catalog_is_queried_after_registering_and_gathered_across_messages():
    clock, _, registry, device, _, events = _setup()
    _register(clock, device)
    query = [r for r in device.requests if r.method == "MESSAGE"]
    assert len(query) == 1 and b"<CmdType>Catalog</CmdType>" in query[0].body
    assert f"<DeviceID>{DEVICE_ID}</DeviceID>".encode() in query[0].body
    device.message(_catalog_part(1, 3, [(DEVICE_ID[:10] + "1320000001", "cam")]))
    pump(clock)
    assert device.last.status == 200 and registry.devices[DEVICE_ID].channels == []
    device.message(_catalog_part(1, 3, [(AUDIO_OUT, "喇叭"), ("34020000001360000001", "mic")]))
    pump(clock)
    channels = registry.devices[DEVICE_ID].channels
    assert [c.device_id for c in channels] == [
        "34020000001320000001", AUDIO_OUT, "34020000001360000001"]
    assert [c.device_id for c in registry.devices[DEVICE_ID].audio_outputs] == [AUDIO_OUT]
    assert channels[1].name == "喇叭" and channels[1].fields == {"Manufacturer": "X"}
    assert events[-1] == (DEVICE_ID, "catalog")
    assert registry.channel_ids(DEVICE_ID)[1] == AUDIO_OUT and registry.channel_ids("x") == []
    listed = registry.describe()[0]["channels"]
    assert listed[1] == {"id": AUDIO_OUT, "name": "喇叭", "status": "ON", "audio_output": True}
    # a refresh does not ask again once channels are known
    _register(clock, device)
    assert len([r for r in device.requests if r.method == "MESSAGE"]) == 1


def test_a_bad_catalog_body_is_400_and_nothing_is_learnt():
    clock, _, registry, device, _, _ = _setup()
    _register(clock, device)
    device.message(b"<Response><CmdType>Catalog</CmdType><SN>1</SN><SumNum>x</SumNum>"
                   b"<DeviceID>1</DeviceID></Response>")
    pump(clock)
    assert device.last.status == 400 and registry.devices[DEVICE_ID].channels == []
