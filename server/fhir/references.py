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
from functools import lru_cache
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


_TAIL = r"([A-Z][A-Za-z]{0,63})/([A-Za-z0-9\-.]{1,64})(?:/_history/([A-Za-z0-9\-.]{1,64}))?"
_RELATIVE = re.compile(_TAIL, re.ASCII)
# http(s)://host[/path]/Type/id[/_history/vid][|version], no whitespace
_RESTFUL_URL = re.compile(r"(https?://[^/\s|]+(?:/[^\s|]*)?/)" + _TAIL + r"(?:\|(\S*))?", re.ASCII)
_new = tuple.__new__  # Reference(...) without the keyword handling of NamedTuple.__new__


def _url(text: str) -> Reference | None:
    """An absolute reference (``text`` has a scheme and no whitespace)."""
    match = _RESTFUL_URL.fullmatch(text)
    if match is not None:
        url = text if match[5] is None else text[: match.start(5) - 1]
        return _new(Reference, (match[2], match[3], match[4], url, match[5], None, False))
    if not text.startswith(("http://", "https://")):
        return _new(Reference, (None, None, None, text, None, None, False))
    url, bar, version = text.partition("|")
    if not url:
        return None
    return _new(Reference, (None, None, None, url, version if bar else None, None, False))


def parse_reference(text: str, base: str | None = None) -> Reference | None:
    """``text`` read as a reference (``base``: this server's FHIR base URL, with or without
    a trailing ``/``), or None when it cannot be one."""
    if not text:
        return None
    match = _RELATIVE.fullmatch(text)
    if match is not None:  # the common case first
        return _new(Reference, (match[1], match[2], match[3], None, None, None, True))
    if _SPACE.search(text):
        return None
    if text[0] == "#":
        return _new(Reference, (None, None, None, None, None, text[1:], False))
    if not _SCHEME.match(text):  # a bare id (a search value), or nothing
        if ID.fullmatch(text):
            return _new(Reference, (None, text, None, None, None, None, True))
        return None
    if base:
        root = base.rstrip("/") + "/"
        if text.startswith(root):
            match = _RELATIVE.fullmatch(text, len(root))
            if match is not None:
                return _new(Reference, (match[1], match[2], match[3], text, None, None, True))
    return _url(text)


@lru_cache(maxsize=256)  # one resource's references are read by several SearchParameters
def reference_type(text: str) -> str | None:
    """The resource type a reference shows (``Patient/1``, ``http://x/fhir/Patient/1``,
    ``Patient/1/_history/2``), or None (``urn:uuid:...``, ``#id``, a bare id)."""
    match = _RELATIVE.fullmatch(text)  # the common case, without building a Reference
    if match is not None:
        return match[1]
    match = _RESTFUL_URL.fullmatch(text)  # contained, urn:, a bare id: no type
    return None if match is None else match[2]


def local_target(text: str, base: str | None = None) -> tuple[str, str] | None:
    """``(type, id)`` of a relative reference or one under this server's ``base`` (without
    ``base``: relative ones only); None for anything else (another server, ``urn:``, ``#id``,
    a bare id)."""
    found = parse_reference(text, base)
    return None if found is None else found.target
