"""The GB28181 platform's SIP request dispatcher: one TU over our transactions and dialogs.

:class:`SipPlatform` is the :class:`~gb28181talk.sip.dialog.DialogUser` of one
:class:`~gb28181talk.sip.dialog.DialogLayer`; the transports feed
``platform.transactions`` (its ``receive``).  It routes what devices send:

* ``REGISTER`` -> ``platform.register_handler(transaction, request)`` (the
  registry, :mod:`gb28181talk.sip.registry`, plugs itself in); none: 501;
* ``MESSAGE`` with a MANSCDP body -> the handler added for its CmdType with
  :meth:`SipPlatform.add_message_handler` (``"Keepalive"``, ``"Catalog"``,
  ``"Broadcast"``..., matched case-insensitively).  A handler is called
  ``handler(message: IncomingMessage)`` and returns the status to answer
  (``None`` = 200); an exception there answers 500.  A CmdType nobody handles
  gets 200 (devices send Alarm, MobilePosition...); an unreadable body 400;
* ``INVITE`` (new or re-INVITE), CANCEL news, dialog confirmed/ended ->
  ``platform.invite_handler`` (an :class:`InviteHandler`: the broadcast and
  talk flows).  With no handler a new INVITE gets 480;
* ``OPTIONS`` -> 200; BYE, ACK, CANCEL and 481s are the dialog layer's.

Requests from the platform go to where the device's requests came from (the
channel its REGISTER or keepalive used: the UDP source address through its
NAT, or its TCP connection), found with ``platform.locate(device_id)``, which
the registry sets:

* :meth:`SipPlatform.send_message` ``(device_id, body)`` -> Deferred firing
  with the device's final :class:`SipResponse` (any status);
* :meth:`SipPlatform.send_request` ``(device_id, method, body=..., headers=...,
  content_type=...)`` -> the same, for any method (an ``INVITE`` makes a dialog:
  ``invite_handler.dialog_confirmed`` is told, and :meth:`SipPlatform.dialog_for`
  finds it from the 2xx).  Errback :class:`RequestFailed` (``reason``:
  ``unknown-device``, ``timeout``, ``transport``) when no final answer comes;
* :meth:`SipPlatform.contact_for` ``(channel)`` -> our Contact URI on that
  channel (advertised address, the channel's local port); ``platform.layer``
  is the dialog layer (``answer``, ``bye``, ``cancel``).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gb28181talk.errors import ManscdpError, SignallingError
from gb28181talk.signalling.catalog import Command, read_command
from gb28181talk.sip.dialog import Dialog, DialogLayer, new_tag
from gb28181talk.sip.message import SipRequest, SipResponse, SipUri, request, response_for
from gb28181talk.sip.transaction import (
    Channel,
    ClientTransaction,
    ServerTransaction,
    Timers,
    TransactionLayer,
)
from gb28181talk.sip.transport import via_for

_log = Logger()

MANSCDP_TYPE = "Application/MANSCDP+xml"
"""The Content-Type of GB28181 MESSAGE bodies."""


class RequestFailed(SignallingError):
    """A platform request got no final answer: ``reason`` is why."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Route:
    """Where a registered device is reached: its channel and the URI of requests to it."""

    device_id: str
    channel: Channel
    uri: str
    """Request-URI: ``sip:<id>@<where its requests came from>``."""


@dataclass(frozen=True)
class IncomingMessage:
    """A MESSAGE from a device, its MANSCDP envelope read: what a message handler gets."""

    transaction: ServerTransaction
    request: SipRequest
    command: Command
    device_id: str
    """The sender's id: the From URI's user part (the body's DeviceID may name a channel)."""

    @property
    def body(self) -> bytes:
        """The MANSCDP body, as sent (parse it with ``signalling.manscdp`` or ``catalog``)."""
        return self.request.body

    @property
    def channel(self) -> Channel:
        """Where the MESSAGE came from (the device's current path to us)."""
        return self.transaction.channel


MessageHandler = Callable[[IncomingMessage], "int | None"]


class InviteHandler(Protocol):
    """The broadcast/talk flows: INVITEs and the dialogs they make."""

    def invite_received(self, transaction: ServerTransaction, invite: SipRequest) -> None:
        """A new INVITE (or re-INVITE): answer with ``platform.layer.answer`` or a failure."""

    def invite_cancelled(self, transaction: ServerTransaction, cancel: SipRequest) -> None:
        """The device cancelled its INVITE (it already got 487)."""

    def dialog_confirmed(self, dialog: Dialog) -> None:
        """Our 2xx was ACKed, or our INVITE's 2xx was (we ACKed it)."""

    def dialog_ended(self, dialog: Dialog, reason: str) -> None:
        """``bye``, ``local-bye``, ``no-ack``, ``cancelled``."""


def sender_id(req: SipRequest) -> str:
    """The user part of the From URI (a GB28181 device's 20-digit id), or ''."""
    try:
        return SipUri.parse(req.from_.uri).user or ""
    except SignallingError:
        return ""


def _local_port(channel: Any) -> int | None:
    """The local port of a channel's socket (UDP endpoint or TCP connection), if it has one."""
    transport = getattr(getattr(channel, "endpoint", None), "transport", None)
    if transport is None:
        transport = getattr(channel, "transport", None)
    try:
        return int(transport.getHost().port) if transport is not None else None
    except (AttributeError, TypeError, ValueError):
        return None


class SipPlatform:
    """The platform's TU: routes devices' requests, sends the platform's, NAT-aware."""

    def __init__(
        self,
        clock: IReactorTime,
        *,
        platform_id: str,
        domain: str,
        advertise: str,
        port: int = 5060,
        timers: Timers | None = None,
    ) -> None:
        """``advertise`` is the address in our Via/Contact; ``port`` the default SIP port."""
        self.clock = clock
        self.platform_id = platform_id
        self.domain = domain
        self.advertise = advertise
        self.port = port
        self.layer = DialogLayer(clock, self, via=self.via_for, timers=timers)
        self.register_handler: Callable[[ServerTransaction, SipRequest], None] | None = None
        self.invite_handler: InviteHandler | None = None
        self.locate: Callable[[str], Route | None] = lambda device_id: None
        self._handlers: dict[str, MessageHandler] = {}
        self._waiting: dict[ClientTransaction, Deferred[SipResponse]] = {}
        self._cseq = itertools.count(int.from_bytes(os.urandom(2), "big") + 1)

    @property
    def transactions(self) -> TransactionLayer:
        """What the transports feed (``listen_sip(reactor, endpoint, platform.transactions)``)."""
        return self.layer.transactions

    # ---------------------------------------------------------------- our addresses
    def via_for(self, channel: Channel) -> str:
        """A Via for a request we send on ``channel``: advertised host, the channel's port."""
        return via_for(channel, self.advertise, _local_port(channel) or self.port)

    def contact_for(self, channel: Channel) -> str:
        """Our Contact URI on ``channel``."""
        port = _local_port(channel) or self.port
        return f"sip:{self.platform_id}@{self.advertise}:{port}"

    @property
    def uri(self) -> str:
        """``sip:<platform id>@<domain>``: our From, and the To of devices' requests."""
        return f"sip:{self.platform_id}@{self.domain}"

    # ---------------------------------------------------------------- routing requests
    def add_message_handler(self, cmd_type: str, handler: MessageHandler) -> None:
        """Route MESSAGEs of ``cmd_type`` (any case) to ``handler``; replaces an earlier one."""
        self._handlers[cmd_type.lower()] = handler

    def request_received(self, transaction: ServerTransaction, req: SipRequest) -> None:
        """A request outside an INVITE: REGISTER, MESSAGE, OPTIONS, in-dialog INFO..."""
        if req.method == "REGISTER":
            if self.register_handler is None:
                transaction.respond(response_for(req, 501, to_tag=new_tag()))
            else:
                self.register_handler(transaction, req)
        elif req.method == "MESSAGE":
            self._message(transaction, req)
        elif req.method == "OPTIONS":
            transaction.respond(response_for(req, 200, to_tag=new_tag()))
        else:
            allow = "INVITE, ACK, BYE, CANCEL, REGISTER, MESSAGE, OPTIONS"
            refusal = response_for(req, 405, to_tag=new_tag(), headers=[("Allow", allow)])
            transaction.respond(refusal)

    def _message(self, transaction: ServerTransaction, req: SipRequest) -> None:
        device_id = sender_id(req)
        try:
            command = read_command(req.body)
        except ManscdpError as e:
            _log.info("SIP MESSAGE from {device} refused (400): {error}", device=device_id, error=e)
            transaction.respond(response_for(req, 400, to_tag=new_tag()))
            return
        handler = self._handlers.get(command.cmd_type.lower())
        status: int | None = None
        if handler is None:
            _log.debug("SIP MESSAGE {root}/{cmd} from {device}: no handler, 200",
                       root=command.root, cmd=command.cmd_type, device=device_id)
        else:
            try:
                status = handler(IncomingMessage(transaction, req, command, device_id))
            except Exception:
                _log.failure("SIP MESSAGE {cmd} from {device}: handler failed",
                             cmd=command.cmd_type, device=device_id)
                status = 500
        if not transaction.terminated and transaction.state == "Trying":
            transaction.respond(response_for(req, status or 200, to_tag=new_tag()))

    def invite_received(self, transaction: ServerTransaction, invite: SipRequest) -> None:
        """To the invite handler; 480 when none is plugged in."""
        if self.invite_handler is None:
            transaction.respond(response_for(invite, 480, to_tag=new_tag()))
            return
        self.invite_handler.invite_received(transaction, invite)

    def invite_cancelled(self, transaction: ServerTransaction, cancel: SipRequest) -> None:
        """To the invite handler."""
        if self.invite_handler is not None:
            self.invite_handler.invite_cancelled(transaction, cancel)

    def dialog_confirmed(self, dialog: Dialog) -> None:
        """To the invite handler."""
        if self.invite_handler is not None:
            self.invite_handler.dialog_confirmed(dialog)

    def dialog_ended(self, dialog: Dialog, reason: str) -> None:
        """To the invite handler."""
        if self.invite_handler is not None:
            self.invite_handler.dialog_ended(dialog, reason)

    # ---------------------------------------------------------------- our requests
    def send_message(
        self, device_id: str, body: bytes, content_type: str = MANSCDP_TYPE
    ) -> Deferred[SipResponse]:
        """MESSAGE ``body`` to a registered device; fires with its final response."""
        return self.send_request(device_id, "MESSAGE", body=body, content_type=content_type)

    def send_request(
        self,
        device_id: str,
        method: str,
        *,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
        content_type: str | None = None,
        to_uri: str | None = None,
    ) -> Deferred[SipResponse]:
        """A request outside any dialog to a registered device; fires with its final response.

        ``To`` is ``sip:<device_id>@<domain>`` unless ``to_uri`` says (a channel id, for a
        talk INVITE); an INVITE also carries our Contact.
        """
        route = self.locate(device_id)
        if route is None:
            return fail(RequestFailed("unknown-device", f"{device_id} is not registered"))
        lines: list[tuple[str, str]] = [
            ("Via", self.via_for(route.channel)),
            ("From", f"<{self.uri}>;tag={new_tag()}"),
            ("To", f"<{to_uri or f'sip:{device_id}@{self.domain}'}>"),
            ("Call-ID", f"{new_tag()}@{self.advertise}"),
            ("CSeq", f"{next(self._cseq)} {method}"),
            ("Max-Forwards", "70"),
        ]
        if method == "INVITE":
            lines.append(("Contact", f"<{self.contact_for(route.channel)}>"))
        lines += list(headers)
        if content_type is not None:
            lines.append(("Content-Type", content_type))
        req = request(method, route.uri, lines, body)
        done: Deferred[SipResponse] = Deferred()
        try:
            transaction = self.layer.send(req, route.channel)
        except OSError as e:
            return fail(RequestFailed("transport", str(e)))
        if transaction.terminated:
            return fail(RequestFailed("transport", f"{method} to {device_id} could not be sent"))
        self._waiting[transaction] = done
        return done

    def response_received(self, transaction: ClientTransaction, resp: SipResponse) -> None:
        """A final answer fires the request's Deferred; provisionals are ignored."""
        if resp.provisional:
            return
        done = self._waiting.pop(transaction, None)
        if done is not None:
            done.callback(resp)

    def request_failed(self, transaction: ClientTransaction, reason: str) -> None:
        """No final answer (timeout, transport): the request's Deferred fails."""
        done = self._waiting.pop(transaction, None)
        if done is not None:
            done.errback(RequestFailed(reason, transaction.request.method))

    def dialog_for(self, resp: SipResponse) -> Dialog | None:
        """The dialog a 2xx to our INVITE made (None once it ended)."""
        key = (resp.call_id, resp.from_.tag or "", resp.to.tag or "")
        return self.layer.dialogs.get(key)

    @property
    def pending(self) -> int:
        """Platform requests still waiting for their final answer."""
        return len(self._waiting)

    def shutdown(self) -> None:
        """Stop: transactions end where they are; waiting requests fail with ``shutdown``."""
        self.transactions.shutdown()
        waiting, self._waiting = self._waiting, {}
        for done in waiting.values():
            done.errback(RequestFailed("shutdown"))
