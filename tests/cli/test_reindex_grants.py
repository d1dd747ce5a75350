"""``calaim-fhir reindex`` rebuilds the care relationships' access grants from the stored
relationship resources (rows lost or stale: as the writes would have kept them)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

from server.auth.principal import LOCAL, Principal
from server.auth.relationships import Matrix, RelationshipPolicy
from tests.cli.conftest import command, sqlite_url
from tests.support import Acting, fhir_client, put

COVERAGE = {
    "resourceType": "Coverage",
    "id": "cov1",
    "status": "active",
    "beneficiary": {"reference": "Patient/m1"},
    "payor": [{"reference": "Organization/plan"}],
}
TASK = {
    "resourceType": "Task",
    "id": "t1",
    "status": "requested",
    "intent": "order",
    "for": {"reference": "Patient/m1"},
    "owner": {"reference": "Organization/cbo"},
}
POLICY = RelationshipPolicy(Matrix(consent=False))  # relationships alone, no ROI needed
# by hand from server/auth/grants.py: the plan's relationship with m1; the CBO's with m1 and
# its scoped row for the Task
EXPECTED = {
    ("Coverage", "cov1", "m1", "Organization/plan", "plan", "", ""),
    ("Task", "t1", "m1", "Organization/cbo", "referral-owner", "", ""),
    ("Task", "t1", "m1", "Organization/cbo", "referral-owner", "Task", "t1"),
}


def _grants(path: Path) -> set[tuple[str, ...]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT source_type, source_id, member, organization, kind, scope_type, scope_id"
            " FROM access_grant"
        ).fetchall()
    return {tuple(row) for row in rows}


def test_reindex_rebuilds_lost_and_stale_grants(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    database = sqlite_url(path)
    who = Acting()
    with fhir_client(database, principals=who, policies=[POLICY]) as client:
        for resource in (
            {"resourceType": "Patient", "id": "m1"},
            {"resourceType": "Organization", "id": "plan"},
            {"resourceType": "Organization", "id": "cbo"},
            COVERAGE,
            TASK,
        ):
            assert put(client, resource).status_code == 201
    assert _grants(path) == EXPECTED
    with sqlite3.connect(path) as conn:  # lost rows, and a stale one of a resource now gone
        conn.execute("DELETE FROM access_grant")
        conn.execute(
            "INSERT INTO access_grant VALUES ('Task', 'gone', 'm1', 'Organization/x',"
            " 'referral-owner', NULL, NULL, '', '')"
        )
    with fhir_client(database, principals=who, policies=[POLICY]) as client:
        who.as_(Principal("cbo-client", organization="Organization/cbo"))
        assert client.get("/fhir/Patient/m1").status_code == 404
        who.as_(LOCAL)

    done = subprocess.run(
        [*command(), "reindex", "--database-url", database, "--batch", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Access grants rebuilt from 2 relationship resource(s)" in done.stderr
    assert _grants(path) == EXPECTED
    with fhir_client(database, principals=who, policies=[POLICY]) as client:
        who.as_(Principal("cbo-client", organization="Organization/cbo"))
        assert client.get("/fhir/Patient/m1").status_code == 200


def test_reindex_relabels_after_the_value_sets_change(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    database = sqlite_url(path)
    condition = {
        "resourceType": "Condition",
        "id": "gambling",
        "subject": {"reference": "Patient/m1"},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "F63.0"}]},
    }
    with fhir_client(database) as client:
        assert put(client, {"resourceType": "Patient", "id": "m1"}).status_code == 201
        assert put(client, condition).status_code == 201
    config = tmp_path / "sensitivity.json"
    config.write_text(
        json.dumps(
            [
                {
                    "codes": {"http://hl7.org/fhir/sid/icd-10-cm": ["F63*"]},
                    "labels": ["http://terminology.hl7.org/CodeSystem/v3-ActCode|BH"],
                }
            ]
        )
    )
    env = {**os.environ, "CALAIM_FHIR_ACCESS_SENSITIVITY": str(config)}
    done = subprocess.run(
        [*command(), "reindex", "--database-url", database],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Security labels changed on 1 resource(s)" in done.stderr
    with sqlite3.connect(path) as conn:
        labels = conn.execute("SELECT labels FROM resource WHERE id = 'gambling'").fetchone()[0]
    assert labels == "http://terminology.hl7.org/CodeSystem/v3-ActCode|BH"
    with fhir_client(database, access_sensitivity=str(config)) as client:
        found = client.get(
            "/fhir/Condition?_security=http://terminology.hl7.org/CodeSystem/v3-ActCode|BH"
        )
        assert [e["resource"]["id"] for e in found.json()["entry"]] == ["gambling"]
