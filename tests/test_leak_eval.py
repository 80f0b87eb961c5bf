"""bench/leak_eval.py: scoring night verdicts against labelled leaks, and the script itself."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import leak_eval as ev
from bench.leak_scenarios import Leak
from core.types import SensorId

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "leak_eval.py"
TZ = ZoneInfo("Asia/Seoul")
S1, S2 = SensorId("001"), SensorId("002")


def at(day: int, hour: int = 5, minute: int = 0) -> int:
    """Epoch seconds of 2024-03-``day`` hh:mm in Seoul (March 2024 starts on a Friday)."""
    return int(dt.datetime(2024, 3, day, hour, minute, tzinfo=TZ).timestamp())


def leak(start_day: int, end_day: int, *, sensor: SensorId = S1, kind: str = "abrupt",
         size: float = 0.3, growth: float = 0.0, top: float | None = None) -> Leak:
    return Leak(sensor, at(start_day, 14), at(end_day, 14), kind, size, growth,
                size if top is None else top, "J-1", 0.5, 10.0, at(start_day + 1, 3))


def nights(first: int, flagged: set[int], *, last: int = 28,
           sensor: SensorId = S1) -> list[ev.NightVerdict]:
    """One verdict per night ending at 05:00 on days first..last."""
    return [ev.NightVerdict(sensor, at(d), d in flagged) for d in range(first, last + 1)]


def test_a_flag_at_the_end_of_the_first_night_is_a_delay_of_one() -> None:
    k = leak(10, 20)  # starts on the 10th at 14:00: its first night ends on the 11th
    assert ev.score_leak(k, nights(1, {11}), TZ).delay_nights == 1
    assert ev.score_leak(k, nights(1, {12, 13}), TZ).delay_nights == 2
    assert ev.score_leak(k, nights(1, {10}), TZ).delay_nights is None  # before it began
    assert ev.score_leak(k, nights(1, {21}), TZ).delay_nights is None  # after the repair
    assert not ev.score_leak(k, nights(1, set()), TZ).detected


def test_a_flag_raised_before_the_leak_finds_nothing_new() -> None:
    k = leak(10, 20)
    assert not ev.score_leak(k, nights(1, set(range(9, 18))), TZ).detected
    # ... until it clears and rises again during the leak.
    assert ev.score_leak(k, nights(1, {9, 10, 11, 14}), TZ).delay_nights == 4


def test_delay_counts_nights_even_without_a_verdict() -> None:
    k = leak(10, 20)
    verdicts = [v for v in nights(1, {14}) if v.night_end not in (at(11), at(12))]
    assert ev.score_leak(k, verdicts, TZ).delay_nights == 4


def test_other_sensors_verdicts_do_not_detect_a_leak() -> None:
    k = leak(10, 20, sensor=S2)
    assert not ev.score_leak(k, nights(1, {11}, sensor=S1), TZ).detected


def test_a_growing_leak_is_found_at_its_size_then() -> None:
    k = leak(1, 28, kind="growing", size=0.05, growth=0.01, top=0.5)
    result = ev.score_leak(k, nights(1, {11}), TZ)
    assert result.delay_nights == 10
    assert result.size_found == pytest.approx(0.05 + 0.01 * (10 * 24 - 9) / 24, abs=1e-3)
    assert ev.size_class(k) == "growing"


def test_episodes_are_runs_of_flagged_nights_and_gaps_break_none() -> None:
    verdicts = nights(1, {3, 4, 5, 9, 20})
    verdicts = [v for v in verdicts if v.night_end != at(4)]  # night 4 has no verdict
    assert [(e.first_end, e.nights) for e in ev.episodes(verdicts)] == [
        (at(3), 2), (at(9), 1), (at(20), 1)]


def test_false_events_are_episodes_starting_with_no_leak_active() -> None:
    leaks = [leak(10, 15)]
    verdicts = nights(1, {3, 11, 12, 13, 14, 15, 16, 22}) + nights(1, {11}, sensor=S2)
    false = ev.false_episodes(verdicts, leaks, since=at(5))
    # Night 3 is before the evaluated span; 11-16 starts during the leak (its tail
    # after the repair is the same episode); 22 is false; S2 has no leak: 11 is false.
    assert sorted((e.sensor, e.first_end) for e in false) == [(S1, at(22)), (S2, at(11))]


def test_leak_free_days_leave_out_the_leaks() -> None:
    days = ev.leak_free_days([S1, S2], [leak(10, 15)], at(1, 0), at(29, 0))
    assert days == pytest.approx(2 * 28 - 5)


@pytest.mark.parametrize("size, name", [
    (0.05, "5-10%"), (0.099, "5-10%"), (0.1, "10-20%"), (0.2, ">=20%"), (1.0, ">=20%"),
    (0.04, None),
])
def test_size_classes(size: float, name: str | None) -> None:
    assert ev.size_class(leak(1, 2, size=size)) == name


@given(flags=st.lists(st.booleans(), min_size=1, max_size=60),
       start=st.integers(1, 20), length=st.integers(1, 20))
def test_scoring_agrees_with_a_plain_reading_of_the_definitions(
        flags: list[bool], start: int, length: int) -> None:
    days = range(1, len(flags) + 1)
    verdicts = [ev.NightVerdict(S1, at(1) + (d - 1) * 86400, f) for d, f in zip(days, flags)]
    k = Leak(S1, at(1, 14) + (start - 1) * 86400, at(1, 14) + (start - 1 + length) * 86400,
             "abrupt", 0.3, 0.0, 0.3, "J", 0.5, 10.0, 0)
    first_night = start + 1  # the night ending the morning after the start
    expected = next((d - first_night + 1 for d, f in zip(days, flags)
                     if f and (d == 1 or not flags[d - 2]) and first_night <= d <= start + length),
                    None)
    assert ev.score_leak(k, verdicts, TZ).delay_nights == expected
    run_starts = [d for d, f in zip(days, flags) if f and (d == 1 or not flags[d - 2])]
    assert len(ev.episodes(verdicts)) == len(run_starts)
    false = ev.false_episodes(verdicts, [k], since=0)
    assert len(false) == sum(not first_night <= d <= start + length for d in run_starts)


def _score(kind: str, results: list[ev.LeakResult], false: int = 0,
           days: float = 91.3125) -> ev.CaseScore:
    episodes = [ev.Episode(S1, at(1), at(1), 1)] * false
    return ev.CaseScore(ev.Case(1, kind), "Net3", "Asia/Seoul", results, episodes, days, 0, 0.0)


def test_summary_has_the_issues_keys_classes_and_budgets() -> None:
    big = leak(1, 5, size=0.5)
    mid = leak(8, 12, size=0.15)
    grow = leak(14, 28, kind="growing", size=0.03, growth=0.02, top=0.6)
    probes = [leak(d, d + 5) for d in (1, 2, 3, 4, 5, 6, 7)]  # Fri .. Thu
    report = ev.summarise([
        _score("leaks", [ev.LeakResult(big, 1, 0.5), ev.LeakResult(mid, 4, 0.15),
                         ev.LeakResult(grow, 6, 0.15)], false=1),
        _score("clean", [], false=1, days=2 * 91.3125),
        _score("weekdays",
               [ev.LeakResult(p, 2 if i else 3, 0.3) for i, p in enumerate(probes)]),
    ])
    assert list(report)[:6] == ["bench", "leaks", "detected", "median_delay_nights",
                                "false_events_per_sensor_quarter", "by_class"]
    assert (report["leaks"], report["detected"], report["median_delay_nights"]) == (3, 3, 4)
    assert report["false_events_per_sensor_quarter"] == pytest.approx(2 / 4)
    assert report["false_events_per_sensor_quarter_clean"] == pytest.approx(0.5)
    c = report["by_class"]
    assert c[">=20%"]["found"] == 1 and c[">=20%"]["median_delay_nights"] == 1
    assert c["10-20%"]["found_within_3_nights"] == 0
    assert c["growing"]["found_below_25pct"] == 1 and c["growing"]["median_size_found"] == 0.15
    assert c["30% by weekday"]["flagged_by_night_2"] == pytest.approx(6 / 7, abs=1e-4)
    assert c["30% by weekday"]["by_weekday"]["Fri"] == "0/1"  # 2024-03-01 was a Friday
    assert c["30% by weekday"]["by_weekday"]["Sat"] == "1/1"


@pytest.fixture(scope="module")
def test_run() -> tuple[dict[str, Any], str]:
    done = subprocess.run([sys.executable, str(SCRIPT), "--seeds", "test"], cwd=ROOT,
                          capture_output=True, text=True, timeout=240, check=True)
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]), "\n".join(lines[:-1])


def test_the_script_prints_leak_rows_budgets_and_the_json_last(test_run) -> None:
    report, text = test_run
    assert report["bench"] == "leak_eval"
    for key in ("leaks", "detected", "median_delay_nights", "false_events_per_sensor_quarter",
                "by_class"):
        assert key in report
    assert set(report["by_class"]) == {">=20%", "10-20%", "5-10%", "growing", "30% by weekday"}
    assert report["cases"] == ["single:1:Net3", "clean:2:Net3"]
    assert "single      1 Net3  001 abrupt" in text and "budget" in text


def test_the_script_finds_a_large_abrupt_leak(test_run) -> None:
    report, _ = test_run
    big = report["by_class"][">=20%"]
    assert report["leaks"] == big["leaks"] == 1
    assert big["detected"] == 1 and big["median_delay_nights"] <= 2


def test_a_bad_config_is_named_before_any_scenario_is_built(tmp_path: Path) -> None:
    bad = tmp_path / "site.toml"
    bad.write_text("[night]\nbaseline_nights = 1\n")
    done = subprocess.run([sys.executable, str(SCRIPT), "--seeds", "test", "--config", str(bad)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert "night.baseline_nights" in done.stderr


def test_bad_seeds_get_one_clear_line_and_exit_2() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--seeds", "lots"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "leak_eval: --seeds: expected test, tune, bench or numbers like 101,102; got 'lots'"]
