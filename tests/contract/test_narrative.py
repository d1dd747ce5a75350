"""The narrative rules txt-1 and txt-2 are part of base validation: active content in
``text.div`` (scripts, event handlers, script and data: URLs) and anything but the allowed
XHTML is refused with 422 wherever a resource is written, and nothing is stored; the XHTML
is parsed without DTDs, entity expansion or network."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.support import TestClient, create, expressions, history_total, outcome, patient

X = 'xmlns="http://www.w3.org/1999/xhtml"'

BAD = [
    f"<div {X}><script>alert(1)</script>Hi</div>",
    f'<div {X}><p onclick="alert(1)">Hi</p></div>',
    f'<div {X}><img src="x" onerror="alert(1)"/>Hi</div>',
    f'<div {X}><a href="javascript:alert(1)">Hi</a></div>',
    f'<div {X}><a href=" jAvA&#9;script:alert(1)">Hi</a></div>',
    f'<div {X}><a href="vbscript:x">Hi</a></div>',
    f'<div {X}><img src="data:image/svg+xml;base64,PHN2Zz4="/></div>',
    f'<div {X}><span style="width: expression(alert(1))">Hi</span></div>',
    f'<div {X}><span style="background: url(https://tracker.example/x)">Hi</span></div>',
    f'<div {X}><iframe src="https://example.org"/>Hi</div>',
    f'<div {X}><form action="x"><input/></form>Hi</div>',
    f'<div {X}><style>p {{color: red}}</style>Hi</div>',
    f'<div {X}><svg xmlns="http://www.w3.org/2000/svg"><script>1</script></svg>Hi</div>',
    f'<div {X}><?xml-stylesheet href="x"?>Hi</div>',
    '<!DOCTYPE div [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
    f"<div {X}>&b;</div>",  # entity expansion
    f'<!DOCTYPE div SYSTEM "http://127.0.0.1:9/evil.dtd"><div {X}>Hi</div>',  # external DTD
    f"<div {X}>&nbsp;</div>",  # not an XML entity
    f"<div {X}>   \n </div>",  # txt-2
    "<div>Hi</div>",  # no XHTML namespace
    f"<p {X}>Hi</p>",  # not a div
    f"<div {X}><p>Hi</div>",  # not well-formed
]

GOOD = [
    f"<div {X}>Hi</div>",
    f'<div {X} xml:lang="en" lang="en"><h1>Title</h1><p class="x" style="color: red">a &lt; b'
    f' &#169;<br/><a href="https://example.org/x">link</a> <a name="n">anchor</a></p>'
    f'<table border="1"><tr><th colspan="2">h</th></tr><tr><td>1</td><td>2</td></tr></table>'
    f'<ul><li>one</li></ul><img src="#contained" alt="img"/></div>',
]


def _with(div: str) -> dict[str, Any]:
    return patient("Narrative", text={"status": "generated", "div": div})


@pytest.mark.parametrize("div", BAD, ids=range(len(BAD)))
def test_an_unsafe_or_invalid_narrative_is_422_and_stores_nothing(
    client: TestClient, div: str
) -> None:
    pid = create(client, patient("Kept"))["id"]
    before = history_total(client)
    for response in (
        client.post("/fhir/Patient", json=_with(div)),
        client.put(f"/fhir/Patient/{pid}", json={**_with(div), "id": pid}),
        client.put("/fhir/Patient/new-one", json={**_with(div), "id": "new-one"}),
    ):
        body = outcome(response, 422)
        assert expressions(body) and set(expressions(body)) == {"Patient.text.div"}, body
        assert all(i["code"] == "invariant" for i in body["issue"]), body
        assert any(i["diagnostics"].startswith(("txt-1", "txt-2")) for i in body["issue"])
    patch = [{"op": "add", "path": "/text", "value": {"status": "generated", "div": div}}]
    outcome(client.patch(f"/fhir/Patient/{pid}", json=patch,
                         headers={"Content-Type": "application/json-patch+json"}), 422)
    assert history_total(client) == before


def test_a_narrative_in_a_bundle_entry_or_contained_resource_is_checked(
    client: TestClient,
) -> None:
    before = history_total(client)
    div = BAD[0]
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient("A"), "request": {"method": "POST", "url": "Patient"}},
        {"resource": _with(div), "request": {"method": "POST", "url": "Patient"}}]}
    body = outcome(client.post("/fhir", json=tx), 422)
    assert expressions(body) == ["Bundle.entry[1].resource.text.div"]
    batch = {**tx, "type": "batch"}
    replies = client.post("/fhir", json=batch).json()["entry"]
    assert replies[0]["response"]["status"].startswith("201")
    assert replies[1]["response"]["status"].startswith("422")
    contained = patient("B", contained=[{"resourceType": "Organization", "id": "o",
                                         "name": "O", "text": {"status": "generated",
                                                               "div": div}}],
                        managingOrganization={"reference": "#o"})
    body = outcome(client.post("/fhir/Patient", json=contained), 422)
    assert expressions(body) == ["Patient.contained[0].text.div"]
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json",
              "data": base64.b64encode(json.dumps(
                  [{"op": "add", "path": "/text",
                    "value": {"status": "generated", "div": div}}]).encode()).decode()}
    pid = create(client, patient("C"))["id"]
    patch_tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": binary, "request": {"method": "PATCH", "url": f"Patient/{pid}"}}]}
    outcome(client.post("/fhir", json=patch_tx), 422)
    assert history_total(client) == before + 2  # the batch's good entry and Patient C


@pytest.mark.parametrize("div", GOOD, ids=range(len(GOOD)))
def test_an_allowed_narrative_is_stored_and_served_as_sent(client: TestClient, div: str) -> None:
    created = create(client, _with(div))
    assert client.get(f"/fhir/Patient/{created['id']}").json()["text"]["div"] == div


def test_validate_reports_the_narrative(client: TestClient) -> None:
    response = client.post("/fhir/Patient/$validate", json=_with(BAD[1]))
    body = outcome(response)
    assert "Patient.text.div" in expressions(body)
    assert any(i["severity"] == "error" for i in body["issue"])
