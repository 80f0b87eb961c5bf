"""PREDICT with the forecast's hourly P10/P90 band (core.detection.hourly_limits and
core.monitor.expectation_for); without a band it stays as it was (tests/test_detection.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.criteria import RESIDUAL_K, SLOTS, Band, QuantityCriteria, SensorCriteria
from core.detection import Z90, Expectation, hourly_limits, minute_noise
from core.forecast import HORIZON_HOURS, Forecast
from core.monitor import expectation_for
from core.types import FLAG_PREDICT, EpochSeconds
from tests.test_criteria import T0
from tests.test_detection import CRIT, SID, Run, criteria

H = 3600


def test_hourly_limits_add_the_minute_noise_to_each_side_of_the_band():
    low, high = hourly_limits(10.0, 9.0, 12.0, 0.0)
    assert high == pytest.approx(10.0 + RESIDUAL_K * 2.0 / Z90)  # skewed: wider above
    assert low == pytest.approx(10.0 - RESIDUAL_K * 1.0 / Z90)
    low, high = hourly_limits(10.0, 10.0, 10.0, 0.5)  # no hourly spread: the noise alone
    assert (low, high) == pytest.approx((10.0 - RESIDUAL_K * 0.5, 10.0 + RESIDUAL_K * 0.5))
    low, high = hourly_limits(10.0, 11.0, 12.0, 0.5)  # crossed: no band below
    assert low == pytest.approx(10.0 - RESIDUAL_K * 0.5)
    assert minute_noise(Band(5.0, 15.0)) == 1.0  # half-width over BAND_K = 5


def test_a_minute_reading_outside_the_hourly_band_but_within_its_noise_is_not_flagged():
    run = Run()  # criteria: flow band 5-15 in every slot, so minute noise 1.0
    exp = Expectation(10.0, 4.0, 2.0, 0.2, flow_hourly=(9.5, 10.5))
    low, high = hourly_limits(10.0, 9.5, 10.5, 1.0)
    assert 13.0 < high < 15.0
    assert not any(f & FLAG_PREDICT for f in run.flows([13.0] * 10, expectation=exp))
    evs = [run.step(15.0, expectation=exp) for _ in range(3)]
    assert [bool(e.flow_flags & FLAG_PREDICT) for e in evs] == [False, False, True]
    (cause,) = [c for c in evs[-1].causes if c.method == "PREDICT"]
    assert cause.threshold == pytest.approx([low, high])


def test_a_narrow_night_band_catches_what_the_fixed_band_lets_pass():
    night = SensorCriteria(
        SID, 7, "store", EpochSeconds(T0), EpochSeconds(T0 - 30 * 86400), EpochSeconds(T0), 30.0,
        QuantityCriteria((Band(9.5, 10.5),) * SLOTS, 0.0, 10000.0, 2.0),
        QuantityCriteria((Band(3.0, 5.0),) * SLOTS, 0.0, 20.0, 0.2), 2.0, 0.3,
    )
    fixed = Expectation(10.0, 4.0, None, None)
    hourly = Expectation(10.0, 4.0, None, None, flow_hourly=(9.9, 10.1))
    assert not any(f & FLAG_PREDICT for f in Run(night).flows([11.0] * 5, expectation=fixed))
    assert all(f & FLAG_PREDICT for f in Run(night).flows([11.0] * 5, expectation=hourly)[2:])


def test_without_criteria_the_band_falls_back_on_the_models_own():
    exp = Expectation(10.0, 4.0, 2.0, 0.2, flow_hourly=(9.9, 10.1))
    flags = Run(crit=None).flows([11.5] * 5, expectation=exp)
    assert not any(f & FLAG_PREDICT for f in flags)  # 11.5 is within the model's +-2


def test_minute_readings_of_a_calibrated_band_raise_nothing_a_literal_band_would():
    """Hourly means off the forecast as the band says, minutes noisy around them:
    PREDICT stays quiet, where the P10-P90 band taken literally would fire hourly."""
    rng = np.random.default_rng(4)
    sigma_hour, sigma_minute = 0.5, 1.0  # CRIT's flow band 5-15 is 5 minute sigmas wide
    run = Run(criteria(residual=2.0))
    literal = Run(criteria(residual=Z90 * sigma_hour))
    flagged, literal_flagged = 0, 0
    for _ in range(200):
        mean = 10.0 + rng.normal(0, sigma_hour)
        band = (10.0 - Z90 * sigma_hour, 10.0 + Z90 * sigma_hour)
        exp = Expectation(10.0, 4.0, None, None, flow_hourly=band)
        for minute in mean + rng.normal(0, sigma_minute, 60):
            flagged += bool(run.step(minute, expectation=exp).flow_flags & FLAG_PREDICT)
            literal_flagged += bool(literal.step(minute, expectation=Expectation(
                10.0, 4.0, None, None)).flow_flags & FLAG_PREDICT)
    assert flagged == 0
    assert literal_flagged > 1000


# -- the expectation of a minute from a forecast with bands -----------------------------


def banded(issued: int = T0, shift: float = 0.0, **kw) -> Forecast:
    flow = 10.0 + np.arange(HORIZON_HOURS, dtype=float)
    return Forecast(SID, EpochSeconds(issued), flow, flow / 10, "lstm", model_version="v1",
                    flow_band=2.0, pressure_band=0.2,
                    flow_p10=flow - 1.0 + shift, flow_p90=flow + 3.0 + shift, **kw)


def test_the_hourly_band_of_a_minute_follows_the_forecast_between_hour_middles():
    issued = T0 - T0 % H
    fc = banded(issued)
    at_middle = expectation_for(fc, CRIT, EpochSeconds(issued + H // 2))
    assert at_middle.flow == 10.0 and at_middle.flow_hourly == (9.0, 13.0)
    assert at_middle.pressure_hourly is None  # this forecast has no pressure band
    at_hour = expectation_for(fc, CRIT, EpochSeconds(issued + H))
    assert at_hour.flow == 10.5 and at_hour.flow_hourly == (9.5, 13.5)
    # A new forecast of the same sensor brings its own band, not the first one's.
    later = expectation_for(banded(issued, shift=1.0), CRIT, EpochSeconds(issued + H // 2))
    assert later.flow_hourly == (10.0, 14.0)


def test_an_hour_without_band_and_a_forecast_without_bands_judge_as_before():
    issued = T0 - T0 % H
    p10 = 9.0 + np.arange(HORIZON_HOURS, dtype=float)
    p10[3] = math.nan
    fc = banded(issued, pressure_p10=p10 / 10, pressure_p90=p10 / 10 + 0.3)
    gap = expectation_for(fc, CRIT, EpochSeconds(issued + 3 * H + H // 2))
    assert gap.pressure_hourly is None and gap.flow_hourly is not None
    plain = Forecast(SID, EpochSeconds(issued), fc.flow, fc.pressure, "naive")
    exp = expectation_for(plain, CRIT, EpochSeconds(issued + H // 2))
    assert exp.flow_hourly is None and exp.pressure_hourly is None
    assert exp.flow_band == CRIT.flow.residual_band  # the criteria's default band
