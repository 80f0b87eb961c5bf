"""LMDB's data file read with plain file I/O: its meta pages and its B-trees.

LMDB reads its file through a memory mapping and trusts every page. A file
shorter than the pages in use (a copy cut short, part of a backup restored) is
a SIGBUS at the first read of a missing page, and a page of zeros where a leaf
was (a card that lost a write) fails an assertion that aborts the process:
neither leaves a line in a log. This module reads the same structures with
``os.pread`` and ``struct`` and never maps the file, so any damage is a value
it returns. The store checks the meta pages and the free-page list at every
open (a few small reads: :func:`check_length`); ``check-store`` and
``recover-store`` walk every page of every database with :class:`DataFile`.

Why the free-page list: LMDB's meta page names the last page number in use,
but pages allocated and freed within one transaction are never written, so a
sound file is often a few pages shorter than ``(last_pg + 1) * psize``. Only a
page that is not free must be in the file.

Layout (lmdb 0.9 ``mdb.c``), native byte order; ``W`` is the word size
(pointer, ``size_t``, ``pgno_t``, ``txnid_t``) of the platform, the one that
wrote the file (LMDB files do not move between word sizes):

  page header  pgno W, pad u16, flags u16, lower u16, upper u16 (overflow: pages u32)
  meta page    header, magic u32 0xBEEFC0DE, version u32 1, address W, mapsize W,
               MDB_db of the free pages, MDB_db of the main database, last_pg W, txnid W
  MDB_db       pad u32 (the page size, in the free pages' record), flags u16,
               depth u16, branch W, leaf W, overflow W, entries W, root W (~0 = empty)
  node         lo u16, hi u16, flags u16, ksize u16, key, data. A branch node's
               child page is lo | hi << 16 | flags << 32 (64-bit); a leaf node's
               data size is lo | hi << 16, its data on overflow pages when
               F_BIGDATA (the data is then their first page number) and an MDB_db
               when F_SUBDATA (a named database, in the main one)
  free list    key txnid, value [n, pgno * n] in words
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

WORD = struct.calcsize("P")
_W = "Q" if WORD == 8 else "I"
P_INVALID = (1 << (8 * WORD)) - 1
MAGIC = 0xBEEFC0DE
DATA_VERSION = 1
MIN_PAGE, MAX_PAGE = 512, 65536

P_BRANCH, P_LEAF, P_OVERFLOW, P_META, P_LEAF2 = 0x01, 0x02, 0x04, 0x08, 0x20
F_BIGDATA, F_SUBDATA, F_DUPDATA = 0x01, 0x02, 0x04
# Databases whose keys do not sort as bytes (the free-page list's are integers).
MDB_REVERSEKEY, MDB_INTEGERKEY = 0x02, 0x08

_HEADER = struct.Struct(f"={_W}HHHH")  # pgno, pad, flags, lower, upper
_OVERFLOW_PAGES = struct.Struct("=I")  # where lower/upper are in other pages
_DB = struct.Struct(f"=IHH{_W}{_W}{_W}{_W}{_W}")
_META = struct.Struct(f"=II{_W}{_W}{_DB.format[1:]}{_DB.format[1:]}{_W}{_W}")
_NODE = struct.Struct("=HHHH")
_PGNO = struct.Struct(f"={_W}")
HEADER_SIZE = _HEADER.size
META_READ = HEADER_SIZE + _META.size
# Depth of the deepest B-tree LMDB builds (its cursor stack, CURSOR_STACK).
_MAX_DEPTH = 32


@dataclass(frozen=True, slots=True)
class DbRecord:
    """One database's MDB_db: where its B-tree starts and what it holds."""

    flags: int
    depth: int
    entries: int
    root: int  # P_INVALID: empty


@dataclass(frozen=True, slots=True)
class Meta:
    """A valid meta page: the page size, the last page in use, the two roots."""

    slot: int
    page_size: int
    last_page: int
    txnid: int
    free: DbRecord
    main: DbRecord


@dataclass(frozen=True, slots=True)
class Damage:
    """A part of a B-tree that cannot be read, and everything below it.

    ``after`` is the last key read before it (None: before the first).
    """

    database: str
    page: int
    what: str
    after: bytes | None

    def describe(self) -> str:
        return f"{self.database}: page {self.page} {self.what}"


def _db_record(fields: tuple[int, ...]) -> DbRecord:
    _pad, flags, depth, _branch, _leaf, _overflow, entries, root = fields
    return DbRecord(flags, depth, entries, root)


def parse_meta(raw: bytes, slot: int) -> Meta | str:
    """The meta page in ``raw`` (its first ``META_READ`` bytes), or why it is not one."""
    if len(raw) < META_READ:
        return "is cut short"
    if not raw.strip(b"\0"):
        return "is blank (zeros)"
    pgno, _pad, flags, _lower, _upper = _HEADER.unpack_from(raw)
    fields = _META.unpack_from(raw, HEADER_SIZE)
    magic, version = fields[0], fields[1]
    if magic != MAGIC or not flags & P_META:
        return "is not an LMDB meta page (no magic number)"
    if version != DATA_VERSION:
        return f"has LMDB data version {version}, not {DATA_VERSION}"
    if pgno != slot:
        return f"says it is page {pgno}"
    free = _db_record(fields[4:12])
    main = _db_record(fields[12:20])
    last_page, txnid = fields[20], fields[21]
    psize = fields[4]
    if not MIN_PAGE <= psize <= MAX_PAGE or psize & (psize - 1):
        return f"has an impossible page size {psize}"
    mapsize = fields[3]
    if not 1 <= last_page < mapsize // psize:
        # LMDB's map always holds every page in use (mdb_env_write_meta).
        return f"has an impossible last page {last_page} (map of {mapsize} bytes)"
    for name, db in (("free-page list", free), ("main database", main)):
        if db.root != P_INVALID and not 2 <= db.root <= last_page:
            return f"puts the {name} at page {db.root}, past the last page {last_page}"
    return Meta(slot, psize, last_page, txnid, free, main)


class DataFile:
    """An LMDB data file opened for reading with ``pread``: never mapped.

    ``metas`` holds each meta page or why it is unusable; ``meta`` is the one
    LMDB would use (the valid one with the newer transaction).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            self.metas = self._read_metas()
            # The length after the metas: a writer only ever extends the file.
            self.length = os.fstat(self._fd).st_size
        except BaseException:
            os.close(self._fd)
            raise
        valid = [m for m in self.metas if isinstance(m, Meta)]
        self.meta: Meta | None = max(valid, key=lambda m: m.txnid) if valid else None

    def assume_page_size(self, page_size: int) -> None:
        """With no sound meta page: read pages as if of ``page_size`` (for :meth:`loose_leaves`)."""
        empty = DbRecord(0, 0, 0, P_INVALID)
        self.meta = Meta(-1, page_size, max(1, self.length // page_size - 1), 0, empty, empty)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> DataFile:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _read_metas(self) -> tuple[Meta | str, Meta | str]:
        first = parse_meta(os.pread(self._fd, META_READ, 0), 0)
        if isinstance(first, Meta):
            return first, parse_meta(os.pread(self._fd, META_READ, first.page_size), 1)
        # Page 0 gives no page size: look for page 1 where each page size would put it.
        for psize in (4096, 16384, 65536, 8192, 32768, 2048, 1024, 512):
            second = parse_meta(os.pread(self._fd, META_READ, psize), 1)
            if isinstance(second, Meta) and second.page_size == psize:
                return first, second
        return first, "cannot be found (page 0 gives no page size)"

    # -- problems of the file as a whole ---------------------------------------------

    def meta_problems(self) -> list[str]:
        """What makes LMDB refuse the file (it needs both meta pages sound)."""
        if self.length == 0:
            return ["data.mdb is empty (0 bytes): the store's contents are gone"]
        problems = [f"meta page {slot} {meta}" for slot, meta in enumerate(self.metas)
                    if isinstance(meta, str)]
        if self.meta is not None and len(problems) < 2:
            other = self.metas[1 - self.meta.slot]
            if isinstance(other, Meta) and other.page_size != self.meta.page_size:
                problems.append(f"the meta pages disagree on the page size "
                                f"({other.page_size} and {self.meta.page_size})")
        return problems

    def length_problems(self) -> list[str]:
        """Pages in use that the file does not hold (a SIGBUS if LMDB read them).

        Needs a valid meta page. Only a file shorter than its last page needs
        the free-page list read (its own pages are checked on the way).
        """
        meta = self.meta
        assert meta is not None
        top = meta.last_page
        if self.length >= (top + 1) * meta.page_size:
            return []
        free: set[int] = set()
        for item in self.records(meta.free, "free-page list"):
            if isinstance(item, Damage):
                if (item.page + 1) * meta.page_size > self.length:
                    return [self._truncated(item.page)]
                return [item.describe()]
            key, value = item
            count = _PGNO.unpack_from(value)[0] if len(value) >= WORD else -1
            if not 0 <= count <= len(value) // WORD - 1:
                return [f"free-page list: the entry of transaction {key.hex()} is garbled"]
            free.update(struct.unpack_from(f"={count}{_W}", value, WORD))
        while top in free:
            top -= 1
        return [self._truncated(top)] if self.length < (top + 1) * meta.page_size else []

    def _truncated(self, page: int) -> str:
        assert self.meta is not None
        return (f"data.mdb is truncated: {self.length} bytes, page {page} in use needs "
                f"{(page + 1) * self.meta.page_size}")

    # -- B-trees --------------------------------------------------------------------

    def databases(self) -> tuple[dict[str, DbRecord], list[Damage]]:
        """The named databases (from the main one) and what of the main one is damaged."""
        assert self.meta is not None
        found: dict[str, DbRecord] = {}
        damage: list[Damage] = []
        for item in self._walk(self.meta.main, "main database"):
            if isinstance(item, Damage):
                damage.append(item)
                continue
            key, value, flags = item
            if flags & F_SUBDATA and len(value) == _DB.size:
                found[key.decode(errors="replace")] = _db_record(_DB.unpack(value))
        return found, damage

    def records(self, db: DbRecord, name: str) -> Iterator[tuple[bytes, bytes] | Damage]:
        """Every readable ``(key, value)`` of a database in key order, and each damage met."""
        for item in self._walk(db, name):
            yield item if isinstance(item, Damage) else item[:2]

    def _walk(self, db: DbRecord, name: str) -> Iterator[tuple[bytes, bytes, int] | Damage]:
        meta = self.meta
        assert meta is not None
        if db.root == P_INVALID:
            return
        seen: set[int] = set()
        stack = [(db.root, 0)]  # pages still to visit, the next on top
        last: bytes | None = None
        ordered = not db.flags & (MDB_REVERSEKEY | MDB_INTEGERKEY)
        while stack:
            pgno, depth = stack.pop()
            page = self._page(pgno, seen, depth)
            if isinstance(page, str):
                yield Damage(name, pgno, page, last)
                continue
            flags = _HEADER.unpack_from(page)[2]
            nodes = _node_offsets(page, meta.page_size)
            if isinstance(nodes, str):
                yield Damage(name, pgno, nodes, last)
                continue
            if flags & P_BRANCH:
                children = [_branch_child(page, offset) for offset in nodes]
                stack.extend((child, depth + 1) for child in reversed(children))
                continue
            for offset in nodes:
                record = self._leaf_node(page, offset, seen)
                if isinstance(record, str):
                    yield Damage(name, pgno, record, last)
                    break
                key, value, _ = record
                if ordered and last is not None and key <= last:
                    yield Damage(name, pgno, "holds keys out of order", last)
                    break
                last = key
                if isinstance(value, str):  # the page is sound, this one value is not
                    yield Damage(name, pgno, value, key)
                else:
                    yield record  # type: ignore[misc]

    def loose_leaves(self) -> Iterator[tuple[int, list[tuple[bytes, bytes]]]]:
        """Every sound leaf page in the file, found by reading page after page, not a tree.

        For a file whose trees are cut (their roots are written last, at the
        end of the file): what the leaves beyond the cut hold is still there.
        They include pages LMDB freed, holding older copies of records.
        Only plain records (no overflow values, no named databases).
        """
        meta = self.meta
        assert meta is not None
        last = min(meta.last_page, self.length // meta.page_size - 1)
        for pgno in range(2, last + 1):
            page = self._page(pgno, set(), 0)
            if isinstance(page, str) or not _HEADER.unpack_from(page)[2] & P_LEAF:
                continue
            offsets = _node_offsets(page, meta.page_size)
            if isinstance(offsets, str):
                continue
            records = []
            for offset in offsets:
                record = self._leaf_node(page, offset, set())
                if isinstance(record, str) or record[2] or isinstance(record[1], str):
                    break
                records.append(record[:2])
            else:
                yield pgno, records  # type: ignore[misc]

    def _page(self, pgno: int, seen: set[int], depth: int) -> bytes | str:
        meta = self.meta
        assert meta is not None
        if depth > _MAX_DEPTH:
            return "is deeper than any B-tree LMDB builds (a loop)"
        if not 2 <= pgno <= meta.last_page:
            return f"is out of range (the last page is {meta.last_page})"
        if pgno in seen:
            return "is reached twice (a loop)"
        seen.add(pgno)
        psize = meta.page_size
        if (pgno + 1) * psize > self.length:
            return "is past the end of the file (truncated)"
        page = os.pread(self._fd, psize, pgno * psize)
        if not page.strip(b"\0"):
            return "is blank (zeros)"
        number, _, flags, lower, upper = _HEADER.unpack_from(page)
        if number != pgno:
            return f"holds the header of page {number}"
        kind = flags & (P_BRANCH | P_LEAF | P_OVERFLOW | P_META | P_LEAF2)
        if kind not in (P_BRANCH, P_LEAF):
            return f"is not a branch or leaf page (flags {flags:#x})"
        if not HEADER_SIZE <= lower <= upper <= psize or (lower - HEADER_SIZE) % 2:
            return f"has impossible bounds (lower {lower}, upper {upper})"
        return page

    def _leaf_node(self, page: bytes, offset: int,
                   seen: set[int]) -> tuple[bytes, bytes | str, int] | str:
        """A leaf's (key, value, flags); the value is why it cannot be read when on
        overflow pages that cannot; the whole node is a reason when it is garbled."""
        lo, hi, flags, ksize = _NODE.unpack_from(page, offset)
        size = lo | hi << 16
        start = offset + _NODE.size
        if start + ksize > len(page):
            return "has a key past its end"
        key = page[start:start + ksize]
        if flags & F_DUPDATA:
            return "holds duplicate-key data (not written by this gateway)"
        if not flags & F_BIGDATA:
            if start + ksize + size > len(page):
                return "has a value past its end"
            return key, page[start + ksize:start + ksize + size], flags
        if start + ksize + WORD > len(page):
            return "has an overflow reference past its end"
        first = _PGNO.unpack_from(page, start + ksize)[0]
        value = self._overflow(first, size, seen)
        if isinstance(value, str):
            value = f"has the value of key {key.hex()} on overflow page {first}, which {value}"
        return key, value, flags

    def _overflow(self, pgno: int, size: int, seen: set[int]) -> bytes | str:
        meta = self.meta
        assert meta is not None
        psize = meta.page_size
        if not 2 <= pgno <= meta.last_page or pgno in seen:
            return "is out of range or reached twice"
        if (pgno + 1) * psize > self.length:
            return "is past the end of the file (truncated)"
        header = os.pread(self._fd, HEADER_SIZE, pgno * psize)
        number, _, flags = _HEADER.unpack_from(header)[:3]
        (pages,) = _OVERFLOW_PAGES.unpack_from(header, HEADER_SIZE - _OVERFLOW_PAGES.size)
        if number != pgno or not flags & P_OVERFLOW:
            return "is not an overflow page"
        if pages < 1 or pgno + pages - 1 > meta.last_page or size > pages * psize - HEADER_SIZE:
            return f"has an impossible length ({pages} pages for {size} bytes)"
        if pgno * psize + HEADER_SIZE + size > self.length:
            return "is past the end of the file (truncated)"
        seen.update(range(pgno, pgno + pages))
        return os.pread(self._fd, size, pgno * psize + HEADER_SIZE)


def _node_offsets(page: bytes, psize: int) -> list[int] | str:
    """The offsets of a branch or leaf page's nodes, each checked to lie in the page."""
    _, _, _, lower, upper = _HEADER.unpack_from(page)
    count = (lower - HEADER_SIZE) // 2
    offsets = list(struct.unpack_from(f"={count}H", page, HEADER_SIZE))
    if offsets and (min(offsets) < upper or max(offsets) > psize - _NODE.size):
        return "has a node outside the page"
    return offsets


def _branch_child(page: bytes, offset: int) -> int:
    lo, hi, flags, _ = _NODE.unpack_from(page, offset)
    return lo | hi << 16 | (flags << 32 if WORD == 8 else 0)


def check_length(path: str | os.PathLike[str]) -> list[str]:
    """Why LMDB must not map the data file at ``path`` (empty: it may).

    A few reads: the meta pages and the free-page list. Another process may be
    writing meanwhile (the service, while a command opens the store), so a
    damage seen while the newest transaction moved on by two or more (pages of
    the snapshot read may have been reused) is looked at again.
    """
    for _ in range(5):
        with DataFile(path) as data:
            problems = data.meta_problems()
            if problems or data.meta is None:
                return problems
            problems = data.length_problems()
            if not problems:
                return []
            with DataFile(path) as again:
                if again.meta is None or again.meta.txnid <= data.meta.txnid + 1:
                    return problems
    return problems
