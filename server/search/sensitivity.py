"""Sensitive data labelled on write: partners do not send labels, so the index assigns them.

A version whose coded content (the token rows of ``code``, ``type``, ``category``,
``service-type``, ``reason-code``, ``product-or-service``...) falls in a configured value
set, or which names a configured 42 CFR Part 2 program Organization under any reference, gets
the configured security labels as ``_security`` token rows: searchable, and part of its
access facts (``access_facts.py``) like the labels it was sent with, so the door's clauses and
per-resource decision see them. The stored JSON is not changed. ``calaim-fhir reindex``
relabels the stored resources after the value sets change (``sql/reindex.py``, ``relabel``).

Default (``docs/security.md``, "Sensitive data"): substance-use disorder data under 42 CFR
Part 2 — ICD-10-CM F10–F16, F18, F19 (alcohol and drug use disorders; F17 nicotine is not
Part 2), the SNOMED CT disorders alcoholism, alcohol abuse and dependence, opioid abuse and
dependence, drug abuse and dependent drug abuse, and the HCPCS alcohol and/or drug services
codes H0004–H0007, H0010–H0020 (DMC-ODS services) — labelled ``v3-ActCode|42CFRPart2``
(policy), ``v3-ActCode|SUD`` (sensitivity) and ``v3-Confidentiality|R``. A plan configures
its own value sets and Part 2 programs (``settings.access_sensitivity``: a JSON file).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.search.rows import IndexRows

SECURITY = "_security"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
PART2 = (ACT_CODE, "42CFRPart2")
SUD = (ACT_CODE, "SUD")
RESTRICTED = (CONFIDENTIALITY, "R")
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
CODED_PARAMS = frozenset(
    {"code", "type", "category", "service-type", "reason-code", "product-or-service", "class"}
)


@dataclass(frozen=True)
class Sensitive:
    """One sensitive class: the codes that put a version in it (``system`` → codes; a code
    ending in ``*`` is a prefix), the Part 2 program Organizations, the labels it gets."""

    codes: dict[str, tuple[str, ...]]
    labels: tuple[tuple[str, str], ...]
    programs: tuple[str, ...] = ()

    def matches(self, rows: IndexRows) -> bool:
        for param, _grp, system, code in rows.token:
            if param not in CODED_PARAMS:
                continue
            for pattern in self.codes.get(system, ()):
                if code == pattern or (pattern.endswith("*") and code.startswith(pattern[:-1])):
                    return True
        if self.programs:
            programs = set(self.programs)
            return any(
                f"{row[2]}/{row[3]}" in programs for row in rows.reference if row[2]
            )
        return False


DEFAULT_SUD = Sensitive(
    codes={
        ICD10CM: tuple(f"F{n}*" for n in (10, 11, 12, 13, 14, 15, 16, 18, 19)),
        # the SNOMED CT disorders synthetic records (Synthea) code substance use with
        SNOMED: ("7200002", "5602001", "6525002", "66590003", "15167005", "75544000", "26416006"),
        HCPCS: ("H0004", "H0005", "H0006", "H0007", *(f"H00{n}" for n in range(10, 21))),
    },
    labels=(PART2, SUD, RESTRICTED),
)


@dataclass(frozen=True)
class Labeller:
    classes: tuple[Sensitive, ...] = field(default_factory=lambda: (DEFAULT_SUD,))

    def label(self, rows: IndexRows) -> None:
        """Add the labels of every sensitive class ``rows`` fall in as ``_security`` rows."""
        present = {(r[2], r[3]) for r in rows.token if r[0] == SECURITY}
        for sensitive in self.classes:
            if sensitive.matches(rows):
                for label in sensitive.labels:
                    if label not in present:
                        present.add(label)
                        rows.token.append((SECURITY, 0, *label))

    @classmethod
    def load(cls, path: str | None) -> Labeller:
        """The plan's sensitive classes from a JSON file: a list of objects with ``codes``
        (system → codes, ``*`` suffix: prefix), ``labels`` (``system|code``) and optional
        ``programs`` (``Organization/<id>``); None: the default."""
        if path is None:
            return cls()
        try:
            data: Any = json.loads(Path(path).read_text(encoding="utf-8"))
            classes = tuple(
                Sensitive(
                    codes={str(s): tuple(map(str, c)) for s, c in item["codes"].items()},
                    labels=tuple(_label(text) for text in item["labels"]),
                    programs=tuple(map(str, item.get("programs", ()))),
                )
                for item in data
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"sensitivity configuration {path}: {exc}") from exc
        return cls(classes)


def _label(text: str) -> tuple[str, str]:
    system, sep, code = str(text).partition("|")
    if not sep or not system or not code:
        raise ValueError(f"label {text!r} is not system|code")
    return system, code
