"""In-memory matching of search criteria against one resource's index rows."""

from __future__ import annotations

from typing import Any

import pytest

from server.errors import InvalidSearch
from server.fhir.instant import parse_fhir_range
from server.search.match import compile_matcher, matches
from server.search.query import (
    ChainClause,
    Clause,
    CompartmentClause,
    CompositeClause,
    Criteria,
    DateClause,
    HasClause,
    IdClause,
    LastUpdatedClause,
    MissingClause,
    NumberClause,
    NumberValue,
    PerTypeClause,
    Prefix,
    QuantityClause,
    QuantityValue,
    ReferenceClause,
    ReferenceValue,
    StringClause,
    TokenClause,
    UriClause,
)
from server.search.rows import IndexRows

OPEN = 2**62
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"


def span(text: str) -> tuple[int, int]:
    """The UTC microsecond range of a FHIR date (no zone = UTC)."""
    found = parse_fhir_range(text)
    assert found is not None
    return found


def date(prefix: Prefix, text: str) -> tuple[Prefix, int, int]:
    low, high = span(text)
    return (prefix, low, high)


def number(prefix: Prefix, value: float, low: float, high: float) -> NumberValue:
    return NumberValue(prefix, value, low, high)


class FakeIndex:
    """Hand-built index rows and resources by (type, id), standing in for indexer and store."""

    def __init__(self) -> None:
        self.index: dict[tuple[str, str], IndexRows] = {}
        self.resources: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls = 0

    def add(self, type: str, id: str, rows: IndexRows, **body: Any) -> dict[str, Any]:
        resource = {"resourceType": type, "id": id, **body}
        self.index[(type, id)] = rows
        self.resources[(type, id)] = resource
        return resource

    def rows(self, type: str, resource: dict[str, Any]) -> IndexRows:
        self.calls += 1
        return self.index.get((type, resource["id"]), IndexRows())

    def resolve(self, type: str, id: str) -> dict[str, Any] | None:
        return self.resources.get((type, id))

    def referrers(
        self, source_type: str, param: str, target_type: str, target_id: str
    ) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for (type, id), rows in self.index.items():
            if type != source_type:
                continue
            if any(
                r[0] == param and r[2] == target_type and r[3] == target_id for r in rows.reference
            ):
                out.append((id, self.resources[(type, id)]))
        return out


def check(rows: IndexRows, clause: Clause, type: str = "Observation") -> bool:
    fake = FakeIndex()
    resource = fake.add(type, "x", rows)
    return matches(Criteria(type, (), (clause,)), type, resource, fake)


# -- string ---------------------------------------------------------------------------------

NAME_ROWS = IndexRows(string=[("name", 0, "muller", "Müller"), ("family", 0, "smith", "Smith")])


@pytest.mark.parametrize(
    ("mode", "values", "expected"),
    [
        ("start", ("mul",), True),
        ("start", ("muller",), True),
        ("start", ("ller",), False),
        ("start", ("smi",), False),  # another parameter's row
        ("start", ("x", "mu"), True),  # OR of values
        ("contains", ("ulle",), True),
        ("contains", ("ulx",), False),
        ("exact", ("Müller",), True),
        ("exact", ("muller",), False),
        ("exact", ("Müll",), False),
    ],
)
def test_string_modes(mode: Any, values: tuple[str, ...], expected: bool) -> None:
    assert check(NAME_ROWS, StringClause("name", mode, values)) is expected


# -- token ----------------------------------------------------------------------------------

TOKEN_ROWS = IndexRows(token=[("code", 0, LOINC, "1234-5"), ("code", 0, "", "abc")])


@pytest.mark.parametrize(
    ("values", "negate", "expected"),
    [
        (((None, "1234-5"),), False, True),
        (((LOINC, "1234-5"),), False, True),
        ((("http://snomed.info/sct", "1234-5"),), False, False),
        ((("", "abc"),), False, True),
        ((("", "1234-5"),), False, False),  # |code only matches rows without a system
        (((LOINC, None),), False, True),
        ((("http://other", None),), False, False),
        (((None, "ABC"),), False, False),  # codes are case-sensitive
        (((None, "zzz"), (None, "abc")), False, True),
        (((None, "1234-5"),), True, False),
        (((None, "zzz"),), True, True),
        (((None, "zzz"), ("", "abc")), True, False),
        (((LOINC, None),), True, False),
    ],
)
def test_token(
    values: tuple[tuple[str | None, str | None], ...], negate: bool, expected: bool
) -> None:
    assert check(TOKEN_ROWS, TokenClause("code", values, negate)) is expected


def test_token_not_matches_resources_without_the_element() -> None:
    assert check(IndexRows(), TokenClause("code", ((None, "abc"),), negate=True))
    assert not check(IndexRows(), TokenClause("code", ((None, "abc"),)))


# -- reference ------------------------------------------------------------------------------

REFERENCE_ROWS = IndexRows(
    reference=[
        ("subject", 0, "Patient", "p1", ""),
        ("subject", 0, "", "", "http://elsewhere.org/fhir/Patient/9"),
        ("performer", 0, "Practitioner", "dr1", ""),
    ]
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (ReferenceValue(None, "p1"), True),
        (ReferenceValue("Patient", "p1"), True),
        (ReferenceValue("Group", "p1"), False),
        (ReferenceValue("Patient", "p2"), False),
        (ReferenceValue(url="http://elsewhere.org/fhir/Patient/9"), True),
        (ReferenceValue(None, "9"), False),  # an external URL is not a local id
        (ReferenceValue(url="Patient/p1"), False),
        (ReferenceValue(None, "dr1"), False),  # another parameter's row
    ],
)
def test_reference(value: ReferenceValue, expected: bool) -> None:
    assert check(REFERENCE_ROWS, ReferenceClause("subject", (value,))) is expected


# -- date -----------------------------------------------------------------------------------

MARCH = IndexRows(date=[("date", 0, *span("2020-03"))])
OPEN_START = IndexRows(date=[("date", 0, -OPEN, span("2020-06-01")[0])])  # Period with only end
OPEN_END = IndexRows(date=[("date", 0, span("2020-01-01")[0], OPEN)])  # Period with only start
TWO_YEARS = IndexRows(date=[("date", 0, *span("2019")), ("date", 0, *span("2021"))])


@pytest.mark.parametrize(
    ("rows", "value", "expected"),
    [
        # a stored month [2020-03-01, 2020-04-01)
        (MARCH, date("eq", "2020"), True),
        (MARCH, date("eq", "2020-03"), True),
        (MARCH, date("eq", "2020-03-15"), False),  # stored range is wider than the search
        (MARCH, date("ne", "2020-03-15"), True),
        (MARCH, date("ne", "2020"), False),
        (MARCH, date("gt", "2020-03-15"), True),
        (MARCH, date("gt", "2020-03"), False),
        (MARCH, date("gt", "2020-02"), True),
        (MARCH, date("lt", "2020-03-15"), True),
        (MARCH, date("lt", "2020-03"), False),
        (MARCH, date("lt", "2020-04"), True),
        (MARCH, date("ge", "2020-03"), True),
        (MARCH, date("ge", "2020-03-31"), False),  # nothing above the search value
        (MARCH, date("ge", "2020-04"), False),
        (MARCH, date("le", "2020-03"), True),
        (MARCH, date("le", "2020-03-01"), False),  # nothing below the search value
        (MARCH, date("le", "2020-02"), False),
        (MARCH, date("sa", "2020-02"), True),  # starts exactly where the search ends
        (MARCH, date("sa", "2020-02-29T23:59:59Z"), True),
        (MARCH, date("sa", "2020-03-01"), False),
        (MARCH, date("eb", "2020-04"), True),  # ends exactly where the search starts
        (MARCH, date("eb", "2020-03-31"), False),
        (MARCH, ("ap", *span("2020-03-31")), True),
        (MARCH, ("ap", span("2020-04-01")[0], span("2020-04-05")[1]), False),  # touching only
        (MARCH, ("ap", span("2020-02-20")[0], span("2020-03-01")[1]), True),
        # a Period with only an end (2020-06-01)
        (OPEN_START, date("lt", "1900"), True),
        (OPEN_START, date("gt", "2021"), False),
        (OPEN_START, date("eb", "2020-06-01"), True),
        (OPEN_START, date("eb", "2020-05-31"), False),
        (OPEN_START, date("sa", "1000"), False),
        (OPEN_START, date("eq", "2020"), False),
        (OPEN_START, date("ne", "2020"), True),
        (OPEN_START, date("le", "2020"), True),
        (OPEN_START, date("ge", "2020-05-31"), False),
        # a Period with only a start (2020-01-01)
        (OPEN_END, date("gt", "3000"), True),
        (OPEN_END, date("sa", "2019"), True),
        (OPEN_END, date("sa", "2020"), False),
        (OPEN_END, date("lt", "2020"), False),
        (OPEN_END, date("lt", "2020-01-02"), True),
        (OPEN_END, date("eb", "9998"), False),
        (OPEN_END, ("ap", *span("2500")), True),
        # several values: ne means no stored value is eq
        (TWO_YEARS, date("eq", "2020"), False),
        (TWO_YEARS, date("ne", "2019"), False),
        (TWO_YEARS, date("ne", "2020"), True),
        (TWO_YEARS, date("gt", "2020"), True),
        (TWO_YEARS, date("lt", "2020"), True),
        # no value at all: no prefix matches, ne included
        (IndexRows(), date("ne", "2020"), False),
        (IndexRows(), date("gt", "2020"), False),
        (IndexRows(), date("lt", "2020"), False),
    ],
)
def test_date(rows: IndexRows, value: tuple[Prefix, int, int], expected: bool) -> None:
    assert check(rows, DateClause("date", (value,))) is expected


def test_date_alternatives_are_ored_and_ne_alternatives_stand_alone() -> None:
    assert check(MARCH, DateClause("date", (date("eq", "2019"), date("eq", "2020"))))
    assert check(MARCH, DateClause("date", (date("ne", "2020-03"), date("gt", "2020-02"))))
    assert not check(MARCH, DateClause("date", (date("ne", "2020"), date("lt", "2020"))))


# -- number ---------------------------------------------------------------------------------


def plain(value: float) -> IndexRows:
    return IndexRows(number=[("probability", 0, value, value)])


HUNDRED = number("eq", 100, 99.5, 100.5)
RANGE_5_15 = IndexRows(number=[("probability", 0, 5.0, 15.0)])
OPEN_RANGE = IndexRows(number=[("probability", 0, 5.0, 1e308)])


@pytest.mark.parametrize(
    ("rows", "value", "expected"),
    [
        (plain(100), HUNDRED, True),
        (plain(99.5), HUNDRED, True),  # low bound of the implicit precision is inside
        (plain(100.5), HUNDRED, False),  # high bound is outside
        (plain(99.4999), HUNDRED, False),
        (plain(100.004), number("eq", 100, 99.995, 100.005), True),
        (plain(100.005), number("eq", 100, 99.995, 100.005), False),
        (plain(100), number("ne", 100, 99.5, 100.5), False),
        (plain(101), number("ne", 100, 99.5, 100.5), True),
        (IndexRows(), number("ne", 100, 99.5, 100.5), False),
        (plain(100), number("gt", 100, 99.5, 100.5), False),
        (plain(100.0001), number("gt", 100, 99.5, 100.5), True),
        (plain(100), number("sa", 100, 99.5, 100.5), False),
        (plain(100), number("ge", 100, 99.5, 100.5), True),
        (plain(99.9), number("ge", 100, 99.5, 100.5), False),
        (plain(100), number("lt", 100, 99.5, 100.5), False),
        (plain(99.9), number("lt", 100, 99.5, 100.5), True),
        (plain(99.9), number("eb", 100, 99.5, 100.5), True),
        (plain(100), number("le", 100, 99.5, 100.5), True),
        (plain(100.1), number("le", 100, 99.5, 100.5), False),
        (plain(110), number("ap", 100, 99.5, 100.5), True),
        (plain(90), number("ap", 100, 99.5, 100.5), True),
        (plain(110.5), number("ap", 100, 99.5, 100.5), False),
        (plain(89), number("ap", 100, 99.5, 100.5), False),
        (plain(-95), number("ap", -100, -100.5, -99.5), True),
        (plain(-89), number("ap", -100, -100.5, -99.5), False),
        # a Range [5, 15]
        (RANGE_5_15, number("eq", 10, 9.5, 10.5), False),
        (RANGE_5_15, number("gt", 10, 9.5, 10.5), True),
        (RANGE_5_15, number("lt", 10, 9.5, 10.5), True),
        (RANGE_5_15, number("gt", 15, 14.5, 15.5), False),
        (RANGE_5_15, number("ge", 15, 14.5, 15.5), True),
        (RANGE_5_15, number("le", 5, 4.5, 5.5), True),
        (RANGE_5_15, number("lt", 5, 4.5, 5.5), False),
        (RANGE_5_15, number("ap", 20, 19.5, 20.5), False),
        (RANGE_5_15, number("ap", 16, 15.5, 16.5), True),
        # a Range with only a low bound
        (OPEN_RANGE, number("gt", 1e6, 1e6 - 0.5, 1e6 + 0.5), True),
        (OPEN_RANGE, number("lt", 5, 4.5, 5.5), False),
        (OPEN_RANGE, number("le", 5, 4.5, 5.5), True),
        (OPEN_RANGE, number("eq", 5, 4.5, 5.5), False),
    ],
)
def test_number(rows: IndexRows, value: NumberValue, expected: bool) -> None:
    assert check(rows, NumberClause("probability", (value,))) is expected


# -- quantity -------------------------------------------------------------------------------

MG = IndexRows(quantity=[("value-quantity", 0, UCUM, "mg", "milligram", 5.0, 5.0)])
FIVE = number("eq", 5, 4.5, 5.5)
SIX = number("eq", 6, 5.5, 6.5)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (QuantityValue(FIVE, None, None), True),
        (QuantityValue(SIX, None, None), False),
        (QuantityValue(FIVE, None, "mg"), True),
        (QuantityValue(FIVE, None, "milligram"), True),  # unit text without a system
        (QuantityValue(FIVE, None, "g"), False),
        (QuantityValue(FIVE, UCUM, "mg"), True),
        (QuantityValue(FIVE, UCUM, "milligram"), False),  # with a system only the code counts
        (QuantityValue(FIVE, "http://other", "mg"), False),
        (QuantityValue(FIVE, UCUM, None), True),
        (QuantityValue(number("gt", 4, 3.5, 4.5), UCUM, "mg"), True),
        (QuantityValue(number("lt", 4, 3.5, 4.5), UCUM, "mg"), False),
        (QuantityValue(number("ne", 5, 4.5, 5.5), UCUM, "mg"), False),
        (QuantityValue(number("ne", 6, 5.5, 6.5), UCUM, "mg"), True),
        (QuantityValue(number("ne", 6, 5.5, 6.5), UCUM, "g"), False),  # no value in grams
        (QuantityValue(number("ap", 5.4, 4.9, 5.9), None, "mg"), True),
    ],
)
def test_quantity(value: QuantityValue, expected: bool) -> None:
    assert check(MG, QuantityClause("value-quantity", (value,))) is expected


def test_quantity_unit_and_number_must_hold_on_the_same_row() -> None:
    rows = IndexRows(
        quantity=[
            ("value-quantity", 0, UCUM, "mg", "mg", 5.0, 5.0),
            ("value-quantity", 0, UCUM, "g", "g", 7.0, 7.0),
        ]
    )
    assert not check(rows, QuantityClause("value-quantity", (QuantityValue(FIVE, UCUM, "g"),)))
    assert check(rows, QuantityClause("value-quantity", (QuantityValue(FIVE, UCUM, "mg"),)))


# -- uri ------------------------------------------------------------------------------------

URI_ROWS = IndexRows(uri=[("url", 0, "http://acme.org/fhir/ValueSet/abc")])


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("eq", "http://acme.org/fhir/ValueSet/abc", True),
        ("eq", "http://acme.org/fhir/ValueSet", False),
        ("eq", "http://acme.org/fhir/valueset/abc", False),
        ("below", "http://acme.org/fhir", True),
        ("below", "http://acme.org/fhir/ValueSet/abc", True),
        ("below", "http://other.org", False),
        ("above", "http://acme.org/fhir/ValueSet/abc", True),
        ("above", "http://acme.org/fhir/ValueSet/abc/v2", True),
        ("above", "http://acme.org/fhir/ValueSet/abc/v2/more", True),
        ("above", "http://acme.org/fhir/ValueSet/abcdef", False),  # not at a / boundary
        ("above", "http://acme.org/fhir", False),
    ],
)
def test_uri(mode: Any, value: str, expected: bool) -> None:
    assert check(URI_ROWS, UriClause("url", mode, (value,))) is expected


# -- missing --------------------------------------------------------------------------------

MISSING_ROWS = IndexRows(token=[("code", 0, LOINC, "1")], string=[("name", 0, "a", "A")])


@pytest.mark.parametrize(
    ("param", "table", "missing", "expected"),
    [
        ("code", "search_token", True, False),
        ("code", "search_token", False, True),
        ("status", "search_token", True, True),
        ("status", "search_token", False, False),
        ("name", "search_string", False, True),
        ("name", "search_token", True, True),  # rows of another table do not count
    ],
)
def test_missing(param: str, table: str, missing: bool, expected: bool) -> None:
    assert check(MISSING_ROWS, MissingClause(param, table, missing)) is expected


# -- composite ------------------------------------------------------------------------------

COMPOSITE_ROWS = IndexRows(
    token=[
        ("code-value-quantity#0", 1, LOINC, "A"),
        ("code-value-quantity#0", 2, LOINC, "B"),
    ],
    quantity=[
        ("code-value-quantity#1", 1, UCUM, "mg", "mg", 5.0, 5.0),
        ("code-value-quantity#1", 2, UCUM, "mg", "mg", 10.0, 10.0),
    ],
)


def pair(code: str, value: float) -> tuple[Clause, ...]:
    return (
        TokenClause("code-value-quantity#0", ((LOINC, code),)),
        QuantityClause(
            "code-value-quantity#1",
            (QuantityValue(number("eq", value, value - 0.5, value + 0.5), None, None),),
        ),
    )


@pytest.mark.parametrize(
    ("alternatives", "expected"),
    [
        ((pair("A", 5),), True),
        ((pair("B", 10),), True),
        ((pair("A", 10),), False),  # A and 10 come from different components
        ((pair("B", 5),), False),
        ((pair("A", 10), pair("B", 10)), True),
        ((pair("C", 5),), False),
    ],
)
def test_composite_components_hold_within_one_group(
    alternatives: tuple[tuple[Clause, ...], ...], expected: bool
) -> None:
    clause = CompositeClause("code-value-quantity", alternatives)
    assert check(COMPOSITE_ROWS, clause) is expected


def test_composite_component_keyed_by_position() -> None:
    clause = CompositeClause(
        "code-value-quantity",
        (
            (
                TokenClause("code", ((LOINC, "B"),)),
                QuantityClause("value-quantity", (QuantityValue(FIVE, None, None),)),
            ),
        ),
    )
    assert not check(COMPOSITE_ROWS, clause)
    clause = CompositeClause(
        "code-value-quantity",
        (
            (
                TokenClause("code", ((LOINC, "A"),)),
                QuantityClause("value-quantity", (QuantityValue(FIVE, None, None),)),
            ),
        ),
    )
    assert check(COMPOSITE_ROWS, clause)


# -- _id, _lastUpdated, types ---------------------------------------------------------------


def test_id() -> None:
    fake = FakeIndex()
    resource = fake.add("Patient", "a", IndexRows())
    criteria = Criteria("Patient", (("_id", "a,b"),), (IdClause(("a", "b")),))
    assert matches(criteria, "Patient", resource, fake)
    assert not matches(criteria, "Patient", resource, fake, id="c")
    assert not matches(criteria, "Patient", {"resourceType": "Patient"}, fake)
    assert fake.calls == 0  # column clauses do not need index rows


STAMP = "2020-03-04T10:00:00.000000Z"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (date("eq", "2020-03-04"), True),
        (date("eq", "2020-03"), True),
        (date("eq", "2020-03-04T10:00:00Z"), True),
        (date("eq", "2020-03-05"), False),
        (date("ne", "2020-03-04"), False),
        (date("ne", "2021"), True),
        (date("ge", "2020-03-04"), True),
        (date("gt", "2020-03-04"), False),
        (date("gt", "2020-03-04T09:59:59Z"), True),
        (date("sa", "2020-03-04T09:59:59Z"), True),
        (date("lt", "2020-03-04"), False),
        (date("lt", "2020-03-04T10:00:00Z"), False),
        (date("lt", "2020-03-04T10:00:01Z"), True),
        (date("lt", "2020-03-05"), True),
        (date("eb", "2020-03-05"), True),
        (date("le", "2020-03-04T10:00:00Z"), True),
        (date("le", "2020-03-04T09:00:00Z"), False),
        (("ap", *span("2020-03-03")), False),
        (("ap", span("2020-03-03")[0], span("2020-03-05")[1]), True),
    ],
)
def test_last_updated_reads_meta(value: tuple[Prefix, int, int], expected: bool) -> None:
    fake = FakeIndex()
    resource = fake.add("Patient", "a", IndexRows(), meta={"lastUpdated": STAMP})
    criteria = Criteria("Patient", (), (LastUpdatedClause((value,)),))
    assert matches(criteria, "Patient", resource, fake) is expected


def test_last_updated_argument_wins_over_meta_and_boundaries_are_exclusive() -> None:
    fake = FakeIndex()
    resource = fake.add("Patient", "a", IndexRows(), meta={"lastUpdated": STAMP})
    low, high = span("2021-01-01")
    eq = Criteria("Patient", (), (LastUpdatedClause((("eq", low, high),)),))
    gt = Criteria("Patient", (), (LastUpdatedClause((("gt", low, high),)),))
    assert matches(eq, "Patient", resource, fake, last_updated=low)
    assert not matches(eq, "Patient", resource, fake, last_updated=high)
    assert matches(eq, "Patient", resource, fake, last_updated=high - 1)
    assert matches(gt, "Patient", resource, fake, last_updated=high)
    assert not matches(gt, "Patient", resource, fake, last_updated=high - 1)
    assert not matches(eq, "Patient", resource, fake)
    assert not matches(eq, "Patient", {"id": "b"}, fake)  # no stamp at all


def test_criteria_type_and_types() -> None:
    fake = FakeIndex()
    resource = fake.add("Patient", "a", IndexRows())
    assert matches(Criteria("Patient", (), ()), "Patient", resource, fake)
    assert not matches(Criteria("Observation", (), ()), "Patient", resource, fake)
    assert matches(Criteria(None, (), ()), "Patient", resource, fake)
    assert matches(Criteria(None, (), (), ("Group", "Patient")), "Patient", resource, fake)
    assert not matches(Criteria(None, (), (), ("Group",)), "Patient", resource, fake)


def test_clauses_are_anded() -> None:
    rows = IndexRows(token=[("code", 0, LOINC, "A")], string=[("name", 0, "ann", "Ann")])
    fake = FakeIndex()
    resource = fake.add("Observation", "o", rows)
    code = TokenClause("code", ((None, "A"),))
    both = Criteria("Observation", (), (code, StringClause("name", "start", ("an",))))
    one = Criteria("Observation", (), (code, StringClause("name", "start", ("bo",))))
    assert matches(both, "Observation", resource, fake)
    assert not matches(one, "Observation", resource, fake)
    assert fake.calls == 2  # rows computed once per evaluated resource


# -- chains and _has ------------------------------------------------------------------------


def chain_world() -> FakeIndex:
    fake = FakeIndex()
    fake.add(
        "Observation",
        "o1",
        IndexRows(
            token=[("code", 0, LOINC, "A")],
            reference=[
                ("subject", 0, "Patient", "p1", ""),
                ("subject", 0, "", "", "http://elsewhere.org/Patient/p2"),
                ("performer", 0, "Patient", "p2", ""),
            ],
        ),
    )
    fake.add(
        "Observation",
        "o2",
        IndexRows(token=[("code", 0, LOINC, "B")], reference=[("subject", 0, "Patient", "p2", "")]),
    )
    fake.add(
        "Patient",
        "p1",
        IndexRows(
            string=[("name", 0, "ann", "Ann")],
            reference=[("general-practitioner", 0, "Practitioner", "dr1", "")],
        ),
    )
    fake.add(
        "Patient",
        "p2",
        IndexRows(
            string=[("name", 0, "bob", "Bob")],
            reference=[("general-practitioner", 0, "Practitioner", "gone", "")],
        ),
    )
    fake.add("Practitioner", "dr1", IndexRows(string=[("name", 0, "jones", "Jones")]))
    fake.add(
        "Provenance",
        "prov1",
        IndexRows(
            reference=[("target", 0, "Observation", "o1", "")],
            token=[("activity", 0, "", "verify")],
        ),
    )
    return fake


def run(fake: FakeIndex, type: str, id: str, clause: Clause) -> bool:
    return matches(
        Criteria(type, (), (clause,)),
        type,
        fake.resources[(type, id)],
        fake,
        resolve=fake.resolve,
        referrers=fake.referrers,
    )


GP_JONES = ChainClause(
    "general-practitioner", ("Practitioner",), StringClause("name", "start", ("jon",))
)
GP_NAMED = ChainClause(
    "general-practitioner", ("Practitioner",), MissingClause("name", "search_string", False)
)
GP_UNNAMED = ChainClause(
    "general-practitioner", ("Practitioner",), MissingClause("name", "search_string", True)
)


@pytest.mark.parametrize(
    ("id", "clause", "expected"),
    [
        ("o1", ChainClause("subject", ("Patient",), StringClause("name", "start", ("an",))), True),
        ("o1", ChainClause("subject", ("Patient",), StringClause("name", "start", ("bo",))), False),
        ("o2", ChainClause("subject", ("Patient",), StringClause("name", "start", ("bo",))), True),
        ("o1", ChainClause("subject", ("Group",), StringClause("name", "start", ("an",))), False),
        ("o1", ChainClause("subject", ("Patient",), IdClause(("p1",))), True),
        ("o1", ChainClause("performer", ("Patient",), IdClause(("p1",))), False),
        ("o1", ChainClause("subject", ("Patient",), GP_JONES), True),  # depth 2
        ("o2", ChainClause("subject", ("Patient",), GP_JONES), False),  # gp does not resolve
        ("o1", ChainClause("subject", ("Patient",), GP_NAMED), True),
        ("o1", ChainClause("subject", ("Patient",), GP_UNNAMED), False),
    ],
)
def test_chain(id: str, clause: Clause, expected: bool) -> None:
    assert run(chain_world(), "Observation", id, clause) is expected


@pytest.mark.parametrize(
    ("id", "clause", "expected"),
    [
        ("p1", HasClause("Observation", "subject", TokenClause("code", ((None, "A"),))), True),
        ("p1", HasClause("Observation", "subject", TokenClause("code", ((None, "B"),))), False),
        ("p2", HasClause("Observation", "subject", TokenClause("code", ((None, "B"),))), True),
        ("p2", HasClause("Observation", "performer", TokenClause("code", ((None, "A"),))), True),
        ("dr1", HasClause("Observation", "subject", TokenClause("code", ((None, "A"),))), False),
        (
            "p1",
            HasClause(
                "Observation",
                "subject",
                HasClause("Provenance", "target", TokenClause("activity", (("", "verify"),))),
            ),
            True,
        ),
        (
            "p2",
            HasClause(
                "Observation",
                "subject",
                HasClause("Provenance", "target", TokenClause("activity", (("", "verify"),))),
            ),
            False,
        ),
    ],
)
def test_has(id: str, clause: Clause, expected: bool) -> None:
    type = "Practitioner" if id.startswith("dr") else "Patient"
    assert run(chain_world(), type, id, clause) is expected


def test_chain_and_has_need_their_lookups() -> None:
    fake = chain_world()
    chain = Criteria(
        "Observation",
        (),
        (IdClause(("nope",)), ChainClause("subject", ("Patient",), IdClause(("p1",)))),
    )
    has = Criteria("Patient", (), (HasClause("Observation", "subject", IdClause(("o1",))),))
    nested = Criteria(
        "Observation",
        (),
        (
            ChainClause(
                "subject", ("Patient",), HasClause("Observation", "subject", IdClause(("o1",)))
            ),
        ),
    )
    observation = fake.resources[("Observation", "o1")]
    patient = fake.resources[("Patient", "p1")]
    with pytest.raises(InvalidSearch, match="chained parameters cannot be evaluated here"):
        matches(chain, "Observation", observation, fake)
    with pytest.raises(InvalidSearch):
        matches(has, "Patient", patient, fake, resolve=fake.resolve)
    with pytest.raises(InvalidSearch):
        matches(nested, "Observation", observation, fake, resolve=fake.resolve)
    assert matches(has, "Patient", patient, fake, referrers=fake.referrers)
    assert matches(
        nested, "Observation", observation, fake, resolve=fake.resolve, referrers=fake.referrers
    )


COMPARTMENT = CompartmentClause(
    "Patient", "p2", (("Observation", ("subject",)), ("Patient", ("link",))), include_self=True
)


@pytest.mark.parametrize(
    ("type", "id", "clause", "expected"),
    [
        ("Observation", "o2", COMPARTMENT, True),
        ("Observation", "o1", COMPARTMENT, False),  # p2 only as performer or by external URL
        ("Patient", "p2", COMPARTMENT, True),  # the compartment's own resource
        ("Patient", "p1", COMPARTMENT, False),
        ("Patient", "p2", CompartmentClause("Patient", "p2", COMPARTMENT.params), False),
        ("Practitioner", "dr1", COMPARTMENT, False),  # a type outside the compartment
    ],
)
def test_compartment(type: str, id: str, clause: Clause, expected: bool) -> None:
    assert run(chain_world(), type, id, clause) is expected


def test_per_type_clause_lets_other_types_pass() -> None:
    fake = chain_world()
    only_b = PerTypeClause("Observation", TokenClause("code", ((None, "B"),)))
    criteria = Criteria(None, (), (only_b,))
    assert not matches(criteria, "Observation", fake.resources[("Observation", "o1")], fake)
    assert matches(criteria, "Observation", fake.resources[("Observation", "o2")], fake)
    assert matches(criteria, "Patient", fake.resources[("Patient", "p1")], fake)
    chained = Criteria(
        None,
        (),
        (PerTypeClause("Observation", ChainClause("subject", ("Patient",), IdClause(("p1",)))),),
    )
    with pytest.raises(InvalidSearch):
        matches(chained, "Patient", fake.resources[("Patient", "p1")], fake)


def test_compiled_matcher_is_reusable() -> None:
    fake = chain_world()
    matcher = compile_matcher(Criteria("Observation", (), (TokenClause("code", ((None, "A"),)),)))
    assert matcher("Observation", fake.resources[("Observation", "o1")], fake)
    assert not matcher("Observation", fake.resources[("Observation", "o2")], fake)
