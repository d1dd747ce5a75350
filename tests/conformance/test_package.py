"""The FHIR NPM package of profiles/ builds, through scripts/build-package, as FHIR tools expect.

Checked on the tarball the script writes: the flat ``package/`` layout, ``package.json`` (name,
version, FHIR version, type, dependency on the R4 core package), one member per artifact of
every ``profiles/`` sub-folder, byte for byte, and ``.index.json`` (one entry per artifact,
with the identifying fields of the artifact itself). Two builds give the same bytes.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ROOT / "profiles"
MANIFEST: dict[str, Any] = json.loads((PROFILES / "package.json").read_text(encoding="utf-8"))
TARBALL = f"{MANIFEST['name']}-{MANIFEST['version']}.tgz"
PROFILE_IDS = {
    "ecm-member": "Patient",
    "ecm-referral": "ServiceRequest",
    "cs-referral": "ServiceRequest",
    "ecm-referral-task": "Task",
    "ecm-consent": "Consent",
    "ecm-care-plan": "CarePlan",
    "ecm-care-team": "CareTeam",
    "ecm-enrollment": "EpisodeOfCare",
    "cs-service-delivery": "Procedure",
    "ecm-provider-service": "HealthcareService",
    "ecm-eligibility-attestation": "Observation",
    "ecm-eligibility-list": "List",
}


def _sources() -> dict[str, Path]:
    return {
        path.name: path
        for folder in sorted(PROFILES.iterdir())
        if folder.is_dir() and folder.name != "examples"
        for path in sorted(folder.glob("*.json"))
    }


def _build(out: Path) -> Path:
    result = subprocess.run(
        ["bash", "scripts/build-package", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    target = out / TARBALL
    assert result.stdout.strip() == str(target)
    return target


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    target = _build(tmp_path_factory.mktemp("package"))
    with tarfile.open(target, "r:gz") as tar:
        members = tar.getmembers()
        assert all(m.isfile() for m in members)
        return {m.name: tar.extractfile(m).read() for m in members}  # type: ignore[union-attr]


def test_manifest_is_a_fhir_r4_package() -> None:
    assert MANIFEST["name"] == "calaim.fhir.ecm"
    assert MANIFEST["version"] == "0.1.0"
    assert MANIFEST["fhirVersions"] == ["4.0.1"]
    assert MANIFEST["type"] == "fhir.ig"
    assert MANIFEST["canonical"] == "http://calaim-fhir.org/fhir"
    assert MANIFEST["dependencies"] == {"hl7.fhir.r4.core": "4.0.1"}
    for key in ("description", "license", "author"):
        assert MANIFEST[key]


def test_layout_is_flat_and_complete(package: dict[str, bytes]) -> None:
    names = list(package)
    assert names[0] == "package/package.json"
    assert all(n.startswith("package/") and n.count("/") == 1 for n in names)
    assert len(names) == len(set(names))
    expected = {"package/package.json", "package/.index.json"} | {
        f"package/{name}" for name in _sources()
    }
    assert set(names) == expected
    assert package["package/package.json"] == (PROFILES / "package.json").read_bytes()
    for name, path in _sources().items():
        assert package[f"package/{name}"] == path.read_bytes(), name


def test_every_profile_is_packaged(package: dict[str, bytes]) -> None:
    for id, base in PROFILE_IDS.items():
        resource = json.loads(package[f"package/StructureDefinition-{id}.json"])
        assert resource["url"] == f"http://calaim-fhir.org/fhir/StructureDefinition/{id}"
        assert resource["type"] == base
        assert resource["derivation"] == "constraint"
        assert "snapshot" not in resource


def test_index_lists_every_artifact(package: dict[str, bytes]) -> None:
    index = json.loads(package["package/.index.json"])
    assert index["index-version"] == 1
    files = index["files"]
    assert [f["filename"] for f in files] == sorted(_sources())
    for entry in files:
        resource = json.loads(package[f"package/{entry['filename']}"])
        assert entry["resourceType"] == resource["resourceType"]
        assert entry["id"] == resource["id"]
        for key in ("url", "version", "kind", "type"):
            value = resource.get(key)  # OperationDefinition.type is a boolean: not indexed
            expected = value if isinstance(value, str) else None
            assert entry.get(key) == expected, (entry["filename"], key)
    kinds = {e["id"]: e.get("kind") for e in files if e["resourceType"] == "StructureDefinition"}
    assert all(kinds[id] == "resource" for id in PROFILE_IDS)


def test_build_is_reproducible(tmp_path: Path) -> None:
    first = _build(tmp_path / "a").read_bytes()
    second = _build(tmp_path / "b").read_bytes()
    assert first == second
    with tarfile.open(tmp_path / "a" / TARBALL, "r:gz") as tar:
        assert {m.mtime for m in tar.getmembers()} == {tar.getmembers()[0].mtime}
