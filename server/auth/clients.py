"""Registered backend-services clients: what ``calaim-fhir client add`` checks and stores.

A client has a name, the Organization it acts for (required except for ``--role admin``, an
operator's client), the scopes it may be granted, its public keys (a JWKS by value, or a
registered ``jwks_uri``), the assertion algorithms it may sign with (RS384 and ES384;
RS256/ES256 when configured), its role and its purposes of use. Clients live in the database;
nothing secret is stored (public keys only).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
from joserfc.jwk import KeySet

from server.auth.principal import DEFAULT_PURPOSES
from server.auth.scopes import Scope, ScopeError, enforceable, parse_scope
from server.fhir.instant import now_us
from server.store.base import ClientRow

DEFAULT_ALGORITHMS = ("RS384", "ES384")
OPTIONAL_ALGORITHMS = ("RS256", "ES256")
ROLES = ("admin", "auditor")
#: purposes of use a client may be given (HL7 v3 ActReason); ETREAT (break the glass) only
#: when granted explicitly
PURPOSES = frozenset(
    {"TREAT", "ETREAT", "HPAYMT", "HOPERAT", "CAREMGT", "COVERAGE", "PUBHLTH", "HRESCH"}
)
KEY_TYPES = {"RS256": "RSA", "RS384": "RSA", "ES256": "EC", "ES384": "EC"}
EC_CURVES = {"ES256": "P-256", "ES384": "P-384"}


class RegistrationError(ValueError):
    """A client that cannot be registered as given."""


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    name: str
    organization: str | None
    scopes: tuple[Scope, ...]
    scope_text: str
    jwks: dict[str, Any] | None
    jwks_url: str | None
    role: str | None
    purposes: tuple[str, ...]
    algorithms: tuple[str, ...]
    active: bool
    redirect_uris: tuple[str, ...] = ()
    public: bool = False

    @classmethod
    def of(cls, row: ClientRow) -> Client:
        scopes = tuple(s for p in row.scope.split() if (s := parse_scope(p)) is not None)
        redirects = tuple(orjson.loads(row.redirect_uris)) if row.redirect_uris else ()
        return cls(
            row.client_id,
            row.name,
            row.organization,
            scopes,
            row.scope,
            None if row.jwks is None else orjson.loads(row.jwks),
            row.jwks_url,
            row.role,
            tuple(row.purposes.split(",")),
            tuple(row.algorithms.split(",")),
            row.status == "active",
            redirects,
            row.public,
        )

    def summary(self) -> dict[str, Any]:
        """What ``client add`` and ``client list`` print (public data only)."""
        return {
            "client_id": self.client_id,
            "name": self.name,
            "organization": self.organization,
            "scope": self.scope_text,
            "jwks_url": self.jwks_url,
            "jwks": "by value" if self.jwks is not None else None,
            "role": self.role,
            "purposes": list(self.purposes),
            "algorithms": list(self.algorithms),
            "status": "active" if self.active else "revoked",
            "redirect_uris": list(self.redirect_uris),
            "public": self.public,
        }


def check_jwks(value: Any) -> dict[str, Any]:
    """A public JWKS: RSA and EC keys, each with a ``kid``; no private key material."""
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list) or not value["keys"]:
        raise RegistrationError('The JWKS must be a JSON object with a non-empty "keys" array')
    for index, key in enumerate(value["keys"]):
        if not isinstance(key, dict) or not isinstance(key.get("kid"), str) or not key["kid"]:
            raise RegistrationError(f"JWKS key {index} has no kid")
        if "d" in key or key.get("kty") == "oct":
            raise RegistrationError(
                f"JWKS key {key['kid']!r} holds secret key material: register public keys only"
            )
        if key.get("kty") not in ("RSA", "EC"):
            raise RegistrationError(f"JWKS key {key['kid']!r}: kty must be RSA or EC")
    try:
        KeySet.import_key_set(value)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - any failure to read a key is a bad JWKS
        raise RegistrationError(f"The JWKS cannot be read: {exc}") from exc
    return value


def check_jwks_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise RegistrationError("--jwks-url must be an absolute https:// URL")
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise RegistrationError("--jwks-url must use https (http only on loopback, for tests)")
    return url


#: the scopes of a launch app that grant no resource access (SMART App Launch 2.2)
LAUNCH_SCOPES = frozenset(
    {"openid", "fhirUser", "launch/patient", "offline_access", "online_access"}
)


def check_redirect_uri(uri: str) -> str:
    """A redirect URI as registered: absolute, https (http only on loopback, for native apps
    and tests), no fragment; later compared as an exact string."""
    parts = urlsplit(uri)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise RegistrationError(f"--redirect-uri {uri!r} must be an absolute https:// URL")
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise RegistrationError(
            f"--redirect-uri {uri!r} must use https (http only on loopback)"
        )
    if "#" in uri:
        raise RegistrationError(f"--redirect-uri {uri!r} must not have a fragment")
    if any(c.isspace() for c in uri):
        raise RegistrationError(f"--redirect-uri {uri!r} must not contain spaces")
    return uri


def new_client(
    *,
    name: str,
    organization: str | None,
    scope: str,
    jwks: Any = None,
    jwks_url: str | None = None,
    role: str | None = None,
    purposes: Iterable[str] | None = None,
    algorithms: Iterable[str] | None = None,
    redirect_uris: Iterable[str] = (),
    public: bool = False,
) -> ClientRow:
    """A client row to store, every field checked (``RegistrationError`` says what is wrong).
    Whether the Organization exists is the caller's check (it needs the store).

    With ``redirect_uris`` the client is a launch app (SMART App Launch): it must act for an
    Organization, may hold ``patient/`` scopes and the launch scopes (``LAUNCH_SCOPES``), and
    is either ``public`` (no keys) or authenticates with its keys."""
    if not name.strip():
        raise RegistrationError("--name must not be empty")
    if role is not None and role not in ROLES:
        raise RegistrationError(f"--role must be one of {', '.join(ROLES)}")
    if organization is None and role != "admin":
        raise RegistrationError("--organization is required (except with --role admin)")
    if organization is not None and not organization.startswith("Organization/"):
        raise RegistrationError("--organization must be a reference Organization/ID")
    redirects = [check_redirect_uri(uri) for uri in redirect_uris]
    launch = bool(redirects)
    if public and not launch:
        raise RegistrationError("--public is for launch apps: give --redirect-uri")
    if launch and organization is None:
        raise RegistrationError("A launch app (--redirect-uri) needs --organization")
    parsed: list[Scope] = []
    texts: list[str] = []
    for part in scope.split():
        try:
            found = parse_scope(part)
            if found is None:
                if launch and part in LAUNCH_SCOPES:
                    if part not in texts:
                        texts.append(part)
                    continue
                raise ScopeError(
                    f"{part!r} grants no resource access to a backend service"
                    if not launch
                    else f"{part!r} is not a scope this server offers"
                )
            enforceable(found, patient=launch)
        except ScopeError as exc:
            raise RegistrationError(str(exc)) from exc
        parsed.append(found)
        texts.append(found.text)
    if not parsed:
        raise RegistrationError("--scope must name at least one resource scope")
    if public:
        if jwks is not None or jwks_url is not None:
            raise RegistrationError("Give one of --public, --jwks-url and --jwks-file")
    elif (jwks is None) == (jwks_url is None):
        raise RegistrationError(
            "Give exactly one of --public, --jwks-url and --jwks-file"
            if launch
            else "Give exactly one of --jwks-url and --jwks-file"
        )
    wanted_purposes = tuple(purposes) if purposes is not None else DEFAULT_PURPOSES
    unknown = [p for p in wanted_purposes if p not in PURPOSES]
    if unknown or not wanted_purposes:
        raise RegistrationError(
            f"Unknown purpose(s) {', '.join(unknown) or '(none)'}; known: "
            + ", ".join(sorted(PURPOSES))
        )
    algs = tuple(algorithms) if algorithms is not None else DEFAULT_ALGORITHMS
    bad = [a for a in algs if a not in (*DEFAULT_ALGORITHMS, *OPTIONAL_ALGORITHMS)]
    if bad or not algs:
        raise RegistrationError(
            f"Unsupported algorithm(s) {', '.join(bad) or '(none)'}: use RS384, ES384 "
            "(RS256, ES256 allowed)"
        )
    return ClientRow(
        client_id=uuid.uuid4().hex,
        name=name.strip(),
        organization=organization,
        scope=" ".join(texts),
        jwks=None if jwks is None else orjson.dumps(check_jwks(jwks)).decode(),
        jwks_url=None if jwks_url is None else check_jwks_url(jwks_url),
        role=role,
        purposes=",".join(wanted_purposes),
        algorithms=",".join(algs),
        status="active",
        created=now_us(),
        redirect_uris=orjson.dumps(list(dict.fromkeys(redirects))).decode() if launch else None,
        public=public,
    )
