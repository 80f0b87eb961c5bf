"""Tests for core.criteria: robust bands, MNF baseline, history file, rebuild schedule."""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path
from zoneinfo import ZoneInfo

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.criteria import (
    SLOTS,
    Band,
    CriteriaError,
    InitialDataError,
    PhysicalRange,
    QuantityCriteria,
    SensorCriteria,
    build_criteria,
    nightly_mnf,
    predict_band,
    read_initial_data,
    rebuild_reason,
    seasonal_naive_expectation,
    slot_of,
    slots_of,
)
from core.types import STATUS_FLOW_FAULT, STATUS_LOW_BATTERY, EpochSeconds, SensorId

TZ = ZoneInfo("Asia/Seoul")
PHYSICAL = PhysicalRange(flow_min=0.0, flow_max=1000.0, pressure_min=0.0, pressure_max=20.0)
NIGHT = (datetime.time(22, 0), datetime.time(5, 0))
# Monday 2026-01-05 00:00 local
T0 = int(datetime.datetime(2026, 1, 5, tzinfo=TZ).timestamp())
DAY = 86400


def true_flow(t: np.ndarray) -> np.ndarray:
    """A diurnal flow curve (m3/h): night minimum ~25 around 03:00, peak ~75 by day."""
    hour = ((t - T0) % DAY) / 3600
    return 50.0 * (1 + 0.5 * np.sin(2 * np.pi * (hour - 9) / 24))


def true_pressure(t: np.ndarray) -> np.ndarray:
    """Pressure sags a little when flow is high."""
    return 4.0 - 0.004 * (true_flow(t) - 50.0)


def diurnal(
    days: float, *, step: int = 60, seed: int = 0, start: int = T0,
    flow_noise: float = 1.5, pressure_noise: float = 0.02,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded clean synthetic history: (time, flow, pressure, status)."""
    rng = np.random.default_rng(seed)
    t = start + np.arange(0, int(days * DAY), step, dtype=np.int64)
    flow = true_flow(t) + rng.normal(0, flow_noise, t.size)
    pressure = true_pressure(t) + rng.normal(0, pressure_noise, t.size)
    return t, flow, pressure, np.zeros(t.size, dtype=np.int64)


def build(t, flow, pressure, status, **kw) -> SensorCriteria | None:
    args = dict(tz=TZ, version=1, source="store", physical=PHYSICAL,
                night_start=NIGHT[0], night_end=NIGHT[1])
    args.update(kw)
    return build_criteria(SensorId("001"), t, flow, pressure, status, **args)


@pytest.fixture(scope="module")
def clean() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return diurnal(28, step=120)


@pytest.fixture(scope="module")
def clean_criteria(clean) -> SensorCriteria:
    crit = build(*clean)
    assert crit is not None
    return crit


def in_band_fraction(q: QuantityCriteria, t: np.ndarray, v: np.ndarray) -> float:
    slots = slots_of(t, TZ)
    low = np.array([b.low for b in q.bands])[slots]
    high = np.array([b.high for b in q.bands])[slots]
    return float(np.mean((v >= low) & (v <= high)))


# -- slots ---------------------------------------------------------------------------


def test_slot_is_local_hour_and_weekend_offset() -> None:
    monday_14_05 = int(datetime.datetime(2026, 1, 5, 14, 5, tzinfo=TZ).timestamp())
    saturday_02 = int(datetime.datetime(2026, 1, 10, 2, 0, tzinfo=TZ).timestamp())
    sunday_23_59 = int(datetime.datetime(2026, 1, 11, 23, 59, tzinfo=TZ).timestamp())
    assert slot_of(monday_14_05, TZ) == 14
    assert slot_of(saturday_02, TZ) == 24 + 2
    assert slot_of(sunday_23_59, TZ) == 24 + 23
    # The same instant is another slot in another zone (UTC: Monday 05:05).
    assert slot_of(monday_14_05, ZoneInfo("UTC")) == 5


@given(st.integers(min_value=1_500_000_000, max_value=2_000_000_000),
       st.sampled_from(["Asia/Seoul", "Asia/Kathmandu", "America/New_York", "UTC"]))
def test_slot_of_matches_vectorised_version(t: int, zone: str) -> None:
    tz = ZoneInfo(zone)
    local = datetime.datetime.fromtimestamp(t, tz)
    expected = local.hour + (24 if local.weekday() >= 5 else 0)
    assert slot_of(t, tz) == expected
    assert int(slots_of(np.array([t]), tz)[0]) == expected


# -- bands -----------------------------------------------------------------------------


def test_bands_contain_clean_data(clean, clean_criteria) -> None:
    t, flow, pressure, _ = clean
    assert clean_criteria.flow is not None and clean_criteria.pressure is not None
    assert in_band_fraction(clean_criteria.flow, t, flow) > 0.999
    assert in_band_fraction(clean_criteria.pressure, t, pressure) > 0.999
    # Fresh data of the following weeks fits as well.
    t2, f2, p2, _ = diurnal(7, step=60, seed=99, start=T0 + 28 * DAY)
    assert in_band_fraction(clean_criteria.flow, t2, f2) > 0.999
    assert in_band_fraction(clean_criteria.pressure, t2, p2) > 0.999


def test_bands_follow_the_diurnal_curve_and_catch_half_excursions(clean_criteria) -> None:
    flow = clean_criteria.flow
    assert flow is not None
    for slot, band in enumerate(flow.bands):
        hour = slot % 24
        mid = float(true_flow(np.array([T0 + hour * 3600 + 1800]))[0])
        assert band.low < mid < band.high
        # A sustained +-50 % excursion from anywhere in the slot leaves the band.
        edge_low = float(true_flow(np.array([T0 + hour * 3600, T0 + hour * 3600 + 3599])).min())
        edge_high = float(true_flow(np.array([T0 + hour * 3600, T0 + hour * 3600 + 3599])).max())
        assert 1.5 * edge_low > band.high, (slot, band)
        assert 0.5 * edge_high < band.low, (slot, band)


def test_steep_ramp_inside_an_hour_does_not_blow_up_the_band() -> None:
    """Flow doubling within one hour is shape, not noise: the band stays useful."""
    t, _, pressure, status = diurnal(21, step=60)
    minute_of_day = ((t - T0) % DAY) // 60
    ramp = np.clip((minute_of_day - 6 * 60) / 60, 0.0, 1.0)  # 06:00-07:00: 20 -> 60
    flow = 20.0 + 40.0 * ramp + np.random.default_rng(2).normal(0, 1.0, t.size)
    crit = build(t, flow, pressure, status)
    assert crit is not None and crit.flow is not None
    band = crit.flow.bands[6]
    assert band.low > 12.0 and band.high < 70.0, band
    hour = T0 + 6 * 3600 + 60 * np.arange(60)
    shape = 20.0 + 40.0 * np.arange(60) / 60
    for factor in (0.5, 1.5):
        # One band per hour cannot follow the ramp (it spans the ramp's whole
        # extent, 20 to 60), but a quarter of the hour (15 minutes, far more than
        # persist_minutes) is out of band: the excursion is caught.
        assert np.mean(np.array([not band.contains(v) for v in factor * shape])) > 0.25
    assert all(crit.flow.band_for(int(ti), TZ).contains(v) for ti, v in zip(hour, shape))


def test_ten_minute_history_band_covers_the_ramp_to_the_hour_end() -> None:
    """With one reading per 10 minutes the last part sits at :50; the ramp goes on."""
    t, _, pressure, status = diurnal(21, step=600)
    minute_of_day = ((t - T0) % DAY) // 60
    ramp = np.clip((minute_of_day - 6 * 60) / 60, 0.0, 1.0)  # 06:00-07:00: 20 -> 60
    flow = 20.0 + 40.0 * ramp + np.random.default_rng(2).normal(0, 1.0, t.size)
    crit = build(t, flow, pressure, status)
    assert crit is not None and crit.flow is not None
    band = crit.flow.bands[6]
    shape = 20.0 + 40.0 * np.arange(60) / 60  # every minute of 06:00-06:59
    assert all(band.contains(v + 2.0) and band.contains(v - 2.0) for v in shape), band


def test_a_past_burst_does_not_widen_the_predict_band() -> None:
    # The seasonal-naive expectation averages past weeks: a two-hour burst on the
    # first Saturday comes back in the expectation of the three Saturdays after it.
    t, flow, pressure, status = diurnal(28, step=60)
    before = build(t, flow, pressure, status)
    burst = (t >= T0 + 5 * DAY + 10 * 3600) & (t < T0 + 5 * DAY + 12 * 3600)
    after = build(t, np.where(burst, 1.7 * flow, flow), np.where(burst, 0.6 * pressure, pressure),
                  status)
    assert before is not None and after is not None
    for name in ("flow", "pressure"):
        b, a = before.quantity(name), after.quantity(name)
        assert b is not None and a is not None
        assert a.residual_band < 1.2 * b.residual_band, (name, b.residual_band, a.residual_band)


def test_relative_floor_keeps_quiet_slots_usable() -> None:
    t, flow, pressure, status = diurnal(14, step=300, pressure_noise=0.0)
    pressure = np.full(t.size, 4.0)  # perfectly flat
    crit = build(t, flow, pressure, status)
    assert crit is not None and crit.pressure is not None
    for band in crit.pressure.bands:
        assert band.low <= 4.0 * 0.95 and band.high >= 4.0 * 1.05


def test_outliers_do_not_widen_the_bands(clean, clean_criteria) -> None:
    t, flow, pressure, status = clean
    rng = np.random.default_rng(5)
    hit = rng.random(t.size) < 0.02
    dirty_flow = flow.copy()
    dirty_flow[hit] *= rng.choice([0.2, 3.0], size=int(hit.sum()))
    dirty_pressure = pressure.copy()
    dirty_pressure[hit] += rng.choice([-2.0, 3.0], size=int(hit.sum()))
    dirty = build(t, dirty_flow, dirty_pressure, status)
    assert dirty is not None
    for name in ("flow", "pressure"):
        before, after = clean_criteria.quantity(name), dirty.quantity(name)
        assert before is not None and after is not None
        for b, a in zip(before.bands, after.bands, strict=True):
            width = b.high - b.low
            assert (a.high - a.low) < 1.15 * width, (name, b, a)
            assert abs((a.high + a.low) - (b.high + b.low)) / 2 < 0.1 * width
        assert after.residual_band < 1.2 * before.residual_band


def test_flagged_missing_and_out_of_range_readings_are_ignored(clean, clean_criteria) -> None:
    t, flow, pressure, status = (a.copy() for a in clean)
    bad = np.arange(t.size) % 7 == 0
    flow[bad] = 900.0  # would drag every band up if used
    status[bad] = STATUS_FLOW_FAULT
    pressure[np.arange(t.size) % 11 == 0] = np.nan
    pressure[np.arange(t.size) % 13 == 0] = 55.0  # above the physical range
    crit = build(t, flow, pressure, status)
    assert crit is not None and crit.flow is not None and crit.pressure is not None
    reference = clean_criteria.flow
    assert reference is not None
    for b, a in zip(reference.bands, crit.flow.bands, strict=True):
        assert abs(a.low - b.low) < 0.1 * (b.high - b.low)
    assert max(b.high for b in crit.pressure.bands) < 5.0


def test_other_quantity_fault_does_not_exclude() -> None:
    t, flow, pressure, status = diurnal(10, step=300)
    status[:] = STATUS_FLOW_FAULT
    crit = build(t, flow, pressure, status)
    assert crit is not None
    assert crit.flow is None and crit.mnf_baseline is None  # every flow reading faulty
    assert crit.pressure is not None
    status[:] = STATUS_LOW_BATTERY  # any other bit: the reading is not "normal" history
    assert build(t, flow, pressure, status) is None


def test_too_little_history_gives_none() -> None:
    assert build(*diurnal(6.5, step=300)) is None
    assert build(*diurnal(7.1, step=300)) is not None
    assert build(*diurnal(10, step=300), min_days=14) is None
    empty = np.array([], dtype=np.int64)
    assert build(empty, empty.astype(float), empty.astype(float), empty) is None


def test_sparse_weekend_slots_borrow_weekday_hours() -> None:
    # Mon..Fri only: no weekend data at all.
    t, flow, pressure, status = diurnal(5, step=120)
    t2, f2, p2, s2 = diurnal(5, step=120, start=T0 + 7 * DAY, seed=1)
    crit = build(*(np.concatenate(x) for x in ((t, t2), (flow, f2), (pressure, p2), (status, s2))))
    assert crit is not None and crit.flow is not None
    assert crit.flow.bands[24 + 7] == crit.flow.bands[7]
    assert crit.flow.bands[7] != crit.flow.bands[13]


def test_metadata(clean, clean_criteria) -> None:
    t = clean[0]
    assert clean_criteria.data_since == t[0]
    assert clean_criteria.data_until == clean_criteria.built_at == t[-1]
    assert clean_criteria.days == pytest.approx((t[-1] - t[0]) / DAY)
    assert clean_criteria.version == 1 and clean_criteria.source == "store"
    with pytest.raises(ValueError):
        build(*clean, source="somewhere")


def test_residual_band_covers_the_naive_forecast_error(clean, clean_criteria) -> None:
    """Judged against the service's seasonal-naive forecast, clean data stays inside."""
    assert clean_criteria.flow is not None and clean_criteria.pressure is not None
    t, flow, pressure, _ = clean
    t2, f2, p2, _ = diurnal(7, step=120, seed=31, start=T0 + 28 * DAY)
    both = np.concatenate([t, t2])
    fresh = both >= t2[0]
    for values, q in ((np.concatenate([flow, f2]), clean_criteria.flow),
                      (np.concatenate([pressure, p2]), clean_criteria.pressure)):
        residual = (values - seasonal_naive_expectation(both, values))[fresh]
        assert np.mean(np.abs(residual) > q.residual_band) < 0.001
    # ... and it is a band, not a blanket: noise sigma 1.5 (flow), 0.02 (pressure).
    assert clean_criteria.flow.residual_band < 12.0
    assert clean_criteria.pressure.residual_band < 0.15


def test_predict_band_adds_the_worst_systematic_error_to_the_noise() -> None:
    rng = np.random.default_rng(4)
    t = T0 + 60 * np.arange(14 * 1440, dtype=np.int64)
    minute_of_day = ((t - T0) % DAY) // 60
    # The forecast is 3.0 low every day 06:00-06:10, else unbiased; noise sigma 0.5.
    systematic = np.where((minute_of_day >= 360) & (minute_of_day < 370), 3.0, 0.0)
    residual = systematic + rng.normal(0, 0.5, t.size)
    band = predict_band(t, residual, TZ)
    assert band == pytest.approx(3.0 + 4 * 0.5, rel=0.1)
    # Outliers (2 %) barely move it; NaN residuals are skipped; too few give None.
    dirty = residual.copy()
    hit = rng.random(t.size) < 0.02
    dirty[hit] = rng.choice([-50.0, 50.0], size=int(hit.sum()))
    dirty[::13] = np.nan
    assert predict_band(t, dirty, TZ) == pytest.approx(band, rel=0.15)
    assert predict_band(t[:40], residual[:40], TZ) is None


def test_residual_band_falls_back_without_week_pairs() -> None:
    crit = build(*diurnal(7.5, step=1800))  # too few minutes a week apart
    assert crit is not None and crit.flow is not None
    assert crit.flow.residual_band > 0


# -- minimum night flow -------------------------------------------------------------------


def test_mnf_baseline_and_allowance(clean_criteria) -> None:
    # The curve's night minimum is 25 at 03:00; 10-minute means of noisy readings sit near it.
    assert clean_criteria.mnf_baseline == pytest.approx(25.0, abs=1.0)
    assert clean_criteria.mnf_allowed_excess is not None
    # A constant leak of 10 % of the baseline must exceed the allowance.
    assert clean_criteria.mnf_allowed_excess < 0.1 * clean_criteria.mnf_baseline
    assert clean_criteria.mnf_allowed_excess >= 0.05 * clean_criteria.mnf_baseline


def test_mnf_allowance_grows_with_night_to_night_spread() -> None:
    t, flow, pressure, status = diurnal(28, step=300)
    rng = np.random.default_rng(3)
    nightly_shift = rng.normal(0, 2.0, 40)  # each night its own level
    night_index = (t - T0 - 22 * 3600) // DAY + 1
    flow = flow + nightly_shift[night_index]
    crit = build(t, flow, pressure, status)
    assert crit is not None and crit.mnf_allowed_excess is not None
    assert crit.mnf_allowed_excess > 0.1 * 25.0


def test_nightly_mnf_windows_and_coverage() -> None:
    t, flow, _, _ = diurnal(3, step=60)
    nights = nightly_mnf(t, flow, TZ, datetime.time(22), datetime.time(5))
    # Nights starting on the evenings of day -1 (only 00:00-05:00 covered: 5/7 > half),
    # day 0 and day 1; the evening of day 2 has 2 of 7 hours: dropped.
    first = (T0 + 9 * 3600) // DAY  # local day number of T0
    assert sorted(nights) == [first - 1, first, first + 1]
    assert all(24.0 < v < 27.0 for v in nights.values())
    # A window inside one day (02:00-04:00), 10-minute data (one reading per block).
    t10, f10 = t[::10], flow[::10]
    narrow = nightly_mnf(t10, f10, TZ, datetime.time(2), datetime.time(4))
    assert sorted(narrow) == [first, first + 1, first + 2]
    assert nightly_mnf(t[:0], flow[:0], TZ, *NIGHT) == {}


# -- serialisation ------------------------------------------------------------------------


def test_the_document_is_readable_and_round_trips(clean_criteria) -> None:
    d = clean_criteria.to_record()
    assert len(d["flow"]["bands"]["weekday"]) == 24
    assert len(d["flow"]["bands"]["weekend"]) == 24
    assert SensorCriteria.from_record(msgpack.unpackb(msgpack.packb(d))) == clean_criteria
    assert SensorCriteria.from_record(json.loads(json.dumps(d))) == clean_criteria


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@st.composite
def quantity_criteria(draw) -> QuantityCriteria:
    bands = []
    for _ in range(SLOTS):
        low = draw(finite)
        bands.append(Band(low, low + draw(st.floats(min_value=0, max_value=1e3))))
    return QuantityCriteria(tuple(bands), draw(finite), draw(finite),
                            draw(st.floats(min_value=0, max_value=1e3)))


@settings(max_examples=30, deadline=None)
@given(
    flow=st.none() | quantity_criteria(),
    pressure=st.none() | quantity_criteria(),
    mnf=st.none() | st.floats(min_value=0, max_value=1e4),
    version=st.integers(min_value=1, max_value=2**31),
    source=st.sampled_from(["initial_data", "store"]),
    times=st.lists(st.integers(min_value=0, max_value=2**40), min_size=3, max_size=3),
)
def test_criteria_round_trip_property(flow, pressure, mnf, version, source, times) -> None:
    a, b, c = sorted(times)
    crit = SensorCriteria(
        SensorId("042"), version, source, EpochSeconds(c), EpochSeconds(a), EpochSeconds(b),
        (b - a) / DAY, flow, pressure, mnf, None if mnf is None else mnf / 10,
    )
    packed = msgpack.unpackb(msgpack.packb(crit.to_record()))
    assert SensorCriteria.from_record(packed) == crit


@pytest.mark.parametrize("mutate", [
    lambda d: d.pop("version"),
    lambda d: d.update(source="elsewhere"),
    lambda d: d.update(format=99),
    lambda d: d["flow"]["bands"]["weekday"].pop(),
    lambda d: d["flow"]["bands"].update(weekend=[[2.0, 1.0]] * 24),
    lambda d: d["flow"]["bands"]["weekday"].__setitem__(0, ["x", 1]),
    lambda d: d["pressure"].pop("residual_band"),
])
def test_reading_back_rejects_bad_documents(clean_criteria, mutate) -> None:
    d = json.loads(json.dumps(clean_criteria.to_record()))
    mutate(d)
    with pytest.raises(CriteriaError):
        SensorCriteria.from_record(d)


# -- rebuild schedule ------------------------------------------------------------------------


def _with_source(crit: SensorCriteria, source: str, built_at: int) -> SensorCriteria:
    d = crit.to_record()
    d.update(source=source, built_at=built_at)
    return SensorCriteria.from_record(d)


@pytest.mark.parametrize(
    ("current", "store_days", "age_days", "expected"),
    [
        (None, 3.0, 0, None),  # not enough store history: nothing better to build from
        (None, 14.0, 0, "first"),
        ("initial_data", 13.9, 200, None),
        ("initial_data", 14.0, 0, "first"),
        ("store", 60.0, 89, None),
        ("store", 60.0, 90, "schedule"),
        ("store", 400.0, 200, "schedule"),
    ],
)
def test_rebuild_reason(clean_criteria, current, store_days, age_days, expected) -> None:
    built_at = 1_800_000_000
    crit = None if current is None else _with_source(clean_criteria, current, built_at)
    reason = rebuild_reason(
        crit, store_days=store_days, newest=EpochSeconds(built_at + age_days * DAY),
        min_days=14, rebuild_days=90,
    )
    assert reason == expected


# -- initial data file ------------------------------------------------------------------------

GOOD = """\
# shipped history, demo site
sensor,time,flow,pressure,status
001,2026-01-05T14:10:00+09:00,8.10,4.10,00
001,2026-01-05T14:00:00+09:00,8.02,4.11,00

2,2026-01-05T05:00:00Z,,3.9,1F
002,2026-01-05T14:00:00+09:00,7.5,,5
001,2026-01-05T14:00:00+09:00,99,99,00
002,2026-01-05T14:10:00+09:00,7.6,3.8,0x10
"""


SHIPPED = Path(__file__).resolve().parent.parent / "conf" / "initial_data.csv"


def test_shipped_initial_data_gives_criteria_for_the_demo_sensors() -> None:
    data = read_initial_data(SHIPPED)
    assert sorted(data) == ["001", "002", "003"]
    for sensor, arrays in data.items():
        t = arrays[0]
        assert t.size == 28 * 144 and set(np.diff(t).tolist()) == {600}
        crit = build(*arrays, source="initial_data")
        assert crit is not None and crit.flow is not None and crit.pressure is not None
        assert crit.mnf_baseline is not None and crit.mnf_allowed_excess is not None
        assert 0.1 * crit.mnf_baseline > crit.mnf_allowed_excess  # a 10 % leak shows


def test_read_initial_data_good_file(tmp_path: Path) -> None:
    path = tmp_path / "initial_data.csv"
    path.write_text(GOOD)
    data = read_initial_data(path)
    assert set(data) == {"001", "002"}
    t, flow, pressure, status = data[SensorId("001")]
    at_14 = int(datetime.datetime(2026, 1, 5, 14, tzinfo=TZ).timestamp())
    assert t.tolist() == [at_14, at_14 + 600]  # sorted, duplicate: first one kept
    assert flow.tolist() == [8.02, 8.10]
    assert pressure.tolist() == [4.11, 4.10]
    assert status.tolist() == [0, 0]
    t, flow, pressure, status = data[SensorId("002")]
    assert t.tolist() == [at_14, at_14 + 600]  # 05:00Z is 14:00+09:00: a duplicate
    assert math.isnan(flow[0]) and flow[1] == 7.6
    assert pressure.tolist() == [3.9, 3.8]
    assert status.tolist() == [0x1F, 0x10]
    assert t.dtype == np.int64 and status.dtype == np.int64 and flow.dtype == np.float64


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("001,2026-01-05T14:20:00,8.0,4.0,00", "UTC offset"),
        ("001,yesterday,8.0,4.0,00", "ISO 8601"),
        ("0001,2026-01-05T14:20:00+09:00,8.0,4.0,00", "sensor"),
        ("000,2026-01-05T14:20:00+09:00,8.0,4.0,00", "sensor"),
        ("001,2026-01-05T14:20:00+09:00,eight,4.0,00", "flow"),
        ("001,2026-01-05T14:20:00+09:00,8.0,inf,00", "pressure"),
        ("001,2026-01-05T14:20:00+09:00,8.0,4.0,ZZ", "status"),
        ("001,2026-01-05T14:20:00+09:00,8.0,4.0,300", "status"),
        ("001,2026-01-05T14:20:00+09:00,8.0,4.0", "fields"),
    ],
)
def test_read_initial_data_bad_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    good = "001,2026-01-05T14:10:00+09:00,1,2,00"
    path.write_text(f"sensor,time,flow,pressure,status\n{good}\n{line}\n")
    with pytest.raises(InitialDataError) as info:
        read_initial_data(path)
    text = str(info.value)
    assert text.startswith(f"{path}:3: ")
    assert message in text


def test_read_initial_data_bad_header_and_empty(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("sid,time,flow,pressure,status\n")
    with pytest.raises(InitialDataError, match=r"h\.csv:1: header"):
        read_initial_data(path)
    path.write_text("\n# nothing\n")
    with pytest.raises(InitialDataError, match="no header"):
        read_initial_data(path)
    path.write_bytes(b"sensor,time,flow,pressure,status\n\xff\xfe\n")
    with pytest.raises(InitialDataError, match="UTF-8"):
        read_initial_data(path)


rows = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=999),
        st.integers(min_value=1_500_000_000, max_value=2_000_000_000),
        st.none() | st.floats(min_value=0, max_value=1e4, allow_nan=False),
        st.none() | st.floats(min_value=0, max_value=20, allow_nan=False),
        st.integers(min_value=0, max_value=255),
    ),
    max_size=30,
)


@settings(max_examples=50, deadline=None)
@given(rows=rows, offset_minutes=st.sampled_from([0, 540, -300, 345]))
def test_read_initial_data_round_trip(tmp_path_factory, rows, offset_minutes) -> None:
    zone = datetime.timezone(datetime.timedelta(minutes=offset_minutes))
    lines = ["sensor,time,flow,pressure,status"]
    expected: dict[str, dict[int, tuple]] = {}
    for sid, t, f, p, s in rows:
        stamp = datetime.datetime.fromtimestamp(t, zone).isoformat()
        lines.append(f"{sid:03d},{stamp},{'' if f is None else repr(f)},"
                     f"{'' if p is None else repr(p)},{s:02X}")
        expected.setdefault(f"{sid:03d}", {}).setdefault(t, (f, p, s))
    path = tmp_path_factory.mktemp("csv") / "data.csv"
    path.write_text("\n".join(lines) + "\n")
    data = read_initial_data(path)
    assert set(data) == set(expected)
    for sid, (t, flow, pressure, status) in data.items():
        want = expected[sid]
        assert t.tolist() == sorted(want)
        for i, ti in enumerate(t.tolist()):
            f, p, s = want[ti]
            assert (math.isnan(flow[i]) if f is None else flow[i] == f)
            assert (math.isnan(pressure[i]) if p is None else pressure[i] == p)
            assert status[i] == s


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=80))
def test_read_initial_data_garbage_is_refused_cleanly(tmp_path_factory, junk: str) -> None:
    path = tmp_path_factory.mktemp("junk") / "data.csv"
    path.write_text("sensor,time,flow,pressure,status\n" + junk + "\n", encoding="utf-8")
    try:
        data = read_initial_data(path)
    except InitialDataError as exc:
        assert str(exc).startswith(f"{path}:")
    else:
        assert all(len(arrays[0]) <= 1 for arrays in data.values())
