"""The Detector's logic without I/O: readings in, frames and detections out.

:class:`SiteMonitor` runs the detection methods on each reading, assembles the
10-minute server reports, raises silence alerts and notices hour crossings. Its
whole state is plain data, persisted by the Detector actor in the same store
transaction as its offset, so a restart resumes exactly where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from core import detection
from core.criteria import SensorCriteria
from core.detection import (
    AHEAD,
    JUMP,
    ClockGuard,
    Expectation,
    SensorState,
    SystemLimits,
)
from core.forecast import Forecast
from core.frames import AlertFrame, OutboundFrame
from core.server_report import ServerReportBuilder
from core.types import FLAG_SYSTEM, EpochSeconds, EventTimes, SensorId, StoredReading

CriteriaLookup = Callable[[SensorId], SensorCriteria | None]
ExpectationLookup = Callable[[SensorId, EpochSeconds], Expectation | None]


@dataclass(frozen=True)
class DetectionSettings:
    """The knobs of detection, from the config's system and detection sections."""

    limits: SystemLimits
    persist_minutes: int = 3
    clear_minutes: int = 5
    gross_factor: float = 1.0


@dataclass
class Outcome:
    """What one step of the monitor produced, to be committed together."""

    frames: list[OutboundFrame] = field(default_factory=list)  # numbered by the outbox
    detections: list[tuple[SensorId, EpochSeconds, dict[str, Any]]] = field(default_factory=list)
    hours: list[tuple[SensorId, EpochSeconds]] = field(default_factory=list)
    last_arrival: int | None = None

    def extend(self, other: Outcome) -> None:
        self.frames += other.frames
        self.detections += other.detections
        self.hours += other.hours


def expectation_for(
    forecast: Forecast | None, criteria: SensorCriteria | None, t: EpochSeconds
) -> Expectation | None:
    """What PREDICT judges a reading at ``t`` by: the forecast for that minute and
    its band (the model's own, else the criteria's default residual band) and,
    when the forecast carries them, the P10/P90 of the hourly mean at that minute
    (interpolated between hour middles as the forecast itself is)."""
    if forecast is None:
        return None
    flow, pressure = forecast.expected_at(t)
    if flow is None and pressure is None:
        return None
    bands = _band_views(forecast)
    return Expectation(
        flow=flow, pressure=pressure,
        flow_band=forecast.flow_band or _residual(criteria, "flow"),
        pressure_band=forecast.pressure_band or _residual(criteria, "pressure"),
        flow_hourly=_band_at(bands[0], t), pressure_hourly=_band_at(bands[1], t),
    )


# Per sensor: its current forecast and that forecast's bands as forecasts of their
# own (flow = P10, pressure = P90), built once per forecast, not per reading.
_BandViews = tuple[Forecast | None, Forecast | None]
_band_cache: dict[SensorId, tuple[Forecast, _BandViews]] = {}


def _band_views(forecast: Forecast) -> _BandViews:
    cached = _band_cache.get(forecast.sensor)
    if cached is not None and cached[0] is forecast:
        return cached[1]
    views = (_band_view(forecast, "flow"), _band_view(forecast, "pressure"))
    _band_cache[forecast.sensor] = (forecast, views)
    return views


def _band_view(forecast: Forecast, quantity: str) -> Forecast | None:
    p10, p90 = getattr(forecast, f"{quantity}_p10"), getattr(forecast, f"{quantity}_p90")
    if p10 is None or p90 is None:
        return None
    return Forecast(forecast.sensor, forecast.issued, p10, p90, forecast.source)


def _band_at(view: Forecast | None, t: EpochSeconds) -> tuple[float, float] | None:
    if view is None:
        return None
    p10, p90 = view.expected_at(t)
    return None if p10 is None or p90 is None else (p10, p90)


def _residual(criteria: SensorCriteria | None, quantity: str) -> float | None:
    q = criteria.quantity(quantity) if criteria is not None else None
    return q.residual_band if q is not None else None


class SiteMonitor:
    """Detection state of every sensor of the site."""

    def __init__(
        self, settings: DetectionSettings, tz: ZoneInfo, state: dict[str, Any] | None = None
    ) -> None:
        self.settings = settings
        self.tz = tz
        state = state or {}
        self.sensors: dict[SensorId, SensorState] = {
            SensorId(s): SensorState.from_record(d) for s, d in state.get("sensors", {}).items()
        }
        # sensor -> its event time: the newest reading the clock guard took in
        self.last_seen: dict[SensorId, EpochSeconds] = {
            SensorId(s): EpochSeconds(t) for s, t in state.get("last_seen", {}).items()
        }
        self.last_alerted: dict[SensorId, EpochSeconds] = {
            SensorId(s): EpochSeconds(t) for s, t in state.get("last_alerted", {}).items()
        }
        self.event_now: EpochSeconds = EpochSeconds(int(state.get("event_now", 0)))
        self.night_applied: dict[SensorId, str] = dict(state.get("night_applied", {}))
        # sensor -> [time, flow flags, pressure flags] of the reading at its event time (for status)
        self.last_flags: dict[SensorId, list[int]] = dict(state.get("last_flags", {}))
        # Night verdicts waiting for this sensor's event time to reach the night's
        # end: NightFlow may run ahead of detection, and a verdict must not be
        # carried on readings from before its night ended. Rebuilt from the store.
        self.pending_nights: dict[SensorId, list[tuple[int, str, bool, dict[str, Any] | None]]] = {}
        self.reports = ServerReportBuilder(tz, state.get("reports"))
        self.clock = ClockGuard(settings.limits.clock_ahead_s, state.get("clock"))

    def state(self) -> dict[str, Any]:
        return {
            "sensors": {s: st.to_record() for s, st in self.sensors.items()},
            "last_seen": dict(self.last_seen),
            "last_alerted": dict(self.last_alerted),
            "event_now": self.event_now,
            "night_applied": dict(self.night_applied),
            "last_flags": dict(self.last_flags),
            "reports": self.reports.state(),
            "clock": self.clock.state(),
        }

    def event_times(self) -> EventTimes:
        """Each sensor's event time (its newest reading taken in) and the clock evidence."""
        ahead = self.clock.ahead_until()
        return EventTimes(dict(self.last_seen), None if ahead is None else EpochSeconds(ahead))

    def process(
        self, batch: Iterable[StoredReading], *, now: EpochSeconds,
        criteria: CriteriaLookup, expectation: ExpectationLookup,
    ) -> Outcome:
        """Evaluate readings in arrival order; ``now`` is the gateway clock.

        Every reading is evaluated and alerted at once. One stamped ahead (of the
        gateway clock, or jumping ahead of its sensor's timeline in a replay: see
        :class:`core.detection.ClockGuard`) is flagged SYSTEM ``clock_ahead`` and
        moves no event time: no hour crossing, no server report. A jump the
        sensor's next readings confirm (a sensor back after an outage) is then
        taken into event time and the server reports after all.
        """
        out = Outcome()
        s = self.settings
        # The loop runs for every reading of the site: everything it uses per
        # reading is bound to a local once per batch.
        evaluate, tz, limits = detection.evaluate, self.tz, s.limits
        persist, clear = s.persist_minutes, s.clear_minutes
        gross = s.gross_factor
        sensors, pending_nights = self.sensors, self.pending_nights
        frames, detections = out.frames, out.detections
        admit, advance = self.clock.admit, self._advance
        predicted = _predicted(expectation)
        for stored in batch:
            r = stored.reading
            sensor, t = r.sensor, r.time
            if pending_nights.get(sensor):
                self._apply_due_nights(sensor, t)
            state = sensors.get(sensor)
            if state is None:
                state = sensors[sensor] = SensorState()
            admission = admit(sensor, t, now)
            verdict = admission.verdict
            # A jump is judged against the sensor's timeline: evaluate flags it
            # as clock_ahead by the seconds it jumped, and leaves the state alone.
            judged_now = now if verdict is not JUMP else EpochSeconds(int(t - admission.ahead_s))
            evaluation = evaluate(
                r, state, limits=limits, criteria=criteria(sensor),
                expectation=expectation(sensor, t), now=judged_now, tz=tz,
                persist_minutes=persist, clear_minutes=clear, gross_factor=gross,
            )
            ff, pf = evaluation.flow_flags, evaluation.pressure_flags
            frames.append(AlertFrame(sensor, t, r.flow, r.pressure, ff, pf))
            causes = evaluation.causes
            if causes:
                detections.append((sensor, t, evaluation.to_record()))
            out.last_arrival = stored.arrival
            if verdict is JUMP:
                self.clock.hold(sensor, [t, r.flow, r.pressure, ff, pf])
            elif verdict is not AHEAD:
                for held in admission.released:  # a confirmed jump's readings first
                    advance(sensor, *held, predicted, out)
                advance(sensor, t, r.flow, r.pressure, ff, pf, predicted, out)
        return out

    def _advance(
        self, sensor: SensorId, t: EpochSeconds, flow: float | None, pressure: float | None,
        ff: int, pf: int,
        predicted: Callable[[SensorId, EpochSeconds], tuple[float | None, float | None]],
        out: Outcome,
    ) -> None:
        """Event-time bookkeeping; never for readings stamped ahead (unconfirmed)."""
        previous = self.last_seen.get(sensor)
        if previous is None or t > previous:
            self.last_seen[sensor] = t
            self.last_flags[sensor] = [t, ff, pf]
            if previous is not None and t // 3600 > previous // 3600:
                out.hours.append((sensor, EpochSeconds(t - t % 3600)))
        if t > self.event_now:
            self.event_now = t
        for block in self.reports.add(sensor, t, flow, pressure, ff, pf, predicted):
            out.frames += block

    def tick(self, virtual_now: EpochSeconds, expectation: ExpectationLookup) -> Outcome:
        """Silence alerts and silent sensors' server reports up to ``virtual_now``.

        ``virtual_now`` is event time carried forward by the wall clock since the
        newest reading, so silence is judged the same in replay and in real time.
        """
        out = Outcome()
        limits = self.settings.limits
        for sensor, minute in detection.silence_alerts(
            self.last_seen, self.last_alerted, virtual_now, limits.silence_minutes
        ):
            out.frames.append(AlertFrame(sensor, minute, None, None, FLAG_SYSTEM, FLAG_SYSTEM))
        for block in self.reports.close_silent(
            virtual_now, limits.silence_minutes * 60, _predicted(expectation)
        ):
            out.frames += block
        return out

    def schedule_night_verdict(
        self, sensor: SensorId, effective: int, night: str, leak: bool,
        cause: dict[str, Any] | None,
    ) -> None:
        """Carry a night's verdict from the first reading at or after ``effective``."""
        if night <= self.night_applied.get(sensor, ""):
            return
        pending = self.pending_nights.setdefault(sensor, [])
        if all(p[1] != night for p in pending):
            pending.append((effective, night, leak, cause))
            pending.sort()

    def _apply_due_nights(self, sensor: SensorId, t: int) -> None:
        pending = self.pending_nights.get(sensor)
        while pending and pending[0][0] <= t:
            _, night, leak, cause = pending.pop(0)
            if night > self.night_applied.get(sensor, ""):
                state = self.sensors.get(sensor)
                if state is None:
                    state = self.sensors[sensor] = SensorState()
                detection.apply_night_verdict(state, leak, cause)
                self.night_applied[sensor] = night


def _predicted(expectation: ExpectationLookup) -> Callable[[SensorId, EpochSeconds], tuple[float | None, float | None]]:
    def lookup(sensor: SensorId, t: EpochSeconds) -> tuple[float | None, float | None]:
        e = expectation(sensor, t)
        return (None, None) if e is None else (e.flow, e.pressure)
    return lookup
