"""core.replay: the NIGHT engine the NightFlow actor and the evaluator share."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from core.config import Config, parse_config
from core.replay import NightEngine, repair_record, replay_nights
from core.types import EpochSeconds, Reading, SensorId

SENSOR = SensorId("001")
TZ_START = dt.datetime(2026, 3, 2, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=9)))  # Monday
LEAK_DAY = 9  # Wednesday 11 March: its first night is a weekday's


def config() -> Config:
    return parse_config({"criteria": {"initial_data": ""}}, source="<test>")


def readings(days: int, seed: int, leak: float = 0.0,
             until_day: int | None = None) -> list[Reading]:
    """One reading a minute (Seoul): a daily cycle around 10 m3/h at night, noise, and
    from LEAK_DAY's noon on a steady ``leak`` (m3/h), until ``until_day``'s noon."""
    rng = np.random.default_rng(seed)
    start = int(TZ_START.timestamp())
    out = []
    for i in range(days * 1440):
        hour = (i % 1440) / 60
        flow = 10.0 + 8.0 * max(0.0, math.sin(math.pi * (hour - 6) / 16)) + rng.normal(0, 0.3)
        if (LEAK_DAY * 24 + 12) * 60 <= i < ((until_day or days) * 24 + 12) * 60:
            flow += leak
        out.append(Reading(SENSOR, EpochSeconds(start + 60 * i), flow, 4.0))
    return out


def flags(judged: list) -> list[tuple[str, str, bool | None]]:
    return [(j.summary.sensor, j.summary.night.isoformat(), j.flagged) for j in judged]


@pytest.fixture(scope="module")
def leaky() -> list[Reading]:
    return readings(16, seed=1, leak=4.0)  # 40 % of the MNF


def test_replaying_the_same_readings_twice_gives_the_same_verdicts(leaky) -> None:
    first = replay_nights(config(), leaky)
    second = replay_nights(config(), leaky)
    assert [j.verdict for j in first] == [j.verdict for j in second]
    assert flags(first) == flags(second)
    # ... and the replay judges: it learns, then finds the leak on its first night.
    leak_night = (TZ_START.date() + dt.timedelta(LEAK_DAY)).isoformat()  # after its noon
    before = [f for _, night, f in flags(first) if night < leak_night and f is not None]
    assert before and not any(before)
    assert {night: f for _, night, f in flags(first)}[leak_night] is True


def test_an_engine_resumed_from_its_state_judges_as_one_that_never_stopped(leaky) -> None:
    cut = 10 * 1440 + 17  # inside a day, between two nights
    engine = NightEngine(config())
    judged = []
    for r in leaky[:cut]:
        judged += engine.add(r, r.time)[1]
    resumed = NightEngine(config(), engine.state())
    for r in leaky[cut:]:
        judged += resumed.add(r, r.time)[1]
    assert flags(judged) == flags(replay_nights(config(), leaky))


def test_no_verdict_while_learning_and_none_on_clean_readings() -> None:
    judged = replay_nights(config(), readings(12, seed=2))
    outcomes = [j.verdict.outcome for j in judged if j.verdict is not None]
    assert outcomes[:7] == ["learning"] * 7
    assert outcomes[7:] and all(o == "normal" for o in outcomes[7:])


def test_a_repair_clears_night_from_the_first_night_after_its_event_time() -> None:
    fixed = LEAK_DAY + 1  # fixed at noon on Thursday the 12th: that night (a weekday's) is clean
    data = readings(18, seed=3, leak=4.0, until_day=fixed)
    noon = int(TZ_START.timestamp()) + (fixed * 24 + 12) * 3600
    night_of = (TZ_START.date() + dt.timedelta(fixed)).isoformat()

    def by_night(repairs: list) -> dict[str, tuple[bool | None, str | None]]:
        return {j.summary.night.isoformat(): (j.flagged, j.verdict and j.verdict.outcome)
                for j in replay_nights(config(), data, repairs)}

    left = by_night([])
    repaired = by_night([repair_record(SENSOR, noon, noon + 600.0)])
    leak_night = (TZ_START.date() + dt.timedelta(LEAK_DAY)).isoformat()
    assert left[leak_night] == repaired[leak_night] == (True, "leak")
    # Left alone, NIGHT waits for clear_nights clean nights; repaired, it is gone at once.
    assert left[night_of] == (True, "held")
    assert repaired[night_of] == (False, "normal")
    # The nights before the repair's event time are judged as they were.
    assert {n: v for n, v in repaired.items() if n < night_of} == \
        {n: v for n, v in left.items() if n < night_of}
