"""Reads within one transaction: :class:`ReadView`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

import lmdb
import msgpack
import numpy as np

from core.types import (
    EpochSeconds,
    EventTimes,
    Reading,
    SensorId,
    StoredReading,
    new_reading,
    new_stored_reading,
)
from storage._errors import SHAPE_ERRORS, StoreError, UndecodableRecord, decoding, why
from storage._keys import (
    ARRIVAL,
    EVENT_TIMES,
    JOURNAL_RECORD,
    OUTBOX,
    READING_DTYPE,
    READING_RECORD,
    SENSOR,
    SENSOR_TIME,
    SEQ,
    VALUES,
    doc_key,
    key_range,
    optional,
    scan,
    sensor_id,
    sensor_number,
)
from storage._records import (
    OutboxEntry,
    ReadingArrays,
    RejectRecord,
    outbox_entry,
    unpack,
    unpack_map,
)


class ReadView:
    """Reads within one transaction: ``with store.read() as view:``, and every
    :class:`~storage.store.WriteBatch` (which reads what it has written)."""

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, Any]) -> None:
        # None once the transaction ended: the view must not outlive it.
        self._txn: lmdb.Transaction | None = txn
        self._dbs = dbs

    def _t(self) -> lmdb.Transaction:
        if self._txn is None:
            raise StoreError("transaction already ended: act only inside the read() block "
                             "or the transact() call")
        return self._txn

    def _meta_get(self, key: str) -> Any | None:
        raw = self._t().get(key.encode(), db=self._dbs["meta"])
        return None if raw is None else unpack(raw)

    # readings ------------------------------------------------------------------

    def _reading_blob(self, sensor: str, since: int | None, until: int | None) -> bytes:
        start, end = key_range(sensor, since, until)
        return scan(self._t(), self._dbs["readings"], start, end,
                    record=READING_RECORD.size, key_len=SENSOR_TIME.size)

    def readings(self, sensor: SensorId, since: int | None = None,
                 until: int | None = None) -> list[Reading]:
        """One sensor's readings with ``since <= time < until``, ascending."""
        blob = self._reading_blob(sensor, since, until)
        sid = sensor_id(sensor_number(sensor))
        return [Reading(sid, EpochSeconds(t), optional(f), optional(p), st)
                for _, t, f, p, st in READING_RECORD.iter_unpack(blob)]

    def reading_arrays(self, sensor: SensorId, since: int | None = None,
                       until: int | None = None) -> ReadingArrays:
        """As :meth:`readings`, as numpy columns (the fast path for a year)."""
        rows = np.frombuffer(self._reading_blob(sensor, since, until), dtype=READING_DTYPE)
        return ReadingArrays(
            time=rows["time"].astype(np.int64),
            flow=rows["flow"].astype(np.float64),
            pressure=rows["pressure"].astype(np.float64),
            status=rows["status"].astype(np.uint8),
        )

    def count_readings(self, sensor: SensorId, since: int | None = None,
                       until: int | None = None) -> int:
        start, end = key_range(sensor, since, until)
        keys = scan(self._t(), self._dbs["readings"], start, end, record=SENSOR_TIME.size,
                     key_len=SENSOR_TIME.size, values=False)
        return len(keys) // SENSOR_TIME.size

    def _edge_reading(self, sensor: SensorId, *, last: bool) -> Reading | None:
        number = sensor_number(sensor)
        cursor = self._t().cursor(self._dbs["readings"])
        if last:
            if number < 0xFFFF and cursor.set_range(SENSOR.pack(number + 1)):
                found = cursor.prev()
            else:
                found = cursor.last()
        else:
            found = cursor.set_range(SENSOR.pack(number))
        if not found:
            return None
        with decoding():
            n, t = SENSOR_TIME.unpack(cursor.key())
            if n != number:
                return None
            f, p, st = VALUES.unpack(cursor.value())
        return Reading(sensor_id(n), EpochSeconds(t), optional(f), optional(p), st)

    def latest_reading(self, sensor: SensorId) -> Reading | None:
        """The sensor's newest stamp stored, however far ahead (see :meth:`event_time`)."""
        return self._edge_reading(sensor, last=True)

    def first_reading(self, sensor: SensorId) -> Reading | None:
        return self._edge_reading(sensor, last=False)

    def sensors(self) -> list[SensorId]:
        """Every sensor with at least one stored reading, ascending."""
        cursor = self._t().cursor(self._dbs["readings"])
        out: list[SensorId] = []
        found = cursor.first()
        while found:
            (number,) = SENSOR.unpack_from(cursor.key())
            out.append(sensor_id(number))
            if number == 0xFFFF:
                break
            found = cursor.set_range(SENSOR.pack(number + 1))
        return out

    # journal -------------------------------------------------------------------

    def journal(self, after: int, limit: int = 1000) -> list[StoredReading]:
        """Stored readings with arrival > ``after``, in arrival order."""
        blob = scan(self._t(), self._dbs["journal"], SEQ.pack(max(0, after) + 1), None,
                    record=JOURNAL_RECORD.size, key_len=SEQ.size, limit=limit)
        # Catch-up reads whole chunks of the journal: one sensor id string per
        # sensor number, NaN -> None inline, records built without __init__.
        ids: dict[int, SensorId] = {}
        stored_of, reading_of = new_stored_reading, new_reading
        out: list[StoredReading] = []
        for seq, n, t, f, p, st in JOURNAL_RECORD.iter_unpack(blob):
            sid = ids.get(n)
            if sid is None:
                sid = ids[n] = sensor_id(n)
            out.append(stored_of(seq, reading_of(
                sid, t, None if f != f else f, None if p != p else p, st)))
        return out

    def journal_head(self) -> int:
        """The last arrival number allocated (0 when nothing was ever stored)."""
        return self._meta_get(f"q:{ARRIVAL}") or 0

    # rejects, counters, offsets --------------------------------------------------

    def rejects(self, limit: int = 100) -> list[RejectRecord]:
        """The newest ``limit`` rejects, oldest first."""
        cursor = self._t().cursor(self._dbs["rejects"])
        out: list[RejectRecord] = []
        found = cursor.last()
        while found and len(out) < limit:
            with decoding():
                received, reason, line = unpack(cursor.value())
            out.append(RejectRecord(received, reason, line))
            found = cursor.prev()
        out.reverse()
        return out

    def counters(self) -> dict[str, int]:
        with decoding():
            return {key.decode()[2:]: unpack(value)
                    for key, value in self._prefixed(self._dbs["meta"], b"c:")}

    def offset(self, consumer: str) -> int:
        return self._meta_get(f"o:{consumer}") or 0

    def consumer_state(self, consumer: str) -> Any | None:
        return self._meta_get(f"s:{consumer}")

    def peek_sequence(self) -> int:
        """The last outbound sequence number allocated (0 before the first frame)."""
        return self._meta_get(f"q:{OUTBOX}") or 0

    def event_times(self) -> EventTimes:
        """Where the readings put time, as the Detector recorded it (empty before it ran)."""
        raw = self._t().get(EVENT_TIMES, db=self._dbs["meta"])
        if raw is None:
            return EventTimes()
        sensors, ahead = unpack(raw)
        return EventTimes({SensorId(s): EpochSeconds(t) for s, t in sensors.items()}, ahead)

    def event_time(self, sensor: SensorId) -> EpochSeconds | None:
        """The sensor's event time: its newest reading the Detector took in; None before."""
        return self.event_times().sensors.get(sensor)

    # outbox --------------------------------------------------------------------

    def outbox(self, after: int = 0, limit: int = 100) -> list[OutboxEntry]:
        """Kept outbound entries with seq > ``after``, ascending."""
        cursor = self._t().cursor(self._dbs["outbox"])
        if limit <= 0 or not cursor.set_range(SEQ.pack(max(0, after) + 1)):
            return []
        # The transmitter reads every frame once: iterate in C and unpack the
        # values as one stream (each is exactly one msgpack object).
        items = list(islice(cursor.iternext(keys=True, values=True), limit))
        values = msgpack.Unpacker(raw=False, strict_map_key=False,
                                  max_buffer_size=sum(len(v) for _, v in items) + 1)
        values.feed(b"".join([v for _, v in items]))
        unpack_seq, new_entry = SEQ.unpack, OutboxEntry
        try:
            return [new_entry(unpack_seq(key)[0], rec[2], rec[0], rec[1],
                              rec[3] if len(rec) > 3 else None,
                              len(rec) > 4 and bool(rec[4]))
                    for (key, _), rec in zip(items, values, strict=True)]
        except (*SHAPE_ERRORS, msgpack.UnpackException) as exc:
            # One garbled value puts the stream out of step: name the damage.
            raise UndecodableRecord(f"an outbox record cannot be decoded ({why(exc)})") from exc

    def outbox_depth(self) -> int:
        return int(self._t().stat(self._dbs["outbox"])["entries"])

    def outbox_oldest(self) -> OutboxEntry | None:
        cursor = self._t().cursor(self._dbs["outbox"])
        return outbox_entry(cursor.key(), cursor.value()) if cursor.first() else None

    # detections, night blocks, documents -------------------------------------------

    def _records(self, db: str, sensor: SensorId, since: int | None, until: int | None,
                 field: str) -> list[dict[str, Any]]:
        start, end = key_range(sensor, since, until)
        cursor = self._t().cursor(self._dbs[db])
        out: list[dict[str, Any]] = []
        found = cursor.set_range(start)
        while found:
            key = cursor.key()
            if end is not None and key >= end:
                break
            with decoding():
                n, t = SENSOR_TIME.unpack(key)
            out.append({**unpack_map(cursor.value()), "sensor": sensor_id(n), field: t})
            found = cursor.next()
        return out

    def detections(self, sensor: SensorId, since: int | None = None,
                   until: int | None = None) -> list[dict[str, Any]]:
        return self._records("detections", sensor, since, until, "time")

    def night_blocks(self, sensor: SensorId, since: int | None = None,
                     until: int | None = None) -> list[dict[str, Any]]:
        return self._records("night_blocks", sensor, since, until, "start")

    def doc(self, kind: str, key: str) -> Any | None:
        raw = self._t().get(doc_key(kind, key), db=self._dbs["docs"])
        return None if raw is None else unpack(raw)

    def docs(self, kind: str, prefix: str = "", *, after: str = "", newest_first: bool = False,
             limit: int | None = None,
             where: Callable[[Any], bool] | None = None) -> list[tuple[str, Any]]:
        """Documents of ``kind`` whose key starts with ``prefix``, ordered by key.

        Only keys after ``after`` (a whole key, prefix included), only documents
        ``where`` accepts, at most ``limit`` of them; ``newest_first`` reads from
        the last key back, so the newest few cost no scan of the rest.
        """
        head = len(doc_key(kind, ""))
        floor = doc_key(kind, after) if after else b""
        items = self._prefixed(self._dbs["docs"], doc_key(kind, prefix), start=floor,
                               reverse=newest_first)
        out: list[tuple[str, Any]] = []
        for key, value in items:
            if key <= floor:
                if newest_first:
                    break
                continue
            record = unpack(value)
            if where is None or where(record):
                out.append((key[head:].decode(), record))
                if limit is not None and len(out) >= limit:
                    break
        return out

    def _prefixed(self, db: Any, prefix: bytes, start: bytes = b"",
                  reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """Keys with ``prefix`` in order from ``start`` on, or (``reverse``) from the last back."""
        cursor = self._t().cursor(db)
        if not reverse:
            found, step = cursor.set_range(max(prefix, start)), cursor.next
        else:
            # Just past the last key with the prefix: the prefix with its last byte
            # raised (the bytes 0xFF at its end dropped first); without one, the end.
            upper = prefix.rstrip(b"\xff")
            if upper and cursor.set_range(upper[:-1] + bytes([upper[-1] + 1])):
                found = cursor.prev()
            else:
                found = cursor.last()
            step = cursor.prev
        while found:
            key = cursor.key()
            if not key.startswith(prefix):
                return
            yield key, cursor.value()
            found = step()
