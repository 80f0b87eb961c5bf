"""Forecasts in the site's local time and calendar: DST weeks, public holidays, hourly bands.

Pure numpy (core.forecast); the models are hand-made, the series synthetic with
a known daily shape, so where the morning peak must land is known exactly.
"""

from __future__ import annotations

import datetime
import json
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.forecast import (
    HORIZON_HOURS,
    Calendar,
    ExportedModel,
    FeatureSpec,
    HourlySeries,
    Scaler,
    holidays_text,
    holidays_value,
    lstm_forecast,
    naive_forecast,
)
from core.localtime import local_datetime
from core.types import EpochSeconds, SensorId

ROME = ZoneInfo("Europe/Rome")
LOCAL = Calendar("Europe/Rome")
S = SensorId("001")
H = 3600
PEAK_HOUR = 7  # local: people get up at 07:00 whatever UTC says
SATURDAY_PEAK = 9


def utc(year: int, month: int, day: int, hour: int) -> int:
    return int(datetime.datetime(year, month, day, hour, tzinfo=datetime.UTC).timestamp())


def local_hours(start: int, hours: int) -> np.ndarray:
    return np.array([local_datetime(start + i * H, ROME).hour for i in range(hours)])


def demand(start: int, hours: int, holidays: frozenset[datetime.date] = frozenset(),
           bridges: frozenset[datetime.date] = frozenset()) -> np.ndarray:
    """Flow with a sharp local morning peak on working days, a later one on Saturdays
    (and bridge days), the latest on rest days."""
    out = np.empty(hours)
    for i in range(hours):
        t = local_datetime(start + i * H, ROME)
        rest = t.weekday() == 6 or t.date() in holidays
        saturday = t.weekday() == 5 or t.date() in bridges
        peak = 10 if rest else SATURDAY_PEAK if saturday else PEAK_HOUR
        out[i] = 20.0 + 30.0 * (t.hour == peak) + 5.0 * (t.hour in (19, 20))
    return out


def zero_model(quantity: str, timezone: str, holidays: str = "") -> ExportedModel:
    """A model whose residual is zero: its forecast is its seasonal base."""
    spec = FeatureSpec(quantity, lookback_hours=48, step_hours=24, timezone=timezone,
                       holidays=holidays)
    u = 4
    return ExportedModel(spec, Scaler(20.0, 10.0, 1.0), np.zeros((spec.features, 4 * u)),
                         np.zeros((u, 4 * u)), np.zeros(4 * u), np.zeros((u, HORIZON_HOURS)),
                         np.zeros(HORIZON_HOURS))


def history_until(issued: int, weeks: int = 9, **kw: frozenset[datetime.date]) -> HourlySeries:
    start = issued - weeks * 168 * H
    flow = demand(start, weeks * 168, **kw)
    return HourlySeries(EpochSeconds(start), flow, 3.0 + flow / 100)


def peak_hours(values: np.ndarray, issued: int) -> list[int]:
    """Local hour of the maximum of each whole local day in a 168-hour forecast."""
    hours = local_hours(issued, HORIZON_HOURS)
    dates = [local_datetime(issued + i * H, ROME).date() for i in range(HORIZON_HOURS)]
    out = []
    for day in sorted(set(dates)):
        mask = np.array([d == day for d in dates])
        if mask.sum() >= 23:  # a whole local day (23 h on spring-forward day)
            out.append(int(hours[mask][np.argmax(values[mask])]))
    return out


# Issued at local midnight of the Monday after each change (and mid-week after it).
SPRING = [utc(2025, 3, 30, 22), utc(2025, 4, 2, 10)]  # change: Sun 2025-03-30 02:00 -> 03:00
AUTUMN = [utc(2025, 10, 26, 23), utc(2025, 10, 29, 15)]  # change: Sun 2025-10-26 03:00 -> 02:00


def forecast_by(kind: str, history: HourlySeries, issued: int):
    """The seasonal-naive forecast or a zero-residual model's, in the site's local calendar."""
    if kind == "naive":
        return naive_forecast(S, history, EpochSeconds(issued), calendar=LOCAL)
    return lstm_forecast(zero_model("flow", "Europe/Rome"), zero_model("pressure", "Europe/Rome"),
                         S, history, EpochSeconds(issued))


@pytest.mark.parametrize("issued", SPRING + AUTUMN)
@pytest.mark.parametrize("kind", ["naive", "lstm"])
def test_morning_peak_stays_on_its_local_hour_across_a_dst_change(issued, kind):
    history = history_until(issued)
    fc = forecast_by(kind, history, issued)
    # Every hour of the 168 is forecast, from the issue hour on.
    assert fc.hour_times()[0] == issued
    assert np.isfinite(fc.flow).all() and np.isfinite(fc.pressure).all()
    # The week before, the peak was at 07:00 local (10:00 on Sunday); so it is in the forecast.
    before = history.flow[-168:]
    want = peak_hours(before, issued - 168 * H)
    assert set(want) == {PEAK_HOUR, SATURDAY_PEAK, 10}
    got = peak_hours(fc.flow, issued)
    assert got and set(got) <= {PEAK_HOUR, SATURDAY_PEAK, 10} and got.count(PEAK_HOUR) >= 4
    truth = demand(issued, HORIZON_HOURS)
    np.testing.assert_allclose(fc.flow, truth, atol=1e-9)


@pytest.mark.parametrize("issued", SPRING + AUTUMN)
def test_utc_weeks_would_put_the_peak_an_hour_off(issued):
    # The old rule (168 UTC hours back) on the same data: the peak moves an hour,
    # which is what the local weeks above fix.
    history = history_until(issued)
    fc = naive_forecast(S, history, EpochSeconds(issued))
    truth = demand(issued, HORIZON_HOURS)
    assert np.abs(fc.flow - truth).max() > 10.0


TUESDAY_HOLIDAY = datetime.date(2025, 11, 4)  # a Tuesday (made up for the test)


@pytest.mark.parametrize("kind", ["naive", "lstm"])
def test_a_holiday_is_forecast_like_a_sunday_and_a_past_one_is_skipped(kind):
    holidays = frozenset({TUESDAY_HOLIDAY - datetime.timedelta(days=14), TUESDAY_HOLIDAY})
    # The Monday before a Tuesday holiday is a bridge day: many take it off.
    bridges = frozenset(d - datetime.timedelta(days=1) for d in holidays)
    issued = utc(2025, 11, 2, 23)  # local midnight, Monday 2025-11-03
    history = history_until(issued, holidays=holidays, bridges=bridges)
    text = holidays_text(tuple(sorted(holidays)))
    if kind == "naive":
        fc = naive_forecast(S, history, EpochSeconds(issued), calendar=Calendar(
            "Europe/Rome", text))
        plain = naive_forecast(S, history, EpochSeconds(issued), calendar=LOCAL)
    else:
        fc = lstm_forecast(zero_model("flow", "Europe/Rome", text), None, S, history,
                           EpochSeconds(issued))
        plain = lstm_forecast(zero_model("flow", "Europe/Rome"), None, S, history,
                              EpochSeconds(issued))
    truth = demand(issued, HORIZON_HOURS, holidays=holidays, bridges=bridges)
    # With the calendar the holiday gets the Sunday peak at 10:00 (the bridge Monday
    # the Saturday's), and the holiday two weeks earlier is not mixed into the
    # working days' forecast.
    np.testing.assert_allclose(fc.flow, truth, atol=1e-9)
    assert peak_hours(fc.flow, issued)[:3] == [SATURDAY_PEAK, 10, PEAK_HOUR]
    # Without it the holiday is forecast as a working day.
    assert peak_hours(plain.flow, issued)[1] == PEAK_HOUR


def test_a_bridge_day_between_a_holiday_and_the_weekend_is_forecast_like_a_saturday():
    thursday = datetime.date(2025, 11, 6)
    friday = thursday + datetime.timedelta(days=1)
    past = thursday - datetime.timedelta(days=21)  # and one three weeks earlier
    holidays = frozenset({thursday, past})
    bridges = frozenset({friday, past + datetime.timedelta(days=1)})
    issued = utc(2025, 11, 2, 23)  # local midnight, Monday 2025-11-03
    start = issued - 9 * 168 * H
    flow = demand(start, 9 * 168, holidays, bridges)
    history = HourlySeries(EpochSeconds(start), flow, flow / 10)
    calendar = Calendar("Europe/Rome", holidays_text(tuple(sorted(holidays))))
    fc = naive_forecast(S, history, EpochSeconds(issued), calendar=calendar)
    np.testing.assert_allclose(fc.flow, demand(issued, HORIZON_HOURS, holidays, bridges),
                               atol=1e-9)
    assert peak_hours(fc.flow, issued)[:5] == [PEAK_HOUR, PEAK_HOUR, PEAK_HOUR, 10,
                                               SATURDAY_PEAK]


def test_a_sensor_without_pressure_gets_an_empty_pressure_forecast_not_a_crash():
    issued = SPRING[0]
    start = issued - 7 * 168 * H
    flow = demand(start, 7 * 168)
    history = HourlySeries(EpochSeconds(start), flow, np.full(flow.shape, np.nan))
    fc = lstm_forecast(zero_model("flow", "Europe/Rome"), zero_model("pressure", "Europe/Rome"),
                       S, history, EpochSeconds(issued))
    assert np.isfinite(fc.flow).all() and np.isnan(fc.pressure).all()
    assert fc.flow_p10 is not None and fc.pressure_p10 is None and fc.pressure_p90 is None
    record = fc.to_record()
    assert record["pressure"] == [None] * HORIZON_HOURS  # empty, not "nan"
    naive = naive_forecast(S, history, EpochSeconds(issued), calendar=LOCAL)
    assert np.isnan(naive.pressure).all() and naive.pressure_p10 is None


@pytest.mark.parametrize("kind", ["naive", "lstm"])
def test_bands_hold_about_eight_in_ten_hours_of_a_noisy_series(kind):
    rng = np.random.default_rng(3)
    issued = utc(2025, 6, 1, 22)
    weeks = 9
    start = issued - weeks * 168 * H
    clean = demand(start, (weeks + 1) * 168)
    noisy = clean * (1 + rng.normal(0, 0.05, clean.shape))
    history = HourlySeries(EpochSeconds(start), noisy[:-168], noisy[:-168] / 10)
    fc = forecast_by(kind, history, issued)
    assert fc.flow_p10 is not None and fc.flow_p90 is not None
    assert (fc.flow_p10 < fc.flow).all() and (fc.flow < fc.flow_p90).all()
    # The band is wider where the flow is higher (errors grow with demand).
    peak = np.argmax(fc.flow)
    width = fc.flow_p90 - fc.flow_p10
    assert width[peak] > 1.5 * np.median(width)
    truth = noisy[-168:]
    inside = float(((truth >= fc.flow_p10) & (truth <= fc.flow_p90)).mean())
    assert 0.6 <= inside <= 0.97


def test_a_history_too_short_for_the_recent_errors_has_no_band():
    issued = SPRING[0]
    history = history_until(issued, weeks=1)
    fc = naive_forecast(S, history, EpochSeconds(issued), calendar=LOCAL)
    assert np.isfinite(fc.flow).any()
    assert fc.flow_p10 is None and fc.flow_p90 is None


def test_a_model_file_from_before_the_holidays_field_still_loads(tmp_path):
    model = zero_model("flow", "Europe/Rome", "IT")
    path = tmp_path / "m.npz"
    model.save(path)
    with np.load(path) as z:
        arrays = {k: np.array(z[k]) for k in z.files}
    header = json.loads(str(arrays["header"]))
    del header["spec"]["holidays"]
    arrays["header"] = np.array(json.dumps(header))
    np.savez(path, **arrays)
    old = ExportedModel.load(path)
    assert old.spec.holidays == "" and old.spec.calendar == Calendar("Europe/Rome")
    assert ExportedModel.load(tmp_path / "m.npz").spec.timezone == "Europe/Rome"


@given(st.lists(st.dates(min_value=datetime.date(1900, 1, 1),
                         max_value=datetime.date(2200, 12, 31)), max_size=20))
def test_holidays_travel_as_text_and_back(dates):
    setting = tuple(dates)
    assert holidays_value(holidays_text(setting)) == (setting if setting else ())


@given(st.sampled_from(["IT", "KR", "DE-BY", ""]))
def test_a_country_code_travels_unchanged(code):
    back = holidays_value(holidays_text(code))
    assert back == (code if code else ())
