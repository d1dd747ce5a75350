"""A date without an offset means the same moment everywhere it is accepted: ``_at`` and
``_since`` of history, ``_lastUpdated`` and date search all read it in the server's zone
(``CALAIM_FHIR_SEARCH_TIMEZONE``, America/Los_Angeles by default)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from tests.support import TestClient, create, patient

ZONE = ZoneInfo("America/Los_Angeles")


def _local(stamp: str, shift: timedelta) -> str:
    """``stamp`` (an instant) moved by ``shift``, as wall-clock time in the server's zone,
    without an offset."""
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00")) + shift
    return moment.astimezone(ZONE).strftime("%Y-%m-%dT%H:%M:%S")


def _ids(bundle: dict[str, object]) -> list[str]:
    entries = bundle.get("entry", [])
    assert isinstance(entries, list)
    return [e["resource"]["id"] for e in entries if "resource" in e]


def test_a_zoneless_date_time_is_one_moment_for_history_and_search(client: TestClient) -> None:
    created = create(client, patient("Zone"))
    id, stamp = created["id"], created["meta"]["lastUpdated"]
    after = _local(stamp, timedelta(minutes=1))  # a moment when the patient existed
    before = _local(stamp, timedelta(minutes=-1))  # a moment before it did
    at_after = client.get(f"/fhir/Patient/{id}/_history", params={"_at": after}).json()
    at_before = client.get(f"/fhir/Patient/{id}/_history", params={"_at": before}).json()
    assert (_ids(at_after), _ids(at_before)) == ([id], [])
    since_before = client.get("/fhir/Patient/_history", params={"_since": before}).json()
    since_after = client.get("/fhir/Patient/_history", params={"_since": after}).json()
    assert (_ids(since_before), _ids(since_after)) == ([id], [])
    updated_before = client.get("/fhir/Patient", params={"_lastUpdated": f"lt{after}"}).json()
    updated_after = client.get("/fhir/Patient", params={"_lastUpdated": f"lt{before}"}).json()
    assert (_ids(updated_before), _ids(updated_after)) == ([id], [])
