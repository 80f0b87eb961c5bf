"""Entry point of the training process: ``python -m training.run --store PATH --sensor SID``.

Spawned by the Trainer actor (and the ``train`` command), never forked. It
lowers its own CPU priority, reads the sensor's last year up to its event time
(the Detector's, in the store: a reading stamped far ahead neither ends the
window nor enters it) through a read-only environment (closed again before
fitting starts), trains
the flow and the pressure model, validates both against seasonal-naive on the
last two weeks and, when both beat it, writes ``<models>/<sid>/<version>-flow.npz``
and ``...-pressure.npz`` atomically. It never writes to the store: the service
swaps the model in with one write of its own.

Stdout carries exactly one JSON line::

    {"sensor", "accepted", "reason", "version", "paths", "metadata"}

Exit code 0 when the training completed (accepted or rejected, including "not
enough data"), non-zero on an error. Logs go to stderr.

For tests, ``--fault crash|hang`` (or ``WDN_TRAIN_FAULT``) with
``--fault-after-s`` (or ``WDN_TRAIN_FAULT_AFTER_S``) makes the process exit
abruptly or stop itself (SIGSTOP: a true hang) that many seconds after start.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

import training  # noqa: F401  (environment for TensorFlow before it is imported)
from core.forecast import hourly_means
from core.types import (
    STATUS_COMM_ERROR,
    STATUS_FLOW_FAULT,
    STATUS_POWER_FAILURE,
    STATUS_PRESSURE_FAULT,
    SensorId,
)

log = logging.getLogger("training.run")

YEAR_S = 365 * 86400
QUANTITIES = ("flow", "pressure")
# A reading whose status says the value is not trustworthy is left out of training.
_INVALID = {
    "flow": STATUS_FLOW_FAULT | STATUS_POWER_FAILURE | STATUS_COMM_ERROR,
    "pressure": STATUS_PRESSURE_FAULT | STATUS_POWER_FAILURE | STATUS_COMM_ERROR,
}
FAULT_EXIT_CODE = 70


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.run", description=__doc__.splitlines()[0])
    p.add_argument("--store", required=True, type=Path, help="LMDB store (opened read-only)")
    p.add_argument("--sensor", required=True, help="sensor id, e.g. 001")
    p.add_argument("--models", type=Path, default=Path("data/models"),
                   help="directory for model files (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=30, help="most epochs per model (0: untrained)")
    p.add_argument("--lookback", type=int, default=336,
                   help="hours the model looks back, a multiple of --step "
                        "(shrunk when the data is short)")
    p.add_argument("--step", type=int, default=24,
                   help="hours per LSTM step (default: %(default)s)")
    p.add_argument("--timezone", default="UTC", help="site time zone for calendar features")
    p.add_argument("--holidays", default="",
                   help="site public holidays: ISO dates (comma-separated) or a country code")
    p.add_argument("--timeout-s", type=float, default=None,
                   help="soft limit: stop fitting after this share of it, keep the best so far")
    p.add_argument("--nice", type=int, default=0, help="increment of the process's nice level")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1),
                   help="TensorFlow intra-op threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--fault", choices=("crash", "hang"), default=os.environ.get("WDN_TRAIN_FAULT"),
                   help=argparse.SUPPRESS)
    p.add_argument("--fault-after-s", type=float,
                   default=float(os.environ.get("WDN_TRAIN_FAULT_AFTER_S", "0")),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.lookback < 1 or args.lookback % args.step:
        p.error(f"--lookback {args.lookback} must be a positive multiple of --step {args.step}")
    return args


def arm_fault(kind: str, after_s: float) -> None:
    """Test hook: crash (hard exit) or hang (SIGSTOP) ``after_s`` seconds from now."""

    def fire() -> None:
        log.warning("injected fault: %s", kind)
        if kind == "crash":
            os._exit(FAULT_EXIT_CODE)
        os.kill(os.getpid(), signal.SIGSTOP)

    timer = threading.Timer(max(0.0, after_s), fire)
    timer.daemon = True
    timer.start()


def load_history(store_path: Path, sensor: SensorId) -> dict[str, Any] | None:
    """The sensor's year of minute readings up to its event time, invalid values as
    NaN; None before the Detector has processed the sensor."""
    from storage.store import Store

    with Store(store_path, readonly=True) as store, store.read() as view:
        until = view.event_time(sensor)
        if until is None:
            return None
        arrays = view.reading_arrays(sensor, since=until - YEAR_S + 1, until=until + 1)
    time_ = np.asarray(arrays.time, dtype=np.int64)
    status = np.asarray(arrays.status, dtype=np.int64)
    out: dict[str, Any] = {"time": time_}
    for name in QUANTITIES:
        values = np.array(getattr(arrays, name), dtype=np.float64)
        values[(status & _INVALID[name]) != 0] = np.nan
        out[name] = values
    return out


def _clean(x: Any) -> Any:
    """JSON-safe: NaN/inf become None (strict JSON has no NaN)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def train_sensor(args: argparse.Namespace, started: float) -> dict[str, Any]:
    """Train both quantities of one sensor; the JSON result (files written if accepted)."""
    sensor = SensorId(args.sensor)
    result: dict[str, Any] = {"sensor": sensor, "accepted": False, "reason": "", "version": None,
                              "paths": None, "metadata": None}
    history = load_history(args.store, sensor)
    if history is None or history["time"].size == 0:
        result["reason"] = ("no data" if history is not None
                            else "no event time yet (the detector has not processed the sensor)")
        return result
    series = hourly_means(history["time"], history["flow"], history["pressure"])
    load_s = time.monotonic() - started
    log.info("sensor %s: %d readings, %d hours loaded in %.1f s", sensor, history["time"].size,
             series.hours, load_s)

    from training import model as tm  # TensorFlow only from here on

    tm.configure(args.threads, args.seed)
    deadline = started + 0.8 * args.timeout_s if args.timeout_s else None
    settings = tm.TrainSettings(lookback_hours=args.lookback, step_hours=args.step,
                                timezone=args.timezone, holidays=args.holidays, epochs=args.epochs, seed=args.seed,
                                deadline=deadline)
    results = {}
    for name in QUANTITIES:
        if name != "flow" and not np.isfinite(series.quantity(name)).any():
            # A sensor that measures no pressure: an untrained model stands in, whose
            # forecast of a quantity without data is empty (core.forecast.lstm_forecast).
            results[name] = tm.absent_quantity(name, settings)
            continue
        results[name] = tm.train_quantity(name, series.quantity(name), series.start, settings,
                                          history["time"], history[name])
        if results[name].model is None:
            result["reason"] = results[name].reason
            return result

    trained_at = int(time.time())
    version = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(trained_at))
    common = {
        "version": version, "trained_at": trained_at,
        "data_since": int(history["time"].min()), "data_until": int(history["time"].max()),
        "rows": int(history["time"].size), "hours": series.hours,
        "lookback_hours": results["flow"].extra["lookback_hours"], "step_hours": args.step,
        "timezone": args.timezone, "holidays": args.holidays,
    }
    per_model = {
        name: {**common, "quantity": name,
               "mae_model": r.validation.mae_model if r.validation else None,
               "mae_naive": r.validation.mae_naive if r.validation else None,
               "mae_base": r.validation.mae_base if r.validation else None,
               "residual_band": r.residual_band, "epochs": r.epochs_run,
               "blend": r.extra.get("blend")}
        for name, r in results.items()
    }
    metadata = {
        **common,
        **{key: {name: per_model[name][key] for name in QUANTITIES}
           for key in ("mae_model", "mae_naive", "mae_base", "residual_band", "epochs",
                       "blend")},
        "train_s": round(time.monotonic() - started, 2),
    }
    accepted = all(r.accepted for r in results.values())
    result.update(accepted=accepted, version=version, metadata=_clean(metadata),
                  reason="; ".join(r.reason for r in results.values()))
    if accepted:
        directory = args.models / sensor
        paths = {}
        for name, r in results.items():
            assert r.model is not None
            r.model.metadata.update(_clean(per_model[name]))
            path = directory / f"{version}-{name}.npz"
            r.model.save(path)
            paths[name] = str(path.resolve())
        result["paths"] = paths
    return result


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.nice:
        os.nice(args.nice)
    if args.fault:
        arm_fault(args.fault, args.fault_after_s)
    try:
        result = train_sensor(args, started)
    except Exception:
        log.exception("training of sensor %s failed", args.sensor)
        return 1
    log.info("sensor %s: %s in %.1f s (%s)", args.sensor,
             "accepted" if result["accepted"] else "rejected", time.monotonic() - started,
             result["reason"])
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
