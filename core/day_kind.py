"""Kinds of days: weekday, Saturday, Sunday, public holiday, the working day after a rest.

Night flow and daily demand differ by the kind of day: people sleep in on a
Sunday, a public holiday behaves like a Sunday, and the first working morning
after a rest day (a Monday, the day after a holiday) starts earlier than the
Saturday before it. The NIGHT model (:mod:`core.night_model`) compares a night
only with nights of the same kind, and forecasting uses the same calendar.

The site's holidays come from ``[site] holidays``: a list of ISO dates, or a
country code (``"KR"``, ``"DE-BY"`` for a subdivision) resolved by the
maintained ``holidays`` package. :func:`holiday_calendar` turns either into a
:class:`HolidayCalendar`; no I/O, the package's tables are in code.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
from collections.abc import Iterable
from typing import Any


class DayKind(enum.StrEnum):
    """What kind of day a local date is, for demand and night flow."""

    WEEKDAY = "weekday"
    SATURDAY = "saturday"
    SUNDAY = "sunday"
    HOLIDAY = "holiday"
    # A working day after a Sunday or a holiday: its small hours (the MNF of the
    # night before it) and its morning follow the rest day's rhythm in part.
    AFTER_REST = "after_rest"


# A kind seen too seldom to learn from borrows the kind it resembles most.
FALLBACK: dict[DayKind, DayKind | None] = {
    DayKind.HOLIDAY: DayKind.SUNDAY,
    DayKind.AFTER_REST: DayKind.WEEKDAY,
    DayKind.WEEKDAY: None,
    DayKind.SATURDAY: None,
    DayKind.SUNDAY: None,
}


class HolidayCalendar:
    """The site's public holidays: fixed dates, a country's calendar, or none."""

    def __init__(self, dates: Iterable[dt.date] = (), country: str | None = None) -> None:
        self.dates = frozenset(dates)
        self.country = country
        self._country_days: Any = None
        if country:
            self._country_days = _country_holidays(country)

    def is_holiday(self, day: dt.date) -> bool:
        """True when ``day`` is one of the site's public holidays."""
        if day in self.dates:
            return True
        return self._country_days is not None and day in self._country_days

    def kind(self, day: dt.date) -> DayKind:
        """The kind of the local date ``day``."""
        if self.is_holiday(day):
            return DayKind.HOLIDAY
        weekday = day.weekday()
        if weekday == 5:
            return DayKind.SATURDAY
        if weekday == 6:
            return DayKind.SUNDAY
        before = day - dt.timedelta(days=1)
        if before.weekday() == 6 or self.is_holiday(before):
            return DayKind.AFTER_REST
        return DayKind.WEEKDAY

    def describe(self) -> str:
        if self.country:
            return f"public holidays of {self.country}"
        return f"{len(self.dates)} listed holiday(s)" if self.dates else "no holidays"


NO_HOLIDAYS = HolidayCalendar()


def _country_holidays(code: str) -> Any:
    # Imported here: a site without a country code never loads the package.
    import holidays

    country, _, subdivision = code.partition("-")
    # expand=True: years are filled in as they are asked for, so a calendar
    # built once serves a service running for years.
    return holidays.country_holidays(country.upper(), subdiv=subdivision.upper() or None,
                                     expand=True)


def check_country(code: str) -> str | None:
    """Why ``code`` is not a usable country (or country-subdivision) code, or None."""
    import holidays

    country, _, subdivision = code.partition("-")
    supported = holidays.list_supported_countries()
    if country.upper() not in supported:
        return f"unknown country code {code!r} (ISO 3166-1 alpha-2, e.g. 'KR', 'DE-BY')"
    if subdivision and subdivision.upper() not in {s.upper() for s in supported[country.upper()]}:
        return f"unknown subdivision {subdivision!r} of {country.upper()}"
    return None


@functools.lru_cache(maxsize=16)
def holiday_calendar(setting: tuple[dt.date, ...] | str) -> HolidayCalendar:
    """The calendar of a validated ``[site] holidays`` value (cached: built once)."""
    if isinstance(setting, str):
        return HolidayCalendar(country=setting) if setting else NO_HOLIDAYS
    return HolidayCalendar(dates=setting)
