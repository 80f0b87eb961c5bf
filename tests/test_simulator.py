"""The built-in simulator: determinism, random access, realistic shape, faults, URLs."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings as hyp_settings, strategies as st

from core import frames
from core.simulator import (
    EPISODE_MINUTES,
    EPISODIC_KINDS,
    FAULT_KINDS,
    QUIET_S,
    Simulator,
    SimulatorSettings,
    clean_flow,
    clean_pressure,
    sensor_profile,
)
from core.types import Reading

TZ = ZoneInfo("Asia/Seoul")
START = 1_735_657_200  # 2025-01-01 00:00 +09:00, a Wednesday
DAY_MIN = 1440
ALL = frozenset(FAULT_KINDS)


def make(**overrides: object) -> Simulator:
    values: dict[str, object] = {"sensors": 3, "seed": 1, "start": START, "realtime_cap": False}
    values.update(overrides)
    return Simulator(SimulatorSettings(**values))  # type: ignore[arg-type]


def local_hour(t: int) -> int:
    return (t + 9 * 3600) // 3600 % 24


@pytest.fixture(scope="module")
def faulty() -> Simulator:
    return make(faults=ALL)




@pytest.fixture(scope="module")
def clean_week() -> list[Reading]:
    return list(make().readings(START, 7 * DAY_MIN))


# -- determinism and random access ---------------------------------------------------------


def test_same_seed_same_lines_and_different_seed_different_lines() -> None:
    a = make(faults=ALL).lines_for_minutes(START + 3 * 86400, 600)
    b = make(faults=ALL).lines_for_minutes(START + 3 * 86400, 600)
    c = make(faults=ALL, seed=2).lines_for_minutes(START + 3 * 86400, 600)
    assert a == b
    assert a != c
    # Different seeds share the shape but not the noise: most minutes differ.
    assert sum(x != y for x, y in zip(a, c)) > 0.9 * len(a)


@hyp_settings(max_examples=40, deadline=None)
@given(offset=st.integers(0, 30 * DAY_MIN), before=st.integers(0, 200))
def test_random_access_equals_sequential(faulty: Simulator, offset: int, before: int) -> None:
    t = START + 60 * offset
    fresh = make(faults=ALL)  # nothing generated before: no state to lean on
    sequential = faulty.lines_for_minutes(t - 60 * before, before + 1)
    alone = fresh.lines_for_minute(t)
    assert sequential[len(sequential) - len(alone):] == alone
    assert [fresh.truth(s, t) for s in (1, 2, 3)] == [faulty.truth(s, t) for s in (1, 2, 3)]


@hyp_settings(max_examples=25, deadline=None)
@given(first=st.integers(0, 3 * DAY_MIN), cut=st.integers(0, 3000), rest=st.integers(0, 3000))
def test_readings_split_anywhere_equal_one_run(first: int, cut: int, rest: int) -> None:
    sim = make(faults=ALL, start=START - 2 * 86400)  # faults possible from START on
    t0 = START + 60 * first
    whole = list(sim.readings(t0, cut + rest))
    parts = list(sim.readings(t0, cut)) + list(sim.readings(t0 + 60 * cut, rest))
    assert parts == whole


def test_sensor_one_looks_the_same_whatever_the_other_settings() -> None:
    few = list(make(sensors=1).readings(START, 120))
    many = [r for r in make(sensors=5).readings(START, 120) if r.sensor == "001"]
    assert few == many


# -- realism ---------------------------------------------------------------------------------


def test_flow_is_low_at_night_and_high_by_day(clean_week: list[Reading]) -> None:
    for sensor in ("001", "002", "003"):
        night = [r.flow for r in clean_week if r.sensor == sensor and 2 <= local_hour(r.time) < 4]
        day = [r.flow for r in clean_week if r.sensor == sensor and 7 <= local_hour(r.time) < 21]
        assert np.mean(night) < 0.5 * np.mean(day)


def test_weekday_saturday_and_sunday_shapes_differ() -> None:
    wednesday_7h = START + 7 * 3600 + 30 * 60
    saturday_7h, sunday_7h = wednesday_7h + 3 * 86400, wednesday_7h + 4 * 86400
    for sensor in (1, 2, 3):
        weekday, saturday, sunday = (clean_flow(sensor, t, TZ)
                                     for t in (wednesday_7h, saturday_7h, sunday_7h))
        assert weekday > 1.2 * saturday and saturday > 1.1 * sunday
    # The same kind of day has the same shape from week to week (the season aside).
    next_wednesday = clean_flow(1, wednesday_7h + 7 * 86400, TZ)
    assert next_wednesday == pytest.approx(clean_flow(1, wednesday_7h, TZ), rel=0.01)


def test_a_holiday_takes_sundays_shape_in_the_readings() -> None:
    new_year = dt.date(2025, 1, 1)  # START's day, a Wednesday
    holiday = make(holidays=frozenset({new_year}))
    plain = make()
    assert clean_flow(1, START + 8 * 3600, TZ, frozenset({new_year})) == pytest.approx(
        clean_flow(1, START + 4 * 86400 + 8 * 3600, TZ), rel=0.01)  # Sunday the 5th
    a = {(r.sensor, r.time): r.flow for r in holiday.readings(START, DAY_MIN + 60)}
    b = {(r.sensor, r.time): r.flow for r in plain.readings(START, DAY_MIN + 60)}
    morning = [k for k in a if 7 <= local_hour(k[1]) < 8 and k[1] < START + 86400]
    assert sum(a[k] for k in morning) < 0.85 * sum(b[k] for k in morning)
    thursday = [k for k in a if k[1] >= START + 86400]
    assert all(a[k] == b[k] for k in thursday)  # the next day is an ordinary Thursday
    again = {(r.sensor, r.time): r.flow for r in make(holidays=frozenset({new_year}))
             .readings(START, DAY_MIN)}
    assert all(again[k] == a[k] for k in again)  # deterministic


def test_holidays_come_from_the_url() -> None:
    s = SimulatorSettings.from_url("sim://?holidays=20250101,20250128,,20250129")
    assert s.holidays == {dt.date(2025, 1, 1), dt.date(2025, 1, 28), dt.date(2025, 1, 29)}
    for bad in ("2025-01-01", "20251301", "2025011", "x"):
        with pytest.raises(ValueError, match="holidays: expected dates YYYYMMDD"):
            SimulatorSettings.from_url(f"sim://?holidays={bad}")


@given(st.lists(st.dates(min_value=dt.date(1000, 1, 1)), max_size=20))
def test_holiday_lists_round_trip_through_the_url(days: list[dt.date]) -> None:
    url = "sim://?holidays=" + ",".join(f"{d:%Y%m%d}" for d in days)
    assert SimulatorSettings.from_url(url).holidays == frozenset(days)


@given(st.text(max_size=40))
def test_any_holidays_text_is_parsed_or_named(text: str) -> None:
    try:
        SimulatorSettings.from_url("sim://?holidays=" + text.replace("&", "").replace("#", ""))
    except ValueError as exc:
        assert str(exc).startswith("holidays:")


def test_scales_are_spread_and_plausible() -> None:
    scales = [sensor_profile(n).scale for n in range(1, 61)]
    assert all(20 <= s <= 300 for s in scales)
    assert max(scales) > 3 * min(scales)


def test_pressure_moves_against_flow_and_stays_plausible(clean_week: list[Reading]) -> None:
    for sensor in ("001", "002", "003"):
        rows = [r for r in clean_week if r.sensor == sensor]
        flow = np.array([r.flow for r in rows])
        pressure = np.array([r.pressure for r in rows])
        assert np.corrcoef(flow, pressure)[0, 1] < -0.8
        assert 2.5 < pressure.min() and pressure.max() < 5.5


def test_noise_is_a_few_percent_around_the_clean_shape(clean_week: list[Reading]) -> None:
    rows = [r for r in clean_week if r.sensor == "002"]
    ratio = np.array([r.flow / clean_flow(2, r.time, TZ) for r in rows])
    assert abs(ratio.mean() - 1) < 0.01
    assert 0.01 < ratio.std() < 0.06
    residual = np.array([r.pressure - clean_pressure(2, r.time, TZ) for r in rows])
    assert abs(residual.mean()) < 0.005 and 0.005 < residual.std() < 0.05


def test_clean_shape_is_continuous_at_local_midnight() -> None:
    before, after = START - 60, START
    assert clean_flow(1, before, TZ) == pytest.approx(clean_flow(1, after, TZ), rel=0.05)


def test_a_23_hour_dst_day_has_23_hours_of_minutes() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    day = int(dt.datetime(2025, 3, 30, tzinfo=berlin).timestamp())  # clocks go 02:00 -> 03:00
    sim = make(timezone="Europe/Berlin", start=day)
    readings = list(sim.readings(day, 23 * 60))
    assert [r.time for r in readings if r.sensor == "001"] == list(range(day, day + 23 * 3600, 60))
    assert frames.format_local_time(readings[-1].time, berlin) == "20250330235900"
    night = [clean_flow(1, t, berlin) for t in range(day + 3600, day + 3 * 3600, 60)]  # 01-04 local
    assert max(night) < 0.5 * clean_flow(1, day + 18 * 3600, berlin)


# -- wire ------------------------------------------------------------------------------------


def test_every_line_decodes_except_the_garbled_ones() -> None:
    dense = make(faults=ALL, fault_rate=4)
    lines = dense.lines_for_minutes(START, 9 * DAY_MIN)
    decoded = [frames.decode_reading(line, TZ) for line in lines]
    rejects = [d for d in decoded if isinstance(d, frames.Reject)]
    readings = [d for d in decoded if isinstance(d, Reading)]
    assert len(rejects) + len(readings) == len(lines)
    garble_minutes = sum(
        (ep.end - ep.start) // 60 for s in (1, 2, 3)
        for ep in dense.episodes_between(s, START, START + 9 * 86400) if ep.kind == "garble"
    )
    assert len(rejects) == garble_minutes > 0
    # Each way of garbling is represented and rejected for its own reason.
    assert {r.reason for r in rejects} == {
        frames.RejectReason.BAD_CHECKSUM, frames.RejectReason.NO_CHECKSUM,
        frames.RejectReason.NO_START, frames.RejectReason.TOO_LONG,
    }
    assert readings == list(dense.readings(START, 9 * DAY_MIN))


def test_lines_are_terminated_and_in_sensor_order(faulty: Simulator) -> None:
    lines = faulty.lines_for_minute(START)
    assert lines == [frames.encode(r, TZ) for r in faulty.readings(START, 1)]
    assert [line[5:8] for line in lines] == [b"001", b"002", b"003"]
    assert all(line.endswith(b"*" + line[-4:-2] + b"\r\n") for line in lines)


# -- faults ------------------------------------------------------------------------------------


def fault_minutes(sim: Simulator, days: int) -> list[int]:
    """Every minute in which some sensor has an episode (from the schedule)."""
    return sorted({t for s in (1, 2, 3)
                   for ep in sim.episodes_between(s, START, START + days * 86400)
                   for t in range(ep.start, ep.end, 60)})


def test_truth_matches_what_is_on_the_wire(faulty: Simulator) -> None:
    seen: set[str] = set()
    garbled = garble_truths = 0
    for t in fault_minutes(faulty, 28):
        items = [frames.decode_reading(line, TZ) for line in faulty.lines_for_minute(t)]
        garbled += sum(isinstance(i, frames.Reject) for i in items)
        for sensor in (1, 2, 3):
            truth = faulty.truth(sensor, t) - {"leak"}
            seen |= truth
            garble_truths += "garble" in truth
            sid = f"{sensor:03d}"
            mine = [i for i in items if isinstance(i, Reading) and i.sensor == sid]
            clean = clean_flow(sensor, t, TZ)
            if "dropout" in truth:
                assert mine == []
                continue
            if "duplicate" in truth:
                assert len(mine) == 2 and mine[0].time == mine[1].time == t
            else:
                assert len(mine) == 1
            reading = mine[0]
            assert (reading.status != 0) == ("status" in truth)
            assert (reading.flow is None or reading.pressure is None) == ("missing" in truth)
            assert (reading.time != t) == ("clock" in truth)
            if "clock" in truth:
                assert reading.time - t > 3600
            if "spike" in truth:
                assert reading.flow > 3 * clean or reading.pressure > 10  # type: ignore[operator]
            elif "excursion" not in truth:  # an excursion may reach 1.8 x (checked below)
                assert reading.flow is None or reading.flow < 2 * clean
    assert seen == set(EPISODIC_KINDS)
    assert garbled == garble_truths > 0


def test_minutes_without_faults_carry_exactly_one_clean_reading(faulty: Simulator) -> None:
    day = START + 5 * 86400
    faulted = set(fault_minutes(faulty, 6))
    assert faulted & set(range(day, day + 86400, 60))  # the day does have episodes
    by_minute: dict[int, list[Reading]] = defaultdict(list)
    for r in faulty.readings(day, DAY_MIN):
        by_minute[r.time].append(r)
    for t in range(day, day + 86400, 60):
        if t in faulted:
            continue
        assert all(not faulty.truth(s, t) for s in (1, 2, 3))
        assert [r.sensor for r in by_minute[t]] == ["001", "002", "003"]
        assert all(r.status == 0 and r.flow and r.pressure for r in by_minute[t])


def test_stuck_episodes_repeat_one_value(faulty: Simulator) -> None:
    stuck = [(s, ep) for s in (1, 2, 3)
             for ep in faulty.episodes_between(s, START, START + 28 * 86400) if ep.kind == "stuck"]
    assert stuck
    for sensor, ep in stuck:
        rows = [r for r in faulty.readings(ep.start, (ep.end - ep.start) // 60)
                if r.sensor == f"{sensor:03d}"]
        assert len(rows) >= 40
        held = {"flow": {r.flow for r in rows}, "pressure": {r.pressure for r in rows}}
        for quantity in ("flow", "pressure"):
            frozen = ep.quantity in (quantity, "both")
            assert (len(held[quantity]) == 1) == frozen


def test_episodes_are_rare_apart_and_not_in_the_first_two_days(faulty: Simulator) -> None:
    weeks = 8
    end = START + weeks * 7 * 86400
    counts: dict[str, int] = defaultdict(int)
    for sensor in (1, 2, 3):
        episodes = faulty.episodes_between(sensor, START, end)
        assert all(ep.start >= START + QUIET_S for ep in episodes)
        for a, b in zip(episodes, episodes[1:]):
            assert a.end <= b.start  # never overlapping on one sensor
        for ep in episodes:
            counts[ep.kind] += 1
            lo, hi = EPISODE_MINUTES[ep.kind]
            assert lo <= (ep.end - ep.start) // 60 <= hi
    for kind in EPISODIC_KINDS:
        per_sensor_week = counts[kind] / (3 * (weeks - 2 / 7))
        assert 0.5 <= per_sensor_week <= 3.0, (kind, per_sensor_week)


def test_fault_rate_scales_and_zero_switches_off() -> None:
    def count(sim: Simulator) -> int:
        return sum(len(sim.episodes_between(s, START, START + 28 * 86400)) for s in (1, 2, 3))

    assert count(make(faults=ALL, fault_rate=0)) == 0
    assert count(make(faults=ALL, fault_rate=3)) > 2 * count(make(faults=ALL))
    assert count(make()) == 0


def test_switching_one_kind_does_not_move_another() -> None:
    only = make(faults={"stuck"})
    every = make(faults=ALL)
    window = (START, START + 28 * 86400)
    for sensor in (1, 2, 3):
        assert only.episodes_between(sensor, *window) == [
            ep for ep in every.episodes_between(sensor, *window) if ep.kind == "stuck"
        ]


def test_excursion_was_added_without_moving_any_other_episode() -> None:
    # Excursions are drawn after every other kind: schedules made before the kind
    # existed (and the data of every site replaying them) stay as they were.
    without = make(faults=ALL - {"excursion"})
    window = (START, START + 28 * 86400)
    for sensor in (1, 2, 3):
        assert without.episodes_between(sensor, *window) == [
            ep for ep in make(faults=ALL).episodes_between(sensor, *window)
            if ep.kind != "excursion"
        ]


def test_excursions_shift_their_quantity_for_exactly_their_span() -> None:
    only = make(faults={"excursion"})
    clean = make()
    episodes = [(s, ep) for s in (1, 2, 3)
                for ep in only.episodes_between(s, START, START + 8 * 7 * 86400)]
    assert {ep.quantity for _, ep in episodes} == {"flow", "pressure", "both"}
    assert any(ep.factor > 1 for _, ep in episodes) and any(ep.factor < 1 for _, ep in episodes)
    for sensor, ep in episodes[:12]:
        lo, hi = EPISODE_MINUTES["excursion"]
        assert lo <= (ep.end - ep.start) // 60 <= hi
        assert 0.4 <= abs(ep.factor - 1.0) <= 0.8
        sid = f"{sensor:03d}"
        # Ten minutes either side, so the edges are checked too.
        minutes = (ep.end - ep.start) // 60 + 20
        seen = [r for r in only.readings(ep.start - 600, minutes) if r.sensor == sid]
        base = [r for r in clean.readings(ep.start - 600, minutes) if r.sensor == sid]
        assert [r.time for r in seen] == [r.time for r in base]
        for r, b in zip(seen, base, strict=True):
            inside = ep.start <= r.time < ep.end
            assert only.truth(sensor, r.time) == ({"excursion"} if inside else frozenset())
            flow_factor = ep.factor if inside and ep.quantity != "pressure" else 1.0
            pressure_factor = 1.0
            if inside and ep.quantity == "pressure":
                pressure_factor = ep.factor
            elif inside and ep.quantity == "both":  # the pressure moves against the flow
                pressure_factor = 2.0 - ep.factor
            assert r.flow == pytest.approx(  # type: ignore[operator]
                b.flow * flow_factor, abs=0.006)
            assert r.pressure == pytest.approx(  # type: ignore[operator]
                b.pressure * pressure_factor, abs=0.0006)
            assert r.status == 0


def test_leak_steps_up_the_minimum_night_flow() -> None:
    leak = make(faults={"leak"}, leak_day=10, leak_fraction=0.2)
    plain = make()
    assert leak.leak_start == START + 10 * 86400 + 22 * 3600
    for sensor in (1, 2, 3):
        mnf_leak, mnf_plain = nightly_mnf(leak, sensor, 20), nightly_mnf(plain, sensor, 20)
        expected = 0.2 * sensor_profile(sensor).min_night_flow
        before, after = slice(0, 10), slice(11, 20)  # night n: 02:00-04:00 of day n
        assert np.allclose(mnf_leak[before], mnf_plain[before])
        assert np.allclose(mnf_leak[after] - mnf_plain[after], expected, rtol=0.1)
        assert mnf_leak[after].min() > mnf_leak[before].max()
    assert leak.truth(1, leak.leak_start) == {"leak"}
    assert leak.truth(1, leak.leak_start - 60) == frozenset()


def nightly_mnf(sim: Simulator, sensor: int, nights: int) -> np.ndarray:
    """Lowest 10-minute mean flow between 02:00 and 04:00 local, per night."""
    sid = f"{sensor:03d}"
    out = []
    for night in range(nights):
        t = START + night * 86400 + 2 * 3600
        flow = [r.flow for r in sim.readings(t, 120) if r.sensor == sid]
        out.append(min(np.mean(flow[i:i + 10]) for i in range(0, 120, 10)))
    return np.array(out)


# -- settings and URLs -------------------------------------------------------------------------


def test_from_url_reads_every_parameter() -> None:
    s = SimulatorSettings.from_url(
        "sim://?sensors=5&speed=60.5&seed=9&faults=dropout,leak&fault_rate=2&start=20260101"
        "&leak_day=3&leak_fraction=0.5&tz=Europe/Berlin&realtime_cap=0"
    )
    assert s == SimulatorSettings(
        sensors=5, speed=60.5, seed=9, faults=frozenset({"dropout", "leak"}), fault_rate=2.0,
        start=1_767_222_000, leak_day=3, leak_fraction=0.5, timezone="Europe/Berlin",
        realtime_cap=False,
    )
    assert SimulatorSettings.from_url("sim://") == SimulatorSettings()
    assert SimulatorSettings.from_url("sim://?faults=all").faults == ALL
    assert SimulatorSettings.from_url("sim://?faults=").faults == frozenset()
    assert SimulatorSettings.from_url("sim://?start=202601011230").start == 1_767_238_200


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("sensors=0", "sensors"), ("sensors=abc", "sensors"), ("speed=-1", "speed"),
        ("speed=nan", "speed"), ("seed=-3", "seed"), ("faults=dropout,flood", "flood"),
        ("fault_rate=x", "fault_rate"), ("start=2026", "start"), ("start=20261301", "start"),
        ("tz=Mars/Olympus", "tz"), ("leak_day=-1", "leak_day"),
        ("realtime_cap=maybe", "realtime_cap"),
        ("colour=red", "colour"), ("seed=1&seed=2", "seed"), ("tz=UTC&timezone=UTC", "timezone"),
    ],
)
def test_from_url_names_the_bad_parameter(query: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        SimulatorSettings.from_url(f"sim://?{query}")


def test_from_url_refuses_other_schemes() -> None:
    with pytest.raises(ValueError, match="scheme"):
        SimulatorSettings.from_url("loop://")
    with pytest.raises(ValueError, match="url"):
        SimulatorSettings.from_url("sim://host/path?seed=1")


@given(st.text(max_size=60))
def test_from_url_only_ever_raises_value_error(query: str) -> None:
    try:
        SimulatorSettings.from_url("sim://?" + query)
    except ValueError:
        pass


@given(
    sensors=st.integers(1, 999), speed=st.floats(0, 1e6), seed=st.integers(0, 2**32),
    faults=st.frozensets(st.sampled_from(FAULT_KINDS)), day=st.dates(min_value=dt.date(1971, 1, 1)),
)
def test_from_url_round_trips(
    sensors: int, speed: float, seed: int, faults: frozenset[str], day: dt.date
) -> None:
    url = (f"sim://?sensors={sensors}&speed={speed!r}&seed={seed}&faults={','.join(faults)}"
           f"&start={day:%Y%m%d}&tz=Asia/Seoul")
    s = SimulatorSettings.from_url(url)
    assert (s.sensors, s.speed, s.seed, s.faults) == (sensors, speed, seed, faults)
    assert frames.format_local_time(s.start, TZ) == f"{day:%Y%m%d}000000"  # type: ignore[arg-type]


def test_default_start_is_local_midnight_sixty_days_back() -> None:
    now = START + 5 * 3600 + 123
    sim = Simulator(SimulatorSettings(), now=now)
    assert sim.start == START - 60 * 86400


def test_bad_sensor_and_unaligned_minute_are_refused(faulty: Simulator) -> None:
    with pytest.raises(ValueError):
        faulty.truth(4, START)
    with pytest.raises(ValueError):
        faulty.lines_for_minute(START + 1)
