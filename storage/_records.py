"""Stored records as Python values: the msgpack codec and the record types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from core.frames import OutboundFrame
from core.outbox import KINDS as _OUTBOUND_KINDS
from core.outbox import outbox_frame
from core.types import StoredReading
from storage._errors import UndecodableRecord, decoding, why
from storage._keys import SEQ


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What one :meth:`Store.ingest` did.

    ``duplicates`` counts every reading whose (sensor, time) was already stored;
    ``conflicts`` is the subset of those carrying different values (the first
    write wins, the later one is only counted).
    """

    stored: list[StoredReading]
    duplicates: int
    conflicts: int


@dataclass(frozen=True, slots=True)
class RejectRecord:
    """An input line the reader refused: wall-clock time, reason, raw bytes."""

    received: float
    reason: str
    line: bytes


_OUTBOUND_FRAMES = tuple(_OUTBOUND_KINDS.values())


class OutboxEntry:
    """An outbound frame kept until sent (and acknowledged when ACK is on).

    ``wire`` is the line it goes out as (None: the store was given no encoder);
    ``frame`` the frame, numbered, decoded on first use: the sender needs the line only.
    ``acked``: the serial upstream acknowledged it; it stays only until the other
    uplinks have it too, and is never resent on the serial line.
    """

    __slots__ = ("_frame", "acked", "attempts", "created", "seq", "wire")

    def __init__(self, seq: int, frame: Any, created: float, attempts: int,
                 wire: bytes | None = None, acked: bool = False) -> None:
        self.seq, self.created, self.attempts, self.wire = seq, created, attempts, wire
        self.acked = acked
        self._frame = frame

    @property
    def frame(self) -> OutboundFrame:
        frame = self._frame
        if not isinstance(frame, _OUTBOUND_FRAMES):
            # Its outbox form, packed (a record with its line) or not (one without).
            form = unpack(frame) if type(frame) is bytes else frame
            if not isinstance(form, dict):
                raise UndecodableRecord(f"an outbox frame is a {type(form).__name__}, not a map")
            with decoding():
                frame = self._frame = outbox_frame(self.seq, form)
        return frame

    def _fields(self) -> tuple[Any, ...]:
        return self.seq, self.frame, self.created, self.attempts, self.wire, self.acked

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OutboxEntry):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"OutboxEntry(seq={self.seq}, frame={self.frame!r}, created={self.created!r}, "
                f"attempts={self.attempts}, wire={self.wire!r}, acked={self.acked})")


@dataclass(frozen=True, slots=True, eq=False)
class ReadingArrays:
    """One sensor's readings as columns; ``flow``/``pressure`` NaN where missing."""

    time: np.ndarray  # int64 epoch seconds, ascending
    flow: np.ndarray  # float64
    pressure: np.ndarray  # float64
    status: np.ndarray  # uint8

    def __len__(self) -> int:
        return len(self.time)


def _plain(obj: Any) -> Any:
    # numpy scalars/arrays reach the store from forecasts and criteria.
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot store a {type(obj).__name__} value")


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True, default=_plain)


def new_packer() -> msgpack.Packer:
    """A reusable packer like :func:`pack` (not thread-safe: one per write batch)."""
    return msgpack.Packer(use_bin_type=True, default=_plain)


def unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        # msgpack raises ExtraData, FormatError, StackError, UnicodeDecodeError...
        raise UndecodableRecord(f"a record cannot be decoded ({why(exc)})") from exc


def unpack_map(data: bytes) -> dict[str, Any]:
    record = unpack(data)
    if not isinstance(record, dict):
        raise UndecodableRecord(f"a record holds a {type(record).__name__}, not a map")
    return record


def outbox_entry(key: bytes, value: bytes) -> OutboxEntry:
    # [created, attempts, frame, wire?, acked?]: older records lack the tail.
    with decoding():
        rec = unpack(value)
        return OutboxEntry(SEQ.unpack(key)[0], rec[2], rec[0], rec[1],
                           rec[3] if len(rec) > 3 else None,
                           bool(rec[4]) if len(rec) > 4 else False)
