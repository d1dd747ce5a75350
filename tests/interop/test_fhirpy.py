"""fhirpy (``SyncFHIRClient``) against a real server, each operation the way fhirpy does it:
conditional create as search parameters on the create URL (``get_or_create``,
``resource.create(identifier=…)``), patch as a merge body sent as ``application/json``,
paging by following ``next``, ``count()`` with its ``_totalMethod`` parameter."""

from __future__ import annotations

from typing import Any

import pytest
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import MultipleResourcesFound, OperationOutcome, ResourceNotFound

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

SYSTEM = "urn:interop:fhirpy"
LENIENT = {"Prefer": "handling=lenient"}


def test_fhirpy_scenario(server: Server) -> None:
    client = SyncFHIRClient(server.base)
    scenario = Scenario("fhirpy")
    made: dict[str, Any] = {}

    @scenario.step("create")
    def create() -> None:
        patient = client.resource(
            "Patient", identifier=[{"system": SYSTEM, "value": "one"}], name=[{"family": "Py"}]
        )
        patient.save()
        assert patient.id and patient["meta"]["versionId"] == "1"
        made["patient"] = patient

    @scenario.step("read")
    def read() -> None:
        got = client.reference("Patient", made["patient"].id).to_resource()
        assert got["name"] == [{"family": "Py"}]
        assert client.get("Patient", made["patient"].id)["id"] == made["patient"].id

    @scenario.step("conditional-create")
    def conditional_create() -> None:
        search = client.resources("Patient").search(identifier=f"{SYSTEM}|cond")
        body = client.resource("Patient", identifier=[{"system": SYSTEM, "value": "cond"}])
        first, created = search.get_or_create(body)
        assert created
        again, created = search.get_or_create(body)
        assert not created and again.id == first.id
        # Resource.create(**criteria): the same request, through the resource
        third = client.resource("Patient", identifier=[{"system": SYSTEM, "value": "cond"}])
        third.create(identifier=f"{SYSTEM}|cond")
        assert third.id == first.id
        assert len(search.fetch_all()) == 1

    @scenario.step("update-with-version")
    def update_with_version() -> None:
        patient = made["patient"]
        version = patient["meta"]["versionId"]
        # fhirpy has no version-aware update of its own: If-Match goes in extra_headers
        versioned = SyncFHIRClient(server.base, extra_headers={"If-Match": f'W/"{version}"'})
        updated = versioned.resource("Patient", **patient.serialize())
        updated["name"] = [{"family": "Py", "given": ["Updated"]}]
        updated.save()
        assert updated["meta"]["versionId"] == "2"
        made["versioned"] = versioned
        made["stale"] = updated.serialize()
        made["patient"] = client.reference("Patient", patient.id).to_resource()

    @scenario.step("stale-version-refused")
    def stale_version_refused() -> None:
        stale = made["versioned"].resource("Patient", **made["stale"])
        stale["name"] = [{"family": "Lost"}]
        with pytest.raises(MultipleResourcesFound) as refused:  # fhirpy's name for a 412
            stale.save()
        assert '"resourceType":"OperationOutcome"' in str(refused.value).replace(" ", "")
        assert client.get("Patient", stale.id)["name"][0]["family"] == "Py"

    @scenario.step("patch")
    def patch() -> None:
        patient = made["patient"]
        patient.patch(active=True, gender="female")  # a merge body as application/json
        assert patient["meta"]["versionId"] == "3"
        client.patch("Patient", patient.id, birthDate="1990-01-02")
        got = client.get("Patient", patient.id)
        assert (got["active"], got["gender"], got["birthDate"]) == (True, "female", "1990-01-02")
        assert got["name"][0]["given"] == ["Updated"]  # untouched members stay

    @scenario.step("search-paging")
    def search_paging() -> None:
        for n in range(PAGED):
            page_item = [{"system": f"{SYSTEM}:page", "value": str(n)}]
            client.resource("Patient", identifier=page_item).save()
        search = client.resources("Patient").search(identifier=f"{SYSTEM}:page|").limit(PAGE_SIZE)
        assert len(search.fetch()) == PAGE_SIZE
        values = sorted(p["identifier"][0]["value"] for p in search.fetch_all())
        assert values == [str(n) for n in range(PAGED)]
        # count() sends fhirpy's own _totalMethod: refused by default, ignored when lenient
        with pytest.raises(OperationOutcome):
            search.count()
        lenient = SyncFHIRClient(server.base, extra_headers=LENIENT)
        counted = lenient.resources("Patient").search(identifier=f"{SYSTEM}:page|").count()
        assert counted == PAGED

    @scenario.step("transaction")
    def transaction() -> None:
        response = client.execute("", method="post", data=member_transaction("fhirpy"))
        made["member"] = created_id(response, "Patient")

    @scenario.step("ecm-eligibility")
    def ecm_eligibility() -> None:
        member = client.reference("Patient", made["member"])
        assert_eligible(member.execute("$ecm-eligibility", method="get", params={"asOf": AS_OF}))
        body = {"resourceType": "Parameters", "parameter": [{"name": "asOf", "valueDate": AS_OF}]}
        posted = member.execute("$ecm-eligibility", data=body)
        assert_eligible(posted)

    @scenario.step("delete")
    def delete() -> None:
        patient = made["patient"]
        patient.delete()
        with pytest.raises(ResourceNotFound):
            client.get("Patient", patient.id)

    scenario.check()
