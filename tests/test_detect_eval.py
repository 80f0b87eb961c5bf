"""Smoke test of bench/detect_eval.py: a short run keeps its report's shape and catches faults."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from core.simulator import Simulator, SimulatorSettings

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "detect_eval.py"
START = 1_735_657_200  # 2025-01-01 00:00 +09:00


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("detect_eval", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report() -> tuple[dict[str, Any], str]:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--seeds", "1", "--sensors", "1", "--weeks", "2",
         "--initial-days", "14"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]), "\n".join(lines[:-1])


def test_last_line_is_the_report_with_every_method_and_class(report) -> None:
    data, table = report
    assert data["bench"] == "detect_eval"
    assert data["seeds"] == [1] and data["sensor_weeks"] == 2
    assert set(data["methods"]) == {"SYSTEM", "VALUE", "PREDICT", "NIGHT"}
    for method in data["methods"].values():
        assert {"recall", "false_alarms_per_sensor_week", "median_ttd"} <= set(method)
        assert method["false_alarms_per_sensor_week"] >= 0
    assert data["classes"], "two faulted weeks hold episodes"
    assert set(data["classes"]) <= {"dropout", "stuck", "spike", "status", "missing", "clock",
                                    "excursion", "leak"}
    for kind in data["classes"].values():
        assert {"episodes", "recall", "median_ttd"} <= set(kind)
        assert kind["episodes"] > 0 and 0.0 <= kind["recall"] <= 1.0
    assert data["targets"] == {"recall": ">= 0.95", "false_alarms_per_sensor_week": "<= 1"}
    assert "SYSTEM" in table and "recall" in table  # the readable table comes first


def test_system_faults_are_caught(report) -> None:
    data, _ = report
    system = data["methods"]["SYSTEM"]
    assert system["episodes"] > 0 and system["recall"] > 0
    assert any(data["classes"].get(k, {}).get("recall", 0) > 0
               for k in ("dropout", "stuck", "status", "missing", "clock"))


def test_spikes_are_caught_by_value_and_clock_faults_close_no_night(report) -> None:
    data, _ = report
    spike = data["classes"]["spike"]
    assert spike["method"] == "SYSTEM/VALUE" and set(spike["recall_by_method"]) == {
        "SYSTEM", "VALUE"}
    # Seed 1's spikes in two weeks all stay inside the physical range: VALUE's.
    assert spike["episodes"] >= 1 and spike["recall_by_method"]["VALUE"] == 1.0
    assert data["classes"]["clock"]["episodes"] >= 1
    assert data["nights_closed_by_future_stamp"] == 0
    for method in data["methods"].values():
        later = method["recall_after_first_week"]
        assert later is None or 0.0 <= later <= 1.0
    # The seasonal-naive forecast has nothing a week earlier in the first week.
    assert data["methods"]["PREDICT"]["false_alarms"] == 0


def test_clock_fault_readings_arrive_in_the_minute_they_were_sent() -> None:
    bench = load_bench()
    sim = Simulator(SimulatorSettings(sensors=2, seed=1, start=START, faults=frozenset({"clock"}),
                                      realtime_cap=False))
    minutes = 7 * 1440
    clock = [ep for n in (1, 2) for ep in sim.episodes_between(n, START, START + minutes * 60)]
    assert clock
    seen = 0
    previous = START - 60
    for minute, readings in bench.arrivals(sim, START, minutes):
        assert minute > previous and minute % 60 == 0  # one batch per minute, in order
        previous = minute
        for r in readings:
            if r.time != minute:
                seen += 1
                assert r.time - minute > 3600
                assert any(ep.start <= minute < ep.end for ep in clock)
    assert seen == sum((ep.end - ep.start) // 60 for ep in clock)
