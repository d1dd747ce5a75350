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
