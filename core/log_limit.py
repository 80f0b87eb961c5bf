"""Warnings that can repeat without end, logged once and then counted.

Garbage on a line, a port that stays away, a full disk: each can produce a
warning per line or per second for days, and a log written at 400 KB/s ends an
SD card. A :class:`LogLimiter` logs the first occurrence of each key at once;
repeats within :data:`SUMMARY_INTERVAL_S` are counted and summarised in one line
that carries their number and the last of them. The summary comes with the first
repeat after the interval, or from :meth:`LogLimiter.flush`, which the owner
calls on every tick and once more when it stops, so a flood that ends is still
reported. Keys are chosen by the code (a reason, a port), never taken from the
input, so there are few of them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SUMMARY_INTERVAL_S = 60.0


@dataclass
class _Repeats:
    since: float  # when a line was last logged for the key
    count: int = 0  # repeats since, not logged
    level: int = logging.WARNING
    last: tuple[str, tuple[Any, ...]] = field(default=("", ()))


class LogLimiter:
    """Per-key rate limit in front of ``log`` (thread-safe: port threads use it too)."""

    def __init__(self, log: logging.Logger, interval_s: float = SUMMARY_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = log
        self._interval = interval_s
        self._clock = clock
        self._keys: dict[str, _Repeats] = {}
        self._lock = threading.Lock()

    def warning(self, key: str, msg: str, *args: Any) -> None:
        self.log(logging.WARNING, key, msg, *args)

    def error(self, key: str, msg: str, *args: Any) -> None:
        self.log(logging.ERROR, key, msg, *args)

    def log(self, level: int, key: str, msg: str, *args: Any) -> None:
        """Log ``msg % args`` now if ``key`` is new or quiet for an interval, else count it."""
        now = self._clock()
        summary = None
        with self._lock:
            repeats = self._keys.get(key)
            fresh = repeats is None or (not repeats.count and now - repeats.since >= self._interval)
            if fresh:
                self._keys[key] = _Repeats(now)
            else:
                repeats.count += 1
                repeats.level, repeats.last = level, (msg, args)
                summary = self._take(repeats, now, self._interval)
        if fresh:
            self._log.log(level, msg, *args)
        elif summary is not None:
            self._emit(*summary)

    def flush(self, *, force: bool = False) -> None:
        """Summarise the keys whose interval is over (all with repeats if ``force``)."""
        now = self._clock()
        with self._lock:
            due = [self._take(r, now, 0.0 if force else self._interval)
                   for r in self._keys.values()]
            for key in [k for k, r in self._keys.items()
                        if not r.count and now - r.since >= self._interval]:
                del self._keys[key]  # quiet for an interval: its next occurrence is news
        for summary in due:
            if summary is not None:
                self._emit(*summary)

    @staticmethod
    def _take(repeats: _Repeats, now: float, interval: float) -> tuple[Any, ...] | None:
        """The summary of ``repeats`` if one is due (and start a new interval)."""
        if not repeats.count or now - repeats.since < interval:
            return None
        summary = (repeats.level, repeats.count, now - repeats.since, *repeats.last)
        repeats.since, repeats.count = now, 0
        return summary

    def _emit(self, level: int, count: int, elapsed: float, msg: str, args: tuple[Any, ...]) -> None:
        self._log.log(level, "%d more in %.0f s, the last: " + msg, count, elapsed, *args)
