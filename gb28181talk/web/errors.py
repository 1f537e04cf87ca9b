"""The web layer's one error mapper: domain errors become ZLMediaKit codes and HTTP statuses.

The core and the sources raise :class:`~gb28181talk.errors.GbTalkError`
subclasses that say what failed in people's words; this table is the only
place that knows which ``code`` (web/codes.py) and which HTTP status each one
answers with.  The ZLMediaKit API answers HTTP 200 whatever the status (its
resources set ``http_errors = False``); the native API uses the status too.
"""

from __future__ import annotations

from gb28181talk import errors
from gb28181talk.web import codes

STATUS_BY_CODE = {
    codes.AUTH_FAILED: 401,
    codes.INVALID_ARGS: 400,
    codes.EXCEPTION: 409,
    codes.NOT_FOUND: 404,
    codes.OTHER_FAILED: 500,
}
"""The HTTP status of a code when nothing more specific is said."""


class ApiError(Exception):
    """A refusal the caller can act on: a ZLMediaKit-style ``code``, a message, an HTTP status."""

    def __init__(self, code: int, msg: str, status: int | None = None) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status if status is not None else STATUS_BY_CODE.get(code, 500)


DOMAIN_ERRORS: tuple[tuple[type[errors.GbTalkError], int, int], ...] = (
    (errors.ShuttingDown, codes.OTHER_FAILED, 503),
    (errors.DeviceUnreachable, codes.OTHER_FAILED, 502),
    (errors.RtpServerNotFound, codes.OTHER_FAILED, 404),
    (errors.ReplaceFailed, codes.OTHER_FAILED, 500),
    (errors.RecordingUnavailable, codes.OTHER_FAILED, 500),
    (errors.SessionConflict, codes.INVALID_ARGS, 409),
    (errors.SessionNotFound, codes.NOT_FOUND, 404),
    (errors.SessionError, codes.INVALID_ARGS, 400),
    (errors.PortInUseError, codes.EXCEPTION, 409),
    (errors.PoolExhaustedError, codes.EXCEPTION, 503),
    (errors.PortError, codes.EXCEPTION, 409),
    (errors.SourceNotFound, codes.NOT_FOUND, 404),
    (errors.SourceEnded, codes.NOT_FOUND, 404),
    (errors.NameTaken, codes.INVALID_ARGS, 409),
    (errors.FileMemoryFull, codes.EXCEPTION, 503),
    (errors.FileTooLargeForMemory, codes.INVALID_ARGS, 413),
    (errors.SourceError, codes.INVALID_ARGS, 400),
)
"""(domain error, code, HTTP status), most specific first: the first that matches answers."""


def api_error(error: BaseException) -> ApiError | None:
    """The API's answer to ``error``: itself if an ApiError, mapped if a domain error, else None.

    None means an unexpected failure: the caller logs it and answers -1 / 500.
    """
    if isinstance(error, ApiError):
        return error
    for kind, code, status in DOMAIN_ERRORS:
        if isinstance(error, kind):
            return ApiError(code, str(error), status)
    return None
