"""Minimum night flow (MNF): 10-minute flow means inside the night window, per night.

The night window is local wall-clock time (default 22:00-05:00 in the site's
time zone; an operator may narrow it, e.g. 02:00-04:00). :class:`NightWindow`
turns it into UTC bounds per night, :class:`NightFlowAggregator` folds the
readings of every sensor into blocks and nights in event time, and
:mod:`core.night_model` judges each closed night (the NIGHT detection method).

Decisions an operator should know:

* **Nights are named by the local date on which they start** (the night of
  22:00 on 1 March to 05:00 on 2 March is night 1 March). A window with
  ``start < end`` lies within one day.
* **Boundaries are wall-clock times resolved per night with zoneinfo**, so a
  22:00-05:00 night lasts 6 h on the Central-European spring-forward night and
  8 h on the fall-back night. A boundary is the first instant at which the local
  clock shows that time or jumps past it: a start or end inside a
  spring-forward gap falls on the jump, one inside the repeated fall-back hour
  on its first occurrence.
* **Blocks** are aligned to local wall-clock multiples of ``block_minutes``
  counted from the window start. A block starts whenever the clock shows (or
  jumps past) such a multiple, so in the repeated fall-back hour the clock
  starts new blocks again and no block ever spans non-contiguous time.
* **Event time.** A block is closed by the first reading of that sensor at or
  after its end (as DESIGN.md has it: a reading crossing a block boundary closes
  the block); the night, with its last block, by the first reading at or after
  the window end, however long the sensor was silent before. Until then they stay
  open in the aggregator's state, which the actor persists with its offset.
* **Measured readings.** A reading whose flow is missing, not finite or flagged
  untrusted by its status (flow fault, power failure, RTU communication error:
  the same bits that make detection distrust the value) is "not measured": it
  advances time (it can close blocks and nights) but is not averaged.
* **Incomplete blocks.** A block with fewer than ``min_readings`` measured
  readings is stored as incomplete, with no mean: two values are not a
  10-minute mean. The night's MNF is the lowest mean of ``mnf_blocks``
  contiguous complete blocks (default 3: the quietest half hour; one block's
  minimum picks the luckiest ten minutes of the night's noise, and is biased
  and noisier), the lowest complete block when the night has no such run
  (gaps), or ``None`` when it has no complete block (the NIGHT verdict then
  stays as it was).
* **Late readings.** A reading older than the sensor's open block (or, with no
  night open, older than the sensor's newest reading) belongs to a block or
  night already closed and handed on; it is ignored and produces nothing.
  Readings out of order *within* the open block are averaged normally.
* **Readings stamped ahead.** Given the gateway clock (``now``), a reading
  stamped more than ``clock_ahead_s`` after it (an RTU clock fault) neither
  enters nor closes a block or night: it is dropped, as it would otherwise close
  the night hours early and judge it on part of its blocks. In a replay, a reading
  jumping ahead of its sensor's timeline is held until the next readings confirm
  it (a sensor back after an outage) and dropped when they do not (a glitch):
  the same :class:`core.detection.ClockGuard` the Detector uses.
"""

from __future__ import annotations

import datetime
import functools
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from core._codec import ISO_DATE, Recorded, declared
from core.detection import AHEAD, JUMP, ClockGuard
from core.localtime import local_datetime
from core.types import (
    STATUS_COMM_ERROR,
    STATUS_FLOW_FAULT,
    STATUS_POWER_FAILURE,
    EpochSeconds,
    Reading,
    SensorId,
)

log = logging.getLogger(__name__)

STATE_VERSION = 1

# Status bits that make a flow value untrusted (as in core.detection).
_FLOW_FAULT_BITS = STATUS_FLOW_FAULT | STATUS_POWER_FAILURE | STATUS_COMM_ERROR

# A block is a few hours long at most, so it can hold at most a couple of
# clock changes; this bounds the walk back over them.
_MAX_CLOCK_CHANGES = 8

# A day's mean flow needs 20 hours of one-minute readings: a day missing its
# morning peak would look like a leak's opposite, one missing the night like one.
DAY_MIN_READINGS = 1200

_ONE_SECOND = datetime.timedelta(seconds=1)
_ONE_DAY = datetime.timedelta(days=1)


# -- the window ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NightWindow:
    """The local night window and its block layout.

    ``start``/``end`` are naive local wall-clock times; the window crosses
    midnight when ``end <= start``. ``min_readings`` is how many measured
    readings make a block complete (readings come once a minute, so it cannot
    exceed ``block_minutes``).
    """

    start: datetime.time
    end: datetime.time
    tz: ZoneInfo
    block_minutes: int = 10
    min_readings: int = 5
    mnf_blocks: int = 1

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if not isinstance(value, datetime.time) or value.tzinfo is not None:
                raise TypeError(f"night window {name} must be a naive datetime.time: {value!r}")
        if self.start == self.end:
            raise ValueError(f"night window start and end are both {self.start}")
        if not isinstance(self.tz, ZoneInfo):
            raise TypeError(f"night window tz must be a ZoneInfo: {self.tz!r}")
        if not 1 <= self.block_minutes <= 24 * 60:
            raise ValueError(f"block_minutes out of range 1..1440: {self.block_minutes}")
        if not 1 <= self.mnf_blocks <= 24 * 60 // self.block_minutes:
            raise ValueError(f"mnf_blocks out of range 1..{24 * 60 // self.block_minutes}: "
                             f"{self.mnf_blocks}")
        if not 1 <= self.min_readings <= self.block_minutes:
            raise ValueError(
                f"min_readings must be in 1..block_minutes ({self.block_minutes}): "
                f"{self.min_readings}"
            )

    @property
    def crosses_midnight(self) -> bool:
        return self.end <= self.start

    def bounds(self, night: datetime.date) -> tuple[EpochSeconds, EpochSeconds]:
        """UTC ``[start, end)`` of the night that starts on local date ``night``."""
        return _bounds(self, night)

    def night_of(self, t: EpochSeconds) -> datetime.date | None:
        """The local date on which the night containing ``t`` started; None outside."""
        # Every reading asks: answer from the span the previous answer holds for.
        memo = _night_memo
        if memo is not None and memo[0] is self and memo[1] <= t < memo[2]:
            return memo[3]
        today = local_datetime(t, self.tz).date()
        # Only the night starting today or (for a window crossing midnight) the one
        # that started yesterday can contain t.
        found = None
        edges = []
        for night in (today, today - _ONE_DAY):
            start, end = _bounds(self, night)
            edges += (start, end)
            if found is None and start <= t < end:
                found = night
        _remember_night(self, int(t), edges, found)
        return found

    def block_start(self, t: EpochSeconds) -> EpochSeconds:
        """UTC start of the block containing ``t``; ValueError outside the window."""
        night = self.night_of(t)
        if night is None:
            raise ValueError(f"{t} is outside the night window")
        return self._block_start(night, t)

    def _block_start(self, night: datetime.date, t: int) -> EpochSeconds:
        memo = _block_memo
        if (memo is not None and memo[0] is self and memo[1] == night
                and memo[2] <= t < memo[3]):
            return memo[4]
        night_start, _ = _bounds(self, night)
        asked = t
        origin = datetime.datetime.combine(night, self.start)
        step = datetime.timedelta(minutes=self.block_minutes)
        for _ in range(_MAX_CLOCK_CHANGES):
            if t <= night_start:
                break
            local = local_datetime(t, self.tz)
            wall = local.replace(tzinfo=None)
            aligned = origin + ((wall - origin) // step) * step
            # Where the clock showed `aligned`, if the offset did not change since.
            candidate = t - int((wall - aligned).total_seconds())
            offset = local.utcoffset()
            if _utcoffset(candidate, self.tz) == offset:
                start = EpochSeconds(max(candidate, night_start))
                if t == asked:  # not after walking back over a clock change
                    _remember_block(self, night, t, candidate, start)
                return start
            # The clock changed in (candidate, t]; after the change it never showed
            # `aligned`. The block starts at the change if the clock jumped past
            # `aligned` there, else where it showed the last multiple before it.
            change = _clock_change(candidate, t, offset, self.tz)
            before = _wall(change - 1, self.tz) + _ONE_SECOND
            if aligned > before:
                return EpochSeconds(max(change, night_start))
            t = change - 1
        return night_start


# The last answers of NightWindow.night_of and ._block_start with the span of
# time (UTC [lo, hi)) over which they are known to hold:
# (window, lo, hi, night) and (window, night, lo, hi, block start). A reading
# a minute after the previous one is answered without zoneinfo. Only spans in
# which the zone's UTC offset is constant are remembered, so that the answer
# follows from arithmetic on epoch seconds.
_night_memo: tuple[NightWindow, int, int, datetime.date | None] | None = None
_block_memo: tuple[NightWindow, datetime.date, int, int, EpochSeconds] | None = None


def _steady_hour(t: int, tz: ZoneInfo) -> tuple[int, int, int] | None:
    """UTC ``[start, end)`` of the hour around ``t`` and its offset (s), if constant."""
    start = t - t % 3600
    offset = _utcoffset(start, tz)
    if offset is None or _utcoffset(start + 3599, tz) != offset:
        return None
    return start, start + 3600, int(offset.total_seconds())


def _remember_night(window: NightWindow, t: int, edges: list[int],
                    night: datetime.date | None) -> None:
    global _night_memo
    hour = _steady_hour(t, window.tz)
    if hour is None:
        return
    lo, hi, offset = hour
    # night_of looks at the nights of t's local date: stay within that date ...
    midnight = t - (t + offset) % 86400
    lo, hi = max(lo, midnight), min(hi, midnight + 86400)
    # ... and on the same side of each of those nights' bounds as t.
    for edge in edges:
        if edge <= t:
            lo = max(lo, edge)
        else:
            hi = min(hi, edge)
    _night_memo = (window, lo, hi, night)


def _remember_block(window: NightWindow, night: datetime.date, t: int, candidate: int,
                    start: EpochSeconds) -> None:
    """``start`` answers every t' of t's steady hour whose wall clock shows the same block.

    ``candidate`` is where the clock showed t's aligned block time. With a
    constant offset, every t' in ``[candidate, candidate + block)`` has the same
    aligned wall time as t, hence the same candidate and the same answer (also
    when t' is before the night's start: both are then clamped to it).
    """
    global _block_memo
    hour = _steady_hour(t, window.tz)
    if hour is None:
        return
    lo = max(hour[0], candidate)
    hi = min(hour[1], candidate + window.block_minutes * 60)
    if lo <= t < hi:
        _block_memo = (window, night, lo, hi, start)


@functools.lru_cache(maxsize=256)
def _bounds(window: NightWindow, night: datetime.date) -> tuple[EpochSeconds, EpochSeconds]:
    # Cached: every reading asks for its night's bounds, which change once a day.
    end_day = night + _ONE_DAY if window.crosses_midnight else night
    return (
        _first_instant_at(datetime.datetime.combine(night, window.start), window.tz),
        _first_instant_at(datetime.datetime.combine(end_day, window.end), window.tz),
    )


def _wall(t: int, tz: ZoneInfo) -> datetime.datetime:
    """Naive local wall-clock time of UTC epoch ``t``."""
    return local_datetime(t, tz).replace(tzinfo=None)


def _utcoffset(t: int, tz: ZoneInfo) -> datetime.timedelta | None:
    return local_datetime(t, tz).utcoffset()


def _first_instant_at(wall: datetime.datetime, tz: ZoneInfo) -> EpochSeconds:
    """The first instant at which the local clock shows ``wall`` or jumps past it."""
    # fold=0 is the first occurrence of a repeated wall time.
    first = int(wall.replace(tzinfo=tz, fold=0).timestamp())
    if _wall(first, tz) == wall:
        return EpochSeconds(first)
    # `wall` is skipped by a forward jump: the two folds map it to either side of
    # the jump; find the jump (the clock is monotonic on each side).
    other = int(wall.replace(tzinfo=tz, fold=1).timestamp())
    lo, hi = min(first, other), max(first, other)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _wall(mid, tz) >= wall:
            hi = mid
        else:
            lo = mid
    return EpochSeconds(hi)


def _clock_change(
    lo: int, hi: int, offset: datetime.timedelta | None, tz: ZoneInfo
) -> int:
    """First instant in ``(lo, hi]`` whose UTC offset is ``offset`` (``hi`` has it)."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _utcoffset(mid, tz) == offset:
            hi = mid
        else:
            lo = mid
    return hi


# -- what the aggregator hands on ---------------------------------------------------


@declared(codecs={"night": ISO_DATE})
@dataclass(frozen=True, slots=True)
class NightBlock(Recorded):
    """One closed block of one sensor's night.

    ``readings`` counts the measured readings; ``mean`` is their mean flow (m3/h)
    when the block is ``complete`` (at least ``min_readings`` of them), else None.
    """

    sensor: SensorId
    night: datetime.date
    start: EpochSeconds
    readings: int
    mean: float | None
    complete: bool



@declared(codecs={"night": ISO_DATE})
@dataclass(frozen=True, slots=True)
class NightSummary(Recorded):
    """One closed night of one sensor.

    ``mnf`` is the lowest mean of ``mnf_blocks`` contiguous complete blocks (the
    lowest single one without such a run; None when no block was complete),
    ``mnf_block_start`` the start of the first of them; ``blocks`` counts the blocks in which
    the sensor reported at all, ``complete_blocks`` the complete ones.
    ``day_mean`` is the mean measured flow since the previous night closed (the
    day and this night: the NIGHT model's second evidence), None with fewer
    than :data:`DAY_MIN_READINGS` readings.
    """

    sensor: SensorId
    night: datetime.date
    mnf: float | None
    mnf_block_start: EpochSeconds | None
    blocks: int
    complete_blocks: int
    day_mean: float | None = None


# -- the aggregator -----------------------------------------------------------------


@declared(codecs={"night": ISO_DATE})
@dataclass(slots=True)
class _OpenNight(Recorded):
    """A sensor's night in progress, with its open block (plain mutable data)."""

    night: datetime.date
    block: int  # start of the open block
    n: int = 0  # measured readings in the open block
    total: float = 0.0  # their sum
    blocks: int = 0  # closed blocks so far
    complete: int = 0  # ... of which complete
    mnf: float | None = None
    mnf_block: int | None = None
    # The latest contiguous complete blocks, [start, mean] (at most mnf_blocks),
    # and the lowest single block mean (the MNF of a night with no such run).
    run: list[list[Any]] = field(default_factory=list)
    lowest: float | None = None
    lowest_block: int | None = None


class NightFlowAggregator:
    """Folds every sensor's readings into night blocks and nights, in event time.

    :meth:`add` returns what a reading closed; :meth:`state` is small plain data
    that the NightFlow actor stores with its journal offset, so that an
    aggregator rebuilt from it continues exactly where the old one stopped. A
    state saved under a different window is not resumed (its open nights would
    not fit the new blocks): the open nights are dropped with a warning.
    """

    def __init__(self, window: NightWindow, state: Mapping[str, Any] | None = None,
                 *, clock_ahead_s: int = 300) -> None:
        self.window = window
        self._open: dict[SensorId, _OpenNight] = {}
        # Readings of a sensor older than this are late (see the module docstring).
        self._until: dict[SensorId, int] = {}
        # Measured readings since the sensor's previous night closed: [count, sum].
        self._day: dict[SensorId, list[float]] = {}
        self.clock = ClockGuard(clock_ahead_s, (state or {}).get("clock"))
        if state:
            self._restore(state)

    def add(self, reading: Reading,
            now: int | None = None) -> tuple[list[NightBlock], list[NightSummary]]:
        """Fold in one reading arriving at gateway time ``now``; return the blocks
        and nights it closed.

        A late reading (one belonging to a block or night already closed) is
        ignored and returns nothing; so is one stamped ahead of time (see the
        module docstring; not checked when ``now`` is None).
        """
        if now is None:
            return self._add(reading)
        admission = self.clock.admit(reading.sensor, reading.time, now)
        verdict = admission.verdict
        if verdict is AHEAD:
            return [], []
        if verdict is JUMP:
            r = reading
            self.clock.hold(r.sensor, [r.time, r.flow, r.pressure, r.status])
            return [], []
        if not admission.released:
            return self._add(reading)
        blocks: list[NightBlock] = []
        nights: list[NightSummary] = []
        for t, flow, pressure, status in admission.released:
            closed = self._add(Reading(reading.sensor, EpochSeconds(t), flow, pressure, status))
            blocks += closed[0]
            nights += closed[1]
        closed = self._add(reading)
        return blocks + closed[0], nights + closed[1]

    def _add(self, reading: Reading) -> tuple[list[NightBlock], list[NightSummary]]:
        sensor, t = reading.sensor, reading.time
        until = self._until.get(sensor)
        if until is not None and t < until:
            return [], []
        blocks: list[NightBlock] = []
        nights: list[NightSummary] = []
        night = self.window.night_of(t)
        current = self._open.get(sensor)
        if current is not None and current.night != night:
            # t is at or after the end of the open night: it closes the night.
            blocks.append(self._close_block(sensor, current))
            day = self._day.pop(sensor, None)
            nights.append(self._summary(sensor, current, day))
            del self._open[sensor]
            current = None
        flow = reading.flow
        measured = (flow is not None and math.isfinite(flow)
                    and not reading.status & _FLOW_FAULT_BITS)
        if measured:
            day = self._day.get(sensor)
            if day is None:
                self._day[sensor] = [1, flow]
            else:
                day[0] += 1
                day[1] += flow
        if night is None:
            self._until[sensor] = t
            return blocks, nights
        block = self.window._block_start(night, t)
        if current is None:
            current = self._open[sensor] = _OpenNight(night, block)
        elif block != current.block:
            blocks.append(self._close_block(sensor, current))
            current.block = block
        self._until[sensor] = block
        if measured:
            current.n += 1
            current.total += flow
        return blocks, nights

    def state(self) -> dict[str, Any]:
        """The aggregator's state as msgpack-able plain data."""
        sensors: dict[str, Any] = {}
        for sensor, until in self._until.items():
            current = self._open.get(sensor)
            sensors[sensor] = {
                "until": until, "open": current.to_record() if current is not None else None,
                "day": self._day.get(sensor),
            }
        return {"version": STATE_VERSION, "window": _window_key(self.window), "sensors": sensors,
                "clock": self.clock.state()}

    def _restore(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unknown night-flow state version: {state.get('version')!r}")
        same_window = state.get("window") == _window_key(self.window)
        for sensor, entry in state["sensors"].items():
            sid = SensorId(str(sensor))
            self._until[sid] = int(entry["until"])
            if entry.get("day"):
                self._day[sid] = [int(entry["day"][0]), float(entry["day"][1])]
            if entry.get("open") is not None:
                if same_window:
                    self._open[sid] = _OpenNight.from_record(entry["open"])
                else:
                    log.warning("night window changed: dropping sensor %s's open night %s",
                                sid, entry["open"].get("night"))

    def _close_block(self, sensor: SensorId, current: _OpenNight) -> NightBlock:
        complete = current.n >= self.window.min_readings
        mean = current.total / current.n if complete else None
        current.blocks += 1
        if mean is not None:
            current.complete += 1
            self._fold_mnf(current, mean)
        else:
            current.run = []
        block = NightBlock(
            sensor, current.night, EpochSeconds(current.block), current.n, mean, complete
        )
        current.n, current.total = 0, 0.0
        return block

    def _fold_mnf(self, current: _OpenNight, mean: float) -> None:
        """The MNF is the lowest mean of ``mnf_blocks`` contiguous complete blocks: one
        block's minimum picks the luckiest ten minutes of the night's noise."""
        if current.lowest is None or mean < current.lowest:
            current.lowest, current.lowest_block = mean, current.block
        step = self.window.block_minutes * 60
        if current.run and current.block - current.run[-1][0] > step:
            current.run = []  # a gap without readings: not contiguous
        current.run = (current.run + [[current.block, mean]])[-self.window.mnf_blocks:]
        if len(current.run) == self.window.mnf_blocks:
            run_mean = sum(m for _, m in current.run) / len(current.run)
            if current.mnf is None or run_mean < current.mnf:
                current.mnf, current.mnf_block = run_mean, current.run[0][0]

    @staticmethod
    def _summary(sensor: SensorId, current: _OpenNight, day: list[float] | None) -> NightSummary:
        # A night with no run of mnf_blocks contiguous complete blocks (gaps) falls
        # back on its lowest complete block.
        mnf, block = ((current.mnf, current.mnf_block) if current.mnf is not None
                      else (current.lowest, current.lowest_block))
        return NightSummary(
            sensor, current.night, mnf,
            None if block is None else EpochSeconds(block),
            current.blocks, current.complete,
            day[1] / day[0] if day and day[0] >= DAY_MIN_READINGS else None,
        )


def _window_key(window: NightWindow) -> list[Any]:
    return [
        window.start.isoformat(), window.end.isoformat(), str(window.tz),
        window.block_minutes, window.min_readings,
    ]
