"""Reading FHIR search parameters into the typed query (R4 search.html)."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta
from typing import cast
from zoneinfo import ZoneInfo

import pytest

from server.errors import InvalidSearch
from server.search import parse
from server.search.parse import (
    SearchContext,
    SearchRequest,
    decode_cursor,
    encode_cursor,
    parse_criteria,
    parse_criteria_string,
    parse_number,
    parse_search,
)
from server.search.query import (
    ChainClause,
    Clause,
    CompositeClause,
    Criteria,
    Cursor,
    DateClause,
    HasClause,
    IdClause,
    Include,
    LastUpdatedClause,
    MissingClause,
    NumberClause,
    NumberValue,
    Prefix,
    QuantityClause,
    QuantityValue,
    ReferenceClause,
    ReferenceValue,
    SortKey,
    StringClause,
    TokenClause,
    UriClause,
)
from server.search.registry import load_registry

ZONE = ZoneInfo("America/Los_Angeles")
BASE = "http://example.org/fhir"
SCT = "http://snomed.info/sct"
COLORS = "http://example.org/ValueSet/colors"
EXPANSIONS = {
    COLORS: frozenset({("http://example.org/color", "red"), ("http://example.org/color", "blue")}),
    "http://example.org/ValueSet/empty": frozenset(),
    f"{SCT}?below=73211009": frozenset({(SCT, "73211009"), (SCT, "44054006")}),
    f"{SCT}?above=44054006": frozenset({(SCT, "44054006"), (SCT, "73211009")}),
}
CTX = SearchContext(
    registry=load_registry(),
    base=BASE,
    zone=ZONE,
    default_count=20,
    max_count=100,
    expand=EXPANSIONS.get,
)
NOW = int(datetime(2024, 6, 1, tzinfo=UTC).timestamp()) * 1_000_000
DAY = 86_400 * 1_000_000


@pytest.fixture(autouse=True)
def _fixed_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parse, "now_us", lambda: NOW)


def pairs(query: str) -> list[tuple[str, str]]:
    """Query pairs without URL decoding, so the tests read like the raw search syntax."""
    out = []
    for item in query.split("&") if query else []:
        name, _, value = item.partition("=")
        out.append((name, value))
    return out


def search(type: str | None, query: str, *, lenient: bool = False) -> SearchRequest:
    return parse_search(type, pairs(query), CTX, lenient=lenient)


def clauses(type: str | None, query: str) -> tuple[Clause, ...]:
    return search(type, query).query.criteria.clauses


def us(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def local_day(year: int, month: int, day: int) -> tuple[int, int]:
    start = datetime(year, month, day, tzinfo=ZONE)
    return us(start), us(datetime.combine(start.date() + timedelta(days=1), start.timetz()))


def number(prefix: str, value: float, low: float, high: float) -> NumberValue:
    return NumberValue(cast(Prefix, prefix), value, low, high)


JAN1 = local_day(2020, 1, 1)

# (type, query, the clauses it means)
FILTERS: list[tuple[str, str, tuple[Clause, ...]]] = [
    # string: folded prefix match by default, raw text with :exact
    ("Patient", "name=Élodie", (StringClause("name", "start", ("elodie",)),)),
    ("Patient", "name:exact=Élodie", (StringClause("name", "exact", ("Élodie",)),)),
    ("Patient", "name:contains=LODI", (StringClause("name", "contains", ("lodi",)),)),
    ("Patient", "family=van,de", (StringClause("family", "start", ("van", "de")),)),
    ("Patient", r"family=a\,b", (StringClause("family", "start", ("a,b",)),)),
    ("Patient", r"family=a\\b", (StringClause("family", "start", ("a\\b",)),)),
    ("Patient", r"family=a\b", (StringClause("family", "start", ("a\\b",)),)),
    (
        "Patient",
        "family=a&family=b",
        (StringClause("family", "start", ("a",)), StringClause("family", "start", ("b",))),
    ),
    # token
    ("Patient", "identifier=123", (TokenClause("identifier", ((None, "123"),)),)),
    ("Patient", "identifier=http://s|123", (TokenClause("identifier", (("http://s", "123"),)),)),
    ("Patient", "identifier=|123", (TokenClause("identifier", (("", "123"),)),)),
    ("Patient", "identifier=http://s|", (TokenClause("identifier", (("http://s", None),)),)),
    ("Patient", r"identifier=a\|b", (TokenClause("identifier", ((None, "a|b"),)),)),
    ("Patient", r"identifier=s|a\,b", (TokenClause("identifier", (("s", "a,b"),)),)),
    (
        "Patient",
        "identifier=s|1,2",
        (TokenClause("identifier", (("s", "1"), (None, "2"))),),
    ),
    ("Patient", "gender:not=male", (TokenClause("gender", ((None, "male"),), negate=True),)),
    ("Patient", "active=true", (TokenClause("active", ((None, "true"),)),)),
    ("Observation", "code:text=Blóod", (StringClause("code:text", "start", ("blood",)),)),
    (
        "Patient",
        "identifier:of-type=http://t|MR|123",
        (TokenClause("identifier:of-type", ((None, "http://t|MR|123"),)),),
    ),
    (
        "Patient",
        "identifier:of-type=|MR|123",
        (TokenClause("identifier:of-type", ((None, "|MR|123"),)),),
    ),
    (
        "Observation",
        f"code:in={COLORS}",
        (
            TokenClause(
                "code",
                (("http://example.org/color", "blue"), ("http://example.org/color", "red")),
            ),
        ),
    ),
    (
        "Observation",
        f"code:not-in={COLORS}",
        (
            TokenClause(
                "code",
                (("http://example.org/color", "blue"), ("http://example.org/color", "red")),
                negate=True,
            ),
        ),
    ),
    (
        "Observation",
        "code:in=http://example.org/ValueSet/empty",
        (TokenClause("code", ()),),
    ),
    (
        "Observation",
        f"code:below={SCT}|73211009",
        (TokenClause("code", ((SCT, "44054006"), (SCT, "73211009"))),),
    ),
    (
        "Observation",
        f"code:above={SCT}|44054006",
        (TokenClause("code", ((SCT, "44054006"), (SCT, "73211009"))),),
    ),
    ("Patient", "_tag=http://t|x", (TokenClause("_tag", (("http://t", "x"),)),)),
    # reference
    (
        "Observation",
        "subject=Patient/1",
        (ReferenceClause("subject", (ReferenceValue("Patient", "1"),)),),
    ),
    (
        "Observation",
        "subject=Patient/1/_history/3",
        (ReferenceClause("subject", (ReferenceValue("Patient", "1"),)),),
    ),
    ("Observation", "subject=1", (ReferenceClause("subject", (ReferenceValue(None, "1"),)),)),
    (
        "Observation",
        "patient=1",
        (ReferenceClause("patient", (ReferenceValue("Patient", "1"),)),),
    ),
    (
        "Observation",
        "subject:Patient=1",
        (ReferenceClause("subject", (ReferenceValue("Patient", "1"),)),),
    ),
    (
        "Observation",
        "subject:Patient=Patient/1",
        (ReferenceClause("subject", (ReferenceValue("Patient", "1"),)),),
    ),
    (
        "Observation",
        f"subject={BASE}/Patient/1",
        (ReferenceClause("subject", (ReferenceValue("Patient", "1"),)),),
    ),
    (
        "Observation",
        "subject=http://other.org/fhir/Patient/1",
        (ReferenceClause("subject", (ReferenceValue(url="http://other.org/fhir/Patient/1"),)),),
    ),
    (
        "Observation",
        "subject=urn:uuid:0b1c0b1c-0000-4000-8000-000000000001",
        (
            ReferenceClause(
                "subject", (ReferenceValue(url="urn:uuid:0b1c0b1c-0000-4000-8000-000000000001"),)
            ),
        ),
    ),
    (
        "Observation",
        "subject=Patient/1,Group/2",
        (
            ReferenceClause(
                "subject", (ReferenceValue("Patient", "1"), ReferenceValue("Group", "2"))
            ),
        ),
    ),
    (
        "Observation",
        "subject:identifier=http://s|42",
        (TokenClause("subject:identifier", (("http://s", "42"),)),),
    ),
    # date
    ("Patient", "birthdate=2020-01-01", (DateClause("birthdate", (("eq", *JAN1),)),)),
    ("Patient", "birthdate=eq2020-01-01", (DateClause("birthdate", (("eq", *JAN1),)),)),
    ("Patient", "birthdate=ne2020-01-01", (DateClause("birthdate", (("ne", *JAN1),)),)),
    ("Patient", "birthdate=gt2020-01-01", (DateClause("birthdate", (("gt", *JAN1),)),)),
    ("Patient", "birthdate=lt2020-01-01", (DateClause("birthdate", (("lt", *JAN1),)),)),
    ("Patient", "birthdate=ge2020-01-01", (DateClause("birthdate", (("ge", *JAN1),)),)),
    ("Patient", "birthdate=le2020-01-01", (DateClause("birthdate", (("le", *JAN1),)),)),
    ("Patient", "birthdate=sa2020-01-01", (DateClause("birthdate", (("sa", *JAN1),)),)),
    ("Patient", "birthdate=eb2020-01-01", (DateClause("birthdate", (("eb", *JAN1),)),)),
    (
        "Patient",
        "birthdate=2020",
        (DateClause("birthdate", (("eq", JAN1[0], local_day(2021, 1, 1)[0]),)),),
    ),
    (
        "Observation",
        "date=2020-01-01T10:00:00Z",
        (
            DateClause(
                "date",
                (
                    (
                        "eq",
                        us(datetime(2020, 1, 1, 10, tzinfo=UTC)),
                        us(datetime(2020, 1, 1, 10, 0, 1, tzinfo=UTC)),
                    ),
                ),
            ),
        ),
    ),
    (
        "Patient",
        "birthdate=ge2020-01-01&birthdate=lt2020-01-02",
        (
            DateClause("birthdate", (("ge", *JAN1),)),
            DateClause("birthdate", (("lt", *local_day(2020, 1, 2)),)),
        ),
    ),
    ("Patient", "_lastUpdated=gt2020-01-01", (LastUpdatedClause((("gt", *JAN1),)),)),
    # number
    (
        "RiskAssessment",
        "probability=0.5",
        (NumberClause("probability", (number("eq", 0.5, 0.45, 0.55),)),),
    ),
    (
        "RiskAssessment",
        "probability=gt100,le1e2",
        (
            NumberClause(
                "probability", (number("gt", 100, 99.5, 100.5), number("le", 100, 50, 150))
            ),
        ),
    ),
    (
        "RiskAssessment",
        "probability=-5",
        (NumberClause("probability", (number("eq", -5, -5.5, -4.5),)),),
    ),
    # quantity
    (
        "Encounter",
        "length=5",
        (QuantityClause("length", (QuantityValue(number("eq", 5, 4.5, 5.5), None, None),)),),
    ),
    (
        "Encounter",
        "length=le5||min",
        (QuantityClause("length", (QuantityValue(number("le", 5, 4.5, 5.5), None, "min"),)),),
    ),
    (
        "Encounter",
        "length=ap5.0|http://unitsofmeasure.org|min",
        (
            QuantityClause(
                "length",
                (QuantityValue(number("ap", 5, 4.95, 5.05), "http://unitsofmeasure.org", "min"),),
            ),
        ),
    ),
    (
        "Encounter",
        r"length=5||a\|b",
        (QuantityClause("length", (QuantityValue(number("eq", 5, 4.5, 5.5), None, "a|b"),)),),
    ),
    # uri
    ("ValueSet", "url=http://x.org/vs", (UriClause("url", "eq", ("http://x.org/vs",)),)),
    ("ValueSet", "url:below=http://x.org/", (UriClause("url", "below", ("http://x.org/",)),)),
    (
        "ValueSet",
        "url:above=http://x.org/a/b",
        (UriClause("url", "above", ("http://x.org/a/b",)),),
    ),
    ("Patient", "_profile=http://p", (UriClause("_profile", "eq", ("http://p",)),)),
    # :missing on every kind of parameter
    ("Patient", "name:missing=true", (MissingClause("name", "search_string", True),)),
    ("Patient", "gender:missing=false", (MissingClause("gender", "search_token", False),)),
    (
        "Observation",
        "subject:missing=true",
        (MissingClause("subject", "search_reference", True),),
    ),
    ("Patient", "birthdate:missing=true", (MissingClause("birthdate", "search_date", True),)),
    (
        "RiskAssessment",
        "probability:missing=true",
        (MissingClause("probability", "search_number", True),),
    ),
    ("Encounter", "length:missing=true", (MissingClause("length", "search_quantity", True),)),
    ("ValueSet", "url:missing=true", (MissingClause("url", "search_uri", True),)),
    # _id
    ("Patient", "_id=a,b-1.2", (IdClause(("a", "b-1.2")),)),
    # composite: components by their own types, stored under <code>#<i>
    (
        "Observation",
        "code-value-quantity=http://loinc.org|8480-6$gt100|http://unitsofmeasure.org|mm[Hg]",
        (
            CompositeClause(
                "code-value-quantity",
                (
                    (
                        TokenClause("code-value-quantity#0", (("http://loinc.org", "8480-6"),)),
                        QuantityClause(
                            "code-value-quantity#1",
                            (
                                QuantityValue(
                                    number("gt", 100, 99.5, 100.5),
                                    "http://unitsofmeasure.org",
                                    "mm[Hg]",
                                ),
                            ),
                        ),
                    ),
                ),
            ),
        ),
    ),
    (
        "Observation",
        r"code-value-string=a$x\$y,b$z",
        (
            CompositeClause(
                "code-value-string",
                (
                    (
                        TokenClause("code-value-string#0", ((None, "a"),)),
                        StringClause("code-value-string#1", "start", ("x$y",)),
                    ),
                    (
                        TokenClause("code-value-string#0", ((None, "b"),)),
                        StringClause("code-value-string#1", "start", ("z",)),
                    ),
                ),
            ),
        ),
    ),
    (
        "Observation",
        "code-value-date=c$ge2020-01-01",
        (
            CompositeClause(
                "code-value-date",
                (
                    (
                        TokenClause("code-value-date#0", ((None, "c"),)),
                        DateClause("code-value-date#1", (("ge", *JAN1),)),
                    ),
                ),
            ),
        ),
    ),
    # chains: depth 1, 2, 3 and 4
    (
        "Observation",
        "subject.name=Ann",
        (ChainClause("subject", ("Patient", "Location"), StringClause("name", "start", ("ann",))),),
    ),
    (
        "Observation",
        "subject:Patient.name=Ann",
        (ChainClause("subject", ("Patient",), StringClause("name", "start", ("ann",))),),
    ),
    (
        "Observation",
        "subject:Patient.birthdate=2020-01-01",
        (ChainClause("subject", ("Patient",), DateClause("birthdate", (("eq", *JAN1),))),),
    ),
    (
        "Observation",
        "patient._id=p1",
        (ChainClause("patient", ("Patient",), IdClause(("p1",))),),
    ),
    (
        "Observation",
        "subject:Patient.organization.name=Acme",
        (
            ChainClause(
                "subject",
                ("Patient",),
                ChainClause(
                    "organization", ("Organization",), StringClause("name", "start", ("acme",))
                ),
            ),
        ),
    ),
    (
        "Observation",
        "patient.organization.partof.name=Acme",
        (
            ChainClause(
                "patient",
                ("Patient",),
                ChainClause(
                    "organization",
                    ("Organization",),
                    ChainClause(
                        "partof", ("Organization",), StringClause("name", "start", ("acme",))
                    ),
                ),
            ),
        ),
    ),
    (
        "Observation",
        "patient.organization.partof.partof.identifier=s|1",
        (
            ChainClause(
                "patient",
                ("Patient",),
                ChainClause(
                    "organization",
                    ("Organization",),
                    ChainClause(
                        "partof",
                        ("Organization",),
                        ChainClause(
                            "partof", ("Organization",), TokenClause("identifier", (("s", "1"),))
                        ),
                    ),
                ),
            ),
        ),
    ),
    (
        "Observation",
        "subject.organization=o1",
        (
            ChainClause(
                "subject",
                ("Device", "Patient", "Location"),
                ReferenceClause("organization", (ReferenceValue("Organization", "o1"),)),
            ),
        ),
    ),
    (
        "Observation",
        "subject:Patient.name:exact=Ann",
        (ChainClause("subject", ("Patient",), StringClause("name", "exact", ("Ann",))),),
    ),
    # reverse chains: depth 1 and 2
    (
        "Patient",
        "_has:Observation:patient:code=1234-5",
        (HasClause("Observation", "patient", TokenClause("code", ((None, "1234-5"),))),),
    ),
    (
        "Patient",
        "_has:Observation:subject:code:not=x",
        (HasClause("Observation", "subject", TokenClause("code", ((None, "x"),), negate=True)),),
    ),
    (
        "Patient",
        "_has:Observation:subject:_has:Provenance:target:agent=Practitioner/9",
        (
            HasClause(
                "Observation",
                "subject",
                HasClause(
                    "Provenance",
                    "target",
                    ReferenceClause("agent", (ReferenceValue("Practitioner", "9"),)),
                ),
            ),
        ),
    ),
    (
        "Patient",
        "_has:Observation:patient:subject:Patient.name=Ann",
        (
            HasClause(
                "Observation",
                "patient",
                ChainClause("subject", ("Patient",), StringClause("name", "start", ("ann",))),
            ),
        ),
    ),
]


@pytest.mark.parametrize(("type", "query", "expected"), FILTERS, ids=[f[1] for f in FILTERS])
def test_filters_become_typed_clauses(type: str, query: str, expected: tuple[Clause, ...]) -> None:
    assert clauses(type, query) == expected


def test_approximate_dates_widen_by_a_tenth_of_the_distance_to_now() -> None:
    (clause,) = clauses("Patient", "birthdate=ap2020-01-01")
    assert isinstance(clause, DateClause)
    ((prefix, low, high),) = clause.values
    margin = (NOW - JAN1[0]) // 10
    assert (prefix, low, high) == ("ap", JAN1[0] - margin, JAN1[1] + margin)


def test_approximate_dates_near_now_widen_by_at_least_a_day() -> None:
    (clause,) = clauses("Observation", "date=ap2024-06-01T00:00:00Z")
    assert isinstance(clause, DateClause)
    ((prefix, low, high),) = clause.values
    assert (prefix, low, high) == ("ap", NOW - DAY, NOW + 1_000_000 + DAY)


def test_approximate_last_updated_is_widened_too() -> None:
    (clause,) = clauses("Patient", "_lastUpdated=ap2020-01-01")
    assert isinstance(clause, LastUpdatedClause)
    margin = (NOW - JAN1[0]) // 10
    assert clause.values == (("ap", JAN1[0] - margin, JAN1[1] + margin),)


# (type, query, part of the message)
ERRORS: list[tuple[str | None, str, str]] = [
    ("Patient", "nickname=x", "Unknown search parameter 'nickname'"),
    ("Patient", "name:fuzzy=x", "Unknown modifier ':fuzzy'"),
    ("Patient", "birthdate:exact=2020", "Unknown modifier ':exact'"),
    ("Patient", "name:Patient=x", "Unknown modifier ':Patient'"),
    ("Observation", "subject:below=Patient/1", "Unknown modifier ':below'"),
    ("Patient", "_id:not=x", "Unknown modifier ':not'"),
    ("Patient", "name:=x", "Unknown search parameter"),
    ("Patient", "_text=x", "Unknown search parameter '_text'"),
    ("Patient", "_content=x", "Unknown search parameter '_content'"),
    ("Patient", "_list=x", "Unknown search parameter '_list'"),
    ("Patient", "_filter=x", "Unknown search parameter '_filter'"),
    ("Patient", "_query=x", "Unknown search parameter '_query'"),
    ("Patient", "_contained=true", "Unknown search parameter '_contained'"),
    ("Patient", "_containedType=x", "Unknown search parameter '_containedType'"),
    ("Location", "near=1|2|3|km", "Unknown search parameter 'near'"),
    ("Patient", "name=", "Empty value"),
    ("Patient", "name=a,,b", "Empty value"),
    ("Patient", "identifier=a,", "Empty value"),
    ("Patient", "identifier=|", "needs a system or code"),
    ("Patient", "_id=", "Empty value"),
    ("Patient", "_id=bad id", "Invalid id"),
    ("Patient", "_id=" + "a" * 65, "Invalid id"),
    ("Patient", "birthdate=2020-13-01", "Invalid date"),
    ("Patient", "birthdate=yesterday", "Unknown prefix 'ye'"),
    ("Patient", "birthdate=gt", "Invalid date"),
    ("Patient", "_lastUpdated=xx2020", "Unknown prefix 'xx'"),
    ("RiskAssessment", "probability=abc", "Unknown prefix 'ab'"),
    ("RiskAssessment", "probability=1.2.3", "Invalid number"),
    ("RiskAssessment", "probability=gt", "Invalid number"),
    ("Encounter", "length=5|http://unitsofmeasure.org", "Invalid quantity"),
    ("Encounter", "length=5|a|b|c", "Invalid quantity"),
    ("Encounter", "length=five||min", "Unknown prefix 'fi'"),
    ("Patient", "identifier:of-type=MR|123", "':of-type' takes"),
    ("Patient", "identifier:of-type=http://t||123", "':of-type' takes"),
    ("Observation", "code:in=http://example.org/ValueSet/nope", "Unknown value set"),
    ("Observation", "code:below=http://loinc.org|1234-5", "not supported for this code system"),
    ("Observation", "code:below=73211009", "takes system|code"),
    ("Observation", "code:above=|73211009", "takes system|code"),
    ("Observation", "subject:Practitioner=1", "Practitioner is not a target of"),
    ("Observation", "subject=Practitioner/1", "Practitioner is not a target of"),
    ("Observation", "subject:Patient=Group/1", "is not a Patient"),
    ("Observation", "subject=#contained", "Invalid reference"),
    ("Observation", "subject=Unknown/1", "Invalid reference"),
    ("Patient", "name:missing=maybe", "':missing' takes true or false"),
    ("Patient", "name:missing=true,false", "':missing' takes true or false"),
    ("Observation", "code-value-quantity:missing=true", "not supported on composite"),
    ("Observation", "code-value-quantity=http://loinc.org|8480-6", "takes 2 values"),
    ("Observation", "code-value-quantity=a$5$6", "takes 2 values"),
    ("Observation", "code-value-quantity=a$", "takes 2 values"),
    ("Observation", "code-value-quantity=a$xx5", "Unknown prefix"),
    # chains
    ("Patient", "name.family=x", "not a reference parameter"),
    ("Observation", "subject.nickname=x", "Unknown search parameter 'nickname'"),
    ("Observation", "subject:Practitioner.name=x", "Practitioner is not a target"),
    ("Observation", "subject:identifier.name=x", "resource type modifier"),
    ("Observation", "focus.value=x", "add a type modifier"),
    ("Observation", "based-on.replaces=1", "add a type modifier"),
    ("Observation", "patient.organization.partof.partof.partof.name=x", "limited to 4"),
    ("Observation", "subject._has:Observation:patient:code=x", "Unknown search parameter"),
    # reverse chains
    (
        "Patient",
        "_has:Observation:subject:_has:Provenance:target:_has:AuditEvent:entity:type=x",
        "limited to 2",
    ),
    ("Patient", "_has:Observation:patient", "_has takes"),
    ("Patient", "_has:Observation::code=x", "_has takes"),
    ("Patient", "_has:Nothing:patient:code=x", "Unknown resource type 'Nothing'"),
    ("Patient", "_has:Observation:nothing:code=x", "Unknown search parameter 'nothing'"),
    ("Patient", "_has:Observation:code:status=final", "not a reference parameter"),
    ("Organization", "_has:Observation:patient:code=x", "never refers to a Organization"),
    ("Patient", "_has:Observation:patient:nothing=x", "Unknown search parameter 'nothing'"),
    # result parameters
    ("Patient", "_count=abc", "_count must be a non-negative integer"),
    ("Patient", "_count=-1", "_count must be a non-negative integer"),
    ("Patient", "_count=", "_count must be a non-negative integer"),
    ("Patient", "_count=1&_count=2", "_count may be given only once"),
    ("Patient", "_count:x=1", "Unknown modifier"),
    ("Patient", "_sort=nickname", "Cannot sort by 'nickname'"),
    ("Patient", "_sort=name:exact", "Cannot sort by"),
    ("Observation", "_sort=code-value-quantity", "Cannot sort by"),
    ("Patient", "_sort=", "Empty _sort key"),
    ("Patient", "_sort=name,-", "Empty _sort key"),
    ("Patient", "_sort=name,-name", "twice"),
    ("Patient", "_total=some", "_total takes"),
    ("Patient", "_summary=yes", "_summary takes"),
    ("Patient", "_elements=name,", "Invalid element name"),
    ("Patient", "_elements=na me", "Invalid element name"),
    ("Patient", "_include=Observation:subject", "not the type searched"),
    ("Patient", "_include=Patient:name", "not a reference parameter of Patient"),
    ("Patient", "_include=Patient:nothing", "not a reference parameter of Patient"),
    ("Patient", "_include=Patient", "use Source:parameter"),
    ("Patient", "_include=Patient:organization:Practitioner", "not a target"),
    ("Patient", "_include=Nothing:subject", "unknown resource type"),
    ("Patient", "_revinclude=*", "_revinclude takes"),
    ("Patient", "_include:recurse=Patient:organization", "Unknown modifier"),
    ("Patient", "_type=Patient", "only allowed in a search across all types"),
    ("Patient", "_cursor=abc", "Invalid _cursor"),
    # searches across all types
    (None, "name=x", "needs _type"),
    (None, "_type=Nothing", "Unknown resource type 'Nothing'"),
    (None, "_type=Patient,", "Unknown resource type ''"),
    (None, "_type=Patient,Observation&name=x", "Unknown search parameter 'name' for Observation"),
    (None, "_type=Observation,Condition&category:text=x&encounter=1", "different things"),
    (None, "_sort=name", "Cannot sort by 'name'"),
    (None, "_include=*", "needs a single resource type"),
    (None, "_type=Patient&_include=Observation:subject", "not the type searched"),
]


@pytest.mark.parametrize(("type", "query", "message"), ERRORS, ids=[e[1] for e in ERRORS])
def test_bad_searches_are_refused(type: str | None, query: str, message: str) -> None:
    with pytest.raises(InvalidSearch) as info:
        search(type, query)
    assert info.value.status == 400
    assert message in str(info.value)


def test_errors_name_the_parameter_at_fault() -> None:
    with pytest.raises(InvalidSearch) as info:
        search("Patient", "name=x&birthdate=2020-13-01")
    assert info.value.issues[0].expression == "birthdate"


# -- lenient handling ----------------------------------------------------------------------


def test_lenient_search_skips_unknown_names_and_modifiers() -> None:
    request = search(
        "Patient",
        "name=x&nickname=y&name:fuzzy=z&_text=t&_has:Observation:patient:nothing=1"
        "&subject.name=q&_count:x=1&nickname=again",
        lenient=True,
    )
    assert request.query.criteria.clauses == (StringClause("name", "start", ("x",)),)
    assert request.ignored == (
        "nickname",
        "name:fuzzy",
        "_text",
        "_has:Observation:patient:nothing",
        "subject.name",
        "_count:x",
    )
    assert request.applied == (("name", "x"), ("_count", "20"))


@pytest.mark.parametrize(
    "query",
    [
        "birthdate=2020-13-01",
        "name=",
        "_count=abc",
        "name:missing=maybe",
        "_sort=nickname",
        "_type=Patient",
        "_include=Patient:name",
    ],
)
def test_lenient_search_still_refuses_malformed_values(query: str) -> None:
    with pytest.raises(InvalidSearch):
        search("Patient", query, lenient=True)


def test_strict_search_ignores_nothing() -> None:
    assert search("Patient", "name=x").ignored == ()


# -- searches across all types -------------------------------------------------------------


def test_system_search_takes_the_parameters_common_to_every_type() -> None:
    request = search(
        None,
        "_id=a&_lastUpdated=ge2020-01-01&_tag=s|t&_security=s|r&_profile=http://p"
        "&_source=http://src",
    )
    criteria = request.query.criteria
    assert criteria.type is None and criteria.types == ()
    assert criteria.clauses == (
        IdClause(("a",)),
        LastUpdatedClause((("ge", *JAN1),)),
        TokenClause("_tag", (("s", "t"),)),
        TokenClause("_security", (("s", "r"),)),
        UriClause("_profile", "eq", ("http://p",)),
        UriClause("_source", "eq", ("http://src",)),
    )


def test_system_search_with_one_type_takes_its_parameters() -> None:
    request = search(None, "_type=Patient&name=Ann&_has:Observation:patient:code=c&_sort=-name")
    criteria = request.query.criteria
    assert criteria.type is None
    assert criteria.types == ("Patient",)
    assert criteria.clauses == (
        StringClause("name", "start", ("ann",)),
        HasClause("Observation", "patient", TokenClause("code", ((None, "c"),))),
    )
    assert request.query.sort == (SortKey("name", "search_string", True),)


def test_system_search_with_several_types_takes_parameters_meaning_the_same_on_each() -> None:
    request = search(None, "_type=Practitioner,Patient,Patient&name=Ann&_sort=family")
    criteria = request.query.criteria
    assert criteria.types == ("Patient", "Practitioner")
    assert criteria.clauses == (StringClause("name", "start", ("ann",)),)
    assert ("_type", "Practitioner,Patient,Patient") in criteria.params
    assert request.query.sort == (SortKey("family", "search_string", False),)


def test_system_search_lenient_skips_type_parameters_without_type() -> None:
    request = search(None, "name=x&_id=a", lenient=True)
    assert request.query.criteria.clauses == (IdClause(("a",)),)
    assert request.ignored == ("name",)


def test_system_search_includes() -> None:
    request = search(None, "_type=Observation&_include=*&_include=Observation:subject")
    assert request.includes == (
        Include("Observation", "*", None, False, False),
        Include("Observation", "subject", None, False, False),
    )
    anything = search(None, "_include=Observation:subject:Patient")
    assert anything.includes == (Include("Observation", "subject", "Patient", False, False),)


# -- result parameters ---------------------------------------------------------------------


def test_count_defaults_clamps_and_allows_zero() -> None:
    assert search("Patient", "").query.count == 20
    assert search("Patient", "_count=5").query.count == 5
    assert search("Patient", "_count=0").query.count == 0
    assert search("Patient", "_count=5000").query.count == 100
    assert search("Patient", "_count=5000").applied == (("_count", "100"),)


def test_sort_keys_name_their_tables() -> None:
    request = search("Observation", "_sort=-date,code,_id,-_lastUpdated,subject,value-quantity")
    assert request.query.sort == (
        SortKey("date", "search_date", True),
        SortKey("code", "search_token", False),
        SortKey("_id", None, False),
        SortKey("_lastUpdated", None, True),
        SortKey("subject", "search_reference", False),
        SortKey("value-quantity", "search_quantity", False),
    )
    assert search("RiskAssessment", "_sort=probability").query.sort == (
        SortKey("probability", "search_number", False),
    )
    assert search("ValueSet", "_sort=url,name").query.sort == (
        SortKey("url", "search_uri", False),
        SortKey("name", "search_string", False),
    )


@pytest.mark.parametrize("total", ["none", "estimate", "accurate"])
def test_total(total: str) -> None:
    assert search("Patient", f"_total={total}").query.total == total


def test_total_defaults_to_none() -> None:
    assert search("Patient", "").query.total == "none"


@pytest.mark.parametrize("summary", ["true", "text", "data", "count", "false"])
def test_summary(summary: str) -> None:
    assert search("Patient", f"_summary={summary}").summary == summary


def test_no_summary_and_no_elements_by_default() -> None:
    request = search("Patient", "")
    assert request.summary is None and request.elements is None


def test_elements_are_a_list_of_names() -> None:
    assert search("Patient", "_elements=name,birthDate,name").elements == ("name", "birthDate")


def test_includes_and_revincludes() -> None:
    request = search(
        "Observation",
        "_include=Observation:subject&_include=Observation:performer:Practitioner"
        "&_include=Observation:*&_include=*&_include:iterate=Patient:general-practitioner"
        "&_revinclude=Provenance:target&_revinclude:iterate=Observation:has-member"
        "&_include=Observation:subject",
    )
    assert request.includes == (
        Include("Observation", "subject", None, False, False),
        Include("Observation", "performer", "Practitioner", False, False),
        Include("Observation", "*", None, False, False),
        Include("Patient", "general-practitioner", None, True, False),
        Include("Provenance", "target", None, False, True),
        Include("Observation", "has-member", None, True, True),
    )


def test_format_and_pretty_are_ignored() -> None:
    request = search("Patient", "_format=json&name=x&_pretty=true&_format=xml")
    assert request.applied == (("name", "x"), ("_count", "20"))
    assert request.ignored == ()


def test_applied_lists_filters_in_normal_form_then_result_parameters() -> None:
    request = search(
        "Patient",
        "name=b&_revinclude=Provenance:target&_count=5000&_sort=-birthdate&family=z&name=a"
        "&_include=Patient:organization&_elements=name&_summary=data&_total=accurate"
        f"&_cursor={encode_cursor(Cursor(('2020',), 7))}&_format=json",
    )
    assert request.applied == (
        ("family", "z"),
        ("name", "a"),
        ("name", "b"),
        ("_sort", "-birthdate"),
        ("_count", "100"),
        ("_total", "accurate"),
        ("_summary", "data"),
        ("_elements", "name"),
        ("_revinclude", "Provenance:target"),
        ("_include", "Patient:organization"),
    )
    assert request.query.criteria.params == (("family", "z"), ("name", "a"), ("name", "b"))


def test_the_normal_form_does_not_depend_on_order() -> None:
    one = search("Patient", "name=a&gender=female&_count=3").query.criteria
    two = search("Patient", "_count=3&gender=female&name=a").query.criteria
    assert one.key == two.key == "Patient?gender=female&name=a"


# -- cursors -------------------------------------------------------------------------------

CURSORS = [
    Cursor((), 0),
    Cursor((), 12345, backward=True),
    Cursor(("Müller", 1_700_000_000_000_000, -2.5, None), 9_007_199_254_740_993),
    Cursor(("", 0, 0.0), 1),
    Cursor(("a,b|c$d\\e&f=g",), 3),
]


@pytest.mark.parametrize("cursor", CURSORS)
def test_cursors_round_trip_through_url_safe_text(cursor: Cursor) -> None:
    text = encode_cursor(cursor)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", text)
    assert decode_cursor(text) == cursor


def test_search_reads_the_cursor_of_its_sort() -> None:
    cursor = Cursor((1_700_000_000_000_000, "x"), 42, backward=True)
    request = search("Patient", f"_sort=-birthdate,name&_cursor={encode_cursor(cursor)}")
    assert request.query.cursor == cursor
    assert all(name != "_cursor" for name, _ in request.applied)


def test_a_cursor_of_another_sort_is_refused() -> None:
    text = encode_cursor(Cursor(("x",), 1))
    with pytest.raises(InvalidSearch, match="_cursor"):
        search("Patient", f"_cursor={text}")


def _raw(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


TAMPERED = [
    "",
    "!!!",
    encode_cursor(Cursor(("x",), 1)) + "=",
    encode_cursor(Cursor(("x",), 1))[:-1],
    encode_cursor(Cursor(("x",), 1)) + "A",
    "a" * 40000,
    _raw(b"not json"),
    _raw(b'{"seq": 1}'),
    _raw(b"[false]"),
    _raw(b"[0, 1]"),
    _raw(b"[false, true]"),
    _raw(b"[false, 1.5]"),
    _raw(b'[false, "1"]'),
    _raw(b"[false, -1]"),
    _raw(b"[false, 1, [1]]"),
    _raw(b'[false, 1, {"a": 1}]'),
    _raw(b"[false, 1, true]"),
    _raw(b"[false, 1, 1e400]"),
    _raw(b"[false, 1, 99999999999999999999999]"),
    _raw(b"[false,  1]"),
    _raw(b"[false, 1, 1E2]"),
]


@pytest.mark.parametrize("text", TAMPERED)
def test_tampered_cursors_are_refused(text: str) -> None:
    with pytest.raises(InvalidSearch, match="_cursor"):
        decode_cursor(text)


# -- conditional criteria ------------------------------------------------------------------


def test_parse_criteria_takes_filters_only() -> None:
    criteria = parse_criteria(
        "Patient", [("identifier", "s|1"), ("_format", "json"), ("name", "x")], CTX
    )
    assert criteria == Criteria(
        "Patient",
        (("identifier", "s|1"), ("name", "x")),
        (TokenClause("identifier", (("s", "1"),)), StringClause("name", "start", ("x",))),
    )
    for name in ("_count", "_sort", "_include", "_type", "_cursor"):
        with pytest.raises(InvalidSearch, match="conditional"):
            parse_criteria("Patient", [(name, "1")], CTX)
    with pytest.raises(InvalidSearch, match="nickname"):
        parse_criteria("Patient", [("nickname", "x")], CTX)


def test_parse_criteria_string() -> None:
    criteria = parse_criteria_string("Patient", "identifier=s%7C1&_id=a", CTX)
    assert criteria.params == (("_id", "a"), ("identifier", "s|1"))
    assert criteria.clauses == (TokenClause("identifier", (("s", "1"),)), IdClause(("a",)))
    with pytest.raises(InvalidSearch, match="at least one"):
        parse_criteria_string("Patient", "", CTX)
    with pytest.raises(InvalidSearch, match="Malformed"):
        parse_criteria_string("Patient", "identifier", CTX)


# -- helpers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("42", 42),
        ("9" * 18, int("9" * 18)),
        ("9" * 19, None),
        ("-1", None),
        ("", None),
        ("1.0", None),
        ("٣", None),
        (" 1", None),
    ],
)
def test_parse_number(text: str, expected: int | None) -> None:
    assert parse_number(text) == expected
