"""Detector: runs the detection methods on committed readings, in arrival order.

Thin wiring around :class:`core.monitor.SiteMonitor`: it reads its offset and
state from the store, evaluates each reading once, and commits detections,
outbound frames, the new offset and the monitor state in one transaction, with
each sensor's event time when it moved (:class:`core.types.EventTimes`: what
retention, the trainer and every "latest" follow). It owns the criteria (built
from initial data, then from the store on schedule, on the window that ends at
the sensor's event time) and keeps the current forecast per sensor for PREDICT.
"""

from __future__ import annotations

import time
from typing import Any

from actors.base import UPLINKS, ActorContext, JournalConsumer
from core import criteria as criteria_logic
from core.criteria import SensorCriteria
from core.criteria_schedule import CriteriaBuild, CriteriaLifecycle
from core.detection import Expectation
from core.forecast import Forecast
from core.messages import (
    CriteriaChanged, ForecastIssued, HourClosed, NightClosed, OutboxAppended,
    Tick,
)
from core.monitor import Outcome, SiteMonitor, expectation_for
from core.site_engine import detection_settings
from core.types import EpochSeconds, EventTimes, SensorId, StoredReading
from storage import documents

CONSUMER = "detector"


class Detector(JournalConsumer):
    role = "detector"
    consumer = CONSUMER

    def __init__(self, context: ActorContext) -> None:
        super().__init__(context)
        self.tz = self.config.site.tz
        self.monitor: SiteMonitor | None = None
        self.criteria: dict[SensorId, SensorCriteria | None] = {}
        self.forecasts: dict[SensorId, Forecast | None] = {}
        self._initial_data: dict[SensorId, Any] | None = None
        self.lifecycle = CriteriaLifecycle(self.config, self._first_reading_time)
        self._event_at_monotonic = time.monotonic()
        self._event_times = EventTimes()  # as last written to the store

    def on_start(self) -> None:
        with self.store.read() as view:
            self.offset = view.offset(CONSUMER)
            state = documents.actor_state(view, CONSUMER)
            self._event_times = view.event_times()
            sensors = view.sensors()
        self.monitor = SiteMonitor(detection_settings(self.config), self.tz, state)
        if self.monitor.event_times() != self._event_times:  # a store from before they were kept
            self._commit(Outcome())
        for sensor in sensors:
            self._load_sensor(sensor)
            self._schedule_stored_nights(sensor)
        super().on_start()

    # -- messages ------------------------------------------------------------

    def on_tick(self, message: Tick) -> None:
        assert self.monitor is not None
        if not self.monitor.event_now:
            return
        virtual_now = EpochSeconds(
            self.monitor.event_now + int(time.monotonic() - self._event_at_monotonic)
        )
        out = self.monitor.tick(virtual_now, self._expectation)
        if out.frames:
            self._commit(out)

    def on_night(self, message: NightClosed) -> None:
        self._schedule_stored_nights(SensorId(message.sensor))

    def on_forecast(self, message: ForecastIssued) -> None:
        self._load_forecast(SensorId(message.sensor))

    def on_criteria(self, message: CriteriaChanged) -> None:
        self._load_criteria(SensorId(message.sensor))

    # -- work ---------------------------------------------------------------------

    def process(self, batch: list[StoredReading]) -> None:
        assert self.monitor is not None
        for stored in batch:
            if stored.reading.sensor not in self.criteria:
                self._load_sensor(stored.reading.sensor)
        out = self.monitor.process(
            batch, now=EpochSeconds(int(self.context.clock())),
            criteria=self.criteria.get, expectation=self._expectation,
        )
        self._event_at_monotonic = time.monotonic()
        self._commit(out)
        for sensor, hour in out.hours:
            self.peers.tell("predictor", HourClosed(sensor, hour))
        for plan in self.lifecycle.due_now({s.reading.sensor for s in batch},
                                           self.criteria.get, self.monitor.last_seen):
            self._build_criteria(plan)

    def _commit(self, out: Outcome) -> None:
        assert self.monitor is not None
        state = self.monitor.state()
        offset = out.last_arrival if out.last_arrival is not None else self.offset
        event_times = self.monitor.event_times()
        moved = event_times != self._event_times

        def write(batch: Any) -> int:
            for sensor, t, record in out.detections:
                batch.put_detection(sensor, t, record)
            last_seq = 0
            for frame in out.frames:
                last_seq = batch.append_outbox(frame)
            batch.set_offset(CONSUMER, offset, state)
            if moved:
                batch.set_event_times(event_times)
            return last_seq

        last_seq = self.store.transact(write)
        self.offset = offset
        self._event_times = event_times
        if last_seq:
            self.peers.tell_each(UPLINKS, OutboxAppended(last_seq))

    def _expectation(self, sensor: SensorId, t: EpochSeconds) -> Expectation | None:
        return expectation_for(self.forecasts.get(sensor), self.criteria.get(sensor), t)

    # -- criteria, forecasts, night verdicts -------------------------------------

    def _load_sensor(self, sensor: SensorId) -> None:
        assert self.monitor is not None
        self._load_criteria(sensor)
        self._load_forecast(sensor)
        plan = self.lifecycle.on_first_sight(sensor, self.criteria.get(sensor),
                                             self.monitor.last_seen.get(sensor))
        if self.criteria.get(sensor) is None and (plan is None or not self._build_criteria(plan)):
            self.log.warning("sensor %s: no criteria yet (no history): SYSTEM detection only", sensor)

    def _load_criteria(self, sensor: SensorId) -> None:
        with self.store.read() as view:
            doc = documents.current_criteria(view, sensor)
        self.criteria[sensor] = SensorCriteria.from_record(doc) if doc else None

    def _load_forecast(self, sensor: SensorId) -> None:
        with self.store.read() as view:
            doc = documents.forecast(view, sensor)
        self.forecasts[sensor] = Forecast.from_record(doc) if doc else None

    def _schedule_stored_nights(self, sensor: SensorId, after: str = "") -> None:
        """Queue the stored night verdicts not yet carried (see SiteMonitor)."""
        assert self.monitor is not None
        after = max(after, self.monitor.night_applied.get(sensor, ""))
        with self.store.read() as view:
            judged = documents.night_verdicts(
                view, sensor, after=after, where=lambda record: record.get("leak") is not None)
        for night, record in judged:
            self.monitor.schedule_night_verdict(sensor, int(record["ends"]), night,
                                                bool(record["leak"]), record.get("cause"))

    def _first_reading_time(self, sensor: SensorId) -> int | None:
        with self.store.read() as view:
            oldest = view.first_reading(sensor)
        return None if oldest is None else int(oldest.time)

    def _build_criteria(self, plan: CriteriaBuild) -> bool:
        """Build and store what the lifecycle asked for; False: nothing to build from."""
        sensor = plan.sensor
        if plan.source == "store":
            with self.store.read() as view:
                arrays = view.reading_arrays(sensor, since=plan.since, until=plan.until)
            built = self.lifecycle.build(
                plan, (arrays.time, arrays.flow, arrays.pressure, arrays.status))
        else:
            built = self.lifecycle.build(plan, self._initial_history().get(sensor))
        if built is None:
            return False
        self.store.transact(
            lambda b: documents.put_criteria(b, sensor, built.version, built.to_record()))
        self.criteria[sensor] = built
        self.log.info("sensor %s: criteria v%d from %s (%s, %.1f days)",
                      sensor, built.version, built.source, plan.reason, built.days)
        return True

    def _initial_history(self) -> dict[SensorId, Any]:
        if self._initial_data is None:
            path = self.config.criteria.initial_data
            self._initial_data = {}
            if path:
                try:
                    self._initial_data = criteria_logic.read_initial_data(path)
                except (OSError, criteria_logic.InitialDataError) as exc:
                    self.log.error("initial data %s unusable: %s", path, exc)
        return self._initial_data
