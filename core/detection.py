"""Detection methods SYSTEM, VALUE and PREDICT on one reading at a time.

:func:`evaluate` judges one reading of one sensor against the system limits, the
sensor's criteria (:mod:`core.criteria`) and the forecast for that minute, and
returns the flags of each quantity with a :class:`Cause` per finding, so an
operator sees what fired, on which value and against which threshold. It
mutates the sensor's :class:`SensorState` (plain data, persisted by the
Detector with its offset). The NIGHT method is evaluated once per night in
:mod:`core.night_flow`; here its verdict is only carried on every flow
evaluation (:func:`apply_night_verdict`).

Decisions an operator should know:

* **Status bits.** A quantity's own fault bit (0x01 flow, 0x02 pressure), power
  failure (0x08) and RTU communication error (0x10) flag SYSTEM and make the
  value untrusted. Low battery (0x04), enclosure opened (0x20) and unknown bits
  also flag SYSTEM on both quantities (an operator wants to see them: a visit is
  due or someone is at the station) but are *advisory*: the value is still
  measured and still judged by VALUE and PREDICT, so a week of low battery
  does not blind leak detection.
* **Untrusted values** (missing, out of the physical range, stuck, fault/power/comm
  bits) get SYSTEM only: they neither count toward nor reset the VALUE/PREDICT
  runs, and an active VALUE/PREDICT is not reported on them (there is no value to
  judge) but carries on to the next trusted reading.
* **Stuck.** The same value on consecutive readings for ``stuck_minutes`` or
  more. Exactly 0 flow is exempt: a small metering point legitimately reads 0
  for hours at night (no use, or below the meter's low-flow cut-off). A meter
  dead at 0 is still caught by VALUE, whose daytime bands exclude 0.
* **Physical range.** The configured limits, tightened (never widened) by the
  range recorded in the criteria.
* **Late and future readings.** A reading not newer than the sensor's newest
  (late) or stamped more than ``clock_ahead_s`` after the gateway clock gets
  only the stateless SYSTEM checks (status, missing, range, clock): it must not
  break the runs, and a future stamp must not make every following reading late.
* **Persistence and hysteresis.** VALUE and PREDICT fire on the
  ``persist_minutes``-th consecutive deviating trusted reading and clear only
  after ``clear_minutes`` consecutive good ones; the readings in between stay
  flagged (their cause shows the in-band value against the band).
* **Gross outliers.** A trusted reading beyond its VALUE band by more than
  ``gross_factor`` times the band's own width (cause ``gross``) raises VALUE on
  that reading: persistence is there to sit out noise near the band, and with
  the band at least 5 robust sigmas from the slot's shape, one band width more
  is no noise of any plausible tail (a one-minute spike, a meter reading x4).
  It clears with hysteresis like any VALUE alert.
* **Clock faults and jumps.** :class:`ClockGuard` decides whether a reading
  is ahead of time (of the gateway clock, or jumping ahead of its sensor's
  timeline in a replay); such a reading is judged like a future one.
* **PREDICT's band.** With a forecast that carries the hour's P10/P90, a
  reading is judged by :func:`hourly_limits` (the hourly band with the
  criteria's minute noise of its slot); otherwise by the model's residual band,
  else the criteria's default band.
* Without criteria a sensor gets SYSTEM only; without an expectation, no PREDICT.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from core._codec import Recorded, declared, listed, spread, tuple_of
from core.criteria import BAND_K, RESIDUAL_K, Band, QuantityCriteria, SensorCriteria, slot_of
from core.types import (
    FLAG_NIGHT,
    FLAG_PREDICT,
    FLAG_SYSTEM,
    FLAG_VALUE,
    STATUS_COMM_ERROR,
    STATUS_FLOW_FAULT,
    STATUS_POWER_FAILURE,
    STATUS_PRESSURE_FAULT,
    EpochSeconds,
    Reading,
    SensorId,
)

METHODS = {"SYSTEM": FLAG_SYSTEM, "VALUE": FLAG_VALUE, "PREDICT": FLAG_PREDICT, "NIGHT": FLAG_NIGHT}

# Bits that make a quantity's value untrusted.
_FAULT_BITS = {
    "flow": STATUS_FLOW_FAULT | STATUS_POWER_FAILURE | STATUS_COMM_ERROR,
    "pressure": STATUS_PRESSURE_FAULT | STATUS_POWER_FAILURE | STATUS_COMM_ERROR,
}
# Bits reported as SYSTEM on a quantity: everything but the other quantity's fault bit.
_REPORTED_BITS = {
    "flow": ~STATUS_PRESSURE_FAULT & 0xFF,
    "pressure": ~STATUS_FLOW_FAULT & 0xFF,
}


@dataclass(frozen=True)
class SystemLimits:
    """Configured limits of the SYSTEM method (config section ``system``)."""

    flow_min: float = 0.0
    flow_max: float = 10000.0
    pressure_min: float = 0.0
    pressure_max: float = 20.0
    stuck_minutes: int = 30
    clock_ahead_s: int = 300
    silence_minutes: int = 5

    def range_of(self, quantity: str) -> tuple[float, float]:
        if quantity == "flow":
            return self.flow_min, self.flow_max
        return self.pressure_min, self.pressure_max


@declared()
@dataclass(frozen=True, slots=True)
class Cause(Recorded):
    """One finding: which method fired on which quantity, why, on what, against what.

    ``reason`` is one of ``status_bit`` (observed: the status byte),
    ``missing``, ``range`` (threshold ``[min, max]``), ``stuck`` (observed: minutes
    unchanged, threshold: ``stuck_minutes``), ``clock_ahead`` (observed: seconds
    ahead of the gateway clock, or in a replay of the sensor's own timeline: see
    :class:`ClockGuard`), ``silence``, ``band`` (threshold: the slot's
    ``[low, high]``), ``gross`` (threshold: the band widened each side by
    ``gross_factor`` band widths), ``forecast`` (threshold: ``[expected - band, expected + band]``,
    or with an hourly band the limits of :func:`hourly_limits`),
    ``mnf`` (from the night verdict).
    """

    method: str
    quantity: str
    reason: str
    observed: float | None
    threshold: float | list[float] | None
    criteria_version: int | None



@declared(codecs={"reading": spread(Reading), "causes": tuple_of(Cause)})
@dataclass(frozen=True, slots=True)
class Evaluation(Recorded):
    """The verdict on one reading: flags per quantity and every cause behind them.

    Stored per detection (:meth:`to_record`) as one map: the reading's fields,
    the flags, the causes.
    """

    reading: Reading
    flow_flags: int
    pressure_flags: int
    causes: tuple[Cause, ...]



@declared()
@dataclass(slots=True)
class Persistence(Recorded):
    """Run/active/clear counters of one persistent method (VALUE or PREDICT)."""

    run: int = 0  # consecutive deviating readings while inactive
    active: bool = False
    clear: int = 0  # consecutive good readings while active

    def step(self, deviates: bool, persist: int, clear_after: int, at_once: bool = False) -> bool:
        """Account one trusted reading; True while the method is firing.

        ``at_once``: the reading deviates grossly and fires without waiting for
        ``persist`` readings (it clears as any other).
        """
        if not self.active:
            self.run = self.run + 1 if deviates else 0
            if self.run >= persist or at_once:
                self.active, self.clear = True, 0
        elif deviates:
            self.clear = 0
        else:
            self.clear += 1
            if self.clear >= clear_after:
                self.active, self.run, self.clear = False, 0, 0
        return self.active


@declared(keys={"last_value": "last", "same_since": "since"},
          codecs={"value": listed(Persistence), "predict": listed(Persistence)})
@dataclass(slots=True)
class QuantityState(Recorded):
    """Per-quantity detection state of one sensor (persistences as ``[run, active, clear]``)."""

    last_value: float | None = None  # newest trusted-or-not present value (stuck check)
    same_since: int | None = None  # time of the first reading with last_value in a row
    value: Persistence = field(default_factory=Persistence)
    predict: Persistence = field(default_factory=Persistence)



@declared(codecs={"flow": QuantityState, "pressure": QuantityState})
@dataclass
class SensorState(Recorded):
    """Mutable detection state of one sensor; plain data via :meth:`to_record`."""

    last_time: EpochSeconds | None = None
    flow: QuantityState = field(default_factory=QuantityState)
    pressure: QuantityState = field(default_factory=QuantityState)
    night_active: bool = False
    night_cause: dict[str, Any] | None = None

    def quantity(self, name: str) -> QuantityState:
        return self.flow if name == "flow" else self.pressure



@dataclass(frozen=True, slots=True)
class Expectation:
    """The forecast for one minute and the band PREDICT allows around it (None = none).

    ``flow_hourly`` (and pressure's) is the forecast's P10 and P90 of the hourly
    mean at that minute, when the forecast carries them: PREDICT then judges by
    :func:`hourly_limits` instead of the fixed ``flow_band``.
    """

    flow: float | None
    pressure: float | None
    flow_band: float | None
    pressure_band: float | None
    flow_hourly: tuple[float, float] | None = None
    pressure_hourly: tuple[float, float] | None = None

    def of(self, quantity: str) -> tuple[float | None, float | None]:
        if quantity == "flow":
            return self.flow, self.flow_band
        return self.pressure, self.pressure_band


# What _judge gets of an Expectation per quantity: the forecast, its band, its hourly P10/P90.
_Expected = tuple[float | None, float | None, tuple[float, float] | None]
# The P10-P90 interval of a normal distribution spans +-Z90 sigmas.
Z90 = 1.2815515655446004


def hourly_limits(expected: float, p10: float, p90: float, noise: float) -> tuple[float, float]:
    """PREDICT's ``[low, high]`` for a minute reading from the hourly band around it.

    The band is that of an hourly mean; a minute reading also carries its noise
    within the hour. Each side is ``RESIDUAL_K`` sigmas (the margin of the fixed
    band too) of both together: the hourly sigma of that side, ``(p90 -
    expected) / Z90`` above and ``(expected - p10) / Z90`` below (flow's bands
    are skewed), and the minute ``noise`` sigma, added in quadrature. A band that
    does not hold the forecast (crossed quantiles) counts as no band on that side.
    """
    above = max(p90 - expected, 0.0) / Z90
    below = max(expected - p10, 0.0) / Z90
    return (expected - RESIDUAL_K * math.hypot(below, noise),
            expected + RESIDUAL_K * math.hypot(above, noise))


def minute_noise(band: Band) -> float:
    """The minute noise the criteria allow for an hour of day: the VALUE band's
    half-width in its own widening unit (``BAND_K`` robust sigmas of the readings
    around the hour's shape), so also a tenth of the hour's own range at most."""
    return (band.high - band.low) / (2.0 * BAND_K)


def evaluate(
    reading: Reading,
    state: SensorState,
    *,
    limits: SystemLimits,
    criteria: SensorCriteria | None,
    expectation: Expectation | None,
    now: EpochSeconds,
    tz: ZoneInfo,
    persist_minutes: int = 3,
    clear_minutes: int = 5,
    gross_factor: float = 1.0,
) -> Evaluation:
    """Judge one reading; updates ``state`` for in-order, non-future readings.

    ``gross_factor`` > 0: a reading beyond its VALUE band by more than that many
    band widths raises VALUE at once (0: never without ``persist_minutes``).
    """
    causes: list[Cause] = []
    t = reading.time
    ahead = t - now
    clock_ahead = float(ahead) if ahead > limits.clock_ahead_s else None
    in_order = clock_ahead is None and (state.last_time is None or t > state.last_time)
    # Everything per reading that both quantities share is looked up once (hot path).
    if criteria is not None:
        version: int | None = criteria.version
        slot = slot_of(t, tz)
        qc_flow, qc_pressure = criteria.flow, criteria.pressure
    else:
        version, slot, qc_flow, qc_pressure = None, 0, None, None
    if expectation is not None:
        exp_flow: _Expected = (expectation.flow, expectation.flow_band, expectation.flow_hourly)
        exp_pressure: _Expected = (expectation.pressure, expectation.pressure_band,
                                   expectation.pressure_hourly)
    else:
        exp_flow = exp_pressure = (None, None, None)
    judged = (reading, causes, limits, version, slot, in_order, clock_ahead,
              persist_minutes, clear_minutes, gross_factor)
    flow_flags = _judge("flow", reading.flow, state.flow, qc_flow, exp_flow, *judged)
    pressure_flags = _judge(
        "pressure", reading.pressure, state.pressure, qc_pressure, exp_pressure, *judged
    )
    if state.night_active:
        flow_flags |= FLAG_NIGHT
        causes.append(_night_cause(state.night_cause))
    if in_order:
        state.last_time = t
    return Evaluation(reading, flow_flags, pressure_flags, tuple(causes))


def _judge(
    quantity: str,
    value: float | None,
    qs: QuantityState,
    qc: QuantityCriteria | None,
    expected: _Expected,
    reading: Reading,
    causes: list[Cause],
    limits: SystemLimits,
    version: int | None,
    slot: int,
    in_order: bool,
    clock_ahead: float | None,
    persist: int,
    clear_after: int,
    gross_factor: float,
) -> int:
    """SYSTEM, VALUE and PREDICT for one quantity; appends causes, returns its flags."""
    flags = 0
    trusted = True
    status = reading.status
    if status & _REPORTED_BITS[quantity]:
        flags = _system(causes, quantity, "status_bit", float(status), None, version)
        trusted = not status & _FAULT_BITS[quantity]
    missing = value is None or math.isnan(value)
    if missing:
        flags = _system(causes, quantity, "missing", None, None, version)
        trusted = False
    else:
        lo, hi = limits.range_of(quantity)
        if qc is not None:  # criteria may tighten the configured range, never widen it
            lo, hi = max(lo, qc.physical_min), min(hi, qc.physical_max)
        if not lo <= value <= hi:  # type: ignore[operator]
            flags = _system(causes, quantity, "range", value, [lo, hi], version)
            trusted = False
    if clock_ahead is not None:
        flags = _system(causes, quantity, "clock_ahead", clock_ahead,
                        float(limits.clock_ahead_s), version)
    if not in_order:
        return flags

    t = reading.time
    if missing:
        qs.last_value, qs.same_since = None, None
    elif value == qs.last_value and qs.same_since is not None:
        unchanged_s = t - qs.same_since
        if unchanged_s >= limits.stuck_minutes * 60 and not (quantity == "flow" and value == 0):
            flags = _system(causes, quantity, "stuck", unchanged_s / 60,
                            float(limits.stuck_minutes), version)
            trusted = False
    else:
        qs.last_value, qs.same_since = value, t

    if not trusted:
        return flags
    assert value is not None
    if qc is not None:
        band = qc.bands[slot]
        low, high = band.low, band.high
        outside = not low <= value <= high
        # A gross outlier (beyond the band by more than gross_factor band widths)
        # is no noise that persistence must sit out: it fires on its first reading.
        margin = gross_factor * (high - low)
        gross = (outside and gross_factor > 0.0 and not qs.value.active
                 and not low - margin <= value <= high + margin)
        if qs.value.step(outside, persist, clear_after, gross):
            flags |= FLAG_VALUE
            if gross:
                causes.append(Cause("VALUE", quantity, "gross", value,
                                    [low - margin, high + margin], version))
            else:
                causes.append(Cause("VALUE", quantity, "band", value, [low, high], version))
    forecast, allowed, hourly = expected
    if forecast is None or math.isnan(forecast):
        return flags
    # PREDICT needs a forecast and a band: the hourly band with the criteria's
    # minute noise of the slot, else the model's own band (so a sensor without
    # criteria yet is still judged against its model), else the criteria's default.
    if hourly is not None and qc is not None:
        low, high = hourly_limits(forecast, hourly[0], hourly[1], minute_noise(qc.bands[slot]))
    else:
        if allowed is None and qc is not None:
            allowed = qc.residual_band
        if allowed is None:
            return flags
        low, high = forecast - allowed, forecast + allowed
    if qs.predict.step(not low <= value <= high, persist, clear_after):
        flags |= FLAG_PREDICT
        causes.append(Cause("PREDICT", quantity, "forecast", value, [low, high], version))
    return flags


def _system(
    causes: list[Cause], quantity: str, reason: str, observed: float | None,
    threshold: float | list[float] | None, version: int | None,
) -> int:
    causes.append(Cause("SYSTEM", quantity, reason, observed, threshold, version))
    return FLAG_SYSTEM


def _night_cause(d: Mapping[str, Any] | None) -> Cause:
    """The NIGHT cause from the verdict's dict (keys observed, threshold, criteria_version)."""
    d = d or {}
    threshold = d.get("threshold")
    return Cause(
        "NIGHT", "flow", "mnf", d.get("observed"),
        list(threshold) if isinstance(threshold, (list, tuple)) else threshold,
        d.get("criteria_version"),
    )


def apply_night_verdict(state: SensorState, leak: bool, cause: dict[str, Any] | None) -> None:
    """Carry a night's verdict: NIGHT on every flow evaluation until a night clears it."""
    state.night_active = leak
    state.night_cause = dict(cause) if (leak and cause is not None) else None


# -- clock faults and jumps ------------------------------------------------------

# What ClockGuard.admit says of a reading (see ClockGuard).
IN_TIME = "in_time"
AHEAD = "ahead"
JUMP = "jump"
CONFIRMED = "confirmed"


@dataclass(frozen=True, slots=True)
class Admission:
    """:meth:`ClockGuard.admit`'s verdict on one reading.

    ``ahead_s`` is how far the reading is ahead (of the gateway clock for
    ``AHEAD``, of the sensor's own timeline for ``JUMP``); ``released`` the held
    items this ``CONFIRMED`` or ``IN_TIME`` reading releases (oldest first), to be
    taken in before it; ``dropped`` how many held items it showed to be a glitch.
    """

    verdict: str
    ahead_s: float = 0.0
    released: tuple[Any, ...] = ()
    dropped: int = 0


_ADMITTED = Admission(IN_TIME)


class ClockGuard:
    """Keeps readings stamped ahead of time from moving a sensor's event time.

    Two rules, each with the tolerance ``clock_ahead_s`` (``system.clock_ahead_minutes``):

    * **Ahead of the gateway clock** (``AHEAD``): a clock fault, live. Never
      taken in; a later reading does not change that.
    * **A jump ahead of the sensor's timeline** (``JUMP``): a reading stamped more
      than ``clock_ahead_s`` after where the sensor's timeline stands now: its
      newest reading taken in, carried forward by the gateway clock since (so a
      sensor back after an outage, live, is not a jump), or the site's newest if
      that is further (a sensor silent while the others went on is not a jump
      in a replay either). In real time this
      coincides with the first rule; in a replay (readings from the past, the
      gateway clock far ahead of them) it is the only sign of a clock fault. A
      sensor back after an outage in a replay looks the same, so a jump is held
      (the caller keeps its item with :meth:`hold`) until **confirmed**: the
      sensor's readings run on from it (each at most ``clock_ahead_s`` after the
      one before) for ``clock_ahead_s``; that reading is ``CONFIRMED`` and every
      held item is released, oldest first. A clock glitch of the RTU lasts a few
      minutes and falls back; a sensor back after an outage goes on from where
      it is.

    Readings ahead of the gateway clock are evidence only when they keep
    coming: a sensor's run of them (each at most ``clock_ahead_s`` after the one
    before) that spans ``clock_ahead_s`` says the gateway clock is behind
    (:meth:`ahead_until`); any other reading of the sensor ends its run.

    A reading shows every held one stamped at or after it to be a glitch (it
    was stamped too far): those are dropped. So is the whole jump when the old
    timeline goes on; held readings stamped before such a reading (the gateway
    clock moved on meanwhile) are released with it. Readings not newer than the
    sensor's newest taken in (late ones) are ``IN_TIME`` and change nothing.
    State is plain data (:meth:`state`), held items included, so the caller
    persists it with its offset.
    """

    def __init__(self, clock_ahead_s: int, state: Mapping[str, Any] | None = None) -> None:
        self.clock_ahead_s = clock_ahead_s
        # sensor -> [newest time taken in, gateway clock then]
        self._newest: dict[str, list[int]] = {}
        # sensor -> [times held (ascending), their items]
        self._held: dict[str, list[list[Any]]] = {}
        # The site's newest time taken in and the gateway clock then.
        self._site = [int(x) for x in (state or {}).get("site", (0, 0))]
        # sensor -> [first, last] stamp of its current run of readings ahead of the gateway clock
        self._ahead: dict[str, list[int]] = {
            sensor: [int(first), int(last)]
            for sensor, (first, last) in (state or {}).get("ahead", {}).items()}
        for sensor, (newest, at, held) in (state or {}).get("sensors", {}).items():
            self._newest[sensor] = [int(newest), int(at)]
            if held is not None:
                self._held[sensor] = [[int(t) for t in held[0]], list(held[1])]

    def state(self) -> dict[str, Any]:
        return {"sensors": {s: [newest, at, self._held.get(s)]
                            for s, (newest, at) in self._newest.items()},
                "site": list(self._site),
                "ahead": {s: list(run) for s, run in self._ahead.items()}}

    def ahead_until(self) -> int | None:
        """The newest stamp of a run of readings ahead of the gateway clock that spans
        ``clock_ahead_s`` (the clock is behind them), or None when there is none."""
        confirmed = [last for first, last in self._ahead.values()
                     if last - first >= self.clock_ahead_s]
        return max(confirmed) if confirmed else None

    def admit(self, sensor: str, t: int, now: int) -> Admission:
        """Judge a reading of ``sensor`` stamped ``t`` arriving at gateway time ``now``.

        After a ``JUMP`` the caller must :meth:`hold` the reading's item.
        """
        limit = self.clock_ahead_s
        if t - now > limit:
            self._note_ahead(sensor, t)
            return Admission(AHEAD, float(t - now))
        if self._ahead:
            self._ahead.pop(sensor, None)
        site = self._site
        newest = self._newest.get(sensor)
        if newest is None:
            self._newest[sensor] = [t, now]
            if t > site[0]:
                site[0], site[1] = t, now
            return _ADMITTED
        last, at = newest
        if t <= last:
            return _ADMITTED  # late: nothing moves
        # Where the sensor's timeline, or the site's, stands now (written out:
        # this runs for every reading).
        reference = last + now - at if now > at else last
        site_t, site_at = site
        if now > site_at:
            site_t += now - site_at
        if site_t > reference:
            reference = site_t
        jump = t - reference
        held = self._held.get(sensor)
        if held is None:
            if jump <= limit:  # the common case: the next reading of the timeline
                newest[0], newest[1] = t, now
                if t > site[0]:
                    site[0], site[1] = t, now
                return _ADMITTED
            held = self._held[sensor] = [[], []]
        times, items = held
        cut = bisect.bisect_left(times, t)
        dropped = len(times) - cut  # held readings stamped at or after t: too far
        del times[cut:], items[cut:]
        if jump <= limit:  # the old timeline goes on: the jump was a glitch
            verdict = IN_TIME
        elif t - _run_start(times, t, limit) >= limit:
            verdict = CONFIRMED
        else:
            times.append(t)
            return Admission(JUMP, float(jump), dropped=dropped)
        del self._held[sensor]
        newest[0], newest[1] = t, now
        if t > site[0]:
            site[0], site[1] = t, now
        return Admission(verdict, released=tuple(items), dropped=dropped)

    def _note_ahead(self, sensor: str, t: int) -> None:
        run = self._ahead.get(sensor)
        if run is None or t - run[1] > self.clock_ahead_s:
            self._ahead[sensor] = [t, t]
        elif t > run[1]:
            run[1] = t

    def hold(self, sensor: str, item: Any) -> None:
        """Keep ``item`` (plain data) for the reading :meth:`admit` just called a jump."""
        self._held[sensor][1].append(item)


def _run_start(times: list[int], t: int, limit: int) -> int:
    """First time of the run ending at ``t`` in which each step is at most ``limit``."""
    start = t
    for earlier in reversed(times):
        if start - earlier > limit:
            break
        start = earlier
    return start


def silence_alerts(
    last_seen: Mapping[SensorId, EpochSeconds],
    last_alerted: MutableMapping[SensorId, EpochSeconds],
    now: EpochSeconds,
    silence_minutes: int,
    max_per_sensor: int = 10,
) -> list[tuple[SensorId, EpochSeconds]]:
    """Minutes for which a silent sensor is due a SYSTEM ``$ALR`` with empty values.

    A whole minute ``m`` (epoch multiple of 60) of sensor ``s`` is due when
    ``m - last_seen[s] >= silence_minutes`` minutes, ``m <= now``, and ``m`` is
    after ``last_alerted[s]``. At most ``max_per_sensor`` minutes per sensor per
    call, the newest ones (after an outage, the link gets the current picture, not
    a flood of the past). ``last_alerted`` is updated. Sorted by sensor, then time.
    """
    out: list[tuple[SensorId, EpochSeconds]] = []
    newest_minute = (int(now) // 60) * 60
    for sensor in sorted(last_seen):
        first_due = -(-(int(last_seen[sensor]) + silence_minutes * 60) // 60) * 60
        previous = last_alerted.get(sensor)
        if previous is not None:
            first_due = max(first_due, (int(previous) // 60 + 1) * 60)
        if first_due > newest_minute:
            continue
        first_due = max(first_due, newest_minute - (max_per_sensor - 1) * 60)
        out.extend(
            (sensor, EpochSeconds(m)) for m in range(first_due, newest_minute + 1, 60)
        )
        last_alerted[sensor] = EpochSeconds(newest_minute)
    return out
