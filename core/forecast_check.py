"""The online check between trainings: is the model still better than seasonal-naive?

A model is accepted only when it beats seasonal-naive on its held-out weeks,
but a week after its training the network may have changed (a new district
opened, a valve moved, the season turned). So once a day (of issue time) the
Predictor re-forecasts the last seven days from what it already holds: one
forecast issued at the same hour on each of the seven days before, by the
model and by the service's own seasonal-naive, each scored on the hours of it
that have their hourly mean by now (up to 168 per origin; 28 days' worth at
most). Per quantity the forecast then comes from the better of the two; the
current source is kept until the other is better by more than
``SWITCH_MARGIN``, so two equals do not take turns day after day.

Pure: numpy arrays in, a decision out. The forward passes are the ones
:mod:`core.forecast` runs for the service (:func:`core.forecast.model_values`,
:func:`core.forecast.seasonal_base`), a batch of seven, a few milliseconds.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core import forecast as forecasting
from core.forecast import HORIZON_HOURS, HOUR_S, NAIVE_WEEKS, ExportedModel, Forecast
from core.types import QUANTITIES

MODEL = "model"
NAIVE = "naive"
CHECK_DAYS = 7
DAY_HOURS = 24
CHECK_EVERY_S = DAY_HOURS * HOUR_S  # re-checked once a day of issue time, and on a new model
MIN_HOURS = 72  # scored hours a verdict needs: three days' worth
SWITCH_MARGIN = 0.02


def history_hours(*models: ExportedModel) -> int:
    """Hours before the issue time that a forecast and its check read: what the
    forecast reads before the oldest origin of the check, seven days earlier."""
    return forecasting.history_hours(*models, weeks=NAIVE_WEEKS) + CHECK_DAYS * DAY_HOURS


@dataclass(frozen=True, slots=True)
class Score:
    """Mean absolute error of the model and of seasonal-naive on the same ``hours``."""

    model_mae: float
    naive_mae: float
    hours: int

    @property
    def enough(self) -> bool:
        return (self.hours >= MIN_HOURS and math.isfinite(self.model_mae)
                and math.isfinite(self.naive_mae))

    def to_record(self) -> dict[str, Any]:
        return {"model_mae": _finite_or_none(self.model_mae),
                "naive_mae": _finite_or_none(self.naive_mae), "hours": self.hours}

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> Score:
        return cls(_float_or_nan(d.get("model_mae")), _float_or_nan(d.get("naive_mae")),
                   int(d.get("hours", 0)))


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _float_or_nan(x: Any) -> float:
    return math.nan if x is None else float(x)


def recent_score(model: ExportedModel, values: np.ndarray, start: int, issued: int,
                 calendar: forecasting.Calendar = forecasting.UTC_CALENDAR) -> Score:
    """The model against seasonal-naive over the ``CHECK_DAYS`` days before ``issued``.

    ``values`` are one quantity's hourly means from epoch second ``start``;
    only the hours before ``issued`` are used. The origins are the issue hour
    1..7 days earlier; each forecast is scored on its hours before ``issued``
    where the truth, the model and naive all have a value (the two are compared
    on the same hours).
    """
    end = (issued - start) // HOUR_S
    past = np.asarray(values, dtype=np.float64)[:max(end, 0)]
    origins = end - DAY_HOURS * np.arange(CHECK_DAYS, 0, -1)
    origins = origins[origins > 0]
    if origins.size == 0:
        return Score(math.nan, math.nan, 0)
    by_model = forecasting.model_values(model, past, start, origins)
    # The service's own naive: like hours of the site's calendar (local time, holidays).
    by_naive = forecasting.seasonal_base(past, origins, NAIVE_WEEKS, forecasting.FIT_HOURS,
                                         median=True, start=start, calendar=calendar)
    idx = origins[:, None] + np.arange(HORIZON_HOURS)[None, :]
    truth = np.where(idx < end, past[np.clip(idx, 0, end - 1)], np.nan)
    ok = np.isfinite(truth) & np.isfinite(by_model) & np.isfinite(by_naive)
    hours = int(ok.sum())
    if not hours:
        return Score(math.nan, math.nan, 0)
    return Score(float(np.abs(by_model - truth)[ok].mean()),
                 float(np.abs(by_naive - truth)[ok].mean()), hours)


def choose(current: str, score: Score | None) -> str:
    """The source a quantity's forecast comes from after ``score``: the better one,
    the ``current`` kept unless the other wins by more than ``SWITCH_MARGIN``
    (and kept while the score rests on fewer than ``MIN_HOURS``)."""
    if score is None or not score.enough:
        return current
    if current == MODEL and score.naive_mae < score.model_mae * (1 - SWITCH_MARGIN):
        return NAIVE
    if current == NAIVE and score.model_mae < score.naive_mae * (1 - SWITCH_MARGIN):
        return MODEL
    return current


@dataclass(frozen=True)
class Switch:
    """One quantity's forecast changed source at a check (said once in the log)."""

    quantity: str
    to: str
    score: Score


@dataclass(frozen=True)
class Choice:
    """Where a sensor's forecast comes from, per quantity, under one model version.

    ``since`` is the issue time from which each quantity has its current
    source; ``checked`` the issue time of the last check.
    """

    version: str
    checked: int
    use: dict[str, str] = field(default_factory=lambda: {q: MODEL for q in QUANTITIES})
    since: dict[str, int] = field(default_factory=dict)
    scores: dict[str, Score] = field(default_factory=dict)

    def due(self, version: str, issued: int) -> bool:
        """A new model, or a day of issue time since the last check."""
        return version != self.version or issued - self.checked >= CHECK_EVERY_S

    def uses_naive(self) -> bool:
        return NAIVE in self.use.values()

    def to_record(self) -> dict[str, Any]:
        return {"version": self.version, "checked": self.checked, "use": dict(self.use),
                "since": dict(self.since),
                "scores": {q: s.to_record() for q, s in self.scores.items()}}

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> Choice:
        return cls(str(d["version"]), int(d["checked"]),
                   {str(q): str(u) for q, u in d["use"].items()},
                   {str(q): int(t) for q, t in d.get("since", {}).items()},
                   {str(q): Score.from_record(s) for q, s in d.get("scores", {}).items()})


def update(previous: Choice | None, version: str, issued: int,
           scores: dict[str, Score]) -> tuple[Choice, list[Switch]]:
    """The choice after a check at ``issued``, and the quantities that switched.

    A new model version starts on the model for both quantities (it has just
    beaten seasonal-naive on its held-out weeks) and is judged at once.
    """
    if previous is None or previous.version != version:
        previous = Choice(version, issued, since={q: issued for q in QUANTITIES})
    use, since, switches = dict(previous.use), dict(previous.since), []
    for q in QUANTITIES:
        now = choose(use.get(q, MODEL), scores.get(q))
        if now != use.get(q, MODEL):
            switches.append(Switch(q, now, scores[q]))
            since[q] = issued
        use[q] = now
    return Choice(version, issued, use, since, dict(scores)), switches


def combine(by_model: Forecast, by_naive: Forecast, use: dict[str, str]) -> Forecast:
    """The forecast to issue: each quantity, with its bands, from the source ``use`` names.

    All from naive is the naive forecast itself; otherwise the model's, with
    the quantities that fall back taking naive's values, residual band (None:
    the criteria's default) and P10/P90 (None: naive has none).
    """
    fallback = [q for q in QUANTITIES if use.get(q, MODEL) == NAIVE]
    if not fallback:
        return by_model
    if len(fallback) == len(QUANTITIES):
        return by_naive
    changes: dict[str, Any] = {}
    for q in fallback:
        for name in (q, f"{q}_band", f"{q}_p10", f"{q}_p90"):
            changes[name] = getattr(by_naive, name)
    return dataclasses.replace(by_model, **changes)
