"""Local terminology: expansion of the CodeSystems and ValueSets of a profiles folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.fhir.terminology import Terminology, local_terminology

CS = "http://example.org/cs/pof"
OTHER = "http://example.org/cs/other"

CODESYSTEM = {
    "resourceType": "CodeSystem",
    "url": CS,
    "content": "complete",
    "concept": [
        {
            "code": "adult",
            "concept": [
                {"code": "homeless", "concept": [{"code": "homeless-family"}]},
                {"code": "high-utilizer"},
            ],
        },
        {"code": "child", "concept": [{"code": "foster"}]},
    ],
}
VALUESETS = [
    {
        "resourceType": "ValueSet",
        "url": "http://example.org/vs/enumerated",
        "compose": {
            "include": [
                {"system": CS, "concept": [{"code": "child"}]},
                {"system": OTHER, "concept": [{"code": "x"}, {"code": "y"}]},
            ],
            "exclude": [{"system": OTHER, "concept": [{"code": "y"}]}],
        },
    },
    {
        "resourceType": "ValueSet",
        "url": "http://example.org/vs/adult",
        "compose": {
            "include": [
                {"system": CS, "filter": [{"property": "concept", "op": "is-a", "value": "adult"}]}
            ]
        },
    },
    {
        "resourceType": "ValueSet",
        "url": "http://example.org/vs/below-adult",
        "compose": {
            "include": [
                {
                    "system": CS,
                    "filter": [{"property": "concept", "op": "descendent-of", "value": "adult"}],
                }
            ]
        },
    },
    {
        "resourceType": "ValueSet",
        "url": "http://example.org/vs/nested",
        "compose": {"include": [{"valueSet": ["http://example.org/vs/adult|1.0"]}]},
    },
    {
        "resourceType": "ValueSet",
        "url": "http://example.org/vs/regex",
        "compose": {
            "include": [
                {"system": CS, "filter": [{"property": "code", "op": "regex", "value": "a.*"}]}
            ]
        },
    },
    {
        "resourceType": "ValueSet",
        "url": "http://example.org/vs/loop",
        "compose": {"include": [{"valueSet": ["http://example.org/vs/loop"]}]},
    },
]


@pytest.fixture(scope="module")
def terminology() -> Terminology:
    return Terminology([CODESYSTEM], VALUESETS)


@pytest.mark.parametrize(
    ("url", "codes"),
    [
        ("http://example.org/vs/enumerated", {(CS, "child"), (OTHER, "x")}),
        (
            "http://example.org/vs/adult",
            {(CS, "adult"), (CS, "homeless"), (CS, "homeless-family"), (CS, "high-utilizer")},
        ),
        (
            "http://example.org/vs/below-adult",
            {(CS, "homeless"), (CS, "homeless-family"), (CS, "high-utilizer")},
        ),
        (
            "http://example.org/vs/nested",
            {(CS, "adult"), (CS, "homeless"), (CS, "homeless-family"), (CS, "high-utilizer")},
        ),
        (
            CS,
            {
                (CS, c)
                for c in (
                    "adult",
                    "homeless",
                    "homeless-family",
                    "high-utilizer",
                    "child",
                    "foster",
                )
            },
        ),
        (f"{CS}?below=homeless", {(CS, "homeless"), (CS, "homeless-family")}),
        (f"{CS}?above=homeless-family", {(CS, "homeless-family"), (CS, "homeless"), (CS, "adult")}),
    ],
)
def test_expansions(terminology: Terminology, url: str, codes: set[tuple[str, str]]) -> None:
    assert terminology.expand(url) == codes


@pytest.mark.parametrize(
    "url",
    [
        "http://example.org/vs/unknown",
        "http://example.org/vs/regex",  # a filter the server does not implement
        "http://example.org/vs/loop",
        f"{CS}?below=unknown-code",
        f"{CS}?sideways=adult",
        f"{OTHER}?below=x",  # not a local code system
    ],
)
def test_what_cannot_be_expanded_is_unknown(terminology: Terminology, url: str) -> None:
    assert terminology.expand(url) is None


def test_loads_a_profiles_folder(tmp_path: Path) -> None:
    (tmp_path / "codesystems").mkdir()
    (tmp_path / "valuesets").mkdir()
    (tmp_path / "codesystems" / "CodeSystem-pof.json").write_text(json.dumps(CODESYSTEM))
    (tmp_path / "valuesets" / "ValueSet-adult.json").write_text(json.dumps(VALUESETS[1]))
    loaded = local_terminology(tmp_path)
    assert (CS, "homeless-family") in (loaded.expand("http://example.org/vs/adult") or ())
