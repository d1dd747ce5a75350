"""Local terminology: the CodeSystems and ValueSets of ``profiles/``, expanded in memory.

Supported ValueSet ``compose`` forms (and nothing else: a ValueSet using another form cannot be
expanded and is reported as unknown): ``include``/``exclude`` with a ``system`` and an
enumerated ``concept`` list, a whole local CodeSystem (``system`` alone), the filters
``concept is-a <code>`` and ``concept descendent-of <code>`` on a local CodeSystem's
hierarchy (nested ``concept`` elements), and ``valueSet`` references to other local ValueSets.

Search uses ``expand`` for the token modifiers ``:in``/``:not-in`` (a ValueSet or CodeSystem URL)
and ``:above``/``:below`` (``<system>?above=<code>``, ``<system>?below=<code>``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import orjson

PROFILES = Path(__file__).resolve().parents[2] / "profiles"

Code = tuple[str, str]  # (system, code)


class Terminology:
    def __init__(
        self, codesystems: Iterable[Mapping[str, Any]], valuesets: Iterable[Mapping[str, Any]]
    ):
        # system -> {code: parent codes}
        self._parents: dict[str, dict[str, set[str]]] = {}
        for cs in codesystems:
            parents: dict[str, set[str]] = {}
            self._walk(cs.get("concept", []), None, parents)
            self._parents[cs["url"]] = parents
        self._valuesets = {vs["url"]: vs for vs in valuesets}

    @staticmethod
    def _walk(concepts: Any, parent: str | None, out: dict[str, set[str]]) -> None:
        for concept in concepts if isinstance(concepts, list) else []:
            code = concept.get("code")
            if not isinstance(code, str):
                continue
            out.setdefault(code, set())
            if parent is not None:
                out[code].add(parent)
            Terminology._walk(concept.get("concept", []), code, out)

    # -- hierarchy ---------------------------------------------------------------------------

    def _descendants(self, system: str, code: str) -> set[str] | None:
        parents = self._parents.get(system)
        if parents is None or code not in parents:
            return None
        found = {code}
        changed = True
        while changed:
            changed = False
            for child, ups in parents.items():
                if child not in found and ups & found:
                    found.add(child)
                    changed = True
        return found

    def _ancestors(self, system: str, code: str) -> set[str] | None:
        parents = self._parents.get(system)
        if parents is None or code not in parents:
            return None
        found, todo = {code}, [code]
        while todo:
            for up in parents.get(todo.pop(), ()):
                if up not in found:
                    found.add(up)
                    todo.append(up)
        return found

    # -- expansion ---------------------------------------------------------------------------

    def _include(self, part: Mapping[str, Any], seen: frozenset[str]) -> set[Code] | None:
        system = part.get("system")
        codes: set[Code] | None = None
        if isinstance(system, str):
            if "concept" in part:
                codes = {(system, c["code"]) for c in part["concept"] if "code" in c}
            elif part.get("filter"):
                codes = set()
                for i, f in enumerate(part["filter"]):
                    if f.get("property") != "concept" or f.get("op") not in (
                        "is-a",
                        "descendent-of",
                    ):
                        return None
                    found = self._descendants(system, f.get("value", ""))
                    if found is None:
                        return None
                    if f["op"] == "descendent-of":
                        found.discard(f["value"])
                    got = {(system, c) for c in found}
                    codes = got if i == 0 else codes & got
            elif system in self._parents:
                codes = {(system, c) for c in self._parents[system]}
            else:
                return None
        for ref in part.get("valueSet", []):
            sub = self._expand_valueset(ref.split("|")[0], seen)
            if sub is None:
                return None
            codes = sub if codes is None else codes & sub
        return codes

    def _expand_valueset(self, url: str, seen: frozenset[str]) -> set[Code] | None:
        vs = self._valuesets.get(url)
        if vs is None or url in seen or "compose" not in vs:
            return None
        seen = seen | {url}
        codes: set[Code] = set()
        for part in vs["compose"].get("include", []):
            got = self._include(part, seen)
            if got is None:
                return None
            codes |= got
        for part in vs["compose"].get("exclude", []):
            got = self._include(part, seen)
            if got is None:
                return None
            codes -= got
        return codes

    def expand(self, url: str) -> frozenset[Code] | None:
        """The codes ``url`` stands for, or None when it is not known or not expandable."""
        base, _, query = url.partition("?")
        if query:
            relation, _, code = query.partition("=")
            if relation == "above":
                found = self._ancestors(base, code)
            elif relation == "below":
                found = self._descendants(base, code)
            else:
                return None
            return None if found is None else frozenset((base, c) for c in found)
        if base in self._parents:
            return frozenset((base, c) for c in self._parents[base])
        codes = self._expand_valueset(base.split("|")[0], frozenset())
        return None if codes is None else frozenset(codes)


def _load(directory: Path, type: str) -> list[dict[str, Any]]:
    if not directory.is_dir():
        return []
    out = []
    for path in sorted(directory.glob(f"{type}-*.json")):
        resource = orjson.loads(path.read_bytes())
        if resource.get("resourceType") == type and isinstance(resource.get("url"), str):
            out.append(resource)
    return out


@cache
def local_terminology(profiles: Path = PROFILES) -> Terminology:
    return Terminology(
        _load(profiles / "codesystems", "CodeSystem"), _load(profiles / "valuesets", "ValueSet")
    )
