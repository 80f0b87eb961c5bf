"""The gateway's LMDB time-series store: the only code that touches LMDB.

One environment, named databases:

=============  ===========================  =====================================
database       key                          value
=============  ===========================  =====================================
readings       ``>HQ`` sensor, epoch s      ``>ddB`` flow, pressure (NaN=missing), status
journal        ``>Q`` arrival seq           ``>HQddB`` the reading (arrival log)
detections     ``>HQ`` sensor, epoch s      msgpack dict
night_blocks   ``>HQ`` sensor, block start  msgpack dict
docs           kind NUL key (utf-8)         msgpack (criteria, forecasts, models...)
outbox         ``>Q`` outbound seq          msgpack ``[created, attempts, frame, line]``
rejects        ``>Q`` reject seq            msgpack ``[received, reason, line]``
meta           ``c:``/``o:``/``s:``/``q:``  msgpack counters, offsets, consumer state,
               name; ``event_times``        sequence counters; the Detector's
                                            ``[{sensor: event time}, ahead]``
=============  ===========================  =====================================

An outbox record holds the frame packed on its own (unpacked only when asked
for) and, given an ``outbox_wire`` encoder, the line it goes out as; records
written without one (``[created, attempts, frame]``) are read alike.

Keys are big-endian so that one sensor's readings sort by time and a range read
(a day, a year) is a single cursor scan; fixed-width records let
:meth:`Store.reading_arrays` turn a year into numpy arrays straight from bytes.

Concurrency: py-lmdb lets any number of read transactions run beside the one
writer. Growing the map (``set_mapsize``) invalidates every transaction of the
process, so every transaction is counted in a per-environment guard and a remap
waits until none is open. LMDB forbids opening one environment twice in a
process, so every :class:`Store` on the same directory in a process shares one
``lmdb.Environment`` (a read-only Store then reads through it).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import logging
import math
import os
import struct
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from time import time as _wall_clock
from typing import Any, TypeVar

import lmdb
import msgpack
import numpy as np

from core.frames import OutboundFrame
from core.outbox import KINDS as _OUTBOUND_KINDS
from core.outbox import outbox_form, outbox_frame
from core.types import (
    EpochSeconds, EventTimes, Reading, SensorId, StoredReading, new_reading, new_stored_reading,
)
from storage.datafile import check_length

log = logging.getLogger(__name__)

T = TypeVar("T")

MB = 1024 * 1024
DAY_S = 86_400
FORMAT_VERSION = 1
# The consumer whose offset is the last outbox seq written to the upstream.
OUTBOX_SENDER = "transmitter"
# The MQTT uplink's cursor: every frame up to it has the broker's PUBACK.
OUTBOX_PUBLISHER = "mqtt"

# LMDB maps the whole store into the process. A 32-bit process (armhf) has 2-3 GB
# of address space, shared with Python, numpy and every thread's stack, so a
# larger map fails to open or to grow there: the map is held to this.
MAP_MAX_32BIT_MB = 1024
POINTER_BITS = struct.calcsize("P") * 8
# Store space a sensor-year takes (readings with their night blocks and
# detections), and a full outbox per 100,000 frames; README "A full disk".
MB_PER_SENSOR_YEAR = 25
OUTBOX_MB_PER_100K_FRAMES = 20


def map_limit_mb(map_max_mb: int, pointer_bits: int = POINTER_BITS) -> int:
    """The largest map this process can hold: ``map_max_mb``, held to 1 GB on 32 bits."""
    return min(map_max_mb, MAP_MAX_32BIT_MB) if pointer_bits < 64 else map_max_mb


def history_sensor_years(map_mb: int, outbox_max: int) -> float:
    """Sensor-years of readings a map of ``map_mb`` holds beside a full outbox."""
    outbox_mb = OUTBOX_MB_PER_100K_FRAMES * outbox_max / 100_000
    return max(0.0, (map_mb - outbox_mb) / MB_PER_SENSOR_YEAR)

_DB_NAMES = (
    "readings", "journal", "detections", "night_blocks", "docs", "outbox", "rejects", "meta",
)

_SENSOR_TIME = struct.Struct(">HQ")
_SENSOR = struct.Struct(">H")
_SEQ = struct.Struct(">Q")
_VALUES = struct.Struct(">ddB")
_READING_RECORD = struct.Struct(">HQddB")  # readings key + value, as scanned
_JOURNAL_RECORD = struct.Struct(">QHQddB")  # journal key + value, as scanned

_READING_DTYPE = np.dtype([
    ("sensor", ">u2"), ("time", ">u8"), ("flow", ">f8"), ("pressure", ">f8"), ("status", "u1"),
])
assert _READING_DTYPE.itemsize == _READING_RECORD.size

# Scans start small (a short range should not read far past its end) and grow
# so that a year is read in a few dozen C-level chunks.
_FIRST_CHUNK = 256
_MAX_CHUNK = 65_536
# Retention and journal trimming delete in transactions of this many keys, so
# that no single commit holds the writer (and the map) for long.
_DELETE_CHUNK = 10_000
# Bound on retries after MapFull/MapResized: each grow doubles the map.
_MAX_ATTEMPTS = 64

_NO_VALUE = float("nan")
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}

_ARRIVAL = "arrival"
_EVENT_TIMES = b"event_times"
_OUTBOX = "outbox"
_REJECT = "reject"


class StoreError(Exception):
    """The store cannot be opened or used; the message says why and where."""


class StoreFullError(StoreError):
    """The map reached ``map_max_mb`` or the disk is full; nothing of that write was kept."""


class StoreDamagedError(StoreError):
    """The store's file or a record in it is damaged: using it again cannot help.

    The message is one line naming the store and what is wrong;
    ``check-store`` lists every problem and ``recover-store`` keeps what can
    still be read (``storage/check.py``).
    """


class UndecodableRecord(StoreDamagedError):
    """A stored record is not in the store's format (named with its store by the Store)."""


# A record that decodes into the wrong shape (a list where a map belongs...).
_SHAPE_ERRORS = (ValueError, TypeError, IndexError, KeyError, struct.error)


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

    __slots__ = ("seq", "created", "attempts", "wire", "acked", "_frame")

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
            form = _unpack(frame) if type(frame) is bytes else frame
            if not isinstance(form, dict):
                raise UndecodableRecord(f"an outbox frame is a {type(form).__name__}, not a map")
            with _decoding():
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


# -- encoding ---------------------------------------------------------------------------


def _sensor_number(sensor: str) -> int:
    try:
        number = int(sensor)
    except (TypeError, ValueError):
        raise ValueError(f"sensor id is not a number: {sensor!r}") from None
    if not 0 <= number <= 0xFFFF:
        raise ValueError(f"sensor id out of range: {sensor!r}")
    return number


def _sensor_id(number: int) -> SensorId:
    return SensorId(f"{number:03d}")


def _time_key(number: int, t: int) -> bytes:
    if t < 0:
        raise ValueError(f"time before 1970 cannot be stored: {t}")
    return _SENSOR_TIME.pack(number, t)


def _range(sensor: str, since: int | None, until: int | None) -> tuple[bytes, bytes | None]:
    """Key range [start, end) of one sensor's [since, until); end None = end of DB."""
    number = _sensor_number(sensor)
    start = _SENSOR_TIME.pack(number, max(0, since or 0))
    if until is not None:
        return start, _SENSOR_TIME.pack(number, max(0, until))
    return start, (_SENSOR.pack(number + 1) if number < 0xFFFF else None)


def _opt(x: float) -> float | None:
    return None if math.isnan(x) else x


def _plain(obj: Any) -> Any:
    # numpy scalars/arrays reach the store from forecasts and criteria.
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot store a {type(obj).__name__} value")


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True, default=_plain)


def _packer() -> msgpack.Packer:
    """A reusable packer like :func:`_pack` (not thread-safe: one per write batch)."""
    return msgpack.Packer(use_bin_type=True, default=_plain)


def _unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        # msgpack raises ExtraData, FormatError, StackError, UnicodeDecodeError...
        raise UndecodableRecord(f"a record cannot be decoded ({_why(exc)})") from exc


def _unpack_map(data: bytes) -> dict[str, Any]:
    record = _unpack(data)
    if not isinstance(record, dict):
        raise UndecodableRecord(f"a record holds a {type(record).__name__}, not a map")
    return record


@contextmanager
def _decoding() -> Iterator[None]:
    """Records read inside are the store's own: a wrong shape is a damaged record."""
    try:
        yield
    except _SHAPE_ERRORS as exc:
        raise UndecodableRecord(f"a record has the wrong shape ({_why(exc)})") from exc


def _why(exc: BaseException) -> str:
    """An exception as a short piece of one line (a decode error may quote bytes)."""
    text = " ".join(str(exc).split())
    text = f"{text[:100]}..." if len(text) > 100 else text
    if isinstance(exc, UndecodableRecord):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _doc_key(kind: str, key: str) -> bytes:
    if "\x00" in kind:
        raise ValueError(f"document kind must not contain NUL: {kind!r}")
    return kind.encode() + b"\x00" + key.encode()


def _scan(
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


def _append(txn: lmdb.Transaction, db: Any, key: bytes, value: bytes) -> None:
    """Put at the end of a sequence-keyed DB; a refusal means the persisted counter is behind."""
    if not txn.put(key, value, append=True, db=db):
        raise StoreError(f"sequence key {key.hex()} is not past the end of its database")


def _errno_of(exc: lmdb.Error) -> int | None:
    code = getattr(exc, "code", None)
    if code is None:
        # py-lmdb 1.4 (Debian bookworm's, used on armhf) gives an errno failure
        # no code, only its text: "mdb_txn_commit: File too large".
        text = str(exc)
        code = next((e for e in (*_FULL_ERRNOS, errno.EIO) if text.endswith(os.strerror(e))),
                    None)
    return code


def _full_error(exc: lmdb.Error, path: Path) -> StoreFullError | None:
    code = _errno_of(exc)
    if isinstance(exc, lmdb.DiskError) or code in _FULL_ERRNOS:
        why = "file size limit reached" if code == errno.EFBIG else "disk full"
    elif code == errno.EIO:
        # LMDB reports a short write (the disk filled up mid-commit) as EIO.
        why = "disk full or failing"
    else:
        return None
    return StoreFullError(
        f"store at {path}: {why} ({exc}); the write was not kept, "
        "free disk space or lower storage.retention_days")


# LMDB's words for a damaged file (MDB_CORRUPTED, MDB_PAGE_NOTFOUND, MDB_INVALID...).
_DAMAGE_ERRORS = (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.InvalidError,
                  lmdb.VersionMismatchError, lmdb.IncompatibleError, lmdb.BadValsizeError)


def _store_error(exc: lmdb.Error | UndecodableRecord, path: Path) -> StoreError:
    if isinstance(exc, (UndecodableRecord, *_DAMAGE_ERRORS)):
        return StoreDamagedError(f"store at {path} is damaged: {_why(exc)}")
    return _full_error(exc, path) or StoreError(f"store at {path}: {exc}")


# -- shared environment -----------------------------------------------------------------


class _SharedEnv:
    """The process's one ``lmdb.Environment`` for a store directory.

    Counts open transactions so that a remap (grow, adopt another process's
    size, upgrade from read-only, close) runs only when none is open: py-lmdb
    invalidates every transaction of the environment on ``set_mapsize``.
    """

    def __init__(self, key: tuple[int, str], path: Path, env: lmdb.Environment, *,
                 writable: bool, sync: bool) -> None:
        self.key = key
        self.path = path
        self.env = env
        self.writable = writable
        self.sync = sync
        self.refs = 0
        self.dbs: dict[str, Any] = {}
        self._cond = threading.Condition()
        self._active = 0
        self._remapping = False
        self._local = threading.local()
        self.pid = key[0]
        # The first damage any Store on this environment met (the supervisor stops on it).
        self.damage: StoreDamagedError | None = None

    @contextmanager
    def using(self) -> Iterator[lmdb.Environment]:
        depth = getattr(self._local, "depth", 0)
        with self._cond:
            # A thread already inside a transaction must not wait for a remap
            # that is itself waiting for that transaction to end.
            while self._remapping and depth == 0:
                self._cond.wait()
            if self.env is None:
                raise StoreError(f"store at {self.path} is closed")
            self._active += 1
        self._local.depth = depth + 1
        try:
            yield self.env
        finally:
            self._local.depth = depth
            with self._cond:
                self._active -= 1
                if self._active == 0:
                    self._cond.notify_all()

    def exclusive(self, op: Callable[[], None]) -> None:
        """Run ``op`` while no transaction of this process is open."""
        if getattr(self._local, "depth", 0):
            raise StoreError(
                f"store at {self.path}: cannot remap while this thread holds a transaction "
                "(a Store call nested inside transact?)")
        with self._cond:
            while self._remapping:
                self._cond.wait()
            self._remapping = True
            try:
                while self._active:
                    self._cond.wait()
                op()
            finally:
                self._remapping = False
                self._cond.notify_all()

    def map_size(self) -> int:
        return int(self.env.info()["map_size"])

    def grow(self, seen: int, max_bytes: int) -> None:
        def op() -> None:
            current = self.map_size()
            if current > seen:
                return  # another thread grew it meanwhile
            if current >= max_bytes:
                raise StoreFullError(
                    f"store at {self.path} is full: map reached map_max_mb={max_bytes // MB} "
                    "(raise storage.map_max_mb if memory allows, or lower "
                    "storage.retention_days); the write was not kept")
            new = min(current * 2, max_bytes)
            self.env.set_mapsize(new)
            log.info("store at %s: map grown from %d to %d MB", self.path, current // MB, new // MB)

        self.exclusive(op)

    def adopt_size(self) -> None:
        """Take the map size another process grew the map to."""
        def op() -> None:
            self.env.set_mapsize(0)
            log.info("store at %s: map size adopted from another process (%d MB)",
                     self.path, self.map_size() // MB)

        self.exclusive(op)


_registry: dict[tuple[int, str], _SharedEnv] = {}
_registry_lock = threading.Lock()


def _initial_map_bytes(path: Path, map_size_mb: int, map_max_mb: int) -> int:
    size = map_size_mb * MB
    data = path / "data.mdb"
    used = data.stat().st_size if data.exists() else 0
    # Reopening a grown store: start with room above what is there, so the
    # first writes do not each pay a grow.
    while size < used * 3 // 2 and size < map_max_mb * MB:
        size *= 2
    return max(size, -(-used // MB) * MB)


_MADV_DONTNEED = 4  # Linux <sys/mman.h>


@functools.cache
def _madvise() -> Callable[[int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


def _reserve_disk(data: Path, nbytes: int) -> None:
    """Allocate the data file's disk blocks up to ``nbytes`` (what is there stays).

    LMDB takes disk space as the store grows; with the blocks allocated up
    front, a disk that other files fill does not stop the store writing. Only
    the file's length changes for LMDB, which writes pages where it likes.
    """
    try:
        fd = os.open(data, os.O_RDWR)
        try:
            if os.fstat(fd).st_size < nbytes:
                os.posix_fallocate(fd, 0, nbytes)
        finally:
            os.close(fd)
    except OSError as exc:
        log.warning("store at %s: could not reserve %d MB of disk (%s); it takes space as it "
                    "grows", data.parent, nbytes // MB, exc.strerror or exc)
        return
    log.info("store at %s: %d MB of disk reserved", data.parent, nbytes // MB)


def _lmdb_open(path: Path, *, readonly: bool, map_bytes: int, sync: bool) -> lmdb.Environment:
    return lmdb.open(
        str(path), map_size=map_bytes, subdir=True, readonly=readonly, create=not readonly,
        max_dbs=len(_DB_NAMES) + 4, max_readers=126, lock=True, sync=sync, metasync=True,
    )


def _check_before_mapping(path: Path) -> None:
    """Refuse a data file LMDB cannot map safely (it would SIGBUS or abort)."""
    data = path / "data.mdb"
    if not data.exists():
        return  # a new store
    try:
        problems = check_length(data)
    except OSError as exc:
        raise StoreError(f"cannot read the store at {path}: {exc.strerror or exc}") from exc
    if problems:
        raise StoreDamagedError(f"store at {path} is damaged: {'; '.join(problems)}")


def _open_dbs(shared: _SharedEnv) -> None:
    env = shared.env
    if shared.writable:
        with env.begin(write=True) as txn:
            shared.dbs = {name: env.open_db(name.encode(), txn=txn, create=True)
                          for name in _DB_NAMES}
            meta = shared.dbs["meta"]
            stored = txn.get(b"format", db=meta)
            if stored is None:
                txn.put(b"format", _pack(FORMAT_VERSION), db=meta)
            elif _unpack(stored) != FORMAT_VERSION:
                raise StoreError(f"store at {shared.path} has format {_unpack(stored)}, "
                                 f"this version reads format {FORMAT_VERSION}")
        # Reader slots of processes that died (a killed CLI, a crashed
        # service) would pin old pages and make the file grow.
        cleared = env.reader_check()
        if cleared:
            log.info("store at %s: cleared %d stale reader slots", shared.path, cleared)
        return
    dbs = {}
    for name in _DB_NAMES:
        # Without a txn argument: py-lmdb ends an explicit read txn by aborting
        # it, which would close handles opened in it.
        try:
            dbs[name] = env.open_db(name.encode(), create=False)
        except lmdb.NotFoundError:
            raise StoreError(f"store at {shared.path} lacks the {name!r} database: "
                             "not created by this gateway?") from None
    with env.begin() as txn:
        stored = txn.get(b"format", db=dbs["meta"])
    if stored is not None and _unpack(stored) != FORMAT_VERSION:
        raise StoreError(f"store at {shared.path} has format {_unpack(stored)}, "
                         f"this version reads format {FORMAT_VERSION}")
    shared.dbs = dbs


def _acquire(path: Path, *, readonly: bool, map_bytes: int, sync: bool) -> _SharedEnv:
    key = (os.getpid(), str(path.resolve()))
    with _registry_lock:
        shared = _registry.get(key)
        if shared is None:
            _check_before_mapping(path)
            env = _lmdb_open(path, readonly=readonly, map_bytes=0 if readonly else map_bytes,
                             sync=sync)
            shared = _SharedEnv(key, path, env, writable=not readonly, sync=sync)
            try:
                _open_dbs(shared)
            except BaseException:
                env.close()
                raise
            _registry[key] = shared
        elif not readonly and not shared.writable:
            _upgrade(shared, map_bytes, sync)
        shared.refs += 1
        return shared


def _upgrade(shared: _SharedEnv, map_bytes: int, sync: bool) -> None:
    """A writer opens where this process only had read-only Stores: reopen writable."""
    def op() -> None:
        shared.env.close()
        try:
            shared.env = _lmdb_open(shared.path, readonly=False, map_bytes=map_bytes, sync=sync)
            shared.writable, shared.sync = True, sync
            _open_dbs(shared)
        except BaseException:
            # Leave the read-only Stores working.
            if shared.writable:
                shared.env.close()
            shared.env = _lmdb_open(shared.path, readonly=True, map_bytes=0, sync=shared.sync)
            shared.writable = False
            _open_dbs(shared)
            raise

    shared.exclusive(op)


def _release(shared: _SharedEnv) -> None:
    with _registry_lock:
        shared.refs -= 1
        if shared.refs:
            return
        _registry.pop(shared.key, None)

        def op() -> None:
            env, shared.env = shared.env, None
            env.close()

        shared.exclusive(op)


# -- transactions -----------------------------------------------------------------------


class ReadView:
    """Reads within one transaction; the Store's read methods and WriteBatch use it."""

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, Any]) -> None:
        self._txn = txn
        self._dbs = dbs

    def _t(self) -> lmdb.Transaction:
        if self._txn is None:
            raise StoreError("transaction already ended: act only inside the transact() call")
        return self._txn

    def _meta_get(self, key: str) -> Any | None:
        raw = self._t().get(key.encode(), db=self._dbs["meta"])
        return None if raw is None else _unpack(raw)

    # readings ------------------------------------------------------------------

    def _reading_blob(self, sensor: str, since: int | None, until: int | None) -> bytes:
        start, end = _range(sensor, since, until)
        return _scan(self._t(), self._dbs["readings"], start, end,
                     record=_READING_RECORD.size, key_len=_SENSOR_TIME.size)

    def readings(self, sensor: SensorId, since: int | None = None,
                 until: int | None = None) -> list[Reading]:
        blob = self._reading_blob(sensor, since, until)
        sid = _sensor_id(_sensor_number(sensor))
        return [Reading(sid, EpochSeconds(t), _opt(f), _opt(p), st)
                for _, t, f, p, st in _READING_RECORD.iter_unpack(blob)]

    def reading_arrays(self, sensor: SensorId, since: int | None = None,
                       until: int | None = None) -> ReadingArrays:
        rows = np.frombuffer(self._reading_blob(sensor, since, until), dtype=_READING_DTYPE)
        return ReadingArrays(
            time=rows["time"].astype(np.int64),
            flow=rows["flow"].astype(np.float64),
            pressure=rows["pressure"].astype(np.float64),
            status=rows["status"].astype(np.uint8),
        )

    def count_readings(self, sensor: SensorId, since: int | None = None,
                       until: int | None = None) -> int:
        start, end = _range(sensor, since, until)
        keys = _scan(self._t(), self._dbs["readings"], start, end, record=_SENSOR_TIME.size,
                     key_len=_SENSOR_TIME.size, values=False)
        return len(keys) // _SENSOR_TIME.size

    def _edge_reading(self, sensor: SensorId, *, last: bool) -> Reading | None:
        number = _sensor_number(sensor)
        cursor = self._t().cursor(self._dbs["readings"])
        if last:
            if number < 0xFFFF and cursor.set_range(_SENSOR.pack(number + 1)):
                found = cursor.prev()
            else:
                found = cursor.last()
        else:
            found = cursor.set_range(_SENSOR.pack(number))
        if not found:
            return None
        with _decoding():
            n, t = _SENSOR_TIME.unpack(cursor.key())
            if n != number:
                return None
            f, p, st = _VALUES.unpack(cursor.value())
        return Reading(_sensor_id(n), EpochSeconds(t), _opt(f), _opt(p), st)

    def latest_reading(self, sensor: SensorId) -> Reading | None:
        return self._edge_reading(sensor, last=True)

    def first_reading(self, sensor: SensorId) -> Reading | None:
        return self._edge_reading(sensor, last=False)

    def sensors(self) -> list[SensorId]:
        cursor = self._t().cursor(self._dbs["readings"])
        out: list[SensorId] = []
        found = cursor.first()
        while found:
            (number,) = _SENSOR.unpack_from(cursor.key())
            out.append(_sensor_id(number))
            if number == 0xFFFF:
                break
            found = cursor.set_range(_SENSOR.pack(number + 1))
        return out

    # journal -------------------------------------------------------------------

    def journal(self, after: int, limit: int = 1000) -> list[StoredReading]:
        blob = _scan(self._t(), self._dbs["journal"], _SEQ.pack(max(0, after) + 1), None,
                     record=_JOURNAL_RECORD.size, key_len=_SEQ.size, limit=limit)
        # Catch-up reads whole chunks of the journal: one sensor id string per
        # sensor number, NaN -> None inline, records built without __init__.
        ids: dict[int, SensorId] = {}
        new_stored, new = new_stored_reading, new_reading
        out: list[StoredReading] = []
        for seq, n, t, f, p, st in _JOURNAL_RECORD.iter_unpack(blob):
            sid = ids.get(n)
            if sid is None:
                sid = ids[n] = _sensor_id(n)
            out.append(new_stored(seq, new(
                sid, t, None if f != f else f, None if p != p else p, st)))
        return out

    def journal_head(self) -> int:
        return self._meta_get(f"q:{_ARRIVAL}") or 0

    # rejects, counters, offsets --------------------------------------------------

    def rejects(self, limit: int = 100) -> list[RejectRecord]:
        cursor = self._t().cursor(self._dbs["rejects"])
        out: list[RejectRecord] = []
        found = cursor.last()
        while found and len(out) < limit:
            with _decoding():
                received, reason, line = _unpack(cursor.value())
            out.append(RejectRecord(received, reason, line))
            found = cursor.prev()
        out.reverse()
        return out

    def counters(self) -> dict[str, int]:
        with _decoding():
            return {key.decode()[2:]: _unpack(value)
                    for key, value in self._prefixed(self._dbs["meta"], b"c:")}

    def offset(self, consumer: str) -> int:
        return self._meta_get(f"o:{consumer}") or 0

    def consumer_state(self, consumer: str) -> Any | None:
        return self._meta_get(f"s:{consumer}")

    def peek_sequence(self) -> int:
        """The last outbound sequence number allocated (0 before the first frame)."""
        return self._meta_get(f"q:{_OUTBOX}") or 0

    def event_times(self) -> EventTimes:
        raw = self._t().get(_EVENT_TIMES, db=self._dbs["meta"])
        if raw is None:
            return EventTimes()
        sensors, ahead = _unpack(raw)
        return EventTimes({SensorId(s): EpochSeconds(t) for s, t in sensors.items()}, ahead)

    # outbox --------------------------------------------------------------------

    def outbox(self, after: int = 0, limit: int = 100) -> list[OutboxEntry]:
        cursor = self._t().cursor(self._dbs["outbox"])
        if limit <= 0 or not cursor.set_range(_SEQ.pack(max(0, after) + 1)):
            return []
        # The transmitter reads every frame once: iterate in C and unpack the
        # values as one stream (each is exactly one msgpack object).
        items = list(islice(cursor.iternext(keys=True, values=True), limit))
        values = msgpack.Unpacker(raw=False, strict_map_key=False,
                                  max_buffer_size=sum(len(v) for _, v in items) + 1)
        values.feed(b"".join([v for _, v in items]))
        unpack_seq, new_entry = _SEQ.unpack, OutboxEntry
        try:
            return [new_entry(unpack_seq(key)[0], rec[2], rec[0], rec[1],
                              rec[3] if len(rec) > 3 else None,
                              len(rec) > 4 and bool(rec[4]))
                    for (key, _), rec in zip(items, values, strict=True)]
        except (*_SHAPE_ERRORS, msgpack.UnpackException) as exc:
            # One garbled value puts the stream out of step: name the damage.
            raise UndecodableRecord(f"an outbox record cannot be decoded ({_why(exc)})") from exc

    def outbox_depth(self) -> int:
        return int(self._t().stat(self._dbs["outbox"])["entries"])

    def outbox_oldest(self) -> OutboxEntry | None:
        cursor = self._t().cursor(self._dbs["outbox"])
        return _outbox_entry(cursor.key(), cursor.value()) if cursor.first() else None

    # detections, night blocks, documents -------------------------------------------

    def _records(self, db: str, sensor: SensorId, since: int | None, until: int | None,
                 field: str) -> list[dict[str, Any]]:
        start, end = _range(sensor, since, until)
        cursor = self._t().cursor(self._dbs[db])
        out: list[dict[str, Any]] = []
        found = cursor.set_range(start)
        while found:
            key = cursor.key()
            if end is not None and key >= end:
                break
            with _decoding():
                n, t = _SENSOR_TIME.unpack(key)
            out.append({**_unpack_map(cursor.value()), "sensor": _sensor_id(n), field: t})
            found = cursor.next()
        return out

    def detections(self, sensor: SensorId, since: int | None = None,
                   until: int | None = None) -> list[dict[str, Any]]:
        return self._records("detections", sensor, since, until, "time")

    def night_blocks(self, sensor: SensorId, since: int | None = None,
                     until: int | None = None) -> list[dict[str, Any]]:
        return self._records("night_blocks", sensor, since, until, "start")

    def doc(self, kind: str, key: str) -> Any | None:
        raw = self._t().get(_doc_key(kind, key), db=self._dbs["docs"])
        return None if raw is None else _unpack(raw)

    def docs(self, kind: str, prefix: str = "", *, after: str = "", newest_first: bool = False,
             limit: int | None = None,
             where: Callable[[Any], bool] | None = None) -> list[tuple[str, Any]]:
        head = len(_doc_key(kind, ""))
        floor = _doc_key(kind, after) if after else b""
        items = self._prefixed(self._dbs["docs"], _doc_key(kind, prefix), start=floor,
                               reverse=newest_first)
        out: list[tuple[str, Any]] = []
        for key, value in items:
            if key <= floor:
                if newest_first:
                    break
                continue
            record = _unpack(value)
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


def _outbox_entry(key: bytes, value: bytes) -> OutboxEntry:
    # [created, attempts, frame, wire?, acked?]: older records lack the tail.
    with _decoding():
        rec = _unpack(value)
        return OutboxEntry(_SEQ.unpack(key)[0], rec[2], rec[0], rec[1],
                           rec[3] if len(rec) > 3 else None,
                           bool(rec[4]) if len(rec) > 4 else False)


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
        return self._seq_now(_ARRIVAL)

    def peek_sequence(self) -> int:
        """The last outbound sequence number allocated, including this batch's."""
        return self._seq_now(_OUTBOX)

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
            txn.put(key, _pack((0 if raw is None else _unpack(raw)) + n), db=meta)
        for name, value in self._seqs.items():
            txn.put(f"q:{name}".encode(), _pack(value), db=meta)

    # offsets --------------------------------------------------------------------

    def set_offset(self, consumer: str, offset: int, state: Any = None) -> None:
        """Record how far ``consumer`` got; ``state`` None leaves its stored state as is."""
        txn, meta = self._t(), self._dbs["meta"]
        txn.put(f"o:{consumer}".encode(), _pack(int(offset)), db=meta)
        if state is not None:
            txn.put(f"s:{consumer}".encode(), _pack(state), db=meta)

    def set_event_times(self, times: EventTimes) -> None:
        """Record where the readings put time (the Detector, with its offset)."""
        self._t().put(_EVENT_TIMES, _pack([dict(times.sensors), times.ahead]),
                      db=self._dbs["meta"])

    # ingest --------------------------------------------------------------------

    def _ingest(self, readings: Sequence[Reading], rejects: Sequence[RejectRecord]) -> IngestResult:
        txn, rdb, jdb = self._t(), self._dbs["readings"], self._dbs["journal"]
        # The hot path of a replay (half a million readings a year per sensor):
        # locals instead of attribute look-ups, one sensor parse per batch, and
        # LMDB asked three times per batch (getmulti, putmulti x2) instead of
        # twice per reading: each call releases the GIL (see WriteBatch).
        pack_key, pack_values, pack_seq = _SENSOR_TIME.pack, _VALUES.pack, _SEQ.pack
        new_stored = new_stored_reading
        numbers: dict[str, int] = {}
        rows: list[tuple[Reading, bytes, bytes]] = []
        for r in readings:
            number = numbers.get(r.sensor)
            if number is None:
                number = numbers[r.sensor] = _sensor_number(r.sensor)
            t = int(r.time)
            key = pack_key(number, t) if t >= 0 else _time_key(number, t)  # raises
            value = pack_values(_NO_VALUE if r.flow is None else r.flow,
                                _NO_VALUE if r.pressure is None else r.pressure, r.status)
            rows.append((r, key, value))
        stored_before = dict(txn.cursor(rdb).getmulti([key for _, key, _ in rows])) if rows else {}
        kept: dict[bytes, bytes] = {}  # this batch's new readings: the first write wins
        new_items: list[tuple[bytes, bytes]] = []
        journal_items: list[tuple[bytes, bytes]] = []
        stored: list[StoredReading] = []
        duplicates = conflicts = 0
        seq = first = self._seq_now(_ARRIVAL)
        for r, key, value in rows:
            existing = stored_before.get(key) or kept.get(key)
            if existing is None:
                kept[key] = value
                seq += 1
                new_items.append((key, value))
                # journal value = readings key + value: (sensor, time, flow, pressure, status)
                journal_items.append((pack_seq(seq), key + value))
                stored.append(new_stored(seq, r))
                continue
            duplicates += 1
            if existing != value:
                f, p, st = _VALUES.unpack(existing)
                if not r.same_values(Reading(r.sensor, r.time, _opt(f), _opt(p), st)):
                    conflicts += 1
        if new_items:
            _, added = txn.cursor(rdb).putmulti(new_items, overwrite=False)
            if added != len(new_items):  # only this transaction writes: cannot happen
                raise StoreError(f"{len(new_items) - added} new reading(s) were already stored")
            _, added = txn.cursor(jdb).putmulti(journal_items, append=True)
            if added != len(journal_items):
                raise StoreError(f"arrivals {first + 1}..{seq} are not past the end of the journal")
            self._seqs[_ARRIVAL] = seq
        self.count("duplicates", duplicates)
        self.count("conflicts", conflicts)
        for reject in rejects:
            self._put_reject(reject)
        return IngestResult(stored, duplicates, conflicts)

    def _put_reject(self, reject: RejectRecord) -> None:
        txn, db = self._t(), self._dbs["rejects"]
        _append(txn, db, _SEQ.pack(self._next(_REJECT)),
                _pack([float(reject.received), reject.reason, bytes(reject.line)]))
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
                seq = _SEQ.unpack(cursor.key())[0]
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
        seq = self._next(_OUTBOX)
        packer = self._packer
        if packer is None:
            packer = self._packer = _packer()
        wire, form = self._outbox_wire, outbox_form(frame)
        if wire is None:
            value = packer.pack([self._clock(), 0, form])
        else:
            # The frame packed on its own: a reader unpacks it only if it asks.
            value = packer.pack([self._clock(), 0, packer.pack(form), wire(seq, frame)])
        self._buffer("outbox", _SEQ.pack(seq), value)
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
        txn, db, key = self._t(), self._dbs["outbox"], _SEQ.pack(seq)
        raw = txn.get(key, db=db)
        if raw is not None:
            rec = _unpack(raw)
            rec[1] += 1
            txn.put(key, _pack(rec), db=db)

    def delete_outbox(self, seq: int) -> bool:
        """Drop entry ``seq`` (acknowledged); False if it was not there."""
        self._settle("outbox")
        return bool(self._t().delete(_SEQ.pack(seq), db=self._dbs["outbox"]))

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
        txn, db, key = self._t(), self._dbs["outbox"], _SEQ.pack(seq)
        raw = txn.get(key, db=db)
        if raw is None:
            return False
        rec = _unpack(raw)
        rec.extend([None] * (5 - len(rec)))
        rec[4] = True
        txn.put(key, _pack(rec), db=db)
        return True

    def release_published_through(self, seq: int, after: int = 0) -> int:
        """The broker has every entry after ``after`` up to ``seq``: drop those the
        serial upstream acknowledged already (:meth:`acknowledge_outbox`); returns
        how many. (Entries up to ``after`` were released when the broker had them.)"""
        self._settle("outbox")
        txn, db = self._t(), self._dbs["outbox"]
        cursor = txn.cursor(db)
        found = cursor.set_range(_SEQ.pack(after + 1))
        released = 0
        while found:
            key = cursor.key()
            if not key or _SEQ.unpack(key)[0] > seq:  # b"": deleted the last one
                break
            rec = _unpack(cursor.value())
            if len(rec) > 4 and rec[4]:
                found = cursor.delete()
                released += 1
            else:
                found = cursor.next()
        return released

    def delete_outbox_through(self, seq: int) -> int:
        """Drop every entry up to and including ``seq``; returns how many."""
        return self._delete_range("outbox", _SEQ.pack(0), _SEQ.pack(seq + 1) if seq >= 0 else None)

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
        self._buffer("detections", _time_key(_sensor_number(sensor), int(time)), _pack(record))

    def put_night_block(self, sensor: SensorId, start: int, record: dict[str, Any]) -> bool:
        """Store a closed 10-minute night block; False (nothing written) if already there."""
        return bool(self._t().put(_time_key(_sensor_number(sensor), int(start)), _pack(record),
                                  overwrite=False, db=self._dbs["night_blocks"]))

    def put_doc(self, kind: str, key: str, value: Any) -> None:
        self._t().put(_doc_key(kind, key), _pack(value), db=self._dbs["docs"])

    def delete_doc(self, kind: str, key: str) -> bool:
        return bool(self._t().delete(_doc_key(kind, key), db=self._dbs["docs"]))

    def put_records(self, name: str, items: list[tuple[bytes, bytes]], *,
                    overwrite: bool = True) -> int:
        """Write records of database ``name`` as they are (``recover-store``); how many were new."""
        self._settle(name)
        return int(self._t().cursor(self._dbs[name]).putmulti(items, overwrite=overwrite)[1])


# -- the store --------------------------------------------------------------------------


class Store:
    """The gateway's persistent state in one LMDB environment (see the module docstring).

    Every method runs its own short transaction: safe to call from several
    threads. ``readonly=True`` is for other processes (CLI, trainer) while the
    service writes: it never creates anything.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, readonly: bool = False, map_size_mb: int = 64,
        map_max_mb: int = 1024, rejects_max: int = 1000, outbox_max: int = 100_000,
        sync: bool = True, clock: Callable[[], float] | None = None, reserve_mb: int = 0,
        outbox_wire: Callable[[int, OutboundFrame], bytes] | None = None,
        outbox_publisher: bool = False,
    ) -> None:
        self.path = Path(path)
        self.readonly = readonly
        if map_size_mb < 1 or map_max_mb < map_size_mb:
            raise ValueError(f"need 1 <= map_size_mb ({map_size_mb}) <= map_max_mb ({map_max_mb})")
        limit = map_limit_mb(map_max_mb, POINTER_BITS)
        if limit < map_max_mb and not readonly:
            log.warning("store at %s: a %d-bit process cannot map %d MB: map_max_mb held to %d MB",
                        path, POINTER_BITS, map_max_mb, limit)
        map_max_mb, map_size_mb = limit, min(map_size_mb, limit)
        self._max_bytes = map_max_mb * MB
        self._rejects_max = rejects_max
        self._outbox_max = outbox_max
        self._clock = clock or _wall_clock
        self._outbox_wire = outbox_wire
        # The MQTT uplink is on: a frame stays until the broker has it too.
        self._outbox_publisher = outbox_publisher
        if readonly:
            if not (self.path / "data.mdb").is_file():
                raise StoreError(f"no store at {self.path}")
        else:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the store directory {self.path}: {exc}") from exc
        try:
            self._shared: _SharedEnv | None = _acquire(
                self.path, readonly=readonly, sync=sync,
                map_bytes=_initial_map_bytes(self.path, map_size_mb, map_max_mb),
            )
        except (lmdb.Error, UndecodableRecord) as exc:
            if isinstance(exc, (UndecodableRecord, *_DAMAGE_ERRORS)):
                raise _store_error(exc, self.path) from exc
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from exc
        if reserve_mb and not readonly:
            _reserve_disk(self.path / "data.mdb", reserve_mb * MB)

    # lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        """Release the environment (closed when the process's last Store on it closes)."""
        shared, self._shared = self._shared, None
        if shared is not None:
            _release(shared)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _env(self) -> _SharedEnv:
        shared = self._shared
        if shared is None:
            raise StoreError(f"store at {self.path} is closed")
        if shared.pid != os.getpid():
            raise StoreError("an LMDB store must not be used across fork(): open it in the child")
        return shared

    # transactions --------------------------------------------------------------

    def _read(self, fn: Callable[[ReadView], T]) -> T:
        shared = self._env()
        for _ in range(_MAX_ATTEMPTS):
            try:
                with shared.using() as env, env.begin() as txn:
                    view = ReadView(txn, shared.dbs)
                    try:
                        return fn(view)
                    finally:
                        view._txn = None
            except lmdb.MapResizedError:
                shared.adopt_size()
            except (lmdb.Error, UndecodableRecord) as exc:
                raise self._failed(shared, exc) from exc
        raise StoreError(f"store at {self.path}: map kept changing size while reading")

    def _failed(self, shared: _SharedEnv, exc: lmdb.Error | UndecodableRecord) -> StoreError:
        """``exc`` as the store's error; a damaged store is remembered (:attr:`damage`)."""
        error = _store_error(exc, self.path)
        if isinstance(error, StoreDamagedError) and shared.damage is None:
            shared.damage = error
        return error

    @property
    def damage(self) -> StoreDamagedError | None:
        """The first damage met by any Store of this process on this store, if any."""
        shared = self._shared
        return None if shared is None else shared.damage

    def transact(self, fn: Callable[[WriteBatch], T]) -> T:
        """Run ``fn`` in one write transaction; commit when it returns, abort if it raises.

        If the map fills, the transaction is aborted, the map doubled (up to
        ``map_max_mb``) and ``fn`` called again: it must act only through the batch.
        """
        shared = self._env()
        if self.readonly:
            raise StoreError(f"store at {self.path} is open read-only")
        for _ in range(_MAX_ATTEMPTS):
            seen = 0
            try:
                with shared.using() as env:
                    seen = shared.map_size()
                    txn = env.begin(write=True)
                    batch = WriteBatch(txn, shared.dbs, rejects_max=self._rejects_max,
                                       outbox_max=self._outbox_max, clock=self._clock,
                                       outbox_wire=self._outbox_wire,
                                       outbox_publisher=self._outbox_publisher)
                    try:
                        result = fn(batch)
                        batch._flush()
                        txn.commit()
                        return result
                    except BaseException:
                        txn.abort()
                        raise
                    finally:
                        batch._txn = None
            except lmdb.MapFullError:
                shared.grow(seen, self._max_bytes)
            except lmdb.MapResizedError:
                shared.adopt_size()
            except (lmdb.Error, UndecodableRecord) as exc:
                raise self._failed(shared, exc) from exc
        raise StoreError(f"store at {self.path}: could not commit after {_MAX_ATTEMPTS} remaps")

    # ingest --------------------------------------------------------------------

    def ingest(self, readings: Sequence[Reading],
               rejects: Sequence[RejectRecord] = ()) -> IngestResult:
        """Store new readings and rejects in one transaction (group commit).

        A (sensor, time) already stored is not written again (first write wins)
        and gets no arrival number; it is counted as a duplicate, and as a
        conflict too when its values differ.
        """
        return self.transact(lambda batch: batch._ingest(readings, rejects))

    # maintenance -----------------------------------------------------------------

    def apply_retention(self, retention_days: int) -> int:
        """Delete what is older than ``retention_days`` before each sensor's event time.

        Event time (:meth:`event_times`), not the newest stamp stored: a replay
        of old history keeps its year, and one reading stamped years ahead
        deletes nothing. A sensor without an event time yet (the Detector has
        not processed it) is left alone. Readings, detections and night blocks;
        in transactions of bounded size. Returns the number of records deleted.
        """
        if retention_days < 1:
            raise ValueError(f"retention_days must be at least 1, not {retention_days}")
        deleted = 0
        for sensor, event_time in self.event_times().sensors.items():
            cutoff = event_time - retention_days * DAY_S
            if cutoff <= 0:
                continue
            start, end = _range(sensor, 0, cutoff)
            for db in ("readings", "detections", "night_blocks"):
                deleted += self._delete_chunked(db, start, end)
        if deleted:
            log.info("store at %s: retention deleted %d records", self.path, deleted)
        return deleted

    def trim_journal(self, through: int) -> int:
        """Delete journal entries with arrival <= ``through``; returns how many."""
        if through < 1:
            return 0
        return self._delete_chunked("journal", _SEQ.pack(0), _SEQ.pack(through + 1))

    def _delete_chunked(self, db: str, start: bytes, end: bytes | None) -> int:
        total = 0
        while True:
            n = self.transact(lambda b: b._delete_range(db, start, end, _DELETE_CHUNK))
            total += n
            if n < _DELETE_CHUNK:
                return total

    # reads ---------------------------------------------------------------------

    def readings(self, sensor: SensorId, since: int | None = None,
                 until: int | None = None) -> list[Reading]:
        """One sensor's readings with ``since <= time < until``, ascending."""
        return self._read(lambda v: v.readings(sensor, since, until))

    def reading_arrays(self, sensor: SensorId, since: int | None = None,
                       until: int | None = None) -> ReadingArrays:
        """As :meth:`readings`, as numpy columns (the fast path for a year)."""
        return self._read(lambda v: v.reading_arrays(sensor, since, until))

    def count_readings(self, sensor: SensorId, since: int | None = None,
                       until: int | None = None) -> int:
        return self._read(lambda v: v.count_readings(sensor, since, until))

    def latest_reading(self, sensor: SensorId) -> Reading | None:
        """The sensor's newest stamp stored, however far ahead (see :meth:`event_time`)."""
        return self._read(lambda v: v.latest_reading(sensor))

    def first_reading(self, sensor: SensorId) -> Reading | None:
        return self._read(lambda v: v.first_reading(sensor))

    def sensors(self) -> list[SensorId]:
        """Every sensor with at least one stored reading, ascending."""
        return self._read(lambda v: v.sensors())

    def journal(self, after: int, limit: int = 1000) -> list[StoredReading]:
        """Stored readings with arrival > ``after``, in arrival order."""
        return self._read(lambda v: v.journal(after, limit))

    def journal_head(self) -> int:
        """The last arrival number allocated (0 when nothing was ever stored)."""
        return self._read(lambda v: v.journal_head())

    def rejects(self, limit: int = 100) -> list[RejectRecord]:
        """The newest ``limit`` rejects, oldest first."""
        return self._read(lambda v: v.rejects(limit))

    def counters(self) -> dict[str, int]:
        return self._read(lambda v: v.counters())

    def offset(self, consumer: str) -> int:
        return self._read(lambda v: v.offset(consumer))

    def consumer_state(self, consumer: str) -> Any | None:
        return self._read(lambda v: v.consumer_state(consumer))

    def event_times(self) -> EventTimes:
        """Where the readings put time, as the Detector recorded it (empty before it ran)."""
        return self._read(lambda v: v.event_times())

    def event_time(self, sensor: SensorId) -> EpochSeconds | None:
        """The sensor's event time: its newest reading the Detector took in; None before."""
        return self.event_times().sensors.get(sensor)

    def outbox(self, after: int = 0, limit: int = 100) -> list[OutboxEntry]:
        """Kept outbound entries with seq > ``after``, ascending."""
        return self._read(lambda v: v.outbox(after, limit))

    def outbox_depth(self) -> int:
        return self._read(lambda v: v.outbox_depth())

    def outbox_oldest(self) -> OutboxEntry | None:
        return self._read(lambda v: v.outbox_oldest())

    def peek_outbox_seq(self) -> int:
        """The last outbound sequence number allocated (0 before the first frame)."""
        return self._read(lambda v: v.peek_sequence())

    def detections(self, sensor: SensorId, since: int | None = None,
                   until: int | None = None) -> list[dict[str, Any]]:
        return self._read(lambda v: v.detections(sensor, since, until))

    def night_blocks(self, sensor: SensorId, since: int | None = None,
                     until: int | None = None) -> list[dict[str, Any]]:
        return self._read(lambda v: v.night_blocks(sensor, since, until))

    def doc(self, kind: str, key: str) -> Any | None:
        return self._read(lambda v: v.doc(kind, key))

    def docs(self, kind: str, prefix: str = "", *, after: str = "", newest_first: bool = False,
             limit: int | None = None,
             where: Callable[[Any], bool] | None = None) -> list[tuple[str, Any]]:
        """Documents of ``kind`` whose key starts with ``prefix``, ordered by key.

        Only keys after ``after`` (a whole key, prefix included), only documents
        ``where`` accepts, at most ``limit`` of them; ``newest_first`` reads from
        the last key back, so the newest few cost no scan of the rest.
        """
        return self._read(lambda v: v.docs(kind, prefix, after=after, newest_first=newest_first,
                                           limit=limit, where=where))

    def used_pct(self) -> float:
        """Pages in use as a percentage of what the store may grow to (the map's maximum).

        Relative to ``map_max_mb`` rather than the current map, which doubles
        on demand: an operator needs to see how close the store is to full.
        """
        shared = self._env()
        with shared.using() as env:
            info, psize = env.info(), env.stat()["psize"]
        capacity = max(int(info["map_size"]), self._max_bytes)
        return 100.0 * (int(info["last_pgno"]) + 1) * psize / capacity

    def release_mapped_pages(self) -> int:
        """Drop the store's pages from this process's resident memory; returns bytes advised.

        LMDB reads through a shared, read-only mapping of the data file, so every
        page ever read stays counted in the process's RSS until the kernel wants
        the memory back: RSS would grow with the store, hiding the service's own
        memory. ``madvise(MADV_DONTNEED)`` on that mapping drops the page-table
        entries only; the pages stay in the page cache and the next read maps
        them again. Safe on a read-only file mapping (nothing there is dirty);
        done while a transaction slot is held, so no remap moves the mapping
        meanwhile. Linux only; elsewhere nothing happens.
        """
        madvise = _madvise()
        if madvise is None:
            return 0
        shared = self._env()
        data = str((self.path / "data.mdb").resolve())
        advised = 0
        with shared.using():
            try:
                maps = Path("/proc/self/maps").read_text()
            except OSError:
                return 0
            for line in maps.splitlines():
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5] == data and "w" not in fields[1]:
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    if madvise(start, end - start, _MADV_DONTNEED) == 0:
                        advised += end - start
        return advised

    def reserve_left(self) -> int:
        """Bytes of the data file not yet used by pages: room the disk cannot take away.

        The file is as long as the space reserved for it (``reserve_mb``) or the
        pages LMDB has written, whichever is more.
        """
        shared = self._env()
        with shared.using() as env:
            info, psize = env.info(), env.stat()["psize"]
        try:
            length = (self.path / "data.mdb").stat().st_size
        except OSError:
            return 0
        return max(0, length - (int(info["last_pgno"]) + 1) * psize)

    @property
    def map_max_mb(self) -> int:
        """The most the map may grow to here (``map_max_mb``, held to 1 GB on 32 bits)."""
        return self._max_bytes // MB

    def map_size_mb(self) -> float:
        """The current map size (it grows by doubling up to ``map_max_mb``)."""
        shared = self._env()
        with shared.using():
            return shared.map_size() / MB
