"""SerialReader: owns the inbound port; parses, commits, then passes readings on.

The port is read in a thread the actor owns. Each batch of lines is committed to
the store in one transaction (group commit) *before* the Detector and NightFlow
hear of it, so a crash anywhere downstream loses nothing: they resume from their
offsets in the store's arrival journal.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import serial

from actors.base import JOURNAL_CONSUMERS, ActorContext, GatewayActor
from core import frames
from core.messages import ReadingsCommitted
from core.types import Reading
from ports import PortError, open_port
from storage.store import RejectRecord, StoreFullError

READ_CHUNK = 65536
PORT_TIMEOUT_S = 0.2  # idle wait for the first byte; also how fast a stop is noticed
REJECT_LOG_INTERVAL_S = 10.0
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


class SerialReader(GatewayActor):
    role = "serial_reader"

    def __init__(self, context: ActorContext) -> None:
        super().__init__(context)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._port: serial.SerialBase | None = None
        self._tz = self.config.site.tz
        self._reject_log_at: dict[str, float] = {}
        self._reject_unlogged: dict[str, int] = {}
        self._delivered = False  # the current connection has given us data
        outbox_max = self.config.upstream.outbox_max
        self._max_unsent = min(MAX_UNSENT, max(1, outbox_max // OUTBOX_SHARE))
        self._max_backlog = min(MAX_BACKLOG, max(1, outbox_max // OUTBOX_SHARE))
        self._sent_seen = -1
        self._sent_moved_at = 0.0

    def on_start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"{self.role}-port", daemon=True
        )
        self._thread.start()

    def release(self) -> None:
        self._stopping.set()
        port = self._port
        if port is not None:
            try:
                port.close()
            except Exception:  # closing a vanished port may fail; it is gone either way
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=3.0)

    # -- the port thread ---------------------------------------------------

    def _run(self) -> None:
        try:
            self._connect_loop()
        except Exception as exc:
            if self._stopping.is_set():
                return  # the port was closed under the read: we are stopping anyway
            # A bug in the read path: let the supervisor restart the whole actor.
            self.log.exception("port thread failed")
            self.context.report_crash(self.role, exc)

    def _connect_loop(self) -> None:
        cfg = self.config.serial
        backoff = cfg.reconnect_initial_s
        failures = 0
        while not self._stopping.is_set():
            try:
                self._port = open_port(cfg.port, cfg.baudrate, timeout=PORT_TIMEOUT_S)
            except PortError as exc:
                failures += 1
                if failures == 1 or failures % 20 == 0:
                    self.log.warning("cannot open %s (%s); retrying in %.1f s", cfg.port, exc, backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, cfg.reconnect_max_s)
                continue
            self.log.info("reading from %s", cfg.port)
            failures = 0
            self._delivered = False
            try:
                self._pump(self._port)
            except (serial.SerialException, OSError) as exc:
                if not self._stopping.is_set():
                    self.log.warning("lost %s: %s", cfg.port, exc)
            finally:
                try:
                    self._port.close()
                except Exception:
                    pass
                self._port = None
            if not self._stopping.is_set():
                # Only a connection that delivered data proves the port healthy: one
                # that opens and drops at once (a flapping peer) keeps backing off.
                if self._delivered:
                    backoff = cfg.reconnect_initial_s
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, cfg.reconnect_max_s)

    def _pump(self, port: serial.SerialBase) -> None:
        """Read lines until stopped; commit whenever the port runs dry or a batch fills.

        Waiting is a blocking one-byte read (no busy loop while the line is
        quiet); once bytes flow the port is drained without waiting, because
        pyserial's socket handler reports only whether *some* data is waiting.
        """
        cfg = self.config.storage
        splitter = frames.LineSplitter()
        readings: list[Reading] = []
        rejects: list[RejectRecord] = []
        first_pending = 0.0
        draining = False
        while not self._stopping.is_set():
            self._wait_for_consumers()
            chunk = port.read(READ_CHUNK if draining else 1)
            if chunk and not draining:
                port.timeout, draining = 0, True
            elif not chunk and draining:
                port.timeout, draining = PORT_TIMEOUT_S, False
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
            if not chunk or full or old:
                self._commit(readings, rejects)
                readings, rejects = [], []
        if readings or rejects:
            self._commit(readings, rejects)

    def _decode_into(
        self, line: bytes, now: float, readings: list[Reading], rejects: list[RejectRecord]
    ) -> None:
        decoded = frames.decode_reading(line, self._tz)
        if decoded is None:
            return
        if isinstance(decoded, frames.Reject):
            rejects.append(RejectRecord(now, str(decoded.reason), bytes(decoded.line)))
            self._log_reject(decoded)
        else:
            readings.append(decoded)

    def _commit(self, readings: list[Reading], rejects: list[RejectRecord]) -> None:
        full_for = 0
        while True:
            try:
                result = self.store.ingest(readings, rejects)
                break
            except StoreFullError as exc:
                # Reading on into memory is not safe for long: the port waits (its
                # peer buffers) until there is space again.
                self.context.stats.storage_error = str(exc)
                if full_for % 60 == 0:  # once a minute, not once a retry
                    self.log.error("store full, %d reading(s) held in memory, the port waits: %s",
                                   len(readings), exc)
                full_for += 1
                if self._stopping.wait(1.0):
                    raise
        if full_for:
            self.log.warning("store writable again after %d s: %d held reading(s) stored",
                             full_for, len(readings))
        self.context.stats.storage_error = None
        if result.conflicts:
            self.log.warning("%d duplicate reading(s) with differing values ignored", result.conflicts)
        if result.stored:
            self.peers.tell_each(JOURNAL_CONSUMERS, ReadingsCommitted.of(result.stored))

    def _wait_for_consumers(self) -> None:
        while not self._stopping.is_set():
            backlog = self.store.journal_head() - self.store.offset("detector")
            if backlog < self._max_backlog and not self._sender_behind():
                return
            self._stopping.wait(0.005)

    def _sender_behind(self) -> bool:
        sent = self.store.offset("transmitter")
        now = time.monotonic()
        if sent != self._sent_seen:
            self._sent_seen, self._sent_moved_at = sent, now
        unsent = self.store.peek_outbox_seq() - sent
        return unsent > self._max_unsent and now - self._sent_moved_at < SENDER_STALLED_S

    def _log_reject(self, reject: Any) -> None:
        reason = str(reject.reason)
        now = time.monotonic()
        if now - self._reject_log_at.get(reason, -REJECT_LOG_INTERVAL_S) < REJECT_LOG_INTERVAL_S:
            self._reject_unlogged[reason] = self._reject_unlogged.get(reason, 0) + 1
            return
        suppressed = self._reject_unlogged.pop(reason, 0)
        self._reject_log_at[reason] = now
        self.log.warning(
            "rejected line (%s: %s)%s: %r", reason, reject.detail,
            f", {suppressed} more since last report" if suppressed else "", bytes(reject.line)[:80],
        )
