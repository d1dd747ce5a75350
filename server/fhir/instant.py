"""FHIR instants and HTTP dates for stored versions (microseconds since the Unix epoch, UTC)."""

from __future__ import annotations

import functools
import re
import time
from datetime import UTC, date, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from zoneinfo import ZoneInfo

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def now_us() -> int:
    delta = datetime.now(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def to_datetime(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def from_datetime(value: datetime) -> int:
    delta = value.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def format_instant(us: int) -> str:
    """``2026-11-23T06:50:48.123456Z`` — full microsecond precision, always UTC."""
    seconds, micro = divmod(us, 1_000_000)
    t = time.gmtime(seconds)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
        f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{micro:06d}Z"
    )


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def format_http_date(us: int) -> str:
    """RFC 9110 IMF-fixdate (``Mon, 23 Nov 2026 06:50:48 GMT``), whole seconds."""
    return _http_date(us // 1_000_000)


@functools.lru_cache(maxsize=256)
def _http_date(seconds: int) -> str:
    """Formatted once per second of the last 256 asked for: resources written together (a
    transaction, an import) share their ``Last-Modified`` second."""
    t = time.gmtime(seconds)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def parse_http_date(value: str) -> int | None:
    """An HTTP date as microseconds, or None when it cannot be read."""
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return from_datetime(parsed)


SECOND_US = 1_000_000
DAY_US = 86_400 * SECOND_US
_WALL_EPOCH = datetime(1970, 1, 1)  # the epoch as a wall-clock time (no zone)

# R4 date/dateTime/instant; a search value may also give a time without seconds or without
# an offset (then read in the local zone)
_DATE = re.compile(
    r"(?P<y>\d{4})(?:-(?P<m>0[1-9]|1[0-2])(?:-(?P<d>0[1-9]|[12]\d|3[01])"
    r"(?:T(?P<H>[01]\d|2[0-3]):(?P<M>[0-5]\d)(?::(?P<S>[0-5]\d|60)(?:\.(?P<f>\d+))?)?"
    r"(?P<tz>Z|[+-](?:(?:0\d|1[0-3]):[0-5]\d|14:00))?)?)?)?",
    re.ASCII,
)


def _offset(zone: ZoneInfo | timezone, wall: datetime) -> timedelta:
    offset = zone.utcoffset(wall)
    return offset if offset is not None else timedelta(0)


def _wall_us(wall: datetime, zone: ZoneInfo | timezone) -> int:
    """Microseconds since the epoch of the wall-clock time ``wall`` in ``zone``."""
    delta = wall - _WALL_EPOCH - _offset(zone, wall)
    return (delta.days * 86_400 + delta.seconds) * SECOND_US + delta.microseconds


def _midnight_us(year: int, month: int, day: int, zone: ZoneInfo | timezone) -> int:
    """The first instant of a calendar day in ``zone`` (year 10000 = just after 9999)."""
    if year > 9999:
        return _midnight_us(9999, 12, 31, zone) + DAY_US
    return _wall_us(datetime(year, month, day), zone)


def date_range(text: str, zone: ZoneInfo | timezone) -> tuple[int, int] | None:
    """The ``[low, high)`` microseconds (UTC) a FHIR date, dateTime or instant denotes: the one
    reading of FHIR dates for search, ``_lastUpdated``, ``_since``, ``_at`` and operations.

    The range is as wide as the precision given: a year, a month, a day (from local midnight
    to the next one, so DST days are 23 or 25 hours), a minute, a second, or a fraction of a
    second (to the microsecond). Without an offset the value is read in ``zone``. None when
    the text is not a valid date.
    """
    match = _DATE.fullmatch(text)
    if match is None:
        return None
    g = match.groupdict()
    year = int(g["y"])
    if year == 0:
        return None
    tz: ZoneInfo | timezone = zone
    if g["tz"] == "Z":
        tz = UTC
    elif g["tz"]:
        sign = 1 if g["tz"][0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(g["tz"][1:3]), minutes=int(g["tz"][4:6])))
    try:
        if g["m"] is None:
            return _midnight_us(year, 1, 1, tz), _midnight_us(year + 1, 1, 1, tz)
        month = int(g["m"])
        if g["d"] is None:
            next_year, next_month = (year + 1, 1) if month == 12 else (year, month + 1)
            return _midnight_us(year, month, 1, tz), _midnight_us(next_year, next_month, 1, tz)
        day = int(g["d"])
        first = date(year, month, day)
        if g["H"] is None:
            if first == date.max:
                return _midnight_us(year, month, day, tz), _midnight_us(10000, 1, 1, tz)
            following = first + timedelta(days=1)
            return _midnight_us(year, month, day, tz), _midnight_us(
                following.year, following.month, following.day, tz
            )
        wall = datetime(year, month, day, int(g["H"]), int(g["M"]))
    except (ValueError, OverflowError):
        return None
    low = _wall_us(wall, tz)
    if g["S"] is None:
        return low, low + 60 * SECOND_US
    low += int(g["S"]) * SECOND_US
    if g["f"] is None:
        return low, low + SECOND_US
    digits = g["f"][:6]
    low += int(digits.ljust(6, "0"))
    return low, low + 10 ** (6 - len(digits))


def parse_fhir_range(value: str) -> tuple[int, int] | None:
    """``date_range`` of a value that carries its own offset (``meta.lastUpdated``, an
    instant); a value without one is read as UTC."""
    return date_range(value, UTC)
