"""In-memory terminology: CodeSystems, ValueSets and ConceptMaps, expanded and queried locally.

A :class:`Terminology` holds the CodeSystems, ValueSets and ConceptMaps it is given (the
artifacts of ``profiles/`` and, when passed in, the vendored R4 base terminology of
``data/r4-terminology.json``, both read by :mod:`server.fhir.conformance`); nothing is fetched.
Canonical URLs may carry ``|version``: the version must then equal the artifact's ``version``
(an artifact without one matches any).

Supported ValueSet ``compose`` forms (and nothing else: a ValueSet using another form cannot be
expanded and is reported as unknown): ``include``/``exclude`` with a ``system`` and an
enumerated ``concept`` list, a whole CodeSystem (``system`` alone; only when the CodeSystem is
known here with ``content`` ``complete``), the filters ``concept is-a <code>`` and
``concept descendent-of <code>`` on a known CodeSystem's hierarchy, and ``valueSet`` references
to other known ValueSets (intersected with the ``system`` part when both are given).
CodeSystem hierarchies come from nested ``concept`` elements and from the ``parent`` /
``subsumedBy`` concept properties.

Search uses :meth:`Terminology.expand` for the token modifiers ``:in``/``:not-in``/``:above``/
``:below``; the terminology operations (:mod:`server.operations.terminology`) use the rest.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

Code = tuple[str, str]  # (system, code)
Expansion = dict[Code, str | None]  # ordered (system, code) -> display
Resource = dict[str, Any]

_PARENT_PROPERTIES = ("parent", "subsumedBy")
_UNSUCCESSFUL = {"unmatched", "disjoint"}


class _CodeSystem:
    """One CodeSystem, indexed: concepts by code, parents and children in definition order."""

    def __init__(self, resource: Mapping[str, Any]) -> None:
        self.resource: Resource = dict(resource)
        self.url: str = resource["url"]
        self.complete = resource.get("content", "complete") == "complete"
        self.concepts: dict[str, Resource] = {}
        self.parents: dict[str, list[str]] = {}
        self.children: dict[str, list[str]] = {}
        self._walk(resource.get("concept"), None)
        for code, concept in self.concepts.items():
            for up in _parent_codes(concept):
                self._link(up, code)

    def _walk(self, concepts: Any, parent: str | None) -> None:
        for concept in concepts if isinstance(concepts, list) else []:
            code = concept.get("code") if isinstance(concept, dict) else None
            if not isinstance(code, str):
                continue
            self.concepts.setdefault(code, concept)
            self.parents.setdefault(code, [])
            self.children.setdefault(code, [])
            if parent is not None:
                self._link(parent, code)
            self._walk(concept.get("concept"), code)

    def _link(self, parent: str, child: str) -> None:
        if parent not in self.parents[child]:
            self.parents[child].append(parent)
        if child not in self.children.setdefault(parent, []):
            self.children[parent].append(child)

    def closure(self, code: str, edges: dict[str, list[str]]) -> list[str] | None:
        """``code`` and every code reachable through ``edges`` (parents or children)."""
        if code not in self.concepts:
            return None
        found, todo = {code: None}, [code]
        while todo:
            for nxt in edges.get(todo.pop(), []):
                if nxt not in found:
                    found[nxt] = None
                    todo.append(nxt)
        return [c for c in self.concepts if c in found]  # definition order

    def display(self, code: str) -> str | None:
        shown = self.concepts.get(code, {}).get("display")
        return shown if isinstance(shown, str) else None


def _parent_codes(concept: Mapping[str, Any]) -> list[str]:
    props = concept.get("property", [])
    return [
        p["valueCode"] for p in props if p.get("code") in _PARENT_PROPERTIES and "valueCode" in p
    ]


def _scope(cm: Mapping[str, Any], side: str, wanted: str | None) -> bool:
    value = cm.get(f"{side}Uri") or cm.get(f"{side}Canonical")
    return wanted is None or (isinstance(value, str) and _split(value)[0] == _split(wanted)[0])


def _split(url: str) -> tuple[str, str]:
    base, _, version = url.partition("|")
    return base, version


def _attribute(d: Mapping[str, Any]) -> Resource:
    """A ConceptMap ``dependsOn`` / ``product`` item as ``{"element", "concept"}``."""
    concept = _coding(d.get("system"), d.get("value", ""), d.get("display"))
    return {"element": d.get("property"), "concept": concept}


def _coding(system: str | None, code: str, display: str | None) -> Resource:
    return {k: v for k, v in (("system", system), ("code", code), ("display", display)) if v}


class Terminology:
    """Local CodeSystems, ValueSets and ConceptMaps; later artifacts replace earlier ones of
    the same URL (so local artifacts passed after the vendored base ones win)."""

    def __init__(
        self,
        codesystems: Iterable[Mapping[str, Any]],
        valuesets: Iterable[Mapping[str, Any]],
        conceptmaps: Iterable[Mapping[str, Any]] = (),
    ):
        self._codesystems = {cs["url"]: _CodeSystem(cs) for cs in codesystems}
        self._valuesets: dict[str, Resource] = {vs["url"]: dict(vs) for vs in valuesets}
        self._conceptmaps: dict[str, Resource] = {cm["url"]: dict(cm) for cm in conceptmaps}

    # -- accessors ---------------------------------------------------------------------------

    @staticmethod
    def _pick(table: Mapping[str, Any], url: str) -> Any:
        base, version = _split(url)
        found = table.get(base)
        if found is None:
            return None
        have = (found.resource if isinstance(found, _CodeSystem) else found).get("version")
        return found if not version or have in (None, version) else None

    def valueset(self, url: str) -> Resource | None:
        """The ValueSet with canonical ``url`` (``url|version`` accepted), or None."""
        found: Resource | None = self._pick(self._valuesets, url)
        return found

    def codesystem(self, url: str) -> Resource | None:
        """The CodeSystem with canonical ``url`` (``url|version`` accepted), or None."""
        found: _CodeSystem | None = self._pick(self._codesystems, url)
        return None if found is None else found.resource

    def conceptmap(self, url: str) -> Resource | None:
        """The ConceptMap with canonical ``url`` (``url|version`` accepted), or None."""
        found: Resource | None = self._pick(self._conceptmaps, url)
        return found

    def _cs(self, url: str) -> _CodeSystem | None:
        found: _CodeSystem | None = self._pick(self._codesystems, url)
        return found

    # -- expansion ---------------------------------------------------------------------------

    def _include(self, part: Mapping[str, Any], seen: frozenset[str]) -> Expansion | None:
        system = part.get("system")
        codes: Expansion | None = None
        if isinstance(system, str):
            cs = self._cs(system)
            if "concept" in part:
                codes = {}
                for c in part["concept"]:
                    if isinstance(c.get("code"), str):
                        shown = c.get("display") or (cs.display(c["code"]) if cs else None)
                        codes[(system, c["code"])] = shown
            elif part.get("filter"):
                if cs is None:
                    return None
                kept: list[str] | None = None
                for f in part["filter"]:
                    op = f.get("op")
                    if f.get("property") != "concept" or op not in ("is-a", "descendent-of"):
                        return None
                    found = cs.closure(f.get("value", ""), cs.children)
                    if found is None:
                        return None
                    if op == "descendent-of":
                        found = [c for c in found if c != f["value"]]
                    kept = found if kept is None else [c for c in kept if c in set(found)]
                codes = {(system, c): cs.display(c) for c in kept or []}
            elif cs is not None and cs.complete:
                codes = {(system, c): cs.display(c) for c in cs.concepts}
            else:
                return None
        for ref in part.get("valueSet", []):
            sub = self._expand_valueset(self.valueset(ref), seen)
            if sub is None:
                return None
            codes = sub if codes is None else {k: v for k, v in codes.items() if k in sub}
        return codes

    def _expand_valueset(
        self, vs: Mapping[str, Any] | None, seen: frozenset[str]
    ) -> Expansion | None:
        url = str(vs.get("url") or id(vs)) if vs is not None else ""
        if vs is None or url in seen or "compose" not in vs:
            return None
        seen = seen | {url}
        codes: Expansion = {}
        for part in vs["compose"].get("include", []):
            got = self._include(part, seen)
            if got is None:
                return None
            for key, shown in got.items():
                codes.setdefault(key, shown)
        for part in vs["compose"].get("exclude", []):
            got = self._include(part, seen)
            if got is None:
                return None
            codes = {k: v for k, v in codes.items() if k not in got}
        return codes

    def _resolve(self, valueset: str | Mapping[str, Any]) -> Expansion | None:
        """The ordered expansion of a ValueSet (url or resource) or of a whole CodeSystem url."""
        vs: Mapping[str, Any] | None = None
        cs: _CodeSystem | None = None
        if isinstance(valueset, str):
            vs, cs = self.valueset(valueset), self._cs(valueset)
        elif valueset.get("resourceType") == "CodeSystem":
            cs = self._cs(valueset.get("url", "")) or _CodeSystem(valueset)
        else:
            vs = valueset
        if vs is not None or cs is None or not cs.complete:
            return self._expand_valueset(vs, frozenset())
        return {(cs.url, c): cs.display(c) for c in cs.concepts}

    def expand(self, url: str) -> frozenset[Code] | None:
        """The codes ``url`` stands for, or None when it is not known or not expandable.

        ``url`` is a ValueSet URL, a CodeSystem URL (all its codes; only ``content: complete``
        CodeSystems), or ``<system>?above=<code>`` / ``<system>?below=<code>`` (the code with its
        ancestors / descendants in the CodeSystem's hierarchy).
        """
        base, _, query = url.partition("?")
        if query:
            relation, _, code = query.partition("=")
            cs = self._cs(base)
            if cs is None or relation not in ("above", "below"):
                return None
            found = cs.closure(code, cs.parents if relation == "above" else cs.children)
            return None if found is None else frozenset((cs.url, c) for c in found)
        codes = self._resolve(base)
        return None if codes is None else frozenset(codes)

    def expansion(
        self,
        valueset: str | Mapping[str, Any],
        *,
        filter: str | None = None,
        offset: int = 0,
        count: int | None = None,
        include_designations: bool = False,
        include_definition: bool = False,
    ) -> Resource | None:
        """The ValueSet (url or resource) with an ``expansion``, or None if it cannot be expanded.

        ``filter``: keep the codes whose code or display contains it (case-insensitive);
        ``total`` counts the filtered codes, ``offset``/``count`` page ``contains``.
        ``compose`` is kept only with ``include_definition``; narrative ``text`` is dropped.
        Each ``contains`` item has ``system``, ``code``, ``display`` (the ValueSet's, else the
        CodeSystem's) and the CodeSystem ``version`` when known (designations on request).
        """
        vs = self.valueset(valueset) if isinstance(valueset, str) else valueset
        if vs is None or vs.get("resourceType", "ValueSet") != "ValueSet":
            return None
        codes = self._expand_valueset(vs, frozenset())
        if codes is None:
            return None
        needle = (filter or "").casefold()
        items = [(k, v) for k, v in codes.items() if needle in f"{k[1]}\n{v or ''}".casefold()]
        page = items[offset:] if count is None else items[offset : offset + count]
        contains = []
        for (system, code), shown in page:
            cs = self._cs(system)
            concept = cs.concepts.get(code, {}) if cs and include_designations else {}
            version = cs.resource.get("version") if cs else None
            entry = dict(system=system, version=version, code=code, display=shown)
            entry["designation"] = concept.get("designation")
            contains.append({k: v for k, v in entry.items() if v})
        given = [("filter", "valueString", filter), ("offset", "valueInteger", offset or None)]
        given.append(("count", "valueInteger", count))
        parameter = [{"name": n, key: v} for n, key, v in given if v is not None and v != ""]
        expansion: Resource = {
            "identifier": f"urn:uuid:{uuid.uuid4()}",
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "total": len(items),
            "offset": offset,
        }
        expansion.update({"parameter": parameter} if parameter else {})
        expansion.update({"contains": contains} if contains else {})
        dropped = ("text", "expansion") if include_definition else ("text", "expansion", "compose")
        out = {"resourceType": "ValueSet", **{k: v for k, v in vs.items() if k not in dropped}}
        return {**out, "expansion": expansion}

    # -- lookup and validation ---------------------------------------------------------------

    def lookup(self, system: str, code: str, version: str | None = None) -> Resource | None:
        """What the CodeSystem ``system`` says about ``code``, or None (unknown system or code).

        Keys: ``name`` (CodeSystem name, title or url), ``version``, ``display``, ``definition``,
        ``designation`` (the concept's designations as in the CodeSystem), ``property`` (the
        concept's properties, each ``{"code", "value<Type>"}``), ``parent`` and ``child``
        (codes, from the hierarchy); keys without a value are left out.
        """
        cs = self._cs(f"{system}|{version}" if version else system)
        concept = cs.concepts.get(code) if cs else None
        if cs is None or concept is None:
            return None
        res, props = cs.resource, concept.get("property", [])
        out = {"name": res.get("name") or res.get("title") or cs.url, "version": res.get("version")}
        out |= {k: concept.get(k) for k in ("display", "definition", "designation")}
        out["property"] = [p for p in props if p.get("code") not in _PARENT_PROPERTIES]
        out |= {"parent": cs.parents.get(code), "child": cs.children.get(code)}
        return {k: v for k, v in out.items() if v}

    def _displays(self, system: str, code: str, given: str | None) -> list[str]:
        cs = self._cs(system)
        concept = cs.concepts.get(code) if cs else None
        shown = [given] if given else []
        if concept:
            shown += [concept["display"]] if concept.get("display") else []
            shown += [d["value"] for d in concept.get("designation", []) if d.get("value")]
        return shown

    def validate_code(
        self,
        url: str | Mapping[str, Any],
        *,
        code: str | None = None,
        system: str | None = None,
        display: str | None = None,
        coding: Mapping[str, Any] | None = None,
        codeable_concept: Mapping[str, Any] | None = None,
    ) -> Resource | None:
        """Whether a code is in a ValueSet or CodeSystem; None if ``url`` is unknown/unexpandable.

        ``url``: a ValueSet URL, a CodeSystem URL (used when no ValueSet has it), or an inline
        ValueSet / CodeSystem resource. The code is given as ``code`` (+ ``system``,
        ``display``), a ``coding`` or a ``codeable_concept`` (valid when any of its codings is).
        A code without a system matches a code of that value in any system of the set.
        Returns ``{"result": bool, "message"?: str, "display"?: str}``: ``display`` is the
        preferred display of the matched code; a ``display`` that is neither the code's display
        nor one of its designations leaves ``result`` true and adds a warning ``message``.
        """
        codes = self._resolve(url)
        if codes is None:
            return None
        label = url if isinstance(url, str) else str(url.get("url") or "the given value set")
        candidates: list[Mapping[str, Any]] = []
        if code is not None:
            candidates.append({"system": system, "code": code, "display": display})
        if coding is not None:
            candidates.append(coding)
        if codeable_concept is not None:
            candidates += [c for c in codeable_concept.get("coding", []) if isinstance(c, dict)]
        if not candidates:
            return {"result": False, "message": "no code was given"}
        problems: list[str] = []
        for cand in candidates:
            got_code, got_system = cand.get("code"), cand.get("system")
            matched = [k for k in codes if k[1] == got_code and got_system in (None, k[0])]
            shown = f"{got_system}|{got_code}" if got_system else f"'{got_code}'"
            if len(matched) != 1:
                many = f"is in several systems of {label}; give its system"
                problems.append(f"the code {shown} {many if matched else f'is not in {label}'}")
                continue
            key, given = matched[0], cand.get("display")
            preferred = codes[key] or next(iter(self._displays(*key, None)), None)
            valid = {d.casefold() for d in self._displays(*key, codes[key])}
            message = None
            if given and valid and given.casefold() not in valid:
                expected = f"; expected '{preferred}'" if preferred else ""
                message = f"warning: '{given}' is not a display of {key[0]}|{key[1]}{expected}"
            out = {"result": True, "display": preferred, "message": message}
            return {k: v for k, v in out.items() if v is not None}
        return {"result": False, "message": "; ".join(problems)}

    # -- translation -------------------------------------------------------------------------

    def translate(
        self,
        url: str | Mapping[str, Any] | None,
        *,
        system: str | None,
        code: str,
        source: str | None = None,
        target: str | None = None,
        target_system: str | None = None,
    ) -> list[Resource] | None:
        """The matches of ``system|code`` in ConceptMaps, or None when ``url`` is unknown.

        ``url``: a ConceptMap URL or resource; when None, every known ConceptMap whose source /
        target scope equals ``source`` / ``target`` (ValueSet URLs; None = any) is used.
        ``target_system`` keeps only groups mapping to that system. Each match:
        ``equivalence``, ``concept`` (Coding), ``source`` (ConceptMap url), and ``product`` /
        ``dependsOn`` (lists of ``{"element": property uri, "concept": Coding}``) when the map
        has them. Group ``unmapped`` (``provided``, ``fixed``, ``other-map``) applies when no
        element of the group maps the code.
        """
        if url is not None:
            found = self.conceptmap(url) if isinstance(url, str) else dict(url)
            maps = [] if found is None else [found]
        else:
            maps = [
                cm
                for cm in self._conceptmaps.values()
                if _scope(cm, "source", source) and _scope(cm, "target", target)
            ]
        if url is not None and not maps:
            return None
        out: list[Resource] = []
        for cm in maps:
            out += self._translate(cm, system, code, target_system, frozenset())
        return out

    def _translate(
        self,
        cm: Mapping[str, Any],
        system: str | None,
        code: str,
        to: str | None,
        seen: frozenset[str],
    ) -> list[Resource]:
        out: list[Resource] = []
        url = str(cm.get("url", ""))
        for group in cm.get("group", []):
            dst = group.get("target")
            if system not in (None, group.get("source", system)) or to not in (None, dst):
                continue
            elements = [e for e in group.get("element", []) if e.get("code") == code]
            found = [t for e in elements for t in e.get("target", [])]
            for tgt in found:
                equivalence = tgt.get("equivalence", "equivalent")
                match: Resource = {"equivalence": equivalence, "source": url}
                if tgt.get("code"):
                    match["concept"] = _coding(dst, tgt["code"], tgt.get("display"))
                for key in ("product", "dependsOn"):
                    if tgt.get(key):
                        match[key] = [_attribute(d) for d in tgt[key]]
                out.append(match)
            unmapped = group.get("unmapped")
            mode = unmapped.get("mode") if isinstance(unmapped, dict) and not found else None
            if mode == "provided":
                out.append(
                    {"equivalence": "equal", "concept": _coding(dst, code, None), "source": url}
                )
            elif mode == "fixed" and unmapped.get("code"):
                concept = _coding(dst, unmapped["code"], unmapped.get("display"))
                out.append({"equivalence": "inexact", "concept": concept, "source": url})
            elif mode == "other-map" and _split(str(unmapped.get("url")))[0] not in seen | {url}:
                other = self.conceptmap(str(unmapped.get("url")))
                if other is not None:
                    out += self._translate(other, system, code, to, seen | {url})
        return out

    @staticmethod
    def successful(matches: Iterable[Mapping[str, Any]]) -> bool:
        """``$translate`` result: some match is neither ``unmatched`` nor ``disjoint``."""
        return any(m.get("equivalence") not in _UNSUCCESSFUL for m in matches)
