"""Normalised search values: the same rule for a stored value and a search value."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from server.search.query import NumberValue, ReferenceValue
from server.search.rows import IndexRows
from server.search.values import (
    DATE_MAX,
    DATE_MIN,
    DAY_US,
    IndexContext,
    ap_margin,
    date_range,
    fold,
    number_value,
    parse_reference,
    to_rows,
)

LA = ZoneInfo("America/Los_Angeles")
BASE = "https://fhir.example.org/fhir"
CTX = IndexContext(BASE, LA)
HOUR_US = 3_600_000_000
UUID = "urn:uuid:5a6a9b3e-6d1c-4c55-9b64-3a8d3c1e4f6a"


def us(year: int, month: int, day: int, hour: int = 0, minute: int = 0, *, tz: Any = UTC) -> int:
    """Microseconds since the epoch of a wall-clock time in ``tz``."""
    moment = datetime(year, month, day, hour, minute, tzinfo=tz)
    return round(moment.timestamp() * 1_000_000)


def rows(param_type: str, node: tuple[str, Any], key: str = "p", grp: int = 0) -> IndexRows:
    out = IndexRows()
    to_rows(key, grp, param_type, node, CTX, out)
    return out


# -- fold ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("Zoë", "zoe"),
        ("STRASSE", "strasse"),
        ("Straße", "strasse"),
        ("José Ñúñez", "jose nunez"),
        ("ﬁle", "file"),
        ("Ǆ", "dz"),
    ],
)
def test_fold_drops_accents_and_case(text: str, folded: str) -> None:
    assert fold(text) == folded


# -- dates ---------------------------------------------------------------------------------


def test_year_month_and_day_are_local_calendar_ranges() -> None:
    assert date_range("2021", LA) == (us(2021, 1, 1, tz=LA), us(2022, 1, 1, tz=LA))
    assert date_range("2021-12", LA) == (us(2021, 12, 1, tz=LA), us(2022, 1, 1, tz=LA))
    assert date_range("2021-06-15", LA) == (us(2021, 6, 15, 7), us(2021, 6, 16, 7))


def test_day_ranges_follow_daylight_saving_time() -> None:
    spring = date_range("2020-03-08", LA)
    autumn = date_range("2020-11-01", LA)
    assert spring is not None and autumn is not None
    assert spring == (us(2020, 3, 8, 8), us(2020, 3, 9, 7))
    assert spring[1] - spring[0] == 23 * HOUR_US
    assert autumn[1] - autumn[0] == 25 * HOUR_US


def test_zone_decides_day_boundaries() -> None:
    assert date_range("2021-06-15", ZoneInfo("UTC")) == (us(2021, 6, 15), us(2021, 6, 16))
    assert date_range("2021-06-15", ZoneInfo("Asia/Tokyo")) == (
        us(2021, 6, 14, 15),
        us(2021, 6, 15, 15),
    )


def test_times_cover_the_precision_given() -> None:
    start = us(2021, 6, 15, 10, 30)
    assert date_range("2021-06-15T10:30:00Z", LA) == (start, start + 1_000_000)
    assert date_range("2021-06-15T10:30Z", LA) == (start, start + 60_000_000)
    assert date_range("2021-06-15T10:30:00.5Z", LA) == (start + 500_000, start + 600_000)
    assert date_range("2021-06-15T10:30:00.123456Z", LA) == (start + 123_456, start + 123_457)
    assert date_range("2021-06-15T10:30:00.1234567Z", LA) == (start + 123_456, start + 123_457)


def test_offsets_and_local_times() -> None:
    start = us(2021, 6, 15, 10, 30)
    assert date_range("2021-06-15T12:30:00+02:00", LA) == (start, start + 1_000_000)
    assert date_range("2021-06-15T05:30:00-05:00", LA) == (start, start + 1_000_000)
    assert date_range("2021-06-15T03:30:00", LA) == (start, start + 1_000_000)
    assert date_range("2021-06-15T03:30", LA) == (start, start + 60_000_000)


def test_extreme_years() -> None:
    assert date_range("0001-01-01", ZoneInfo("UTC")) == (us(1, 1, 1), us(1, 1, 2))
    last = date_range("9999-12-31", ZoneInfo("UTC"))
    assert last == (us(9999, 12, 31), us(9999, 12, 31) + DAY_US)
    assert date_range("9999", LA) is not None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0000",
        "20210615",
        "2021-6-15",
        "2021-02-29",
        "2021-04-31",
        "2021-13",
        "2021-06-15T24:00:00Z",
        "2021-06-15T10",
        "2021-06-15T10:30:00+15:00",
        "2021-06-15T10:30:00.Z",
        "2021-06-15Z",
        "2021-06-15 10:30:00Z",
        "٢٠٢١",
        "2021-06-15T10:30:00Zjunk",
    ],
)
def test_invalid_dates_are_none(text: str) -> None:
    assert date_range(text, LA) is None


def test_leap_day_is_valid_in_leap_years() -> None:
    assert date_range("2020-02-29", ZoneInfo("UTC")) == (us(2020, 2, 29), us(2020, 3, 1))


def test_ap_margin_is_a_tenth_of_the_distance_to_now_and_at_least_a_day() -> None:
    now = us(2021, 1, 1)
    assert ap_margin(now - 100 * DAY_US, now - 99 * DAY_US, now) == 10 * DAY_US
    assert ap_margin(now + 100 * DAY_US, now + 101 * DAY_US, now) == 10 * DAY_US
    assert ap_margin(now - DAY_US, now, now) == DAY_US


# -- numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "low", "high"),
    [
        ("100", 100.0, 99.5, 100.5),
        ("100.00", 100.0, 99.995, 100.005),
        ("1e2", 100.0, 50.0, 150.0),
        ("1.5e2", 150.0, 145.0, 155.0),
        ("2.50E-1", 0.25, 0.2495, 0.2505),
        ("-3.25", -3.25, -3.255, -3.245),
        ("0", 0.0, -0.5, 0.5),
    ],
)
def test_number_precision_range(text: str, value: float, low: float, high: float) -> None:
    assert number_value(text) == NumberValue("eq", value, low, high)


@pytest.mark.parametrize("text", ["", "abc", "1.", ".5", "+1", "1e", "1,5", "1e999", "NaN"])
def test_invalid_numbers_are_none(text: str) -> None:
    assert number_value(text) is None


# -- references ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Patient/123", ReferenceValue("Patient", "123")),
        ("Patient/123/_history/2", ReferenceValue("Patient", "123")),
        ("123", ReferenceValue(None, "123")),
        (f"{BASE}/Patient/a-1.b", ReferenceValue("Patient", "a-1.b")),
        (f"{BASE}/Task/9/_history/3", ReferenceValue("Task", "9")),
        (
            "https://other.example.org/fhir/Patient/1",
            ReferenceValue(url="https://other.example.org/fhir/Patient/1"),
        ),
        (
            "http://example.org/Questionnaire/q|1.0",
            ReferenceValue(url="http://example.org/Questionnaire/q"),
        ),
        (UUID, ReferenceValue(url=UUID)),
        ("urn:oid:1.2.3.4", ReferenceValue(url="urn:oid:1.2.3.4")),
    ],
)
def test_references(text: str, expected: ReferenceValue) -> None:
    assert parse_reference(text, BASE) == expected


def test_base_with_trailing_slash_still_recognises_local_urls() -> None:
    assert parse_reference(f"{BASE}/Patient/1", BASE + "/") == ReferenceValue("Patient", "1")


@pytest.mark.parametrize(
    "text",
    ["", "#contained", "NotAType/1", "Patient/", "Patient/bad id", "Patient/" + "x" * 65, "a/b/c"],
)
def test_unusable_references_are_none(text: str) -> None:
    assert parse_reference(text, BASE) is None


# -- rows: string --------------------------------------------------------------------------


def test_string_rows_of_a_human_name() -> None:
    name = {
        "use": "official",
        "family": "Müller",
        "given": ["Zoë", "Anne"],
        "prefix": ["Dr."],
        "suffix": ["PhD"],
        "text": "Dr. Zoë Anne Müller",
    }
    assert rows("string", ("HumanName", name)).string == [
        ("p", 0, "muller", "Müller"),
        ("p", 0, "zoe", "Zoë"),
        ("p", 0, "anne", "Anne"),
        ("p", 0, "dr.", "Dr."),
        ("p", 0, "phd", "PhD"),
        ("p", 0, "dr. zoe anne muller", "Dr. Zoë Anne Müller"),
    ]


def test_string_rows_of_an_address() -> None:
    address = {
        "use": "home",
        "line": ["1 Main St", "Apt 2"],
        "city": "Sacramento",
        "district": "Sacramento County",
        "state": "CA",
        "postalCode": "95814",
        "country": "US",
    }
    assert [r[3] for r in rows("string", ("Address", address)).string] == [
        "1 Main St",
        "Apt 2",
        "Sacramento",
        "Sacramento County",
        "CA",
        "95814",
        "US",
    ]


def test_string_rows_of_primitives_and_other_complex_types() -> None:
    assert rows("string", ("string", "Alias")).string == [("p", 0, "alias", "Alias")]
    assert rows("string", ("markdown", "**Note**")).string == [("p", 0, "**note**", "**Note**")]
    annotation = {"authorString": "Nurse Joy", "time": "2021-01-01", "text": "Called"}
    assert rows("string", ("Annotation", annotation)).string == [
        ("p", 0, "nurse joy", "Nurse Joy"),
        ("p", 0, "called", "Called"),
    ]


def test_string_rows_skip_what_is_not_text() -> None:
    assert rows("string", ("string", "")).string == []
    assert rows("string", ("integer", 5)).string == []
    assert rows("string", ("HumanName", "not a name")).string == []
    assert rows("string", ("HumanName", {"given": [1, None]})).string == []


# -- rows: token ---------------------------------------------------------------------------


def test_token_rows_of_a_codeable_concept() -> None:
    concept = {
        "coding": [
            {"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"},
            {"code": "HR"},
            {"system": "http://example.org", "display": "no code"},
        ],
        "text": "Pulse",
    }
    out = rows("token", ("CodeableConcept", concept))
    assert out.token == [("p", 0, "http://loinc.org", "8867-4"), ("p", 0, "", "HR")]
    assert out.string == [
        ("p:text", 0, "heart rate", "Heart rate"),
        ("p:text", 0, "no code", "no code"),
        ("p:text", 0, "pulse", "Pulse"),
    ]


def test_token_rows_of_an_identifier_with_a_type() -> None:
    identifier = {
        "type": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}],
            "text": "Medical record",
        },
        "system": "urn:oid:1.2.3",
        "value": "MRN-7",
    }
    out = rows("token", ("Identifier", identifier))
    assert out.token == [
        ("p", 0, "urn:oid:1.2.3", "MRN-7"),
        ("p:of-type", 0, "", "http://terminology.hl7.org/CodeSystem/v2-0203|MR|MRN-7"),
    ]
    assert out.string == [("p:text", 0, "medical record", "Medical record")]


def test_token_rows_of_primitives_and_contact_points() -> None:
    assert rows("token", ("code", "active")).token == [("p", 0, "", "active")]
    assert rows("token", ("boolean", True)).token == [("p", 0, "", "true")]
    assert rows("token", ("boolean", False)).token == [("p", 0, "", "false")]
    assert rows("token", ("ContactPoint", {"system": "phone", "value": "555-1234"})).token == [
        ("p", 0, "", "555-1234")
    ]
    assert rows("token", ("Coding", {"system": "s", "code": "c"})).token == [("p", 0, "s", "c")]


def test_token_rows_skip_empty_and_odd_values() -> None:
    assert rows("token", ("code", "")).token == []
    assert rows("token", ("Coding", {"system": "s"})).token == []
    assert rows("token", ("Identifier", {"system": "s"})).token == []
    assert rows("token", ("CodeableConcept", {"coding": "x"})).token == []
    assert rows("token", ("Coding", {"code": 5})).token == []
    assert rows("token", ("integer", 5)).token == []


# -- rows: reference -----------------------------------------------------------------------


def test_reference_rows() -> None:
    assert rows("reference", ("Reference", {"reference": "Patient/1"})).reference == [
        ("p", 0, "Patient", "1", "")
    ]
    assert rows("reference", ("Reference", {"reference": f"{BASE}/Patient/1"})).reference == [
        ("p", 0, "Patient", "1", "")
    ]
    assert rows("reference", ("Reference", {"reference": "urn:uuid:abc"})).reference == [
        ("p", 0, "", "", "urn:uuid:abc")
    ]
    assert rows("reference", ("Reference", {"reference": "#c1"})).reference == []
    assert rows("reference", ("Reference", {"reference": "7", "type": "Patient"})).reference == [
        ("p", 0, "Patient", "7", "")
    ]
    assert rows("reference", ("Reference", {"reference": "7"})).reference == []


def test_reference_identifier_becomes_token_rows() -> None:
    out = rows(
        "reference",
        ("Reference", {"identifier": {"system": "urn:npi", "value": "123"}, "display": "Dr X"}),
    )
    assert out.reference == []
    assert out.token == [("p:identifier", 0, "urn:npi", "123")]


def test_canonical_references_drop_the_version() -> None:
    assert rows("reference", ("canonical", "http://x.org/Questionnaire/q|2")).reference == [
        ("p", 0, "", "", "http://x.org/Questionnaire/q")
    ]


# -- rows: date ----------------------------------------------------------------------------


def test_date_rows_of_primitives() -> None:
    assert rows("date", ("date", "2021-06-15")).date == [
        ("p", 0, us(2021, 6, 15, 7), us(2021, 6, 16, 7))
    ]
    assert rows("date", ("string", "2021-06-15")).date == []
    assert rows("date", ("dateTime", "junk")).date == []


def test_period_rows() -> None:
    period = {"start": "2021-06-01T08:00:00Z", "end": "2021-06-30"}
    assert rows("date", ("Period", period)).date == [("p", 0, us(2021, 6, 1, 8), us(2021, 7, 1, 7))]
    assert rows("date", ("Period", {"start": "2021-06-01T08:00:00Z"})).date == [
        ("p", 0, us(2021, 6, 1, 8), DATE_MAX)
    ]
    assert rows("date", ("Period", {"end": "2021"})).date == [
        ("p", 0, DATE_MIN, us(2022, 1, 1, tz=LA))
    ]
    assert rows("date", ("Period", {})).date == []


def test_timing_rows() -> None:
    timing = {
        "event": ["2021-06-01", "2021-06-02"],
        "repeat": {"boundsPeriod": {"start": "2021-06-01", "end": "2021-06-10"}},
    }
    assert rows("date", ("Timing", timing)).date == [
        ("p", 0, us(2021, 6, 1, 7), us(2021, 6, 2, 7)),
        ("p", 0, us(2021, 6, 2, 7), us(2021, 6, 3, 7)),
        ("p", 0, us(2021, 6, 1, 7), us(2021, 6, 11, 7)),
    ]


# -- rows: number, quantity, uri -----------------------------------------------------------


def test_number_rows() -> None:
    assert rows("number", ("integer", 3)).number == [("p", 0, 3.0, 3.0)]
    assert rows("number", ("decimal", 0.25)).number == [("p", 0, 0.25, 0.25)]
    assert rows("number", ("boolean", True)).number == []
    assert rows("number", ("decimal", "1")).number == []


def test_quantity_rows() -> None:
    quantity = {
        "value": 72,
        "unit": "beats/min",
        "system": "http://unitsofmeasure.org",
        "code": "/min",
    }
    assert rows("quantity", ("Quantity", quantity)).quantity == [
        ("p", 0, "http://unitsofmeasure.org", "/min", "beats/min", 72.0, 72.0)
    ]
    assert rows("quantity", ("Age", {"value": 30, "unit": "a"})).quantity == [
        ("p", 0, "", "", "a", 30.0, 30.0)
    ]
    assert rows("quantity", ("Money", {"value": 9.5, "currency": "USD"})).quantity == [
        ("p", 0, "urn:iso:std:iso:4217", "USD", "", 9.5, 9.5)
    ]
    assert rows("quantity", ("Quantity", {"unit": "mg"})).quantity == []
    assert rows("quantity", ("Ratio", {"numerator": {"value": 1}})).quantity == []


def test_range_rows() -> None:
    low = {"value": 5, "system": "http://unitsofmeasure.org", "code": "mg"}
    assert rows("quantity", ("Range", {"low": low, "high": {"value": 10}})).quantity == [
        ("p", 0, "http://unitsofmeasure.org", "mg", "", 5.0, 10.0)
    ]
    assert rows("quantity", ("Range", {"high": {"value": 10, "code": "mg"}})).quantity == [
        ("p", 0, "", "mg", "", -1e308, 10.0)
    ]
    assert rows("quantity", ("Range", {"low": {"value": 5}})).quantity == [
        ("p", 0, "", "", "", 5.0, 1e308)
    ]
    assert rows("quantity", ("Range", {})).quantity == []


def test_uri_rows() -> None:
    assert rows("uri", ("uri", "http://x.org/a")).uri == [("p", 0, "http://x.org/a")]
    assert rows("uri", ("canonical", "http://x.org/a|1.0")).uri == [("p", 0, "http://x.org/a")]
    assert rows("uri", ("uri", "http://x.org/a|1.0")).uri == [("p", 0, "http://x.org/a|1.0")]
    assert rows("uri", ("string", "http://x.org/a")).uri == []


def test_key_and_group_are_carried_into_rows() -> None:
    out = rows("token", ("code", "final"), key="combo#1", grp=3)
    assert out.token == [("combo#1", 3, "", "final")]


def test_unknown_parameter_types_produce_nothing() -> None:
    out = rows("composite", ("code", "final"))
    assert out.count() == 0
