"""Instants and HTTP dates of stored versions."""

import random
from datetime import UTC, datetime
from email.utils import format_datetime

from server.fhir.instant import (
    format_http_date,
    format_instant,
    parse_fhir_range,
    parse_http_date,
)


def test_http_date_matches_the_standard_library_formatter() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        us = rng.randrange(0, 4_102_444_800 * 10**6)
        expected = format_datetime(datetime.fromtimestamp(us // 10**6, UTC), usegmt=True)
        assert format_http_date(us) == expected


def test_http_date_round_trips_at_whole_seconds() -> None:
    us = 1_795_416_648_123_456
    assert parse_http_date(format_http_date(us)) == us // 10**6 * 10**6
    assert parse_http_date("not a date") is None


def test_instant_keeps_microseconds_in_utc() -> None:
    assert format_instant(1_795_416_648_123_456) == "2026-11-23T06:50:48.123456Z"


def test_fhir_ranges_follow_the_precision_of_the_value() -> None:
    year = parse_fhir_range("2024")
    assert year is not None and year[1] - year[0] == 366 * 86_400 * 10**6
    day = parse_fhir_range("2024-02-29")
    assert day is not None and day[1] - day[0] == 86_400 * 10**6
    zoned = parse_fhir_range("2024-01-01T10:00:00+02:00")
    utc = parse_fhir_range("2024-01-01T08:00:00Z")
    assert zoned == utc
    assert parse_fhir_range("2023-02-29") is None
    assert parse_fhir_range("2024-13") is None
    assert parse_fhir_range("yesterday") is None


def test_instant_matches_the_standard_library_formatter() -> None:
    rng = random.Random(11)
    for _ in range(5000):
        us = rng.randrange(0, 4_102_444_800 * 10**6)
        moment = datetime.fromtimestamp(us // 10**6, UTC).replace(microsecond=us % 10**6)
        assert format_instant(us) == moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
