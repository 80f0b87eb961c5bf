"""Training benchmark: a year of one sensor in a real store, trained by the real training process.

Workload: 525,600 one-minute readings of one simulated sensor (seed 7, no
faults) ingested into an LMDB store in a temporary directory, then the training
child exactly as the Trainer actor spawns it (``python -m training.run``, nice
10, read-only store) trains and validates the flow and the pressure model.
``train_s`` is the child's wall time (TensorFlow import and data load included);
``peak_rss_mb`` its peak RSS (``RUSAGE_CHILDREN``, which only the training child
contributes to). MAE figures are the child's validation on the last two weeks
(``mae_base``: the adapted seasonal base alone, without the LSTM's residual).

Prints the figures, the budget from DESIGN.md, and last a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.simulator import Simulator, SimulatorSettings  # noqa: E402
from core.types import EpochSeconds, EventTimes, SensorId  # noqa: E402
from storage.store import Store  # noqa: E402

START = 1_735_657_200  # 2025-01-01 00:00 +09:00
TIMEZONE = "Asia/Seoul"
BUDGET_S = 300.0
BUDGET_RSS_MB = 1500.0
BUDGET_GAIN = 0.15  # the model's 24 h MAE at least 15 % below seasonal-naive's


def build_store(path: Path, minutes: int, seed: int) -> int:
    sim = Simulator(SimulatorSettings(sensors=1, seed=seed, start=EpochSeconds(START),
                                      timezone=TIMEZONE, faults=frozenset(), realtime_cap=False))
    readings = list(sim.readings(EpochSeconds(START), minutes))
    with Store(path, map_size_mb=256) as store:
        for i in range(0, len(readings), 20_000):
            store.ingest(readings[i:i + 20_000])
        # The training window ends at the event time the Detector would have recorded.
        store.transact(lambda b: b.set_event_times(
            EventTimes({SensorId("001"): readings[-1].time})))
    return len(readings)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=int, default=525_600)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lookback", type=int, default=336)
    p.add_argument("--keep", type=Path, help="copy the model files here (for bench/predict.py)")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        store = Path(tmp) / "bench.lmdb"
        t0 = time.perf_counter()
        rows = build_store(store, args.minutes, args.seed)
        print(f"store: {rows} readings ingested in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
        models = args.keep or Path(tmp) / "models"
        command = [sys.executable, "-m", "training.run", "--store", str(store), "--sensor", "001",
                   "--models", str(models), "--epochs", str(args.epochs),
                   "--lookback", str(args.lookback), "--timezone", TIMEZONE, "--nice", "10"]
        t0 = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        train_s = time.perf_counter() - t0
    peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    for line in done.stderr.splitlines():
        if " INFO " in line:
            print("  " + line, file=sys.stderr)
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        print(json.dumps({"bench": "train", "error": f"exit {done.returncode}"}))
        return 1
    result = json.loads(done.stdout.strip().splitlines()[-1])
    meta = result["metadata"]
    gain = {q: 1 - meta["mae_model"][q]["24h"] / meta["mae_naive"][q]["24h"]
            for q in ("flow", "pressure")}
    ok = (train_s <= BUDGET_S and peak_rss_mb <= BUDGET_RSS_MB
          and all(g >= BUDGET_GAIN for g in gain.values()) and result["accepted"])
    print(f"accepted: {result['accepted']} ({result['reason']})", file=sys.stderr)
    print(f"train: {train_s:.1f} s wall (budget <= {BUDGET_S:.0f}), peak RSS {peak_rss_mb:.0f} MB "
          f"(budget <= {BUDGET_RSS_MB:.0f}), 24 h MAE gain over naive: "
          + ", ".join(f"{q} {g:.1%}" for q, g in gain.items()) + f" (budget >= {BUDGET_GAIN:.0%})",
          file=sys.stderr)
    print(json.dumps({
        "bench": "train", "rows": rows, "train_s": round(train_s, 1),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "mae_model": meta["mae_model"], "mae_naive": meta["mae_naive"],
        "mae_base": meta["mae_base"],
        "gain_24h": {q: round(g, 3) for q, g in gain.items()},
        "epochs": meta["epochs"], "accepted": result["accepted"],
        "budget": {"train_s": f"<= {BUDGET_S:.0f}", "peak_rss_mb": f"<= {BUDGET_RSS_MB:.0f}",
                   "gain_24h": f">= {BUDGET_GAIN}", "ok": ok},
    }))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
