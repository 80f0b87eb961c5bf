"""The NIGHT engine: readings in, closed nights and their verdicts out.

:class:`NightEngine` is what the NightFlow actor decides with (the night-block
aggregation of :mod:`core.night_flow` and the NIGHT model of
:mod:`core.night_model`, with one state to persist), and :func:`replay_nights`
runs the same engine over a recorded series of readings, as the service would
have judged them: the evaluator (``bench/leak_eval.py``) and the tests call it,
so the service, the tests and the bench judge nights with one piece of code.

**Repairs.** The operator's ``repaired`` command stores a repair record (kind
:func:`storage.documents.put_repair`) with the sensor's event time then; the engine applies it
(:func:`core.night_model.mark_repaired`: NIGHT clears, the evidence restarts)
before the first reading of that sensor stamped after that event time, so a
NightFlow behind the Detector still judges the nights before the repair as
they were.

A replay gives each reading the gateway time of the minute it is stamped in
(readings are taken to arrive on time); the same readings give the same
verdicts, whatever ran before (no state outside the engine).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from core.config import Config
from core.night_flow import NightBlock, NightFlowAggregator, NightSummary, NightWindow
from core.night_model import NightModel, NightVerdict
from core.types import Reading

MINUTE_S = 60
def repair_record(sensor: str, event_time: int | None, wall_time: float) -> dict[str, Any]:
    """The stored repair of ``sensor``: keyed by sensor and wall-clock time (ms), with
    the sensor's event time then; ``applied`` is the stamp of the reading it was
    applied before (None: not yet)."""
    return {"key": f"{sensor}/{int(wall_time * 1000):013d}", "sensor": sensor,
            "event_time": event_time, "wall_time": wall_time, "applied": None}


@dataclass(frozen=True, slots=True)
class JudgedNight:
    """One closed night of one sensor and its verdict (None: the night had no MNF)."""

    summary: NightSummary
    verdict: NightVerdict | None
    ends: int  # epoch seconds: the end of the night window, when NIGHT is raised

    @property
    def flagged(self) -> bool | None:
        """NIGHT raised from the night's end; None: no verdict (learning, no MNF)."""
        return None if self.verdict is None else self.verdict.leak


def night_window(config: Config) -> NightWindow:
    """The site's night window from its configuration."""
    night = config.night
    return NightWindow(start=night.start, end=night.end, tz=config.site.tz,
                       block_minutes=night.block_minutes, min_readings=night.min_readings,
                       mnf_blocks=night.mnf_blocks)


class NightEngine:
    """Night blocks, nights and NIGHT verdicts of every sensor of a site.

    ``state`` is what :meth:`state` returned (the aggregator's state with the
    model's under ``"model"``), so an engine rebuilt from it continues exactly.
    """

    def __init__(self, config: Config, state: Mapping[str, Any] | None = None) -> None:
        self.window = night_window(config)
        state = state or {}
        self.aggregator = NightFlowAggregator(
            self.window, state or None, clock_ahead_s=config.system.clock_ahead_minutes * 60)
        self.model = NightModel.from_config(config, self.window, state.get("model"))
        self._repairs: dict[str, dict[str, Any]] = {}
        self._applied: list[dict[str, Any]] = []

    def schedule_repair(self, record: Mapping[str, Any]) -> None:
        """Apply a stored repair record (see :func:`repair_record`) when its time comes."""
        if record.get("applied") is None:
            self._repairs[str(record["key"])] = dict(record)

    def applied_repairs(self) -> list[dict[str, Any]]:
        """The repair records applied since last asked, ``applied`` filled in."""
        applied, self._applied = self._applied, []
        return applied

    def add(self, reading: Reading, now: int | None) -> tuple[list[NightBlock], list[JudgedNight]]:
        """Fold in one reading arriving at gateway time ``now``: the blocks it closed and
        the nights it closed, judged."""
        if self._repairs:
            self._apply_repairs(reading)
        blocks, summaries = self.aggregator.add(reading, now)
        return blocks, [self._judge(s) for s in summaries]

    def _judge(self, summary: NightSummary) -> JudgedNight:
        return JudgedNight(summary, self.model.judge(summary),
                           self.window.bounds(summary.night)[1])

    def _apply_repairs(self, reading: Reading) -> None:
        for key, record in sorted(self._repairs.items()):
            at = record.get("event_time")
            if record["sensor"] == reading.sensor and (at is None or reading.time > at):
                record["applied"] = int(reading.time)
                record["was_raised"] = self.model.repaired(reading.sensor)
                self._applied.append(record)
                del self._repairs[key]

    def state(self) -> dict[str, Any]:
        """Plain msgpack-able data to persist with the journal offset."""
        return {**self.aggregator.state(), "model": self.model.state()}


def replay_nights(config: Config, readings: Iterable[Reading],
                  repairs: Iterable[Mapping[str, Any]] = ()) -> list[JudgedNight]:
    """Every night the service would close and judge from ``readings`` (time order),
    with the operator's ``repairs`` (records as :func:`repair_record` makes them)."""
    engine = NightEngine(config)
    for record in repairs:
        engine.schedule_repair(record)
    out: list[JudgedNight] = []
    for r in readings:
        out += engine.add(r, r.time - r.time % MINUTE_S)[1]
    return out
