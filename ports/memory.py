"""Giving freed heap memory back to the operating system (glibc)."""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_heap() -> bool:
    """Return free heap pages to the OS; True if the C library could and did.

    glibc keeps memory freed by the service's threads in per-thread arenas: a
    burst (a criteria build, an actor rebuilding its state after a restart)
    leaves the heap at its high-water mark for good. ``malloc_trim`` hands the
    free pages back, so RSS follows what the service actually holds.
    """
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
