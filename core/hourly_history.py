"""The hourly history a forecast is made from, kept up incrementally per sensor.

The Predictor actor and the offline site engine (:mod:`core.site_engine`) both
ask :class:`HourlyHistory` for the hourly means of the hours before an issue
time; it reads (through the caller's ``read``) only the readings stamped since
the series it handed out last for that sensor, so an hourly forecast costs an
hour of readings, not weeks.

A reading stored late for an hour already summarised is not folded in (the next
model training sees it); a reading stamped ahead of the issue time is read once
the issue time passes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from core import forecast as forecasting
from core.types import EpochSeconds, SensorId

HOUR_S = 3600

# read(since, until): the sensor's readings stamped in [since, until), with
# ``time``, ``flow`` and ``pressure`` columns (NaN where missing).
ReadFn = Callable[[int, int], Any]


class HourlyHistory:
    """Each sensor's hourly means, extended from the last series by what was stored since."""

    def __init__(self) -> None:
        self._series: dict[SensorId, forecasting.HourlySeries] = {}

    def series(self, sensor: SensorId, issued: EpochSeconds, hours: int,
               read: ReadFn) -> forecasting.HourlySeries:
        """Hourly means of the ``hours`` hours before ``issued`` (NaN: nothing stored)."""
        since = issued - hours * HOUR_S
        cached = self._series.get(sensor)
        # A longer span than the cached one (a new model looks further back) is
        # read whole: extending only the end would leave its first hours empty.
        if cached is None or cached.end > issued or cached.end < since or cached.start > since:
            read_from = since
            cached = None
        else:
            read_from = cached.end
        arrays = read(read_from, issued)
        fresh = forecasting.hourly_means(arrays.time, arrays.flow, arrays.pressure)
        span = (issued - since) // HOUR_S
        flow = np.full(span, np.nan)
        pressure = np.full(span, np.nan)
        for part in (cached, fresh):
            if part is not None and part.hours:
                flow = np.fmax(flow, forecasting.aligned(part.flow, part.start, since, span))
                pressure = np.fmax(pressure,
                                   forecasting.aligned(part.pressure, part.start, since, span))
        history = forecasting.HourlySeries(EpochSeconds(since), flow, pressure)
        self._series[sensor] = history
        return history
