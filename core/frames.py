"""Serial frame codec (PROTOCOL.md v1): bytes on the wire <-> typed frames.

Pure functions, no I/O. The SerialReader feeds port bytes to a
:class:`LineSplitter` and each line to :func:`decode_reading`; the Transmitter
writes :func:`encode` output and reads ``$ACK`` lines with :func:`decode_ack`.

Decoding never raises: a line is a frame or a :class:`Reject` naming one
:class:`RejectReason` (used as the counter name) and a human detail. The checks
run in this order, the first failure wins:

1. ``too_long``      more than :data:`MAX_LINE` bytes, the ``\\r\\n``/``\\n``
                     terminator not counted.
2. ``no_start``      no ``$`` on the line. Bytes before the first ``$`` are noise
                     and skipped whatever they are (power-up garbage on a serial
                     line is typically non-ASCII, e.g. ``0xFF``), which is why
                     this check comes before the ASCII one.
3. ``not_ascii``     a byte >= 0x80 from the ``$`` on.
4. ``no_checksum``   no ``*``, or the text after the first ``*`` is not exactly
                     two hex digits (either case).
5. ``bad_checksum``  the XOR of the bytes between ``$`` and ``*`` differs.
6. ``unknown_type``  not one of WDN, ALR, SRV, FCD, HLT, ACK -- or, on a port
                     that reads one type only (:func:`decode_reading`,
                     :func:`decode_ack`), any other type.
7. ``field_count``   wrong number of fields after the type: WDN 5, ALR 7, SRV 9,
                     FCD 6, HLT 9, ACK 1 (as listed in PROTOCOL.md).
8. ``bad_field``     a field does not parse; ``detail`` names it first
                     (``"time: month 13"``). Fields are checked left to right.

Field syntax is strict: sid exactly three digits ``001``-``999``; times exactly
14 digits, a real calendar time (seconds 00-59) in the site's zone, not before
1970 UTC; numbers ``-?digits[.digits]`` (no sign ``+``, exponent, nan, inf or
spaces), an empty measured value (flow, pressure) meaning "not measured" and an
empty prediction meaning "no forecast"; other numbers (forecast means, store
percentage) are required;
status and flags exactly two hex digits, unknown bits kept; seq and counters
non-negative decimal integers, seq at most :data:`MAX_SEQ`; ``clock`` is ``0`` or ``1``; ``day`` is
``YYYYMMDD``.

Local time: an ambiguous wall time (DST fall-back) takes ``fold=0`` (the first
occurrence); a non-existent one (spring-forward gap) is read with the offset
before the transition, as :mod:`zoneinfo` does for ``fold=0``.

Speed matters (the ingest path decodes >= 10,000 readings/s with everything
else), so the hot path avoids regexes and per-line ``datetime`` objects: local
time conversion is cached per hour of local time, hex fields are dictionary
look-ups and numbers are checked with ``str`` methods.
"""

from __future__ import annotations

import calendar
import datetime
import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from core.localtime import local_datetime
from core.types import FLAG_SYSTEM, EpochSeconds, Reading, SensorId, new_reading

MAX_LINE = 256
"""Longest accepted line in bytes, terminator excluded."""

MAX_SEQ = 2**63 - 1
"""Largest sequence number a line may carry: more than any outbox will ever give
(2^63 frames), and an ``$ACK`` beyond it would not fit a message (msgpack stops
at 2^64 - 1): the upstream is as untrusted as the inbound line."""

_CACHE_LIMIT = 4096  # entries per time cache; cleared when full (readings mostly arrive in order)
_MISSING = object()


class RejectReason(enum.StrEnum):
    """Why a line was refused; the value is the counter name (``reject.<value>``)."""

    TOO_LONG = "too_long"
    NOT_ASCII = "not_ascii"
    NO_START = "no_start"
    NO_CHECKSUM = "no_checksum"
    BAD_CHECKSUM = "bad_checksum"
    UNKNOWN_TYPE = "unknown_type"
    FIELD_COUNT = "field_count"
    BAD_FIELD = "bad_field"


# Counter prefix of unusable lines from the upstream (``$ACK`` port), by reason.
UPSTREAM_REJECT = "upstream_reject."


@dataclass(frozen=True, slots=True)
class Reject:
    """A refused line: the reason, the line (terminator stripped, at most
    ``MAX_LINE + 1`` bytes) and a detail naming the culprit (``"time: month 13"``)."""

    reason: RejectReason
    line: bytes
    detail: str


@dataclass(frozen=True, slots=True)
class Ack:
    """``$ACK``: the upstream has the outbound frame with this sequence number."""

    seq: int


@dataclass(frozen=True, slots=True)
class AlertFrame:
    """``$ALR``: one processed reading (or a silence alert) with its detection flags."""

    seq: int = field(default=0, kw_only=True)  # given by the outbox (0: not yet)
    sensor: SensorId
    time: EpochSeconds
    flow: float | None
    pressure: float | None
    flow_flags: int
    pressure_flags: int


@dataclass(frozen=True, slots=True)
class ServerReportLine:
    """``$SRV``: one minute of a finished 10-minute block, with the forecast (0 off ``:00``,
    None where there is none)."""

    seq: int = field(default=0, kw_only=True)  # given by the outbox (0: not yet)
    sensor: SensorId
    time: EpochSeconds
    flow: float | None
    pressure: float | None
    flow_flags: int
    pressure_flags: int
    pred_flow: float | None
    pred_pressure: float | None


@dataclass(frozen=True, slots=True)
class DailyForecastLine:
    """``$FCD``: the forecast daily means of one coming (local) day."""

    seq: int = field(default=0, kw_only=True)  # given by the outbox (0: not yet)
    sensor: SensorId
    issued: EpochSeconds
    day: datetime.date
    flow_mean: float
    pressure_mean: float


@dataclass(frozen=True, slots=True)
class HealthFrame:
    """``$HLT``: the gateway's own health, every 10 minutes of wall clock."""

    seq: int = field(default=0, kw_only=True)  # given by the outbox (0: not yet)
    time: EpochSeconds
    uptime_s: int
    outbox_depth: int
    oldest_unsent_s: int
    restarts: int
    rejects: int
    store_used_pct: float
    clock: bool


OutboundFrame = AlertFrame | ServerReportLine | DailyForecastLine | HealthFrame
"""A frame the gateway sends: built by its producer, numbered by the outbox."""
Frame = Reading | Ack | OutboundFrame


# ---------------------------------------------------------------------------------------------
# Checksum and small field codecs


_MASK_64, _MASK_128, _MASK_256, _MASK_512, _MASK_1024 = (
    (1 << bits) - 1 for bits in (64, 128, 256, 512, 1024)
)


def checksum(body: bytes) -> int:
    """XOR of every byte of ``body`` (the text between ``$`` and ``*``)."""
    # Fold the body as one integer, halving its width each step: a few C-level
    # big-int operations instead of a Python loop over every byte.
    width = len(body)
    if width > 256:  # longer than any valid line, but still a correct checksum
        return _checksum_loop(body)
    value = int.from_bytes(body, "little")
    if width > 128:
        value = (value >> 1024) ^ (value & _MASK_1024)
    if width > 64:
        value = (value >> 512) ^ (value & _MASK_512)
    if width > 32:
        value = (value >> 256) ^ (value & _MASK_256)
    if width > 16:
        value = (value >> 128) ^ (value & _MASK_128)
    if width > 8:
        value = (value >> 64) ^ (value & _MASK_64)
    value = (value >> 32) ^ (value & 0xFFFFFFFF)
    value = (value >> 16) ^ (value & 0xFFFF)
    return (value >> 8) ^ (value & 0xFF)


def _checksum_loop(body: bytes) -> int:
    value = 0
    for byte in body:
        value ^= byte
    return value


# Every two-hex-digit text, both cases, to its value: one dict look-up validates and
# converts a status, a flag or a checksum (int(x, 16) would also take "+f" or " f").
_HEX_DIGITS = "0123456789ABCDEFabcdef"
_HEX2: dict[str, int] = {a + b: int(a + b, 16) for a in _HEX_DIGITS for b in _HEX_DIGITS}
_HEX2_BYTES: dict[bytes, int] = {k.encode("ascii"): v for k, v in _HEX2.items()}


class _FieldError(ValueError):
    """A field that does not parse; ``str()`` is the reject detail."""


def _is_decimal(text: str) -> bool:
    """``-?\\d+(\\.\\d+)?`` without a regex (ASCII already guaranteed by the caller)."""
    digits = text[1:] if text[:1] == "-" else text
    whole, dot, fraction = digits.partition(".")
    return whole.isdigit() and (not dot or fraction.isdigit())


# Measured values repeat (a flow of 0.01 resolution, a pressure of 0.001, over the
# range a site sees), so the text of a float is remembered, and the float of a
# decimal text: a dict look-up instead of formatting or validating each time.
_VALUE_CACHE_LIMIT = 16384
_value_texts: dict[float, str] = {}
_decimal_values: dict[str, float] = {}


def format_value(x: float | None) -> str:
    """A number as written on the wire: at most 3 decimals, trailing zeros stripped.

    ``None`` (not measured) and non-finite values, which the protocol cannot
    carry, are written as the empty field.
    """
    if type(x) is float:
        # Equal floats format alike (0.0 and -0.0 both as "0"); NaN never hits.
        text = _value_texts.get(x)
        if text is not None:
            return text
    if x is None or not math.isfinite(x):
        return ""
    text = f"{x:.3f}".rstrip("0").rstrip(".")
    if text == "-0":
        text = "0"
    if type(x) is float:
        _remember(_value_texts, x, text, _VALUE_CACHE_LIMIT)
    return text


def _check_byte(name: str, value: int) -> None:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{name} {value!r} does not fit two hex digits")


def _check_count(name: str, value: int) -> None:
    if not 0 <= value < _COUNT_LIMIT:
        raise ValueError(f"{name} {value!r} is not 0..10**{COUNT_DIGITS} - 1")


def _check_seq(seq: int) -> None:
    # The decoder refuses more (no outbox gives it): never write what we would refuse.
    if not 0 <= seq <= MAX_SEQ:
        raise ValueError(f"seq {seq!r} is not 0..2**63 - 1")


# Every valid sensor id: one set look-up instead of four str checks on the hot paths.
_SENSOR_IDS: frozenset[str] = frozenset(f"{n:03d}" for n in range(1, 1000))


def _check_sensor(sensor: str) -> None:
    if not (len(sensor) == 3 and sensor.isascii() and sensor.isdigit() and sensor != "000"):
        raise ValueError(f"sensor id {sensor!r} is not 001-999")


# ---------------------------------------------------------------------------------------------
# Local time

_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# "mmss" -> seconds into the hour: validates and converts the end of a time in one look-up.
_MMSS: dict[str, int] = {f"{m:02d}{s:02d}": m * 60 + s for m in range(60) for s in range(60)}

# Per zone: "YYYYMMDDhh" -> UTC epoch of hh:00:00 local when the zone's offset is the
# same for the whole local hour, or None when it changes inside it (then the slow path).
_hour_bases: dict[ZoneInfo, dict[str, int | None]] = {}
# Per zone: UTC hour -> the zone's offset in seconds during that whole hour, or None.
_hour_offsets: dict[ZoneInfo, dict[int, int | None]] = {}
# Local epoch hour (local wall time counted as if it were UTC) -> "YYYYMMDDhh".
_hour_prefixes: dict[int, str] = {}
# Per zone: UTC epoch second -> its "YYYYMMDDhhmmss" (recently formatted ones).
_local_texts: dict[ZoneInfo, dict[int, str]] = {}


def _zone_cache(caches: dict[ZoneInfo, dict], tz: ZoneInfo) -> dict:
    cache = caches.get(tz)
    if cache is None:
        cache = caches.setdefault(tz, {})
    return cache


def _remember(cache: dict, key: object, value: object, limit: int = _CACHE_LIMIT) -> None:
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value


def _hour_base(prefix: str, tz: ZoneInfo) -> int | None:
    """Validate ``YYYYMMDDhh`` and return its UTC epoch (see ``_hour_bases``)."""
    year, month, day, hour = int(prefix[:4]), int(prefix[4:6]), int(prefix[6:8]), int(prefix[8:10])
    if year < 1970:
        raise ValueError(f"year {year} before 1970")
    if not 1 <= month <= 12:
        raise ValueError(f"month {month}")
    last = 29 if month == 2 and calendar.isleap(year) else _DAYS_IN_MONTH[month]
    if not 1 <= day <= last:
        raise ValueError(f"day {day} of {year:04d}-{month:02d}")
    if hour > 23:
        raise ValueError(f"hour {hour}")
    start = datetime.datetime(year, month, day, hour, tzinfo=tz).utcoffset()
    end = datetime.datetime(year, month, day, hour, 59, 59, tzinfo=tz).utcoffset()
    if start is None or start != end:
        return None
    return calendar.timegm((year, month, day, hour, 0, 0)) - int(start.total_seconds())


def parse_local_time(text: str, tz: ZoneInfo) -> EpochSeconds:
    """``YYYYMMDDhhmmss`` local time in ``tz`` -> UTC epoch seconds.

    Raises :class:`ValueError` with a short reason (``"month 13"``) when the text
    is not 14 ASCII digits, not a real calendar time or before 1970 UTC.
    Ambiguous local times take ``fold=0``.
    """
    if len(text) != 14 or not (text.isascii() and text.isdigit()):
        raise ValueError(f"not 14 digits: {text[:20]!r}")
    bases = _hour_bases.get(tz) or _zone_cache(_hour_bases, tz)
    prefix = text[:10]
    base = bases.get(prefix, _MISSING)
    if base is _MISSING:
        base = _hour_base(prefix, tz)
        _remember(bases, prefix, base)
    within = _MMSS.get(text[10:])
    if within is None:
        minute, second = int(text[10:12]), int(text[12:14])
        raise ValueError(f"minute {minute}" if minute > 59 else f"second {second}")
    if base is None:  # the zone's offset changes inside this hour: let zoneinfo decide
        local = datetime.datetime(
            int(text[:4]), int(text[4:6]), int(text[6:8]), int(text[8:10]), *divmod(within, 60),
            tzinfo=tz,
        )
        offset = local.utcoffset()
        utc = calendar.timegm(
            (local.year, local.month, local.day, local.hour, local.minute, local.second)
        )
        epoch = utc - (int(offset.total_seconds()) if offset is not None else 0)
    else:
        epoch = base + within
    if epoch < 0:
        raise ValueError("before 1970-01-01 UTC")
    return epoch  # type: ignore[return-value]  # EpochSeconds: NewType calls cost on the hot path


_NAIVE_EPOCH = datetime.datetime(1970, 1, 1)


def _utc_offset(t: int, tz: ZoneInfo) -> int:
    offset = local_datetime(t, tz).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def format_local_time(t: EpochSeconds, tz: ZoneInfo) -> str:
    """UTC epoch seconds -> ``YYYYMMDDhhmmss`` local time in ``tz``."""
    # Each minute is written at least twice (its $ALR, then its $SRV line when
    # the block closes), for every sensor: remember the recent texts per zone.
    texts = _local_texts.get(tz)
    if texts is not None:
        text = texts.get(t)
        if text is not None:
            return text
    else:
        texts = _zone_cache(_local_texts, tz)
    t = int(t)
    text = _format_local_time(t, tz)
    _remember(texts, t, text)
    return text


def _format_local_time(t: int, tz: ZoneInfo) -> str:
    hour = t // 3600
    offsets = _hour_offsets.get(tz) or _zone_cache(_hour_offsets, tz)
    offset = offsets.get(hour, _MISSING)
    if offset is _MISSING or offset is None:
        if offset is _MISSING:
            start = _utc_offset(hour * 3600, tz)
            offset = start if start == _utc_offset(hour * 3600 + 3599, tz) else None
            _remember(offsets, hour, offset)
        if offset is None:  # a transition inside this UTC hour
            offset = _utc_offset(t, tz)
    local = t + offset
    local_hour, within = divmod(local, 3600)
    prefix = _hour_prefixes.get(local_hour)
    if prefix is None:
        tm = _NAIVE_EPOCH + datetime.timedelta(hours=local_hour)  # no time_t (32-bit Pi)
        prefix = f"{tm.year:04d}{tm.month:02d}{tm.day:02d}{tm.hour:02d}"
        _remember(_hour_prefixes, local_hour, prefix)
    minute, second = divmod(within, 60)
    return f"{prefix}{minute:02d}{second:02d}"


def _format_day(day: datetime.date) -> str:
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"


# ---------------------------------------------------------------------------------------------
# Field parsers: each raises _FieldError("<field>: <problem>")


def _sid(text: str) -> SensorId:
    if text in _SENSOR_IDS:
        return text  # type: ignore[return-value]  # SensorId, without the NewType call
    raise _FieldError(f"sid: {text!r} is not 001-999")


def _when(name: str, text: str, tz: ZoneInfo) -> EpochSeconds:
    try:
        return parse_local_time(text, tz)
    except ValueError as exc:
        raise _FieldError(f"{name}: {exc}") from None


def _day(text: str) -> datetime.date:
    if len(text) != 8 or not text.isdigit():
        raise _FieldError(f"day: not 8 digits: {text[:20]!r}")
    try:
        return datetime.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError as exc:
        raise _FieldError(f"day: {exc}") from None


def _measured(name: str, text: str) -> float | None:
    value = _decimal_values.get(text)
    if value is not None:
        return value
    if not text:
        return None
    if _is_decimal(text):
        value = float(text)
        _remember(_decimal_values, text, value, _VALUE_CACHE_LIMIT)
        return value
    raise _FieldError(f"{name}: not a decimal: {text[:20]!r}")


def _number(name: str, text: str) -> float:
    if _is_decimal(text):
        return float(text)
    raise _FieldError(f"{name}: not a decimal: {text[:20]!r}")


def _hex2(name: str, text: str) -> int:
    value = _HEX2.get(text)
    if value is None:
        raise _FieldError(f"{name}: not two hex digits: {text[:20]!r}")
    return value


def _count(name: str, text: str) -> int:
    if text.isdigit():
        return int(text)
    raise _FieldError(f"{name}: not a non-negative integer: {text[:20]!r}")


def _seq(text: str) -> int:
    seq = _count("seq", text)
    if seq > MAX_SEQ:
        raise _FieldError(f"seq: {len(text)} digits, beyond any sequence number")
    return seq


def _clock(text: str) -> bool:
    if text == "1":
        return True
    if text == "0":
        return False
    raise _FieldError(f"clock: not 0 or 1: {text[:20]!r}")


# ---------------------------------------------------------------------------------------------
# Per-type decoders: fields[0] is the type, the field count is already checked


def _decode_wdn(f: list[str], tz: ZoneInfo) -> Reading:
    return new_reading(  # from fields just checked
        _sid(f[1]), _when("time", f[2], tz), _measured("flow", f[3]), _measured("pressure", f[4]),
        _hex2("status", f[5]),
    )


def _decode_alr(f: list[str], tz: ZoneInfo) -> AlertFrame:
    seq = _seq(f[1])  # fields are checked left to right: seq first
    return AlertFrame(
        _sid(f[2]), _when("time", f[3], tz), _measured("flow", f[4]),
        _measured("pressure", f[5]), _hex2("flow_flags", f[6]), _hex2("pressure_flags", f[7]),
        seq=seq,
    )


def _decode_srv(f: list[str], tz: ZoneInfo) -> ServerReportLine:
    seq = _seq(f[1])
    return ServerReportLine(
        _sid(f[2]), _when("time", f[3], tz), _measured("flow", f[4]),
        _measured("pressure", f[5]), _hex2("flow_flags", f[6]), _hex2("pressure_flags", f[7]),
        _measured("pred_flow", f[8]), _measured("pred_pressure", f[9]), seq=seq,
    )


def _decode_fcd(f: list[str], tz: ZoneInfo) -> DailyForecastLine:
    seq = _seq(f[1])
    return DailyForecastLine(
        _sid(f[2]), _when("issued", f[3], tz), _day(f[4]),
        _number("flow_mean", f[5]), _number("pressure_mean", f[6]), seq=seq,
    )


def _decode_hlt(f: list[str], tz: ZoneInfo) -> HealthFrame:
    seq = _seq(f[1])
    return HealthFrame(
        _when("time", f[2], tz), _count("uptime_s", f[3]),
        _count("outbox_depth", f[4]), _count("oldest_unsent_s", f[5]), _count("restarts", f[6]),
        _count("rejects", f[7]), _number("store_used_pct", f[8]), _clock(f[9]), seq=seq,
    )


def _decode_ack(f: list[str], tz: ZoneInfo) -> Ack:
    return Ack(_seq(f[1]))


_Decoder = Callable[[list[str], ZoneInfo], Frame]

# type -> (number of fields after the type, decoder)
_TYPES: dict[str, tuple[int, _Decoder]] = {
    "WDN": (5, _decode_wdn),
    "ALR": (7, _decode_alr),
    "SRV": (9, _decode_srv),
    "FCD": (6, _decode_fcd),
    "HLT": (9, _decode_hlt),
    "ACK": (1, _decode_ack),
}
_READING_ONLY = {"WDN": _TYPES["WDN"]}
_ACK_ONLY = {"ACK": _TYPES["ACK"]}


# ---------------------------------------------------------------------------------------------
# Decoding


def _decode(line: bytes, tz: ZoneInfo, types: dict[str, tuple[int, _Decoder]]) -> Frame | Reject:
    if not isinstance(line, bytes):
        line = bytes(line)
    content = line.rstrip(b"\r\n")
    if len(content) > MAX_LINE:
        # A line cut by LineSplitter arrives as exactly MAX_LINE + 1 bytes: its real
        # length is unknown, so do not state one.
        size = f"{len(content)} bytes" if len(content) > MAX_LINE + 1 else "over-long"
        return Reject(
            RejectReason.TOO_LONG, content[: MAX_LINE + 1], f"line: {size}, limit {MAX_LINE} bytes"
        )
    start = content.find(b"$")
    if start < 0:
        return Reject(RejectReason.NO_START, content, "line: no '$'")
    frame = content[start:] if start else content
    if not frame.isascii():
        at = next(i for i, byte in enumerate(frame) if byte >= 0x80)
        return Reject(
            RejectReason.NOT_ASCII, content, f"line: byte 0x{frame[at]:02X} at {start + at}"
        )
    star = frame.find(b"*")
    if star < 0:
        return Reject(RejectReason.NO_CHECKSUM, content, "checksum: no '*'")
    stated = _HEX2_BYTES.get(frame[star + 1 :])
    if stated is None:
        return Reject(
            RejectReason.NO_CHECKSUM, content,
            f"checksum: not two hex digits after '*': {frame[star + 1 : star + 21]!r}",
        )
    body = frame[1:star]
    computed = checksum(body)
    if computed != stated:
        return Reject(
            RejectReason.BAD_CHECKSUM, content,
            f"checksum: line says {stated:02X}, computed {computed:02X}",
        )
    fields = body.decode("ascii").split(",")
    kind = fields[0]
    spec = types.get(kind)
    if spec is None:
        expected = "/".join(types)
        return Reject(
            RejectReason.UNKNOWN_TYPE, content, f"type: {kind[:20]!r}, expected {expected}"
        )
    count, decoder = spec
    if len(fields) != count + 1:
        return Reject(
            RejectReason.FIELD_COUNT, content,
            f"fields: {kind} has {count}, got {len(fields) - 1}",
        )
    try:
        return decoder(fields, tz)
    except _FieldError as exc:
        return Reject(RejectReason.BAD_FIELD, content, str(exc))


def decode(line: bytes, tz: ZoneInfo) -> Frame | Reject:
    """Any protocol frame from one line (terminator optional). Never raises."""
    return _decode(line, tz, _TYPES)


def decode_reading(line: bytes, tz: ZoneInfo) -> Reading | Reject | None:
    """The inbound port: a ``$WDN`` reading, a reject, or ``None`` for a blank line.

    Any other type, valid or not, is ``unknown_type`` here. Never raises.
    """
    if not isinstance(line, bytes):
        line = bytes(line)
    if not line or line.isspace():
        return None
    return _decode(line, tz, _READING_ONLY)  # type: ignore[return-value]


def decode_ack(line: bytes, tz: ZoneInfo) -> Ack | Reject | None:
    """The upstream port's input: an ``$ACK``, a reject, or ``None`` for a blank line."""
    if not isinstance(line, bytes):
        line = bytes(line)
    if not line or line.isspace():
        return None
    return _decode(line, tz, _ACK_ONLY)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Encoding


# Every outbound line fits MAX_LINE bytes with its "\r\n": each field has a width budget.
# Fixed-width fields (sid, time, flags, ...) take theirs, a sequence number or counter
# takes COUNT_DIGITS, and the decimal values of a type share what is left equally, so
# whether one value fits never depends on another.
COUNT_DIGITS = 20
"""Widest sequence number or counter an outbound line carries (more than 2**64)."""
_COUNT_LIMIT = 10**COUNT_DIGITS
_BODY_MAX = MAX_LINE - len(b"$*XX\r\n")  # 250: the line less "$", "*CS" and "\r\n"
_TIME_DIGITS = 14
# Up to 9999-12-30 UTC every zone's local time has 14 digits (the fast path takes
# these); past 9999-12-31 in every zone: a guard before formatting a huge number.
_TIME_SAFE = 253402300800 - 2 * 86400
_TIME_MAX = 253402300800 + 2 * 86400
_N = COUNT_DIGITS
# type -> (widths of its fixed-width fields, number of decimal values sharing the rest)
_LAYOUTS: dict[str, tuple[tuple[int, ...], int]] = {
    "WDN": ((3, _TIME_DIGITS, 2), 2),  # sid, time, status | flow, pressure
    "ALR": ((_N, 3, _TIME_DIGITS, 2, 2), 2),  # seq, sid, time, flags | flow, pressure
    "SRV": ((_N, 3, _TIME_DIGITS, 2, 2), 4),  # ... | flow, pressure, pred_flow, pred_pressure
    "FCD": ((_N, 3, _TIME_DIGITS, 8), 2),  # seq, sid, issued, day | flow_mean, pressure_mean
    "HLT": ((_N, _TIME_DIGITS, _N, _N, _N, _N, _N, 1), 1),  # seq, time, counts, clock | pct
}
VALUE_WIDTH: dict[str, int] = {
    kind: (_BODY_MAX - len(kind) - len(fixed) - values - sum(fixed)) // values
    for kind, (fixed, values) in _LAYOUTS.items()
}
"""Most characters of one decimal value on a line of each type (ALR 99, SRV 49, ...)."""
assert all(len(fixed) + values == _TYPES[kind][0] for kind, (fixed, values) in _LAYOUTS.items())


def value_fits(kind: str, value: float | None) -> bool:
    """Whether a ``kind`` line can carry ``value`` in a decimal field (``None``: empty)."""
    return _carries(value, format_value(value), VALUE_WIDTH[kind])


def _carries(value: float | None, text: str, width: int) -> bool:
    """Whether ``text``, ``value``'s wire form, writes it within ``width`` characters
    ("" writes only None: a value not finite has no wire form)."""
    return len(text) <= width and (text != "" or value is None)


def _fit(value: float | None, text: str, width: int, flags: int) -> tuple[str, int]:
    """A measured value's (or forecast's) field and its quantity's flags: a value the
    field cannot carry goes out empty with SYSTEM set."""
    return (text, flags) if _carries(value, text, width) else ("", flags | FLAG_SYSTEM)


def _written(name: str, value: float | None, width: int, *, required: bool) -> str:
    """A value's field where no flag can tell it is missing: it fits or is refused."""
    text = format_value(value)
    if _carries(value, text, width) and not (required and value is None):
        return text
    raise ValueError(f"{name} {value!r} cannot be written as a decimal of at most {width} "
                     "characters")


def _wire_time(name: str, t: int, tz: ZoneInfo) -> str:
    if 0 <= t <= _TIME_MAX:
        try:
            text = format_local_time(t, tz)
        except OverflowError:  # a local time in year 10000: past datetime's range
            text = ""
        if len(text) == _TIME_DIGITS:
            return text
    raise ValueError(f"{name} {t!r} is not a time the protocol carries (1970 UTC to 9999)")


def _body(frame: Frame, tz: ZoneInfo, seq: int) -> str:
    if isinstance(frame, AlertFrame | ServerReportLine):
        return _minute_body(frame, tz, seq)
    if isinstance(frame, Reading):
        _check_sensor(frame.sensor)
        _check_byte("status", frame.status)
        width = VALUE_WIDTH["WDN"]
        return (
            f"WDN,{frame.sensor},{_wire_time('time', frame.time, tz)},"
            f"{_written('flow', frame.flow, width, required=False)},"
            f"{_written('pressure', frame.pressure, width, required=False)},{frame.status:02X}"
        )
    if isinstance(frame, DailyForecastLine):
        _check_seq(seq)
        _check_sensor(frame.sensor)
        width = VALUE_WIDTH["FCD"]
        flow = _written("flow_mean", frame.flow_mean, width, required=True)
        pressure = _written("pressure_mean", frame.pressure_mean, width, required=True)
        return (
            f"FCD,{seq},{frame.sensor},{_wire_time('issued', frame.issued, tz)},"
            f"{_format_day(frame.day)},{flow},{pressure}"
        )
    if isinstance(frame, HealthFrame):
        _check_count("seq", seq)
        for name in ("uptime_s", "outbox_depth", "oldest_unsent_s", "restarts", "rejects"):
            _check_count(name, getattr(frame, name))
        pct = _written("store_used_pct", frame.store_used_pct, VALUE_WIDTH["HLT"], required=True)
        return (
            f"HLT,{seq},{_wire_time('time', frame.time, tz)},{frame.uptime_s},"
            f"{frame.outbox_depth},{frame.oldest_unsent_s},{frame.restarts},{frame.rejects},"
            f"{pct},{1 if frame.clock else 0}"
        )
    if isinstance(frame, Ack):
        _check_seq(frame.seq)
        return f"ACK,{frame.seq}"
    raise TypeError(f"not a protocol frame: {type(frame).__name__}")


_ALR_WIDTH, _SRV_WIDTH = VALUE_WIDTH["ALR"], VALUE_WIDTH["SRV"]


def _minute_body(frame: AlertFrame | ServerReportLine, tz: ZoneInfo, seq: int) -> str:
    """``_body`` of the per-minute frames, the hot path (two per reading).

    The checks are inline; the helpers only raise, or run for the rare value
    that is missing or does not fit.
    """
    sensor = frame.sensor
    flow_flags, pressure_flags = frame.flow_flags, frame.pressure_flags
    if not 0 <= seq <= MAX_SEQ:
        _check_seq(seq)
    if type(sensor) is not str or sensor not in _SENSOR_IDS:
        _check_sensor(sensor)
    if not 0 <= flow_flags <= 0xFF:
        _check_byte("flow_flags", flow_flags)
    if not 0 <= pressure_flags <= 0xFF:
        _check_byte("pressure_flags", pressure_flags)
    t = frame.time
    when = format_local_time(t, tz) if 0 <= t <= _TIME_SAFE else _wire_time("time", t, tz)
    fv = format_value
    flow, pressure = fv(frame.flow), fv(frame.pressure)
    if isinstance(frame, AlertFrame):
        width = _ALR_WIDTH
        if not (0 < len(flow) <= width and 0 < len(pressure) <= width):
            flow, flow_flags = _fit(frame.flow, flow, width, flow_flags)
            pressure, pressure_flags = _fit(frame.pressure, pressure, width, pressure_flags)
        return f"ALR,{seq},{sensor},{when},{flow},{pressure},{flow_flags:02X},{pressure_flags:02X}"
    width = _SRV_WIDTH
    pred_flow, pred_pressure = fv(frame.pred_flow), fv(frame.pred_pressure)
    if not (0 < len(flow) <= width and 0 < len(pressure) <= width
            and 0 < len(pred_flow) <= width and 0 < len(pred_pressure) <= width):
        flow, flow_flags = _fit(frame.flow, flow, width, flow_flags)
        pressure, pressure_flags = _fit(frame.pressure, pressure, width, pressure_flags)
        pred_flow, flow_flags = _fit(frame.pred_flow, pred_flow, width, flow_flags)
        pred_pressure, pressure_flags = _fit(frame.pred_pressure, pred_pressure, width,
                                             pressure_flags)
    return (
        f"SRV,{seq},{sensor},{when},{flow},{pressure},{flow_flags:02X},{pressure_flags:02X},"
        f"{pred_flow},{pred_pressure}"
    )


# Exact frame type -> its body; anything else (a subclass, a non-frame) takes _body.
_FAST_BODIES: dict[type, Callable[[Frame, ZoneInfo, int], str]] = {
    AlertFrame: _minute_body, ServerReportLine: _minute_body,  # type: ignore[dict-item]
}


def encode(frame: Frame, tz: ZoneInfo, seq: int | None = None) -> bytes:
    """One wire line: ``$<body>*<CS>\\r\\n`` with an upper-case hex checksum.

    ``seq`` numbers an outbound frame as the outbox does (the frame keeps its
    own ``seq``, 0 as its producer built it); None writes the frame's own.

    Every line it returns is at most :data:`MAX_LINE` bytes, ``\\r\\n``
    included, and decodes with :func:`decode`: a measured value (or forecast)
    of ``$ALR``/``$SRV`` that its field cannot carry -- longer than
    :data:`VALUE_WIDTH`, or not finite -- goes out as the empty field with the
    SYSTEM flag of its quantity; the frame itself is not changed.

    Raises :class:`ValueError` for a frame the protocol cannot carry (a status or
    flag above ``FF``, a count outside ``0``..``10**20 - 1``, a sensor id outside
    ``001``-``999``, a time before 1970 UTC or after 9999, a value of ``$WDN``,
    ``$FCD`` or ``$HLT`` that does not fit its field: no flag there could say it
    is missing) and :class:`TypeError` for an object that is no frame: both are
    programming errors.
    """
    if seq is None:
        seq = getattr(frame, "seq", 0)
    body = (_FAST_BODIES.get(type(frame)) or _body)(frame, tz, seq).encode("ascii")
    return b"$%s*%02X\r\n" % (body, checksum(body))


# ---------------------------------------------------------------------------------------------
# Line splitting


class LineSplitter:
    """Cuts a byte stream into lines, whatever the chunking of the reads.

    Lines end with ``\\n``; one ``\\r`` before it is stripped. A line longer than
    :data:`MAX_LINE` is returned as its first ``MAX_LINE + 1`` bytes -- enough for
    :func:`decode` to reject it as ``too_long`` -- and the rest of it, up to the
    next ``\\n``, is dropped as it arrives, so memory stays bounded by one chunk
    plus ``MAX_LINE + 1`` bytes. The result does not depend on how the stream is
    chunked.
    """

    __slots__ = ("_pending", "_discarding")

    def __init__(self) -> None:
        self._pending = b""
        self._discarding = False  # inside an over-long line already returned

    @property
    def buffered(self) -> int:
        """Bytes held for the next, unfinished line (never more than ``MAX_LINE + 1``)."""
        return len(self._pending)

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add bytes from the port; return the lines they complete."""
        data = self._pending + chunk if self._pending else bytes(chunk)
        lines: list[bytes] = []
        pos = 0
        while (end := data.find(b"\n", pos)) >= 0:
            if self._discarding:
                self._discarding = False
            else:
                lines.append(_finish(data[pos:end]))
            pos = end + 1
        rest = data[pos:]
        # Hold up to MAX_LINE + 1 bytes: a MAX_LINE-byte line plus the "\r" of its "\r\n"
        # is still valid. Beyond that the line is over-long whatever follows: return its
        # first MAX_LINE + 1 bytes now (as a one-shot split would) and drop the rest.
        if self._discarding:
            rest = b""
        elif len(rest) > MAX_LINE + 1:
            lines.append(rest[: MAX_LINE + 1])
            self._discarding = True
            rest = b""
        self._pending = rest
        return lines

    def flush(self) -> list[bytes]:
        """End of stream: the unterminated last line, if any, and a fresh state."""
        rest, discarding = self._pending, self._discarding
        self._pending, self._discarding = b"", False
        return [_finish(rest)] if rest and not discarding else []


def _finish(line: bytes) -> bytes:
    if line.endswith(b"\r"):
        line = line[:-1]
    return line[: MAX_LINE + 1] if len(line) > MAX_LINE else line
