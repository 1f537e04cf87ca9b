"""The registry of named audio sources (``app/stream``) and the table that builds each kind.

The native API's body names a kind; :data:`_KINDS` says which fields that
kind takes and which builder makes it.  A new kind is a module beside the
others (importing :mod:`~gb28181talk.sources.base` and, if live,
:mod:`~gb28181talk.sources.live`) and one row here: the kinds never import
the registry.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from gb28181talk.errors import SourceError
from gb28181talk.interfaces import IAudioSource
from gb28181talk.sources import file, ingest, push, tone
from gb28181talk.sources.base import source_key
from gb28181talk.sources.file import (
    DEFAULT_FILE_MEMORY,
    FileMemory,
    FileSource,
    LoadedFile,
    file_options,
    load_audio_file_in_thread,
)

log = Logger()

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")

_COMMON = ("app", "stream", "kind")


class SourceRegistry:
    """The named audio sources (``app/stream``) that talk sessions can broadcast.

    ``media_root``, when given, confines file sources to that directory
    (relative paths are taken inside it): the API must not read any file on
    the host just because a request names it.  ``max_file_memory`` (bytes)
    bounds the decoded audio of all file sources, loaded and loading
    (:attr:`file_memory`); a file that does not fit is refused.
    """

    def __init__(
        self, media_root: str | None = None, max_file_memory: int = DEFAULT_FILE_MEMORY
    ) -> None:
        self._sources: dict[str, IAudioSource] = {}
        self._loading: set[str] = set()
        self.file_memory = FileMemory(max_file_memory)
        """The memory budget every file source is loaded within."""
        self.media_root = None if media_root is None else os.path.realpath(media_root)
        self._listeners: list[Callable[[str, Any], None]] = []

    def add_listener(self, listener: Callable[[str, Any], None]) -> None:
        """Call ``listener("added" | "removed", source)`` after each add and remove."""
        self._listeners.append(listener)

    def _tell(self, event: str, source: Any) -> None:
        for listener in tuple(self._listeners):
            try:
                listener(event, source)
            except Exception:
                log.failure("source listener {listener!r} failed on {event}",
                            listener=listener, event=event)

    def __len__(self) -> int:
        return len(self._sources)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and len(key) == 2 and source_key(*key) in self._sources

    def add(self, source: Any) -> Any:
        """Register ``source`` under its app/stream; an ended source of that name is replaced."""
        self._refuse_taken_name(source.app, source.stream)
        key = source_key(source.app, source.stream)
        existing = self._sources.get(key)
        if existing is not None:
            existing.close()
        self._sources[key] = source
        log.info("audio source {key} added: {kind}", key=key, kind=source.kind)
        self._tell("added", source)
        return source

    def find(self, app: str, stream: str) -> Any | None:
        """The source named app/stream, or None."""
        return self._sources.get(source_key(app, stream))

    def get(self, app: str, stream: str) -> Any:
        """The source named app/stream, or SourceError saying how to make one."""
        source = self._sources.get(source_key(app, stream))
        if source is None:
            raise SourceError(
                f"no source {source_key(app, stream)}; create it with POST /api/sources "
                "or list them with GET /api/sources"
            )
        return source

    def remove(self, app: str, stream: str) -> Any:
        """Unregister and close the source (it ends for every listener); return it."""
        source = self.get(app, stream)
        del self._sources[source_key(app, stream)]
        source.close()
        log.info("audio source {key} removed", key=source_key(app, stream))
        self._tell("removed", source)
        return source

    def list(self) -> list[Any]:
        """Every source, sorted by app/stream."""
        return [self._sources[k] for k in sorted(self._sources)]

    def loading(self, app: str, stream: str) -> bool:
        """Whether a file source app/stream is being read by :meth:`create_async`."""
        return source_key(app, stream) in self._loading

    def close_all(self) -> None:
        """Close and forget every source (service shutdown); files still loading are dropped."""
        sources = list(self._sources.values())
        self._sources.clear()
        self._loading.clear()
        for source in sources:
            source.close()

    # -- building from an API body

    def create(self, spec: Any, reactor: Any = None) -> Any:
        """Build, register and return a source from the native API body.

        ``{"app", "stream", "kind": "tone"|"file"|"push"|"rtp", ...kind options}``.
        Every missing, unknown or bad field is a SourceError naming the
        field, the value given and what is allowed.  ``reactor`` (an
        ``IReactorUDP``) is needed for ``rtp`` only.  A file is read and
        decoded here, synchronously: a service uses :meth:`create_async`.
        """
        kind, app, stream = self._check(spec)
        source = _KINDS[kind].build(self, app, stream, spec, reactor)
        return self._register(source)

    def create_async(self, spec: Any, reactor: Any) -> Deferred[Any]:
        """As :meth:`create`, but a file is read and decoded in ``reactor``'s thread pool.

        The Deferred fires with the registered source once the file is
        loaded (the name is reserved meanwhile: see :meth:`loading`), or
        fails with SourceError; other kinds (and a reactor without a thread
        pool) are built at once and the Deferred has fired on return.
        """
        try:
            kind, app, stream = self._check(spec)
            if kind != "file" or not hasattr(reactor, "getThreadPool"):
                source = _KINDS[kind].build(self, app, stream, spec, reactor)
                return succeed(self._register(source))
            path, loop = self._file_options(spec)
        except SourceError:
            return fail()
        key = source_key(app, stream)
        self._loading.add(key)
        loading = load_audio_file_in_thread(reactor, path, self.file_memory)

        def loaded(done: LoadedFile) -> Any:
            if key not in self._loading:
                if done.lease is not None:
                    done.lease.release()
                raise SourceError(f"source {key} was not added: the sources were closed "
                                  "(the service is stopping) while its file loaded")
            self._loading.discard(key)
            return self._register(
                FileSource(app, stream, path, loop, pcm=done.audio, lease=done.lease)
            )

        def not_loaded(failure: Failure) -> Failure:
            self._loading.discard(key)
            return failure

        return loading.addCallbacks(loaded, not_loaded)

    def _check(self, spec: Any) -> tuple[str, str, str]:
        """The kind, app and stream of an API body whose fields are all known and free."""
        if not isinstance(spec, Mapping):
            raise SourceError(
                f"a source is described by a JSON object with app, stream and kind; "
                f"got {type(spec).__name__}"
            )
        kind = spec.get("kind")
        if not isinstance(kind, str) or kind not in _KINDS:
            hint = (
                "; device sources are made by two-way talk sessions"
                if kind == "device" else ""
            )
            raise SourceError(
                f"field 'kind' is {kind!r}; allowed: {', '.join(repr(k) for k in KINDS)}{hint}"
            )
        fields = _KINDS[kind].fields
        unknown = sorted(str(k) for k in spec if k not in _COMMON and k not in fields)
        if unknown:
            raise SourceError(
                f"unknown field(s) {', '.join(repr(u) for u in unknown)} for a {kind} source; "
                f"allowed: {', '.join(_COMMON + fields)}"
            )
        app = self._name(spec, "app")
        stream = self._name(spec, "stream")
        self._refuse_taken_name(app, stream)
        if self.loading(app, stream):
            raise SourceError(
                f"source {app}/{stream} is being loaded from its file; wait for that answer "
                "or pick another stream name"
            )
        return kind, app, stream

    def _refuse_taken_name(self, app: str, stream: str) -> None:
        """SourceError if a source named app/stream has not ended (an ended one may be replaced)."""
        existing = self.find(app, stream)
        if existing is not None and not existing.ended:
            raise SourceError(
                f"source {source_key(app, stream)} exists; delete it first or pick another "
                "stream name"
            )

    def _register(self, source: Any) -> Any:
        try:
            return self.add(source)
        except SourceError:
            source.close()
            raise

    @staticmethod
    def _name(spec: Mapping[str, Any], field: str) -> str:
        value = spec.get(field)
        if not isinstance(value, str) or not _NAME.fullmatch(value):
            raise SourceError(
                f"field {field!r} is {value!r}; allowed: 1 to 128 characters of letters, "
                "digits, '_', '-', '.', not starting with '.' or '-'"
            )
        return value

    def _build_tone(
        self, app: str, stream: str, spec: Mapping[str, Any], reactor: Any
    ) -> IAudioSource:
        return tone.tone_from_spec(app, stream, spec)

    def _build_file(
        self, app: str, stream: str, spec: Mapping[str, Any], reactor: Any
    ) -> IAudioSource:
        path, loop = self._file_options(spec)
        loaded = file.load_audio_file_within(path, self.file_memory)
        return FileSource(app, stream, path, loop, pcm=loaded.audio, lease=loaded.lease)

    def _file_options(self, spec: Mapping[str, Any]) -> tuple[str, bool]:
        """The confined path and the loop flag of a file source's body."""
        path, loop = file_options(spec)
        return self._confine(path), loop

    def _confine(self, path: str) -> str:
        """Resolve ``path`` inside media_root (if set), refusing any way out of it."""
        if "\x00" in path:
            raise SourceError(f"file field 'path' {path!r} contains a NUL character")
        if self.media_root is None:
            return path
        full = os.path.realpath(os.path.join(self.media_root, path))
        if os.path.commonpath([full, self.media_root]) != self.media_root:
            raise SourceError(
                f"file path {path!r} is outside the media directory {self.media_root}; "
                "name a file inside it"
            )
        return full

    def _build_push(
        self, app: str, stream: str, spec: Mapping[str, Any], reactor: Any
    ) -> IAudioSource:
        return push.push_from_spec(app, stream, spec)

    def _build_rtp(
        self, app: str, stream: str, spec: Mapping[str, Any], reactor: Any
    ) -> IAudioSource:
        return ingest.rtp_from_spec(app, stream, spec, reactor)


Builder = Callable[[SourceRegistry, str, str, Mapping[str, Any], Any], IAudioSource]
"""Builds one kind from (registry, app, stream, checked body, reactor)."""


@dataclass(frozen=True)
class SourceKind:
    """One row of the kind table: the body fields a kind takes and how it is built."""

    fields: tuple[str, ...]
    build: Builder


_KINDS: Mapping[str, SourceKind] = {
    "tone": SourceKind(tone.SPEC_FIELDS, SourceRegistry._build_tone),
    "file": SourceKind(file.SPEC_FIELDS, SourceRegistry._build_file),
    "push": SourceKind(push.SPEC_FIELDS, SourceRegistry._build_push),
    "rtp": SourceKind(ingest.SPEC_FIELDS, SourceRegistry._build_rtp),
}

KINDS = tuple(_KINDS)
"""Kinds that :meth:`SourceRegistry.create` builds from an API body."""
