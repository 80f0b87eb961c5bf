"""Housekeeper: keeps the store to a year of readings and out of the service's memory.

Its jobs, on the supervisor's tick, in bounded transactions so that the
reader's group commits are never held up for long:

* the arrival journal is trimmed up to the slowest journal consumer's offset
  (what every consumer has processed is never needed again);
* retention (``storage.retention_days``) deletes readings, detections and
  night blocks older than that before each sensor's event time (its newest
  reading the Detector took in: one stamped years ahead moves nothing);
* the store's pages are dropped from the process's resident memory
  (:meth:`Store.release_mapped_pages`): they are the page cache's, and the
  service's RSS then shows its own memory, not the size of the store; freed
  heap goes back to the OS too (:func:`ports.memory.release_free_heap`).

Nothing else depends on these jobs: a crash here costs a late trim, never data.
"""

from __future__ import annotations

import time

from actors.base import JOURNAL_CONSUMERS, ActorContext, GatewayActor
from core.messages import Tick
from ports.memory import release_free_heap
from storage.store import StoreFullError

# The journal grows by one entry per reading; trimmed this often (wall time) it
# stays a small, recycled part of the map even during a fast replay. The store's
# pages leave the process's memory as often: a fast replay maps many per second.
TRIM_EVERY_S = 10.0
# Retention moves with event time (a day per day live); hourly is plenty.
RETENTION_EVERY_S = 3600.0


class Housekeeper(GatewayActor):
    role = "housekeeper"

    def __init__(self, context: ActorContext) -> None:
        super().__init__(context)
        self._next_trim = 0.0
        self._next_retention = 0.0

    def on_tick(self, message: Tick) -> None:
        now = time.monotonic()
        try:
            if now >= self._next_trim:
                self._next_trim = now + TRIM_EVERY_S
                self.trim_journal()
                self.store.release_mapped_pages()
                release_free_heap()
            if now >= self._next_retention:
                self._next_retention = now + RETENTION_EVERY_S
                self.apply_retention()
        except StoreFullError as exc:
            # Deleting needs a little room too; the next round tries again.
            self.repeats.warning("store full", "store full, housekeeping deferred: %s", exc)

    def trim_journal(self) -> int:
        with self.store.read() as view:
            through = min(view.offset(consumer) for consumer in JOURNAL_CONSUMERS)
        trimmed = self.store.trim_journal(through)
        if trimmed:
            self.log.debug("journal trimmed through arrival %d (%d entries)", through, trimmed)
        return trimmed

    def apply_retention(self) -> int:
        return self.store.apply_retention(self.config.storage.retention_days)
