"""HTTP conveniences clients assume: HEAD on reads and searches, gzip for large responses,
the count of a page of nothing, and unknown ``_`` parameters (fhirpy's ``_totalMethod``) per
``Prefer: handling``."""

from __future__ import annotations

from tests.support import TestClient, create, outcome, patient


def test_head_answers_the_get_headers_without_a_body(client: TestClient) -> None:
    pid = create(client, patient("Head"))["id"]
    for url in (f"/fhir/Patient/{pid}", "/fhir/Patient?family=Head", "/fhir/metadata",
                f"/fhir/Patient/{pid}/_history/1"):
        get = client.get(url)
        head = client.head(url)
        assert head.status_code == get.status_code == 200, url
        assert head.content == b"", url
        assert head.headers["content-type"] == get.headers["content-type"]
        assert head.headers["content-length"] == str(len(get.content)), url
    read = client.head(f"/fhir/Patient/{pid}")
    assert read.headers["etag"] == 'W/"1"' and "last-modified" in read.headers
    missing = client.head("/fhir/Patient/nobody")
    assert missing.status_code == 404 and missing.content == b""


def test_large_responses_are_gzipped_when_accepted(client: TestClient) -> None:
    for i in range(40):
        create(client, patient(f"Gzip{i:02d}"))
    plain = client.get("/fhir/Patient?_count=40", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    zipped = client.get("/fhir/Patient?_count=40", headers={"Accept-Encoding": "gzip, br"})
    assert zipped.status_code == 200
    assert zipped.headers["content-encoding"] == "gzip"
    assert "Accept-Encoding" in zipped.headers["vary"]
    # httpx decodes: the body is the same JSON
    assert zipped.json()["entry"] == plain.json()["entry"]
    raw = client.get("/fhir/Patient?_count=40", headers={"Accept-Encoding": "gzip"})
    assert int(raw.headers["content-length"]) < len(plain.content)
    refused = client.get("/fhir/Patient?_count=40", headers={"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers
    # small answers stay as they are
    small = client.get("/fhir/Patient?_count=1", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in small.headers


def test_gzip_never_compresses_no_store_answers() -> None:
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from server.api.transfer import Transfer
    from tests.support import TestClient as Client

    payload = b"x" * 10_000

    async def big(request: object) -> Response:
        return Response(payload, media_type="application/fhir+json")

    async def secret(request: object) -> Response:
        return Response(payload, media_type="application/json",
                        headers={"Cache-Control": "no-store"})

    app = Starlette(routes=[Route("/big", big), Route("/token", secret)])
    with Client(Transfer(app)) as c:
        response = c.get("/big", headers={"Accept-Encoding": "gzip"})
        assert response.headers["content-encoding"] == "gzip"
        assert int(response.headers["content-length"]) < len(payload)
        assert response.content == payload  # decoded by the client: valid gzip
        token = c.get("/token", headers={"Accept-Encoding": "gzip"})
        assert "content-encoding" not in token.headers, "never compress no-store answers"
        assert token.content == payload


def test_a_page_of_nothing_carries_the_total(client: TestClient) -> None:
    for i in range(3):
        create(client, patient(f"Count{i}"))
    body = client.get("/fhir/Patient?_count=0").json()
    assert body["total"] == 3 and "entry" not in body


def test_unknown_underscore_parameters_follow_prefer_handling(client: TestClient) -> None:
    for i in range(3):
        create(client, patient(f"Method{i}"))
    # what fhirpy's count() sends
    strict = outcome(client.get("/fhir/Patient?_count=0&_totalMethod=count"), 400)
    assert strict["issue"][0]["expression"] == ["_totalMethod"]
    lenient = client.get("/fhir/Patient?_count=0&_totalMethod=count",
                         headers={"Prefer": "handling=lenient"})
    assert lenient.status_code == 200
    assert lenient.json()["total"] == 3
    paged = client.get("/fhir/Patient?_count=2&_total=accurate&_totalMethod=count",
                       headers={"Prefer": "handling=lenient"}).json()
    assert paged["total"] == 3
    assert len([e for e in paged["entry"] if e["search"]["mode"] == "match"]) == 2
    notes = [i["diagnostics"] for e in paged["entry"] if e["search"]["mode"] == "outcome"
             for i in e["resource"]["issue"]]
    assert any("_totalMethod" in note for note in notes)
