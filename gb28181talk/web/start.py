"""Turns the arguments of ZLMediaKit's sending calls and ``POST /api/sessions`` into a TalkRequest.

``startSendRtpPassive`` (TCP, or UDP with ``is_udp=1``), ``startSendRtp``
(``dst_url``/``dst_port``: UDP datagrams, or our TCP connect) and
``startSendRtpTalk`` (back on an RTP server's connection) name the transport
in the request; the core builds it.

Both APIs take the same names (ZLMediaKit's), with different defaults: the
ZLMediaKit API keeps ZLMediaKit's (MPEG-PS, payload type 96, even for raw
ES unless ``pt`` says 8 or 0), the native API starts raw PCMA with payload
type 8, the downlink every device plays.  Pure functions: every problem is
an :class:`ApiError` with code -300 naming the parameter, the value and what
is allowed.  The result is the core's :class:`TalkRequest`, whose identity is
the key and whose policy for a live key is each API's: the native API
refuses other settings unless ``replace``, ZLMediaKit's re-creates a session
that waits with other settings or is connected, as ZLMediaKit does.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from typing import Any

from gb28181talk.core.identity import OnRepeat
from gb28181talk.core.params import (
    MAX_SSRC,
    Packaging,
    SessionKey,
    SessionParams,
    SsrcPolicy,
    TransportKind,
)
from gb28181talk.core.request import TalkRequest
from gb28181talk.core.udp import DEFAULT_RTCP_TIMEOUT
from gb28181talk.errors import SessionError
from gb28181talk.media.framing import Framing
from gb28181talk.media.law import Law
from gb28181talk.media.payload import by_payload_type
from gb28181talk.web import codes
from gb28181talk.web.common import ApiError

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")
"""What an app, stream or recv_stream_id may be: the source registry's names."""

TWO_WAY_RECEIVE_TIMEOUT = 15.0
"""Seconds without device audio that end a ``startSendRtpPassive`` two-way session, as
ZLMediaKit does; the native API ends one for silence only when ``receive_timeout`` asks."""

MAX_CLOSE_DELAY_MS = 2**32 - 1
"""ZLMediaKit reads ``close_delay_ms`` as a uint32; wvp's talk sends 10,000,000 and more."""

_HOST_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9\-]{0,62})(\.[A-Za-z0-9\-]{1,63})*")
_INTEGER = re.compile(r"[+-]?\d{1,15}")
_DECIMAL_SSRC = re.compile(r"\d{1,10}")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

NATIVE_FIELDS = (
    "vhost", "app", "stream", "ssrc", "src_port", "pt", "codec", "packaging", "use_ps", "type",
    "only_audio", "is_udp", "recv_stream_id", "two_way", "close_delay_ms", "wait_timeout",
    "framing", "packet_ms", "expected_peer", "ssrc_policy", "max_ssrc_violations",
    "receive_timeout", "preroll_ms", "replace",
)
"""Fields ``POST /api/sessions`` accepts."""


def invalid(message: str) -> ApiError:
    """A -300 refusal."""
    return ApiError(codes.INVALID_ARGS, message)


# --------------------------------------------------------------------------- single values


def _given(args: Mapping[str, Any], name: str) -> Any:
    """The value of ``name``, or None when absent, null or empty."""
    value = args.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return value


def integer(args: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    """A whole number within [low, high] (a JSON number or decimal text), or the default."""
    value = _given(args, name)
    if value is None:
        return default
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        number = int(value.strip())
    if number is None:
        raise invalid(f"parameter {name} must be a whole number from {low} to {high}, "
                      f"not {value!r}")
    if not low <= number <= high:
        raise invalid(f"parameter {name}={number} is out of range; use {low} to {high}")
    return number


def number(args: Mapping[str, Any], name: str, default: float | None, low: float,
           high: float) -> float | None:
    """A finite number within (low, high], or the default."""
    value = _given(args, name)
    if value is None:
        return default
    result: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            result = None
    if result is None or not math.isfinite(result):
        raise invalid(f"parameter {name} must be a number of seconds, not {value!r}")
    if not low < result <= high:
        raise invalid(f"parameter {name}={value} is out of range; use more than {low:g} and "
                      f"at most {high:g}")
    return result


def boolean(args: Mapping[str, Any], name: str, default: bool) -> bool:
    """A flag: true/false, 1/0, yes/no, on/off; or the default."""
    value = _given(args, name)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise invalid(f"parameter {name} must be 1 or 0 (true or false), not {value!r}")


def text(args: Mapping[str, Any], name: str, default: str | None = None,
         pattern: re.Pattern[str] | None = None, what: str = "") -> str | None:
    """A string matching ``pattern``, or the default; ``what`` makes it required."""
    value = _given(args, name)
    if value is None:
        if default is None and what:
            raise invalid(f"parameter {name} is required: {what}")
        return default
    if not isinstance(value, str):
        raise invalid(f"parameter {name} must be a string, not {value!r}")
    value = value.strip()
    if len(value) > 256:
        raise invalid(f"parameter {name} is {len(value)} characters long; at most 256")
    if pattern is not None and not pattern.fullmatch(value):
        raise invalid(
            f"parameter {name}={value!r} is not a valid name: use 1 to 128 letters, digits, "
            "'_', '-' or '.', not starting with '.' or '-'"
        )
    return value


def ssrc(args: Mapping[str, Any], required: bool = True) -> int | None:
    """The SSRC: the decimal number of the SDP ``y=`` line (leading zeros allowed)."""
    value = _given(args, "ssrc")
    if value is None:
        if required:
            raise invalid("parameter ssrc is required: the decimal SSRC from the SDP y= line, "
                          "e.g. 0100000001")
        return None
    result: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        result = value
    elif isinstance(value, str) and _DECIMAL_SSRC.fullmatch(value.strip()):
        result = int(value.strip())
    if result is None or not 0 <= result <= MAX_SSRC:
        raise invalid(f"parameter ssrc must be a decimal number from 0 to {MAX_SSRC} "
                      f"(the SDP y= value, e.g. 0100000001), not {value!r}")
    return result


def source_name(args: Mapping[str, Any]) -> tuple[str, str, str]:
    """vhost (default ``__defaultVhost__``), app and stream, checked."""
    vhost = text(args, "vhost", codes.DEFAULT_VHOST)
    app = text(args, "app", None, NAME, "the app of the audio source, e.g. broadcast")
    stream = text(args, "stream", None, NAME, "the stream of the audio source, e.g. tone")
    assert vhost is not None and app is not None and stream is not None
    return vhost, app, stream


def _zlm_packaging(args: Mapping[str, Any]) -> Packaging:
    """ZLMediaKit's ``type`` (0 ES, 1 PS, 2 TS; default PS), overridden by ``use_ps``."""
    kind = integer(args, "type", 1, 0, 2)
    if _given(args, "use_ps") is not None:
        kind = 1 if boolean(args, "use_ps", True) else 0
    if kind == 2:
        raise invalid("type=2 (MPEG-TS over RTP) is not supported; use type=1 (PS) or "
                      "type=0 / use_ps=0 (raw G.711)")
    return Packaging.PS if kind == 1 else Packaging.RAW


def _refuse_udp(args: Mapping[str, Any]) -> None:
    if boolean(args, "is_udp", False):
        raise invalid("is_udp=1 (UDP) is not taken by the native API: it opens TCP passive "
                      "sessions; send UDP with /index/api/startSendRtp (is_udp=1, dst_url, "
                      "dst_port) or /index/api/startSendRtpPassive (is_udp=1)")


def _close_delay(args: Mapping[str, Any], wait_timeout: float) -> float:
    delay_ms = integer(args, "close_delay_ms", 0, 0, MAX_CLOSE_DELAY_MS)
    return delay_ms / 1000 if delay_ms else wait_timeout


def _params(**fields: Any) -> SessionParams:
    try:
        return SessionParams(**fields)
    except SessionError as error:
        raise invalid(str(error)) from None


def _zlm_law(payload_type: int, packaging: Packaging) -> Law:
    """ZLMediaKit's rule, read from the payload table: raw PT 0 is PCMU, anything else PCMA.

    As in ZLMediaKit, ``use_ps=0`` with the default ``pt=96`` keeps PCMA inside.
    """
    raw = by_payload_type(payload_type) if packaging is Packaging.RAW else None
    return raw.law if raw is not None and raw.law is not None else Law.ALAW


# --------------------------------------------------------------------------- the two APIs


def _destination(args: Mapping[str, Any], udp: bool) -> tuple[str, int]:
    """``dst_url`` and ``dst_port`` of ``startSendRtp``: where the device is."""
    host = text(args, "dst_url", None, None, "the device's address from its SDP c= line")
    assert host is not None
    port = _given(args, "dst_port")
    if port is None:
        raise invalid("parameter dst_port is required: the device's port from its SDP m= line")
    dst_port = integer(args, "dst_port", 0, 1, 65535)
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        if udp:
            raise invalid(f"parameter dst_url={host!r} is not an IP address; UDP sending needs "
                          "the device's address as an IP (its SDP c= line)") from None
        if not _HOST_NAME.fullmatch(host):
            raise invalid(f"parameter dst_url={host!r} is neither an IP address nor a host "
                          "name") from None
    return host, dst_port


def _transport(args: Mapping[str, Any], mode: str) -> dict[str, Any]:
    """The transport fields of SessionParams for one of ZLMediaKit's sending calls."""
    if mode == "talk":
        return {"transport": TransportKind.RTP_SERVER}
    if mode == "passive":
        udp = boolean(args, "is_udp", False)
        return {"transport": TransportKind.UDP_PASSIVE if udp else TransportKind.TCP_PASSIVE}
    if _given(args, "is_udp") is None:
        raise invalid("parameter is_udp is required: 1 to send UDP datagrams to the device, "
                      "0 to connect to it over TCP")
    udp = boolean(args, "is_udp", False)
    host, port = _destination(args, udp)
    fields: dict[str, Any] = {
        "transport": TransportKind.UDP if udp else TransportKind.TCP_ACTIVE,
        "dst_host": host, "dst_port": port,
    }
    if boolean(args, "udp_rtcp_timeout", False) and udp:
        fields["rtcp_timeout"] = DEFAULT_RTCP_TIMEOUT
    return fields


def parse_zlm_start(args: Mapping[str, Any], wait_timeout: float,
                    mode: str = "passive") -> TalkRequest:
    """ZLMediaKit's sending calls (strings) as ZLMediaKit reads them.

    ``mode`` ``passive``: ``startSendRtpPassive`` (TCP, or UDP with ``is_udp=1``);
    ``active``: ``startSendRtp`` (``dst_url``, ``dst_port``, ``is_udp``,
    ``udp_rtcp_timeout``); ``talk``: ``startSendRtpTalk`` (back on the connection of
    the RTP server ``recv_stream_id``).
    """
    vhost, app, stream = source_name(args)
    key_ssrc = ssrc(args)
    assert key_ssrc is not None
    src_port = integer(args, "src_port", 0, 0, 65535) if mode != "talk" else 0
    payload_type = integer(args, "pt", 96, 0, 127)
    packaging = _zlm_packaging(args)
    boolean(args, "only_audio", False)  # audio is all we send
    boolean(args, "enable_origin_recv_limit", False)  # our pacer never outruns the device
    transport = _transport(args, mode)
    if mode == "talk":
        rtp_server = text(args, "recv_stream_id", None, NAME,
                          "the stream_id of the RTP server the device sends its voice to")
        recv_stream_id = None
    else:
        rtp_server = None
        recv_stream_id = text(args, "recv_stream_id", None, NAME)
    two_way = recv_stream_id is not None
    params = _params(
        **transport,
        key=SessionKey(vhost, app, stream, key_ssrc),
        src_port=src_port,
        law=_zlm_law(payload_type, packaging),
        payload_type=payload_type,
        packaging=packaging,
        wait_timeout=_close_delay(args, wait_timeout),
        receive=two_way,
        receive_timeout=TWO_WAY_RECEIVE_TIMEOUT if two_way else None,
        ssrc_text=args["ssrc"].strip() if isinstance(args.get("ssrc"), str) else None,
    )
    return TalkRequest(params, recv_stream_id, OnRepeat.REPLACE_UNLESS_WAITING,
                       rtp_server=rtp_server)


def parse_native_start(body: Mapping[str, Any], wait_timeout: float) -> TalkRequest:
    """``POST /api/sessions`` JSON: the ZLMediaKit names plus our own, raw PCMA by default."""
    unknown = sorted(str(name) for name in body if name not in NATIVE_FIELDS)
    if unknown:
        raise invalid(f"unknown field(s) {', '.join(map(repr, unknown))}; "
                      f"allowed: {', '.join(NATIVE_FIELDS)}")
    vhost, app, stream = source_name(body)
    key_ssrc = ssrc(body)
    assert key_ssrc is not None
    packaging_name = text(body, "packaging", None)
    if packaging_name is not None:
        if packaging_name.lower() not in ("raw", "ps"):
            raise invalid(f"parameter packaging={packaging_name!r}; use 'raw' or 'ps'")
        packaging = Packaging(packaging_name.lower())
    elif _given(body, "use_ps") is not None or _given(body, "type") is not None:
        packaging = _zlm_packaging(body)
    else:
        packaging = Packaging.RAW
    codec = text(body, "codec", "pcma")
    assert codec is not None
    try:
        law = Law.from_name(codec)
    except ValueError:
        raise invalid(f"parameter codec={codec!r}; use 'pcma' (A-law) or 'pcmu' (µ-law)") from None
    framing_name = (text(body, "framing", "rfc4571") or "rfc4571").lower()
    if framing_name not in ("rfc4571", "none"):
        raise invalid(f"parameter framing={framing_name!r}; use 'rfc4571' (2-byte length, the "
                      "GB28181 norm) or 'none' (some Hikvision firmware)")
    policy_name = (text(body, "ssrc_policy", "learn") or "learn").lower()
    if policy_name not in {policy.value for policy in SsrcPolicy}:
        raise invalid(f"parameter ssrc_policy={policy_name!r}; use 'strict', 'learn' or 'off'")
    expected_peer = text(body, "expected_peer", None)
    if expected_peer is not None:
        try:
            expected_peer = str(ipaddress.ip_address(expected_peer))
        except ValueError:
            raise invalid(f"parameter expected_peer={expected_peer!r} is not an IP address; "
                          "give the device's address from its SDP c= line") from None
    boolean(body, "only_audio", False)
    _refuse_udp(body)
    recv_stream_id = text(body, "recv_stream_id", None, NAME)
    two_way = boolean(body, "two_way", recv_stream_id is not None) or recv_stream_id is not None
    seconds = number(body, "wait_timeout", None, 0, MAX_CLOSE_DELAY_MS / 1000)
    receive_timeout = number(body, "receive_timeout", None, -1, 86400)
    if receive_timeout is not None and receive_timeout < 0:
        raise invalid(f"parameter receive_timeout={receive_timeout:g} must be 0 (never) or "
                      "a number of seconds")
    if receive_timeout is not None and receive_timeout <= 0:
        receive_timeout = None  # absent or 0: never end for silence
    violations = integer(body, "max_ssrc_violations", 0, 0, 1_000_000)
    params = _params(
        key=SessionKey(vhost, app, stream, key_ssrc),
        src_port=integer(body, "src_port", 0, 0, 65535),
        law=law,
        payload_type=integer(body, "pt", -1, 0, 127) if _given(body, "pt") is not None else None,
        packaging=packaging,
        framing=Framing(framing_name),
        packet_ms=integer(body, "packet_ms", 20, 20, 180),
        wait_timeout=seconds if seconds is not None else _close_delay(body, wait_timeout),
        expected_peer=expected_peer,
        ssrc_policy=SsrcPolicy(policy_name),
        max_ssrc_violations=violations or None,
        receive=two_way,
        receive_timeout=receive_timeout if two_way else None,
        preroll_ms=integer(body, "preroll_ms", 1000, 0, 10_000),
    )
    replace = boolean(body, "replace", False)
    return TalkRequest(params, recv_stream_id, OnRepeat.REPLACE if replace else OnRepeat.CONFLICT)
