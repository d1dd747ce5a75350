"""FHIR instants and HTTP dates for stored versions (microseconds since the Unix epoch, UTC)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

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
    t = time.gmtime(us // 1_000_000)
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


_FHIR_DATETIME = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?P<f>\.\d+)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def parse_fhir_range(value: str) -> tuple[int, int] | None:
    """The [start, end) range in microseconds that a FHIR date/dateTime/instant denotes.

    A value without a zone is read as UTC. None when the value is not a valid date.
    """
    match = _FHIR_DATETIME.match(value)
    if not match:
        return None
    g = match.groupdict()
    try:
        tzinfo: timezone = UTC
        if g["tz"] and g["tz"] != "Z":
            sign = 1 if g["tz"][0] == "+" else -1
            hours, minutes = int(g["tz"][1:3]), int(g["tz"][4:6])
            tzinfo = timezone(sign * timedelta(hours=hours, minutes=minutes))
        year = int(g["y"])
        if g["m"] is None:
            start = datetime(year, 1, 1, tzinfo=tzinfo)
            end = datetime(year + 1, 1, 1, tzinfo=tzinfo)
        elif g["d"] is None:
            month = int(g["m"])
            start = datetime(year, month, 1, tzinfo=tzinfo)
            end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=tzinfo)
        elif g["H"] is None:
            start = datetime(year, int(g["m"]), int(g["d"]), tzinfo=tzinfo)
            end = start + timedelta(days=1)
        else:
            seconds = int(g["S"]) if g["S"] is not None else 0
            start = datetime(
                year, int(g["m"]), int(g["d"]), int(g["H"]), int(g["M"]), seconds, tzinfo=tzinfo
            )
            if g["S"] is None:
                end = start + timedelta(minutes=1)
            elif g["f"]:
                digits = g["f"][1:]
                micro = int((digits + "000000")[:6])
                start = start.replace(microsecond=micro)
                end = start + timedelta(microseconds=10 ** max(0, 6 - len(digits)))
            else:
                end = start + timedelta(seconds=1)
    except ValueError:
        return None
    return from_datetime(start), from_datetime(end)
