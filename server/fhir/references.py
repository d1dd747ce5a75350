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
from typing import NamedTuple

ID = re.compile(r"[A-Za-z0-9\-.]{1,64}", re.ASCII)
_TYPE = re.compile(r"[A-Z][A-Za-z]{0,63}", re.ASCII)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:", re.ASCII)
_SPACE = re.compile(r"\s")
_HISTORY = "_history"


class Reference(NamedTuple):
    """One parsed reference; see the module docstring for which fields each form sets (a
    tuple: built on every indexed reference, where a dataclass costs several times more)."""

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


_NAME = r"([A-Z][A-Za-z]{0,63})/([A-Za-z0-9\-.]{1,64})(?:/_history/([A-Za-z0-9\-.]{1,64}))?"
_RELATIVE = re.compile(_NAME, re.ASCII)
# an http(s) URL ending in Type/id[/_history/vid] (whitespace excluded), a canonical |version
_RESTFUL_URL = re.compile(r"(https?://[^\s|]+?/)" + _NAME + r"(?:\|(\S*))?", re.ASCII)
_new = tuple.__new__  # Reference(...) without the keyword handling of NamedTuple.__new__


def parse_reference(text: str, base: str | None = None) -> Reference | None:
    """``text`` read as a reference (``base``: this server's FHIR base URL, with or without
    a trailing ``/``), or None when it cannot be one."""
    if not text:
        return None
    match = _RELATIVE.fullmatch(text)
    if match is not None:  # the common case first
        return _new(Reference, (match[1], match[2], match[3], None, None, None, True))
    if text[0] == "#":
        return None if _SPACE.search(text) else Reference(contained=text[1:])
    if not _SCHEME.match(text):  # a bare id (a search value), or nothing
        return (
            _new(Reference, (None, text, None, None, None, None, True))
            if ID.fullmatch(text)
            else None
        )
    if _SPACE.search(text):
        return None
    if base:
        root = base.rstrip("/") + "/"
        if text.startswith(root):
            match = _RELATIVE.fullmatch(text, len(root))
            if match is not None:
                return Reference(match[1], match[2], match[3], url=text, local=True)
    if not text.startswith(("http://", "https://")):
        return Reference(url=text)
    match = _RESTFUL_URL.fullmatch(text)
    if match is not None:
        url = text if match[5] is None else text[: match.start(5) - 1]
        return Reference(match[2], match[3], match[4], url=url, canonical_version=match[5])
    url, bar, version = text.partition("|")
    if not url:
        return None
    return Reference(url=url, canonical_version=version if bar else None)


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
