"""A sans-I/O GB28181 device on our SIP stack, wired to a SipPlatform by bytes on a Clock."""

from __future__ import annotations

from twisted.internet.task import Clock

from gb28181talk.sip.dialog import DialogLayer
from gb28181talk.sip.digest import DigestClient
from gb28181talk.sip.message import (
    SipMessage,
    SipRequest,
    SipResponse,
    build,
    parse_datagram,
    request,
    response_for,
)
from gb28181talk.sip.platform import SipPlatform
from gb28181talk.sip.transaction import Timers
from gb28181talk.sip.transport import stamped, via_for

PLATFORM_ID = "34020000002000000001"
DEVICE_ID = "34020000001320000001"
REALM = "3402000000"
PLATFORM = ("192.168.1.10", 5060)
DEVICE = ("192.168.1.64", 5060)
TIMERS = Timers(t1=0.5, t2=4.0, t4=5.0, d=32.0)


class Wire:
    """One direction of a UDP path: bytes delivered on the next reactor turn, parsed, stamped."""

    reliable = False
    transport_name = "UDP"

    def __init__(self, clock: Clock, source: tuple[str, int]) -> None:
        self.clock = clock
        self.source = source
        self.to: object = None
        self.back: Wire | None = None
        self.sent: list[SipMessage] = []
        self.cut = False

    def send(self, message: SipMessage) -> None:
        self.sent.append(message)
        if not self.cut:
            self.clock.callLater(0, self._deliver, build(message))

    def _deliver(self, data: bytes) -> None:
        message = parse_datagram(data)
        assert message is not None and self.back is not None
        self.to.receive(stamped(message, *self.source), self.back)  # type: ignore[attr-defined]


class Device:
    """A device's UA: registers with digest, sends MESSAGEs, answers the platform's with 200."""

    def __init__(self, clock: Clock, device_id: str = DEVICE_ID, password: str = "12345678",
                 address: tuple[str, int] = DEVICE) -> None:
        self.clock = clock
        self.device_id = device_id
        self.address = address
        self.digest = DigestClient(device_id, password)
        self.layer = DialogLayer(clock, self, via=lambda ch: via_for(ch, *address), timers=TIMERS)
        self.responses: list[SipResponse] = []
        self.requests: list[SipRequest] = []
        self.answer_status = 200
        self.out: Wire | None = None
        self._seq = 0

    # DialogUser
    def request_received(self, transaction, req):
        self.requests.append(req)
        transaction.respond(response_for(req, self.answer_status, to_tag="dev"))

    def invite_received(self, transaction, invite):
        self.requests.append(invite)
        transaction.respond(response_for(invite, 486, to_tag="dev"))

    def invite_cancelled(self, transaction, cancel):
        pass

    def dialog_confirmed(self, dialog):
        pass

    def dialog_ended(self, dialog, reason):
        pass

    def response_received(self, transaction, resp):
        self.responses.append(resp)

    def request_failed(self, transaction, reason):
        self.responses.append(None)  # type: ignore[arg-type]

    # requests
    def _headers(self, method: str, call_id: str) -> list[tuple[str, str]]:
        self._seq += 1
        assert self.out is not None
        return [
            ("Via", via_for(self.out, *self.address)),
            ("From", f"<sip:{self.device_id}@{REALM}>;tag=d{self._seq}"),
            ("To", f"<sip:{self.device_id if method == 'REGISTER' else PLATFORM_ID}@{REALM}>"),
            ("Call-ID", call_id),
            ("CSeq", f"{self._seq} {method}"),
            ("Max-Forwards", "70"),
        ]

    def register(self, expires: int = 3600, challenge: str | None = None,
                 call_id: str = "reg-call") -> None:
        uri = f"sip:{PLATFORM_ID}@{REALM}"
        headers = self._headers("REGISTER", call_id)
        headers += [("Contact", f"<sip:{self.device_id}@{self.address[0]}:{self.address[1]}>"),
                    ("Expires", str(expires))]
        if challenge is not None:
            headers.append(("Authorization", self.digest.authorization(challenge, "REGISTER",
                                                                        uri)))
        assert self.out is not None
        self.layer.send(request("REGISTER", uri, headers), self.out)

    def message(self, body: bytes, call_id: str | None = None) -> None:
        headers = self._headers("MESSAGE", call_id or f"msg-{self._seq + 1}")
        headers.append(("Content-Type", "Application/MANSCDP+xml"))
        assert self.out is not None
        self.layer.send(request("MESSAGE", f"sip:{PLATFORM_ID}@{REALM}", headers, body), self.out)

    def keepalive(self, sn: int = 1) -> None:
        self.message(
            b'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify><CmdType>Keepalive</CmdType>'
            + f"<SN>{sn}</SN><DeviceID>{self.device_id}</DeviceID><Status>OK</Status>"
            .encode() + b"</Notify>"
        )

    @property
    def last(self) -> SipResponse:
        return self.responses[-1]


def connect(clock: Clock, platform: SipPlatform, device: Device) -> tuple[Wire, Wire]:
    """Wire ``device`` to ``platform``: (device -> platform, platform -> device)."""
    to_platform, to_device = Wire(clock, device.address), Wire(clock, PLATFORM)
    to_platform.to, to_platform.back = platform.transactions, to_device
    to_device.to, to_device.back = device.layer.transactions, to_platform
    device.out = to_platform
    return to_platform, to_device


def pump(clock: Clock, seconds: float = 0.0) -> None:
    """Deliver everything due now, then (optionally) let ``seconds`` pass and deliver again."""
    for _ in range(50):
        clock.advance(0)
    if seconds:
        clock.advance(seconds)
        for _ in range(50):
            clock.advance(0)


def new_platform(clock: Clock) -> SipPlatform:
    """A platform with the test IDs and scaled timers."""
    return SipPlatform(clock, platform_id=PLATFORM_ID, domain=REALM, advertise=PLATFORM[0],
                       port=PLATFORM[1], timers=TIMERS)
