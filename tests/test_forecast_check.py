"""Tests for core.forecast_check (model vs seasonal-naive between trainings) and
core.train_schedule (when a model is retrained). Pure: numpy in, decisions out."""

from __future__ import annotations

import datetime
import math
from zoneinfo import ZoneInfo

import msgpack  # the store's encoding of documents
import numpy as np
import pytest

from core import forecast_check as check
from core.forecast import (
    HORIZON_HOURS,
    ExportedModel,
    FeatureSpec,
    Forecast,
    HourlySeries,
    Scaler,
    lstm_forecast,
    naive_forecast,
)
from core.localtime import local_datetime
from core.train_schedule import retrain_at
from core.types import EpochSeconds, SensorId

S = SensorId("001")
H = 3600
DAY = 86400
T0 = EpochSeconds(int(datetime.datetime(2025, 1, 6, tzinfo=datetime.UTC).timestamp()))
WEEKS = 6


def offset_model(quantity: str, offset: float, version: str = "v1") -> ExportedModel:
    """A model whose forecast is its seasonal base plus ``offset`` (a zero network)."""
    spec = FeatureSpec(quantity, lookback_hours=48, step_hours=24)
    units = 4
    return ExportedModel(
        spec, Scaler(50.0, 10.0, 1.0), kernel=np.zeros((spec.features, 4 * units)),
        recurrent_kernel=np.zeros((units, 4 * units)), bias=np.zeros(4 * units),
        dense_kernel=np.zeros((units, HORIZON_HOURS)), dense_bias=np.full(HORIZON_HOURS, offset),
        metadata={"version": version, "residual_band": 1.0},
    )


def noisy_weeks(seed: int = 0, weeks: int = WEEKS) -> np.ndarray:
    hours = np.arange(weeks * 168)
    rng = np.random.default_rng(seed)
    return 50 + 20 * np.sin(2 * np.pi * (hours % 24) / 24) + rng.normal(0, 2, hours.size)


# -- the score: the forecasts the service would have issued, against what came --------------


def test_score_is_the_error_of_the_forecasts_issued_on_each_of_the_last_seven_days():
    flow = noisy_weeks()
    flow[200:230] = np.nan  # gaps are left out, not counted as errors
    history = HourlySeries(T0, flow, flow / 10)
    issued = EpochSeconds(history.end)
    flow_model, pressure_model = offset_model("flow", 0.7), offset_model("pressure", 0.0)
    score = check.recent_score(flow_model, flow, T0, issued)

    errors_model, errors_naive = [], []
    for day in range(1, 8):
        origin = EpochSeconds(issued - day * DAY)
        by_model = lstm_forecast(flow_model, pressure_model, S, history, origin).flow
        by_naive = naive_forecast(S, history, origin).flow
        truth = history.window("flow", origin, HORIZON_HOURS)
        truth[day * 24:] = np.nan  # not come in yet at the check
        ok = np.isfinite(truth) & np.isfinite(by_model) & np.isfinite(by_naive)
        errors_model += list(np.abs(by_model - truth)[ok])
        errors_naive += list(np.abs(by_naive - truth)[ok])
    assert score.hours == len(errors_model) == 24 * (1 + 2 + 3 + 4 + 5 + 6 + 7)
    assert score.model_mae == pytest.approx(np.mean(errors_model), rel=1e-9)
    assert score.naive_mae == pytest.approx(np.mean(errors_naive), rel=1e-9)


def test_score_uses_nothing_from_the_issue_hour_on():
    flow = noisy_weeks()
    issued = T0 + (WEEKS * 168 - 50) * H
    model = offset_model("flow", 0.0)
    before = check.recent_score(model, flow, T0, issued)
    flow[WEEKS * 168 - 50:] = 1e6
    assert check.recent_score(model, flow, T0, issued) == before


def test_a_model_that_misses_by_a_constant_loses_to_naive_and_a_better_one_wins():
    flow = noisy_weeks(seed=0)
    issued = T0 + flow.size * H
    worse = check.recent_score(offset_model("flow", 5.0), flow, T0, issued)
    # Its base is the mean of three weeks, less noisy than naive's median of them.
    better = check.recent_score(offset_model("flow", 0.0), flow, T0, issued)
    assert check.choose(check.MODEL, worse) == check.NAIVE
    assert check.choose(check.NAIVE, better) == check.MODEL
    assert better.model_mae < better.naive_mae == worse.naive_mae


def test_without_a_week_of_history_there_is_no_verdict():
    flow = noisy_weeks(weeks=1)
    score = check.recent_score(offset_model("flow", 9.0), flow, T0, T0 + flow.size * H)
    assert not score.enough
    assert check.choose(check.MODEL, score) == check.MODEL
    empty = check.recent_score(offset_model("flow", 0.0), np.full(10, np.nan), T0, T0 + 10 * H)
    assert empty.hours == 0 and not empty.enough


@pytest.mark.parametrize(("current", "model_mae", "naive_mae", "hours", "want"), [
    (check.MODEL, 5.02, 3.16, 500, check.NAIVE),   # the issue's bad week
    (check.MODEL, 1.00, 0.99, 500, check.MODEL),   # within the margin: no switching to and fro
    (check.NAIVE, 0.99, 1.00, 500, check.NAIVE),
    (check.NAIVE, 0.90, 1.00, 500, check.MODEL),
    (check.MODEL, 5.00, 1.00, check.MIN_HOURS - 1, check.MODEL),  # too little to judge
    (check.MODEL, math.nan, 1.00, 500, check.MODEL),
])
def test_choose_the_better_with_a_margin(current, model_mae, naive_mae, hours, want):
    assert check.choose(current, check.Score(model_mae, naive_mae, hours)) == want


# -- the choice over time -------------------------------------------------------------------


def test_a_switch_is_reported_once_and_a_new_model_starts_on_itself():
    bad = {"flow": check.Score(5.0, 3.0, 500), "pressure": check.Score(0.1, 0.2, 500)}
    choice, switches = check.update(None, "v1", 1000, bad)
    assert choice.use == {"flow": check.NAIVE, "pressure": check.MODEL}
    assert [(s.quantity, s.to) for s in switches] == [("flow", check.NAIVE)]
    assert choice.since == {"flow": 1000, "pressure": 1000}

    assert not choice.due("v1", 1000 + check.CHECK_EVERY_S - H)
    assert choice.due("v1", 1000 + check.CHECK_EVERY_S) and choice.due("v2", 1001)
    again, switches = check.update(choice, "v1", 1000 + DAY, bad)
    assert switches == [] and again.use == choice.use and again.since == choice.since

    good = {"flow": check.Score(2.0, 3.0, 500), "pressure": check.Score(0.1, 0.2, 500)}
    back, switches = check.update(again, "v1", 1000 + 2 * DAY, good)
    assert back.use["flow"] == check.MODEL and back.since["flow"] == 1000 + 2 * DAY
    assert [(s.quantity, s.to) for s in switches] == [("flow", check.MODEL)]

    fresh, switches = check.update(choice, "v2", 1000 + 3 * DAY, {})
    assert fresh.use == {"flow": check.MODEL, "pressure": check.MODEL} and switches == []
    assert fresh.version == "v2" and not fresh.uses_naive()


def test_choice_survives_the_store():
    choice, _ = check.update(None, "v1", 7200, {"flow": check.Score(5.0, 3.0, 500),
                                                 "pressure": check.Score(math.nan, 0.2, 0)})
    back = check.Choice.from_record(msgpack.unpackb(msgpack.packb(choice.to_record())))
    assert back.use == choice.use and back.since == choice.since and back.checked == 7200
    assert back.scores["flow"] == check.Score(5.0, 3.0, 500)
    assert math.isnan(back.scores["pressure"].model_mae) and back.scores["pressure"].hours == 0


def forecast(source: str, level: float, *, bands: bool) -> Forecast:
    values = np.full(HORIZON_HOURS, level)
    band = {} if not bands else {
        "flow_p10": values - 1, "flow_p90": values + 1,
        "pressure_p10": values / 10 - 0.1, "pressure_p90": values / 10 + 0.1}
    return Forecast(S, T0, values, values / 10, source,
                    model_version="v1" if source == "lstm" else None,
                    flow_band=2.0 if source == "lstm" else None,
                    pressure_band=0.2 if source == "lstm" else None, **band)


def test_combine_takes_each_quantity_with_its_bands_from_its_source():
    by_model, by_naive = forecast("lstm", 50.0, bands=True), forecast("naive", 40.0, bands=False)
    assert check.combine(by_model, by_naive, {"flow": "model", "pressure": "model"}) is by_model
    assert check.combine(by_model, by_naive, {"flow": "naive", "pressure": "naive"}) is by_naive
    mixed = check.combine(by_model, by_naive, {"flow": "naive", "pressure": "model"})
    assert (mixed.source, mixed.model_version) == ("lstm", "v1")
    assert mixed.flow[0] == 40.0 and mixed.flow_band is None
    assert mixed.flow_p10 is None and mixed.flow_p90 is None
    assert mixed.pressure[0] == 5.0 and mixed.pressure_band == 0.2
    assert mixed.pressure_p90 is not None and mixed.pressure_p90[0] == pytest.approx(5.1)


# -- the training schedule ------------------------------------------------------------------


SEOUL = ZoneInfo("Asia/Seoul")
BERLIN = ZoneInfo("Europe/Berlin")


def at(tz: ZoneInfo, *args: int) -> int:
    return int(datetime.datetime(*args, tzinfo=tz).timestamp())


def test_retraining_waits_for_the_quiet_hour_after_the_schedule():
    until = at(SEOUL, 2026, 11, 2, 10, 17)  # a Monday, 10:17
    assert retrain_at(until, 7, 3, SEOUL) == at(SEOUL, 2026, 11, 10, 3)  # Tuesday 03:00
    assert retrain_at(until, 7, 12, SEOUL) == at(SEOUL, 2026, 11, 9, 12)  # the same day
    assert retrain_at(at(SEOUL, 2026, 11, 2, 3), 1, 3, SEOUL) == at(SEOUL, 2026, 11, 3, 3)
    # A retraining that gave no model at 03:00 tries again the next night, not every hour.
    failed = at(SEOUL, 2026, 11, 10, 3, 5)
    assert retrain_at(until, 7, 3, SEOUL, failed) == at(SEOUL, 2026, 11, 11, 3)


@pytest.mark.parametrize("day", [datetime.date(2026, 3, 28), datetime.date(2026, 10, 24)])
@pytest.mark.parametrize("hour", [0, 3, 23])
def test_retraining_hour_is_local_across_clock_changes(day, hour):
    until = at(BERLIN, day.year, day.month, day.day, 12)
    t = retrain_at(until, 1, hour, BERLIN)
    local = local_datetime(t, BERLIN)
    assert local.hour == hour and local.minute == 0 and t >= until + DAY
    assert t - (until + DAY) < DAY + H


def test_retraining_hour_in_a_skipped_hour_still_comes_once_that_day():
    until = at(BERLIN, 2026, 3, 28, 1)  # due from 01:00 on the night that skips 02:00-03:00
    t = retrain_at(until, 1, 2, BERLIN)
    assert local_datetime(t, BERLIN) == datetime.datetime(2026, 3, 29, 3, tzinfo=BERLIN)
    assert until + DAY <= t < until + DAY + 2 * H
