"""The operator's command-line values: parsed strictly, refused with one clear line.

Pure functions, no I/O. Each parser returns the value or raises
:class:`ValueError` whose message is the whole explanation (what was given and
what is expected); :func:`argument_type` makes one an argparse ``type``, so a
bad value ends the command with that line and exit 2 before the store is
opened. :class:`UsageError` is the same answer for what only the store can
tell (a sensor it does not know).
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable, Sequence
from typing import TypeVar
from zoneinfo import ZoneInfo

from core.types import EpochSeconds, SensorId

T = TypeVar("T")

TIME_FORMS = "ISO 8601, e.g. 2026-11-01, 2026-11-01T06:30 or 2026-11-01T06:30+09:00"
SENSOR_FORM = "three digits 001-999"
_SHOWN_CHARS = 40  # of a refused value: enough to recognise it, not a screenful
_SHOWN_SENSORS = 10  # stored sensors listed after "no such sensor"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_SECOND = dt.timedelta(seconds=1)


class UsageError(Exception):
    """A command's arguments cannot be served; ``str()`` is the one line to print (exit 2)."""


def _shown(text: str) -> str:
    return repr(text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "...")


def parse_sensor(text: str) -> SensorId:
    """A sensor id exactly as the protocol writes it (``001``-``999``).

    ``1`` is refused with a hint (``did you mean 001?``) rather than read as
    ``001``: an id that is not written as the RTU writes it may be a typo.
    """
    if len(text) == 3 and text.isascii() and text.isdigit() and text != "000":
        return SensorId(text)
    hint = ""
    if text.isascii() and text.isdigit() and 1 <= int(text) <= 999:
        hint = f"; did you mean {int(text):03d}?"
    raise ValueError(f"not a sensor id: {_shown(text)} ({SENSOR_FORM}{hint})")


def parse_time(text: str) -> dt.datetime:
    """An ISO 8601 date or time, with or without a UTC offset.

    Without one it is the site's local time, applied by :func:`epoch_seconds`
    once the configuration (and its time zone) is read.
    """
    # fromisoformat also takes "2026-11-01 06:30"; an operator's shell quoting
    # aside, that is the same time, so it is kept.
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError as exc:
        reason = str(exc)
        detail = "" if reason.startswith("Invalid isoformat") else f": {reason}"
        raise ValueError(f"not a time: {_shown(text)}{detail} (expected {TIME_FORMS})") from None


def epoch_seconds(moment: dt.datetime, tz: ZoneInfo) -> EpochSeconds:
    """``moment`` in UTC epoch seconds; without an offset it is local time in ``tz``.

    A wall time that does not exist (the hour skipped at a DST change) is read
    with the offset before the change, as :mod:`zoneinfo` does; one that
    occurs twice is its first occurrence.
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    # Whole seconds, floored, in integers: a float timestamp rounds 23:59:59.999999
    # of year 9999 up to the next day.
    return EpochSeconds((moment - _EPOCH) // _SECOND)


def check_range(since: EpochSeconds | None, until: EpochSeconds | None) -> None:
    """Refuse ``--since`` after ``--until`` (the export would be silently empty)."""
    if since is not None and until is not None and since > until:
        raise UsageError("--since is after --until: nothing lies between them")


def check_sensor(sensor: SensorId, stored: Sequence[SensorId]) -> None:
    """Refuse a well-formed sensor id the store holds no reading of."""
    if sensor in stored:
        return
    listed = ", ".join(stored[:_SHOWN_SENSORS]) or "none"
    if len(stored) > _SHOWN_SENSORS:
        listed += f", ... ({len(stored)} in all)"
    raise UsageError(f"no such sensor: {sensor} (stored: {listed})")


def argument_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """``parse`` as an argparse ``type``: its ValueError message is the error line."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert
