"""SIP transactions (RFC 3261 §17, with the Accepted state of RFC 6026) as explicit machines.

Four machines, each built with Automat's ``TypeMachineBuilder`` like the talk
session's lifecycle: the INVITE client, the non-INVITE client, the INVITE
server and the non-INVITE server.  Each state holds its own timers
(``Calling`` holds A and B, ``Trying`` E and F, ``Completed`` D, G and H, J or
K, ``Confirmed`` I, ``Accepted`` L or M); leaving a state cancels them, so a
terminated transaction holds no timer.  A response is one of three inputs
(provisional, success, failure) so that every transition is declared, not
decided inside a method.  Time comes from an injected ``IReactorTime`` (tests
use ``twisted.internet.task.Clock``), the timer values from :class:`Timers`.

:class:`TransactionLayer` matches what arrives to its transaction (§17.1.3,
§17.2.3: branch, sent-by and method; the RFC 2543 rule when a branch lacks
the magic cookie), absorbs retransmitted requests and answers them with the
last response, and hands the transaction user (TU) only what is new: a
request, a response, an ACK to a 2xx, a timeout.  Messages leave through a
:class:`Channel` (the connection or datagram peer the request came on, so
answers go where the request came from), which says whether it is reliable.
The server table is capped: past ``max_server_transactions`` a new request
gets a stateless 503 (a flood cannot grow memory).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from automat import TypeMachineBuilder
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from gb28181talk.sip.message import (
    BRANCH_MAGIC,
    SipMessage,
    SipRequest,
    SipResponse,
    request,
    response_for,
)

_log = Logger()

MAX_SERVER_TRANSACTIONS = 50_000
"""Live server transactions at most (each non-INVITE one lives 64*T1 = 32 s over UDP after
its answer); past it, new requests get a stateless 503 so a flood cannot grow memory."""


@dataclass(frozen=True)
class Timers:
    """RFC 3261 timer values (§17, Table 4); tests scale T1 down and set D to match."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    d: float = 32.0
    """Timer D on an unreliable transport (at least 32 s)."""
    invite_proceeding: float = 180.0
    """How long an INVITE client waits in Proceeding for a final answer (a guard like Timer C)."""

    @property
    def timeout(self) -> float:
        """64*T1: Timers B, F, H, J (unreliable), L and M."""
        return 64 * self.t1


class Channel(Protocol):
    """Where a transaction's messages go: a connection, or a datagram peer."""

    reliable: bool

    def send(self, message: SipMessage) -> None:
        """Send ``message``; raise OSError when the transport cannot."""


class ClientUser(Protocol):
    """What a client transaction tells the TU that started it."""

    def response_received(self, transaction: ClientTransaction, response: SipResponse) -> None:
        """A response the TU must see (not a retransmitted non-2xx final)."""

    def transaction_failed(self, transaction: ClientTransaction, reason: str) -> None:
        """No final response: ``timeout`` (Timer B, F or the Proceeding guard) or ``transport``."""


class ServerUser(Protocol):
    """What the transaction layer tells the TU about what arrived."""

    def request_received(self, transaction: ServerTransaction, request: SipRequest) -> None:
        """A new request; answer it with ``transaction.respond``."""

    def ack_received(self, ack: SipRequest, channel: Channel) -> None:
        """An ACK for no INVITE server transaction waiting for one (the ACK to a 2xx)."""

    def response_unmatched(self, response: SipResponse, channel: Channel) -> None:
        """A response matching no client transaction (a late 2xx retransmission...)."""

    def transaction_failed(self, transaction: ServerTransaction, reason: str) -> None:
        """``no-ack`` (Timer H: the final answer was never acknowledged) or ``transport``."""


def new_branch() -> str:
    """A fresh RFC 3261 branch: the magic cookie and 64 random bits."""
    return BRANCH_MAGIC + os.urandom(8).hex()


Key = tuple[Any, ...]


def server_key(req: SipRequest) -> Key:
    """The server transaction a request belongs to (§17.2.3); an ACK belongs to its INVITE's."""
    via = req.top_via
    method = "INVITE" if req.method == "ACK" else req.method
    branch = via.branch or ""
    if branch.startswith(BRANCH_MAGIC):
        return (branch, via.host.lower(), via.port, method)
    # RFC 2543 peers: no usable branch; the ACK repeats the INVITE's URI, From tag, CSeq, Via.
    return ("2543", req.uri, req.call_id, req.cseq.number, method, req.from_.tag, str(via))


def client_key(message: SipMessage) -> Key:
    """The client transaction a response (or the request itself) belongs to (§17.1.3)."""
    return (message.top_via.branch or "", message.cseq.method)


def ack_for(req: SipRequest, resp: SipResponse) -> SipRequest:
    """The ACK to a non-2xx final answer to ``req`` (§17.1.1.3): same branch, To from the answer."""
    headers: list[tuple[str, str]] = [("Via", req.values("Via")[0])]
    headers += [(n, v) for n, v in req.headers if n == "Route"]
    headers += [
        ("From", req.header("From") or ""),
        ("To", resp.header("To") or ""),
        ("Call-ID", req.call_id),
        ("CSeq", f"{req.cseq.number} ACK"),
        ("Max-Forwards", "70"),
    ]
    return request("ACK", req.uri, headers)


# --------------------------------------------------------------------------- shared parts


@dataclass(eq=False)
class Transaction:
    """What every transaction has: its request, channel, layer, machine and what it sent."""

    layer: TransactionLayer
    key: Key
    request: SipRequest
    channel: Channel
    machine: Any = field(default=None, repr=False)
    state: str = "Idle"
    last_response: SipResponse | None = None
    terminated: bool = False
    _timers: list[IDelayedCall] = field(default_factory=list, repr=False)

    @property
    def timers(self) -> Timers:
        """The layer's timer values."""
        return self.layer.timers

    @property
    def reliable(self) -> bool:
        """Whether the channel is reliable (TCP, TLS): no retransmissions, zero wait times."""
        return self.channel.reliable

    def later(self, delay: float, fire: Callable[[], None]) -> IDelayedCall:
        """Start a timer of this transaction (the state that starts it holds it)."""
        call = self.layer.clock.callLater(max(0.0, delay), fire)
        self._timers = [c for c in self._timers if c.active()]
        self._timers.append(call)
        return call

    def pending_timers(self) -> list[IDelayedCall]:
        """This transaction's timers still to fire (none once terminated)."""
        return [call for call in self._timers if call.active()]

    def send(self, message: SipMessage) -> None:
        """Send on the channel; a transport failure becomes the machine's next input."""
        try:
            self.channel.send(message)
        except OSError as e:
            _log.info("SIP transport failed for {key}: {error}", key=self.key, error=e)
            self.machine.transport_failed()

    def enter(self, state: str) -> None:
        """Record the state's name (for logs, tests and the API)."""
        self.state = state

    def end(self) -> None:
        """Terminated: out of the layer's table."""
        self.state = "Terminated"
        self.terminated = True
        self.layer._forget(self)


@dataclass(eq=False)
class ClientTransaction(Transaction):
    """A client transaction: a request we sent, and the TU waiting for its answer."""

    user: Any = None
    give_up_at: float = 0.0
    """When Timer F (non-INVITE) fires: it runs on from Trying into Proceeding."""
    next_retransmit_at: float = 0.0
    """When Timer E fires next: it runs on from Trying into Proceeding."""

    def deliver(self, resp: SipResponse) -> None:
        """A response matched this transaction: the machine's provisional/success/failure input."""
        if resp.provisional:
            self.machine.provisional(resp)
        elif resp.success:
            self.machine.success(resp)
        else:
            self.machine.failure(resp)


@dataclass(eq=False)
class ServerTransaction(Transaction):
    """A server transaction: a request that arrived, and the answers the TU gives."""

    dropped: int = 0
    """Answers the TU gave after the final one (never sent: one transaction, one answer)."""
    to_tag: str | None = None
    """The To tag the TU gives this request's answers (an INVITE's 1xx, 2xx, 487 share it)."""

    @property
    def invite(self) -> bool:
        """Whether this is an INVITE server transaction."""
        return self.request.method == "INVITE"

    def respond(self, resp: SipResponse) -> None:
        """Send ``resp`` (1xx any number of times, then one final); later finals are dropped."""
        if resp.provisional:
            self.machine.provisional(resp)
        elif resp.success:
            self.machine.success(resp)
        else:
            self.machine.failure(resp)

    def drop(self, resp: SipResponse) -> None:
        """An answer after the final one: counted and logged, never sent."""
        self.dropped += 1
        _log.debug(
            "SIP {status} for {key} dropped: the transaction already answered ({state})",
            status=resp.status,
            key=self.key,
            state=self.state,
        )


@dataclass(eq=False)
class Slot:
    """One timer held by a state; retransmission timers restart with their next interval."""

    call: IDelayedCall | None = None
    interval: float = 0.0

    def cancel(self) -> None:
        """Stop it if it runs."""
        call, self.call = self.call, None
        if call is not None and call.active():
            call.cancel()


def _start(tx: Transaction, delay: float, fire: Callable[[], None]) -> Slot:
    return Slot(tx.later(delay, fire), delay)


@dataclass(eq=False)
class Held:
    """State data: the timers one state holds; leaving the state cancels them all."""

    def leave(self) -> None:
        """Cancel every timer this state holds."""
        for value in vars(self).values():
            if isinstance(value, Slot):
                value.cancel()


@dataclass(eq=False)
class Retransmitting(Held):
    """A request or answer resent on a timer (A, E, G) until another timer (B, F, H) ends it."""

    resend: Slot
    give_up: Slot


@dataclass(eq=False)
class Waiting(Held):
    """One timer before the next state: D, I, J, K, L, M, or the INVITE Proceeding guard."""

    timer: Slot


# --------------------------------------------------------------------------- INVITE client


class InviteClientInputs(Protocol):
    """Inputs of the INVITE client transaction (§17.1.1, RFC 6026 §7.2)."""

    def start(self) -> None:
        """Send the INVITE."""

    def provisional(self, response: SipResponse) -> None:
        """A 1xx."""

    def success(self, response: SipResponse) -> None:
        """A 2xx."""

    def failure(self, response: SipResponse) -> None:
        """A 300-699."""

    def timer_a(self) -> None:
        """Retransmit the INVITE (unreliable transports)."""

    def timer_b(self) -> None:
        """No answer in 64*T1."""

    def timer_d(self) -> None:
        """Done absorbing retransmitted failures."""

    def timer_m(self) -> None:
        """Done passing 2xx retransmissions up (RFC 6026)."""

    def guard(self) -> None:
        """No final answer while Proceeding for too long."""

    def transport_failed(self) -> None:
        """The channel could not send."""


def _build_invite_client() -> Any:
    """Every state and transition of the INVITE client transaction."""
    I = InviteClientInputs  # noqa: E741
    Tx = ClientTransaction
    builder = TypeMachineBuilder(I, Tx)

    def calling(m: I, tx: Tx) -> Retransmitting:
        resend = Slot() if tx.reliable else _start(tx, tx.timers.t1, m.timer_a)
        return Retransmitting(resend, _start(tx, tx.timers.timeout, m.timer_b))

    def proceeding(m: I, tx: Tx, r: SipResponse) -> Waiting:
        return Waiting(_start(tx, tx.timers.invite_proceeding, m.guard))

    def completed(m: I, tx: Tx, r: SipResponse) -> Waiting:
        return Waiting(_start(tx, 0 if tx.reliable else tx.timers.d, m.timer_d))

    def accepted(m: I, tx: Tx, r: SipResponse) -> Waiting:
        return Waiting(_start(tx, tx.timers.timeout, m.timer_m))

    idle = builder.state("Idle")
    s_calling = builder.state("Calling", calling)
    s_proceeding = builder.state("Proceeding", proceeding)
    s_completed = builder.state("Completed", completed)
    s_accepted = builder.state("Accepted", accepted)
    s_terminated = builder.state("Terminated")

    @idle.upon(I.start).to(s_calling)
    def start(m: I, tx: Tx) -> None:
        tx.enter("Calling")
        tx.send(tx.request)

    @s_calling.upon(I.timer_a).loop()
    def retransmit(m: I, tx: Tx, data: Retransmitting) -> None:
        data.resend = _start(tx, data.resend.interval * 2, m.timer_a)
        tx.send(tx.request)

    @s_calling.upon(I.provisional).to(s_proceeding)
    def ringing(m: I, tx: Tx, data: Retransmitting, r: SipResponse) -> None:
        data.leave()
        tx.enter("Proceeding")
        tx.last_response = r
        tx.user.response_received(tx, r)

    @s_proceeding.upon(I.provisional).loop()
    def more_ringing(m: I, tx: Tx, data: Waiting, r: SipResponse) -> None:
        tx.last_response = r
        tx.user.response_received(tx, r)

    @s_calling.upon(I.success).to(s_accepted)
    @s_proceeding.upon(I.success).to(s_accepted)
    def answered(m: I, tx: Tx, data: Held, r: SipResponse) -> None:
        data.leave()
        tx.enter("Accepted")
        tx.last_response = r
        tx.user.response_received(tx, r)

    @s_calling.upon(I.failure).to(s_completed)
    @s_proceeding.upon(I.failure).to(s_completed)
    def refused(m: I, tx: Tx, data: Held, r: SipResponse) -> None:
        data.leave()
        tx.enter("Completed")
        tx.last_response = r
        tx.send(ack_for(tx.request, r))
        tx.user.response_received(tx, r)

    @s_completed.upon(I.failure).loop()
    def refused_again(m: I, tx: Tx, data: Waiting, r: SipResponse) -> None:
        tx.send(ack_for(tx.request, r))  # the ACK was lost: send it again, tell nobody

    @s_accepted.upon(I.success).loop()
    def answered_again(m: I, tx: Tx, data: Waiting, r: SipResponse) -> None:
        tx.user.response_received(tx, r)  # the dialog ACKs each 2xx (§13.2.2.4)

    @s_calling.upon(I.timer_b).to(s_terminated)
    @s_proceeding.upon(I.guard).to(s_terminated)
    def timed_out(m: I, tx: Tx, data: Held) -> None:
        data.leave()
        tx.end()
        tx.user.transaction_failed(tx, "timeout")

    @s_calling.upon(I.transport_failed).to(s_terminated)
    @s_proceeding.upon(I.transport_failed).to(s_terminated)
    def failed(m: I, tx: Tx, data: Held) -> None:
        data.leave()
        tx.end()
        tx.user.transaction_failed(tx, "transport")

    @s_completed.upon(I.timer_d).to(s_terminated)
    @s_accepted.upon(I.timer_m).to(s_terminated)
    @s_completed.upon(I.transport_failed).to(s_terminated)
    @s_accepted.upon(I.transport_failed).to(s_terminated)
    def done(m: I, tx: Tx, data: Held) -> None:
        data.leave()
        tx.end()

    for state in (s_completed, s_accepted):
        state.upon(I.provisional).loop().returns(None)
    s_completed.upon(I.success).loop().returns(None)
    s_accepted.upon(I.failure).loop().returns(None)
    for name in ("provisional", "success", "failure"):
        s_terminated.upon(getattr(I, name)).loop().returns(None)
    s_terminated.upon(I.transport_failed).loop().returns(None)
    return builder.build()


# --------------------------------------------------------------------------- non-INVITE client


class NonInviteClientInputs(Protocol):
    """Inputs of the non-INVITE client transaction (§17.1.2)."""

    def start(self) -> None:
        """Send the request."""

    def provisional(self, response: SipResponse) -> None:
        """A 1xx."""

    def success(self, response: SipResponse) -> None:
        """A 2xx."""

    def failure(self, response: SipResponse) -> None:
        """A 300-699."""

    def timer_e(self) -> None:
        """Retransmit the request (unreliable transports)."""

    def timer_f(self) -> None:
        """No final answer in 64*T1."""

    def timer_k(self) -> None:
        """Done absorbing retransmitted finals."""

    def transport_failed(self) -> None:
        """The channel could not send."""


def _build_non_invite_client() -> Any:
    """Every state and transition of the non-INVITE client transaction."""
    I = NonInviteClientInputs  # noqa: E741
    Tx = ClientTransaction
    builder = TypeMachineBuilder(I, Tx)

    def trying(m: I, tx: Tx) -> Retransmitting:
        now = tx.layer.clock.seconds()
        tx.give_up_at = now + tx.timers.timeout
        resend = Slot()
        if not tx.reliable:
            resend = _start(tx, tx.timers.t1, m.timer_e)
            tx.next_retransmit_at = now + tx.timers.t1
        return Retransmitting(resend, _start(tx, tx.timers.timeout, m.timer_f))

    def proceeding(m: I, tx: Tx, r: SipResponse) -> Retransmitting:
        # E and F run on where Trying left them; from now on E fires every T2.
        now = tx.layer.clock.seconds()
        resend = Slot()
        if not tx.reliable:
            resend = _start(tx, tx.next_retransmit_at - now, m.timer_e)
            resend.interval = tx.timers.t2
        return Retransmitting(resend, _start(tx, tx.give_up_at - now, m.timer_f))

    def completed(m: I, tx: Tx, r: SipResponse) -> Waiting:
        return Waiting(_start(tx, 0 if tx.reliable else tx.timers.t4, m.timer_k))

    idle = builder.state("Idle")
    s_trying = builder.state("Trying", trying)
    s_proceeding = builder.state("Proceeding", proceeding)
    s_completed = builder.state("Completed", completed)
    s_terminated = builder.state("Terminated")

    @idle.upon(I.start).to(s_trying)
    def start(m: I, tx: Tx) -> None:
        tx.enter("Trying")
        tx.send(tx.request)

    @s_trying.upon(I.timer_e).loop()
    @s_proceeding.upon(I.timer_e).loop()
    def retransmit(m: I, tx: Tx, data: Retransmitting) -> None:
        interval = min(data.resend.interval * 2, tx.timers.t2)
        if tx.state == "Proceeding":
            interval = tx.timers.t2
        data.resend = _start(tx, interval, m.timer_e)
        tx.next_retransmit_at = tx.layer.clock.seconds() + interval
        tx.send(tx.request)

    @s_trying.upon(I.provisional).to(s_proceeding)
    def trying_answered(m: I, tx: Tx, data: Retransmitting, r: SipResponse) -> None:
        data.leave()
        tx.enter("Proceeding")
        tx.last_response = r
        tx.user.response_received(tx, r)

    @s_proceeding.upon(I.provisional).loop()
    def more_provisional(m: I, tx: Tx, data: Retransmitting, r: SipResponse) -> None:
        tx.last_response = r
        tx.user.response_received(tx, r)

    for final in (I.success, I.failure):

        @s_trying.upon(final).to(s_completed)
        @s_proceeding.upon(final).to(s_completed)
        def answered(m: I, tx: Tx, data: Retransmitting, r: SipResponse) -> None:
            data.leave()
            tx.enter("Completed")
            tx.last_response = r
            tx.user.response_received(tx, r)

        s_completed.upon(final).loop().returns(None)  # retransmitted finals: absorbed
        s_terminated.upon(final).loop().returns(None)

    @s_trying.upon(I.timer_f).to(s_terminated)
    @s_proceeding.upon(I.timer_f).to(s_terminated)
    def timed_out(m: I, tx: Tx, data: Retransmitting) -> None:
        data.leave()
        tx.end()
        tx.user.transaction_failed(tx, "timeout")

    @s_trying.upon(I.transport_failed).to(s_terminated)
    @s_proceeding.upon(I.transport_failed).to(s_terminated)
    def failed(m: I, tx: Tx, data: Retransmitting) -> None:
        data.leave()
        tx.end()
        tx.user.transaction_failed(tx, "transport")

    @s_completed.upon(I.timer_k).to(s_terminated)
    @s_completed.upon(I.transport_failed).to(s_terminated)
    def done(m: I, tx: Tx, data: Waiting) -> None:
        data.leave()
        tx.end()

    s_completed.upon(I.provisional).loop().returns(None)
    s_terminated.upon(I.provisional).loop().returns(None)
    s_terminated.upon(I.transport_failed).loop().returns(None)
    return builder.build()


# --------------------------------------------------------------------------- INVITE server


class InviteServerInputs(Protocol):
    """Inputs of the INVITE server transaction (§17.2.1, RFC 6026 §7.1)."""

    def start(self) -> None:
        """The INVITE arrived: answer 100 Trying at once (devices retransmit until they see it)."""

    def again(self) -> None:
        """The INVITE arrived again."""

    def provisional(self, response: SipResponse) -> None:
        """The TU answers 1xx."""

    def success(self, response: SipResponse) -> None:
        """The TU answers 2xx (again: the TU retransmits it until the ACK, §13.3.1.4)."""

    def failure(self, response: SipResponse) -> None:
        """The TU answers 300-699."""

    def ack(self, ack: SipRequest) -> None:
        """An ACK matched this transaction."""

    def timer_g(self) -> None:
        """Retransmit the failure (unreliable transports)."""

    def timer_h(self) -> None:
        """No ACK in 64*T1."""

    def timer_i(self) -> None:
        """Done absorbing ACKs."""

    def timer_l(self) -> None:
        """Done absorbing INVITE retransmissions after the 2xx (RFC 6026)."""

    def transport_failed(self) -> None:
        """The channel could not send."""


def _build_invite_server() -> Any:
    """Every state and transition of the INVITE server transaction."""
    I = InviteServerInputs  # noqa: E741
    Tx = ServerTransaction
    builder = TypeMachineBuilder(I, Tx)

    def completed(m: I, tx: Tx, r: SipResponse) -> Retransmitting:
        resend = Slot() if tx.reliable else _start(tx, tx.timers.t1, m.timer_g)
        return Retransmitting(resend, _start(tx, tx.timers.timeout, m.timer_h))

    def confirmed(m: I, tx: Tx, ack: SipRequest) -> Waiting:
        return Waiting(_start(tx, 0 if tx.reliable else tx.timers.t4, m.timer_i))

    def accepted(m: I, tx: Tx, r: SipResponse) -> Waiting:
        return Waiting(_start(tx, tx.timers.timeout, m.timer_l))

    idle = builder.state("Idle")
    s_proceeding = builder.state("Proceeding")
    s_completed = builder.state("Completed", completed)
    s_confirmed = builder.state("Confirmed", confirmed)
    s_accepted = builder.state("Accepted", accepted)
    s_terminated = builder.state("Terminated")

    @idle.upon(I.start).to(s_proceeding)
    def start(m: I, tx: Tx) -> None:
        tx.enter("Proceeding")
        tx.last_response = response_for(tx.request, 100)
        tx.send(tx.last_response)

    @s_proceeding.upon(I.again).loop()
    @s_completed.upon(I.again, nodata=True).loop()
    @s_accepted.upon(I.again, nodata=True).loop()
    def resend_last(m: I, tx: Tx) -> None:
        assert tx.last_response is not None
        tx.send(tx.last_response)

    @s_proceeding.upon(I.provisional).loop()
    def ringing(m: I, tx: Tx, r: SipResponse) -> None:
        tx.last_response = r
        tx.send(r)

    @s_proceeding.upon(I.success).to(s_accepted)
    def answered(m: I, tx: Tx, r: SipResponse) -> None:
        tx.enter("Accepted")
        tx.last_response = r
        tx.send(r)

    @s_accepted.upon(I.success).loop()
    def answered_again(m: I, tx: Tx, data: Waiting, r: SipResponse) -> None:
        if r == tx.last_response:
            tx.send(r)  # the TU's 2xx retransmission passes through (RFC 6026 §7.1)
        else:
            tx.drop(r)

    @s_accepted.upon(I.ack).loop()
    def ack_to_2xx(m: I, tx: Tx, data: Waiting, ack: SipRequest) -> None:
        tx.layer.user.ack_received(ack, tx.channel)

    @s_proceeding.upon(I.failure).to(s_completed)
    def refused(m: I, tx: Tx, r: SipResponse) -> None:
        tx.enter("Completed")
        tx.last_response = r
        tx.send(r)

    @s_completed.upon(I.timer_g).loop()
    def retransmit(m: I, tx: Tx, data: Retransmitting) -> None:
        data.resend = _start(tx, min(data.resend.interval * 2, tx.timers.t2), m.timer_g)
        assert tx.last_response is not None
        tx.send(tx.last_response)

    @s_completed.upon(I.ack).to(s_confirmed)
    def acknowledged(m: I, tx: Tx, data: Retransmitting, ack: SipRequest) -> None:
        data.leave()
        tx.enter("Confirmed")

    @s_completed.upon(I.timer_h).to(s_terminated)
    def never_acknowledged(m: I, tx: Tx, data: Retransmitting) -> None:
        data.leave()
        tx.end()
        tx.layer.user.transaction_failed(tx, "no-ack")

    @s_proceeding.upon(I.transport_failed).to(s_terminated)
    def failed(m: I, tx: Tx) -> None:
        tx.end()
        tx.layer.user.transaction_failed(tx, "transport")

    @s_confirmed.upon(I.timer_i).to(s_terminated)
    @s_accepted.upon(I.timer_l).to(s_terminated)
    @s_completed.upon(I.transport_failed).to(s_terminated)
    @s_confirmed.upon(I.transport_failed).to(s_terminated)
    @s_accepted.upon(I.transport_failed).to(s_terminated)
    def done(m: I, tx: Tx, data: Held) -> None:
        data.leave()
        tx.end()

    @s_completed.upon(I.provisional, nodata=True).loop()
    @s_completed.upon(I.success, nodata=True).loop()
    @s_completed.upon(I.failure, nodata=True).loop()
    @s_confirmed.upon(I.provisional, nodata=True).loop()
    @s_confirmed.upon(I.success, nodata=True).loop()
    @s_confirmed.upon(I.failure, nodata=True).loop()
    @s_accepted.upon(I.provisional, nodata=True).loop()
    @s_accepted.upon(I.failure, nodata=True).loop()
    @s_terminated.upon(I.provisional).loop()
    @s_terminated.upon(I.success).loop()
    @s_terminated.upon(I.failure).loop()
    def answered_twice(m: I, tx: Tx, r: SipResponse) -> None:
        tx.drop(r)

    s_proceeding.upon(I.ack).loop().returns(None)  # an ACK before any final: nonsense, ignored
    s_confirmed.upon(I.again, nodata=True).loop().returns(None)
    s_confirmed.upon(I.ack, nodata=True).loop().returns(None)
    for name in ("again", "ack", "transport_failed"):
        s_terminated.upon(getattr(I, name)).loop().returns(None)
    return builder.build()


# --------------------------------------------------------------------------- non-INVITE server


class NonInviteServerInputs(Protocol):
    """Inputs of the non-INVITE server transaction (§17.2.2)."""

    def again(self) -> None:
        """The request arrived again."""

    def provisional(self, response: SipResponse) -> None:
        """The TU answers 1xx."""

    def success(self, response: SipResponse) -> None:
        """The TU answers 2xx."""

    def failure(self, response: SipResponse) -> None:
        """The TU answers 300-699."""

    def timer_j(self) -> None:
        """Done absorbing retransmitted requests."""

    def transport_failed(self) -> None:
        """The channel could not send."""


def _build_non_invite_server() -> Any:
    """Every state and transition of the non-INVITE server transaction."""
    I = NonInviteServerInputs  # noqa: E741
    Tx = ServerTransaction
    builder = TypeMachineBuilder(I, Tx)

    def completed(m: I, tx: Tx, r: SipResponse) -> Waiting:
        return Waiting(_start(tx, 0 if tx.reliable else tx.timers.timeout, m.timer_j))

    s_trying = builder.state("Trying")
    s_proceeding = builder.state("Proceeding")
    s_completed = builder.state("Completed", completed)
    s_terminated = builder.state("Terminated")

    s_trying.upon(I.again).loop().returns(None)  # nothing to answer with yet: absorbed

    @s_proceeding.upon(I.again).loop()
    @s_completed.upon(I.again, nodata=True).loop()
    def resend_last(m: I, tx: Tx) -> None:
        assert tx.last_response is not None
        tx.send(tx.last_response)

    @s_trying.upon(I.provisional).to(s_proceeding)
    @s_proceeding.upon(I.provisional).loop()
    def provisional(m: I, tx: Tx, r: SipResponse) -> None:
        tx.enter("Proceeding")
        tx.last_response = r
        tx.send(r)

    for final in (I.success, I.failure):

        @s_trying.upon(final).to(s_completed)
        @s_proceeding.upon(final).to(s_completed)
        def answered(m: I, tx: Tx, r: SipResponse) -> None:
            tx.enter("Completed")
            tx.last_response = r
            tx.send(r)

    @s_completed.upon(I.provisional, nodata=True).loop()
    @s_completed.upon(I.success, nodata=True).loop()
    @s_completed.upon(I.failure, nodata=True).loop()
    @s_terminated.upon(I.provisional).loop()
    @s_terminated.upon(I.success).loop()
    @s_terminated.upon(I.failure).loop()
    def answered_twice(m: I, tx: Tx, r: SipResponse) -> None:
        tx.drop(r)

    @s_trying.upon(I.transport_failed).to(s_terminated)
    @s_proceeding.upon(I.transport_failed).to(s_terminated)
    def failed(m: I, tx: Tx) -> None:
        tx.end()
        tx.layer.user.transaction_failed(tx, "transport")

    @s_completed.upon(I.timer_j).to(s_terminated)
    @s_completed.upon(I.transport_failed).to(s_terminated)
    def done(m: I, tx: Tx, data: Waiting) -> None:
        data.leave()
        tx.end()

    s_terminated.upon(I.again).loop().returns(None)
    s_terminated.upon(I.transport_failed).loop().returns(None)
    return builder.build()


_INVITE_CLIENT = _build_invite_client()
_NON_INVITE_CLIENT = _build_non_invite_client()
_INVITE_SERVER = _build_invite_server()
_NON_INVITE_SERVER = _build_non_invite_server()


# --------------------------------------------------------------------------- the layer


class TransactionLayer:
    """The transactions of one SIP stack: matches what arrives, starts what the TU sends."""

    def __init__(
        self,
        clock: IReactorTime,
        user: ServerUser,
        timers: Timers | None = None,
        *,
        max_server_transactions: int = MAX_SERVER_TRANSACTIONS,
    ) -> None:
        self.clock = clock
        self.user = user
        self.timers = timers or Timers()
        self.max_server_transactions = max_server_transactions
        self.servers: dict[Key, ServerTransaction] = {}
        self.clients: dict[Key, ClientTransaction] = {}
        self.refused_busy = 0
        """New requests answered 503 because the server transaction table was full."""

    def receive(self, message: SipMessage, channel: Channel) -> None:
        """A parsed message came in on ``channel``: to its transaction, or to the TU as new."""
        if isinstance(message, SipResponse):
            client = self.clients.get(client_key(message))
            if client is None:
                self.user.response_unmatched(message, channel)
            else:
                client.deliver(message)
            return
        key = server_key(message)
        server = self.servers.get(key)
        if message.method == "ACK":
            if server is not None and server.invite:
                server.machine.ack(message)
            else:
                self.user.ack_received(message, channel)
            return
        if server is not None:
            server.machine.again()
            return
        if len(self.servers) >= self.max_server_transactions:
            self._refuse_busy(message, channel)
            return
        server = ServerTransaction(self, key, message, channel)
        self.servers[key] = server
        if message.method == "INVITE":
            server.machine = _INVITE_SERVER(server)
            server.machine.start()
        else:
            server.machine = _NON_INVITE_SERVER(server)
            server.enter("Trying")
        if not server.terminated:  # the 100 Trying may already have failed to go out
            self.user.request_received(server, message)

    def _refuse_busy(self, req: SipRequest, channel: Channel) -> None:
        """A flood filled the table: 503 with Retry-After, statelessly (§8.2.6, §21.5.4)."""
        self.refused_busy += 1
        if self.refused_busy & (self.refused_busy - 1) == 0:  # 1st, 2nd, 4th, 8th...: one line
            _log.warn(
                "SIP server transactions at their cap of {cap}: new requests get 503 "
                "({count} so far)",
                cap=self.max_server_transactions,
                count=self.refused_busy,
            )
        with contextlib.suppress(OSError):
            channel.send(response_for(req, 503, headers=[("Retry-After", "5")]))

    def send_request(
        self, req: SipRequest, channel: Channel, user: ClientUser
    ) -> ClientTransaction:
        """Start a client transaction for ``req`` (its top Via carries a fresh branch)."""
        if req.method == "ACK":
            raise ValueError("an ACK is not a transaction: send it on the channel")
        key = client_key(req)
        if key in self.clients:
            raise ValueError(f"a client transaction with branch {key[0]} already runs")
        client = ClientTransaction(self, key, req, channel, user=user)
        self.clients[key] = client
        machine = _INVITE_CLIENT if req.method == "INVITE" else _NON_INVITE_CLIENT
        client.machine = machine(client)
        client.machine.start()
        return client

    def find_invite(self, cancel: SipRequest) -> ServerTransaction | None:
        """The INVITE server transaction a CANCEL is for (§9.2: same key, method INVITE)."""
        key = server_key(cancel)
        at = 4 if key[0] == "2543" else 3
        return self.servers.get((*key[:at], "INVITE", *key[at + 1 :]))

    def _forget(self, transaction: Transaction) -> None:
        table: dict[Key, Any] = (
            self.clients if isinstance(transaction, ClientTransaction) else self.servers
        )
        if table.get(transaction.key) is transaction:
            del table[transaction.key]

    def shutdown(self) -> None:
        """Stop: every transaction ends where it is, its timers cancelled, nothing sent."""
        held = [*self.servers.values(), *self.clients.values()]
        self.servers.clear()
        self.clients.clear()
        for tx in held:
            for call in tx.pending_timers():
                call.cancel()
            tx.state = "Terminated"
            tx.terminated = True

    def pending_timers(self) -> list[IDelayedCall]:
        """Every timer the live transactions hold."""
        held = [*self.servers.values(), *self.clients.values()]
        return [call for tx in held for call in tx.pending_timers()]
