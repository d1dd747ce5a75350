"""Calendar rules of eligibility: local dates, month windows (day clamped), ages."""

from __future__ import annotations

from datetime import date

import pytest

from server.ecm.calendar import (
    add_months,
    age_on,
    birthday,
    date_span,
    in_window,
    local_date,
    window_start,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01", date(2024, 5, 1)),
        ("2024-05", date(2024, 5, 1)),
        ("2024", date(2024, 1, 1)),
        # 02:00 UTC on 1 May is the evening of 30 April in California
        ("2024-05-01T02:00:00Z", date(2024, 4, 30)),
        ("2024-05-01T02:00:00+00:00", date(2024, 4, 30)),
        ("2024-05-01T23:30:00-07:00", date(2024, 5, 1)),
        ("2024-05-01T10:00:00", date(2024, 5, 1)),
        (None, None),
        ("garbage", None),
        ("2024-02-30", None),
    ],
)
def test_local_date(value: object, expected: date | None) -> None:
    assert local_date(value) == expected


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (date(2024, 8, 31), -6, date(2024, 2, 29)),
        (date(2023, 8, 31), -6, date(2023, 2, 28)),
        (date(2024, 3, 31), -1, date(2024, 2, 29)),
        (date(2024, 1, 15), -12, date(2023, 1, 15)),
        (date(2023, 2, 28), 12, date(2024, 2, 28)),
        (date(2024, 2, 29), 12, date(2025, 2, 28)),
        (date(2024, 11, 30), 3, date(2025, 2, 28)),
    ],
)
def test_add_months_clamps_the_day(day: date, months: int, expected: date) -> None:
    assert add_months(day, months) == expected


def test_windows_include_both_ends() -> None:
    as_of = date(2024, 8, 31)
    assert window_start(as_of, 6) == date(2024, 2, 29)
    assert in_window(date(2024, 2, 29), as_of, 6)
    assert not in_window(date(2024, 2, 28), as_of, 6)
    assert in_window(as_of, as_of, 6)
    assert not in_window(date(2024, 9, 1), as_of, 6)


def test_age_turns_on_the_birthday() -> None:
    born = date(2003, 6, 15)
    assert age_on(born, date(2024, 6, 14)) == 20
    assert age_on(born, date(2024, 6, 15)) == 21


def test_leap_day_birthday_ages_on_first_of_march() -> None:
    born = date(2004, 2, 29)
    assert age_on(born, date(2025, 2, 28)) == 20
    assert age_on(born, date(2025, 3, 1)) == 21
    assert age_on(born, date(2028, 2, 29)) == 24
    assert birthday(born, 21) == date(2025, 3, 1)
    assert birthday(born, 24) == date(2028, 2, 29)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2003-05-17", (date(2003, 5, 17), date(2003, 5, 17))),
        ("2004-02", (date(2004, 2, 1), date(2004, 2, 29))),
        ("2003", (date(2003, 1, 1), date(2003, 12, 31))),
        ("2003-05-17T10:00:00Z", None),
        (None, None),
        ("2003-13", None),
    ],
)
def test_a_partial_date_spans_its_month_or_year(
    value: object, expected: tuple[date, date] | None
) -> None:
    assert date_span(value) == expected
