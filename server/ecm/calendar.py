"""Calendar arithmetic of the eligibility rules: local dates, calendar-month windows and ages.

Every clinical date is read as a calendar date in the program's time zone (a dateTime with an
offset is converted; a bare date is taken as is). A window of N months ending on ``as_of`` is
``[as_of - N months, as_of]``, both ends inclusive, the start's day clamped to its month's end
(2024-08-31 minus 6 months is 2024-02-29). Ages are completed years: a 29 February birthday is
reached on 1 March in a year without one.
"""

from __future__ import annotations

import calendar
from datetime import date, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

ZONE = ZoneInfo("America/Los_Angeles")


def local_date(value: object, zone: ZoneInfo = ZONE) -> date | None:
    """The calendar date of a FHIR date, dateTime or instant (None when absent or partial
    beyond the year: a year-month or a year alone is taken as its first day)."""
    if not isinstance(value, str) or len(value) < 4:
        return None
    try:
        if len(value) <= 10:
            parts = [int(p) for p in value.split("-")]
            while len(parts) < 3:
                parts.append(1)
            return date(parts[0], parts[1], parts[2])
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment.date()
    return moment.astimezone(zone).date()


def date_span(value: object) -> tuple[date, date] | None:
    """The first and last day a FHIR ``date`` can mean: a full date is one day, a year-month its
    month, a year its year (None when absent or not a date)."""
    first = local_date(value) if isinstance(value, str) and len(value) <= 10 else None
    if first is None:
        return None
    assert isinstance(value, str)
    if len(value) == 4:
        return first, date(first.year, 12, 31)
    if len(value) == 7:
        return first, date(first.year, first.month, calendar.monthrange(first.year, first.month)[1])
    return first, first


def add_months(day: date, months: int) -> date:
    """``day`` moved by whole calendar months, the day clamped to the target month's end."""
    index = day.year * 12 + (day.month - 1) + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


@lru_cache(maxsize=1024)
def window_start(as_of: date, months: int) -> date:
    """The first day of the ``months``-month window that ends on ``as_of``."""
    return add_months(as_of, -months)


def in_window(day: date, as_of: date, months: int) -> bool:
    return window_start(as_of, months) <= day <= as_of


def age_on(birth: date, as_of: date) -> int:
    """Completed years on ``as_of`` (a 29 February birthday ages on 1 March)."""
    years = as_of.year - birth.year
    if (as_of.month, as_of.day) < (birth.month, birth.day):
        years -= 1
    return years


def birthday(birth: date, years: int) -> date:
    """The day someone born on ``birth`` reaches ``years`` (29 February → 1 March)."""
    year = birth.year + years
    if birth.month == 2 and birth.day == 29 and not calendar.isleap(year):
        return date(year, 3, 1)
    return date(year, birth.month, birth.day)


# -- business days (the referral workflow's deadlines, docs/ecm-workflow.md) -------------------


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """The ``n``-th ``weekday`` (0 = Monday) of a month; ``n`` = -1: the last one."""
    if n > 0:
        first = date(year, month, 1)
        return date(year, month, 1 + (weekday - first.weekday()) % 7 + 7 * (n - 1))
    last = date(year, month, calendar.monthrange(year, month)[1])
    return date(year, month, last.day - (last.weekday() - weekday) % 7)


def _observed(day: date) -> date:
    """A holiday on a Saturday is observed on the Friday before, on a Sunday the Monday after
    (5 U.S.C. 6103(b))."""
    if day.weekday() == 5:
        return date.fromordinal(day.toordinal() - 1)
    if day.weekday() == 6:
        return date.fromordinal(day.toordinal() + 1)
    return day


@lru_cache(maxsize=64)
def federal_holidays(year: int) -> frozenset[date]:
    """The eleven U.S. federal holidays of ``year`` as observed (5 U.S.C. 6103): the default
    holiday calendar of plan configuration, which a plan replaces with its own."""
    return frozenset(
        {
            _observed(date(year, 1, 1)),  # New Year's Day
            _nth_weekday(year, 1, 0, 3),  # Birthday of Martin Luther King, Jr.
            _nth_weekday(year, 2, 0, 3),  # Washington's Birthday
            _nth_weekday(year, 5, 0, -1),  # Memorial Day
            _observed(date(year, 6, 19)),  # Juneteenth
            _observed(date(year, 7, 4)),  # Independence Day
            _nth_weekday(year, 9, 0, 1),  # Labor Day
            _nth_weekday(year, 10, 0, 2),  # Columbus Day
            _observed(date(year, 11, 11)),  # Veterans Day
            _nth_weekday(year, 11, 3, 4),  # Thanksgiving Day
            _observed(date(year, 12, 25)),  # Christmas Day
        }
    )


def is_business_day(day: date, holidays: frozenset[date] | None = None) -> bool:
    """Monday to Friday and not a holiday (``holidays`` None: the federal calendar)."""
    if day.weekday() >= 5:
        return False
    if holidays is None:
        return day not in federal_holidays(day.year) and day not in federal_holidays(day.year + 1)
    return day not in holidays


def add_business_days(day: date, days: int, holidays: frozenset[date] | None = None) -> date:
    """The ``days``-th business day after ``day`` (``day`` itself does not count, as "within
    N business days of receipt" counts from the next one); 0: ``day`` itself."""
    current = day
    left = days
    while left > 0:
        current = date.fromordinal(current.toordinal() + 1)
        if is_business_day(current, holidays):
            left -= 1
    return current
