"""Site configuration: a declared schema, its validation and the typed settings.

The configuration is a TOML file (``conf/site.toml``) read with :mod:`tomllib`.
Each section is declared below as data (:data:`SCHEMA`): every key has a typed
validator (integer or number with a range, boolean, string, path, port, time
zone, local time of day), its default and a one-line meaning. Defaults live only
there; the frozen dataclasses (:class:`Config` and one per section) carry no
defaults of their own, so a key cannot drift between two places.

Validation follows mopidy's config schemas but drops their string parsing:
TOML values are already typed, so an integer key takes a TOML integer and
nothing else (``true`` is not an integer, ``5.0`` is not either), a number key
takes an integer or a float. Every problem is collected before
:class:`ConfigError` is raised, one line per problem naming ``section.key``,
an unknown section or key with a "did you mean" hint, so an operator fixes the
whole file in one go instead of one error per start.

``[site] holidays`` is a list of dates or a country code; each bad date is
its own error line.

Paths (``storage.path``, ``criteria.initial_data``) are kept exactly as written;
a relative path is resolved by the service against its working directory
(``WorkingDirectory=`` in the systemd unit), not against the config file.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import ipaddress
import math
import os
import re
import reprlib
import tomllib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from core.day_kind import HolidayCalendar, holiday_calendar

__all__ = [
    "SCHEMA",
    "Config",
    "ConfigError",
    "CriteriaConfig",
    "DetectionConfig",
    "MqttConfig",
    "NightConfig",
    "SerialConfig",
    "SiteConfig",
    "StorageConfig",
    "SupervisorConfig",
    "SystemConfig",
    "TrainConfig",
    "UpstreamConfig",
    "WebConfig",
    "default_config",
    "config_from_bytes",
    "describe_schema",
    "load_config",
    "parse_config",
]


class ConfigError(Exception):
    """The configuration is unusable; ``errors`` holds one line per problem.

    Lines read ``section.key: message`` (``section: message`` for a whole
    section, ``file:line: message`` for a TOML syntax error).
    """

    def __init__(self, errors: Iterable[str], *, source: str = "<config>") -> None:
        self.errors: list[str] = list(errors)
        self.source = source
        super().__init__("\n".join(self.errors))


class Invalid(ValueError):
    """Raised by a value type; the message is the text after ``section.key: ``.

    A list value can be wrong in several entries: each is one more message, and
    one more line of the error.
    """

    def __init__(self, message: str, *more: str) -> None:
        super().__init__(message)
        self.messages: tuple[str, ...] = (message, *more)


# ---------------------------------------------------------------------------
# Value types


_INT_BITS_SHOWN = 4000  # about 1200 digits: far below the str() limit, far beyond any setting


class _ShortRepr(reprlib.Repr):
    """``reprlib`` that also survives integers too long for ``str()``."""

    def repr_int(self, x: int, level: int) -> str:
        # CPython refuses str() of an integer over 4300 digits (ValueError); TOML
        # takes a hexadecimal one of any length.
        if x.bit_length() > _INT_BITS_SHOWN:
            sign = "-" if x < 0 else ""
            return f"{sign}<integer of {int(x.bit_length() * math.log10(2)) + 1} digits>"
        return super().repr_int(x, level)


_short = _ShortRepr()
_short.maxstring = 60
_short.maxother = 60
_short.maxlist = 4
_short.maxdict = 4
_short.maxlevel = 2

# TOML's own names for the Python types tomllib produces. Order matters: bool is
# an int, datetime is a date.
_TOML_TYPE_NAMES: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "float"),
    (str, "string"),
    (list, "array"),
    (dict, "table"),
    (dt.datetime, "datetime"),
    (dt.date, "date"),
    (dt.time, "time"),
)


def _type_name(value: object) -> str:
    for python_type, name in _TOML_TYPE_NAMES:
        if isinstance(value, python_type):
            return name
    return type(value).__name__


def _describe_value(value: object) -> str:
    """``string 'abc'``, ``float 5.0``: what the file said, kept short."""
    try:
        shown = _short.repr(value)
    except Exception:  # a foreign object with a broken __repr__ must not escape
        shown = "<unprintable>"
    return f"{_type_name(value)} {shown}"


def _fmt_number(number: float) -> str:
    """Bounds and choices as an operator writes them: ``1``, ``0.5``, ``1e+06``."""
    if isinstance(number, int):
        return str(number)
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    return repr(number)


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class ValueType(ABC):
    """How one key's TOML value is checked and turned into its typed form."""

    __slots__ = ()

    @abstractmethod
    def validate(self, value: object) -> Any:
        """Return the typed value, or raise :class:`Invalid` with the reason."""

    @abstractmethod
    def describe(self) -> str:
        """The type column of the reference table."""

    def to_toml(self, value: Any) -> str:
        """A default written as a TOML literal (for the reference table)."""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return _fmt_number(value) if isinstance(value, int | float) else str(value)


def _expected(what: str, value: object) -> Invalid:
    return Invalid(f"expected {what}, got {_describe_value(value)}")


def _check_range(value: float, minimum: float | None, maximum: float | None) -> None:
    # Compared before any float conversion: Python compares a huge int with a
    # float exactly, where float(10**400) would overflow.
    if minimum is not None and value < minimum:
        raise Invalid(f"must be >= {_fmt_number(minimum)}, got {_short.repr(value)}")
    if maximum is not None and value > maximum:
        raise Invalid(f"must be <= {_fmt_number(maximum)}, got {_short.repr(value)}")


def _describe_range(kind: str, minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f"{kind}, {_fmt_number(minimum)}..{_fmt_number(maximum)}"
    if minimum is not None:
        return f"{kind}, >= {_fmt_number(minimum)}"
    if maximum is not None:
        return f"{kind}, <= {_fmt_number(maximum)}"
    return kind


@dataclass(frozen=True, slots=True)
class Integer(ValueType):
    """A TOML integer (never a boolean or a float), optionally bounded or one of ``choices``."""

    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[int, ...] | None = None

    def validate(self, value: object) -> int:
        if not _is_integer(value):
            raise _expected("an integer", value)
        assert isinstance(value, int)
        if self.choices is not None and value not in self.choices:
            listed = ", ".join(str(c) for c in self.choices)
            raise Invalid(f"must be one of {listed}, got {_short.repr(value)}")
        _check_range(value, self.minimum, self.maximum)
        return int(value)

    def describe(self) -> str:
        if self.choices is not None:
            return "integer, one of " + ", ".join(str(c) for c in self.choices)
        return _describe_range("integer", self.minimum, self.maximum)


@dataclass(frozen=True, slots=True)
class Float(ValueType):
    """A finite number, optionally bounded: a TOML float or integer (``10`` for ``10.0``)."""

    minimum: float | None = None
    maximum: float | None = None

    def validate(self, value: object) -> float:
        if not (_is_integer(value) or isinstance(value, float)):
            raise _expected("a number", value)
        assert isinstance(value, int | float)
        # TOML allows nan and inf; neither is a usable limit or duration, and nan
        # would slip through every range comparison.
        if isinstance(value, float) and not math.isfinite(value):
            raise Invalid(f"must be a finite number, got {value!r}")
        _check_range(value, self.minimum, self.maximum)
        try:
            return float(value)
        except OverflowError:
            raise Invalid(f"is too large, got {_short.repr(value)}") from None

    def describe(self) -> str:
        return _describe_range("number", self.minimum, self.maximum)


@dataclass(frozen=True, slots=True)
class Boolean(ValueType):
    """A TOML boolean; ``1``/``"yes"`` are refused rather than guessed at."""

    def validate(self, value: object) -> bool:
        if not isinstance(value, bool):
            raise _expected("a boolean (true or false)", value)
        return value

    def describe(self) -> str:
        return "boolean"


@dataclass(frozen=True, slots=True)
class String(ValueType):
    """A TOML string; ``non_empty`` refuses an empty or blank one."""

    non_empty: bool = False

    def validate(self, value: object) -> str:
        if not isinstance(value, str):
            raise _expected("a string", value)
        if self.non_empty and not value.strip():
            raise Invalid("must not be empty")
        return value

    def describe(self) -> str:
        return "string, not empty" if self.non_empty else "string"


@dataclass(frozen=True, slots=True)
class FilePath(ValueType):
    """A file-system path kept as written (relative = against the working directory).

    ``optional`` allows ``""`` for "none".
    """

    optional: bool = False

    def validate(self, value: object) -> str:
        if not isinstance(value, str):
            raise _expected("a path string", value)
        if not value:
            if self.optional:
                return value
            raise Invalid("must not be empty")
        if "\0" in value:
            # open() would refuse it with a ValueError long after start-up.
            raise Invalid(f"must not contain a NUL character, got {_short.repr(value)}")
        if value != value.strip():
            raise Invalid(f"has leading or trailing blanks, got {_short.repr(value)}")
        return value

    def describe(self) -> str:
        return 'path, "" = none' if self.optional else "path"


# pyserial's URL handlers plus our simulator; a typo in the scheme is caught here
# instead of as an opaque pyserial error after the actors started.
PORT_SCHEMES = ("sim", "socket", "rfc2217", "loop", "spy", "alt", "hwgrep", "cp2110")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
STDOUT_PORT = "-"


@dataclass(frozen=True, slots=True)
class PortSpec(ValueType):
    """A serial port: a pyserial URL (``socket://host:port``, ``loop://``, ``sim://...``)
    or a device path (``/dev/ttyUSB0``, ``COM3``); ``"-"`` (standard output) when
    ``allow_stdout``."""

    allow_stdout: bool = False

    def validate(self, value: object) -> str:
        if not isinstance(value, str):
            raise _expected("a port string", value)
        if not value.strip():
            raise Invalid("must not be empty")
        if value != value.strip() or any(ord(c) < 32 or c == "\x7f" for c in value):
            raise Invalid(f"has blanks or control characters, got {_short.repr(value)}")
        if value == STDOUT_PORT and not self.allow_stdout:
            raise Invalid('"-" (standard output) is only valid for an outbound port')
        match = _SCHEME.match(value)
        if match is not None:
            scheme = match.group(1).lower()
            if scheme not in PORT_SCHEMES:
                raise Invalid(
                    f"unknown port URL scheme {scheme!r}{_hint(scheme, PORT_SCHEMES)}; "
                    f"known: {', '.join(PORT_SCHEMES)}"
                )
        return value

    def describe(self) -> str:
        suffix = ' or "-" (standard output)' if self.allow_stdout else ""
        return f"pyserial URL or device path{suffix}"


_MQTT_URL = re.compile(r"^(mqtts?)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::([0-9]{1,5}))?/?$")
MQTT_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True, slots=True)
class MqttUrl(ValueType):
    """A broker address ``mqtt://host[:port]`` or ``mqtts://host[:port]`` (TLS);
    ``""`` = no MQTT uplink."""

    def validate(self, value: object) -> str:
        if not isinstance(value, str):
            raise _expected("a broker URL string", value)
        if not value:
            return value
        match = _MQTT_URL.match(value)
        if match is None:
            raise Invalid(f"expected mqtt://host[:port] or mqtts://host[:port], "
                          f"got {_short.repr(value)}")
        if match.group(3) is not None and not 1 <= int(match.group(3)) <= 65535:
            raise Invalid(f"port must be 1..65535, got {match.group(3)}")
        return value

    def describe(self) -> str:
        return 'mqtt:// or mqtts:// URL, "" = off'


@dataclass(frozen=True, slots=True)
class TimeZone(ValueType):
    """An IANA time zone name that :class:`zoneinfo.ZoneInfo` can load."""

    def validate(self, value: object) -> str:
        if not isinstance(value, str):
            raise _expected("a time zone name", value)
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            # ValueError: malformed key or not a TZif file; OSError: a directory
            # such as "Asia", or a name too long for the file system.
            raise Invalid(
                f"unknown time zone {_short.repr(value)}{_hint(value, _zone_names())}"
            ) from None
        return value

    def describe(self) -> str:
        return "IANA time zone"


def _zone_names() -> list[str]:
    # Only read on an error: listing the zone database walks the file system.
    return sorted(available_timezones())


_HH_MM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


@dataclass(frozen=True, slots=True)
class TimeOfDay(ValueType):
    """A local wall-clock time of day: the string ``"HH:MM"`` or a TOML local time
    (``22:00:00``) with no seconds."""

    def validate(self, value: object) -> dt.time:
        if isinstance(value, dt.time):
            if value.tzinfo is not None or value.second or value.microsecond:
                raise Invalid(f"must be whole minutes of local time, got time {value}")
            return value
        if isinstance(value, str):
            match = _HH_MM.match(value)
            if match is not None:
                return dt.time(int(match.group(1)), int(match.group(2)))
        raise _expected('a time of day "HH:MM" (00:00..23:59)', value)

    def describe(self) -> str:
        return 'time of day "HH:MM"'

    def to_toml(self, value: Any) -> str:
        return f'"{value:%H:%M}"'


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` of a listening socket: an IP literal (IPv6 in brackets) or
    ``localhost``, and a port 1..65535; raises :class:`ValueError` saying what is wrong."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected host:port, e.g. 127.0.0.1:8080, got {text!r}")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port must be 1..65535, got {port_text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            raise ValueError(f"brackets are for an IPv6 address, got [{host}]")
    elif ":" in host:
        raise ValueError(f"an IPv6 address goes in brackets, e.g. [::1]:8080, got {text!r}")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            # A name could resolve to anything, and to something else tomorrow.
            raise ValueError(f"host must be an IP address or localhost, got {host!r}") from None
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and the loopback addresses (only this machine can connect)."""
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


@dataclass(frozen=True, slots=True)
class ListenAddress(ValueType):
    """Where a server listens: ``"host:port"`` (see :func:`parse_listen`), ``""`` = off."""

    def validate(self, value: object) -> str:
        if not isinstance(value, str):
            raise _expected('an address "host:port" or ""', value)
        if value:
            try:
                parse_listen(value)
            except ValueError as exc:
                raise Invalid(str(exc)) from None
        return value

    def describe(self) -> str:
        return '"host:port", "" = off'


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True, slots=True)
class Holidays(ValueType):
    """Public holidays: a list of ISO dates (TOML dates or ``"YYYY-MM-DD"``
    strings), or a country code (``"KR"``, ``"DE-BY"``) that the ``holidays``
    package resolves; ``""`` or ``[]`` for none. Every bad entry is one line."""

    def validate(self, value: object) -> tuple[dt.date, ...] | str:
        if isinstance(value, str):
            if not value:
                return ""
            from core.day_kind import check_country

            problem = check_country(value)
            if problem:
                raise Invalid(problem)
            return value.upper()
        if not isinstance(value, list | tuple):
            raise _expected('a list of ISO dates or a country code such as "KR"', value)
        dates: list[dt.date] = []
        problems: list[str] = []
        for i, entry in enumerate(value, start=1):
            if isinstance(entry, dt.date) and not isinstance(entry, dt.datetime):
                dates.append(entry)
                continue
            if isinstance(entry, str) and _ISO_DATE.match(entry):
                try:
                    dates.append(dt.date.fromisoformat(entry))
                    continue
                except ValueError:
                    pass
            problems.append(f'entry {i}: expected an ISO date "YYYY-MM-DD", '
                            f"got {_describe_value(entry)}")
        if problems:
            raise Invalid(*problems)
        return tuple(sorted(set(dates)))

    def describe(self) -> str:
        return 'list of ISO dates, or a country code ("KR")'

    def to_toml(self, value: Any) -> str:
        if isinstance(value, str):
            return ValueType.to_toml(self, value)
        return "[" + ", ".join(f'"{d.isoformat()}"' for d in value) + "]"


# ---------------------------------------------------------------------------
# The schema


@dataclass(frozen=True, slots=True)
class Setting:
    """One key of a section: its type, default and what it means."""

    key: str
    type: ValueType
    default: Any
    meaning: str


@dataclass(frozen=True, slots=True)
class Section:
    """One TOML table: its settings in file order and the dataclass they build."""

    name: str
    meaning: str
    target: type
    settings: tuple[Setting, ...]

    def setting(self, key: str) -> Setting | None:
        for candidate in self.settings:
            if candidate.key == key:
                return candidate
        return None


@dataclass(frozen=True, slots=True)
class Rule:
    """A cross-key check: ``subject`` must stand in ``relation`` to ``other``.

    Both are ``"section.key"``. Checked only when both values are valid and
    ``applies(subject_value, other_value)`` holds; the error is reported on
    ``subject``. Relation ``"set"``: ``subject`` must not be empty whenever
    ``applies`` holds, because ``other`` is ``why``.
    """

    subject: str
    relation: str  # "<", "<=", "!=" or "set"
    other: str
    applies: Callable[[Any, Any], bool] = lambda _a, _b: True
    why: str = ""

    def check(self, value: Any, other_value: Any) -> str | None:
        if not self.applies(value, other_value):
            return None
        holds = {
            "<": lambda: value < other_value,
            "<=": lambda: value <= other_value,
            "!=": lambda: value != other_value,
            "set": lambda: bool(value),
        }[self.relation]()
        if holds:
            return None
        if self.relation == "set":
            return f"must be set when {self.other} is {_show(other_value)} ({self.why})"
        phrase = "must differ from" if self.relation == "!=" else f"must be {self.relation}"
        return f"{phrase} {self.other} ({_show(other_value)}), got {_show(value)}"


def _show(value: Any) -> str:
    if isinstance(value, dt.time):
        return f"{value:%H:%M}"
    if isinstance(value, float):
        return _fmt_number(value)
    return _short.repr(value)


# -- typed sections (no defaults here: SCHEMA holds them) --------------------


@dataclass(frozen=True, slots=True)
class SiteConfig:
    """[site]: who and where the gateway is."""

    name: str
    timezone: str
    holidays: tuple[dt.date, ...] | str

    @property
    def tz(self) -> ZoneInfo:
        """The site's zone; ZoneInfo caches instances, so this is cheap."""
        return ZoneInfo(self.timezone)

    @property
    def calendar(self) -> HolidayCalendar:
        """The site's public holidays (built once per setting)."""
        return holiday_calendar(self.holidays)


@dataclass(frozen=True, slots=True)
class SerialConfig:
    """[serial]: the inbound port the readings arrive on."""

    port: str
    baudrate: int
    reconnect_initial_s: float
    reconnect_max_s: float


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """[upstream]: the outbound port frames are sent on."""

    port: str
    baudrate: int
    ack: bool
    ack_timeout_s: float
    resend_per_s: float
    outbox_max: int
    write_timeout_s: float
    reconnect_initial_s: float
    reconnect_max_s: float


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """[storage]: the LMDB store."""

    path: str
    retention_days: int
    map_size_mb: int
    map_max_mb: int
    reserve_mb: int
    commit_max_readings: int
    commit_max_ms: float
    rejects_max: int


@dataclass(frozen=True, slots=True)
class SystemConfig:
    """[system]: limits of the SYSTEM detection method."""

    silence_minutes: int
    stuck_minutes: int
    clock_ahead_minutes: int
    flow_min: float
    flow_max: float
    pressure_min: float
    pressure_max: float


@dataclass(frozen=True, slots=True)
class DetectionConfig:
    """[detection]: persistence and hysteresis of VALUE and PREDICT, gross outliers."""

    persist_minutes: int
    clear_minutes: int
    gross_factor: float


@dataclass(frozen=True, slots=True)
class CriteriaConfig:
    """[criteria]: where the criteria bands come from and how often they are rebuilt."""

    initial_data: str
    min_days: int
    window_days: int
    rebuild_days: int


@dataclass(frozen=True, slots=True)
class NightConfig:
    """[night]: the local night window and the minimum night flow (MNF)."""

    start: dt.time
    end: dt.time
    block_minutes: int
    min_readings: int
    mnf_blocks: int
    baseline_nights: int
    min_baseline_nights: int
    clear_nights: int
    cusum_k: float
    cusum_h: float


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """[train]: the forecasting models' training process."""

    schedule_days: int
    min_days: int
    timeout_s: int
    nice: int
    epochs: int
    lookback_hours: int
    hour: int


@dataclass(frozen=True, slots=True)
class SupervisorConfig:
    """[supervisor]: restart intensity, shutdown and health reporting."""

    restart_max: int
    restart_window_s: float
    stop_timeout_s: float
    health_interval_s: float
    watchdog: bool
    test_hooks: bool


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """[mqtt]: the second uplink, every outbox frame published to a broker (off without url)."""

    url: str
    client_id: str
    username: str
    password_file: str
    ca_file: str
    cert_file: str
    key_file: str
    topic_prefix: str
    keepalive_s: int
    max_inflight: int
    drain_per_s: float
    reconnect_initial_s: float
    reconnect_max_s: float

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    @property
    def tls(self) -> bool:
        return self.url.startswith("mqtts://")

    @property
    def host(self) -> str:
        match = _MQTT_URL.match(self.url)
        assert match is not None, "validated"
        return match.group(2).strip("[]")

    @property
    def port(self) -> int:
        match = _MQTT_URL.match(self.url)
        assert match is not None, "validated"
        return int(match.group(3) or MQTT_DEFAULT_PORTS[match.group(1)])

    def prefix(self, site_name: str) -> str:
        """The topic prefix: ``topic_prefix``, else ``wdn/<site name>``."""
        return self.topic_prefix or f"wdn/{site_name}"

    def client(self, site_name: str) -> str:
        """The MQTT client id: ``client_id``, else ``wdn-<site name>``."""
        return self.client_id or f"wdn-{site_name}"


@dataclass(frozen=True, slots=True)
class WebConfig:
    """[web]: the technician's read-only page, /metrics and /healthz (off unless listen is set)."""

    listen: str
    token_file: str

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) to listen on, or None when the page is off."""
        return parse_listen(self.listen) if self.listen else None


BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
BLOCK_MINUTES = (5, 10, 15, 20, 30, 60)

SCHEMA: tuple[Section, ...] = (
    Section("site", "who and where the gateway is", SiteConfig, (
        Setting("name", String(non_empty=True), "site",
                "site name, shown in logs and the status command"),
        Setting("timezone", TimeZone(), "Asia/Seoul",
                "time zone of the readings' local times; the night window is local"),
        Setting("holidays", Holidays(), (),
                "public holidays (nights and days are compared with those of their kind): "
                'ISO dates, or a country code resolved by the holidays package; [] = none'),
    )),
    Section("serial", "inbound readings", SerialConfig, (
        Setting("port", PortSpec(), "sim://?sensors=3&speed=600&seed=1",
                "inbound port: pyserial URL, device path, or the built-in simulator (sim://)"),
        Setting("baudrate", Integer(choices=BAUDRATES), 9600,
                "inbound line speed (ignored by sim://, socket:// and loop://)"),
        Setting("reconnect_initial_s", Float(0.1, 60), 0.5,
                "first wait before reopening a lost port; doubles on each failure"),
        Setting("reconnect_max_s", Float(1, 600), 30.0,
                "longest wait between attempts to reopen a lost port"),
    )),
    Section("upstream", "outbound frames", UpstreamConfig, (
        Setting("port", PortSpec(allow_stdout=True), STDOUT_PORT,
                'outbound port: "-" = standard output, else a pyserial URL or device path'),
        Setting("baudrate", Integer(choices=BAUDRATES), 9600, "outbound line speed"),
        Setting("ack", Boolean(), False,
                "wait for the upstream's ACK of each frame and resend unacknowledged ones"),
        Setting("ack_timeout_s", Float(1, 3600), 10.0,
                "resend a frame not acknowledged after this many seconds (with ack)"),
        Setting("resend_per_s", Float(0.1, 1000), 20.0,
                "most frames resent per second, so a backlog does not flood the link"),
        Setting("outbox_max", Integer(100, 10_000_000), 100_000,
                "most frames kept in the persistent outbox; the oldest are dropped beyond"),
        Setting("write_timeout_s", Float(0.1, 30), 2.0,
                "an upstream that takes no byte for this long is stalled: the frames wait "
                "in the outbox and the write is retried later"),
        Setting("reconnect_initial_s", Float(0.1, 60), 0.5,
                "first wait before reopening a lost upstream port; doubles on each failure"),
        Setting("reconnect_max_s", Float(1, 600), 30.0,
                "longest wait between attempts to reopen a lost upstream port"),
    )),
    Section("storage", "the LMDB time-series store", StorageConfig, (
        Setting("path", FilePath(), "data/demo.lmdb",
                "store directory; relative = against the service's working directory; "
                "checked at start: a writable directory (or one that can be made) on a disk"),
        Setting("retention_days", Integer(1, 3650), 365,
                "readings older than this before their sensor's event time are deleted "
                "(checked hourly)"),
        Setting("map_size_mb", Integer(1, 4096), 64,
                "initial LMDB map size; the map grows when full"),
        # 32-bit Raspberry Pi OS has under 2 GB of address space for the whole
        # process: keep map_max_mb <= 1024 there.
        Setting("map_max_mb", Integer(1, 1 << 20), 1024,
                "largest the map may grow to; keep <= 1024 on 32-bit Raspberry Pi OS"),
        # A full disk is most often someone else's doing (logs, copies): space
        # allocated up front keeps the store writing through it.
        Setting("reserve_mb", Integer(0, 1 << 20), 64,
                "disk space allocated to the store at start, kept through a disk that "
                "others fill (about 25 MB per sensor-year, 20 MB for a full outbox); 0 = none"),
        Setting("commit_max_readings", Integer(1, 100_000), 500,
                "group commit: most readings in one write transaction"),
        Setting("commit_max_ms", Float(0, 1000), 5.0,
                "group commit: longest a received reading waits to be committed"),
        Setting("rejects_max", Integer(10, 1_000_000), 1000,
                "most rejected input lines kept for inspection (oldest dropped)"),
    )),
    Section("system", "limits of the SYSTEM detection method", SystemConfig, (
        Setting("silence_minutes", Integer(1, 1440), 5,
                "a sensor silent this long raises SYSTEM"),
        Setting("stuck_minutes", Integer(2, 10080), 30,
                "an identical value for this long raises SYSTEM (flat-lined sensor)"),
        Setting("clock_ahead_minutes", Integer(1, 1440), 5,
                "a reading stamped this far ahead of the gateway clock raises SYSTEM"),
        Setting("flow_min", Float(), 0.0, "lowest physically possible flow, m3/h"),
        Setting("flow_max", Float(), 10000.0, "highest physically possible flow, m3/h"),
        Setting("pressure_min", Float(), 0.0, "lowest physically possible pressure, kgf/cm2"),
        Setting("pressure_max", Float(), 20.0, "highest physically possible pressure, kgf/cm2"),
    )),
    Section("detection", "VALUE and PREDICT persistence", DetectionConfig, (
        Setting("persist_minutes", Integer(1, 120), 3,
                "consecutive out-of-band readings before VALUE or PREDICT fires"),
        Setting("clear_minutes", Integer(1, 240), 5,
                "hysteresis: consecutive normal readings before an alert clears"),
        # The band already lies >= 5 robust sigmas from the slot's shape: one
        # band width beyond it is no noise, but a spike (a x4 meter reading).
        Setting("gross_factor", Float(0, 100), 1.0,
                "a reading beyond its VALUE band by more than this many band widths "
                "raises VALUE at once, without persist_minutes; 0 = never"),
    )),
    Section("criteria", "criteria bands", CriteriaConfig, (
        # No default file: a site whose sensor ids match the demo's must not
        # silently get the demo's criteria.
        Setting("initial_data", FilePath(optional=True), "",
                'history CSV for the first criteria; "" = none; relative = working directory'),
        Setting("min_days", Integer(1, 365), 28,
                "days of stored data before criteria are built from the store"),
        Setting("window_days", Integer(7, 365), 90,
                "days of stored data the criteria are built from"),
        Setting("rebuild_days", Integer(1, 3650), 91,
                "criteria are rebuilt this often (event time)"),
    )),
    Section("night", "night window and minimum night flow", NightConfig, (
        Setting("start", TimeOfDay(), dt.time(22, 0), "night window start, local time"),
        Setting("end", TimeOfDay(), dt.time(5, 0),
                "night window end, local time (before start = crosses midnight)"),
        Setting("block_minutes", Integer(choices=BLOCK_MINUTES), 10,
                "length of the flow-mean blocks the MNF is taken from"),
        Setting("min_readings", Integer(1, 60), 5,
                "measured readings a block needs to count; <= block_minutes"),
        Setting("mnf_blocks", Integer(1, 12), 3,
                "contiguous complete blocks whose mean is the MNF (the lowest such mean)"),
        Setting("baseline_nights", Integer(3, 120), 28,
                "recent clean nights the expected MNF (level and seasonal trend) is fitted on"),
        Setting("min_baseline_nights", Integer(3, 60), 7,
                "clean nights a sensor needs before its first NIGHT verdict"),
        Setting("clear_nights", Integer(1, 30), 3,
                "nights in a row without the excess that clear NIGHT"),
        Setting("cusum_k", Float(0, 5), 0.5,
                "CUSUM reference: standardised excess per night (and day) ignored as noise"),
        Setting("cusum_h", Float(0.5, 50), 5.0,
                "CUSUM decision interval: accumulated excess that raises NIGHT"),
    )),
    Section("train", "forecasting model training", TrainConfig, (
        Setting("schedule_days", Integer(1, 3650), 7,
                "retrain a model this often (days of event time since its data ended)"),
        Setting("min_days", Integer(7, 3650), 28,
                "days of stored data before the first model is trained"),
        Setting("timeout_s", Integer(10, 86400), 1800,
                "a training process running longer is stopped; the old model stays"),
        Setting("nice", Integer(0, 19), 10,
                "nice level of the training process, so it never starves the real-time path"),
        Setting("epochs", Integer(1, 1000), 30, "most training epochs"),
        Setting("lookback_hours", Integer(24, 2016), 336,
                "hours of history the model sees to forecast the next week"),
        Setting("hour", Integer(0, 23), 3,
                "local hour of day (event time) at which a due retraining starts; "
                "the first model trains as soon as min_days are stored"),
    )),
    Section("supervisor", "actor supervision", SupervisorConfig, (
        Setting("restart_max", Integer(1, 100), 5,
                "restarts allowed within restart_window_s before the service exits"),
        Setting("restart_window_s", Float(1, 3600), 60.0, "window of the restart intensity"),
        Setting("stop_timeout_s", Float(0.5, 60), 5.0, "longest wait for one actor to stop"),
        Setting("health_interval_s", Float(1, 86400), 600.0,
                "how often the health summary is logged and reported"),
        Setting("watchdog", Boolean(), True,
                "feed the systemd watchdog while every actor answers (under systemd)"),
        # Crash injection lets tests kill actors on demand; never on a real site.
        Setting("test_hooks", Boolean(), False, "enable crash injection; tests only"),
    )),
    Section("mqtt", "second uplink: every outbox frame to an MQTT broker", MqttConfig, (
        Setting("url", MqttUrl(), "",
                'broker, mqtt://host:1883 or mqtts://host:8883 (TLS); "" = no MQTT uplink'),
        Setting("client_id", String(), "", 'MQTT client id; "" = wdn-<site name>'),
        Setting("username", String(), "", 'user name at the broker; "" = none'),
        # A password never sits in site.toml, which is world-readable and copied around.
        Setting("password_file", FilePath(optional=True), "",
                'file holding the password (first line); "" = none'),
        Setting("ca_file", FilePath(optional=True), "",
                'CA certificates (PEM) the broker is checked against; "" = the system\'s'),
        Setting("cert_file", FilePath(optional=True), "",
                'client certificate (PEM) for mutual TLS; "" = none'),
        Setting("key_file", FilePath(optional=True), "",
                'private key (PEM) of cert_file; "" = none'),
        Setting("topic_prefix", String(), "",
                'topics go under this prefix; "" = wdn/<site name>'),
        Setting("keepalive_s", Integer(5, 3600), 60, "MQTT keep-alive interval"),
        Setting("max_inflight", Integer(1, 65535), 100,
                "most frames published and not yet acknowledged (PUBACK) at once"),
        # After a long outage the backlog must not flood a shared broker.
        Setting("drain_per_s", Float(1, 1_000_000), 10_000.0,
                "most frames published per second while a backlog drains"),
        Setting("reconnect_initial_s", Float(0.1, 60), 1.0,
                "first wait before reconnecting to the broker; doubles on each failure, "
                "with jitter"),
        Setting("reconnect_max_s", Float(1, 3600), 60.0,
                "longest wait between attempts to reach the broker"),
    )),
    Section("web", "the technician's page, /metrics and /healthz", WebConfig, (
        Setting("listen", ListenAddress(), "",
                'address of the read-only page, /metrics and /healthz, e.g. "127.0.0.1:8080"; '
                '"" = off'),
        Setting("token_file", FilePath(optional=True), "",
                "file holding the token every request but /healthz must bring; required "
                'when listen is not a loopback address; "" = none'),
    )),
)

RULES: tuple[Rule, ...] = (
    Rule("serial.reconnect_initial_s", "<=", "serial.reconnect_max_s"),
    Rule("upstream.reconnect_initial_s", "<=", "upstream.reconnect_max_s"),
    # Two actors cannot own one device; URLs such as loop:// open independently.
    Rule("upstream.port", "!=", "serial.port",
         applies=lambda port, _other: port != STDOUT_PORT and _SCHEME.match(port) is None),
    # A write in progress holds the Transmitter's stop: it must end in time.
    Rule("upstream.write_timeout_s", "<", "supervisor.stop_timeout_s"),
    Rule("storage.map_size_mb", "<=", "storage.map_max_mb"),
    Rule("system.flow_min", "<", "system.flow_max"),
    Rule("system.pressure_min", "<", "system.pressure_max"),
    Rule("night.end", "!=", "night.start"),
    # Readings come once a minute, so a block cannot hold more than block_minutes.
    Rule("night.min_readings", "<=", "night.block_minutes"),
    Rule("mqtt.reconnect_initial_s", "<=", "mqtt.reconnect_max_s"),
    # Anyone on the network could read the page (and probe the gateway) otherwise.
    Rule("web.token_file", "set", "web.listen",
         applies=lambda _token, listen: bool(listen) and not is_loopback(parse_listen(listen)[0]),
         why="not a loopback address"),
    Rule("night.min_baseline_nights", "<=", "night.baseline_nights"),
)


def _check_mqtt(values: Mapping[str, Mapping[str, Any]]) -> list[str]:
    mqtt = values["mqtt"]
    if not mqtt["url"]:
        return []
    errors = []
    name = values["site"]["name"]
    if not mqtt["topic_prefix"] and not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        errors.append(f"mqtt.topic_prefix: must be set: site.name {_short.repr(name)} is not "
                      "a safe topic segment ([A-Za-z0-9_-]+)")
    prefix = mqtt["topic_prefix"]
    if prefix and (any(c in prefix for c in "+#\0") or prefix.startswith("/")
                   or prefix.endswith("/") or "//" in prefix):
        errors.append(f"mqtt.topic_prefix: must be topic levels without wildcards or empty "
                      f"levels, got {_short.repr(prefix)}")
    if bool(mqtt["cert_file"]) != bool(mqtt["key_file"]):
        errors.append("mqtt.key_file: cert_file and key_file go together (mutual TLS)")
    if mqtt["password_file"] and not mqtt["username"]:
        errors.append("mqtt.username: must be set with password_file")
    if not mqtt["url"].startswith("mqtts://"):
        for key in ("ca_file", "cert_file", "key_file"):
            if mqtt[key]:
                errors.append(f"mqtt.{key}: needs an mqtts:// url (TLS)")
    # Found missing at start rather than at the first connect, hours later.
    for key in ("password_file", "ca_file", "cert_file", "key_file"):
        path = mqtt[key]
        if path and not (Path(path).is_file() and os.access(path, os.R_OK)):
            errors.append(f"mqtt.{key}: no readable file at {_short.repr(path)}")
    return errors


# Checks across keys that a Rule cannot say; each returns its error lines, naming
# only keys of CHECKED_KEYS.
CHECKS: tuple[Callable[[Mapping[str, Mapping[str, Any]]], list[str]], ...] = (_check_mqtt,)
CHECKED_KEYS = frozenset(f"mqtt.{key}" for key in (
    "topic_prefix", "key_file", "cert_file", "ca_file", "username", "password_file"))

_SECTIONS: dict[str, Section] = {section.name: section for section in SCHEMA}


@dataclass(frozen=True, slots=True)
class Config:
    """The validated configuration; ``source`` names where it was read from."""

    site: SiteConfig
    serial: SerialConfig
    upstream: UpstreamConfig
    storage: StorageConfig
    system: SystemConfig
    detection: DetectionConfig
    criteria: CriteriaConfig
    night: NightConfig
    train: TrainConfig
    supervisor: SupervisorConfig
    mqtt: MqttConfig
    web: WebConfig
    source: str

    @property
    def tz(self) -> ZoneInfo:
        """The site's time zone."""
        return self.site.tz


# ---------------------------------------------------------------------------
# Validation


def _hint(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or ``""`` (case-insensitive)."""
    if len(name) > 100:
        return ""  # nobody mistyped that; and difflib is quadratic in the length
    by_lower = {candidate.lower(): candidate for candidate in candidates}
    matches = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[matches[0]]!r}?)" if matches else ""


def _hint_elsewhere(name: str, candidates: Iterable[str], here: str | None) -> str:
    """Like :func:`_hint`, falling back to the same key in another section
    (``[serial] ack`` -> ``'upstream.ack'``)."""
    hint = _hint(name, candidates)
    if hint:
        return hint
    for section in SCHEMA:
        if section.name != here and section.setting(name) is not None:
            return f" (did you mean '{section.name}.{name}'?)"
    return ""


def _key_name(key: object) -> str:
    # tomllib keys are strings; a hand-built document may hold anything hashable.
    return key if isinstance(key, str) else _short.repr(key)


def parse_config(document: Mapping[str, Any], *, source: str = "<config>") -> Config:
    """Validate a TOML document (as :func:`tomllib.load` returns it) into a :class:`Config`.

    Absent sections and keys take their defaults. Raises :class:`ConfigError`
    listing every problem found, never anything else.
    """
    if not isinstance(document, Mapping):
        raise ConfigError([f"expected a table of sections, got {_describe_value(document)}"],
                          source=source)
    errors: list[str] = []
    values: dict[str, dict[str, Any]] = {
        section.name: {s.key: s.default for s in section.settings} for section in SCHEMA
    }
    invalid: set[str] = set()

    for raw_name, table in document.items():
        name = _key_name(raw_name)
        section = _SECTIONS.get(raw_name) if isinstance(raw_name, str) else None
        if section is None:
            errors.append(f"{name}: unknown section{_hint_elsewhere(name, _SECTIONS, None)}")
            continue
        if not isinstance(table, Mapping):
            errors.append(f"{name}: expected a table [{name}], got {_describe_value(table)}")
            continue
        for raw_key, value in table.items():
            key = _key_name(raw_key)
            setting = section.setting(raw_key) if isinstance(raw_key, str) else None
            if setting is None:
                keys = [s.key for s in section.settings]
                errors.append(
                    f"{name}.{key}: unknown key{_hint_elsewhere(key, keys, name)}"
                )
                continue
            try:
                values[name][key] = setting.type.validate(value)
            except Invalid as exc:
                errors += [f"{name}.{key}: {message}" for message in exc.messages]
                invalid.add(f"{name}.{key}")

    for rule in RULES:
        if rule.subject in invalid or rule.other in invalid:
            continue  # already reported; comparing a default would only confuse
        message = rule.check(_lookup(values, rule.subject), _lookup(values, rule.other))
        if message is not None:
            errors.append(f"{rule.subject}: {message}")

    if not errors:
        for check in CHECKS:
            errors.extend(check(values))

    if errors:
        raise ConfigError(errors, source=source)
    sections = {
        section.name: section.target(**values[section.name]) for section in SCHEMA
    }
    return Config(**sections, source=source)


def _lookup(values: Mapping[str, Mapping[str, Any]], dotted: str) -> Any:
    section, key = dotted.split(".")
    return values[section][key]


_TOML_POSITION = re.compile(r"\(at line (\d+), column \d+\)")


def load_config(path: str | Path) -> Config:
    """Read and validate the TOML file at ``path``.

    Raises :class:`ConfigError` for an unreadable file and as
    :func:`config_from_bytes` does, never anything else.
    """
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read: {exc.strerror or exc}"],
                          source=source) from None
    return config_from_bytes(data, source=source)


def config_from_bytes(data: bytes, *, source: str = "<config>") -> Config:
    """Validate the bytes of a TOML file (read from ``source``).

    Raises :class:`ConfigError` for text that is not UTF-8, a TOML syntax
    error (one line, ``file:line: message``), anything else :mod:`tomllib`
    cannot read (one line, ``file: not valid TOML: ...``) or any invalid
    content (every problem); never anything else.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError([f"{source}:{line}: not valid UTF-8"], source=source) from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = _TOML_POSITION.search(message)
        # "at end of document" carries no line: point at the last one.
        line = int(found.group(1)) if found else max(1, len(text.splitlines()))
        raise ConfigError([f"{source}:{line}: TOML syntax error: {message}"],
                          source=source) from None
    except RecursionError:
        # tomllib recurses once per nested array or inline table: a few thousand
        # "[" exhaust the interpreter's stack before any syntax error shows.
        raise ConfigError([f"{source}: not valid TOML: nested too deeply"],
                          source=source) from None
    except Exception as exc:  # noqa: BLE001 - e.g. ValueError: a decimal integer of 5,000 digits
        raise ConfigError([f"{source}: not valid TOML: {_one_line(exc)}"],
                          source=source) from None
    return parse_config(document, source=source)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def default_config(*, source: str = "<defaults>") -> Config:
    """Every setting at its default (handy for tests and tools)."""
    return parse_config({}, source=source)


def describe_schema() -> str:
    """The configuration reference as a Markdown table (for the README)."""
    lines = [
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for section in SCHEMA:
        for setting in section.settings:
            default = setting.type.to_toml(setting.default)
            cells = (
                f"`{section.name}.{setting.key}`",
                setting.type.describe(),
                f"`{default}`",
                setting.meaning,
            )
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _check_schema() -> None:
    # The dataclasses and the schema must name the same keys in the same order,
    # and every default must pass its own validator; caught at import, not in
    # the field.
    for section in SCHEMA:
        names = tuple(f.name for f in dataclasses.fields(section.target))
        keys = tuple(s.key for s in section.settings)
        if names != keys:
            raise AssertionError(f"[{section.name}] schema keys {keys} != fields {names}")
        for setting in section.settings:
            setting.type.validate(setting.default)
    if tuple(f.name for f in dataclasses.fields(Config)) != (*_SECTIONS, "source"):
        raise AssertionError("Config fields do not match the schema's sections")


_check_schema()
