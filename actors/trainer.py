"""Trainer: decides when to train and runs training in a separate OS process.

Training is a spawned ``python -m training.run`` child (never a fork of this
process, which holds LMDB and threads), at a lower CPU priority, reading the
store read-only. A thread of this actor waits for it with a time limit, so the
actor system never blocks. An accepted model is swapped in by one store write
(its metadata and file paths); a failed, killed or timed-out training keeps the
old model, is recorded for ``status`` and is retried later.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from actors.base import ActorContext, GatewayActor
from core import forecast as forecasting
from core.messages import ModelChanged, Tick, TrainingFinished, TrainRequest
from core.train_schedule import retrain_at
from core.types import SensorId
from storage import documents

DAY_S = 86400
CHECK_EVERY_S = 10.0
RETRY_AFTER_S = 3600.0
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def models_dir(config: Any) -> Path:
    """Where model files live: beside the store, e.g. data/demo.models/."""
    return Path(config.storage.path).with_suffix(".models")


def training_command(config: Any, sensor: str) -> list[str]:
    t = config.train
    return [
        sys.executable, "-m", "training.run", "--store", str(config.storage.path),
        "--sensor", sensor, "--models", str(models_dir(config)), "--epochs", str(t.epochs),
        "--lookback", str(t.lookback_hours), "--nice", str(t.nice),
        "--timezone", config.site.timezone, "--timeout-s", str(t.timeout_s),
        "--holidays", forecasting.holidays_text(config.site.holidays),
    ]


def run_training(config: Any, sensor: str, *, stop: threading.Event | None = None,
                 on_start: Any = None) -> tuple[str, str, str]:
    """Run one training child to completion: (outcome, detail, JSON result line)."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    child = subprocess.Popen(
        training_command(config, sensor), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd=os.getcwd(), env=env, start_new_session=True,
    )
    if on_start is not None:
        on_start(child)
    started = time.monotonic()
    deadline = started + config.train.timeout_s
    while child.poll() is None:
        if time.monotonic() > deadline or (stop is not None and stop.is_set()):
            child.kill()
            child.wait()
            timed_out = time.monotonic() > deadline
            ran = time.monotonic() - started
            return ("timeout" if timed_out else "killed",
                    f"stopped after {ran:.1f} s (train.timeout_s = {config.train.timeout_s})"
                    if timed_out else "service stopping", "")
        time.sleep(0.2)
    out, err = child.communicate()
    lines = [line for line in out.decode(errors="replace").splitlines() if line.startswith("{")]
    if child.returncode != 0 or not lines:
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {child.returncode}"]
        how = "killed" if child.returncode is not None and child.returncode < 0 else "failed"
        return how, f"exit {child.returncode}: {tail[0]}", ""
    result = json.loads(lines[-1])
    return ("accepted" if result.get("accepted") else "rejected"), str(result.get("reason", "")), lines[-1]


def commit_training(store: Any, sensor: str, outcome: str, detail: str, result_line: str,
                    duration_s: float | None = None) -> bool:
    """Record a training's outcome (and how long it ran); swap the model in when accepted.
    True if swapped."""
    now = time.time()
    result = json.loads(result_line) if result_line else {}
    # The sensor's event time at the attempt: a retraining that gave no model
    # waits for the next train.hour after it (core.train_schedule).
    with store.read() as view:
        event_time = view.event_time(sensor)
    record = {"sensor": sensor, "outcome": outcome, "detail": detail, "at": now,
              "event_time": event_time, "duration_s": duration_s,
              "retry_after": None if outcome == "accepted" else now + RETRY_AFTER_S,
              "metadata": result.get("metadata")}

    def write(b: Any) -> None:
        documents.put_training(b, sensor, record)
        if outcome == "accepted":
            documents.put_model(b, sensor, {"version": result["version"], "paths": result["paths"],
                                            **(result.get("metadata") or {})})

    store.transact(write)
    return outcome == "accepted"


class Trainer(GatewayActor):
    role = "trainer"

    def __init__(self, context: ActorContext) -> None:
        super().__init__(context)
        self._running: str | None = None
        self._running_since = 0.0
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._child: subprocess.Popen[bytes] | None = None
        self._next_check = 0.0
        self._queue: list[str] = []

    def release(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def on_tick(self, message: Tick) -> None:
        if time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + CHECK_EVERY_S
            with self.store.read() as view:
                sensors = view.sensors()
            for sensor in sensors:
                if (sensor not in self._queue and sensor != self._running
                        and self._due(sensor, message.now)):
                    self._queue.append(sensor)
        self._start_next()

    def on_train(self, message: TrainRequest) -> None:
        with self.store.read() as view:
            sensors = [message.sensor] if message.sensor else view.sensors()
        self._queue += [s for s in sensors if s not in self._queue]
        self._start_next()

    def on_trained(self, message: TrainingFinished) -> None:
        self._running = None
        swapped = commit_training(self.store, message.sensor, message.outcome, message.detail,
                                  message.result, time.monotonic() - self._running_since)
        log = self.log.info if message.outcome in ("accepted", "rejected") else self.log.error
        log("sensor %s: training %s (%s)", message.sensor, message.outcome, message.detail)
        if swapped:
            self.peers.tell("predictor", ModelChanged(message.sensor,
                                                      json.loads(message.result)["version"]))
        self._start_next()

    def _due(self, sensor: SensorId, now: float) -> bool:
        with self.store.read() as view:
            last = documents.training(view, sensor)
            # Event time, as the training window ends there (training.run): never a
            # stamp far ahead of the gateway clock.
            newest = view.event_time(sensor)
            model = documents.model(view, sensor)
            first = view.first_reading(sensor)
        if last and last.get("retry_after") and now < last["retry_after"]:
            return False
        if newest is None:
            return False
        cfg = self.config.train
        if model is None:
            # The first model as soon as there is data for it: until then the
            # forecast is seasonal-naive, so no quiet hour is waited for.
            return first is not None and (newest - first.time) / DAY_S >= cfg.min_days
        failed = last.get("event_time") if last and last.get("outcome") != "accepted" else None
        return newest >= retrain_at(model.get("data_until", 0), cfg.schedule_days, cfg.hour,
                                    self.config.site.tz, failed)

    def _start_next(self) -> None:
        if self._running is not None or not self._queue or self._stopping.is_set():
            return
        sensor = self._queue.pop(0)
        self._running = sensor
        self._running_since = time.monotonic()
        self.log.info("sensor %s: training started", sensor)
        self._thread = self.start_helper("child", self._train, sensor)

    def _train(self, sensor: str) -> None:
        try:
            outcome, detail, result = run_training(self.config, sensor, stop=self._stopping)
        except Exception as exc:  # the child could not even start
            outcome, detail, result = "failed", f"{type(exc).__name__}: {exc}", ""
        self.tell_self(TrainingFinished(sensor, outcome, detail, result))
