"""Which transport a talk session's parameters ask for: the one place that builds it.

``params.transport`` names the kind (:class:`~gb28181talk.core.params.TransportKind`);
this builds the matching :class:`~gb28181talk.core.transport.ITalkTransport` from the
pool, the reactor and the session's settings.  ``rtp-server`` is not built here: the
talk core hands the session the RTP server's own connection (``startSendRtpTalk``).
"""

from __future__ import annotations

from typing import Any

from gb28181talk.core.active import ActiveTcpTransport
from gb28181talk.core.params import SessionParams, TransportKind
from gb28181talk.core.passive import PassiveTcpTransport
from gb28181talk.core.ports import PortPool
from gb28181talk.core.transport import ITalkTransport
from gb28181talk.core.udp import UdpTalkTransport
from gb28181talk.errors import SessionError


def build_transport(
    params: SessionParams, owner: str, *, reactor: Any, pool: PortPool, direct_send: bool = True
) -> ITalkTransport:
    """The transport of ``params.transport`` for the session ``owner``."""
    kind = params.transport
    if kind is TransportKind.TCP_PASSIVE:
        return PassiveTcpTransport(
            pool, owner, port=params.src_port, expected_peer=params.expected_peer,
            framing=params.framing, max_send_buffer=params.max_send_buffer,
            direct_send=direct_send,
        )
    if kind is TransportKind.TCP_ACTIVE:
        assert params.destination is not None  # SessionParams checks it
        return ActiveTcpTransport(
            reactor, params.destination, timeout=params.wait_timeout, port=params.src_port,
            interface=pool.interface, framing=params.framing,
            max_send_buffer=params.max_send_buffer, direct_send=direct_send,
        )
    if kind in (TransportKind.UDP, TransportKind.UDP_PASSIVE):
        return UdpTalkTransport(
            pool, owner, reactor, port=params.src_port,
            destination=params.destination if kind is TransportKind.UDP else None,
            expected_peer=params.expected_peer, rtcp_timeout=params.rtcp_timeout,
        )
    raise SessionError(f"transport {kind} needs the connection it talks back on; "
                       "start it through the talk core (startSendRtpTalk)")
