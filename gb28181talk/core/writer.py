"""Writes framed RTP to a device: straight to the socket when nothing waits, bounded otherwise.

``transport.write`` costs three system calls per packet on an idle socket
(register for writability, send on the next reactor turn, unregister) and
delays the send by a reactor turn.  A talk packet is a few hundred bytes sent
every 20-100 ms, so when Twisted holds nothing for this connection we send it
at once with one ``sendmsg``.  Whatever the kernel does not take goes through
Twisted's buffer, and from then on every packet does, in order, until the
transport tells us (``resumeProducing`` of a pull producer) that its buffer
drained.  What waits there is capped: past ``max_buffered`` bytes packets are
dropped and the session hears it, to end with ``send-stalled`` if it lasts.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.interfaces import IPullProducer
from zope.interface import implementer


@implementer(IPullProducer)
class PacketWriter:
    """Sends byte strings on one TCP transport, preserving order, with a bounded backlog."""

    def __init__(self, transport: Any, max_buffered: int, direct: bool = True) -> None:
        self._transport = transport
        self.max_buffered = max_buffered
        self.queued = 0
        self.stalled = False
        self.on_stall: Any = None
        self.on_drain: Any = None
        self._socket: socket.socket | None = None
        handle = getattr(transport, "getHandle", None)
        if direct and handle is not None:
            candidate = handle()
            if isinstance(candidate, socket.socket):
                self._socket = candidate
                candidate.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, max_buffered)
        transport.registerProducer(self, False)

    def write(self, header: bytes, payload: bytes) -> bool:
        """Send ``header + payload``; False if dropped because the device is not reading."""
        size = len(header) + len(payload)
        if not self.queued and self._socket is not None:
            try:
                sent = self._socket.sendmsg((header, payload))
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                # Reset or closed: let Twisted's own write path see and report it.
                self._socket = None
                sent = 0
            if sent != size:
                self._queue((header + payload)[sent:])
            return True
        if self.queued >= self.max_buffered:
            return self._drop()
        self._transport.writeSequence((header, payload))
        self.queued += size
        return True

    def write_packet(self, packet: bytearray) -> bool:
        """Send one whole packet that the caller reuses once this returns; False if dropped.

        The sender's fast path: one ``send`` of a buffer shared by every session of a
        frame (each packed its own header into it first).  Whatever waits is copied.
        """
        if not self.queued and self._socket is not None:
            try:
                sent = self._socket.send(packet)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._socket = None
                sent = 0
            if sent != len(packet):
                self._queue(bytes(packet[sent:]))
            return True
        if self.queued >= self.max_buffered:
            return self._drop()
        self._transport.write(bytes(packet))
        self.queued += len(packet)
        return True

    def _queue(self, rest: bytes) -> None:
        """What the kernel did not take waits in Twisted's buffer; every packet after it too."""
        self._transport.write(rest)
        self.queued += len(rest)

    def _drop(self) -> bool:
        """The backlog is full: the packet is dropped, and the session hears of the stall once."""
        if not self.stalled:
            self.stalled = True
            if self.on_stall is not None:
                self.on_stall()
        return False

    def resumeProducing(self) -> None:
        """Twisted's buffer for this connection is empty: direct sends may resume."""
        self.queued = 0
        if self.stalled:
            self.stalled = False
            if self.on_drain is not None:
                self.on_drain()

    def stopProducing(self) -> None:
        """The connection is gone; nothing more will be written (nor told to the session)."""
        self._socket = None
        self.queued = 0
        self.on_stall = self.on_drain = None

    def close(self) -> None:
        """Unregister from the transport (before the session closes it).

        The stall and drain callbacks (the session's methods) are let go too, so an ended
        session is not kept in a cycle through its link's writer.
        """
        self._socket = None
        self.on_stall = self.on_drain = None
        if getattr(self._transport, "producer", None) is self:
            self._transport.unregisterProducer()
