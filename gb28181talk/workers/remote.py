"""The control's view of a talk session that runs in a media worker.

:class:`RemoteSession` offers what the talk core, the APIs, the observers and
signalling read of a :class:`~gb28181talk.core.session.TalkSession` (id, key,
params, port, peer, state, reason, figures, ``describe``, ``stop``), kept
current by the worker's AMP events.  Its figures are the worker's last report
(at most :data:`~gb28181talk.workers.media.STATS_INTERVAL` old; final at the end).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from gb28181talk.core.params import EndReason, SessionParams, SessionState, SessionStats
from gb28181talk.interfaces import IAudioSink, IAudioSource


class RemoteSession:
    """A talk session placed on worker ``worker_index``, as the control sees it."""

    def __init__(self, session_id: str, params: SessionParams, source: IAudioSource, *,
                 worker_index: int, port: int, now: Callable[[], float],
                 end: Callable[[RemoteSession, EndReason, str], bool],
                 sinks: Sequence[IAudioSink] = ()) -> None:
        self.id = session_id
        self.params = params
        self.key = params.key
        self.source = source
        self.worker_index = worker_index
        self.port = port
        self.sinks = list(sinks)
        self._now = now
        self._end = end
        self.state = SessionState.LISTENING
        self.peer: tuple[str, int] | None = None
        self.end_reason: EndReason | None = None
        self.end_detail = ""
        self.created_at = now()
        self.connected_at: float | None = None
        self.ended_at: float | None = None
        self.refused = 0
        self.reported = SessionStats()
        """The worker's last figures for this session."""

    def stop(self, reason: EndReason = EndReason.STOPPED) -> bool:
        """End the session now (the worker is told); False if it had already ended."""
        return self._end(self, reason, "")

    def end(self, reason: EndReason, detail: str = "") -> bool:
        """End with ``reason`` and ``detail``; False if it had already ended."""
        return self._end(self, reason, detail)

    @property
    def stats(self) -> SessionStats:
        """The worker's last figures, with durations by the control's clock."""
        end = self.ended_at if self.ended_at is not None else self._now()
        streaming = end - self.connected_at if self.connected_at is not None else 0.0
        return replace(self.reported, refused_connections=self.refused,
                       duration_s=end - self.created_at, streaming_s=streaming)

    def describe(self) -> dict[str, Any]:
        """The same JSON view a TalkSession gives (``TalkSession.describe``), plus its worker."""
        params = self.params
        peer = self.peer
        return {
            "id": self.id,
            "vhost": self.key.vhost,
            "app": self.key.app,
            "stream": self.key.stream,
            "ssrc": self.key.ssrc,
            "state": str(self.state),
            "local_port": self.port,
            "peer": f"{peer[0]}:{peer[1]}" if peer else None,
            "age_s": round(self._now() - self.created_at, 3),
            "packaging": str(params.packaging),
            "codec": params.law.encoding_name,
            "pt": params.rtp_payload_type,
            "framing": params.framing.value,
            "packet_ms": params.packet_ms,
            "two_way": params.receive,
            "ssrc_policy": str(params.ssrc_policy),
            "transport": str(params.transport),
            "destination": (f"{params.dst_host}:{params.dst_port}"
                            if params.destination else None),
            "end_reason": str(self.end_reason) if self.end_reason else None,
            "stats": self.stats.as_dict(),
            "worker": self.worker_index,
        }
