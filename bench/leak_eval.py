"""Leak detection on labelled network scenarios: detection delay, false events, budgets.

    python bench/leak_eval.py                     # the bench set: seeds 101-130
    python bench/leak_eval.py --seeds test        # the test suite's small fixed cases
    python bench/leak_eval.py --seeds 101,102 --jobs 2

The scenarios are :mod:`bench.leak_scenarios`' (wntr network models, DMA inlet
meters, one reading a minute, 3 months of history then the evaluated months).
The detection engine runs over each scenario's readings (:func:`run_engine`:
the one place to swap engines) and gives one NIGHT verdict per sensor per judged
night; :func:`score` compares them with the labels:

* a leak is **detected** by the first NIGHT episode (a run of flagged nights)
  that starts while it is active (after its start, by its repair; a flag raised
  before it began finds nothing new); its **delay** in nights counts from its
  first night (a flag at the end of the leak's first night is a delay of 1);
* a **false event** is a NIGHT episode (a run of flagged nights; a night without
  a verdict breaks none) whose first flagged night falls in the evaluated span
  with no leak active on that sensor; the rate is per sensor-quarter of leak-free
  evaluated time, also for the ``clean`` scenarios alone;
* **classes**: abrupt leaks of at least 20 %, 10-20 % and 5-10 % of the MNF;
  growing leaks (their size when found, MNF fraction); the ``weekdays``
  scenarios' 30 % leaks, one starting on each day of the week, flagged by the end
  of their second night. Budgets (issue 9, item 8) are printed beside the figures.

**Seeds.** The engine is tuned on seeds 1-20 (``--seeds tune``); the bench set
(seeds 101-130, the default) is never tuned on. A seed's kind follows its last
digit: 0-5 ``leaks``, 6-7 ``clean``, 8-9 ``weekdays``; its network cycles
through ky4, ky10, Net3, Net6.

The last line printed is a JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from itertools import groupby
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import leak_scenarios as scenarios  # noqa: E402
from bench.leak_scenarios import Leak, Scenario  # noqa: E402
from core.config import Config, ConfigError, load_config, parse_config  # noqa: E402
from core.replay import replay_nights  # noqa: E402
from core.types import Reading, SensorId  # noqa: E402

MINUTE_S = 60
DAY_S = 86400
QUARTER_DAYS = 365.25 / 4
TUNING_SEEDS = tuple(range(1, 21))
BENCH_SEEDS = tuple(range(101, 131))
# Size classes of abrupt leaks (MNF fractions, lower bound inclusive).
SIZE_CLASSES = ((">=20%", 0.20, float("inf")), ("10-20%", 0.10, 0.20), ("5-10%", 0.05, 0.10))
GROWING = "growing"
WEEKDAY_PROBE = "30% by weekday"
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
GROWING_LIMIT = 0.25  # growing leaks are to be found before this MNF fraction
BUDGETS = {
    ">=20%": {"found": ">= 0.95", "median_delay_nights": "<= 1"},
    "10-20%": {"found_within_3_nights": ">= 0.8"},
    "growing": {"found_below_25pct": "= 1 (every one)"},
    "30% by weekday": {"flagged_by_night_2": "= 1 (every weekday)"},
    "false_events_per_sensor_quarter_clean": "<= 1",
}


@dataclass(frozen=True)
class Case:
    """One scenario to evaluate (the arguments of :func:`bench.leak_scenarios.scenario`)."""

    seed: int
    kind: str
    network: str | None = None
    meters: int = 2
    history_days: int = 91
    eval_days: int = 182

    def build(self) -> Scenario:
        return scenarios.scenario(self.seed, kind=self.kind, network=self.network,
                                  meters=self.meters, history_days=self.history_days,
                                  eval_days=self.eval_days)


# The test suite's fixed cases, small: one metered Net3 zone, two weeks of history (NIGHT
# judges from a week of clean nights on; criteria come later) and ten evaluated days.
TEST_CASES = (
    Case(1, "single", "Net3", meters=1, history_days=14, eval_days=10),
    Case(2, "clean", "Net3", meters=1, history_days=14, eval_days=10),
)


def kind_of(seed: int) -> str:
    """The scenario kind of a numbered seed (by its last digit)."""
    digit = seed % 10
    return "leaks" if digit <= 5 else "clean" if digit <= 7 else "weekdays"


def cases_for(seeds: str, *, kind: str | None = None, history_days: int | None = None,
              eval_days: int | None = None) -> list[Case]:
    """``test``, ``tune``, ``bench`` or a comma-separated list of seeds."""
    if seeds == "test":
        chosen = list(TEST_CASES)
    else:
        numbers = {"tune": TUNING_SEEDS, "bench": BENCH_SEEDS}.get(seeds)
        if numbers is None:
            try:
                numbers = tuple(int(s) for s in seeds.split(",") if s.strip())
            except ValueError:
                raise ValueError(f"--seeds: expected test, tune, bench or numbers like "
                                 f"101,102; got {seeds!r}") from None
        chosen = [Case(n, kind_of(n)) for n in numbers]
    return [replace(c, kind=kind or c.kind,
                    history_days=c.history_days if history_days is None else history_days,
                    eval_days=c.eval_days if eval_days is None else eval_days)
            for c in chosen]


# ---------------------------------------------------------------------------------------------
# The engine: readings in, night verdicts out


@dataclass(frozen=True, slots=True)
class NightVerdict:
    """The engine's judgement of one sensor's night, as NIGHT would be raised from its end."""

    sensor: SensorId
    night_end: int  # epoch seconds, the end of the night window
    flagged: bool


def run_engine(config: Config, readings: Sequence[Reading],
               holidays: Sequence[str]) -> list[NightVerdict]:
    """Replay ``readings`` (time order) through the service's NIGHT engine
    (:func:`core.replay.replay_nights`, the code the NightFlow actor runs) on a site
    with the scenario's ``holidays`` (ISO dates): its night verdicts."""
    dates = tuple(sorted({dt.date.fromisoformat(d) for d in holidays}))
    config = replace(config, site=replace(config.site, holidays=dates))
    return sorted((NightVerdict(j.summary.sensor, j.ends, bool(j.flagged))
                   for j in replay_nights(config, readings) if j.flagged is not None),
                  key=lambda v: (v.sensor, v.night_end))


def engine_config(path: str | None) -> Config:
    """The site configuration the engine runs with; without a file, the defaults with no
    initial data (the demo's file names sensors 001-003 too, and is another site's)."""
    if path:
        return load_config(path)
    return parse_config({"criteria": {"initial_data": ""}}, source="<leak_eval defaults>")


# ---------------------------------------------------------------------------------------------
# Scoring (pure)


@dataclass(frozen=True)
class LeakResult:
    """How the engine did on one labelled leak."""

    leak: Leak
    delay_nights: int | None  # None: not detected
    size_found: float | None  # MNF fraction when first flagged

    @property
    def detected(self) -> bool:
        return self.delay_nights is not None


@dataclass(frozen=True)
class Episode:
    """A run of flagged nights on one sensor."""

    sensor: SensorId
    first_end: int
    last_end: int
    nights: int


def episodes(verdicts: Iterable[NightVerdict]) -> list[Episode]:
    """The NIGHT episodes: runs of flagged nights per sensor (an unflagged verdict ends
    one; a night without a verdict does not)."""
    out: list[Episode] = []
    ordered = sorted(verdicts, key=lambda v: (v.sensor, v.night_end))
    for sensor, group in groupby(ordered, key=lambda v: v.sensor):
        run: list[NightVerdict] = []
        for v in [*group, None]:
            if v is not None and v.flagged:
                run.append(v)
                continue
            if run:
                out.append(Episode(sensor, run[0].night_end, run[-1].night_end, len(run)))
            run = []
    return out


def first_night_end(leak: Leak, verdicts: Sequence[NightVerdict], tz: ZoneInfo) -> int | None:
    """End of the leak's first night: the first night end after its start, at the local
    time of day the verdicts' nights end (also when that night has no verdict)."""
    if not verdicts:
        return None
    end_local = dt.datetime.fromtimestamp(verdicts[0].night_end, tz).time()
    start_local = dt.datetime.fromtimestamp(leak.start, tz)
    candidate = dt.datetime.combine(start_local.date(), end_local, tz)
    if candidate.timestamp() <= leak.start:
        candidate = dt.datetime.combine(start_local.date() + dt.timedelta(days=1), end_local, tz)
    return int(candidate.timestamp())


def nights_between(first_end: int, later_end: int, tz: ZoneInfo) -> int:
    """Nights from the one ending at ``first_end`` to the one ending at ``later_end``,
    both counted (calendar days, so a daylight-saving change counts no extra night)."""
    a = dt.datetime.fromtimestamp(first_end, tz).date()
    b = dt.datetime.fromtimestamp(later_end, tz).date()
    return (b - a).days + 1


def score_leak(leak: Leak, verdicts: Sequence[NightVerdict], tz: ZoneInfo) -> LeakResult:
    """Delay and size when found of one leak, from its sensor's verdicts (time order).

    Found by the first NIGHT episode that starts while the leak is active: a flag
    raised before the leak began (a false event going on) tells the operator nothing
    new, so it finds no leak.
    """
    mine = [v for v in verdicts if v.sensor == leak.sensor]
    first = first_night_end(leak, mine, tz)
    hit = next((e for e in episodes(mine) if leak.start < e.first_end <= leak.end), None)
    if hit is None or first is None:
        return LeakResult(leak, None, None)
    return LeakResult(leak, nights_between(first, hit.first_end, tz),
                      round(leak.size_at(hit.first_end), 4))


def false_episodes(verdicts: Sequence[NightVerdict], leaks: Sequence[Leak],
                   since: int) -> list[Episode]:
    """Episodes starting at or after ``since`` with no leak active on their sensor."""
    return [e for e in episodes(verdicts) if e.first_end >= since and not any(
        k.sensor == e.sensor and k.start < e.first_end <= k.end for k in leaks)]


def leak_free_days(sensors: Sequence[SensorId], leaks: Sequence[Leak], since: int,
                   until: int) -> float:
    """Sensor-days in [since, until) with no leak active on the sensor (the exposure of
    the false-event rate)."""
    total = 0.0
    for sensor in sensors:
        busy = sum(max(0, min(k.end, until) - max(k.start, since))
                   for k in leaks if k.sensor == sensor)
        total += (until - since - busy) / DAY_S
    return total


@dataclass
class CaseScore:
    """One scenario's scored leaks and false events."""

    case: Case
    network: str
    timezone: str
    results: list[LeakResult]
    false_events: list[Episode]
    leak_free_sensor_days: float
    verdicts: int
    seconds: float


def score(case: Case, sc: Scenario, verdicts: Sequence[NightVerdict],
          seconds: float = 0.0) -> CaseScore:
    """Score one scenario: only leaks starting in the evaluated span count."""
    tz = sc.tz
    ordered = sorted(verdicts, key=lambda v: (v.sensor, v.night_end))
    scored = [score_leak(k, ordered, tz) for k in sc.leaks if k.start >= sc.eval_start]
    false = false_episodes(ordered, sc.leaks, sc.eval_start)
    exposure = leak_free_days(sc.sensors, sc.leaks, sc.eval_start, sc.end)
    return CaseScore(case, sc.network, sc.timezone, scored, false, exposure, len(ordered),
                     seconds)


def size_class(leak: Leak) -> str | None:
    """The class a leak is reported in (None: an abrupt leak under 5 %)."""
    if leak.kind == "growing":
        return GROWING
    for name, low, high in SIZE_CLASSES:
        if low <= leak.size < high:
            return name
    return None


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def summarise(scores: Sequence[CaseScore]) -> dict[str, Any]:
    """The report: the issue's JSON keys first, then the clean rate and the seeds."""
    main = [r for s in scores if s.case.kind != "weekdays" for r in s.results]
    found = [r for r in main if r.detected]
    by_class: dict[str, dict[str, Any]] = {}
    for name, _, _ in SIZE_CLASSES:
        rs = [r for r in main if size_class(r.leak) == name]
        hits = [r for r in rs if r.detected]
        delays = [r.delay_nights for r in hits if r.delay_nights is not None]
        by_class[name] = {
            "leaks": len(rs), "detected": len(hits), "found": _share(len(hits), len(rs)),
            "median_delay_nights": _median([float(d) for d in delays]),
            "found_within_1_night": _share(sum(d <= 1 for d in delays), len(rs)),
            "found_within_3_nights": _share(sum(d <= 3 for d in delays), len(rs)),
        }
    grow = [r for r in main if r.leak.kind == "growing"]
    grow_hits = [r for r in grow if r.detected]
    by_class[GROWING] = {
        "leaks": len(grow), "detected": len(grow_hits), "found": _share(len(grow_hits),
                                                                        len(grow)),
        "median_delay_nights": _median([float(r.delay_nights or 0) for r in grow_hits]),
        "median_size_found": _median([r.size_found or 0.0 for r in grow_hits]),
        "found_below_25pct": _share(sum((r.size_found or 1.0) < GROWING_LIMIT
                                        for r in grow_hits), len(grow)),
    }
    probes = [(s, r) for s in scores if s.case.kind == "weekdays" for r in s.results]
    weekday: dict[str, list[int]] = {d: [0, 0] for d in WEEKDAYS}
    for s, r in probes:
        day = WEEKDAYS[dt.datetime.fromtimestamp(r.leak.start, ZoneInfo(s.timezone)).weekday()]
        weekday[day][1] += 1
        weekday[day][0] += r.delay_nights is not None and r.delay_nights <= 2
    by_class[WEEKDAY_PROBE] = {
        "leaks": len(probes), "flagged_by_night_2": _share(sum(v[0] for v in weekday.values()),
                                                           len(probes)),
        "by_weekday": {d: f"{v[0]}/{v[1]}" for d, v in weekday.items()},
    }
    exposure = sum(s.leak_free_sensor_days for s in scores)
    clean = [s for s in scores if s.case.kind == "clean"]
    clean_exposure = sum(s.leak_free_sensor_days for s in clean)
    false_all = sum(len(s.false_events) for s in scores)
    false_clean = sum(len(s.false_events) for s in clean)
    return {
        "bench": "leak_eval",
        "leaks": len(main),
        "detected": len(found),
        "median_delay_nights": _median([float(r.delay_nights or 0) for r in found]),
        "false_events_per_sensor_quarter": _rate(false_all, exposure),
        "by_class": by_class,
        "false_events_per_sensor_quarter_clean": _rate(false_clean, clean_exposure),
        "false_events": false_all,
        "sensor_quarters": round(exposure / QUARTER_DAYS, 2),
        "clean_sensor_quarters": round(clean_exposure / QUARTER_DAYS, 2),
        "cases": [f"{s.case.kind}:{s.case.seed}:{s.network}" for s in scores],
        "budgets": BUDGETS,
        "seconds": round(sum(s.seconds for s in scores), 1),
    }


def _rate(events: int, days: float) -> float | None:
    return round(events / (days / QUARTER_DAYS), 3) if days > 0 else None


# ---------------------------------------------------------------------------------------------
# Running and reporting


def evaluate_case(case: Case, config_path: str | None) -> CaseScore:
    """Build (or load) one scenario, run the engine over it, score it."""
    began = time.perf_counter()
    sc = case.build()
    verdicts = run_engine(engine_config(config_path), list(scenarios.readings(sc)), sc.holidays)
    return score(case, sc, verdicts, time.perf_counter() - began)


def leak_rows(score_: CaseScore) -> list[str]:
    """One line per scored leak and per false event."""
    tz = ZoneInfo(score_.timezone)
    c = score_.case
    head = f"{c.kind:<8} {c.seed:>4} {score_.network:<5}"
    rows = []
    for r in score_.results:
        k = r.leak
        when = dt.datetime.fromtimestamp(k.start, tz).strftime("%Y-%m-%d %a %H:%M")
        size = (f"{k.size:5.0%}" if k.kind == "abrupt"
                else f"{k.size:3.0%}+{k.growth_per_day:.1%}/d")
        found = ("missed" if r.delay_nights is None else
                 f"night {r.delay_nights}" + (f" at {r.size_found:.0%}" if k.kind == "growing"
                                             else ""))
        rows.append(f"{head} {k.sensor} {k.kind:<7} {when}  {size:<12} {found}")
    for e in score_.false_events:
        when = dt.datetime.fromtimestamp(e.first_end, tz).strftime("%Y-%m-%d %a")
        rows.append(f"{head} {e.sensor} FALSE   {when}  {e.nights} night(s) flagged")
    return rows


def format_budgets(report: dict[str, Any]) -> list[str]:
    """The figures beside their budgets."""
    c = report["by_class"]

    def show(x: Any) -> str:
        return "-" if x is None else f"{x:g}" if isinstance(x, float) else str(x)

    big, mid, grow, probe = c[">=20%"], c["10-20%"], c[GROWING], c[WEEKDAY_PROBE]
    return [
        f"leaks >= 20% of MNF  found {show(big['found'])} (budget >= 0.95), median delay "
        f"{show(big['median_delay_nights'])} nights (budget <= 1)  [{big['leaks']} leaks]",
        f"leaks 10-20%         found within 3 nights {show(mid['found_within_3_nights'])} "
        f"(budget >= 0.8)  [{mid['leaks']} leaks]",
        f"leaks 5-10%          found {show(c['5-10%']['found'])}, median delay "
        f"{show(c['5-10%']['median_delay_nights'])} nights (no budget)  "
        f"[{c['5-10%']['leaks']} leaks]",
        f"growing leaks        found below 25% of MNF {show(grow['found_below_25pct'])} "
        f"(budget 1), median size found {show(grow['median_size_found'])}  "
        f"[{grow['leaks']} leaks]",
        f"30% by weekday       flagged by night 2 {show(probe['flagged_by_night_2'])} "
        f"(budget 1): {probe['by_weekday']}",
        f"false NIGHT events   {show(report['false_events_per_sensor_quarter_clean'])} per "
        f"sensor-quarter on clean scenarios (budget <= 1), "
        f"{show(report['false_events_per_sensor_quarter'])} on all leak-free time "
        f"[{report['false_events']} events in {report['sensor_quarters']} sensor-quarters]",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="bench",
                        help="test, tune (1-20), bench (101-130, default) or e.g. 101,102")
    parser.add_argument("--kind", choices=scenarios.KINDS, default=None,
                        help="force one scenario kind for every seed")
    parser.add_argument("--history-days", type=int, default=None)
    parser.add_argument("--eval-days", type=int, default=None)
    parser.add_argument("--config", default=None,
                        help="site.toml for the engine (default: defaults, no initial data)")
    parser.add_argument("--jobs", type=int, default=1, help="scenarios evaluated at once")
    args = parser.parse_args(argv)
    try:
        cases = cases_for(args.seeds, kind=args.kind, history_days=args.history_days,
                          eval_days=args.eval_days)
        engine_config(args.config)  # a bad file stops here, before any scenario is built
    except ConfigError as exc:
        for line in exc.errors:
            print(f"leak_eval: {exc.source}: {line}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"leak_eval: {exc}", file=sys.stderr)
        return 2
    scores: list[CaseScore] = []
    with ProcessPoolExecutor(max_workers=args.jobs) if args.jobs > 1 else _Inline() as pool:
        for result in pool.map(evaluate_case, cases, [args.config] * len(cases)):
            scores.append(result)
            for row in leak_rows(result):
                print(row, flush=True)
            print(f"# {result.case.kind} {result.case.seed} {result.network}: "
                  f"{result.verdicts} night verdicts in {result.seconds:.1f} s", flush=True)
    report = summarise(scores)
    print()
    for line in format_budgets(report):
        print(line)
    print(json.dumps(report))
    return 0


class _Inline:
    """``map`` in this process (``--jobs 1``): the same interface as the pool."""

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn: Any, *iterables: Iterable[Any]) -> Iterable[Any]:
        return map(fn, *iterables)


if __name__ == "__main__":
    sys.exit(main())
