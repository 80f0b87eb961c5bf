"""Prediction benchmark: one hourly forecast of one sensor, both quantities, as the service does it.

Workload: a real store with twelve weeks of one simulated sensor's one-minute
readings; a forecast reads the hours it needs from the store (read view),
resamples them to hourly means and runs the exported flow and pressure LSTMs in
numpy (:func:`core.forecast.lstm_forecast`), as the Predictor actor does.

* ``warm_ms``: models already loaded, hour after hour as the Predictor forecasts:
  the newest hour read from the store, the older hourly means kept (median of
  many runs);
* ``cold_ms``: the two model files loaded from disk and the whole history read
  from the store first (median of several);
* ``warm_compute_ms``: the warm forecast without the store read (resampling and
  the two LSTMs only);
* ``check_ms``: the Predictor's daily check of both models against
  seasonal-naive over the last seven days (:mod:`core.forecast_check`).

Models: ``--flow``/``--pressure`` take files from ``bench/train.py --keep DIR``;
without them, models of the production shape (LSTM(32), 336 h lookback in daily
steps, Dense(168), a base of eight like weeks in the site's zone with Korea's
holidays, bands from 14 days of recent forecasts) with random weights are
written; inference costs the same.
``service_rss_mb`` is this process's peak RSS: it imports what the service
imports for forecasting and never TensorFlow (checked).

Prints the figures, the budget from DESIGN.md, and last a JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from core import forecast, forecast_check  # noqa: E402
from core.simulator import Simulator, SimulatorSettings  # noqa: E402
from core.types import EpochSeconds, SensorId  # noqa: E402
from storage.store import Store  # noqa: E402

START = 1_735_657_200  # 2025-01-01 00:00 +09:00
SID = SensorId("001")
BUDGET_WARM_MS = 25.0  # issue 10
BUDGET_COLD_MS = 1000.0


def _reading_arrays(store: Store, sensor: SensorId, *, since: int, until: int):
    """A sensor's readings in [since, until), in one read of the store (as the Predictor reads)."""
    with store.read() as view:
        return view.reading_arrays(sensor, since=since, until=until)


def random_model(quantity: str, path: Path, units: int = 32, seed: int = 0) -> Path:
    spec = forecast.FeatureSpec(quantity, lookback_hours=336, step_hours=24, timezone="Asia/Seoul",
                                holidays="KR", base_weeks=forecast.BASE_WEEKS,
                                base_decay=forecast.BASE_DECAY,
                                fit_hours=forecast.BASE_FIT_HOURS)
    rng = np.random.default_rng(seed)
    forecast.ExportedModel(
        spec, forecast.Scaler(40.0, 10.0, 1.0),
        kernel=rng.normal(0, 0.2, (spec.features, 4 * units)),
        recurrent_kernel=rng.normal(0, 0.2, (units, 4 * units)),
        bias=np.zeros(4 * units), dense_kernel=rng.normal(0, 0.05, (units, 168)),
        dense_bias=np.zeros(168), metadata={"version": "bench", "residual_band": 1.0},
    ).save(path)
    return path


def forecast_once(store: Store, flow_model: forecast.ExportedModel,
                  pressure_model: forecast.ExportedModel, issued: int) -> forecast.Forecast:
    """What the Predictor does for one sensor and hour."""
    hours = forecast.history_hours(flow_model, pressure_model)
    with store.read() as view:
        arrays = view.reading_arrays(SID, since=issued - hours * 3600, until=issued)
    history = forecast.hourly_means(arrays.time, arrays.flow, arrays.pressure)
    return forecast.lstm_forecast(flow_model, pressure_model, SID, history, EpochSeconds(issued))


def warm_forecasts(store: Store, flow_model: forecast.ExportedModel,
                   pressure_model: forecast.ExportedModel, issued: int,
                   runs: int) -> tuple[list[float], forecast.Forecast]:
    """Milliseconds per forecast as the Predictor makes them hour after hour: only the
    newest hour is read from the store, the older ones come from the hourly means it
    keeps (read once at start-up, not timed); a day of hours, then again."""
    hours = forecast.history_hours(flow_model, pressure_model)
    first = issued - 24 * 3600
    out = []
    for i in range(runs):
        if i % 24 == 0:
            arrays = _reading_arrays(store, SID, since=first - hours * 3600, until=first)
            kept = forecast.hourly_means(arrays.time, arrays.flow, arrays.pressure)
        t = first + (i % 24) * 3600
        t0 = time.perf_counter()
        arrays = _reading_arrays(store, SID, since=t, until=t + 3600)
        fresh = forecast.hourly_means(arrays.time, arrays.flow, arrays.pressure)
        since = t + 3600 - hours * 3600
        kept = forecast.HourlySeries(EpochSeconds(since), *(
            np.concatenate([kept.window(q, since, hours - 1), fresh.window(q, t, 1)])
            for q in ("flow", "pressure")))
        fc = forecast.lstm_forecast(flow_model, pressure_model, SID, kept, EpochSeconds(t + 3600))
        out.append((time.perf_counter() - t0) * 1000)
    return out, fc


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flow", type=Path)
    p.add_argument("--pressure", type=Path)
    p.add_argument("--warm-runs", type=int, default=50)
    p.add_argument("--cold-runs", type=int, default=9)
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        minutes = 12 * 7 * 1440
        sim = Simulator(SimulatorSettings(sensors=1, seed=7, start=EpochSeconds(START),
                                          faults=frozenset(), realtime_cap=False))
        store = Store(Path(tmp) / "bench.lmdb")
        store.ingest(list(sim.readings(EpochSeconds(START), minutes)))
        flow_path = args.flow or random_model("flow", Path(tmp) / "flow.npz")
        pressure_path = args.pressure or random_model("pressure", Path(tmp) / "pressure.npz",
                                                      seed=1)
        issued = START + minutes * 60

        cold = []
        for _ in range(args.cold_runs):
            t0 = time.perf_counter()
            flow_model = forecast.ExportedModel.load(flow_path)
            pressure_model = forecast.ExportedModel.load(pressure_path)
            fc = forecast_once(store, flow_model, pressure_model, issued)
            cold.append((time.perf_counter() - t0) * 1000)
        warm, fc = warm_forecasts(store, flow_model, pressure_model, issued, args.warm_runs)
        # The numpy part alone (history already read): the store read is the rest.
        with store.read() as view:
            arrays = view.reading_arrays(
                SID, since=issued - forecast.history_hours(flow_model) * 3600, until=issued)
        compute = []
        for _ in range(args.warm_runs):
            t0 = time.perf_counter()
            history = forecast.hourly_means(arrays.time, arrays.flow, arrays.pressure)
            forecast.lstm_forecast(flow_model, pressure_model, SID, history, EpochSeconds(issued))
            compute.append((time.perf_counter() - t0) * 1000)
        # The Predictor's daily check of the model against seasonal-naive, both quantities.
        hours = forecast_check.history_hours(flow_model, pressure_model)
        since = issued - hours * 3600
        arrays = _reading_arrays(store, SID, since=since, until=issued)
        history = forecast.hourly_means(arrays.time, arrays.flow, arrays.pressure)
        check = []
        for _ in range(args.cold_runs):
            t0 = time.perf_counter()
            for model in (flow_model, pressure_model):
                values = history.window(model.spec.quantity, since, hours)
                forecast_check.recent_score(model, values, since, issued)
            check.append((time.perf_counter() - t0) * 1000)
        frames = fc.daily_means(sim.tz)
        store.close()

    assert "tensorflow" not in sys.modules and "keras" not in sys.modules
    assert np.isfinite(fc.flow).all() and len(frames) == 7
    warm_ms, cold_ms, rss = statistics.median(warm), statistics.median(cold), peak_rss_mb()
    compute_ms, check_ms = statistics.median(compute), statistics.median(check)
    ok = warm_ms <= BUDGET_WARM_MS and cold_ms <= BUDGET_COLD_MS
    print(f"forecast of one sensor, flow + pressure: warm {warm_ms:.2f} ms (budget <= "
          f"{BUDGET_WARM_MS:.0f}), cold {cold_ms:.2f} ms with model load (budget <= "
          f"{BUDGET_COLD_MS:.0f}); of warm, resampling + LSTMs {compute_ms:.2f} ms, the rest is "
          f"the store read; the daily model-vs-naive check {check_ms:.2f} ms; process peak RSS "
          f"{rss:.0f} MB, tensorflow not imported", file=sys.stderr)
    print(json.dumps({
        "bench": "predict", "warm_ms": round(warm_ms, 2), "cold_ms": round(cold_ms, 2),
        "warm_compute_ms": round(compute_ms, 2), "check_ms": round(check_ms, 2),
        "service_rss_mb": round(rss, 1),
        "budget": {"warm_ms": f"<= {BUDGET_WARM_MS:.0f}", "cold_ms": f"<= {BUDGET_COLD_MS:.0f}",
                   "ok": ok},
    }))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
