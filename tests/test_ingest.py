"""RTP ingest: ordering and decoding without sockets, then loopback UDP and a real ffmpeg."""

from __future__ import annotations

import os
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from gb28181talk.errors import SourceError
from gb28181talk.interfaces import FRAME_BYTES, IAudioSource
from gb28181talk.media import g711
from gb28181talk.media.law import Law
from gb28181talk.media.ps import PsMuxer
from gb28181talk.media.rtp import RtpPacket
from gb28181talk.sources.ingest import RtpIngestSource
from gb28181talk.sources.registry import SourceRegistry
from tests.conftest import require_program
from tests.test_push import async_test, sleep, until
from tests.test_sources import (
    UdpMemoryReactor,
    goertzel_ratio,
    read_all,
    tone_pcm,
    zero_crossing_frequency,
)

SSRC = 0x11223344


def rtp(seq: int, payload: bytes, pt: int = 8, ssrc: int = SSRC, ts: int | None = None) -> bytes:
    """One RTP packet; the timestamp follows the sequence number at 160 samples a packet."""
    timestamp = (seq * 160 if ts is None else ts) & 0xFFFFFFFF
    return RtpPacket(pt, seq & 0xFFFF, timestamp, ssrc, payload).encode()


def alaw_packets(pcm: bytes, first_seq: int = 0, ssrc: int = SSRC) -> list[bytes]:
    """20 ms PCMA packets of ``pcm``."""
    alaw = g711.encode(Law.ALAW, pcm)
    return [
        rtp(first_seq + i, alaw[start : start + 160], ssrc=ssrc)
        for i, start in enumerate(range(0, len(alaw), 160))
    ]


def marked(n: int) -> bytes:
    """One packet's worth (20 ms) of A-law whose decoded samples are all the same, per n."""
    return bytes([n % 200 + 1]) * 160


def decoded(n: int) -> bytes:
    return g711.decode(Law.ALAW, marked(n))


def ingest(**kwargs: Any) -> RtpIngestSource:
    return RtpIngestSource("live", "rtp", UdpMemoryReactor(), prefill_ms=0, **kwargs)


def feed(source: RtpIngestSource, order: list[int], ssrc: int = SSRC) -> None:
    for seq in order:
        source.packet_received(rtp(seq, marked(seq), ssrc=ssrc), ("127.0.0.1", 5004))


# --------------------------------------------------------------------------- without sockets


def test_rtp_source_provides_the_interface_and_reports_its_port() -> None:
    source = RtpIngestSource("live", "rtp", UdpMemoryReactor(), port=30002)
    assert verifyObject(IAudioSource, source)
    info = source.describe()
    assert (info["kind"], info["port"], info["interface"]) == ("rtp", 30002, "127.0.0.1")
    source.close()
    assert source.ended and source.describe()["listening"] is False


def test_in_order_packets_play_in_order() -> None:
    source = ingest()
    feed(source, [10, 11, 12])
    assert read_all(source) == [decoded(10), decoded(11), decoded(12)]
    assert source.describe()["packets"] == 3


def test_swapped_packets_are_put_back_in_order() -> None:
    source = ingest()
    feed(source, [0, 2, 1, 3, 5, 4])
    assert read_all(source) == [decoded(n) for n in range(6)]
    info = source.describe()
    assert info["lost"] == 0 and info["reordered"] == 2


def test_duplicates_and_late_packets_are_dropped_and_counted() -> None:
    source = ingest(reorder_window=2)
    feed(source, [0, 1, 1, 3, 3, 4, 5])  # 2 is lost once 3 packets wait
    feed(source, [2])  # too late now
    assert read_all(source) == [decoded(0), decoded(1), bytes(FRAME_BYTES),
                                decoded(3), decoded(4), decoded(5)]
    info = source.describe()
    assert (info["duplicates"], info["late"], info["lost"]) == (2, 1, 1)


def test_a_missing_packet_is_given_up_when_the_pacer_would_underrun() -> None:
    source = ingest()
    feed(source, [0, 2])
    assert source.read_frame() == decoded(0)
    assert source.read_frame() == bytes(FRAME_BYTES)  # the lost packet's silence
    assert source.read_frame() == decoded(2)
    assert source.describe()["lost"] == 1


def test_sequence_numbers_wrap() -> None:
    source = ingest()
    feed(source, [65534, 0, 65535, 1])
    assert read_all(source) == [decoded(65534), decoded(65535), decoded(0), decoded(1)]
    assert source.describe()["lost"] == 0


def test_a_new_ssrc_restarts_the_sequence() -> None:
    source = ingest()
    feed(source, [500, 501])
    feed(source, [7, 8], ssrc=0xCAFE)
    assert read_all(source) == [decoded(500), decoded(501), decoded(7), decoded(8)]
    info = source.describe()
    assert info["ssrc_changes"] == 1 and info["ssrc"] == 0xCAFE and info["late"] == 0


def test_a_big_jump_resyncs() -> None:
    source = ingest()
    feed(source, [100, 101, 20000, 20001])
    assert read_all(source) == [decoded(100), decoded(101), decoded(20000), decoded(20001)]
    assert source.describe()["resyncs"] == 1


def test_invalid_and_unsupported_packets_are_counted() -> None:
    source = ingest()
    source.packet_received(b"\x00" * 20)
    source.packet_received(b"\x80")
    source.packet_received(rtp(1, b"\x00" * 160, pt=97))
    assert read_all(source) == []
    info = source.describe()
    assert (info["invalid"], info["unsupported"], info["packets"]) == (2, 1, 0)


def test_pcmu_is_decoded() -> None:
    source = ingest()
    pcm = tone_pcm(1000, 0.04)
    ulaw = g711.encode(Law.ULAW, pcm)
    source.packet_received(rtp(1, ulaw[:160], pt=0))
    source.packet_received(rtp(2, ulaw[160:], pt=0))
    assert b"".join(read_all(source)) == g711.decode(Law.ULAW, ulaw)


def test_ps_over_rtp_is_demuxed() -> None:
    source = ingest()
    pcm = tone_pcm(1000, 0.1)
    ulaw = g711.encode(Law.ULAW, pcm)
    muxer = PsMuxer(Law.ULAW)
    stream = b"".join(muxer.mux(ulaw[i : i + 160], i * 90 // 8) for i in range(0, 800, 160))
    # RTP payloads cut the PS stream anywhere.
    pieces = [stream[i : i + 300] for i in range(0, len(stream), 300)]
    for seq, piece in enumerate(pieces):
        source.packet_received(rtp(seq, piece, pt=96, ts=seq * 900))
    assert b"".join(read_all(source)) == g711.decode(Law.ULAW, ulaw)


def test_bind_failure_is_a_source_error() -> None:
    with pytest.raises(SourceError, match=r"cannot listen for RTP on UDP 127\.0\.0\.1:1: .*in use"):
        RtpIngestSource("live", "rtp", UdpMemoryReactor(), port=1)


# --------------------------------------------------------------------------- real sockets


class Sender(DatagramProtocol):
    pass


class RtpIngestLoopbackTests(unittest.TestCase):
    """An RTP source on a real UDP port of the loopback interface."""

    timeout = 20

    def setUp(self) -> None:
        self.registry = SourceRegistry()
        self.addCleanup(self.registry.close_all)

    def make_source(self) -> RtpIngestSource:
        source = self.registry.create(
            {"app": "live", "stream": "rtp", "kind": "rtp", "port": 0}, reactor
        )
        assert isinstance(source, RtpIngestSource) and source.port > 0
        return source

    @async_test
    async def test_udp_pcma_tone_comes_out_as_frames(self) -> None:
        source = self.make_source()
        sender = Sender()
        port = reactor.listenUDP(0, sender, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        packets = alaw_packets(tone_pcm(1000, 1.0), first_seq=40000)
        for packet in packets:
            sender.transport.write(packet, ("127.0.0.1", source.port))
        await until(lambda: source.describe()["packets"] == len(packets))
        frames = read_all(source)
        assert len(frames) == 50
        pcm = b"".join(frames)
        assert zero_crossing_frequency(pcm) == pytest.approx(1000, abs=5)
        assert goertzel_ratio(pcm, 1000) > 0.9
        info = source.describe()
        assert info["sender"] == f"127.0.0.1:{port.getHost().port}"
        assert info["lost"] == 0 and info["dropped_ms"] == 0

    @async_test
    async def test_ffmpeg_can_feed_an_rtp_source(self) -> None:
        ffmpeg = require_program("ffmpeg")
        source = self.make_source()
        _out, err, code = await getProcessOutputAndValue(
            ffmpeg,
            [
                "-hide_banner", "-loglevel", "error", "-re",
                "-f", "lavfi", "-i", "sine=frequency=1000:duration=1",
                "-ar", "8000", "-ac", "1", "-acodec", "pcm_alaw",
                "-f", "rtp", f"rtp://127.0.0.1:{source.port}",
            ],
            env=os.environ,
            reactor=reactor,
        )
        assert code == 0, err
        await sleep(0.1)  # the last datagrams
        info = source.describe()
        assert info["packets"] > 0 and info["invalid"] == 0 and info["unsupported"] == 0
        frames = read_all(source)
        assert 45 <= len(frames) <= 51, (len(frames), info)
        pcm = b"".join(frames)
        assert zero_crossing_frequency(pcm) == pytest.approx(1000, abs=20)
        assert goertzel_ratio(pcm, 1000) > 0.8

    @async_test
    async def test_close_frees_the_port(self) -> None:
        source = self.make_source()
        port = source.port
        self.registry.remove("live", "rtp")
        assert source.stopped is not None
        await source.stopped
        again = RtpIngestSource("live", "again", reactor, port=port)
        assert again.port == port
        again.close()
        await again.stopped
