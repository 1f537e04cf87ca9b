"""The device source: a device's voice in two-way talk, published for others to listen to."""

from __future__ import annotations

from zope.interface import implementer

from gb28181talk.interfaces import IAudioSink, ILiveSource
from gb28181talk.sources.live import LiveSource


@implementer(ILiveSource, IAudioSink)
class DeviceAudioSource(LiveSource):
    """A device's voice in two-way talk, published as a source others can listen to.

    The talk session hands it decoded audio as an :class:`IAudioSink`; it ends
    when the session does (after its backlog plays out).
    """

    def __init__(
        self, app: str, stream: str, max_backlog_ms: int = 2000, prefill_ms: int = 60
    ) -> None:
        super().__init__(app, stream, "device", max_backlog_ms, prefill_ms)
        self.last_rtp_timestamp: int | None = None

    def audio_received(self, pcm16: bytes, rtp_timestamp: int) -> None:
        """Feed one packet's decoded audio from the device."""
        self.last_rtp_timestamp = rtp_timestamp
        self.feed_pcm(pcm16)

    def audio_ended(self) -> None:
        """The talk session ended: play out what is buffered, then end."""
        self.finish()
