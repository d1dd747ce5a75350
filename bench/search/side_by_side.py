"""The same searches, with the same answer checks, against one or more FHIR servers.

```sh
.venv/bin/python bench/search/side_by_side.py --data DIR \
    --server new=http://127.0.0.1:8080/fhir --server old=http://127.0.0.1:8081/fhir \
    [--repeats 50] [--warmup 5] [--only patient] [--json FILE] [--md FILE]
```

``DIR`` is a data set of ``generate.py`` already loaded into every server (any FHIR R4 server:
nothing here depends on calaim-fhir). The searches are the designed queries of
``queries.json`` plus ECM care-team searches derived from the data (one member's encounters
and conditions, chains, ``_has``, sorted pages, broad pages, ``_total=accurate``); every
expected answer is computed from the data files, never from a server.

Requests go round-robin: for each search, warm-up requests on every server, then the timed
requests alternate server by server (one keep-alive connection each, sequential), so every
server sees the same machine load. Each answer is checked: status 200, the number of matches
on the page, the ids belong to the expected match set, ``next`` present exactly when more
matches exist, ``total`` when the search asks for it, included resources; a server that answers
wrongly gets its errors counted and printed, not a figure. The ``total`` each server gave (also
unasked: a default total) is recorded with its figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from bench.dataset import read_meta, resources  # noqa: E402
from bench.harness import stats  # noqa: E402

PAGE = 20


@dataclass
class Search:
    """One search and its expected answer: the ids of every match (``matches``), or only
    their number (``total``) when listing them all is not the point."""

    name: str
    kind: str
    path: str  # Type?query, relative to the base
    total: int
    matches: set[str] | None = None  # "Type/id" of every match, when known
    included: int | None = None
    wants_total: bool = False
    sorted_by: str | None = None  # "-date" etc.: the page must come in this order
    order: list[str] = field(default_factory=list)  # expected first page ids, in order


def _ref(value: dict[str, Any] | None) -> str | None:
    return value.get("reference") if value else None


def derive(data: Path) -> list[Search]:
    """The designed queries of ``queries.json`` and the ECM care-team searches."""
    meta = read_meta(data)
    searches: list[Search] = []
    for q in meta["queries"]:
        kind = q["kind"]
        searches.append(
            Search(
                q["name"],
                kind,
                q["path"],
                int(q["expected_total"]),
                included=q.get("expected_included"),
                wants_total=kind == "total",
            )
        )
    patients: list[str] = []
    family: dict[str, str] = {}
    encounters: dict[str, dict[str, Any]] = {}
    conditions: dict[str, dict[str, Any]] = {}
    for r in resources(data):
        rtype = r["resourceType"]
        if rtype == "Patient":
            patients.append(r["id"])
            family[r["id"]] = (r.get("name") or [{}])[0].get("family", "").lower()
        elif rtype == "Encounter":
            encounters[r["id"]] = r
        elif rtype == "Condition":
            conditions[r["id"]] = r
    by_patient: dict[str, list[str]] = defaultdict(list)
    for eid, e in encounters.items():
        subject = _ref(e.get("subject")) or ""
        by_patient[subject.removeprefix("Patient/")].append(eid)
    # the member in the middle of the load order with the most encounters nearby
    middle = len(patients) // 2
    pid = max(patients[middle : middle + 50], key=lambda p: len(by_patient[p]))
    own = [encounters[e] for e in by_patient[pid]]

    def ids(type: str, items: list[dict[str, Any]]) -> set[str]:
        return {f"{type}/{r['id']}" for r in items}

    def add(name: str, path: str, type: str, items: list[dict[str, Any]], **kw: Any) -> None:
        searches.append(Search(name, "ecm", path, len(items), ids(type, items), **kw))

    add("ecm-encounter-subject", f"Encounter?subject=Patient/{pid}", "Encounter", own)
    field_visits = [e for e in own if e["class"]["code"] == "FLD"]
    add(
        "ecm-encounter-class-patient",
        f"Encounter?class=FLD&patient={pid}",
        "Encounter",
        field_visits,
    )
    recent = [e for e in own if e["period"]["start"][:10] >= "2022-01-01"]
    add(
        "ecm-encounter-date-patient",
        f"Encounter?date=ge2022-01-01&patient={pid}",
        "Encounter",
        recent,
    )
    latest = sorted(own, key=lambda e: e["period"]["end"], reverse=True)
    add(
        "ecm-encounter-patient-sorted",
        f"Encounter?patient={pid}&_sort=-date",
        "Encounter",
        latest,
        sorted_by="-date",
        order=[f"Encounter/{e['id']}" for e in latest[:PAGE]],
    )
    # the rarest condition code: a selective code, with the broad clinical-status
    codes: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in conditions.values():
        codes[c["code"]["coding"][0]["code"]].append(c)
    code = min(codes, key=lambda k: (len(codes[k]), k))
    active = [c for c in codes[code] if c["clinicalStatus"]["coding"][0]["code"] == "active"]
    add(
        "ecm-condition-code-status",
        f"Condition?code={code}&clinical-status=active",
        "Condition",
        active,
    )
    all_field = [e for e in encounters.values() if e["class"]["code"] == "FLD"]
    add("broad-encounter-class", "Encounter?class=FLD", "Encounter", all_field)
    add(
        "total-encounter-class",
        "Encounter?class=FLD&_total=accurate",
        "Encounter",
        all_field,
        wants_total=True,
    )
    designed = {p for p, f in family.items() if f == "quillfeather"}
    chained = [e for e in encounters.values() if (_ref(e.get("subject")) or "")[8:] in designed]
    add(
        "chain-encounter-subject-family",
        "Encounter?subject:Patient.family=quillfeather",
        "Encounter",
        chained,
    )
    provider = "Organization/bench-encounter-service-provider-20"
    has = {
        (_ref(e.get("subject")) or "")[8:]
        for e in encounters.values()
        if _ref(e.get("serviceProvider")) == provider
    }
    searches.append(
        Search(
            "has-patient-encounter-provider",
            "ecm",
            f"Patient?_has:Encounter:patient:service-provider={provider}",
            len(has),
            {f"Patient/{p}" for p in has},
        )
    )
    return searches


class Client:
    """One keep-alive connection to a FHIR base."""

    def __init__(self, label: str, base: str) -> None:
        self.label = label
        parts = urlsplit(base)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=300)

    def get(self, path: str) -> tuple[int, bytes, float]:
        started = time.perf_counter()
        for attempt in (1, 2):
            try:
                self.conn.request(
                    "GET", f"{self.prefix}/{path}", headers={"Accept": "application/fhir+json"}
                )
                response = self.conn.getresponse()
                body = response.read()
                return response.status, body, (time.perf_counter() - started) * 1000
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=300)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def _with_count(path: str) -> str:
    return path if "_count=" in path else f"{path}&_count={PAGE}"


def check(search: Search, status: int, body: bytes) -> list[str]:
    """What is wrong with the answer (empty when it is right)."""
    if status != 200:
        return [f"status {status}: {body[:200]!r}"]
    bundle = json.loads(body)
    entries = bundle.get("entry") or []
    matches = [e for e in entries if (e.get("search") or {}).get("mode", "match") == "match"]
    included = [e for e in entries if (e.get("search") or {}).get("mode") == "include"]
    got = [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in matches]
    errors: list[str] = []
    if len(got) != min(PAGE, search.total):
        errors.append(f"{len(got)} matches on the page, expected {min(PAGE, search.total)}")
    if len(set(got)) != len(got):
        errors.append("a match appears twice on the page")
    if search.matches is not None and not set(got) <= search.matches:
        errors.append(f"{len(set(got) - search.matches)} ids outside the match set")
    links = {link.get("relation") for link in bundle.get("link") or []}
    if ("next" in links) != (search.total > PAGE):
        errors.append(f"next link {'present' if 'next' in links else 'missing'}")
    if search.wants_total and bundle.get("total") != search.total:
        errors.append(f"total {bundle.get('total')}, expected {search.total}")
    if search.included is not None and len(included) != search.included:
        errors.append(f"{len(included)} included, expected {search.included}")
    if search.order and got != search.order[: len(got)]:
        # ties (same end time) may come in either order: compare as sets then
        if set(got) != set(search.order[: len(got)]):
            errors.append(f"page not in {search.sorted_by} order")
    return errors


def measure(
    searches: list[Search], clients: list[Client], repeats: int, warmup: int
) -> list[dict[str, Any]]:
    results = []
    for search in searches:
        path = _with_count(search.path)
        entry: dict[str, Any] = {
            "name": search.name,
            "kind": search.kind,
            "path": path,
            "expected": search.total,
            "loadavg_before": round(os.getloadavg()[0], 2),
            "servers": {},
        }
        times: dict[str, list[float]] = {c.label: [] for c in clients}
        errors: dict[str, list[str]] = {c.label: [] for c in clients}
        given: dict[str, Any] = {}  # the Bundle.total each server gave (None: left out)
        for client in clients:
            for _ in range(warmup):
                status, body, _ms = client.get(path)
                errors[client.label] = check(search, status, body)
                if status == 200:
                    given[client.label] = json.loads(body).get("total")
        for _ in range(repeats):
            for client in clients:
                if errors[client.label]:
                    continue
                status, body, ms = client.get(path)
                wrong = check(search, status, body)
                if wrong:
                    errors[client.label] = wrong
                    continue
                times[client.label].append(ms)
        for client in clients:
            label = client.label
            if errors[label]:
                entry["servers"][label] = {"wrong": errors[label]}
            else:
                entry["servers"][label] = {**stats(times[label]), "total": given.get(label)}
        results.append(entry)
        shown = "  ".join(
            f"{label}: "
            + (
                f"p50 {r['p50_ms']:.2f} ms p95 {r['p95_ms']:.2f} total {r['total']}"
                if "p50_ms" in r
                else f"WRONG {'; '.join(r['wrong'])}"
            )
            for label, r in entry["servers"].items()
        )
        print(f"{search.name:38} {search.total:>7}  {shown}", flush=True)
    return results


def markdown(results: list[dict[str, Any]], labels: list[str]) -> str:
    head = "| search | matches | " + " | ".join(f"{label} p50 / p95 ms" for label in labels)
    lines = [head + " |", "|---|---:|" + "---:|" * len(labels)]
    for r in results:
        cells = []
        for label in labels:
            s = r["servers"][label]
            cells.append(f"{s['p50_ms']:.2f} / {s['p95_ms']:.2f}" if "p50_ms" in s else "wrong")
        lines.append(f"| `{r['path']}` | {r['expected']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--server", action="append", required=True, help="LABEL=BASE_URL")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--only", help="run the searches whose name contains this")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--md", type=Path)
    args = parser.parse_args()
    searches = derive(args.data)
    if args.only:
        searches = [s for s in searches if args.only in s.name]
    clients = [Client(*spec.split("=", 1)) for spec in args.server]
    results = measure(searches, clients, args.repeats, args.warmup)
    labels = [c.label for c in clients]
    if args.json:
        args.json.write_text(json.dumps({"servers": args.server, "results": results}, indent=1))
    if args.md:
        args.md.write_text(markdown(results, labels))


if __name__ == "__main__":
    main()
