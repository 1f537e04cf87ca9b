"""Where the broadcast and talk flows meet the SIP platform: one invite handler for both.

:class:`~gb28181talk.sip.platform.SipPlatform` tells one ``invite_handler`` of
every INVITE, CANCEL and dialog; :class:`CallFlows` is that handler and hands
each event to the flow that owns the call (by Call-ID), a new INVITE to the
first flow that takes it (a broadcast waiting for that device), else 403.
:class:`PlatformPort` is all the flows ask of the platform.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from gb28181talk.sip.dialog import Dialog, DialogLayer, new_tag
from gb28181talk.sip.message import SipRequest, SipResponse, response_for
from gb28181talk.sip.transaction import Channel, ServerTransaction

_log = Logger()

AUDIO_OUTPUT_TYPE = "137"
"""Type code (digits 11-13 of a GB28181 ID) of a voice output channel: the broadcast target."""


def audio_output(channel_ids: Iterable[str]) -> str | None:
    """The first voice output channel (type 137) among a catalog's channel ids, if any."""
    for channel_id in channel_ids:
        if len(channel_id) == 20 and channel_id[10:13] == AUDIO_OUTPUT_TYPE:
            return channel_id
    return None


class PlatformPort(Protocol):
    """What the flows ask of the SIP platform (``SipPlatform`` provides it)."""

    platform_id: str
    layer: DialogLayer

    def locate(self, device_id: str) -> Any:
        """The registered device's route (``channel``, ``uri``), or None."""

    def add_message_handler(self, cmd_type: str, handler: Callable[[Any], int | None]) -> None:
        """Call ``handler(IncomingMessage)`` for each MANSCDP MESSAGE of ``cmd_type``."""

    def send_message(self, device_id: str, body: bytes) -> Deferred[SipResponse]:
        """A MANSCDP MESSAGE to the device; fires with its final answer."""

    def send_request(self, device_id: str, method: str, **options: Any) -> Deferred[SipResponse]:
        """Any request outside a dialog (our talk INVITE); fires with the final answer."""

    def contact_for(self, channel: Channel) -> str:
        """Our Contact URI on ``channel``."""

    def dialog_for(self, resp: SipResponse) -> Dialog | None:
        """The dialog a 2xx to our INVITE made."""


class CallFlow(Protocol):
    """A flow that owns calls: broadcast (the device's INVITE) or talk (ours)."""

    def owns(self, call_id: str) -> bool:
        """Whether the call is one of this flow's."""

    def invite_received(self, transaction: ServerTransaction, invite: SipRequest) -> bool:
        """A new INVITE: True if this flow took it (and answered it)."""

    def invite_cancelled(self, transaction: ServerTransaction, cancel: SipRequest) -> None:
        """The device cancelled its INVITE (it got 487)."""

    def dialog_confirmed(self, dialog: Dialog) -> None:
        """The call's dialog is confirmed (ACK in, or our ACK out)."""

    def dialog_ended(self, dialog: Dialog, reason: str) -> None:
        """The call's dialog ended: ``bye``, ``local-bye``, ``no-ack``, ``cancelled``."""


class CallFlows:
    """The platform's ``invite_handler``: each call's events to the flow that owns it."""

    def __init__(self, *flows: CallFlow) -> None:
        self.flows = list(flows)

    def add(self, flow: CallFlow) -> None:
        """Hand this flow the events of its calls too."""
        self.flows.append(flow)

    def _owner(self, call_id: str) -> CallFlow | None:
        for flow in self.flows:
            if flow.owns(call_id):
                return flow
        return None

    def invite_received(self, transaction: ServerTransaction, invite: SipRequest) -> None:
        """The owner's (a repeated INVITE), else the first flow that takes it, else 403."""
        owner = self._owner(invite.call_id)
        candidates = [owner] if owner is not None else self.flows
        for flow in candidates:
            if flow.invite_received(transaction, invite):
                return
        _log.info("SIP INVITE {call_id}: no broadcast was asked of this caller; 403",
                  call_id=invite.call_id)
        transaction.respond(response_for(invite, 403, "No Broadcast Asked Of This Device",
                                         to_tag=new_tag()))

    def invite_cancelled(self, transaction: ServerTransaction, cancel: SipRequest) -> None:
        """To the call's flow."""
        owner = self._owner(cancel.call_id)
        if owner is not None:
            owner.invite_cancelled(transaction, cancel)

    def dialog_confirmed(self, dialog: Dialog) -> None:
        """To the call's flow."""
        owner = self._owner(dialog.call_id)
        if owner is not None:
            owner.dialog_confirmed(dialog)

    def dialog_ended(self, dialog: Dialog, reason: str) -> None:
        """To the call's flow."""
        owner = self._owner(dialog.call_id)
        if owner is not None:
            owner.dialog_ended(dialog, reason)
