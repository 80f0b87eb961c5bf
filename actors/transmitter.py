"""Transmitter: owns the upstream port and sends the outbox in sequence order.

Producers (Detector, Predictor) commit structured frames to the persistent
outbox, where each gets its sequence number. The Transmitter encodes and writes
them in order and records how far it has sent. With ``upstream.ack`` a frame
stays in the outbox until its ``$ACK`` arrives and is resent, oldest first and
rate-limited, after ``ack_timeout_s`` (:class:`core.delivery.Delivery` keeps
that state). An upstream that takes no byte for ``write_timeout_s`` is stalled:
its frames wait in the outbox and writing is tried again later, while the actor
goes on answering. It also writes the ``$HLT`` health frame.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import Counter
from typing import Any, BinaryIO

import serial

from actors.base import ActorContext, GatewayActor
from core import frames
from core.delivery import Delivery
from core.messages import AckReceived, OutboxAppended, Tick
from core.types import EpochSeconds
from ports import Drain, PortError, open_port, write_lines
from storage.store import OUTBOX_SENDER, OutboxEntry, ReadView, StoreFullError

CONSUMER = OUTBOX_SENDER
SEND_CHUNK = 1000
# Frames looked past per tick for unacknowledged ones behind frames the upstream
# acknowledged that still wait for the MQTT uplink.
RESEND_SKIP = 1000
# Chunks per drain, then the offset is recorded and other messages get a turn.
DRAIN_CHUNKS = 20
CLOCK_TOLERANCE_S = 300
PORT_TIMEOUT_S = 0.2  # idle wait for an ACK's first byte; also how fast a stop is noticed
# Upstream reject counter of an $ACK naming a frame not sent (yet): it must not remove it.
ACK_UNSENT = "ack_unsent"
# Longest one handler writes before pings, ACKs and ticks get a turn (a slow line).
DRAIN_BUDGET_S = 0.5
# A stalled upstream (it takes nothing for upstream.write_timeout_s) is tried
# again after this, doubled while it stays stalled: every try holds the actor
# for write_timeout_s, and the frames wait safely in the outbox meanwhile.
STALL_RETRY_S = 1.0
STALL_RETRY_MAX_S = 30.0


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
        self.delivery = self._delivery(0)
        self.port: Any = None
        self._next_open = 0.0
        self._backoff = self.cfg.reconnect_initial_s
        self._ack_thread: threading.Thread | None = None
        # Unusable upstream lines by reason, counted by the ACK thread and
        # recorded by the actor once a tick: a flood of garbage costs no commits.
        self._upstream_rejects: Counter[str] = Counter()
        self._rejects_lock = threading.Lock()
        self._link_lost: Any = None  # set by the ACK thread to the port it saw fail
        self._store_full = False
        self._dropped_seen = 0
        self._acked_through = 0  # every frame up to here is acknowledged (or gone)
        self._last_health = time.monotonic()
        self._rejects_at_start = 0
        self.send_failures = 0
        self._stalled_since: float | None = None
        self._stalled_until = 0.0
        self._stall_wait = STALL_RETRY_S
        # The far end holds part of a line (a write stalled in it): the next write
        # ends it first, so that the frame after it is not glued to the broken one.
        self._cut_line = False

    def _delivery(self, offset: int) -> Delivery:
        cfg = self.cfg
        return Delivery.resume(offset, ack=cfg.ack, ack_timeout_s=cfg.ack_timeout_s,
                               resend_per_s=cfg.resend_per_s)

    @property
    def sent(self) -> int:
        """The last sequence number written (recorded in the store once per drain)."""
        return self.delivery.sent

    def on_start(self) -> None:
        with self.store.read() as view:
            offset, counters = view.offset(CONSUMER), view.counters()
        self.delivery = self._delivery(offset)
        self._rejects_at_start = _reject_total(counters)
        self._dropped_seen = counters.get("outbox_dropped", 0)
        self._open()
        self._send_pending()

    def release(self) -> None:
        self._close()
        if self._ack_thread is not None:
            self._ack_thread.join(timeout=2.0)
        self._record_upstream_rejects()

    # -- messages --------------------------------------------------------------

    def on_outbox(self, message: OutboxAppended) -> None:
        if message.seq > self.sent:
            self._send_pending()

    def on_ack(self, message: AckReceived) -> None:
        if self.delivery.acknowledged(message.seq):
            self._persist(lambda b: b.acknowledge_outbox(message.seq))  # else resent: harmless
            return
        with self._rejects_lock:
            self._upstream_rejects[ACK_UNSENT] += 1
        self.repeats.warning(ACK_UNSENT, "upstream acknowledged frame %d, never sent (%s): "
                             "ignored, the frame goes out as usual", message.seq, ACK_UNSENT)

    def on_tick(self, message: Tick) -> None:
        if self.port is not None and self.port is self._link_lost:
            self.repeats.warning("lost", "upstream %s lost; reconnecting", self.cfg.port)
            self._close()
            self._next_open = time.monotonic() + self._backoff
        if self.port is None:
            self._open()
        self._send_pending()
        self._record_upstream_rejects()
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
            self.port = open_port(self.cfg.port, self.cfg.baudrate, timeout=PORT_TIMEOUT_S,
                                  for_write_lines=True)
        except PortError as exc:
            self.repeats.warning("unavailable", "upstream %s unavailable (%s); retrying in %.1f s",
                                 self.cfg.port, exc, self._backoff)
            self._next_open = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, self.cfg.reconnect_max_s)
            return
        self._backoff = self.cfg.reconnect_initial_s
        self.log.info("sending to %s", self.cfg.port)
        self._link_lost = None
        self._cut_line = False
        self._stalled_since, self._stalled_until, self._stall_wait = None, 0.0, STALL_RETRY_S
        if self.cfg.ack:
            # What is unacknowledged may have died with the previous link (a peer
            # that vanished still takes a write or two): send it all again,
            # oldest first, so that the upstream gets the frames in sequence order.
            with self.store.read() as view:
                oldest = view.outbox_oldest()
            self.delivery.link_up(oldest.seq if oldest is not None else None)
            self._ack_thread = self.start_helper("acks", self._read_acks, self.port)

    def _close(self) -> None:
        port, self.port = self.port, None
        if port is not None:
            try:
                port.close()
            except Exception:
                pass

    def _writable(self) -> bool:
        """The port is open and not resting after a stall."""
        return self.port is not None and time.monotonic() >= self._stalled_until

    def _write(self, lines: list[bytes], deadline: float = math.inf) -> int:
        """Write ``lines``; how many went out whole (the rest wait in the outbox)."""
        if not self._writable():
            return 0
        if self._cut_line:
            lines = [b"\r\n" + lines[0], *lines[1:]]
        try:
            result = write_lines(self.port, lines, stall_s=self.cfg.write_timeout_s,
                                 deadline=deadline)
        except (serial.SerialException, OSError) as exc:
            self.send_failures += 1
            self.repeats.warning("write", "upstream write failed: %s", exc)
            self._close()
            self._next_open = time.monotonic() + self._backoff
            return 0
        self._cut_line = result.cut or (self._cut_line and result.lines == 0)
        if result.stalled:
            self._stalled()
        elif self._stalled_since is not None:
            self.log.info("upstream %s takes frames again after %.0f s", self.cfg.port,
                          time.monotonic() - self._stalled_since)
            self._stalled_since, self._stall_wait = None, STALL_RETRY_S
        return result.lines

    def _stalled(self) -> None:
        """The upstream took nothing for write_timeout_s: a peer that stopped reading.

        The frames stay in the outbox (the offset moves over whole lines only) and
        the actor goes on answering; writing is tried again later, not on every
        new frame, each try costing write_timeout_s.
        """
        now = time.monotonic()
        if self._stalled_since is None:
            self._stalled_since = now
        self.send_failures += 1
        self._stalled_until = now + self._stall_wait
        self.repeats.warning(
            "stalled", "upstream %s took nothing for %.1f s (upstream.write_timeout_s): stalled "
            "for %.0f s; frames wait in the outbox, next try in %.0f s", self.cfg.port,
            self.cfg.write_timeout_s, now - self._stalled_since, self._stall_wait)
        self._stall_wait = min(self._stall_wait * 2, STALL_RETRY_MAX_S)

    def _read_acks(self, port: Any) -> None:
        splitter = frames.LineSplitter()
        drain = Drain(port, PORT_TIMEOUT_S)
        while not self.stopping.is_set() and self.port is port:
            try:
                chunk = drain.read()
            except (serial.SerialException, OSError, TypeError, AttributeError):
                self._link_lost = port  # the actor closes it and reconnects on its next tick
                return
            for line in splitter.feed(chunk):
                ack = frames.decode_ack(line, self.tz)
                if isinstance(ack, frames.Ack):
                    self.tell_self(AckReceived(ack.seq))
                elif isinstance(ack, frames.Reject):
                    with self._rejects_lock:
                        self._upstream_rejects[ack.reason] += 1
                    self.repeats.warning(f"reject.{ack.reason}",
                                         "upstream sent an unusable line (%s: %s): %r",
                                         ack.reason, ack.detail, line[:80])

    def _record_upstream_rejects(self) -> None:
        with self._rejects_lock:
            counts, self._upstream_rejects = self._upstream_rejects, Counter()
        if counts:
            self._persist(lambda b: [b.count(f"{frames.UPSTREAM_REJECT}{reason}", n)
                                     for reason, n in counts.items()])

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
        deadline = time.monotonic() + DRAIN_BUDGET_S
        for _ in range(DRAIN_CHUNKS):
            if not self._writable():
                return
            with self.store.read() as view:
                entries = view.outbox(after=self.sent, limit=SEND_CHUNK)
            if not entries:
                return
            if entries[0].seq > self.sent + 1 and not self.cfg.ack:
                self.repeats.warning(
                    "dropped", "outbox full (upstream.outbox_max = %d): %d frame(s) dropped "
                    "before they were sent", self.cfg.outbox_max, entries[0].seq - self.sent - 1)
            wire = self._wire
            done = self._write([e.wire or wire(e) for e in entries], deadline)
            self.delivery.written([e.seq for e in entries[:done]], time.monotonic())
            if not self._writable():
                return  # lost or stalled: the next tick tries again
            if done < len(entries) or time.monotonic() >= deadline:
                break
        # More may be waiting: go on after whatever else is queued (ACKs, ticks, pings).
        self.tell_self(OutboxAppended(self.sent + 1))

    def _resend_unacknowledged(self) -> None:
        now = time.monotonic()
        window = self.delivery.resend_window()
        # Frames the upstream acknowledged that wait for the MQTT uplink stay in the
        # outbox, mostly at its head: skip that prefix once, not on every tick.
        with self.store.read() as view:
            entries = view.outbox(after=self._acked_through, limit=window + RESEND_SKIP)
        for entry in entries:
            if not entry.acked:
                break
            self._acked_through = entry.seq
        oldest = {e.seq: e for e in entries if not e.acked}
        for seq in self.delivery.due(list(oldest)[:window], now):
            entry = oldest[seq]
            if not self._write([entry.wire or self._wire(entry)]):
                return
            self.delivery.resent(seq, now)
            self._persist(lambda b, s=seq: b.mark_outbox_attempt(s))

    def _wire(self, entry: OutboxEntry) -> bytes:
        """The line of an entry stored without one (written before lines were kept)."""
        return frames.encode(entry.frame, self.tz)

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
        with self.store.read() as view:
            dropped = view.counters().get("outbox_dropped", 0)
        if dropped > self._dropped_seen:
            self.repeats.warning(
                "dropped", "outbox full (upstream.outbox_max = %d): %d oldest frame(s) dropped "
                "undelivered, %d in all", self.cfg.outbox_max, dropped - self._dropped_seen,
                dropped)
        self._dropped_seen = dropped

    def _unsent_depth(self, view: ReadView) -> int:
        """Frames not yet delivered: unacknowledged with ack, else not yet written."""
        if self.cfg.ack:
            return view.outbox_depth()
        return max(0, view.peek_sequence() - self.sent)

    def _queue_health(self, now: float) -> None:
        stats = self.context.stats
        store = self.store
        with store.read() as view:
            oldest = view.outbox(after=0 if self.cfg.ack else self.sent, limit=1)
            # Right when near where the readings put time: their event time, or readings
            # that keep arriving ahead of the clock (one stamp far off is no evidence).
            readings_time = view.event_times().newest()
            depth, counters = self._unsent_depth(view), view.counters()
        clock_ok = readings_time is None or abs(now - readings_time) <= CLOCK_TOLERANCE_S
        frame = frames.HealthFrame(
            time=EpochSeconds(int(now)),
            uptime_s=int(time.monotonic() - stats.started_monotonic),
            outbox_depth=depth,
            oldest_unsent_s=max(0, int(now - oldest[0].created)) if oldest else 0,
            restarts=stats.total_restarts(),
            rejects=_reject_total(counters) - self._rejects_at_start,
            store_used_pct=round(store.used_pct(), 1), clock=clock_ok,
        )
        try:
            seq = store.transact(lambda b: b.append_outbox(frame))
        except StoreFullError as exc:  # a health frame needs its sequence number from the store
            self.log.error("health frame not sent, the store is full: %s", exc)
            return
        self.on_outbox(OutboxAppended(seq))


def _reject_total(counters: dict[str, int]) -> int:
    return sum(v for k, v in counters.items() if k.startswith("reject."))
