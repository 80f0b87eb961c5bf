"""NightFlow: 10-minute flow means inside the night window and each night's MNF.

Consumes the arrival journal like the Detector. Each closed block is stored once
(idempotent by sensor and start); each closed night is judged against the
baseline of recent clean nights and the verdict is stored, in the same
transaction as the offset, before the Detector is told.
"""

from __future__ import annotations

from typing import Any

from actors.base import ActorContext, JournalConsumer
from core.messages import NightClosed
from core.night_flow import NightFlowAggregator, NightSummary, NightWindow, evaluate_night
from core.types import StoredReading

CONSUMER = "night_flow"


class NightFlow(JournalConsumer):
    role = "night_flow"
    consumer = CONSUMER

    def __init__(self, context: ActorContext) -> None:
        super().__init__(context)
        night = self.config.night
        self.window = NightWindow(
            start=night.start, end=night.end, tz=self.config.site.tz,
            block_minutes=night.block_minutes, min_readings=night.min_readings,
        )
        self.aggregator: NightFlowAggregator | None = None

    def on_start(self) -> None:
        self.aggregator = NightFlowAggregator(
            self.window, self.store.consumer_state(CONSUMER),
            clock_ahead_s=self.config.system.clock_ahead_minutes * 60)
        super().on_start()

    def process(self, batch: list[StoredReading]) -> None:
        assert self.aggregator is not None
        blocks = []
        summaries: list[NightSummary] = []
        # The gateway clock, as the Detector judges clock_ahead: a reading stamped
        # ahead of it must not close a night early.
        now = int(self.context.clock())
        for stored in batch:
            closed_blocks, closed_nights = self.aggregator.add(stored.reading, now)
            blocks += closed_blocks
            summaries += closed_nights
        verdicts = [(s, self._judge(s)) for s in summaries]
        state = self.aggregator.state()
        offset = batch[-1].arrival

        def write(b: Any) -> None:
            for block in blocks:
                b.put_night_block(block.sensor, block.start, block.to_record())
            for summary, verdict in verdicts:
                night = summary.night.isoformat()
                # "ends": from when the Detector carries the verdict (event time).
                record = {**summary.to_record(), "ends": self.window.bounds(summary.night)[1],
                          "leak": verdict.leak if verdict else None,
                          "baseline": verdict.baseline if verdict else None,
                          "threshold": verdict.threshold if verdict else None,
                          "cause": verdict.cause() if verdict and verdict.leak else None}
                b.put_doc("night", f"{summary.sensor}/{night}", record)
            b.set_offset(CONSUMER, offset, state)

        self.store.transact(write)
        self.offset = offset
        for summary, verdict in verdicts:
            if verdict is not None:
                if verdict.leak:
                    self.log.warning("sensor %s night %s: MNF %.3f above %.3f (leak sign)",
                                     summary.sensor, summary.night, verdict.observed or 0.0,
                                     verdict.threshold or 0.0)
                self.peers.tell("detector", NightClosed(summary.sensor, summary.night.isoformat()))

    def _judge(self, summary: NightSummary) -> Any:
        if summary.mnf is None:
            return None  # no complete block that night: no verdict change
        recent = self.store.docs(
            "night", prefix=f"{summary.sensor}/", newest_first=True,
            limit=self.config.night.baseline_nights,
            where=lambda rec: rec.get("mnf") is not None and rec.get("leak") is False)
        clean = [rec["mnf"] for _, rec in reversed(recent)]
        criteria = self.store.doc("criteria", f"{summary.sensor}/current") or {}
        return evaluate_night(
            summary.mnf, clean,
            criteria_baseline=criteria.get("mnf_baseline"),
            criteria_allowed_excess=criteria.get("mnf_allowed_excess"),
            baseline_nights=self.config.night.baseline_nights,
        )


