"""Tests for core.detection: SYSTEM, VALUE, PREDICT, the NIGHT carry and silence alerts."""

from __future__ import annotations

import math
from collections.abc import Iterable
from zoneinfo import ZoneInfo

import msgpack
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from actors.detector import detection_settings
from core.config import ConfigError, parse_config
from core.criteria import SLOTS, Band, QuantityCriteria, SensorCriteria
from core.detection import (
    AHEAD,
    CONFIRMED,
    IN_TIME,
    JUMP,
    Cause,
    ClockGuard,
    Evaluation,
    Expectation,
    Persistence,
    QuantityState,
    SensorState,
    SystemLimits,
    apply_night_verdict,
    evaluate,
    silence_alerts,
)
from core.frames import AlertFrame, OutboundFrame, ServerReportLine
from core.monitor import DetectionSettings, SiteMonitor
from core.types import (
    FLAG_NIGHT,
    FLAG_PREDICT,
    FLAG_SYSTEM,
    FLAG_VALUE,
    EpochSeconds,
    EventTimes,
    Reading,
    SensorId,
    StoredReading,
)
from tests.test_criteria import T0, build, diurnal, true_flow

TZ = ZoneInfo("Asia/Seoul")
LIMITS = SystemLimits()
SID = SensorId("001")
FLOW_BAND = Band(5.0, 15.0)
PRESSURE_BAND = Band(3.0, 5.0)


def criteria(
    *, flow_range: tuple[float, float] = (0.0, 10000.0), residual: float = 2.0,
    version: int = 7,
) -> SensorCriteria:
    """Flat bands: flow 5-15 m3/h, pressure 3-5 kgf/cm2 in every slot."""
    return SensorCriteria(
        SID, version, "store", EpochSeconds(T0), EpochSeconds(T0 - 30 * 86400),
        EpochSeconds(T0), 30.0,
        QuantityCriteria((FLOW_BAND,) * SLOTS, *flow_range, residual),
        QuantityCriteria((PRESSURE_BAND,) * SLOTS, 0.0, 20.0, 0.2),
        2.0, 0.3,
    )


CRIT = criteria()


class Run:
    """Feed one sensor's readings minute by minute, keeping its state."""

    def __init__(self, crit: SensorCriteria | None = CRIT, start: int = T0) -> None:
        self.state = SensorState()
        self.crit = crit
        self.t = start

    def step(
        self, flow: float | None = 10.0, pressure: float | None = 4.0, status: int = 0, *,
        expectation: Expectation | None = None, time: int | None = None,
        now: int | None = None, limits: SystemLimits = LIMITS, gross_factor: float = 1.0,
    ) -> Evaluation:
        if time is None:
            self.t += 60
            time = self.t
        reading = Reading(SID, EpochSeconds(time), flow, pressure, status)
        return evaluate(
            reading, self.state, limits=limits, criteria=self.crit, expectation=expectation,
            now=EpochSeconds(self.t if now is None else now), tz=TZ, gross_factor=gross_factor,
        )

    def flows(self, values: Iterable[float | None], **kw) -> list[int]:
        return [self.step(v, **kw).flow_flags for v in values]


def reasons(ev: Evaluation, quantity: str | None = None) -> set[str]:
    return {c.reason for c in ev.causes if quantity is None or c.quantity == quantity}


# -- VALUE ----------------------------------------------------------------------------


def test_value_fires_after_persist_holds_and_clears_with_hysteresis() -> None:
    run = Run()
    flags = run.flows([20, 20, 20, 20, 10, 10, 20, 10, 10, 10, 10, 10, 10])
    value = [bool(f & FLAG_VALUE) for f in flags]
    # fires on the 3rd out-of-band reading; one in-band reading during the event
    # does not clear it; the 5th consecutive in-band reading clears it.
    assert value == [False, False, True, True, True, True, True, True, True, True, True,
                     False, False]
    ev = run.step(20.0)
    assert not ev.flow_flags & FLAG_VALUE  # a new run starts from zero


def test_value_run_is_reset_by_an_in_band_reading_before_firing() -> None:
    run = Run()
    assert not any(f & FLAG_VALUE for f in run.flows([20, 20, 10, 20, 20, 10, 1, 1]))
    assert run.step(1.0).flow_flags & FLAG_VALUE  # 3rd low in a row


def test_value_cause_names_band_observed_and_version() -> None:
    run = Run()
    run.flows([2, 2])
    ev = run.step(2.0)
    (cause,) = [c for c in ev.causes if c.method == "VALUE"]
    assert cause == Cause("VALUE", "flow", "band", 2.0, [5.0, 15.0], 7)
    assert ev.pressure_flags == 0


def test_value_for_pressure_independently() -> None:
    run = Run()
    evs = [run.step(10.0, p) for p in (6.0, 6.0, 6.0)]
    assert evs[-1].pressure_flags == FLAG_VALUE and evs[-1].flow_flags == 0


def test_value_persist_and_clear_are_configurable() -> None:
    run = Run()
    kw = dict(limits=LIMITS, criteria=CRIT, expectation=None, tz=TZ,
              persist_minutes=1, clear_minutes=2)
    flags = []
    for i, v in enumerate([20.0, 10.0, 10.0]):
        r = Reading(SID, EpochSeconds(T0 + 60 * i), v, 4.0)
        flags.append(evaluate(r, run.state, now=r.time, **kw).flow_flags)
    assert flags == [FLAG_VALUE, FLAG_VALUE, 0]


# Flow band 5-15 (width 10): with gross_factor 1 a flow above 25 or below -5 is gross.
@pytest.mark.parametrize("spike", [25.01, 60.0, 9000.0])
def test_a_gross_outlier_fires_value_on_its_first_reading_and_clears_as_others(spike) -> None:
    run = Run()
    run.flows([10.0] * 3)
    first = run.step(spike)
    assert first.flow_flags == FLAG_VALUE and first.pressure_flags == 0
    (cause,) = first.causes
    assert (cause.method, cause.reason, cause.observed) == ("VALUE", "gross", spike)
    assert cause.threshold == [-5.0, 25.0]
    # Hysteresis as for any VALUE alert: clear_minutes (5) normal readings.
    after = [bool(f & FLAG_VALUE) for f in run.flows([10.0] * 6)]
    assert after == [True, True, True, True, False, False]


@pytest.mark.parametrize("value", [25.0, 20.0, 0.0])
def test_out_of_band_but_not_gross_still_waits_for_persist(value) -> None:
    run = Run()
    assert [bool(f & FLAG_VALUE) for f in run.flows([value] * 3)] == [False, False, True]


def test_gross_factor_scales_the_margin_and_zero_turns_it_off() -> None:
    assert Run().step(35.0, gross_factor=2.0).flow_flags == 0  # 15 + 2 * 10, not beyond
    assert Run().step(35.01, gross_factor=2.0).flow_flags == FLAG_VALUE
    assert Run().step(1000.0, gross_factor=0.0).flow_flags == 0
    low = Run().step(10.0, 0.99)  # pressure band 3-5: below 3 - 2 is gross
    assert low.pressure_flags == FLAG_VALUE and reasons(low) == {"gross"}


@pytest.mark.parametrize("value, ok", [(0, True), (2.5, True), (100, True), (-0.5, False),
                                       (101, False), ("1", False), (True, False)])
def test_gross_factor_is_a_validated_config_key_the_detector_uses(value, ok) -> None:
    document = {"detection": {"gross_factor": value}}
    if not ok:
        with pytest.raises(ConfigError, match="detection.gross_factor"):
            parse_config(document)
        return
    assert detection_settings(parse_config(document)).gross_factor == float(value)
    assert detection_settings(parse_config({})).gross_factor == 1.0


def test_a_spike_beyond_the_physical_range_is_system_only() -> None:
    run = Run(criteria(flow_range=(0.0, 100.0)))
    ev = run.step(500.0)
    assert ev.flow_flags == FLAG_SYSTEM and reasons(ev) == {"range"}
    assert not run.step(10.0).flow_flags  # and started no VALUE run


def test_a_gross_reading_stamped_ahead_or_late_fires_nothing() -> None:
    run = Run()
    run.flows([10.0, 10.0])
    assert run.step(500.0, time=run.t + 3600, now=run.t).flow_flags == FLAG_SYSTEM
    assert run.step(500.0, time=run.t - 120).flow_flags == 0
    assert not run.state.flow.value.active


def test_band_follows_the_time_of_day_slot() -> None:
    bands = tuple(Band(100.0, 200.0) if s == 14 else FLOW_BAND for s in range(SLOTS))
    crit = SensorCriteria(
        SID, 1, "store", EpochSeconds(T0), EpochSeconds(T0), EpochSeconds(T0), 30.0,
        QuantityCriteria(bands, 0.0, 1e4, 2.0), None, None, None,
    )
    run = Run(crit, start=T0 + 14 * 3600 - 60)  # Monday 14:00 local
    assert not any(f & FLAG_VALUE for f in run.flows([150.0] * 10))
    assert run.flows([10.0] * 3)[-1] & FLAG_VALUE


# -- VALUE on realistic data: quiet on noise, catches excursions -------------------------


@pytest.fixture(scope="module")
def learned() -> SensorCriteria:
    crit = build(*diurnal(28, step=120))
    assert crit is not None
    return crit


def _replay(crit: SensorCriteria, t: np.ndarray, flow: np.ndarray, pressure: np.ndarray):
    state = SensorState()
    out = []
    for ti, f, p in zip(t.tolist(), flow.tolist(), pressure.tolist(), strict=True):
        out.append(evaluate(Reading(SID, EpochSeconds(ti), f, p), state, limits=LIMITS,
                            criteria=crit, expectation=None, now=EpochSeconds(ti), tz=TZ))
    return out


def _onsets(flags: list[int], bit: int) -> int:
    on = [bool(f & bit) for f in flags]
    return sum(1 for a, b in zip([False] + on, on) if b and not a)


def test_value_is_quiet_on_a_fresh_noisy_week(learned) -> None:
    t, flow, pressure, _ = diurnal(7, seed=123, start=T0 + 28 * 86400)
    evs = _replay(learned, t, flow, pressure)
    assert _onsets([e.flow_flags for e in evs], FLAG_VALUE) == 0
    assert _onsets([e.pressure_flags for e in evs], FLAG_VALUE) == 0
    assert not any(e.causes for e in evs)


@pytest.mark.parametrize("factor", [0.5, 1.5, 2.0, 0.2])
def test_value_catches_a_sustained_half_excursion(learned, factor) -> None:
    t, flow, pressure, _ = diurnal(1, seed=7, start=T0 + 29 * 86400)
    flow = flow.copy()
    flow[600:660] *= factor  # one hour, 10:00-11:00
    flags = [e.flow_flags for e in _replay(learned, t, flow, pressure)]
    fired = [i for i, f in enumerate(flags) if f & FLAG_VALUE]
    assert fired and fired[0] <= 602 + 2  # within persist (+ noise) of the onset
    assert all(600 <= i < 665 for i in fired)  # and cleared within clear_minutes after
    assert _onsets(flags, FLAG_VALUE) == 1


def test_shipped_criteria_are_quiet_on_the_simulators_next_week() -> None:
    """conf/initial_data.csv against the week the demo simulator produces after it."""
    from core.criteria import read_initial_data
    from core.simulator import Simulator, SimulatorSettings
    from tests.test_criteria import SHIPPED

    history = read_initial_data(SHIPPED)
    after = int(history[SensorId("001")][0][-1]) + 600
    sim = Simulator(SimulatorSettings(sensors=3, seed=1, start=EpochSeconds(after),
                                      faults=frozenset()))
    readings = list(sim.readings(EpochSeconds(after), 7 * 1440))
    for sensor, arrays in history.items():
        crit = build(*arrays, source="initial_data")
        assert crit is not None
        mine = [r for r in readings if r.sensor == sensor]
        t = np.array([r.time for r in mine])
        evs = _replay(crit, t, np.array([r.flow for r in mine]),
                      np.array([r.pressure for r in mine]))
        assert _onsets([e.flow_flags for e in evs], FLAG_VALUE) == 0
        assert _onsets([e.pressure_flags for e in evs], FLAG_VALUE) == 0


# -- PREDICT ------------------------------------------------------------------------------


def test_predict_fires_holds_and_clears() -> None:
    run = Run()
    exp = Expectation(flow=10.0, pressure=4.0, flow_band=1.0, pressure_band=0.5)
    flags = run.flows([11.5, 11.5, 11.5, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0], expectation=exp)
    predict = [bool(f & FLAG_PREDICT) for f in flags]
    assert predict == [False, False, True, True, True, True, True, False, False]
    assert not any(f & FLAG_VALUE for f in flags)  # 11.5 is inside the 5-15 band


def test_predict_cause_and_default_band_from_criteria() -> None:
    run = Run(criteria(residual=3.0))
    exp = Expectation(flow=10.0, pressure=None, flow_band=None, pressure_band=None)
    assert not any(f & FLAG_PREDICT for f in run.flows([12.5] * 5, expectation=exp))
    evs = [run.step(13.5, expectation=exp) for _ in range(3)]
    assert evs[-1].flow_flags & FLAG_PREDICT and evs[-1].pressure_flags == 0
    (cause,) = [c for c in evs[-1].causes if c.method == "PREDICT"]
    assert cause == Cause("PREDICT", "flow", "forecast", 13.5, [7.0, 13.0], 7)


def test_no_expectation_no_predict() -> None:
    run = Run()
    assert not any(f & FLAG_PREDICT for f in run.flows([14.0] * 10))
    nan_exp = Expectation(flow=math.nan, pressure=None, flow_band=1.0, pressure_band=None)
    assert not any(f & FLAG_PREDICT for f in run.flows([14.0] * 10, expectation=nan_exp))


def test_without_criteria_only_system() -> None:
    # A seasonal-naive forecast brings no band of its own: without criteria there
    # is nothing to judge it by (a model's band is, see the PREDICT test below).
    run = Run(crit=None)
    exp = Expectation(flow=10.0, pressure=4.0, flow_band=None, pressure_band=None)
    evs = [run.step(500.0, 9.0, expectation=exp) for _ in range(10)]
    assert all(e.flow_flags == 0 and e.pressure_flags == 0 for e in evs)
    ev = run.step(None, -1.0)
    assert ev.flow_flags == FLAG_SYSTEM and ev.pressure_flags == FLAG_SYSTEM
    assert all(c.criteria_version is None for c in ev.causes)


# -- SYSTEM ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "flow_flag", "pressure_flag"),
    [
        (0x00, 0, 0),
        (0x01, FLAG_SYSTEM, 0),
        (0x02, 0, FLAG_SYSTEM),
        (0x03, FLAG_SYSTEM, FLAG_SYSTEM),
        (0x04, FLAG_SYSTEM, FLAG_SYSTEM),  # low battery
        (0x08, FLAG_SYSTEM, FLAG_SYSTEM),  # power failure
        (0x10, FLAG_SYSTEM, FLAG_SYSTEM),  # comm error
        (0x20, FLAG_SYSTEM, FLAG_SYSTEM),  # enclosure opened
        (0x80, FLAG_SYSTEM, FLAG_SYSTEM),  # unknown bit: kept and reported
    ],
)
def test_status_bits_per_quantity(status, flow_flag, pressure_flag) -> None:
    ev = Run().step(status=status)
    assert (ev.flow_flags, ev.pressure_flags) == (flow_flag, pressure_flag)
    for c in ev.causes:
        assert c.method == "SYSTEM" and c.reason == "status_bit" and c.observed == status


@pytest.mark.parametrize(("status", "counts"), [(0x04, True), (0x20, True), (0x80, True),
                                                 (0x01, False), (0x08, False), (0x10, False),
                                                 (0x02, True)])
def test_advisory_bits_keep_the_value_judged(status, counts) -> None:
    run = Run()
    run.flows([20.0, 20.0])
    ev = run.step(20.0, status=status)
    assert bool(ev.flow_flags & FLAG_VALUE) == counts
    # An untrusted reading neither counts nor resets: the next one completes the run.
    assert run.step(20.0).flow_flags & FLAG_VALUE


@pytest.mark.parametrize("missing", [None, math.nan])
def test_missing_value(missing) -> None:
    run = Run()
    run.flows([20.0, 20.0])
    ev = run.step(missing)
    assert ev.flow_flags == FLAG_SYSTEM and ev.pressure_flags == 0
    assert reasons(ev) == {"missing"}
    assert ev.causes[0].observed is None
    assert run.step(20.0).flow_flags == FLAG_VALUE  # the run was not reset
    ev = run.step(10.0, None)
    assert ev.pressure_flags == FLAG_SYSTEM and reasons(ev, "pressure") == {"missing"}


def test_range_uses_limits_tightened_never_widened_by_criteria() -> None:
    ev = Run().step(-0.5, 25.0)
    assert ev.flow_flags == ev.pressure_flags == FLAG_SYSTEM
    flow_cause = next(c for c in ev.causes if c.quantity == "flow")
    assert (flow_cause.reason, flow_cause.observed, flow_cause.threshold) == (
        "range", -0.5, [0.0, 10000.0])
    tight = Run(criteria(flow_range=(1.0, 12.0)))
    ev = tight.step(12.5)
    assert ev.flow_flags == FLAG_SYSTEM and ev.causes[0].threshold == [1.0, 12.0]
    wide = Run(criteria(flow_range=(-100.0, 1e9)))
    ev = wide.step(20000.0)
    assert ev.flow_flags == FLAG_SYSTEM and ev.causes[0].threshold == [0.0, 10000.0]


def test_stuck_after_stuck_minutes() -> None:
    run = Run()
    flags = run.flows([12.34] * 32)
    first = flags.index(FLAG_SYSTEM)
    assert first == 30  # 31st identical reading: 30 minutes unchanged
    assert all(f == FLAG_SYSTEM for f in flags[first:])
    cause = run.step(12.34).causes[0]
    assert (cause.reason, cause.observed, cause.threshold) == ("stuck", 32.0, 30.0)
    assert run.step(12.35).flow_flags == 0  # any change releases it


def test_stuck_value_out_of_band_does_not_count_for_value() -> None:
    run = Run()
    short = SystemLimits(stuck_minutes=2)
    flags = [run.step(20.0, 4.0 + i / 100, limits=short).flow_flags for i in range(6)]
    # minutes 0,1 count toward VALUE, from minute 2 the value is stuck: SYSTEM only
    assert flags == [0, 0, FLAG_SYSTEM, FLAG_SYSTEM, FLAG_SYSTEM, FLAG_SYSTEM]


def test_stuck_exemptions_and_resets() -> None:
    run = Run()
    zeros = [run.step(0.0, 4.0 + i / 1000) for i in range(60)]  # zero flow at night is legit
    assert not any("stuck" in reasons(ev) for ev in zeros)
    # pressure stuck at 0 is not exempt
    evs = [run.step(10.0 + i / 100, 0.0) for i in range(40)]
    assert "stuck" in reasons(evs[-1], "pressure")
    # a missing value breaks the run
    run = Run()
    run.flows([11.0] * 20)
    run.step(None)
    assert not any(f & FLAG_SYSTEM for f in run.flows([11.0] * 25))


def test_clock_ahead_flags_both_and_keeps_state() -> None:
    run = Run()
    run.flows([20.0, 20.0])
    now = run.t
    ahead = run.step(20.0, 4.0, time=now + 301, now=now)
    assert ahead.flow_flags == ahead.pressure_flags == FLAG_SYSTEM
    assert reasons(ahead) == {"clock_ahead"}
    assert ahead.causes[0].observed == 301.0 and ahead.causes[0].threshold == 300.0
    assert run.state.last_time == now  # a future stamp does not make the next readings late
    assert run.step(20.0).flow_flags == FLAG_VALUE  # and did not count toward the run
    on_edge = run.step(10.0, 4.0, time=run.t + 300, now=run.t)
    assert on_edge.flow_flags & FLAG_SYSTEM == 0


def test_late_reading_gets_stateless_checks_only() -> None:
    run = Run()
    run.flows([20.0, 20.0])
    before = SensorState.from_record(run.state.to_record())
    late = run.step(20.0, None, time=run.t - 600)
    assert late.flow_flags == 0  # would have completed the VALUE run if in order
    assert late.pressure_flags == FLAG_SYSTEM and reasons(late) == {"missing"}
    dup = run.step(20.0, 4.0, 0x01, time=run.t)  # same time as the newest: late too
    assert dup.flow_flags == FLAG_SYSTEM
    assert run.state == before
    assert run.step(20.0).flow_flags == FLAG_VALUE


# -- clock guard ------------------------------------------------------------------------------

NOW = T0 + 40 * 86400  # a replay: the gateway clock is weeks past the readings


def admit_all(guard: ClockGuard, times: Iterable[int], now: int | Iterable[int] = NOW,
              sensor: str = "001") -> list[tuple[int, str, tuple]]:
    """(time, verdict, released) per reading; a held jump keeps its time as its item."""
    nows = [now] * 10_000 if isinstance(now, int) else list(now)
    out = []
    for t, n in zip(times, nows):
        a = guard.admit(sensor, t, n)
        if a.verdict == JUMP:
            guard.hold(sensor, t)
        out.append((t, a.verdict, a.released))
    return out


def test_guard_a_stamp_ahead_of_the_gateway_clock_is_never_taken_in() -> None:
    guard = ClockGuard(300)
    now = T0 + 3600
    verdicts = admit_all(guard, [T0, T0 + 60, now + 7200, now + 7260, T0 + 120], now=now)
    assert [v for _, v, _ in verdicts] == [IN_TIME, IN_TIME, AHEAD, AHEAD, IN_TIME]
    assert guard.admit("001", now + 301, now).ahead_s == 301.0
    assert guard.admit("002", now + 300, now).verdict == IN_TIME  # on the tolerance


def test_guard_only_a_run_of_readings_ahead_of_the_gateway_clock_says_it_is_behind() -> None:
    guard = ClockGuard(300)
    now = T0 + 3600
    # One stamp far ahead (2099), then the sensor goes on: no evidence.
    admit_all(guard, [T0, 4_070_908_800, T0 + 60], now=now)
    assert guard.ahead_until() is None
    # A clock three days behind: the readings keep arriving ahead of it.
    stale = now - 3 * 86400
    verdicts = admit_all(guard, [now + 60 * m for m in range(6)], now=stale, sensor="002")
    assert {v for _, v, _ in verdicts} == {AHEAD}
    assert guard.ahead_until() == now + 300  # the run spans five minutes
    # Restored from its state, and ended by the sensor's first reading in time.
    restored = ClockGuard(300, msgpack.unpackb(msgpack.packb(guard.state())))
    assert restored.ahead_until() == now + 300
    restored.admit("002", now + 360, now + 360)
    assert restored.ahead_until() is None
    # Stamps ahead but far apart are no run either.
    admit_all(guard, [T0 + 86400 * d for d in range(200, 205)], now=now, sensor="003")
    assert guard.ahead_until() == now + 300


def test_guard_a_single_jump_in_a_replay_is_held_then_dropped_as_a_glitch() -> None:
    guard = ClockGuard(300)
    times = [T0 + 60 * m for m in range(5)] + [T0 + 6 * 3600 + 17] + [T0 + 300, T0 + 360]
    verdicts = admit_all(guard, times)
    assert [v for _, v, _ in verdicts] == [IN_TIME] * 5 + [JUMP] + [IN_TIME] * 2
    assert guard.admit("001", T0 + 6 * 3600, NOW).verdict == JUMP  # judged afresh
    assert guard.state()["sensors"]["001"][:2] == [T0 + 360, NOW]
    assert guard.state()["site"] == [T0 + 360, NOW]


def test_guard_a_glitch_of_several_minutes_is_not_confirmed() -> None:
    guard = ClockGuard(300)
    glitch = [T0 + 9 * 3600 + 60 * m for m in range(5)]  # spans 4 minutes < 5
    verdicts = admit_all(guard, [T0, *glitch, T0 + 60])
    assert [v for _, v, _ in verdicts] == [IN_TIME] + [JUMP] * 5 + [IN_TIME]
    assert guard.admit("001", T0 + 120, NOW).dropped == 0  # already dropped by T0 + 60


def test_guard_a_sensor_back_after_an_outage_in_a_replay_is_confirmed() -> None:
    guard = ClockGuard(300)
    back = T0 + 3 * 3600
    verdicts = admit_all(guard, [T0, T0 + 60] + [back + 60 * m for m in range(8)])
    assert [v for _, v, _ in verdicts] == [IN_TIME] * 2 + [JUMP] * 5 + [CONFIRMED] + [IN_TIME] * 2
    # The confirming reading (5 minutes on) releases the held ones, oldest first.
    assert verdicts[7][2] == tuple(back + 60 * m for m in range(5))


def test_guard_live_a_sensor_back_after_an_outage_is_in_time() -> None:
    guard = ClockGuard(300)
    # The gateway clock moves with the readings: three silent hours are no jump.
    times = [T0, T0 + 60, T0 + 3 * 3600, T0 + 3 * 3600 + 60]
    assert [v for _, v, _ in admit_all(guard, times, now=[t + 5 for t in times])] == [IN_TIME] * 4


def test_guard_a_second_outage_while_held_keeps_the_held_readings() -> None:
    guard = ClockGuard(300)
    first, second = T0 + 3600, T0 + 2 * 3600
    times = [T0, first, first + 60, second] + [second + 60 * m for m in range(1, 6)]
    verdicts = admit_all(guard, times)
    assert [v for _, v, _ in verdicts] == [IN_TIME] + [JUMP] * 7 + [CONFIRMED]
    assert verdicts[-1][2] == (first, first + 60, *(second + 60 * m for m in range(5)))


def test_guard_a_reading_stamped_before_held_ones_drops_them() -> None:
    guard = ClockGuard(300)
    verdicts = admit_all(guard, [T0, T0 + 6 * 3600, T0 + 3600, T0 + 3660])
    assert [v for _, v, _ in verdicts] == [IN_TIME, JUMP, JUMP, JUMP]
    assert guard.state()["sensors"]["001"][2] == [[T0 + 3600, T0 + 3660]] * 2
    a = guard.admit("001", T0 + 3630, NOW)  # drops the later one, keeps the earlier
    assert (a.verdict, a.dropped) == (JUMP, 1)


def test_guard_held_readings_the_gateway_clock_caught_up_with_are_released() -> None:
    guard = ClockGuard(300)
    assert admit_all(guard, [T0, T0 + 600])[1][1] == JUMP
    # Ten minutes of wall clock later the old timeline stands at T0 + 600: the
    # next reading is in time and the held one, stamped before it, is taken in.
    a = guard.admit("001", T0 + 660, NOW + 600)
    assert (a.verdict, a.released, a.dropped) == (IN_TIME, (T0 + 600,), 0)


def test_guard_replay_a_sensor_silent_while_the_others_went_on_is_in_time() -> None:
    guard = ClockGuard(300)
    for m in range(180):  # 002 reports throughout, 001 falls silent for two hours
        if not 30 <= m < 150:
            assert guard.admit("001", T0 + 60 * m, NOW).verdict == IN_TIME
        assert guard.admit("002", T0 + 60 * m, NOW).verdict == IN_TIME
    # ... but a glitch of 001 ahead of the whole site is still a jump.
    assert guard.admit("001", T0 + 6 * 3600, NOW).verdict == JUMP


def test_guard_a_gateway_clock_jumping_back_makes_no_jump() -> None:
    guard = ClockGuard(300)
    assert guard.admit("001", T0, T0 + 86400).verdict == IN_TIME
    # NTP set the clock back a day: the sensor's next minute is still in time.
    assert guard.admit("001", T0 + 60, T0 + 65).verdict == IN_TIME


def test_guard_state_round_trip_mid_jump_through_msgpack() -> None:
    a = ClockGuard(300)
    admit_all(a, [T0, T0 + 3600, T0 + 3660])
    b = ClockGuard(300, msgpack.unpackb(msgpack.packb(a.state())))
    for guard in (a, b):
        verdict = guard.admit("001", T0 + 3900, NOW)
        assert verdict.verdict == CONFIRMED and verdict.released == (T0 + 3600, T0 + 3660)


@given(
    gaps=st.lists(st.sampled_from([1, 1, 1, 1, 2, 10, 90, 600]), min_size=1, max_size=40),
    glitch_at=st.integers(1, 39), glitch_len=st.integers(1, 4),
    glitch_ahead=st.integers(6, 24 * 60),
)
@settings(max_examples=150, deadline=None)
def test_guard_replay_takes_in_every_true_minute_once_in_order_and_no_glitch(
        gaps, glitch_at, glitch_len, glitch_ahead) -> None:
    # A replayed minute stream with outages (gaps) and, somewhere, a clock glitch
    # of 1-4 readings stamped hours ahead: every true reading is taken in once,
    # in time order, and none of the glitch's.
    times, t = [], T0
    for gap in gaps:
        t += 60 * gap
        times.append(t)
    cut = min(glitch_at, len(times))
    glitch = [times[cut - 1] + glitch_ahead * 60 + 17 + 60 * i if cut else T0 + 86400 + 60 * i
              for i in range(glitch_len)]
    # The next true reading lands before the glitch (else it would continue it).
    assume(cut == len(times) or times[cut] < glitch[0])
    stream = times[:cut] + glitch + times[cut:]
    guard = ClockGuard(300)
    taken: list[int] = []
    for verdict_t, verdict, released in admit_all(guard, stream):
        taken += list(released)
        if verdict in (IN_TIME, CONFIRMED):
            taken.append(verdict_t)
    still_held = guard.state()["sensors"]["001"][2]
    held = still_held[1] if still_held else []
    assert not set(taken) & set(glitch)
    # True readings after an outage at the very end may still wait; so may the
    # glitch when nothing came after it.
    assert taken + [h for h in held if h not in glitch] == times


# -- the monitor: event time and clock jumps ---------------------------------------------------


def monitor_run(readings: list[Reading], now: int | None = None,
                monitor: SiteMonitor | None = None) -> tuple[SiteMonitor, list[dict]]:
    """Readings one by one through a SiteMonitor (``now`` None: live, each at its minute)."""
    monitor = monitor or SiteMonitor(DetectionSettings(LIMITS), TZ)
    frames: list[OutboundFrame] = []
    for i, r in enumerate(readings, start=1):
        out = monitor.process([StoredReading(i, r)],
                              now=EpochSeconds(r.time // 60 * 60 if now is None else now),
                              criteria=lambda s: None, expectation=lambda s, t: None)
        frames += out.frames
    return monitor, frames


def reported(frames: list[OutboundFrame]) -> dict[int, ServerReportLine]:
    return {f.time: f for f in frames if isinstance(f, ServerReportLine) and f.flow is not None}


def alerted(frames: list[OutboundFrame]) -> dict[int, AlertFrame]:
    return {f.time: f for f in frames if isinstance(f, AlertFrame)}


def minute_readings(start: int, count: int) -> list[Reading]:
    """Minutes of a healthy sensor (values vary: nothing is stuck)."""
    return [Reading(SID, EpochSeconds(start + 60 * m), 10.0 + m % 7 / 10, 4.0 + m % 3 / 100, 0)
            for m in range(count)]


def test_monitor_replay_a_reading_jumping_ahead_moves_no_event_time() -> None:
    normal = minute_readings(T0, 120)
    jump = Reading(SID, EpochSeconds(T0 + 60 * 60 + 6 * 3600 + 17), 40.0, 4.0, 0)
    monitor, frames = monitor_run(normal[:60] + [jump] + normal[60:], now=T0 + 30 * 86400)
    alerts = alerted(frames)
    assert alerts[jump.time].flow_flags == alerts[jump.time].pressure_flags == FLAG_SYSTEM
    assert all(alerts[r.time].flow_flags == 0 for r in normal)
    assert monitor.event_now == normal[-1].time and monitor.last_seen[SID] == normal[-1].time
    lines = reported(frames)
    assert sorted(lines) == [r.time for r in normal[:110]]  # every finished block, in full
    assert jump.time not in lines


def test_monitor_live_a_stamp_far_ahead_moves_neither_event_time_nor_the_latest_flags() -> None:
    normal = minute_readings(T0, 30)
    ahead = Reading(SID, EpochSeconds(4_070_908_800), 10.0, 4.0, 0)  # 2099
    monitor, frames = monitor_run(normal[:20] + [ahead] + normal[20:], now=T0 + 30 * 60)
    assert monitor.event_times() == EventTimes({SID: normal[-1].time})
    assert monitor.last_flags[SID] == [normal[-1].time, 0, 0]  # status: the latest in event time
    alert = alerted(frames)[ahead.time]
    assert alert.flow_flags == alert.pressure_flags == FLAG_SYSTEM


def test_monitor_replay_an_outage_is_reported_once_the_return_is_confirmed() -> None:
    before, after = minute_readings(T0, 30), minute_readings(T0 + 3 * 3600, 30)
    monitor, frames = monitor_run(before + after, now=T0 + 30 * 86400)
    alerts = alerted(frames)
    # The first five minutes back are flagged until the sixth confirms them ...
    flagged = [r.time for r in after if alerts[r.time].flow_flags & FLAG_SYSTEM]
    assert flagged == [r.time for r in after[:5]]
    # ... and then reported with the rest: nothing of the sensor's is lost.
    lines = reported(frames)
    assert sorted(lines) == [r.time for r in before + after[:20]]
    assert [lines[r.time].flow_flags for r in after[:6]] == [FLAG_SYSTEM] * 5 + [0]
    assert monitor.event_now == after[-1].time
    hours = {f.time // 3600 for f in frames if isinstance(f, ServerReportLine)}
    assert len(hours) >= 2


def test_monitor_live_a_sensor_back_after_an_outage_is_not_a_clock_fault() -> None:
    before, after = minute_readings(T0, 30), minute_readings(T0 + 3 * 3600, 30)
    _, frames = monitor_run(before + after)
    assert not any(f.flow_flags for f in alerted(frames).values())


def test_monitor_state_round_trip_while_a_jump_is_held() -> None:
    before, after = minute_readings(T0, 30), minute_readings(T0 + 3 * 3600, 30)
    now = T0 + 30 * 86400
    _, expected = monitor_run(before + after, now=now)
    first, frames = monitor_run(before + after[:3], now=now)
    state = msgpack.unpackb(msgpack.packb(first.state()))
    rebuilt = SiteMonitor(DetectionSettings(LIMITS), TZ, state)
    _, rest = monitor_run(after[3:], now=now, monitor=rebuilt)
    assert frames + rest == expected


# -- NIGHT carry ----------------------------------------------------------------------------


def test_night_verdict_is_carried_on_every_flow_evaluation() -> None:
    run = Run()
    cause = {"observed": 2.6, "threshold": 2.3, "criteria_version": 7, "night": "2026-01-05"}
    apply_night_verdict(run.state, True, cause)
    for ev in (run.step(), run.step(None), run.step(time=run.t - 3000)):
        assert ev.flow_flags & FLAG_NIGHT and not ev.pressure_flags & FLAG_NIGHT
        assert Cause("NIGHT", "flow", "mnf", 2.6, 2.3, 7) in ev.causes
    restored = SensorState.from_record(msgpack.unpackb(msgpack.packb(run.state.to_record())))
    assert restored.night_active and restored.night_cause == cause
    apply_night_verdict(run.state, False, None)
    assert run.step().flow_flags == 0 and run.state.night_cause is None


# -- records and state ----------------------------------------------------------------------


def test_evaluation_record_round_trips_through_msgpack() -> None:
    run = Run()
    run.flows([20.0, 20.0])
    ev = run.step(20.0, 30.0, 0x04)
    record = msgpack.unpackb(msgpack.packb(ev.to_record()))
    assert record["flow_flags"] == FLAG_SYSTEM | FLAG_VALUE
    assert {(c["method"], c["reason"]) for c in record["causes"]} == {
        ("SYSTEM", "status_bit"), ("VALUE", "band"), ("SYSTEM", "range")}
    assert Evaluation.from_record(record) == ev


persistence = st.builds(Persistence, st.integers(0, 10**6), st.booleans(), st.integers(0, 10**6))
quantity_state = st.builds(
    QuantityState,
    st.none() | st.floats(allow_nan=False),
    st.none() | st.integers(0, 2**40),
    persistence, persistence,
)
json_scalars = st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(
    allow_nan=False) | st.text(max_size=10)


@settings(max_examples=100, deadline=None)
@given(st.builds(
    SensorState,
    last_time=st.none() | st.integers(0, 2**40),
    flow=quantity_state, pressure=quantity_state, night_active=st.booleans(),
    night_cause=st.none() | st.dictionaries(st.text(max_size=10), json_scalars, max_size=4),
))
def test_state_round_trip(state: SensorState) -> None:
    assert SensorState.from_record(msgpack.unpackb(msgpack.packb(state.to_record()))) == state


def test_fresh_state_from_empty_dict() -> None:
    assert SensorState.from_record({}) == SensorState()


# -- silence --------------------------------------------------------------------------------


def test_silence_alerts_once_per_silent_minute() -> None:
    seen = {SensorId("001"): EpochSeconds(T0), SensorId("002"): EpochSeconds(T0 + 240)}
    alerted: dict[SensorId, EpochSeconds] = {}

    def due(now: int) -> list[tuple[str, int]]:
        return silence_alerts(seen, alerted, EpochSeconds(T0 + now), 5)

    assert due(299) == []
    assert due(300) == [("001", T0 + 300)]
    assert due(330) == []  # not twice for the same minute
    assert due(425) == [("001", T0 + 360), ("001", T0 + 420)]
    assert due(545) == [("001", T0 + 480), ("001", T0 + 540), ("002", T0 + 540)]
    assert alerted == {"001": T0 + 540, "002": T0 + 540}
    # 001 comes back, then goes silent again: a new silence of its own
    seen[SensorId("001")] = EpochSeconds(T0 + 600)
    assert due(899) == [("002", T0 + m) for m in (600, 660, 720, 780, 840)]
    assert due(900) == [("001", T0 + 900), ("002", T0 + 900)]


def test_silence_alerts_cap_keeps_the_newest() -> None:
    seen = {SensorId("007"): EpochSeconds(T0)}
    alerted: dict[SensorId, EpochSeconds] = {}
    out = silence_alerts(seen, alerted, EpochSeconds(T0 + 3 * 3600 + 17), 5, max_per_sensor=10)
    newest = T0 + 3 * 3600
    assert out == [("007", newest - 60 * i) for i in range(9, -1, -1)]
    assert alerted["007"] == newest
    assert silence_alerts(seen, alerted, EpochSeconds(newest + 59), 5) == []


def test_flat_band_helpers_are_sane() -> None:
    # guard for the fixtures above: 10.0 is in band, 20.0 and 2.0 are out
    assert FLOW_BAND.contains(10.0) and not FLOW_BAND.contains(20.0)
    assert float(true_flow(np.array([T0 + 3 * 3600]))[0]) == pytest.approx(25.0)


def test_predict_judges_against_a_model_band_without_criteria() -> None:
    from zoneinfo import ZoneInfo

    from core.detection import Expectation, SensorState, SystemLimits, evaluate
    from core.types import FLAG_PREDICT, Reading, SensorId

    state = SensorState()
    flags = []
    for minute in range(5):
        r = Reading(SensorId("001"), 1_800_000_000 + minute * 60, 100.0 + minute, 4.0, 0)
        e = evaluate(r, state, limits=SystemLimits(), criteria=None,
                     expectation=Expectation(20.0, 4.0, 5.0, 0.5), now=2_000_000_000,
                     tz=ZoneInfo("UTC"), persist_minutes=3, clear_minutes=5)
        flags.append(e.flow_flags)
    assert [bool(f & FLAG_PREDICT) for f in flags] == [False, False, True, True, True]
