"""Transmitter: owns the upstream port and sends the outbox in sequence order.

Producers (Detector, Predictor) commit structured frames to the persistent
outbox, where each gets its sequence number. The Transmitter encodes and writes
them in order and records how far it has sent. With ``upstream.ack`` a frame
stays in the outbox until its ``$ACK`` arrives and is resent, oldest first and
rate-limited, after ``ack_timeout_s``. It also writes the ``$HLT`` health frame.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from typing import Any, BinaryIO

import serial

from actors.base import ActorContext, GatewayActor
from core import frames
from core.messages import AckReceived, OutboxAppended, Tick
from core.outbox import frame_object
from ports import PortError, open_port
from storage.store import OUTBOX_SENDER, OutboxEntry, StoreFullError

CONSUMER = OUTBOX_SENDER
SEND_CHUNK = 1000
# Chunks per drain, then the offset is recorded and other messages get a turn.
DRAIN_CHUNKS = 20
CLOCK_TOLERANCE_S = 300


class StdoutPort:
    """The ``-`` upstream: frames to standard output, so a new user sees them."""

    def __init__(self, stream: BinaryIO | None = None) -> None:
        self._stream = stream or sys.stdout.buffer

    def write(self, data: bytes) -> int:
        self._stream.write(data)
        self._stream.flush()
        return len(data)

    def read(self, size: int = 1) -> bytes:
        return b""

    def close(self) -> None:
        self._stream.flush()


class Transmitter(GatewayActor):
    role = "transmitter"

    def __init__(self, context: ActorContext) -> None:
        super().__init__(context)
        self.cfg = self.config.upstream
        self.tz = self.config.site.tz
        self.sent = 0
        self.port: Any = None
        self._next_open = 0.0
        self._backoff = 0.5
        self._stopping = threading.Event()
        self._ack_thread: threading.Thread | None = None
        self._link_lost: Any = None  # set by the ACK thread to the port it saw fail
        self._store_full = False
        self._dropped_seen = 0
        self._last_health = time.monotonic()
        self._rejects_at_start = 0
        self._resend_budget = 0.0
        self.send_failures = 0
        # seq -> time.monotonic() of its last send (ack mode): a frame is resent
        # ack_timeout_s after its last try, not on every tick once it is late, and
        # a jump of the wall clock (a Pi without RTC, then NTP) neither stalls nor
        # floods the resends.
        self._last_try: dict[int, float] = {}

    def on_start(self) -> None:
        self.sent = self.store.offset(CONSUMER)
        counters = self.store.counters()
        self._rejects_at_start = _reject_total(counters)
        self._dropped_seen = counters.get("outbox_dropped", 0)
        self._open()
        self._send_pending()

    def release(self) -> None:
        self._stopping.set()
        self._close()
        if self._ack_thread is not None:
            self._ack_thread.join(timeout=2.0)

    # -- messages --------------------------------------------------------------

    def on_outbox(self, message: OutboxAppended) -> None:
        if message.seq > self.sent:
            self._send_pending()

    def on_ack(self, message: AckReceived) -> None:
        self._persist(lambda b: b.delete_outbox(message.seq))  # else resent: harmless
        self._last_try.pop(message.seq, None)

    def on_tick(self, message: Tick) -> None:
        if self.port is not None and self.port is self._link_lost:
            self.log.warning("upstream %s lost; reconnecting", self.cfg.port)
            self._close()
            self._next_open = time.monotonic() + self._backoff
        if self.port is None:
            self._open()
        self._send_pending()
        if self.cfg.ack:
            self._resend_unacknowledged()
            # Only here: without ACK the outbox is an audit trail, trimming it loses
            # nothing (a frame dropped before it was sent is logged by _send_pending).
            self._report_drops()
        if time.monotonic() - self._last_health >= self.config.supervisor.health_interval_s:
            self._last_health = time.monotonic()
            self._queue_health(message.now)

    # -- port ---------------------------------------------------------------------

    def _open(self) -> None:
        if self.port is not None or time.monotonic() < self._next_open:
            return
        if self.cfg.port == "-":
            self.port = StdoutPort()
            return
        try:
            self.port = open_port(self.cfg.port, self.cfg.baudrate, timeout=0.2)
        except PortError as exc:
            self.log.warning("upstream %s unavailable (%s); retrying in %.1f s",
                             self.cfg.port, exc, self._backoff)
            self._next_open = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, 30.0)
            return
        self._backoff = 0.5
        self.log.info("sending to %s", self.cfg.port)
        self._link_lost = None
        if self.cfg.ack:
            # What is unacknowledged may have died with the previous link (a peer
            # that vanished still takes a write or two): send it all again,
            # oldest first, so that the upstream gets the frames in sequence order.
            oldest = self.store.outbox_oldest()
            if oldest is not None and oldest.seq <= self.sent:
                self.sent = oldest.seq - 1
            self._ack_thread = threading.Thread(
                target=self._read_acks, args=(self.port,), name=f"{self.role}-acks", daemon=True)
            self._ack_thread.start()

    def _close(self) -> None:
        port, self.port = self.port, None
        if port is not None:
            try:
                port.close()
            except Exception:
                pass

    def _write(self, data: bytes) -> bool:
        if self.port is None:
            return False
        try:
            self.port.write(data)
            return True
        except (serial.SerialException, OSError) as exc:
            self.send_failures += 1
            self.log.warning("upstream write failed: %s", exc)
            self._close()
            self._next_open = time.monotonic() + self._backoff
            return False

    def _read_acks(self, port: Any) -> None:
        splitter = frames.LineSplitter()
        while not self._stopping.is_set() and self.port is port:
            try:
                chunk = port.read(max(1, port.in_waiting))
            except (serial.SerialException, OSError, TypeError, AttributeError):
                self._link_lost = port  # the actor closes it and reconnects on its next tick
                return
            for line in splitter.feed(chunk):
                ack = frames.decode_ack(line, self.tz)
                if isinstance(ack, frames.Ack):
                    self.tell_self(AckReceived(ack.seq))
                elif isinstance(ack, frames.Reject):
                    self.log.warning("upstream sent an unusable line (%s): %r", ack.reason, line[:80])

    # -- sending -----------------------------------------------------------------

    def _send_pending(self) -> None:
        recorded = self.sent
        try:
            self._write_pending()
        finally:
            # One commit per drain, not per chunk: a crash before it costs resends
            # of what was written (the upstream keys frames by seq), never frames.
            if self.sent != recorded:
                sent = self.sent
                self._persist(lambda b: b.set_offset(CONSUMER, sent))

    def _write_pending(self) -> None:
        for _ in range(DRAIN_CHUNKS):
            if self.port is None:
                return
            entries = self.store.outbox(after=self.sent, limit=SEND_CHUNK)
            if not entries:
                return
            if entries[0].seq > self.sent + 1 and not self.cfg.ack:
                self.log.warning("outbox full (upstream.outbox_max = %d): %d frame(s) dropped "
                                 "before they were sent", self.cfg.outbox_max,
                                 entries[0].seq - self.sent - 1)
            wire = self._wire
            data = b"".join([e.wire or wire(e) for e in entries])
            if not self._write(data):
                return
            self.sent = entries[-1].seq
            if self.cfg.ack:
                sent_at = time.monotonic()
                self._last_try.update((e.seq, sent_at) for e in entries)
        # More may be waiting: go on after whatever else is queued (ACKs, ticks, pings).
        self.tell_self(OutboxAppended(self.sent + 1))

    def _resend_unacknowledged(self) -> None:
        now = time.monotonic()
        self._resend_budget = min(self._resend_budget + self.cfg.resend_per_s, self.cfg.resend_per_s)
        oldest = self.store.outbox(after=0, limit=int(self._resend_budget) or 1)
        if oldest:  # forget frames dropped from the outbox unacknowledged
            for seq in [s for s in self._last_try if s < oldest[0].seq]:
                del self._last_try[seq]
        due = [
            e for e in oldest
            if e.seq <= self.sent
            and now - self._last_try.get(e.seq, -math.inf) >= self.cfg.ack_timeout_s
        ]
        for entry in due:
            if self._resend_budget < 1 or not self._write(entry.wire or self._wire(entry)):
                return
            self._resend_budget -= 1
            self._last_try[entry.seq] = now
            self._persist(lambda b, s=entry.seq: b.mark_outbox_attempt(s))

    def _wire(self, entry: OutboxEntry) -> bytes:
        """The line of an entry stored without one (written before lines were kept)."""
        return frames.encode(frame_object(entry.seq, entry.frame), self.tz)

    def _persist(self, write: Any) -> None:
        """Record sending progress; with the store full, keep sending from the outbox.

        The offset, acknowledgements and attempt counts only spare resends after
        a restart: losing one to a full disk costs duplicates, never frames.
        """
        try:
            self.store.transact(write)
        except StoreFullError as exc:
            if not self._store_full:
                self.log.error("cannot record sending progress, sending on: %s", exc)
            self._store_full = True
        else:
            self._store_full = False

    def _report_drops(self) -> None:
        """Log unacknowledged frames the full outbox dropped (the store counts them)."""
        dropped = self.store.counters().get("outbox_dropped", 0)
        if dropped > self._dropped_seen:
            self.log.warning(
                "outbox full (upstream.outbox_max = %d): %d oldest frame(s) dropped "
                "undelivered, %d in all", self.cfg.outbox_max, dropped - self._dropped_seen,
                dropped)
        self._dropped_seen = dropped

    def unsent_depth(self) -> int:
        """Frames not yet delivered: unacknowledged with ack, else not yet written."""
        if self.cfg.ack:
            return self.store.outbox_depth()
        return max(0, self.store.peek_outbox_seq() - self.sent)

    def _queue_health(self, now: float) -> None:
        stats = self.context.stats
        store = self.store
        oldest = store.outbox(after=0 if self.cfg.ack else self.sent, limit=1)
        # Right when near where the readings put time: their event time, or readings
        # that keep arriving ahead of the clock (one stamp far off is no evidence).
        readings_time = store.event_times().newest()
        clock_ok = readings_time is None or abs(now - readings_time) <= CLOCK_TOLERANCE_S
        frame = {
            "type": "HLT", "time": int(now),
            "uptime_s": int(time.monotonic() - stats.started_monotonic),
            "outbox_depth": self.unsent_depth(),
            "oldest_unsent_s": max(0, int(now - oldest[0].created)) if oldest else 0,
            "restarts": stats.total_restarts(),
            "rejects": _reject_total(store.counters()) - self._rejects_at_start,
            "store_used_pct": round(store.used_pct(), 1), "clock": clock_ok,
        }
        try:
            seq = store.transact(lambda b: b.append_outbox(frame))
        except StoreFullError as exc:  # a health frame needs its sequence number from the store
            self.log.error("health frame not sent, the store is full: %s", exc)
            return
        self.on_outbox(OutboxAppended(seq))


def _reject_total(counters: dict[str, int]) -> int:
    return sum(v for k, v in counters.items() if k.startswith("reject."))
