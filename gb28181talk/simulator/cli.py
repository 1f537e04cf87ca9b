"""``gb28181talk-device``: one or many simulated GB28181 devices from the command line.

Each device gets its own SIP socket (UDP) or connection (TCP) to the server, registers,
keeps alive, and answers broadcasts and talk calls until ``--duration`` seconds pass,
``--exit-after-calls`` calls ended on every device, or Ctrl-C; then it hangs up (BYE) and
unregisters.  Exit status: 0, or 1 when ``--expect-audio`` was given and a device heard
none (or no device registered), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks

from gb28181talk.simulator.options import CODECS, DeviceConfig, MediaMode, Quirks
from gb28181talk.simulator.ua import DeviceUA
from gb28181talk.sip.transport import SipDatagramProtocol, SipStreamFactory

__all__ = ["build_parser", "config_from", "main"]

STOP_GRACE_SECONDS = 3.0
"""How long hang-ups and the unregister may take on exit."""

_QUIRKS = {
    "wrong_ssrc": "the RTP it sends carries an SSRC other than y=",
    "no_ssrc": "its offers and answers carry no y= line",
    "no_prefix": "its RTP over TCP has no RFC 4571 length prefix",
    "ps_voice": "it talks back in MPEG-PS (PT 96) whatever was agreed",
    "connect_before_ack": "connect to the platform's port on the 200, ACK once connected",
    "never_connect": "never open the media connection it offered",
    "slow_read": "read the media connection slowly (small buffer, one read each 2 s)",
    "no_broadcast_response": "answer Notify/Broadcast with 200 but no Response/Broadcast",
    "invent_nonce": "answer the digest challenge with a nonce of its own",
    "retransmit_invite": "send each INVITE twice",
    "rtcp": "send RTCP receiver reports on the media connection every 5 s",
}


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def _digits(length: int) -> Any:
    def check(text: str) -> str:
        if len(text) != length or not text.isdigit():
            raise argparse.ArgumentTypeError(f"{text!r} is not {length} decimal digits")
        return text

    return check


def _positive(kind: type) -> Any:
    def check(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not above 0")
        return value

    return check


def build_parser() -> argparse.ArgumentParser:
    """The command line's options."""
    p = argparse.ArgumentParser(
        prog="gb28181talk-device",
        description="A simulated GB28181 device: registers, keeps alive, answers catalog, "
        "broadcast (writes what it hears to a WAV) and two-way talk (sends a tone back).",
    )
    p.add_argument("--id", default="34020000001320000001", type=_digits(20),
                   help="device ID (20 digits; --count adds to its last 6)")
    p.add_argument("--domain", default="3402000000", type=_digits(10), help="SIP domain")
    p.add_argument("--password", default="12345678", help="digest password")
    p.add_argument("--server", default=("127.0.0.1", 5060), type=_host_port,
                   help="the platform's SIP address, HOST:PORT (default 127.0.0.1:5060)")
    p.add_argument("--server-id", default="34020000002000000001", type=_digits(20),
                   help="the platform's SIP ID")
    p.add_argument("--sip", choices=("udp", "tcp"), default="udp", help="SIP transport")
    p.add_argument("--local-ip", default=None,
                   help="address for Via, Contact and SDP (default: the one that reaches "
                   "the server)")
    p.add_argument("--local-port", default=0, type=int,
                   help="SIP UDP port of the first device (default: any)")
    p.add_argument("--expires", default=3600, type=_positive(int), help="REGISTER Expires")
    p.add_argument("--keepalive", default=60.0, type=_positive(float),
                   help="seconds between keepalives")
    p.add_argument("--mode", choices=[m.value for m in MediaMode], default="tcp-active",
                   help="broadcast media: tcp-active (device connects, a=setup:active), "
                   "tcp-passive (device listens), udp (RTP/AVP)")
    p.add_argument("--codec", choices=sorted(CODECS), default="pcma", help="offered codec")
    p.add_argument("--ssrc", default=None, type=int, help="y= of broadcast offers")
    p.add_argument("--packet-ms", default=20, type=int, help="talk-back packet duration")
    p.add_argument("--tone", default=1000.0, type=_positive(float),
                   help="talk-back tone frequency (Hz)")
    p.add_argument("--talk-wav", default=None, help="talk back with this WAV instead of a tone")
    p.add_argument("--wav-dir", default=".", help="where to write what each call heard")
    p.add_argument("--call-seconds", default=None, type=_positive(float),
                   help="hang up (BYE) this long after a call's media started")
    p.add_argument("--duration", default=None, type=_positive(float),
                   help="run this long, then hang up, unregister and exit")
    p.add_argument("--exit-after-calls", default=None, type=_positive(int),
                   help="exit once this many calls ended on every device")
    p.add_argument("--report-seconds", default=2.0, type=float,
                   help="print each call's figures this often (0: only at the end)")
    p.add_argument("--expect-audio", action="store_true",
                   help="exit 1 unless every device heard audio")
    p.add_argument("--count", default=1, type=_positive(int),
                   help="play this many devices (IDs in sequence)")
    quirks = p.add_argument_group("quirks of real firmware")
    for name, text in _QUIRKS.items():
        quirks.add_argument("--" + name.replace("_", "-"), action="store_true", help=text)
    return p


def local_address(server: tuple[str, int]) -> str:
    """The local address the kernel would use to reach ``server`` (no packet is sent)."""
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(server)
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def config_from(args: argparse.Namespace) -> DeviceConfig:
    """The first device's configuration from parsed arguments."""
    if args.packet_ms < 20 or args.packet_ms > 180 or args.packet_ms % 20:
        raise ValueError(f"--packet-ms {args.packet_ms}: use 20 to 180 in steps of 20")
    if args.ssrc is not None and not 0 <= args.ssrc < 2**32:
        raise ValueError(f"--ssrc {args.ssrc} is not 0-4294967295")
    return DeviceConfig(
        device_id=args.id,
        domain=args.domain,
        password=args.password,
        server=args.server,
        server_id=args.server_id,
        sip_transport=args.sip,
        local_host=args.local_ip or local_address(args.server),
        expires=args.expires,
        keepalive=args.keepalive,
        mode=MediaMode(args.mode),
        codec=args.codec,
        ssrc=args.ssrc,
        packet_ms=args.packet_ms,
        tone_hz=args.tone,
        talk_wav=args.talk_wav,
        wav_dir=args.wav_dir,
        call_seconds=args.call_seconds,
        report_seconds=args.report_seconds,
        quirks=Quirks(**{name: getattr(args, name) for name in _QUIRKS}),
    )


def _say(line: str) -> None:
    print(line, flush=True)


@inlineCallbacks
def open_device(reactor: Any, config: DeviceConfig, local_port: int = 0) -> Any:
    """A device's SIP socket or connection and its UA, started (REGISTER sent)."""
    host, port = config.server
    if config.sip_transport == "udp":
        protocol = SipDatagramProtocol(None)  # type: ignore[arg-type]
        listening = reactor.listenUDP(local_port, protocol, interface=config.local_host)
        channel: Any = protocol.channel_to((host, port))
        bound = int(listening.getHost().port)
    else:
        from twisted.internet.endpoints import TCP4ClientEndpoint

        endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=5)
        stream = yield endpoint.connect(SipStreamFactory(None))  # type: ignore[arg-type]
        channel = protocol = stream
        listening = None
        bound = int(stream.transport.getHost().port)
    ua = DeviceUA(reactor, config, channel, bound, say=_say)
    protocol.receiver = ua.layer.transactions
    ua.sip_port = listening
    ua.start()
    return ua


class Run:
    """Every device of one process, and when to stop them."""

    def __init__(self, reactor: Any, args: argparse.Namespace, config: DeviceConfig) -> None:
        self.reactor = reactor
        self.args = args
        self.config = config
        self.devices: list[DeviceUA] = []
        self.stopping: Deferred[None] | None = None

    @inlineCallbacks
    def start(self) -> Any:
        """Open every device, one after the other (ports in sequence when one was given)."""
        for index in range(self.args.count):
            port = self.args.local_port + index if self.args.local_port else 0
            try:
                ua = yield open_device(self.reactor, self.config.numbered(index), port)
            except Exception as error:
                _say(f"device {index + 1}: cannot open its SIP transport: {error}")
                continue
            ua.on_call_ended = self._call_ended
            self.devices.append(ua)
        if not self.devices:
            self.finish()
            return
        if self.args.duration is not None:
            self.reactor.callLater(self.args.duration, self.finish)

    def _call_ended(self, call: Any) -> None:
        wanted = self.args.exit_after_calls
        if wanted is None or len(self.devices) != self.args.count:
            return
        if all(len(ua.ended_calls) >= wanted for ua in self.devices):
            self.reactor.callLater(0, self.finish)

    def stop_devices(self) -> Deferred[None]:
        """Hang up and unregister every device, within ``STOP_GRACE_SECONDS``."""
        if self.stopping is not None:
            return self.stopping
        done: Deferred[None] = Deferred()
        self.stopping = done
        waits = DeferredList([ua.stop() for ua in self.devices], consumeErrors=True)

        def release() -> None:
            if not done.called:
                for ua in self.devices:
                    ua.close()
                done.callback(None)

        timer = self.reactor.callLater(STOP_GRACE_SECONDS, release)

        def finished(_: object) -> None:
            if timer.active():
                timer.cancel()
            # let the last BYEs and their answers cross before the sockets close
            self.reactor.callLater(0.2, release)

        waits.addBoth(finished)
        return done

    def finish(self) -> None:
        """Stop the devices, then the reactor."""
        if self.reactor.running:
            self.reactor.stop()  # the shutdown trigger stops the devices first

    def exit_status(self) -> int:
        """0, or 1 when audio was expected and a device heard none, or none registered."""
        registered = [ua for ua in self.devices if ua.registered_once.called]
        if not self.devices or not any(ua.registered_once.result for ua in registered):
            _say("no device registered")
            return 1
        if self.args.expect_audio:
            deaf = [ua.device_id for ua in self.devices if not ua.heard_audio]
            if deaf:
                _say(f"no audio heard by {len(deaf)} of {len(self.devices)} devices: "
                     f"{', '.join(deaf[:5])}{' ...' if len(deaf) > 5 else ''}")
                return 1
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the devices until done; the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from(args)
    except ValueError as error:
        print(f"gb28181talk-device: {error}", file=sys.stderr)
        return 2
    from twisted.internet import reactor as default_reactor

    reactor: Any = default_reactor
    run = Run(reactor, args, config)
    reactor.addSystemEventTrigger("before", "shutdown", run.stop_devices)
    reactor.callWhenRunning(run.start)
    reactor.run()
    return run.exit_status()
