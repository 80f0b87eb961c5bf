"""Detection quality on the simulator's fault injection: recall, false alarms, time to detect.

    python bench/detect_eval.py                          # 5 seeds x 3 sensors x 8 weeks
    python bench/detect_eval.py --seeds 1 --sensors 1 --weeks 2   # a smoke run

What runs is the service's own detection logic, offline and in-process (no
actors, no LMDB): :class:`core.site_engine.SiteEngine`, the Detector, Predictor
and NightFlow actors' core objects wired as the actors wire them
(:class:`OfflineSite` only records the flags):

* **Detector**: :class:`core.monitor.SiteMonitor` on every stored reading,
  ``now`` = the minute the reading arrives (live operation: a clock-fault stamp
  is hours ahead of it), a silence tick at the end of every minute; criteria
  from :class:`core.criteria_schedule.CriteriaLifecycle` (the initial history at
  first sight of a sensor, the stored readings once they span
  ``criteria.min_days``, checked once per day of event time).
* **Predictor**: on every hour crossing, the seasonal-naive forecast (median of
  3 weeks, adapted; none for an hour not seen a week earlier) from
  :class:`core.hourly_history.HourlyHistory`, handed to the Detector at once;
  PREDICT's band is the forecast's or else the criteria's residual band.
* **NightFlow**: :class:`core.replay.NightEngine` (night blocks and the NIGHT
  model), with ``now`` = the reading's arrival minute (as the Detector: a
  clock-fault stamp closes no night); the verdict carried by the Detector from
  the night's end on.
* **Store**: first write wins per (sensor, time), so duplicates never reach
  detection; garbled lines never get past the reader. Both are ingest matters,
  not detection classes, and are left out of recall.

Per seed, two runs of the same sensors and seed over the same span: one with
every fault kind (``faults=all``, the leak at ``--leak-fraction`` of the clean
minimum night flow from 22:00 on day ``--leak-day``) and one clean. The
criteria's first source is ``--initial-days`` of the same simulator without
faults just before the span, one reading per 10 minutes, as
``conf/initial_data.csv`` is made (``bench/make_initial_data.py``).

Per injected class, its intended method:

=============================== ===============================================
dropout                         SYSTEM (silence alert) during the gap
stuck, status, missing, clock   SYSTEM during the episode, on its quantity
spike                           SYSTEM (physical range) or VALUE (a gross
                                outlier, ``detection.gross_factor``) on its minute
excursion                       VALUE or PREDICT during the excursion
leak                            NIGHT on the leak's first or second night
=============================== ===============================================

Recall is the share of episodes detected so; time to detect is from the
episode's first minute to the first flagged minute (minutes; nights for NIGHT,
1 = the leak's first night). False alarms are counted per method on the clean
runs: a run of consecutive flagged minutes on one sensor is one alarm (for
NIGHT, a run of consecutive leak verdicts), also without the site's first week
(when the seasonal-naive forecast has no week-earlier hour yet). The faulted
runs also give false alarms "between faults": flagged runs that touch no episode
(nor its next ``TAIL_MINUTES``) before the leak starts, such as PREDICT firing a
week after an excursion because the seasonal-naive forecast repeats it; a NIGHT
verdict counts as false there unless a flow excursion fell in its night (a sensor
fault that makes NIGHT fire is a false leak sign).

The last line printed is a JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import Config, default_config, load_config  # noqa: E402
from core.criteria import InitialData  # noqa: E402
from core.frames import AlertFrame  # noqa: E402
from core.monitor import Outcome  # noqa: E402
from core.simulator import FAULT_KINDS, Episode, Simulator, SimulatorSettings  # noqa: E402
from core.site_engine import NightRecord, SiteEngine  # noqa: E402
from core.types import (  # noqa: E402
    FLAG_NIGHT, FLAG_PREDICT, FLAG_SYSTEM, FLAG_VALUE, EpochSeconds, Reading, SensorId,
    sensor_id,
)

MINUTE_S = 60
DAY_S = 86400
WEEK_MIN = 7 * 1440
INITIAL_STEP_S = 600  # one reading per 10 minutes, as conf/initial_data.csv
DEFAULT_START = "2025-03-03"  # a Monday
# After an episode ends its flags may linger (hysteresis, a stuck run clearing):
# a flagged run starting this soon after an episode belongs to it.
TAIL_MINUTES = 30
METHODS = {"SYSTEM": FLAG_SYSTEM, "VALUE": FLAG_VALUE, "PREDICT": FLAG_PREDICT,
           "NIGHT": FLAG_NIGHT}
# Each injected class and the method(s) meant to catch it.
INTENDED: dict[str, tuple[str, ...]] = {
    "dropout": ("SYSTEM",), "stuck": ("SYSTEM",), "spike": ("SYSTEM", "VALUE"),
    "status": ("SYSTEM",), "missing": ("SYSTEM",), "clock": ("SYSTEM",),
    "excursion": ("VALUE", "PREDICT"), "leak": ("NIGHT",),
}
# Handled at ingest (the reader rejects, the store keeps the first copy): no detection.
INGEST_ONLY = ("garble", "duplicate")
# Classes pooled into each method's recall. A spike is reported on its own: SYSTEM
# catches those beyond the physical range, VALUE (untrusted values aside) the rest.
POOLED = {"SYSTEM": ("dropout", "stuck", "status", "missing", "clock"),
          "VALUE": ("excursion",), "PREDICT": ("excursion",), "NIGHT": ("leak",)}
TARGETS = {"recall": ">= 0.95", "false_alarms_per_sensor_week": "<= 1"}
NOTES = {
    "spike": "one reading: SYSTEM beyond the physical range, else VALUE as a gross outlier "
             "(beyond its band by more than detection.gross_factor band widths)",
    "predict_recall": "PREDICT has no forecast for an hour not seen a week earlier: "
                      "excursions in a site's first week are VALUE's alone",
    "between_faults": "false alarms on the faulted runs outside every episode (+ "
                      f"{TAIL_MINUTES} min) and before the leak",
    "after_first_week": "without the site's first week, when the seasonal-naive forecast "
                        "has no week-earlier hour yet",
}


# ---------------------------------------------------------------------------------------------
# The service's logic, offline


class OfflineSite:
    """The site's detection (:class:`core.site_engine.SiteEngine`), with its flags
    recorded per sensor, quantity and *arrival* minute (a clock-fault reading counts
    in the minute it arrived, not at its future stamp)."""

    def __init__(self, config: Config, initial: InitialData, sensors: Sequence[SensorId],
                 start: int, minutes: int) -> None:
        self.engine = SiteEngine(config, initial)
        self.tz = config.site.tz
        self.window = self.engine.night_engine.window
        self.start = start
        self.minutes = minutes
        self.nights = self.engine.nights
        self.criteria_log = self.engine.criteria_log
        for s in sensors:
            self.nights.setdefault(s, {})
        self.flags = {s: np.zeros((2, minutes), dtype=np.uint8) for s in sensors}

    def step(self, minute: int, readings: Iterable[Reading]) -> None:
        """Ingest, detect and tick the readings that arrived in ``minute``."""
        step = self.engine.step(minute, readings)
        self._record(step.detected, minute)
        self._record(step.ticked, None)

    def _record(self, out: Outcome, arrived: int | None) -> None:
        for frame in out.frames:
            if not isinstance(frame, AlertFrame):
                continue
            at = frame.time if arrived is None else arrived
            i = (at - self.start) // MINUTE_S
            if 0 <= i < self.minutes:
                flags = self.flags[frame.sensor]
                flags[0, i] |= frame.flow_flags
                flags[1, i] |= frame.pressure_flags


# ---------------------------------------------------------------------------------------------
# Runs


@dataclass(frozen=True)
class Plan:
    """What to evaluate."""

    seeds: tuple[int, ...] = (1, 2, 3, 4, 5)
    sensors: int = 3
    weeks: int = 8
    start: int = 0  # local midnight, epoch seconds
    initial_days: int = 28
    leak_day: int | None = None  # None: two weeks before the span's end
    leak_fraction: float = 0.1
    timezone: str = "Asia/Seoul"

    @property
    def minutes(self) -> int:
        return self.weeks * WEEK_MIN

    def leak_day_of(self, seed_index: int) -> int:
        """The leak's day: two weeks or half the span before its end, shifted a
        little per seed so that it starts on various weekdays."""
        days = self.weeks * 7
        if self.leak_day is not None:
            return self.leak_day
        return max(days // 2, days - 14 - 2 * (seed_index % 4))


@dataclass
class Run:
    """One simulated run's ground truth and what detection made of it."""

    faulted: bool
    seed: int
    site: OfflineSite
    sim: Simulator
    seconds: float


def initial_history(plan: Plan, seed: int) -> InitialData:
    """``plan.initial_days`` clean days before the span, one reading per 10 minutes."""
    since = plan.start - plan.initial_days * DAY_S
    sim = Simulator(SimulatorSettings(sensors=plan.sensors, seed=seed, start=EpochSeconds(since),
                                      timezone=plan.timezone, realtime_cap=False))
    rows: dict[SensorId, list[Reading]] = defaultdict(list)
    for r in sim.readings(EpochSeconds(since), plan.initial_days * 1440):
        if r.time % INITIAL_STEP_S == 0:
            rows[r.sensor].append(r)
    return {
        sensor: (np.array([r.time for r in rs], dtype=np.int64),
                 np.array([np.nan if r.flow is None else r.flow for r in rs]),
                 np.array([np.nan if r.pressure is None else r.pressure for r in rs]),
                 np.array([r.status for r in rs], dtype=np.int64))
        for sensor, rs in rows.items()
    }


def arrivals(sim: Simulator, start: int, minutes: int) -> Iterator[tuple[int, list[Reading]]]:
    """(arrival minute, readings) for each minute, generated a day at a time.

    A clock-fault reading is stamped hours ahead with odd seconds; it arrives in
    the minute it was generated, found from its episode's offset.
    """
    offsets = {
        sid: [(ep.start, ep.end, ep.offset_s)
              for ep in sim.episodes_between(n, EpochSeconds(start),
                                             EpochSeconds(start + minutes * MINUTE_S))
              if ep.kind == "clock"]
        for n, sid in enumerate(_sensor_ids(sim.settings.sensors), start=1)
    }

    def arrived(r: Reading) -> int:
        if r.time % MINUTE_S == 0:
            return int(r.time)
        for lo, hi, offset in offsets[r.sensor]:
            if lo <= r.time - offset < hi:
                return int(r.time - offset)
        raise AssertionError(f"reading {r} is off the minute but no clock fault")

    done = 0
    while done < minutes:
        chunk = min(1440, minutes - done)
        t = start + done * MINUTE_S
        for minute, group in groupby(sim.readings(EpochSeconds(t), chunk), key=arrived):
            yield minute, list(group)
        done += chunk


def run_once(plan: Plan, config: Config, seed: int, seed_index: int, faulted: bool,
             initial: InitialData) -> Run:
    began = time.perf_counter()
    faults = frozenset(FAULT_KINDS) if faulted else frozenset()
    sim = Simulator(SimulatorSettings(
        sensors=plan.sensors, seed=seed, start=EpochSeconds(plan.start), timezone=plan.timezone,
        faults=faults, leak_day=plan.leak_day_of(seed_index), leak_fraction=plan.leak_fraction,
        realtime_cap=False,
    ))
    site = OfflineSite(config, initial, _sensor_ids(plan.sensors), plan.start, plan.minutes)
    expected = plan.start
    for minute, readings in arrivals(sim, plan.start, plan.minutes):
        while expected < minute:  # minutes in which nothing arrived still tick
            site.step(expected, ())
            expected += MINUTE_S
        site.step(minute, readings)
        expected = minute + MINUTE_S
    return Run(faulted, seed, site, sim, time.perf_counter() - began)


def _sensor_ids(n: int) -> list[SensorId]:
    return [sensor_id(i) for i in range(1, n + 1)]


# ---------------------------------------------------------------------------------------------
# Scoring


@dataclass
class ClassScore:
    """Episodes of one class, how many were detected and how fast (per method too)."""

    episodes: int = 0
    detected: int = 0
    ttd: list[float] = field(default_factory=list)
    ttd_by_method: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    later_episodes: int = 0  # those starting after the site's first week ...
    later_hits: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # ... caught

    def add(self, found: dict[str, float | None], later: bool = True) -> None:
        """One episode; ``found`` maps each intended method to its time to detect (None:
        missed); ``later``: it starts after the site's first week."""
        self.episodes += 1
        self.later_episodes += later
        for method, v in found.items():
            self.later_hits[method] += later and v is not None
        hits = [v for v in found.values() if v is not None]
        if hits:
            self.detected += 1
            self.ttd.append(min(hits))
        for method, v in found.items():
            if v is not None:
                self.ttd_by_method[method].append(v)

    def recall(self, method: str | None = None) -> float | None:
        hits = self.detected if method is None else len(self.ttd_by_method[method])
        return _ratio(hits, self.episodes)


def _quantity_rows(ep: Episode) -> tuple[int, ...]:
    """Which flag rows (0 flow, 1 pressure) an episode's detection must be on."""
    if ep.kind in ("stuck", "spike", "missing", "excursion"):
        return {"flow": (0,), "pressure": (1,), "both": (0, 1)}[ep.quantity]
    return (0, 1)


def _first_flag(flags: np.ndarray, rows: tuple[int, ...], bit: int, lo: int,
                hi: int) -> int | None:
    hit = np.flatnonzero(np.bitwise_or.reduce(flags[list(rows), lo:hi], axis=0) & bit)
    return int(hit[0]) if hit.size else None


def score_episodes(run: Run, classes: dict[str, ClassScore]) -> None:
    site, sim = run.site, run.sim
    start, end = site.start, site.start + site.minutes * MINUTE_S
    for n, sensor in enumerate(_sensor_ids(sim.settings.sensors), start=1):
        flags = site.flags[sensor]
        for ep in sim.episodes_between(n, EpochSeconds(start), EpochSeconds(end)):
            if ep.kind in INGEST_ONLY:
                continue
            lo = (ep.start - start) // MINUTE_S
            hi = min((ep.end - start) // MINUTE_S, site.minutes)
            rows = _quantity_rows(ep)
            classes[ep.kind].add({m: _first_flag(flags, rows, METHODS[m], lo, hi)
                                  for m in INTENDED[ep.kind]}, later=lo >= WEEK_MIN)
        if sim.leak_start is not None and sim.leak_start < end:
            leak_night = dt.datetime.fromtimestamp(sim.leak_start, site.tz).date()
            nights = [rec for night, rec in sorted(site.nights[sensor].items())
                      if night >= leak_night]
            if len(nights) < 2:
                continue  # the span ends before two leak nights were judged
            caught = next((i for i, rec in enumerate(nights[:2], start=1) if rec.leak), None)
            classes["leak"].add({"NIGHT": caught})


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    padded = np.concatenate(([False], mask, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _night_alarms(records: Iterable[NightRecord]) -> list[NightRecord]:
    """The first night of each run of leak verdicts (a night without verdict breaks none)."""
    alarms, previous = [], False
    for rec in records:
        if rec.leak is None:
            continue
        if rec.leak and not previous:
            alarms.append(rec)
        previous = rec.leak
    return alarms


@dataclass
class AlarmCount:
    """False alarms per method over some sensor-minutes, and over those after the first week.

    In its first week a site has no week-earlier hour for the seasonal-naive
    forecast (PREDICT stays quiet where it has none), so the first week is also counted
    apart.
    """

    alarms: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    later: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    sensor_minutes: int = 0
    later_minutes: int = 0
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, method: str, minute: int, label: str) -> None:
        self.alarms[method] += 1
        self.later[method] += minute >= WEEK_MIN
        self.examples[method].append(label)

    def per_week(self, method: str, *, after_first_week: bool = False) -> float | None:
        minutes = self.later_minutes if after_first_week else self.sensor_minutes
        alarms = self.later if after_first_week else self.alarms
        return alarms[method] / (minutes / WEEK_MIN) if minutes else None


def count_false_alarms(run: Run, clean: AlarmCount, between: AlarmCount) -> None:
    """Clean runs: every alarm is false. Faulted runs: alarms touching no episode,
    before the leak."""
    site, sim = run.site, run.sim
    start, end = site.start, site.start + site.minutes * MINUTE_S
    for n, sensor in enumerate(_sensor_ids(sim.settings.sensors), start=1):
        flags = site.flags[sensor][0] | site.flags[sensor][1]
        # Minutes where an alarm is not false: an episode and its tail, the leak.
        # NIGHT is meant for excess flow only: a night it flags for a sensor
        # fault (missing blocks, a clock-fault stamp) is a false alarm.
        covered = np.zeros(site.minutes, dtype=bool)
        excess_flow = np.zeros(site.minutes, dtype=bool)
        if run.faulted:
            for ep in sim.episodes_between(n, EpochSeconds(start), EpochSeconds(end)):
                lo, hi = (ep.start - start) // MINUTE_S, (ep.end - start) // MINUTE_S
                covered[lo:hi + TAIL_MINUTES] = True
                if ep.kind == "excursion" and ep.quantity != "pressure":
                    excess_flow[lo:hi] = True
            if sim.leak_start is not None:
                covered[max(0, (sim.leak_start - start) // MINUTE_S):] = True
                excess_flow[max(0, (sim.leak_start - start) // MINUTE_S):] = True
        count = between if run.faulted else clean
        count.sensor_minutes += int(np.count_nonzero(~covered))
        count.later_minutes += int(np.count_nonzero(~covered[WEEK_MIN:]))
        for method, bit in METHODS.items():
            if method == "NIGHT":
                spans = []
                for rec in _night_alarms(rec for _, rec in sorted(site.nights[sensor].items())):
                    lo_t, hi_t = site.window.bounds(rec.night)
                    spans.append((max(0, (lo_t - start) // MINUTE_S),
                                  min(site.minutes, (hi_t - start) // MINUTE_S), rec.night))
            else:
                spans = [(a, b, None) for a, b in _runs(flags & bit > 0)]
            for a, b, night in spans:
                if not (excess_flow if night else covered)[a:b].any():
                    label = night.isoformat() if night else _stamp(start + a * MINUTE_S, site)
                    count.add(method, a, f"seed {run.seed} {sensor} {label}")


def _stamp(t: int, site: OfflineSite) -> str:
    return dt.datetime.fromtimestamp(t, site.tz).strftime("%Y-%m-%d %a %H:%M")


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


# ---------------------------------------------------------------------------------------------
# The report


def evaluate(plan: Plan, config: Config, *,
             log: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run every seed, faulted and clean: the report (the JSON object) and the details
    (every false alarm and criteria build, for ``--examples``)."""
    classes: dict[str, ClassScore] = defaultdict(ClassScore)
    clean, between = AlarmCount(), AlarmCount()
    criteria_events: list[str] = []
    future_closed = future_leak = 0
    began = time.perf_counter()
    for index, seed in enumerate(plan.seeds):
        initial = initial_history(plan, seed)
        for faulted in (True, False):
            run = run_once(plan, config, seed, index, faulted, initial)
            if log:
                log(f"seed {seed} {'faulted' if faulted else 'clean  '}: "
                    f"{plan.sensors} sensor(s) x {plan.weeks} weeks in {run.seconds:.1f} s")
            if faulted:
                score_episodes(run, classes)
                leak_night = (dt.datetime.fromtimestamp(run.sim.leak_start, run.site.tz).date()
                              if run.sim.leak_start is not None else dt.date.max)
                early = [rec for nights in run.site.nights.values() for rec in nights.values()
                         if rec.closed_by_future_stamp]
                future_closed += len(early)
                future_leak += sum(bool(rec.leak) and rec.night < leak_night for rec in early)
            count_false_alarms(run, clean, between)
            criteria_events += [
                f"seed {seed} {'faulted' if faulted else 'clean'} {s} v{v} {src} at "
                f"{_stamp(t, run.site)}" for s, t, v, src in run.site.criteria_log]
    methods: dict[str, Any] = {}
    for method, pooled in POOLED.items():
        episodes = sum(classes[k].episodes for k in pooled)
        ttd = [v for k in pooled for v in classes[k].ttd_by_method[method]]
        later = sum(classes[k].later_episodes for k in pooled)
        methods[method] = {
            "classes": list(pooled),
            "episodes": episodes,
            "recall": _ratio(len(ttd), episodes),
            "recall_after_first_week": _ratio(
                sum(classes[k].later_hits[method] for k in pooled), later),
            "median_ttd": _median(ttd),
            "ttd_unit": "nights" if method == "NIGHT" else "minutes",
            "false_alarms_per_sensor_week": _round(clean.per_week(method)),
            "false_alarms": clean.alarms[method],
            "false_alarms_per_sensor_week_after_first_week": _round(
                clean.per_week(method, after_first_week=True)),
            "false_alarms_between_faults_per_sensor_week": _round(between.per_week(method)),
            "false_alarms_between_faults": between.alarms[method],
            "false_alarms_between_faults_per_sensor_week_after_first_week": _round(
                between.per_week(method, after_first_week=True)),
        }
    report: dict[str, Any] = {
        "bench": "detect_eval",
        "seeds": list(plan.seeds),
        "sensors": plan.sensors,
        "weeks": plan.weeks,
        "sensor_weeks": round(len(plan.seeds) * plan.sensors * plan.weeks, 2),
        "clean_sensor_weeks": round(clean.sensor_minutes / WEEK_MIN, 2),
        "between_faults_sensor_weeks": round(between.sensor_minutes / WEEK_MIN, 2),
        "leak_fraction": plan.leak_fraction,
        "methods": methods,
        "classes": {
            kind: {"episodes": score.episodes, "recall": score.recall(),
                   "median_ttd": _median(score.ttd),
                   "method": "/".join(INTENDED[kind]),
                   **({"recall_by_method": {m: score.recall(m) for m in INTENDED[kind]}}
                      if len(INTENDED[kind]) > 1 else {})}
            for kind in INTENDED if (score := classes[kind]).episodes
        },
        "ingest_only": list(INGEST_ONLY),
        "nights_closed_by_future_stamp": future_closed,
        "nights_closed_by_future_stamp_false_leak": future_leak,
        "notes": NOTES,
        "targets": TARGETS,
        "seconds": round(time.perf_counter() - began, 1),
    }
    details = {"clean": dict(clean.examples), "between_faults": dict(between.examples),
               "criteria": criteria_events}
    return report, details


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def format_table(report: dict[str, Any]) -> str:
    lines = [f"detect_eval: seeds {report['seeds']}, {report['sensors']} sensor(s) x "
             f"{report['weeks']} weeks each, faulted and clean "
             f"({report['sensor_weeks']} sensor-weeks each; leak {report['leak_fraction']:.0%}"
             f" of the minimum night flow)", ""]
    lines.append(f"{'class':<10} {'method':<14} {'episodes':>8} {'recall':>7} {'median TTD':>11}")
    for kind, c in report["classes"].items():
        unit = "nights" if kind == "leak" else "min"
        ttd = "-" if c["median_ttd"] is None else f"{c['median_ttd']:g} {unit}"
        recall = "-" if c["recall"] is None else f"{c['recall']:.3f}"
        extra = ""
        if "recall_by_method" in c:
            extra = "  (" + ", ".join(f"{m} {v:.3f}" for m, v in c["recall_by_method"].items()
                                      if v is not None) + ")"
        lines.append(f"{kind:<10} {c['method']:<14} {c['episodes']:>8} {recall:>7} {ttd:>11}"
                     + extra)
    lines.append(f"{'garble':<10} {'(ingest)':<14}  rejected by the reader, never detected")
    lines.append(f"{'duplicate':<10} {'(ingest)':<14}  first copy kept by the store")
    lines += ["", f"{'':<29} {'false alarms per sensor-week (count)':^46}",
              f"{'method':<8} {'recall':>7} {'wk 2+':>6} {'TTD':>5} {'clean':>13} "
              f"{'after wk 1':>10} {'between faults':>15} {'after wk 1':>10}"]
    for method, m in report["methods"].items():
        recall = "-" if m["recall"] is None else f"{m['recall']:.3f}"
        later = m["recall_after_first_week"]
        later = "-" if later is None else f"{later:.3f}"
        ttd = "-" if m["median_ttd"] is None else f"{m['median_ttd']:g}"
        lines.append(
            f"{method:<8} {recall:>7} {later:>6} {ttd:>5} "
            f"{_num(m['false_alarms_per_sensor_week']):>7} ({m['false_alarms']:>3}) "
            f"{_num(m['false_alarms_per_sensor_week_after_first_week']):>10} "
            f"{_num(m['false_alarms_between_faults_per_sensor_week']):>9} "
            f"({m['false_alarms_between_faults']:>3}) "
            f"{_num(m['false_alarms_between_faults_per_sensor_week_after_first_week']):>10}")
    lines.append(f"(wk 2+: recall of the episodes after the site's first week; "
                 f"TTD in minutes, nights for NIGHT; clean: {report['clean_sensor_weeks']} "
                 f"sensor-weeks; between faults: {report['between_faults_sensor_weeks']} "
                 f"sensor-weeks outside episodes + {TAIL_MINUTES} min, before the leak)")
    lines.append(f"nights closed early by a clock-fault stamp: "
                 f"{report['nights_closed_by_future_stamp']} "
                 f"({report['nights_closed_by_future_stamp_false_leak']} judged a leak before "
                 f"the leak began)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3,4,5", help="comma-separated simulator seeds")
    parser.add_argument("--sensors", type=int, default=3)
    parser.add_argument("--weeks", type=int, default=8, help="evaluated weeks per run")
    parser.add_argument("--start", default=DEFAULT_START, help="local date YYYY-MM-DD")
    parser.add_argument("--initial-days", type=int, default=28)
    parser.add_argument("--leak-day", type=int, default=None)
    parser.add_argument("--leak-fraction", type=float, default=0.1)
    parser.add_argument("--config", default=None, help="site.toml (default: built-in defaults)")
    parser.add_argument("--examples", action="store_true", help="list false alarms and criteria")
    args = parser.parse_args(argv)

    config = load_config(args.config) if args.config else default_config()
    tz = config.site.tz
    start = int(dt.datetime.combine(dt.date.fromisoformat(args.start), dt.time(0), tz).timestamp())
    plan = Plan(seeds=tuple(int(s) for s in args.seeds.split(",") if s.strip()),
                sensors=args.sensors, weeks=args.weeks, start=start,
                initial_days=args.initial_days, leak_day=args.leak_day,
                leak_fraction=args.leak_fraction, timezone=config.site.timezone)
    report, examples = evaluate(plan, config, log=lambda msg: print(msg, flush=True))
    print()
    print(format_table(report))
    if args.examples:
        for name, items in examples.items():
            print(f"\n{name}:")
            if isinstance(items, dict):
                for method, found in items.items():
                    for x in found:
                        print(f"  {method}: {x}")
            else:
                for x in items:
                    print(f"  {x}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
