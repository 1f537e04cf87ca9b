"""The receive path of one talk session: the device's audio in two-way talk, into the sinks.

Bytes from the device are counted always; in two-way talk
(``params.receive``) they are deframed (:class:`FrameDecoder` detects RFC
4571, interleaved or bare RTP), RTCP multiplexed on the connection is
skipped, frames too short for RTP are counted as invalid without parsing,
the SSRC policy is applied (``strict``/``learn``/``off``, with an optional
violation limit that ends the session), the payload is depacketized by the
payload table (raw G.711, or MPEG-PS demuxed), decoded to PCM16 and handed
to every :class:`IAudioSink`.  A sink that fails is logged, never allowed to
break the session.  A one-way session parses nothing: it only counts bytes.

Two budgets (:class:`ReceiveBudget`) keep one device from hurting the disk
or the other sessions, here, once, for every sink:

- **audio**: a device cannot deliver more audio than reactor time has passed
  since it connected, plus a small allowance; the excess is dropped before it
  is decoded and counted, and a flood (excess piling up faster than it is
  forgiven) ends the session with ``receive-flood``;
- **frames and bytes**: at most so many per read and per second of reactor
  time.  What a read brings beyond the per-read share waits for the next
  reactor turn; beyond the per-second share, for the next second, with the
  device's reading paused (:meth:`Receiver.throttle_by`: the link's
  ``pause_reading``) meanwhile.  A device over its second's budget so many
  seconds in a row ends with ``receive-flood``.  Datagrams over the budget are
  dropped unread and counted.

The reactor is anything with ``seconds()`` and ``callLater()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from gb28181talk.core.params import EndReason, SessionParams, SsrcPolicy
from gb28181talk.errors import FramingError, MediaError
from gb28181talk.interfaces import SAMPLE_RATE, IAudioSink
from gb28181talk.media import g711
from gb28181talk.media.framing import FrameDecoder
from gb28181talk.media.law import Law
from gb28181talk.media.payload import by_payload_type
from gb28181talk.media.ps import PsDemuxer
from gb28181talk.media.rtp import parse_rtp

log = Logger()

_RTCP_PACKET_TYPES = frozenset(range(200, 205))
"""SR, RR, SDES, BYE, APP: second byte of an RTCP packet (RFC 3550, RFC 5761 demux)."""

_RTP_HEADER_SIZE = 12
"""A frame shorter than this is not RTP: counted as invalid without parsing it."""

_MIN_FRAME_BYTES = 3
"""The fewest bytes a frame takes on a stream (RFC 4571: a 2-byte length and 1 byte), so a
slice of 3n bytes completes at most n frames (and one begun before it)."""


@dataclass(frozen=True, slots=True)
class ReceiveBudget:
    """How much one device may send a talk session: audio against time, frames and bytes."""

    audio_allowance_s: float = 2.0
    """Audio a device may deliver ahead of the time passed since it connected (a burst)."""
    flood_limit_s: float = 10.0
    """Excess audio (beyond time + allowance) that ends the session with ``receive-flood``..."""
    flood_forgiven_per_s: float = 0.5
    """... less this much for every second that passes, so a device whose clock runs a little
    fast is trimmed, never ended; one sending over 1.5 times real time is."""
    frames_per_read: int = 256
    """Frames handled per piece of data (per reactor turn); the rest waits for the next turn."""
    bytes_per_read: int = 64 * 1024
    """Bytes handled per piece of data (per reactor turn)."""
    frames_per_second: int = 2000
    """Frames per second of reactor time (G.711 in 20 ms packets is 50; a camera's PS with
    video in 1,400-byte packets at 8 Mbit/s about 700)."""
    bytes_per_second: int = 4 * 1024 * 1024
    """Bytes per second of reactor time (G.711 is about 9 kB/s; 32 Mbit/s leaves room for
    a camera that sends its video PS on the connection)."""
    overloaded_seconds: int = 5
    """Seconds in a row a device may exhaust its per-second budget; then ``receive-flood``."""
    max_backlog: int = 256 * 1024
    """Bytes held for later turns when the link cannot pause its reading; over it, the
    session ends (a pausable link holds at most one read)."""


DEFAULT_BUDGET = ReceiveBudget()


class ReceiveAccount:
    """What one device has spent of its receive budget: made at connect, for two-way talk only.

    Kept apart from :class:`Receiver` so a one-way session (the common case) carries none of it.
    """

    __slots__ = (
        "backlog",
        "excess_packets",
        "excess_samples",
        "flood_debt",
        "flood_debt_at",
        "heard_samples",
        "later",
        "link",
        "over_budget",
        "over_streak",
        "paused",
        "started_at",
        "throttles",
        "window_bytes",
        "window_end",
        "window_frames",
        "window_over",
    )

    def __init__(self) -> None:
        # The audio budget: samples heard since the device connected, the flood's debt.
        self.started_at = 0.0
        self.heard_samples = 0
        self.excess_samples = 0
        self.excess_packets = 0
        self.flood_debt = 0.0
        self.flood_debt_at = 0.0
        # The frame and byte budget: this second's counts, what waits, who resumes it.
        self.link: Any = None
        self.paused = False
        self.window_end = 0.0
        self.window_frames = 0
        self.window_bytes = 0
        self.window_over = False
        self.over_streak = 0
        self.throttles = 0
        self.over_budget = 0
        self.backlog = bytearray()
        self.later: IDelayedCall | None = None


class Receiver:
    """Deframes, checks, depacketizes and decodes what the device sends; feeds the sinks."""

    __slots__ = (
        "_account",
        "_clock",
        "_decoder",
        "_end",
        "_expected_ssrc",
        "_law",
        "_learned_ssrc",
        "_max_violations",
        "_policy",
        "_ps_demuxer",
        "_receive_timeout",
        "_two_way",
        "_whole_packets",
        "budget",
        "bytes_received",
        "invalid_packets",
        "last_received_at",
        "name",
        "packets_received",
        "rtcp_packets",
        "sinks",
        "ssrc_violations",
    )

    def __init__(
        self,
        params: SessionParams,
        sinks: Sequence[IAudioSink],
        end: Callable[[EndReason, str], Any],
        clock: Any,
        *,
        name: str = "",
        budget: ReceiveBudget = DEFAULT_BUDGET,
    ) -> None:
        self.sinks = list(sinks)
        self.name = name
        self.budget = budget
        self._end = end
        self._clock = clock
        self._two_way = params.receive
        self._policy = params.ssrc_policy
        self._expected_ssrc = params.key.ssrc
        self._max_violations = params.max_ssrc_violations
        self._law = params.law
        self._receive_timeout = params.receive_timeout
        self._decoder: FrameDecoder | None = None
        self._whole_packets = False
        self._ps_demuxer: PsDemuxer | None = None
        self._learned_ssrc: int | None = None
        self._account: ReceiveAccount | None = None
        """The device's spending against its budget (two-way talk, once connected)."""
        self.last_received_at = 0.0
        self.packets_received = 0
        self.bytes_received = 0
        self.invalid_packets = 0
        self.rtcp_packets = 0
        self.ssrc_violations = 0

    @property
    def excess_audio_packets(self) -> int:
        """Packets of audio dropped for arriving faster than time passed."""
        account = self._account
        return account.excess_packets if account is not None else 0

    @property
    def receive_throttles(self) -> int:
        """Seconds the device's reading was paused for going over its frame/byte budget."""
        account = self._account
        return account.throttles if account is not None else 0

    @property
    def packets_over_budget(self) -> int:
        """Datagrams dropped unread for arriving over the second's budget."""
        account = self._account
        return account.over_budget if account is not None else 0

    @property
    def excess_audio_s(self) -> float:
        """Seconds of audio dropped for arriving faster than time passed."""
        account = self._account
        return account.excess_samples / SAMPLE_RATE if account is not None else 0.0

    def start(self, now: float, whole_packets: bool = False) -> None:
        """A device is connected: from now on its RTP is heard (in two-way talk).

        ``whole_packets``: every piece of data is one packet (datagrams), nothing to deframe.
        """
        self.last_received_at = now
        self._whole_packets = whole_packets
        if self._two_way:
            self._decoder = FrameDecoder()
            account = self._account
            if account is None:
                account = self._account = ReceiveAccount()
            account.started_at = account.flood_debt_at = now
            account.window_end = now + 1.0

    def throttle_by(self, link: Any) -> None:
        """Pause and resume the device's reading through ``link`` (an IDeviceLink's
        ``pause_reading`` and ``resume_reading``) when the device is over its budget.

        Every owner of a receiver calls it once the device is connected: the talk session
        and the RTP server.  A one-way receiver hears nothing, so it never pauses.
        """
        account = self._account
        if self._decoder is not None and account is not None:
            account.link = link

    def stop(self) -> None:
        """The session ended: nothing more is heard; every sink hears the end."""
        self._decoder = None
        account = self._account
        if account is not None:  # its figures stay; what it holds goes
            account.link = None
            account.backlog = bytearray()
            later, account.later = account.later, None
            if later is not None and later.active():
                later.cancel()
        for sink in self.sinks:
            self._guarded(sink.audio_ended)

    def check_timeout(self, now: float) -> None:
        """End the session if the device sent nothing for ``receive_timeout`` seconds."""
        timeout = self._receive_timeout
        if timeout is not None and now - self.last_received_at > timeout:
            self._end(EndReason.RECEIVE_TIMEOUT, f"no audio from the device for {timeout:g} s")

    # -- data from the device ------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Bytes from the device: RTP audio in two-way talk, else counted and dropped."""
        self.bytes_received += len(data)
        if self._decoder is None:
            return
        if self._whole_packets:
            self._datagram(data)
            return
        account = self._account
        assert account is not None
        backlog = account.backlog
        if backlog:  # earlier data still waits its turn: this goes behind it
            backlog += data
            if len(backlog) > self.budget.max_backlog:
                self._end(
                    EndReason.RECEIVE_FLOOD,
                    f"{len(backlog)} bytes from the device waiting to be read, over "
                    f"{self.budget.max_backlog}: it sends faster than its budget "
                    f"({self._budget_text()}) and its reading cannot be paused",
                )
        else:
            self._read(data, account)

    def _read(self, data: bytes | bytearray, account: ReceiveAccount) -> None:
        """Deframe and hear ``data`` within this turn's and this second's budget; keep the rest."""
        decoder = self._decoder
        assert decoder is not None
        budget = self.budget
        now = self._clock.seconds()
        if now >= account.window_end:
            self._new_window(now, account)
        frames_left = min(budget.frames_per_read, budget.frames_per_second - account.window_frames)
        bytes_left = min(budget.bytes_per_read, budget.bytes_per_second - account.window_bytes)
        size = len(data)
        taken = 0
        with memoryview(data) as view:
            while taken < size and frames_left > 0 and bytes_left > 0:
                step = min(size - taken, bytes_left, _MIN_FRAME_BYTES * frames_left)
                rtcp_before = decoder.rtcp_frames
                try:
                    packets = decoder.feed(view[taken : taken + step])
                except FramingError as error:
                    self._end(
                        EndReason.ERROR, f"the device sent data that is not RTP over TCP: {error}"
                    )
                    return
                taken += step
                frames = len(packets) + decoder.rtcp_frames - rtcp_before
                frames_left -= frames
                bytes_left -= step
                account.window_frames += frames
                account.window_bytes += step
                for packet in packets:
                    self._packet(packet)
                    if self._decoder is None:  # the session ended on this packet
                        return
            rest = bytearray(view[taken:]) if taken < size else None
        exhausted = (
            account.window_frames >= budget.frames_per_second
            or account.window_bytes >= budget.bytes_per_second
        )
        if exhausted:
            self._over_budget(now, account)
        elif rest is not None:  # over this turn's share: the rest waits for the next turn
            self._pause(account)
            self._schedule(0.0, self._next_turn, account)
        elif account.paused:
            self._resume(account)
        if rest is not None and self._decoder is not None:
            account.backlog = rest

    def _datagram(self, packet: bytes) -> None:
        """One whole packet (a datagram): heard within this second's budget, else dropped."""
        account = self._account
        assert account is not None
        budget = self.budget
        now = self._clock.seconds()
        if now >= account.window_end:
            self._new_window(now, account)
        if account.window_over:
            account.over_budget += 1
            return
        account.window_frames += 1
        account.window_bytes += len(packet)
        self._packet(packet)
        if self._decoder is not None and (
            account.window_frames >= budget.frames_per_second
            or account.window_bytes >= budget.bytes_per_second
        ):
            self._over_budget(now, account)

    def _over_budget(self, now: float, account: ReceiveAccount) -> None:
        """This second's budget is spent: pause the device until the second is over."""
        if account.window_over:
            return
        account.window_over = True
        account.throttles += 1
        account.over_streak += 1
        budget = self.budget
        if account.over_streak >= budget.overloaded_seconds:
            self._end(
                EndReason.RECEIVE_FLOOD,
                f"the device went over its receive budget ({self._budget_text()}) "
                f"{account.over_streak} seconds in a row",
            )
            return
        if account.throttles == 1:
            log.warn(
                "talk session {id}: the device sends more than its receive budget ({budget}); "
                "its reading is paused until each second is over (counted in receive_throttles)",
                id=self.name,
                budget=self._budget_text(),
            )
        self._pause(account)
        self._schedule(max(0.0, account.window_end - now), self._next_second, account)

    def _schedule(self, delay: float, call: Callable[[], None], account: ReceiveAccount) -> None:
        """The one pending budget timer: the next turn or the next second (replaces any)."""
        later = account.later
        if later is not None and later.active():
            later.cancel()
        account.later = self._clock.callLater(delay, call)

    @staticmethod
    def _new_window(now: float, account: ReceiveAccount) -> None:
        """A new second of budget from ``now``; a second that was not overspent ends a streak."""
        if not account.window_over:
            account.over_streak = 0
        account.window_end = now + 1.0
        account.window_frames = 0
        account.window_bytes = 0
        account.window_over = False

    def _next_second(self) -> None:
        """The paused second is over: a fresh budget, then what waited."""
        account = self._account
        assert account is not None
        account.later = None
        now = self._clock.seconds()
        if now >= account.window_end - 1e-6:  # (data may have opened the new second already)
            self._new_window(now, account)
        self._next_turn()

    def _next_turn(self) -> None:
        """Go on with what waited; read the device again once nothing waits."""
        account = self._account
        assert account is not None
        account.later = None
        if self._decoder is None:
            return
        if self._whole_packets or not account.backlog:
            self._resume(account)
            return
        backlog, account.backlog = account.backlog, bytearray()
        self._read(backlog, account)

    @staticmethod
    def _pause(account: ReceiveAccount) -> None:
        if not account.paused and account.link is not None:
            account.paused = True
            account.link.pause_reading()

    @staticmethod
    def _resume(account: ReceiveAccount) -> None:
        if account.paused and account.link is not None:
            account.paused = False
            account.link.resume_reading()

    def _budget_text(self) -> str:
        budget = self.budget
        return f"{budget.frames_per_second} frames or {budget.bytes_per_second} bytes a second"

    # -- packets -------------------------------------------------------------

    def _packet(self, packet: bytes) -> None:
        size = len(packet)
        if size > 1 and packet[1] in _RTCP_PACKET_TYPES:
            # RTCP multiplexed on the talk connection (RFC 5761): not audio, and its
            # sender SSRC must not be learnt or counted as a violation.
            self.rtcp_packets += 1
            return
        if size < _RTP_HEADER_SIZE:
            self.invalid_packets += 1  # too short for RTP (a 1-byte frame): not parsed
            return
        try:
            rtp = parse_rtp(packet)
        except MediaError:
            self.invalid_packets += 1
            return
        if self._policy is not SsrcPolicy.OFF and not self._ssrc_accepted(rtp.ssrc):
            return
        self.last_received_at = now = self._clock.seconds()
        payload = by_payload_type(rtp.payload_type)
        if payload is not None and payload.law is not None:
            if self._within_audio_budget(len(rtp.payload), now):
                self.packets_received += 1
                self._hear(payload.law, rtp.payload, rtp.timestamp)
            return
        self.packets_received += 1
        if self._ps_demuxer is None:
            self._ps_demuxer = PsDemuxer()
        for audio in self._ps_demuxer.feed(rtp.payload):
            if self._decoder is None:  # the session ended on the audio before
                return
            if self._within_audio_budget(len(audio.payload), now):
                self._hear(audio.law or self._law, audio.payload, rtp.timestamp)

    def _within_audio_budget(self, samples: int, now: float) -> bool:
        """True if ``samples`` more keep the device within the time since it connected.

        Otherwise they are excess: counted, and added to the flood's debt (which is
        forgiven at ``flood_forgiven_per_s``); a debt over ``flood_limit_s`` ends the session.
        """
        account = self._account
        assert account is not None
        budget = self.budget
        elapsed = now - account.started_at
        heard = account.heard_samples + samples
        if heard <= (elapsed + budget.audio_allowance_s) * SAMPLE_RATE:
            account.heard_samples = heard
            return True
        account.excess_packets += 1
        account.excess_samples += samples
        forgiven = (now - account.flood_debt_at) * budget.flood_forgiven_per_s * SAMPLE_RATE
        account.flood_debt = debt = max(0.0, account.flood_debt - forgiven) + samples
        account.flood_debt_at = now
        if debt > budget.flood_limit_s * SAMPLE_RATE:
            self._end(
                EndReason.RECEIVE_FLOOD,
                f"the device sent more audio than time allows: {self.excess_audio_s:.1f} s "
                f"beyond the {elapsed:.1f} s since it connected (plus "
                f"{budget.audio_allowance_s:g} s allowance) were dropped",
            )
        elif account.excess_packets == 1:
            log.warn(
                "talk session {id}: the device sends audio faster than time passes "
                "({heard:.1f} s in {elapsed:.1f} s); the excess is dropped and counted "
                "(excess_audio_packets)",
                id=self.name,
                heard=account.heard_samples / SAMPLE_RATE,
                elapsed=elapsed,
            )
        return False

    def _hear(self, law: Law, audio: bytes, timestamp: int) -> None:
        pcm = g711.decode(law, audio)
        for sink in self.sinks:
            self._guarded(sink.audio_received, pcm, timestamp)

    def _ssrc_accepted(self, ssrc: int) -> bool:
        """The SSRC policy; the SDP's own SSRC (``y=``) is always accepted.

        Under ``learn`` the first SSRC is adopted; if the SDP's SSRC appears later, the
        receiver switches to it (the device has picked up ``y=``), so only an SSRC that
        is neither the SDP's nor the one heard until then counts as a violation.
        """
        expected = self._expected_ssrc
        if ssrc == expected:
            learned = self._learned_ssrc
            if learned != expected and self._policy is SsrcPolicy.LEARN:
                self._learned_ssrc = expected
                if learned is not None:
                    log.info(
                        "talk session {id}: device now sends the SDP's SSRC {want}; "
                        "switched to it from SSRC {old} (policy learn)",
                        id=self.name,
                        want=expected,
                        old=learned,
                    )
            return True
        if self._policy is SsrcPolicy.LEARN:
            if self._learned_ssrc is None:
                self._learned_ssrc = ssrc
                log.info(
                    "talk session {id}: device sends SSRC {got}, SDP said {want}; "
                    "adopted it until the SDP's appears (policy learn)",
                    id=self.name,
                    got=ssrc,
                    want=expected,
                )
            if ssrc == self._learned_ssrc:
                return True
            expected = self._learned_ssrc
        self.ssrc_violations += 1
        limit = self._max_violations
        if limit is not None and self.ssrc_violations >= limit:
            self._end(
                EndReason.SSRC_VIOLATION,
                f"{self.ssrc_violations} packets with SSRC {ssrc}, expected {expected}",
            )
        return False

    def _guarded(self, call: Any, *args: Any) -> None:
        """Call a sink; its failure is logged, never allowed to break the session."""
        try:
            call(*args)
        except Exception:
            log.failure("talk session {id}: a sink failed", id=self.name)
