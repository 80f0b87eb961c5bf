"""``check-store`` and ``recover-store``: a store's damage found, and what is good kept.

Both read the data file with :mod:`storage.datafile` (plain reads, never a
mapping), so no damage can end them with a SIGBUS or an LMDB assertion, and
judge every record with the store's own formats (:data:`DECODERS`). The check
writes nothing. The recovery copies every record that can be read and
decoded into a fresh store beside the damaged one, sets the sequence counters
(arrivals, outbox, rejects) at or past everything kept so that no number is
ever given twice, then swaps the directories: the damaged one is kept as
``<store>.damaged-<UTC time>``. A recovery that fails (a full disk) removes
its fresh copy and changes nothing.

Neither may run while the service writes the store: the caller holds the
service lock (:mod:`storage.lock`).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage._errors import StoreError, UndecodableRecord, why
from storage._keys import (
    ARRIVAL,
    DB_NAMES,
    FORMAT_VERSION,
    OUTBOX,
    OUTBOX_SENDER,
    READING_RECORD,
    REJECT,
    SENSOR_TIME,
    SEQ,
    VALUES,
)
from storage._records import outbox_entry, pack, unpack, unpack_map
from storage.datafile import Damage, DataFile
from storage.store import Store

# Problem lines shown per database; the rest are counted.
LINES_PER_DATABASE = 20
# Records per write transaction of a recovery.
COPY_CHUNK = 10_000


def _sized(data: bytes, form: struct.Struct, what: str) -> None:
    if len(data) != form.size:
        raise UndecodableRecord(f"{what} has {len(data)} bytes, not {form.size}")


def _reading(key: bytes, value: bytes) -> None:
    _sized(key, SENSOR_TIME, "the key")
    _sized(value, VALUES, "the reading")


def _journal(key: bytes, value: bytes) -> None:
    _sized(key, SEQ, "the key")
    _sized(value, READING_RECORD, "the reading")


def _by_sensor_time(key: bytes, value: bytes) -> None:
    _sized(key, SENSOR_TIME, "the key")
    unpack_map(value)


def _doc(key: bytes, value: bytes) -> None:
    if b"\x00" not in key:
        raise UndecodableRecord("the key has no kind")
    key.decode()
    unpack(value)


def _outbox(key: bytes, value: bytes) -> None:
    entry = outbox_entry(key, value)
    entry.frame  # noqa: B018  # decodes it: an UndecodableRecord if it is no frame
    if not isinstance(entry.wire, bytes | None):
        raise UndecodableRecord("not an outbox frame")


def _reject(key: bytes, value: bytes) -> None:
    _sized(key, SEQ, "the key")
    received, reason, line = unpack(value)
    if not isinstance(reason, str) or not isinstance(line, bytes):
        raise UndecodableRecord("not a reject")
    float(received)


def _meta(key: bytes, value: bytes) -> None:
    name = key.decode()
    decoded = unpack(value)
    if (name == "format" or name[:2] in ("c:", "o:", "q:")) and (
            type(decoded) is not int or decoded < 0):
        raise UndecodableRecord(f"{decoded!r} is not a count")


def _other_format(meta: dict[bytes, bytes]) -> str | None:
    """Why the store is not this version's to judge or recover (None: it is)."""
    raw = meta.get(b"format")
    if raw is None or unpack(raw) == FORMAT_VERSION:
        return None
    return (f"the store has format {unpack(raw)}, this version reads {FORMAT_VERSION}: "
            "use the gateway version that wrote it")


DECODERS: dict[str, Callable[[bytes, bytes], None]] = {
    "readings": _reading, "journal": _journal, "detections": _by_sensor_time,
    "night_blocks": _by_sensor_time, "docs": _doc, "outbox": _outbox, "rejects": _reject,
    "meta": _meta,
}
"""Each database's record check: raises when a record is not in the store's format."""
assert tuple(DECODERS) == DB_NAMES, "a database of the store without a record check"

# The sequence counters in ``meta`` and the database each numbers.
_SEQUENCES = ((ARRIVAL, "journal"), (OUTBOX, "outbox"), (REJECT, "rejects"))


def describe_key(database: str, key: bytes | None) -> str:
    """A record's key as an operator reads it: sensor and UTC time, a number, a name."""
    if key is None:
        return "the first record"
    try:
        if database in ("readings", "detections", "night_blocks"):
            sensor, t = SENSOR_TIME.unpack(key)
            return f"sensor {sensor:03d} at {dt.datetime.fromtimestamp(t, dt.UTC):%Y-%m-%dT%H:%MZ}"
        if database in ("journal", "outbox", "rejects"):
            return f"#{SEQ.unpack(key)[0]}"
        return repr(key.decode())
    except (ValueError, OverflowError, OSError):
        return f"key {key.hex()}"


@dataclass
class DatabaseReport:
    """What one database holds: records good, undecodable, lost in damaged pages."""

    name: str
    entries: int = 0  # as its own record says (0 when the database is missing)
    kept: int = 0
    undecodable: int = 0
    # Readings only: kept from sound leaf pages outside the readable tree (a cut file).
    found_elsewhere: int = 0
    problems: list[str] = field(default_factory=list)
    more: int = 0  # problems beyond those listed

    @property
    def lost(self) -> int:
        """Records the database says it has that could not be read at all."""
        return max(0, self.entries - self.kept - self.undecodable)

    def problem(self, line: str) -> None:
        if len(self.problems) < LINES_PER_DATABASE:
            self.problems.append(f"{self.name}: {line}")
        else:
            self.more += 1

    def lines(self) -> list[str]:
        out = list(self.problems)
        if self.more:
            out.append(f"{self.name}: {self.more} more problems like these")
        if self.lost:
            out.append(f"{self.name}: {self.lost} of {self.entries} records cannot be read")
        return out


@dataclass
class Report:
    """A store's problems: of the file as a whole, then of each database."""

    path: Path
    file_problems: list[str] = field(default_factory=list)
    databases: dict[str, DatabaseReport] = field(default_factory=dict)

    @property
    def sound(self) -> bool:
        return not self.lines()

    def lines(self) -> list[str]:
        out = list(self.file_problems)
        for report in self.databases.values():
            out += report.lines()
        return out


def _good_records(data: DataFile, report: DatabaseReport,
                  record: Any) -> Iterator[tuple[bytes, bytes]]:
    """Every record of one database that reads and decodes; the rest go into ``report``."""
    check = DECODERS[report.name]
    for item in data.records(record, report.name):
        if isinstance(item, Damage):
            report.problem(f"page {item.page} {item.what} (after "
                           f"{describe_key(report.name, item.after)})")
            continue
        key, value = item
        try:
            check(key, value)
        except Exception as exc:  # any failure to decode is a damaged record
            report.undecodable += 1
            report.problem(f"{describe_key(report.name, key)}: {why(exc)}")
            continue
        report.kept += 1
        yield key, value


def _walk_store(path: Path, report: Report,
                each_database: Callable[[str, Iterator[tuple[bytes, bytes]]], None],
                damaged_readings: Callable[[DataFile, DatabaseReport], None] | None = None,
                ) -> None:
    """Fill ``report`` for the store at ``path``, handing each database's good records on.

    ``damaged_readings`` is called when the readings' tree could not be read whole.
    """
    data_path = path / "data.mdb"
    with DataFile(data_path) as data:
        report.file_problems += data.meta_problems()
        if data.meta is None:
            report.file_problems.append("no meta page is sound: no database in data.mdb can "
                                        "be read")
            for name in DB_NAMES:
                report.databases[name] = DatabaseReport(name)
                each_database(name, iter(()))
            if damaged_readings is not None:
                # LMDB made its pages the size of the system's (mdb_env_init_meta).
                data.assume_page_size(os.sysconf("SC_PAGE_SIZE"))
                damaged_readings(data, report.databases["readings"])
            return
        report.file_problems += data.length_problems()
        named, damage = data.databases()
        report.file_problems += [f"{d.describe()}: the databases below it are lost"
                                 for d in damage]
        for name in DB_NAMES:
            db = report.databases[name] = DatabaseReport(name)
            record = named.get(name)
            if record is None:
                db.problem("the database is missing")
                each_database(name, iter(()))
            else:
                db.entries = record.entries
                each_database(name, _good_records(data, db, record))
            if name == "readings" and db.problems and damaged_readings is not None:
                damaged_readings(data, db)


def check_store(path: Path) -> Report:
    """Every problem of the store at ``path``; it must hold a ``data.mdb``."""
    report = Report(path)
    last: dict[str, bytes] = {}
    kept_meta: dict[bytes, bytes] = {}

    def look(name: str, records: Iterator[tuple[bytes, bytes]]) -> None:
        for key, value in records:
            last[name] = key
            if name == "meta":
                kept_meta[key] = value

    _walk_store(path, report, look)
    meta = report.databases.get("meta")
    other = _other_format(kept_meta)
    if other is not None:
        report.file_problems.insert(0, other)
    counters = {key.decode()[2:]: unpack(value) for key, value in kept_meta.items()
                if key.startswith(b"q:")}
    for sequence, database in _SEQUENCES:
        newest = SEQ.unpack(last[database])[0] if database in last else 0
        if meta is not None and newest > counters.get(sequence, 0):
            meta.problem(f"the {sequence} counter ({counters.get(sequence, 0)}) is behind the "
                         f"last {database} record (#{newest}): the next one cannot be stored")
    return report


@dataclass
class Recovery:
    """What a recovery did: the report of the damaged store and where it went."""

    report: Report
    damaged_copy: Path


def recover_store(path: Path, *, map_max_mb: int, now: Callable[[], float] = time.time) -> Recovery:
    """Copy what can be read of the store at ``path`` into a fresh one that takes its place.

    Raises :class:`storage.store.StoreError` (e.g. the disk is full) with
    nothing changed: the fresh copy is removed and the store stays where it is.
    """
    fresh = path.with_name(path.name + ".recovering")
    if fresh.exists():
        shutil.rmtree(fresh)  # a recovery that was interrupted
    report = Report(path)
    try:
        with Store(fresh, map_max_mb=map_max_mb) as store:
            copier = _Copier(store)
            _walk_store(path, report, copier, copier.readings_elsewhere)
        _same_owner(fresh, like=path)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    stamp = dt.datetime.fromtimestamp(now(), dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    os.rename(path, aside)
    os.rename(fresh, path)
    return Recovery(report, aside)


class _Copier:
    """Writes each database's good records into the fresh store, in bounded transactions.

    ``meta`` comes last (as in ``DB_NAMES``): by then the last key of every
    numbered database is known, and each sequence counter is written at or past
    it and past every offset a consumer recorded (a lost counter must not give
    a number again, nor put the service's consumers ahead of the journal).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.last: dict[str, int] = {}

    def __call__(self, name: str, records: Iterator[tuple[bytes, bytes]]) -> None:
        chunk: list[tuple[bytes, bytes]] = []
        meta: dict[bytes, bytes] = {}
        for key, value in records:
            if name == "meta":
                meta[key] = value
                continue
            chunk.append((key, value))
            if len(chunk) >= COPY_CHUNK:
                self._write(name, chunk)
        if chunk:
            self._write(name, chunk)
        if name == "meta":
            other = _other_format(meta)
            if other is not None:
                raise StoreError(other)
            meta.update(self._counters(meta))
            self._write(name, sorted(meta.items()))

    def readings_elsewhere(self, data: DataFile, report: DatabaseReport) -> None:
        """Readings on sound leaf pages the damaged tree no longer reaches.

        A file cut short loses the roots first (LMDB writes them last), and
        with them every reading below, though most leaves are still there.
        Readings are never rewritten, so an older copy of a page (one LMDB
        freed) holds the same values; those the retention had deleted come
        back until its next pass. What the tree gave wins.
        """
        for _, records in data.loose_leaves():
            if not all(len(k) == SENSOR_TIME.size and len(v) == VALUES.size
                       for k, v in records):
                continue
            items = list(records)
            report.found_elsewhere += self.store.transact(
                lambda b: b.put_records("readings", items, overwrite=False))

    def _write(self, name: str, chunk: list[tuple[bytes, bytes]]) -> None:
        items = list(chunk)
        self.store.transact(lambda b: b.put_records(name, items))
        if name in dict(_SEQUENCES).values():
            self.last[name] = max(self.last.get(name, 0), SEQ.unpack(items[-1][0])[0])
        chunk.clear()

    def _counters(self, meta: dict[bytes, bytes]) -> dict[bytes, bytes]:
        def stored(key: str) -> int:
            raw = meta.get(key.encode())
            return 0 if raw is None else int(unpack(raw))

        offsets = {key.decode()[2:]: int(unpack(raw)) for key, raw in meta.items()
                   if key.startswith(b"o:")}
        sender = offsets.pop(OUTBOX_SENDER, 0)
        floors = {ARRIVAL: max(offsets.values(), default=0), OUTBOX: sender, REJECT: 0}
        return {f"q:{sequence}".encode(): pack(max(stored(f"q:{sequence}"),
                                                     self.last.get(database, 0),
                                                     floors[sequence]))
                for sequence, database in _SEQUENCES}


def _same_owner(fresh: Path, *, like: Path) -> None:
    """As root, give the fresh store the damaged one's owner (the service's user)."""
    if os.geteuid() != 0:
        return
    owner = like.stat()
    for item in (fresh, *fresh.iterdir()):
        os.chown(item, owner.st_uid, owner.st_gid)
