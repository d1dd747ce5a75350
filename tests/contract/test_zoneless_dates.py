"""A date without an offset means the same moment everywhere it is accepted: ``_at`` and
``_since`` of history, ``_lastUpdated`` and date search all read it in the server's zone
(``CALAIM_FHIR_SEARCH_TIMEZONE``, America/Los_Angeles by default)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, date, datetime, timedelta
from typing import Any
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


# zones far from UTC: at every instant the calendar day in one of them is not the UTC one
_FAR_ZONES = ("Etc/GMT-14", "Etc/GMT+12")


def test_a_zoneless_date_is_one_day_for_at_and_last_updated(
    client: TestClient, make_client: Callable[..., AbstractContextManager[TestClient]]
) -> None:
    created = create(client, patient("Day"))
    id = created["id"]
    stamp = datetime.fromisoformat(created["meta"]["lastUpdated"].replace("Z", "+00:00"))
    utc_day = stamp.astimezone(UTC).date()
    name = next(z for z in _FAR_ZONES if stamp.astimezone(ZoneInfo(z)).date() != utc_day)
    zone = ZoneInfo(name)
    local_day = stamp.astimezone(zone).date()

    def ends_after(day: date) -> bool:
        """Whether the patient was stored before the zone's midnight that ends ``day``."""
        following = day + timedelta(days=1)
        return stamp < datetime(following.year, following.month, following.day, tzinfo=zone)

    days = sorted({local_day - timedelta(days=1), local_day, utc_day, local_day + timedelta(1)})
    with make_client(search_timezone=name) as local:

        def found(path: str, **params: Any) -> list[str]:
            response = local.get(path, params=params)
            assert response.status_code == 200, response.text
            return _ids(response.json())

        for day in days:
            text = day.isoformat()
            current = [id] if ends_after(day) else []
            assert found(f"/fhir/Patient/{id}/_history", _at=text) == current, (name, text)
            assert found("/fhir/Patient", _lastUpdated=f"le{text}") == current, (name, text)
            on_day = [id] if day == local_day else []
            assert found("/fhir/Patient", _lastUpdated=text) == on_day, (name, text)
