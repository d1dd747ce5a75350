"""Synthea-shaped bulk data (``tests/fixtures/synthea-ndjson``: one NDJSON file per type, three
patients, practitioners, organizations and locations named by conditional references as Synthea
writes them): every line loads, no reference is left unresolved, and includes and chains through
practitioners and organizations answer what the files say."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server import loader
from tests.cli.conftest import ROOT, sqlite_url
from tests.cli.test_load import invoke
from tests.support import TestClient, all_pages, fhir_client

SYNTHEA = ROOT / "tests" / "fixtures" / "synthea-ndjson"
NPI = "http://hl7.org/fhir/sid/us-npi"


def _lines(type: str) -> list[dict[str, Any]]:
    text = (SYNTHEA / f"{type}.ndjson").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _by_identifier(type: str, reference: str) -> str:
    """The id of the file's resource a conditional reference names (read from the files)."""
    system, _, value = reference.split("identifier=", 1)[1].partition("|")
    (match,) = [
        r["id"]
        for r in _lines(type)
        if any(i.get("system") == system and i.get("value") == value for i in r["identifier"])
    ]
    return match


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    url = sqlite_url(tmp_path_factory.mktemp("synthea") / "fhir.db")
    report = loader.load([SYNTHEA], direct=True, database_url=url, batch_size=7)
    assert report.failures == []
    assert report.unresolved == []
    lines = sum(len(_lines(p.stem)) for p in SYNTHEA.glob("*.ndjson"))
    assert len(report.outcomes) == lines
    with fhir_client(url) as client:
        yield client


def test_the_cli_reports_no_rejection_and_no_unresolved_reference(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "fhir.db")
    result = invoke("load", "--direct", "--database-url", url, str(SYNTHEA))
    assert result.exit_code == 0, result.output
    assert "0 failed, 0 unresolved reference(s)" in " ".join(result.stderr.split())


def test_every_type_of_the_files_is_stored(loaded: TestClient) -> None:
    for path in SYNTHEA.glob("*.ndjson"):
        ids = {r["id"] for r in _lines(path.stem)}
        stored = {e["resource"]["id"] for e in all_pages(loaded, f"/fhir/{path.stem}?_count=50")}
        assert stored == ids, path.stem


def test_conditional_references_are_stored_resolved(loaded: TestClient) -> None:
    for encounter in _lines("Encounter"):
        stored = loaded.get(f"/fhir/Encounter/{encounter['id']}").json()
        provider = encounter["serviceProvider"]["reference"]
        assert stored["serviceProvider"]["reference"] == (
            "Organization/" + _by_identifier("Organization", provider)
        )
        practitioner = encounter["participant"][0]["individual"]["reference"]
        assert stored["participant"][0]["individual"]["reference"] == (
            "Practitioner/" + _by_identifier("Practitioner", practitioner)
        )
        location = encounter["location"][0]["location"]["reference"]
        assert stored["location"][0]["location"]["reference"] == (
            "Location/" + _by_identifier("Location", location)
        )


def test_include_of_service_provider_and_general_practitioner(loaded: TestClient) -> None:
    bundle = loaded.get(
        "/fhir/Encounter", params={"_include": "Encounter:service-provider", "_count": "50"}
    ).json()
    included = {e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "include"}
    expected = {
        _by_identifier("Organization", e["serviceProvider"]["reference"])
        for e in _lines("Encounter")
    }
    assert included == expected
    bundle = loaded.get(
        "/fhir/Patient", params={"_include": "Patient:general-practitioner", "_count": "50"}
    ).json()
    included = {e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "include"}
    expected = {
        _by_identifier("Practitioner", p["generalPractitioner"][0]["reference"])
        for p in _lines("Patient")
    }
    assert included == expected


def test_chains_through_practitioner_and_organization(loaded: TestClient) -> None:
    for practitioner in _lines("Practitioner"):
        npi = practitioner["identifier"][0]["value"]
        found = all_pages(loaded, f"/fhir/Encounter?practitioner.identifier={NPI}|{npi}")
        expected = {
            e["id"]
            for e in _lines("Encounter")
            if e["participant"][0]["individual"]["reference"].endswith(f"|{npi}")
        }
        assert expected and {e["resource"]["id"] for e in found} == expected
    for organization in _lines("Organization"):
        found = all_pages(
            loaded, f"/fhir/Patient?organization.name={organization['name'].split()[0]}"
        )
        expected = {
            p["id"]
            for p in _lines("Patient")
            if _by_identifier("Organization", p["managingOrganization"]["reference"])
            == organization["id"]
        }
        assert expected and {e["resource"]["id"] for e in found} == expected
    roles = all_pages(loaded, "/fhir/PractitionerRole?organization.name=ALAMEDA")
    assert len(roles) == 1
