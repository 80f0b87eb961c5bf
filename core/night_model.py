"""The NIGHT method: expected night flow, and evidence of a leak that accumulates.

A leak is a lasting step (or ramp) up in the flow that no customer uses, best
seen at night when use is lowest. Each closed night this module compares the
night's minimum night flow (MNF) with what is *expected for that kind of night*
and adds the standardised excess to a one-sided CUSUM; the 24-hour mean flow
ending with the night, compared with the expected day, adds a second piece of
evidence for the same leak. NIGHT is raised when the statistic passes the
decision interval ``h``.

The expectation (:func:`expect`), in log units so that drift and the margin are
relative:

* **Kind of night.** The night is of the kind of the local morning its MNF falls
  in (:class:`core.day_kind.DayKind`: weekday, Saturday, Sunday, holiday, a
  working day after a rest day). Each kind's factor is the median ratio of its
  nights to the local level of the weekday nights around them (a centred
  running median); a kind with fewer than :data:`MIN_KIND_POINTS` nights borrows its
  fallback's factor (a holiday is a Sunday) or, with none, is judged with a
  night adds no evidence (it is reported, and learned).
* **Level and seasonal drift.** A Theil-Sen line (median of pairwise slopes)
  through the last ``window`` clean nights divided by their kind factors, so a
  night flow that doubles over a season is followed, not mistaken for a leak;
  extrapolated at most :data:`EXTRAPOLATE_DAYS` past the newest clean night.
* **Margin.** ``sigma`` is the robust spread (MAD) of the residuals of the last
  ``window`` clean nights around what was expected of each before it came (so it
  holds every error of the expectation: noise, trend, kind factors), never the
  raw spread of the nights (which holds the season and past leaks); while fewer
  than ``min_baseline_nights`` such residuals exist, the residuals around the
  line, widened; at least :data:`SIGMA_FLOOR`.

The decision (:func:`judge`), per sensor:

* ``z = (log MNF - log expected) / sigma``; ``S = max(0, S + z - k)``, then the
  same with the day's ``z`` when the day had enough readings and a basis. A large
  leak passes ``h`` on its first night, a small one after a few.
* **A reference that evidence cannot drag along.** A night enters the clean
  baseline only while ``S <= h / 2``: once the statistic has risen, the
  expectation is frozen at the nights before, so a leak growing over weeks is
  measured against the nights before it began, not absorbed into them.
* **Clearing.** With NIGHT raised, ``clear_nights`` nights in a row whose excess
  is gone (``z <= CLEAR_Z``) clear it: ``S`` returns to 0 and those nights
  re-start the baseline's learning; so do ``clear_nights`` nights that fell
  back from the held nights' level by about the leak (:data:`CLEAR_DROP`: a
  repair while the season moved the flow), after which the reference
  re-anchors at the new level. A later leak is a new episode.
* **Repaired.** :func:`mark_repaired` (the operator's ``repaired`` command)
  clears NIGHT at once and resets the statistic.
* **Learning.** No verdict until ``min_baseline_nights`` clean nights exist; a
  sensor silent for longer than ``window`` days re-learns.

Everything is plain arithmetic on the state, in order: the same nights give the
same verdicts.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.day_kind import FALLBACK, DayKind, HolidayCalendar
from core.localtime import local_datetime
from core.night_flow import NightSummary, NightWindow

MAD_TO_SIGMA = 1.4826
# Flows are compared in log units; this much (m3/h) is added first so that a
# sensor whose night flow is near zero does not turn meter noise into huge ratios.
FLOW_OFFSET = 0.05
# Nights differ by a percent or two even when nothing changes (measured: 1.4-3.9 %
# on the real district inflows in ../shared/data); a margin below this would be
# the model's own fitting luck.
SIGMA_FLOOR = 0.02
# A kind (Saturday, holiday, ...) needs this many clean nights for its own factor.
MIN_KIND_POINTS = 3
# Errors of past expectations kept for the margin (also with a shorter window).
KIND_WINDOW = 28
LEARN_BELOW = 0.5
# Small-sample widening of the margin: variance x (1 + SMALL_SAMPLE / errors
# + KIND_SPREAD / the kind's points); KIND_SPREAD = pi / 2, the variance of a
# median relative to a mean.
SMALL_SAMPLE = 7.0
KIND_SPREAD = math.pi / 2
# Until enough residuals of new nights exist, the residuals around the fitted
# line (which the line was drawn through) are widened by this much.
IN_SAMPLE_WIDEN = 1.5
# Half-width (days) of the running median of weekdays that gives the local level.
LEVEL_HALF_DAYS = 7
# The trend is extrapolated at most this far past the newest clean night.
EXTRAPOLATE_DAYS = 14
# Clean nights kept per sensor (the kind factors look further back than the trend).
KEEP_POINTS = 120
# With NIGHT raised, a night whose standardised excess is at most this is clean.
CLEAR_Z = 2.0
# The statistic is capped so that a leak left for months clears like any other.
MAX_STATISTIC_H = 10.0
# The day's standardised excess counts this much beside the night's. Measured on
# the tuning scenarios (bench/leak_eval.py --seeds tune): 0.75 halves few false
# events but lets a leak growing through a seasonal rise sink into the baseline
# (the statistic hovers below the freeze); 1.5 doubles the false events.
DAY_WEIGHT = 1.0
# Nights kept in a verdict's explanation.
MAX_EVIDENCE = 14
# With NIGHT raised, a night whose excess over the frozen reference has fallen
# below the recent held nights' by this share of the excess the leak showed when
# it tripped (and by CLEAR_Z sigmas at least) is a night after a repair, though
# the season has moved the flow since the freeze: the reference re-anchors at the
# new level. Measured on the tuning seeds: without it, a leak held through a
# seasonal rise never clears (NIGHT held for 100-170 nights, hiding the leaks
# that followed on that meter); 0.3-0.7 differ by a leak or two.
CLEAR_DROP = 0.5


class NightOutcome(enum.StrEnum):
    """What a night's judgement came to."""

    LEARNING = "learning"      # too few clean nights yet: no verdict
    NORMAL = "normal"          # no leak
    LEAK = "leak"              # NIGHT raised this night
    HELD = "held"              # NIGHT stays raised
    CLEARED = "cleared"        # the excess was gone for clear_nights nights


@dataclass(frozen=True, slots=True)
class NightSettings:
    """The ``[night]`` decision knobs (their defaults live in :mod:`core.config`'s schema)."""

    cusum_k: float
    cusum_h: float
    window: int
    min_baseline_nights: int
    clear_nights: int

    @classmethod
    def from_config(cls, night: Any) -> NightSettings:
        """From a :class:`core.config.NightConfig` (``config.night``)."""
        return cls(cusum_k=night.cusum_k, cusum_h=night.cusum_h, window=night.baseline_nights,
                   min_baseline_nights=night.min_baseline_nights,
                   clear_nights=night.clear_nights)


@dataclass(frozen=True, slots=True)
class Expected:
    """What a night (or day) of some kind is expected to be.

    ``value`` is in flow units; ``sigma`` is relative (log units); ``basis`` is
    how many clean points the line went through.
    """

    value: float
    sigma: float
    basis: int
    kind_known: bool

    def z(self, observed: float) -> float:
        """The standardised excess of ``observed`` over this expectation."""
        return (_log(observed) - _log(self.value)) / self.sigma


Point = tuple[int, str, float]
"""(date ordinal, day kind, log flow) of one clean night or day."""


def _log(v: float) -> float:
    return math.log(max(v, 0.0) + FLOW_OFFSET)


def _unlog(y: float) -> float:
    return math.exp(y) - FLOW_OFFSET


def kind_factors(points: Sequence[Point]) -> dict[str, tuple[float, int]]:
    """Per kind: the median log ratio of its points to the local weekday level, and
    how many points had one.

    The local level is the median of the weekday points within
    :data:`LEVEL_HALF_DAYS` days, so a week of holidays is measured against the
    weeks around it, not against itself.
    """
    if not points:
        return {}
    x = np.array([p[0] for p in points], dtype=np.int64)
    y = np.array([p[2] for p in points])
    kinds = np.array([p[1] for p in points])
    near = (np.abs(x[:, None] - x[None, :]) <= LEVEL_HALF_DAYS) & (kinds == DayKind.WEEKDAY)
    if not near.any():
        return {}
    with warnings.catch_warnings():
        # A point with no weekday near it has no level (NaN), and is left out.
        warnings.simplefilter("ignore", RuntimeWarning)
        level = np.nanmedian(np.where(near, y[None, :], np.nan), axis=1)
    deviation = y - level
    factors: dict[str, tuple[float, int]] = {}
    for kind in sorted(set(kinds.tolist())):
        d = deviation[(kinds == kind) & np.isfinite(deviation)]
        if d.size:
            factors[kind] = (float(np.median(d)), int(d.size))
    base = factors.get(DayKind.WEEKDAY, (0.0, 0))[0]
    return {k: (f - base, n) for k, (f, n) in factors.items()}


def _factor(factors: Mapping[str, tuple[float, int]], kind: str) -> tuple[float | None, int]:
    """The kind's log factor (borrowed from its fallback when it has too few points)
    and how many points it comes from (0: the level itself, exact)."""
    current: str | None = kind
    while current is not None:
        found = factors.get(current)
        if current == DayKind.WEEKDAY:
            return 0.0, 0  # the level itself
        if found is not None and found[1] >= MIN_KIND_POINTS:
            return found
        current = FALLBACK.get(DayKind(current))
    return None, 0


def expect(points: Sequence[Point], ordinal: int, kind: str, window: int,
           residuals: Sequence[float] = (), min_residuals: int = 7) -> Expected | None:
    """The expected flow of a night (or day) of ``kind`` on date ``ordinal``.

    ``points`` are the clean ones, oldest first; the line goes through the last
    ``window`` of them. ``residuals`` are the log errors of the expectations of
    past clean points (the margin comes from their spread once there are
    ``min_residuals``). None without any point.
    """
    if not points:
        return None
    factors = kind_factors(points)
    recent = points[-window:]
    adjust = np.array([_factor(factors, p[1])[0] or 0.0 for p in recent])
    x = np.array([p[0] for p in recent], dtype=np.float64)
    y = np.array([p[2] for p in recent]) - adjust
    slope = _theil_sen_slope(x, y)
    intercept = float(np.median(y - slope * x))
    # A fitted line's own residuals understate the error of a new point.
    sigma = IN_SAMPLE_WIDEN * robust_sigma(y - (intercept + slope * x))
    n = len(recent)
    if len(residuals) >= min_residuals:
        errors = np.asarray(residuals[-max(window, KIND_WINDOW):], dtype=np.float64)
        sigma, n = max(sigma, robust_sigma(errors)), errors.size
    at = min(float(ordinal), float(x[-1]) + EXTRAPOLATE_DAYS)
    factor, seen = _factor(factors, kind)
    # A spread from a few points is itself uncertain, and so is a kind factor
    # learned from three nights: widen the margin while they are few.
    widen = 1.0 + SMALL_SAMPLE / n + (KIND_SPREAD / seen if seen else 0.0)
    return Expected(_unlog(intercept + slope * at + (factor or 0.0)),
                    max(sigma * math.sqrt(widen), SIGMA_FLOOR), len(recent), factor is not None)


def robust_sigma(x: np.ndarray) -> float:
    """The MAD of ``x`` scaled to a normal standard deviation."""
    return MAD_TO_SIGMA * float(np.median(np.abs(x - np.median(x)))) if x.size else 0.0


def _theil_sen_slope(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 2:
        return 0.0
    i, j = np.triu_indices(x.size, k=1)
    dx = x[j] - x[i]
    keep = dx != 0
    if not keep.any():
        return 0.0
    return float(np.median((y[j] - y[i])[keep] / dx[keep]))


# -- the decision ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NightInput:
    """One closed night of one sensor, as the model judges it.

    ``night`` names it (the local date it starts on), ``kind`` is the kind of the
    morning its MNF falls in; ``day_mean`` is the mean flow of the 24 hours
    ending with the night (None: too few readings), ``day_kind`` that day's kind.
    """

    night: dt.date
    kind: str
    mnf: float
    day_mean: float | None = None
    day_kind: str | None = None


@dataclass
class SensorNights:
    """One sensor's NIGHT state: its clean nights and days, the statistic, the episode.

    ``night_errors``/``day_errors`` are the log errors of the expectations of
    the clean nights and days learned since judging began (their spread is the
    margin).
    """

    nights: list[Point] = field(default_factory=list)
    days: list[Point] = field(default_factory=list)
    night_errors: list[float] = field(default_factory=list)
    day_errors: list[float] = field(default_factory=list)
    statistic: float = 0.0
    alarm: bool = False
    clear_run: int = 0
    clearing: list[list[Any]] = field(default_factory=list)
    held: list[list[Any]] = field(default_factory=list)
    evidence: list[dict[str, Any]] = field(default_factory=list)
    last_night: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "nights": [list(p) for p in self.nights], "days": [list(p) for p in self.days],
            "night_errors": list(self.night_errors), "day_errors": list(self.day_errors),
            "statistic": self.statistic, "alarm": self.alarm, "clear_run": self.clear_run,
            "clearing": [list(c) for c in self.clearing],
            "held": [list(c) for c in self.held],
            "evidence": list(self.evidence), "last_night": self.last_night,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SensorNights:
        def point(p: Sequence[Any]) -> Point:
            return (int(p[0]), str(p[1]), float(p[2]))

        return cls(
            nights=[point(p) for p in d.get("nights", ())],
            days=[point(p) for p in d.get("days", ())],
            night_errors=[float(e) for e in d.get("night_errors", ())],
            day_errors=[float(e) for e in d.get("day_errors", ())],
            statistic=float(d.get("statistic", 0.0)), alarm=bool(d.get("alarm", False)),
            clear_run=int(d.get("clear_run", 0)),
            clearing=[list(c) for c in d.get("clearing", ())],
            held=[list(c) for c in d.get("held", ())],
            evidence=[dict(e) for e in d.get("evidence", ())],
            last_night=d.get("last_night"),
        )


@dataclass(frozen=True, slots=True)
class NightVerdict:
    """The judgement of one night; ``leak`` None is no verdict (still learning).

    ``statistic`` is the CUSUM after this night, ``threshold`` the decision
    interval ``h``; ``evidence`` lists each night (and day) that added to the
    statistic since it last stood at 0.
    """

    outcome: NightOutcome
    leak: bool | None
    mnf: float
    expected: float | None
    sigma: float | None
    z: float | None
    day_mean: float | None
    day_expected: float | None
    day_z: float | None
    statistic: float
    threshold: float
    nights_in_baseline: int
    evidence: tuple[dict[str, Any], ...] = ()

    def cause(self) -> dict[str, Any]:
        """The detection cause carried on each flow reading while NIGHT is raised."""
        return {
            "method": "NIGHT", "quantity": "flow", "reason": "cusum",
            "observed": round(self.statistic, 3), "threshold": self.threshold,
        }

    def to_record(self) -> dict[str, Any]:
        """The stored form (msgpack-able) of the verdict's explanation."""
        return {
            "outcome": str(self.outcome), "leak": self.leak, "mnf": self.mnf,
            "expected": _round(self.expected), "sigma": _round(self.sigma),
            "z": _round(self.z), "day_mean": _round(self.day_mean),
            "day_expected": _round(self.day_expected), "day_z": _round(self.day_z),
            "statistic": round(self.statistic, 3), "threshold": self.threshold,
            "nights_in_baseline": self.nights_in_baseline, "evidence": list(self.evidence),
        }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def judge(state: SensorNights, settings: NightSettings, night: NightInput) -> NightVerdict:
    """Judge one closed night and update ``state`` (see the module docstring)."""
    s = settings
    ordinal = night.night.toordinal()
    if state.last_night is not None and ordinal - state.last_night > s.window:
        _relearn(state)  # the sensor was away longer than the baseline reaches
    state.last_night = ordinal
    learned = _Learned((ordinal, night.kind, _log(night.mnf)), None, None, None)
    if night.day_mean is not None and night.day_kind is not None:
        learned.day = (ordinal, night.day_kind, _log(night.day_mean))
    if len(state.nights) < s.min_baseline_nights:
        _learn(state, learned)
        outcome = NightOutcome.CLEARED if state.alarm else NightOutcome.LEARNING
        state.alarm = False
        return NightVerdict(outcome, False if outcome is NightOutcome.CLEARED else None,
                            night.mnf, None, None, None, night.day_mean, None, None,
                            0.0, s.cusum_h, len(state.nights))
    expected = expect(state.nights, ordinal, night.kind, s.window, state.night_errors,
                      s.min_baseline_nights)
    assert expected is not None
    z = expected.z(night.mnf)
    if expected.kind_known:
        learned.night_error = z * expected.sigma
    day_expected = None
    day_z = None
    if learned.day is not None and night.day_mean is not None \
            and len(state.days) >= s.min_baseline_nights:
        day_expected = expect(state.days, ordinal, learned.day[1], s.window, state.day_errors,
                              s.min_baseline_nights)
        if day_expected is not None:
            day_z = day_expected.z(night.day_mean)
            if day_expected.kind_known:
                learned.day_error = day_z * day_expected.sigma
    # A kind not yet learned (a first holiday, the first Saturdays) adds no
    # evidence: its expectation is a guess.
    statistic = state.statistic
    if expected.kind_known:
        statistic = max(0.0, statistic + z - s.cusum_k)
    if day_z is not None and day_expected is not None and day_expected.kind_known:
        statistic = max(0.0, statistic + DAY_WEIGHT * day_z - s.cusum_k)
    state.statistic = min(statistic, MAX_STATISTIC_H * s.cusum_h)
    if state.statistic == 0.0:
        state.evidence = []
    else:
        state.evidence = (state.evidence + [{
            "night": night.night.isoformat(), "mnf": round(night.mnf, 4),
            "expected": round(expected.value, 4), "z": round(z, 3),
            "day_mean": _round(night.day_mean),
            "day_expected": _round(day_expected.value if day_expected else None),
            "day_z": None if day_z is None else round(day_z, 3),
            "statistic": round(state.statistic, 3),
        }])[-MAX_EVIDENCE:]
    if state.alarm:
        outcome = _hold_or_clear(state, s, z, expected.sigma, learned)
    elif state.statistic > s.cusum_h:
        state.alarm, state.clear_run, state.clearing = True, 0, []
        state.held = [learned.to_list()]
        outcome = NightOutcome.LEAK
    else:
        outcome = NightOutcome.NORMAL
        # The margin must know every error of the expectation, the large ones
        # too: only nights that raise NIGHT stay out of it.
        _record_errors(state, learned)
        if state.statistic <= s.cusum_h * LEARN_BELOW:
            _learn(state, learned, errors=False)
    leak = outcome in (NightOutcome.LEAK, NightOutcome.HELD)
    return NightVerdict(
        outcome, leak, night.mnf, expected.value, expected.sigma, z, night.day_mean,
        day_expected.value if day_expected else None, day_z, state.statistic, s.cusum_h,
        len(state.nights), tuple(state.evidence) if leak else (),
    )


@dataclass(slots=True)
class _Learned:
    """What a clean night adds to the baseline: its points and its expectations' errors."""

    night: Point
    day: Point | None
    night_error: float | None
    day_error: float | None

    def to_list(self) -> list[Any]:
        return [list(self.night), list(self.day) if self.day else None,
                self.night_error, self.day_error]

    @classmethod
    def from_list(cls, v: Sequence[Any]) -> _Learned:
        night, day, night_error, day_error = v
        return cls((int(night[0]), str(night[1]), float(night[2])),
                   (int(day[0]), str(day[1]), float(day[2])) if day else None,
                   night_error, day_error)


def _hold_or_clear(state: SensorNights, s: NightSettings, z: float, sigma: float,
                   learned: _Learned) -> NightOutcome:
    """A night with NIGHT raised: held, or a step towards clearing.

    Two ways out: the excess over the frozen reference is gone (``z <= CLEAR_Z``:
    those nights re-start the baseline), or the flow fell back from the held
    nights' level by about the leak (:data:`CLEAR_DROP`): a repair during a
    seasonal rise, after which the reference re-anchors at the new level.
    """
    excess = z * sigma
    held = [float(item[2]) for item in state.held if item[2] is not None]
    gone = z <= CLEAR_Z
    dropped = False
    if not gone and len(held) >= 2:
        leak = float(np.median(held[:3]))
        recent = float(np.median(held[-7:]))
        dropped = excess <= recent - max(CLEAR_DROP * leak, CLEAR_Z * sigma)
    if not (gone or dropped):
        state.held = (state.held + [learned.to_list()])[-KEEP_POINTS:]
        state.clear_run, state.clearing = 0, []
        return NightOutcome.HELD
    state.clear_run += 1
    state.clearing.append(learned.to_list() + [bool(gone)])
    if state.clear_run < s.clear_nights:
        return NightOutcome.HELD
    clearing = [_Learned.from_list(item[:4]) for item in state.clearing]
    if all(item[4] for item in state.clearing):
        # The excess is gone: the nights that showed it re-start the baseline.
        for item in clearing:
            _learn(state, item)
        _end_episode(state)
    else:
        _reanchor(state, clearing)
    return NightOutcome.CLEARED


def _end_episode(state: SensorNights) -> None:
    state.alarm, state.statistic, state.clear_run, state.clearing = False, 0.0, 0, []
    state.evidence, state.held = [], []


def _reanchor(state: SensorNights, clearing: Sequence[_Learned]) -> None:
    """The reference moves to the level of the ``clearing`` nights after a repair.

    The nights before the leak move by the clearing nights' median error over the
    frozen reference; the held nights, which followed the season through the
    leak, move down by the fall the repair showed, so the line learns the
    season's current slope from them rather than the one before the freeze.
    """
    held = [_Learned.from_list(item) for item in state.held]
    for attr in ("night", "day"):
        errors = [getattr(n, f"{attr}_error") for n in clearing]
        known = [e for e in errors if e is not None]
        if not known:
            continue
        level = float(np.median(known))
        during = [getattr(n, f"{attr}_error") for n in held[-7:]]
        fall = level - float(np.median([e for e in during if e is not None] or [level]))
        points = [(o, k, y + level) for o, k, y in getattr(state, f"{attr}s")]
        points += [(p[0], p[1], p[2] + fall) for p in
                   (getattr(n, attr) for n in held) if p is not None]
        setattr(state, f"{attr}s", points[-KEEP_POINTS:])
    for n in clearing:
        _learn(state, n, errors=False)
    _end_episode(state)


def _learn(state: SensorNights, learned: _Learned, errors: bool = True) -> None:
    state.nights = (state.nights + [learned.night])[-KEEP_POINTS:]
    if learned.day is not None:
        state.days = (state.days + [learned.day])[-KEEP_POINTS:]
    if errors:
        _record_errors(state, learned)


def _record_errors(state: SensorNights, learned: _Learned) -> None:
    if learned.night_error is not None:
        state.night_errors = (state.night_errors + [learned.night_error])[-KEEP_POINTS:]
    if learned.day_error is not None:
        state.day_errors = (state.day_errors + [learned.day_error])[-KEEP_POINTS:]


def _relearn(state: SensorNights) -> None:
    state.nights, state.days, state.night_errors, state.day_errors = [], [], [], []
    state.statistic, state.clear_run, state.clearing, state.evidence = 0.0, 0, [], []
    state.held = []


def mark_repaired(state: SensorNights) -> bool:
    """The operator repaired the leak: NIGHT clears now and the statistic restarts.

    Returns whether NIGHT was raised. The clean baseline is kept (it holds the
    nights before the leak); the nights after the repair extend it.
    """
    was = state.alarm
    _end_episode(state)
    return was


def learning_left(state: SensorNights, settings: NightSettings) -> int:
    """Clean nights still needed before the first verdict (0: judging)."""
    return max(0, settings.min_baseline_nights - len(state.nights))


# -- every sensor of a site ----------------------------------------------------------


class NightModel:
    """Every sensor's NIGHT state with the site's settings, calendar and window.

    What the NightFlow actor (and a replay) call with each closed night; its
    :meth:`state` is plain data, stored with the actor's offset.
    """

    def __init__(self, settings: NightSettings, calendar: HolidayCalendar, window: NightWindow,
                 state: Mapping[str, Any] | None = None) -> None:
        self.settings = settings
        self.calendar = calendar
        self.window = window
        self.sensors: dict[str, SensorNights] = {
            s: SensorNights.from_dict(d) for s, d in (state or {}).items()}

    @classmethod
    def from_config(cls, config: Any, window: NightWindow,
                    state: Mapping[str, Any] | None = None) -> NightModel:
        return cls(NightSettings.from_config(config.night), config.site.calendar, window, state)

    def judge(self, summary: NightSummary) -> NightVerdict | None:
        """The verdict on a closed night; None when it had no complete block (no change)."""
        if summary.mnf is None:
            return None
        end = self.window.bounds(summary.night)[1]
        tz = self.window.tz
        # The MNF falls in the morning the window ends on; the day's mean is of
        # the 24 hours before the end, mostly the date half a day before it.
        morning = local_datetime(end, tz).date()
        day = local_datetime(end - 12 * 3600, tz).date()
        state = self.sensors.setdefault(summary.sensor, SensorNights())
        return judge(state, self.settings, NightInput(
            summary.night, self.calendar.kind(morning), summary.mnf, summary.day_mean,
            self.calendar.kind(day)))

    def repaired(self, sensor: str) -> bool:
        """The operator marked ``sensor``'s leak repaired (see :func:`mark_repaired`)."""
        return mark_repaired(self.sensors.setdefault(sensor, SensorNights()))

    def learning_left(self, sensor: str) -> int:
        return learning_left(self.sensors.get(sensor) or SensorNights(), self.settings)

    def state(self) -> dict[str, Any]:
        return {s: st.to_dict() for s, st in self.sensors.items()}
