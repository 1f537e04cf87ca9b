"""Tests for SIP dialogs: 2xx until ACK, BYE both ways, CANCEL -> 200 + 487, 481, route sets."""

from __future__ import annotations

import itertools

from twisted.internet.task import Clock

from gb28181talk.sip.dialog import Dialog, DialogLayer
from gb28181talk.sip.message import (
    SipMessage,
    SipRequest,
    SipResponse,
    request,
    response_for,
)
from gb28181talk.sip.transaction import Timers, new_branch

T1, T2 = 0.5, 4.0
TIMERS = Timers(t1=T1, t2=T2, t4=5.0, d=32.0)
PLATFORM = "sip:34020000002000000001@192.168.1.10:5060"
DEVICE_CONTACT = "sip:34020000001320000001@192.168.1.64:5060"


class FakeChannel:
    """Records what it was given to send."""

    def __init__(self, reliable: bool = False) -> None:
        self.reliable = reliable
        self.sent: list[SipMessage] = []

    def send(self, message: SipMessage) -> None:
        self.sent.append(message)

    def statuses(self) -> list[int | str]:
        return [m.status if isinstance(m, SipResponse) else m.method for m in self.sent]

    def requests(self, method: str) -> list[SipRequest]:
        return [m for m in self.sent if isinstance(m, SipRequest) and m.method == method]


class App:
    """The application above the dialogs: records, and answers INVITEs when told to."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self.invites: list[object] = []
        self.layer: DialogLayer | None = None

    def invite_received(self, transaction, invite):
        self.events.append(("invite", invite.call_id))
        self.invites.append(transaction)

    def invite_cancelled(self, transaction, cancel):
        self.events.append(("cancelled", cancel.call_id))

    def dialog_confirmed(self, dialog):
        self.events.append(("confirmed", dialog.call_id))

    def dialog_ended(self, dialog, reason):
        self.events.append(("ended", reason))

    def request_received(self, transaction, req):
        self.events.append(("request", req.method))

    def response_received(self, transaction, resp):
        self.events.append(("response", resp.status))

    def request_failed(self, transaction, reason):
        self.events.append(("failed", reason))


def _via(channel) -> str:
    return f"SIP/2.0/UDP 192.168.1.10:5060;rport;branch={new_branch()}"


def _setup():
    clock = Clock()
    app = App()
    layer = DialogLayer(clock, app, via=_via, timers=TIMERS)
    return clock, app, layer, FakeChannel()


_cseq = itertools.count(20)


def _device_invite(call_id: str = "call-1", record_route: bool = True) -> SipRequest:
    headers = [
        ("Via", f"SIP/2.0/UDP 192.168.1.64:5060;rport;branch={new_branch()}"),
        ("From", "<sip:34020000001320000001@3402000000>;tag=dev1"),
        ("To", "<sip:34020000002000000001@3402000000>"),
        ("Call-ID", call_id),
        ("CSeq", f"{next(_cseq)} INVITE"),
        ("Contact", f"<{DEVICE_CONTACT}>"),
        ("Max-Forwards", "70"),
    ]
    if record_route:
        headers.append(("Record-Route", "<sip:proxy.example;lr>"))
    return request("INVITE", PLATFORM, headers, b"v=0\r\n")


def _in_dialog(method: str, invite: SipRequest, ok: SipResponse, cseq: int) -> SipRequest:
    return request(
        method,
        PLATFORM,
        [
            ("Via", f"SIP/2.0/UDP 192.168.1.64:5060;branch={new_branch()}"),
            ("From", invite.header("From") or ""),
            ("To", ok.header("To") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{cseq} {method}"),
        ],
    )


def _answered(layer, app, channel):
    invite = _device_invite()
    layer.transactions.receive(invite, channel)
    dialog = layer.answer(app.invites[-1], contact=PLATFORM, body=b"v=0\r\n")
    ok = [m for m in channel.sent if isinstance(m, SipResponse) and m.status == 200][-1]
    return invite, dialog, ok


def _run(clock: Clock, until: float) -> None:
    while clock.getDelayedCalls() and clock.seconds() < until:
        nxt = min(c.getTime() for c in clock.getDelayedCalls())
        if nxt > until:
            break
        clock.advance(nxt - clock.seconds())
    clock.advance(max(0.0, until - clock.seconds()))


# ------------------------------------------------------------------------ as the UAS


def test_an_answered_invite_makes_a_dialog_and_its_2xx_is_resent_until_the_ack():
    clock, app, layer, channel = _setup()
    invite, dialog, ok = _answered(layer, app, channel)
    assert channel.statuses() == [100, 200]
    assert ok.to.tag == dialog.local_tag and ok.header("Contact") == f"<{PLATFORM}>"
    assert ok.header("Record-Route") == "<sip:proxy.example;lr>"
    assert (dialog.remote_tag, dialog.remote_target, dialog.state) == (
        "dev1",
        DEVICE_CONTACT,
        "early",
    )
    _run(clock, 3.6)  # T1, 2T1, 4T1: three retransmissions by 3.5 s
    assert channel.statuses() == [100, 200, 200, 200, 200]
    ack = _in_dialog("ACK", invite, ok, invite.cseq.number)
    layer.transactions.receive(ack, channel)
    assert dialog.state == "confirmed" and app.events[-1] == ("confirmed", "call-1")
    _run(clock, 60)
    assert channel.statuses() == [100, 200, 200, 200, 200]  # no more after the ACK
    layer.transactions.receive(ack, channel)  # a repeated ACK changes nothing
    assert app.events.count(("confirmed", "call-1")) == 1
    assert not clock.getDelayedCalls()


def test_an_ack_that_never_comes_ends_the_dialog_and_sends_bye():
    clock, app, layer, channel = _setup()
    _invite, dialog, _ok = _answered(layer, app, channel)
    _run(clock, 64 * T1)
    resent = channel.statuses().count(200) - 1
    assert resent == 10  # 0.5, 1.5, 3.5, 7.5, then every T2 up to 31.5
    assert app.events[-1] == ("ended", "no-ack") and dialog.state == "terminated"
    (bye,) = channel.requests("BYE")
    assert bye.uri == DEVICE_CONTACT
    assert bye.header("Route") == "<sip:proxy.example;lr>"
    assert bye.to.tag == "dev1" and bye.from_.tag == dialog.local_tag
    assert bye.cseq.number == dialog.local_seq
    layer.transactions.receive(response_for(bye, 200), channel)
    _run(clock, 200)
    assert not clock.getDelayedCalls() and not layer.dialogs


def test_a_bye_from_the_device_ends_the_dialog_and_a_repeated_bye_gets_the_same_200():
    _clock, app, layer, channel = _setup()
    invite, _dialog, ok = _answered(layer, app, channel)
    layer.transactions.receive(_in_dialog("ACK", invite, ok, invite.cseq.number), channel)
    bye = _in_dialog("BYE", invite, ok, invite.cseq.number + 1)
    layer.transactions.receive(bye, channel)
    layer.transactions.receive(bye, channel)
    assert channel.statuses()[-2:] == [200, 200]
    assert app.events[-1] == ("ended", "bye") and not layer.dialogs
    assert app.events.count(("ended", "bye")) == 1
    again = _in_dialog("BYE", invite, ok, invite.cseq.number + 2)  # a new BYE: gone
    layer.transactions.receive(again, channel)
    assert channel.statuses()[-1] == 481


def test_requests_for_unknown_dialogs_get_481_and_unknown_methods_501():
    _clock, app, layer, channel = _setup()
    invite, _dialog, ok = _answered(layer, app, channel)
    stranger = ok.with_replaced("To", "<sip:34020000002000000001@3402000000>;tag=nope")
    layer.transactions.receive(_in_dialog("INFO", invite, stranger, 99), channel)
    assert channel.statuses()[-1] == 481
    out_bye = _in_dialog("BYE", invite, ok, 99).with_replaced("To", "<sip:x@y>")
    layer.transactions.receive(out_bye, channel)  # a BYE outside any dialog
    assert channel.statuses()[-1] == 481
    odd = request(
        "FROBNICATE",
        PLATFORM,
        [(n, v) for n, v in invite.headers if n not in ("CSeq", "Via")]
        + [("Via", f"SIP/2.0/UDP h;branch={new_branch()}"), ("CSeq", "1 FROBNICATE")],
    )
    layer.transactions.receive(odd, channel)
    last = channel.sent[-1]
    assert isinstance(last, SipResponse) and last.status == 501 and "INVITE" in (
        last.header("Allow") or ""
    )


def test_an_in_dialog_request_with_an_old_cseq_is_500_and_a_new_one_reaches_the_app():
    _clock, app, layer, channel = _setup()
    invite, _dialog, ok = _answered(layer, app, channel)
    layer.transactions.receive(_in_dialog("INFO", invite, ok, invite.cseq.number - 1), channel)
    assert channel.statuses()[-1] == 500
    layer.transactions.receive(_in_dialog("INFO", invite, ok, invite.cseq.number + 5), channel)
    assert app.events[-1] == ("request", "INFO")


def test_cancel_before_the_answer_gets_200_and_the_invite_487():
    clock, app, layer, channel = _setup()
    invite = _device_invite()
    layer.transactions.receive(invite, channel)
    cancel = request(
        "CANCEL",
        invite.uri,
        [(n, v) for n, v in invite.headers if n in ("Via", "From", "To", "Call-ID")]
        + [("CSeq", f"{invite.cseq.number} CANCEL")],
    )
    layer.transactions.receive(cancel, channel)
    assert channel.statuses() == [100, 200, 487]
    cancel_ok, terminated = channel.sent[1], channel.sent[2]
    assert isinstance(cancel_ok, SipResponse) and cancel_ok.cseq.method == "CANCEL"
    assert isinstance(terminated, SipResponse) and terminated.cseq.method == "INVITE"
    assert cancel_ok.to.tag == terminated.to.tag is not None
    assert app.events[-1] == ("cancelled", "call-1")
    # the ACK to the 487 stays in the transaction; nothing is left afterwards
    ack = _in_dialog("ACK", invite, terminated, invite.cseq.number)
    ack = ack.with_replaced("Via", invite.values("Via")[0])
    layer.transactions.receive(ack, channel)
    _run(clock, 100)
    assert not clock.getDelayedCalls() and not layer.transactions.servers


def test_cancel_of_an_unknown_or_answered_invite():
    _clock, app, layer, channel = _setup()
    invite, _dialog, _ok = _answered(layer, app, channel)
    cancel = request(
        "CANCEL",
        invite.uri,
        [(n, v) for n, v in invite.headers if n in ("Via", "From", "To", "Call-ID")]
        + [("CSeq", f"{invite.cseq.number} CANCEL")],
    )
    layer.transactions.receive(cancel, channel)
    assert channel.statuses()[-1] == 200 and 487 not in channel.statuses()
    stray = cancel.with_replaced("Via", f"SIP/2.0/UDP 192.168.1.64;branch={new_branch()}")
    layer.transactions.receive(stray, channel)
    assert channel.statuses()[-1] == 481


def test_requests_outside_dialogs_reach_the_app():
    _clock, app, layer, channel = _setup()
    register = request(
        "REGISTER",
        "sip:34020000002000000001@3402000000",
        [
            ("Via", f"SIP/2.0/UDP 192.168.1.64;branch={new_branch()}"),
            ("From", "<sip:34020000001320000001@3402000000>;tag=r"),
            ("To", "<sip:34020000001320000001@3402000000>"),
            ("Call-ID", "reg-1"),
            ("CSeq", "1 REGISTER"),
        ],
    )
    layer.transactions.receive(register, channel)
    assert app.events == [("request", "REGISTER")]


# ------------------------------------------------------------------------ as the UAC


def _platform_invite() -> SipRequest:
    return request(
        "INVITE",
        DEVICE_CONTACT,
        [
            ("Via", _via(None)),
            ("From", f"<{PLATFORM}>;tag=plat"),
            ("To", "<sip:34020000001320000001@3402000000>"),
            ("Call-ID", "talk-1"),
            ("CSeq", "7 INVITE"),
            ("Contact", f"<{PLATFORM}>"),
            ("Max-Forwards", "70"),
            ("Subject", "34020000001320000001:0,34020000002000000001:0"),
        ],
        b"v=0\r\n",
    )


def test_our_invite_answered_makes_a_dialog_acks_each_2xx_and_bye_ends_it():
    clock, app, layer, channel = _setup()
    invite = _platform_invite()
    layer.send(invite, channel)
    ok = response_for(
        invite,
        200,
        to_tag="devtag",
        headers=[
            ("Record-Route", "<sip:p1.example;lr>, <sip:p2.example;lr>"),
            ("Contact", "<sip:34020000001320000001@203.0.113.5:40000>"),
        ],
    )
    layer.transactions.receive(ok, channel)
    layer.transactions.receive(ok, channel)  # retransmitted 2xx: ACKed again, app told once
    acks = channel.requests("ACK")
    assert len(acks) == 2
    assert acks[0].uri == "sip:34020000001320000001@203.0.113.5:40000"
    assert acks[0].values("Route") == ["<sip:p2.example;lr>", "<sip:p1.example;lr>"]
    assert acks[0].cseq.number == 7 and acks[0].to.tag == "devtag"
    assert app.events == [("response", 200), ("confirmed", "talk-1")]
    (dialog,) = layer.dialogs.values()
    _run(clock, 64 * T1)
    layer.transactions.receive(ok, channel)  # after Timer M: still ACKed (§13.2.2.4)
    assert len(channel.requests("ACK")) == 3
    bye_tx = layer.bye(dialog)
    assert bye_tx is not None and layer.bye(dialog) is None
    (bye,) = channel.requests("BYE")
    assert bye.cseq.number == 8 and bye.to.tag == "devtag" and bye.from_.tag == "plat"
    assert app.events[-1] == ("ended", "local-bye")
    layer.transactions.receive(response_for(bye, 200), channel)
    _run(clock, 200)
    assert not clock.getDelayedCalls() and not layer.dialogs


def test_a_device_bye_ends_our_call_too():
    _clock, app, layer, channel = _setup()
    invite = _platform_invite()
    layer.send(invite, channel)
    ok = response_for(invite, 200, to_tag="devtag", headers=[("Contact", f"<{DEVICE_CONTACT}>")])
    layer.transactions.receive(ok, channel)
    bye = request(
        "BYE",
        PLATFORM,
        [
            ("Via", f"SIP/2.0/UDP 192.168.1.64;branch={new_branch()}"),
            ("From", ok.header("To") or ""),
            ("To", invite.header("From") or ""),
            ("Call-ID", "talk-1"),
            ("CSeq", "1 BYE"),
        ],
    )
    layer.transactions.receive(bye, channel)
    assert channel.statuses()[-1] == 200 and app.events[-1] == ("ended", "bye")


def test_a_failed_invite_reaches_the_app():
    clock, app, layer, channel = _setup()
    layer.send(_platform_invite(), channel)
    _run(clock, 64 * T1)
    assert app.events == [("failed", "timeout")]


def test_a_strict_router_first_gets_the_request_uri():
    channel = FakeChannel()
    dialog = Dialog(
        call_id="c",
        local_tag="l",
        remote_tag="r",
        local_uri=PLATFORM,
        remote_uri=DEVICE_CONTACT,
        remote_target=DEVICE_CONTACT,
        route_set=["<sip:strict.example>", "<sip:loose.example;lr>"],
        local_seq=1,
        remote_seq=None,
        channel=channel,
        role="uac",
    )
    bye = dialog.new_request("BYE", _via(channel))
    assert bye.uri == "sip:strict.example"
    assert bye.values("Route") == ["<sip:loose.example;lr>", f"<{DEVICE_CONTACT}>"]
    assert bye.cseq.number == 2


# ------------------------------------------------------------------------ stateful property

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule  # noqa: E402


class DialogsUnderAnyOrder(RuleBasedStateMachine):
    """Calls from a device in any order of answers, ACKs, BYEs, CANCELs, repeats and timers."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.app = App()
        self.layer = DialogLayer(self.clock, self.app, via=_via, timers=TIMERS)
        self.channel = FakeChannel()
        self.final_at: dict[tuple[str, int, str], float] = {}
        plain_send = self.channel.send

        def send(message: SipMessage) -> None:
            if isinstance(message, SipResponse) and not message.provisional:
                key = (message.call_id, message.cseq.number, message.cseq.method)
                self.final_at.setdefault(key, self.clock.seconds())
            plain_send(message)

        self.channel.send = send  # type: ignore[method-assign]
        self.sent: list[SipRequest] = []  # what the device sent, for repeats
        self.first_sent: dict[int, float] = {}
        self.calls = 0

    def _send(self, req: SipRequest) -> None:
        self.sent.append(req)
        self.first_sent[id(req)] = self.clock.seconds()
        self.layer.transactions.receive(req, self.channel)

    def _repeatable(self) -> list[SipRequest]:
        """What may still arrive again from a conforming UDP device (§17.1): within 64*T1 of
        the first send, and before its final answer or less than T4 (the longest a message
        lives in the network) after it."""
        now = self.clock.seconds()
        out = []
        for r in self.sent:
            final = self.final_at.get((r.call_id, r.cseq.number, r.method))
            if now - self.first_sent[id(r)] < 64 * T1 and (final is None or now - final < 5.0):
                out.append(r)
        return out

    def _invites(self) -> list[SipRequest]:
        return [r for r in self.sent if r.method == "INVITE"]

    def _answer_to(self, invite: SipRequest) -> SipResponse | None:
        finals = [
            m
            for m in self.channel.sent
            if isinstance(m, SipResponse)
            and m.call_id == invite.call_id
            and m.cseq.method == "INVITE"
            and not m.provisional
        ]
        return finals[0] if finals else None

    @rule()
    def a_device_calls(self):
        self.calls += 1
        self._send(_device_invite(call_id=f"call-{self.calls}"))

    @precondition(lambda self: self.app.invites)
    @rule(data=st.data(), accept=st.booleans())
    def the_app_answers(self, data, accept):
        tx = data.draw(st.sampled_from(self.app.invites))
        if tx.state != "Proceeding":
            return
        if accept:
            self.layer.answer(tx, contact=PLATFORM)
        else:
            tx.respond(response_for(tx.request, 486, to_tag="busy"))

    @precondition(lambda self: self._repeatable())
    @rule(data=st.data())
    def the_device_repeats_itself(self, data):
        req = data.draw(st.sampled_from(self._repeatable()))
        self.layer.transactions.receive(req, self.channel)

    @precondition(lambda self: self._invites())
    @rule(data=st.data())
    def a_late_duplicate_invite_arrives(self, data):
        invite = data.draw(st.sampled_from(self._invites()))
        final = self._answer_to(invite)
        live = any(d.call_id == invite.call_id for d in self.layer.dialogs.values())
        if final is not None and final.success and live:  # a live call: the same 2xx again
            self.layer.transactions.receive(invite, self.channel)

    @precondition(lambda self: self._invites())
    @rule(data=st.data())
    def the_device_acks(self, data):
        invite = data.draw(st.sampled_from(self._invites()))
        final = self._answer_to(invite)
        if final is None:
            return
        ack = _in_dialog("ACK", invite, final, invite.cseq.number)
        if not final.success:  # the ACK to a failure is in the INVITE's transaction
            ack = ack.with_replaced("Via", invite.values("Via")[0])
        self._send(ack)

    @precondition(lambda self: self._invites())
    @rule(data=st.data())
    def the_device_hangs_up(self, data):
        invite = data.draw(st.sampled_from(self._invites()))
        final = self._answer_to(invite)
        if final is None:
            return
        self._send(_in_dialog("BYE", invite, final, invite.cseq.number + 1))

    @precondition(lambda self: self._invites())
    @rule(data=st.data())
    def the_device_cancels(self, data):
        invite = data.draw(st.sampled_from(self._invites()))
        self._send(
            request(
                "CANCEL",
                invite.uri,
                [(n, v) for n, v in invite.headers if n in ("Via", "From", "To", "Call-ID")]
                + [("CSeq", f"{invite.cseq.number} CANCEL")],
            )
        )

    @precondition(lambda self: self.layer.dialogs)
    @rule(data=st.data())
    def we_hang_up(self, data):
        dialog = data.draw(st.sampled_from(sorted(self.layer.dialogs.values(), key=id)))
        self.layer.bye(dialog)

    @rule(seconds=st.sampled_from([0.0, 0.5, 2.0, 5.0, 32.0, 40.0]))
    def time_passes(self, seconds):
        self.clock.advance(seconds)

    @invariant()
    def every_timer_belongs_to_the_layer(self):
        assert {id(c) for c in self.clock.getDelayedCalls()} == {
            id(c) for c in self.layer.pending_timers()
        }
        for dialog in self.layer.dialogs.values():
            assert dialog.state != "terminated"

    @invariant()
    def one_final_answer_per_invite_and_each_call_ends_once(self):
        finals: dict[tuple[str, int], SipResponse] = {}
        for m in self.channel.sent:
            if isinstance(m, SipResponse) and m.cseq.method == "INVITE" and not m.provisional:
                assert finals.setdefault((m.call_id, m.cseq.number), m) == m
        ended = [e for e in self.app.events if e[0] == "ended"]
        assert len(ended) <= self.calls

    def teardown(self) -> None:
        for tx in self.app.invites:
            if tx.state == "Proceeding":
                tx.respond(response_for(tx.request, 480, to_tag="late"))
        for dialog in list(self.layer.dialogs.values()):
            self.layer.bye(dialog)
        for _ in range(10):
            self.clock.advance(1000)
        assert not self.layer.dialogs and not self.clock.getDelayedCalls()
        assert not self.layer._answered
        assert not self.layer.transactions.servers and not self.layer.transactions.clients


DialogsUnderAnyOrder.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None
)
test_dialogs_under_any_order = DialogsUnderAnyOrder.TestCase


def test_a_late_duplicate_of_an_answered_invite_gets_the_same_2xx_not_a_new_call():
    clock, app, layer, channel = _setup()
    invite, _dialog, ok = _answered(layer, app, channel)
    layer.transactions.receive(_in_dialog("ACK", invite, ok, invite.cseq.number), channel)
    _run(clock, 100)  # every transaction of the call is gone
    layer.transactions.receive(invite, channel)
    assert [e for e in app.events if e[0] == "invite"] == [("invite", "call-1")]
    answers = [m for m in channel.sent if isinstance(m, SipResponse) and m.status == 200]
    assert answers[-1] == ok


def _device_answers(layer, channel, invite, status, tag="devtag"):
    headers = [("Contact", f"<{DEVICE_CONTACT}>")] if 200 <= status < 300 else []
    resp = response_for(invite, status, to_tag=tag, headers=headers)
    layer.transactions.receive(resp, channel)
    return resp


def test_cancelling_our_invite_waits_for_a_provisional_then_the_487_is_acked():
    clock, app, layer, channel = _setup()
    invite = _platform_invite()
    tx = layer.send(invite, channel)
    assert layer.cancel(tx)
    assert channel.requests("CANCEL") == []  # never before a provisional (§9.1)
    _device_answers(layer, channel, invite, 180)
    (cancel,) = channel.requests("CANCEL")
    assert cancel.top_via.branch == invite.top_via.branch
    assert (cancel.uri, cancel.cseq.number, cancel.cseq.method) == (invite.uri, 7, "CANCEL")
    assert cancel.to.tag is None and cancel.call_id == invite.call_id
    layer.transactions.receive(response_for(cancel, 200, to_tag="devtag"), channel)
    _device_answers(layer, channel, invite, 487)
    assert app.events == [("response", 180), ("response", 487)]
    assert len(channel.requests("ACK")) == 1  # the transaction ACKs the 487
    assert not layer.cancel(tx)  # nothing left to cancel
    _run(clock, 100)
    assert not clock.getDelayedCalls() and not layer.dialogs


def test_a_2xx_crossing_our_cancel_is_acked_and_hung_up():
    _clock, app, layer, channel = _setup()
    invite = _platform_invite()
    tx = layer.send(invite, channel)
    _device_answers(layer, channel, invite, 100)
    assert layer.cancel(tx)
    _device_answers(layer, channel, invite, 200)
    assert len(channel.requests("ACK")) == 1 and len(channel.requests("BYE")) == 1
    assert app.events[-1] == ("ended", "cancelled")
    assert ("confirmed", "talk-1") not in app.events and not layer.dialogs


def test_a_2xx_retransmitted_after_we_hung_up_is_acked_not_a_new_call():
    clock, app, layer, channel = _setup()
    invite = _platform_invite()
    layer.send(invite, channel)
    ok = _device_answers(layer, channel, invite, 200)
    (dialog,) = layer.dialogs.values()
    layer.bye(dialog)
    layer.transactions.receive(ok, channel)  # the ICT is still Accepted
    _run(clock, 64 * T1 + 1)
    layer.transactions.receive(ok, channel)  # and after Timer M
    assert len(channel.requests("ACK")) == 3
    assert app.events.count(("confirmed", "talk-1")) == 1 and not layer.dialogs


class AnswerAll(App):
    """An application that answers every INVITE 200 and every other request 200."""

    def invite_received(self, transaction, invite):
        super().invite_received(transaction, invite)
        assert self.layer is not None
        self.layer.answer(transaction, contact=PLATFORM)

    def request_received(self, transaction, req):
        super().request_received(transaction, req)
        transaction.respond(response_for(req, 200, to_tag="app"))


_methods = st.sampled_from(
    ["INVITE", "ACK", "BYE", "CANCEL", "MESSAGE", "REGISTER", "INFO", "OPTIONS", "FOO", "PRACK"]
)


@st.composite
def _any_request(draw: st.DrawFn) -> SipRequest:
    """A request; the same request always has the same branch, another one another branch."""
    method = draw(_methods)
    to_tag = draw(st.sampled_from([None, "dev1", "x", "y"]))
    to = "<sip:34020000002000000001@3402000000>" + (f";tag={to_tag}" if to_tag else "")
    from_tag = draw(st.sampled_from(["dev1", "y"]))
    call_id = draw(st.sampled_from(["c1", "c2"]))
    cseq = f"{draw(st.integers(0, 3))} {method}"
    branch = "z9hG4bK" + "-".join([method, str(to_tag), from_tag, call_id, cseq.split()[0]])
    return request(
        method,
        PLATFORM,
        [
            ("Via", f"SIP/2.0/UDP 192.168.1.64;branch={branch}"),
            ("From", f"<sip:34020000001320000001@3402000000>;tag={from_tag}"),
            ("To", to),
            ("Call-ID", call_id),
            ("CSeq", cseq),
        ],
    )


@given(st.lists(st.tuples(_any_request(), st.sampled_from([0.0, 1.0, 40.0])), max_size=25))
@settings(deadline=None)
def test_any_sequence_of_requests_is_answered_and_nothing_raises_or_stays(steps):
    clock = Clock()
    app = AnswerAll()
    layer = DialogLayer(clock, app, via=_via, timers=TIMERS)
    app.layer = layer
    channel = FakeChannel()
    for req, later in steps:
        layer.transactions.receive(req, channel)
        clock.advance(later)
        if req.method != "ACK":  # every request has its final answer by now
            answered = [
                m
                for m in channel.sent
                if isinstance(m, SipResponse)
                and not m.provisional
                and m.cseq == req.cseq
                and m.top_via.branch == req.top_via.branch
            ]
            assert answered, req
    for dialog in list(layer.dialogs.values()):
        layer.bye(dialog)
    for _ in range(5):
        clock.advance(1000)
    assert not clock.getDelayedCalls() and not layer.dialogs


def test_answering_an_invite_already_cancelled_makes_no_dialog_and_sends_nothing():
    clock, app, layer, channel = _setup()
    invite = _device_invite()
    layer.transactions.receive(invite, channel)
    cancel = request(
        "CANCEL",
        invite.uri,
        [(n, v) for n, v in invite.headers if n in ("Via", "From", "To", "Call-ID")]
        + [("CSeq", f"{invite.cseq.number} CANCEL")],
    )
    layer.transactions.receive(cancel, channel)
    sent = len(channel.sent)
    assert layer.answer(app.invites[0], contact=PLATFORM) is None
    assert len(channel.sent) == sent and not layer.dialogs
    _run(clock, 100)
    assert not clock.getDelayedCalls() and channel.requests("BYE") == []
