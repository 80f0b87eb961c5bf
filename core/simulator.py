"""The built-in RTU simulator: realistic ``$WDN`` readings with scheduled faults.

Pure and deterministic: every value is a function of ``(seed, sensor, minute)``
alone (a counter-based hash, no generator state), so any minute can be generated
on its own and equals the same minute of a sequential run ("random access").
Episodic faults are scheduled per ``(seed, sensor, local day)`` the same way.

The shape, per sensor:

* **flow** (m3/h): a diurnal profile -- low between about 02:00 and 04:00 local,
  a morning and an evening peak; the week has three shapes: weekdays, Saturdays
  (a later, flatter morning) and Sundays (later still; the site's holidays, URL
  parameter ``holidays``, take Sunday's shape) --
  times a per-sensor scale between 20 and 300 m3/h, a slight annual season and a
  few percent of multiplicative noise.
* **pressure** (kgf/cm2): a static head of 4.3-5.0 minus a head loss growing with
  the square of the flow, so it is highest at night and moves against the flow,
  plus a little additive noise.

The noise-free shapes (:func:`clean_flow`, :func:`clean_pressure`) depend on the
sensor number only; the seed drives the noise and the fault schedule.

Faults (``FAULT_KINDS``): episodes of ``dropout``, ``stuck``, ``spike``,
``status``, ``missing``, ``garble``, ``duplicate``, ``clock`` and ``excursion``
happen roughly 1.5 times per sensor-week per kind at ``fault_rate=1``, never
overlap each other on one sensor, never fall in the first two days after
``start`` and never cross a local midnight (``excursion`` is drawn last, so
adding it moved no episode of the other kinds). ``leak`` is a step added to
every sensor's flow from 22:00 local on day ``start + leak_day``.
:meth:`Simulator.truth` is the ground truth of which faults affect a
sensor-minute. On the wire:

* ``dropout`` 10-40 min without the sensor's line;
* ``stuck`` 40-120 min repeating the episode's first flow, pressure or both;
* ``spike`` one minute of flow or pressure times 4-6;
* ``status`` 5-30 min with one of the status bits 0x01/0x02/0x04/0x08/0x10;
* ``missing`` 1-15 min with an empty flow, pressure or both;
* ``garble`` 1-5 min with an extra line after the good one that every reader
  must reject (wrong checksum, truncated, line noise without ``$``, over-long);
* ``duplicate`` 1-5 min with the line repeated, half the time with another flow;
* ``clock`` 1-5 min stamped 1-24 hours (and some odd seconds) ahead: the RTU's
  clock jumped, so the stamp never collides with a genuine minute;
* ``excursion`` 20-120 min of flow, pressure or both shifted by 40-80 % up or
  down (a burst, a valve operation, a pump trip): a sustained, physically
  plausible deviation, the kind VALUE and PREDICT exist for. With ``both`` the
  pressure moves against the flow, as in a network (a burst draws more flow and
  drops the pressure).

Realtime pacing (``speed``, ``realtime_cap``) is the port's business
(``ports/protocol_sim.py``); this module never looks at the clock except to
resolve a default ``start``.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from core import frames
from core.localtime import local_datetime
from core.types import EpochSeconds, Reading, SensorId, sensor_id

FAULT_KINDS = (
    "dropout", "stuck", "spike", "status", "missing", "leak", "garble", "duplicate", "clock",
    "excursion",
)
EPISODIC_KINDS = tuple(kind for kind in FAULT_KINDS if kind != "leak")

# Episodes per sensor-week per kind at fault_rate=1 ("one or two").
EPISODES_PER_WEEK = 1.5
# No episode starts this soon after `start`: criteria and baselines get a clean start.
QUIET_S = 2 * 86400
# Minutes kept free between two episodes on one sensor, so each is seen on its own.
EPISODE_GAP_MIN = 15
# Episode length in minutes (inclusive range) per kind.
EPISODE_MINUTES: dict[str, tuple[int, int]] = {
    "dropout": (10, 40),
    "stuck": (40, 120),
    "spike": (1, 1),
    "status": (5, 30),
    "missing": (1, 15),
    "garble": (1, 5),
    "duplicate": (1, 5),
    "clock": (1, 5),
    "excursion": (20, 120),
}
# An excursion shifts its quantity by this much (relative, up or down).
EXCURSION_SHIFT = (0.4, 0.8)
STATUS_FAULT_BITS = (0x01, 0x02, 0x04, 0x08, 0x10)
GARBLE_STYLES = ("checksum", "truncated", "noise", "overlong")

FLOW_NOISE = 0.03  # relative standard deviation
PRESSURE_NOISE = 0.015  # kgf/cm2 standard deviation
SEASON_AMPLITUDE = 0.04  # +-4 % over the year, highest in summer
DEFAULT_START_DAYS_BACK = 60

_MINUTE = 60
_DAY = 86400
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_SCHEDULE_CACHE_LIMIT = 8192
# Salts separating the independent random streams drawn from one (seed, sensor) key.
_FLOW_A, _FLOW_B, _PRESSURE_A, _PRESSURE_B = 1, 2, 3, 4
_SCHEDULE_SALT = 0x5EED_FA17
_GARBLE_SALT = 0x6A4B


# ---------------------------------------------------------------------------------------------
# Counter-based randomness: splitmix64 on (key, minute)

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def _mix64(x: int) -> int:
    """splitmix64's finaliser on a Python int (keys, per-sensor constants)."""
    x = (x + _GOLDEN) & _M64
    x = ((x ^ (x >> 30)) * _MIX1) & _M64
    x = ((x ^ (x >> 27)) * _MIX2) & _M64
    return x ^ (x >> 31)


def _stream_key(seed: int, sensor: int, stream: int) -> int:
    return _mix64(_mix64(_mix64(seed & _M64) ^ sensor) ^ stream)


_U64_GOLDEN, _U64_MIX1, _U64_MIX2 = np.uint64(_GOLDEN), np.uint64(_MIX1), np.uint64(_MIX2)
_U64_30, _U64_27, _U64_31, _U64_11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)


def _uniform(key: int | np.ndarray, minutes: np.ndarray) -> np.ndarray:
    """Uniform (0, 1) per minute index, a pure function of ``(key, minute)``; a
    ``(k, 1)`` column of keys gives a ``(k, minutes)`` array."""
    # uint64 arithmetic wraps modulo 2**64, as the hash means it to.
    x = minutes.astype(np.uint64) * _U64_GOLDEN + np.asarray(key, dtype=np.uint64)
    x = (x ^ (x >> _U64_30)) * _U64_MIX1
    x = (x ^ (x >> _U64_27)) * _U64_MIX2
    x ^= x >> _U64_31
    return ((x >> _U64_11).astype(np.float64) + 0.5) * (1.0 / (1 << 53))


def _normal(key_a: np.ndarray, key_b: np.ndarray, minutes: np.ndarray) -> np.ndarray:
    """Standard normal per minute index (Box-Muller on two hashed uniforms)."""
    u1 = _uniform(key_a, minutes)
    u2 = _uniform(key_b, minutes)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * u2)


# ---------------------------------------------------------------------------------------------
# Noise-free shapes


@dataclass(frozen=True, slots=True)
class SensorProfile:
    """The noise-free character of one metering point (a function of its number only)."""

    scale: float  # m3/h at the typical weekday peak
    night_fraction: float  # night flow as a fraction of the scale
    shift_h: float  # the whole day earlier (<0) or later (>0), hours
    static_pressure: float  # kgf/cm2 at zero flow
    pressure_drop: float  # kgf/cm2 lost at flow == scale
    min_night_flow: float  # the clean shape's lowest flow over a week (season factor 1)


# Kinds of day, each with its own consumption shape.
WEEKDAY, SATURDAY, SUNDAY = 0, 1, 2
# (centre hour, width hours, height) of the consumption peaks above the night base, per
# kind of day: people get up later at the weekend, latest on Sundays and holidays.
_DAY_PEAKS = (
    ((7.5, 1.3, 0.9), (12.5, 2.5, 0.45), (19.5, 1.8, 0.8)),
    ((9.0, 1.8, 0.8), (13.0, 2.5, 0.5), (19.0, 2.0, 0.8)),
    ((10.0, 2.2, 0.7), (14.0, 2.5, 0.5), (18.5, 2.0, 0.8)),
)


def day_kind(date: dt.date, holidays: frozenset[dt.date] = frozenset()) -> int:
    """:data:`WEEKDAY`, :data:`SATURDAY` or :data:`SUNDAY` (a holiday is a Sunday)."""
    if date in holidays or date.weekday() == 6:
        return SUNDAY
    return SATURDAY if date.weekday() == 5 else WEEKDAY


def _day_shape(hours: Any, kind: int, night_fraction: float) -> Any:
    """Relative flow (about ``night_fraction`` at night, about 1 at the peaks)."""
    peaks = _DAY_PEAKS[kind]
    total = 0.0
    for centre, width, height in peaks:
        # Distance on the 24-hour circle, so the shape is continuous at midnight.
        d = (hours - centre + 12.0) % 24.0 - 12.0
        total = total + height * np.exp(-0.5 * (d / width) ** 2)
    return night_fraction + (1.0 - night_fraction) * total


def _season(t: Any) -> Any:
    """Annual factor around 1, highest in (northern) summer."""
    days = np.asarray(t, dtype=np.float64) / _DAY
    return 1.0 + SEASON_AMPLITUDE * np.sin(2.0 * math.pi * (days % 365.2425 - 109.0) / 365.2425)


def _pressure_of(static: Any, drop: Any, scale: Any, flow: Any) -> Any:
    """Static head minus a head loss growing with the square of the flow."""
    relative = flow / scale
    return static - drop * relative * relative


@lru_cache(maxsize=1024)
def sensor_profile(sensor: int) -> SensorProfile:
    """The deterministic profile of sensor number ``sensor`` (the same for every seed)."""
    u = _uniform(_stream_key(0x50F1E, sensor, 0), np.arange(5))
    scale = float(20.0 * 15.0 ** u[0])  # log-uniform in 20..300 m3/h
    night_fraction = float(0.2 + 0.15 * u[1])
    shift_h = float(u[2] - 0.5)
    hours = np.arange(0, 24, 1 / 60)
    lowest = min(float(_day_shape(hours, kind, night_fraction).min())
                 for kind in (WEEKDAY, SATURDAY, SUNDAY))
    return SensorProfile(
        scale=scale,
        night_fraction=night_fraction,
        shift_h=shift_h,
        static_pressure=float(4.3 + 0.7 * u[3]),
        pressure_drop=float(0.8 + 0.6 * u[4]),
        min_night_flow=scale * lowest,
    )


def _zone(tz: ZoneInfo | str) -> ZoneInfo:
    return tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)


def clean_flow(sensor: int, t: EpochSeconds, tz: ZoneInfo | str,
               holidays: frozenset[dt.date] = frozenset()) -> float:
    """Noise-free flow (m3/h) of ``sensor`` at ``t``: the shape without faults or leak."""
    profile = sensor_profile(sensor)
    local = local_datetime(t, _zone(tz))
    hours = local.hour + local.minute / 60 + local.second / 3600
    shape = _day_shape(hours - profile.shift_h, day_kind(local.date(), holidays),
                       profile.night_fraction)
    return float(profile.scale * shape * _season(t))


def clean_pressure(sensor: int, t: EpochSeconds, tz: ZoneInfo | str,
                   holidays: frozenset[dt.date] = frozenset()) -> float:
    """Noise-free pressure (kgf/cm2) of ``sensor`` at ``t``, following :func:`clean_flow`."""
    p = sensor_profile(sensor)
    flow = clean_flow(sensor, t, tz, holidays)
    return float(_pressure_of(p.static_pressure, p.pressure_drop, p.scale, flow))


# ---------------------------------------------------------------------------------------------
# Settings


def _parse_int(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name}: not an integer: {text!r}") from None


def _parse_float(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name}: not a number: {text!r}") from None


def _parse_bool(name: str, text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}: not a boolean (1/0, true/false): {text!r}")


def _parse_faults(name: str, text: str) -> frozenset[str]:
    if text.lower() == "all":
        return frozenset(FAULT_KINDS)
    if text.lower() in ("", "none"):
        return frozenset()
    kinds = frozenset(part.strip().lower() for part in text.split(",") if part.strip())
    unknown = sorted(kinds - set(FAULT_KINDS))
    if unknown:
        raise ValueError(f"{name}: unknown fault kind(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(FAULT_KINDS)} or 'all'")
    return kinds


def _parse_holidays(name: str, text: str) -> frozenset[dt.date]:
    """Comma-separated local dates ``YYYYMMDD`` (as ``start``)."""
    days = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            if len(part) != 8 or not part.isdigit():
                raise ValueError
            days.add(dt.date(int(part[:4]), int(part[4:6]), int(part[6:])))
        except ValueError:
            raise ValueError(f"{name}: expected dates YYYYMMDD separated by commas, "
                             f"got {part!r}") from None
    return frozenset(days)


def _parse_start(name: str, text: str, tz: ZoneInfo) -> EpochSeconds:
    """``YYYYMMDD``, ``YYYYMMDDhhmm`` or ``YYYYMMDDhhmmss``, local time in ``tz``."""
    padded = {8: text + "000000", 12: text + "00", 14: text}.get(len(text))
    if padded is None:
        raise ValueError(f"{name}: expected YYYYMMDD[hhmm[ss]] local time, got {text!r}")
    try:
        t = frames.parse_local_time(padded, tz)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    return EpochSeconds(t - t % _MINUTE)


# URL parameter -> SimulatorSettings field (start and the time zone are special).
_URL_FIELDS = {
    "sensors": ("sensors", _parse_int),
    "speed": ("speed", _parse_float),
    "seed": ("seed", _parse_int),
    "faults": ("faults", _parse_faults),
    "fault_rate": ("fault_rate", _parse_float),
    "leak_day": ("leak_day", _parse_int),
    "leak_fraction": ("leak_fraction", _parse_float),
    "realtime_cap": ("realtime_cap", _parse_bool),
    "holidays": ("holidays", _parse_holidays),
}
_ZONE_PARAMS = frozenset({"tz", "timezone"})  # either names the time zone
_URL_PARAMS = (*_URL_FIELDS, "start", "tz", "timezone")


@dataclass(frozen=True, slots=True)
class SimulatorSettings:
    """What to simulate; parsed from ``sim://?...`` URLs by :meth:`from_url`."""

    sensors: int = 3
    speed: float = 600.0  # simulated minutes per real second; 0 = as fast as the reader reads
    seed: int = 1
    start: EpochSeconds | None = None  # None = local midnight 60 days before now
    timezone: str = "Asia/Seoul"
    faults: frozenset[str] = frozenset()  # subset of FAULT_KINDS
    fault_rate: float = 1.0  # scales how often episodic faults occur
    leak_day: int = 14  # the leak starts at 22:00 local on day start + leak_day
    leak_fraction: float = 0.2  # of the sensor's clean minimum night flow
    realtime_cap: bool = True  # never emit a reading stamped after the wall clock (bar "clock")
    holidays: frozenset[dt.date] = frozenset()  # local dates with Sunday's shape

    def __post_init__(self) -> None:
        object.__setattr__(self, "faults", frozenset(self.faults))
        object.__setattr__(self, "holidays", frozenset(self.holidays))
        if not 1 <= self.sensors <= 999:
            raise ValueError(f"sensors: {self.sensors} is not within 1..999")
        if not (math.isfinite(self.speed) and self.speed >= 0):
            raise ValueError(f"speed: {self.speed} is not a finite number >= 0")
        if self.seed < 0:
            raise ValueError(f"seed: {self.seed} is negative")
        if self.start is not None and (self.start < 0 or self.start % _MINUTE):
            raise ValueError(f"start: {self.start} is not a non-negative whole minute")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"tz: unknown time zone {self.timezone!r}") from None
        unknown = sorted(self.faults - set(FAULT_KINDS))
        if unknown:
            raise ValueError(f"faults: unknown fault kind(s) {', '.join(unknown)}")
        if not (math.isfinite(self.fault_rate) and 0 <= self.fault_rate <= 50):
            raise ValueError(f"fault_rate: {self.fault_rate} is not within 0..50")
        if self.leak_day < 0:
            raise ValueError(f"leak_day: {self.leak_day} is negative")
        if not (math.isfinite(self.leak_fraction) and self.leak_fraction >= 0):
            raise ValueError(f"leak_fraction: {self.leak_fraction} is not a finite number >= 0")

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @classmethod
    def from_url(cls, url: str) -> SimulatorSettings:
        """``sim://?sensors=3&speed=600&seed=1&faults=dropout,leak&start=20260101&tz=...``
        (``&holidays=20260101,20260301``).

        ``faults=all`` turns every kind on. Raises :class:`ValueError` naming the
        bad parameter (unknown, repeated, or with an unusable value).
        """
        parts = urlsplit(url)
        if parts.scheme.lower() != "sim":
            raise ValueError(f"scheme: expected sim://, got {url!r}")
        if parts.netloc or parts.path.strip("/"):
            raise ValueError(f"url: sim:// takes only ?parameters, got {url!r}")
        params: dict[str, str] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name not in _URL_PARAMS:
                raise ValueError(f"{name}: unknown parameter; known: {', '.join(_URL_PARAMS)}")
            zone_twice = name in _ZONE_PARAMS and not _ZONE_PARAMS.isdisjoint(params)
            if name in params or zone_twice:
                raise ValueError(f"{name}: given more than once")
            params[name] = value
        kwargs: dict[str, Any] = {}
        zone_param = "tz" if "tz" in params else "timezone"
        if zone_param in params:
            kwargs["timezone"] = params[zone_param]
        for name, (field_name, parse) in _URL_FIELDS.items():
            if name in params:
                kwargs[field_name] = parse(name, params[name])
        settings = cls(**kwargs)  # validates ranges and the zone
        if "start" in params:
            settings = replace(settings, start=_parse_start("start", params["start"], settings.tz))
        return settings


# ---------------------------------------------------------------------------------------------
# The simulator


@dataclass(frozen=True, slots=True)
class Episode:
    """One fault episode on one sensor: minutes ``[start, end)``."""

    kind: str
    start: EpochSeconds
    end: EpochSeconds
    quantity: str = "flow"  # "flow", "pressure" or "both" (stuck, spike, missing, excursion)
    status: int = 0  # the status bits (status)
    # spike multiplier; duplicate value change (1.0 = identical copy); excursion
    # multiplier of the flow, or of the pressure when only the pressure moves
    factor: float = 1.0
    style: str = ""  # garble style
    offset_s: int = 0  # how far ahead a clock-fault reading is stamped


@dataclass(frozen=True, slots=True)
class _Garble:
    """An extra corrupted line, made from the sensor's good reading of that minute."""

    reading: Reading
    style: str
    key: int


@dataclass(slots=True)
class _Column:
    """One sensor's readings over a block of minutes (inside one local day)."""

    sid: SensorId
    flow: list[float | None]
    pressure: list[float | None]
    status: list[int]
    stamp: list[int]
    present: list[bool]
    extras: dict[int, list[Reading | _Garble]] = field(default_factory=dict)


class Simulator:
    """Generates the readings of ``settings.sensors`` sensors, minute by minute."""

    def __init__(self, settings: SimulatorSettings, now: float | None = None) -> None:
        self.settings = settings
        self.tz = settings.tz
        self.start: EpochSeconds = (
            settings.start if settings.start is not None
            else default_start(self.tz, time.time() if now is None else now)
        )
        self.leak_start: EpochSeconds | None = None
        if "leak" in settings.faults:
            leak_date = self._date_of(self.start) + dt.timedelta(days=settings.leak_day)
            self.leak_start = _timestamp(dt.datetime.combine(leak_date, dt.time(22), self.tz))
        numbers = range(1, settings.sensors + 1)
        self._sids = [sensor_id(n) for n in numbers]
        # Per-sensor constants as (sensors, 1) columns: one numpy pass serves every sensor.
        self._key_columns = [
            np.array([[_stream_key(settings.seed, n, stream)] for n in numbers], dtype=np.uint64)
            for stream in (_FLOW_A, _FLOW_B, _PRESSURE_A, _PRESSURE_B)
        ]
        profiles = [sensor_profile(n) for n in numbers]
        self._profile_columns = {
            name: np.array([[getattr(p, name)] for p in profiles])
            for name in SensorProfile.__slots__
        }
        self._schedules: dict[tuple[int, int], tuple[Episode, ...]] = {}

    # -- public -------------------------------------------------------------------

    def lines_for_minute(self, t: EpochSeconds) -> list[bytes]:
        """Every sensor's ``$WDN`` line for minute ``t`` (plus garbled/duplicate lines)."""
        return self.lines_for_minutes(t, 1)

    def lines_for_minutes(self, start: EpochSeconds, minutes: int) -> list[bytes]:
        """The lines of ``minutes`` consecutive minutes from ``start``, in wire order."""
        tz = self.tz
        encode = frames.encode
        out: list[bytes] = []
        for item in self._items(start, minutes):
            if type(item) is Reading:
                out.append(encode(item, tz))
            else:
                out.append(_garbled_line(item, tz))  # type: ignore[arg-type]
        return out

    def readings(self, start: EpochSeconds, minutes: int) -> Iterator[Reading]:
        """The readings (clean and faulted) of ``minutes`` minutes from ``start``.

        Exactly the readings that the lines of those minutes decode to, in the same
        order: garbled lines are left out, duplicates and clock-fault stamps kept.
        """
        for item in self._items(start, minutes):
            if type(item) is Reading:
                yield item  # type: ignore[misc]

    def truth(self, sensor: int, t: EpochSeconds) -> frozenset[str]:
        """The fault kinds active for ``sensor`` in minute ``t`` (ground truth)."""
        self._check_sensor(sensor)
        minute = t - t % _MINUTE
        active = {ep.kind for ep in self.episodes(sensor, self._day_of(minute))
                  if ep.start <= minute < ep.end}
        if self.leak_start is not None and minute >= self.leak_start:
            active.add("leak")
        return frozenset(active)

    def episodes(self, sensor: int, day: int) -> tuple[Episode, ...]:
        """The enabled fault episodes of ``sensor`` on local day ``day`` (days since
        1970-01-01 local), in time order."""
        self._check_sensor(sensor)
        key = (sensor, day)
        schedule = self._schedules.get(key)
        if schedule is None:
            if len(self._schedules) >= _SCHEDULE_CACHE_LIMIT:
                self._schedules.clear()
            schedule = self._schedules[key] = self._schedule(sensor, day)
        return schedule

    def episodes_between(
        self, sensor: int, start: EpochSeconds, end: EpochSeconds
    ) -> list[Episode]:
        """The enabled episodes of ``sensor`` overlapping ``[start, end)``."""
        found: list[Episode] = []
        for day in range(self._day_of(start), self._day_of(max(start, end - 1)) + 1):
            found += [ep for ep in self.episodes(sensor, day) if ep.start < end and ep.end > start]
        return found

    # -- generation -----------------------------------------------------------------

    def _items(self, start: EpochSeconds, minutes: int) -> Iterator[Reading | _Garble]:
        if start % _MINUTE:
            raise ValueError(f"start {start} is not a whole minute")
        if minutes < 0:
            raise ValueError(f"minutes {minutes} is negative")
        t, end = int(start), int(start) + minutes * _MINUTE
        while t < end:
            day = self._day_of(t)
            block_end = min(end, self._midnight(day + 1))
            n = (block_end - t) // _MINUTE
            times = np.arange(t, t + n * _MINUTE, _MINUTE, dtype=np.int64)
            flows, pressures = self._values(times)
            columns = [self._column(s, day, times, flows[s - 1], pressures[s - 1])
                       for s in range(1, self.settings.sensors + 1)]
            for i in range(n):
                for c in columns:
                    if c.present[i]:
                        yield Reading(c.sid, c.stamp[i], c.flow[i], c.pressure[i], c.status[i])
                    if c.extras:
                        extra = c.extras.get(i)
                        if extra:
                            yield from extra
            t = block_end

    def _values(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Noisy flow and pressure (leak included, no episodes) of every sensor, shape
        (sensors, minutes), for whole minutes ``times``, all inside one local day."""
        p = self._profile_columns
        first, last = int(times[0]), int(times[-1])
        off_first, off_last = _offset(first, self.tz), _offset(last, self.tz)
        if off_first == off_last:
            local = times + off_first
        else:  # a DST change inside this day
            local = np.array([t + _offset(int(t), self.tz) for t in times.tolist()])
        hours = (local % _DAY) / 3600.0 - p["shift_h"]
        kind = day_kind(self._date_of(first), self.settings.holidays)
        flow = p["scale"] * _day_shape(hours, kind, p["night_fraction"]) * _season(times)
        if self.leak_start is not None and last >= self.leak_start:
            leak = self.settings.leak_fraction * p["min_night_flow"]
            flow = flow + np.where(times >= self.leak_start, leak, 0.0)
        pressure = _pressure_of(p["static_pressure"], p["pressure_drop"], p["scale"], flow)
        minute_index = times // _MINUTE
        fa, fb, pa, pb = self._key_columns
        flow = np.maximum(flow * (1.0 + FLOW_NOISE * _normal(fa, fb, minute_index)), 0.0)
        pressure = np.maximum(pressure + PRESSURE_NOISE * _normal(pa, pb, minute_index), 0.0)
        # Round as the wire carries them, so readings() equals the decoded lines.
        return np.rint(flow * 100.0) / 100.0, np.rint(pressure * 1000.0) / 1000.0

    def _column(
        self, sensor: int, day: int, times: np.ndarray, flow: np.ndarray, pressure: np.ndarray
    ) -> _Column:
        """One sensor's block with its episodes applied (``flow``/``pressure`` are changed)."""
        t0, n = int(times[0]), len(times)
        status = [0] * n
        present = [True] * n
        stamp = times.tolist()
        extras: dict[int, list[Reading | _Garble]] = {}
        sid = self._sids[sensor - 1]
        episodes = [ep for ep in self.episodes(sensor, day)
                    if ep.start < t0 + n * _MINUTE and ep.end > t0]
        deferred = []
        for ep in episodes:
            i0, i1 = max(0, (ep.start - t0) // _MINUTE), min(n, (ep.end - t0) // _MINUTE)
            kind = ep.kind
            if kind == "dropout":
                present[i0:i1] = [False] * (i1 - i0)
            elif kind == "stuck":
                held_flow, held_pressure = self._values(np.array([ep.start], np.int64))
                if ep.quantity in ("flow", "both"):
                    flow[i0:i1] = held_flow[sensor - 1, 0]
                if ep.quantity in ("pressure", "both"):
                    pressure[i0:i1] = held_pressure[sensor - 1, 0]
            elif kind == "spike":
                target = flow if ep.quantity == "flow" else pressure
                digits = 100.0 if ep.quantity == "flow" else 1000.0
                target[i0:i1] = np.rint(target[i0:i1] * ep.factor * digits) / digits
            elif kind == "status":
                status[i0:i1] = [ep.status] * (i1 - i0)
            elif kind == "missing":
                if ep.quantity in ("flow", "both"):
                    flow[i0:i1] = np.nan
                if ep.quantity in ("pressure", "both"):
                    pressure[i0:i1] = np.nan
            elif kind == "clock":
                stamp[i0:i1] = [s + ep.offset_s for s in stamp[i0:i1]]
            elif kind == "excursion":
                _excursion(ep, flow, pressure, i0, i1)
            else:  # garble and duplicate add lines after the good one
                deferred.append((ep, i0, i1))
        flows, pressures = _nullable(flow), _nullable(pressure)
        for ep, i0, i1 in deferred:
            for i in range(i0, i1):
                good = Reading(sid, stamp[i], flows[i], pressures[i], status[i])
                if ep.kind == "garble":
                    key = _stream_key(self.settings.seed, sensor, _GARBLE_SALT ^ (stamp[i] // 60))
                    extras.setdefault(i, []).append(_Garble(good, ep.style, key))
                else:
                    copy = good if ep.factor == 1.0 or good.flow is None else Reading(
                        sid, good.time, round(good.flow * ep.factor, 2), good.pressure, good.status)
                    extras.setdefault(i, []).append(copy)
        return _Column(sid, flows, pressures, status, stamp, present, extras)

    def _schedule(self, sensor: int, day: int) -> tuple[Episode, ...]:
        """Place the day's episodes of every kind, then keep the enabled ones.

        Every kind is drawn whether enabled or not, so switching one kind on or
        off never moves the episodes of another.
        """
        settings = self.settings
        wanted = settings.faults
        if not wanted & set(EPISODIC_KINDS) or settings.fault_rate == 0:
            return ()
        day_start, day_end = self._midnight(day), self._midnight(day + 1)
        if day_end <= self.start + QUIET_S:
            return ()
        length = (day_end - day_start) // _MINUTE
        rng = np.random.default_rng([settings.seed, sensor, day + 1_000_000, _SCHEDULE_SALT])
        rate = settings.fault_rate * EPISODES_PER_WEEK / 7.0
        taken: list[tuple[int, int]] = []  # [first, end) minute of the day, gap included
        placed: list[Episode] = []
        for kind in EPISODIC_KINDS:
            for _ in range(int(rng.poisson(rate))):
                lo, hi = EPISODE_MINUTES[kind]
                duration = int(rng.integers(lo, hi + 1))
                detail = _episode_detail(kind, rng)
                for _attempt in range(8):
                    first = int(rng.integers(0, length - duration + 1))
                    span = (first - EPISODE_GAP_MIN, first + duration + EPISODE_GAP_MIN)
                    if all(span[1] <= a or span[0] >= b for a, b in taken):
                        break
                else:
                    continue  # the day is too full: this episode does not happen
                taken.append((first, first + duration))
                start = day_start + first * _MINUTE
                if kind in wanted and start >= self.start + QUIET_S:
                    placed.append(Episode(kind, start, start + duration * _MINUTE, **detail))
        return tuple(sorted(placed, key=lambda ep: ep.start))

    # -- local calendar ---------------------------------------------------------------

    def _date_of(self, t: int) -> dt.date:
        return local_datetime(t, self.tz).date()

    def _day_of(self, t: int) -> int:
        return self._date_of(t).toordinal() - _EPOCH_ORDINAL

    def _midnight(self, day: int) -> int:
        date = dt.date.fromordinal(day + _EPOCH_ORDINAL)
        return _timestamp(dt.datetime.combine(date, dt.time(0), self.tz))

    def _check_sensor(self, sensor: int) -> None:
        if not 1 <= sensor <= self.settings.sensors:
            raise ValueError(f"sensor {sensor} is not within 1..{self.settings.sensors}")


def _episode_detail(kind: str, rng: np.random.Generator) -> dict[str, Any]:
    if kind == "stuck":
        return {"quantity": str(rng.choice(["flow", "pressure", "both"]))}
    if kind == "spike":
        quantity = str(rng.choice(["flow", "pressure"]))
        return {"quantity": quantity, "factor": float(rng.uniform(4, 6))}
    if kind == "status":
        return {"status": int(rng.choice(STATUS_FAULT_BITS))}
    if kind == "missing":
        return {"quantity": str(rng.choice(["flow", "pressure", "both"]))}
    if kind == "garble":
        return {"style": str(rng.choice(GARBLE_STYLES))}
    if kind == "duplicate":
        # Half the duplicates repeat the line exactly, half carry a different flow.
        return {"factor": 1.0 if rng.random() < 0.5 else float(rng.uniform(1.02, 1.1))}
    if kind == "clock":
        # Hours ahead, and odd seconds: a drifted RTU clock does not land on the minute.
        return {"offset_s": int(rng.integers(1, 25)) * 3600 + int(rng.integers(1, 60))}
    if kind == "excursion":
        quantity = str(rng.choice(["flow", "pressure", "both"]))
        shift = float(rng.uniform(*EXCURSION_SHIFT))
        return {"quantity": quantity, "factor": 1.0 + shift if rng.random() < 0.5 else 1.0 - shift}
    return {}


def _excursion(ep: Episode, flow: np.ndarray, pressure: np.ndarray, i0: int, i1: int) -> None:
    """Shift minutes ``[i0, i1)`` of an excursion in place, rounded as on the wire."""
    if ep.quantity in ("flow", "both"):
        flow[i0:i1] = np.rint(flow[i0:i1] * ep.factor * 100.0) / 100.0
    if ep.quantity == "pressure":
        pressure[i0:i1] = np.rint(pressure[i0:i1] * ep.factor * 1000.0) / 1000.0
    elif ep.quantity == "both":
        # Against the flow: more flow, less pressure (a burst), and the reverse.
        pressure[i0:i1] = np.rint(pressure[i0:i1] * (2.0 - ep.factor) * 1000.0) / 1000.0


def _garbled_line(garble: _Garble, tz: ZoneInfo) -> bytes:
    """A line the reader must reject, made from a good reading."""
    good = frames.encode(garble.reading, tz)
    star = good.rindex(b"*")
    pick = np.random.default_rng([garble.key, GARBLE_STYLES.index(garble.style)])
    if garble.style == "checksum":
        wrong = int(good[star + 1:star + 3], 16) ^ int(pick.integers(1, 256))
        return b"%s%02X\r\n" % (good[:star + 1], wrong)
    if garble.style == "truncated":
        return good[:int(pick.integers(1, star))] + b"\r\n"
    if garble.style == "noise":
        # Line noise: any byte but '$' (which would start a frame) and the terminators.
        alphabet = np.array([b for b in range(256) if b not in b"$\r\n"], dtype=np.uint8)
        return pick.choice(alphabet, int(pick.integers(8, 60))).tobytes() + b"\r\n"
    # overlong: a well-formed frame whose flow field is padded beyond MAX_LINE
    fields = good[1:star].split(b",")
    # The flow gets digits beyond any limit; the frame stays well-formed otherwise.
    fields[3] = (fields[3] or b"0").ljust(frames.MAX_LINE + 20, b"0")
    body = b",".join(fields)
    return b"$%s*%02X\r\n" % (body, frames.checksum(body))


def _nullable(values: np.ndarray) -> list[float | None]:
    """Array -> list, NaN (missing) -> None."""
    listed = values.tolist()
    if np.isnan(values).any():
        return [None if v != v else v for v in listed]
    return listed


def _offset(t: int, tz: ZoneInfo) -> int:
    offset = local_datetime(t, tz).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def _timestamp(local: dt.datetime) -> EpochSeconds:
    return EpochSeconds(int(local.timestamp()))


def default_start(tz: ZoneInfo, now: float) -> EpochSeconds:
    """Local midnight ``DEFAULT_START_DAYS_BACK`` days before ``now``."""
    date = local_datetime(now, tz).date() - dt.timedelta(days=DEFAULT_START_DAYS_BACK)
    return _timestamp(dt.datetime.combine(date, dt.time(0), tz))

