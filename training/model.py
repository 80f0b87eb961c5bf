"""Build, fit, validate and export one forecasting model (Keras 3, TensorFlow backend).

The network is the one :mod:`core.forecast` describes and runs in numpy:
``LSTM(units) -> Dense(168)`` over the lookback window cut into steps, trained
on scaled residuals against the adapted seasonal-naive base. Inputs, targets
and scalers come from the same numpy functions the service uses at inference
(:func:`core.forecast.window_features`, :func:`core.forecast.seasonal_base`),
and validation runs the *exported* model, so what is accepted is exactly what
the service will compute.

Validation holds out the last two weeks: forecasts issued at every hour of it
are compared, over the next 24 h and the full 168 h, with the seasonal-naive
forecast (same hour one week earlier). A model is accepted only if it beats it
on both.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import keras  # its backend is set in training/__init__.py, which runs first
import numpy as np

from core import criteria
from core.forecast import (
    BASE_DECAY,
    BASE_FIT_HOURS,
    BASE_WEEKS,
    HORIZON_HOURS,
    HOUR_S,
    WEEK_HOURS,
    ExportedModel,
    FeatureSpec,
    Scaler,
    model_base,
    model_values,
    window_features,
)

log = logging.getLogger(__name__)

HOLDOUT_HOURS = 2 * WEEK_HOURS
HORIZONS = (24, HORIZON_HOURS)


@dataclass(frozen=True, slots=True)
class TrainSettings:
    """Knobs of one training; the defaults train a year in well under a minute per model."""

    lookback_hours: int = 336
    step_hours: int = 24
    base_weeks: int = BASE_WEEKS
    base_decay: float = BASE_DECAY
    fit_hours: int = BASE_FIT_HOURS
    timezone: str = "UTC"
    holidays: str = ""  # [site] holidays as text (core.forecast.holidays_text)
    units: int = 32
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    patience: int = 5
    holdout_hours: int = HOLDOUT_HOURS
    min_samples: int = 48
    seed: int = 0
    deadline: float | None = None  # time.monotonic() after which fitting stops early


@dataclass(frozen=True, slots=True)
class Validation:
    """MAE on the held-out weeks per horizon (``"24h"``, ``"168h"``)."""

    mae_model: dict[str, float]
    mae_naive: dict[str, float]
    mae_base: dict[str, float]  # the adapted seasonal-naive base alone, for the record
    origins: int

    @property
    def beats_naive(self) -> bool:
        return all(
            math.isfinite(self.mae_model[k]) and math.isfinite(self.mae_naive[k])
            and self.mae_model[k] < self.mae_naive[k]
            for k in self.mae_model
        )

    def describe(self, quantity: str) -> str:
        return ", ".join(
            f"{quantity} {k} MAE {self.mae_model[k]:.4g} vs naive {self.mae_naive[k]:.4g}"
            f" ({_gain(self.mae_model[k], self.mae_naive[k])})"
            for k in self.mae_model
        )


@dataclass(slots=True)
class QuantityResult:
    """Outcome of training one quantity; ``model`` is None when there was not enough data."""

    quantity: str
    model: ExportedModel | None
    validation: Validation | None
    epochs_run: int
    reason: str
    residual_band: float | None = None
    fit_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        if self.extra.get("absent"):
            return True
        return self.validation is not None and self.validation.beats_naive


def _gain(model: float, naive: float) -> str:
    if not (math.isfinite(model) and math.isfinite(naive)) or naive == 0:
        return "n/a"
    return f"{(model - naive) / naive * 100:+.1f}%"


def configure(threads: int, seed: int = 0) -> None:
    """Bound TensorFlow's thread pools (before any op runs) and seed everything."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(max(1, threads))
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(seed)


def build_model(spec: FeatureSpec, units: int = 32, learning_rate: float = 1e-3) -> keras.Model:
    """``LSTM(units) -> Dense(168)`` over ``(steps, features)`` inputs, compiled."""
    model = keras.Sequential([
        keras.Input((spec.steps, spec.features)),
        keras.layers.LSTM(units, name="lstm"),
        # A zero head starts as the seasonal base itself: training only moves
        # away from it as far as the residuals support.
        keras.layers.Dense(HORIZON_HOURS, name="head", kernel_initializer="zeros"),
    ])
    # No XLA: compiling costs more than it saves on models this small.
    model.compile(optimizer=keras.optimizers.Adam(learning_rate, clipnorm=1.0), loss=masked_huber,
                  jit_compile=False)
    return model


def masked_huber(y_true: Any, y_pred: Any) -> Any:
    """Huber loss over the known targets only (NaN marks an hour without data)."""
    ops = keras.ops
    known = ops.logical_not(ops.isnan(y_true))
    err = ops.abs(y_pred - ops.where(known, y_true, 0.0))
    huber = ops.where(err < 1.0, 0.5 * err * err, err - 0.5)
    weight = ops.cast(known, y_pred.dtype)
    return ops.sum(huber * weight, axis=-1) / ops.maximum(ops.sum(weight, axis=-1), 1.0)


def fit_scaler(values: np.ndarray, train_end: int, spec: FeatureSpec, start: int = 0) -> Scaler:
    """Scalers from the training part (indices before ``train_end``) only."""
    part = values[:train_end]
    known = part[np.isfinite(part)]
    x_mean = float(known.mean()) if known.size else 0.0
    x_scale = float(known.std()) if known.size else 0.0
    hours = np.arange(train_end)
    # Residuals against the base, as the model will see them (origin = each hour).
    base = model_base(spec, values, start, hours)[:, 0] if train_end else np.empty(0)
    residual = part - base
    residual = residual[np.isfinite(residual)]
    y_scale = float(residual.std()) if residual.size else 0.0
    # A constant series has no spread: scale 1 keeps the arithmetic finite.
    return Scaler(x_mean, x_scale if x_scale > 1e-9 else 1.0,
                  y_scale if y_scale > 1e-9 else (x_scale if x_scale > 1e-9 else 1.0))


def training_arrays(values: np.ndarray, start: int, origins: np.ndarray, spec: FeatureSpec,
                    scaler: Scaler) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and scaled residual targets (NaN where unknown) for forecasts at ``origins``."""
    x = window_features(values, start, origins, spec, scaler)
    idx = origins[:, None] + np.arange(HORIZON_HOURS)[None, :]
    truth = np.where(idx < values.shape[0], values[np.clip(idx, 0, values.shape[0] - 1)], np.nan)
    y = (truth - model_base(spec, values, start, origins)) / scaler.y_scale
    return x, y.astype(np.float32)


def export_model(model: keras.Model, spec: FeatureSpec, scaler: Scaler,
                 metadata: dict[str, Any] | None = None) -> ExportedModel:
    """The Keras model's weights as an :class:`ExportedModel`."""
    kernel, recurrent, bias = model.get_layer("lstm").get_weights()
    dense_kernel, dense_bias = model.get_layer("head").get_weights()
    return ExportedModel(spec, scaler, kernel, recurrent, bias, dense_kernel, dense_bias,
                         dict(metadata or {}))


def lookback_for(hours: int, settings: TrainSettings) -> int | None:
    """The lookback that fits the data: the configured one, shrunk (whole steps) when
    too few training windows remain; None when not even one step fits."""
    train_end = hours - settings.holdout_hours
    room = train_end - HORIZON_HOURS + 1 - settings.min_samples
    lookback = min(settings.lookback_hours, room - room % settings.step_hours)
    return lookback if lookback >= settings.step_hours else None


def validate(exported: ExportedModel, values: np.ndarray, start: int,
             holdout_start: int) -> Validation:
    """MAE of the exported model, the seasonal-naive and the base on the held-out hours."""
    n = values.shape[0]
    origins = np.arange(holdout_start, n - min(HORIZONS) + 1)
    forecast = model_values(exported, values, start, origins)
    base = model_base(exported.spec, values, start, origins)
    idx = origins[:, None] + np.arange(HORIZON_HOURS)[None, :]
    inside = idx < n
    truth = np.where(inside, values[np.clip(idx, 0, n - 1)], np.nan)
    naive = values[idx - WEEK_HOURS]
    mae_model, mae_naive, mae_base = {}, {}, {}
    for h in HORIZONS:
        # Only origins whose whole horizon lies in the data, and only hours that
        # every forecast knows, so the three are compared on the same pairs.
        rows = origins + h <= n
        t, m, nv, b = (a[rows, :h] for a in (truth, forecast, naive, base))
        ok = np.isfinite(t) & np.isfinite(m) & np.isfinite(nv) & np.isfinite(b)
        key = f"{h}h"
        mae_model[key] = float(np.abs(m - t)[ok].mean()) if ok.any() else math.nan
        mae_naive[key] = float(np.abs(nv - t)[ok].mean()) if ok.any() else math.nan
        mae_base[key] = float(np.abs(b - t)[ok].mean()) if ok.any() else math.nan
    return Validation(mae_model, mae_naive, mae_base, int(origins.size))


def residual_band(exported: ExportedModel, values: np.ndarray, start: int, holdout_start: int,
                  minute_time: np.ndarray, minute_values: np.ndarray) -> float | None:
    """PREDICT's band: ``criteria.RESIDUAL_K`` robust sigmas of minute readings minus the
    minute expectation of the forecast issued at the start of their hour (as in service)."""
    n = values.shape[0]
    origins = np.arange(holdout_start, n)
    if origins.size == 0:
        return None
    first_two = model_values(exported, values, start, origins)[:, :2]
    t0 = start + holdout_start * HOUR_S
    sel = (minute_time >= t0) & np.isfinite(minute_values)
    t, v = minute_time[sel], minute_values[sel]
    row = (t - t0) // HOUR_S
    keep = row < origins.size
    t, v, row = t[keep], v[keep], row[keep]
    # Same rule as Forecast.expected_at within the first hour: hold the first value
    # until the hour's middle, then interpolate toward the second.
    frac = np.clip(((t - t0) % HOUR_S - HOUR_S / 2) / HOUR_S, 0.0, None)
    expected = first_two[row, 0] * (1 - frac) + first_two[row, 1] * frac
    residual = v - expected
    residual = residual[np.isfinite(residual)]
    if residual.size < criteria.MIN_RESIDUAL_PAIRS:
        return None
    sigma = criteria.robust_sigma(residual)
    return float(criteria.RESIDUAL_K * sigma) if sigma > 0 else None


BLENDS = (0.0, 0.25, 0.5, 0.75, 1.0)


def blend_weight(exported: ExportedModel, values: np.ndarray, start: int,
                 holdout_start: int) -> float:
    """The share of the network's residual to add to the base: of ``BLENDS``, the one
    with the least 168-hour MAE on the held-out weeks (ties: the smaller)."""
    n = values.shape[0]
    origins = np.arange(holdout_start, n)
    if origins.size == 0:
        return 1.0
    full = model_values(exported, values, start, origins)
    alone = model_values(shrunk(exported, 0.0), values, start, origins)
    idx = origins[:, None] + np.arange(HORIZON_HOURS)[None, :]
    truth = np.where(idx < n, values[np.clip(idx, 0, n - 1)], np.nan)
    ok = np.isfinite(truth) & np.isfinite(full)
    if not ok.any():
        return 1.0
    scores = [float(np.abs(alone + w * (full - alone) - truth)[ok].mean()) for w in BLENDS]
    return BLENDS[int(np.argmin(scores))]


def shrunk(exported: ExportedModel, weight: float) -> ExportedModel:
    """The model with its residual scaled by ``weight`` (the head's weights, so the
    numpy forward pass is unchanged): an ensemble of the network and its base."""
    if weight == 1.0:
        return exported
    return ExportedModel(exported.spec, exported.scaler, exported.kernel,
                         exported.recurrent_kernel, exported.bias,
                         exported.dense_kernel * weight, exported.dense_bias * weight,
                         {**exported.metadata, "blend": weight})


class _Deadline(keras.callbacks.Callback):
    """Stops fitting after the epoch that passes ``deadline`` (time.monotonic())."""

    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = deadline
        self.hit = False

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if time.monotonic() > self.deadline:
            self.hit = True
            self.model.stop_training = True


def absent_quantity(quantity: str, settings: TrainSettings) -> QuantityResult:
    """A quantity the sensor does not measure: an untrained (zero-head) model, so the
    service's model pair is complete and its forecast of the quantity stays empty."""
    spec = FeatureSpec(quantity, settings.lookback_hours, settings.step_hours,
                       settings.base_weeks, settings.fit_hours, settings.timezone,
                       settings.holidays, settings.base_decay)
    exported = export_model(build_model(spec, settings.units), spec, Scaler(0.0, 1.0, 1.0))
    return QuantityResult(quantity, exported, None, 0, f"no {quantity} data: not forecast",
                          extra={"absent": True, "lookback_hours": settings.lookback_hours})


def train_quantity(quantity: str, values: np.ndarray, start: int, settings: TrainSettings,
                   minute_time: np.ndarray | None = None,
                   minute_values: np.ndarray | None = None) -> QuantityResult:
    """Train, export and validate one quantity's model from its hourly ``values``.

    ``values`` are hourly means from epoch second ``start``; the last
    ``settings.holdout_hours`` are held out. Minute readings, when given, set
    the residual band for PREDICT.
    """
    n = values.shape[0]
    lookback = lookback_for(n, settings)
    if lookback is None:
        need = (settings.holdout_hours + HORIZON_HOURS + settings.step_hours
                + settings.min_samples - 1)
        return QuantityResult(quantity, None, None, 0,
                              f"not enough data: {n} hours, need at least {need}")
    spec = FeatureSpec(quantity, lookback, settings.step_hours, settings.base_weeks,
                       settings.fit_hours, settings.timezone, settings.holidays,
                       settings.base_decay)
    holdout_start = n - settings.holdout_hours
    scaler = fit_scaler(values, holdout_start, spec, start)
    # Training targets end before the held-out weeks; early stopping watches the
    # last sixth of the windows, a horizon apart so no target is shared.
    last = holdout_start - HORIZON_HOURS
    origins = np.arange(lookback, last + 1)
    known = np.isfinite(values)
    origins = origins[known[origins - 1]]  # a window ending in a gap teaches little
    if origins.size < settings.min_samples or not known[holdout_start:].any():
        return QuantityResult(quantity, None, None, 0,
                              f"not enough {quantity} data: {origins.size} usable windows")
    n_val = origins.size // 6
    if n_val >= 16 and origins.size - n_val - HORIZON_HOURS >= settings.min_samples:
        fit_origins = origins[origins <= origins[-n_val] - HORIZON_HOURS]
        val_origins = origins[-n_val:]
    else:
        fit_origins, val_origins = origins, origins[:0]
    x, y = training_arrays(values, start, fit_origins, spec, scaler)
    model = build_model(spec, settings.units, settings.learning_rate)
    callbacks: list[keras.callbacks.Callback] = []
    validation_data = None
    if val_origins.size:
        validation_data = training_arrays(values, start, val_origins, spec, scaler)
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=settings.patience, restore_best_weights=True))
    deadline = _Deadline(settings.deadline) if settings.deadline is not None else None
    if deadline is not None:
        callbacks.append(deadline)
    started = time.perf_counter()
    epochs_run = 0
    if settings.epochs > 0:
        history = model.fit(x, y, batch_size=settings.batch_size, epochs=settings.epochs,
                            validation_data=validation_data, callbacks=callbacks, shuffle=True,
                            verbose=0)
        epochs_run = len(history.history.get("loss", []))
    fit_s = time.perf_counter() - started
    log.info("%s: %d windows, %d epochs in %.1f s", quantity, fit_origins.size, epochs_run, fit_s)
    unblended = export_model(model, spec, scaler)
    blend = blend_weight(unblended, values, start, holdout_start)
    exported = shrunk(unblended, blend)
    validation = validate(exported, values, start, holdout_start)
    band = None
    if minute_time is not None and minute_values is not None:
        band = residual_band(exported, values, start, holdout_start, minute_time, minute_values)
    verdict = "beats" if validation.beats_naive else "does not beat"
    reason = f"{quantity} model {verdict} seasonal-naive: {validation.describe(quantity)}"
    extra = {"windows": int(fit_origins.size), "lookback_hours": lookback, "blend": blend,
             "unblended": unblended,
             "stopped_at_deadline": bool(deadline and deadline.hit)}
    return QuantityResult(quantity, exported, validation, epochs_run, reason, band, fit_s, extra)
