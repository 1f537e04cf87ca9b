"""Wires the port pool, talk sessions, sources, webhooks and the HTTP API into one twistd service.

``twistd -n gbtalk`` runs :class:`GbTalkService` with the settings of
:class:`Options` (embedded defaults, ``--config`` TOML, then the command
line).  A bad option prints one line on stderr and exits with status 2.
Stopping the service (SIGTERM, ``twistd`` stop) ends every talk session
with reason ``shutdown``, waits briefly for their webhooks, then closes the
sources and the API; after SIGTERM the process exits with status 0.
"""

from __future__ import annotations

import gc
import resource
import signal
import socket
import sys
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from gb28181talk.config import (
    DEFAULT_API,
    DEFAULT_SERVER_ID,
    DEFAULT_WAIT_TIMEOUT,
    OPTION_NAMES,
    ConfigError,
    ServiceConfig,
    build_config,
    load_toml,
)
from gb28181talk.core.manager import SessionManager
from gb28181talk.core.observers import LoggingObserver
from gb28181talk.core.pacer import Pacer
from gb28181talk.core.ports import DEFAULT_PORT_RANGE, PortPool, ephemeral_overlap
from gb28181talk.core.talk import TalkControl
from gb28181talk.sources.registry import SourceRegistry
from gb28181talk.web.common import Authenticator
from gb28181talk.web.hooks import HookDeliverer
from gb28181talk.web.metrics import Metrics
from gb28181talk.web.root import build_root, build_site

log = Logger()

USAGE_ERROR_STATUS = 2
"""Exit status for bad options (as argparse and most Unix tools use)."""

HOOK_DRAIN_SECONDS = 3.0
"""How long shutdown waits for the last webhooks (the ``shutdown`` endings)."""

FD_HEADROOM = 64
"""Descriptors kept for the API, logs, sources and recordings when estimating capacity."""


class Options(usage.Options):
    """Command-line options of ``twistd gbtalk``; ``self.config`` holds the checked settings."""

    synopsis = "[options]"
    longdesc = (
        "GB28181 voice broadcast and two-way talk over TCP passive mode, with a "
        "ZLMediaKit-compatible HTTP API (/index/api/startSendRtpPassive ...), a native JSON "
        "API under /api/ and Prometheus metrics at /metrics. Every option can also be set in "
        "the TOML file given by --config (e.g. wait-timeout = 3); the command line wins."
    )
    optParameters = [
        ["config", None, None, "TOML file with any of the settings below."],
        ["api", None, None,
         f"Twisted server endpoint of the HTTP API [default: {DEFAULT_API}]; "
         "e.g. ssl:8443:privateKey=key.pem:certKey=cert.pem for HTTPS."],
        ["port-range", None, None,
         f"Talk ports LO-HI [default: {DEFAULT_PORT_RANGE[0]}-{DEFAULT_PORT_RANGE[1]}]."],
        ["media-interface", None, None,
         "Address the talk ports listen on [default: all interfaces]."],
        ["advertise-ip", None, None,
         "Address devices reach the talk ports at (for SDP) [default: the media interface, "
         "else this host's outward address]."],
        ["wait-timeout", None, None,
         f"Seconds to wait for the device to connect [default: {DEFAULT_WAIT_TIMEOUT:g}]."],
        ["secret", None, None,
         "API secret (as ZLMediaKit's api.secret); required for an API beyond loopback."],
        ["hook-url", None, None,
         "Base URL of the webhooks: on_send_rtp_stopped is POSTed to <URL>/on_send_rtp_stopped."],
        ["record-dir", None, None, "Directory to record device audio of two-way talk to (WAV)."],
        ["media-dir", None, None,
         "Confine file sources to this directory [default: any file the service can read]."],
        ["server-id", None, None,
         f"mediaServerId reported in webhooks [default: {DEFAULT_SERVER_ID}]."],
    ]

    exit_on_error = True
    """Print one line and exit 2 on a bad option (False: raise usage.UsageError, for tests)."""

    config: ServiceConfig

    def parseOptions(self, options: Any = None) -> None:
        try:
            super().parseOptions(options)
        except usage.UsageError as error:
            if not self.exit_on_error:
                raise
            message = str(error).replace("\n", " ")
            sys.stderr.write(f"twistd gbtalk: {message} (see twistd gbtalk --help)\n")
            sys.stderr.flush()
            raise SystemExit(USAGE_ERROR_STATUS) from None

    def parseArgs(self, *args: str) -> None:
        if args:
            raise usage.UsageError(
                f"unexpected argument {args[0]!r}: every setting is an option, e.g. --api"
            )

    def postOptions(self) -> None:
        try:
            file_values = load_toml(self["config"]) if self["config"] else {}
            api = self["api"] or file_values.get("api") or DEFAULT_API
            if isinstance(api, str):
                check_endpoint(api)
            self.config = build_config({name: self[name] for name in OPTION_NAMES}, file_values)
        except ConfigError as error:
            raise usage.UsageError(str(error)) from None


def check_endpoint(description: str, reactor: Any = None) -> None:
    """Build the API endpoint once now, so a bad string or TLS file is an option error."""
    if reactor is None:
        from twisted.internet import reactor
    try:
        serverFromString(reactor, description)
    except Exception as error:  # ValueError, KeyError, OpenSSL and file errors alike
        detail = str(error) or type(error).__name__
        raise ConfigError(
            f"--api {description!r} is not a usable Twisted server endpoint: {detail} "
            "(e.g. tcp:8080:interface=127.0.0.1 or ssl:8443:privateKey=key.pem:certKey=cert.pem)"
        ) from None


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft open-file limit as far as the hard limit allows; return (before, now)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
    if soft != resource.RLIM_INFINITY and target > soft:
        for candidate in (target, 1_048_576, 65_536):
            if candidate <= soft:
                break
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (candidate, hard))
            except (ValueError, OSError):
                continue
            return soft, candidate
    return soft, soft


def outward_address() -> str:
    """This host's address on its default route (no packet is sent), else 127.0.0.1."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1: a UDP connect only picks a route
        return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


class GbTalkService(MultiService):
    """The running service: pool, pacer, sessions, sources, hooks, metrics and the HTTP API."""

    def __init__(
        self,
        config: ServiceConfig,
        reactor: Any,
        *,
        own_sigterm: bool = False,
        freeze_heap: bool = False,
    ) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.own_sigterm = own_sigterm
        self.freeze_heap = freeze_heap
        low, high = config.port_range
        self.pool = PortPool(reactor, low, high, config.media_interface)
        self.pacer = Pacer(reactor)
        self.manager = SessionManager(reactor, self.pool, self.pacer)
        self.manager.add_observer(LoggingObserver())
        self.registry = SourceRegistry(media_root=config.media_dir)
        self.advertise_ip = config.advertise_ip or _default_advertise_ip(config.media_interface)
        self.control = TalkControl(
            reactor, self.manager, self.registry,
            record_dir=config.record_dir, advertise_ip=self.advertise_ip,
        )
        self.hooks: HookDeliverer | None = None
        if config.hook_url:
            self.hooks = HookDeliverer(reactor, config.hook_url, server_id=config.server_id)
            self.manager.add_observer(self.hooks)
        self.metrics = Metrics(self.manager, self.registry, self.hooks)
        self.manager.add_observer(self.metrics)
        auth = Authenticator(config.secret)
        self.site = build_site(
            build_root(auth, self.control, self.metrics, reactor, config.wait_timeout)
        )
        self.endpoint = serverFromString(reactor, config.api)
        self.api_port: Any = None

    def startService(self) -> None:
        super().startService()
        self._report_limits()
        if self.own_sigterm:
            self.reactor.callWhenRunning(self._take_sigterm)
        if self.freeze_heap:
            self.reactor.callWhenRunning(self._freeze_heap)
        outcome: list[Any] = []
        self.endpoint.listen(self.site).addBoth(outcome.append)
        if not outcome:
            log.warn("the HTTP API on {api} is not listening yet", api=self.config.api)
            return
        if isinstance(outcome[0], Failure):
            message = (f"cannot start the HTTP API on {self.config.api}: "
                       f"{outcome[0].getErrorMessage()}")
            log.critical("{message}", message=message)  # twistd -n logs stderr there too
            raise SystemExit(1)
        self.api_port = outcome[0]
        address = self.api_port.getHost()
        log.info(
            "gb28181talk API listening on {address} ({api}); talk ports {low}-{high} on "
            "{interface}, advertised as {advertise}; device wait {wait:g} s{secret}{hooks}",
            address=f"{getattr(address, 'host', address)}:{getattr(address, 'port', '')}",
            api=self.config.api, low=self.pool.low, high=self.pool.high,
            interface=self.pool.interface or "all interfaces", advertise=self.advertise_ip,
            wait=self.config.wait_timeout,
            secret=", secret required" if self.config.secret else "",
            hooks=f", webhooks to {self.hooks.url}" if self.hooks else "",
        )

    def _freeze_heap(self) -> None:
        """Move start-up's objects (Twisted, zope, our modules) out of the collector's sight.

        They are most of the heap and never die; a full collection that scans
        them pauses every session (measured: longest pause 25.9 -> 11.8 ms in
        benchmarks/soak.py). Only for the twistd service: a test process keeps
        creating and dropping services.
        """
        gc.collect()
        gc.freeze()
        log.info("heap frozen after start-up: {count} objects", count=gc.get_freeze_count())

    def _take_sigterm(self) -> None:
        """Make SIGTERM a requested stop: clean shutdown, then exit status 0.

        Twisted's own handler re-raises the signal after shutdown, so the
        process would end "killed by SIGTERM" even though it stopped cleanly.
        """

        def stop(signum: int, frame: Any) -> None:
            log.info("received SIGTERM, stopping")
            self.reactor.callFromThread(self.reactor.stop)

        signal.signal(signal.SIGTERM, stop)

    def _report_limits(self) -> None:
        before, now = raise_open_file_limit()
        self.metrics.open_file_limit = now
        room = max(now - FD_HEADROOM, 0)
        log.info(
            "open-file limit {limit} (was {before}): room for about {room} concurrent talk "
            "sessions, one descriptor each",
            limit=now, before=before, room=room,
        )
        if room < self.pool.size:
            log.warn(
                "the talk port range has {size} ports but the open-file limit allows about "
                "{room} sessions; raise the hard limit (ulimit -Hn) to use them all",
                size=self.pool.size, room=room,
            )
        overlap = ephemeral_overlap(self.pool.low, self.pool.high)
        if overlap is not None:
            log.info(
                "talk ports {low}-{high} overlap the ephemeral range used by outgoing "
                "connections; a port taken that way is skipped (bind retry)",
                low=overlap[0], high=overlap[1],
            )

    def stopService(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        live = len(self.manager.sessions())
        log.info("shutting down: ending {count} talk session(s) with reason shutdown", count=live)
        await self.manager.shutdown()
        if self.hooks is not None and self.hooks.pending:
            await self.hooks.drain(HOOK_DRAIN_SECONDS)
        self.registry.close_all()
        if self.api_port is not None:
            port, self.api_port = self.api_port, None
            await port.stopListening()
        await super().stopService()
        log.info("gb28181talk stopped")


def _default_advertise_ip(interface: str) -> str:
    """The media interface when it is one address, else this host's outward address."""
    if interface and interface not in ("0.0.0.0", "::"):
        return interface
    return outward_address()


def makeService(options: Options) -> IService:
    """Build the service tree from parsed options."""
    from twisted.internet import reactor

    return GbTalkService(options.config, reactor, own_sigterm=True, freeze_heap=True)
