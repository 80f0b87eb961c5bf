"""Generate conf/initial_data.csv: the shipped history of the built-in simulator.

    python bench/make_initial_data.py                  # writes conf/initial_data.csv
    python bench/make_initial_data.py --check          # ... and checks the criteria it gives

The history is ``--days`` days of the simulator's sensors 001..``--sensors``
(seed ``--seed``, no faults) ending at local midnight of ``--end``, one reading
per ``--step-minutes``. The default end is the simulator's default start (60 days
before "now") on the day the shipped file was made, so the shipped history
directly precedes what the demo simulates; the simulator's annual season is only
+-4 %, so the file stays usable for months.

Every row is a real one-minute reading (the one at minute 0 of each block), not
a block mean: VALUE and PREDICT judge single one-minute readings, and means
would hide their noise and make bands and the PREDICT band too narrow.

``--check`` reads the file back with ``core.criteria.read_initial_data``, builds
each sensor's criteria and replays one-minute simulator data of the following
``--check-days`` days through ``core.detection.evaluate``: false VALUE alarms
per sensor-week on clean data, how many one-hour +-50 % excursions are caught,
and whether a constant leak of 10 % of the MNF baseline would exceed the allowed
excess. The last line printed is a JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import criteria as criteria_logic  # noqa: E402
from core.detection import SensorState, SystemLimits, evaluate  # noqa: E402
from core.simulator import Simulator, SimulatorSettings  # noqa: E402
from core.types import FLAG_VALUE, EpochSeconds, Reading  # noqa: E402

DEFAULT_END = "2026-09-29"
NIGHT = (dt.time(22, 0), dt.time(5, 0))
PHYSICAL = criteria_logic.PhysicalRange(0.0, 10000.0, 0.0, 20.0)
EXCURSION_HOURS = (3, 7, 10, 13, 19, 23)


def simulate(settings: SimulatorSettings, start: int, minutes: int) -> list[Reading]:
    return list(Simulator(settings).readings(EpochSeconds(start), minutes))


def write_csv(path: Path, readings: list[Reading], tz: ZoneInfo, step_s: int, note: str) -> int:
    rows = 0
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(f"# {note}\n")
        fh.write("# format: core.criteria.read_initial_data; one reading per sensor per "
                 f"{step_s // 60} minutes, local time with UTC offset\n")
        fh.write(",".join(criteria_logic.INITIAL_DATA_HEADER) + "\n")
        for r in sorted(readings, key=lambda r: (r.sensor, r.time)):
            if r.time % step_s:
                continue
            stamp = dt.datetime.fromtimestamp(r.time, tz).isoformat()
            flow = "" if r.flow is None else f"{r.flow:.2f}"
            pressure = "" if r.pressure is None else f"{r.pressure:.3f}"
            fh.write(f"{r.sensor},{stamp},{flow},{pressure},{r.status:02X}\n")
            rows += 1
    return rows


def _arrays(readings: list[Reading]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = np.array([r.time for r in readings], dtype=np.int64)
    f = np.array([np.nan if r.flow is None else r.flow for r in readings])
    p = np.array([np.nan if r.pressure is None else r.pressure for r in readings])
    return t, f, p


def _value_onsets(crit: criteria_logic.SensorCriteria, t: np.ndarray, f: np.ndarray,
                  p: np.ndarray, tz: ZoneInfo) -> tuple[int, int, list[int]]:
    """(flow onsets, pressure onsets, flow VALUE flag per reading)."""
    state = SensorState()
    limits = SystemLimits()
    flow_on, pressure_on, flow_flags = 0, 0, []
    prev_f = prev_p = False
    for ti, fi, pi in zip(t.tolist(), f.tolist(), p.tolist(), strict=True):
        ev = evaluate(Reading(crit.sensor, EpochSeconds(ti), fi, pi), state, limits=limits,
                      criteria=crit, expectation=None, now=EpochSeconds(ti), tz=tz)
        vf, vp = bool(ev.flow_flags & FLAG_VALUE), bool(ev.pressure_flags & FLAG_VALUE)
        flow_on += vf and not prev_f
        pressure_on += vp and not prev_p
        prev_f, prev_p = vf, vp
        flow_flags.append(int(vf))
    return flow_on, pressure_on, flow_flags


def check(path: Path, settings: SimulatorSettings, end: int, days: int) -> dict[str, object]:
    tz = settings.tz
    history = criteria_logic.read_initial_data(path)
    fresh = simulate(settings, end, days * 1440)
    report: dict[str, object] = {}
    weeks = days / 7
    for sensor in sorted(history):
        crit = criteria_logic.build_criteria(
            sensor, *history[sensor], tz=tz, version=1, source="initial_data",
            physical=PHYSICAL, night_start=NIGHT[0], night_end=NIGHT[1],
        )
        if crit is None:
            report[sensor] = "no criteria"
            continue
        t, f, p = _arrays([r for r in fresh if r.sensor == sensor])
        flow_on, pressure_on, _ = _value_onsets(crit, t, f, p, tz)
        caught = 0
        for i, hour in enumerate(EXCURSION_HOURS):
            # One excursion per day (its own replay of that day), a different hour each.
            day_start = int(end) + (i % days) * 86400
            day = (t >= day_start) & (t < day_start + 86400)
            td, fd, pd_ = t[day], f[day], p[day]
            inside = (td >= day_start + hour * 3600) & (td < day_start + (hour + 1) * 3600)
            for factor in (0.5, 1.5):
                _, _, flags = _value_onsets(crit, td, np.where(inside, fd * factor, fd), pd_, tz)
                caught += bool(np.any(np.array(flags)[inside]))
        mnfs = criteria_logic.nightly_mnf(t, f, tz, *NIGHT)
        runtime_mnf = float(np.median(list(mnfs.values()))) if mnfs else None
        assert crit.mnf_baseline is not None and crit.mnf_allowed_excess is not None
        report[sensor] = {
            "false_value_per_week": {"flow": flow_on / weeks, "pressure": pressure_on / weeks},
            "excursions_caught": f"{caught}/{2 * len(EXCURSION_HOURS)}",
            "mnf_baseline": round(crit.mnf_baseline, 3),
            "mnf_allowed_excess": round(crit.mnf_allowed_excess, 3),
            "mnf_runtime_median": None if runtime_mnf is None else round(runtime_mnf, 3),
            "leak_10pct_exceeds": bool(0.1 * crit.mnf_baseline > crit.mnf_allowed_excess),
            "residual_band": {"flow": round(crit.flow.residual_band, 3) if crit.flow else None,
                              "pressure": round(crit.pressure.residual_band, 4)
                              if crit.pressure else None},
        }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("conf/initial_data.csv"))
    parser.add_argument("--sensors", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timezone", default="Asia/Seoul")
    parser.add_argument("--end", default=DEFAULT_END, help="local date YYYY-MM-DD (exclusive)")
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--step-minutes", type=int, default=10)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--check-days", type=int, default=28)
    args = parser.parse_args(argv)

    tz = ZoneInfo(args.timezone)
    end = int(dt.datetime.combine(dt.date.fromisoformat(args.end), dt.time(0), tz).timestamp())
    start = end - args.days * 86400
    settings = SimulatorSettings(sensors=args.sensors, seed=args.seed, start=EpochSeconds(start),
                                 timezone=args.timezone, faults=frozenset())
    began = time.perf_counter()
    readings = simulate(settings, start, args.days * 1440)
    note = (f"generated by bench/make_initial_data.py --sensors {args.sensors} --seed {args.seed}"
            f" --timezone {args.timezone} --end {args.end} --days {args.days}"
            f" --step-minutes {args.step_minutes}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = write_csv(args.out, readings, tz, args.step_minutes * 60, note)
    result: dict[str, object] = {
        "path": str(args.out), "rows": rows, "bytes": args.out.stat().st_size,
        "seconds": round(time.perf_counter() - began, 2),
    }
    if args.check:
        result["check"] = check(args.out, settings, end, args.check_days)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
