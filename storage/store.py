"""The gateway's LMDB time-series store: the only code that touches LMDB.

One environment, named databases:

=============  ===========================  =====================================
database       key                          value
=============  ===========================  =====================================
readings       ``>HQ`` sensor, epoch s      ``>ddB`` flow, pressure (NaN=missing), status
journal        ``>Q`` arrival seq           ``>HQddB`` the reading (arrival log)
detections     ``>HQ`` sensor, epoch s      msgpack dict
night_blocks   ``>HQ`` sensor, block start  msgpack dict
docs           kind NUL key (utf-8)         msgpack (``storage.documents``: every kind)
outbox         ``>Q`` outbound seq          msgpack ``[created, attempts, frame, line]``
rejects        ``>Q`` reject seq            msgpack ``[received, reason, line]``
meta           ``c:``/``o:``/``s:``/``q:``  msgpack counters, offsets, consumer state,
               name; ``event_times``        sequence counters; the Detector's
                                            ``[{sensor: event time}, ahead]``
=============  ===========================  =====================================

The code is split along its jobs, in private modules re-exported here:
``_keys`` (key formats, fixed-width records, range scans), ``_records`` (the
msgpack codec, record types), ``_errors``, ``_env`` (the process's shared
environment and its remaps), ``_read`` (:class:`ReadView`), ``_write``
(:class:`WriteBatch`, ingest) and ``documents`` (typed accessors of the
stored documents). The OS tricks (madvise, ``posix_fallocate``) are in ``ports``.

An outbox record holds the frame packed on its own (unpacked only when asked
for) and, given an ``outbox_wire`` encoder, the line it goes out as; records
written without one (``[created, attempts, frame]``) are read alike.

Reads go through ``with store.read() as view:`` (one snapshot, any number of
reads), writes through ``store.transact(fn)`` (one commit); a process shares
one LMDB environment per store (``_env``).
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from time import time as _wall_clock
from typing import Any, TypeVar

import lmdb

from core.frames import OutboundFrame
from core.types import Reading
from ports.disk import reserve_file
from ports.memory import release_file_mapping
from storage._env import (
    MB,
    SharedEnv,
    acquire,
    initial_map_bytes,
    release,
)
from storage._errors import (
    DAMAGE_ERRORS,
    StoreDamagedError,
    StoreError,
    StoreFullError,
    UndecodableRecord,
    store_error,
)
from storage._keys import FORMAT_VERSION, OUTBOX_PUBLISHER, OUTBOX_SENDER, SEQ, key_range
from storage._read import ReadView
from storage._records import IngestResult, OutboxEntry, ReadingArrays, RejectRecord
from storage._write import WriteBatch

__all__ = [
    "FORMAT_VERSION",
    "MB",
    "OUTBOX_PUBLISHER",
    "OUTBOX_SENDER",
    "IngestResult",
    "OutboxEntry",
    "ReadView",
    "ReadingArrays",
    "RejectRecord",
    "Store",
    "StoreDamagedError",
    "StoreError",
    "StoreFullError",
    "UndecodableRecord",
    "WriteBatch",
    "history_sensor_years",
    "map_limit_mb",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

DAY_S = 86_400

# LMDB maps the whole store into the process. A 32-bit process (armhf) has 2-3 GB
# of address space, shared with Python, numpy and every thread's stack, so a
# larger map fails to open or to grow there: the map is held to this.
MAP_MAX_32BIT_MB = 1024
POINTER_BITS = struct.calcsize("P") * 8
# Store space a sensor-year takes (readings with their night blocks and
# detections), and a full outbox per 100,000 frames; README "A full disk".
MB_PER_SENSOR_YEAR = 25
OUTBOX_MB_PER_100K_FRAMES = 20
# Retention and journal trimming delete in transactions of this many keys, so
# that no single commit holds the writer (and the map) for long.
_DELETE_CHUNK = 10_000
# Bound on retries after MapFull/MapResized: each grow doubles the map.
_MAX_ATTEMPTS = 64


def map_limit_mb(map_max_mb: int, pointer_bits: int = POINTER_BITS) -> int:
    """The largest map this process can hold: ``map_max_mb``, held to 1 GB on 32 bits."""
    return min(map_max_mb, MAP_MAX_32BIT_MB) if pointer_bits < 64 else map_max_mb


def history_sensor_years(map_mb: int, outbox_max: int) -> float:
    """Sensor-years of readings a map of ``map_mb`` holds beside a full outbox."""
    outbox_mb = OUTBOX_MB_PER_100K_FRAMES * outbox_max / 100_000
    return max(0.0, (map_mb - outbox_mb) / MB_PER_SENSOR_YEAR)


# -- the store --------------------------------------------------------------------------


class Store:
    """The gateway's persistent state in one LMDB environment (see the module docstring).

    Read with ``with store.read() as view:`` (one snapshot), write with
    :meth:`transact` (one commit); both are safe from several threads.
    ``readonly=True`` is for other processes (CLI, trainer) while the service
    writes: it never creates anything.
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
            self._shared: SharedEnv | None = acquire(
                self.path, readonly=readonly, sync=sync,
                map_bytes=initial_map_bytes(self.path, map_size_mb, map_max_mb),
            )
        except (lmdb.Error, UndecodableRecord) as exc:
            if isinstance(exc, (UndecodableRecord, *DAMAGE_ERRORS)):
                raise store_error(exc, self.path) from exc
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from exc
        if reserve_mb and not readonly:
            self._reserve_disk(reserve_mb * MB)

    def _reserve_disk(self, nbytes: int) -> None:
        """Allocate the data file's disk blocks up to ``nbytes``: LMDB takes disk
        space as the store grows; with the blocks taken up front, a disk that other
        files (logs) fill does not stop the store writing."""
        try:
            reserve_file(self.path / "data.mdb", nbytes)
        except OSError as exc:
            log.warning("store at %s: could not reserve %d MB of disk (%s); it takes space "
                        "as it grows", self.path, nbytes // MB, exc.strerror or exc)
            return
        log.info("store at %s: %d MB of disk reserved", self.path, nbytes // MB)

    # lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        """Release the environment (closed when the process's last Store on it closes)."""
        shared, self._shared = self._shared, None
        if shared is not None:
            release(shared)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _env(self) -> SharedEnv:
        shared = self._shared
        if shared is None:
            raise StoreError(f"store at {self.path} is closed")
        if shared.pid != os.getpid():
            raise StoreError("an LMDB store must not be used across fork(): open it in the child")
        return shared

    # transactions --------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[ReadView]:
        """One read transaction: whatever is read through the view is one snapshot.

        ``with store.read() as view:`` then ``view.readings(...)``,
        ``view.offset(...)``...: the reads see the store as one commit left it,
        whatever the writers do meanwhile. Keep the block short: an open read
        pins the pages it sees, and a remap of the map waits for it. The view
        is dead once the block ends.
        """
        shared = self._env()
        for _ in range(_MAX_ATTEMPTS):
            with shared.using() as env:
                try:
                    txn = env.begin()
                except lmdb.MapResizedError:
                    txn = None  # another process grew the map: adopt its size, outside
                except lmdb.Error as exc:
                    raise self._failed(shared, exc) from exc
                if txn is not None:
                    view = ReadView(txn, shared.dbs)
                    try:
                        yield view
                    except (lmdb.Error, UndecodableRecord) as exc:
                        raise self._failed(shared, exc) from exc
                    finally:
                        view._txn = None
                        txn.abort()
                    return
            shared.adopt_size()
        raise StoreError(f"store at {self.path}: map kept changing size while reading")

    def _failed(self, shared: SharedEnv, exc: lmdb.Error | UndecodableRecord) -> StoreError:
        """``exc`` as the store's error; a damaged store is remembered (:attr:`damage`)."""
        error = store_error(exc, self.path)
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

        Event time (:meth:`ReadView.event_times`), not the newest stamp stored: a
        replay of old history keeps its year, and one reading stamped years ahead
        deletes nothing. A sensor without an event time yet (the Detector has
        not processed it) is left alone. Readings, detections and night blocks;
        in transactions of bounded size. Returns the number of records deleted.
        """
        if retention_days < 1:
            raise ValueError(f"retention_days must be at least 1, not {retention_days}")
        deleted = 0
        with self.read() as view:
            times = view.event_times()
        for sensor, event_time in times.sensors.items():
            cutoff = event_time - retention_days * DAY_S
            if cutoff <= 0:
                continue
            start, end = key_range(sensor, 0, cutoff)
            for db in ("readings", "detections", "night_blocks"):
                deleted += self._delete_chunked(db, start, end)
        if deleted:
            log.info("store at %s: retention deleted %d records", self.path, deleted)
        return deleted

    def trim_journal(self, through: int) -> int:
        """Delete journal entries with arrival <= ``through``; returns how many."""
        if through < 1:
            return 0
        return self._delete_chunked("journal", SEQ.pack(0), SEQ.pack(through + 1))

    def _delete_chunked(self, db: str, start: bytes, end: bytes | None) -> int:
        total = 0
        while True:
            n = self.transact(lambda b: b._delete_range(db, start, end, _DELETE_CHUNK))
            total += n
            if n < _DELETE_CHUNK:
                return total

    # the store's file and map ----------------------------------------------------

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
        page ever read stays counted in the process's RSS: RSS would grow with
        the store, hiding the service's own memory
        (:func:`ports.memory.release_file_mapping`). Done while a transaction
        slot is held, so no remap moves the mapping meanwhile.
        """
        shared = self._env()
        with shared.using():
            return release_file_mapping(self.path / "data.mdb")

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
