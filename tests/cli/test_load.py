"""``calaim-fhir load``: into a store (--direct) and into a running server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
from typer.testing import CliRunner

from server.cli import app
from server.search.parse import parse_search
from server.search.service import build_search_service
from server.settings import Settings
from server.store.sql.opening import open_store
from tests.cli.conftest import EXAMPLES, ONBOARDING, Server, command, sqlite_url

CIN = "https://calaim-fhir.org/fhir/sid/medi-cal-cin"
PLAN = "https://calaim-fhir.org/fhir/sid/dhcs-managed-care-plan|MCP-GPHP-0457"
WIDE = {"COLUMNS": "250"}  # rich folds table cells to the terminal width


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env=WIDE)


def _search(database_url: str, type: str, query: str = "") -> list[dict[str, Any]]:
    """Resources read back from the store itself (not through the API)."""
    settings = Settings(database_url=database_url)
    search = build_search_service(settings)
    repo = open_store(settings, search)
    try:
        pairs = [*parse_qsl(query, keep_blank_values=True), ("_count", "1000")]
        parsed = parse_search(type, pairs, search.context)
        with repo.reader() as reader:
            page = reader.search(parsed.query)
        return [json.loads(v.body) for v in page.items if v.body is not None]
    finally:
        repo.close()


def _write(path: Path, value: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def test_load_direct_examples_then_read_back_from_the_store(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "fhir.db")
    result = invoke("load", "--direct", "--database-url", url, "--quiet", *ONBOARDING)
    assert result.exit_code == 0, result.output
    patients = _search(url, "Patient")
    assert sorted(p["identifier"][0]["value"] for p in patients) == ["99000101A", "99000102B"]
    (plan,) = _search(url, "Organization", f"identifier={PLAN}")
    assert plan["name"] == "Golden Poppy Health Plan"
    coverages = _search(url, "Coverage")
    assert len(coverages) == 2
    assert {c["payor"][0]["reference"] for c in coverages} == {f"Organization/{plan['id']}"}

    again = invoke("load", "--direct", "--database-url", url, "--quiet", *ONBOARDING)
    assert again.exit_code == 0, again.output
    assert len(_search(url, "Organization")) == 3  # the plan and two ECM providers, once each
    assert len(_search(url, "Patient")) == 2


def test_load_direct_shows_progress_and_summary(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "fhir.db")
    result = invoke("load", "--direct", "--database-url", url, *ONBOARDING)
    assert result.exit_code == 0, result.output
    assert "files" in result.stderr
    assert "2 file(s), 2 request(s), 14 entries loaded, 0 failed" in result.stderr


def test_load_resources_ndjson_and_collection(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write(data / "patient.json", {"resourceType": "Patient", "id": "pat-1", "gender": "female"})
    _write(data / "no-id.json", {"resourceType": "Practitioner", "name": [{"family": "Ito"}]})
    _write(data / "patient.expected.json", {"resourceType": "Patient", "gender": "nonsense"})
    _write(
        data / "nested" / "collection.json",
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {"resource": {"resourceType": "Organization", "id": f"org-{i}", "name": f"Org {i}"}}
                for i in range(5)
            ],
        },
    )
    lines = [json.dumps({"resourceType": "Patient", "id": f"nd-{i}"}) for i in range(7)]
    lines.append(json.dumps({"resourceType": "Patient", "gender": "male"}))
    (data / "patients.ndjson").write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    url = sqlite_url(tmp_path / "fhir.db")

    result = invoke("load", "--direct", "--database-url", url, "--batch-size", "3", str(data))
    assert result.exit_code == 0, result.output
    # 1 + 1 resources, 2 batches for the collection, 3 batches for 8 NDJSON lines
    assert "4 file(s), 7 request(s), 15 entries loaded, 0 failed" in result.stderr
    assert {p["id"] for p in _search(url, "Patient")} >= {"pat-1", *(f"nd-{i}" for i in range(7))}
    assert len(_search(url, "Patient")) == 9
    assert len(_search(url, "Organization")) == 5
    assert len(_search(url, "Practitioner")) == 1


def test_load_folder_with_an_invalid_resource_fails(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write(data / "good.json", {"resourceType": "Patient", "id": "good-1"})
    _write(
        data / "sub" / "broken-patient.json",
        {"resourceType": "Patient", "id": "bad-1", "gender": "x"},
    )
    (data / "sub" / "lines.ndjson").write_text(
        '{"resourceType": "Patient", "id": "ok-2"}\n'
        '{"resourceType": "Patient", "id": "bad-2", "birthDate": "2020-13-01"}\n'
        "{not json\n",
        encoding="utf-8",
    )
    url = sqlite_url(tmp_path / "fhir.db")

    result = invoke("load", "--direct", "--database-url", url, "--quiet", str(data))
    assert result.exit_code == 1
    out = result.stderr
    assert "Failures" in out
    assert "broken-patient.json" in out
    assert "400" in out
    assert "Patient.gender: code 'x' is not in the required value set" in out
    assert "lines.ndjson" in out and "line 2" in out and "line 3" in out
    assert "Patient.birthDate: invalid date value '2020-13-01'" in out
    assert "invalid JSON" in out
    assert "2 entries loaded, 3 failed" in out
    # the valid ones are in
    assert {p["id"] for p in _search(url, "Patient")} == {"good-1", "ok-2"}


def test_load_failed_transaction_names_the_entry(tmp_path: Path) -> None:
    bundle = json.loads((EXAMPLES / "bundles" / "ecm-member-onboarding.json").read_text())
    bundle["entry"][5]["resource"]["status"] = "sort-of"
    path = _write(tmp_path / "broken-transaction.json", bundle)
    url = sqlite_url(tmp_path / "fhir.db")
    result = invoke("load", "--direct", "--database-url", url, "--quiet", str(path))
    assert result.exit_code == 1
    assert "transaction entry[5]" in result.stderr
    assert "Bundle.entry[5].resource.status" in result.stderr
    assert _search(url, "Patient") == []  # all or nothing


def test_load_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke("load", "--direct", str(tmp_path / "nope"))
    assert result.exit_code == 2


def test_load_into_a_running_server(server: Server, tmp_path: Path) -> None:
    single = _write(tmp_path / "single.json", {"resourceType": "Patient", "id": "solo"})
    completed = subprocess.run(
        [*command(), "load", "--url", server.base, "--quiet", *ONBOARDING, str(single)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    with httpx.Client(base_url=server.base + "/", timeout=10) as client:
        found = client.get("Patient", params={"identifier": f"{CIN}|99000101A"}).json()
        assert len(found["entry"]) == 1
        assert found["entry"][0]["resource"]["name"][0]["family"] == "Ramírez"
        plans = client.get("Organization", params={"identifier": PLAN}).json()
        assert len(plans["entry"]) == 1
        assert client.get("Patient/solo").status_code == 200

    # again, through the environment variable: idempotent
    completed = subprocess.run(
        [*command(), "load", "--quiet", *ONBOARDING],
        capture_output=True,
        text=True,
        timeout=120,
        env={"CALAIM_FHIR_BASE_URL": server.base, "PATH": "/usr/bin:/bin"},
    )
    assert completed.returncode == 0, completed.stderr
    with httpx.Client(base_url=server.base + "/", timeout=10) as client:
        assert len(client.get("Organization").json()["entry"]) == 3


def test_ndjson_loads_referenced_types_first_and_lists_unresolved_references(
    tmp_path: Path,
) -> None:
    npi = "http://hl7.org/fhir/sid/us-npi"
    data = tmp_path / "data"
    data.mkdir()
    # alphabetically the patients come first; they name the practitioners by identifier
    (data / "a-patients.ndjson").write_text(
        "\n".join(
            json.dumps(line)
            for line in (
                {"resourceType": "Patient", "id": "p-1",
                 "generalPractitioner": [{"reference": f"Practitioner?identifier={npi}|1"}]},
                {"resourceType": "Patient", "id": "p-2",
                 "generalPractitioner": [{"reference": "Practitioner/nobody"}]},
                {"resourceType": "Patient", "id": "p-3",
                 "generalPractitioner": [{"reference": f"Practitioner?identifier={npi}|404"}]},
            )
        ),
        encoding="utf-8",
    )
    # a file of two types: the organization line must go first
    (data / "b-mixed.ndjson").write_text(
        json.dumps({"resourceType": "Practitioner", "id": "doc-1",
                    "identifier": [{"system": npi, "value": "1"}]}) + "\n"
        + json.dumps({"resourceType": "PractitionerRole", "id": "role-1",
                      "organization": {"reference": "Organization?name=Clinic"}}) + "\n"
        + json.dumps({"resourceType": "Organization", "id": "org-1", "name": "Clinic"}) + "\n",
        encoding="utf-8",
    )
    url = sqlite_url(tmp_path / "fhir.db")
    result = invoke("load", "--direct", "--database-url", url, "--quiet", str(data))
    assert result.exit_code == 1, result.output
    out = " ".join(result.stderr.split())
    assert "5 entries loaded, 1 failed, 2 unresolved reference(s)" in out, out
    assert "Unresolved references" in out
    assert "Practitioner/nobody" in out and f"Practitioner?identifier={npi}|404" in out
    (patient,) = _search(url, "Patient", "_id=p-1")
    assert patient["generalPractitioner"] == [{"reference": "Practitioner/doc-1"}]
    (role,) = _search(url, "PractitionerRole")
    assert role["organization"] == {"reference": "Organization/org-1"}


def test_load_without_a_server_says_so_in_one_line(tmp_path: Path) -> None:
    from tests.cli.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}/fhir"
    result = invoke("load", "--url", url, "--quiet", *ONBOARDING)
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    text = " ".join(" ".join(lines).split())
    assert f"No FHIR server answers at {url}" in text, result.stderr
    assert "calaim-fhir serve" in text and "--direct" in text
    assert "Failures" not in result.stderr  # not one line per entry


def test_load_reads_the_base_url_serve_uses(server: Server) -> None:
    result = CliRunner().invoke(app, ["load", "--quiet", *ONBOARDING],
                                env={**WIDE, "CALAIM_FHIR_BASE_URL": server.base})
    assert result.exit_code == 0, result.output
    assert httpx.get(f"{server.base}/Patient?_summary=count").json()["total"] == 2
