"""Starts talk sessions for the APIs: finds the source, wires device audio and recordings.

Both APIs go through :class:`TalkControl`, so a session started by
ZLMediaKit's ``startSendRtpPassive`` and one started by ``POST /api/sessions``
behave alike: same idempotence for a retried call, same two-way wiring, same
error codes.  They differ only for a key whose live session was asked for
with other settings, or is connected: the native API refuses without
``replace``, ZLMediaKit's replaces (as ZLMediaKit re-creates the sender).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from gb28181talk.core.manager import SessionManager
from gb28181talk.core.params import SessionState
from gb28181talk.core.recorder import WavRecorder, recording_path
from gb28181talk.core.session import TalkSession
from gb28181talk.errors import PoolExhaustedError, PortInUseError, SessionError, SourceError
from gb28181talk.interfaces import IAudioSink, ISessionObserver
from gb28181talk.sources.device import DeviceAudioSource
from gb28181talk.sources.registry import SourceRegistry
from gb28181talk.web import codes
from gb28181talk.web.common import ApiError
from gb28181talk.web.start import StartRequest

log = Logger()


@implementer(ISessionObserver)
class TalkControl:
    """The API's side of the session manager: start with wiring, forget the wiring at the end.

    In two-way talk the device's voice becomes the source ``app/recv_stream_id``
    (a :class:`DeviceAudioSource` the session feeds), removed from the registry
    when the session ends; with ``record_dir`` it is also written to a WAV file.
    """

    def __init__(
        self,
        clock: Any,
        manager: SessionManager,
        registry: SourceRegistry,
        *,
        record_dir: str | None = None,
        advertise_ip: str | None = None,
    ) -> None:
        self.clock = clock
        self.manager = manager
        self.registry = registry
        self.record_dir = record_dir
        self.advertise_ip = advertise_ip
        self._device_sources: dict[str, DeviceAudioSource] = {}
        self._recorders: dict[str, WavRecorder] = {}
        self._recv_stream_ids: dict[str, str | None] = {}
        manager.add_observer(self)

    # -- starting

    def source(self, app: str, stream: str) -> Any:
        """The playable source app/stream, or ApiError -500 saying how to make one."""
        source = self.registry.find(app, stream)
        if source is None:
            raise ApiError(
                codes.NOT_FOUND,
                f"can not find the source stream {app}/{stream}: create it with "
                "POST /api/sources or list them with GET /api/sources",
            )
        if source.ended:
            raise ApiError(
                codes.NOT_FOUND,
                f"the source stream {app}/{stream} has ended; delete it and create it again "
                "(or create file sources with loop=true)",
            )
        return source

    def start(self, request: StartRequest) -> Deferred[TalkSession]:
        """Start a session, or find again the live one with the same key; ApiError on refusal.

        A live session with the same key and the same settings is the answer
        (a retried call gets the port it was given).  Otherwise: the native
        API refuses different settings unless ``replace``; ZLMediaKit's
        replaces a waiting session asked for with different settings and
        takes over a connected one (as ZLMediaKit does with a sender of the
        same SSRC).  A replacement is checked first; then the old session
        stops, its port is really closed, and the new one starts (so it can
        have the same explicit ``src_port``).  The Deferred has fired already
        unless a session had to be replaced.
        """
        return Deferred.fromCoroutine(self._start(request))

    async def _start(self, request: StartRequest) -> TalkSession:
        key = request.params.key
        stopped: TalkSession | None = None
        while True:
            self._refuse_when_shutting_down()
            existing = self.manager.find(key)
            if existing is None or existing.state is SessionState.CLOSED:
                return self._start_new(request)
            if existing is stopped:  # stop() did not end it: never loop on it
                raise ApiError(codes.OTHER_FAILED, f"talk session {existing.id} for {key} did "
                               "not end when replaced; the service log has the details", 500)
            differences = self.differences(existing, request)
            if not request.replace:
                if not differences and (
                    existing.state is SessionState.LISTENING or not request.zlm
                ):
                    return existing  # a retried call gets the session it was given
                if not request.zlm:
                    raise self._conflict(existing, differences)
            # Replaced: on request, by ZLMediaKit's different call or its call for a
            # connected session.  Check what can be checked before ending the old one.
            self._check_startable(request, replacing=existing)
            leases = [lease for lease in self.manager.pool.leases()
                      if lease.owner == existing.id and not lease.closed.called]
            self.manager.stop(existing.id)
            stopped = existing
            for lease in leases:
                await lease.closed  # its port is really free again
            # Another call may have started this key meanwhile: decide again.

    def _refuse_when_shutting_down(self) -> None:
        if self.manager.shutting_down:
            raise ApiError(codes.OTHER_FAILED, "the service is shutting down", 503)

    def differences(self, existing: TalkSession, request: StartRequest) -> list[str]:
        """What a live session has that ``request`` asks otherwise: ``codec PCMA (asked PCMU)``."""
        old, new = existing.params, request.params
        asked: list[tuple[str, Any, Any]] = [
            ("codec", old.law.encoding_name, new.law.encoding_name),
            ("packaging", str(old.packaging), str(new.packaging)),
            ("pt", old.rtp_payload_type, new.rtp_payload_type),
            ("framing", old.framing.value, new.framing.value),
            ("packet_ms", old.packet_ms, new.packet_ms),
            ("two_way", old.receive, new.receive),
            ("expected_peer", old.expected_peer, new.expected_peer),
        ]
        if new.src_port:
            asked.insert(0, ("src_port", existing.port, new.src_port))
        found = [f"{name} {have} (asked {want})" for name, have, want in asked if have != want]
        wanted_device = request.recv_stream_id
        have_device = self._recv_stream_ids.get(existing.id)
        if new.receive and old.receive and wanted_device != have_device:
            found.append(f"recv_stream_id {have_device} (asked {wanted_device})")
        return found

    @staticmethod
    def _conflict(existing: TalkSession, differences: list[str]) -> ApiError:
        return ApiError(
            codes.INVALID_ARGS,
            f"talk session {existing.id} for {existing.key} is live on port {existing.port} "
            f"({existing.state}) with other settings: {'; '.join(differences)}; send the same "
            "settings to get it again, or add \"replace\": true to end it and start afresh",
            409,
        )

    def _check_startable(self, request: StartRequest, replacing: TalkSession | None) -> Any:
        """The source to play, once every check that needs no port has passed; ApiError if not."""
        key = request.params.key
        source = self.source(key.app, key.stream)
        if request.recv_stream_id is not None:
            taken = self.registry.find(key.app, request.recv_stream_id)
            mine = replacing is not None and self._device_sources.get(replacing.id) is taken
            if taken is not None and not taken.ended and not mine:
                raise ApiError(
                    codes.INVALID_ARGS,
                    f"recv_stream_id {request.recv_stream_id!r} names the existing source "
                    f"{key.app}/{request.recv_stream_id}; pick another name for the device's "
                    "audio",
                    409,
                )
        if request.params.receive and self.record_dir is not None and not os.access(
            self.record_dir, os.W_OK | os.X_OK
        ):
            raise ApiError(
                codes.OTHER_FAILED,
                f"cannot record the device's audio in {self.record_dir}: it is not writable; "
                "check --record-dir",
                500,
            )
        port = request.params.src_port
        if port and replacing is not None:
            for lease in self.manager.pool.leases():
                if lease.port == port and lease.owner != replacing.id:
                    raise ApiError(
                        codes.EXCEPTION,
                        f"port {port} is busy: it is held by talk session {lease.owner} "
                        f"({lease.state}); choose another src_port or leave it empty",
                        409,
                    )
        return source

    def _start_new(self, request: StartRequest) -> TalkSession:
        params = request.params
        source = self._check_startable(request, replacing=None)
        device: DeviceAudioSource | None = None
        if request.recv_stream_id is not None:
            device = DeviceAudioSource(params.key.app, request.recv_stream_id)
        recorder = self._recorder(request) if params.receive else None
        sinks: list[IAudioSink] = [sink for sink in (device, recorder) if sink is not None]
        try:
            session = self.manager.start(params, source, sinks=sinks)
        except PortInUseError as error:
            self._discard(recorder)
            raise ApiError(codes.EXCEPTION, str(error), 409) from None
        except PoolExhaustedError as error:
            self._discard(recorder)
            raise ApiError(codes.EXCEPTION, str(error), 503) from None
        except SessionError as error:
            self._discard(recorder)
            raise ApiError(codes.INVALID_ARGS, str(error)) from None
        self._recv_stream_ids[session.id] = request.recv_stream_id
        if device is not None:
            try:
                self.registry.add(device)
            except SourceError as error:  # lost a race for the name: the session stays one-way
                log.warn("talk session {id}: device audio not published: {error}",
                         id=session.id, error=str(error))
            else:
                self._device_sources[session.id] = device
        if recorder is not None:
            self._recorders[session.id] = recorder
        return session

    def _recorder(self, request: StartRequest) -> WavRecorder | None:
        if self.record_dir is None:
            return None
        key = request.params.key
        path = recording_path(
            self.record_dir, key.app, request.recv_stream_id or key.stream, key.ssrc,
            self.clock.seconds(),
        )
        try:
            return WavRecorder(path)
        except OSError as error:
            raise ApiError(
                codes.OTHER_FAILED,
                f"cannot record the device's audio to {path}: {error.strerror or error}; "
                "check --record-dir",
                500,
            ) from None

    @staticmethod
    def _discard(recorder: WavRecorder | None) -> None:
        if recorder is not None:
            recorder.audio_ended()
            with contextlib.suppress(OSError):
                os.remove(recorder.path)

    # -- views

    def describe(self, session: TalkSession) -> dict[str, Any]:
        """The session's JSON view plus the API's wiring (device source, recording, address)."""
        view = session.describe()
        view["local_ip"] = self.advertise_ip
        device = self._device_sources.get(session.id)
        view["recv_stream_id"] = device.stream if device is not None else None
        recorder = self._recorders.get(session.id)
        view["recording"] = recorder.describe() if recorder is not None else None
        return view

    # -- ISessionObserver

    def session_started(self, session: Any) -> None:
        """Nothing to do."""

    def session_connected(self, session: Any, peer: tuple[str, int]) -> None:
        """Nothing to do."""

    def device_refused(self, session: Any, peer: tuple[str, int], why: str) -> None:
        """Nothing to do."""

    def session_ended(self, session: Any, reason: str, stats: Any) -> None:
        """Unpublish the device's audio source; the recorder closed itself as a sink."""
        self._recorders.pop(session.id, None)
        self._recv_stream_ids.pop(session.id, None)
        device = self._device_sources.pop(session.id, None)
        if device is not None and self.registry.find(device.app, device.stream) is device:
            self.registry.remove(device.app, device.stream)
