"""Key formats of the store's databases, the fixed-width records, and range scans.

Keys are big-endian so that one sensor's readings sort by time and a range read
(a day, a year) is a single cursor scan; fixed-width records let
:meth:`ReadView.reading_arrays` turn a year into numpy arrays straight from bytes.
"""

from __future__ import annotations

import math
import struct
from itertools import chain, islice
from typing import Any

import lmdb
import numpy as np

from core.types import SensorId
from storage._errors import StoreError, UndecodableRecord

FORMAT_VERSION = 1
# The consumer whose offset is the last outbox seq written to the upstream.
OUTBOX_SENDER = "transmitter"
# The MQTT uplink's cursor: every frame up to it has the broker's PUBACK.
OUTBOX_PUBLISHER = "mqtt"

DB_NAMES = (
    "readings", "journal", "detections", "night_blocks", "docs", "outbox", "rejects", "meta",
)

SENSOR_TIME = struct.Struct(">HQ")
SENSOR = struct.Struct(">H")
SEQ = struct.Struct(">Q")
VALUES = struct.Struct(">ddB")
READING_RECORD = struct.Struct(">HQddB")  # readings key + value, as scanned
JOURNAL_RECORD = struct.Struct(">QHQddB")  # journal key + value, as scanned

READING_DTYPE = np.dtype([
    ("sensor", ">u2"), ("time", ">u8"), ("flow", ">f8"), ("pressure", ">f8"), ("status", "u1"),
])
assert READING_DTYPE.itemsize == READING_RECORD.size

# Scans start small (a short range should not read far past its end) and grow
# so that a year is read in a few dozen C-level chunks.
_FIRST_CHUNK = 256
_MAX_CHUNK = 65_536

NO_VALUE = float("nan")

# Sequence names (meta ``q:<name>``) and the Detector's event times (meta key).
ARRIVAL = "arrival"
EVENT_TIMES = b"event_times"
OUTBOX = "outbox"
REJECT = "reject"


def sensor_number(sensor: str) -> int:
    try:
        number = int(sensor)
    except (TypeError, ValueError):
        raise ValueError(f"sensor id is not a number: {sensor!r}") from None
    if not 0 <= number <= 0xFFFF:
        raise ValueError(f"sensor id out of range: {sensor!r}")
    return number


def sensor_id(number: int) -> SensorId:
    return SensorId(f"{number:03d}")


def time_key(number: int, t: int) -> bytes:
    if t < 0:
        raise ValueError(f"time before 1970 cannot be stored: {t}")
    return SENSOR_TIME.pack(number, t)


def key_range(sensor: str, since: int | None, until: int | None) -> tuple[bytes, bytes | None]:
    """Key range [start, end) of one sensor's [since, until); end None = end of DB."""
    number = sensor_number(sensor)
    start = SENSOR_TIME.pack(number, max(0, since or 0))
    if until is not None:
        return start, SENSOR_TIME.pack(number, max(0, until))
    return start, (SENSOR.pack(number + 1) if number < 0xFFFF else None)


def optional(x: float) -> float | None:
    return None if math.isnan(x) else x


def doc_key(kind: str, key: str) -> bytes:
    if "\x00" in kind:
        raise ValueError(f"document kind must not contain NUL: {kind!r}")
    return kind.encode() + b"\x00" + key.encode()


def scan(
    txn: lmdb.Transaction, db: Any, start: bytes, end: bytes | None, *,
    record: int, key_len: int, values: bool = True, limit: int | None = None,
) -> bytes:
    """Concatenated fixed-width key(+value) records in [start, end), at most ``limit``.

    Iteration and concatenation stay in C (``islice`` + ``bytes.join``) so that
    a year of readings costs a few dozen Python steps, not half a million.
    """
    cursor = txn.cursor(db)
    if not cursor.set_range(start):
        return b""
    items = cursor.iternext(keys=True, values=values)
    parts: list[bytes] = []
    chunk = _FIRST_CHUNK
    remaining = limit
    while remaining is None or remaining > 0:
        n = chunk if remaining is None else min(chunk, remaining)
        taken = islice(items, n)
        blob = b"".join(chain.from_iterable(taken) if values else taken)
        count, rest = divmod(len(blob), record)
        if rest:
            raise UndecodableRecord(f"a reading or journal record is not {record} bytes long")
        last = (count - 1) * record
        if end is not None and count and blob[last:last + key_len] >= end:
            parts.append(blob[:_first_at_or_after(blob, count, end, record, key_len) * record])
            break
        parts.append(blob)
        if count < n:
            break
        if remaining is not None:
            remaining -= count
        chunk = min(chunk * 4, _MAX_CHUNK)
    return b"".join(parts)


def _first_at_or_after(blob: bytes, count: int, end: bytes, record: int, key_len: int) -> int:
    lo, hi = 0, count
    while lo < hi:
        mid = (lo + hi) // 2
        if blob[mid * record:mid * record + key_len] < end:
            lo = mid + 1
        else:
            hi = mid
    return lo


def append_seq(txn: lmdb.Transaction, db: Any, key: bytes, value: bytes) -> None:
    """Put at the end of a sequence-keyed DB; a refusal means the persisted counter is behind."""
    if not txn.put(key, value, append=True, db=db):
        raise StoreError(f"sequence key {key.hex()} is not past the end of its database")
