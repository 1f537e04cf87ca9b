"""GStreamer plays the device: it dials the talk port, depayloads RFC 4571 PCMA, writes a WAV."""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from gb28181talk.core.manager import SessionManager
from gb28181talk.core.params import SessionKey, SessionParams
from gb28181talk.core.ports import PortPool
from gb28181talk.media.wav import read_wav
from gb28181talk.sources.tone import ToneSource
from tests.audiocheck import dominant_frequency, tone_power
from tests.conftest import require_program
from tests.netutil import free_port_range


class GStreamerDeviceTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.gst = require_program("gst-launch-1.0")
        low, high = free_port_range(3)
        self.manager = SessionManager(reactor, PortPool(reactor, low, high, "127.0.0.1"))

    def tearDown(self):
        return self.manager.shutdown()

    @inlineCallbacks
    def test_gstreamer_hears_the_tone(self):
        source = ToneSource("live", "tone", frequency=1000, amplitude=0.5, duration=1.5)
        session = self.manager.start(
            SessionParams(key=SessionKey("v", "live", "tone", 1), wait_timeout=10), source
        )
        folder = tempfile.mkdtemp(prefix="gbtalk-gst-")
        self.addCleanup(shutil.rmtree, folder, True)
        out = os.path.join(folder, "heard.wav")
        pipeline = (
            f"tcpclientsrc host=127.0.0.1 port={session.port} ! "
            "application/x-rtp-stream,media=audio,clock-rate=8000,encoding-name=PCMA,payload=8 ! "
            "rtpstreamdepay ! rtppcmadepay ! alawdec ! audioconvert ! "
            f"audio/x-raw,format=S16LE,channels=1,rate=8000 ! wavenc ! filesink location={out}"
        )
        _output, errors, code = yield getProcessOutputAndValue(
            self.gst, ["-q", *pipeline.split()], env=os.environ
        )
        self.assertEqual(code, 0, errors.decode(errors="replace"))
        self.assertEqual(session.end_reason, "source-ended")
        audio = read_wav(out)
        self.assertEqual((audio.sample_rate, audio.channels), (8000, 1))
        seconds = len(audio.data) / 2 / 8000
        self.assertGreater(seconds, 1.4, "the whole 1.5 s tone arrived (pre-roll included)")
        self.assertEqual(dominant_frequency(audio.data, range(200, 3800, 50)), 1000)
        self.assertGreater(tone_power(audio.data, 1000), 100 * tone_power(audio.data, 1500))
