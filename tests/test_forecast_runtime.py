"""The service side of forecasts: the Predictor's daily model-vs-naive check (real
actor, real store, real model files), the Trainer's weekly schedule at the quiet
hour, ``status`` and the ``forecast`` command's columns."""

from __future__ import annotations

import csv
import io
import logging
import time
from datetime import datetime

import numpy as np

from actors.predictor import Predictor
from actors.trainer import Trainer, commit_training
from cli.commands import write_status
from core import forecast_check, messages
from core.forecast import HORIZON_HOURS, Forecast, HourlySeries, lstm_forecast, naive_forecast
from core.types import EpochSeconds, EventTimes, Reading, SensorId
from storage import documents
from storage.store import Store
from tests.conftest import make_config
from tests.harness import TZ, read, run_cli, write_config
from tests.test_forecast_check import noisy_weeks, offset_model

S1 = SensorId("001")
H = 3600
START = int(datetime(2026, 1, 5, 0, 0, tzinfo=TZ).timestamp())
WEEKS = 6


def hourly_readings(flow: np.ndarray, pressure: np.ndarray) -> list[Reading]:
    """One reading per hour, at :30: each hour's mean is that reading."""
    return [Reading(S1, EpochSeconds(START + h * H + 1800), float(f), float(p), 0)
            for h, (f, p) in enumerate(zip(flow, pressure))]


def install_model(store: Store, tmp_path, version: str, flow_offset: float) -> tuple:
    models = (offset_model("flow", flow_offset, version), offset_model("pressure", 0.0, version))
    paths = {}
    for model in models:
        path = tmp_path / "models" / f"{version}-{model.spec.quantity}.npz"
        model.save(path)
        paths[model.spec.quantity] = str(path)
    store.transact(lambda b: b.put_doc("model", S1, {
        "version": version, "paths": paths, "trained_at": START, "data_since": START,
        "data_until": START}))
    return models


def test_predictor_falls_back_to_naive_per_quantity_says_so_once_and_returns(
        harness, store, tmp_path, caplog):
    # Flow: a model that misses by 5 loses to naive; pressure: the model wins.
    flow, pressure = noisy_weeks(seed=1), noisy_weeks(seed=0) / 10
    store.ingest(hourly_readings(flow, pressure))
    flow_model, pressure_model = install_model(store, tmp_path, "v1", 5.0)
    recorder = harness.record("detector", "transmitter")
    predictor = harness.start(Predictor)
    caplog.set_level(logging.INFO, logger="actors.predictor")

    def forecast_at(hour: int) -> Forecast:
        issued = EpochSeconds(START + hour * H)
        harness.tell(predictor, messages.HourClosed(S1, issued))
        recorder.wait_for(lambda r: messages.ForecastIssued(S1, issued) in r)
        return Forecast.from_record(read(store, lambda v: documents.forecast(v, S1)))

    end = WEEKS * 168
    fc = forecast_at(end)
    history = HourlySeries(EpochSeconds(START), flow, pressure)
    naive = naive_forecast(S1, history, fc.issued)
    by_model = lstm_forecast(flow_model, pressure_model, S1, history, fc.issued)
    np.testing.assert_allclose(fc.flow, naive.flow)
    np.testing.assert_allclose(fc.pressure, by_model.pressure)
    assert (fc.source, fc.model_version, fc.flow_band, fc.pressure_band) == ("lstm", "v1", None, 1.0)
    choice = forecast_check.Choice.from_record(read(store, lambda v: documents.forecast_choice(v, S1)))
    assert choice.use == {"flow": "naive", "pressure": "model"}
    assert choice.scores["flow"].model_mae > choice.scores["flow"].naive_mae
    assert choice.scores["flow"].hours == 24 * 28

    out = io.StringIO()
    write_status(store, harness.context.config, out)
    assert "forecast: flow from seasonal-naive since 2026-02-16T00:00:00+09:00 (last 7 days " \
           "MAE model" in out.getvalue()
    assert "pressure from the model" in out.getvalue()

    forecast_at(end + 1)  # not due again within the day
    forecast_at(end + 25)  # due: checked again, the same verdict
    assert read(store, lambda v: documents.forecast_choice(v, S1))["checked"] == START + (end + 25) * H
    switched = [r.getMessage() for r in caplog.records if "switched" in r.getMessage()]
    assert len(switched) == 1 and "sensor 001: flow forecast switched to seasonal-naive" \
        in switched[0] and r"model v1's MAE" in switched[0], switched
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

    # A new model starts on itself, and is kept while it is not worse.
    install_model(store, tmp_path, "v2", 0.0)
    harness.tell(predictor, messages.ModelChanged(S1, "v2"))
    fc = forecast_at(end + 26)
    assert fc.model_version == "v2" and fc.flow_band == 1.0
    choice = forecast_check.Choice.from_record(read(store, lambda v: documents.forecast_choice(v, S1)))
    assert choice.version == "v2" and not choice.uses_naive()


def test_retraining_starts_at_the_quiet_hour_and_a_failed_one_waits_a_day(
        harness, store, tmp_path):
    harness.context.config = make_config(tmp_path, train={"schedule_days": 7, "hour": 3})
    trainer = Trainer(harness.context)  # not started: its schedule alone
    store.ingest([Reading(S1, EpochSeconds(START), 1.0, 1.0, 0)])
    until = int(datetime(2026, 1, 5, 10, 17, tzinfo=TZ).timestamp())  # a Monday
    store.transact(lambda b: b.put_doc("model", S1, {"version": "v", "data_until": until}))

    def due_at(*when: int) -> bool:
        t = int(datetime(*when, tzinfo=TZ).timestamp())
        store.transact(lambda b: b.set_event_times(EventTimes({S1: EpochSeconds(t)})))
        return trainer._due(S1, time.time())

    assert not due_at(2026, 1, 12, 23, 0), "a week, but not at the quiet hour yet"
    assert not due_at(2026, 1, 13, 2, 59)
    assert due_at(2026, 1, 13, 3, 0)
    # A model that does not beat seasonal-naive on its held-out weeks is never swapped in.
    result = ('{"sensor": "001", "accepted": false, "version": "w", "paths": {"flow": "x"}, '
              '"metadata": {"data_until": 1}}')
    assert not commit_training(store, S1, "rejected", "does not beat seasonal-naive", result, 40.0)
    assert read(store, lambda v: documents.model(v, S1)) == {"version": "v", "data_until": until}
    assert read(store, lambda v: documents.training(v, S1))["event_time"] == read(store, lambda v: v.event_time(S1))
    store.transact(lambda b: b.put_doc("training", S1, {
        **read(store, lambda v: documents.training(v, S1)), "retry_after": time.time() - 1}))
    assert not due_at(2026, 1, 13, 15, 0), "a rejected retraining does not run again hourly"
    assert due_at(2026, 1, 14, 3, 0)


def test_forecast_command_prints_the_band_columns_and_empty_fields(tmp_path):
    path = tmp_path / "store.lmdb"
    issued = EpochSeconds(START)
    flow = 10.0 + np.arange(HORIZON_HOURS, dtype=float)
    flow[5] = np.nan  # an hour without basis
    p10 = flow - 1.0
    p10[6] = np.nan
    with_bands = Forecast(S1, issued, flow, np.full(HORIZON_HOURS, np.nan), "lstm",
                          model_version="v1", flow_p10=p10, flow_p90=flow + 2.0,
                          pressure_p10=np.full(HORIZON_HOURS, np.nan),
                          pressure_p90=np.full(HORIZON_HOURS, np.nan))
    plain = Forecast(SensorId("002"), issued, flow, flow / 10, "naive")
    with Store(path) as store:
        store.ingest([Reading(S1, issued, 1.0, None, 0), Reading(SensorId("002"), issued, 1.0, 1.0, 0)])
        store.transact(lambda b: (b.put_doc("forecast", S1, with_bands.to_record()),
                                  b.put_doc("forecast", "002", plain.to_record())))
    config = write_config(tmp_path / "site.toml", serial_port="loop://", upstream_port="-",
                          store=path)

    done = run_cli(config, "forecast", "--sensor", "001")
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(io.StringIO(done.stdout)))
    assert rows[0] == ["sensor", "time", "flow", "pressure",
                       "flow_p10", "flow_p90", "pressure_p10", "pressure_p90"]
    assert len(rows) == 1 + HORIZON_HOURS
    assert rows[1] == ["001", "2026-01-05T00:00:00+09:00", "10.000", "", "9.000", "12.000", "", ""]
    assert rows[6][2:] == ["", "", "", "", "", ""]  # hour 5: no forecast, no band
    assert rows[7][2:6] == ["16.000", "", "", "18.000"]
    assert "nan" not in done.stdout

    done = run_cli(config, "forecast")
    rows = list(csv.reader(io.StringIO(done.stdout)))
    assert next(r for r in rows if r[0] == "002") == [
        "002", "2026-01-05T00:00:00+09:00", "10.000", "1.000", "", "", "", ""]


def test_the_sensor_page_draws_the_hourly_band_when_the_forecast_has_one():
    from web.series import forecast_series

    flow = 10.0 + np.arange(HORIZON_HOURS, dtype=float)
    p10 = flow - 1.0
    p10[1] = np.nan
    banded = Forecast(S1, EpochSeconds(START), flow, flow / 10, "lstm", flow_band=3.0,
                      flow_p10=p10, flow_p90=flow + 2.0).to_record()
    line, low, high = forecast_series(banded, "flow", START + 3 * H, None)
    assert list(line.value) == [10.0, 11.0, 12.0]
    np.testing.assert_array_equal(low, [9.0, np.nan, 11.0])
    np.testing.assert_array_equal(high, [12.0, 13.0, 14.0])
    _, low, high = forecast_series(banded, "pressure", START + 3 * H, 0.5)  # no band: as PREDICT
    np.testing.assert_allclose(high - low, [1.0, 1.0, 1.0])


def test_the_training_process_gets_the_sites_zone_and_holidays(tmp_path) -> None:
    from actors.trainer import training_command
    from training.run import parse_args

    config = make_config(tmp_path, site={"holidays": ["2026-12-25", "2027-01-01"]})
    args = parse_args(training_command(config, "001")[3:])
    assert args.timezone == "Asia/Seoul"
    assert args.holidays == "2026-12-25,2027-01-01"
