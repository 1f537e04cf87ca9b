"""Audio sources as ZLMediaKit streams: getMediaList, getMediaInfo, isMediaOnline, close_streams.

In ZLMediaKit a *stream* is one media source under one *schema*, the
protocol players pull it by (``rtsp``, ``rtmp``, ``ts``, ``fmp4``, ``hls``):
one pushed stream is listed once per protocol it is muxed to, and
``on_stream_changed`` fires once per schema.  A talk node serves no player
protocol; its streams are its audio sources (tone, file, push, RTP ingest, a
device's voice), each offered under every schema of
``hook.stream_changed_schemas`` (default ``rtsp``, the one wvp-GB28181-pro
waits for).  The schema is a label a platform filters by, not a way to play
the audio.  A source is a stream from when it is added until it ends or is
removed; vhosts are not separate (ZLMediaKit's ``general.enableVhost=0``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gb28181talk.core.session import TalkSession
from gb28181talk.core.talk import TalkControl
from gb28181talk.interfaces import SAMPLE_RATE
from gb28181talk.web import codes
from gb28181talk.web.common import ApiError, Authenticator
from gb28181talk.web.start import boolean, text
from gb28181talk.web.zlm import ZlmEndpoint, bytes_speed
from gb28181talk.web.zlm_node import NodeSettings

Stream = tuple[str, Any]
"""(schema, source): one audio source as one ZLMediaKit stream."""


class StreamView:
    """Which audio sources are streams under which schemas, and each one's ZLMediaKit JSON."""

    def __init__(self, control: TalkControl, schemas: Callable[[], tuple[str, ...]]) -> None:
        self.control = control
        self.schemas = schemas

    def streams(self, schema: str | None = None, app: str | None = None,
                stream: str | None = None) -> list[Stream]:
        """The live streams, per source then per schema; filters as ZLMediaKit's (None: any)."""
        offered = self.schemas()
        found: list[Stream] = []
        for source in self.control.registry.list():
            if source.ended or (app and source.app != app) or (stream and source.stream != stream):
                continue
            found.extend((name, source) for name in offered if not schema or name == schema)
        return found

    def find(self, schema: str, app: str, stream: str) -> Any | None:
        """The live source app/stream when it is offered under ``schema``, else None."""
        found = self.streams(schema, app, stream)
        return found[0][1] if found else None

    def readers(self, source: Any) -> list[TalkSession]:
        """The talk sessions playing ``source``."""
        return [session for session in self.control.manager.sessions()
                if (session.key.app, session.key.stream) == (source.app, source.stream)]

    def entry(self, schema: str, source: Any, vhost: str = codes.DEFAULT_VHOST) -> dict[str, Any]:
        """One stream as ZLMediaKit's ``makeMediaSourceJson`` shows it (audio only, G.711 8 kHz)."""
        info = source.describe()
        readers = self.readers(source)
        origin, origin_name = codes.origin_type(source.kind)
        return {
            "schema": schema,
            "vhost": vhost,
            "app": source.app,
            "stream": source.stream,
            "params": "",
            "createStamp": 0,
            "aliveSecond": int(info.get("position_ms", 0) // 1000),
            "bytesSpeed": sum(bytes_speed(session) for session in readers),
            "totalBytes": sum(session.stats.bytes_sent for session in readers),
            "readerCount": len(readers),
            "totalReaderCount": len(readers),
            "originType": origin,
            "originTypeStr": origin_name,
            "originUrl": "",
            "isRecordingMP4": False,
            "isRecordingHLS": False,
            "originSock": None,
            "tracks": [
                {
                    "codec_id": 3,
                    "codec_id_name": "G711A",
                    "codec_type": 1,
                    "ready": not source.ended,
                    "sample_rate": SAMPLE_RATE,
                    "channels": 1,
                    "sample_bit": 16,
                    "frames": int(info.get("frames_read", 0)),
                    "duration": int(info.get("position_ms", 0)),
                }
            ],
            "source": info,
        }


class StreamEndpoint(ZlmEndpoint):
    """A ZLMediaKit endpoint over the stream view."""

    def __init__(self, auth: Authenticator, control: TalkControl, wait_timeout: float,
                 node: NodeSettings) -> None:
        super().__init__(auth, control, wait_timeout)
        self.view = StreamView(control, lambda: node.schemas)

    def named(self, args: dict[str, str]) -> tuple[str, str, str, str]:
        """schema, vhost, app and stream, all required but vhost (``__defaultVhost__``)."""
        schema = text(args, "schema", None, None, "the stream's schema, e.g. rtsp")
        vhost = text(args, "vhost", codes.DEFAULT_VHOST) or codes.DEFAULT_VHOST
        app = text(args, "app", None, None, "the app of the audio source, e.g. broadcast")
        stream = text(args, "stream", None, None, "the stream of the audio source, e.g. tone")
        assert schema is not None and app is not None and stream is not None
        return schema, vhost, app, stream


class GetMediaList(StreamEndpoint):
    """``getMediaList``: every stream, filtered by ``schema``, ``app`` and ``stream``."""

    def answer(self, args: dict[str, str]) -> dict[str, Any]:
        vhost = text(args, "vhost", codes.DEFAULT_VHOST) or codes.DEFAULT_VHOST
        found = self.view.streams(text(args, "schema"), text(args, "app"), text(args, "stream"))
        return {"data": [self.view.entry(schema, source, vhost) for schema, source in found]}


class GetMediaInfo(StreamEndpoint):
    """``getMediaInfo``: one stream's fields at the top of the answer, or -500."""

    def answer(self, args: dict[str, str]) -> dict[str, Any]:
        schema, vhost, app, stream = self.named(args)
        source = self.view.find(schema, app, stream)
        if source is None:
            raise ApiError(codes.NOT_FOUND, f"can not find the stream {schema}/{app}/{stream}: "
                           f"the audio sources are streams under {'/'.join(self.view.schemas())}")
        return self.view.entry(schema, source, vhost)


class IsMediaOnline(StreamEndpoint):
    """``isMediaOnline``: ``{"online": true|false}``."""

    def answer(self, args: dict[str, str]) -> dict[str, Any]:
        schema, _vhost, app, stream = self.named(args)
        return {"online": self.view.find(schema, app, stream) is not None}


class CloseStreams(StreamEndpoint):
    """``close_streams``: end the matching sources; ``count_hit`` and ``count_closed`` streams.

    As in ZLMediaKit every filter is optional (none: every stream) and
    ``force=0`` leaves a stream that has readers (talk sessions) alone; a
    closed source ends its talk sessions (``source-ended``) and is removed.
    """

    def answer(self, args: dict[str, str]) -> dict[str, Any]:
        force = boolean(args, "force", False)
        found = self.view.streams(text(args, "schema"), text(args, "app"), text(args, "stream"))
        closing = {(source.app, source.stream): source for _schema, source in found
                   if force or not self.view.readers(source)}
        registry = self.control.registry
        for (app, stream), source in closing.items():
            if registry.find(app, stream) is source:
                registry.remove(app, stream)
        closed = sum(1 for _schema, source in found if (source.app, source.stream) in closing)
        return {"count_hit": len(found), "count_closed": closed}
