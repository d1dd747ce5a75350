"""Profile validation: our StructureDefinitions compiled once into checks on resource JSON.

``ProfileSet(structure_definitions, terminology)`` compiles every resource profile
(``derivation: constraint`` on an R4 resource type) and every extension definition
(``type: Extension``) from its ``differential`` alone; the base facts (elements, arrays,
datatypes, choice variants) come from the R4 JSON schema. A definition it cannot compile raises
:class:`ProfileError` naming the URL and the element id; nothing is skipped silently.

What is checked (details in the modules named):

* cardinality, choice types, slicing — :mod:`server.fhir.profile_checks`,
  :mod:`server.fhir.slicing`;
* fixed[x]/pattern[x], bindings, reference targets, invariants —
  :mod:`server.fhir.profile_rules` (invariants: :mod:`server.fhir.fhirpath`);
* our extensions wherever they occur, and their context —
  :mod:`server.fhir.extension_context`.

A profile whose ``baseDefinition`` is another of our profiles is checked against that
profile's rules too (issues name the profile whose rule failed). ``validate`` runs on
resources that passed base validation (:mod:`server.fhir.base_validation`) and returns every issue
(errors and warnings), never only the first. Diagnostics end with ``(profile <id>)`` or
``(extension <id>)``; expressions start at ``root`` (default: the resource type).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from server.fhir.element_paths import element_model
from server.fhir.extension_context import ExtensionDefinition, ExtensionWalk
from server.fhir.outcome import Issue
from server.fhir.profile_checks import CheckCompiler, ParentCheck
from server.fhir.profile_rules import Resolve, Run, TargetValidator
from server.fhir.profile_tree import BASE_TYPE_URL, ProfileError, build_tree

if TYPE_CHECKING:
    from server.fhir.terminology import Terminology

__all__ = ["ProfileError", "ProfileSet", "Resolve"]

#: how many verdicts of :meth:`ProfileSet.conforms` are remembered (the oldest go first)
VERDICTS_KEPT = 4096


@dataclass(frozen=True, slots=True)
class _Profile:
    url: str
    id: str
    type: str
    checks: tuple[ParentCheck, ...]  # this profile's and its base profiles' checks


def _bare(url: str) -> str:
    return url.partition("|")[0]


def _id(definition: Mapping[str, Any]) -> str:
    value = definition.get("id")
    return value if isinstance(value, str) else str(definition["url"]).rsplit("/", 1)[-1]


class ProfileSet(TargetValidator):
    """The compiled profiles and extension definitions (see the module docstring)."""

    def __init__(
        self, structure_definitions: Iterable[Mapping[str, Any]], terminology: Terminology
    ) -> None:
        self._model = element_model()
        self._terminology = terminology
        definitions: dict[str, Mapping[str, Any]] = {}
        for definition in structure_definitions:
            url = definition.get("url")
            if not isinstance(url, str):
                raise ProfileError(str(definition.get("id")), "a StructureDefinition needs a url")
            if url in definitions:
                raise ProfileError(url, "defined twice")
            definitions[url] = definition
        self._definitions = definitions
        self._types = {url: str(d.get("type")) for url, d in definitions.items()}
        self._profiles: dict[str, _Profile] = {}
        extensions: dict[str, ExtensionDefinition] = {}
        for url, definition in definitions.items():
            if definition.get("type") == "Extension":
                extensions[url] = self._extension(definition)
            else:
                self._profile(url, ())
        for url, definition in definitions.items():
            for element in definition.get("differential", {}).get("element", []):
                for t in element.get("type", []):
                    for named in t.get("profile", []) if t.get("code") == "Extension" else []:
                        if named.partition("|")[0] not in extensions:
                            raise ProfileError(
                                url, f"{element.get('id')}: unknown extension definition {named}"
                            )
        self._walk = ExtensionWalk(self._model, extensions)
        self._verdicts: dict[tuple[str, bytes], bool] = {}
        self._verdicts_lock = threading.Lock()

    # -- compiling -------------------------------------------------------------------------

    def _known(self, url: str) -> str | None:
        """The base type of one of our resource profiles (None for anything else)."""
        definition = self._definitions.get(url)
        if definition is None or definition.get("type") == "Extension":
            return None
        return self._types[url]

    def _chain(self, url: str, seen: tuple[str, ...]) -> list[Mapping[str, Any]]:
        """The differential elements of the profiles ``url`` derives from, farthest first."""
        definition = self._definitions[url]
        base = definition.get("baseDefinition")
        if not isinstance(base, str) or _bare(base) not in self._definitions:
            return []
        base = _bare(base)
        if base in seen:
            raise ProfileError(url, f"baseDefinition cycle through {base}")
        parent = self._definitions[base]
        if parent.get("type") != definition.get("type"):
            raise ProfileError(url, f"baseDefinition {base} constrains another type")
        elements = (parent.get("differential") or {}).get("element") or []
        return [*self._chain(base, (*seen, url)), *elements]

    def _profile(self, url: str, seen: tuple[str, ...]) -> _Profile:
        found = self._profiles.get(url)
        if found is not None:
            return found
        if url in seen:
            raise ProfileError(url, "baseDefinition cycle")
        definition = self._definitions[url]
        type = definition.get("type")
        if not isinstance(type, str) or type not in self._model.resources:
            raise ProfileError(url, f"type {type!r} is not an R4 resource type")
        if definition.get("derivation", "constraint") != "constraint":
            raise ProfileError(url, "only constraint profiles are supported")
        base = definition.get("baseDefinition")
        checks: tuple[ParentCheck, ...] = ()
        if isinstance(base, str) and _bare(base) in self._definitions:
            checks = self._profile(_bare(base), (*seen, url)).checks
        elif base is not None and base != BASE_TYPE_URL + type:
            raise ProfileError(url, f"unknown baseDefinition {base}")
        tree = build_tree(self._model, definition, self._chain(url, ()))
        compiler = CheckCompiler(
            self._model, self._terminology, self._known, url, _id(definition), "profile"
        )
        profile = _Profile(url, _id(definition), type, (*checks, compiler.root(tree)))
        self._profiles[url] = profile
        return profile

    def _extension(self, definition: Mapping[str, Any]) -> ExtensionDefinition:
        url = str(definition["url"])
        base = definition.get("baseDefinition", BASE_TYPE_URL + "Extension")
        if base != BASE_TYPE_URL + "Extension":
            raise ProfileError(url, f"an extension must derive from Extension, not {base}")
        elements: set[str] = set()
        extensions: set[str] = set()
        for context in definition.get("context") or []:
            kind, expression = context.get("type"), context.get("expression")
            if not isinstance(expression, str) or kind not in ("element", "extension"):
                raise ProfileError(url, f"context type {kind!r} is not supported")
            (elements if kind == "element" else extensions).add(expression)
        if not elements and not extensions:
            raise ProfileError(url, "an extension definition needs a context")
        tree = build_tree(self._model, definition)
        compiler = CheckCompiler(
            self._model, self._terminology, self._known, url, _id(definition), "extension"
        )
        return ExtensionDefinition(
            _id(definition), compiler.root(tree), frozenset(elements), frozenset(extensions)
        )

    # -- queries ---------------------------------------------------------------------------

    def knows(self, url: str) -> bool:
        """Whether ``url`` (``|version`` allowed) is one of the compiled resource profiles."""
        bare, _, version = url.partition("|")
        definition = self._definitions.get(bare)
        if bare not in self._profiles or definition is None:
            return False
        return not version or definition.get("version") in (None, version)

    def base_type(self, url: str) -> str | None:
        """The resource type the profile ``url`` constrains, or None when not known."""
        profile = self._profiles.get(_bare(url))
        return None if profile is None else profile.type

    def conforms(self, resource: dict[str, Any], url: str) -> bool:
        """Whether ``resource`` meets the profile without errors (no reference resolution).

        Without resolution the verdict depends only on the resource's content and the profile,
        both fixed, so it is remembered by a digest of the content: the members, consents and
        referrals that new resources reference are checked once, not on every write that names
        them."""
        try:
            content = orjson.dumps(resource)
        except orjson.JSONEncodeError:  # not JSON data (built in code): judged, not remembered
            return self._judge(resource, url)
        key = (_bare(url), hashlib.blake2b(content, digest_size=16).digest())
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._judge(resource, url)
            with self._verdicts_lock:
                if len(self._verdicts) >= VERDICTS_KEPT:
                    del self._verdicts[next(iter(self._verdicts))]
                self._verdicts[key] = verdict
        return verdict

    def _judge(self, resource: dict[str, Any], url: str) -> bool:
        issues = self.validate(resource, url, resolve=None)
        return not any(i.severity in ("error", "fatal") for i in issues)

    def validate(
        self,
        resource: dict[str, Any],
        url: str,
        *,
        root: str | None = None,
        resolve: Resolve | None = None,
    ) -> list[Issue]:
        """Every issue of ``resource`` against the profile ``url`` (errors and warnings).

        ``resolve`` maps a reference string to its target (None: not resolvable here); without
        it, reference rules check only what the reference string shows. Raises ``KeyError``
        for a profile that is not known (see :meth:`knows`).
        """
        profile = self._profiles.get(_bare(url))
        if profile is None:
            raise KeyError(url)
        where = root or profile.type
        kind = resource.get("resourceType")
        if kind != profile.type:
            message = f"profile {profile.id} constrains {profile.type}, not {kind}"
            return [Issue("error", "structure", message, where)]
        run = Run(resource, resolve, [], self)
        for check in profile.checks:
            check(resource, where, run)
        self._walk.check(resource, where, run)
        return run.issues
