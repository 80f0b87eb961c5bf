"""Predictor: each hour of event time, the next 168 hours for each sensor.

Uses the sensor's accepted model (an exported LSTM run in numpy: TensorFlow is
never imported by the service) or the seasonal-naive forecast when there is
none. Once a day the model's last seven days are scored against seasonal-naive
(:mod:`core.forecast_check`) and each quantity's forecast comes from the better
of the two. The forecast, that choice and its seven ``$FCD`` lines are
committed together, then the Detector (PREDICT) and the Transmitter are told.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from actors.base import UPLINKS, ActorContext, GatewayActor
from core import forecast as forecasting
from core import forecast_check, frames
from core.hourly_history import HourlyHistory
from core.messages import ForecastIssued, HourClosed, ModelChanged, OutboxAppended, Resume
from core.types import EpochSeconds, SensorId
from storage import documents
from storage.store import ReadingArrays

CONSUMER = "predictor"
HOUR_S = 3600


def fcd_frames(fc: forecasting.Forecast, tz: Any) -> list[frames.DailyForecastLine]:
    """The ``$FCD`` lines of a forecast (numbered by the outbox).

    A day with an hour without forecast (a sensor with less than a week of
    history) has no line: the mean of part of a day is not the day's mean. Nor
    has a day whose mean the line cannot carry (NaN, or a forecast of absurd
    readings too long for the field): ``$FCD`` has no flag to say so.
    """
    return [
        frames.DailyForecastLine(fc.sensor, fc.issued, day, round(float(flow), 3),
                                 round(float(pressure), 3))
        for day, flow, pressure in fc.daily_means(tz)
        if frames.value_fits("FCD", float(flow)) and frames.value_fits("FCD", float(pressure))
    ]


class Predictor(GatewayActor):
    role = "predictor"

    def __init__(self, context: ActorContext) -> None:
        super().__init__(context)
        self.tz = self.config.site.tz
        self.calendar = forecasting.site_calendar(self.config.site.timezone,
                                                  self.config.site.holidays)
        self.issued: dict[str, int] = {}
        self.pending: dict[str, int] = {}
        self.models: dict[SensorId, tuple[str, Any, Any] | None] = {}
        self.histories = HourlyHistory()
        self.days_forecast: dict[SensorId, int] = {}
        self.choices: dict[SensorId, forecast_check.Choice | None] = {}
        self.last_duration_ms = 0.0

    def on_start(self) -> None:
        with self.store.read() as view:
            state = documents.actor_state(view, CONSUMER) or {}
            event_times = view.event_times()
        self.issued = dict(state.get("issued", {}))
        # Hours that closed while we were down: forecast the latest one (event time) now.
        for sensor, latest in event_times.sensors.items():
            self.pending[sensor] = latest - latest % HOUR_S
        self.tell_self(Resume())

    def on_hour(self, message: HourClosed) -> None:
        if message.hour > self.issued.get(message.sensor, 0):
            self.pending[message.sensor] = max(message.hour, self.pending.get(message.sensor, 0))
            self.tell_self(Resume())

    def on_model(self, message: ModelChanged) -> None:
        self.models.pop(SensorId(message.sensor), None)

    def on_resume(self, _: Resume) -> None:
        # Hours are coalesced: when replay outruns forecasting, only the newest
        # hour of a sensor is forecast (a stale forecast helps nobody).
        pending, self.pending = self.pending, {}
        for sensor, hour in pending.items():
            if hour > self.issued.get(sensor, 0):
                self.forecast(SensorId(sensor), EpochSeconds(hour))

    def forecast(self, sensor: SensorId, issued: EpochSeconds) -> forecasting.Forecast:
        started = time.perf_counter()
        choice = self._choice(sensor)
        fc = self._compute(sensor, issued)
        # A due check (daily, or a new model) made a new choice: stored with the forecast.
        checked = self._choice(sensor)
        frames = fcd_frames(fc, self.tz)
        # In a site's first week every hourly forecast is short: say so when the
        # number of days changes, not 168 times a week.
        if len(frames) != self.days_forecast.get(sensor, 7):
            if len(frames) < 7:
                self.log.warning("sensor %s: forecast for %d of 7 days (a day needs every "
                                 "hour seen a week earlier)", sensor, len(frames))
            else:
                self.log.info("sensor %s: forecast for every day again", sensor)
        self.days_forecast[sensor] = len(frames)
        self.issued[sensor] = issued
        state = {"issued": dict(self.issued)}

        def write(b: Any) -> int:
            documents.put_forecast(b, sensor, fc.to_record())
            if checked is not None and checked is not choice:
                documents.put_forecast_choice(b, sensor, checked.to_record())
            last = 0
            for frame in frames:
                last = b.append_outbox(frame)
            documents.save_actor_state(b, CONSUMER, state)
            return last

        last_seq = self.store.transact(write)
        self.last_duration_ms = (time.perf_counter() - started) * 1000
        self.peers.tell("detector", ForecastIssued(sensor, issued))
        if last_seq:
            self.peers.tell_each(UPLINKS, OutboxAppended(last_seq))
        return fc

    def _compute(self, sensor: SensorId, issued: EpochSeconds) -> forecasting.Forecast:
        model = self._model(sensor)
        # Always the check's span, with or without a model: the incremental
        # history keeps one span, and the first model's check needs all of it.
        hours = forecast_check.history_hours(*(model[1:] if model else ()))
        history = self._history(sensor, issued, hours)

        def naive() -> forecasting.Forecast:
            return forecasting.naive_forecast(sensor, history, issued, calendar=self.calendar)

        if model is None:
            return naive()
        version, flow_model, pressure_model = model
        try:
            by_model = forecasting.lstm_forecast(flow_model, pressure_model, sensor, history,
                                                 issued)
            choice = self._check(sensor, issued, model, history)
        except Exception:
            self.log.exception("sensor %s: model %s failed; seasonal-naive instead", sensor, version)
            return naive()
        if not choice.uses_naive():
            return by_model
        return forecast_check.combine(by_model, naive(), choice.use)

    def _choice(self, sensor: SensorId) -> forecast_check.Choice | None:
        if sensor not in self.choices:
            with self.store.read() as view:
                doc = documents.forecast_choice(view, sensor)
            self.choices[sensor] = None if doc is None else forecast_check.Choice.from_record(doc)
        return self.choices[sensor]

    def _check(self, sensor: SensorId, issued: EpochSeconds, model: tuple[str, Any, Any],
               history: forecasting.HourlySeries) -> forecast_check.Choice:
        """The model's source choice, checked again when due; a switch is logged once."""
        version, flow_model, pressure_model = model
        choice = self._choice(sensor)
        if choice is not None and not choice.due(version, issued):
            return choice
        scores = {q: forecast_check.recent_score(m, history.quantity(q), history.start, issued,
                                                   self.calendar)
                  for q, m in (("flow", flow_model), ("pressure", pressure_model))}
        choice, switches = forecast_check.update(choice, version, issued, scores)
        for switch in switches:
            s = switch.score
            if switch.to == forecast_check.NAIVE:
                self.log.warning(
                    "sensor %s: %s forecast switched to seasonal-naive: over the last %d days "
                    "model %s's MAE %.4g is worse than naive's %.4g (%d h); checked again daily",
                    sensor, switch.quantity, forecast_check.CHECK_DAYS, version, s.model_mae,
                    s.naive_mae, s.hours)
            else:
                self.log.info(
                    "sensor %s: %s forecast back on model %s: over the last %d days its MAE "
                    "%.4g beats naive's %.4g (%d h)", sensor, switch.quantity, version,
                    forecast_check.CHECK_DAYS, s.model_mae, s.naive_mae, s.hours)
        self.choices[sensor] = choice
        return choice

    def _history(self, sensor: SensorId, issued: EpochSeconds, hours: int) -> forecasting.HourlySeries:
        """Hourly means of the hours before ``issued`` (:class:`core.hourly_history.HourlyHistory`:
        only the hours since the previous forecast are read from the store)."""
        return self.histories.series(
            sensor, issued, hours,
            lambda since, until: self._reading_arrays(sensor, since, until))

    def _reading_arrays(self, sensor: SensorId, since: int, until: int) -> ReadingArrays:
        with self.store.read() as view:
            return view.reading_arrays(sensor, since=since, until=until)

    def _model(self, sensor: SensorId) -> tuple[str, Any, Any] | None:
        with self.store.read() as view:
            doc = documents.model(view, sensor)
        cached = self.models.get(sensor)
        if doc is None:
            return None
        if cached is not None and cached[0] == doc["version"]:
            return cached
        try:
            loaded = (doc["version"],
                      forecasting.ExportedModel.load(Path(doc["paths"]["flow"])),
                      forecasting.ExportedModel.load(Path(doc["paths"]["pressure"])))
        except (OSError, KeyError, ValueError) as exc:
            self.log.error("sensor %s: cannot load model %s: %s", sensor, doc.get("version"), exc)
            return None
        self.models[sensor] = loaded
        self.log.info("sensor %s: using model %s", sensor, doc["version"])
        return loaded
