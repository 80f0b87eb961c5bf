"""Tests for core.forecast: hourly means, seasonal-naive, Forecast, exported-model inference.

Pure numpy; the check against Keras itself lives in tests/test_training.py.
"""

from __future__ import annotations

import datetime
import math
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import msgpack  # the store's encoding of documents
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.forecast import (
    BAND_HOURS,
    HORIZON_HOURS,
    ExportedModel,
    FeatureSpec,
    Forecast,
    HourlySeries,
    Scaler,
    history_hours,
    hourly_means,
    lstm_forecast,
    naive_forecast,
    naive_history_hours,
    seasonal_base,
    window_features,
)
from core.types import EpochSeconds, SensorId

ROOT = Path(__file__).resolve().parent.parent
TZ = ZoneInfo("Asia/Seoul")
S = SensorId("001")
# Monday 2025-01-06 00:00 UTC (09:00 in Seoul)
T0 = EpochSeconds(int(datetime.datetime(2025, 1, 6, tzinfo=datetime.UTC).timestamp()))
H = 3600


def weekly_pattern(hours: np.ndarray) -> np.ndarray:
    """A series with exactly one-week period: daily shape plus a weekend dip."""
    hour = hours % 24
    day = (hours // 24) % 7
    return 50 + 20 * np.sin(2 * np.pi * hour / 24) - 8 * (day >= 5) + 0.1 * hour * day


def random_model(spec: FeatureSpec, units: int = 8, seed: int = 0,
                 metadata: dict | None = None) -> ExportedModel:
    rng = np.random.default_rng(seed)
    return ExportedModel(
        spec, Scaler(50.0, 10.0, 2.0),
        kernel=rng.normal(0, 0.3, (spec.features, 4 * units)),
        recurrent_kernel=rng.normal(0, 0.3, (units, 4 * units)),
        bias=rng.normal(0, 0.1, 4 * units),
        dense_kernel=rng.normal(0, 0.3, (units, HORIZON_HOURS)),
        dense_bias=rng.normal(0, 0.1, HORIZON_HOURS),
        metadata=metadata or {},
    )


# -- hourly means -------------------------------------------------------------------------


def test_hourly_means_skip_nan_and_mark_empty_hours():
    t = T0 + 60 * np.arange(4 * 60)  # four hours of minutes
    flow = np.full(t.size, 10.0)
    flow[:30] = 20.0                 # hour 0: half 20, half 10 -> 15
    flow[60:120] = np.nan            # hour 1: nothing known
    flow[120:150] = np.nan           # hour 2: only the known half counts
    flow[150:165] = 4.0              # ... 15 minutes of 4, 15 of 10 -> 7
    pressure = np.full(t.size, 3.0)
    keep = (t < T0 + 3 * H + 600) | (t >= T0 + 3 * H + 1800)  # hour 3 is partial: still a mean
    series = hourly_means(t[keep][::-1], flow[keep][::-1], pressure[keep][::-1])  # any order
    assert series.start == T0
    assert series.hours == 4
    np.testing.assert_allclose(series.flow[[0, 2, 3]], [15.0, 7.0, 10.0])
    assert math.isnan(series.flow[1])
    np.testing.assert_allclose(series.pressure, 3.0)
    assert series.end == T0 + 4 * H


def test_hourly_means_gap_hours_and_alignment():
    t = np.array([T0 + 1800, T0 + 5 * H + 59], dtype=np.int64)
    series = hourly_means(t, np.array([1.0, 2.0]), np.array([np.nan, 5.0]))
    assert series.start == T0 and series.hours == 6
    assert series.flow[0] == 1.0 and series.flow[5] == 2.0
    assert np.isnan(series.flow[1:5]).all()
    assert np.isnan(series.pressure[0]) and series.pressure[5] == 5.0


def test_hourly_means_empty():
    series = hourly_means(np.empty(0, np.int64), np.empty(0), np.empty(0))
    assert series.hours == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20 * H), st.one_of(st.none(), st.floats(-1e3, 1e3))),
                min_size=1, max_size=80))
def test_hourly_means_match_a_plain_groupby(rows):
    t = np.array([T0 + dt for dt, _ in rows], dtype=np.int64)
    v = np.array([np.nan if x is None else x for _, x in rows])
    series = hourly_means(t, v, v)
    groups: dict[int, list[float]] = {}
    for ti, vi in zip(t.tolist(), v.tolist()):
        if not math.isnan(vi):
            groups.setdefault(ti // H * H, []).append(vi)
    assert series.start == t.min() // H * H
    for i, got in enumerate(series.flow):
        want = groups.get(series.start + i * H)
        if want is None:
            assert math.isnan(got)
        else:
            assert got == pytest.approx(sum(want) / len(want), abs=1e-9)


def test_window_is_nan_padded():
    series = HourlySeries(T0, np.arange(5.0), np.arange(5.0))
    got = series.window("flow", T0 - 2 * H, 9)
    np.testing.assert_array_equal(got[2:7], np.arange(5.0))
    assert np.isnan(got[[0, 1, 7, 8]]).all()
    with pytest.raises(ValueError):
        series.window("flow", T0 + 1, 3)


# -- seasonal-naive -----------------------------------------------------------------------


@pytest.mark.parametrize("adapt", [True, False])
def test_naive_forecast_of_a_weekly_periodic_series_is_exact(adapt):
    hours = np.arange(5 * 168)
    values = weekly_pattern(hours)
    values_p = 3 + 0.01 * weekly_pattern(hours)
    values[200:230] = np.nan  # a hole in one week: the other weeks fill in
    history = HourlySeries(T0, values, values_p)
    issued = EpochSeconds(T0 + 4 * 168 * H + 5 * H)  # mid-week, history runs past it
    fc = naive_forecast(S, history, issued, adapt=adapt)
    truth_hours = np.arange(4 * 168 + 5, 4 * 168 + 5 + HORIZON_HOURS)
    np.testing.assert_allclose(fc.flow, weekly_pattern(truth_hours), rtol=1e-12)
    np.testing.assert_allclose(fc.pressure, 3 + 0.01 * weekly_pattern(truth_hours), rtol=1e-12)
    assert fc.source == "naive" and fc.model_version is None and fc.flow_band is None


def test_naive_forecast_ignores_history_after_issue():
    hours = np.arange(4 * 168)
    values = weekly_pattern(hours)
    late = values.copy()
    late[3 * 168:] += 1000.0  # the future must not leak into the forecast
    issued = EpochSeconds(T0 + 3 * 168 * H)
    a = naive_forecast(S, HourlySeries(T0, values, values), issued)
    b = naive_forecast(S, HourlySeries(T0, late, late), issued)
    np.testing.assert_array_equal(a.flow, b.flow)


def test_naive_forecast_forecasts_only_hours_seen_a_week_earlier():
    # Two days of a daily cycle: only the horizon's last 48 hours have a value
    # one week before them; the other hours have no basis and no forecast.
    hours = np.arange(48)
    values = 10.0 + hours % 24
    issued = EpochSeconds(T0 + 48 * H)
    fc = naive_forecast(S, HourlySeries(T0, values, values / 10), issued)
    assert np.isnan(fc.flow[:120]).all() and np.isnan(fc.pressure[:120]).all()
    np.testing.assert_allclose(fc.flow[120:], values)  # the same hours a week later
    np.testing.assert_allclose(fc.pressure[120:], values / 10)
    assert fc.expected_at(issued + 30 * 60) == (None, None)
    assert fc.expected_at(issued + 119 * H + 59 * 60) == (None, None)
    # Next to an hour without basis the known hour's value is held, not blended.
    assert fc.expected_at(issued + 120 * H) == (10.0, 1.0)
    assert fc.expected_at(issued + 121 * H) == pytest.approx((10.5, 1.05))


def test_naive_forecast_of_a_first_week_site_has_no_day_it_cannot_fill():
    # Five days of history: the forecast knows the last 120 of its 168 hours, so
    # every local day that starts before them has no daily mean (no $FCD line).
    hours = np.arange(5 * 24)
    values = weekly_pattern(hours)
    issued = EpochSeconds(T0 + 5 * 24 * H)
    fc = naive_forecast(S, HourlySeries(T0, values, values), issued)
    known = np.isfinite(fc.flow)
    assert not known[:48].any() and known[48:].all()
    days = fc.daily_means(ZoneInfo("UTC"))
    assert [math.isnan(flow) for _, flow, _ in days] == [True, True, False, False, False,
                                                         False, False]


@given(st.integers(0, 10 * 24), st.integers(0, HORIZON_HOURS * 60 - 1))
@settings(max_examples=60, deadline=None)
def test_naive_expectation_exists_only_with_a_week_earlier_hour(history_hours, minute):
    # Whatever the history, a minute gets an expectation exactly when its hour
    # has a value one, two or three weeks before it.
    values = weekly_pattern(np.arange(history_hours)).astype(float)
    issued = EpochSeconds(T0 + history_hours * H)
    fc = naive_forecast(S, HourlySeries(T0, values, values), issued)
    hour = minute // 60
    based = any(0 <= history_hours + hour - 168 * k < history_hours for k in (1, 2, 3))
    flow, _ = fc.expected_at(issued + minute * 60)
    assert (flow is not None) == based


def test_naive_forecast_without_history_is_unknown():
    fc = naive_forecast(S, HourlySeries(T0, np.empty(0), np.empty(0)), EpochSeconds(T0))
    assert np.isnan(fc.flow).all() and np.isnan(fc.pressure).all()


def test_seasonal_base_takes_the_mean_or_the_median_of_the_weeks_present():
    values = np.zeros(3 * 168)
    values[:168] = 1.0
    values[168:336] = 5.0
    values[336 + 7] = np.nan
    origin = np.array([3 * 168])
    mean = seasonal_base(values, origin, weeks=3, fit_hours=0)[0]
    median = seasonal_base(values, origin, weeks=3, fit_hours=0, median=True)[0]
    assert mean[0] == pytest.approx(2.0)  # mean of 1, 5, 0 (the LSTM's base)
    assert median[0] == pytest.approx(1.0)  # median of 1, 5, 0 (the naive forecast)
    assert mean[7] == median[7] == pytest.approx((1 + 5) / 2)  # two weeks known
    values[:168 + 7] = np.nan
    assert seasonal_base(values, origin, weeks=3, fit_hours=0)[0][6] == 0.0
    assert seasonal_base(values, origin, weeks=3, fit_hours=0, median=True)[0][6] == 0.0


@pytest.mark.parametrize("adapt", [True, False])
def test_one_past_excursion_does_not_come_back_a_week_later(adapt):
    # Four clean weeks, then a two-hour burst (+60 %) in the last one: the next
    # week's forecast of those hours is the clean pattern (two weeks outvote one).
    hours = np.arange(4 * 168)
    clean = weekly_pattern(hours)
    values = clean.copy()
    burst = slice(3 * 168 + 30, 3 * 168 + 32)
    values[burst] *= 1.6
    issued = EpochSeconds(T0 + 4 * 168 * H)
    fc = naive_forecast(S, HourlySeries(T0, values, clean), issued, adapt=adapt)
    truth = weekly_pattern(np.arange(4 * 168, 4 * 168 + HORIZON_HOURS))
    # A mean of the weeks would bring back a third of the burst; the median none
    # (adapted, the burst moves the fitted level a little: it lies in the fit week).
    echo = np.abs(fc.flow[30:32] - truth[30:32]) / (0.6 * truth[30:32])
    assert (echo < (0.1 if adapt else 1e-9)).all(), echo


def test_adapted_base_follows_a_season_the_plain_mean_lags():
    hours = np.arange(10 * 168)
    season = 1.0 + 0.002 * hours / 24  # +1.4 % a week
    flow = 5.0 + season * weekly_pattern(hours)
    origins = np.array([6 * 168 + 7, 8 * 168])
    truth = flow[origins[:, None] + np.arange(HORIZON_HOURS)]
    plain = seasonal_base(flow, origins, weeks=3, fit_hours=0)
    adapted = seasonal_base(flow, origins, weeks=3)
    plain_err, adapted_err = np.abs(plain - truth).mean(), np.abs(adapted - truth).mean()
    assert plain_err > 1.0
    assert adapted_err < 0.05 * plain_err
    # The future stays out: changing hours from the origin on changes nothing.
    later = flow.copy()
    later[origins[0]:] = 0.0
    np.testing.assert_array_equal(seasonal_base(later, origins[:1], weeks=3), adapted[:1])


def test_adapted_base_of_a_constant_series_is_the_constant():
    values = np.full(5 * 168, 7.5)
    values[::13] = np.nan
    np.testing.assert_allclose(seasonal_base(values, np.array([5 * 168]), weeks=3), 7.5)


# -- Forecast -----------------------------------------------------------------------------


def make_forecast(issued: int = T0, **kw) -> Forecast:
    h = np.arange(HORIZON_HOURS, dtype=float)
    args = {"sensor": S, "issued": EpochSeconds(issued), "flow": 10 + h, "pressure": 3 + 0.01 * h,
            "source": "lstm", "model_version": "v1", "flow_band": 2.5, "pressure_band": 0.1}
    args.update(kw)
    return Forecast(**args)


def test_expected_at_interpolates_between_hour_middles():
    fc = make_forecast()
    assert fc.expected_at(T0 + 1800) == pytest.approx((10.0, 3.0))
    assert fc.expected_at(T0 + 3600) == pytest.approx((10.5, 3.005))  # between hour 0 and 1
    assert fc.expected_at(T0) == pytest.approx((10.0, 3.0))            # held before the middle
    last = T0 + HORIZON_HOURS * H - 60
    assert fc.expected_at(last)[0] == pytest.approx(10.0 + HORIZON_HOURS - 1)
    assert fc.expected_at(T0 - 60) == (None, None)
    assert fc.expected_at(T0 + HORIZON_HOURS * H) == (None, None)


def test_expected_at_unknown_hour_is_none():
    flow = np.full(HORIZON_HOURS, 5.0)
    flow[3] = np.nan
    fc = make_forecast(flow=flow)
    assert fc.expected_at(T0 + 3 * H + 1800)[0] is None
    assert fc.expected_at(T0 + 1 * H + 1800)[0] == 5.0


def test_forecast_validates_shape_and_hour():
    with pytest.raises(ValueError):
        make_forecast(issued=T0 + 60)
    with pytest.raises(ValueError):
        make_forecast(flow=np.zeros(24))
    with pytest.raises(ValueError):
        make_forecast(source="oracle")


def test_daily_means_group_by_local_day():
    # Issued 06:00 UTC = 15:00 in Seoul: the issue day keeps its 9 remaining hours.
    issued = T0 + 6 * H
    local = [datetime.datetime.fromtimestamp(issued + h * H, TZ) for h in range(HORIZON_HOURS)]
    day_index = np.array([(d.date() - local[0].date()).days for d in local], dtype=float)
    fc = make_forecast(issued=issued, flow=day_index * 10 + np.arange(HORIZON_HOURS) % 2,
                       pressure=day_index)
    days = fc.daily_means(TZ)
    assert [d for d, _, _ in days] == [datetime.date(2025, 1, 6) + datetime.timedelta(days=i)
                                       for i in range(7)]
    assert days[0][1] == pytest.approx(np.mean(np.arange(9) % 2))  # 15:00..23:00 local
    for i, (_, flow, pressure) in enumerate(days[1:], start=1):
        assert pressure == i
        assert flow == pytest.approx(10 * i + 0.5)


def test_daily_means_utc_and_unknown_days():
    flow = np.ones(HORIZON_HOURS)
    flow[24:48] = np.nan  # a whole day unknown
    flow[72 + 3] = np.nan  # one hour of a day unknown: no mean of the rest
    days = make_forecast(flow=flow).daily_means(ZoneInfo("UTC"))
    assert len(days) == 7 and days[0][0] == datetime.date(2025, 1, 6)
    assert math.isnan(days[1][1]) and days[2][1] == 1.0
    assert math.isnan(days[3][1]) and days[3][2] == pytest.approx(3 + 0.01 * 83.5)


def test_record_round_trip_keeps_everything_including_nan():
    flow = np.linspace(0, 1, HORIZON_HOURS)
    flow[5] = np.nan
    fc = make_forecast(flow=flow)
    record = fc.to_record()
    assert record["flow"][5] is None
    back = Forecast.from_record(msgpack.unpackb(msgpack.packb(record)))
    assert back == fc
    np.testing.assert_array_equal(back.flow, fc.flow)
    assert (back.model_version, back.flow_band, back.pressure_band) == ("v1", 2.5, 0.1)
    naive = make_forecast(source="naive", model_version=None, flow_band=None, pressure_band=None)
    assert Forecast.from_record(naive.to_record()) == naive
    assert back != naive


# -- exported model -----------------------------------------------------------------------


def test_feature_spec_rejects_partial_steps():
    with pytest.raises(ValueError):
        FeatureSpec("flow", lookback_hours=50, step_hours=24)
    spec = FeatureSpec("flow", lookback_hours=48, step_hours=24)
    assert spec.steps == 2 and spec.features == 30
    assert spec.history_hours == 168 + 3 * 168  # the base's fit window and its weeks
    assert FeatureSpec("flow", lookback_hours=1008).history_hours == 1008


def test_window_features_shape_missing_share_and_calendar():
    spec = FeatureSpec("flow", lookback_hours=48, step_hours=24, timezone="Asia/Seoul")
    values = np.full(300, 50.0)
    values[-24:-12] = np.nan
    x = window_features(values, T0, np.array([300]), spec, Scaler(50.0, 10.0, 2.0))
    assert x.shape == (1, 2, spec.features) and x.dtype == np.float32
    assert (x[0, :, :24] == 0).all()              # at the mean, NaN entered as 0
    assert x[0, 0, 24] == 0.0 and x[0, 1, 24] == 0.5  # missing share per step
    # Independent calendar: step k starts at hour 252 + 24k (local time in Seoul).
    for k in range(2):
        local = datetime.datetime.fromtimestamp(T0 + (252 + 24 * k) * H, TZ)
        hour = local.hour + local.minute / 60
        week = (local.weekday() + hour / 24) / 7
        want = [math.sin(2 * math.pi * hour / 24), math.cos(2 * math.pi * hour / 24),
                math.sin(2 * math.pi * week), math.cos(2 * math.pi * week),
                float(local.weekday() >= 5)]
        np.testing.assert_allclose(x[0, k, 25:], want, atol=1e-6)


def test_weekend_feature_in_local_time():
    # Friday 2025-01-10 16:00 UTC is Saturday 01:00 in Seoul: weekend there, not in UTC.
    spec_seoul = FeatureSpec("flow", lookback_hours=24, step_hours=24, timezone="Asia/Seoul")
    spec_utc = FeatureSpec("flow", lookback_hours=24, step_hours=24)
    origin = (4 * 24 + 16) + 24
    scaler = Scaler(0.0, 1.0, 1.0)
    values = np.zeros(origin)
    assert window_features(values, T0, np.array([origin]), spec_seoul, scaler)[0, 0, -1] == 1.0
    assert window_features(values, T0, np.array([origin]), spec_utc, scaler)[0, 0, -1] == 0.0


def test_save_load_round_trip_is_atomic(tmp_path):
    spec = FeatureSpec("flow", lookback_hours=48, step_hours=24)
    model = random_model(spec, metadata={"version": "v7", "residual_band": 1.5,
                                         "mae_model": {"24h": 1.0}})
    path = tmp_path / "m" / "v7-flow.npz"
    model.save(path)
    model.save(path)  # replacing an existing file
    assert [p.name for p in path.parent.iterdir()] == ["v7-flow.npz"]  # no temporary left
    back = ExportedModel.load(path)
    assert back.spec == spec and back.scaler == model.scaler
    assert back.version == "v7" and back.residual_band == 1.5
    assert back.metadata["mae_model"] == {"24h": 1.0}
    np.testing.assert_array_equal(back.recurrent_kernel, model.recurrent_kernel)
    x = np.random.default_rng(1).normal(size=(3, spec.steps, spec.features))
    np.testing.assert_array_equal(back.predict_scaled(x), model.predict_scaled(x))


def test_load_refuses_what_is_not_a_model(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, something=np.zeros(3))
    with pytest.raises(ValueError):
        ExportedModel.load(bad)
    with pytest.raises(OSError):
        ExportedModel.load(tmp_path / "missing.npz")


def test_numpy_lstm_matches_a_hand_computed_step():
    spec = FeatureSpec("flow", lookback_hours=24, step_hours=24)
    model = random_model(spec, units=2, seed=3)
    x = np.random.default_rng(2).normal(size=(1, 1, spec.features))
    z = x[0, 0] @ model.kernel + model.bias  # h0 = c0 = 0
    def sig(v):
        return 1 / (1 + np.exp(-v))

    i, f, g, o = sig(z[:2]), sig(z[2:4]), np.tanh(z[4:6]), sig(z[6:])
    h = o * np.tanh(i * g + f * 0.0)
    want = h @ model.dense_kernel + model.dense_bias
    np.testing.assert_allclose(model.predict_scaled(x)[0], want, rtol=1e-12)


def test_lstm_forecast_is_base_plus_scaled_residual():
    spec_f = FeatureSpec("flow", lookback_hours=48, step_hours=24)
    spec_p = FeatureSpec("pressure", lookback_hours=48, step_hours=24)
    flow_model = random_model(spec_f, metadata={"version": "v2", "residual_band": 3.0})
    pressure_model = random_model(spec_p, seed=1, metadata={"version": "v2", "residual_band": 0.2})
    # A zero head: the forecast is the seasonal base plus the bias times y_scale.
    flow_model.dense_kernel[:] = 0.0
    flow_model.dense_bias[:] = 0.5
    hours = np.arange(4 * 168)
    values = weekly_pattern(hours)
    history = HourlySeries(T0, values, values / 10)
    issued = EpochSeconds(T0 + 4 * 168 * H)
    fc = lstm_forecast(flow_model, pressure_model, S, history, issued)
    naive = naive_forecast(S, history, issued)
    np.testing.assert_allclose(fc.flow, naive.flow + 0.5 * 2.0)
    assert np.isfinite(fc.pressure).all()
    assert (fc.source, fc.model_version, fc.flow_band, fc.pressure_band) == ("lstm", "v2", 3.0, 0.2)
    assert history_hours(flow_model, pressure_model) == 4 * 168 + BAND_HOURS
    assert history_hours() == naive_history_hours() == 4 * 168 + BAND_HOURS
    with pytest.raises(ValueError):  # models swapped
        lstm_forecast(pressure_model, flow_model, S, history, issued)
    empty = HourlySeries(T0, np.full(10, np.nan), np.full(10, np.nan))
    with pytest.raises(ValueError):
        lstm_forecast(flow_model, pressure_model, S, empty, issued)


def test_service_import_does_not_load_tensorflow():
    code = ("import sys, core.forecast; "
            "bad = [m for m in ('tensorflow', 'keras', 'training') if m in sys.modules]; "
            "assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_record_round_trip_keeps_the_hourly_bands():
    p10 = np.linspace(0, 1, HORIZON_HOURS)
    p10[7] = np.nan
    fc = make_forecast(flow_p10=p10, flow_p90=p10 + 1.0)
    back = Forecast.from_record(msgpack.unpackb(msgpack.packb(fc.to_record())))
    assert back == fc
    np.testing.assert_array_equal(back.flow_p10, p10)
    assert back.flow_p90[0] == 1.0 and back.pressure_p10 is None and back.pressure_p90 is None
    assert back != make_forecast()
    with pytest.raises(ValueError):
        make_forecast(pressure_p90=np.ones(3))
