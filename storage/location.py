"""Where a store may live: checked by ``--check-config`` and before the service starts.

LMDB needs a directory on a disk it can write to. Anywhere else it fails only
once the service has started (a file, a device, a kernel file system, a
read-only mount), with an LMDB message that names no configuration key; these
checks turn each case into one line naming ``storage.path`` (exit 2, as any
configuration error) before a port is opened.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

# Kernel and device file systems: files there are not storage, whatever they accept.
KERNEL_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))

_KINDS = (
    (stat.S_ISREG, "a file"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
)


def store_path_problem(path: str | os.PathLike[str]) -> str | None:
    """Why no store can live at ``path``, or ``None`` when one can.

    One can when ``path`` is a directory, or can be created as one, on a
    writable file system that is not a kernel one (``/proc``, ``/sys``,
    ``/dev``). Symbolic links are followed; a relative path is taken against
    the working directory, as the service takes it.
    """
    written = os.fspath(path)
    try:
        real = Path(os.path.realpath(written))
        there = _quote(written)
        if str(real) != written:
            there += f" (that is {_quote(str(real))})"
        existing = real
        while not existing.exists():
            existing = existing.parent
        mode = existing.stat().st_mode
        if not stat.S_ISDIR(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a directory")
            if existing == real:
                return f"{there} is {kind}, not a directory"
            return f"{there} is below {_quote(str(existing))}, which is {kind}, not a directory"
        for root in KERNEL_ROOTS:
            if real == root or root in real.parents:
                return f"{there} is on {root}, a kernel or device file system, not a disk"
        if os.statvfs(existing).f_flag & os.ST_RDONLY:
            return f"{there} is on a read-only file system"
        if not os.access(existing, os.W_OK | os.X_OK):
            what = "directory" if existing == real else f"directory {_quote(str(existing))}"
            return f"{there}: this user cannot write in the {what}"
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        return f"{_quote(written)} cannot be checked: {getattr(exc, 'strerror', None) or exc}"
    return None


def _quote(path: str) -> str:
    """A path as quoted in a message, its middle cut when it is long."""
    return repr(path if len(path) <= 80 else f"{path[:40]}...{path[-30:]}")
