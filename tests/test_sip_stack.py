"""Two of our SIP stacks talking through bytes on a Clock: digest REGISTER, then INVITE/ACK/BYE."""

from __future__ import annotations

from twisted.internet.task import Clock

from gb28181talk.sip.dialog import DialogLayer
from gb28181talk.sip.digest import DigestClient, DigestServer
from gb28181talk.sip.message import (
    SipMessage,
    SipRequest,
    SipResponse,
    build,
    parse_datagram,
    request,
    response_for,
)
from gb28181talk.sip.transaction import Timers
from gb28181talk.sip.transport import stamped, via_for

PLATFORM_ID = "34020000002000000001"
DEVICE_ID = "34020000001320000001"
REALM = "3402000000"
PLATFORM = ("192.168.1.10", 5060)
DEVICE = ("192.168.1.64", 5060)


class Wire:
    """One direction of a UDP path: bytes delivered on the next reactor turn, parsed, stamped."""

    reliable = False
    transport_name = "UDP"

    def __init__(self, clock: Clock, source: tuple[str, int]) -> None:
        self.clock = clock
        self.source = source
        self.to: DialogLayer | None = None
        self.back: Wire | None = None
        self.sent: list[SipMessage] = []

    def send(self, message: SipMessage) -> None:
        self.sent.append(message)
        data = build(message)
        self.clock.callLater(0, self._deliver, data)

    def _deliver(self, data: bytes) -> None:
        message = parse_datagram(data)
        assert message is not None and self.to is not None and self.back is not None
        self.to.transactions.receive(stamped(message, *self.source), self.back)


class Side:
    """An application on one stack: records; the platform side runs a digest registrar."""

    def __init__(self, clock: Clock, registrar: DigestServer | None = None) -> None:
        self.clock = clock
        self.registrar = registrar
        self.events: list[tuple[str, object]] = []
        self.invites: list[object] = []
        self.dialogs: list[object] = []

    def request_received(self, transaction, req):
        self.events.append(("request", req.method))
        if req.method == "REGISTER" and self.registrar is not None:
            authorization = req.header("Authorization")
            verdict = (
                self.registrar.check(authorization, "REGISTER", {DEVICE_ID: "12345678"}.get)
                if authorization
                else None
            )
            if verdict is not None and verdict.ok:
                transaction.respond(response_for(req, 200, to_tag="reg"))
            else:
                stale = verdict is not None and verdict.stale
                transaction.respond(
                    response_for(
                        req,
                        401,
                        to_tag="reg",
                        headers=[("WWW-Authenticate", self.registrar.challenge(stale=stale))],
                    )
                )
        else:
            transaction.respond(response_for(req, 200, to_tag="x"))

    def invite_received(self, transaction, invite):
        self.events.append(("invite", invite.call_id))
        self.invites.append(transaction)

    def invite_cancelled(self, transaction, cancel):
        self.events.append(("cancelled", cancel.call_id))

    def dialog_confirmed(self, dialog):
        self.events.append(("confirmed", dialog.call_id))
        self.dialogs.append(dialog)

    def dialog_ended(self, dialog, reason):
        self.events.append(("ended", reason))

    def response_received(self, transaction, resp):
        self.events.append(("response", resp.status))

    def request_failed(self, transaction, reason):
        self.events.append(("failed", reason))


def _stacks():
    clock = Clock()
    timers = Timers(t1=0.5, t2=4.0, t4=5.0, d=32.0)
    platform = Side(clock, DigestServer(REALM, clock.seconds, secret=b"s" * 32))
    device = Side(clock)
    p_layer = DialogLayer(clock, platform, via=lambda ch: via_for(ch, *PLATFORM), timers=timers)
    d_layer = DialogLayer(clock, device, via=lambda ch: via_for(ch, *DEVICE), timers=timers)
    to_platform, to_device = Wire(clock, DEVICE), Wire(clock, PLATFORM)
    to_platform.to, to_platform.back = p_layer, to_device
    to_device.to, to_device.back = d_layer, to_platform
    return clock, platform, device, p_layer, d_layer, to_platform, to_device


def _pump(clock: Clock, seconds: float = 0.0) -> None:
    for _ in range(50):
        clock.advance(0)
    if seconds:
        clock.advance(seconds)
        for _ in range(50):
            clock.advance(0)


def _register(authorization: str | None = None, cseq: int = 1) -> SipRequest:
    headers = [
        ("Via", via_for(Wire, *DEVICE)),
        ("From", f"<sip:{DEVICE_ID}@{REALM}>;tag=d1"),
        ("To", f"<sip:{DEVICE_ID}@{REALM}>"),
        ("Call-ID", "reg-call"),
        ("CSeq", f"{cseq} REGISTER"),
        ("Contact", f"<sip:{DEVICE_ID}@{DEVICE[0]}:{DEVICE[1]}>"),
        ("Max-Forwards", "70"),
        ("Expires", "3600"),
    ]
    if authorization is not None:
        headers.append(("Authorization", authorization))
    return request("REGISTER", f"sip:{PLATFORM_ID}@{REALM}", headers)


def test_a_device_registers_with_digest_401_then_200():
    clock, platform, device, _p_layer, d_layer, to_platform, to_device = _stacks()
    d_layer.send(_register(), to_platform)
    _pump(clock)
    assert device.events == [("response", 401)]
    challenge = [m for m in to_device.sent if isinstance(m, SipResponse)][-1]
    client = DigestClient(DEVICE_ID, "12345678")
    authorization = client.authorization(
        challenge.header("WWW-Authenticate") or "", "REGISTER", f"sip:{PLATFORM_ID}@{REALM}"
    )
    d_layer.send(_register(authorization, cseq=2), to_platform)
    _pump(clock)
    assert device.events == [("response", 401), ("response", 200)]
    assert platform.events == [("request", "REGISTER"), ("request", "REGISTER")]
    # the platform saw where the REGISTER came from (RFC 3581: received even when the same)
    seen = [m for m in to_device.sent if isinstance(m, SipResponse)][-1]
    assert seen.top_via.received == DEVICE[0] and seen.top_via.rport == DEVICE[1]


def test_a_device_call_is_answered_acked_and_hung_up_by_either_side():
    clock, platform, device, p_layer, d_layer, to_platform, to_device = _stacks()
    for hang_up in ("device", "platform"):
        invite = request(
            "INVITE",
            f"sip:{PLATFORM_ID}@{PLATFORM[0]}:{PLATFORM[1]}",
            [
                ("Via", via_for(to_platform, *DEVICE)),
                ("From", f"<sip:{DEVICE_ID}@{REALM}>;tag=call-{hang_up}"),
                ("To", f"<sip:{PLATFORM_ID}@{REALM}>"),
                ("Call-ID", f"broadcast-{hang_up}"),
                ("CSeq", "20 INVITE"),
                ("Contact", f"<sip:{DEVICE_ID}@{DEVICE[0]}:{DEVICE[1]}>"),
                ("Max-Forwards", "70"),
                ("Content-Type", "application/sdp"),
            ],
            b"v=0\r\n",
        )
        d_layer.send(invite, to_platform)
        _pump(clock)
        assert device.events[-1] == ("response", 100)
        p_layer.answer(
            platform.invites[-1], contact=f"sip:{PLATFORM_ID}@{PLATFORM[0]}:{PLATFORM[1]}"
        )
        _pump(clock)
        assert platform.events[-1] == ("confirmed", f"broadcast-{hang_up}")
        assert device.events[-2:] == [("response", 200), ("confirmed", f"broadcast-{hang_up}")]
        _pump(clock, 10.0)  # the ACK stopped the 2xx: nothing more comes
        oks = [m for m in to_device.sent if isinstance(m, SipResponse) and m.status == 200]
        assert len([m for m in oks if m.call_id == f"broadcast-{hang_up}"]) == 1
        if hang_up == "device":
            d_layer.bye(device.dialogs[-1])
        else:
            p_layer.bye(platform.dialogs[-1])
        _pump(clock)
        assert ("ended", "bye") in (platform.events[-1], device.events[-1])
        assert ("ended", "local-bye") in (platform.events[-1], device.events[-1])
        assert not p_layer.dialogs and not d_layer.dialogs
    _pump(clock, 100.0)
    assert not clock.getDelayedCalls()
