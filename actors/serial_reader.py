"""SerialReader: owns the inbound port; parses, commits, then passes readings on.

The port is read in a thread the actor owns. Each batch of lines is committed to
the store in one transaction (group commit) *before* the Detector and NightFlow
hear of it, so a crash anywhere downstream loses nothing: they resume from their
offsets in the store's arrival journal.
"""

from __future__ import annotations

import threading
import time

import serial

from actors.base import JOURNAL_CONSUMERS, ActorContext, GatewayActor, PendingIngest
from core import frames
from core.messages import ReadingsCommitted
from core.types import Reading
from ports import Drain, PortError, open_port
from storage.store import OUTBOX_SENDER, ReadView, RejectRecord, StoreFullError

READ_CHUNK = 65536
PORT_TIMEOUT_S = 0.2  # idle wait for the first byte; also how fast a stop is noticed
# How far the reader may run ahead of the detector (arrivals not yet detected)
# before it stops reading: bounds every inbox in the pipeline.
MAX_BACKLOG = 20_000
# Likewise for frames the Transmitter has not sent yet, while it is sending: the
# outbox is bounded (upstream.outbox_max) and a reader outrunning a live link would
# have unsent frames dropped. A Transmitter that does not move for SENDER_STALLED_S
# (the link is down) holds nobody back: the outbox then keeps what it can.
MAX_UNSENT = 20_000
SENDER_STALLED_S = 2.0
# Both limits are at most this share of the outbox: undetected arrivals become
# about two frames each ($ALR, $SRV), so what may still come stays within it.
OUTBOX_SHARE = 5
# While the store cannot take them (a full disk), readings are held in memory and
# the port is read on: a serial line does not wait, what is not read is lost. A
# day of ten sensors at most (a few MB); once it is full the reader stops like
# any actor a full store stops (restarted with growing delays, the hold kept for
# its next self): if space does not return, the restart intensity ends the service.
HOLD_MAX = 14_400
FULL_RETRY_S = 1.0


class SerialReader(GatewayActor):
    role = "serial_reader"

    def __init__(self, context: ActorContext) -> None:
        super().__init__(context)
        self._thread: threading.Thread | None = None
        self._port: serial.SerialBase | None = None
        self._tz = self.config.site.tz
        self._delivered = False  # the current connection has given us data
        outbox_max = self.config.upstream.outbox_max
        self._max_unsent = min(MAX_UNSENT, max(1, outbox_max // OUTBOX_SHARE))
        self._max_backlog = min(MAX_BACKLOG, max(1, outbox_max // OUTBOX_SHARE))
        self._sent_seen = -1
        self._sent_moved_at = 0.0
        # Read, not yet committed; a restarted reader takes over what it held.
        self._pending_readings: list[Reading]
        self._pending_rejects: list[RejectRecord]
        pending = context.carried.setdefault(self.role, PendingIngest())
        self._pending_readings, self._pending_rejects = pending.readings, pending.rejects
        self._full_since: float | None = None  # monotonic time the store first refused
        self._full_retry_at = 0.0

    def on_start(self) -> None:
        self._thread = self.start_helper("port", self._connect_loop)

    def release(self) -> None:
        port = self._port
        if port is not None:
            try:
                port.close()
            except Exception:  # closing a vanished port may fail; it is gone either way
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=3.0)

    # -- the port thread ---------------------------------------------------

    def _connect_loop(self) -> None:
        cfg = self.config.serial
        backoff = cfg.reconnect_initial_s
        while not self.stopping.is_set():
            try:
                self._port = open_port(cfg.port, cfg.baudrate, timeout=PORT_TIMEOUT_S)
            except PortError as exc:
                self.repeats.warning("open", "cannot open %s (%s); retrying in %.1f s",
                                     cfg.port, exc, backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, cfg.reconnect_max_s)
                continue
            self.log.info("reading from %s", cfg.port)
            self._delivered = False
            try:
                self._pump(self._port)
            except (serial.SerialException, OSError) as exc:
                if not self.stopping.is_set():
                    self.repeats.warning("lost", "lost %s: %s", cfg.port, exc)
            finally:
                try:
                    self._port.close()
                except Exception:
                    pass
                self._port = None
            if not self.stopping.is_set():
                # Only a connection that delivered data proves the port healthy: one
                # that opens and drops at once (a flapping peer) keeps backing off.
                if self._delivered:
                    backoff = cfg.reconnect_initial_s
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, cfg.reconnect_max_s)

    def _pump(self, port: serial.SerialBase) -> None:
        """Read lines until stopped; commit whenever the port runs dry or a batch fills."""
        cfg = self.config.storage
        splitter = frames.LineSplitter()
        # Held on the actor, not here: what a full store refused outlives a lost port.
        readings, rejects = self._pending_readings, self._pending_rejects
        first_pending = time.monotonic()
        drain = Drain(port, PORT_TIMEOUT_S, READ_CHUNK)
        while not self.stopping.is_set():
            if len(readings) >= HOLD_MAX:  # the store is full and so is the hold
                self.stopping.wait(FULL_RETRY_S)
                if self._commit(readings, rejects, retry_now=True):
                    readings, rejects = self._pending()
                elif not self.stopping.is_set():
                    raise StoreFullError(
                        f"{len(readings)} readings held in memory, the most it holds, and the "
                        f"store still refuses them: {self.context.stats.storage_error}")
                continue
            self._wait_for_consumers()
            chunk = drain.read()
            if chunk:
                self._delivered = True
                now = self.context.clock()
                if not readings and not rejects:
                    first_pending = time.monotonic()
                for line in splitter.feed(chunk):
                    self._decode_into(line, now, readings, rejects)
            pending = len(readings) + len(rejects)
            if not pending:
                continue
            full = pending >= cfg.commit_max_readings
            old = (time.monotonic() - first_pending) * 1000 >= cfg.commit_max_ms
            if (not chunk or full or old) and self._commit(readings, rejects):
                readings, rejects = self._pending()
        while (readings or rejects) and not self._commit(readings, rejects, retry_now=True):
            if self.stopping.wait(FULL_RETRY_S):
                # Stopping with the store still full: what is held stays in the
                # context for a restarted reader; a stopping service loses it.
                self.log.error("stopping with %d reading(s) the full store never took "
                               "(lost unless a restarted reader takes them over)", len(readings))
                return
        self._pending()

    def _pending(self) -> tuple[list[Reading], list[RejectRecord]]:
        """Start new, empty lists of what awaits its commit."""
        pending = self.context.carried[self.role] = PendingIngest()
        self._pending_readings, self._pending_rejects = pending.readings, pending.rejects
        return self._pending_readings, self._pending_rejects

    def _decode_into(
        self, line: bytes, now: float, readings: list[Reading], rejects: list[RejectRecord]
    ) -> None:
        decoded = frames.decode_reading(line, self._tz)
        if decoded is None:
            return
        if isinstance(decoded, frames.Reject):
            rejects.append(RejectRecord(now, str(decoded.reason), bytes(decoded.line)))
            self.repeats.warning(f"reject.{decoded.reason}", "rejected line (%s: %s): %r",
                                 decoded.reason, decoded.detail, bytes(decoded.line)[:80])
        else:
            readings.append(decoded)

    def _commit(self, readings: list[Reading], rejects: list[RejectRecord], *,
                retry_now: bool = False) -> bool:
        """Store and pass on; False if the store is full (the caller holds them)."""
        now = time.monotonic()
        if self._full_since is not None and now < self._full_retry_at and not retry_now:
            return False
        try:
            result = self.store.ingest(readings, rejects)
        except StoreFullError as exc:
            self.context.stats.storage_error = str(exc)
            if self._full_since is None:
                self._full_since = now
            self._full_retry_at = now + FULL_RETRY_S
            self.repeats.error("store full", "store full, %d reading(s) held in memory (at most "
                               "%d, then the reader stops until space returns): %s",
                               len(readings), HOLD_MAX, exc)
            return False
        if self._full_since is not None:
            self.log.warning("store writable again after %.0f s: %d held reading(s) stored",
                             now - self._full_since, len(readings))
            self._full_since = None
        self.context.stats.storage_error = None
        if result.conflicts:
            self.repeats.warning("conflicts", "%d duplicate reading(s) with differing values "
                                 "ignored", result.conflicts)
        if result.stored:
            self.peers.tell_each(JOURNAL_CONSUMERS, ReadingsCommitted.of(result.stored))
        return True

    def _wait_for_consumers(self) -> None:
        while not self.stopping.is_set():
            with self.store.read() as view:
                backlog = view.journal_head() - view.offset("detector")
                ready = backlog < self._max_backlog and not self._sender_behind(view)
            if ready:
                return
            self.stopping.wait(0.005)

    def _sender_behind(self, view: ReadView) -> bool:
        sent = view.offset(OUTBOX_SENDER)
        now = time.monotonic()
        if sent != self._sent_seen:
            self._sent_seen, self._sent_moved_at = sent, now
        unsent = view.peek_sequence() - sent
        return unsent > self._max_unsent and now - self._sent_moved_at < SENDER_STALLED_S
