"""Disk space taken ahead of need (``posix_fallocate``)."""

from __future__ import annotations

import os
from pathlib import Path


def reserve_file(path: Path, nbytes: int) -> None:
    """Allocate ``path``'s disk blocks up to ``nbytes`` (what is there stays); OSError if not.

    With the blocks allocated up front, a disk that other files fill cannot
    stop the file's owner writing within them; only the file's length changes.
    """
    fd = os.open(path, os.O_RDWR)
    try:
        if os.fstat(fd).st_size < nbytes:
            os.posix_fallocate(fd, 0, nbytes)
    finally:
        os.close(fd)
