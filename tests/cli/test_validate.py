"""``calaim-fhir validate``."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from server.cli import app
from tests.cli.conftest import ONBOARDING


def test_validate_examples_is_clean() -> None:
    result = CliRunner().invoke(app, ["validate", *ONBOARDING])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "2 file(s) checked, 0 error(s)" in result.stderr


def test_validate_reports_every_issue(tmp_path: Path) -> None:
    bad = tmp_path / "bad-patient.json"
    bad.write_text(json.dumps({"resourceType": "Patient", "gender": "x", "foo": 1}))
    lines = tmp_path / "lines.ndjson"
    lines.write_text('{"resourceType": "Patient"}\n\n{"resourceType": "Nope"}\n[1\n')
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"resourceType": "Patient", "id": "p1"}))
    sidecar = tmp_path / "good.expected.json"
    sidecar.write_text("not even json")

    result = CliRunner().invoke(app, ["validate", str(bad), str(lines), str(tmp_path)])
    assert result.exit_code == 1
    out = result.stdout
    assert f"{bad}: error: Patient.gender: code 'x' is not in the required value set" in out
    assert f"{bad}: error: Patient.foo: unknown element 'foo'" in out
    assert f"{lines}: error: line 3: Resource.resourceType: unsupported resource type" in out
    assert f"{lines}: error: line 4: invalid JSON" in out
    assert "good" not in out
    assert "3 file(s) checked, 4 error(s)" in result.stderr


def test_validate_valid_file(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"resourceType": "Patient", "id": "p1", "gender": "other"}))
    result = CliRunner().invoke(app, ["validate", str(good)])
    assert result.exit_code == 0
    assert "1 file(s) checked, 0 error(s)" in result.stderr


def test_validate_invalid_json_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    result = CliRunner().invoke(app, ["validate", str(broken)])
    assert result.exit_code == 1
    assert f"{broken}: error: -: invalid JSON" in result.stdout
