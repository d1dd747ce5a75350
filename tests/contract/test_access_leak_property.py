"""No request leaks: generated members, organisations, relationships, releases of information
and labelled data, then requests over the paths the door covers, each answer judged by an
independent oracle — a brute-force evaluator of the generated model written here, sharing no
code with ``server/auth`` (its rules are the default matrix of ``docs/security.md``, restated).
The requests: reads, batch reads, system and type searches with totals, ``_include``,
``_revinclude``, ``_include:iterate``, chains, ``_has``, compartments, ``$everything``,
history, ``$ecm-eligibility``, an asynchronous result, a search inside a transaction, and
conditional creates alone and in a transaction (a criterion naming a hidden resource answers
as one that matches nothing).

Hypothesis runs derandomised (a fixed seed: the same examples in CI every time);
``CALAIM_FHIR_LEAK_EXAMPLES`` raises the number of examples (``bench/access/leak_run.py``,
the 10,000-request run).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.auth.principal import LOCAL, Principal
from server.auth.relationships import Matrix, RelationshipPolicy
from server.fhir.instant import format_instant, now_us
from server.operations.call import Call
from server.search.parse import parse_criteria
from server.search.query import SearchQuery
from server.store.sql import query
from tests.support import (
    FHIR_JSON,
    Acting,
    TestClient,
    all_pages,
    async_result,
    clear_store,
    defined_operation,
    extra_operations,
    fhir_client,
    put,
)

EXAMPLES = int(os.environ.get("CALAIM_FHIR_LEAK_EXAMPLES", "8"))
DAY = 86_400_000_000
MEMBERS = ("m0", "m1", "m2")
ORG_TYPES = {"A": "prov", "B": "pay", "C": "cg", "D": None}
ORGS = tuple(ORG_TYPES)
PLAN = "Organization/B"  # the plan: writes Consents (not exercised here)
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

# -- the model ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskModel:
    owner: str
    age: str  # open | recent (closed a day ago) | old (closed 40 days ago)


@dataclass(frozen=True)
class ConsentModel:
    type: str  # permit | deny
    actor: str | None
    active: bool
    part2: bool


@dataclass(frozen=True)
class MemberModel:
    payor: str | None
    coverage_active: bool
    ecm: str | None
    ecm_active: bool
    tasks: tuple[TaskModel, ...]
    consents: tuple[ConsentModel, ...]
    sud: tuple[bool, ...]  # one Condition each: a substance-use code or not


@dataclass
class Model:
    members: dict[str, MemberModel]
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    owner_of: dict[str, str] = field(default_factory=dict)  # key -> member


org = st.sampled_from(ORGS)
members = st.builds(
    MemberModel,
    payor=st.none() | org,
    coverage_active=st.booleans(),
    ecm=st.none() | org,
    ecm_active=st.booleans(),
    tasks=st.lists(
        st.builds(TaskModel, owner=org, age=st.sampled_from(["open", "recent", "old"])),
        max_size=2,
    ).map(tuple),
    consents=st.lists(
        st.builds(
            ConsentModel,
            type=st.sampled_from(["permit", "permit", "deny"]),
            actor=st.none() | org,
            active=st.booleans(),
            part2=st.booleans(),
        ),
        max_size=2,
    ).map(tuple),
    sud=st.lists(st.booleans(), min_size=1, max_size=2).map(tuple),
)
models = st.fixed_dictionaries({m: members for m in MEMBERS}).map(lambda d: Model(dict(d)))


def _ref(text: str) -> dict[str, str]:
    return {"reference": text}


def build(model: Model) -> None:
    """The FHIR resources of the model (ids fixed), recorded with their member."""
    out = model.resources

    def add(resource: dict[str, Any], member: str | None) -> None:
        key = f"{resource['resourceType']}/{resource['id']}"
        out[key] = resource
        if member is not None:
            model.owner_of[key] = member

    for name, type in ORG_TYPES.items():
        body: dict[str, Any] = {"resourceType": "Organization", "id": name, "name": name}
        if type:
            system = "http://terminology.hl7.org/CodeSystem/organization-type"
            body["type"] = [{"coding": [{"system": system, "code": type}]}]
        add(body, None)
    now = now_us()
    for m, mm in model.members.items():
        add({"resourceType": "Patient", "id": m, "name": [{"family": m}]}, m)
        add(
            {
                "resourceType": "Observation",
                "id": f"{m}-obs",
                "status": "final",
                "code": {"text": "housing"},
                "subject": _ref(f"Patient/{m}"),
            },
            m,
        )
        for n, sud in enumerate(mm.sud):
            code = "F10.20" if sud else "I10"
            add(
                {
                    "resourceType": "Condition",
                    "id": f"{m}-c{n}",
                    "subject": _ref(f"Patient/{m}"),
                    "code": {"coding": [{"system": ICD, "code": code}]},
                },
                m,
            )
        if mm.payor:
            add(
                {
                    "resourceType": "Coverage",
                    "id": f"{m}-cov",
                    "status": "active" if mm.coverage_active else "cancelled",
                    "beneficiary": _ref(f"Patient/{m}"),
                    "payor": [_ref(f"Organization/{mm.payor}")],
                },
                m,
            )
        if mm.ecm:
            add(
                {
                    "resourceType": "EpisodeOfCare",
                    "id": f"{m}-eoc",
                    "status": "active" if mm.ecm_active else "finished",
                    "patient": _ref(f"Patient/{m}"),
                    "managingOrganization": _ref(f"Organization/{mm.ecm}"),
                },
                m,
            )
        for n, task in enumerate(mm.tasks):
            sr = f"{m}-sr{n}"
            add(
                {
                    "resourceType": "ServiceRequest",
                    "id": sr,
                    "status": "active",
                    "intent": "order",
                    "subject": _ref(f"Patient/{m}"),
                    "supportingInfo": [_ref(f"Observation/{m}-obs")],
                },
                m,
            )
            body = {
                "resourceType": "Task",
                "id": f"{m}-t{n}",
                "status": "requested" if task.age == "open" else "completed",
                "intent": "order",
                "for": _ref(f"Patient/{m}"),
                "focus": _ref(f"ServiceRequest/{sr}"),
                "owner": _ref(f"Organization/{task.owner}"),
            }
            if task.age != "open":
                body["lastModified"] = format_instant(
                    now - (DAY if task.age == "recent" else 40 * DAY)
                )
            add(body, m)
        for n, consent in enumerate(mm.consents):
            provision: dict[str, Any] = {"type": consent.type}
            if consent.actor:
                provision["actor"] = [
                    {
                        "role": {"text": "recipient"},
                        "reference": _ref(f"Organization/{consent.actor}"),
                    }
                ]
            if consent.part2:
                provision["securityLabel"] = [{"system": ACT, "code": "42CFRPart2"}]
            add(
                {
                    "resourceType": "Consent",
                    "id": f"{m}-k{n}",
                    "status": "active" if consent.active else "inactive",
                    "scope": {"coding": [{"code": "patient-privacy"}]},
                    "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
                    "patient": _ref(f"Patient/{m}"),
                    "provision": provision,
                },
                m,
            )


# -- the oracle ----------------------------------------------------------------------------------

CLASS = {
    "Patient": "demographics",
    "Coverage": "coverage",
    "Consent": "consent",
    "EpisodeOfCare": "care",
    "Task": "care",
    "ServiceRequest": "care",
    "Condition": "clinical",
    "Observation": "clinical",
}
REACH = {
    "plan": {"demographics", "coverage", "consent", "care", "clinical"},
    "ecm": {"demographics", "coverage", "consent", "care", "clinical"},
    "referral": {"demographics", "consent"},
}


def oracle(model: Model, o: str) -> set[str]:
    """Every resource organisation ``o`` may see, by brute force over the model."""
    seen: set[str] = set()
    for key, resource in model.resources.items():
        type = resource["resourceType"]
        if type == "Organization":
            seen.add(key)
            continue
        m = model.owner_of[key]
        mm = model.members[m]
        active = [c for c in mm.consents if c.active]
        if any(c.type == "deny" and c.actor in (None, o) for c in active):
            continue
        covered = ORG_TYPES[o] in ("prov", "pay", "ins")
        if not covered and not any(c.type == "permit" and c.actor in (None, o) for c in active):
            continue
        sud = type == "Condition" and resource["code"]["coding"][0]["code"].startswith("F10")
        if sud and not any(c.type == "permit" and c.part2 and c.actor == o for c in active):
            continue
        kinds = set()
        if mm.payor == o and mm.coverage_active:
            kinds.add("plan")
        if mm.ecm == o and mm.ecm_active:
            kinds.add("ecm")
        live_tasks = [
            (n, t) for n, t in enumerate(mm.tasks) if t.owner == o and t.age in ("open", "recent")
        ]
        if live_tasks:
            kinds.add("referral")
        if any(CLASS[type] in REACH[k] for k in kinds):
            seen.add(key)
            continue
        # a live referral reaches its Task, the ServiceRequest and that one's supporting info
        scoped = {f"Task/{m}-t{n}" for n, _ in live_tasks}
        scoped |= {f"ServiceRequest/{m}-sr{n}" for n, _ in live_tasks}
        if live_tasks:
            scoped.add(f"Observation/{m}-obs")
        # its own Tasks (owner) of a member it holds a live referral with
        own = (
            type == "Task" and resource["owner"]["reference"] == f"Organization/{o}" and live_tasks
        )
        if key in scoped or own:
            seen.add(key)
    return seen


# -- the requests ----------------------------------------------------------------------------


def _keys(entries: list[dict[str, Any]]) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in entries}


def _pages(client: TestClient, url: str) -> set[str]:
    return _keys(all_pages(client, url))


def judge(client: TestClient, model: Model, o: str, who: Acting) -> None:
    visible = oracle(model, o)
    every = set(model.resources)

    def of(type: str) -> set[str]:
        return {k for k in visible if k.startswith(type + "/")}

    assert _pages(client, "/fhir?_count=4") == visible, o
    for type in ("Patient", "Condition", "Task", "Observation", "Consent", "Coverage"):
        body = client.get(f"/fhir/{type}?_total=accurate&_count=2").json()
        assert body["total"] == len(of(type)), (o, type)
        assert _pages(client, f"/fhir/{type}?_count=2") == of(type), (o, type)
    for key in sorted(every):
        status = client.get(f"/fhir/{key}").status_code
        assert status == (200 if key in visible else 404), (o, key, status)
    # a batch of the same reads: each entry's response as the read's
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": key}} for key in sorted(every)],
    }
    answered = client.post("/fhir", json=batch).json()["entry"]
    for key, entry in zip(sorted(every), answered, strict=True):
        expected = "200" if key in visible else "404"
        assert entry["response"]["status"].startswith(expected), (o, key, entry["response"])
        if key not in visible:
            assert (
                "resource" not in entry or entry["resource"]["resourceType"] == "OperationOutcome"
            )
    # includes: the visible Tasks and, of what they point at, the visible part
    focus = {
        f"ServiceRequest/{model.resources[t]['focus']['reference'].split('/')[1]}"
        for t in of("Task")
    }
    assert _pages(client, "/fhir/Task?_include=Task:focus") == of("Task") | (focus & visible)
    revinclude = _pages(client, "/fhir/Patient?_revinclude=Condition:subject")
    assert revinclude == of("Patient") | {
        c for c in of("Condition") if f"Patient/{model.owner_of[c]}" in visible
    }
    for m in MEMBERS:
        chained = _pages(client, f"/fhir/Condition?subject.family={m}")
        expected = {c for c in of("Condition") if model.owner_of[c] == m}
        assert chained == (expected if f"Patient/{m}" in visible else set()), (o, m)
        has = _pages(client, f"/fhir/Patient?_has:Condition:subject:_id={m}-c0")
        through = f"Condition/{m}-c0" in visible and f"Patient/{m}" in visible
        assert has == ({f"Patient/{m}"} if through else set()), (o, m)
        assert _pages(client, f"/fhir/Patient/{m}/Condition") <= visible
        response = client.get(f"/fhir/Patient/{m}/$everything")
        if f"Patient/{m}" in visible:
            assert _keys(response.json().get("entry", [])) <= visible, (o, m)
        else:
            assert response.status_code in (403, 404)
    assert _pages(client, "/fhir/Condition/_history") <= visible
    # _include:iterate: on from the included ServiceRequests to their subjects
    subjects = {f"Patient/{model.owner_of[sr]}" for sr in focus & visible}
    iterated = _pages(
        client, "/fhir/Task?_include=Task:focus&_include:iterate=ServiceRequest:subject"
    )
    assert iterated == of("Task") | (focus & visible) | (subjects & visible), o
    for m in MEMBERS:
        _eligibility(client, visible, m)
    _asynchronous(client, visible, of("Condition"))
    _transaction(client, visible, of("Condition"))
    for m in MEMBERS:
        _conditional_create(client, who, visible, m)


# -- operations, asynchronous results, transactions, conditional writes ---------------------

AS_OF = "2024-08-31"
ASYNC = {"Prefer": "respond-async"}


def _references(value: Any) -> Iterator[str]:
    """Every ``reference`` in a JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                yield item
            else:
                yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)


def _named(body: Any) -> set[str]:
    """The model's resources a body names (its references and the resources it holds)."""
    named = {r for r in _references(body) if r.split("/")[0] in CLASS}
    if isinstance(body, dict) and body.get("resourceType") == "Bundle":
        held = [e for e in body.get("entry", []) if "id" in e.get("resource", {})]
        named |= {k for k in _keys(held) if k.split("/")[0] in CLASS}
    return named


def _eligibility(client: TestClient, visible: set[str], m: str) -> None:
    """``$ecm-eligibility`` of a member: of a hidden member as of a missing one; of a visible
    one naming only what the caller may see."""
    response = client.get(f"/fhir/Patient/{m}/$ecm-eligibility?asOf={AS_OF}")
    if f"Patient/{m}" not in visible:
        missing = client.get(f"/fhir/Patient/zz-missing/$ecm-eligibility?asOf={AS_OF}")
        assert response.status_code == missing.status_code == 404, (m, response.text)
        assert response.text.replace(m, "X") == missing.text.replace("zz-missing", "X")
        return
    assert response.status_code == 200, response.text
    assert _named(response.json()) <= visible, (m, _named(response.json()) - visible)


def _conditions(call: Call) -> dict[str, Any]:
    """A long-running operation listing the Conditions its caller may read."""
    criteria = parse_criteria("Condition", [], call.services.search.context)
    page = call.reader.search(SearchQuery(criteria, 100))
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "condition", "valueReference": _ref(f"Condition/{v.id}")} for v in page.items
        ],
    }


LIST_CONDITIONS = defined_operation(
    "list-conditions", _conditions, system=True, affects_state=True, long_running=True
)


def _asynchronous(client: TestClient, visible: set[str], conditions: set[str]) -> None:
    """An asynchronous result holds what the caller may see, the same as a search."""
    submitted = client.post(
        "/fhir/$list-conditions",
        json={"resourceType": "Parameters"},
        headers={"Content-Type": FHIR_JSON, **ASYNC},
    )
    assert submitted.status_code == 202, submitted.text
    result = async_result(client, submitted.headers["content-location"], timeout=30)
    assert result.status_code == 200, result.text
    assert _named(result.json()) == conditions
    assert _named(result.json()) <= visible


def _transaction(client: TestClient, visible: set[str], conditions: set[str]) -> None:
    """A search inside a transaction answers what the same search answers."""
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "GET", "url": "Condition?_count=100"}}],
    }
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 200, response.text
    entry = response.json()["entry"][0]
    assert entry["response"]["status"].startswith("200"), entry["response"]
    assert _keys(entry["resource"].get("entry", [])) == conditions
    assert _named(response.json()) <= visible


def _created(response: Any) -> str | None:
    """``Type/id`` a write answered as created, from its Location."""
    if response.status_code != 201:
        return None
    return "/".join(response.headers["location"].split("/_history")[0].split("/")[-2:])


def _conditional_create(client: TestClient, who: Acting, visible: set[str], m: str) -> None:
    """A conditional create (``If-None-Exist``, alone and as a transaction entry) whose
    criteria name a hidden resource answers exactly as one whose criteria match nothing; one
    naming a visible resource answers the match, 200 and nothing written."""
    key = f"Observation/{m}-obs"
    body = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "housing"},
        "subject": _ref(f"Patient/{m}"),
    }
    headers = {"Content-Type": FHIR_JSON, "Prefer": "return=representation"}

    def alone(id: str) -> Any:
        return client.post(
            "/fhir/Observation", json=body, headers={**headers, "If-None-Exist": f"_id={id}"}
        )

    def entry(id: str) -> Any:
        request = {"method": "POST", "url": "Observation", "ifNoneExist": f"_id={id}"}
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": "urn:uuid:0b5e1c52-1f0e-4d55-9a43-5a3b7a1d0c11",
                    "resource": body,
                    "request": request,
                }
            ],
        }
        return client.post("/fhir", json=bundle, headers=headers)

    created: list[str] = []
    try:
        for send in (alone, entry):
            named, nothing = send(f"{m}-obs"), send("zz-missing")
            for response in (named, nothing):
                if send is entry and response.status_code == 200:
                    for e in response.json()["entry"]:
                        if e["response"]["status"].startswith("201"):
                            created.append(e["response"]["location"].split("/_history")[0])
                elif (made := _created(response)) is not None:
                    created.append(made)
            if key in visible:
                assert named.status_code == 200, (m, named.text)
                assert _named(named.json()) <= visible
                if send is entry:
                    status = named.json()["entry"][0]["response"]["status"]
                    assert status.startswith("200"), status
                continue
            assert named.status_code == nothing.status_code, (m, named.text, nothing.text)
            if send is entry and named.status_code == 200:
                statuses = [e["response"]["status"][:3] for e in named.json()["entry"]]
                again = [e["response"]["status"][:3] for e in nothing.json()["entry"]]
                assert statuses == again
            assert key not in _named(named.json()), named.text
    finally:  # what the requests wrote leaves the model as it was
        caller = who.principal
        who.as_(LOCAL)
        for made in created:
            assert client.delete(f"/fhir/{made}").status_code in (200, 204)
        who.as_(caller)


# -- the test --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def leak_app(database_url: str) -> Iterator[tuple[TestClient, Acting, str]]:
    who = Acting()
    policy = RelationshipPolicy(Matrix(plans=(PLAN,)))
    with fhir_client(
        database_url, principals=who, policies=[policy], access_safety_net="fail"
    ) as client:
        yield client, who, database_url


def test_no_request_reaches_outside_the_callers_rights(
    leak_app: tuple[TestClient, Acting, str],
) -> None:
    _judge_generated_models(leak_app)


def test_no_request_reaches_outside_the_callers_rights_with_every_plan_probed(
    leak_app: tuple[TestClient, Acting, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same with the planner's size shortcuts off, so the generated scenes (a few dozen
    rows) take the paths of large stores: every narrowed search probes its clauses, and on
    SQLite every grant clause it can tests its candidates against the organisation's
    released members gathered once (decision 0025), as if the organisation held few grants."""
    monkeypatch.setattr(query, "PROBE_ENOUGH", 1)
    members_first = query.Plan._members_first
    monkeypatch.setattr(
        query.Plan, "_members_first", lambda plan, probe: members_first(plan, lambda *_: 0)
    )
    _judge_generated_models(leak_app)


def _judge_generated_models(leak_app: tuple[TestClient, Acting, str]) -> None:
    client, who, database_url = leak_app

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(models)
    def check(model: Model) -> None:
        clear_store(database_url)
        build(model)
        who.as_(LOCAL)
        for resource in model.resources.values():
            response = put(client, resource)
            assert response.status_code == 201, response.text
        for o in ORGS:
            who.as_(Principal(f"client-{o}", organization=f"Organization/{o}"))
            judge(client, model, o, who)

    with extra_operations(client, LIST_CONDITIONS):
        check()


def test_a_revocation_between_pages_shrinks_the_next_page(
    leak_app: tuple[TestClient, Acting, str],
) -> None:
    client, who, database_url = leak_app
    clear_store(database_url)
    who.as_(LOCAL)
    system = "http://terminology.hl7.org/CodeSystem/organization-type"
    provider = {"system": system, "code": "prov"}
    put(client, {"resourceType": "Organization", "id": "A", "type": [{"coding": [provider]}]})
    for n in range(4):
        put(client, {"resourceType": "Patient", "id": f"p{n}", "name": [{"family": "x"}]})
        put(
            client,
            {
                "resourceType": "EpisodeOfCare",
                "id": f"e{n}",
                "status": "active",
                "patient": _ref(f"Patient/p{n}"),
                "managingOrganization": _ref("Organization/A"),
            },
        )
    who.as_(Principal("client-A", organization="Organization/A"))
    first = client.get("/fhir/Patient?_count=2&_total=accurate").json()
    assert first["total"] == 4
    shown = _keys(first["entry"])
    later = sorted({f"p{n}" for n in range(4)} - {k.split("/")[1] for k in shown})
    who.as_(LOCAL)
    ended = {
        "resourceType": "EpisodeOfCare",
        "id": f"e{later[0][1:]}",
        "status": "finished",
        "patient": _ref(f"Patient/{later[0]}"),
        "managingOrganization": _ref("Organization/A"),
    }
    assert put(client, ended).status_code == 200
    who.as_(Principal("client-A", organization="Organization/A"))
    next_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    second = client.get(next_url.replace("http://testserver", "")).json()
    assert _keys(second.get("entry", [])) == {f"Patient/{later[1]}"}
