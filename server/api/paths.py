"""URL path convertors for FHIR routes, and the answer for URLs no route serves.

A resource type starts with a capital letter and an id never contains ``_``, so with these
convertors ``/Patient/_history`` can never be read as an instance URL and ``/metadata`` never as
a type: routes need no particular order, and the most frequent ones are tried first.
"""

from __future__ import annotations

import re

from starlette.convertors import Convertor, register_url_convertor

from server.api.interactions import check_id, check_type
from server.errors import FhirError, MethodNotAllowed, NotFound


class _Text(Convertor[str]):
    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class TypeConvertor(_Text):
    regex = "[A-Z][A-Za-z]{0,63}"


class IdConvertor(_Text):
    regex = "[A-Za-z0-9\\-\\.]{1,64}"


register_url_convertor("fhirtype", TypeConvertor())
register_url_convertor("fhirid", IdConvertor())

_SYSTEM = frozenset({"", "metadata", "_history", "_search"})
_OPERATION = re.compile("\\$[a-z][a-z\\-]{0,63}")  # the operation routes' convertor
_JOB = re.compile(IdConvertor.regex)


def unmatched(method: str, rest: str) -> FhirError:
    """Why no route serves ``method`` on ``/fhir/<rest>``: an unknown type (404), an invalid id
    (400), a known URL with another method (405), or no such endpoint (404)."""
    segments = rest.split("/")
    first = segments[0]
    not_allowed = MethodNotAllowed(f"{method} is not allowed on /fhir/{rest[:80]}")
    if len(segments) == 1 and (first in _SYSTEM or _OPERATION.fullmatch(first)):
        return not_allowed
    if first == "_async":  # the status URL of an asynchronous request
        if len(segments) == 2 and _JOB.fullmatch(segments[1]):
            return not_allowed
        return NotFound("No asynchronous request at this URL")
    try:
        check_type(first)
        if len(segments) >= 2 and segments[1] not in ("_history", "_search"):
            check_id(segments[1])
    except FhirError as error:
        return error
    if len(segments) <= 3 or (len(segments) == 4 and segments[2] == "_history"):
        return not_allowed
    return NotFound("No FHIR endpoint at this URL")
