"""The seams where things plug in: audio sources and sinks, session observers, signalling.

The audio model, shared by every piece: time is cut into *frames* of 20 ms of
8 kHz mono audio (160 samples, 320 bytes of little-endian PCM16).  One pacer
pulls one frame per 20 ms from each source that has listeners and hands the
same frame object to every session listening to it, so a source is decoded,
resampled and G.711-encoded once however many devices hear it.
"""

from __future__ import annotations

from typing import Any

from zope.interface import Attribute, Interface

FRAME_MS = 20
"""Length of one audio frame, the pacer's unit of time."""

SAMPLE_RATE = 8000
"""Sample rate of every frame (G.711's clock)."""

FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
"""Samples in one frame: 160."""

FRAME_BYTES = FRAME_SAMPLES * 2
"""Bytes of PCM16 in one frame: 320."""


class IAudioSource(Interface):
    """A named stream of 8 kHz mono audio that talk sessions broadcast.

    The pacer calls :meth:`read_frame` once per 20 ms while at least one
    session listens; a source with no listeners is not read (a file does not
    advance, a live source keeps only a short bounded backlog).
    """

    app = Attribute("Application name, the first half of the source's key (str).")
    stream = Attribute("Stream name, the second half of the source's key (str).")
    kind = Attribute("What feeds it: 'tone', 'file', 'push', 'rtp', 'device' (str).")
    ended = Attribute("True once the source will never produce audio again (bool).")

    def read_frame() -> bytes | None:
        """Return the next 20 ms as 320 bytes of PCM16, or None if no audio is ready yet.

        None is an underrun of a live source (nothing was pushed in time); the
        listeners' RTP timestamps still advance so the gap is kept in time.
        """

    def describe() -> dict[str, Any]:
        """A JSON-ready description for listings: app, stream, kind and kind options."""

    def close() -> None:
        """Release what the source holds (files, sockets); it ends for every listener."""


class ILiveSource(IAudioSource):
    """A source fed in real time (push, RTP ingest, a device's voice) through a bounded backlog.

    Producers call :meth:`feed_pcm` as audio arrives; the pacer's
    :meth:`read_frame` waits for ``prefill_ms`` before handing out frames.
    A flow-controlled producer (a pusher's socket) is paused instead of its
    audio being dropped.  The pacer calls :meth:`trim_backlog` when a source
    gets its first listener, so a live feed starts from the present.
    """

    max_backlog_ms = Attribute("Backlog bound: drop (or pause the producer) above it (int).")
    prefill_ms = Attribute("Audio buffered before the first frame and after an underrun (int).")
    backlog_ms = Attribute("Audio waiting to be read now, in milliseconds (int).")
    paused = Attribute("True while the attached producer is paused by flow control (bool).")

    def feed_pcm(pcm16: bytes) -> None:
        """Append 8 kHz mono PCM16 (any length; an odd byte waits for the next call)."""

    def finish() -> None:
        """No more audio will come: play out the backlog, then end."""

    def attach_producer(producer: Any) -> None:
        """Flow-control ``producer`` (IPushProducer): pause above the bound, resume under half."""

    def detach_producer() -> None:
        """Forget the producer (its connection is gone); audio above the bound is dropped again."""

    def trim_backlog(keep_ms: int | None = None) -> int:
        """Drop all but the newest ``keep_ms`` (default: prefill) of a backlog not flow-controlled.

        Returns the milliseconds dropped; a flow-controlled backlog is kept whole (0).
        """


class IPushSource(ILiveSource):
    """A live source fed by one pusher at a time (a WebSocket client) with encoded bytes.

    Its pusher provides :class:`IPusher` (the web layer's WebSocket protocol).
    """

    format = Attribute("What the pushed bytes hold: 'pcm16', 'alaw' or 'ulaw' (str).")
    pusher = Attribute("The pusher that holds the source, or None.")

    def push_bytes(data: bytes, message_end: bool = True) -> None:
        """Decode and resample pushed audio into the backlog: a whole message, or one
        fragment of a message as it arrives (``message_end=False``)."""

    def claim(pusher: Any) -> bool:
        """Make ``pusher`` the one pusher; False if another holds it or the source ended."""

    def release(pusher: Any) -> bool:
        """``pusher`` left: stop flow-controlling it, play its last audio; False if not ours."""


class IPusher(Interface):
    """Whoever pushes into an :class:`IPushSource` (a WebSocket client's protocol)."""

    peer = Attribute("Where the pusher is, ``host:port``, shown in the source's listing (str).")

    def source_closed(reason: str) -> None:
        """The push source was deleted: hang up, telling the client ``reason``."""


class IAudioSink(Interface):
    """Receives the audio a device sends back in two-way talk, decoded to 8 kHz PCM16."""

    def audio_received(pcm16: bytes, rtp_timestamp: int) -> None:
        """Take one packet's worth of decoded audio with its RTP timestamp (8 kHz units)."""

    def audio_ended() -> None:
        """The talk session ended: flush and release (a recorder closes its file)."""


class ISessionObserver(Interface):
    """Hears every talk session's life: the seam for hooks, metrics and logs.

    Every session that :meth:`session_started` reports gets exactly one
    :meth:`session_ended`, whatever path it takes.
    """

    def session_started(session: Any) -> None:
        """The session is listening on its port (``session.port``)."""

    def session_connected(session: Any, peer: tuple[str, int]) -> None:
        """The first device connected from ``peer``; the listener is already closed."""

    def device_refused(session: Any, peer: tuple[str, int], why: str) -> None:
        """A connection was refused: not the expected device, or not the first."""

    def session_ended(session: Any, reason: str, stats: Any) -> None:
        """The session closed for ``reason`` with its final ``SessionStats``; its port is free."""


class ITalkSignalling(Interface):
    """What a SIP stack asks of the media side for one broadcast or talk call.

    A GB28181 SIP UAS (ours, or one already in an existing Twisted SIP stack)
    calls :meth:`prepare` when it has the device's SDP offer, puts the returned
    SDP answer in its 200 OK (the port is already listening, as Dahua devices
    connect before ACK), may wait on :meth:`when_ended` to send BYE when the
    media ends first, and calls :meth:`release` on BYE, CANCEL or failure.

    The Call-ID is the session's identity: two calls are two sessions even
    with the same ``y=``; the same Call-ID with the same offer (a retransmitted
    INVITE) gets the same session and port; with another offer (a re-INVITE)
    the call's session is replaced.  A two-way offer (``sendrecv``/``sendonly``)
    publishes and records the device's voice as the HTTP APIs' two-way talk does.
    """

    def prepare(call_id: str, offer_sdp: str, source_app: str, source_stream: str) -> str:
        """Open a passive talk port for the call and return the SDP answer text.

        Raises ``SdpError`` for an offer that cannot be served (answer 488) and
        other ``GbTalkError`` subclasses for a refusal (no source, no port,
        shutting down: answer 503 or 488).
        """

    def release(call_id: str) -> None:
        """End the call's talk session (reason ``stopped``); harmless if already ended."""

    def when_ended(call_id: str) -> Any:
        """A Deferred firing with the end reason (``device-closed``, ``timeout``, ...) once the
        call's media ends and is not replaced by a re-INVITE; fails with ``SessionNotFound``
        if the call has no live session."""
