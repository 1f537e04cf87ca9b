"""The service's settings: embedded defaults, then a TOML file, then the command line; checked once.

Every option can be given on the command line (``--wait-timeout 3``) or in
the TOML file named by ``--config`` (``wait-timeout = 3``, or
``wait_timeout = 3``); the command line wins.  Every problem is a
:class:`ConfigError` whose message fits on one line and says what to do.
"""

from __future__ import annotations

import ipaddress
import math
import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gb28181talk.core.ports import DEFAULT_PORT_RANGE, parse_port_range
from gb28181talk.errors import GbTalkError, PortError
from gb28181talk.sip.transport import parse_udp
from gb28181talk.sources.file import DEFAULT_FILE_MEMORY
from gb28181talk.web.crosssite import is_loopback_name
from gb28181talk.web.zlm_node import DEFAULT_ALIVE_INTERVAL, DEFAULT_SCHEMAS, SCHEMA

DEFAULT_API = "tcp:8080:interface=127.0.0.1"
DEFAULT_WAIT_TIMEOUT = 5.0
MAX_WAIT_TIMEOUT = 3600.0
DEFAULT_SERVER_ID = "gbtalk"
DEFAULT_SIP_ID = "34020000002000000001"
"""The platform's 20-digit GB28181 ID (type 200: a SIP server) when --sip-id is not given."""
DEFAULT_KEEPALIVE_EXPIRY = 180.0
"""Seconds without a keepalive before a device is offline: 3 x GB28181's 60 s interval."""

OPTION_NAMES = (
    "api",
    "port-range",
    "media-interface",
    "advertise-ip",
    "wait-timeout",
    "secret",
    "hook-url",
    "record-dir",
    "media-dir",
    "max-file-memory",
    "workers",
    "server-id",
    "alive-interval",
    "stream-schemas",
    "node-hooks",
    "sip",
    "sip-id",
    "sip-domain",
    "sip-password",
    "sip-advertise",
    "keepalive-expiry",
    "sip-passwords",
)
"""Options readable from the command line and the TOML file, in help order.

``sip`` is repeatable (a list in TOML); ``sip-passwords`` is a TOML table only
(``[sip-passwords]`` with ``"<device id>" = "<password>"`` lines)."""


class ConfigError(GbTalkError):
    """A setting that cannot be used; the message is one line naming the setting and the fix."""


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """The settings ``twistd gbtalk`` runs with, all checked."""

    api: str = DEFAULT_API
    port_range: tuple[int, int] = DEFAULT_PORT_RANGE
    media_interface: str = ""
    advertise_ip: str | None = None
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT
    secret: str | None = None
    hook_url: str | None = None
    record_dir: str | None = None
    media_dir: str | None = None
    max_file_memory: int = DEFAULT_FILE_MEMORY
    workers: int = 1
    """Media worker processes; 1: everything in this one process (no workers)."""
    server_id: str = DEFAULT_SERVER_ID
    alive_interval: float = DEFAULT_ALIVE_INTERVAL
    stream_schemas: tuple[str, ...] = DEFAULT_SCHEMAS
    node_hooks: bool = False
    sip: tuple[str, ...] = ()
    """SIP listeners (``udp:5060``, ``tcp:5060``, ``ssl:5061:...``); none: SIP is off."""
    sip_id: str = DEFAULT_SIP_ID
    sip_domain: str = DEFAULT_SIP_ID[:10]
    sip_password: str = ""
    """The devices' default digest password; empty: devices register without digest."""
    sip_advertise: str | None = None
    """Address in our Contact/Via and SDP; None: the advertise IP."""
    keepalive_expiry: float = DEFAULT_KEEPALIVE_EXPIRY
    sip_passwords: tuple[tuple[str, str], ...] = ()
    """Per-device passwords (device id, password), from the config file's [sip-passwords]."""


def load_toml(path: str) -> dict[str, Any]:
    """Read a TOML config file into option-name keys (``port_range`` becomes ``port-range``)."""
    try:
        with open(path, "rb") as config_file:
            document = tomllib.load(config_file)
    except OSError as error:
        raise ConfigError(
            f"cannot read config file {path!r}: {error.strerror or error}"
        ) from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"config file {path!r} is not UTF-8 text (byte 0x{error.object[error.start]:02x} "
            f"at offset {error.start}); TOML files are UTF-8: save it as UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path!r} is not valid TOML: {error}") from None
    values: dict[str, Any] = {}
    for key, value in document.items():
        name = key.replace("_", "-")
        if name not in OPTION_NAMES:
            raise ConfigError(
                f"config file {path!r}: unknown setting {key!r}; "
                f"known: {', '.join(OPTION_NAMES)}"
            )
        values[name] = value
    return values


def build_config(
    command_line: Mapping[str, Any], file_values: Mapping[str, Any] | None = None
) -> ServiceConfig:
    """Merge defaults < file < command line (None = not given) and check every value."""
    file_values = file_values or {}
    merged: dict[str, Any] = {}
    for name in OPTION_NAMES:
        given = command_line.get(name)
        if given is None:
            given = file_values.get(name)
        if given is not None:
            merged[name] = given
    secret = _optional_text(merged, "secret")
    api = _text(merged, "api", DEFAULT_API)
    if secret is None and not endpoint_is_local(api):
        raise ConfigError(
            f"the API endpoint {api!r} is reachable beyond this host; give --secret TOKEN "
            "(or bind it to 127.0.0.1 / ::1)"
        )
    return ServiceConfig(
        api=api,
        port_range=_port_range(merged.get("port-range")),
        media_interface=_media_interface(merged),
        advertise_ip=_address(merged, "advertise-ip", allow_empty=False),
        wait_timeout=_wait_timeout(merged.get("wait-timeout")),
        secret=secret,
        hook_url=_hook_url(merged.get("hook-url")),
        record_dir=_directory(merged, "record-dir", writable=True),
        media_dir=_directory(merged, "media-dir", writable=False),
        max_file_memory=_file_memory(merged.get("max-file-memory")),
        workers=_workers(merged.get("workers")),
        server_id=_text(merged, "server-id", DEFAULT_SERVER_ID),
        alive_interval=_alive_interval(merged.get("alive-interval")),
        stream_schemas=_stream_schemas(merged.get("stream-schemas")),
        node_hooks=_yes_no(merged, "node-hooks"),
        **_sip_settings(merged),
    )


# --------------------------------------------------------------------------- SIP


def _sip_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """The SIP options, checked: endpoints, IDs, passwords, advertised address, expiry."""
    sip_id = _digits(values, "sip-id", 20, DEFAULT_SIP_ID)
    return {
        "sip": _sip_endpoints(values.get("sip")),
        "sip_id": sip_id,
        "sip_domain": _digits(values, "sip-domain", 10, sip_id[:10]),
        "sip_password": _password(values.get("sip-password"), "--sip-password"),
        "sip_advertise": _address(values, "sip-advertise", allow_empty=False),
        "keepalive_expiry": _keepalive_expiry(values.get("keepalive-expiry")),
        "sip_passwords": _sip_passwords(values.get("sip-passwords")),
    }


def _sip_endpoints(value: Any) -> tuple[str, ...]:
    """``udp:PORT[:interface=ADDR]`` or a Twisted stream server endpoint, one or many."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ConfigError(f"--sip must be an endpoint such as udp:5060 or tcp:5060, not {value!r}")
    endpoints = []
    for item in items:
        text = item.strip()
        kind = text.split(":", 1)[0].lower()
        if kind == "udp":
            try:
                parse_udp(text)
            except ValueError as error:
                raise ConfigError(f"--sip {error}; e.g. udp:5060") from None
        elif kind not in ("tcp", "tcp6", "ssl", "unix") or ":" not in text:
            raise ConfigError(
                f"--sip {item!r} is not a SIP endpoint; give udp:PORT, tcp:PORT or "
                "ssl:PORT:privateKey=key.pem:certKey=cert.pem"
            )
        endpoints.append(text)
    return tuple(dict.fromkeys(endpoints))


def _digits(values: Mapping[str, Any], name: str, count: int, default: str) -> str:
    value = values.get(name, default)
    text = str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) \
        else None
    if text is None or len(text) != count or not text.isdigit() or not text.isascii():
        example = DEFAULT_SIP_ID[:count]
        raise ConfigError(f"--{name} must be {count} digits, e.g. {example}, not {value!r}")
    return text


def _password(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
        raise ConfigError(f"{what} must be text on one line, not {value!r}")
    return value


def _seconds(value: Any) -> float:
    """A number of seconds from an option's value; NaN (refused by the caller) if it is none."""
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _keepalive_expiry(value: Any) -> float:
    if value is None:
        return DEFAULT_KEEPALIVE_EXPIRY
    seconds = _seconds(value)
    if not math.isfinite(seconds) or not 1 <= seconds <= 86400:
        raise ConfigError(
            f"--keepalive-expiry {value!r} is not usable; give the seconds without a keepalive "
            f"before a device is offline, 1 to 86400 [default: {DEFAULT_KEEPALIVE_EXPIRY:g}]"
        )
    return seconds


def _sip_passwords(value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise ConfigError(
            'sip-passwords must be a TOML table: [sip-passwords] "<device id>" = "<password>"'
        )
    pairs = []
    for device_id, password in value.items():
        if not (isinstance(device_id, str) and len(device_id) == 20 and device_id.isdigit()):
            raise ConfigError(f"sip-passwords: {device_id!r} is not a 20-digit device id")
        pairs.append((device_id, _password(password, f"sip-passwords {device_id}")))
    return tuple(pairs)


# --------------------------------------------------------------------------- endpoint strings


def split_endpoint(description: str) -> tuple[list[str], dict[str, str]]:
    """Split a Twisted endpoint string into positional and keyword parts (``\\`` escapes)."""
    args: list[str] = []
    kwargs: dict[str, str] = {}
    parts: list[str] = []
    current = ""
    characters = iter(description)
    for character in characters:
        if character == "\\":
            current += next(characters, "")
        elif character == ":":
            parts.append(current)
            current = ""
            _store(parts, args, kwargs)
            parts = []
        elif character == "=" and not parts:
            parts.append(current)
            current = ""
        else:
            current += character
    parts.append(current)
    _store(parts, args, kwargs)
    return args, kwargs


def _store(parts: list[str], args: list[str], kwargs: dict[str, str]) -> None:
    if len(parts) == 1:
        args.append(parts[0])
    else:
        kwargs[parts[0]] = parts[1]


def endpoint_is_local(description: str) -> bool:
    """Whether a server endpoint string can only be reached from this host.

    TCP and SSL endpoints are local when their ``interface`` is a loopback
    address (or ``localhost``); UNIX sockets always are; anything else is
    taken as reachable from the network.
    """
    args, kwargs = split_endpoint(description.strip())
    kind = args[0].lower() if args else ""
    if kind == "unix":
        return True
    if kind not in ("tcp", "tcp6", "ssl"):
        return False
    interface = kwargs.get("interface")
    if interface is None and kind in ("tcp", "tcp6") and len(args) > 2:
        interface = args[2]
    return is_loopback(interface or "")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost), in any case,
    bracketed or not: the cross-site guard's own loopback rule."""
    return is_loopback_name(host.strip().strip("[]").lower())


# --------------------------------------------------------------------------- single settings


def _text(values: Mapping[str, Any], name: str, default: str) -> str:
    value = values.get(name, default)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"--{name} must be a non-empty string, not {value!r}")
    return value.strip()


def _optional_text(values: Mapping[str, Any], name: str) -> str | None:
    value = values.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"--{name} must be a non-empty string, not {value!r}")
    return value.strip()


def _port_range(value: Any) -> tuple[int, int]:
    if value is None:
        return DEFAULT_PORT_RANGE
    try:
        if isinstance(value, list) and len(value) == 2 and all(
            isinstance(port, int) and not isinstance(port, bool) for port in value
        ):
            return parse_port_range(f"{value[0]}-{value[1]}")
        if isinstance(value, str):
            return parse_port_range(value)
    except PortError as error:
        raise ConfigError(f"--port-range: {error}") from None
    raise ConfigError(f"--port-range must be LO-HI, e.g. 20000-24999, not {value!r}")


def _address(values: Mapping[str, Any], name: str, allow_empty: bool) -> str | None:
    value = values.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"--{name} must be an IP address, not {value!r}")
    text = value.strip().strip("[]")
    if not text:
        if allow_empty:
            return ""
        raise ConfigError(f"--{name} must be an IP address, e.g. 192.0.2.10")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        extra = " (or empty for all interfaces)" if allow_empty else ""
        raise ConfigError(
            f"--{name} {value!r} is not an IP address; give one like 192.0.2.10{extra}"
        ) from None


def _media_interface(values: Mapping[str, Any]) -> str:
    """An IP address of this host (or empty for all): a TCP socket must bind there."""
    address = _address(values, "media-interface", allow_empty=True) or ""
    if address:
        check_local_address("media-interface", address)
    return address


def check_local_address(name: str, address: str) -> None:
    """Raise ConfigError unless a TCP socket can bind ``address`` (any port): one of this host's."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        [(_, _, _, _, where), *_] = socket.getaddrinfo(
            address, 0, family, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST
        )
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind(where)
    except OSError as error:
        raise ConfigError(
            f"--{name} {address} is not an address of this host: {error}; give one of its "
            "addresses (ip -brief address), or leave it empty for all interfaces"
        ) from None


def _wait_timeout(value: Any) -> float:
    if value is None:
        return DEFAULT_WAIT_TIMEOUT
    try:
        if isinstance(value, bool):
            raise ValueError
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"--wait-timeout must be a number of seconds, e.g. 5, not {value!r}"
        ) from None
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_WAIT_TIMEOUT:
        raise ConfigError(
            f"--wait-timeout {value!r} is out of range; use more than 0 and at most "
            f"{MAX_WAIT_TIMEOUT:g} seconds"
        )
    return seconds


def _alive_interval(value: Any) -> float:
    """Seconds between on_server_keepalive hooks (ZLMediaKit's hook.alive_interval)."""
    if value is None:
        return DEFAULT_ALIVE_INTERVAL
    seconds = _seconds(value)
    if not math.isfinite(seconds) or not 0.5 <= seconds <= 86400:
        raise ConfigError(
            f"--alive-interval {value!r} is not usable; give seconds from 0.5 to 86400, e.g. 10"
        )
    return seconds


def _yes_no(values: Mapping[str, Any], name: str) -> bool:
    """A switch: true/false in TOML, yes/no (on/off, 1/0) on the command line; absent: no."""
    value = values.get(name, False)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("yes", "on", "true", "1"):
        return True
    if text in ("no", "off", "false", "0"):
        return False
    raise ConfigError(f"--{name} must be yes or no, not {value!r}")


def _stream_schemas(value: Any) -> tuple[str, ...]:
    """The schemas each audio source is a stream under (hook.stream_changed_schemas)."""
    if value is None:
        return DEFAULT_SCHEMAS
    if not isinstance(value, str):
        raise ConfigError(f"--stream-schemas must be names separated by '/', not {value!r}")
    names = tuple(dict.fromkeys(name for name in value.strip().split("/") if name))
    if not names or len(names) > 16 or not all(SCHEMA.fullmatch(name) for name in names):
        raise ConfigError(
            f"--stream-schemas {value!r} is not usable; give schema names separated by '/', "
            "e.g. rtsp or rtsp/rtmp"
        )
    return names


def _hook_url(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"--hook-url must be an http(s) URL, not {value!r}")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"--hook-url {value!r} is not an http:// or https:// URL with a host, "
            "e.g. http://127.0.0.1:18080/index/hook"
        )
    return value.strip().rstrip("/")


MAX_FILE_MEMORY_MIB = 65536
"""The largest --max-file-memory (64 GiB)."""


def _file_memory(value: Any) -> int:
    """The memory budget of all file sources, given in MiB, as bytes."""
    if value is None:
        return DEFAULT_FILE_MEMORY
    try:
        if isinstance(value, bool):
            raise ValueError
        mib = int(value)
    except (TypeError, ValueError):
        mib = 0
    if not 1 <= mib <= MAX_FILE_MEMORY_MIB:
        raise ConfigError(
            f"--max-file-memory {value!r} is not usable; give the MiB all file sources may "
            f"hold, from 1 to {MAX_FILE_MEMORY_MIB}, e.g. {DEFAULT_FILE_MEMORY // 2**20}"
        )
    return mib * 2**20


MAX_WORKERS = 256
"""The most media worker processes --workers may ask for."""


def _workers(value: Any) -> int:
    """--workers: how many media worker processes (1: none, all in this process)."""
    if value is None:
        return 1
    try:
        if isinstance(value, bool):
            raise ValueError
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if not 1 <= count <= MAX_WORKERS:
        raise ConfigError(
            f"--workers {value!r} is not usable; give the number of media worker processes, "
            f"from 1 (all in this process) to {MAX_WORKERS}, e.g. {os.cpu_count() or 2}"
        )
    return count


def _directory(values: Mapping[str, Any], name: str, writable: bool) -> str | None:
    value = values.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"--{name} must be a directory path, not {value!r}")
    path = os.path.abspath(os.path.expanduser(value.strip()))
    if not os.path.isdir(path):
        raise ConfigError(f"--{name} {value!r} is not an existing directory; create it first")
    mode = os.W_OK | os.X_OK if writable else os.R_OK | os.X_OK
    if not os.access(path, mode):
        what = "writable" if writable else "readable"
        raise ConfigError(f"--{name} {value!r} is not {what} by this user")
    return path
