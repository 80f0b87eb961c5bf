"""Chart series for the sensor page, without I/O: downsampling, bands, flag raises.

A browser draws a few thousand points per series smoothly; a 90-day range of
one-minute readings is 129,600. :func:`minmax_downsample` keeps, per time bucket,
the lowest and the highest reading, so a one-minute spike survives at any
zoom (an average would hide exactly what a technician looks for), and marks
the buckets with no reading at all as gaps instead of drawing a line across a
dropout.

Every series here is a pair of arrays (epoch seconds, value) with NaN where
there is nothing to draw; :func:`align` puts several on one time axis, the
shape the charting library (uPlot) takes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from core.criteria import slots_of
from core.types import FLAG_NIGHT, FLAG_PREDICT, FLAG_SYSTEM, FLAG_VALUE

MAX_POINTS = 2000
READING_STEP_S = 60
HOUR_S = 3600
METHOD_BITS: dict[str, int] = {
    "SYSTEM": FLAG_SYSTEM, "VALUE": FLAG_VALUE, "PREDICT": FLAG_PREDICT, "NIGHT": FLAG_NIGHT,
}


@dataclass(frozen=True, slots=True)
class Series:
    """Points of one chart line: ``time`` ascending (epoch s), ``value`` NaN = gap."""

    time: np.ndarray
    value: np.ndarray

    def __len__(self) -> int:
        return len(self.time)


def minmax_downsample(time: np.ndarray, value: np.ndarray, max_points: int = MAX_POINTS,
                      step_s: int = READING_STEP_S) -> Series:
    """At most ``max_points`` points of ``(time, value)`` keeping each bucket's extremes.

    ``time`` must be ascending; NaN values (not measured) are dropped. Up to
    half the budget, every reading is kept. Beyond, the span is cut into
    ``max_points // 2`` buckets (never shorter than two reading steps, so that
    an ordinary bucket holds a reading) and each keeps its lowest and highest
    reading, in time order. A stretch without readings (more than two steps
    between raw readings, an empty bucket between kept ones) gets one NaN point
    in its middle: a gap in the line. The result never exceeds ``max_points``.
    """
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2, got {max_points}")
    time = np.asarray(time, dtype=np.int64)
    value = np.asarray(value, dtype=np.float64)
    ok = np.isfinite(value)
    time, value = time[ok], value[ok]
    if len(time) <= max_points // 2:
        return _with_gaps(time, value, np.diff(time) > 2 * step_s)
    buckets = max_points // 2
    width = max(-(-(int(time[-1]) - int(time[0]) + 1) // buckets), 2 * step_s)
    index = (time - time[0]) // width
    # Within each bucket, readings sorted by value: the first is its minimum and
    # the last its maximum.
    order = np.lexsort((value, index))
    sorted_index = index[order]
    first = np.flatnonzero(np.r_[True, sorted_index[1:] != sorted_index[:-1]])
    last = np.r_[first[1:] - 1, len(order) - 1]
    kept = np.unique(np.concatenate([order[first], order[last]]))
    time, value, index = time[kept], value[kept], index[kept]
    return _with_gaps(time, value, np.diff(index) > 1)


def _with_gaps(time: np.ndarray, value: np.ndarray, gap_after: np.ndarray) -> Series:
    """Insert a NaN point halfway across each gap (``gap_after[i]``: between i and i+1)."""
    at = np.flatnonzero(gap_after)
    if not len(at):
        return Series(time, value)
    middles = (time[at] + time[at + 1]) // 2
    return Series(np.insert(time, at + 1, middles), np.insert(value, at + 1, np.nan))


def band_series(criteria_versions: Sequence[Mapping[str, Any]], quantity: str,
                time: np.ndarray, tz: ZoneInfo) -> tuple[np.ndarray, np.ndarray]:
    """The VALUE band (low, high) in force at each of ``time``; NaN where none.

    ``criteria_versions`` are stored criteria documents (``SensorCriteria.to_record``)
    in version order; each applies from its ``built_at`` (event time) until the
    next, the first one also before its own (it is what detection used then).
    """
    time = np.asarray(time, dtype=np.int64)
    low = np.full(len(time), np.nan)
    high = np.full(len(time), np.nan)
    usable = [c for c in criteria_versions if c.get(quantity)]
    if not usable or not len(time):
        return low, high
    starts = np.array([int(c["built_at"]) for c in usable], dtype=np.int64)
    which = np.maximum(np.searchsorted(starts, time, side="right") - 1, 0)
    slots = slots_of(time, tz)
    for i, doc in enumerate(usable):
        mask = which == i
        if not mask.any():
            continue
        bands = doc[quantity]["bands"]
        table = np.array(bands["weekday"] + bands["weekend"], dtype=np.float64)  # (48, 2)
        low[mask] = table[slots[mask], 0]
        high[mask] = table[slots[mask], 1]
    return low, high


def hourly_grid(since: int, until: int, max_points: int = MAX_POINTS) -> np.ndarray:
    """Times from ``since`` to ``until`` every hour (or coarser, to stay within
    ``max_points``), on whole hours: the axis of the band and forecast lines."""
    if until <= since:
        return np.zeros(0, dtype=np.int64)
    hours = math.ceil((until - since) / HOUR_S)
    step = HOUR_S * max(1, math.ceil(hours / max_points))
    first = since - since % HOUR_S
    return np.arange(first, until + 1, step, dtype=np.int64)


def forecast_series(forecast: Mapping[str, Any] | None, quantity: str, until: int,
                    default_band: float | None) -> tuple[Series, np.ndarray, np.ndarray]:
    """The forecast line (mid-hour points) up to ``until``, and its band (low, high).

    The band is the forecast's hourly P10-P90 when it carries one, else the
    model's residual band, or ``default_band`` (the criteria's) for a
    seasonal-naive forecast, as PREDICT judges; NaN where there is none.
    """
    empty = Series(np.zeros(0, dtype=np.int64), np.zeros(0))
    if not forecast:
        return empty, np.zeros(0), np.zeros(0)
    values = _floats(forecast[quantity])
    time = int(forecast["issued"]) + HOUR_S // 2 + HOUR_S * np.arange(len(values), dtype=np.int64)
    keep = time <= until
    time, values = time[keep], values[keep]
    p10, p90 = forecast.get(f"{quantity}_p10"), forecast.get(f"{quantity}_p90")
    if p10 is not None and p90 is not None:
        return Series(time, values), _floats(p10)[keep], _floats(p90)[keep]
    band = forecast.get(f"{quantity}_band") or default_band
    if band is None:
        return Series(time, values), np.full(len(time), np.nan), np.full(len(time), np.nan)
    return Series(time, values), values - band, values + band


def _floats(values: Sequence[float | None]) -> np.ndarray:
    """A stored hourly list as floats, None (no value) as NaN."""
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def flag_raises(detections: Sequence[Mapping[str, Any]], quantity: str,
                step_s: int = READING_STEP_S) -> list[tuple[Mapping[str, Any], list[str]]]:
    """The detections where a method's flag went up on ``quantity``, with those methods.

    ``detections`` are stored records in time order (a reading with no flag has
    none). A flag is raised where it is set and the previous record is not the
    previous reading's or lacks that flag: a VALUE alert held for an hour is
    one marker, not sixty.
    """
    key = f"{quantity}_flags"
    raises = []
    previous_time, previous_flags = None, 0
    for record in detections:
        flags, t = int(record.get(key, 0)), int(record["time"])
        if previous_time is None or t - previous_time > step_s * 3 // 2:
            previous_flags = 0
        new = flags & ~previous_flags
        if new:
            raises.append((record, [name for name, bit in METHOD_BITS.items() if new & bit]))
        previous_time, previous_flags = t, flags
    return raises


def thin(items: Sequence[Any], limit: int) -> list[Any]:
    """At most ``limit`` of ``items``, evenly spread, first and last kept."""
    if len(items) <= limit:
        return list(items)
    if limit <= 1:
        return list(items[:limit])
    picks = np.unique(np.linspace(0, len(items) - 1, limit).round().astype(int))
    return [items[i] for i in picks]


def align(series: Mapping[str, Series]) -> dict[str, Any]:
    """Several series on one ascending time axis.

    ``{"x": times, "y": {name: values}, "gaps": {name: indices}}``: a value is
    ``None`` where its series has no point at that time (the chart connects
    over it) and ``gaps`` lists where the series itself has a gap (NaN: the
    chart breaks its line there); JSON carries both as null, so the page
    tells them apart by ``gaps``.
    """
    times = [s.time for s in series.values() if len(s)]
    x = np.unique(np.concatenate(times)) if times else np.zeros(0, dtype=np.int64)
    ys: dict[str, list[Any]] = {}
    gaps: dict[str, list[int]] = {}
    for name, s in series.items():
        column = np.full(len(x), np.nan)
        where = np.searchsorted(x, s.time)
        column[where] = s.value
        ys[name] = [None if math.isnan(v) else round(v, 4) for v in column.tolist()]
        own_gaps = where[np.isnan(np.asarray(s.value, dtype=np.float64))]
        if len(own_gaps):
            gaps[name] = own_gaps.tolist()
    return {"x": x.tolist(), "y": ys, "gaps": gaps}
