"""What every API resource shares: request arguments, the secret, JSON replies, errors.

A handler returns a dict (the reply, ``code`` 0 added), or a Deferred
firing with one (the answer then leaves when it fires), or raises
:class:`ApiError` or a domain error (mapped by ``web/errors.py``);
anything else it raises becomes ``{"code": -1}`` with the failure logged.
No request ever gets an HTML page or a traceback.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from gb28181talk.web import codes
from gb28181talk.web.body import MAX_BODY_BYTES, parse_body
from gb28181talk.web.crosssite import SiteGuard
from gb28181talk.web.errors import ApiError, api_error

log = Logger()


def not_found(path: str, hint: str) -> ApiError:
    """The 404 for a path nothing answers at."""
    return ApiError(codes.NOT_FOUND, f"nothing at {path}; {hint}", 404)


# --------------------------------------------------------------------------- arguments


def query_of(uri: bytes) -> dict[str, str]:
    """The query-string arguments of a request URI (the last of repeated names wins)."""
    raw = urlsplit(uri.decode("latin-1")).query
    return dict(parse_qsl(raw, keep_blank_values=True, encoding="utf-8", errors="replace"))


def bearer_of(header: bytes | str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header value, if it is one."""
    if header is None:
        return None
    text = header.decode("latin-1") if isinstance(header, bytes) else header
    scheme, _, token = text.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class RequestArgs:
    """A request's arguments: query string, form or JSON body, and a bearer token.

    Parsed lazily, so the secret can be checked before a body is looked at.
    """

    def __init__(self, request: Request) -> None:
        self._request = request
        self._query: dict[str, str] | None = None
        self._body: dict[str, Any] | None = None
        self._body_error: ApiError | None = None

    @property
    def request(self) -> Request:
        """The request these arguments are of."""
        return self._request

    @property
    def path(self) -> str:
        return self._request.path.decode("utf-8", "replace")

    @property
    def query(self) -> dict[str, str]:
        """Query-string arguments (the last of repeated names wins)."""
        if self._query is None:
            self._query = query_of(self._request.uri)
        return self._query

    @property
    def bearer(self) -> str | None:
        """The token of an ``Authorization: Bearer`` header, if any."""
        return bearer_of(self._request.getHeader(b"authorization"))

    def body(self) -> dict[str, Any]:
        """The body as a dict: a JSON object or a form (values as sent); {} when empty.

        Raises ApiError (-300) for a body that is neither, too big, of another
        content type, nested too deep or holding text that cannot be encoded.
        """
        if self._body_error is not None:
            raise self._body_error
        if self._body is None:
            try:
                self._body = self._parse_body()
            except ApiError as error:
                self._body_error = error
                raise
        return self._body

    def _parse_body(self) -> dict[str, Any]:
        content = self._request.content
        if content is None:
            return {}
        content.seek(0)
        data = content.read(MAX_BODY_BYTES + 1)
        if len(data) > MAX_BODY_BYTES:
            raise ApiError(
                codes.INVALID_ARGS, f"the request body is over {MAX_BODY_BYTES} bytes", 413
            )
        kind = self._request.getHeader(b"content-type") or b""
        kind_text = kind.decode("latin-1") if isinstance(kind, bytes) else kind
        return parse_body(data, kind_text, self.path)


def zlm_value(name: str, value: Any) -> str:
    """A JSON value as the string ZLMediaKit would read it (numbers and booleans as text)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return value
    raise ApiError(
        codes.INVALID_ARGS,
        f"parameter {name} must be a string or a number, not a JSON {type(value).__name__}",
    )


def zlm_args(args: RequestArgs) -> dict[str, str]:
    """ZLMediaKit's view of the arguments: the body, the query string over it; names lower-cased."""
    merged: dict[str, str] = {}
    for name, value in args.body().items():
        merged[str(name).lower()] = zlm_value(str(name), value)
    for name, value in args.query.items():
        merged[name.lower()] = value
    return merged


# --------------------------------------------------------------------------- the secret


class Authenticator:
    """Who may call: the API secret (query, form, JSON or bearer token) and the site checks.

    The site checks (web/crosssite.py) refuse requests a browser sends for a
    page of another site and, with no secret, requests addressed by a name
    that is not the API's own (DNS rebinding); ``own_hosts`` adds names to
    localhost and the loopback addresses.
    """

    def __init__(self, secret: str | None, own_hosts: Iterable[str] = ()) -> None:
        self.secret = secret
        self.site = SiteGuard(own_hosts)

    def check_site(self, args: RequestArgs) -> None:
        """Raise ApiError (-100, 403) for a cross-site request or a foreign Host."""
        refusal = self.site.refusal(args.request, check_host=self.secret is None)
        if refusal is not None:
            raise refusal

    def allows_before_body(self, uri: bytes, authorization: bytes | None) -> bool:
        """Whether the request may send a full-size body: no secret is set, or the right one
        is in the query string or a bearer header (seen before the body is read)."""
        if self.secret is None:
            return True
        offered = bearer_of(authorization) or query_of(uri).get("secret")
        return bool(offered) and hmac.compare_digest(
            str(offered).encode("utf-8", "surrogatepass"), self.secret.encode("utf-8")
        )

    def check(self, args: RequestArgs, body_secret: Callable[[], Any] | None = None) -> None:
        """Raise ApiError (-100) unless the request passes the site checks and has the secret."""
        self.check_site(args)
        if self.secret is None:
            return
        offered = args.bearer or args.query.get("secret")
        unreadable = ""
        if offered is None and body_secret is not None:
            try:
                offered = body_secret()
            except ApiError as error:
                offered, unreadable = None, f" (the body could not be read for it: {error.msg})"
        if offered is None or offered == "":
            raise ApiError(
                codes.AUTH_FAILED,
                "this API needs the secret: add secret=... to the request or send "
                f"'Authorization: Bearer ...'{unreadable}",
            )
        if not isinstance(offered, str) or not hmac.compare_digest(
            offered.encode("utf-8", "surrogatepass"), self.secret.encode("utf-8")
        ):
            raise ApiError(codes.AUTH_FAILED, "incorrect secret")


# --------------------------------------------------------------------------- replies


def write_json(request: Request, status: int, reply: Mapping[str, Any]) -> bytes:
    """Set the status and content type; return the UTF-8 JSON body."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(reply, ensure_ascii=False).encode("utf-8")


def error_body(request: Request, error: ApiError, http_errors: bool) -> bytes:
    """The JSON reply of a refusal (HTTP 200 for ZLMediaKit's API, which always answers 200)."""
    return write_json(
        request, error.status if http_errors else 200, {"code": error.code, "msg": error.msg}
    )


@dataclass(frozen=True, slots=True)
class TextReply:
    """A handler's reply that is not JSON (the metrics page)."""

    text: str
    content_type: str


class JsonResource(Resource):
    """A resource answering JSON: ``on_GET``/``on_POST``/... handlers, auth, error mapping.

    ``http_errors`` False answers every refusal with HTTP 200 and the code in
    the body (ZLMediaKit's way); True uses HTTP statuses too (the native API).
    ``public`` resources skip the secret.
    """

    http_errors = True
    public = False
    accept_any_method = False
    hint = "see README.rst, section HTTP API"

    def __init__(self, auth: Authenticator) -> None:
        super().__init__()
        self.auth = auth

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"" and not request.postpath:
            return self
        return NotFoundResource(self.auth, self.http_errors, self.hint)

    def render(self, request: Request) -> bytes | int:
        args = RequestArgs(request)
        if self.isLeaf and any(request.postpath):
            # A leaf with path segments left over (``/metrics/x``): an unknown path.
            return error_body(request, not_found(args.path, self.hint), True)
        method = request.method.decode("ascii", "replace").upper()
        try:
            # Who may call comes first: a caller without the secret learns nothing,
            # not even which methods a path takes.
            if self.public:
                self.auth.check_site(args)
            else:
                self.check_secret(args)
            handler = self._handler(method, args)
            reply = handler(request, args)
        except Exception:
            return self._failure_body(request, Failure(), method, args)
        if isinstance(reply, Deferred):
            return self._render_later(request, reply, method, args)
        return self._reply_body(request, reply)

    def _failure_body(self, request: Request, failure: Failure, method: str,
                      args: RequestArgs) -> bytes:
        """The JSON of a handler's failure: its ApiError or mapped domain error, else -1 logged."""
        error = api_error(failure.value)
        if error is None:
            log.failure("API request {method} {path} failed", failure=failure, method=method,
                        path=args.path)
            error = ApiError(codes.OTHER_FAILED,
                             "internal error; the service log has the details", 500)
        return error_body(request, error, self.http_errors)

    def _render_later(self, request: Request, reply: Deferred[Any], method: str,
                      args: RequestArgs) -> bytes | int:
        """Answer when ``reply`` fires (now if it has); nothing if the client has gone."""
        bodies: list[bytes] = []
        waiting = reply.addCallbacks(
            lambda result: self._reply_body(request, result),
            lambda failure: self._failure_body(request, failure, method, args),
        )
        waiting.addErrback(lambda failure: self._failure_body(request, failure, method, args))
        waiting.addCallback(bodies.append)
        if bodies:
            return bodies[0]
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def answer(_: None) -> None:
            if gone or request.finished:
                return
            request.setHeader(b"content-length", b"%d" % len(bodies[0]))
            request.write(bodies[0])
            request.finish()

        waiting.addCallback(answer)
        return NOT_DONE_YET

    def _reply_body(self, request: Request, reply: Any) -> bytes:
        if isinstance(reply, TextReply):
            request.setResponseCode(200)
            request.setHeader(b"content-type", reply.content_type.encode("ascii"))
            return reply.text.encode("utf-8")
        return write_json(request, 200, {"code": codes.SUCCESS, **reply})

    def check_secret(self, args: RequestArgs) -> None:
        """Native default: secret in the query, a bearer token, or the body's ``secret``."""
        self.auth.check(args, lambda: args.body().get("secret"))

    def _handler(self, method: str, args: RequestArgs) -> Callable[[Request, RequestArgs], Any]:
        if self.accept_any_method:
            return self.on_ANY  # type: ignore[attr-defined, no-any-return]
        if method == "HEAD":
            method = "GET"
        handler = getattr(self, f"on_{method}", None)
        if handler is None:
            allowed = sorted(name[3:] for name in dir(self) if name.startswith("on_"))
            raise ApiError(
                codes.INVALID_ARGS,
                f"{method} is not allowed on {args.path}; use {' or '.join(allowed)}",
                405,
            )
        return handler  # type: ignore[no-any-return]


class NotFoundResource(JsonResource):
    """A JSON 404 for any method at any path below it."""

    isLeaf = True
    public = True
    accept_any_method = True

    def __init__(self, auth: Authenticator, http_errors: bool = True, hint: str = "") -> None:
        super().__init__(auth)
        self.http_errors = http_errors
        self.hint = hint or JsonResource.hint

    def render(self, request: Request) -> bytes:
        args = RequestArgs(request)
        return error_body(request, not_found(args.path, self.hint), True)
