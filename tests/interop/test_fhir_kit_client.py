"""fhir-kit-client (npm) against a real server: ``fhir-kit-client.mjs`` runs the scenario under
Node and reports each operation. The package comes from this folder's ``package-lock.json``,
installed by ``scripts/test`` (``npm ci``); the test downloads nothing."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.interop.conftest import HERE, Server, assert_report

SCRIPT = HERE / "fhir-kit-client.mjs"


def test_fhir_kit_client_scenario(server: Server) -> None:
    node = shutil.which("node")
    if node is None or not (HERE / "node_modules" / "fhir-kit-client").is_dir():
        pytest.fail(
            "Node and tests/interop/node_modules are needed: run the tests through scripts/test, "
            "which installs Node (Debian packages) and runs npm ci there",
            pytrace=False,
        )
    done = subprocess.run(
        [node, str(SCRIPT), server.base],
        cwd=HERE, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert_report("fhir-kit-client", results)
