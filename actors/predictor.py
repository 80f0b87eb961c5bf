"""Predictor: each hour of event time, the next 168 hours for each sensor.

Uses the sensor's accepted model (an exported LSTM run in numpy: TensorFlow is
never imported by the service) or the seasonal-naive forecast when there is
none. The forecast and its seven ``$FCD`` lines are committed together, then
the Detector (PREDICT) and the Transmitter are told.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from actors.base import UPLINKS, ActorContext, GatewayActor
from core import forecast as forecasting
from core import frames
from core.hourly_history import HourlyHistory
from core.messages import ForecastIssued, HourClosed, ModelChanged, OutboxAppended, Resume
from core.types import EpochSeconds, SensorId

CONSUMER = "predictor"
HOUR_S = 3600
NAIVE_WEEKS = 3


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
        self.issued: dict[str, int] = {}
        self.pending: dict[str, int] = {}
        self.models: dict[SensorId, tuple[str, Any, Any] | None] = {}
        self.histories = HourlyHistory()
        self.days_forecast: dict[SensorId, int] = {}
        self.last_duration_ms = 0.0

    def on_start(self) -> None:
        self.issued = dict((self.store.consumer_state(CONSUMER) or {}).get("issued", {}))
        # Hours that closed while we were down: forecast the latest one (event time) now.
        for sensor, latest in self.store.event_times().sensors.items():
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
        fc = self._compute(sensor, issued)
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
            b.put_doc("forecast", sensor, fc.to_record())
            last = 0
            for frame in frames:
                last = b.append_outbox(frame)
            b.set_offset(CONSUMER, 0, state)
            return last

        last_seq = self.store.transact(write)
        self.last_duration_ms = (time.perf_counter() - started) * 1000
        self.peers.tell("detector", ForecastIssued(sensor, issued))
        if last_seq:
            self.peers.tell_each(UPLINKS, OutboxAppended(last_seq))
        return fc

    def _compute(self, sensor: SensorId, issued: EpochSeconds) -> forecasting.Forecast:
        model = self._model(sensor)
        hours = forecasting.history_hours(*(model[1:] if model else ()), weeks=NAIVE_WEEKS)
        history = self._history(sensor, issued, hours)
        if model is not None:
            version, flow_model, pressure_model = model
            try:
                return forecasting.lstm_forecast(flow_model, pressure_model, sensor, history, issued)
            except Exception:
                self.log.exception("sensor %s: model %s failed; seasonal-naive instead", sensor, version)
        return forecasting.naive_forecast(sensor, history, issued, weeks=NAIVE_WEEKS)

    def _history(self, sensor: SensorId, issued: EpochSeconds, hours: int) -> forecasting.HourlySeries:
        """Hourly means of the hours before ``issued`` (:class:`core.hourly_history.HourlyHistory`:
        only the hours since the previous forecast are read from the store)."""
        return self.histories.series(
            sensor, issued, hours,
            lambda since, until: self.store.reading_arrays(sensor, since=since, until=until))

    def _model(self, sensor: SensorId) -> tuple[str, Any, Any] | None:
        doc = self.store.doc("model", sensor)
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
