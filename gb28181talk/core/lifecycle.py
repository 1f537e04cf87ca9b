"""The talk session's lifecycle as one explicit machine: listening -> streaming -> closed.

Built with Automat's ``TypeMachineBuilder`` the way Twisted's own
``ClientService`` is: the inputs are the methods of :class:`LifecycleInputs`,
what every state shares lives in :class:`SessionCore`, and what exists only
in one state is held by that state's data: :class:`Listening` holds the wait
timer and the transport still waiting for a device, :class:`Streaming` the
device link and the send-stall timer.  Each state lets go of its own things
in one place (``leave``), whichever way it is left.  Every transition is
declared in :func:`_build`, in one table; :func:`new_lifecycle` makes one.

``Idle`` (constructed, not started) --start--> ``Listening``
--device_connected--> ``Streaming``; ``Idle``, ``Listening`` and ``Streaming``
--end--> ``Closed``.  :meth:`SessionCore.end` claims the one
:class:`EndReason` first, so an ending happens exactly once however many
parts ask for it.  Nothing here is read per packet: the sender and the
receiver are told once, on the transitions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from automat import TypeMachineBuilder
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from gb28181talk.core.params import EndReason, SessionParams, SessionState
from gb28181talk.core.receiver import Receiver
from gb28181talk.core.sender import Sender
from gb28181talk.core.transport import IDeviceLink, ITalkTransport
from gb28181talk.interfaces import IAudioSource

_ABORTING = frozenset({EndReason.SEND_STALLED, EndReason.ERROR})
"""Endings after which unsent bytes are dropped, not drained."""


class LifecycleInputs(Protocol):
    """What can happen to a talk session: the machine's inputs."""

    def start(self) -> None:
        """The session is started: its transport waits for the device."""

    def device_connected(self, link: IDeviceLink) -> None:
        """The transport delivered the device."""

    def send_stalled(self) -> None:
        """The device stopped reading; the link drops packets."""

    def send_drained(self) -> None:
        """The device reads again."""

    def end(self) -> None:
        """End now, with the reason already claimed in the core."""


@dataclass(eq=False)
class SessionCore:
    """What every state of one talk session shares: its parts and its public figures."""

    session: Any
    params: SessionParams
    source: IAudioSource
    reactor: IReactorTime
    pacer: Any
    observer: Any
    transport: ITalkTransport
    sender: Sender = field(init=False)
    receiver: Receiver = field(init=False)
    state: SessionState = SessionState.LISTENING
    end_reason: EndReason | None = None
    end_detail: str = ""
    created_at: float = 0.0
    connected_at: float | None = None
    ended_at: float | None = None
    peer: tuple[str, int] | None = None
    machine: LifecycleInputs | None = field(default=None, repr=False)

    def claim_end(self, reason: EndReason, detail: str) -> bool:
        """Take ``reason`` as the one ending; False if the session already has one (or failed)."""
        if self.end_reason is not None or self.state is SessionState.CLOSED:
            return False
        self.end_reason = reason
        self.end_detail = detail
        return True

    def end(self, reason: EndReason, detail: str = "") -> bool:
        """Closed, with ``reason``; False if the session had already ended (or is ending)."""
        if not self.claim_end(reason, detail):
            return False
        assert self.machine is not None
        self.machine.end()
        return True

    def wait_expired(self) -> None:
        """The wait timer: no device came."""
        self.end(
            EndReason.TIMEOUT,
            f"no device connected to port {self.transport.port} "
            f"within {self.params.wait_timeout:g} s",
        )

    def stall_expired(self) -> None:
        """The stall timer: the device read nothing for the whole stall timeout."""
        params = self.params
        self.end(
            EndReason.SEND_STALLED,
            f"the device read nothing for {params.stall_timeout:g} s "
            f"with {params.max_send_buffer} bytes waiting",
        )

    def close(self) -> None:
        """What every ending does after its state let go of its own: the shared parts."""
        self.state = SessionState.CLOSED
        self.ended_at = self.reactor.seconds()
        self.pacer.detach(self.source, self.sender)
        self.sender.stop()
        self.receiver.stop()
        assert self.end_reason is not None
        self.observer.session_ended(self.session, str(self.end_reason), self.session.stats)
        # Let go of everything that points back at the session (the session keeps its own
        # references to its parts, so its views still work): an ended session is then freed
        # by reference counting at once, not left to the cyclic collector as ~20 objects.
        self.session = None
        self.sender = self.receiver = None  # type: ignore[assignment]
        self.machine = None


@dataclass(eq=False)
class Listening:
    """While the transport waits for the device: the wait timer (and the transport's hold)."""

    transport: ITalkTransport
    wait: IDelayedCall

    def leave(self) -> None:
        """Cancel the wait timer and stop waiting (the transport returns its lease)."""
        if self.wait.active():
            self.wait.cancel()
        self.transport.close()


@dataclass(eq=False)
class Streaming:
    """While the device is connected: its link and, if it stopped reading, the stall timer."""

    link: IDeviceLink
    stall: IDelayedCall | None = None

    def leave(self, reason: EndReason) -> None:
        """Cancel the stall timer and close the link (abort if the ending calls for it)."""
        self.drained()
        self.link.close(abort=reason in _ABORTING)

    def drained(self) -> None:
        """Cancel the stall timer, if one runs."""
        stall, self.stall = self.stall, None
        if stall is not None and stall.active():
            stall.cancel()


def _listening(machine: LifecycleInputs, core: SessionCore) -> Listening:
    wait = core.reactor.callLater(core.params.wait_timeout, core.wait_expired)
    return Listening(core.transport, wait)


def _streaming(machine: LifecycleInputs, core: SessionCore, link: IDeviceLink) -> Streaming:
    return Streaming(link)


def _build() -> Any:
    """Every state and transition of the talk session, in one place."""
    builder = TypeMachineBuilder(LifecycleInputs, SessionCore)
    idle = builder.state("Idle")
    listening = builder.state("Listening", _listening)
    streaming = builder.state("Streaming", _streaming)
    closed = builder.state("Closed")

    @idle.upon(LifecycleInputs.start).to(listening)
    def started(machine: LifecycleInputs, core: SessionCore) -> None:
        core.observer.session_started(core.session)

    @listening.upon(LifecycleInputs.device_connected).to(streaming)
    def connected(
        machine: LifecycleInputs, core: SessionCore, waiting: Listening, link: IDeviceLink
    ) -> None:
        waiting.leave()
        core.state = SessionState.STREAMING
        core.connected_at = now = core.reactor.seconds()
        core.peer = link.peer
        core.receiver.start(now, link.whole_packets)
        if core.params.receive_timeout is not None:
            core.sender.watch = core.receiver.check_timeout
        core.observer.session_connected(core.session, link.peer)
        core.sender.start_sending(link)

    @streaming.upon(LifecycleInputs.send_stalled).loop()
    def stalled(machine: LifecycleInputs, core: SessionCore, live: Streaming) -> None:
        if live.stall is None:
            live.stall = core.reactor.callLater(core.params.stall_timeout, core.stall_expired)

    @streaming.upon(LifecycleInputs.send_drained).loop()
    def drained(machine: LifecycleInputs, core: SessionCore, live: Streaming) -> None:
        live.drained()

    @idle.upon(LifecycleInputs.end).to(closed)
    def ended_unstarted(machine: LifecycleInputs, core: SessionCore) -> None:
        core.close()

    @listening.upon(LifecycleInputs.end).to(closed)
    def ended_listening(machine: LifecycleInputs, core: SessionCore, waiting: Listening) -> None:
        waiting.leave()
        core.close()

    @streaming.upon(LifecycleInputs.end).to(closed)
    def ended_streaming(machine: LifecycleInputs, core: SessionCore, live: Streaming) -> None:
        assert core.end_reason is not None
        live.leave(core.end_reason)
        core.close()

    # A device delivered where none is wanted (a second one, or after the end) is sent away.
    @idle.upon(LifecycleInputs.device_connected).loop()
    @streaming.upon(LifecycleInputs.device_connected, nodata=True).loop()
    @closed.upon(LifecycleInputs.device_connected).loop()
    def unwanted(machine: LifecycleInputs, core: SessionCore, link: IDeviceLink) -> None:
        link.close(abort=True)

    # Back-pressure news from a link with no stall timer to run, and a repeated end: nothing.
    for plain in (idle, closed):
        plain.upon(LifecycleInputs.send_stalled).loop().returns(None)
        plain.upon(LifecycleInputs.send_drained).loop().returns(None)
    listening.upon(LifecycleInputs.send_stalled, nodata=True).loop().returns(None)
    listening.upon(LifecycleInputs.send_drained, nodata=True).loop().returns(None)
    closed.upon(LifecycleInputs.end).loop().returns(None)
    return builder.build()


_MACHINE = _build()


def new_lifecycle(core: SessionCore) -> LifecycleInputs:
    """A fresh machine (in ``Idle``) for the talk session whose shared data is ``core``."""
    machine: LifecycleInputs = _MACHINE(core)
    core.machine = machine
    return machine
