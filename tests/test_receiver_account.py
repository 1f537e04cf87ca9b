"""The receive budget's bookkeeping exists only where a device is heard: two-way talk, connected.

A one-way session (the common case) only counts bytes, so it carries no
``ReceiveAccount``; its receiver is slotted (no per-instance dict), which keeps
every session's setup cheap.  A two-way session gets its account when the
device connects and keeps the figures after it ends.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from gb28181talk.core.params import EndReason, SessionKey, SessionParams
from gb28181talk.core.receiver import ReceiveAccount, Receiver
from gb28181talk.media.framing import frame_rfc4571
from gb28181talk.media.rtp import RtpPacket
from gb28181talk.testing import RecordingSink

SSRC = 100000321


def make(receive: bool) -> tuple[Receiver, Clock, list[tuple[EndReason, str]]]:
    """A receiver for a one-way or two-way session, not yet started."""
    clock = Clock()
    clock.advance(50.0)
    ended: list[tuple[EndReason, str]] = []
    params = SessionParams(key=SessionKey("v", "live", "acct", SSRC), receive=receive)
    heard = Receiver(params, [RecordingSink()], lambda r, d: ended.append((r, d)), clock)
    return heard, clock, ended


def packet(seq: int) -> bytes:
    return frame_rfc4571(RtpPacket(8, seq, seq * 160, SSRC, b"\xd5" * 160).encode())


def test_the_receiver_has_no_instance_dict() -> None:
    heard, _clock, _ended = make(receive=True)
    assert not hasattr(heard, "__dict__")
    assert not hasattr(ReceiveAccount(), "__dict__")


def test_a_one_way_session_never_makes_an_account_and_reads_zero_figures() -> None:
    heard, clock, _ended = make(receive=False)
    heard.start(clock.seconds())
    heard.throttle_by(object())
    heard.data_received(packet(1) * 3)
    assert heard._account is None
    assert heard.bytes_received == 3 * len(packet(1)) and heard.packets_received == 0
    assert (heard.excess_audio_packets, heard.excess_audio_s, heard.receive_throttles,
            heard.packets_over_budget) == (0, 0.0, 0, 0)
    heard.stop()
    assert heard._account is None


def test_a_two_way_session_gets_its_account_at_connect_and_keeps_its_figures() -> None:
    heard, clock, ended = make(receive=True)
    assert heard._account is None, "nothing before the device connects"
    heard.start(clock.seconds())
    account = heard._account
    assert isinstance(account, ReceiveAccount)
    # 4 s of audio at once: 2 s allowance, the other 2 s (100 packets) dropped as excess.
    heard.data_received(b"".join(packet(n) for n in range(200)))
    assert heard.packets_received == 100 and heard.excess_audio_packets == 100
    assert heard.excess_audio_s == 2.0 and ended == []
    heard.stop()
    assert heard._account is account and heard.excess_audio_packets == 100
    assert account.link is None and account.later is None and not account.backlog
