"""Local terminology: expansion of the CodeSystems and ValueSets of a profiles folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.fhir.conformance import load_terminology
from server.fhir.terminology import Terminology

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
    loaded = load_terminology(tmp_path, with_r4=False)
    assert (CS, "homeless-family") in (loaded.expand("http://example.org/vs/adult") or ())


# -- accessors, lookup, validation, expansion, translation -------------------------------------

VERSIONED = {
    "resourceType": "CodeSystem",
    "url": "http://example.org/cs/county",
    "version": "2.0",
    "name": "County",
    "content": "complete",
    "property": [{"code": "fips", "type": "string"}],
    "concept": [
        {
            "code": "fresno",
            "display": "Fresno",
            "definition": "Fresno County",
            "designation": [{"language": "es", "value": "Condado de Fresno"}],
            "property": [{"code": "fips", "valueString": "06019"}],
        },
        {
            "code": "kern",
            "display": "Kern",
            "property": [{"code": "parent", "valueCode": "fresno"}],
        },
    ],
}
FRAGMENT = {
    "resourceType": "CodeSystem",
    "url": "http://example.org/cs/frag",
    "content": "fragment",
    "concept": [{"code": "f1"}],
}
COUNTIES = {
    "resourceType": "ValueSet",
    "url": "http://example.org/vs/county",
    "version": "1.0",
    "text": {"status": "generated", "div": "<div>x</div>"},
    "compose": {"include": [{"system": "http://example.org/cs/county"}]},
}
MIXED = {
    "resourceType": "ValueSet",
    "url": "http://example.org/vs/mixed",
    "compose": {
        "include": [
            {"system": CS, "concept": [{"code": "adult", "display": "Adults"}, {"code": "child"}]},
            {"system": OTHER, "concept": [{"code": "adult", "display": "Other adult"}]},
        ]
    },
}
HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
CONCEPTMAP = {
    "resourceType": "ConceptMap",
    "url": "http://example.org/cm/cs-to-hcpcs",
    "version": "0.1.0",
    "sourceUri": "http://example.org/vs/adult",
    "targetUri": "http://example.org/vs/hcpcs",
    "group": [
        {
            "source": CS,
            "target": HCPCS,
            "element": [
                {
                    "code": "homeless",
                    "target": [
                        {
                            "code": "H0044",
                            "display": "Supported housing",
                            "equivalence": "equivalent",
                            "product": [
                                {
                                    "property": "http://example.org/modifier",
                                    "system": HCPCS,
                                    "value": "U6",
                                }
                            ],
                        }
                    ],
                },
                {"code": "child", "target": [{"equivalence": "unmatched"}]},
            ],
        },
        {"source": OTHER, "target": HCPCS, "unmapped": {"mode": "fixed", "code": "T2041"}},
    ],
}


@pytest.fixture(scope="module")
def full() -> Terminology:
    return Terminology(
        [CODESYSTEM, VERSIONED, FRAGMENT], [*VALUESETS, COUNTIES, MIXED], [CONCEPTMAP]
    )


def test_accessors_accept_versions(full: Terminology) -> None:
    assert full.valueset("http://example.org/vs/county") is not None
    assert full.valueset("http://example.org/vs/county|1.0") is not None
    assert full.valueset("http://example.org/vs/county|9.9") is None
    assert full.valueset("http://example.org/vs/adult|anything") is not None  # unversioned
    assert (full.codesystem("http://example.org/cs/county|2.0") or {})["name"] == "County"
    assert full.codesystem("http://example.org/cs/nope") is None
    assert (full.conceptmap("http://example.org/cm/cs-to-hcpcs|0.1.0") or {})["version"] == "0.1.0"
    assert full.conceptmap("http://example.org/cm/cs-to-hcpcs|0.2") is None
    assert Terminology([], []).conceptmap("http://example.org/cm/cs-to-hcpcs") is None


def test_hierarchy_from_parent_properties_and_fragments(full: Terminology) -> None:
    county = "http://example.org/cs/county"
    assert full.expand(f"{county}?below=fresno") == {(county, "fresno"), (county, "kern")}
    assert full.expand("http://example.org/cs/frag") is None  # not complete
    assert full.expand("http://example.org/cs/frag?below=f1") == {
        ("http://example.org/cs/frag", "f1")
    }


def test_lookup(full: Terminology) -> None:
    found = full.lookup("http://example.org/cs/county", "fresno")
    assert found == {
        "name": "County",
        "version": "2.0",
        "display": "Fresno",
        "definition": "Fresno County",
        "designation": [{"language": "es", "value": "Condado de Fresno"}],
        "property": [{"code": "fips", "valueString": "06019"}],
        "child": ["kern"],
    }
    assert full.lookup(CS, "homeless") == {
        "name": CS,
        "parent": ["adult"],
        "child": ["homeless-family"],
    }
    assert full.lookup("http://example.org/cs/county", "fresno", "2.0") is not None
    assert full.lookup("http://example.org/cs/county", "fresno", "1.0") is None
    assert full.lookup("http://example.org/cs/county", "nope") is None
    assert full.lookup("http://example.org/cs/nope", "fresno") is None


def test_validate_code_in_a_valueset(full: Terminology) -> None:
    vs = "http://example.org/vs/county"
    county = "http://example.org/cs/county"
    assert full.validate_code(vs, code="fresno", system=county) == {
        "result": True,
        "display": "Fresno",
    }
    assert full.validate_code(vs, code="fresno") == {"result": True, "display": "Fresno"}
    ok = full.validate_code(vs, code="fresno", system=county, display="Condado de Fresno")
    assert ok == {"result": True, "display": "Fresno"}  # a designation is a valid display
    warned = full.validate_code(vs, code="fresno", system=county, display="Kern") or {}
    assert warned["result"] is True and "'Kern' is not a display" in warned["message"]
    bad = full.validate_code(vs, code="tulare", system=county) or {}
    assert bad["result"] is False and "tulare" in bad["message"]
    wrong_system = full.validate_code(vs, coding={"system": CS, "code": "fresno"}) or {}
    assert wrong_system["result"] is False
    concept = {"coding": [{"system": CS, "code": "x"}, {"system": county, "code": "kern"}]}
    assert (full.validate_code(vs, codeable_concept=concept) or {})["result"] is True
    assert full.validate_code("http://example.org/vs/unknown", code="x") is None
    assert full.validate_code("http://example.org/vs/regex", code="adult") is None


def test_validate_code_ambiguous_without_system(full: Terminology) -> None:
    mixed = "http://example.org/vs/mixed"
    found = full.validate_code(mixed, code="adult") or {}
    assert found["result"] is False and "several systems" in found["message"]
    assert full.validate_code(mixed, code="adult", system=OTHER) == {
        "result": True,
        "display": "Other adult",
    }


def test_validate_code_in_a_codesystem(full: Terminology) -> None:
    assert (full.validate_code(CS, code="foster", system=CS) or {})["result"] is True
    assert (full.validate_code(CODESYSTEM, code="nope", system=CS) or {})["result"] is False
    assert full.validate_code(FRAGMENT, code="f1", system="http://example.org/cs/frag") is None


def test_expansion(full: Terminology) -> None:
    out = full.expansion("http://example.org/vs/county") or {}
    assert "text" not in out and "compose" not in out
    expansion = out["expansion"]
    assert expansion["identifier"].startswith("urn:uuid:")
    assert expansion["timestamp"].endswith("Z")
    assert (expansion["total"], expansion["offset"]) == (2, 0)
    assert expansion["contains"] == [
        {
            "system": "http://example.org/cs/county",
            "version": "2.0",
            "code": "fresno",
            "display": "Fresno",
        },
        {
            "system": "http://example.org/cs/county",
            "version": "2.0",
            "code": "kern",
            "display": "Kern",
        },
    ]
    paged = full.expansion("http://example.org/vs/adult", offset=1, count=2) or {}
    assert paged["expansion"]["total"] == 4
    assert [c["code"] for c in paged["expansion"]["contains"]] == ["homeless", "homeless-family"]
    assert paged["expansion"]["parameter"] == [
        {"name": "offset", "valueInteger": 1},
        {"name": "count", "valueInteger": 2},
    ]


def test_expansion_filter_designations_definition(full: Terminology) -> None:
    out = (
        full.expansion(
            "http://example.org/vs/county",
            filter="FRES",
            include_designations=True,
            include_definition=True,
        )
        or {}
    )
    assert out["compose"] == COUNTIES["compose"]
    assert out["expansion"]["total"] == 1
    assert out["expansion"]["contains"][0]["designation"][0]["value"] == "Condado de Fresno"
    none = full.expansion("http://example.org/vs/county", count=0) or {}
    assert none["expansion"]["total"] == 2 and "contains" not in none["expansion"]
    assert full.expansion("http://example.org/vs/regex") is None
    assert full.expansion("http://example.org/vs/unknown") is None
    inline = {
        "resourceType": "ValueSet",
        "compose": {"include": [{"valueSet": ["http://example.org/vs/county"]}]},
    }
    assert (full.expansion(inline) or {})["expansion"]["total"] == 2
    enumerated = full.expansion("http://example.org/vs/mixed") or {}
    assert [c.get("display") for c in enumerated["expansion"]["contains"]] == [
        "Adults",
        None,
        "Other adult",
    ]


def test_translate(full: Terminology) -> None:
    cm = "http://example.org/cm/cs-to-hcpcs"
    assert full.translate(cm, system=CS, code="homeless") == [
        {
            "equivalence": "equivalent",
            "source": cm,
            "concept": {"system": HCPCS, "code": "H0044", "display": "Supported housing"},
            "product": [
                {
                    "element": "http://example.org/modifier",
                    "concept": {"system": HCPCS, "code": "U6"},
                }
            ],
        }
    ]
    unmatched = full.translate(cm, system=CS, code="child") or []
    assert [m["equivalence"] for m in unmatched] == ["unmatched"]
    assert not Terminology.successful(unmatched)
    assert full.translate(cm, system=CS, code="adult") == []
    fixed = full.translate(cm, system=OTHER, code="anything") or []
    assert fixed[0]["concept"] == {"system": HCPCS, "code": "T2041"}
    assert full.translate("http://example.org/cm/nope", system=CS, code="x") is None
    by_scope = full.translate(
        None, system=CS, code="homeless", source="http://example.org/vs/adult"
    )
    assert len(by_scope or []) == 1
    assert full.translate(None, system=CS, code="homeless", target="http://example.org/vs/x") == []
    assert full.translate(cm, system=CS, code="homeless", target_system="http://other") == []


def test_translate_other_map_without_loops() -> None:
    a = {
        "resourceType": "ConceptMap",
        "url": "http://example.org/cm/a",
        "group": [
            {
                "source": CS,
                "target": OTHER,
                "unmapped": {"mode": "other-map", "url": "http://example.org/cm/b"},
            }
        ],
    }
    b = {
        "resourceType": "ConceptMap",
        "url": "http://example.org/cm/b",
        "group": [
            {
                "source": CS,
                "target": OTHER,
                "element": [
                    {"code": "adult", "target": [{"code": "grown-up", "equivalence": "equal"}]}
                ],
                "unmapped": {"mode": "other-map", "url": "http://example.org/cm/a"},
            }
        ],
    }
    terminology = Terminology([], [], [a, b])
    found = terminology.translate("http://example.org/cm/a", system=CS, code="adult") or []
    assert [m["concept"]["code"] for m in found] == ["grown-up"]
    assert terminology.translate("http://example.org/cm/a", system=CS, code="child") == []


# -- the vendored R4 base terminology ----------------------------------------------------------


def test_vendored_r4_terminology() -> None:
    from server.fhir.definitions import r4_terminology

    resources = r4_terminology()
    assert all("text" not in r for r in resources)
    base = Terminology(
        [r for r in resources if r["resourceType"] == "CodeSystem"],
        [r for r in resources if r["resourceType"] == "ValueSet"],
    )
    gender = "http://hl7.org/fhir/administrative-gender"
    assert base.expand("http://hl7.org/fhir/ValueSet/administrative-gender") == {
        (gender, c) for c in ("male", "female", "other", "unknown")
    }
    assert base.expand("http://hl7.org/fhir/ValueSet/request-status") is not None
    assert base.valueset("http://hl7.org/fhir/ValueSet/task-status|4.0.1") is not None


def test_server_terminology_adds_the_profiles(tmp_path: Path) -> None:
    (tmp_path / "codesystems").mkdir()
    (tmp_path / "codesystems" / "CodeSystem-pof.json").write_text(json.dumps(CODESYSTEM))
    both = load_terminology(tmp_path)
    assert both.codesystem(CS) is not None
    assert both.valueset("http://hl7.org/fhir/ValueSet/administrative-gender") is not None
