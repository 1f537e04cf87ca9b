"""Webhooks: ``on_send_rtp_stopped`` POSTed as JSON for every talk session that ends.

The URL is ``<hook-url>/on_send_rtp_stopped``, the layout wvp-GB28181-pro
configures (a base URL plus the hook's name).  The body has ZLMediaKit's
fields (``mediaServerId``, ``hook_index``, ``vhost``, ``app``, ``stream``,
``params``, ``ssrc``, ``originType``, ``originTypeStr``, ``originUrl``,
``msg``, ``err``) plus ours: ``reason``, ``session_id``, ``local_port``,
``peer`` and ``stats``.  Unlike ZLMediaKit it fires for every ending,
``stopSendRtp`` and shutdown included.

Delivery never blocks media: the POST runs on its own, with a timeout, and
is retried with exponential back-off on a network error or a non-2xx
status; a receiver that stays down costs a log line per hook, nothing more.
At shutdown :meth:`HookDeliverer.drain` bounds the wait: what is not
delivered when its time is up is cancelled, never retried, and counted.
"""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from zope.interface import implementer

from gb28181talk.interfaces import ISessionObserver
from gb28181talk.web import codes

log = Logger()

HOOK_NAME = "on_send_rtp_stopped"


class _BodyDrain(Protocol):
    """Reads a reply's body to its end (its content does not matter to us).

    The status code alone decides whether a hook was delivered; the body only
    has to end.  A reply without Content-Length (an HTTP/1.0 receiver such as
    ``python3 -m http.server``) ends when the receiver closes the connection,
    which Twisted reports as ``PotentialDataLoss``: that is a normal end too.
    """

    def __init__(self) -> None:
        self.done: Deferred[None] = Deferred(lambda _: self._abort())

    def _abort(self) -> None:
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(None)
        else:
            self.done.errback(reason)


def hook_body(session: Any, reason: str, stats: Any, server_id: str, index: int) -> dict[str, Any]:
    """The ``on_send_rtp_stopped`` JSON for one ended session."""
    key = session.key
    origin, origin_name = codes.origin_type(getattr(session.source, "kind", ""))
    peer = session.peer
    return {
        "mediaServerId": server_id,
        "hook_index": index,
        "vhost": key.vhost,
        "app": key.app,
        "stream": key.stream,
        "params": "",
        "ssrc": session.params.ssrc_echo,
        "originType": origin,
        "originTypeStr": origin_name,
        "originUrl": "",
        "msg": session.end_detail or reason,
        "err": codes.SOCKET_ERRORS.get(reason, -1),
        "reason": reason,
        "session_id": session.id,
        "local_port": session.port,
        "peer": f"{peer[0]}:{peer[1]}" if peer else None,
        "stats": stats.as_dict(),
    }


def _about(body: dict[str, Any]) -> str:
    """What a hook is about, for its log lines: `` for session <id> (<reason>)`` or a stream."""
    if body.get("session_id") is not None:
        reason = f" ({body['reason']})" if body.get("reason") else ""
        return f" for session {body['session_id']}{reason}"
    if body.get("app") is not None:
        return f" for stream {body.get('app')}/{body.get('stream')}"
    return ""


@implementer(ISessionObserver)
class HookDeliverer:
    """Posts ``on_send_rtp_stopped`` for every ended session; retries, never blocks.

    ``retries`` more attempts follow a failed one, ``backoff`` seconds after
    the first failure, doubling each time.  At most ``max_pending``
    deliveries are in flight; beyond that new hooks are dropped and counted.
    """

    def __init__(
        self,
        reactor: Any,
        base_url: str,
        *,
        server_id: str = "gbtalk",
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 1.0,
        max_pending: int = 1000,
        agent: Any = None,
    ) -> None:
        self._reactor = reactor
        self.url = base_url.rstrip("/") + "/" + HOOK_NAME
        self.server_id = server_id
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_pending = max_pending
        self._agent = agent or Agent(
            reactor, connectTimeout=timeout, pool=HTTPConnectionPool(reactor, persistent=False)
        )
        self._index = 0
        self._pending: set[Deferred[bool]] = set()
        self._accepting = True
        self._giving_up = False
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.abandoned = 0
        """Hooks given up at shutdown, when the drain's time ran out (counted in ``failed`` too)."""

    @property
    def pending(self) -> int:
        """Deliveries in flight (including those waiting to retry)."""
        return len(self._pending)

    # -- ISessionObserver

    def session_started(self, session: Any) -> None:
        """Nothing to report."""

    def session_connected(self, session: Any, peer: tuple[str, int]) -> None:
        """Nothing to report."""

    def device_refused(self, session: Any, peer: tuple[str, int], why: str) -> None:
        """Nothing to report."""

    def session_ended(self, session: Any, reason: str, stats: Any) -> None:
        if not self.url:  # no URL set, or hook.enable=0 (setServerConfig)
            return
        body = hook_body(session, reason, stats, self.server_id, self._index)
        self._index += 1
        self.send(body)

    # -- delivery

    def send(self, body: dict[str, Any]) -> Deferred[bool] | None:
        """Start delivering ``body``; the Deferred fires True (delivered) or False (gave up)."""
        return self.post(HOOK_NAME, self.url, body)

    def post(self, hook: str, url: str, body: dict[str, Any]) -> Deferred[bool] | None:
        """Deliver ``body`` as the hook ``hook`` to ``url``, as every hook is (ZLMediaKit's
        ``mediaServerId`` and ``hook_index`` added when absent); None if dropped."""
        if "mediaServerId" not in body or "hook_index" not in body:
            body = {"mediaServerId": self.server_id, "hook_index": self._index, **body}
            self._index += 1
        if not self._accepting:
            self.dropped += 1
            log.warn("webhook {hook}{about} dropped: the service is shutting down",
                     hook=hook, about=_about(body))
            return None
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            log.warn(
                "webhook {hook}{about} dropped: {pending} deliveries already waiting "
                "for {url}",
                hook=hook,
                about=_about(body),
                pending=len(self._pending),
                url=url,
            )
            return None
        data = json.dumps(body).encode("utf-8")
        delivery = Deferred.fromCoroutine(self._deliver(data, body, hook, url))
        self._pending.add(delivery)
        delivery.addBoth(self._done, delivery)
        return delivery

    def _done(self, result: Any, delivery: Deferred[bool]) -> Any:
        self._pending.discard(delivery)
        return result

    async def _deliver(self, data: bytes, body: dict[str, Any], hook: str, url: str) -> bool:
        error = ""
        for attempt in range(self.retries + 1):
            try:
                if attempt:
                    await deferLater(self._reactor, self.backoff * 2 ** (attempt - 1))
                status = await self._post(data, url)
            except Exception as failure:  # network errors, timeouts, cancellation
                if self._giving_up:
                    # drain() ran out of time and counted it: whatever its cancel became
                    # (CancelledError, Agent's ResponseNeverReceived...), never a retry.
                    return False
                error = f"{type(failure).__name__}: {failure}"
            else:
                if 200 <= status < 300:
                    self.delivered += 1
                    log.debug(
                        "webhook {hook}{about} delivered",
                        hook=hook,
                        about=_about(body),
                    )
                    return True
                error = f"HTTP status {status}"
        self.failed += 1
        log.warn(
            "webhook {hook}{about} not delivered to {url} after "
            "{attempts} attempts: {error}",
            hook=hook,
            about=_about(body),
            url=url,
            attempts=self.retries + 1,
            error=error,
        )
        return False

    async def _post(self, data: bytes, url: str) -> int:
        headers = Headers(
            {b"content-type": [b"application/json; charset=utf-8"], b"user-agent": [b"gb28181talk"]}
        )
        request = self._agent.request(
            b"POST", url.encode("utf-8"), headers, FileBodyProducer(BytesIO(data))
        )
        request.addTimeout(self.timeout, self._reactor)
        response = await request
        drain = _BodyDrain()
        response.deliverBody(drain)
        drain.done.addTimeout(self.timeout, self._reactor)
        await drain.done
        return int(response.code)

    def drain(self, timeout: float) -> Deferred[int]:
        """Stop taking hooks, wait up to ``timeout`` s for those in flight, give up on the rest.

        For shutdown: the Deferred fires at the latest ``timeout`` s from now,
        whatever the receiver does (answers late, never accepts, keeps
        failing), with how many hooks were given up on; those are cancelled
        (the attempt in flight and any retry), counted in ``abandoned`` and
        ``failed``, and named in one warning.
        """
        self._accepting = False
        finished: Deferred[int] = Deferred()
        if not self._pending:
            finished.callback(0)
            return finished
        timer = self._reactor.callLater(timeout, self._give_up, finished, timeout)

        def all_ended(_: object) -> None:
            if timer.active():  # else _give_up is under way and answers
                timer.cancel()
                finished.callback(0)

        DeferredList(list(self._pending), consumeErrors=True).addCallback(all_ended)
        return finished

    def _give_up(self, finished: Deferred[int], timeout: float) -> None:
        """The drain's time is up: cancel every delivery left, attempts and retries alike."""
        abandoned = list(self._pending)
        self._pending.clear()
        self._giving_up = True
        self.abandoned += len(abandoned)
        self.failed += len(abandoned)
        log.warn(
            "shutdown: gave up on {count} webhook(s) not delivered within the {timeout:g} s "
            "drain (the receiver at {url} did not answer in time)",
            count=len(abandoned),
            timeout=timeout,
            url=self.url,
        )
        for delivery in abandoned:
            delivery.cancel()
        finished.callback(len(abandoned))
