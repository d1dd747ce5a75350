"""FHIR references: the one reader of a reference string (R4 2.3.0 "Literal references").

:func:`parse_reference` reads the text of ``Reference.reference`` (and of a reference-like
``uri``/``canonical`` value) into a :class:`Reference`:

* relative ``Type/id`` and ``Type/id/_history/vid``: local, typed, with the version if given;
* absolute ``<service base>/Type/id[/_history/vid]``: local when the base is this server's
  (``base``), else an absolute ``url`` that still shows its ``type``/``id``/``version``;
* any other absolute URI (``urn:uuid:``, ``urn:oid:``, ``http(s)://`` that do not end in
  ``Type/id``): the ``url``; an ``http(s)`` URL's ``|version`` (a canonical reference) is split
  off into ``canonical_version``;
* contained ``#id`` (``#`` alone: the containing resource): ``contained`` is the id (``""``);
* a bare ``id`` (a search value): local, without a type.

A type is a name of the FHIR type syntax (``[A-Z][A-Za-z]*``; whether the server knows it is
the caller's question) and an id or version follows the FHIR id syntax (1-64 of
``A-Z a-z 0-9 - .``). Anything else (spaces, ``Type/``, ``a/b/c``, a search URL) is None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ID = re.compile(r"[A-Za-z0-9\-.]{1,64}", re.ASCII)
_TYPE = re.compile(r"[A-Z][A-Za-z]{0,63}", re.ASCII)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:", re.ASCII)
_SPACE = re.compile(r"\s")
_HISTORY = "_history"


@dataclass(frozen=True, slots=True)
class Reference:
    """One parsed reference; see the module docstring for which fields each form sets."""

    type: str | None = None
    id: str | None = None
    version: str | None = None  # ``_history/<version>``
    url: str | None = None  # an absolute reference, without a canonical ``|version``
    canonical_version: str | None = None
    contained: str | None = None  # ``#id`` -> ``id``
    local: bool = False  # relative, a bare id, or under this server's base

    @property
    def target(self) -> tuple[str, str] | None:
        """``(type, id)`` of a typed reference to a resource of this server, else None."""
        if self.local and self.type is not None and self.id is not None:
            return self.type, self.id
        return None


def _restful(parts: list[str]) -> tuple[str, str, str | None] | None:
    """``(type, id, version)`` of path segments ending in ``Type/id[/_history/vid]``."""
    if len(parts) >= 4 and parts[-2] == _HISTORY:
        version: str | None = parts[-1]
        if not ID.fullmatch(parts[-1]):
            return None
        type, id = parts[-4], parts[-3]
    elif len(parts) >= 2:
        version = None
        type, id = parts[-2], parts[-1]
    else:
        return None
    if _TYPE.fullmatch(type) and ID.fullmatch(id):
        return type, id, version
    return None


def _relative(path: str) -> Reference | None:
    parts = path.split("/")
    if len(parts) == 1:
        return Reference(id=path, local=True) if ID.fullmatch(path) else None
    if len(parts) != 2 and not (len(parts) == 4 and parts[2] == _HISTORY):
        return None
    found = _restful(parts)
    if found is None:
        return None
    return Reference(found[0], found[1], found[2], local=True)


def parse_reference(text: str, base: str | None = None) -> Reference | None:
    """``text`` read as a reference (``base``: this server's FHIR base URL, with or without
    a trailing ``/``), or None when it cannot be one."""
    if not text or _SPACE.search(text):
        return None
    if text[0] == "#":
        return Reference(contained=text[1:])
    if base:
        root = base.rstrip("/") + "/"
        if text.startswith(root):
            local = _relative(text[len(root) :])
            if local is not None and local.type is not None:
                return Reference(local.type, local.id, local.version, url=text, local=True)
    if _SCHEME.match(text):
        url, version = text, None
        if text.startswith(("http://", "https://")):
            url, bar, after = text.partition("|")
            version = after if bar else None
            if not url:
                return None
            parts = url.split("/")
            found = _restful(parts[3:]) if len(parts) >= 5 else None
            if found is not None:
                return Reference(found[0], found[1], found[2], url=url, canonical_version=version)
        return Reference(url=url, canonical_version=version)
    return _relative(text)


def reference_type(text: str) -> str | None:
    """The resource type a reference shows (``Patient/1``, ``http://x/fhir/Patient/1``,
    ``Patient/1/_history/2``), or None (``urn:uuid:...``, ``#id``, a bare id)."""
    found = parse_reference(text)
    return None if found is None else found.type


def local_target(text: str, base: str | None = None) -> tuple[str, str] | None:
    """``(type, id)`` of a relative reference or one under this server's ``base`` (without
    ``base``: relative ones only); None for anything else (another server, ``urn:``, ``#id``,
    a bare id)."""
    found = parse_reference(text, base)
    return None if found is None else found.target
