"""The R4 ``uuid`` and ``oid`` URN forms (datatypes.html#uuid, #oid), one place for both.

Match with ``fullmatch``. A ``uuid`` is lower-case hexadecimal (RFC 4122 URN form as FHIR
restricts it); an ``oid`` starts with arc 0, 1 or 2 and has no leading zeros.
"""

from __future__ import annotations

import re

UUID_URN = re.compile(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
OID_URN = re.compile(r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+")


def urn_problem(value: str) -> str | None:
    """Why ``value``, a ``urn:uuid:`` or ``urn:oid:`` URI, is malformed; None when it is well
    formed or is another kind of URI."""
    lowered = value[:9].lower()
    if lowered.startswith("urn:uuid:") and not UUID_URN.fullmatch(value):
        return "a urn:uuid: URI must be a lower-case UUID (urn:uuid:xxxxxxxx-xxxx-...)"
    if lowered.startswith("urn:oid:") and not OID_URN.fullmatch(value):
        return "a urn:oid: URI must be an OID (urn:oid:2.16.840...)"
    return None
