"""The NIGHT engine: readings in, closed nights and their verdicts out.

:class:`NightEngine` is what the NightFlow actor decides with (the night-block
aggregation of :mod:`core.night_flow` and the NIGHT model of
:mod:`core.night_model`, with one state to persist), and :func:`replay_nights`
runs the same engine over a recorded series of readings, as the service would
have judged them: the evaluator (``bench/leak_eval.py``) and the tests call it,
so the service, the tests and the bench judge nights with one piece of code.

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
                       block_minutes=night.block_minutes, min_readings=night.min_readings)


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

    def add(self, reading: Reading, now: int | None) -> tuple[list[NightBlock], list[JudgedNight]]:
        """Fold in one reading arriving at gateway time ``now``: the blocks it closed and
        the nights it closed, judged."""
        blocks, summaries = self.aggregator.add(reading, now)
        return blocks, [self._judge(s) for s in summaries]

    def _judge(self, summary: NightSummary) -> JudgedNight:
        return JudgedNight(summary, self.model.judge(summary),
                           self.window.bounds(summary.night)[1])

    def repaired(self, sensor: str) -> bool:
        """The operator marked ``sensor``'s leak repaired; whether NIGHT was raised."""
        return self.model.repaired(sensor)

    def state(self) -> dict[str, Any]:
        """Plain msgpack-able data to persist with the journal offset."""
        return {**self.aggregator.state(), "model": self.model.state()}


def replay_nights(config: Config, readings: Iterable[Reading]) -> list[JudgedNight]:
    """Every night the service would close and judge from ``readings`` (time order)."""
    engine = NightEngine(config)
    out: list[JudgedNight] = []
    for r in readings:
        out += engine.add(r, r.time - r.time % MINUTE_S)[1]
    return out
