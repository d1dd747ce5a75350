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


# -- business days (docs/ecm-workflow.md: the decision date) ----------------------------------


def test_the_federal_holidays_of_2026_as_observed() -> None:
    from server.ecm.calendar import federal_holidays

    # 5 U.S.C. 6103, counted on the 2026 calendar by hand: July 4 is a Saturday (observed
    # Friday July 3)
    assert sorted(federal_holidays(2026)) == [
        date(2026, 1, 1),
        date(2026, 1, 19),
        date(2026, 2, 16),
        date(2026, 5, 25),
        date(2026, 6, 19),
        date(2026, 7, 3),
        date(2026, 9, 7),
        date(2026, 10, 12),
        date(2026, 11, 11),
        date(2026, 11, 26),
        date(2026, 12, 25),
    ]


def test_a_new_years_day_on_saturday_is_observed_the_friday_before() -> None:
    from server.ecm.calendar import is_business_day

    # 1 January 2022 was a Saturday: Friday 31 December 2021 was the holiday
    assert not is_business_day(date(2021, 12, 31))
    assert is_business_day(date(2021, 12, 30))


def test_business_days_skip_weekends_and_holidays() -> None:
    from server.ecm.calendar import add_business_days

    # Wednesday 25 November 2026 + 2: (Thu 26 Thanksgiving) Fri 27, (weekend) Mon 30
    assert add_business_days(date(2026, 11, 25), 2) == date(2026, 11, 30)
    # received on a Saturday: Monday is the first business day
    assert add_business_days(date(2026, 12, 5), 1) == date(2026, 12, 7)
    assert add_business_days(date(2026, 12, 5), 0) == date(2026, 12, 5)
    # a plan's own calendar replaces the federal one: Thanksgiving is then a business day
    assert add_business_days(date(2026, 11, 25), 2, frozenset()) == date(2026, 11, 27)
    plan = frozenset({date(2026, 11, 27)})
    assert add_business_days(date(2026, 11, 25), 2, plan) == date(2026, 11, 30)
