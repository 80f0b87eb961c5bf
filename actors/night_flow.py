"""NightFlow: 10-minute flow means inside the night window and each night's MNF.

Consumes the arrival journal like the Detector. Each closed block is stored once
(idempotent by sensor and start); each closed night is judged by the NIGHT
model (:class:`core.night_model.NightModel`) and the verdict is stored, with the
model's state, in the same transaction as the offset, before the Detector is
told.
"""

from __future__ import annotations

import time
from typing import Any

from actors.base import ActorContext, JournalConsumer
from core.messages import NightClosed
from core.night_flow import NightSummary, NightWindow
from core.night_model import NightVerdict
from core.replay import JudgedNight, NightEngine, night_window
from core.types import StoredReading
from storage import documents

CONSUMER = "night_flow"
REPAIR_POLL_S = 5.0


class NightFlow(JournalConsumer):
    role = "night_flow"
    consumer = CONSUMER

    def __init__(self, context: ActorContext) -> None:
        super().__init__(context)
        self.window = night_window(self.config)
        self.engine: NightEngine | None = None
        self._repairs_read = -REPAIR_POLL_S

    def on_start(self) -> None:
        with self.store.read() as view:
            state = documents.actor_state(view, CONSUMER)
        self.engine = NightEngine(self.config, state)
        super().on_start()

    def process(self, batch: list[StoredReading]) -> None:
        assert self.engine is not None
        blocks = []
        judged: list[JudgedNight] = []
        # The gateway clock, as the Detector judges clock_ahead: a reading stamped
        # ahead of it must not close a night early.
        now = int(self.context.clock())
        # Repairs the operator recorded (the repaired command) and not yet applied;
        # looked for every few seconds, not per batch (an operator's pace).
        if time.monotonic() - self._repairs_read >= REPAIR_POLL_S:
            self._repairs_read = time.monotonic()
            with self.store.read() as view:
                pending = documents.pending_repairs(view)
            for record in pending:
                self.engine.schedule_repair(record)
        for stored in batch:
            closed_blocks, closed_nights = self.engine.add(stored.reading, now)
            blocks += closed_blocks
            judged += closed_nights
        verdicts = [(j.summary, j.verdict) for j in judged]
        repairs = self.engine.applied_repairs()
        state = self.engine.state()
        offset = batch[-1].arrival

        def write(b: Any) -> None:
            for block in blocks:
                b.put_night_block(block.sensor, block.start, block.to_record())
            for summary, verdict in verdicts:
                documents.put_night_verdict(b, summary.sensor, summary.night,
                                            night_record(summary, verdict, self.window))
            for record in repairs:
                documents.put_repair(b, record)
            b.set_offset(CONSUMER, offset, state)

        self.store.transact(write)
        self.offset = offset
        for record in repairs:
            self.log.info("sensor %s: repair applied (%s); NIGHT evidence restarts",
                          record["sensor"], "NIGHT cleared" if record["was_raised"]
                          else "NIGHT was not raised")
        for summary, verdict in verdicts:
            if verdict is not None:
                if verdict.outcome == "leak":
                    self.log.warning(
                        "sensor %s night %s: leak sign (MNF %.3f, expected %.3f; "
                        "evidence %.2f > %.2f)", summary.sensor, summary.night, verdict.mnf,
                        verdict.expected or 0.0, verdict.statistic, verdict.threshold)
                self.peers.tell("detector", NightClosed(summary.sensor, summary.night.isoformat()))


def night_record(summary: NightSummary, verdict: NightVerdict | None,
                 window: NightWindow) -> dict[str, Any]:
    """The stored night: its summary, the verdict's explanation, and ``ends``, from
    when the Detector carries the verdict (event time); ``leak`` None: no verdict."""
    record = {**summary.to_record(), "ends": window.bounds(summary.night)[1], "leak": None,
              "cause": None}
    if verdict is not None:
        record.update(verdict.to_record())
        record["cause"] = verdict.cause() if verdict.leak else None
    return record
