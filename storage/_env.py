"""The process's one LMDB environment per store directory, and how its map changes.

Concurrency: py-lmdb lets any number of read transactions run beside the one
writer. Growing the map (``set_mapsize``) invalidates every transaction of the
process, so every transaction is counted in a per-environment guard and a remap
waits until none is open. LMDB forbids opening one environment twice in a
process, so every :class:`Store` on the same directory in a process shares one
``lmdb.Environment`` (a read-only Store then reads through it).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lmdb

from storage._errors import StoreDamagedError, StoreError, StoreFullError
from storage._keys import DB_NAMES, FORMAT_VERSION
from storage._records import pack, unpack
from storage.datafile import check_length

# Logged as the store: one logger name for everything the store says.
log = logging.getLogger("storage.store")

MB = 1024 * 1024


class SharedEnv:
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


_registry: dict[tuple[int, str], SharedEnv] = {}
_registry_lock = threading.Lock()


def initial_map_bytes(path: Path, map_size_mb: int, map_max_mb: int) -> int:
    size = map_size_mb * MB
    data = path / "data.mdb"
    used = data.stat().st_size if data.exists() else 0
    # Reopening a grown store: start with room above what is there, so the
    # first writes do not each pay a grow.
    while size < used * 3 // 2 and size < map_max_mb * MB:
        size *= 2
    return max(size, -(-used // MB) * MB)


def _lmdb_open(path: Path, *, readonly: bool, map_bytes: int, sync: bool) -> lmdb.Environment:
    return lmdb.open(
        str(path), map_size=map_bytes, subdir=True, readonly=readonly, create=not readonly,
        max_dbs=len(DB_NAMES) + 4, max_readers=126, lock=True, sync=sync, metasync=True,
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


def _open_dbs(shared: SharedEnv) -> None:
    env = shared.env
    if shared.writable:
        with env.begin(write=True) as txn:
            shared.dbs = {name: env.open_db(name.encode(), txn=txn, create=True)
                          for name in DB_NAMES}
            meta = shared.dbs["meta"]
            stored = txn.get(b"format", db=meta)
            if stored is None:
                txn.put(b"format", pack(FORMAT_VERSION), db=meta)
            elif unpack(stored) != FORMAT_VERSION:
                raise StoreError(f"store at {shared.path} has format {unpack(stored)}, "
                                 f"this version reads format {FORMAT_VERSION}")
        # Reader slots of processes that died (a killed CLI, a crashed
        # service) would pin old pages and make the file grow.
        cleared = env.reader_check()
        if cleared:
            log.info("store at %s: cleared %d stale reader slots", shared.path, cleared)
        return
    dbs = {}
    for name in DB_NAMES:
        # Without a txn argument: py-lmdb ends an explicit read txn by aborting
        # it, which would close handles opened in it.
        try:
            dbs[name] = env.open_db(name.encode(), create=False)
        except lmdb.NotFoundError:
            raise StoreError(f"store at {shared.path} lacks the {name!r} database: "
                             "not created by this gateway?") from None
    with env.begin() as txn:
        stored = txn.get(b"format", db=dbs["meta"])
    if stored is not None and unpack(stored) != FORMAT_VERSION:
        raise StoreError(f"store at {shared.path} has format {unpack(stored)}, "
                         f"this version reads format {FORMAT_VERSION}")
    shared.dbs = dbs


def acquire(path: Path, *, readonly: bool, map_bytes: int, sync: bool) -> SharedEnv:
    key = (os.getpid(), str(path.resolve()))
    with _registry_lock:
        shared = _registry.get(key)
        if shared is None:
            _check_before_mapping(path)
            env = _lmdb_open(path, readonly=readonly, map_bytes=0 if readonly else map_bytes,
                             sync=sync)
            shared = SharedEnv(key, path, env, writable=not readonly, sync=sync)
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


def _upgrade(shared: SharedEnv, map_bytes: int, sync: bool) -> None:
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


def release(shared: SharedEnv) -> None:
    with _registry_lock:
        shared.refs -= 1
        if shared.refs:
            return
        _registry.pop(shared.key, None)

        def op() -> None:
            env, shared.env = shared.env, None
            env.close()

        shared.exclusive(op)
