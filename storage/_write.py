"""The writes of one transaction: :class:`WriteBatch`, ingest included."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lmdb
import msgpack

from core.frames import OutboundFrame
from core.outbox import outbox_form
from core.types import EventTimes, Reading, SensorId, StoredReading, new_stored_reading
from storage._errors import StoreError
from storage._keys import (
    ARRIVAL,
    EVENT_TIMES,
    NO_VALUE,
    OUTBOX,
    OUTBOX_PUBLISHER,
    OUTBOX_SENDER,
    REJECT,
    SENSOR_TIME,
    SEQ,
    VALUES,
    append_seq,
    doc_key,
    optional,
    sensor_number,
    time_key,
)
from storage._read import ReadView
from storage._records import (
    IngestResult,
    OutboxEntry,
    RejectRecord,
    new_packer,
    pack,
    unpack,
)


class WriteBatch(ReadView):
    """The writes of one :meth:`Store.transact` call, all in one LMDB write transaction.

    Counters and sequence numbers are accumulated here and written once at the
    end, so a batch that appends a thousand frames touches each counter once.
    Likewise the bounded databases (outbox, rejects) are trimmed to their bound
    once, when the batch ends (or before the batch itself reads them): the
    transaction commits as a whole, so nothing ever sees them above the bound.

    Outbox frames and detections are buffered and written with one
    ``putmulti`` call (before the batch reads that database, and at its end).
    py-lmdb releases the GIL around every single put, get or delete, and with
    the service's other threads busy each release can cost a whole GIL switch
    interval (milliseconds) instead of a microsecond: one call per batch
    instead of one per frame keeps the write transaction, and with it every
    other writer, from waiting on that.
    """

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, Any], *, rejects_max: int,
                 outbox_max: int, clock: Callable[[], float],
                 outbox_wire: Callable[[int, OutboundFrame], bytes] | None = None,
                 outbox_publisher: bool = False) -> None:
        super().__init__(txn, dbs)
        self._rejects_max = rejects_max
        self._outbox_max = outbox_max
        self._outbox_publisher = outbox_publisher
        self._clock = clock
        self._outbox_wire = outbox_wire
        self._counts: dict[str, int] = {}
        self._seqs: dict[str, int] = {}
        self._bounded: dict[str, int] = {}  # database -> entries to keep, trimmed in _flush
        self._packer: msgpack.Packer | None = None
        # database -> (key, value) puts not yet written; see _write_pending.
        self._pending: dict[str, list[tuple[bytes, bytes]]] = {}

    def _write_pending(self, name: str) -> None:
        """Write the buffered puts of database ``name`` (in order: a later put wins)."""
        items = self._pending.pop(name, None)
        if not items:
            return
        append = name == "outbox"
        _, added = self._t().cursor(self._dbs[name]).putmulti(items, append=append)
        if added != len(items):
            if append:  # sequence keys: a refusal means the persisted counter is behind
                raise StoreError(f"sequence keys up to {items[-1][0].hex()} are not past the "
                                 f"end of the {name} database")
            raise StoreError(f"{len(items) - added} of {len(items)} {name} writes not kept")

    # sequences and counters -----------------------------------------------------

    def _next(self, name: str) -> int:
        current = self._seqs.get(name)
        if current is None:
            current = self._meta_get(f"q:{name}") or 0
        self._seqs[name] = current + 1
        return current + 1

    def _seq_now(self, name: str) -> int:
        if name in self._seqs:
            return self._seqs[name]
        return self._meta_get(f"q:{name}") or 0

    def journal_head(self) -> int:
        return self._seq_now(ARRIVAL)

    def peek_sequence(self) -> int:
        """The last outbound sequence number allocated, including this batch's."""
        return self._seq_now(OUTBOX)

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the persistent counter ``name`` (shown by ``status``)."""
        if n:
            self._counts[name] = self._counts.get(name, 0) + n

    def counters(self) -> dict[str, int]:
        merged = super().counters()
        for name, n in self._counts.items():
            merged[name] = merged.get(name, 0) + n
        return merged

    def _settle(self, name: str) -> None:
        """Bring database ``name`` up to date: buffered puts written, bound applied."""
        self._write_pending(name)
        keep = self._bounded.pop(name, None)
        if keep is not None:
            if name == "outbox":
                # Kept apart: without ACK a sent frame is only trimmed from the audit
                # trail, a frame never sent is lost (the Transmitter's offset tells).
                dropped, unsent, unpublished = self._drop_oldest(
                    self._dbs[name], keep, sent=self.offset(OUTBOX_SENDER),
                    published=self.offset(OUTBOX_PUBLISHER) if self._outbox_publisher else None)
                self.count("outbox_dropped", dropped)
                self.count("outbox_dropped_unsent", unsent)
                self.count("outbox_dropped_unpublished", unpublished)
            else:
                self._drop_oldest(self._dbs[name], keep)

    def _flush(self) -> None:
        for name in (*self._pending, *self._bounded):
            self._settle(name)
        txn, meta = self._t(), self._dbs["meta"]
        for name, n in self._counts.items():
            key = f"c:{name}".encode()
            raw = txn.get(key, db=meta)
            txn.put(key, pack((0 if raw is None else unpack(raw)) + n), db=meta)
        for name, value in self._seqs.items():
            txn.put(f"q:{name}".encode(), pack(value), db=meta)

    # offsets --------------------------------------------------------------------

    def set_offset(self, consumer: str, offset: int, state: Any = None) -> None:
        """Record how far ``consumer`` got; ``state`` None leaves its stored state as is."""
        self._t().put(f"o:{consumer}".encode(), pack(int(offset)), db=self._dbs["meta"])
        if state is not None:
            self.save_state(consumer, state)

    def save_state(self, consumer: str, state: Any) -> None:
        """Record ``consumer``'s state, its offset left as it is (or absent)."""
        self._t().put(f"s:{consumer}".encode(), pack(state), db=self._dbs["meta"])

    def set_event_times(self, times: EventTimes) -> None:
        """Record where the readings put time (the Detector, with its offset)."""
        self._t().put(EVENT_TIMES, pack([dict(times.sensors), times.ahead]),
                      db=self._dbs["meta"])

    # ingest --------------------------------------------------------------------

    def _ingest(self, readings: Sequence[Reading], rejects: Sequence[RejectRecord]) -> IngestResult:
        txn, rdb, jdb = self._t(), self._dbs["readings"], self._dbs["journal"]
        # The hot path of a replay (half a million readings a year per sensor):
        # locals instead of attribute look-ups, one sensor parse per batch, and
        # LMDB asked three times per batch (getmulti, putmulti x2) instead of
        # twice per reading: each call releases the GIL (see WriteBatch).
        pack_key, pack_values, pack_seq = SENSOR_TIME.pack, VALUES.pack, SEQ.pack
        stored_of = new_stored_reading
        numbers: dict[str, int] = {}
        rows: list[tuple[Reading, bytes, bytes]] = []
        for r in readings:
            number = numbers.get(r.sensor)
            if number is None:
                number = numbers[r.sensor] = sensor_number(r.sensor)
            t = int(r.time)
            key = pack_key(number, t) if t >= 0 else time_key(number, t)  # raises
            value = pack_values(NO_VALUE if r.flow is None else r.flow,
                                NO_VALUE if r.pressure is None else r.pressure, r.status)
            rows.append((r, key, value))
        stored_before = dict(txn.cursor(rdb).getmulti([key for _, key, _ in rows])) if rows else {}
        kept: dict[bytes, bytes] = {}  # this batch's new readings: the first write wins
        new_items: list[tuple[bytes, bytes]] = []
        journal_items: list[tuple[bytes, bytes]] = []
        stored: list[StoredReading] = []
        duplicates = conflicts = 0
        seq = first = self._seq_now(ARRIVAL)
        for r, key, value in rows:
            existing = stored_before.get(key) or kept.get(key)
            if existing is None:
                kept[key] = value
                seq += 1
                new_items.append((key, value))
                # journal value = readings key + value: (sensor, time, flow, pressure, status)
                journal_items.append((pack_seq(seq), key + value))
                stored.append(stored_of(seq, r))
                continue
            duplicates += 1
            if existing != value:
                f, p, st = VALUES.unpack(existing)
                if not r.same_values(Reading(r.sensor, r.time, optional(f), optional(p), st)):
                    conflicts += 1
        if new_items:
            _, added = txn.cursor(rdb).putmulti(new_items, overwrite=False)
            if added != len(new_items):  # only this transaction writes: cannot happen
                raise StoreError(f"{len(new_items) - added} new reading(s) were already stored")
            _, added = txn.cursor(jdb).putmulti(journal_items, append=True)
            if added != len(journal_items):
                raise StoreError(f"arrivals {first + 1}..{seq} are not past the end of the journal")
            self._seqs[ARRIVAL] = seq
        self.count("duplicates", duplicates)
        self.count("conflicts", conflicts)
        for reject in rejects:
            self._put_reject(reject)
        return IngestResult(stored, duplicates, conflicts)

    def _put_reject(self, reject: RejectRecord) -> None:
        txn, db = self._t(), self._dbs["rejects"]
        append_seq(txn, db, SEQ.pack(self._next(REJECT)),
                pack([float(reject.received), reject.reason, bytes(reject.line)]))
        self.count(f"reject.{reject.reason}")
        self._bounded["rejects"] = self._rejects_max

    def _drop_oldest(self, db: Any, keep: int, sent: int | None = None,
                     published: int | None = None) -> tuple[int, int, int]:
        """Delete the oldest entries beyond ``keep``: (how many, of them keyed after seq
        ``sent``, of them keyed after seq ``published``)."""
        txn = self._t()
        excess = int(txn.stat(db)["entries"]) - keep
        if excess <= 0:
            return 0, 0, 0
        cursor = txn.cursor(db)
        cursor.first()
        unsent = unpublished = 0
        for _ in range(excess):
            if sent is not None or published is not None:
                seq = SEQ.unpack(cursor.key())[0]
                if sent is not None and seq > sent:
                    unsent += 1
                if published is not None and seq > published:
                    unpublished += 1
            cursor.delete()
        return excess, unsent, unpublished

    # outbox --------------------------------------------------------------------

    def append_outbox(self, frame: OutboundFrame) -> int:
        """Keep ``frame`` for sending; returns its sequence number (1, 2, ... never reused).

        The record holds the frame's outbox form (:func:`core.outbox.outbox_form`).

        Beyond ``outbox_max`` entries the oldest are dropped (and counted as
        ``outbox_dropped``) when the batch commits.
        """
        seq = self._next(OUTBOX)
        packer = self._packer
        if packer is None:
            packer = self._packer = new_packer()
        wire, form = self._outbox_wire, outbox_form(frame)
        if wire is None:
            value = packer.pack([self._clock(), 0, form])
        else:
            # The frame packed on its own: a reader unpacks it only if it asks.
            value = packer.pack([self._clock(), 0, packer.pack(form), wire(seq, frame)])
        self._buffer("outbox", SEQ.pack(seq), value)
        self._bounded["outbox"] = self._outbox_max
        return seq

    def _buffer(self, name: str, key: bytes, value: bytes) -> None:
        self._t()  # fail now, not at the end, if the transaction is over
        pending = self._pending.get(name)
        if pending is None:
            pending = self._pending[name] = []
        pending.append((key, value))

    # Reads and changes of a buffered or bounded database within the batch see
    # it as if every put and every trim had been done at once.

    def outbox(self, after: int = 0, limit: int = 100) -> list[OutboxEntry]:
        self._settle("outbox")
        return super().outbox(after, limit)

    def outbox_depth(self) -> int:
        self._settle("outbox")
        return super().outbox_depth()

    def outbox_oldest(self) -> OutboxEntry | None:
        self._settle("outbox")
        return super().outbox_oldest()

    def rejects(self, limit: int = 100) -> list[RejectRecord]:
        self._settle("rejects")
        return super().rejects(limit)

    def detections(self, sensor: SensorId, since: int | None = None,
                   until: int | None = None) -> list[dict[str, Any]]:
        self._settle("detections")
        return super().detections(sensor, since, until)

    def mark_outbox_attempt(self, seq: int) -> None:
        """Count one more send of entry ``seq`` (no-op if it is gone)."""
        self._settle("outbox")
        txn, db, key = self._t(), self._dbs["outbox"], SEQ.pack(seq)
        raw = txn.get(key, db=db)
        if raw is not None:
            rec = unpack(raw)
            rec[1] += 1
            txn.put(key, pack(rec), db=db)

    def delete_outbox(self, seq: int) -> bool:
        """Drop entry ``seq`` (acknowledged); False if it was not there."""
        self._settle("outbox")
        return bool(self._t().delete(SEQ.pack(seq), db=self._dbs["outbox"]))

    def acknowledge_outbox(self, seq: int) -> bool:
        """The serial upstream's ``$ACK`` of entry ``seq``: False if it was not there.

        The entry leaves the outbox once every enabled uplink has it: at once
        without the MQTT uplink or when the broker already acknowledged it,
        else it is marked and left for the MQTT uplink
        (:meth:`release_published_through`).
        """
        if not self._outbox_publisher or self.offset(OUTBOX_PUBLISHER) >= seq:
            return self.delete_outbox(seq)
        self._settle("outbox")
        txn, db, key = self._t(), self._dbs["outbox"], SEQ.pack(seq)
        raw = txn.get(key, db=db)
        if raw is None:
            return False
        rec = unpack(raw)
        rec.extend([None] * (5 - len(rec)))
        rec[4] = True
        txn.put(key, pack(rec), db=db)
        return True

    def release_published_through(self, seq: int, after: int = 0) -> int:
        """The broker has every entry after ``after`` up to ``seq``: drop those the
        serial upstream acknowledged already (:meth:`acknowledge_outbox`); returns
        how many. (Entries up to ``after`` were released when the broker had them.)"""
        self._settle("outbox")
        txn, db = self._t(), self._dbs["outbox"]
        cursor = txn.cursor(db)
        found = cursor.set_range(SEQ.pack(after + 1))
        released = 0
        while found:
            key = cursor.key()
            if not key or SEQ.unpack(key)[0] > seq:  # b"": deleted the last one
                break
            rec = unpack(cursor.value())
            if len(rec) > 4 and rec[4]:
                found = cursor.delete()
                released += 1
            else:
                found = cursor.next()
        return released

    def delete_outbox_through(self, seq: int) -> int:
        """Drop every entry up to and including ``seq``; returns how many."""
        return self._delete_range("outbox", SEQ.pack(0), SEQ.pack(seq + 1) if seq >= 0 else None)

    def _delete_range(self, db: str, start: bytes, end: bytes | None,
                      limit: int | None = None) -> int:
        if end is None:
            return 0
        self._settle(db)
        cursor = self._t().cursor(self._dbs[db])
        deleted = 0
        found = cursor.set_range(start)
        while found and (limit is None or deleted < limit):
            key = cursor.key()
            if not key or key >= end:
                break
            found = cursor.delete()
            deleted += 1
        return deleted

    # detections, night blocks, documents -------------------------------------------

    def put_detection(self, sensor: SensorId, time: int, record: dict[str, Any]) -> None:
        """Store what fired for ``sensor`` at ``time`` (a later put replaces it)."""
        self._buffer("detections", time_key(sensor_number(sensor), int(time)), pack(record))

    def put_night_block(self, sensor: SensorId, start: int, record: dict[str, Any]) -> bool:
        """Store a closed 10-minute night block; False (nothing written) if already there."""
        return bool(self._t().put(time_key(sensor_number(sensor), int(start)), pack(record),
                                  overwrite=False, db=self._dbs["night_blocks"]))

    def put_doc(self, kind: str, key: str, value: Any) -> None:
        self._t().put(doc_key(kind, key), pack(value), db=self._dbs["docs"])

    def delete_doc(self, kind: str, key: str) -> bool:
        return bool(self._t().delete(doc_key(kind, key), db=self._dbs["docs"]))

    def put_records(self, name: str, items: list[tuple[bytes, bytes]], *,
                    overwrite: bool = True) -> int:
        """Write records of database ``name`` as they are (``recover-store``); how many were new."""
        self._settle(name)
        return int(self._t().cursor(self._dbs[name]).putmulti(items, overwrite=overwrite)[1])
