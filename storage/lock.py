"""The service's claim on its store: ``<store>.service.lock``, held with ``flock``.

Two services on one store would both consume the journal and send every
reading upstream twice. The service holds an exclusive ``flock`` on the lock
file for its whole life and writes its PID and role into it, so a second one
(or ``recover-store``, which must not run beside it) is refused with a line
naming the holder. The kernel drops the lock when the holder's process ends,
however it ends (``kill -9``, power loss): a lock file left behind blocks
nobody. The file sits beside the store directory, not in it, so that
``recover-store`` can swap the directory while it holds the lock. Read-only
commands never take it.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path


class LockHeld(Exception):
    """Another process holds the lock; the message names it."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{holder} holds {path}")
        self.path = path
        self.holder = holder


def lock_path(store: str | os.PathLike[str]) -> Path:
    """Where the lock of the store directory ``store`` lives, e.g. data/demo.service.lock."""
    return Path(store).with_suffix(".service.lock")


class ServiceLock:
    """An exclusive, non-blocking ``flock`` on a store's lock file, held until released."""

    def __init__(self, store: str | os.PathLike[str]) -> None:
        self.path = lock_path(store)
        self._fd = -1

    def acquire(self, role: str) -> None:
        """Take the lock as ``role`` ("service", "recover-store"); raises :class:`LockHeld`."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            writable = True
        except PermissionError:
            # Made by another user (the operator as root): lock it all the same.
            fd, writable = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC), False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockHeld(self.path, read_holder(self.path)) from None
            raise
        if writable:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {role}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Let go (the file stays: removing it would race with the next holder's open)."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> ServiceLock:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def read_holder(path: Path) -> str:
    """Who holds the lock at ``path``, as written by its holder: e.g. "the service (pid 42)"."""
    try:
        pid, _, role = path.read_text().strip().partition(" ")
    except OSError:
        pid = role = ""
    if not pid.isdigit():
        return "another process (pid unknown)"
    return f"{'the' if role == 'service' else ''} {role or 'process'} (pid {pid})".strip()


def holder(store: str | os.PathLike[str]) -> str | None:
    """Who holds the store's lock now (None: nobody), without keeping it.

    For a command that only needs to know (``train`` saying how it coexists
    with the running service); a shared lock taken for an instant tells.
    """
    path = lock_path(store)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # no lock file: no service ever ran here
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return read_holder(path)
    finally:
        os.close(fd)
    return None
