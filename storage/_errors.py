"""The store's errors, and how LMDB's and msgpack's failures become them."""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lmdb

FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


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
SHAPE_ERRORS = (ValueError, TypeError, IndexError, KeyError, struct.error)


@contextmanager
def decoding() -> Iterator[None]:
    """Records read inside are the store's own: a wrong shape is a damaged record."""
    try:
        yield
    except SHAPE_ERRORS as exc:
        raise UndecodableRecord(f"a record has the wrong shape ({why(exc)})") from exc


def why(exc: BaseException) -> str:
    """An exception as a short piece of one line (a decode error may quote bytes)."""
    text = " ".join(str(exc).split())
    text = f"{text[:100]}..." if len(text) > 100 else text
    if isinstance(exc, UndecodableRecord):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def errno_of(exc: lmdb.Error) -> int | None:
    code = getattr(exc, "code", None)
    if code is None:
        # py-lmdb 1.4 (Debian bookworm's, used on armhf) gives an errno failure
        # no code, only its text: "mdb_txn_commit: File too large".
        text = str(exc)
        code = next((e for e in (*FULL_ERRNOS, errno.EIO) if text.endswith(os.strerror(e))),
                    None)
    return code


def full_error(exc: lmdb.Error, path: Path) -> StoreFullError | None:
    code = errno_of(exc)
    if isinstance(exc, lmdb.DiskError) or code in FULL_ERRNOS:
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
DAMAGE_ERRORS = (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.InvalidError,
                  lmdb.VersionMismatchError, lmdb.IncompatibleError, lmdb.BadValsizeError)


def store_error(exc: lmdb.Error | UndecodableRecord, path: Path) -> StoreError:
    if isinstance(exc, (UndecodableRecord, *DAMAGE_ERRORS)):
        return StoreDamagedError(f"store at {path} is damaged: {why(exc)}")
    return full_error(exc, path) or StoreError(f"store at {path}: {exc}")
