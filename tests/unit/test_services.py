"""The composition root: ``create_app`` builds the services once and hands them down; a test (or
an embedding program) injects its own instead of patching module globals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.app import create_app
from server.services import build_services
from server.settings import Settings
from tests.cli.test_reindex import DESCRIPTION, _parameters
from tests.support import BASE, Loopback, TestClient, sqlite_url


def _task(text: str) -> dict[str, Any]:
    return {"resourceType": "Task", "status": "requested", "intent": "order", "description": text}


def _settings(database: Path, **extra: Any) -> Settings:
    return Settings(database_url=sqlite_url(database), base_url=BASE, auth="off", **extra)


def _task_params(client: TestClient) -> set[str]:
    statement = client.get("/fhir/metadata").json()
    (task,) = [r for r in statement["rest"][0]["resource"] if r["type"] == "Task"]
    return {p["name"] for p in task.get("searchParam", [])}


def test_the_app_runs_on_the_services_it_is_given(tmp_path: Path) -> None:
    """Services built from other settings (an extra SearchParameter) are the ones the store
    indexes with, searches parse with and the CapabilityStatement lists."""
    settings = _settings(tmp_path / "s.db")
    extra = _parameters(tmp_path / "p", DESCRIPTION)
    services = build_services(_settings(tmp_path / "s.db", search_parameters_dir=str(extra)))
    app = create_app(settings, services=services)
    assert app.state.services is services
    with TestClient(Loopback(app), raise_server_exceptions=False) as client:
        assert "description" in _task_params(client)
        for text in ("Call back", "Ride to clinic"):
            assert client.post("/fhir/Task", json=_task(text)).status_code == 201
        found = client.get("/fhir/Task", params={"description": "ride"})
        assert found.status_code == 200, found.text
        assert [e["resource"]["description"] for e in found.json()["entry"]] == ["Ride to clinic"]


def test_without_services_the_app_builds_its_own_from_its_settings(tmp_path: Path) -> None:
    """Each app builds its services from its own settings; nothing is shared through a
    process-wide lookup keyed by settings (two apps on equal settings hold two registries)."""
    settings = _settings(tmp_path / "o.db")
    first, second = create_app(settings), create_app(settings)
    assert first.state.services is not second.state.services
    assert first.state.services.search.registry is not second.state.services.search.registry
    with TestClient(Loopback(first), raise_server_exceptions=False) as client:
        assert "description" not in _task_params(client)
        assert "status" in _task_params(client)
