"""Tests for the training package: Keras model vs its numpy export, validation, the
spawned ``python -m training.run`` process end to end on a real store.

Imports Keras (only tests may; the service never does). Tiny data, 1-2 epochs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.forecast import (
    HORIZON_HOURS,
    ExportedModel,
    FeatureSpec,
    Scaler,
    hourly_means,
    lstm_forecast,
    model_values,
    seasonal_base,
)
from core.simulator import Simulator, SimulatorSettings
from core.types import EpochSeconds, EventTimes, Reading, SensorId
from storage.store import Store

keras = pytest.importorskip("keras")
from training import model as tm  # noqa: E402  (after keras is known to be there)

ROOT = Path(__file__).resolve().parent.parent
START = 1_735_657_200  # 2025-01-01 00:00 +09:00
SID = SensorId("001")
FAR_AHEAD = 4_070_908_800  # 2099-01-01
DAYS = 35


@pytest.fixture(scope="module", autouse=True)
def _keras_threads():
    tm.configure(threads=1, seed=0)


def random_keras_model(spec: FeatureSpec, units: int = 8, seed: int = 0) -> keras.Model:
    model = tm.build_model(spec, units)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.4, w.shape).astype("float32") for w in model.get_weights()])
    return model


def weekly(hours: np.ndarray) -> np.ndarray:
    return 40 + 15 * np.sin(2 * np.pi * (hours % 24) / 24) - 5 * ((hours // 24) % 7 >= 5)


# -- the numpy forward pass is Keras' own -------------------------------------------------


@pytest.mark.parametrize("step", [24, 6])
def test_numpy_inference_matches_keras_predict(step):
    spec = FeatureSpec("flow", lookback_hours=48, step_hours=step, timezone="Asia/Seoul")
    model = random_keras_model(spec, seed=step)
    x = np.random.default_rng(1).normal(size=(16, spec.steps, spec.features)).astype("float32")
    exported = tm.export_model(model, spec, Scaler(0.0, 1.0, 1.0))
    want = model.predict(x, verbose=0)
    got = exported.predict_scaled(x.astype(np.float64))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_exported_file_forecast_matches_keras(tmp_path):
    spec = FeatureSpec("pressure", lookback_hours=48, step_hours=24)
    model = random_keras_model(spec, seed=5)
    hours = np.arange(6 * 168)
    values = 4.0 + 0.01 * weekly(hours) + np.random.default_rng(2).normal(0, 0.01, hours.size)
    scaler = tm.fit_scaler(values, values.size, spec)
    tm.export_model(model, spec, scaler, {"version": "t1"}).save(tmp_path / "p.npz")
    loaded = ExportedModel.load(tmp_path / "p.npz")
    origins = np.array([4 * 168, 5 * 168 + 11])
    x, _ = tm.training_arrays(values, START, origins, spec, scaler)
    keras_residual = model.predict(x, verbose=0) * scaler.y_scale
    base = seasonal_base(values, origins, spec.base_weeks, spec.fit_hours)
    np.testing.assert_allclose(model_values(loaded, values, START, origins), base + keras_residual,
                               atol=1e-4 * scaler.y_scale)


# -- validation and acceptance ------------------------------------------------------------


def test_a_noisy_weekly_series_is_learned_and_beats_naive():
    hours = np.arange(6 * 168)
    rng = np.random.default_rng(0)
    values = weekly(hours) * (1 + 0.0005 * hours / 24) + rng.normal(0, 1.0, hours.size)
    values[rng.random(hours.size) < 0.02] = np.nan  # gaps are tolerated
    settings = tm.TrainSettings(lookback_hours=48, epochs=2, min_samples=24)
    result = tm.train_quantity("flow", values, START, settings)
    assert result.accepted, result.reason
    v = result.validation
    assert set(v.mae_model) == {"24h", "168h"}
    assert v.mae_model["24h"] < 0.9 * v.mae_naive["24h"]
    assert result.model.spec.lookback_hours == 48 and result.epochs_run >= 1


@pytest.mark.parametrize(("bias", "want"), [(1.0, 1.0), (3.0, 0.25), (0.0, 0.0), (-1.0, 0.0)])
def test_blend_takes_the_share_of_the_residual_that_scores_best_held_back(bias, want):
    # Each week is the one before plus 2.0: a one-week base is short by exactly 2.0 at
    # every hour, so a residual of 2.0 (bias 1 x y_scale 2) is right, 6.0 a quarter right.
    spec = FeatureSpec("flow", lookback_hours=24, step_hours=24, base_weeks=1, fit_hours=0)
    hours = np.arange(6 * 168)
    values = weekly(hours) + 2.0 * (hours // 168)
    u = 4
    model = ExportedModel(spec, Scaler(40.0, 10.0, 2.0), np.zeros((spec.features, 4 * u)),
                          np.zeros((u, 4 * u)), np.zeros(4 * u), np.zeros((u, HORIZON_HOURS)),
                          np.full(HORIZON_HOURS, bias))
    holdout = values.size - 2 * 168
    assert tm.blend_weight(model, values, START, holdout) == want
    # The blend scales the head: the forecast is the base plus that share of the residual.
    origins = np.array([holdout, holdout + 30])
    blended = model_values(tm.shrunk(model, 0.25), values, START, origins)
    base = model_values(tm.shrunk(model, 0.0), values, START, origins)
    np.testing.assert_allclose(blended - base, 0.25 * 2.0 * bias)
    assert tm.shrunk(model, 0.25).metadata["blend"] == 0.25


def test_lookback_shrinks_to_fit_short_history():
    settings = tm.TrainSettings(lookback_hours=336, min_samples=48)
    assert tm.lookback_for(28 * 24, settings) == 120  # 28 days: the first model can still train
    assert tm.lookback_for(60 * 24, settings) == 336
    assert tm.lookback_for(20 * 24, settings) is None


def test_not_enough_data_is_reported_not_raised():
    result = tm.train_quantity("flow", np.ones(400), START, tm.TrainSettings())
    assert result.model is None and not result.accepted
    assert "not enough data" in result.reason
    unmeasured = tm.train_quantity("pressure", np.full(2000, np.nan), START, tm.TrainSettings())
    assert unmeasured.model is None and "not enough pressure data" in unmeasured.reason


def test_residual_band_measures_minute_residuals():
    spec = FeatureSpec("flow", lookback_hours=24, step_hours=24)
    model = random_keras_model(spec)
    model.get_layer("head").set_weights([np.zeros((8, HORIZON_HOURS)), np.zeros(HORIZON_HOURS)])
    exported = tm.export_model(model, spec, Scaler(0.0, 1.0, 1.0))
    hours = 5 * 168
    minutes = START + 60 * np.arange(hours * 60)
    rng = np.random.default_rng(3)
    flow = np.full(minutes.size, 10.0) + rng.normal(0, 0.5, minutes.size)
    series = hourly_means(minutes, flow, flow)
    band = tm.residual_band(exported, series.flow, series.start, hours - 336, minutes, flow)
    # criteria.RESIDUAL_K (4) robust sigmas of noise with sigma 0.5
    assert band == pytest.approx(4 * 0.5, rel=0.1)


# -- the training process, end to end -----------------------------------------------------


def ingest_processed(path: Path, readings: list[Reading]) -> None:
    """Store ``readings`` with the event time the Detector would record: their newest."""
    with Store(path) as store:
        store.ingest(readings)
        store.transact(lambda b: b.set_event_times(
            EventTimes({SID: max(r.time for r in readings)})))


def build_store(path: Path, days: int = DAYS, every_min: int = 10) -> None:
    """A real store with ``days`` of one simulated sensor (every ``every_min``-th minute)."""
    sim = Simulator(SimulatorSettings(sensors=1, seed=3, start=START, faults=frozenset(),
                                      realtime_cap=False))
    ingest_processed(path, list(sim.readings(EpochSeconds(START), days * 1440))[::every_min])


def spawn(store: Path, models: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "training.run", "--store", str(store), "--sensor", "001",
         "--models", str(models), "--epochs", "2", "--lookback", "48", "--threads", "1",
         "--nice", "5", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})},
    )


def finish(child: subprocess.Popen, timeout: float = 180) -> tuple[int, dict | None, str]:
    out, err = child.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) <= 1, out  # exactly one JSON line on stdout, nothing else
    return child.returncode, (json.loads(lines[0]) if lines else None), err


@pytest.mark.slow
def test_training_process_end_to_end(tmp_path):
    store_path = tmp_path / "site.lmdb"
    build_store(store_path)
    with Store(store_path) as store:
        # Stamped far ahead, never taken into event time: it neither ends the window nor enters it.
        store.ingest([Reading(SID, EpochSeconds(FAR_AHEAD), 99.0, 9.0, 0)])
        store.transact(lambda b: b.put_doc("model", SID, {"version": "old"}))
    before = (store_path / "data.mdb").read_bytes()
    short = tmp_path / "short.lmdb"
    ingest_processed(short, [Reading(SID, EpochSeconds(START + 600 * i), 10.0, 4.0, 0)
                             for i in range(500)])
    exact = tmp_path / "weekly.lmdb"
    # hourly readings of an exactly weekly pattern
    ingest_processed(exact, [Reading(SID, EpochSeconds(START + 3600 * int(h)), float(weekly(h)),
                                     float(4 + weekly(h) / 100), 0) for h in np.arange(5 * 168)])

    # The children at once: they are independent processes.
    accepted = spawn(store_path, tmp_path / "models")
    rejected = spawn(exact, tmp_path / "models0", "--epochs", "1")
    little = spawn(short, tmp_path / "models1")
    code, result, err = finish(accepted)
    assert code == 0, err
    assert result["sensor"] == "001" and result["accepted"], result["reason"]
    meta = result["metadata"]
    for key in ("trained_at", "data_since", "data_until", "mae_model", "mae_naive",
                "residual_band", "epochs", "version"):
        assert key in meta
    assert meta["data_since"] == START and meta["rows"] == DAYS * 144
    assert meta["data_until"] == START + (DAYS * 1440 - 10) * 60
    for q in ("flow", "pressure"):
        assert meta["mae_model"][q]["24h"] < meta["mae_naive"][q]["24h"]
        assert meta["residual_band"][q] > 0
        path = Path(result["paths"][q])
        assert path.parent == (tmp_path / "models" / "001").resolve()
        assert path.name == f"{result['version']}-{q}.npz"
        model = ExportedModel.load(path)
        assert model.spec.quantity == q and model.version == result["version"]
        assert model.residual_band == meta["residual_band"][q]
    assert sorted(p.name for p in (tmp_path / "models" / "001").iterdir()) == sorted(
        Path(p).name for p in result["paths"].values())  # no temporary files left

    # The exported pair forecasts from the same store, as the service will.
    flow_m, pressure_m = (ExportedModel.load(result["paths"][q]) for q in ("flow", "pressure"))
    with Store(store_path, readonly=True) as store, store.read() as view:
        arrays = view.reading_arrays(SID, until=FAR_AHEAD)
        assert view.doc("model", SID) == {"version": "old"}  # the trainer never writes
    series = hourly_means(arrays.time, arrays.flow, arrays.pressure)
    fc = lstm_forecast(flow_m, pressure_m, SID, series, EpochSeconds(series.end))
    assert np.isfinite(fc.flow).all() and np.isfinite(fc.pressure).all()
    assert fc.flow_band == meta["residual_band"]["flow"]
    assert (store_path / "data.mdb").read_bytes() == before

    # Nothing beats "same hour last week" on an exactly weekly series: rejected, no files.
    code, result0, err = finish(rejected)
    assert code == 0, err
    assert result0["accepted"] is False and result0["paths"] is None
    assert "does not beat" in result0["reason"]
    assert result0["metadata"]["mae_naive"]["flow"]["24h"] == 0.0
    assert not (tmp_path / "models0").exists()

    code, result1, err = finish(little)
    assert code == 0, err
    assert not result1["accepted"] and "not enough data" in result1["reason"]
    assert not (tmp_path / "models1").exists()


def test_training_process_error_exits_non_zero(tmp_path):
    code, result, err = finish(spawn(tmp_path / "missing.lmdb", tmp_path / "models"))
    assert code == 1 and result is None
    assert "no store" in err


def test_training_process_injected_crash(tmp_path):
    build_store(tmp_path / "s.lmdb", days=2, every_min=60)
    child = spawn(tmp_path / "s.lmdb", tmp_path / "models",
                  env={"WDN_TRAIN_FAULT": "crash", "WDN_TRAIN_FAULT_AFTER_S": "0"})
    code, result, _ = finish(child)
    assert code == 70 and result is None
    assert not (tmp_path / "models").exists()


def test_training_process_hang_is_a_real_hang(tmp_path):
    build_store(tmp_path / "s.lmdb", days=2, every_min=60)
    child = spawn(tmp_path / "s.lmdb", tmp_path / "models",
                  env={"WDN_TRAIN_FAULT": "hang", "WDN_TRAIN_FAULT_AFTER_S": "0"})
    with pytest.raises(subprocess.TimeoutExpired):
        child.wait(timeout=1.5)
    child.kill()
    assert child.wait(timeout=10) != 0
    child.communicate()


@pytest.mark.slow
def test_a_sensor_without_pressure_trains_and_forecasts_flow_only(tmp_path):
    # Six weeks of noisy hourly flow with a local weekly shape, and no pressure at all
    # (the real district inflows have none): the flow model is trained and accepted, the
    # pressure "model" is an untrained stand-in, and the forecast's pressure is empty.
    hours = np.arange(6 * 168)
    rng = np.random.default_rng(1)
    flow = weekly(hours) + rng.normal(0, 2.0, hours.size)
    store = tmp_path / "nopressure.lmdb"
    ingest_processed(store, [Reading(SID, EpochSeconds(START + 3600 * int(h)), float(f),
                                     float("nan"), 0) for h, f in zip(hours, flow)])
    code, result, err = finish(spawn(store, tmp_path / "models", "--timezone", "Europe/Rome",
                                     "--holidays", "IT"))
    assert code == 0, err
    assert result["accepted"], result["reason"]
    assert "no pressure data" in result["reason"]
    assert result["metadata"]["mae_model"]["pressure"] is None
    flow_m, pressure_m = (ExportedModel.load(result["paths"][q]) for q in ("flow", "pressure"))
    assert flow_m.spec.holidays == "IT" and flow_m.spec.timezone == "Europe/Rome"
    with Store(store, readonly=True) as s, s.read() as view:
        arrays = view.reading_arrays(SID, until=FAR_AHEAD)
    series = hourly_means(arrays.time, arrays.flow, arrays.pressure)
    fc = lstm_forecast(flow_m, pressure_m, SID, series, EpochSeconds(series.end))
    assert np.isfinite(fc.flow).all() and np.isnan(fc.pressure).all()
    assert fc.pressure_p10 is None and fc.flow_p10 is not None
