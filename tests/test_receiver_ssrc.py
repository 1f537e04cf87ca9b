"""The receiver's SSRC policy: under ``learn`` the SDP's own SSRC (``y=``) is always accepted.

A device that sends some other SSRC first (a default it uses before it applies
``y=``, or packets of an earlier call) is learnt as before; once the SSRC the SDP
gave appears, the receiver switches to it, and only SSRCs that are neither are
counted as violations.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from gb28181talk.core.params import EndReason, SessionKey, SessionParams, SsrcPolicy
from gb28181talk.core.receiver import Receiver
from gb28181talk.media.framing import frame_rfc4571
from gb28181talk.media.rtp import RtpPacket
from gb28181talk.testing import RecordingSink

SDP_SSRC = 100000555


class Ended:
    """Records the endings the receiver asks for."""

    def __init__(self) -> None:
        self.calls: list[tuple[EndReason, str]] = []

    def __call__(self, reason: EndReason, detail: str) -> None:
        self.calls.append((reason, detail))


def receiver(policy: SsrcPolicy, **extra: Any) -> tuple[Receiver, RecordingSink, Ended]:
    params = SessionParams(
        key=SessionKey("v", "live", "ssrc", SDP_SSRC), receive=True, ssrc_policy=policy, **extra
    )
    sink, ended = RecordingSink(), Ended()
    clock = Clock()
    clock.advance(100.0)
    heard = Receiver(params, [sink], ended, clock, name="t")
    heard.start(clock.seconds())
    return heard, sink, ended


def packet(ssrc: int, seq: int) -> bytes:
    return frame_rfc4571(RtpPacket(8, seq, seq * 160, ssrc, bytes([seq % 256]) * 160).encode())


def heard_sequences(sink: RecordingSink) -> list[int]:
    return [timestamp // 160 for _pcm, timestamp in sink.chunks]


def test_learn_switches_to_the_sdp_ssrc_when_it_appears() -> None:
    heard, sink, ended = receiver(SsrcPolicy.LEARN, max_ssrc_violations=3)
    ssrcs = [777, 777, SDP_SSRC, SDP_SSRC, 777, 555, SDP_SSRC]
    heard.data_received(b"".join(packet(s, n) for n, s in enumerate(ssrcs, 1)))
    # 777 is learnt; the SDP's SSRC is preferred once it shows; 777 after that and 555
    # are the only strangers.
    assert heard_sequences(sink) == [1, 2, 3, 4, 7]
    assert heard.ssrc_violations == 2
    assert heard.packets_received == 5
    assert ended.calls == []


def test_learn_never_counts_the_sdp_ssrc_as_a_violation() -> None:
    heard, sink, ended = receiver(SsrcPolicy.LEARN, max_ssrc_violations=1)
    heard.data_received(packet(777, 1) + b"".join(packet(SDP_SSRC, n) for n in range(2, 60)))
    assert len(sink.chunks) == 59
    assert heard.ssrc_violations == 0
    assert ended.calls == []


def test_learn_still_adopts_the_first_ssrc_when_the_sdp_one_never_comes() -> None:
    heard, sink, _ = receiver(SsrcPolicy.LEARN)
    heard.data_received(packet(777, 1) + packet(888, 2) + packet(777, 3))
    assert heard_sequences(sink) == [1, 3]
    assert heard.ssrc_violations == 1


def test_strict_is_unchanged() -> None:
    heard, sink, _ = receiver(SsrcPolicy.STRICT)
    heard.data_received(packet(777, 1) + packet(SDP_SSRC, 2) + packet(777, 3))
    assert heard_sequences(sink) == [2]
    assert heard.ssrc_violations == 2


@given(st.lists(st.sampled_from([SDP_SSRC, 777, 888]), max_size=30))
def test_learn_accepts_every_sdp_packet_and_counts_every_drop(ssrcs: list[int]) -> None:
    heard, sink, _ = receiver(SsrcPolicy.LEARN)
    heard.data_received(b"".join(packet(s, n) for n, s in enumerate(ssrcs, 1)))
    accepted = set(heard_sequences(sink))
    assert {n for n, s in enumerate(ssrcs, 1) if s == SDP_SSRC} <= accepted
    assert len(accepted) + heard.ssrc_violations == len(ssrcs)
    # At most one SSRC besides the SDP's is ever heard, and only before the SDP's.
    strangers = [n for n in accepted if ssrcs[n - 1] != SDP_SSRC]
    assert len({ssrcs[n - 1] for n in strangers}) <= 1
    if SDP_SSRC in ssrcs:
        first_sdp = ssrcs.index(SDP_SSRC) + 1
        assert all(n < first_sdp for n in strangers)
