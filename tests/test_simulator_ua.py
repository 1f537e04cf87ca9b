"""The device simulator's UA against a small platform double of the same SIP layer, on a Clock.

Bytes cross an in-memory UDP path (built, parsed, Via stamped); the platform double runs a
digest registrar and answers what the device sends; media sockets are a MemoryReactorClock's.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from gb28181talk.media.framing import FrameDecoder, Framing
from gb28181talk.media.rtp import parse_rtp
from gb28181talk.signalling.manscdp import (
    BroadcastNotify,
    BroadcastResponse,
    Keepalive,
    build_xml,
    parse_xml,
)
from gb28181talk.signalling.sdp import AudioSdp, answer_for_offer, build_sdp, parse_sdp
from gb28181talk.simulator.bodies import read_command
from gb28181talk.simulator.call import DISCARD_PORT, receiver_report, tone
from gb28181talk.simulator.options import DeviceConfig, MediaMode, Quirks
from gb28181talk.simulator.ua import MANSCDP, DeviceUA
from gb28181talk.sip.dialog import DialogLayer
from gb28181talk.sip.digest import DigestServer
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
DEVICE = ("192.168.1.64", 5062)
PASSWORD = "12345678"


class _UdpPort:
    def __init__(self, port):
        self.port = port
        self.open = True

    def getHost(self):
        return IPv4Address("UDP", "0.0.0.0", self.port)

    def stopListening(self):
        self.open = False


class Reactor(MemoryReactorClock):
    """A MemoryReactorClock that also records UDP listens (media sockets of the device)."""

    def __init__(self):
        super().__init__()
        self.udp: list = []

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        listened = _UdpPort(40000 + len(self.udp) * 2)
        self.udp.append((listened, protocol, interface))
        return listened


class Wire:
    """One direction of a UDP path: bytes delivered on the next reactor turn, parsed, stamped."""

    reliable = False
    transport_name = "UDP"

    def __init__(self, clock, source):
        self.clock = clock
        self.source = source
        self.to = None
        self.back = None
        self.sent: list[SipMessage] = []

    def send(self, message: SipMessage) -> None:
        self.sent.append(message)
        self.clock.callLater(0, self._deliver, build(message))

    def _deliver(self, data: bytes) -> None:
        message = parse_datagram(data)
        self.to.receive(stamped(message, *self.source), self.back)


class Platform:
    """The platform double: digest registrar, 200 to MESSAGE, answers broadcast INVITEs."""

    def __init__(self, clock):
        self.clock = clock
        self.registrar = DigestServer(REALM, clock.seconds, secret=b"s" * 32)
        self.requests: list[SipRequest] = []
        self.verdicts: list[str] = []
        self.invites: list = []
        self.confirmed: list = []
        self.ended: list[str] = []
        self.registered: dict[str, object] = {}
        """Device id -> the channel its accepted REGISTER came on."""

    def request_received(self, transaction, req):
        self.requests.append(req)
        if req.method == "REGISTER":
            authorization = req.header("Authorization")
            verdict = None
            if authorization:
                verdict = self.registrar.check(authorization, "REGISTER", lambda user: PASSWORD)
                self.verdicts.append(verdict.reason)
            if verdict is not None and verdict.ok:
                self.registered[verdict.username or ""] = transaction.channel
                transaction.respond(response_for(
                    req, 200, to_tag="reg", headers=[("Expires", req.header("Expires") or "0")]
                ))
            else:
                transaction.respond(response_for(
                    req, 401, to_tag="reg",
                    headers=[("WWW-Authenticate", self.registrar.challenge())],
                ))
        else:
            transaction.respond(response_for(req, 200, to_tag="p"))

    def invite_received(self, transaction, invite):
        self.invites.append((transaction, invite))

    def invite_cancelled(self, transaction, cancel):
        pass

    def dialog_confirmed(self, dialog):
        self.confirmed.append(dialog)

    def dialog_ended(self, dialog, reason):
        self.ended.append(reason)

    def response_received(self, transaction, resp):
        pass

    def request_failed(self, transaction, reason):
        pass


def _stacks(**config):
    clock = Reactor()
    timers = Timers(t1=0.5, t2=4.0, t4=5.0, d=32.0)
    platform = Platform(clock)
    p_layer = DialogLayer(clock, platform, via=lambda ch: via_for(ch, *PLATFORM), timers=timers)
    to_platform, to_device = Wire(clock, DEVICE), Wire(clock, PLATFORM)
    settings = dict(
        device_id=DEVICE_ID, domain=REALM, password=PASSWORD, server=PLATFORM,
        server_id=PLATFORM_ID, local_host=DEVICE[0], keepalive=60.0, report_seconds=0,
    )
    settings.update(config)
    lines: list[str] = []
    ua = DeviceUA(clock, DeviceConfig(**settings), to_platform, DEVICE[1], timers=timers,
                  say=lines.append)
    to_platform.to, to_platform.back = p_layer.transactions, to_device
    to_device.to, to_device.back = ua.layer.transactions, to_platform
    return clock, platform, p_layer, ua, to_platform, to_device, lines


def _pump(clock, seconds=0.0):
    for _ in range(30):
        clock.advance(0)
    if seconds:
        clock.advance(seconds)
        for _ in range(30):
            clock.advance(0)


def _sent(wire, method):
    return [m for m in wire.sent if isinstance(m, SipRequest) and m.method == method]


def _register(**config):
    stacks = _stacks(**config)
    clock, _platform, _p, ua, *_ = stacks
    ua.start()
    _pump(clock)
    return stacks


def test_registers_with_digest_401_then_200_and_keeps_alive():
    clock, platform, _p, ua, to_platform, _to_device, _lines = _register()
    registers = _sent(to_platform, "REGISTER")
    assert len(registers) == 2
    assert registers[0].header("Authorization") is None
    assert registers[1].header("Authorization") is not None
    assert registers[1].call_id == registers[0].call_id
    assert registers[1].cseq.number == registers[0].cseq.number + 1
    assert platform.verdicts == ["accepted"]
    assert ua.registered and ua.registered_once.result is True
    # keepalive at once after registering, then every interval
    keepalives = [m for m in _sent(to_platform, "MESSAGE") if b"Keepalive" in m.body]
    assert len(keepalives) == 1
    body = parse_xml(keepalives[0].body)
    assert body == Keepalive(body.sn, DEVICE_ID)
    assert keepalives[0].header("Content-Type") == MANSCDP
    _pump(clock, 60.0)
    keepalives = [m for m in _sent(to_platform, "MESSAGE") if b"Keepalive" in m.body]
    assert len(keepalives) == 2 and ua.keepalives_answered == 2


def test_re_registers_before_expiry_and_unregisters_on_stop():
    clock, platform, _p, ua, to_platform, *_ = _register(expires=100, keepalive=1000.0)
    assert len(_sent(to_platform, "REGISTER")) == 2
    _pump(clock, 79.0)
    assert len(_sent(to_platform, "REGISTER")) == 2
    _pump(clock, 2.0)  # at 80% of Expires: a refresh, answered with the same nonce's next nc
    registers = _sent(to_platform, "REGISTER")
    assert len(registers) == 3 and registers[2].header("Authorization") is not None
    assert platform.verdicts[-1] == "accepted"
    stopped = ua.stop()
    _pump(clock)
    last = _sent(to_platform, "REGISTER")[-1]
    assert last.header("Expires") == "0"
    assert stopped.called and not ua.registered
    _pump(clock, 200.0)
    assert not ua.pending_timers()


def test_an_invented_nonce_is_refused_and_the_device_gives_up():
    _clock, platform, _p, ua, _to_platform, _to_device, lines = _register(
        quirks=Quirks(invent_nonce=True)
    )
    assert not ua.registered and ua.registered_once.result is False
    assert platform.verdicts and set(platform.verdicts) == {"a nonce this server did not issue"}
    assert any("registration refused" in line for line in lines)


def _platform_message(p_layer, to_device, body):
    headers = [
        ("Via", via_for(to_device, *PLATFORM)),
        ("From", f"<sip:{PLATFORM_ID}@{REALM}>;tag=pm"),
        ("To", f"<sip:{DEVICE_ID}@{REALM}>"),
        ("Call-ID", f"msg-{len(to_device.sent)}"),
        ("CSeq", "1 MESSAGE"),
        ("Max-Forwards", "70"),
        ("Content-Type", MANSCDP),
    ]
    p_layer.send(request("MESSAGE", f"sip:{DEVICE_ID}@{DEVICE[0]}:{DEVICE[1]}", headers, body),
                 to_device)


def test_answers_catalog_with_itself_and_an_audio_output_channel_and_device_info():
    clock, _platform, p_layer, _ua, to_platform, to_device, _ = _register()
    query = (b'<?xml version="1.0" encoding="GB2312"?>\r\n<Query><CmdType>Catalog</CmdType>'
             b"<SN>7</SN><DeviceID>" + DEVICE_ID.encode() + b"</DeviceID></Query>")
    _platform_message(p_layer, to_device, query)
    _pump(clock)
    assert [m.status for m in to_platform.sent if isinstance(m, SipResponse)] == [200]
    responses = [m for m in _sent(to_platform, "MESSAGE") if b"<Response>" in m.body]
    assert len(responses) == 1
    body = responses[0].body.decode("gb2312")
    assert read_command(responses[0].body).cmd_type == "Catalog"
    assert "<SN>7</SN>" in body and "<SumNum>2</SumNum>" in body
    assert f"<DeviceID>{DEVICE_ID}</DeviceID>" in body
    audio = DEVICE_ID[:10] + "137"
    assert f"<DeviceID>{audio}" in body
    info = query.replace(b"Catalog", b"DeviceInfo").replace(b"<SN>7", b"<SN>8")
    _platform_message(p_layer, to_device, info)
    _pump(clock)
    responses = [m for m in _sent(to_platform, "MESSAGE") if b"<Response>" in m.body]
    assert read_command(responses[-1].body).cmd_type == "DeviceInfo"
    assert read_command(responses[-1].body).sn == 8


def _notify(clock, p_layer, ua, to_device):
    notify = BroadcastNotify(3, PLATFORM_ID, ua.audio_channel)
    _platform_message(p_layer, to_device, build_xml(notify))
    _pump(clock)


def _offer_of(platform):
    _transaction, invite = platform.invites[-1]
    return invite, parse_sdp(invite.body)


def test_broadcast_notify_gets_response_and_a_tcp_active_invite_then_the_device_dials():
    clock, platform, p_layer, ua, to_platform, to_device, _ = _register()
    _notify(clock, p_layer, ua, to_device)
    responses = [parse_xml(m.body) for m in _sent(to_platform, "MESSAGE")
                 if b"<Response>" in m.body]
    assert responses == [BroadcastResponse(3, DEVICE_ID, "OK")]
    invite, offer = _offer_of(platform)
    assert invite.to.uri == f"sip:{PLATFORM_ID}@{REALM}"
    assert offer.session_name == "Play" and offer.transport == "TCP/RTP/AVP"
    assert offer.setup == "active" and offer.connection == "new" and offer.direction == "recvonly"
    assert offer.port == DISCARD_PORT and offer.payload_types == (8,)
    assert offer.ssrc == ua.config.offer_ssrc and offer.ssrc_text.startswith("0")
    assert offer.f_line == "v/////a/1/8/1"
    transaction, _ = platform.invites[-1]
    answer = answer_for_offer(offer, address="192.168.1.10", port=30000, origin_user=PLATFORM_ID)
    p_layer.answer(transaction, contact=f"sip:{PLATFORM_ID}@{PLATFORM[0]}",
                   headers=[("Content-Type", "application/sdp")],
                   body=build_sdp(answer).encode())
    _pump(clock)
    assert platform.confirmed  # the device ACKed
    assert [(host, port) for host, port, *_ in clock.tcpClients] == [("192.168.1.10", 30000)]
    # the platform hangs up: the call ends, nothing heard, no WAV
    p_layer.bye(platform.confirmed[-1])
    _pump(clock)
    assert ua.ended_calls and not ua.calls and not ua.heard_audio


def test_broadcast_offers_tcp_passive_and_udp_with_the_chosen_codec():
    for mode, codec, transport, setup, pt in (
        (MediaMode.TCP_PASSIVE, "pcmu", "TCP/RTP/AVP", "passive", 0),
        (MediaMode.UDP, "ps", "RTP/AVP", None, 96),
    ):
        clock, platform, p_layer, ua, _tp, to_device, _ = _register(mode=mode, codec=codec)
        _notify(clock, p_layer, ua, to_device)
        _invite, offer = _offer_of(platform)
        assert (offer.transport, offer.setup, offer.payload_types) == (transport, setup, (pt,))
        assert offer.rtpmap[0][0] == pt
        if mode is MediaMode.TCP_PASSIVE:
            assert len(clock.tcpServers) == 1  # it listens before it offers
        else:
            assert len(clock.udp) == 1


def test_quirks_no_ssrc_no_broadcast_response_and_invite_retransmitted():
    clock, platform, p_layer, ua, to_platform, to_device, _ = _register(
        quirks=Quirks(no_ssrc=True, no_broadcast_response=True, retransmit_invite=True)
    )
    _notify(clock, p_layer, ua, to_device)
    assert not [m for m in _sent(to_platform, "MESSAGE") if b"<Response>" in m.body]
    _pump(clock, 0.2)
    invites = _sent(to_platform, "INVITE")
    assert len(invites) >= 2 and invites[0] == invites[1]  # same branch: one transaction
    assert len(platform.invites) == 1  # the platform's layer absorbed the copy
    _invite, offer = _offer_of(platform)
    assert offer.ssrc is None and b"y=" not in _invite.body


def test_connect_before_ack_holds_the_ack_until_connected():
    clock, platform, p_layer, ua, to_platform, _to_device, _ = _register(
        quirks=Quirks(connect_before_ack=True)
    )
    call = ua.invite_broadcast(PLATFORM_ID, ua.audio_channel)
    _pump(clock)
    transaction, invite = platform.invites[-1]
    offer = parse_sdp(invite.body)
    answer = answer_for_offer(offer, address="192.168.1.10", port=30002, origin_user=PLATFORM_ID)
    p_layer.answer(transaction, contact=f"sip:{PLATFORM_ID}@{PLATFORM[0]}",
                   body=build_sdp(answer).encode())
    _pump(clock)
    assert [c[:2] for c in clock.tcpClients] == [("192.168.1.10", 30002)]
    assert not _sent(to_platform, "ACK") and not platform.confirmed
    call.connected.callback(None)  # what a real connect would fire
    _pump(clock)
    assert len(_sent(to_platform, "ACK")) == 1 and platform.confirmed


def test_never_connect_dials_nothing():
    clock, platform, p_layer, ua, *_ = _register(quirks=Quirks(never_connect=True))
    ua.invite_broadcast(PLATFORM_ID, ua.audio_channel)
    _pump(clock)
    transaction, invite = platform.invites[-1]
    answer = answer_for_offer(parse_sdp(invite.body), address="192.168.1.10", port=30004,
                              origin_user=PLATFORM_ID)
    p_layer.answer(transaction, contact=f"sip:{PLATFORM_ID}@{PLATFORM[0]}",
                   body=build_sdp(answer).encode())
    _pump(clock)
    assert platform.confirmed and not clock.tcpClients


def _talk_offer(setup: str | None, transport: str = "TCP/RTP/AVP") -> AudioSdp:
    return AudioSdp(
        session_name="Talk", origin_user=PLATFORM_ID, origin_address="192.168.1.10",
        connection_address="192.168.1.10", port=31000, transport=transport,
        payload_types=(8,), rtpmap=((8, "PCMA/8000"),), setup=setup,
        connection="new" if setup else None, direction="sendrecv", ssrc=100000123,
    )


def _talk_invite(p_layer, to_device, offer: AudioSdp, call_id: str = "talk-1"):
    headers = [
        ("Via", via_for(to_device, *PLATFORM)),
        ("From", f"<sip:{PLATFORM_ID}@{REALM}>;tag=pt"),
        ("To", f"<sip:{DEVICE_ID}@{REALM}>"),
        ("Call-ID", call_id),
        ("CSeq", "1 INVITE"),
        ("Contact", f"<sip:{PLATFORM_ID}@{PLATFORM[0]}:{PLATFORM[1]}>"),
        ("Max-Forwards", "70"),
        ("Content-Type", "application/sdp"),
    ]
    p_layer.send(request("INVITE", f"sip:{DEVICE_ID}@{DEVICE[0]}:{DEVICE[1]}", headers,
                         build_sdp(offer).encode()), to_device)


def test_talk_invite_is_answered_and_the_device_dials_on_ack_then_speaks():
    clock, platform, p_layer, ua, to_platform, to_device, _ = _register(
        quirks=Quirks(wrong_ssrc=True)
    )
    _talk_invite(p_layer, to_device, _talk_offer("passive"))
    _pump(clock)
    assert platform.confirmed  # the platform's layer ACKed our 200
    oks = [m for m in to_platform.sent if isinstance(m, SipResponse) and m.status == 200
           and m.cseq.method == "INVITE"]
    assert len(oks) == 1
    answer = parse_sdp(oks[0].body)
    assert answer.setup == "active" and answer.direction == "sendrecv"
    assert answer.ssrc == 100000123 and answer.session_name == "Talk"
    assert [c[:2] for c in clock.tcpClients] == [("192.168.1.10", 31000)]
    call = ua.calls["talk-1"]
    assert call.voice is not None
    packet = call.voice.packets(tone(1000, 0, 160))[0]
    assert packet.ssrc == 100000124  # wrong-ssrc: not the y= it answered


def test_talk_over_udp_listens_and_answers_its_port():
    clock, _platform, p_layer, _ua, to_platform, to_device, _ = _register()
    _talk_invite(p_layer, to_device, _talk_offer(None, "RTP/AVP"))
    _pump(clock)
    oks = [m for m in to_platform.sent if isinstance(m, SipResponse) and m.status == 200
           and m.cseq.method == "INVITE"]
    answer = parse_sdp(oks[0].body)
    assert answer.transport == "RTP/AVP" and answer.setup is None
    assert len(clock.udp) == 1


def test_rtcp_receiver_report_is_8_bytes_of_rtcp():
    report = receiver_report(0x01020304)
    assert len(report) == 8 and report[0] == 0x80 and report[1] == 201


def _talking(quirks: Quirks, seconds: float = 0.1):
    """A talk call whose dial is completed on a StringTransport; what it wrote after ``seconds``."""
    clock, _platform, p_layer, ua, _to_platform, to_device, _ = _register(quirks=quirks)
    _talk_invite(p_layer, to_device, _talk_offer("passive"))
    _pump(clock)
    _host, _port, factory, *_ = clock.tcpClients[0]
    protocol = factory.buildProtocol(IPv4Address("TCP", "192.168.1.10", 31000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    for _ in range(int(seconds / 0.02) + 1):
        clock.advance(0.02)
    return ua, transport.value()


def _frames(data: bytes) -> list[bytes]:
    decoder = FrameDecoder()
    return decoder.feed(data)


def test_talk_back_is_rfc4571_framed_pcma_with_the_y_ssrc():
    _ua, data = _talking(Quirks())
    frames = _frames(data)
    assert data[2] == 0x80  # a 2-byte length, then RTP version 2
    packets = [parse_rtp(f) for f in frames]
    assert len(packets) >= 4
    assert {p.ssrc for p in packets} == {100000123} and {p.payload_type for p in packets} == {8}
    assert [p.sequence for p in packets] == list(range(len(packets)))


def test_no_prefix_quirk_sends_raw_rtp_back_to_back():
    _ua, data = _talking(Quirks(no_prefix=True))
    assert data[0] == 0x80
    decoder = FrameDecoder(Framing.NONE)
    packets = [parse_rtp(f) for f in decoder.feed(data) + decoder.flush()]
    assert len(packets) >= 4 and {len(p.payload) for p in packets} == {160}


def test_ps_voice_quirk_sends_program_stream_as_payload_type_96():
    _ua, data = _talking(Quirks(ps_voice=True))
    packets = [parse_rtp(f) for f in _frames(data)]
    assert {p.payload_type for p in packets} == {96}
    assert packets[0].payload.startswith(b"\x00\x00\x01\xba")  # a PS pack header


def test_rtcp_quirk_sends_receiver_reports_on_the_connection():
    _ua, data = _talking(Quirks(rtcp=True), seconds=5.1)
    reports = [f for f in _frames(data) if f[1] == 201]
    assert reports == [receiver_report(100000123)]


def test_slow_read_quirk_keeps_the_connection_paused_but_for_short_windows():
    clock, _platform, p_layer, _ua, _tp, to_device, _ = _register(quirks=Quirks(slow_read=True))
    _talk_invite(p_layer, to_device, _talk_offer("passive"))
    _pump(clock)
    factory = clock.tcpClients[0][2]
    protocol = factory.buildProtocol(IPv4Address("TCP", "192.168.1.10", 31000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    assert transport.producerState == "paused"
    clock.advance(2.0)
    assert transport.producerState == "producing"
    clock.advance(0.01)
    assert transport.producerState == "paused"


def test_talk_wav_is_spoken_in_a_loop(tmp_path):
    from gb28181talk.media.wav import write_wav
    from gb28181talk.simulator.call import DeviceCall

    pcm = tone(500, 0, 240)  # 30 ms: shorter than two packets, so it loops
    write_wav(tmp_path / "talk.wav", pcm)
    call = DeviceCall(Reactor(), DeviceConfig(talk_wav=str(tmp_path / "talk.wav")), "talk", 1,
                      say=lambda line: None)
    offer = _talk_offer("passive")
    call.answer_offer(offer)
    call._start_voice(offer)
    spoken = call._next_audio(160) + call._next_audio(160)
    assert spoken == (pcm + pcm)[:640]
