"""The servers a file-driven scenario suite runs on (``examples/eligibility/``,
``examples/cs-eligibility/``): per distinct ``settings`` of the sidecars, one server holding every
scenario Bundle of those settings (stored mode) and one empty server (inline mode), each made
when first asked for and closed with the module."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support import BASE, FHIR_JSON, TestClient, fhir_client, history_total, sqlite_url


def sidecar(folder: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / f"{name}.expected.json").read_text("utf-8"))
    return data


def bundle(folder: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / f"{name}.json").read_text("utf-8"))
    return data


class ScenarioServers:
    def __init__(
        self, stack: ExitStack, factory: pytest.TempPathFactory, folder: Path, names: list[str]
    ) -> None:
        self.stack, self.factory, self.folder, self.names = stack, factory, folder, names
        self._stored: dict[str, tuple[TestClient, dict[str, str]]] = {}
        self._empty: dict[str, TestClient] = {}

    def _key(self, name: str) -> str:
        return json.dumps(sidecar(self.folder, name).get("settings") or {}, sort_keys=True)

    def _client(self, key: str, kind: str) -> TestClient:
        folder = self.factory.mktemp(f"{self.folder.name}-{kind}")
        overrides = json.loads(key)
        return self.stack.enter_context(fhir_client(sqlite_url(folder / "fhir.db"), **overrides))

    def loaded(self, name: str) -> tuple[TestClient, dict[str, str]]:
        """The server holding every scenario of ``name``'s settings, and each scenario's
        Patient id there (the Patient is the first entry of each transaction)."""
        key = self._key(name)
        if key not in self._stored:
            client = self._client(key, "stored")
            ids: dict[str, str] = {}
            for other in (n for n in self.names if self._key(n) == key):
                response = client.post(
                    "/fhir", json=bundle(self.folder, other), headers={"Content-Type": FHIR_JSON}
                )
                assert response.status_code == 200, f"{other}: {response.text[:3000]}"
                location = str(response.json()["entry"][0]["response"]["location"])
                parts = location.removeprefix(f"{BASE}/").split("/")
                assert parts[0] == "Patient", location
                ids[other] = parts[1]
            self._stored[key] = (client, ids)
        return self._stored[key]

    def empty(self, name: str) -> TestClient:
        key = self._key(name)
        if key not in self._empty:
            client = self._client(key, "inline")
            assert history_total(client) == 0
            self._empty[key] = client
        return self._empty[key]


@contextmanager
def scenario_servers(
    factory: pytest.TempPathFactory, folder: Path, names: list[str]
) -> Iterator[ScenarioServers]:
    with ExitStack() as stack:
        yield ScenarioServers(stack, factory, folder, names)
