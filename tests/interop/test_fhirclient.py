"""fhirclient (SMART on FHIR's Python client, R4 models) against a real server. Every answer is
read into fhirclient's strict R4 models, so a malformed resource, Bundle or Parameters fails the
step. fhirclient has no conditional create, version-aware update or patch of its own: those go
through its ``FHIRServer`` (``post_json`` to a criteria URL) and its requests session (the
``If-Match`` header, a JSON Patch), as an integrator using it would."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from fhirclient import client as fhir_client
from fhirclient.models.bundle import Bundle
from fhirclient.models.identifier import Identifier
from fhirclient.models.parameters import Parameters
from fhirclient.models.patient import Patient

from tests.interop.conftest import (
    AS_OF,
    PAGE_SIZE,
    PAGED,
    Scenario,
    Server,
    assert_eligible,
    created_id,
    member_transaction,
)

SYSTEM = "urn:interop:fhirclient"


def _patient(system: str, value: str) -> Patient:
    patient = Patient()
    identifier = Identifier()
    identifier.system, identifier.value = system, value
    patient.identifier = [identifier]
    return patient


def test_fhirclient_scenario(server: Server) -> None:
    smart = fhir_client.FHIRClient(settings={"app_id": "interop", "api_base": server.base})
    fhir = smart.server
    scenario = Scenario("fhirclient")
    made: dict[str, Any] = {}

    @scenario.step("create")
    def create() -> None:
        created = _patient(SYSTEM, "one").create(fhir)
        assert created is not None and created["meta"]["versionId"] == "1"
        made["id"] = created["id"]

    @scenario.step("read")
    def read() -> None:
        patient = Patient.read(made["id"], fhir)
        assert patient.identifier[0].value == "one"
        assert patient.meta.versionId == "1"
        made["patient"] = patient

    @scenario.step("conditional-create")
    def conditional_create() -> None:
        body = _patient(SYSTEM, "cond").as_json()
        first = fhir.post_json(f"Patient?identifier={SYSTEM}|cond", body)
        again = fhir.post_json(f"Patient?identifier={SYSTEM}|cond", body)
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json()["id"] == first.json()["id"]
        found = list(Patient.where({"identifier": f"{SYSTEM}|cond"}).perform_resources_iter(fhir))
        assert [p.id for p in found] == [first.json()["id"]]

    @scenario.step("update-with-version")
    def update_with_version() -> None:
        patient: Patient = made["patient"]
        patient.active = True
        fhir.session.headers["If-Match"] = f'W/"{patient.meta.versionId}"'
        try:
            updated = patient.update(fhir)
        finally:
            del fhir.session.headers["If-Match"]
        assert updated is not None and updated["meta"]["versionId"] == "2"

    @scenario.step("stale-version-refused")
    def stale_version_refused() -> None:
        patient: Patient = made["patient"]
        patient.active = False
        fhir.session.headers["If-Match"] = 'W/"1"'
        try:
            with pytest.raises(requests.HTTPError) as refused:
                patient.update(fhir)
        finally:
            del fhir.session.headers["If-Match"]
        assert refused.value.response.status_code == 412
        assert Patient.read(made["id"], fhir).active is True

    @scenario.step("patch")
    def patch() -> None:
        response = fhir.session.patch(
            f"{fhir.base_uri}Patient/{made['id']}",
            json=[{"op": "add", "path": "/gender", "value": "male"}],
            headers={"Content-Type": "application/json-patch+json",
                     "Accept": "application/fhir+json", "If-Match": 'W/"2"'},
        )
        assert response.status_code == 200, response.text
        patched = Patient(response.json())
        assert (patched.gender, patched.active, patched.meta.versionId) == ("male", True, "3")

    @scenario.step("search-paging")
    def search_paging() -> None:
        for n in range(PAGED):
            _patient(f"{SYSTEM}:page", str(n)).create(fhir)
        search = Patient.where({"identifier": f"{SYSTEM}:page|", "_count": str(PAGE_SIZE)})
        pages = list(search.perform_iter(fhir))
        assert [len(page.entry or []) for page in pages] == [3, 3, 1]
        values = sorted(
            entry.resource.identifier[0].value for page in pages for entry in page.entry or []
        )
        assert values == [str(n) for n in range(PAGED)]

    @scenario.step("transaction")
    def transaction() -> None:
        response = Bundle(member_transaction("fhirclient")).create(fhir)
        assert response is not None
        Bundle(response)  # a valid R4 Bundle
        made["member"] = created_id(response, "Patient")

    @scenario.step("ecm-eligibility")
    def ecm_eligibility() -> None:
        answer = fhir.request_json(f"Patient/{made['member']}/$ecm-eligibility?asOf={AS_OF}")
        Parameters(answer)  # a valid R4 Parameters
        assert_eligible(answer)

    @scenario.step("delete")
    def delete() -> None:
        Patient.read(made["id"], fhir).delete(fhir)
        with pytest.raises(requests.HTTPError) as gone:
            Patient.read(made["id"], fhir)
        assert gone.value.response.status_code == 410

    scenario.check()
