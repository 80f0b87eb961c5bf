"""One site's detection, offline: the service's actors wired in one thread.

:class:`SiteEngine` is what the Detector, Predictor and NightFlow actors do,
minute by minute and in order, over readings held in memory: the evaluator
(``bench/detect_eval.py``) and the tests run it. Every decision is made by the
core objects the actors call:

* **Detector**: :class:`core.monitor.SiteMonitor` on every stored reading (its
  ``$ALR`` and ``$SRV`` frames), its criteria from :class:`CriteriaLifecycle`
  (initial data at first sight, the store at ``criteria.min_days``, rebuilt every
  ``criteria.rebuild_days``);
* **Predictor**: on every hour crossing a seasonal-naive forecast from
  :class:`HourlyHistory`, handed to the Detector at once (the service's
  Predictor coalesces hours when a replay outruns it; here none is skipped);
* **NightFlow**: :class:`core.replay.NightEngine`; a night's verdict is carried
  by the Detector from the night's end on.

The store is :class:`MemoryReadings` (first write wins per sensor and time, as
LMDB's). The same readings give the same frames, forecasts and verdicts.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from core import forecast as forecasting
from core.config import Config
from core.criteria import InitialData, SensorCriteria
from core.criteria_schedule import CriteriaBuild, CriteriaLifecycle
from core.detection import Expectation, SystemLimits
from core.hourly_history import HourlyHistory
from core.monitor import DetectionSettings, Outcome, SiteMonitor, expectation_for
from core.replay import JudgedNight, NightEngine
from core.types import EpochSeconds, Reading, SensorId, StoredReading

MINUTE_S = 60
HOUR_S = 3600


def detection_settings(config: Config) -> DetectionSettings:
    """The Detector's settings from the site configuration."""
    s = config.system
    return DetectionSettings(
        limits=SystemLimits(
            flow_min=s.flow_min, flow_max=s.flow_max,
            pressure_min=s.pressure_min, pressure_max=s.pressure_max,
            stuck_minutes=s.stuck_minutes, clock_ahead_s=s.clock_ahead_minutes * 60,
            silence_minutes=s.silence_minutes,
        ),
        persist_minutes=config.detection.persist_minutes,
        clear_minutes=config.detection.clear_minutes,
        gross_factor=config.detection.gross_factor,
    )


class Columns(NamedTuple):
    """One sensor's readings as columns, by time; NaN where a value is missing."""

    time: np.ndarray
    flow: np.ndarray
    pressure: np.ndarray
    status: np.ndarray


class MemoryReadings:
    """Readings kept in memory as the store keeps them: per sensor, by time, first wins."""

    def __init__(self) -> None:
        self._time: dict[SensorId, list[int]] = {}
        self._values: dict[SensorId, list[tuple[float, float, int]]] = {}

    def add(self, r: Reading) -> bool:
        """Store ``r``; False: the sensor already has a reading at that time."""
        times = self._time.setdefault(r.sensor, [])
        values = self._values.setdefault(r.sensor, [])
        row = (np.nan if r.flow is None else r.flow,
               np.nan if r.pressure is None else r.pressure, r.status)
        t = int(r.time)
        if not times or t > times[-1]:  # the usual case: in time order
            times.append(t)
            values.append(row)
            return True
        i = bisect.bisect_left(times, t)
        if i < len(times) and times[i] == t:
            return False
        times.insert(i, t)
        values.insert(i, row)
        return True

    def first_time(self, sensor: SensorId) -> int | None:
        times = self._time.get(sensor)
        return times[0] if times else None

    def reading_arrays(self, sensor: SensorId, since: int, until: int) -> Columns:
        """The sensor's readings stamped in ``[since, until)``."""
        times = self._time.get(sensor, [])
        lo, hi = bisect.bisect_left(times, since), bisect.bisect_left(times, until)
        rows = self._values.get(sensor, [])[lo:hi]
        flow, pressure, status = (zip(*rows, strict=True) if rows else ((), (), ()))
        return Columns(np.array(times[lo:hi], dtype=np.int64), np.array(flow, dtype=np.float64),
                       np.array(pressure, dtype=np.float64), np.array(status, dtype=np.int64))


@dataclass(frozen=True)
class NightRecord:
    """A closed night as NightFlow stores it (``leak`` None: no verdict)."""

    night: dt.date
    ends: int
    mnf: float | None
    leak: bool | None
    threshold: float | None
    cause: dict[str, Any] | None
    closed_by_future_stamp: bool


@dataclass
class Step:
    """What one minute produced: the Detector's outcome on the readings that arrived
    (``detected``), its silence tick at the minute's end (``ticked``), the forecasts
    issued and the nights closed."""

    detected: Outcome = field(default_factory=Outcome)
    ticked: Outcome = field(default_factory=Outcome)
    forecasts: list[forecasting.Forecast] = field(default_factory=list)
    nights: list[JudgedNight] = field(default_factory=list)


class SiteEngine:
    """Detector + Predictor + NightFlow of one site, minute by minute (module docstring).

    ``initial`` is the site's initial data (None: the site names no file). Its
    forecasts are the Predictor's seasonal-naive ones (``core.forecast.NAIVE_WEEKS``).
    """

    def __init__(self, config: Config, initial: InitialData | None = None) -> None:
        self.config = config
        self.initial = initial or {}
        self.monitor = SiteMonitor(detection_settings(config), config.site.tz)
        self.night_engine = NightEngine(config)
        self.readings = MemoryReadings()
        self.lifecycle = CriteriaLifecycle(config, self.readings.first_time)
        self.history = HourlyHistory()
        self.history_hours = forecasting.history_hours()
        self.calendar = forecasting.site_calendar(config.site.timezone, config.site.holidays)
        self.criteria: dict[SensorId, SensorCriteria | None] = {}
        self.forecasts: dict[SensorId, forecasting.Forecast | None] = {}
        self.issued: dict[SensorId, int] = {}
        self.nights: dict[SensorId, dict[dt.date, NightRecord]] = {}
        # (sensor, the minute it was built in, version, source) of every criteria build
        self.criteria_log: list[tuple[SensorId, int, int, str]] = []
        self._arrival = 0

    def step(self, now: int, readings: Iterable[Reading]) -> Step:
        """Store, judge and detect the readings that arrived in minute ``now`` (gateway
        time), then tick at the minute's end."""
        out = Step()
        batch: list[StoredReading] = []
        for r in readings:
            if self.readings.add(r):
                self._arrival += 1
                batch.append(StoredReading(self._arrival, r))
        for stored in batch:  # NightFlow (may run ahead: verdicts wait for their night's end)
            for judged in self.night_engine.add(stored.reading, now)[1]:
                self._close_night(judged, future=stored.reading.time > now)
                out.nights.append(judged)
        if batch:
            self._detect(now, batch, out)
        out.ticked = self.monitor.tick(EpochSeconds(now + MINUTE_S - 1), self._expectation)
        return out

    def _detect(self, now: int, batch: list[StoredReading], out: Step) -> None:
        """Detector.process, then the forecasts its hour crossings ask for."""
        for stored in batch:
            if stored.reading.sensor not in self.criteria:
                self._first_sight(stored.reading.sensor, now)
        out.detected = self.monitor.process(batch, now=EpochSeconds(now),
                                            criteria=self.criteria.get,
                                            expectation=self._expectation)
        for sensor, hour in out.detected.hours:  # Predictor.on_hour -> Detector.on_forecast
            if hour > self.issued.get(sensor, 0):
                out.forecasts.append(self._forecast(sensor, hour))
        for plan in self.lifecycle.due_now({s.reading.sensor for s in batch},
                                           self.criteria.get, self.monitor.last_seen):
            self._build(plan, now)

    def _expectation(self, sensor: SensorId, t: EpochSeconds) -> Expectation | None:
        return expectation_for(self.forecasts.get(sensor), self.criteria.get(sensor), t)

    def _first_sight(self, sensor: SensorId, now: int) -> None:
        self.criteria[sensor] = None
        self.forecasts[sensor] = None
        plan = self.lifecycle.on_first_sight(sensor, None, self.monitor.last_seen.get(sensor))
        if plan is not None:
            self._build(plan, now)

    def _build(self, plan: CriteriaBuild, now: int) -> None:
        if plan.source == "store":
            built = self.lifecycle.build(
                plan, self.readings.reading_arrays(plan.sensor, plan.since, plan.until))
        else:
            built = self.lifecycle.build(plan, self.initial.get(plan.sensor))
        if built is not None:
            self.criteria[plan.sensor] = built
            self.criteria_log.append((plan.sensor, now, built.version, built.source))

    def _forecast(self, sensor: SensorId, hour: int) -> forecasting.Forecast:
        history = self.history.series(
            sensor, EpochSeconds(hour), self.history_hours,
            lambda since, until: self.readings.reading_arrays(sensor, since, until))
        forecast = forecasting.naive_forecast(sensor, history, EpochSeconds(hour),
                                              calendar=self.calendar)
        self.forecasts[sensor] = forecast
        self.issued[sensor] = hour
        return forecast

    def _close_night(self, judged: JudgedNight, *, future: bool) -> None:
        summary, verdict = judged.summary, judged.verdict
        self.nights.setdefault(summary.sensor, {})[summary.night] = NightRecord(
            summary.night, int(judged.ends), summary.mnf, verdict.leak if verdict else None,
            verdict.threshold if verdict else None,
            verdict.cause() if verdict and verdict.leak else None, future,
        )
        if verdict is not None and verdict.leak is not None:  # NightClosed -> Detector
            self.monitor.schedule_night_verdict(
                summary.sensor, int(judged.ends), summary.night.isoformat(), verdict.leak,
                verdict.cause() if verdict.leak else None)
