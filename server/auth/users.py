"""The users who sign in to approve a SMART launch: what ``calaim-fhir user …`` checks and
stores.

A user has a username (lower-cased, letters, digits and ``. _ @ -``), a password kept only as
a scrypt hash, and a PractitionerRole, which gives the organisation the user acts for (its
``organization``, required) and who the user is (its ``practitioner``: the ``fhirUser``).
Users are disabled and enabled, never deleted by the server (a disabled user cannot sign in).

Password hashes (``hashlib.scrypt``, RFC 7914): ``scrypt$<N>$<r>$<p>$<salt>$<hash>`` with
base64 salt (16 random bytes) and hash (32 bytes); N = 2^15, r = 8, p = 1 (32 MiB, some tens
of milliseconds). Verification recomputes with the stored parameters and compares in constant
time; ``verify`` of no hash at all (an unknown user) does the same work against a fixed
dummy hash, so both answers take the same time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import unicodedata

from server.fhir.instant import now_us
from server.store.base import UserRow

N, R, P = 2**15, 8, 1
_MAXMEM = 64 * 1024 * 1024
MIN_PASSWORD = 12
MAX_PASSWORD = 1024
_USERNAME = re.compile(r"[a-z0-9._@-]{1,128}")
_REFERENCE = re.compile(r"([A-Za-z]+)/([A-Za-z0-9\-.]{1,64})")


class UserError(ValueError):
    """A user or password that cannot be accepted as given."""


def username_of(text: str) -> str:
    """The stored form of a username (NFKC, lower case); ``UserError`` if malformed."""
    name = unicodedata.normalize("NFKC", text).strip().lower()
    if not _USERNAME.fullmatch(name):
        raise UserError(
            "The username must be 1–128 letters, digits or . _ @ - (compared in lower case)"
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"The password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise UserError(f"The password must have at most {MAX_PASSWORD} characters")
    return password


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        unicodedata.normalize("NFKC", password).encode(),
        salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=32,
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    return f"scrypt${N}${R}${P}${_b64(salt)}${_b64(_derive(password, salt, N, R, P))}"


_DUMMY = hash_password(secrets.token_urlsafe(24))


def verify(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches ``stored`` (None: an unknown user — the same work is
    done, and the answer is False)."""
    try:
        scheme, n, r, p, salt, digest = (stored or _DUMMY).split("$")
        if scheme != "scrypt":
            return False
        got = _derive(password[:MAX_PASSWORD], base64.b64decode(salt), int(n), int(r), int(p))
        same = hmac.compare_digest(got, base64.b64decode(digest))
    except ValueError:
        return False
    return same and stored is not None


def reference(text: str, type: str) -> str:
    """``text`` as a ``type/id`` reference; ``UserError`` otherwise."""
    match = _REFERENCE.fullmatch(text)
    if match is None or match[1] != type:
        raise UserError(f"Expected a reference {type}/ID, not {text!r}")
    return text


def new_user(
    username: str, password: str, practitioner_role: str, role: dict[str, object]
) -> UserRow:
    """A user to store; ``role`` is the stored PractitionerRole resource ``practitioner_role``
    names (the caller reads it), which must name an Organization."""
    organization = _reference_of(role.get("organization"), "Organization")
    if organization is None:
        raise UserError(
            f"{practitioner_role} names no organization: the role gives the user's organisation"
        )
    now = now_us()
    return UserRow(
        username=username_of(username),
        password_hash=hash_password(check_password(password)),
        practitioner_role=reference(practitioner_role, "PractitionerRole"),
        organization=organization,
        practitioner=_reference_of(role.get("practitioner"), "Practitioner"),
        status="active",
        created=now,
        changed=now,
    )


def _reference_of(value: object, type: str) -> str | None:
    if not isinstance(value, dict):
        return None
    text = value.get("reference")
    if not isinstance(text, str):
        return None
    match = _REFERENCE.fullmatch(text)
    return text if match is not None and match[1] == type else None


def summary(user: UserRow) -> dict[str, object]:
    """What the CLI prints about a user (never the hash)."""
    return {
        "username": user.username,
        "practitioner_role": user.practitioner_role,
        "organization": user.organization,
        "practitioner": user.practitioner,
        "status": user.status,
    }
