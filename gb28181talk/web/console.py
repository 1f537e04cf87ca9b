"""The push-to-talk console: the static page at ``/`` and its files under ``/console/``.

The page (``web/console/``: HTML, CSS and plain JavaScript modules, no build step, no
CDN) is read from the package once, at start, into a fixed table of names: a request
can only ever get one of those files, so no path leads outside the folder and no
folder is listed.  Every file carries its content type, an ETag (its SHA-256) for
``If-None-Match`` revalidation, ``Cache-Control: no-cache`` (the files have no
hashed names, so a browser asks again after an upgrade) and a content security
policy that lets the page load only its own scripts and styles and never be framed.
The page needs no secret: it holds none, and asks the operator for it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from twisted.web.resource import Resource
from twisted.web.server import Request

from gb28181talk.web.common import Authenticator, NotFoundResource

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
"""The only kinds of file the console serves, by suffix."""

POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; media-src 'self' blob: mediastream:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
"""The page's Content-Security-Policy: its own files only, never inside another site's frame."""

PAGE = "index.html"
"""The file served at ``/``."""

_HINT = "the console is at / (its files under /console/); the API under /api/ and /index/api/"


@dataclass(frozen=True, slots=True)
class StaticFile:
    """One file of the console, read once: its bytes, content type and ETag."""

    body: bytes
    content_type: str
    etag: bytes


def load_files(package: str = "gb28181talk.web", folder: str = "console") -> dict[str, StaticFile]:
    """Every servable file of the console folder, by name (no sub-folders, known suffixes)."""
    files: dict[str, StaticFile] = {}
    for entry in resources.files(package).joinpath(folder).iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if not entry.is_file() or suffix not in CONTENT_TYPES or entry.name.startswith("."):
            continue
        body = entry.read_bytes()
        digest = hashlib.sha256(body).hexdigest()[:32]
        files[entry.name] = StaticFile(body, CONTENT_TYPES[suffix], f'"{digest}"'.encode())
    return files


def wants_page(request: Request) -> bool:
    """Whether a request for ``/`` is a browser's (HTML before JSON in its ``Accept``)."""
    if request.method not in (b"GET", b"HEAD"):
        return False
    raw = request.getHeader(b"accept") or b""
    accept = (raw.decode("latin-1") if isinstance(raw, bytes) else raw).lower()
    if "text/html" not in accept:
        return False
    json_at = accept.find("application/json")
    return json_at < 0 or accept.find("text/html") < json_at


def serve(request: Request, item: StaticFile) -> bytes:
    """Answer ``request`` with ``item`` (304 when the browser has it already)."""
    request.setHeader(b"content-type", item.content_type.encode("ascii"))
    request.setHeader(b"etag", item.etag)
    request.setHeader(b"cache-control", b"no-cache")
    request.setHeader(b"vary", b"Accept")
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"x-frame-options", b"DENY")
    request.setHeader(b"referrer-policy", b"no-referrer")
    request.setHeader(b"content-security-policy", POLICY.encode("ascii"))
    if request.method not in (b"GET", b"HEAD"):
        request.setResponseCode(405)
        request.setHeader(b"allow", b"GET, HEAD")
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"GET or HEAD only\n"
    offered = request.getHeader(b"if-none-match") or b""
    if item.etag in [tag.strip() for tag in offered.split(b",")]:
        request.setResponseCode(304)
        return b""
    return item.body


class ConsoleFiles(Resource):
    """``/console/<name>``: one of the console's files; anything else a JSON 404."""

    isLeaf = True

    def __init__(self, auth: Authenticator, files: dict[str, StaticFile] | None = None) -> None:
        super().__init__()
        self.auth = auth
        self.files = files if files is not None else load_files()

    @property
    def page(self) -> StaticFile:
        """The console's HTML page."""
        return self.files[PAGE]

    def render(self, request: Request) -> bytes:
        names = request.postpath
        item = self.files.get(names[0].decode("utf-8", "replace")) if len(names) == 1 else None
        if item is None:
            return NotFoundResource(self.auth, True, _HINT).render(request)
        return serve(request, item)
