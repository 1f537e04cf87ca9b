"""The GB28181 registrar: digest REGISTER, Expires, keepalives, online/offline, the catalog.

:class:`Registry` plugs into a :class:`~gb28181talk.sip.platform.SipPlatform`:
it takes its REGISTERs, its ``Keepalive`` and ``Catalog`` MESSAGEs, and tells
it where each device is (``platform.locate``).

* **REGISTER**: a device whose password (``passwords[id]``, else the default)
  is empty registers without digest.  Otherwise no credentials -> 401 with
  ``WWW-Authenticate: Digest realm="<domain>"``; a nonce we did not issue or
  unreadable credentials -> 401 again; an expired nonce with the right
  password -> 401 ``stale=true`` (RFC 7616 §3.3: the device retries with the
  new nonce, no password prompt); a wrong password (or username that is not
  the From user) against a nonce we issued -> 403: retrying cannot help, so
  we do not invite a retry loop.  ``Expires`` (header, or the Contact's
  ``expires``; default 3600): 0 unregisters; a re-REGISTER refreshes.  The
  200 carries ``Expires`` and ``Date`` (devices set their clock from it).
* **Keepalive** (``Notify/Keepalive``): 200 and ``last_keepalive``; from a
  device not registered, 404 (so it registers again).  A device is online
  while its REGISTER or keepalive is younger than ``keepalive_expiry``
  (default 3 x 60 s), offline after; its registration ends at its Expires.
* **Catalog**: after a device's first REGISTER (and whenever it registers
  with no channels known) the registry queries its catalog and gathers the
  ``Response/Catalog`` items, possibly over several MESSAGEs, until
  ``SumNum``; the audio output channels (type 137) are its broadcast targets.

Every time is the injected clock's (``reactor.seconds()``: wall time in the service).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from gb28181talk.errors import ManscdpError, SignallingError
from gb28181talk.signalling.catalog import CatalogItem, catalog_query, parse_catalog
from gb28181talk.sip.digest import NONCE_LIFETIME, DigestServer
from gb28181talk.sip.message import SipRequest, SipUri, response_for
from gb28181talk.sip.platform import IncomingMessage, RequestFailed, Route, SipPlatform, sender_id
from gb28181talk.sip.transaction import ServerTransaction

_log = Logger()

DEFAULT_EXPIRES = 3600
"""Seconds a registration lasts when the REGISTER names none."""
MAX_EXPIRES = 86400
"""A longer Expires is cut to this (and the 200 says so)."""
DEFAULT_KEEPALIVE_INTERVAL = 60.0
"""GB28181's default keepalive interval."""
MISSED_KEEPALIVES = 3
"""Keepalives missed before a device counts as offline."""
MAX_CATALOG_ITEMS = 10_000
"""Channels kept per device (a catalog claiming more is cut)."""


@dataclass(eq=False)
class RegisteredDevice:
    """One registered device: where it is, since when, whether it is alive, its channels."""

    device_id: str
    channel: Any
    transport: str
    address: tuple[str, int]
    registered_at: float
    expires: int
    last_seen: float
    last_keepalive: float | None = None
    online: bool = True
    channels: list[CatalogItem] = field(default_factory=list)
    catalog_sum: int | None = None
    """SumNum of the catalog being gathered (None: none under way)."""
    gathering: list[CatalogItem] = field(default_factory=list)
    expiry_timer: IDelayedCall | None = None
    offline_timer: IDelayedCall | None = None

    @property
    def audio_outputs(self) -> list[CatalogItem]:
        """The device's voice output channels (type 137): where a broadcast goes."""
        return [item for item in self.channels if item.audio_output]

    def timers(self) -> list[IDelayedCall]:
        """Its timers still to fire."""
        return [t for t in (self.expiry_timer, self.offline_timer) if t is not None and t.active()]

    def cancel_timers(self) -> None:
        """Stop both timers (unregistered, or the registry stops)."""
        for timer in self.timers():
            timer.cancel()
        self.expiry_timer = self.offline_timer = None

    def describe(self) -> dict[str, Any]:
        """What ``GET /api/devices`` shows of it."""
        return {
            "id": self.device_id,
            "address": f"{self.address[0]}:{self.address[1]}",
            "transport": self.transport,
            "registered_at": self.registered_at,
            "expires": self.expires,
            "last_keepalive": self.last_keepalive,
            "online": self.online,
            "channels": [
                {"id": c.device_id, "name": c.name, "status": c.status,
                 "audio_output": c.audio_output}
                for c in self.channels
            ],
        }


def _date(seconds: float) -> str:
    """A GB28181 ``Date`` value (local wall time, milliseconds): ``2026-12-02T17:54:35.000``."""
    whole = int(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(whole)) + (
        f".{int((seconds - whole) * 1000):03d}"
    )


def _expires(req: SipRequest) -> int | None:
    """The Expires the REGISTER asks for (header, then Contact param), None when unreadable."""
    text = req.header("Expires")
    if text is None:
        contacts = req.contacts
        text = contacts[0].param("expires") if contacts else None
    if text is None:
        return DEFAULT_EXPIRES
    text = text.strip()
    if not text.isdigit() or len(text) > 10:
        return None
    return min(int(text), MAX_EXPIRES)


class Registry:
    """The platform's registrar and device table."""

    def __init__(
        self,
        platform: SipPlatform,
        *,
        passwords: Mapping[str, str] | None = None,
        default_password: str = "",
        keepalive_expiry: float = MISSED_KEEPALIVES * DEFAULT_KEEPALIVE_INTERVAL,
        nonce_lifetime: float = NONCE_LIFETIME,
        query_catalog: bool = True,
        secret: bytes | None = None,
    ) -> None:
        """Plugs itself into ``platform`` (REGISTER, Keepalive, Catalog, locate)."""
        self.platform = platform
        self.clock: IReactorTime = platform.clock
        self.passwords = dict(passwords or {})
        self.default_password = default_password
        self.keepalive_expiry = keepalive_expiry
        self.query_catalog = query_catalog
        self.digest = DigestServer(
            platform.domain, self.clock.seconds, lifetime=nonce_lifetime, secret=secret
        )
        self.devices: dict[str, RegisteredDevice] = {}
        self.on_change: list[Callable[[RegisteredDevice, str], None]] = []
        """Called ``(device, what)``: registered, refreshed, unregistered, expired, offline,
        online, catalog."""
        self._sn = itertools.count(1)
        platform.register_handler = self.register_received
        platform.locate = self.route_for
        platform.add_message_handler("Keepalive", self.keepalive_received)
        platform.add_message_handler("Catalog", self.catalog_received)

    # ---------------------------------------------------------------- lookups
    def password_for(self, device_id: str) -> str:
        """The device's password: its own from the config, else the default ('' = no auth)."""
        return self.passwords.get(device_id, self.default_password)

    def route_for(self, device_id: str) -> Route | None:
        """Where requests to a registered device go (its last request's path), or None."""
        device = self.devices.get(device_id)
        if device is None or device.channel is None:
            return None
        host, port = device.address
        return Route(device_id, device.channel, f"sip:{device_id}@{host}:{port}")

    def channel_ids(self, device_id: str) -> list[str]:
        """The channel ids of a registered device's catalog (empty when unknown)."""
        device = self.devices.get(device_id)
        return [item.device_id for item in device.channels] if device is not None else []

    @property
    def registered(self) -> int:
        """Devices registered now."""
        return len(self.devices)

    @property
    def online(self) -> int:
        """Registered devices whose keepalives are on time."""
        return sum(1 for d in self.devices.values() if d.online)

    def describe(self) -> list[dict[str, Any]]:
        """Every registered device, for ``GET /api/devices``."""
        return [d.describe() for d in sorted(self.devices.values(), key=lambda d: d.device_id)]

    # ---------------------------------------------------------------- REGISTER
    def register_received(self, transaction: ServerTransaction, req: SipRequest) -> None:
        """Authenticate, then register, refresh or unregister the sending device."""
        device_id = sender_id(req)
        try:
            to_user = SipUri.parse(req.to.uri).user or ""
        except SignallingError:
            to_user = ""
        if not device_id or to_user != device_id:
            self._answer(transaction, req, 400, reason="From and To must name the device")
            return
        expires = _expires(req)
        if expires is None:
            self._answer(transaction, req, 400, reason="Expires is not a number of seconds")
            return
        if not self._authenticated(transaction, req, device_id):
            return
        if expires == 0:
            self._answer(transaction, req, 200, extra=[("Expires", "0")])
            self._unregister(device_id, "unregistered")
            return
        self._answer(transaction, req, 200, extra=[("Expires", str(expires))],
                     contact=True)
        self._register(device_id, transaction, req, expires)

    def _authenticated(self, transaction: ServerTransaction, req: SipRequest,
                       device_id: str) -> bool:
        password = self.password_for(device_id)
        if not password:
            return True
        authorization = req.header("Authorization")
        if not authorization:
            self._challenge(transaction, req, stale=False)
            return False
        verdict = self.digest.check(
            authorization, "REGISTER", lambda user: password if user == device_id else None
        )
        if verdict.ok:
            return True
        where = req.top_via.response_address()
        _log.info(
            "SIP REGISTER from {device} at {host}:{port} refused: {reason}",
            device=device_id, host=where[0], port=where[1], reason=verdict.reason,
        )
        forbidden = verdict.reason.startswith("wrong response") or verdict.reason.startswith(
            "user "
        )
        if forbidden and not verdict.stale:
            self._answer(transaction, req, 403)
        else:
            self._challenge(transaction, req, stale=verdict.stale)
        return False

    def _challenge(self, transaction: ServerTransaction, req: SipRequest, *, stale: bool) -> None:
        self._answer(transaction, req, 401,
                     extra=[("WWW-Authenticate", self.digest.challenge(stale=stale))])

    def _answer(self, transaction: ServerTransaction, req: SipRequest, status: int, *,
                reason: str | None = None, extra: list[tuple[str, str]] | None = None,
                contact: bool = False) -> None:
        headers = list(extra or [])
        if contact:
            headers += [(n, v) for n, v in req.headers if n == "Contact"]
        if status == 200:
            headers.append(("Date", _date(self.clock.seconds())))
        if reason is not None:
            headers.append(("Warning", f'399 gb28181talk "{reason}"'))
        transaction.respond(response_for(req, status, to_tag=_tag(req), headers=headers))

    def _register(self, device_id: str, transaction: ServerTransaction, req: SipRequest,
                  expires: int) -> None:
        now = self.clock.seconds()
        channel = transaction.channel
        address = req.top_via.response_address()
        device = self.devices.get(device_id)
        what = "refreshed"
        if device is None:
            what = "registered"
            device = RegisteredDevice(device_id, channel, _transport(channel), address, now,
                                      expires, now)
            self.devices[device_id] = device
            _log.info("SIP device {device} registered from {host}:{port} ({transport}), "
                      "expires in {expires} s", device=device_id, host=address[0],
                      port=address[1], transport=device.transport, expires=expires)
        else:
            device.expires = expires  # a refresh: registered_at stays the first REGISTER's
        self._seen(device, channel, address)
        if device.expiry_timer is not None and device.expiry_timer.active():
            device.expiry_timer.cancel()
        device.expiry_timer = self.clock.callLater(expires, self._expired, device)
        self._tell(device, what)
        if self.query_catalog and not device.channels and device.catalog_sum is None:
            self.query_catalog_of(device_id)

    def _seen(self, device: RegisteredDevice, channel: Any, address: tuple[str, int]) -> None:
        """A request from the device: its path, its liveness timer, online again."""
        device.channel = channel
        device.transport = _transport(channel)
        device.address = address
        device.last_seen = self.clock.seconds()
        on_close = getattr(channel, "on_close", None)
        if isinstance(on_close, list) and self._closed not in on_close:
            on_close.append(self._closed)
        if device.offline_timer is not None and device.offline_timer.active():
            device.offline_timer.cancel()
        device.offline_timer = self.clock.callLater(self.keepalive_expiry, self._offline, device)
        if not device.online:
            device.online = True
            _log.info("SIP device {device} is online again", device=device.device_id)
            self._tell(device, "online")

    def _closed(self, channel: Any) -> None:
        """A device's TCP/TLS connection closed: requests to it wait for its next one."""
        for device in self.devices.values():
            if device.channel is channel:
                device.channel = None

    def _offline(self, device: RegisteredDevice) -> None:
        device.offline_timer = None
        if self.devices.get(device.device_id) is not device:
            return
        device.online = False
        _log.info("SIP device {device} is offline: nothing from it for {seconds:g} s",
                  device=device.device_id, seconds=self.keepalive_expiry)
        self._tell(device, "offline")

    def _expired(self, device: RegisteredDevice) -> None:
        device.expiry_timer = None
        if self.devices.get(device.device_id) is device:
            _log.info("SIP device {device}: registration expired", device=device.device_id)
            self._unregister(device.device_id, "expired")

    def _unregister(self, device_id: str, what: str) -> None:
        device = self.devices.pop(device_id, None)
        if device is None:
            return
        device.cancel_timers()
        device.online = False
        if what == "unregistered":
            _log.info("SIP device {device} unregistered", device=device_id)
        self._tell(device, what)

    def _tell(self, device: RegisteredDevice, what: str) -> None:
        for callback in list(self.on_change):
            try:
                callback(device, what)
            except Exception:
                _log.failure("registry listener failed on {what}", what=what)

    # ---------------------------------------------------------------- keepalive
    def keepalive_received(self, message: IncomingMessage) -> int | None:
        """``Notify/Keepalive``: 200 and alive; 404 from a device that is not registered."""
        device = self.devices.get(message.device_id)
        if device is None:
            _log.debug("SIP keepalive from unregistered {device}: 404", device=message.device_id)
            return 404
        self._seen(device, message.channel, message.request.top_via.response_address())
        device.last_keepalive = self.clock.seconds()
        return None

    # ---------------------------------------------------------------- catalog
    def query_catalog_of(self, device_id: str) -> None:
        """Ask a registered device for its catalog (the answers come as MESSAGEs)."""
        device = self.devices.get(device_id)
        if device is None:
            return
        device.catalog_sum = -1  # asked; SumNum unknown until the first part comes
        device.gathering = []

        def refused(failure: Any) -> None:
            failure.trap(RequestFailed)
            _log.info("SIP catalog query to {device} failed: {reason}", device=device_id,
                      reason=failure.value.reason)
            if self.devices.get(device_id) is device:
                device.catalog_sum = None

        def answered(resp: Any) -> None:
            if not resp.success and self.devices.get(device_id) is device:
                _log.info("SIP catalog query to {device} answered {status}",
                          device=device_id, status=resp.status)
                device.catalog_sum = None

        sent = self.platform.send_message(device_id, catalog_query(next(self._sn), device_id))
        sent.addCallbacks(answered, refused)

    def catalog_received(self, message: IncomingMessage) -> int | None:
        """``Response/Catalog`` parts: gathered until SumNum items, then the device's channels."""
        if message.command.root.lower() != "response":
            return None  # a Query/Catalog to us: we have no catalog to give
        device = self.devices.get(message.device_id)
        if device is None:
            return 404
        try:
            part = parse_catalog(message.body)
        except ManscdpError as e:
            _log.info("SIP catalog from {device} refused: {error}", device=message.device_id,
                      error=e)
            return 400
        total = min(part.sum_num, MAX_CATALOG_ITEMS)
        if device.catalog_sum is None or device.catalog_sum < 0:
            device.gathering = []
        device.catalog_sum = total
        known = {item.device_id for item in device.gathering}
        for item in part.items:
            if item.device_id not in known and len(device.gathering) < total:
                device.gathering.append(item)
                known.add(item.device_id)
        if len(device.gathering) >= total:
            device.channels, device.gathering = device.gathering, []
            device.catalog_sum = None
            _log.info("SIP device {device}: catalog of {count} channels ({audio} audio output)",
                      device=device.device_id, count=len(device.channels),
                      audio=len(device.audio_outputs))
            self._tell(device, "catalog")
        return None

    # ---------------------------------------------------------------- ending
    def pending_timers(self) -> list[IDelayedCall]:
        """Every timer the registry holds (tests check none leaks)."""
        return [t for d in self.devices.values() for t in d.timers()]

    def shutdown(self) -> None:
        """Stop every device's timers (the service is stopping)."""
        for device in self.devices.values():
            device.cancel_timers()


def _tag(req: SipRequest) -> str:
    """A stable To tag for our answers to this REGISTER's Call-ID (a refresh keeps it)."""
    return f"{abs(hash(req.call_id)) & 0xFFFFFFFF:08x}"


def _transport(channel: Any) -> str:
    """``UDP``, ``TCP`` or ``TLS``: how the device reaches us."""
    return str(getattr(channel, "transport_name", "UDP")) if channel is not None else "UDP"
