"""Forecast evaluation on real district inflows, with rolling forecast origins.

Data: ``../shared/data/dma_inflows_2021-01_2022-07.csv`` beside the repository
(real hourly inflows of 10 district metered areas, Europe/Rome; not in the repo,
see its README). Flow only: the file has no pressure, so each area is a sensor
whose pressure is unknown, as the service would see it.

Through the project's own code, as the Trainer and the Predictor run it:
``training.model.train_quantity`` (a year of history before the origin, the
service's training defaults, the site's time zone and Italy's holidays) and
``core.forecast.lstm_forecast`` / ``naive_forecast``. Origins are local
midnights spread over the file's last six months (eight days apart, so they
fall on every weekday); a model is retrained every ``--retrain-every`` origins,
as a weekly schedule would, and used for the origins until the next training. A
model that ``train_quantity`` does not accept (it does not beat seasonal-naive
on the held-back weeks) is replaced by the seasonal-naive forecast, exactly as
the service does.

Per area and origin: MAE of hours 1-24 and 25-168 of the forecast the service
would issue (``model``), of same-hour-last-week (``naive``: the same local hour
one week earlier), of the median of the last three weeks (``median3``), and of
the model's own seasonal base (``base``). Hours without truth or without a
naive value are left out of all of them. Coverage: the share of those hours
whose truth lies within the forecast's P10-P90 band.

Prints a table per area and last a JSON line::

    {"bench": "forecast_eval", "origins": N, "areas": 10, "mae": {...},
     "mae_naive": {...}, "skill_vs_naive": X, "worse_than_naive_share": Y,
     "coverage_p10_p90": Z, "train_s_per_sensor": T, ...}

``skill_vs_naive`` = 1 - mean(model 168-h MAE) / mean(naive 168-h MAE) over
area-origins; ``train_s_per_sensor`` is the mean wall time of one training
(flow model of one area, a year of hours). ``--quick`` runs a few origins of a
few areas, for development.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import itertools
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import training  # noqa: E402,F401  (TensorFlow environment before keras)
from core import forecast as fc  # noqa: E402
from core.types import EpochSeconds, SensorId  # noqa: E402

log = logging.getLogger("forecast_eval")
DATA_NAME = "shared/data/dma_inflows_2021-01_2022-07.csv"
# ../shared beside the repository; from a worktree under wt/, one level further up.
DATA = next((d / DATA_NAME for d in (ROOT.parent, ROOT.parent.parent) if (d / DATA_NAME).exists()),
            ROOT.parent / DATA_NAME)
TIMEZONE = "Europe/Rome"
HOLIDAYS = "IT"
HOUR_S = 3600
YEAR_HOURS = 365 * 24
SPAN_DAYS = 182  # the last six months
SPACING_DAYS = 8
PARTS = {"h1_24": slice(0, 24), "h25_168": slice(24, 168), "h1_168": slice(0, 168)}
BUDGET_SKILL = 0.15
BUDGET_WORSE = 0.20
BUDGET_COVERAGE = (0.75, 0.85)
BUDGET_TRAIN_S = 120.0


def load(path: Path) -> tuple[int, dict[str, np.ndarray]]:
    """(epoch second of the first row, {area: hourly values, NaN for a gap})."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    times = [int(datetime.datetime.fromisoformat(r["timestamp_utc"]).timestamp()) for r in rows]
    if any(b - a != HOUR_S for a, b in itertools.pairwise(times)):
        raise SystemExit(f"{path}: rows are not consecutive hours")
    areas = [k for k in rows[0] if k.startswith("DMA_")]
    return times[0], {a: np.array([float(r[a]) if r[a] else np.nan for r in rows])
                      for a in areas}


def origins_of(start: int, hours: int, count: int) -> list[int]:
    """Indices of ``count`` local midnights, ``SPACING_DAYS`` apart, the last one a full
    horizon before the end, all within the last ``SPAN_DAYS`` days."""
    tz = fc.ZoneInfo(TIMEZONE)
    last = hours - fc.HORIZON_HOURS
    out: list[int] = []
    i = last
    while len(out) < count and i > hours - SPAN_DAYS * 24:
        local = fc.local_datetime(start + i * HOUR_S, tz)
        i -= local.hour  # back to that day's local midnight
        out.append(i)
        i -= SPACING_DAYS * 24
    return sorted(out)


def same_hour(values: np.ndarray, start: int, origin: int, weeks: int,
              calendar: fc.Calendar) -> np.ndarray:
    """(weeks, 168): the same local hour 1..weeks weeks earlier (plain weeks, no holidays)."""
    local = fc.Calendar(calendar.timezone)
    lags = local.lags(start, origin, fc.HORIZON_HOURS, weeks)
    target = origin + np.arange(fc.HORIZON_HOURS)
    return np.moveaxis(fc._take(values, fc._sources(target, lags)), -1, 0)


def mae(pred: np.ndarray, truth: np.ndarray, ok: np.ndarray) -> dict[str, float]:
    out = {}
    for name, part in PARTS.items():
        m = ok[part] & np.isfinite(pred[part])
        out[name] = float(np.abs(pred[part] - truth[part])[m].mean()) if m.any() else math.nan
    return out


def evaluate_area(name: str, values: np.ndarray, start: int, origins: list[int],
                  args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[float]]:
    from training import model as tm

    settings = tm.TrainSettings(timezone=TIMEZONE, holidays=args.holidays, epochs=args.epochs,
                                lookback_hours=args.lookback)
    calendar = fc.Calendar(TIMEZONE, args.holidays)
    sensor = SensorId(name)
    rows, train_s, blends = [], [], []
    model: fc.ExportedModel | None = None
    raw: fc.ExportedModel | None = None
    for i, origin in enumerate(origins):
        if i % args.retrain_every == 0:
            since = max(0, origin - YEAR_HOURS)
            started = time.perf_counter()
            result = tm.train_quantity("flow", values[since:origin], start + since * HOUR_S,
                                       settings)
            train_s.append(time.perf_counter() - started)
            model = result.model if result.accepted else None
            # The network's own forecast, before its blend with the base (for the README).
            raw = result.extra.get("unblended") if result.accepted else None
            blends.append(result.extra.get("blend"))
            log.info("%s origin %d: %s (%.1f s)", name, i, result.reason, train_s[-1])
        issued = EpochSeconds(start + origin * HOUR_S)
        history = fc.HourlySeries(EpochSeconds(start), values[:origin],
                                  np.full(origin, np.nan))
        naive = fc.naive_forecast(sensor, history, issued, weeks=fc.NAIVE_WEEKS, calendar=calendar)
        served = fc.lstm_forecast(model, None, sensor, history, issued) if model else naive
        truth = fc._take(values, origin + np.arange(fc.HORIZON_HOURS))
        weeks = same_hour(values, start, origin, 3, calendar)
        last_week, median3 = weeks[0], fc._column_medians(weeks)
        if model is not None:
            base = fc.model_base(model.spec, values[:origin], start, np.array([origin]))[0]
        else:
            base = naive.flow
        lstm = (fc.lstm_forecast(raw, None, sensor, history, issued).flow if raw is not None
                else served.flow)
        ok = np.isfinite(truth) & np.isfinite(last_week) & np.isfinite(served.flow)
        p10, p90 = served.flow_p10, served.flow_p90
        banded = ok if p10 is None or p90 is None else ok & np.isfinite(p10) & np.isfinite(p90)
        inside = (0 if p10 is None or p90 is None else
                  int(((truth >= p10) & (truth <= p90))[banded].sum()))
        # How far the band would have to widen (factor) to hold each hour's truth.
        reach = (None if p10 is None or p90 is None else np.round(np.where(
            truth >= served.flow, (truth - served.flow) / np.maximum(p90 - served.flow, 1e-9),
            (served.flow - truth) / np.maximum(served.flow - p10, 1e-9))[banded], 3).tolist())
        rows.append({
            "area": name, "origin": datetime.datetime.fromtimestamp(issued, datetime.UTC)
            .strftime("%Y-%m-%d %H:%M"), "source": served.source, "hours": int(ok.sum()),
            "model": mae(served.flow, truth, ok), "naive": mae(last_week, truth, ok),
            "median3": mae(median3, truth, ok), "base": mae(base, truth, ok),
            "service_naive": mae(naive.flow, truth, ok), "unblended": mae(lstm, truth, ok),
            "banded": int(banded.sum()) if p10 is not None else 0, "inside": inside,
            "reach": reach, "blend": blends[-1] if model is not None else None,
        })
    return rows, train_s


def mean_of(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    return {part: round(float(np.nanmean([r[key][part] for r in rows])), 4) for part in PARTS}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--origins", type=int, default=22)
    p.add_argument("--areas", type=int, default=10, help="the first N areas")
    p.add_argument("--retrain-every", type=int, default=4)
    p.add_argument("--epochs", type=int, default=30, help="as train.epochs (default 30)")
    p.add_argument("--lookback", type=int, default=336, help="as train.lookback_hours")
    p.add_argument("--holidays", default=HOLIDAYS, help="as [site] holidays ('' for none)")
    p.add_argument("--quick", action="store_true", help="4 origins of 3 areas, for development")
    p.add_argument("--rows", type=Path, help="write the per area-origin figures here (JSON)")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = p.parse_args()
    if args.quick:
        args.origins, args.areas = 4, 3
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    if not args.data.exists():
        print(f"forecast_eval: no data file {args.data} (see ../shared/data/README.md)",
              file=sys.stderr)
        return 2
    from training import model as tm

    tm.configure(args.threads)
    started = time.perf_counter()
    start, areas = load(args.data)
    n = next(iter(areas.values())).shape[0]
    origins = origins_of(start, n, args.origins)
    rows: list[dict[str, Any]] = []
    train_s: list[float] = []
    for name in list(areas)[:args.areas]:
        area_rows, area_train = evaluate_area(name, areas[name], start, origins, args)
        rows += area_rows
        train_s += area_train
        a = mean_of(area_rows, "model")["h1_168"]
        b = mean_of(area_rows, "naive")["h1_168"]
        print(f"{name:7s} model {a:7.3f}  naive {b:7.3f}  skill {1 - a / b:+.3f}  "
              f"lstm {sum(r['source'] == 'lstm' for r in area_rows)}/{len(area_rows)}",
              flush=True)
    if args.rows:
        args.rows.write_text(json.dumps(rows))
    scored = [r for r in rows if math.isfinite(r["model"]["h1_168"])
              and math.isfinite(r["naive"]["h1_168"])]
    model_mae = mean_of(scored, "model")
    naive_mae = mean_of(scored, "naive")
    skill = 1 - model_mae["h1_168"] / naive_mae["h1_168"]
    worse = float(np.mean([r["model"]["h1_168"] > r["naive"]["h1_168"] for r in scored]))
    banded = sum(r["banded"] for r in rows)
    coverage = sum(r["inside"] for r in rows) / banded if banded else math.nan
    per_train = float(np.mean(train_s)) if train_s else math.nan
    out = {
        "bench": "forecast_eval", "origins": len(origins), "areas": min(args.areas, len(areas)),
        "area_origins": len(scored),
        "mae": model_mae, "mae_naive": naive_mae,
        "mae_median3": mean_of(scored, "median3"), "mae_base": mean_of(scored, "base"),
        "mae_service_naive": mean_of(scored, "service_naive"),
        "mae_unblended": mean_of(scored, "unblended"),
        "skill_vs_naive": round(skill, 4), "worse_than_naive_share": round(worse, 4),
        "coverage_p10_p90": round(coverage, 4), "train_s_per_sensor": round(per_train, 2),
        "lstm_share": round(float(np.mean([r["source"] == "lstm" for r in rows])), 4),
        "mean_blend": round(float(np.mean([r["blend"] for r in rows if r["blend"] is not None]
                                          or [math.nan])), 3),
        "epochs": args.epochs, "holidays": args.holidays, "quick": args.quick,
        "wall_s": round(time.perf_counter() - started, 1),
        "budget": {"skill_vs_naive": f">= {BUDGET_SKILL}",
                   "worse_than_naive_share": f"<= {BUDGET_WORSE}",
                   "coverage_p10_p90": f"{BUDGET_COVERAGE[0]}-{BUDGET_COVERAGE[1]}",
                   "train_s_per_sensor": f"<= {BUDGET_TRAIN_S}"},
    }
    print(f"skill vs same-hour-last-week {skill:+.3f} (budget >= {BUDGET_SKILL}), worse on "
          f"{worse:.0%} of area-origins (<= {BUDGET_WORSE:.0%}), P10-P90 coverage "
          f"{coverage:.1%}, training {per_train:.1f} s per sensor-year")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
