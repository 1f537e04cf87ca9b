"""Tests for SIP transactions: every RFC 3261 timer on a Clock, absorption, matching, no leaks."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from twisted.internet.task import Clock

from gb28181talk.sip.message import (
    SipMessage,
    SipRequest,
    SipResponse,
    request,
    response_for,
)
from gb28181talk.sip.transaction import (
    ClientTransaction,
    ServerTransaction,
    Timers,
    TransactionLayer,
    new_branch,
)

T1, T2, T4 = 0.5, 4.0, 5.0
TIMERS = Timers(t1=T1, t2=T2, t4=T4, d=32.0)


class FakeChannel:
    """A channel that records what it was given to send; it can be made to fail."""

    def __init__(self, reliable: bool = False) -> None:
        self.reliable = reliable
        self.sent: list[SipMessage] = []
        self.failing = False

    def send(self, message: SipMessage) -> None:
        if self.failing:
            raise OSError("connection reset")
        self.sent.append(message)

    def statuses(self) -> list[int | str]:
        return [m.status if isinstance(m, SipResponse) else m.method for m in self.sent]


class RecordingUser:
    """A TU that records what the layer and its client transactions tell it."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self.servers: list[ServerTransaction] = []

    def request_received(self, transaction: ServerTransaction, req: SipRequest) -> None:
        self.events.append(("request", req.method))
        self.servers.append(transaction)

    def ack_received(self, ack: SipRequest, channel: object) -> None:
        self.events.append(("ack", ack.top_via.branch))

    def response_unmatched(self, resp: SipResponse, channel: object) -> None:
        self.events.append(("unmatched", resp.status))

    def response_received(self, transaction: ClientTransaction, resp: SipResponse) -> None:
        self.events.append(("response", resp.status))

    def transaction_failed(self, transaction: object, reason: str) -> None:
        self.events.append(("failed", reason))


_seq = itertools.count(1)


def _request(method: str, branch: str | None = None, transport: str = "UDP") -> SipRequest:
    branch = branch or new_branch()
    cseq_method = method
    return request(
        method,
        "sip:34020000001320000001@192.168.1.64:5060",
        [
            ("Via", f"SIP/2.0/{transport} 192.168.1.64:5060;rport;branch={branch}"),
            ("From", "<sip:34020000002000000001@3402000000>;tag=plat"),
            ("To", "<sip:34020000001320000001@3402000000>"),
            ("Call-ID", f"call-{branch}"),
            ("CSeq", f"{next(_seq)} {cseq_method}"),
            ("Max-Forwards", "70"),
        ],
    )


def _ack_for_final(invite: SipRequest, final: SipResponse) -> SipRequest:
    return request(
        "ACK",
        invite.uri,
        [
            ("Via", str(invite.top_via)),
            ("From", invite.header("From") or ""),
            ("To", final.header("To") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq.number} ACK"),
        ],
    )


def _layer(reliable: bool = False):
    clock = Clock()
    user = RecordingUser()
    return clock, user, TransactionLayer(clock, user, TIMERS), FakeChannel(reliable)


def _advance_to(clock: Clock, when: float) -> None:
    """Fire every timer due up to ``when``, in order (timers set by timers included)."""
    while True:
        due = [c.getTime() for c in clock.getDelayedCalls() if c.getTime() <= when]
        if not due:
            break
        clock.advance(max(0.0, min(due) - clock.seconds()))
    clock.advance(max(0.0, when - clock.seconds()))


def _send_times(clock: Clock, channel: FakeChannel, until: float) -> list[float]:
    times: list[float] = []
    seen = len(channel.sent)
    while clock.getDelayedCalls() and clock.seconds() < until:
        clock.advance(min(c.getTime() for c in clock.getDelayedCalls()) - clock.seconds())
        if len(channel.sent) > seen:
            times += [clock.seconds()] * (len(channel.sent) - seen)
            seen = len(channel.sent)
    return times


# ------------------------------------------------------------------------ non-INVITE server


def test_a_non_invite_request_is_answered_once_and_retransmissions_get_that_answer():
    clock, user, layer, channel = _layer()
    message = _request("MESSAGE")
    layer.receive(message, channel)
    layer.receive(message, channel)  # before any answer: absorbed, nothing sent
    assert user.events == [("request", "MESSAGE")] and channel.sent == []
    tx = user.servers[0]
    tx.respond(response_for(message, 200, to_tag="t"))
    layer.receive(message, channel)
    tx.respond(response_for(message, 500))  # a second final: never sent
    assert channel.statuses() == [200, 200] and tx.dropped == 1
    assert tx.state == "Completed"
    _advance_to(clock, 64 * T1 - 0.01)
    assert layer.servers  # Timer J still runs
    _advance_to(clock, 64 * T1)
    assert tx.terminated and not layer.servers and not clock.getDelayedCalls()
    assert user.events == [("request", "MESSAGE")]


def test_a_non_invite_provisional_is_resent_then_the_final():
    _clock, user, layer, channel = _layer()
    message = _request("REGISTER")
    layer.receive(message, channel)
    tx = user.servers[0]
    tx.respond(response_for(message, 100))
    layer.receive(message, channel)
    tx.respond(response_for(message, 401))
    assert channel.statuses() == [100, 100, 401]


def test_timer_j_is_zero_on_a_reliable_transport():
    clock, user, layer, channel = _layer(reliable=True)
    message = _request("MESSAGE", transport="TCP")
    layer.receive(message, channel)
    user.servers[0].respond(response_for(message, 200))
    assert layer.servers
    clock.advance(0)
    assert not layer.servers and not clock.getDelayedCalls()


# ------------------------------------------------------------------------ INVITE server


def test_an_invite_gets_100_at_once_and_a_retransmission_gets_the_last_provisional():
    _clock, user, layer, channel = _layer()
    invite = _request("INVITE")
    layer.receive(invite, channel)
    assert channel.statuses() == [100]
    tx = user.servers[0]
    tx.respond(response_for(invite, 180, to_tag="t"))
    layer.receive(invite, channel)
    assert channel.statuses() == [100, 180, 180]
    assert user.events == [("request", "INVITE")]


def test_a_failure_is_retransmitted_on_timer_g_until_the_ack_then_timer_i():
    clock, user, layer, channel = _layer()
    invite = _request("INVITE")
    layer.receive(invite, channel)
    tx = user.servers[0]
    busy = response_for(invite, 486, to_tag="t")
    tx.respond(busy)
    times = _send_times(clock, channel, until=20.0)
    # Timer G: T1, 2T1, 4T1, then capped at T2 (§17.2.1)
    assert times[:6] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5]
    layer.receive(_ack_for_final(invite, busy), channel)
    assert tx.state == "Confirmed"
    sent = len(channel.sent)
    layer.receive(invite, channel)  # absorbed in Confirmed
    layer.receive(_ack_for_final(invite, busy), channel)
    assert len(channel.sent) == sent
    _advance_to(clock, clock.seconds() + T4)
    assert tx.terminated and not layer.servers and not clock.getDelayedCalls()
    assert ("ack", invite.top_via.branch) not in user.events  # the ACK to a failure stays here


def test_timer_h_ends_a_failure_never_acknowledged():
    clock, user, layer, channel = _layer()
    invite = _request("INVITE")
    layer.receive(invite, channel)
    user.servers[0].respond(response_for(invite, 603, to_tag="t"))
    _advance_to(clock, 64 * T1 - 0.01)
    assert ("failed", "no-ack") not in user.events
    _advance_to(clock, 64 * T1)
    assert user.events[-1] == ("failed", "no-ack")
    assert not layer.servers and not clock.getDelayedCalls()
    assert set(channel.statuses()) == {100, 603}


def test_a_2xx_is_accepted_retransmitted_invites_get_it_again_and_timer_l_ends_it():
    clock, user, layer, channel = _layer()
    invite = _request("INVITE")
    layer.receive(invite, channel)
    tx = user.servers[0]
    ok = response_for(invite, 200, to_tag="t")
    tx.respond(ok)
    assert tx.state == "Accepted"
    layer.receive(invite, channel)  # the same answer again, never a second call
    tx.respond(ok)  # the TU's own retransmission (§13.3.1.4) passes through
    tx.respond(response_for(invite, 200, to_tag="other"))  # a different 2xx: dropped
    assert channel.statuses() == [100, 200, 200, 200] and tx.dropped == 1
    assert user.events == [("request", "INVITE")]
    ack = request(
        "ACK",
        invite.uri,
        [
            ("Via", "SIP/2.0/UDP 192.168.1.64:5060;branch=z9hG4bKack2xx"),
            ("From", invite.header("From") or ""),
            ("To", ok.header("To") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq.number} ACK"),
        ],
    )
    layer.receive(ack, channel)  # the ACK to a 2xx is its own request: to the TU
    assert user.events[-1] == ("ack", "z9hG4bKack2xx")
    _advance_to(clock, 64 * T1)
    assert tx.terminated and not layer.servers and not clock.getDelayedCalls()


def test_timer_i_is_zero_and_there_is_no_timer_g_on_a_reliable_transport():
    clock, user, layer, channel = _layer(reliable=True)
    invite = _request("INVITE", transport="TCP")
    layer.receive(invite, channel)
    busy = response_for(invite, 486, to_tag="t")
    user.servers[0].respond(busy)
    _advance_to(clock, 10.0)
    assert channel.statuses() == [100, 486]  # no Timer G
    layer.receive(_ack_for_final(invite, busy), channel)
    clock.advance(0)
    assert not layer.servers and not clock.getDelayedCalls()


def test_a_cancel_finds_its_invite_and_rfc_2543_acks_match_without_a_branch():
    _clock, user, layer, channel = _layer()
    invite = _request("INVITE")
    layer.receive(invite, channel)
    cancel = request(
        "CANCEL",
        invite.uri,
        [
            *((n, v) for n, v in invite.headers if n != "CSeq"),
            ("CSeq", f"{invite.cseq.number} CANCEL"),
        ],
    )
    layer.receive(cancel, channel)
    assert layer.find_invite(cancel) is user.servers[0]
    assert user.servers[1].request.method == "CANCEL"

    old = _request("INVITE", branch="1234")  # an RFC 2543 branch: no magic cookie
    layer.receive(old, channel)
    busy = response_for(old, 486, to_tag="t")
    user.servers[-1].respond(busy)
    layer.receive(_ack_for_final(old, busy), channel)
    assert user.servers[-1].state == "Confirmed"


# ------------------------------------------------------------------------ INVITE client


def test_timer_a_doubles_and_timer_b_gives_up():
    clock, user, layer, channel = _layer()
    invite = _request("INVITE")
    layer.send_request(invite, channel, user)
    times = [0.0, *_send_times(clock, channel, until=100.0)]
    assert times == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]  # Timer A: T1, 2T1, 4T1... no cap
    assert user.events == [("failed", "timeout")] and clock.seconds() == 64 * T1
    assert not layer.clients and not clock.getDelayedCalls()


def test_a_failure_is_acknowledged_by_the_transaction_and_its_retransmissions_absorbed():
    clock, user, layer, channel = _layer()
    invite = _request("INVITE")
    tx = layer.send_request(invite, channel, user)
    layer.receive(response_for(invite, 100), channel)
    _advance_to(clock, 5.0)
    assert channel.statuses() == ["INVITE"]  # no Timer A after a provisional
    busy = response_for(invite, 486, to_tag="dev")
    layer.receive(busy, channel)
    layer.receive(busy, channel)
    assert user.events == [("response", 100), ("response", 486)]
    acks = [m for m in channel.sent if isinstance(m, SipRequest) and m.method == "ACK"]
    assert len(acks) == 2
    assert acks[0].top_via.branch == invite.top_via.branch and acks[0].to.tag == "dev"
    assert acks[0].cseq.number == invite.cseq.number
    _advance_to(clock, clock.seconds() + 32.0)  # Timer D
    assert tx.terminated and not layer.clients and not clock.getDelayedCalls()


def test_a_2xx_is_accepted_and_its_retransmissions_go_to_the_tu_until_timer_m():
    clock, user, layer, channel = _layer()
    invite = _request("INVITE")
    tx = layer.send_request(invite, channel, user)
    ok = response_for(invite, 200, to_tag="dev")
    layer.receive(ok, channel)
    layer.receive(ok, channel)
    assert user.events == [("response", 200), ("response", 200)]
    assert tx.state == "Accepted"
    assert channel.statuses() == ["INVITE"]  # the ACK to a 2xx is the dialog's
    _advance_to(clock, 64 * T1)
    layer.receive(ok, channel)
    assert user.events[-1] == ("unmatched", 200)
    assert not clock.getDelayedCalls()


def test_an_invite_left_proceeding_is_ended_by_the_guard():
    clock, user, layer, channel = _layer()
    invite = _request("INVITE")
    layer.send_request(invite, channel, user)
    layer.receive(response_for(invite, 180, to_tag="d"), channel)
    _advance_to(clock, TIMERS.invite_proceeding)
    assert user.events[-1] == ("failed", "timeout")
    assert not layer.clients and not clock.getDelayedCalls()


def test_no_retransmission_and_timer_d_zero_on_a_reliable_transport():
    clock, user, layer, channel = _layer(reliable=True)
    invite = _request("INVITE", transport="TCP")
    layer.send_request(invite, channel, user)
    _advance_to(clock, 10.0)
    assert channel.statuses() == ["INVITE"]
    layer.receive(response_for(invite, 500, to_tag="d"), channel)
    clock.advance(0)
    assert not layer.clients and not clock.getDelayedCalls()


# ------------------------------------------------------------------------ non-INVITE client


def test_timer_e_doubles_to_t2_and_timer_f_gives_up():
    clock, user, layer, channel = _layer()
    message = _request("MESSAGE")
    layer.send_request(message, channel, user)
    times = [0.0, *_send_times(clock, channel, until=100.0)]
    assert times[:6] == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5]  # T1, 2T1, 4T1, T2, T2
    assert all(b - a == T2 for a, b in itertools.pairwise(times[4:]))
    assert user.events == [("failed", "timeout")] and clock.seconds() == 64 * T1
    assert not clock.getDelayedCalls()


def test_after_a_provisional_timer_e_fires_every_t2_and_a_final_starts_timer_k():
    clock, user, layer, channel = _layer()
    message = _request("MESSAGE")
    tx = layer.send_request(message, channel, user)
    layer.receive(response_for(message, 100), channel)
    times = _send_times(clock, channel, until=9.0)
    assert times[0] == 0.5 and all(b - a == T2 for a, b in itertools.pairwise(times))
    layer.receive(response_for(message, 200, to_tag="d"), channel)
    layer.receive(response_for(message, 200, to_tag="d"), channel)  # absorbed
    assert user.events == [("response", 100), ("response", 200)]
    at = clock.seconds()
    _advance_to(clock, at + T4 - 0.01)
    assert not tx.terminated
    _advance_to(clock, at + T4)
    assert tx.terminated and not clock.getDelayedCalls()


def test_a_transport_failure_ends_the_transaction_and_tells_the_tu():
    clock, user, layer, channel = _layer()
    channel.failing = True
    layer.send_request(_request("MESSAGE"), channel, user)
    assert user.events == [("failed", "transport")]
    assert not layer.clients and not clock.getDelayedCalls()
    layer.receive(_request("INVITE"), channel)  # the 100 cannot go out
    assert user.events[1:] == [("failed", "transport")] and not layer.servers


def test_a_response_for_no_transaction_and_a_repeated_branch():
    _clock, user, layer, channel = _layer()
    message = _request("MESSAGE")
    layer.receive(response_for(message, 200), channel)
    assert user.events == [("unmatched", 200)]
    layer.send_request(message, channel, user)
    with pytest.raises(ValueError):
        layer.send_request(message, channel, user)
    with pytest.raises(ValueError):
        layer.send_request(_request("ACK"), channel, user)


# ------------------------------------------------------------------------ stateful property


class TransactionsUnderAnyOrder(RuleBasedStateMachine):
    """Any order of requests, answers, retransmissions and timer firings: no leak, one answer."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.user = RecordingUser()
        self.layer = TransactionLayer(self.clock, self.user, TIMERS)
        self.channels = {False: FakeChannel(False), True: FakeChannel(True)}
        self.incoming: list[tuple[SipRequest, FakeChannel]] = []
        self.first_seen: dict[int, float] = {}
        self.outgoing: list[tuple[SipRequest, FakeChannel]] = []

    @rule(
        method=st.sampled_from(["INVITE", "MESSAGE", "REGISTER", "BYE"]),
        reliable=st.booleans(),
        branch=st.sampled_from(["z9hG4bKa", "z9hG4bKb", "z9hG4bKc", "1234"]),
    )
    def a_request_arrives(self, method, reliable, branch):
        req = _request(method, branch=f"{branch}{len(self.incoming) % 3}")
        channel = self.channels[reliable]
        self.incoming.append((req, channel))
        self.first_seen[id(req)] = self.clock.seconds()
        self.layer.receive(req, channel)

    def _retransmittable(self) -> list[tuple[SipRequest, FakeChannel]]:
        """What a conforming client may still retransmit: over UDP, within 64*T1 of the first."""
        now = self.clock.seconds()
        return [
            (req, channel)
            for req, channel in self.incoming
            if not channel.reliable and now - self.first_seen[id(req)] < 64 * T1
        ]

    @precondition(lambda self: self._retransmittable())
    @rule(data=st.data())
    def a_request_is_retransmitted(self, data):
        req, channel = data.draw(st.sampled_from(self._retransmittable()))
        self.layer.receive(req, channel)

    @precondition(lambda self: self.user.servers)
    @rule(data=st.data(), status=st.sampled_from([100, 180, 200, 202, 401, 486, 500]))
    def the_tu_answers(self, data, status):
        tx = data.draw(st.sampled_from(self.user.servers))
        tx.respond(response_for(tx.request, status, to_tag="uas"))

    @precondition(lambda self: any(r.method == "INVITE" for r, _ in self.incoming))
    @rule(data=st.data(), same_branch=st.booleans())
    def an_ack_arrives(self, data, same_branch):
        invite, channel = data.draw(
            st.sampled_from([(r, c) for r, c in self.incoming if r.method == "INVITE"])
        )
        ack = _ack_for_final(invite, response_for(invite, 486, to_tag="uas"))
        if not same_branch:
            ack = ack.with_replaced("Via", "SIP/2.0/UDP 192.168.1.64;branch=z9hG4bKnew")
        self.layer.receive(ack, channel)

    @rule(method=st.sampled_from(["INVITE", "MESSAGE"]), reliable=st.booleans())
    def the_tu_sends_a_request(self, method, reliable):
        req = _request(method)
        channel = self.channels[reliable]
        self.layer.send_request(req, channel, self.user)
        self.outgoing.append((req, channel))

    @precondition(lambda self: self.outgoing)
    @rule(data=st.data(), status=st.sampled_from([100, 180, 200, 486, 503]))
    def a_response_arrives(self, data, status):
        req, channel = data.draw(st.sampled_from(self.outgoing))
        self.layer.receive(response_for(req, status, to_tag="dev"), channel)

    @rule(seconds=st.sampled_from([0.0, 0.1, 0.5, 1.0, 4.0, 5.0, 32.0, 40.0]))
    def time_passes(self, seconds):
        self.clock.advance(seconds)

    @invariant()
    def every_timer_belongs_to_a_live_transaction(self):
        live = {id(c) for c in self.layer.pending_timers()}
        on_clock = {id(c) for c in self.clock.getDelayedCalls()}
        assert on_clock == live
        for tx in [*self.layer.servers.values(), *self.layer.clients.values()]:
            assert not tx.terminated
        for tx in self.user.servers:
            if tx.terminated:
                assert not tx.pending_timers()
                assert self.layer.servers.get(tx.key) is not tx

    @invariant()
    def no_transaction_answers_twice_differently(self):
        for channel in self.channels.values():
            finals: dict[tuple[object, ...], SipResponse] = {}
            for message in channel.sent:
                if isinstance(message, SipResponse) and not message.provisional:
                    key = (message.top_via.branch, message.cseq, message.call_id)
                    assert finals.setdefault(key, message) == message

    def teardown(self) -> None:
        for tx in self.user.servers:
            if tx.state in ("Trying", "Proceeding"):
                tx.respond(response_for(tx.request, 500, to_tag="uas"))
        for _ in range(10):
            self.clock.advance(1000)
        assert not self.layer.servers and not self.layer.clients
        assert not self.clock.getDelayedCalls()


TransactionsUnderAnyOrder.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
test_transactions_under_any_order = TransactionsUnderAnyOrder.TestCase


def test_shutdown_ends_every_transaction_and_cancels_its_timers():
    clock, user, layer, channel = _layer()
    layer.receive(_request("INVITE"), channel)
    layer.send_request(_request("MESSAGE"), channel, user)
    assert clock.getDelayedCalls()
    layer.shutdown()
    assert not layer.servers and not layer.clients and not clock.getDelayedCalls()
    assert all(tx.terminated for tx in user.servers)


def test_a_full_transaction_table_answers_503_statelessly():
    clock = Clock()
    user = RecordingUser()
    layer = TransactionLayer(clock, user, TIMERS, max_server_transactions=2)
    channel = FakeChannel()
    for _ in range(4):
        layer.receive(_request("MESSAGE"), channel)
    assert len(layer.servers) == 2 and layer.refused_busy == 2
    assert channel.statuses() == [503, 503]
    assert channel.sent[0].header("Retry-After") == "5"  # type: ignore[union-attr]
    for tx in user.servers:
        tx.respond(response_for(tx.request, 200))
    _advance_to(clock, 64 * T1)
    layer.receive(_request("MESSAGE"), channel)  # room again once they end
    assert len(user.servers) == 3
