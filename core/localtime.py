"""Local wall-clock time for arrays of UTC epoch seconds, with numpy and zoneinfo.

Criteria slots, night windows and calendar features all need each reading's
local time. A zoneinfo lookup per reading would be slow for a year of minutes,
so offsets are looked up once per UTC day and per reading only on days with a
transition (DST).
"""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

import numpy as np

DAY_S = 86_400
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def local_datetime(t: float, tz: ZoneInfo) -> datetime.datetime:
    """``datetime.fromtimestamp(t, tz)`` without the platform's ``time_t``.

    32-bit Raspberry Pi OS (armhf bookworm) has a 32-bit ``time_t``, which ends in
    January 2038: ``fromtimestamp`` raises there for later times, and a reading
    from an RTU with a wrong clock may carry one.
    """
    return (_EPOCH + datetime.timedelta(seconds=float(t))).astimezone(tz)


def _offset(t: int, tz: ZoneInfo) -> int:
    offset = local_datetime(t, tz).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def utc_offsets(times: np.ndarray, tz: ZoneInfo) -> np.ndarray:
    """UTC offset in seconds at each time (epoch seconds, any order)."""
    times = np.asarray(times, dtype=np.int64)
    if times.size == 0:
        return np.zeros(0, dtype=np.int64)
    days, inverse = np.unique(times // DAY_S, return_inverse=True)
    # A zone changes its offset at most once a day in practice: compare both ends.
    first = np.array([_offset(d * DAY_S, tz) for d in days.tolist()], dtype=np.int64)
    last = np.array([_offset(d * DAY_S + DAY_S - 1, tz) for d in days.tolist()], dtype=np.int64)
    offsets = first[inverse]
    changed = (first != last)[inverse]
    if changed.any():
        offsets[changed] = [_offset(int(t), tz) for t in times[changed].tolist()]
    return offsets


def local_seconds(times: np.ndarray, tz: ZoneInfo) -> np.ndarray:
    """Local wall-clock time as seconds since 1970-01-01 00:00 local (for day arithmetic)."""
    times = np.asarray(times, dtype=np.int64)
    return times + utc_offsets(times, tz)


def group_medians(index: np.ndarray, values: np.ndarray, groups: int) -> np.ndarray:
    """The median of ``values`` per group ``index`` (0 .. groups-1); NaN where a group has none.

    Non-finite values are left out, as a missing measurement is.
    """
    out = np.full(groups, np.nan)
    index = np.asarray(index, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(values)
    index, values = index[ok], values[ok]
    if values.size == 0:
        return out
    order = np.lexsort((values, index))
    index, values = index[order], values[order]
    present, starts, counts = np.unique(index, return_index=True, return_counts=True)
    out[present] = (values[starts + (counts - 1) // 2] + values[starts + counts // 2]) / 2
    return out
