"""SMART App Launch 2.2, standalone launch: the authorization code flow with PKCE, without
HTTP (``server/api/launch.py`` is its edge; the token exchange is ``service.py``'s).

1. ``authorize``: the app's request. Its client and ``redirect_uri`` (an exact string match
   with a registered one) are checked first: a failure there is shown on our page and never
   redirected (no open redirect). Then ``state`` (required), ``response_type=code``, ``aud``
   (our FHIR base URL), PKCE (``code_challenge_method=S256`` only) and the scopes; failures
   from here are redirected to the app (``error``, ``state``). A pending request is stored
   (``auth_request``, 10 minutes) with a CSRF token bound to it; its id goes in the session
   cookie.
2. ``sign_in``: the login form (CSRF checked). Throttled per account and per source, in the
   database (every worker sees the same counts): five failures free, then a back-off doubling
   from 1 s to at most 15 min; failures older than an hour are forgotten (no permanent
   lockout). An unknown user, a wrong password and a disabled user get the same answer after
   the same work (``users.verify``). A success gives the request a new CSRF token.
3. ``approve``: the approval form (CSRF checked): deny → ``access_denied`` to the app; approve
   → a grant (``auth_grant``) and a single-use code valid 60 s, bound to the client, the
   redirect URI and the PKCE challenge; with ``launch/patient``, the member chosen must be one
   the user may see (the caller passes the door's answer).

Scopes a launch can be granted: ``user/`` and ``patient/`` resource scopes (``patient/`` ones
only with ``launch/patient``) within the client's registration, and the launch scopes
``openid``, ``fhirUser``, ``launch/patient`` the client registered; ``system/`` scopes are not
for a user's launch, and ``offline_access`` or ``online_access`` (a refresh token: the
service's ``refresh``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from server.auth.clients import Client
from server.auth.scopes import Scope, ScopeError, enforceable, grant
from server.auth.users import UserError, username_of, verify
from server.store.base import Auth, RequestRow, UserRow

REQUEST_SECONDS = 600
CODE_SECONDS = 60
#: the launch scopes this server acts on
OFFERED = ("openid", "fhirUser", "launch/patient", "offline_access", "online_access")
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")


class LaunchError(Exception):
    """A request answered on our own page, never redirected (unknown client, unregistered
    redirect URI, an expired or forged form)."""


class Throttled(Exception):
    def __init__(self, seconds: int) -> None:
        super().__init__(f"Too many failed sign-ins: try again in {seconds} s")
        self.seconds = seconds


class BadSignIn(Exception):
    """The one answer for an unknown user, a wrong password and a disabled user."""

    def __init__(self) -> None:
        super().__init__("The username or password is not right.")


@dataclass
class Redirect(Exception):
    """Where the browser goes next: the app's redirect URI with a code, or with an error."""

    url: str


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def pkce_matches(verifier: str, challenge: str) -> bool:
    """Whether ``verifier`` (RFC 7636: 43–128 unreserved characters) hashes (S256) to
    ``challenge``; compared in constant time."""
    if not _VERIFIER.fullmatch(verifier):
        return False
    return hmac.compare_digest(s256(verifier), challenge)


def code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def with_query(uri: str, **params: str) -> str:
    return uri + ("&" if urlsplit(uri).query else "?") + urlencode(params)


def launch_scopes(requested: str, client: Client, enforce: Callable[[Scope], None]) -> str:
    """The scopes granted for a launch (see the module docstring); ``ScopeError`` for a
    scope the server cannot grant (``invalid_scope``)."""
    registered_launch = set(client.scope_text.split()) & set(OFFERED)
    words = requested.split()
    launch = [w for w in OFFERED if w in words and w in registered_launch]
    if "offline_access" in launch and "online_access" in launch:
        launch.remove("online_access")  # the longer of the two asked for

    def check(scope: Scope) -> None:
        if scope.context == "system":
            raise ScopeError(f"Scope {scope.text!r}: system/ scopes are not for a user's launch")
        if scope.context == "patient" and "launch/patient" not in launch:
            raise ScopeError(f"Scope {scope.text!r}: patient/ scopes need launch/patient")
        enforceable(scope, patient=True)
        enforce(scope)

    resources = grant(requested, client.scopes, check)
    return " ".join([*launch, resources.text])


class Launch:
    def __init__(
        self,
        store: Auth,
        base: str,
        *,
        clock: Callable[[], float] = time.time,
        enforce: Callable[[Scope], None] = lambda scope: None,
    ) -> None:
        self.store = store
        self.base = base
        self.clock = clock
        self.enforce = enforce

    # -- 1. the app's request ------------------------------------------------------------------

    def authorize(self, params: Mapping[str, str], client: Client | None) -> RequestRow:
        if client is None or not client.active or not client.redirect_uris:
            raise LaunchError("The app is not registered with this server for a launch.")
        redirect = params.get("redirect_uri", "")
        if redirect not in client.redirect_uris:
            raise LaunchError(
                "The app asked to return to an address it did not register; this server "
                "will not send you there."
            )
        state = params.get("state", "")
        if not state:
            raise LaunchError("The app's request has no state: ask the app's developer.")

        def refuse(error: str, description: str) -> Redirect:
            return Redirect(with_query(redirect, error=error, error_description=description,
                                       state=state))

        if params.get("response_type") != "code":
            raise refuse("unsupported_response_type", "response_type must be code")
        if params.get("aud") != self.base:
            raise refuse("invalid_request", f"aud must be this server's FHIR base URL {self.base}")
        if params.get("code_challenge_method") != "S256":
            raise refuse("invalid_request", "PKCE is required: code_challenge_method=S256")
        challenge = params.get("code_challenge", "")
        if not _CHALLENGE.fullmatch(challenge):
            raise refuse("invalid_request", "code_challenge must be a base64url SHA-256 hash")
        try:
            scope = launch_scopes(params.get("scope", ""), client, self.enforce)
        except ScopeError as exc:
            raise refuse("invalid_scope", str(exc)) from exc
        request = RequestRow(
            id=secrets.token_urlsafe(32),
            client_id=client.client_id,
            redirect_uri=redirect,
            scope=scope,
            state=state,
            code_challenge=challenge,
            csrf=secrets.token_urlsafe(32),
            username=None,
            expires=int((self.clock() + REQUEST_SECONDS) * 1e6),
        )
        self.store.add_request(request)
        return request

    def pending(self, request_id: str | None, csrf: str | None = None) -> RequestRow:
        """The pending request of a session cookie (and, for a form, its CSRF token)."""
        found = self.store.request(request_id) if request_id else None
        if found is None or found.expires < self.clock() * 1e6:
            raise LaunchError("This sign-in has expired or was not started here: go back to "
                              "the app and start again.")
        if csrf is not None and not hmac.compare_digest(csrf.encode(), found.csrf.encode()):
            raise LaunchError("The form has expired or did not come from this page: go back "
                              "to the app and start again.")
        return found

    # -- 2. sign-in ----------------------------------------------------------------------------

    def sign_in(
        self, request: RequestRow, username: str, password: str, source: str
    ) -> tuple[UserRow, str]:
        """The user and the request's new CSRF token; ``Throttled`` or ``BadSignIn``."""
        try:
            name = username_of(username)
        except UserError:
            name = username.strip().lower()[:128]
        keys = [f"user:{name}", f"source:{source}"]
        now = int(self.clock() * 1e6)
        until = self.store.blocked_until(keys)
        if until > now:
            raise Throttled(max(1, (until - now + 999_999) // 1_000_000))
        user = self.store.user(name)
        matches = verify(password, user.password_hash if user is not None else None)
        if user is None or not matches or user.status != "active":
            self.store.failed(keys, now)
            raise BadSignIn()
        self.store.clear_throttle(keys[0])
        csrf = secrets.token_urlsafe(32)
        self.store.signed_in(request.id, user.username, csrf)
        return user, csrf

    # -- 3. approval ---------------------------------------------------------------------------

    def approve(
        self, request: RequestRow, approved: bool, patient: str | None,
        visible: Callable[[str], bool],
    ) -> str:
        """The URL the browser goes to next (the app's redirect URI)."""
        if request.username is None:
            raise LaunchError("Sign in first.")
        if not approved:
            self.store.end_request(request.id)
            return with_query(request.redirect_uri, error="access_denied",
                              error_description="The user did not approve the app",
                              state=request.state)
        wants_patient = "launch/patient" in request.scope.split()
        if wants_patient and (not patient or not visible(patient)):
            raise ValueError("Choose one of the members listed.")
        if not self.store.end_request(request.id):
            raise LaunchError("This request was answered already: go back to the app.")
        code = secrets.token_urlsafe(32)
        grant_id = uuid.uuid4().hex
        self.store.add_code(
            (grant_id, request.client_id, request.username, request.scope,
             patient if wants_patient else None),
            code_hash(code),
            request.redirect_uri,
            request.code_challenge,
            int((self.clock() + CODE_SECONDS) * 1e6),
        )
        return with_query(request.redirect_uri, code=code, state=request.state)
