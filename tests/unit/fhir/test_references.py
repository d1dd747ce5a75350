"""The one reader of FHIR reference strings (``server/fhir/references.py``)."""

from __future__ import annotations

import pytest

from server.fhir.references import (
    Reference,
    local_target,
    parse_reference,
    reference_type,
)

BASE = "http://127.0.0.1:8080/fhir"
UUID = "urn:uuid:9d6a0b5c-5a3e-4f4a-8a39-0c5e3c2a1f10"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Patient/123", Reference("Patient", "123", local=True)),
        ("Patient/123/_history/2", Reference("Patient", "123", "2", local=True)),
        ("123", Reference(id="123", local=True)),
        (f"{BASE}/Task/a-1.b", Reference("Task", "a-1.b", url=f"{BASE}/Task/a-1.b", local=True)),
        (
            f"{BASE}/Task/9/_history/3",
            Reference("Task", "9", "3", url=f"{BASE}/Task/9/_history/3", local=True),
        ),
        (
            "https://other.example.org/fhir/Patient/1",
            Reference("Patient", "1", url="https://other.example.org/fhir/Patient/1"),
        ),
        (
            "https://other.example.org/fhir/Patient/1/_history/4",
            Reference(
                "Patient", "1", "4", url="https://other.example.org/fhir/Patient/1/_history/4"
            ),
        ),
        (
            "http://example.org/fhir/ValueSet/x|1.0",
            Reference(
                "ValueSet", "x", url="http://example.org/fhir/ValueSet/x", canonical_version="1.0"
            ),
        ),
        ("http://example.org/vs|2", Reference(url="http://example.org/vs", canonical_version="2")),
        (UUID, Reference(url=UUID)),
        ("urn:oid:1.2.3.4", Reference(url="urn:oid:1.2.3.4")),
        ("#contained-1", Reference(contained="contained-1")),
        ("#", Reference(contained="")),
    ],
)
def test_every_form_of_reference(text: str, expected: Reference) -> None:
    assert parse_reference(text, BASE) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Patient/",
        "/1",
        "Patient/bad id",
        "Patient/" + "x" * 65,
        "a/b/c",
        "patient/1",
        "Patient/1/_history/",
        "Patient/1/_history/bad version",
        "Patient?identifier=x",
        "Patient/1/extra/segments",
    ],
)
def test_what_cannot_be_a_reference_is_none(text: str) -> None:
    assert parse_reference(text, BASE) is None


def test_the_base_is_recognised_with_or_without_a_trailing_slash() -> None:
    for base in (BASE, BASE + "/"):
        found = parse_reference(f"{BASE}/Patient/1", base)
        assert found is not None and found.target == ("Patient", "1")


def test_another_server_with_the_same_path_is_not_local() -> None:
    found = parse_reference("http://other.example.org/fhir/Patient/1", BASE)
    assert found is not None and (found.local, found.target) == (False, None)
    assert local_target("http://127.0.0.1:8080/fhirx/Patient/1", BASE) is None


def test_an_absolute_url_under_the_base_that_is_no_resource_stays_a_url() -> None:
    found = parse_reference(f"{BASE}/metadata", BASE)
    assert found == Reference(url=f"{BASE}/metadata")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Patient/1", "Patient"),
        ("Patient/1/_history/2", "Patient"),
        ("http://x.org/fhir/Organization/o", "Organization"),
        ("http://x.org/fhir/Organization/o/_history/1", "Organization"),
        (UUID, None),
        ("#p1", None),
        ("123", None),
    ],
)
def test_the_type_a_reference_shows(text: str, expected: str | None) -> None:
    assert reference_type(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Task/1", ("Task", "1")),
        ("Task/1/_history/7", ("Task", "1")),
        (f"{BASE}/Task/1", ("Task", "1")),
        ("http://other.org/fhir/Task/1", None),
        (UUID, None),
        ("#t", None),
        ("1", None),
    ],
)
def test_local_targets(text: str, expected: tuple[str, str] | None) -> None:
    assert local_target(text, BASE) == expected


def test_without_a_base_only_relative_references_are_local() -> None:
    assert local_target("Task/1") == ("Task", "1")
    assert local_target(f"{BASE}/Task/1") is None
