"""The conformance resources the server knows, keyed by type/id and by canonical URL.

Sources, loaded once per process and never written at run time:

* ``profiles/`` (the ``calaim.fhir.ecm`` package, ``definitions.PROFILES``):
  ``structuredefinitions/``, ``extensions/``, ``codesystems/``, ``valuesets/``,
  ``conceptmaps/``, ``searchparameters/``, ``operations/``; one artifact per file, named
  ``<ResourceType>-<id>.json``;
* the vendored HL7 R4 definitions (:mod:`server.fhir.definitions`): the base SearchParameters
  and the ValueSets / CodeSystems of the core required bindings.

This module is the one reader of conformance folders: the SearchParameter registry
(``read_folder``) and the terminology of a folder (``load_terminology``) use it too.

A file whose name, ``resourceType``, ``id`` or ``url`` disagree, or two artifacts sharing a
``url`` or a type/id, stop start-up with :class:`ConformanceError`: a definition the server
would silently ignore or shadow is a defect of the package.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from server.fhir.definitions import PROFILES, r4_search_parameters, r4_terminology
from server.fhir.terminology import Terminology

CANONICAL_BASE = "http://calaim-fhir.org/fhir"

# folder of profiles/ -> the resource type its files hold
FOLDERS: dict[str, str] = {
    "structuredefinitions": "StructureDefinition",
    "extensions": "StructureDefinition",
    "codesystems": "CodeSystem",
    "valuesets": "ValueSet",
    "conceptmaps": "ConceptMap",
    "searchparameters": "SearchParameter",
    "operations": "OperationDefinition",
}
CONFORMANCE_TYPES = frozenset(FOLDERS.values())
TERMINOLOGY_TYPES = ("CodeSystem", "ValueSet", "ConceptMap")


class ConformanceError(Exception):
    """A conformance file that cannot be loaded as it is."""


@dataclass
class Conformance:
    """Every conformance resource the server serves, read-only."""

    resources: list[dict[str, Any]]
    package: dict[str, Any] = field(default_factory=dict)
    published: frozenset[tuple[str, str]] = frozenset()  # type/id of the package's artifacts
    _by_key: dict[tuple[str, str], dict[str, Any]] = field(init=False, repr=False)
    _by_url: dict[str, dict[str, Any]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_key = {}
        self._by_url = {}
        for resource in self.resources:
            key = (resource["resourceType"], resource["id"])
            if key in self._by_key:
                raise ConformanceError(f"two artifacts are {key[0]}/{key[1]}")
            self._by_key[key] = resource
            url = resource.get("url")
            if isinstance(url, str):
                if url in self._by_url:
                    raise ConformanceError(f"two artifacts have the url {url}")
                self._by_url[url] = resource

    def resource(self, type: str, id: str) -> dict[str, Any] | None:
        return self._by_key.get((type, id))

    def by_url(self, url: str, type: str | None = None) -> dict[str, Any] | None:
        """The artifact with canonical ``url`` (``url|version`` must match its version)."""
        base, _, version = url.partition("|")
        found = self._by_url.get(base)
        if found is None or (type is not None and found["resourceType"] != type):
            return None
        if version and found.get("version") != version:
            return None
        return found

    def of_type(self, type: str) -> Iterator[dict[str, Any]]:
        return (r for r in self.resources if r["resourceType"] == type)

    def local(self, type: str) -> list[dict[str, Any]]:
        """The artifacts of ``type`` the package (``profiles/``) holds, not the R4 base ones."""
        return [r for r in self.of_type(type) if (type, r["id"]) in self.published]

    @property
    def terminology(self) -> Terminology:
        return _terminology(id(self), self)


_TERMINOLOGY: dict[int, Terminology] = {}


def _terminology(key: int, conformance: Conformance) -> Terminology:
    found = _TERMINOLOGY.get(key)
    if found is None:
        found = _terminology_of(conformance.resources)
        _TERMINOLOGY[key] = found
    return found


def _terminology_of(resources: list[dict[str, Any]]) -> Terminology:
    codesystems, valuesets, conceptmaps = (
        [r for r in resources if r["resourceType"] == type] for type in TERMINOLOGY_TYPES
    )
    return Terminology(codesystems, valuesets, conceptmaps)


def read_folder(folder: Path, type: str, *, checked: bool = True) -> list[dict[str, Any]]:
    """The artifacts of ``type`` in a conformance folder (``*.json``; none when it does not
    exist). ``checked``: each file name, ``id`` and ``url`` must agree (the package's rules,
    for ``profiles/`` and custom SearchParameter folders); unchecked (a folder of terminology
    written by hand) only a ``url`` is required."""
    out: list[dict[str, Any]] = []
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.json")):
        try:
            resource = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise ConformanceError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(resource, dict) or resource.get("resourceType") != type:
            raise ConformanceError(f"{path}: expected a {type}")
        url = resource.get("url")
        if not checked:
            if not isinstance(url, str):
                raise ConformanceError(f"{path}: a {type} needs a url")
            out.append(resource)
            continue
        id = resource.get("id")
        if path.name != f"{type}-{id}.json":
            raise ConformanceError(f"{path}: the file name must be {type}-{id}.json")
        if not isinstance(url, str) or not url.endswith(f"/{type}/{id}"):
            raise ConformanceError(f"{path}: url must end with /{type}/{id}")
        out.append(resource)
    return out


def _r4_definitions() -> list[dict[str, Any]]:
    return [*r4_terminology(), *r4_search_parameters()]


def _without_shadowed(
    local: list[dict[str, Any]], base: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``local`` and the ``base`` artifacts whose URL no local one has (the local one wins)."""
    urls = {r.get("url") for r in local}
    return [*local, *(r for r in base if r.get("url") not in urls)]


def load_conformance(profiles: Path = PROFILES, *, with_r4: bool = True) -> Conformance:
    """Read ``profiles`` (and, unless ``with_r4`` is False, the vendored R4 definitions)."""
    resources: list[dict[str, Any]] = []
    for folder, type in FOLDERS.items():
        resources += read_folder(profiles / folder, type)
    published = frozenset((r["resourceType"], r["id"]) for r in resources)
    if with_r4:
        resources = _without_shadowed(resources, _r4_definitions())
    package_file = profiles / "package.json"
    package = orjson.loads(package_file.read_bytes()) if package_file.exists() else {}
    return Conformance(resources, package, published)


@cache
def conformance(profiles: Path = PROFILES) -> Conformance:
    """The process-wide :class:`Conformance` of ``profiles``."""
    return load_conformance(profiles)


def load_terminology(profiles: Path = PROFILES, *, with_r4: bool = True) -> Terminology:
    """The CodeSystems, ValueSets and ConceptMaps of a ``profiles``-shaped folder (its
    ``codesystems/``, ``valuesets/``, ``conceptmaps/``; file names unchecked) and, unless
    ``with_r4`` is False, the vendored R4 base terminology (the folder's win on the same URL).
    The server's own is ``conformance().terminology``."""
    resources = [
        r for folder, type in FOLDERS.items() if type in TERMINOLOGY_TYPES
        for r in read_folder(profiles / folder, type, checked=False)
    ]  # fmt: skip
    if with_r4:
        resources = _without_shadowed(resources, list(r4_terminology()))
    return _terminology_of(resources)
