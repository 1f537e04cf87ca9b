"""Wires the port pool, talk sessions, sources, webhooks and the HTTP API into one twistd service.

``twistd -n gbtalk`` runs :class:`GbTalkService` with the settings of
:class:`Options` (embedded defaults, ``--config`` TOML, then the command
line).  A bad option prints one line on stderr and exits with status 2; a
listener that cannot start (the API port in use) is one log line and exit
status 1.

:class:`GbTalkService` is one ``MultiService`` whose children start in the
order they were added and stop one at a time in the reverse order:

1. ``sources``: at stop, closes every source (RTP ingest ports, push sockets);
2. ``webhooks``: at stop, waits up to :data:`HOOK_DRAIN_SECONDS` for the
   last webhooks (their URLs come from ``--hook-url`` or a platform's
   ``setServerConfig``);
   with ``--sip``, then ``SIP`` (at stop, ends the SIP transactions and the
   registry's timers) and one ``SIP <UDP|TCP|SSL> <endpoint>`` listener per
   ``--sip``: before the talk sessions, so they stop after them (BYEs go out);
3. ``talk sessions``: at stop, ends every talk session with reason
   ``shutdown`` and waits for its talk port to close;
4. ``node events``: ZLMediaKit's ``on_server_started`` (a reactor turn after
   start, once the API listens), ``on_server_keepalive`` every
   ``--alive-interval`` and ``on_stream_changed``; at stop, no more of them;
5. ``HTTP API <endpoint>``: listens on the ``--api`` endpoint (``tcp:``,
   ``ssl:``, ...); stops first, so no request arrives while sessions end.

So a stop (SIGTERM, ``twistd`` stop) stops accepting API requests, ends the
sessions with ``shutdown``, drains the webhooks and closes the sources; after
SIGTERM the process exits with status 0.  A new listener (SIP over UDP or
TCP) is one more :class:`ListeningService` added after the talk sessions, see
:meth:`GbTalkService.add_listener`.
"""

from __future__ import annotations

import gc
import resource
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from gb28181talk.config import (
    DEFAULT_API,
    DEFAULT_KEEPALIVE_EXPIRY,
    DEFAULT_SERVER_ID,
    DEFAULT_SIP_ID,
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
from gb28181talk.core.ports import DEFAULT_PORT_RANGE, PortPool, warn_ephemeral_overlap
from gb28181talk.core.talk import TalkControl
from gb28181talk.sip.broadcast import Broadcasts
from gb28181talk.sip.calls import CallFlows
from gb28181talk.sip.platform import SipPlatform
from gb28181talk.sip.registry import Registry
from gb28181talk.sip.talk import Talks
from gb28181talk.sip.transport import listen_sip
from gb28181talk.sources.file import DEFAULT_FILE_MEMORY
from gb28181talk.sources.registry import SourceRegistry
from gb28181talk.web.common import Authenticator
from gb28181talk.web.hooks import HookDeliverer
from gb28181talk.web.metrics import Metrics
from gb28181talk.web.root import build_root, build_site
from gb28181talk.web.zlm_events import NodeEvents
from gb28181talk.web.zlm_node import DEFAULT_ALIVE_INTERVAL, DEFAULT_SCHEMAS, NodeSettings
from gb28181talk.web.zlm_rtp import announce_rtp_timeouts
from gb28181talk.web.zlm_streams import StreamView
from gb28181talk.workers.manager import WorkerManager, WorkersService

log = Logger()

USAGE_ERROR_STATUS = 2
"""Exit status for bad options (as argparse and most Unix tools use)."""

START_FAILURE_STATUS = 1
"""Exit status when a listener cannot start (a port in use): twistd's own for a failed start."""

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
        ["max-file-memory", None, None,
         "MiB that all file sources' decoded audio may hold, loaded and loading; a file that "
         f"does not fit is refused [default: {DEFAULT_FILE_MEMORY // 2**20}]."],
        ["workers", None, None,
         "Media worker processes that run the talk sessions (one per core suits a big "
         "server); 1 runs everything in this one process [default: 1]."],
        ["server-id", None, None,
         f"mediaServerId reported in webhooks [default: {DEFAULT_SERVER_ID}]."],
        ["alive-interval", None, None,
         "Seconds between on_server_keepalive webhooks (ZLMediaKit's hook.alive_interval) "
         f"[default: {DEFAULT_ALIVE_INTERVAL:g}]."],
        ["stream-schemas", None, None,
         "Schemas each audio source is a stream under in getMediaList and on_stream_changed, "
         f"'/'-separated [default: {'/'.join(DEFAULT_SCHEMAS)}]."],
        ["node-hooks", None, None,
         "yes: also POST on_server_started, on_server_keepalive and on_stream_changed to "
         "<--hook-url>/<name>, so a ZLMediaKit-speaking platform adopts this node after "
         "every restart [default: no]."],
        ["sip-id", None, None,
         f"The platform's 20-digit GB28181 ID [default: {DEFAULT_SIP_ID}]."],
        ["sip-domain", None, None,
         "The 10-digit SIP domain (digest realm) [default: the first 10 digits of --sip-id]."],
        ["sip-password", None, None,
         "Devices' default digest password (per device: [sip-passwords] in the config file) "
         "[default: empty, devices register without digest]."],
        ["sip-advertise", None, None,
         "Address devices reach our SIP at (Contact, Via; the SDP carries the media "
         "address, --advertise-ip) [default: the advertise IP]."],
        ["keepalive-expiry", None, None,
         "Seconds without a keepalive before a device is offline "
         f"[default: {DEFAULT_KEEPALIVE_EXPIRY:g}, 3 x the 60 s keepalive interval]."],
    ]

    def opt_sip(self, endpoint: str) -> None:
        """SIP listener, repeatable: udp:5060, tcp:5060, ssl:5061:privateKey=...
        [default: none, SIP is off]."""
        self.setdefault("sip", []).append(endpoint)

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
            self.config = build_config({name: self.get(name) for name in OPTION_NAMES},
                                       file_values)
            for sip in self.config.sip:
                if not sip.lower().startswith("udp:"):
                    check_endpoint(sip, option="--sip")
        except ConfigError as error:
            raise usage.UsageError(str(error)) from None


def check_endpoint(description: str, reactor: Any = None, option: str = "--api") -> None:
    """Build an endpoint once now, so a bad string or TLS file is an option error."""
    if reactor is None:
        from twisted.internet import reactor
    try:
        serverFromString(reactor, description)
    except Exception as error:  # ValueError, KeyError, OpenSSL and file errors alike
        detail = str(error) or type(error).__name__
        raise ConfigError(
            f"{option} {description!r} is not a usable Twisted server endpoint: {detail} "
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


class CannotStart(Exception):
    """A child service could not start (e.g. its port is in use); the message is one line."""


class ListeningService(Service):
    """Listens while running: one endpoint of the HTTP API (later SIP over UDP or TCP).

    As Twisted's ``StreamServerEndpointService``, but ``listen`` is any call
    returning a Deferred port (a stream endpoint's ``listen``, or a UDP
    listen wrapped in ``maybeDeferred``), a refusal raises :class:`CannotStart`
    with one line saying what failed instead of a traceback, and the port is
    kept in ``port`` for ``getHost()``.
    """

    def __init__(
        self, what: str, description: str, listen: Callable[[], Deferred[IListeningPort]]
    ) -> None:
        self.what = what
        self.description = description
        self.listen = listen
        self.port: IListeningPort | None = None
        self._listening: Deferred[Any] | None = None
        self._refusal: str | None = None
        self._starting = False
        self.setName(f"{what} {description}")

    def privilegedStartService(self) -> None:
        """Listen before twistd sheds privileges (ports below 1024)."""
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        """Listen now unless privilegedStartService already did (a service started in-process)."""
        super().startService()
        if self._listening is None:
            self._listen()

    def _listen(self) -> None:
        self._starting = True
        try:
            self._listening = self.listen()
            self._listening.addCallbacks(self._listened, self._refused)
        finally:
            self._starting = False
        if self._refusal is not None:
            raise CannotStart(self._refusal)
        if self.port is None:
            log.warn("the {what} on {description} is not listening yet",
                     what=self.what, description=self.description)

    def _listened(self, port: IListeningPort) -> None:
        self.port = port
        address = port.getHost()
        log.info("{what} listening on {address} ({description})", what=self.what,
                 address=f"{getattr(address, 'host', address)}:{getattr(address, 'port', '')}",
                 description=self.description)

    def _refused(self, failure: Failure) -> None:
        if failure.check(CancelledError):
            return
        self._refusal = (f"cannot start the {self.what} on {self.description}: "
                         f"{failure.getErrorMessage()}")
        if not self._starting:  # refused later, after start-up: nobody else says it
            log.critical("{message}", message=self._refusal)

    def stopService(self) -> Deferred[None]:
        """Stop listening (connections already accepted stay until they end)."""
        super().stopService()
        listening, self._listening = self._listening, None
        port, self.port = self.port, None
        if listening is not None and port is None:
            listening.cancel()  # a listen still under way
        if port is None:
            return succeed(None)
        return maybeDeferred(port.stopListening).addCallback(lambda _: None)


class ShutdownStep(Service):
    """A child service whose stop is one step of the shutdown (its name says which)."""

    def __init__(self, name: str, step: Callable[[], Awaitable[None]]) -> None:
        self.step = step
        self.setName(name)

    def stopService(self) -> Deferred[None]:
        """Run the step; the next child stops once it is done."""
        super().stopService()
        return Deferred.fromCoroutine(self._run())

    async def _run(self) -> None:
        await self.step()


class GbTalkService(MultiService):
    """The running service: pool, pacer, sessions, sources, hooks, metrics and the HTTP API.

    Children start in the order added and stop one at a time, last added first
    (see the module's docstring for the tree and why that order).
    """

    def __init__(
        self,
        config: ServiceConfig,
        reactor: Any,
        *,
        own_sigterm: bool = False,
        freeze_heap: bool = False,
        exit_on_start_failure: bool = False,
    ) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.own_sigterm = own_sigterm
        self.freeze_heap = freeze_heap
        low, high = config.port_range
        self.pool = PortPool(reactor, low, high, config.media_interface)
        self.pacer = Pacer(reactor)
        self.workers: WorkerManager | None = None
        if config.workers > 1:  # the media plane in worker processes (gb28181talk.workers)
            self.workers = WorkerManager(reactor, self.pool, self.pacer, workers=config.workers)
        self.manager: Any = self.workers or SessionManager(reactor, self.pool, self.pacer)
        self.manager.add_observer(LoggingObserver())
        self.registry = SourceRegistry(
            media_root=config.media_dir, max_file_memory=config.max_file_memory
        )
        self.advertise_ip = config.advertise_ip or _default_advertise_ip(config.media_interface)
        self.control = TalkControl(
            reactor, self.manager, self.registry,
            record_dir=config.record_dir, advertise_ip=self.advertise_ip,
        )
        # The ZLMediaKit settings (hook URLs from --hook-url, or pushed by setServerConfig)
        # decide where every hook goes; one deliverer sends them all.
        self.node = NodeSettings(
            self.pool, server_id=config.server_id, hook_url=config.hook_url, api=config.api,
            alive_interval=config.alive_interval, schemas=config.stream_schemas,
            node_hooks=config.node_hooks,
        )
        self.node.http_port = lambda: getattr(self.api_port and self.api_port.getHost(),
                                              "port", None)
        self.hooks: HookDeliverer = HookDeliverer(reactor, config.hook_url or "",
                                                  server_id=config.server_id)
        self.node.bind(self.hooks)
        announce_rtp_timeouts(self.control.rtp_servers, self.node, self.hooks)
        self.manager.add_observer(self.hooks)
        self.metrics = Metrics(self.manager, self.registry, self.hooks)
        self.manager.add_observer(self.metrics)
        # GB28181 over SIP (--sip): the platform's TU and its registrar; None when SIP is off.
        self.sip: SipPlatform | None = None
        self.devices: Registry | None = None
        self.broadcasts: Broadcasts | None = None
        self.talks: Talks | None = None
        if config.sip:
            self.sip = SipPlatform(reactor, platform_id=config.sip_id, domain=config.sip_domain,
                                   advertise=config.sip_advertise or self.advertise_ip)
            self.devices = Registry(self.sip, passwords=dict(config.sip_passwords),
                                    default_password=config.sip_password,
                                    keepalive_expiry=config.keepalive_expiry)
            self.metrics.devices = self.devices
            # Broadcast (the device's INVITE) and talk (ours): the platform's invite handler.
            self.broadcasts = Broadcasts(reactor, self.sip, self.control,
                                         advertise_ip=self.advertise_ip,
                                         channels_of=self.devices.channel_ids)
            self.talks = Talks(self.sip, self.control, advertise_ip=self.advertise_ip,
                               domain=config.sip_domain, channels_of=self.devices.channel_ids)
            self.sip.invite_handler = CallFlows(self.broadcasts, self.talks)
        auth = Authenticator(config.secret)
        self.site = build_site(
            build_root(auth, self.control, self.metrics, reactor, config.wait_timeout, self.node,
                       devices=self.devices, broadcasts=self.broadcasts, talks=self.talks)
        )
        self.exit_on_start_failure = exit_on_start_failure
        ShutdownStep("sources", self._close_sources).setServiceParent(self)
        ShutdownStep("webhooks", self._drain_hooks).setServiceParent(self)
        # SIP stops after the talk sessions end (their BYEs still go out), before the webhooks.
        self.sip_services: list[ListeningService] = []
        if self.sip is not None:
            ShutdownStep("SIP", self._stop_sip).setServiceParent(self)
            self.sip_services = [
                self.add_listener(f"SIP {sip.split(':', 1)[0].upper()}", sip,
                                  partial(listen_sip, reactor, sip, self.sip.transactions))
                for sip in config.sip
            ]
        if self.workers is not None:  # up before the API; stopped once the sessions ended
            WorkersService(self.workers).setServiceParent(self)
        ShutdownStep("talk sessions", self._end_sessions).setServiceParent(self)
        # Before the listeners, so it stops after them (no keepalive says "up" once the API
        # is closed); it sends on_server_started a turn after start, once the API listens.
        self.node_events = NodeEvents(
            reactor, self.node, self.hooks, StreamView(self.control, lambda: self.node.schemas))
        self.node_events.setServiceParent(self)
        self.api_services = [
            self.add_listener("HTTP API", api, partial(serverFromString(reactor, api).listen,
                                                       self.site))
            for api in [config.api]
        ]

    def add_listener(
        self, what: str, description: str, listen: Callable[[], Deferred[IListeningPort]]
    ) -> ListeningService:
        """Add a listener as the next child (it stops before every child added earlier).

        A SIP UDP listener, say, is ``self.add_listener("SIP UDP", "udp:5060",
        lambda: maybeDeferred(reactor.listenUDP, 5060, sip, interface=...))``.
        """
        child = ListeningService(what, description, listen)
        child.setServiceParent(self)
        return child

    @property
    def api_port(self) -> IListeningPort | None:
        """The (first) HTTP API listening port, None until it listens."""
        return self.api_services[0].port

    def privilegedStartService(self) -> None:
        """Listen on every endpoint (before twistd sheds privileges)."""
        self._failing_start_exits(super().privilegedStartService)

    def startService(self) -> None:
        """Start the children in order, then log the settings the service runs with."""
        self._report_limits()
        self._failing_start_exits(super().startService)
        if self.own_sigterm:
            self.reactor.callWhenRunning(self._take_sigterm)
        if self.freeze_heap:
            self.reactor.callWhenRunning(self._freeze_heap)
        log.info(
            "gb28181talk started: API on {api}; talk ports {low}-{high} on {interface}, "
            "advertised as {advertise}; device wait {wait:g} s{secret}{hooks}",
            api=", ".join(child.description for child in self.api_services),
            low=self.pool.low, high=self.pool.high,
            interface=self.pool.interface or "all interfaces", advertise=self.advertise_ip,
            wait=self.config.wait_timeout,
            secret=", secret required" if self.config.secret else "",
            hooks=f", webhooks to {self.config.hook_url}" if self.config.hook_url else "",
        )
        if self.sip is not None:
            log.info(
                "GB28181 platform {sip_id} (domain {domain}) on SIP {endpoints}, advertised as "
                "{advertise}; digest {auth}; offline after {expiry:g} s without a keepalive",
                sip_id=self.config.sip_id, domain=self.config.sip_domain,
                endpoints=", ".join(self.config.sip), advertise=self.sip.advertise,
                auth="required" if self.config.sip_password or self.config.sip_passwords
                else "off (no --sip-password)",
                expiry=self.config.keepalive_expiry,
            )

    def _failing_start_exits(self, start: Callable[[], None]) -> None:
        """Run ``start``; under twistd a CannotStart is one log line and exit status 1."""
        try:
            start()
        except CannotStart as refused:
            if not self.exit_on_start_failure:
                raise
            log.critical("{message}", message=str(refused))  # twistd -n logs to stderr too
            raise SystemExit(START_FAILURE_STATUS) from None

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
        warn_ephemeral_overlap(self.pool.low, self.pool.high)

    def stopService(self) -> Deferred[None]:
        """Stop the children one at a time, last added first (MultiService stops them at once)."""
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop_children())

    async def _stop_children(self) -> None:
        for child in reversed(list(self)):
            if child.running:
                await maybeDeferred(child.stopService)
        log.info("gb28181talk stopped")

    async def _end_sessions(self) -> None:
        """End every talk session with reason ``shutdown``; their talk ports close."""
        live = len(self.manager.sessions())
        log.info("shutting down: ending {count} talk session(s) with reason shutdown", count=live)
        self.control.rtp_servers.close_all()  # their ports too, before the pool is awaited
        await self.manager.shutdown()

    async def _stop_sip(self) -> None:
        """End the SIP transactions and the registry's timers (the listeners are closed)."""
        if self.devices is not None:
            self.devices.shutdown()
        if self.sip is not None:
            self.sip.shutdown()

    async def _drain_hooks(self) -> None:
        """Wait briefly for the webhooks in flight (the ``shutdown`` endings among them)."""
        if self.hooks is not None and self.hooks.pending:
            await self.hooks.drain(HOOK_DRAIN_SECONDS)

    async def _close_sources(self) -> None:
        """Close every source: RTP ingest ports, push sockets, file readers."""
        self.registry.close_all()


def _default_advertise_ip(interface: str) -> str:
    """The media interface when it is one address, else this host's outward address."""
    if interface and interface not in ("0.0.0.0", "::"):
        return interface
    return outward_address()


def makeService(options: Options) -> IService:
    """Build the service tree from parsed options."""
    from twisted.internet import reactor

    return GbTalkService(options.config, reactor, own_sigterm=True, freeze_heap=True,
                         exit_on_start_failure=True)
