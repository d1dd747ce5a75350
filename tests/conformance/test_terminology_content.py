"""Terminology content of ``profiles/``: every CodeSystem, ValueSet and ConceptMap file.

One test case per file (the file parses, its id, name and URL follow the package rules, its
metadata is complete, it passes base validation, and what it says is consistent with the other
terminology files), plus checks of the vocabulary the profiles and examples rely on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from server.fhir.base_validation import base_validator
from server.fhir.terminology import Terminology

PROFILES = Path(__file__).resolve().parents[2] / "profiles"
BASE = "http://calaim-fhir.org/fhir"
FOLDERS = {"codesystems": "CodeSystem", "valuesets": "ValueSet", "conceptmaps": "ConceptMap"}
FILES = sorted(p for folder in FOLDERS for p in (PROFILES / folder).glob("*.json"))
HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"

# ids fixed by the package contract: CodeSystem + ValueSet of all its codes
CODESYSTEM_IDS = {
    "ecm-population-of-focus",
    "ecm-core-service",
    "community-supports",
    "ecm-discontinuation-reason",
    "ecm-exclusion-reason",
    "ecm-referral-source-type",
    "ecm-referral-channel",
    "ecm-referral-workflow",
    "ecm-care-team-role",
    "ecm-icp-domain",
    "ecm-icp-domain-status",
    "dhcs-referral-status",
    "dhcs-loop-closure-reason",
    "calaim-program",
    "ca-county",
    # $ecm-eligibility
    "ecm-program",
    "ecm-eligibility-finding",
    "ecm-eligibility-criterion",
    "ecm-eligibility-determination",
    "ecm-eligibility-result",
}
# ValueSets the $ecm-eligibility rules read (ids fixed: the engine and scenarios use them)
ELIGIBILITY_VALUESET_IDS = {
    f"ecm-elig-{name}"
    for name in (
        "medi-cal-managed-care homelessness youth-housing-hardship complex-social-factor "
        "ccs-social-factor smi sud mental-illness chronic-condition idd tbi hiv pregnancy "
        "delivery ed-visit inpatient-stay unplanned-admission planned-admission"
    ).split()
}
VALUESET_IDS = (
    CODESYSTEM_IDS
    | ELIGIBILITY_VALUESET_IDS
    | {
        "ecm-population-of-focus-adult",
        "ecm-population-of-focus-youth",
        "ecm-referral-task-status",
        "sdoh-category",
        "ecm-consent-purpose",
        "ecm-eligibility-attestation-status",
    }
)
CONCEPTMAP_IDS = {"community-supports-to-hcpcs"}
DRAFT = {"dhcs-referral-status", "dhcs-loop-closure-reason"}


@cache
def load(path: Path) -> dict[str, Any]:
    resource: dict[str, Any] = json.loads(path.read_bytes())
    return resource


def resources(rtype: str) -> list[dict[str, Any]]:
    return [load(p) for p in FILES if p.name.startswith(f"{rtype}-")]


@cache
def terminology() -> Terminology:
    return Terminology(resources("CodeSystem"), resources("ValueSet"))


@cache
def codesystems() -> dict[str, dict[str, Any]]:
    return {cs["url"]: cs for cs in resources("CodeSystem")}


def walk(concepts: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for concept in concepts:
        yield concept
        yield from walk(concept.get("concept", []))


def codes_of(url: str) -> set[str]:
    return {c["code"] for c in walk(codesystems()[url].get("concept", []))}


def by_id(rtype: str, id_: str) -> dict[str, Any]:
    return load(PROFILES / _folder(rtype) / f"{rtype}-{id_}.json")


def _folder(rtype: str) -> str:
    return next(folder for folder, t in FOLDERS.items() if t == rtype)


# -- one case per file -----------------------------------------------------------------------


def check_metadata(path: Path, resource: dict[str, Any]) -> None:
    rtype = FOLDERS[path.parent.name]
    assert resource["resourceType"] == rtype
    id_ = resource["id"]
    assert path.name == f"{rtype}-{id_}.json"
    assert resource["url"] == f"{BASE}/{rtype}/{id_}"
    assert resource["version"] == "0.1.0"
    assert re.fullmatch(r"[A-Z][A-Za-z0-9_]{0,254}", resource["name"])
    assert resource["title"].strip()
    assert resource["status"] == ("draft" if id_ in DRAFT else "active")
    assert resource["date"] == "2026-11-23"
    assert resource["publisher"] == "calaim-fhir"
    assert resource["description"].strip()
    assert base_validator().validate(resource) == []


def check_codesystem(cs: dict[str, Any]) -> None:
    concepts = list(walk(cs["concept"]))
    codes = [c["code"] for c in concepts]
    assert len(codes) == len(set(codes)), "codes are unique within a CodeSystem"
    assert cs["count"] == len(codes)
    assert cs["caseSensitive"] is True
    assert cs["content"] == "complete"
    hierarchical = any("concept" in c for c in cs["concept"])
    assert cs.get("hierarchyMeaning") == ("is-a" if hierarchical else None)
    declared = {p["code"] for p in cs.get("property", [])}
    for concept in concepts:
        assert concept["display"].strip(), concept["code"]
        assert concept["definition"].strip(), concept["code"]
        for prop in concept.get("property", []):
            assert prop["code"] in declared, (concept["code"], prop["code"])
        for designation in concept.get("designation", []):
            use = designation["use"]
            assert use["code"] in codes_of(use["system"]), (concept["code"], use)
    # the ValueSet of all codes exists and expands to exactly the codes
    assert cs["valueSet"] == f"{BASE}/ValueSet/{cs['id']}"
    expansion = terminology().expand(cs["valueSet"])
    assert expansion == frozenset((cs["url"], code) for code in codes)


def check_valueset(vs: dict[str, Any]) -> None:
    expansion = terminology().expand(vs["url"])
    assert expansion is not None, "expands offline"
    assert expansion, "is not empty"
    for part in vs["compose"]["include"] + vs["compose"].get("exclude", []):
        system = part.get("system")
        if system in codesystems():
            for concept in part.get("concept", []):
                assert concept["code"] in codes_of(system), concept
        elif system is not None:
            assert not system.startswith(BASE), f"unknown local code system {system}"


def check_conceptmap(cm: dict[str, Any]) -> None:
    for group in cm["group"]:
        source = group["source"]
        assert source in codesystems(), source
        known = codes_of(source)
        mapped = [e["code"] for e in group["element"]]
        assert set(mapped) <= known, set(mapped) - known
        assert set(mapped) == known, f"codes without a mapping: {known - set(mapped)}"
        for element in group["element"]:
            assert element["target"], element["code"]
            for target in element["target"]:
                if target["equivalence"] in ("narrower", "wider", "inexact"):
                    assert target.get("comment"), (element["code"], target["code"])


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_terminology_file(path: Path) -> None:
    resource = load(path)
    check_metadata(path, resource)
    check = {
        "CodeSystem": check_codesystem,
        "ValueSet": check_valueset,
        "ConceptMap": check_conceptmap,
    }[resource["resourceType"]]
    check(resource)


# -- the vocabulary the package contract fixes -------------------------------------------------


def test_every_contract_id_exists() -> None:
    assert CODESYSTEM_IDS <= {cs["id"] for cs in resources("CodeSystem")}
    assert VALUESET_IDS <= {vs["id"] for vs in resources("ValueSet")}
    assert CONCEPTMAP_IDS <= {cm["id"] for cm in resources("ConceptMap")}


def test_dhcs_code_systems_are_drafts_saying_so() -> None:
    for id_ in DRAFT:
        cs = by_id("CodeSystem", id_)
        assert cs["status"] == "draft"
        assert "not published" in cs["description"]
    assert "declined" in codes_of(f"{BASE}/CodeSystem/dhcs-referral-status")
    assert "services-received" in codes_of(f"{BASE}/CodeSystem/dhcs-loop-closure-reason")


def test_population_of_focus_variants() -> None:
    url = f"{BASE}/CodeSystem/ecm-population-of-focus"
    cs = codesystems()[url]
    parents = {c["code"]: {k["code"] for k in c.get("concept", [])} for c in cs["concept"]}
    assert all(parents.values()), "every POF has at least one variant"
    variants = set().union(*parents.values())
    adult = terminology().expand(f"{BASE}/ValueSet/ecm-population-of-focus-adult")
    youth = terminology().expand(f"{BASE}/ValueSet/ecm-population-of-focus-youth")
    assert adult is not None and youth is not None
    assert {c for _, c in adult} | {c for _, c in youth} == variants
    assert {"homelessness-adult", "birth-equity-adult", "ltc-risk-adult"} <= {c for _, c in adult}
    assert {"homelessness-family-youth", "ccs-wcm-youth", "child-welfare-youth"} <= {
        c for _, c in youth
    }
    assert not {c for _, c in youth} & {"ltc-risk-adult", "nf-transition-adult"}
    below = terminology().expand(f"{url}?below=homelessness")
    assert below == frozenset(
        (url, c) for c in ("homelessness", "homelessness-adult", "homelessness-family-youth")
    )


@pytest.mark.parametrize(
    ("id_", "required", "size"),
    [
        ("ecm-core-service", {"outreach-and-engagement", "health-promotion"}, 7),
        ("community-supports", {"transitional-rent", "sobering-centers"}, 15),
        ("ecm-icp-domain", {"physical-health", "member-family-supports"}, 10),
        ("ecm-icp-domain-status", {"addressed", "not-applicable"}, 2),
        ("calaim-program", {"ecm", "community-supports"}, 2),
        ("ca-county", {"fresno", "los-angeles", "san-luis-obispo", "yuba"}, 58),
        (
            "ecm-care-team-role",
            {
                "ecm-director",
                "lead-care-manager",
                "rn-care-manager",
                "behavioral-health-care-manager",
                "care-coordinator",
                "community-health-worker",
                "member",
                "family-member",
                "authorized-representative",
            },
            None,
        ),
        ("ecm-referral-source-type", {"self-referral", "provider", "hospital"}, None),
    ],
)
def test_contract_codes(id_: str, required: set[str], size: int | None) -> None:
    codes = codes_of(f"{BASE}/CodeSystem/{id_}")
    assert required <= codes
    if size is not None:
        assert len(codes) == size


def test_counties_carry_fips_codes() -> None:
    cs = codesystems()[f"{BASE}/CodeSystem/ca-county"]
    fips = {c["code"]: c["property"][0]["valueString"] for c in cs["concept"]}
    assert fips["alameda"] == "06001"
    assert fips["los-angeles"] == "06037"
    assert fips["yuba"] == "06115"
    assert len(set(fips.values())) == 58


def test_referral_task_status_excludes_gravity_exclusions() -> None:
    expansion = terminology().expand(f"{BASE}/ValueSet/ecm-referral-task-status")
    assert expansion is not None
    codes = {code for system, code in expansion if system == "http://hl7.org/fhir/task-status"}
    assert len(codes) == len(expansion)
    assert not codes & {"draft", "ready", "received"}
    assert {"requested", "accepted", "rejected", "completed", "cancelled"} <= codes


def test_community_supports_map_to_hcpcs_with_modifier() -> None:
    cm = by_id("ConceptMap", "community-supports-to-hcpcs")
    (group,) = cm["group"]
    assert group["target"] == HCPCS
    targets = {e["code"]: e["target"] for e in group["element"]}
    for code, mapped in targets.items():
        for target in mapped:
            assert re.fullmatch(r"[A-Z][0-9]{4}", target["code"]), (code, target)
            (modifier,) = target["product"]
            assert modifier["system"] == HCPCS
            assert re.fullmatch(r"U[1-9]", modifier["value"]), (code, modifier)
    assert [(t["code"], t["product"][0]["value"]) for t in targets["housing-deposits"]] == [
        ("H0044", "U2")
    ]
    assert [(t["code"], t["product"][0]["value"]) for t in targets["sobering-centers"]] == [
        ("H0014", "U6")
    ]


def test_ecm_program_shares_the_exclusion_codes() -> None:
    """The duplicative programs of ``ecm-program`` carry the codes of the
    ``duplicative-program`` children of ``ecm-exclusion-reason``; county TCM has its two
    exception children."""
    url = f"{BASE}/CodeSystem/ecm-exclusion-reason"
    below = terminology().expand(f"{url}?below=duplicative-program")
    assert below is not None
    duplicative = {code for _, code in below} - {"duplicative-program"}
    assert len(duplicative) == 11
    program = f"{BASE}/CodeSystem/ecm-program"
    assert duplicative <= codes_of(program)
    tcm = terminology().expand(f"{program}?below=county-tcm")
    assert tcm == frozenset(
        (program, c)
        for c in ("county-tcm", "county-tcm-communicable-disease", "county-tcm-home-visiting")
    )
