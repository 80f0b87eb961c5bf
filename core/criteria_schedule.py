"""The criteria lifecycle: when a sensor's criteria are (re)built, and from what.

The Detector actor and the offline site engine (:mod:`core.site_engine`, which
``bench/detect_eval.py`` runs) decide with one :class:`CriteriaLifecycle`; they
only differ in where readings come from (LMDB, or memory).

* **First sight** of a sensor without criteria: from the store if it already
  spans ``criteria.min_days`` (a restart), else from the site's initial data
  (when the site names a file holding the sensor), else none yet (SYSTEM only).
* **Then**, once per day of the sensor's history counted from its first stored
  reading (:func:`core.criteria.schedule_day`: the day the store reaches
  ``min_days`` starts exactly when it does), :func:`core.criteria.rebuild_reason`
  says whether the store criteria are due: first at ``min_days``, then every
  ``rebuild_days`` of event time.
* A store build reads the ``window_days`` before the sensor's **event time**
  (its newest reading taken in; never a stamp far ahead of it).

The lifecycle only decides (:class:`CriteriaBuild`); the caller reads the
readings the build names and hands them to :meth:`CriteriaLifecycle.build`
(:func:`core.criteria.build_criteria`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from core import criteria as criteria_logic
from core.config import Config
from core.criteria import PhysicalRange, SensorCriteria
from core.localtime import DAY_S
from core.types import EpochSeconds, SensorId

FIRST_START = "first start"

# (time, flow, pressure, status) columns of one sensor's history.
HistoryArrays = tuple[Any, Any, Any, Any]


def physical_range(config: Config) -> PhysicalRange:
    s = config.system
    return PhysicalRange(s.flow_min, s.flow_max, s.pressure_min, s.pressure_max)


def build_sensor_criteria(config: Config, sensor: SensorId, arrays: HistoryArrays, version: int,
                          source: str) -> SensorCriteria | None:
    """Criteria of ``sensor`` from ``(time, flow, pressure, status)`` arrays, per the config."""
    night = config.night
    return criteria_logic.build_criteria(
        sensor, *arrays, tz=config.site.tz, version=version, source=source,
        physical=physical_range(config), night_start=night.start, night_end=night.end,
    )


@dataclass(frozen=True, slots=True)
class CriteriaBuild:
    """A build the lifecycle asks for: version ``version`` of ``sensor``'s criteria from
    ``source`` (``"store"``: the readings stamped in ``[since, until)``;
    ``"initial_data"``: the site's initial data for the sensor)."""

    sensor: SensorId
    reason: str
    version: int
    source: str
    since: int = 0
    until: int = 0


class CriteriaLifecycle:
    """When each sensor's criteria are built, per ``config.criteria``.

    ``first_reading(sensor)`` is the stamp of the sensor's oldest stored reading
    (None: none stored); it is asked once per sensor.
    """

    def __init__(self, config: Config,
                 first_reading: Callable[[SensorId], int | None]) -> None:
        self.config = config
        self._first_reading = first_reading
        self._first_time: dict[SensorId, int] = {}
        self._checked_day: dict[SensorId, int] = {}

    def on_first_sight(self, sensor: SensorId, current: SensorCriteria | None,
                       event_time: int | None) -> CriteriaBuild | None:
        """The build due when the engine first meets ``sensor`` (a start, a new sensor)
        that has no criteria yet."""
        if current is not None:
            return None
        return self._plan(sensor, FIRST_START, None, event_time)

    def due(self, sensor: SensorId, current: SensorCriteria | None,
            event_time: int | None) -> CriteriaBuild | None:
        """The rebuild due after readings of ``sensor`` moved its event time to
        ``event_time`` (checked once per day of its history)."""
        if event_time is None:
            return None
        day = criteria_logic.schedule_day(self._first(sensor, event_time), event_time)
        if self._checked_day.get(sensor) == day:
            return None
        self._checked_day[sensor] = day
        cfg = self.config.criteria
        reason = criteria_logic.rebuild_reason(
            current, store_days=self.store_days(sensor, event_time),
            newest=EpochSeconds(event_time), min_days=cfg.min_days,
            rebuild_days=cfg.rebuild_days,
        )
        if reason is None:
            return None
        return self._plan(sensor, reason, current, event_time)

    def due_now(self, sensors: Iterable[SensorId],
                criteria: Callable[[SensorId], SensorCriteria | None],
                event_times: Mapping[SensorId, int]) -> list[CriteriaBuild]:
        """The rebuilds due for ``sensors`` (those a batch of readings touched), by sensor."""
        plans = (self.due(s, criteria(s), event_times.get(s)) for s in sorted(set(sensors)))
        return [plan for plan in plans if plan is not None]

    def store_days(self, sensor: SensorId, event_time: int) -> float:
        """Days of stored history of ``sensor`` up to ``event_time``."""
        return (event_time - self._first(sensor, event_time)) / DAY_S

    def build(self, plan: CriteriaBuild, arrays: HistoryArrays | None) -> SensorCriteria | None:
        """The criteria ``plan`` asks for, from the readings it names (None: none there)."""
        if arrays is None:
            return None
        return build_sensor_criteria(self.config, plan.sensor, arrays, plan.version, plan.source)

    def _plan(self, sensor: SensorId, reason: str, current: SensorCriteria | None,
              event_time: int | None) -> CriteriaBuild | None:
        cfg = self.config.criteria
        version = current.version + 1 if current else 1
        if event_time is not None and self.store_days(sensor, event_time) >= cfg.min_days:
            return CriteriaBuild(sensor, reason, version, "store",
                                 since=event_time - cfg.window_days * DAY_S,
                                 until=event_time + 1)
        if current is None:  # the caller's initial data for the sensor, if the site has any
            return CriteriaBuild(sensor, reason, version, "initial_data")
        return None

    def _first(self, sensor: SensorId, event_time: int) -> int:
        first = self._first_time.get(sensor)
        if first is None:
            oldest = self._first_reading(sensor)
            first = self._first_time[sensor] = event_time if oldest is None else oldest
        return first
