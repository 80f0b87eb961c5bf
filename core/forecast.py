"""Forecasting: hourly resampling, seasonal-naive and LSTM forecasts, in numpy only.

The service imports this module to forecast every hour, so it must stay light:
numpy and the standard library, never TensorFlow or Keras. Training (in the
separate ``training`` package) uses Keras; what it produces is an
:class:`ExportedModel`, the LSTM's weights, scalers and feature spec as plain
arrays in one ``.npz`` file, and :func:`lstm_forecast` runs that network's
forward pass here in numpy (a test checks it against Keras to 1e-4).

The model
---------
One model per sensor and quantity. It looks at ``lookback_hours`` of hourly
means cut into steps of ``step_hours`` (default one day: an LSTM over 14
daily steps trains in seconds, where one over 336 hourly steps takes minutes
and learns nothing more about a weekly horizon). Each step carries its hourly
values, the share of missing hours and calendar features of its first hour
(local hour of day and day of week as sin/cos, weekend). The head is a dense layer
straight to the next 168 hours.

It predicts the *residual* against a seasonal-naive base: the mean of the
same hour in the last ``base_weeks`` weeks, adapted to the level and amplitude
of the last week (:func:`seasonal_base`). The base already carries the daily and
weekly shape and follows a season, so the network only learns what the recent
past says beyond it; combining weeks cuts the noise a one-week-old value
carries, which is why the model beats "same hour last week" by a wide margin.
The seasonal-naive forecast without a model takes the median of those weeks
instead (:func:`weekly_medians`), so one past excursion stays out of it.
:func:`window_features` and :func:`seasonal_base` are shared by training and
inference, so the two cannot drift apart.
"""

from __future__ import annotations

import datetime
import functools
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from core.day_kind import HolidayCalendar, holiday_calendar
from core.localtime import local_datetime, local_seconds, utc_offsets
from core.types import EpochSeconds, SensorId

HORIZON_HOURS = 168
HOUR_S = 3600
WEEK_HOURS = 168
# The service's seasonal-naive forecast takes the median of this many past weeks.
NAIVE_WEEKS = 3
SOURCES = ("lstm", "naive")
BAND_FIELDS = ("flow_p10", "flow_p90", "pressure_p10", "pressure_p90")
FIT_HOURS = 168  # the seasonal base adapts its level to this last stretch of history
GAIN_LIMIT = 0.5
# A model's base: a weighted mean of eight like weeks, each week back weighing 0.8
# of the one after it, adapted over the last five days; what won on the rolling
# origins of bench/forecast_eval.py (README).
BASE_WEEKS = 8
BASE_DECAY = 0.8
BASE_FIT_HOURS = 120
EXPORT_FORMAT = 1
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)


# ---------------------------------------------------------------------------
# Hourly series


@dataclass(frozen=True, eq=False)
class HourlySeries:
    """Hourly means of one sensor: ``flow[i]`` is the mean over hour ``start + i*3600``.

    ``start`` is hour-aligned UTC; NaN marks an hour without data.
    """

    start: EpochSeconds
    flow: np.ndarray
    pressure: np.ndarray

    @property
    def hours(self) -> int:
        return int(self.flow.shape[0])

    @property
    def end(self) -> EpochSeconds:
        """The first hour after the series."""
        return EpochSeconds(self.start + self.hours * HOUR_S)

    def quantity(self, name: str) -> np.ndarray:
        if name == "flow":
            return self.flow
        if name == "pressure":
            return self.pressure
        raise ValueError(f"unknown quantity {name!r}")

    def window(self, name: str, since: int, hours: int) -> np.ndarray:
        """Values of ``name`` for the hours ``[since, since + hours*3600)``, NaN-padded."""
        return aligned(self.quantity(name), self.start, since, hours)


def aligned(values: np.ndarray, start: int, since: int, hours: int) -> np.ndarray:
    """``values`` (hourly from ``start``) cut or NaN-padded to ``hours`` hours from ``since``."""
    if since % HOUR_S or start % HOUR_S:
        raise ValueError("hourly series must be hour-aligned")
    out = np.full(hours, np.nan)
    offset = (since - start) // HOUR_S
    lo, hi = max(0, offset), min(values.shape[0], offset + hours)
    if hi > lo:
        out[lo - offset:hi - offset] = values[lo:hi]
    return out


def hourly_means(time: np.ndarray, flow: np.ndarray, pressure: np.ndarray) -> HourlySeries:
    """Resample readings (any spacing, any order) to hourly means; NaN values are skipped.

    The series spans from the first reading's hour to the last reading's hour;
    hours without a finite value are NaN.
    """
    time = np.asarray(time, dtype=np.int64)
    if time.size == 0:
        return HourlySeries(EpochSeconds(0), np.empty(0), np.empty(0))
    first = int(time.min()) // HOUR_S
    # np.bincount takes platform integers: int32 on a 32-bit Pi.
    index = (time // HOUR_S - first).astype(np.intp)
    n = int(index.max()) + 1
    return HourlySeries(
        EpochSeconds(first * HOUR_S),
        _bin_means(index, np.asarray(flow, dtype=np.float64), n),
        _bin_means(index, np.asarray(pressure, dtype=np.float64), n),
    )


def _bin_means(index: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    ok = np.isfinite(values)
    sums = np.bincount(index[ok], weights=values[ok], minlength=n)
    counts = np.bincount(index[ok], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


# ---------------------------------------------------------------------------
# Forecast


@dataclass(frozen=True, eq=False)
class Forecast:
    """Next ``HORIZON_HOURS`` hourly means of one sensor, issued at an hour boundary.

    ``flow[h]`` is the expected mean over hour ``issued + h*3600``. ``*_band``
    is the residual band PREDICT allows around it (None: the criteria's default).
    ``flow_p10[h]`` / ``flow_p90[h]`` (and pressure's) are the hour's 10th and
    90th percentiles, absolute values like ``flow``; None when the forecast
    carries no band, NaN for an hour without one.
    """

    sensor: SensorId
    issued: EpochSeconds
    flow: np.ndarray
    pressure: np.ndarray
    source: str
    model_version: str | None = None
    flow_band: float | None = None
    pressure_band: float | None = None
    flow_p10: np.ndarray | None = None
    flow_p90: np.ndarray | None = None
    pressure_p10: np.ndarray | None = None
    pressure_p90: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.issued % HOUR_S:
            raise ValueError(f"forecast must be issued on the hour, got {self.issued}")
        for name in ("flow", "pressure") + BAND_FIELDS:
            if getattr(self, name) is None:
                continue
            values = np.array(getattr(self, name), dtype=np.float64)  # own, read-only copy
            if values.shape != (HORIZON_HOURS,):
                raise ValueError(f"{name} must have {HORIZON_HOURS} hours, got {values.shape}")
            values.flags.writeable = False
            object.__setattr__(self, name, values)
        if self.source not in SOURCES:
            raise ValueError(f"unknown forecast source {self.source!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Forecast):
            return NotImplemented
        return self.to_record() == other.to_record()

    __hash__ = None  # type: ignore[assignment]

    @property
    def until(self) -> EpochSeconds:
        """End of the horizon (exclusive)."""
        return EpochSeconds(self.issued + HORIZON_HOURS * HOUR_S)

    def expected_at(self, t: EpochSeconds | int) -> tuple[float | None, float | None]:
        """Expected (flow, pressure) at minute ``t``; None outside the horizon or unknown.

        Hourly means belong to the middle of their hour; between two middles the
        expectation is interpolated linearly, before the first and after the last
        middle it is held, so a minute-level reading meets a smooth curve. A
        minute whose own hour has no forecast (NaN: no basis) gets None; next to
        such an hour its neighbour's value is held instead of interpolated.
        """
        if not self.issued <= t < self.until:
            return None, None
        own = (t - self.issued) // HOUR_S
        # The other hour middle around t: the previous one before t's middle, the next after.
        after = (t - self.issued) % HOUR_S >= HOUR_S // 2
        other = own + 1 if after else own - 1
        if not 0 <= other < HORIZON_HOURS:
            other, frac = own, 0.0
        else:
            # Distance of t from its own hour's middle, in hours (0 .. 0.5).
            frac = abs((t - self.issued - HOUR_S / 2) / HOUR_S - own)
        return (_between(self.flow, own, other, frac),
                _between(self.pressure, own, other, frac))

    def hour_times(self) -> np.ndarray:
        """Start of each forecast hour (epoch seconds)."""
        return self.issued + HOUR_S * np.arange(HORIZON_HOURS, dtype=np.int64)

    def daily_means(self, tz: ZoneInfo) -> list[tuple[datetime.date, float, float]]:
        """(local date, mean flow, mean pressure) for seven local days from the issue day.

        An hour counts toward the local day it starts in; the issue day has only
        its remaining hours, and the hours of an eighth day are left out. A day
        with an hour without forecast is NaN: the mean of part of a day (its
        nights only, say, in a site's first week) is not that day's mean.
        """
        dates = [local_datetime(int(t), tz).date() for t in self.hour_times()]
        first = dates[0]
        out = []
        for day in range(7):
            date = first + datetime.timedelta(days=day)
            mask = np.fromiter((d == date for d in dates), dtype=bool, count=HORIZON_HOURS)
            out.append((date, _full_mean(self.flow[mask]), _full_mean(self.pressure[mask])))
        return out

    def to_record(self) -> dict[str, Any]:
        """Plain dict for the store (NaN as None so any encoder takes it)."""
        return {
            "sensor": str(self.sensor),
            "issued": int(self.issued),
            "flow": _to_list(self.flow),
            "pressure": _to_list(self.pressure),
            "source": self.source,
            "model_version": self.model_version,
            "flow_band": self.flow_band,
            "pressure_band": self.pressure_band,
            **{name: None if getattr(self, name) is None else _to_list(getattr(self, name))
               for name in BAND_FIELDS},
        }

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> Forecast:
        def band(x: Any) -> float | None:
            return None if x is None else float(x)

        return cls(
            sensor=SensorId(str(d["sensor"])),
            issued=EpochSeconds(int(d["issued"])),
            flow=_from_list(d["flow"]),
            pressure=_from_list(d["pressure"]),
            source=str(d["source"]),
            model_version=None if d.get("model_version") is None else str(d["model_version"]),
            flow_band=band(d.get("flow_band")),
            pressure_band=band(d.get("pressure_band")),
            **{name: None if d.get(name) is None else _from_list(d[name])
               for name in BAND_FIELDS},
        )


def _between(values: np.ndarray, own: int, other: int, frac: float) -> float | None:
    """``values[own]`` moved ``frac`` of the way toward ``values[other]``; None when
    ``values[own]`` is unknown, held when only ``values[other]`` is."""
    v = float(values[own])
    if math.isnan(v):
        return None
    if frac:
        w = float(values[other])
        if not math.isnan(w):
            v = v * (1.0 - frac) + w * frac
    return v


def _full_mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size and np.isfinite(x).all() else math.nan


def _to_list(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else v for v in values.tolist()]


def _from_list(values: Any) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


# ---------------------------------------------------------------------------
# Seasonal-naive


def weekly_means(values: np.ndarray, weeks: int) -> np.ndarray:
    """Mean of the same hour in each of the previous ``weeks`` weeks, where present.

    Entry ``t`` (for ``0 <= t < len(values) + 168``, so it reaches one week past
    the data) averages the known ``values[t - 168*k]`` for ``k = 1..weeks``; NaN
    when none of them is known. Every term lies at least a week before ``t``.
    The base of the LSTM: averaging weeks cuts the noise of one week more than a
    median does, and the network sees any excursion in its own input window.
    UTC weeks; :func:`seasonal_base` takes the site's local weeks and holidays.
    """
    n = values.shape[0] + WEEK_HOURS
    return _combine(values, _sources(np.arange(n), DayLags.utc(weeks, n)), median=False)


def weekly_medians(values: np.ndarray, weeks: int) -> np.ndarray:
    """As :func:`weekly_means`, the median instead of the mean: the seasonal-naive forecast.

    With no model to see it, one past excursion (a burst, a valve operation) in
    one of three weeks is outvoted by the other two instead of coming back a
    week later as a third of itself in the expectation PREDICT compares with.
    """
    n = values.shape[0] + WEEK_HOURS
    return _combine(values, _sources(np.arange(n), DayLags.utc(weeks, n)), median=True)


@dataclass(frozen=True, eq=False)
class DayLags:
    """For each hour ``t`` of a range, how many hours back its ``k``-th earlier
    *like* hour lies (``lags[k-1, t - first]``), at least a week back.

    Like means the same local hour on an earlier day of the same kind: the same
    weekday a whole number of weeks back, skipping that weekday's public
    holidays and bridge days; for a public holiday or a Sunday, the Sundays
    before it (a holiday is a rest day: its morning starts late like a
    Sunday's); for a bridge day (a working day between a holiday and a weekend)
    the Saturdays before it. Local hours, so
    across a DST change 07:00 follows 07:00 and not the UTC hour (the lag is
    167 or 169 hours then). A lag of 0 marks "none within reach".
    """

    first: int
    lags: np.ndarray  # (weeks, hours) int64

    @staticmethod
    def utc(weeks: int, hours: int, first: int = 0) -> DayLags:
        lags = WEEK_HOURS * np.arange(1, weeks + 1, dtype=np.int64)[:, None]
        return DayLags(first, np.repeat(lags, max(hours, 0), axis=1))

    @staticmethod
    def local(start: int, first: int, hours: int, weeks: int, tz: ZoneInfo,
              holidays: HolidayCalendar | None = None) -> DayLags:
        """Lags of the hours ``first .. first + hours - 1`` of a series starting at
        epoch second ``start``, in the zone ``tz`` with the site's ``holidays``."""
        if hours <= 0:
            return DayLags.utc(weeks, 0, first)
        reach = 7 * (weeks + 2)  # days searched back for like days
        t0 = start + first * HOUR_S
        times = t0 - reach * 86400 + HOUR_S * np.arange(hours + reach * 24, dtype=np.int64)
        offset = utc_offsets(times, tz) // HOUR_S
        local_day = (times + offset * HOUR_S) // 86400
        day0 = int(local_day[0])
        days = np.arange(day0 - 1, int(local_day[-1]) + 1)
        weekday = (days + _EPOCH_WEEKDAY) % 7
        if holidays is None:
            holiday = np.zeros(days.shape, dtype=bool)
        else:
            epoch = datetime.date(1970, 1, 1)
            holiday = np.array([holidays.is_holiday(epoch + datetime.timedelta(days=int(d)))
                                for d in days])
        rest = holiday | (weekday == 6)
        day_lags = _like_day_lags(weekday, holiday, rest, weeks, reach)
        own = slice(reach * 24, reach * 24 + hours)
        target_day = local_day[own] - (day0 - 1)
        lag_days = day_lags[:, target_day]  # (weeks, hours)
        # The same local hour D days back: t - 24 D hours, corrected by the change
        # of the UTC offset in between (DST).
        back = np.clip(24 * lag_days, 0, reach * 24)
        pos = np.arange(reach * 24, reach * 24 + hours)[None, :]
        lags = 24 * lag_days + offset[pos - back] - offset[pos]
        return DayLags(first, np.where(lag_days > 0, lags, 0))

    def of(self, t: np.ndarray) -> np.ndarray:
        """Lags of hour indices ``t``: shape ``t.shape + (weeks,)``, 0 outside the range."""
        i = t - self.first
        inside = (i >= 0) & (i < self.lags.shape[1])
        at = self.lags.T[np.clip(i, 0, max(self.lags.shape[1] - 1, 0))]
        return np.where(inside[..., None], at, 0)


def _like_day_lags(weekday: np.ndarray, holiday: np.ndarray, rest: np.ndarray, weeks: int,
                   reach: int) -> np.ndarray:
    """(weeks, days): how many days back each day's like days lie (0: none within
    ``reach``). A working day's like days are the same weekday whole weeks back, not
    holidays nor bridge days; a rest day's are the Sundays at least a week back; a
    bridge day's (a working day between a holiday and a weekend, which many take
    off) the Saturdays."""
    days = weekday.size
    j = np.arange(days)
    off = rest | (weekday == 5)
    before = np.concatenate([[False], off[:-1]])
    after = np.concatenate([off[1:], [False]])
    near_holiday = np.concatenate([[False], holiday[:-1]]) | np.concatenate([holiday[1:], [False]])
    bridge = ~off & before & after & near_holiday
    out = np.zeros((weeks, days), dtype=np.int64)
    # Working days: candidates 7, 14, ... days back; holidays and bridges are skipped.
    back = 7 * np.arange(1, reach // 7 + 1)
    cand = j[:, None] - back[None, :]
    unusual = holiday | bridge
    ok = (cand >= 0) & ~unusual[np.clip(cand, 0, days - 1)]
    rank = np.cumsum(ok, axis=1) - 1
    for k in range(weeks):
        hit = ok & (rank == k)
        out[k] = np.where(hit.any(axis=1), back[np.argmax(hit, axis=1)], 0)
    # Rest days: the last Sunday at least a week back, then every week before it;
    # bridge days the same with Saturdays.
    for kind, day in ((rest, 6), (bridge, 5)):
        first = 7 + (weekday - day) % 7
        for k in range(weeks):
            lag = first + 7 * k
            out[k] = np.where(kind, np.where((lag <= reach) & (j - lag >= 0), lag, 0), out[k])
    return out


def _sources(t: np.ndarray, lags: DayLags) -> np.ndarray:
    """Indices of the like hours of the hours ``t``: shape ``t.shape + (weeks,)``, -1 for none."""
    lag = lags.of(t)
    return np.where(lag > 0, t[..., None] - lag, -1)


def _combine(values: np.ndarray, src: np.ndarray, median: bool,
             before: np.ndarray | None = None, decay: float = 1.0) -> np.ndarray:
    """Mean (or median) over the last axis of ``values[src]``, known values only; sources
    at or after ``before`` (broadcast against ``src``) count as unknown. The mean
    weighs the ``k``-th week back by ``decay ** k``."""
    taken = _take(values, src)
    if before is not None:
        taken = np.where(src < before, taken, np.nan)
    if median:
        return _column_medians(np.moveaxis(taken, -1, 0))
    ok = np.isfinite(taken)
    weight = np.where(ok, decay ** np.arange(src.shape[-1], dtype=np.float64), 0.0)
    total = (np.where(ok, taken, 0.0) * weight).sum(axis=-1)
    norm = weight.sum(axis=-1)
    return np.where(norm > 0, total / np.where(norm > 0, norm, 1.0), np.nan)


def _column_medians(rows: np.ndarray) -> np.ndarray:
    """Median over axis 0 of the finite values (NaN where none), without
    np.nanmedian's all-NaN warnings; rows are few, so a sort is cheap."""
    ordered = np.sort(rows, axis=0)  # NaN sorts last
    count = np.isfinite(rows).sum(axis=0)
    lo = np.take_along_axis(ordered, (np.maximum(count - 1, 0) // 2)[None], axis=0)[0]
    hi = np.take_along_axis(ordered, (np.maximum(count, 1) // 2)[None], axis=0)[0]
    return np.where(count > 0, np.where(count % 2 == 1, lo, (lo + hi) / 2), np.nan)


@dataclass(frozen=True)
class Calendar:
    """The site's local calendar as the seasonal base needs it: zone and holidays
    (a ``[site] holidays`` value: ISO dates or a country code; empty: none)."""

    timezone: str = "UTC"
    holidays: str = ""

    @property
    def plain(self) -> bool:
        """UTC without holidays: like hours are plain 168-hour lags."""
        return self.timezone == "UTC" and not self.holidays

    def lags(self, start: int, first: int, hours: int, weeks: int) -> DayLags:
        if self.plain:
            return DayLags.utc(weeks, hours, first)
        # Cached on the absolute hour range: a forecast's flow and pressure, and every
        # sensor of the site, share one computation per hour.
        lags = _local_lags(self, start + first * HOUR_S, hours, weeks)
        return DayLags(first, lags.lags)


@functools.lru_cache(maxsize=16)
def _local_lags(calendar: Calendar, start_hour: int, hours: int, weeks: int) -> DayLags:
    lags = DayLags.local(start_hour, 0, hours, weeks, ZoneInfo(calendar.timezone),
                         holiday_calendar(holidays_value(calendar.holidays)))
    lags.lags.flags.writeable = False
    return lags


UTC_CALENDAR = Calendar()


def site_calendar(timezone: str, holidays: tuple[datetime.date, ...] | str) -> Calendar:
    """The calendar of a site's ``[site] timezone`` and ``holidays``."""
    return Calendar(timezone, holidays_text(holidays))


def holidays_text(setting: tuple[datetime.date, ...] | str) -> str:
    """A ``[site] holidays`` value as text that travels in a model file's spec."""
    if isinstance(setting, str):
        return setting
    return ",".join(d.isoformat() for d in setting)


def holidays_value(text: str) -> tuple[datetime.date, ...] | str:
    """The inverse of :func:`holidays_text`: ISO dates, else a country code."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        return tuple(datetime.date.fromisoformat(p) for p in parts)
    except ValueError:
        return text.strip()


def seasonal_base(values: np.ndarray, origins: np.ndarray, weeks: int,
                  fit_hours: int = FIT_HOURS, *, median: bool = False, start: int = 0,
                  calendar: Calendar = UTC_CALENDAR, decay: float = 1.0) -> np.ndarray:
    """Seasonal-naive forecasts (one row of 168 hours per origin) from hourly ``values``.

    The base of hour ``t`` is the mean of its like hour (:class:`DayLags`: the
    same local hour on the same kind of day) in the last ``weeks`` weeks
    (with ``median``, their median), from values before the origin only.
    ``start`` is the epoch second of ``values[0]``; ``calendar`` the site's zone
    and holidays (UTC without holidays by default: plain 168-hour lags).
    Combining weeks removes noise but lags a drifting level by half the span
    (the annual season moves the weekly pattern by more than the noise), so
    with ``fit_hours`` > 0 the base is adapted: over the last ``fit_hours``
    before the origin the actual values are regressed on
    their own base, ``value - base = a + g * (base - mean)``, and the same level
    shift ``a`` and amplitude change ``g`` are applied to the forecast. A weekly
    pattern of the form ``A + s(t) * B(hour of week)``, as a season makes of
    flow and of pressure, is then followed without lag. With too little to fit,
    or ``fit_hours=0``, the plain mean (median) is used. An origin is an index into
    ``values`` (the forecast's first hour); only values before it are used. With
    ``decay`` < 1 the mean weighs the k-th week back by ``decay ** (k-1)``: many
    weeks cut the noise, the recent ones count most.
    """
    origins = np.asarray(origins, dtype=np.int64)
    if origins.size == 0:
        return np.empty((0, HORIZON_HOURS))
    first = int(origins.min()) - fit_hours
    hours = int(origins.max()) + HORIZON_HOURS - first
    lags = calendar.lags(start, first, hours, weeks)
    target = origins[:, None] + np.arange(HORIZON_HOURS)[None, :]
    base = _combine(values, _sources(target, lags), median, origins[:, None, None], decay)
    if fit_hours <= 0:
        return base
    fit = origins[:, None] - fit_hours + np.arange(fit_hours)[None, :]
    own = _combine(values, _sources(fit, lags), median, decay=decay)
    shift, gain, centre = _fit_level(_take(values, fit), own, fit_hours)
    return base + shift[:, None] + gain[:, None] * (base - centre[:, None])


def _fit_level(actual: np.ndarray, base: np.ndarray,
               fit_hours: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise least squares of ``actual - base`` on ``base - mean(base)``: (a, g, mean)."""
    ok = np.isfinite(actual) & np.isfinite(base)
    count = ok.sum(axis=1)
    n = np.maximum(count, 1)
    b = np.where(ok, base, 0.0)
    centre = b.sum(axis=1) / n
    x = np.where(ok, base - centre[:, None], 0.0)
    y = np.where(ok, actual - base, 0.0)
    shift = y.sum(axis=1) / n
    sxx = (x * x).sum(axis=1)
    sxy = (x * (y - shift[:, None])).sum(axis=1)
    spread = np.abs(b).sum(axis=1) / n
    # A flat base has no amplitude to scale; a wild gain is a fault, not a season.
    flat = sxx <= (1e-9 * np.maximum(spread, 1e-12)) ** 2 * n
    gain = np.where(flat, 0.0, sxy / np.where(flat, 1.0, sxx))
    gain = np.clip(gain, -GAIN_LIMIT, GAIN_LIMIT)
    enough = count >= max(1, fit_hours // 4)
    return np.where(enough, shift, 0.0), np.where(enough, gain, 0.0), centre


def naive_forecast(sensor: SensorId, history: HourlySeries, issued: EpochSeconds,
                   weeks: int = NAIVE_WEEKS, adapt: bool = True,
                   calendar: Calendar = UTC_CALENDAR) -> Forecast:
    """Seasonal-naive forecast: each hour is the median of its like hour in the last ``weeks`` weeks.

    Like hours follow the site's ``calendar`` (local time, holidays: see
    :class:`DayLags`). With ``adapt`` the median is adapted to the level and
    amplitude of the last week (see :func:`seasonal_base`), which keeps it from
    lagging a season. Only history before ``issued`` is used. An hour without
    any like value is NaN (no basis: :meth:`Forecast.expected_at` gives None
    there and PREDICT stays quiet), so in a site's first week only the hours
    already seen a week earlier are forecast. P10/P90 come from the same
    forecast's errors over the last weeks (:func:`hourly_band`).
    """
    fit_hours = FIT_HOURS if adapt else 0
    hours = naive_history_hours(weeks, adapt)
    since = issued - hours * HOUR_S
    out: dict[str, Any] = {}
    for name in ("flow", "pressure"):
        values = history.window(name, since, hours)
        rows = seasonal_base(values, _band_origins(hours), weeks, fit_hours, median=True,
                             start=since, calendar=calendar)
        out[name] = rows[0]
        out[f"{name}_p10"], out[f"{name}_p90"] = hourly_band(rows[0], rows[1:], values)
    return Forecast(sensor, issued, source="naive", **out)


def naive_history_hours(weeks: int = NAIVE_WEEKS, adapt: bool = True) -> int:
    """Hours of history before the issue time that :func:`naive_forecast` uses:
    its base's, and the recent forecasts' that set the band."""
    return weeks * WEEK_HOURS + (FIT_HOURS if adapt else 0) + BAND_HOURS


# ---------------------------------------------------------------------------
# Hourly bands

BAND_DAYS = 14  # recent forecasts (one a day) whose errors set the band
BAND_HOURS = HORIZON_HOURS + 24 * (BAND_DAYS - 1)
BAND_MIN_ERRORS = 48
BAND_WIDEN = 1.2  # calibrated on the rolling origins of bench/forecast_eval.py (80 %)
BAND_FLOOR = 0.1  # of the mean forecast: a night hour's scale is not zero


def _band_origins(hours: int) -> np.ndarray:
    """The forecast itself (origin ``hours``: the end of the history) first, then the
    past ones whose whole horizon lies in the history, newest first."""
    return np.concatenate([[hours], hours - HORIZON_HOURS - 24 * np.arange(BAND_DAYS)])


def _band_scale(rows: np.ndarray) -> np.ndarray:
    """Per hour, what an error is measured against: the forecast's own size (flow
    errors grow with demand), floored at a share of the row's mean."""
    size = np.abs(rows)
    known = np.isfinite(size)
    mean = np.where(known, size, 0.0).sum(axis=-1) / np.maximum(known.sum(axis=-1), 1)
    return np.maximum(size, BAND_FLOOR * mean[..., None])


def hourly_band(forecast: np.ndarray, past: np.ndarray,
                values: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """P10 and P90 around ``forecast`` (168 hours) from the errors of ``past``
    forecasts of the same kind (rows issued at :func:`_band_origins`' origins
    1.., 168 hours each) against ``values`` (the history, ending at the issue).

    Errors relative to each hour's scale (:func:`_band_scale`) are pooled and
    their 10th and 90th percentiles (widened by ``BAND_WIDEN``) applied to the
    forecast's own scale; (None, None) with too few known errors.
    """
    origins = _band_origins(values.shape[0])[1:]
    truth = _take(values, origins[:, None] + np.arange(HORIZON_HOURS)[None, :])
    errors = (truth - past) / _band_scale(past)
    errors = errors[np.isfinite(errors)]
    if errors.size < BAND_MIN_ERRORS:
        return None, None
    q10, q90 = np.quantile(errors, [0.1, 0.9]) * BAND_WIDEN
    scale = _band_scale(forecast)
    return forecast + q10 * scale, forecast + q90 * scale


# ---------------------------------------------------------------------------
# Exported model


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """How a model's input is built from hourly values; travels with the model."""

    quantity: str
    lookback_hours: int = 336
    step_hours: int = 24
    base_weeks: int = 3
    fit_hours: int = FIT_HOURS
    timezone: str = "UTC"
    holidays: str = ""  # [site] holidays as text (holidays_text); files before it have none
    base_decay: float = 1.0  # weight of the k-th week back: decay ** (k-1); older files: 1

    def __post_init__(self) -> None:
        if self.step_hours < 1 or self.lookback_hours % self.step_hours:
            raise ValueError(f"lookback {self.lookback_hours} h is not a multiple of "
                             f"step {self.step_hours} h")
        if self.lookback_hours < self.step_hours or self.base_weeks < 1 or self.fit_hours < 0:
            raise ValueError("lookback must hold one step, base_weeks be >= 1, fit_hours >= 0")

    @property
    def steps(self) -> int:
        return self.lookback_hours // self.step_hours

    @property
    def features(self) -> int:
        """Per step: its hourly values, their missing share, 5 calendar features."""
        return self.step_hours + 1 + 5

    @property
    def history_hours(self) -> int:
        """Hours before the issue time a forecast reads: the lookback or the base's
        (its fit window and the weeks its means reach back), whichever is longer."""
        return max(self.lookback_hours, self.fit_hours + self.base_weeks * WEEK_HOURS)

    @property
    def calendar(self) -> Calendar:
        return Calendar(self.timezone, self.holidays)


@dataclass(frozen=True, slots=True)
class Scaler:
    """Input values are ``(x - x_mean) / x_scale``; outputs are residuals / ``y_scale``."""

    x_mean: float
    x_scale: float
    y_scale: float


@dataclass(eq=False)
class ExportedModel:
    """A trained LSTM(units) -> Dense(168) as plain arrays, with what it needs to run.

    ``kernel`` (features, 4u), ``recurrent_kernel`` (u, 4u) and ``bias`` (4u) are
    Keras' LSTM weights, gates in Keras' order i, f, c, o; ``dense_kernel``
    (u, 168) and ``dense_bias`` (168) the head.
    """

    spec: FeatureSpec
    scaler: Scaler
    kernel: np.ndarray
    recurrent_kernel: np.ndarray
    bias: np.ndarray
    dense_kernel: np.ndarray
    dense_bias: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        u = self.kernel.shape[1] // 4
        shapes = {
            "kernel": (self.spec.features, 4 * u), "recurrent_kernel": (u, 4 * u), "bias": (4 * u,),
            "dense_kernel": (u, HORIZON_HOURS), "dense_bias": (HORIZON_HOURS,),
        }
        for name, shape in shapes.items():
            array = np.asarray(getattr(self, name), dtype=np.float64)
            if array.shape != shape:
                raise ValueError(f"{name} has shape {array.shape}, expected {shape}")
            setattr(self, name, array)

    @property
    def units(self) -> int:
        return int(self.recurrent_kernel.shape[0])

    @property
    def version(self) -> str | None:
        v = self.metadata.get("version")
        return None if v is None else str(v)

    @property
    def residual_band(self) -> float | None:
        v = self.metadata.get("residual_band")
        return None if v is None else float(v)

    def save(self, path: Path | str) -> None:
        """Write one ``.npz`` atomically (temporary file in the same directory, then rename)."""
        path = Path(path)
        header = {
            "format": EXPORT_FORMAT,
            "spec": {k: getattr(self.spec, k) for k in FeatureSpec.__slots__},
            "scaler": {k: getattr(self.scaler, k) for k in Scaler.__slots__},
            "metadata": self.metadata,
        }
        buffer = io.BytesIO()
        np.savez(buffer, header=np.array(json.dumps(header)), kernel=self.kernel,
                 recurrent_kernel=self.recurrent_kernel, bias=self.bias,
                 dense_kernel=self.dense_kernel, dense_bias=self.dense_bias)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(buffer.getvalue())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path | str) -> ExportedModel:
        """Read a model written by :meth:`save`; ValueError when the file is not one."""
        try:
            with np.load(Path(path), allow_pickle=False) as z:
                header = json.loads(str(z["header"]))
                arrays = {k: np.array(z[k]) for k in
                          ("kernel", "recurrent_kernel", "bias", "dense_kernel", "dense_bias")}
        except (KeyError, json.JSONDecodeError, EOFError) as exc:
            raise ValueError(f"{path}: not an exported model ({exc!r})") from exc
        if header.get("format") != EXPORT_FORMAT:
            raise ValueError(f"{path}: unsupported model format {header.get('format')!r}")
        try:
            return cls(FeatureSpec(**header["spec"]), Scaler(**header["scaler"]),
                       metadata=dict(header.get("metadata") or {}), **arrays)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path}: bad model header ({exc!r})") from exc

    def predict_scaled(self, x: np.ndarray) -> np.ndarray:
        """Forward pass on features ``(batch, steps, features)``: scaled residuals (batch, 168)."""
        u = self.units
        batch = x.shape[0]
        h = np.zeros((batch, u))
        c = np.zeros((batch, u))
        # The input projection of every step at once; only the recurrence is sequential.
        projected = x @ self.kernel + self.bias
        for t in range(x.shape[1]):
            z = projected[:, t, :] + h @ self.recurrent_kernel
            i = _sigmoid(z[:, :u])
            f = _sigmoid(z[:, u:2 * u])
            g = np.tanh(z[:, 2 * u:3 * u])
            o = _sigmoid(z[:, 3 * u:])
            c = f * c + i * g
            h = o * np.tanh(c)
        return h @ self.dense_kernel + self.dense_bias


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * z) + 1.0)  # exact logistic, no overflow warnings


# ---------------------------------------------------------------------------
# Features (shared by training and inference)


def local_calendar(times: np.ndarray, tz: ZoneInfo) -> np.ndarray:
    """Calendar features of UTC hour starts: (n, 5) = hour sin/cos, weekday sin/cos, weekend."""
    times = np.asarray(times, dtype=np.int64)
    local = local_seconds(times, tz)
    hour = (local % 86400) / 3600.0
    day = ((local // 86400) + _EPOCH_WEEKDAY) % 7  # Monday = 0
    week_pos = (day + hour / 24.0) / 7.0
    return np.stack([
        np.sin(2 * np.pi * hour / 24.0), np.cos(2 * np.pi * hour / 24.0),
        np.sin(2 * np.pi * week_pos), np.cos(2 * np.pi * week_pos),
        (day >= 5).astype(np.float64),
    ], axis=-1)


def window_features(values: np.ndarray, start: int, origins: np.ndarray, spec: FeatureSpec,
                    scaler: Scaler) -> np.ndarray:
    """Model inputs ``(len(origins), steps, features)`` float32 for forecasts issued at ``origins``.

    ``values`` are hourly from epoch second ``start``; an origin is an index into
    them (the forecast's first hour). Missing hours, including those before the
    start, enter as 0 (the scaled mean) and raise the step's missing share.
    """
    # Deviations from the weekly means were tried as a further input: they only
    # added noise the network fitted (worse validation), the base covers them.
    origins = np.asarray(origins, dtype=np.int64)
    lookback, step = spec.lookback_hours, spec.step_hours
    # Window hour j of origin r is values[origins[r] - lookback + j].
    idx = origins[:, None] - lookback + np.arange(lookback)[None, :]
    current = _take(values, idx)
    x = (current - scaler.x_mean) / scaler.x_scale
    missing = ~np.isfinite(current)
    n = origins.shape[0]
    x = np.where(missing, 0.0, x).reshape(n, spec.steps, step)
    share = missing.reshape(n, spec.steps, step).mean(axis=2, keepdims=True)
    step_starts = start + HOUR_S * idx[:, ::step]
    calendar = local_calendar(step_starts.ravel(), ZoneInfo(spec.timezone))
    calendar = calendar.reshape(n, spec.steps, 5)
    return np.concatenate([x, share, calendar], axis=2).astype(np.float32)


def _take(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    n = values.shape[0]
    inside = (idx >= 0) & (idx < n)
    if n == 0:
        return np.full(idx.shape, np.nan)
    return np.where(inside, values[np.clip(idx, 0, n - 1)], np.nan)


def model_base(spec: FeatureSpec, values: np.ndarray, start: int,
               origins: np.ndarray) -> np.ndarray:
    """The seasonal base a model of ``spec`` adds its residual to (training and inference)."""
    return seasonal_base(values, origins, spec.base_weeks, spec.fit_hours, start=start,
                         calendar=spec.calendar, decay=spec.base_decay)


def model_values(model: ExportedModel, values: np.ndarray, start: int,
                 origins: np.ndarray) -> np.ndarray:
    """Forecasts (len(origins), 168) of one quantity: base + model residual, NaN-safe.

    Where the seasonal base is unknown the residual alone cannot be placed, so
    the hour falls back on the scaled mean plus residual (rare: under a week of
    history).
    """
    x = window_features(values, start, origins, model.spec, model.scaler)
    residual = model.predict_scaled(x.astype(np.float64)) * model.scaler.y_scale
    base = model_base(model.spec, values, start, origins)
    return np.where(np.isfinite(base), base, model.scaler.x_mean) + residual


def lstm_forecast(model_flow: ExportedModel | None, model_pressure: ExportedModel | None,
                  sensor: SensorId, history: HourlySeries, issued: EpochSeconds) -> Forecast:
    """The next 168 hours from the exported models, using history before ``issued``.

    A quantity without a model, or without any data in its model's lookback
    (a sensor that measures no pressure), is left unknown (NaN, no band).
    Raises ValueError when neither quantity can be forecast (the caller then
    falls back on :func:`naive_forecast`). P10/P90 come from the same model's
    errors over the last weeks (:func:`hourly_band`).
    """
    out: dict[str, Any] = {"flow": np.full(HORIZON_HOURS, np.nan),
                           "pressure": np.full(HORIZON_HOURS, np.nan)}
    for name, model in (("flow", model_flow), ("pressure", model_pressure)):
        if model is None:
            continue
        if model.spec.quantity != name:
            raise ValueError(f"model for {model.spec.quantity!r} given as the {name} model")
        hours = model.spec.history_hours + BAND_HOURS
        since = issued - hours * HOUR_S
        values = history.window(name, since, hours)
        if not np.isfinite(values[-model.spec.lookback_hours:]).any():
            continue
        rows = model_values(model, values, since, _band_origins(hours))
        out[name] = rows[0]
        out[f"{name}_p10"], out[f"{name}_p90"] = hourly_band(rows[0], rows[1:], values)
    if not (np.isfinite(out["flow"]).any() or np.isfinite(out["pressure"]).any()):
        raise ValueError(f"sensor {sensor}: no data in the models' lookback")
    versions = [m.version for m in (model_flow, model_pressure) if m is not None]
    return Forecast(
        sensor, issued, source="lstm", model_version=versions[0] if versions else None,
        flow_band=model_flow.residual_band if model_flow else None,
        pressure_band=model_pressure.residual_band if model_pressure else None, **out,
    )


def history_hours(*models: ExportedModel | None, weeks: int = NAIVE_WEEKS) -> int:
    """Hours of history before the issue time that a forecast reads: the seasonal-naive
    one of ``weeks`` weeks and, when given, the ``models``' (bands included)."""
    return max([naive_history_hours(weeks)]
               + [m.spec.history_hours + BAND_HOURS for m in models if m is not None])
