from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from server.fhir.definitions import r4_schema
from server.fhir.summary import SUBSETTED, select_elements, shape, summarize

DATA = Path(__file__).resolve().parents[3] / "server/fhir/data/summary-elements.json"

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "pat-1",
    "meta": {"versionId": "3", "lastUpdated": "2024-05-01T10:00:00Z"},
    "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">M</div>'},
    "extension": [{"url": "http://example.org/ext", "valueString": "x"}],
    "identifier": [
        {
            "system": "urn:oid:2.16.840.1.113883.4.1",
            "value": "123-45-6789",
            "assigner": {"display": "SSA"},
        }
    ],
    "active": True,
    "name": [
        {
            "use": "official",
            "family": "Garcia",
            "_family": {"extension": [{"url": "http://example.org/own", "valueString": "y"}]},
            "given": ["Maria"],
            "extension": [{"url": "http://example.org/name-ext", "valueBoolean": True}],
        }
    ],
    "gender": "female",
    "birthDate": "1980-02-29",
    "_birthDate": {
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                "valueDateTime": "1980-02-29T06:15:00-08:00",
            }
        ]
    },
    "maritalStatus": {"text": "Married"},
    "multipleBirthBoolean": False,
    "photo": [{"contentType": "image/png", "data": "iVBORw0KGgo="}],
    "contact": [{"name": {"family": "Garcia"}, "telecom": [{"system": "phone", "value": "1"}]}],
    "communication": [{"language": {"text": "Spanish"}, "preferred": True}],
    "generalPractitioner": [{"reference": "Practitioner/pr-1"}],
    "managingOrganization": {"reference": "Organization/org-1"},
}

OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "obs-1",
    "meta": {"tag": [{"system": "http://example.org/tags", "code": "ecm"}]},
    "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">BP</div>'},
    "status": "final",
    "_status": {"id": "st"},
    "category": [{"coding": [{"code": "vital-signs"}]}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}], "text": "BP"},
    "subject": {"reference": "Patient/pat-1"},
    "effectiveDateTime": "2024-05-01T10:00:00Z",
    "valueQuantity": {"value": 120, "unit": "mmHg"},
    "interpretation": [{"text": "high"}],
    "note": [{"text": "after exercise"}],
    "referenceRange": [{"low": {"value": 90}, "text": "normal"}],
    "component": [
        {
            "extension": [{"url": "http://example.org/plain", "valueString": "dropped"}],
            "modifierExtension": [{"url": "http://example.org/mod", "valueCode": "kept"}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            "valueQuantity": {"value": 120, "unit": "mmHg"},
            "interpretation": [{"text": "high"}],
        }
    ],
}

TASK: dict[str, Any] = {
    "resourceType": "Task",
    "id": "task-1",
    "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">T</div>'},
    "identifier": [{"value": "T-1"}],
    "status": "requested",
    "intent": "order",
    "priority": "routine",
    "code": {"text": "Outreach"},
    "for": {"reference": "Patient/pat-1"},
    "authoredOn": "2024-05-01",
    "owner": {"reference": "Organization/org-1"},
    "note": [{"text": "call twice"}],
    "input": [{"type": {"text": "attempts"}, "valueInteger": 2}],
    "output": [{"type": {"text": "reached"}, "valueBoolean": True}],
}


def tags(resource: dict[str, Any]) -> list[dict[str, Any]]:
    tag_list: list[dict[str, Any]] = resource["meta"]["tag"]
    return tag_list


# --------------------------------------------------------------------------- _summary=true


def test_summary_true_keeps_patient_summary_elements_and_drops_the_rest() -> None:
    out = summarize(PATIENT, "true")
    assert set(out) == {
        "resourceType",
        "id",
        "meta",
        "identifier",
        "active",
        "name",
        "gender",
        "birthDate",
        "_birthDate",
        "managingOrganization",
    }
    assert out["_birthDate"] == PATIENT["_birthDate"]
    assert out["identifier"] == PATIENT["identifier"]
    assert tags(out) == [SUBSETTED]
    assert out["meta"]["versionId"] == "3"


def test_summary_true_shapes_datatypes_by_their_own_summary_elements() -> None:
    name = summarize(PATIENT, "true")["name"][0]
    # HumanName.extension is not a summary element; family, given, use and _family are
    assert name == {
        "use": "official",
        "family": "Garcia",
        "_family": PATIENT["name"][0]["_family"],
        "given": ["Maria"],
    }


def test_summary_true_observation_and_its_components() -> None:
    out = summarize(OBSERVATION, "true")
    assert set(out) == {
        "resourceType",
        "id",
        "meta",
        "status",
        "_status",
        "code",
        "subject",
        "effectiveDateTime",
        "valueQuantity",
        "component",
    }
    component = out["component"][0]
    assert set(component) == {"modifierExtension", "code", "valueQuantity"}
    # an extension that is kept stays whole (its url and value are what it means)
    assert component["modifierExtension"] == OBSERVATION["component"][0]["modifierExtension"]
    assert tags(out) == [*OBSERVATION["meta"]["tag"], SUBSETTED]


def test_summary_true_task() -> None:
    out = summarize(TASK, "true")
    assert set(out) == {"resourceType", "id", "meta", "status", "intent", "code", "for", "owner"}


def test_summary_true_shapes_inline_resources_by_their_own_type() -> None:
    bundle = {
        "resourceType": "Bundle",
        "id": "b-1",
        "type": "collection",
        "entry": [{"fullUrl": "urn:uuid:1", "resource": PATIENT}],
    }
    out = summarize(bundle, "true")
    inner = out["entry"][0]["resource"]
    assert "contact" not in inner and "text" not in inner
    assert inner["name"] and inner["meta"] == PATIENT["meta"]
    assert tags(out) == [SUBSETTED]


def test_summary_true_with_nothing_to_remove_returns_the_resource_untagged() -> None:
    slim = {"resourceType": "Patient", "id": "p", "gender": "male", "name": [{"family": "Li"}]}
    assert summarize(slim, "true") is slim


# --------------------------------------------------------------------------- text, data, false


def test_summary_text_keeps_text_id_meta_and_mandatory_elements() -> None:
    out = summarize(OBSERVATION, "text")
    assert set(out) == {"resourceType", "id", "meta", "text", "status", "_status", "code"}
    assert out["text"] == OBSERVATION["text"]
    task = summarize(TASK, "text")
    assert set(task) == {"resourceType", "id", "meta", "text", "status", "intent"}
    assert tags(task) == [SUBSETTED]


def test_summary_data_removes_only_text() -> None:
    out = summarize(PATIENT, "data")
    assert set(out) == set(PATIENT) - {"text"}
    assert out["contact"] == PATIENT["contact"]
    assert tags(out) == [SUBSETTED]
    no_text = {k: v for k, v in PATIENT.items() if k != "text"}
    assert summarize(no_text, "data") is no_text


def test_summary_false_returns_everything() -> None:
    assert summarize(PATIENT, "false") is PATIENT


@pytest.mark.parametrize("mode", ["count", "TRUE", ""])
def test_unknown_summary_mode_raises(mode: str) -> None:
    with pytest.raises(ValueError):
        summarize(PATIENT, mode)


# --------------------------------------------------------------------------- _elements


def test_elements_choice_base_name_selects_its_variant_and_keeps_mandatory() -> None:
    out = select_elements(OBSERVATION, ["value", "effective"])
    assert set(out) == {
        "resourceType",
        "id",
        "meta",
        "status",
        "_status",
        "code",
        "valueQuantity",
        "effectiveDateTime",
    }
    assert tags(out) == [*OBSERVATION["meta"]["tag"], SUBSETTED]


def test_elements_primitive_sibling_follows_and_unknown_names_are_ignored() -> None:
    out = select_elements(PATIENT, ["birthDate", "nonsense", "_birthDate", "Patient.name"])
    assert set(out) == {"resourceType", "id", "meta", "birthDate", "_birthDate"}


def test_elements_task_keeps_its_mandatory_elements() -> None:
    out = select_elements(TASK, ["owner"])
    assert set(out) == {"resourceType", "id", "meta", "status", "intent", "owner"}


def test_elements_covering_everything_present_returns_the_resource_untagged() -> None:
    slim = {"resourceType": "Observation", "id": "o", "status": "final", "code": {"text": "x"}}
    assert select_elements(slim, ["status"]) is slim


# --------------------------------------------------------------------------- the tag, inputs


def test_tag_is_added_once_and_other_tags_and_meta_are_kept() -> None:
    tagged = copy.deepcopy(OBSERVATION)
    tagged["meta"]["tag"].append(dict(SUBSETTED))
    out = summarize(tagged, "text")
    assert tags(out) == tagged["meta"]["tag"]
    assert summarize(summarize(OBSERVATION, "true"), "true") == summarize(OBSERVATION, "true")


def test_meta_is_created_after_id_when_missing() -> None:
    out = summarize(TASK, "true")
    assert list(out)[:3] == ["resourceType", "id", "meta"]
    assert out["meta"] == {"tag": [SUBSETTED]}


def test_inputs_are_not_modified() -> None:
    before = copy.deepcopy([PATIENT, OBSERVATION, TASK])
    for resource in (PATIENT, OBSERVATION, TASK):
        for mode in ("true", "text", "data"):
            summarize(resource, mode)
        select_elements(resource, ["code"])
    assert [PATIENT, OBSERVATION, TASK] == before


# --------------------------------------------------------------------------- shape


def test_shape_returns_the_same_body_when_nothing_applies() -> None:
    body = orjson.dumps(PATIENT)
    assert shape(body, None, None) is body
    assert shape(body, "false", None) is body
    assert shape(body, None, ()) is body
    slim = orjson.dumps({"resourceType": "Patient", "id": "p", "gender": "male"})
    assert shape(slim, "true", None) is slim
    assert shape(slim, None, ["gender"]) is slim


def test_shape_applies_summary_then_elements() -> None:
    body = orjson.dumps(OBSERVATION)
    assert orjson.loads(shape(body, "true", None)) == summarize(OBSERVATION, "true")
    both = orjson.loads(shape(body, "true", ["value"]))
    assert set(both) == {"resourceType", "id", "meta", "status", "_status", "code", "valueQuantity"}
    assert tags(both).count(SUBSETTED) == 1
    with pytest.raises(ValueError):
        shape(body, "count", None)


# --------------------------------------------------------------------------- vendored data


def test_data_covers_every_schema_object_definition_with_schema_names_only() -> None:
    definitions = r4_schema()["definitions"]
    data = json.loads(DATA.read_text())
    objects = {name for name, d in definitions.items() if "properties" in d}
    assert set(data) == objects
    for name, sets in data.items():
        assert set(sets["summary"]) | set(sets["mandatory"]) <= set(definitions[name]["properties"])
    assert data["Observation"]["mandatory"] == ["status", "code"]
    assert "valueQuantity" in data["Observation_Component"]["summary"]
    assert data["Bundle_Request"]["mandatory"] == ["method", "url"]
