"""The native JSON API under ``/api/``: sources, sessions, the port pool, health, push.

Replies are ``{"code": 0, ...}`` with HTTP 200; refusals carry the same
codes as the ZLMediaKit API with a matching HTTP status (400 arguments,
401 secret, 404 not found, 405 method, 409 conflict or port busy, 503 pool
exhausted or shutting down).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import Request

from gb28181talk import __version__
from gb28181talk.core.params import SessionState
from gb28181talk.core.talk import TalkControl
from gb28181talk.web import codes
from gb28181talk.web.common import (
    ApiError,
    Authenticator,
    JsonResource,
    NotFoundResource,
    RequestArgs,
    error_body,
)
from gb28181talk.web.start import parse_native_start


def _body(args: RequestArgs) -> dict[str, Any]:
    """The JSON body without the ``secret`` field (checked already)."""
    return {name: value for name, value in args.body().items() if name != "secret"}


class SourcesResource(JsonResource):
    """``/api/sources``: list (GET) and create (POST); ``/api/sources/{app}/{stream}`` below."""

    hint = "sources are at /api/sources/{app}/{stream}"

    def __init__(self, auth: Authenticator, control: TalkControl, reactor: Any) -> None:
        super().__init__(auth)
        self.control = control
        self.reactor = reactor

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"" and not request.postpath:
            return self
        if not request.postpath or not request.postpath[0]:
            return NotFoundResource(self.auth, True, self.hint)
        stream = request.postpath.pop(0)
        request.prepath.append(stream)
        if request.postpath and any(request.postpath):
            return NotFoundResource(self.auth, True, self.hint)
        return SourceResource(
            self.auth, self.control, path.decode("utf-8", "replace"),
            stream.decode("utf-8", "replace"),
        )

    def on_GET(self, request: Request, args: RequestArgs) -> dict[str, Any]:
        return {"sources": [source.describe() for source in self.control.registry.list()]}

    def on_POST(self, request: Request, args: RequestArgs) -> Deferred[dict[str, Any]]:
        """Create a source; a file is decoded in a thread, answered once it is loaded."""
        spec = _body(args)
        app, stream = spec.get("app"), spec.get("stream")
        registry = self.control.registry
        if isinstance(app, str) and isinstance(stream, str):
            existing = registry.find(app, stream)
            if existing is not None and not existing.ended:
                raise ApiError(
                    codes.INVALID_ARGS,
                    f"source {app}/{stream} exists; delete it first "
                    f"(DELETE /api/sources/{app}/{stream}) or pick another stream name",
                    409,
                )
            if registry.loading(app, stream):
                raise ApiError(
                    codes.INVALID_ARGS,
                    f"source {app}/{stream} is being loaded from its file by an earlier "
                    "request; wait for its answer or pick another stream name",
                    409,
                )
        # A SourceError (bad spec, unreadable file) is -300 / 400 through web/errors.py.
        return registry.create_async(spec, self.reactor).addCallback(
            lambda source: {"source": source.describe()}
        )


class SourceResource(JsonResource):
    """``/api/sources/{app}/{stream}``: inspect (GET) or delete (DELETE) one source."""

    isLeaf = True

    def __init__(self, auth: Authenticator, control: TalkControl, app: str, stream: str) -> None:
        super().__init__(auth)
        self.control = control
        self.app = app
        self.stream = stream

    def _source(self) -> Any:
        source = self.control.registry.find(self.app, self.stream)
        if source is None:
            raise ApiError(codes.NOT_FOUND, f"no source {self.app}/{self.stream}; list them "
                           "with GET /api/sources")
        return source

    def on_GET(self, request: Request, args: RequestArgs) -> dict[str, Any]:
        return {"source": self._source().describe()}

    def on_DELETE(self, request: Request, args: RequestArgs) -> dict[str, Any]:
        self._source()
        source = self.control.registry.remove(self.app, self.stream)
        return {"source": source.describe()}


LIST_LIMIT = 1000
"""Most sessions one ``GET /api/sessions`` describes unless ``limit`` asks for fewer or more:
each costs the reactor some 15 us to describe and encode, all in one turn."""

MAX_LIST_LIMIT = 10_000
"""The largest ``limit`` a listing takes."""


def _list_limit(text: str | None) -> int:
    """The ``limit`` query argument of a listing, checked (default :data:`LIST_LIMIT`)."""
    if text is None:
        return LIST_LIMIT
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_LIST_LIMIT:
        raise ApiError(codes.INVALID_ARGS, f"limit={text!r}; use a whole number from 1 to "
                       f"{MAX_LIST_LIMIT} (default {LIST_LIMIT}); 'total' says how many match")
    return int(text)


class SessionsResource(JsonResource):
    """``/api/sessions``: list (GET, filters app, stream, state; ``limit``) and start (POST)."""

    hint = "sessions are at /api/sessions/{id}"

    def __init__(self, auth: Authenticator, control: TalkControl, wait_timeout: float) -> None:
        super().__init__(auth)
        self.control = control
        self.wait_timeout = wait_timeout

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"" and not request.postpath:
            return self
        if request.postpath and any(request.postpath):
            return NotFoundResource(self.auth, True, self.hint)
        return SessionResource(self.auth, self.control, path.decode("utf-8", "replace"))

    def on_GET(self, request: Request, args: RequestArgs) -> dict[str, Any]:
        wanted = {name: args.query.get(name) for name in ("app", "stream", "state")}
        states = {str(state) for state in SessionState}
        if wanted["state"] is not None and wanted["state"] not in states:
            raise ApiError(codes.INVALID_ARGS, f"state={wanted['state']!r}; use one of "
                           f"{', '.join(sorted(states))}")
        limit = _list_limit(args.query.get("limit"))
        app, stream, state = wanted["app"], wanted["stream"], wanted["state"]
        matching = [
            session for session in self.control.manager.sessions()
            if (app is None or session.key.app == app)
            and (stream is None or session.key.stream == stream)
            and (state is None or str(session.state) == state)
        ]
        views = [self.control.describe(session) for session in matching[:limit]]
        return {"sessions": views, "total": len(matching), "limit": limit}

    def on_POST(self, request: Request, args: RequestArgs) -> Deferred[dict[str, Any]]:
        start = parse_native_start(_body(args), self.wait_timeout)
        return self.control.start(start).addCallback(
            lambda session: {"local_port": session.port, "session": self.control.describe(session)}
        )


class SessionResource(JsonResource):
    """``/api/sessions/{id}``: inspect (GET) or stop (DELETE) one live session."""

    isLeaf = True

    def __init__(self, auth: Authenticator, control: TalkControl, session_id: str) -> None:
        super().__init__(auth)
        self.control = control
        self.session_id = session_id

    def _session(self) -> Any:
        session = self.control.manager.get(self.session_id)
        if session is None:
            raise ApiError(codes.NOT_FOUND, f"no live talk session {self.session_id!r}; it "
                           "ended or never existed (GET /api/sessions lists the live ones)")
        return session

    def on_GET(self, request: Request, args: RequestArgs) -> dict[str, Any]:
        return {"session": self.control.describe(self._session())}

    def on_DELETE(self, request: Request, args: RequestArgs) -> dict[str, Any]:
        session = self._session()
        view = self.control.describe(session)  # with its wiring, forgotten once it ends
        session.stop()
        view.update(session.describe())
        return {"session": view}


class PoolResource(JsonResource):
    """``/api/pool``: the talk-port range, how many ports are free and leased, each lease."""

    isLeaf = True

    def __init__(self, auth: Authenticator, control: TalkControl) -> None:
        super().__init__(auth)
        self.control = control

    def on_GET(self, request: Request, args: RequestArgs) -> dict[str, Any]:
        view = self.control.manager.pool.describe()
        workers = getattr(self.control.manager, "describe_workers", None)
        if workers is not None:  # --workers N: one pool, and which worker runs how many
            view["workers"] = workers()
        return view


class HealthResource(JsonResource):
    """``/api/health``: 200 while the service runs (no secret needed: for probes)."""

    isLeaf = True
    public = True

    def __init__(self, auth: Authenticator, control: TalkControl, clock: IReactorTime) -> None:
        super().__init__(auth)
        self.control = control
        self.clock = clock
        self.started = clock.seconds()

    def on_GET(self, request: Request, args: RequestArgs) -> dict[str, Any]:
        manager = self.control.manager
        status = "shutting-down" if manager.shutting_down else "ok"
        return {
            "status": status,
            "version": __version__,
            "uptime_s": round(self.clock.seconds() - self.started, 3),
            "sessions": len(manager.sessions()),
            "sources": len(self.control.registry),
            "advertise_ip": self.control.advertise_ip,
        }


class SecretGate(Resource):
    """Puts the secret in front of a resource that does not check it (the WebSocket push)."""

    def __init__(self, auth: Authenticator, inner: Resource) -> None:
        super().__init__()
        self.auth = auth
        self.inner = inner

    def _refusal(self, request: Request) -> Resource | None:
        try:
            self.auth.check(RequestArgs(request))
        except ApiError as error:
            return _Refusal(error)
        return None

    def getChildWithDefault(self, path: bytes, request: Request) -> Resource:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        return self.inner.getChildWithDefault(path, request)

    def render(self, request: Request) -> bytes:
        refusal = self._refusal(request)
        return (refusal or self.inner).render(request)  # type: ignore[no-any-return]


class _Refusal(Resource):
    isLeaf = True

    def __init__(self, error: ApiError) -> None:
        super().__init__()
        self.error = error

    def render(self, request: Request) -> bytes:
        return error_body(request, self.error, True)


class NativeApi(Resource):
    """``/api``: the native resources by name; anything else a JSON 404."""

    hint = "the native API has /api/sources, /api/sessions, /api/pool, /api/health, /api/push"

    def __init__(
        self,
        auth: Authenticator,
        control: TalkControl,
        reactor: Any,
        wait_timeout: float,
        push: Resource | None = None,
    ) -> None:
        super().__init__()
        self.auth = auth
        self.putChild(b"sources", SourcesResource(auth, control, reactor))
        self.putChild(b"sessions", SessionsResource(auth, control, wait_timeout))
        self.putChild(b"pool", PoolResource(auth, control))
        self.putChild(b"health", HealthResource(auth, control, reactor))
        if push is not None:
            self.putChild(b"push", SecretGate(auth, push))

    def getChild(self, path: bytes, request: Request) -> Resource:
        return NotFoundResource(self.auth, True, self.hint)

    def render(self, request: Request) -> bytes:
        return NotFoundResource(self.auth, True, self.hint).render(request)
