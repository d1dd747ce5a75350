"""Every path of examples/closed-loop/ loads step by step into a fresh server.

Each folder is one path of the referral lifecycle: transaction Bundles named in step order
and ``statuses.expected.json`` (the Task statuses after the last step, and who acts in each
step in real use). Loaded as the local operator (exempt from role rules, not from the
lifecycle), after ``examples/resources`` but its Tasks: every step must be accepted, and the
statuses must be the ones written by hand in the sidecar.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    TestClient,
    clear_store,
    example_directory_bundle,
    fhir_client,
    sqlite_url,
)

ROOT = Path(__file__).resolve().parents[2] / "examples"
PATHS = sorted(p for p in (ROOT / "closed-loop").iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def _client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str]]:
    url = sqlite_url(tmp_path_factory.mktemp("closed-loop") / "fhir.db")
    with fhir_client(url) as client:
        yield client, url


def _resources() -> dict[str, Any]:
    return example_directory_bundle(frozenset({"Task"}))


@pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])
def test_a_closed_loop_path_loads_step_by_step(
    _client: tuple[TestClient, str], path: Path
) -> None:
    client, url = _client
    clear_store(url)
    assert client.post("/fhir", json=_resources()).status_code == 200
    expected = json.loads((path / "statuses.expected.json").read_text())
    files = sorted(p.name for p in path.glob("*.json") if not p.name.endswith(".expected.json"))
    assert files == [step["file"] for step in expected["steps"]]
    for name in files:
        response = client.post("/fhir", json=json.loads((path / name).read_text()))
        assert response.status_code == 200, f"{name}: {response.status_code} {response.text[:600]}"
        statuses = [e["response"]["status"] for e in response.json()["entry"]]
        assert all(s.startswith("2") for s in statuses), f"{name}: {statuses}"
    for ref, status in expected["statuses"].items():
        stored = client.get(f"/fhir/{ref}").json()
        assert stored["status"] == status, ref
        assert stored["lastModified"], ref
