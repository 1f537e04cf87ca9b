"""One media worker as the control sees it: its process, its AMP connection, its load.

:func:`spawn_worker` starts ``python -m gb28181talk.workers.child`` with
``reactor.spawnProcess``, one end of a UNIX socket pair as its fd 3 (AMP, with
descriptors) and its stderr read back into the control's log with the
worker's prefix.  :class:`ControlProtocol` is the control's AMP side; it hands
every worker event to the manager.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from gb28181talk.workers.commands import (
    Connected,
    DeviceAudio,
    Ended,
    Frame,
    Hello,
    PortClosed,
    Refused,
    SourceEnded,
    Stats,
)
from gb28181talk.workers.relay import RelayListener

if TYPE_CHECKING:
    from gb28181talk.interfaces import IAudioSource

log = Logger()


class WorkerLink:
    """One worker slot's live process: AMP protocol, pid, its sessions and relayed sources."""

    def __init__(self, index: int, protocol: ControlProtocol) -> None:
        self.index = index
        self.protocol = protocol
        protocol.link = self
        self.pid: int | None = None
        self.process: Any = None
        self.up = True
        self.ready = False
        """True once the worker answered Hello: only then is it given sessions."""
        self.sessions: set[str] = set()
        """Ids of the live sessions placed here."""
        self.leased: set[str] = set()
        """Ids of the sessions whose handed socket the worker has not closed yet."""
        self.relays: dict[IAudioSource, RelayListener] = {}
        self.on_lost: Callable[[WorkerLink, str], None] | None = None
        self.on_exit: Callable[[WorkerLink], None] | None = None
        self.exited: Deferred[None] = Deferred()
        self.started_at = 0.0

    @property
    def load(self) -> int:
        """What placement compares: live sessions on this worker."""
        return len(self.sessions)

    def send(self, command: type[amp.Command], **arguments: Any) -> Any:
        """Call the worker; None for a worker that is gone."""
        if not self.up:
            return None
        return self.protocol.callRemote(command, **arguments)

    def send_frame(self, source_id: int, pcm: bytes) -> None:
        """One frame of a relayed source (no answer)."""
        if self.up:
            self.protocol.callRemote(Frame, source_id=source_id, pcm=pcm)

    def send_end(self, source_id: int) -> None:
        """A relayed source ended (no answer)."""
        if self.up:
            self.protocol.callRemote(SourceEnded, source_id=source_id)

    def greet(self) -> Deferred[Any]:
        """Ask the worker whether it is up; ``ready`` once it answers."""

        def answered(answer: dict[str, Any]) -> None:
            self.ready = self.up

        def failed(failure: Failure) -> None:
            log.info("media worker {index} did not answer: {why}", index=self.index,
                     why=failure.getErrorMessage())

        return self.protocol.callRemote(Hello).addCallbacks(answered, failed)

    def lost(self, why: str) -> None:
        """The worker is gone (its connection closed or its process ended): tell once."""
        if not self.up:
            return
        self.up = False
        self.ready = False
        if self.process is not None and self.pid is not None:
            try:
                self.process.signalProcess("KILL")  # a worker that lost us must not live on
            except Exception:
                log.debug("worker {index}: already gone", index=self.index)
        if self.on_lost is not None:
            self.on_lost(self, why)

    def close(self, clock: Any = None, grace: float = 0.0) -> Deferred[None]:
        """Close the connection (the worker exits); fires once its process has ended.

        With a ``clock``, a process still there after ``grace`` seconds is killed.
        """
        transport = self.protocol.transport
        if transport is not None:
            transport.loseConnection()
        if clock is not None and self.process is not None and not self.exited.called:
            kill = clock.callLater(grace, self._kill)
            self.exited.addBoth(lambda result: (kill.active() and kill.cancel(), result)[1])
        return self.exited

    def _kill(self) -> None:
        if self.process is not None and not self.exited.called:
            log.warn("media worker {index} (pid {pid}) did not exit; killing it",
                     index=self.index, pid=self.pid)
            try:
                self.process.signalProcess("KILL")
            except Exception:
                log.debug("worker {index}: already gone", index=self.index)

    def process_ended(self, why: str) -> None:
        """The process has exited: the slot may be filled again."""
        self.lost(why)
        if not self.exited.called:
            self.exited.callback(None)
        if self.on_exit is not None:
            self.on_exit(self)


class ControlProtocol(amp.AMP):
    """The control's AMP side of one worker: its events go to ``handler`` (the manager)."""

    def __init__(self, handler: Any) -> None:
        super().__init__()
        self.handler = handler
        self.link: WorkerLink | None = None

    def connectionLost(self, reason: Failure) -> None:
        # The link first: its sessions end with worker-lost before the calls still
        # waiting for an answer fail.
        if self.link is not None:
            self.link.lost(f"its connection closed ({reason.getErrorMessage()})")
        super().connectionLost(reason)

    @Connected.responder
    def connected(self, session_id: str, host: str, peer_port: int,
                  local_port: int) -> dict[str, Any]:
        self.handler.worker_connected(session_id, (host, peer_port), local_port)
        return {}

    @Refused.responder
    def refused(self, session_id: str, host: str, peer_port: int, why: str) -> dict[str, Any]:
        self.handler.worker_refused(session_id, (host, peer_port), why)
        return {}

    @Ended.responder
    def ended(self, session_id: str, reason: str, detail: str,
              stats: dict[str, Any]) -> dict[str, Any]:
        self.handler.worker_ended(session_id, reason, detail, stats)
        return {}

    @PortClosed.responder
    def port_closed(self, session_id: str) -> dict[str, Any]:
        self.handler.worker_port_closed(session_id)
        return {}

    @Stats.responder
    def stats(self, figures: list[Any]) -> dict[str, Any]:
        self.handler.worker_stats(figures)
        return {}

    @DeviceAudio.responder
    def device_audio(self, session_id: str, pcm: bytes, rtp_timestamp: int) -> dict[str, Any]:
        self.handler.worker_audio(session_id, pcm, rtp_timestamp)
        return {}


class _WorkerProcess(ProcessProtocol):
    """The worker's process: stderr lines into the control's log; its end ends the slot."""

    def __init__(self, link: WorkerLink) -> None:
        self.link = link
        self._partial = b""

    def errReceived(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            log.info("worker {index} [{pid}]: {line}", index=self.link.index,
                     pid=self.link.pid, line=line.decode("utf-8", "replace"))

    def outReceived(self, data: bytes) -> None:
        self.errReceived(data)

    def processEnded(self, reason: Failure) -> None:
        self.link.process_ended(f"its process ended ({reason.getErrorMessage()})")


def spawn_worker(reactor: Any, index: int, handler: Any, *, interface: str = "",
                 direct_send: bool = True) -> WorkerLink:
    """Start one worker process and its AMP connection (usable at once: the kernel queues)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    protocol = ControlProtocol(handler)
    link = WorkerLink(index, protocol)
    try:
        reactor.adoptStreamConnection(ours.fileno(), socket.AF_UNIX,
                                      Factory.forProtocol(lambda: protocol))
    finally:
        ours.close()  # Twisted holds a duplicate
    argv = [sys.executable, "-m", "gb28181talk.workers.child", "--fd", "3",
            "--index", str(index), "--interface", interface]
    if not direct_send:
        argv.append("--no-direct-send")
    try:
        link.process = reactor.spawnProcess(
            _WorkerProcess(link), sys.executable, argv, env=dict(os.environ),
            childFDs={0: "w", 1: "r", 2: "r", 3: theirs.fileno()})
    finally:
        theirs.close()
    link.pid = link.process.pid
    link.greet()
    log.info("media worker {index} started, pid {pid}", index=index, pid=link.pid)
    return link
