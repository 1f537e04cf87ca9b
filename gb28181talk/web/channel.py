"""The API's HTTP server side: bodies refused before they are read, protocol errors as JSON.

Twisted's channel reads a request's whole body (spooling a large one to a
temporary file) before any resource sees it, so the API's own checks would
come too late.  Here, once the headers are in:

* a ``Content-Length`` over the cap is answered 413 at once;
* while the secret is needed and not in the query string or a bearer header
  (ZLMediaKit clients put it in a form body), the cap is the small
  :data:`~gb28181talk.web.body.UNAUTHENTICATED_BODY_BYTES`, and a body over
  it is answered 401 at once;
* a chunked body is counted as it comes and cut off (same answers) once
  over the cap;
* a body is held in memory (it is at most the cap), never in a file.

A refused request is answered and the connection closed; nothing of it
reaches a resource.  A request line over 16 KiB is answered 414, a header
line over it 431, a malformed request 400: always a JSON body with a
non-zero ``code`` and a message, where Twisted would close or say nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from twisted.logger import Logger
from twisted.web.http import RESPONSES, HTTPChannel
from twisted.web.server import Request, Site

from gb28181talk.web import codes
from gb28181talk.web.body import MAX_BODY_BYTES, UNAUTHENTICATED_BODY_BYTES

log = Logger()


@dataclass(frozen=True, slots=True)
class BodyLimit:
    """How much body a request may send, and the answer when it sends more."""

    cap: int
    status: int
    code: int
    advice: str

    def message(self, length: int | None) -> str:
        size = f"{length} bytes" if length is not None else f"over {self.cap} bytes (chunked)"
        return f"the request body is {size}; {self.advice}"


FULL = BodyLimit(
    MAX_BODY_BYTES, 413, codes.INVALID_ARGS,
    f"this API takes at most {MAX_BODY_BYTES} bytes (its bodies are a few hundred)",
)
"""The limit with no secret set, or with the right secret in the query or a bearer header."""

WITHOUT_SECRET = BodyLimit(
    UNAUTHENTICATED_BODY_BYTES, 401, codes.AUTH_FAILED,
    "this API needs the secret, and without the right one in the query string or a bearer "
    f"header it reads at most {UNAUTHENTICATED_BODY_BYTES} bytes of body (to look for it "
    "there): put secret=... in the query string or send 'Authorization: Bearer ...'",
)
"""The limit while the secret is needed and could only be in the body."""


class LimitedRequest(Request):
    """A request whose body is held in memory and counted against its :class:`BodyLimit`."""

    body_limit = FULL
    _body_bytes = 0

    def gotLength(self, length: int | None) -> None:
        """Memory, never a temporary file: the channel refused anything over the cap."""
        self.content = BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        """Keep ``data`` while the body stays within its cap; over it, refuse the request."""
        channel = self.channel
        if channel is None or getattr(channel, "refused", False):
            return
        self._body_bytes += len(data)
        if self._body_bytes > self.body_limit.cap:
            limit = self.body_limit
            refuse = getattr(channel, "refuse", None)
            if refuse is not None:
                refuse(limit.status, limit.code, limit.message(None))
            else:
                channel.loseConnection()
            return
        self.content.write(data)


class ApiChannel(HTTPChannel):
    """An HTTP/1.1 channel that refuses over-size bodies before reading them and answers JSON."""

    refused = False
    site: Any

    def refuse(self, status: int, code: int, msg: str) -> None:
        """Answer ``status`` with ``{"code", "msg"}`` and close; the request goes no further."""
        if self.refused or self.transport is None:
            return
        self.refused = True
        body = json.dumps({"code": code, "msg": msg}).encode("utf-8")
        phrase = RESPONSES.get(status, b"Refused")
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json; charset=utf-8\r\n"
            b"content-length: %d\r\ncache-control: no-store\r\nconnection: close\r\n\r\n%s"
            % (status, phrase, len(body), body)
        )
        peer = self.transport.getPeer()
        log.info("HTTP request from {peer} refused ({status}): {msg}",
                 peer=f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}",
                 status=status, msg=msg)
        self.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if not self.refused:
            super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        request = self.requests[-1]
        auth = getattr(self.site, "auth", None)
        target: bytes = getattr(self, "_path", b"")  # the request target, set by lineReceived
        full = auth is None or auth.allows_before_body(
            target, request.requestHeaders.getRawHeaders(b"authorization", [None])[0]
        )
        limit = FULL if full else WITHOUT_SECRET
        request.body_limit = limit
        if self.length is not None and self.length > limit.cap:
            self.refuse(limit.status, limit.code, limit.message(self.length))
            return
        super().allHeadersReceived()

    def allContentReceived(self) -> None:
        if not self.refused:
            super().allContentReceived()

    def lineLengthExceeded(self, line: bytes) -> None:
        if not self.requests:
            self.refuse(414, codes.INVALID_ARGS,
                        f"the request line (method, path and query string) is over "
                        f"{self.MAX_LENGTH} bytes (16 KiB); send long parameters in a JSON "
                        "or form body (POST) instead")
        else:
            self.refuse(431, codes.INVALID_ARGS,
                        f"a request header line is over {self.MAX_LENGTH} bytes (16 KiB)")

    def _respondToBadRequestAndDisconnect(self) -> None:
        """Twisted's answer to a malformed request, as JSON (Twisted's own has no body)."""
        if self._receivedHeaderSize > self.totalHeadersSize:
            self.refuse(431, codes.INVALID_ARGS,
                        f"the request's headers are over {self.totalHeadersSize} bytes in all")
        else:
            self.refuse(400, codes.INVALID_ARGS,
                        "malformed HTTP request (request line, a header, its length or its "
                        "chunked body); send HTTP/1.1 as RFC 9112 describes")


class ApiSite(Site):
    """The API's Site: its channels are :class:`ApiChannel`; ``auth`` sets the body limits.

    HTTP/1.1 only, even over TLS with the ``h2`` package installed: the body
    limits live in the HTTP/1.1 channel, and the API's clients speak 1.1.
    """

    protocol = ApiChannel  # type: ignore[assignment]

    def __init__(self, resource: Any, auth: Any = None, **kwargs: Any) -> None:
        super().__init__(resource, **kwargs)
        self.auth = auth

    def acceptableProtocols(self) -> list[bytes]:
        """What TLS (ALPN) may negotiate: HTTP/1.1 alone."""
        return [b"http/1.1"]
