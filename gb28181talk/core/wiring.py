"""Two-way talk's wiring: the device's voice published as a source and recorded to a WAV file.

In two-way talk the device's audio reaches the session's sinks: a
:class:`DeviceAudioSource` published in the :class:`SourceRegistry` as
``app/recv_stream_id`` (so others can listen to the device), and with a
record directory a :class:`WavRecorder`.  This module builds those sinks for
a request, publishes them once the session exists, and unpublishes them when
it ends; the talk core (:mod:`gb28181talk.core.talk`) decides when.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger

from gb28181talk.core.recorder import WavRecorder, recording_path
from gb28181talk.core.request import TalkRequest
from gb28181talk.errors import NameTaken, RecordingUnavailable, SourceError
from gb28181talk.interfaces import IAudioSink
from gb28181talk.sources.device import DeviceAudioSource

log = Logger()


@dataclass
class Wiring:
    """What the core attached to one session: its request, the device's source, the recorder."""

    request: TalkRequest
    device: DeviceAudioSource | None = None
    recorder: WavRecorder | None = None
    published: bool = False

    @property
    def sinks(self) -> list[IAudioSink]:
        """The session's sinks for the device's audio (none in one-way talk)."""
        return [sink for sink in (self.device, self.recorder) if sink is not None]


class TwoWayWiring:
    """Builds, publishes and unpublishes the sinks of two-way talk sessions."""

    def __init__(self, clock: Any, registry: Any, record_dir: str | None = None) -> None:
        self.clock = clock
        self.registry = registry
        self.record_dir = record_dir

    def check(self, request: TalkRequest, replacing: Wiring | None = None) -> None:
        """Raise NameTaken or RecordingUnavailable if the request's wiring cannot be made.

        The name the session being replaced publishes is not taken: it is
        the replacement's to reuse.
        """
        app = request.params.key.app
        if request.recv_stream_id is not None:
            taken = self.registry.find(app, request.recv_stream_id)
            mine = replacing is not None and replacing.device is taken
            if taken is not None and not taken.ended and not mine:
                raise NameTaken(app, request.recv_stream_id)
        if request.params.receive and self.record_dir is not None and not os.access(
            self.record_dir, os.W_OK | os.X_OK
        ):
            raise RecordingUnavailable(
                f"cannot record the device's audio in {self.record_dir}: it is not writable; "
                "check --record-dir"
            )

    def build(self, request: TalkRequest) -> Wiring:
        """The sinks for ``request`` (not yet published); RecordingUnavailable if a file fails."""
        wiring = Wiring(request)
        params = request.params
        if request.recv_stream_id is not None:
            wiring.device = DeviceAudioSource(params.key.app, request.recv_stream_id)
        if params.receive and self.record_dir is not None:
            key = params.key
            path = recording_path(self.record_dir, key.app, request.recv_stream_id or key.stream,
                                  key.ssrc, self.clock.seconds())
            try:
                wiring.recorder = WavRecorder(path)
            except OSError as error:
                raise RecordingUnavailable(
                    f"cannot record the device's audio to {path}: {error.strerror or error}; "
                    "check --record-dir"
                ) from None
        return wiring

    def publish(self, session_id: str, wiring: Wiring) -> None:
        """Publish the device's source; a name lost to a race leaves the session one-way."""
        device = wiring.device
        if device is None:
            return
        try:
            self.registry.add(device)
        except SourceError as error:
            log.warn("talk session {id}: device audio not published: {error}",
                     id=session_id, error=str(error))
            wiring.device = None
        else:
            wiring.published = True

    @staticmethod
    def discard(wiring: Wiring) -> None:
        """Undo a wiring whose session never started: close and delete the empty recording."""
        recorder = wiring.recorder
        if recorder is not None:
            recorder.audio_ended()
            with contextlib.suppress(OSError):
                os.remove(recorder.path)

    def unpublish(self, wiring: Wiring) -> None:
        """The session ended: remove its device source (the recorder closed itself as a sink)."""
        device = wiring.device
        if wiring.published and device is not None and (
            self.registry.find(device.app, device.stream) is device
        ):
            self.registry.remove(device.app, device.stream)
