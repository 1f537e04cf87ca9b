"""``gb28181talk-device`` as a child process against a platform double on loopback.

``--count 2`` registers two devices (IDs in sequence); each answers the broadcast notify,
places its INVITE, hears the tone and writes its WAV; ``--exit-after-calls 1`` ends the run
after the platform's BYE, and ``--expect-audio`` makes the exit status say whether audio came.
Bad arguments exit 2 with one line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.trial.unittest import TestCase

from gb28181talk.device.media import DeviceMedia
from gb28181talk.media import wav
from gb28181talk.signalling.manscdp import BroadcastNotify, build_xml
from gb28181talk.signalling.sdp import answer_for_offer, build_sdp, parse_sdp
from gb28181talk.sip.dialog import DialogLayer
from gb28181talk.sip.message import request
from gb28181talk.sip.transaction import Timers
from gb28181talk.sip.transport import SipDatagramProtocol, via_for
from tests.audiocheck import dominant_frequency
from tests.httpapi import until
from tests.test_simulator_loopback import TONE_HZ, _Speaker
from tests.test_simulator_ua import DEVICE_ID, PLATFORM_ID, REALM, Platform


class _Child(ProcessProtocol):
    def __init__(self) -> None:
        self.out = b""
        self.ended: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.out += data

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value.exitCode)


def test_bad_arguments_exit_2_with_one_line():
    done = subprocess.run(
        [sys.executable, "-m", "gb28181talk.simulator", "--packet-ms", "30"],
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "gb28181talk-device: --packet-ms 30: use 20 to 180 in steps of 20"
    ]


class CliTests(TestCase):
    """The platform double on a real UDP socket, the simulator as a child process."""

    timeout = 60

    def setUp(self) -> None:
        self.platform = Platform(reactor)
        self.layer = DialogLayer(
            reactor, self.platform, via=lambda ch: via_for(ch, "127.0.0.1", self.sip_port),
            timers=Timers(t1=0.1, t2=0.4, t4=0.5, d=1.0),
        )
        self.sip = SipDatagramProtocol(self.layer.transactions)
        self.listeners: list[Any] = [reactor.listenUDP(0, self.sip, interface="127.0.0.1")]
        self.sip_port = self.listeners[0].getHost().port
        self.wav_dir = tempfile.mkdtemp()

    @inlineCallbacks
    def tearDown(self):
        self.layer.transactions.shutdown()
        for listener in self.listeners:
            yield listener.stopListening()

    def _spawn(self, *args: str) -> _Child:
        child = _Child()
        argv = [sys.executable, "-m", "gb28181talk.simulator", "--server",
                f"127.0.0.1:{self.sip_port}", "--local-ip", "127.0.0.1", "--wav-dir",
                self.wav_dir, "--report-seconds", "0", *args]
        reactor.spawnProcess(child, sys.executable, argv, env=dict(os.environ))
        return child

    def _notify(self, device_id: str) -> None:
        channel = self.platform.registered[device_id]
        headers = [
            ("Via", via_for(channel, "127.0.0.1", self.sip_port)),
            ("From", f"<sip:{PLATFORM_ID}@{REALM}>;tag=n"),
            ("To", f"<sip:{device_id}@{REALM}>"),
            ("Call-ID", f"notify-{device_id}"),
            ("CSeq", "1 MESSAGE"),
            ("Max-Forwards", "70"),
            ("Content-Type", "Application/MANSCDP+xml"),
        ]
        target = device_id[:10] + "137" + device_id[13:]
        body = build_xml(BroadcastNotify(1, PLATFORM_ID, target))
        self.layer.send(request("MESSAGE", f"sip:{device_id}@{REALM}", headers, body), channel)

    @inlineCallbacks
    def _broadcast_to_two(self, *, speak: bool) -> Any:
        child = self._spawn("--count", "2", "--exit-after-calls", "1", "--expect-audio")
        second = DEVICE_ID[:-6] + "000002"
        yield Deferred.fromCoroutine(until(lambda: len(self.platform.registered) == 2, 15))
        self.assertEqual(sorted(self.platform.registered), [DEVICE_ID, second])
        factory = Factory.forProtocol(lambda: _Speaker(DeviceMedia()))
        if speak:
            listener = reactor.listenTCP(0, factory, interface="127.0.0.1")
            self.listeners.append(listener)
            port = listener.getHost().port
        else:
            port = 9
        for device_id in (DEVICE_ID, second):
            self._notify(device_id)
        yield Deferred.fromCoroutine(until(lambda: len(self.platform.invites) == 2, 15))
        for transaction, invite in self.platform.invites:
            answer = answer_for_offer(parse_sdp(invite.body), address="127.0.0.1", port=port,
                                      origin_user=PLATFORM_ID)
            self.layer.answer(transaction, contact=f"sip:{PLATFORM_ID}@127.0.0.1:{self.sip_port}",
                              headers=[("Content-Type", "application/sdp")],
                              body=build_sdp(answer).encode())
        yield Deferred.fromCoroutine(until(lambda: len(self.platform.confirmed) == 2, 15))
        waited = 1.5 if speak else 0.3
        yield Deferred.fromCoroutine(_sleep(waited))
        for dialog in list(self.platform.confirmed):
            self.layer.bye(dialog)
        status = yield child.ended
        return status, child.out.decode(), second

    @inlineCallbacks
    def test_two_devices_hear_the_broadcast_and_exit_0(self):
        status, out, second = yield self._broadcast_to_two(speak=True)
        self.assertEqual(status, 0, out)
        for device_id in (DEVICE_ID, second):
            path = os.path.join(self.wav_dir, f"{device_id}-broadcast-1.wav")
            pcm = wav.load_8k_mono(path)
            self.assertEqual(dominant_frequency(pcm, range(200, 2000, 100)), TONE_HZ)
        self.assertIn(f"{DEVICE_ID} broadcast 1: 50 packets, 0 lost", out)
        self.assertIn("unregistered", out)
        expires = [r.header("Expires") for r in self.platform.requests if r.method == "REGISTER"]
        self.assertEqual(expires.count("0"), 2)

    @inlineCallbacks
    def test_expect_audio_without_audio_exits_1(self):
        status, out, _second = yield self._broadcast_to_two(speak=False)
        self.assertEqual(status, 1, out)
        self.assertIn("no audio heard by 2 of 2 devices", out)


async def _sleep(seconds: float) -> None:
    waiter: Deferred[None] = Deferred()
    reactor.callLater(seconds, waiter.callback, None)
    await waiter

