"""How a talk session gets its device: the transport interfaces between the two.

A transport delivers one connected device to its talk session and nothing
else: the passive acceptor (:mod:`gb28181talk.core.passive`: a leased port,
the first device to dial in wins), the active connector
(:mod:`gb28181talk.core.active`: we dial the listening device), the UDP
sender (:mod:`gb28181talk.core.udp`: datagrams to the device, or to whoever
sent the first one) and an RTP server's own device connection
(:mod:`gb28181talk.core.rtp_server`, ``startSendRtpTalk``), each written
without touching the lifecycle, the sender or the receiver;
:mod:`gb28181talk.core.transports` picks one from ``params.transport``.

The session gives the transport an :class:`IDeviceHost` (itself) to report
to; the transport hands back one :class:`IDeviceLink`, the device as the
sender writes to it: one call per RTP packet, ``header`` then ``payload``.
A stream link asks for RFC 4571's 2-byte length before each packet (or none,
as the caller chose); a datagram link always asks for none, one datagram per
write.  The receive budget pauses and resumes a link's reading
(``pause_reading``, ``resume_reading``); links that cannot pause do nothing.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IDeviceLink(Interface):
    """One connected device, as the talk session's sender writes to it and ends it."""

    peer = Attribute("The device's (host, port).")
    framing = Attribute(
        "The framing every packet needs on this link (media.framing.Framing): RFC4571 "
        "(the 14-byte header with its length) or NONE (the bare 12-byte header; "
        "always NONE for datagrams)."
    )
    queued = Attribute("Bytes accepted but not yet taken by the kernel (int; 0 for datagrams).")
    whole_packets = Attribute(
        "True if every piece the device sends (``data_from_device``) is one whole RTP or RTCP "
        "packet, as a datagram is: nothing to deframe.  False for a byte stream."
    )

    def write(header: bytes, payload: bytes) -> bool:
        """Send one RTP packet, ``header + payload``, in order; False if it was dropped.

        A drop means the device does not keep up (a stream's bounded backlog is full);
        the link then reports ``send_stalled`` to its host, and ``send_drained`` once it
        catches up.
        """

    # A link may also have ``write_packet(packet: bytearray) -> bool``: send one whole packet
    # (header packed at its front) that the caller reuses at once, as ``write`` otherwise.
    # Optional; the sender takes it for raw G.711 when present (TCP links have it).

    def close(abort: bool) -> None:
        """End the connection now; ``abort`` (or bytes still queued) drops what is unsent.

        Harmless once the device has gone.
        """

    def pause_reading() -> None:
        """Read nothing more from the device until ``resume_reading`` (it is over its receive
        budget: :meth:`~gb28181talk.core.receiver.Receiver.throttle_by`).

        A stream link stops reading its socket, so the kernel's window holds the device
        back.  A link that cannot pause does nothing: a datagram link (the receiver drops
        and counts the datagrams over budget, unread), or a link lent to another reader
        (an RTP server's connection, which that server's own receiver throttles).
        Harmless once the device has gone.
        """

    def resume_reading() -> None:
        """Read the device again after ``pause_reading``; harmless once it has gone."""


class IDeviceHost(Interface):
    """What a transport tells its talk session (the session provides this)."""

    def device_connected(link: IDeviceLink) -> None:
        """The device is here: the session streams to ``link`` from now on."""

    def device_refused(peer: tuple[str, int], why: str) -> None:
        """A device was turned away (not the expected one, or the place was taken)."""

    def data_from_device(data: bytes) -> None:
        """Bytes the device sent: framed RTP of two-way talk, or anything."""

    def device_closed(why: str) -> None:
        """The device hung up or the connection broke."""

    def send_stalled() -> None:
        """The link is dropping packets: the device stopped reading."""

    def send_drained() -> None:
        """The link caught up after ``send_stalled``."""


class ITalkTransport(Interface):
    """Delivers one connected device to one talk session."""

    port = Attribute("The local port the device is to reach (int; 0 until opened).")

    def open(host: IDeviceHost) -> int:
        """Start waiting for the device on behalf of ``host``; returns the local port.

        Raises PortError (PortInUseError, PoolExhaustedError) if nothing could be
        opened; then nothing is held.  At most one ``host.device_connected`` follows,
        later or from within this call (a datagram transport has its device at once).
        """

    def close() -> None:
        """Stop waiting: release what waiting holds (a port lease, a pending connect).

        Idempotent; a link already delivered lives on (the session closes it).
        """
