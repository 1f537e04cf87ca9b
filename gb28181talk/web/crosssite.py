"""Cross-site refusals: no page of another site, and no DNS-rebinding name, drives the API.

A browser lets any page it shows send "simple" requests (GET, form and
``text/plain`` POSTs) to ``127.0.0.1:8080`` without asking first; without a
secret that would start and stop talk sessions.  So, for every request:

1. an ``Origin`` header (browsers send it on every cross-origin POST, PUT,
   DELETE and fetch) that is not this API's own scheme, host and port is
   refused, ``null`` included;
2. a ``Sec-Fetch-Site`` header (browsers send it on every request, an
   ``<img src>`` GET included, which has no ``Origin``) other than
   ``same-origin`` or ``none`` (typed in the address bar) is refused: this is
   what keeps ZLMediaKit's endpoints, which must take GET, safe from pages;
3. with no secret set, the ``Host`` must be one of the API's own names
   (``localhost``, a loopback address, the configured media and advertised
   addresses): a rebinding name (``evil.example`` resolving to 127.0.0.1) is
   refused.  With a secret, any Host is served: a page cannot know the secret.

Programs (wvp-GB28181-pro, curl, scripts) send neither header and are
served as before.  A refusal is code -100, HTTP 403.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from twisted.web.server import Request

from gb28181talk.web import codes
from gb28181talk.web.errors import ApiError

ALLOWED_FETCH_SITES = frozenset({"same-origin", "none"})
"""``Sec-Fetch-Site`` values a browser gives the API's own pages and typed addresses."""

_HOST = re.compile(r"^\[?(?P<name>[^\[\]]*?)\]?(?::(?P<port>\d*))?$")


def _header(request: Request, name: bytes) -> str | None:
    value = request.getHeader(name)
    if value is None:
        return None
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def split_host(host: str) -> tuple[str, int | None]:
    """``Host``-style ``name[:port]`` (``[::1]:8080`` too) as (lower-case name, port or None)."""
    host = host.strip()
    if host.count(":") > 1 and "[" not in host:  # a bare IPv6 address: no port
        return host.lower(), None
    found = _HOST.match(host)
    if found is None:
        return host.lower(), None
    port = found.group("port")
    return found.group("name").lower().rstrip("."), int(port) if port else None


def is_loopback_name(name: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1, ::ffff:127.x)."""
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


class SiteGuard:
    """The three checks above; ``own_hosts`` are the API's names beyond localhost/loopback."""

    def __init__(self, own_hosts: Iterable[str] = ()) -> None:
        self.own_hosts: set[str] = set()
        for host in own_hosts:
            self.add_host(host)

    def add_host(self, host: str) -> None:
        """Accept ``host`` (a name or an address, no port) as one of the API's own names."""
        name = split_host(host)[0]
        if name and name not in ("0.0.0.0", "::"):
            self.own_hosts.add(name)

    def is_own(self, name: str) -> bool:
        return is_loopback_name(name) or name in self.own_hosts

    def refusal(self, request: Request, check_host: bool) -> ApiError | None:
        """The refusal of a cross-site or foreign-Host request, or None to serve it."""
        host = _header(request, b"host")
        origin = _header(request, b"origin")
        if origin is not None and not self._same_origin(origin, host):
            return ApiError(
                codes.AUTH_FAILED,
                f"cross-site request refused: Origin {origin} is not this API's own "
                f"({self._own_origin(request, host)}); call the API from a program (curl, "
                "your platform) or from a page the API's own address serves",
                403,
            )
        fetch_site = _header(request, b"sec-fetch-site")
        if fetch_site is not None and fetch_site.strip().lower() not in ALLOWED_FETCH_SITES:
            return ApiError(
                codes.AUTH_FAILED,
                f"cross-site request refused: the browser marks it Sec-Fetch-Site: "
                f"{fetch_site} (sent by a page of another site); call the API from a program "
                "(curl, your platform), not from another site's page",
                403,
            )
        if check_host and host is not None and not self.is_own(split_host(host)[0]):
            names = ", ".join(["localhost", "127.0.0.1", "[::1]", *sorted(self.own_hosts)])
            return ApiError(
                codes.AUTH_FAILED,
                f"request refused: Host {host} is not a name of this API ({names}); without "
                "--secret the API answers only requests addressed to it by those names (a guard "
                "against DNS rebinding): use one of them, or set --secret",
                403,
            )
        return None

    def _same_origin(self, origin: str, host: str | None) -> bool:
        try:
            parts = urlsplit(origin.strip())
            origin_port = parts.port
        except ValueError:
            return False
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            return False
        # Ports default by the page's scheme on both sides, so a page served through a
        # TLS-terminating proxy (Origin https://host, Host: host) is the API's own.
        default = 443 if scheme == "https" else 80
        origin_name = parts.hostname.lower().rstrip(".")
        if host is None:  # HTTP/1.0 without Host: only the API's own names can be its pages
            return self.is_own(origin_name)
        host_name, host_port = split_host(host)
        return (origin_name, origin_port or default) == (host_name, host_port or default)

    def _own_origin(self, request: Request, host: str | None) -> str:
        scheme = "https" if request.isSecure() else "http"
        return f"{scheme}://{host}" if host else f"{scheme}://localhost"
