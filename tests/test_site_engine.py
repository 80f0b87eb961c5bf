"""core.site_engine: the actors' detection wired offline; same readings, same frames."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core import forecast as forecasting
from core.config import Config, parse_config
from core.criteria import SensorCriteria
from core.criteria_schedule import CriteriaLifecycle
from core.frames import AlertFrame, OutboundFrame, ServerReportLine
from core.hourly_history import HourlyHistory
from core.simulator import FAULT_KINDS, Simulator, SimulatorSettings
from core.site_engine import MemoryReadings, SiteEngine
from core.types import FLAG_NIGHT, EpochSeconds, Reading, SensorId

ROOT = Path(__file__).resolve().parent.parent
START = 1_740_927_600  # 2025-03-03 00:00 +09:00, a Monday
DAY_S = 86400
DAYS = 10
S1 = SensorId("001")


def engine_config() -> Config:
    # Short spans so that ten days see store criteria, a rebuild and NIGHT verdicts.
    return parse_config({
        "criteria": {"initial_data": "", "min_days": 3, "rebuild_days": 2, "window_days": 7},
        "night": {"min_baseline_nights": 3},
    }, source="<test>")


def replay() -> dict[str, Any]:
    """Ten faulted days of two simulated sensors (a 50 % leak from day 6) through a
    fresh engine, a minute at a time: every frame, forecast, verdict and criteria build."""
    sim = Simulator(SimulatorSettings(
        sensors=2, seed=3, start=EpochSeconds(START), faults=frozenset(FAULT_KINDS) - {"clock"},
        leak_day=6, leak_fraction=0.5, realtime_cap=False))
    engine = SiteEngine(engine_config())
    frames: list[OutboundFrame] = []
    forecasts: list[dict[str, Any]] = []
    nights: list[tuple[str, str, bool | None]] = []
    for minute, group in groupby(sim.readings(EpochSeconds(START), DAYS * 1440),
                                 key=lambda r: r.time - r.time % 60):
        step = engine.step(minute, list(group))
        frames += step.detected.frames + step.ticked.frames
        forecasts += [fc.to_record() for fc in step.forecasts]
        nights += [(j.summary.sensor, j.summary.night.isoformat(), j.flagged)
                   for j in step.nights]
    return {"frames": frames, "forecasts": forecasts, "nights": nights,
            "criteria": engine.criteria_log}


def digest(result: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(result, sort_keys=True, default=str).encode()).hexdigest()


@pytest.fixture(scope="module")
def first() -> dict[str, Any]:
    return replay()


def test_replaying_the_same_readings_twice_gives_the_same_frames_and_flags(first) -> None:
    second = replay()
    assert len(first["frames"]) == len(second["frames"])
    for a, b in zip(first["frames"], second["frames"], strict=True):
        assert a == b
    assert first["forecasts"] == second["forecasts"]
    assert first["nights"] == second["nights"]
    assert first["criteria"] == second["criteria"]
    # ... and the replay has something to compare: every frame kind the Detector and
    # Predictor make, store criteria and their rebuild, NIGHT raised on the leak.
    kinds = {type(f) for f in first["frames"]}
    assert kinds == {AlertFrame, ServerReportLine}
    assert len(first["forecasts"]) >= DAYS * 24 * 2 - 4
    sources = [(s, v, src) for s, _, v, src in first["criteria"] if s == S1]
    assert [(v, src) for _, v, src in sources] == [(1, "store"), (2, "store")]
    assert any(f for _, _, f in first["nights"]) and any(
        isinstance(f, AlertFrame) and f.flow_flags & FLAG_NIGHT for f in first["frames"])


def test_a_replay_in_another_process_gives_the_same_frames(first) -> None:
    """Nothing depends on the process (set order under another hash seed, ids)."""
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    code = "from tests.test_site_engine import digest, replay; print(digest(replay()))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    assert done.stdout.strip() == digest(first)


def readings(sensor: SensorId, start: int, minutes: int, step: int = 60) -> list[Reading]:
    return [Reading(sensor, EpochSeconds(start + i * step), 10.0 + (i % 60) / 10, 4.0 + i % 7)
            for i in range(0, minutes * 60 // step)]


def test_criteria_lifecycle_builds_at_min_days_from_the_window_before_event_time() -> None:
    config = parse_config({"criteria": {"initial_data": "", "min_days": 3, "rebuild_days": 2,
                                        "window_days": 7}}, source="<test>")
    first = START + 123
    life = CriteriaLifecycle(config, lambda sensor: first)
    plan = life.on_first_sight(S1, None, None)
    assert plan is not None and (plan.source, plan.version) == ("initial_data", 1)
    assert life.due(S1, None, first + 3 * DAY_S - 60) is None  # day 2 of the history
    assert life.due(S1, None, first + 3 * DAY_S - 1) is None  # still day 2: checked once
    at_min = life.due(S1, None, first + 3 * DAY_S)
    assert at_min is not None and (at_min.reason, at_min.source) == ("first", "store")
    assert (at_min.since, at_min.until) == (first + 3 * DAY_S - 7 * DAY_S, first + 3 * DAY_S + 1)
    built = SensorCriteria.from_record({**_criteria_doc(), "source": "store",
                                      "built_at": first + 3 * DAY_S})
    assert life.due(S1, built, first + 4 * DAY_S) is None
    again = life.due(S1, built, first + 5 * DAY_S)
    assert again is not None and (again.reason, again.version) == ("schedule", built.version + 1)
    # A restart with the store past min_days and no criteria: from the store at once.
    restarted = CriteriaLifecycle(config, lambda sensor: first)
    plan = restarted.on_first_sight(S1, None, first + 10 * DAY_S)
    assert plan is not None and plan.source == "store"
    assert restarted.on_first_sight(S1, built, first + 10 * DAY_S) is None


def _criteria_doc() -> dict[str, Any]:
    config = parse_config({"criteria": {"initial_data": ""}}, source="<test>")
    store = MemoryReadings()
    for r in readings(S1, START, 8 * 1440, step=600):
        store.add(r)
    arrays = store.reading_arrays(S1, START, START + 8 * DAY_S)
    life = CriteriaLifecycle(config, store.first_time)
    plan = life.on_first_sight(S1, None, START + 8 * DAY_S - 600)
    assert plan is not None
    built = life.build(plan, arrays)
    assert built is not None
    return built.to_record()


def test_hourly_history_read_an_hour_at_a_time_equals_one_whole_read() -> None:
    store = MemoryReadings()
    data = readings(S1, START, 3 * 1440)
    for r in data:
        store.add(r)
    history = HourlyHistory()
    hours = 48
    for k in range(1, 72):
        issued = EpochSeconds(START + k * 3600)
        series = history.series(S1, issued, hours,
                                lambda a, b: store.reading_arrays(S1, a, b))
    whole = store.reading_arrays(S1, issued - hours * 3600, issued)
    expect = forecasting.hourly_means(whole.time, whole.flow, whole.pressure)
    assert series.start == issued - hours * 3600 and series.hours == hours
    np.testing.assert_allclose(series.flow, expect.flow)
    np.testing.assert_allclose(series.pressure, expect.pressure)


def test_hourly_history_asked_for_a_longer_span_holds_its_first_hours_too() -> None:
    store = MemoryReadings()
    for r in readings(S1, START, 3 * 1440):
        store.add(r)
    history = HourlyHistory()
    read = lambda a, b: store.reading_arrays(S1, a, b)  # noqa: E731
    issued = EpochSeconds(START + 60 * 3600)
    history.series(S1, EpochSeconds(issued - 3600), 24, read)
    series = history.series(S1, issued, 48, read)  # a new model looks further back
    whole = store.reading_arrays(S1, issued - 48 * 3600, issued)
    expect = forecasting.hourly_means(whole.time, whole.flow, whole.pressure)
    assert np.isfinite(series.flow).all()
    np.testing.assert_allclose(series.flow, expect.flow)


def test_memory_readings_keep_the_first_of_a_time_and_order_by_time() -> None:
    store = MemoryReadings()
    assert store.add(Reading(S1, EpochSeconds(START + 120), 1.0, None))
    assert store.add(Reading(S1, EpochSeconds(START), 2.0, 3.0))
    assert not store.add(Reading(S1, EpochSeconds(START + 120), 9.0, 9.0))
    cols = store.reading_arrays(S1, START, START + 180)
    assert cols.time.tolist() == [START, START + 120]
    assert cols.flow.tolist() == [2.0, 1.0] and np.isnan(cols.pressure[1])
    assert store.first_time(S1) == START and store.first_time(SensorId("002")) is None
    assert store.reading_arrays(SensorId("002"), 0, START).time.size == 0
