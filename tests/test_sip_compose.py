"""ITalkSignalling composed into an existing Twisted SIP stack: a UAS on twisted.protocols.sip.

No transaction layer of ours on the platform side: :class:`ExistingUas` is the dozen
lines the README shows (``prepare`` on INVITE, the answer in its 200, ``when_ended`` ->
BYE, ``release`` on BYE).  The device is our own SIP stack over bytes on the same Clock,
the media a FakeDevice: it hears the broadcast, and either side's hang-up ends the call.
"""

from __future__ import annotations

from typing import Any

from twisted.protocols import sip

from gb28181talk.core.manager import SessionManager
from gb28181talk.core.ports import PortPool
from gb28181talk.core.talk import TalkControl
from gb28181talk.errors import GbTalkError
from gb28181talk.signalling.sdp import parse_sdp
from gb28181talk.sip.message import build, parse_datagram
from gb28181talk.sip.seam import TalkSignalling
from gb28181talk.sip.transport import stamped
from gb28181talk.sources.registry import SourceRegistry
from gb28181talk.sources.tone import ToneSource
from gb28181talk.testing import BusyPortsReactor, FakeDevice
from tests.sipdevice import DEVICE, PLATFORM, pump
from tests.test_sip_broadcast import PASSIVE_OFFER, CallDevice


# --------------------------------------------------------------------------- the README's UAS
class ExistingUas(sip.Base):
    """A broadcast UAS of an existing Twisted SIP stack, with the talk seam composed in."""

    def __init__(self, talk: TalkSignalling, app: str, stream: str) -> None:
        super().__init__()
        self.talk, self.source, self.calls = talk, (app, stream), {}

    def handle_request(self, message: Any, addr: Any) -> None:
        call_id = message.headers["call-id"][0]
        if message.method == "INVITE":
            self.deliverResponse(self.responseFromRequest(100, message))
            try:
                answer = self.talk.prepare(call_id, message.body, *self.source)
            except GbTalkError:  # SdpError: 488; no source, no port: 503
                self.deliverResponse(self.responseFromRequest(488, message))
                return
            ok = self.responseFromRequest(200, message)
            ok.headers["to"][0] += ";tag=uas"
            for name, value in (("contact", "<sip:34020000002000000001@192.168.1.10:5060>"),
                                ("content-type", "application/sdp"),
                                ("content-length", str(len(answer)))):
                ok.addHeader(name, value)
            ok.body = answer
            self.deliverResponse(ok)
            self.calls[call_id] = (message, ok)
            self.talk.when_ended(call_id).addCallback(lambda _: self.bye(call_id))
        elif message.method == "BYE":
            self.calls.pop(call_id, None)
            self.talk.release(call_id)
            self.deliverResponse(self.responseFromRequest(200, message))

    def handle_response(self, message: Any, addr: Any) -> None:
        """The answer to our BYE: nothing to do."""

    def bye(self, call_id: str) -> None:
        """The media ended first: hang up (From/To of our 200 swapped, the device's Contact)."""
        if call_id not in self.calls:
            return
        invite, ok = self.calls.pop(call_id)
        bye = sip.Request("BYE", invite.headers["contact"][0].strip("<>"))
        for name, value in (("via", "SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bKbye1"),
                            ("from", ok.headers["to"][0]), ("to", ok.headers["from"][0]),
                            ("call-id", call_id), ("cseq", "1 BYE"), ("content-length", "0")):
            bye.addHeader(name, value)
        self.sendMessage(sip.parseURL(bye.uri.toString()), bye)
# --------------------------------------------------------------------------- end of it


class DatagramsTo:
    """The UAS's UDP transport: datagrams go to the device's stack on the next turn."""

    def __init__(self, reactor: Any, device: CallDevice, back: Any) -> None:
        self.reactor, self.device, self.back = reactor, device, back

    def write(self, data: bytes, addr: Any) -> None:
        self.reactor.callLater(0, self._deliver, data)

    def _deliver(self, data: bytes) -> None:
        message = parse_datagram(data)
        assert message is not None
        self.device.layer.transactions.receive(stamped(message, *PLATFORM), self.back)


class ToUas:
    """The device's channel to the UAS: our messages as bytes into its datagramReceived."""

    reliable = False
    transport_name = "UDP"

    def __init__(self, reactor: Any, uas: ExistingUas) -> None:
        self.reactor, self.uas = reactor, uas
        self.sent: list[Any] = []

    def send(self, message: Any) -> None:
        self.sent.append(message)
        self.reactor.callLater(0, self.uas.datagramReceived, build(message), DEVICE)


def _compose() -> Any:
    reactor = BusyPortsReactor()
    manager = SessionManager(reactor, PortPool(reactor, 30000, 30009))
    sources = SourceRegistry()
    sources.add(ToneSource("broadcast", "announce", frequency=440))
    talk = TalkSignalling(TalkControl(reactor, manager, sources), advertise_ip="198.51.100.5")
    uas = ExistingUas(talk, "broadcast", "announce")
    device = CallDevice(reactor)
    device.out = ToUas(reactor, uas)
    uas.transport = DatagramsTo(reactor, device, device.out)
    return reactor, manager, uas, device


def _run(reactor: Any, seconds: float) -> None:
    for _ in range(int(seconds / 0.02)):
        reactor.advance(0.02)


def test_the_existing_uas_answers_from_the_seam_and_the_device_hears_it() -> None:
    reactor, manager, uas, device = _compose()
    device.invite(PASSIVE_OFFER, "compose-1")
    pump(reactor)
    assert [r.status for r in device.answers("compose-1")] == [100, 200]
    answer = parse_sdp(device.answers("compose-1")[-1].body)
    (session,) = manager.sessions()
    assert answer.port == session.port and answer.setup == "passive"
    assert answer.direction == "sendonly" and answer.ssrc == 100000123
    assert device.dialogs, "the device ACKed (the UAS ignores the ACK: no transaction layer)"
    media = FakeDevice()
    assert media.connect(reactor, session.port)
    _run(reactor, 0.2)
    assert {p.ssrc for p in media.receive()} == {100000123}
    device.bye()
    pump(reactor)
    assert session.end_reason == "stopped" and not manager.sessions() and not uas.calls
    assert device.ended == ["local-bye"]


def test_when_the_media_ends_the_existing_uas_sends_bye() -> None:
    reactor, manager, uas, device = _compose()
    device.invite(PASSIVE_OFFER, "compose-2")
    pump(reactor)
    (session,) = manager.sessions()
    media = FakeDevice()
    media.connect(reactor, session.port)
    _run(reactor, 0.1)
    media.hang_up()
    pump(reactor)
    assert session.end_reason == "device-closed"
    assert device.ended == ["bye"] and not uas.calls
    assert not device.layer.dialogs
