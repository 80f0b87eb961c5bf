"""When a sensor's model is due for retraining: a schedule in days, at a quiet local hour.

Pure: event times in, an event time out. The schedule follows the readings'
own time like every other schedule of the gateway (a replayed year retrains
as a real one would); in real time that is the clock.
"""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

from core.localtime import DAY_S, local_datetime


def retrain_at(data_until: int, schedule_days: int, hour: int, tz: ZoneInfo,
               after: int | None = None) -> int:
    """Event time from which a model whose data ends at ``data_until`` is due again.

    That is the first local ``hour``:00 at or after ``data_until`` plus
    ``schedule_days`` days, and later than ``after`` (the event time of the
    last attempt that gave no model), so a rejected or failed retraining waits
    for the next quiet hour instead of running again every hour of the day.
    A local hour that a clock change skips falls on the instant it would have
    had before the change (zoneinfo's reading of a wall time in the gap).
    """
    earliest = data_until + schedule_days * DAY_S
    if after is not None:
        earliest = max(earliest, after + 1)
    day = local_datetime(earliest, tz).date()
    while True:
        start = datetime.datetime.combine(day, datetime.time(hour), tz)
        at = int(start.timestamp())
        if at >= earliest:
            return at
        day += datetime.timedelta(days=1)
