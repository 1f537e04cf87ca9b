"""The one error mapper: each domain error answers with the code and HTTP status it always had."""

from __future__ import annotations

import pytest

from gb28181talk import errors
from gb28181talk.core.identity import CallId
from gb28181talk.web import codes
from gb28181talk.web.errors import ApiError, api_error


@pytest.mark.parametrize(
    ("error", "code", "status"),
    [
        (errors.SourceNotFound("broadcast", "x"), codes.NOT_FOUND, 404),
        (errors.SourceEnded("broadcast", "x"), codes.NOT_FOUND, 404),
        (errors.NameTaken("broadcast", "tone"), codes.INVALID_ARGS, 409),
        (errors.SourceError("bad spec"), codes.INVALID_ARGS, 400),
        (errors.SessionConflict("ab12", CallId("c"), 30000, "listening", ["pt 8 (asked 0)"]),
         codes.INVALID_ARGS, 409),
        (errors.SessionError("invalid talk session parameters"), codes.INVALID_ARGS, 400),
        (errors.ShuttingDown(), codes.OTHER_FAILED, 503),
        (errors.ReplaceFailed("ab12", CallId("c")), codes.OTHER_FAILED, 500),
        (errors.RecordingUnavailable("cannot record"), codes.OTHER_FAILED, 500),
        (errors.SessionNotFound("no session"), codes.NOT_FOUND, 404),
        (errors.PortBusy(30004, "ab12", "listening"), codes.EXCEPTION, 409),
        (errors.PortInUseError(30004, "in use by another process"), codes.EXCEPTION, 409),
        (errors.PoolExhaustedError("all 5 ports are leased"), codes.EXCEPTION, 503),
    ],
)
def test_domain_errors_map_to_codes_and_statuses(error: Exception, code: int,
                                                 status: int) -> None:
    mapped = api_error(error)
    assert mapped is not None
    assert (mapped.code, mapped.status, mapped.msg) == (code, status, str(error))


def test_an_api_error_is_itself_and_anything_else_is_unmapped() -> None:
    refusal = ApiError(codes.AUTH_FAILED, "incorrect secret")
    assert api_error(refusal) is refusal and refusal.status == 401
    assert api_error(ValueError("boom")) is None
    assert api_error(errors.RtpError("not RTP")) is None


def test_messages_say_what_to_do_with_the_values() -> None:
    busy = str(errors.PortBusy(30004, "ab12", "listening"))
    assert "port 30004" in busy and "ab12" in busy and "src_port" in busy
    conflict = str(errors.SessionConflict("ab12", CallId("c-1"), 30000, "streaming",
                                          ["pt 8 (asked 0)"]))
    assert "call c-1" in conflict and "pt 8 (asked 0)" in conflict and "replace" in conflict
