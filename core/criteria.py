"""Detection criteria: what "normal" looks like for each sensor, learned from history.

The criteria of a sensor hold, per quantity (flow, pressure):

* a band per time-of-day slot (48 slots: local hours 0-23 on weekdays, then
  local hours 0-23 on Saturdays and Sundays) that the VALUE method judges against;
* the physical range in force when the criteria were built (detection never
  lets criteria widen the configured range, only tighten it);
* a default residual band for PREDICT, used until a trained model brings its own;

and for flow, the minimum-night-flow (MNF) baseline and the excess over it that
the NIGHT method tolerates.

Statistics are robust on purpose: the history a site ships or accumulates
contains past bursts, sensor faults and leaks, and a mean/standard-deviation band
would be widened by exactly the events it is meant to catch. Every slot uses
medians and the MAD (scaled to a standard deviation), so a few percent of wild
readings barely move it: the slot's shape is the curve through the medians of
its 10-minute parts (an hour at the morning ramp is not flat), continued to the
hour's edges, and the band is that shape's range widened by ``BAND_K`` robust
sigmas of the readings around it, never less than a relative floor. PREDICT's
residual band and the MNF baseline are then learned from the readings inside
those bands only, so that past excursions do not widen them either. With
``BAND_K = 5`` and persist_minutes=3, the built-in simulator's clean data gave
no false VALUE alarm in 12 sensor-weeks, while one-hour excursions of +-50 %
were caught (checked by ``bench/make_initial_data.py --check``; over 120
sensor-weeks by ``bench/detect_eval.py``).

PREDICT's default band is learned against what it will judge: the service's
seasonal-naive forecast (hourly values, so it cuts the corners of sharp
peaks at the same minutes every day). It is the largest systematic error of
any slot plus ``RESIDUAL_K`` robust sigmas of noise (:func:`predict_band`), so
the naive forecast does not raise PREDICT daily at the morning ramp; a trained
model brings a tighter band of its own.

Criteria are built first from ``initial_data`` (a CSV shipped with the site
config, see :func:`read_initial_data`) and later from the store
(:func:`rebuild_reason` says when). They are versioned and serialise to a plain
dict (:meth:`SensorCriteria.to_record`) that an operator can read and edit.

Only :func:`read_initial_data` does I/O (it reads the history file); the rest
is pure computation.
"""

from __future__ import annotations

import csv
import datetime
import functools
import math
import os
import string
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from core._codec import Codec, Recorded, declared
from core.forecast import NAIVE_WEEKS, weekly_medians
from core.localtime import group_medians, local_datetime, local_seconds
from core.types import (
    STATUS_FLOW_FAULT,
    STATUS_PRESSURE_FAULT,
    EpochSeconds,
    SensorId,
    sensor_id,
)

SLOTS_PER_DAY = 24
SLOTS = 2 * SLOTS_PER_DAY
HOUR_S = 3600
DAY_S = 86400
WEEK_HOURS = 168
BLOCK_S = 600  # the 10-minute block of the MNF definition

FORMAT_VERSION = 1
SOURCES = ("initial_data", "store")

# Scale from the median absolute deviation to a normal standard deviation.
MAD_TO_SIGMA = 1.4826
# Band widening in robust sigmas of the readings around the slot's shape. Tuned
# on the built-in simulator (bench/make_initial_data.py --check): with
# persist_minutes=3 no false VALUE alarm on clean data, +-50 % caught. Lower k
# would still be quiet on the simulator's Gaussian noise, but real meters have
# heavier tails and correlated noise: the margin is deliberate.
BAND_K = 5.0
# A slot's half-width is at least this fraction of its median: a quiet slot
# (night pressure, say) must not give a razor-thin band that alarms on sensor noise.
BAND_REL_FLOOR = 0.08
# ... and at least this fraction of the quantity's typical level, so that a slot
# whose median is near zero (no night consumption) still has a usable band.
BAND_LEVEL_FLOOR = 0.03
# A slot needs this many clean readings; with fewer it borrows the same hour of
# the other day type (weekday <-> weekend), and failing that the whole day.
MIN_SLOT_SAMPLES = 10
# The within-hour shape of a slot is taken per part of this length ...
PART_S = 600
# ... from the parts with at least this many readings.
MIN_PART_SAMPLES = 3
# PREDICT's default band: this many robust sigmas of the seasonal-naive error.
RESIDUAL_K = 4.0
# Fewer residuals than this give no band (criteria fall back on the VALUE bands' width).
MIN_RESIDUAL_PAIRS = 50
# NIGHT: allowed excess = max(MNF_K * robust sigma of nightly MNF, MNF_REL_FLOOR * baseline).
MNF_K = 3.0
MNF_REL_FLOOR = 0.05
MIN_NIGHTS = 3
# A night counts when at least this fraction of its 10-minute blocks has data.
MIN_NIGHT_COVERAGE = 0.5

# Learning a quantity ignores every reading with a status bit except the other
# quantity's fault bit: a sample taken while the station was losing power, being
# opened or running on a weak battery is not "normal" history.
_OTHER_QUANTITY_FAULT = {"flow": STATUS_PRESSURE_FAULT, "pressure": STATUS_FLOW_FAULT}


class InitialDataError(ValueError):
    """The initial-data file cannot be used; the message is ``file:line: what``."""


class CriteriaError(ValueError):
    """A criteria document that does not describe valid criteria."""


@dataclass(frozen=True, slots=True)
class Band:
    """Inclusive range ``[low, high]`` of normal values for one slot."""

    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True, slots=True)
class PhysicalRange:
    """The configured physical range of each quantity (outside = sensor fault)."""

    flow_min: float
    flow_max: float
    pressure_min: float
    pressure_max: float

    def of(self, quantity: str) -> tuple[float, float]:
        if quantity == "flow":
            return self.flow_min, self.flow_max
        return self.pressure_min, self.pressure_max


@functools.lru_cache(maxsize=8192)
def _slot_of_quarter(quarter: int, tz: ZoneInfo) -> int:
    # Every UTC offset in use is a multiple of 15 minutes, so all seconds of one
    # UTC quarter-hour share one local hour and weekday: cache per quarter.
    local = local_datetime(quarter * 900, tz)
    return local.hour + (SLOTS_PER_DAY if local.weekday() >= 5 else 0)


def slot_of(t: EpochSeconds | int, tz: ZoneInfo) -> int:
    """The time-of-day slot (0..47) of ``t``: local hour, +24 on Saturday/Sunday."""
    return _slot_of_quarter(int(t) // 900, tz)


def slots_of(time: np.ndarray, tz: ZoneInfo) -> np.ndarray:
    """Vectorised :func:`slot_of`."""
    return _slots_of_local(local_seconds(time, tz))


def _slots_of_local(local: np.ndarray) -> np.ndarray:
    """Slots from local wall-clock seconds since 1970-01-01 (a Thursday)."""
    weekday = (local // DAY_S + 3) % 7  # Monday = 0
    hour = (local % DAY_S) // 3600
    return hour + np.where(weekday >= 5, SLOTS_PER_DAY, 0)


def _dump_bands(bands: tuple[Band, ...]) -> dict[str, list[list[float]]]:
    # Keyed by day type, one [low, high] per local hour: an operator reads
    # "weekday hour 7" straight off the exported file.
    return {
        "weekday": [[b.low, b.high] for b in bands[:SLOTS_PER_DAY]],
        "weekend": [[b.low, b.high] for b in bands[SLOTS_PER_DAY:]],
    }


def _load_bands(document: Any) -> tuple[Band, ...]:
    bands: list[Band] = []
    for day_type in ("weekday", "weekend"):
        rows = document[day_type]
        if len(rows) != SLOTS_PER_DAY:
            raise CriteriaError(f"bands.{day_type}: need {SLOTS_PER_DAY} [low, high]")
        for low, high in rows:
            bands.append(_band(low, high))
    return tuple(bands)


@declared(codecs={"bands": Codec(_dump_bands, _load_bands)},
          order=("physical_min", "physical_max", "residual_band", "bands"),
          error=CriteriaError, what="quantity criteria")
@dataclass(frozen=True)
class QuantityCriteria(Recorded):
    """What is normal for one quantity of one sensor."""

    bands: tuple[Band, ...]
    physical_min: float
    physical_max: float
    residual_band: float

    def __post_init__(self) -> None:
        if len(self.bands) != SLOTS:
            raise CriteriaError(f"need {SLOTS} bands, got {len(self.bands)}")

    def band_for(self, t: EpochSeconds | int, tz: ZoneInfo) -> Band:
        """The band of the slot that ``t`` falls in (local time of ``tz``)."""
        return self.bands[slot_of(t, tz)]



def _band(low: Any, high: Any) -> Band:
    lo, hi = float(low), float(high)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise CriteriaError(f"bad band [{low}, {high}]")
    return Band(lo, hi)


def _source(text: Any) -> str:
    source = str(text)
    if source not in SOURCES:
        raise CriteriaError(f"unknown criteria source {source!r}")
    return source


# A quantity without criteria is None (or, as an operator may write it, empty).
_QUANTITY = Codec(QuantityCriteria.to_record,
                  lambda d: QuantityCriteria.from_record(d) if d else None)


@declared(codecs={"source": Codec(str, _source), "flow": _QUANTITY, "pressure": _QUANTITY},
          constants={"format": FORMAT_VERSION}, error=CriteriaError,
          what="criteria document")
@dataclass(frozen=True)
class SensorCriteria(Recorded):
    """One version of one sensor's criteria, with where and when it came from.

    Its document (:meth:`to_record`, raising :class:`CriteriaError` when read
    back from a bad one) is what ``export criteria`` shows and an operator may edit.
    """

    sensor: SensorId
    version: int
    source: str
    built_at: EpochSeconds
    data_since: EpochSeconds
    data_until: EpochSeconds
    days: float
    flow: QuantityCriteria | None
    pressure: QuantityCriteria | None
    mnf_baseline: float | None
    mnf_allowed_excess: float | None

    def quantity(self, name: str) -> QuantityCriteria | None:
        """The criteria of ``"flow"`` or ``"pressure"``."""
        return self.flow if name == "flow" else self.pressure


# -- building -------------------------------------------------------------------


def build_criteria(
    sensor: SensorId,
    time: np.ndarray,
    flow: np.ndarray,
    pressure: np.ndarray,
    status: np.ndarray,
    *,
    tz: ZoneInfo,
    version: int,
    source: str,
    physical: PhysicalRange,
    night_start: datetime.time,
    night_end: datetime.time,
    min_days: float = 7.0,
) -> SensorCriteria | None:
    """Learn a sensor's criteria from its history (any resolution, any order).

    ``flow``/``pressure`` use NaN for a missing value. Readings with any status
    bit except the other quantity's fault bit, missing values and values outside
    ``physical`` are left out. Returns None when the usable history spans fewer
    than ``min_days`` days or neither quantity has enough clean readings.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown criteria source {source!r}")
    t = np.asarray(time, dtype=np.int64)
    order = np.argsort(t, kind="stable")
    t = t[order]
    # One reading per time (the first, as the store keeps it).
    first = np.diff(t, prepend=t[:1] - 1) != 0
    order, t = order[first], t[first]
    st = np.asarray(status, dtype=np.int64)[order]
    values = {
        "flow": np.asarray(flow, dtype=np.float64)[order],
        "pressure": np.asarray(pressure, dtype=np.float64)[order],
    }
    clean = {q: _clean_mask(q, values[q], st, physical) for q in values}
    any_clean = clean["flow"] | clean["pressure"]
    if not any_clean.any():
        return None
    since, until = int(t[any_clean][0]), int(t[any_clean][-1])
    days = (until - since) / DAY_S
    if days < min_days:
        return None
    local = local_seconds(t, tz)
    slots = _slots_of_local(local)
    seconds = local % 3600
    built = {
        q: _quantity_criteria(
            t[clean[q]], values[q][clean[q]], slots[clean[q]], seconds[clean[q]], physical.of(q),
            tz,
        )
        for q in values
    }
    if built["flow"] is None and built["pressure"] is None:
        return None
    baseline, allowed = (None, None)
    if built["flow"] is not None:
        # Nights are judged from in-band flow only: an excursion or a spike at
        # night is an event, not the night's minimum, and would widen the allowance.
        normal = clean["flow"].copy()
        normal[normal] = _within_bands(built["flow"].bands, slots[normal], values["flow"][normal])
        baseline, allowed = _mnf_baseline(
            t[normal], values["flow"][normal], tz, night_start, night_end
        )
    return SensorCriteria(
        sensor=sensor, version=version, source=source, built_at=EpochSeconds(until),
        data_since=EpochSeconds(since), data_until=EpochSeconds(until), days=days,
        flow=built["flow"], pressure=built["pressure"],
        mnf_baseline=baseline, mnf_allowed_excess=allowed,
    )


def _clean_mask(
    quantity: str, v: np.ndarray, status: np.ndarray, physical: PhysicalRange
) -> np.ndarray:
    lo, hi = physical.of(quantity)
    usable_status = (status & ~_OTHER_QUANTITY_FAULT[quantity]) == 0
    with np.errstate(invalid="ignore"):
        return usable_status & np.isfinite(v) & (v >= lo) & (v <= hi)


def robust_sigma(x: np.ndarray) -> float:
    """Scaled MAD: a standard deviation that a few wild values do not inflate."""
    if x.size == 0:
        return 0.0
    med = np.median(x)
    return float(MAD_TO_SIGMA * np.median(np.abs(x - med)))


def _quantity_criteria(
    t: np.ndarray, v: np.ndarray, slots: np.ndarray, seconds: np.ndarray,
    physical: tuple[float, float], tz: ZoneInfo,
) -> QuantityCriteria | None:
    if v.size < MIN_SLOT_SAMPLES:
        return None
    level = float(np.median(np.abs(v)))
    bands: list[Band] = []
    for s in range(SLOTS):
        for source in (s, (s + SLOTS_PER_DAY) % SLOTS):
            mine = slots == source
            if np.count_nonzero(mine) >= MIN_SLOT_SAMPLES:
                bands.append(_slot_band(v[mine], seconds[mine], level))
                break
        else:
            # Not even the twin hour has data: the whole day's spread, no shape.
            bands.append(_slot_band(v, np.zeros(v.size, dtype=np.int64), level))
    # PREDICT's band is learned from in-band readings only: the seasonal-naive
    # expectation combines past weeks (a median, but of two weeks that is their
    # mean), so an excursion in the history could come back in the expectation
    # of the next weeks, and in a weekend slot (few days) those echoes would
    # outvote the medians of predict_band.
    normal = _within_bands(bands, slots, v)
    return QuantityCriteria(
        bands=tuple(bands), physical_min=physical[0], physical_max=physical[1],
        residual_band=_residual_band(t[normal], v[normal], bands, tz),
    )


def _slot_band(samples: np.ndarray, seconds: np.ndarray, level: float) -> Band:
    """Band of one hour slot from its samples and their local second of the hour.

    An hour is not flat: at the morning ramp the flow may double within it. A
    band of median +- k MAD over the whole hour would treat that ramp as noise
    and grow wider than the excursions it must catch. So the hour's shape is a
    curve through the medians of its 10-minute parts, the noise is the robust
    spread of the samples around that curve, and the band spans the curve's
    range widened by ``BAND_K`` sigmas of noise (or the relative floors).
    Medians and MAD throughout: a few percent of outliers move none of them.
    """
    parts = seconds // PART_S
    centres: list[float] = []
    medians: list[float] = []
    for part in np.unique(parts):
        mine = parts == part
        if np.count_nonzero(mine) >= MIN_PART_SAMPLES:
            centres.append(float(np.median(seconds[mine])))
            medians.append(float(np.median(samples[mine])))
    if not centres:  # too thin to have a shape: flat
        centres, medians = [0.0], [float(np.median(samples))]
    shape = _hour_curve(seconds, centres, medians)
    # The curve's range over the whole hour: a part's median sits at its middle
    # (at :50 for 10-minute data), and a ramp goes on rising to the hour's end.
    edges = _hour_curve(np.array([0.0, float(HOUR_S)]), centres, medians)
    extent = [*medians, *edges.tolist()]
    med = float(np.median(samples))
    widen = max(
        BAND_K * robust_sigma(samples - shape),
        BAND_REL_FLOOR * abs(med),
        BAND_LEVEL_FLOOR * level,
    )
    if widen == 0.0:
        # Constant history (e.g. a meter that read exactly 0 throughout): allow
        # a minimal band rather than alarming on the first 0.01 of change.
        widen = 1e-6 + 1e-6 * abs(med)
    return Band(min(extent) - widen, max(extent) + widen)


def _hour_curve(at: np.ndarray, centres: list[float], medians: list[float]) -> np.ndarray:
    """The hour's shape at seconds ``at``: linear through ``(centre, median)`` points
    (centres ascending), continued along the outer segments' slopes beyond them."""
    c, m = np.asarray(centres), np.asarray(medians)
    curve = np.interp(at, c, m)
    if c.size < 2:
        return curve
    first = m[0] + (m[1] - m[0]) / (c[1] - c[0]) * (at - c[0])
    last = m[-1] + (m[-1] - m[-2]) / (c[-1] - c[-2]) * (at - c[-1])
    return np.where(at < c[0], first, np.where(at > c[-1], last, curve))


def _within_bands(bands: tuple[Band, ...] | list[Band], slots: np.ndarray,
                  v: np.ndarray) -> np.ndarray:
    """Which readings lie inside the band of their slot."""
    low = np.array([b.low for b in bands])[slots]
    high = np.array([b.high for b in bands])[slots]
    return (v >= low) & (v <= high)


def seasonal_naive_expectation(t: np.ndarray, v: np.ndarray) -> np.ndarray:
    """What the service's seasonal-naive forecast expects at each reading (NaN: nothing).

    As in service (``core.forecast``): the forecast of an hour is the median of
    the same hour in the last ``NAIVE_WEEKS`` weeks (:func:`core.forecast.weekly_medians`),
    and the minute expectation holds the hour's value until its middle, then
    moves linearly toward the next hour's. One difference on purpose: each past
    hour is its median, not its mean, so that outliers in the history do not
    leak into the band learned from it. ``t`` must be sorted.
    """
    hour = t // HOUR_S
    index = hour - hour[0]
    n = int(index[-1]) + 2  # one hour beyond the last, for the interpolation
    hourly = group_medians(index, v, n)
    naive = weekly_medians(hourly, NAIVE_WEEKS)[:n]
    frac = np.clip(((t % HOUR_S) - HOUR_S / 2) / HOUR_S, 0.0, None)
    return naive[index] * (1.0 - frac) + naive[index + 1] * frac


def predict_band(time: np.ndarray, residual: np.ndarray, tz: ZoneInfo) -> float | None:
    """The band PREDICT needs around a forecast with these residuals (None: too few).

    ``residual`` is measured minus expected per reading (NaN: none). A forecast's
    error is not just noise: hourly values cut the corners of the morning ramp
    and the evening peak, at the same minutes every day. One robust sigma over
    all readings ignores those minutes and PREDICT would fire there daily. So per
    slot and 10-minute part the error's median (its systematic part) is taken,
    and the band is the largest systematic error plus ``RESIDUAL_K`` robust
    sigmas of the rest (the noise) of that slot. Medians and MAD: a few percent
    of outliers move it little.
    """
    t = np.asarray(time, dtype=np.int64)
    r = np.asarray(residual, dtype=np.float64)
    ok = np.isfinite(r)
    if np.count_nonzero(ok) < MIN_RESIDUAL_PAIRS:
        return None
    t, r = t[ok], r[ok]
    local = local_seconds(t, tz)
    slots, parts = _slots_of_local(local), (local % 3600) // PART_S
    widest = 0.0
    for s in range(SLOTS):
        mine = slots == s
        if np.count_nonzero(mine) < MIN_SLOT_SAMPLES:
            continue
        rs, ps = r[mine], parts[mine]
        systematic = np.zeros(rs.size)
        for part in np.unique(ps):
            here = ps == part
            if np.count_nonzero(here) >= MIN_PART_SAMPLES:
                systematic[here] = np.median(rs[here])
        worst = float(np.max(np.abs(systematic)))
        widest = max(widest, worst + RESIDUAL_K * robust_sigma(rs - systematic))
    return widest if widest > 0.0 else None


def _residual_band(t: np.ndarray, v: np.ndarray, bands: list[Band], tz: ZoneInfo) -> float:
    """PREDICT's default band, against the seasonal-naive forecast of the service."""
    band = predict_band(t, v - seasonal_naive_expectation(t, v), tz)
    if band is not None:
        return band
    # Too little history for week-earlier hours: fall back on the typical band half-width.
    return float(np.median([(b.high - b.low) / 2 for b in bands]))


def _seconds_of_day(t: datetime.time) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


def nightly_mnf(
    time: np.ndarray,
    flow: np.ndarray,
    tz: ZoneInfo,
    night_start: datetime.time,
    night_end: datetime.time,
) -> dict[int, float]:
    """MNF per night: the lowest 10-minute mean flow inside the night window.

    ``time``/``flow`` must already be clean. Nights are keyed by the local date
    (days since 1970-01-01) on which the window starts. A 10-minute block counts
    when it holds at least half its expected readings (from the data's typical
    spacing), a night when at least half its blocks count.
    """
    if time.size == 0:
        return {}
    start_s, end_s = _seconds_of_day(night_start), _seconds_of_day(night_end)
    window_s = (end_s - start_s) % DAY_S or DAY_S
    local = local_seconds(time, tz)
    # Shift so that each night window starts at the beginning of a "night day".
    shifted = local - start_s
    in_window = (shifted % DAY_S) < window_s
    if not in_window.any():
        return {}
    spacing = float(np.median(np.diff(time))) if time.size > 1 else float(BLOCK_S)
    per_block = max(1, int(round(BLOCK_S / max(spacing, 1.0))))
    min_readings = max(1, math.ceil(per_block / 2))
    keys = np.stack([shifted[in_window] // DAY_S, local[in_window] // BLOCK_S], axis=1)
    values = np.asarray(flow, dtype=np.float64)[in_window]
    # Blocks as (night, block) groups, sorted by night: mean flow and reading count.
    blocks, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    size = np.bincount(inverse, minlength=len(blocks))
    measured = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (np.bincount(inverse, weights=np.where(measured, values, 0.0), minlength=len(blocks))
                / np.bincount(inverse, weights=measured, minlength=len(blocks)))
    kept = size >= min_readings
    if not kept.any():
        return {}
    nights, mean = blocks[kept, 0], mean[kept]
    night, starts, count = np.unique(nights, return_index=True, return_counts=True)
    lowest = np.fmin.reduceat(mean, starts)
    needed = MIN_NIGHT_COVERAGE * window_s / BLOCK_S
    return {int(n): float(m) for n, m, c in zip(night, lowest, count, strict=True) if c >= needed}


def _mnf_baseline(
    t: np.ndarray, flow: np.ndarray, tz: ZoneInfo,
    night_start: datetime.time, night_end: datetime.time,
) -> tuple[float | None, float | None]:
    mnf = np.array(list(nightly_mnf(t, flow, tz, night_start, night_end).values()))
    if mnf.size < MIN_NIGHTS:
        return None, None
    baseline = float(np.median(mnf))
    allowed = max(MNF_K * robust_sigma(mnf), MNF_REL_FLOOR * abs(baseline))
    return baseline, allowed


# -- when to rebuild ----------------------------------------------------------------


def schedule_day(first: int, newest: int) -> int:
    """The day of a sensor's history ``newest`` falls in, counted from its first
    reading: the criteria schedule is checked once per such day.

    Counted from the first reading, not by calendar day, so that the day on which
    the store reaches ``min_days`` starts exactly when it does (a check per UTC day
    ran up to a day after it).
    """
    return (newest - first) // DAY_S


def rebuild_reason(
    current: SensorCriteria | None,
    *,
    store_days: float,
    newest: EpochSeconds,
    min_days: int,
    rebuild_days: int,
) -> str | None:
    """Why the criteria should be rebuilt from the store now, or None.

    ``"first"``: the store has reached ``min_days`` of history and the sensor
    still has no criteria or only ones from the shipped initial data.
    ``"schedule"``: the current criteria were built ``rebuild_days`` or more
    (event time) before ``newest``. Nothing is due while the store holds less
    than ``min_days``: there is nothing better to build from.
    """
    if store_days < min_days:
        return None
    if current is None or current.source == "initial_data":
        return "first"
    if newest - current.built_at >= rebuild_days * DAY_S:
        return "schedule"
    return None


# -- the shipped history file ------------------------------------------------------

INITIAL_DATA_HEADER = ("sensor", "time", "flow", "pressure", "status")

InitialData = dict[SensorId, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


def read_initial_data(path: str | os.PathLike[str]) -> InitialData:
    """Read the history file shipped with the site config.

    Format (CSV, UTF-8, comma-separated)::

        sensor,time,flow,pressure,status
        001,2026-01-05T14:00:00+09:00,8.02,4.11,00
        001,2026-01-05T14:10:00+09:00,,4.12,01

    * ``sensor``: the wire id, 1-3 digits (``1`` and ``001`` are the same sensor);
    * ``time``: ISO 8601 with a UTC offset (``+09:00`` or ``Z``); a time without
      an offset is refused, since the file may be made in another time zone;
    * ``flow`` (m3/h), ``pressure`` (kgf/cm2): decimals; empty = not measured;
    * ``status``: exactly two characters are hex as on the wire (``1F``),
      anything else a decimal integer (``5``) or ``0x``-prefixed hex; empty = 0.

    Blank lines and lines starting with ``#`` are skipped. Any resolution works
    (the shipped file has one reading per 10 minutes). A repeated
    ``(sensor, time)`` keeps the first reading, as the store does.

    Returns per sensor ``(time, flow, pressure, status)`` arrays sorted by time:
    int64 epoch seconds, float64 with NaN for missing, float64, int64.
    Raises :class:`InitialDataError` (``"file:line: message"``) on the first bad line.
    """
    rows: dict[SensorId, dict[int, tuple[float, float, int]]] = {}
    name = os.fspath(path)
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            for lineno, fields in _csv_lines(fh, name):
                try:
                    sensor, t, f, p, s = _parse_row(fields)
                except ValueError as exc:
                    raise InitialDataError(f"{name}:{lineno}: {exc}") from None
                rows.setdefault(sensor, {}).setdefault(t, (f, p, s))
    except UnicodeDecodeError as exc:
        raise InitialDataError(f"{name}: not UTF-8 text ({exc.reason})") from None
    out: InitialData = {}
    for sensor, by_time in rows.items():
        times = np.array(sorted(by_time), dtype=np.int64)
        vals = [by_time[int(x)] for x in times]
        out[sensor] = (
            times,
            np.array([v[0] for v in vals], dtype=np.float64),
            np.array([v[1] for v in vals], dtype=np.float64),
            np.array([v[2] for v in vals], dtype=np.int64),
        )
    return out


def _csv_lines(fh: Any, name: str) -> Iterator[tuple[int, list[str]]]:
    """Non-blank, non-comment CSV rows after a checked header, with line numbers."""
    header_seen = False
    for lineno, line in enumerate(fh, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            fields = next(csv.reader([stripped]))
        except csv.Error as exc:
            raise InitialDataError(f"{name}:{lineno}: {exc}") from None
        fields = [f.strip() for f in fields]
        if not header_seen:
            if tuple(f.lower() for f in fields) != INITIAL_DATA_HEADER:
                raise InitialDataError(
                    f"{name}:{lineno}: header must be {','.join(INITIAL_DATA_HEADER)}, "
                    f"got {stripped[:80]!r}"
                )
            header_seen = True
            continue
        yield lineno, fields
    if not header_seen:
        raise InitialDataError(f"{name}:1: empty file (no header)")


def _parse_row(fields: list[str]) -> tuple[SensorId, int, float, float, int]:
    if len(fields) != len(INITIAL_DATA_HEADER):
        raise ValueError(f"expected {len(INITIAL_DATA_HEADER)} fields, got {len(fields)}")
    sid, time_text, flow_text, pressure_text, status_text = fields
    if not (sid.isascii() and sid.isdigit() and 1 <= len(sid) <= 3 and int(sid) >= 1):
        raise ValueError(f"sensor: expected 001-999, got {sid!r}")
    return (
        sensor_id(int(sid)),
        _parse_time(time_text),
        _parse_value("flow", flow_text),
        _parse_value("pressure", pressure_text),
        _parse_status(status_text),
    )


def _parse_time(text: str) -> int:
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"time: not ISO 8601: {text!r}") from None
    if moment.utcoffset() is None:
        raise ValueError(f"time: needs a UTC offset such as +09:00: {text!r}")
    return int(moment.timestamp())


def _parse_value(name: str, text: str) -> float:
    if text == "":
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name}: not a number: {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name}: not a finite number: {text!r}")
    return value


def _parse_status(text: str) -> int:
    if text == "":
        return 0
    try:
        if len(text) == 2 and all(c in string.hexdigits for c in text):
            value = int(text, 16)
        elif text[:2].lower() == "0x" and text[2:] and all(c in string.hexdigits for c in text[2:]):
            value = int(text[2:], 16)
        elif text.isascii() and text.isdigit():
            value = int(text, 10)
        else:
            raise ValueError
    except ValueError:
        raise ValueError(f"status: expected 2 hex digits or an integer, got {text!r}") from None
    if not 0 <= value <= 0xFF:
        raise ValueError(f"status: out of range 0-255: {text!r}")
    return value
