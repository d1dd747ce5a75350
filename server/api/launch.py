"""The standalone launch over HTTP: ``GET [base]/auth/authorize``, the login form
(``POST [base]/auth/login``) and the approval form (``POST [base]/auth/approve``) — plain HTML
pages served by the server (``server/auth/launch.py`` decides).

Every page: ``Content-Security-Policy`` (no scripts, ``frame-ancestors 'none'``),
``X-Frame-Options: DENY``, ``Cache-Control: no-store``, ``Referrer-Policy: no-referrer``. The
session cookie (``calaim_launch``: the pending request's id) is ``Secure; HttpOnly;
SameSite=Lax``, host-only, on ``/fhir/auth``, 10 minutes. Each form carries the CSRF token
bound to the pending request (new after sign-in). Codes and tokens are never logged: the
request log names these routes without their query.

The patient picker lists the Patients the signed-in user may see: read through the door as a
principal of that user (the user's organisation and Practitioner, ``user/Patient.rs``), so the
access policies (care relationships, consent) decide, as for any request of the user.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from server.api.context import services_of
from server.auth.clients import Client
from server.auth.launch import BadSignIn, Launch, LaunchError, Redirect, Throttled
from server.auth.principal import Principal
from server.auth.scopes import ScopeSet, parse_scope
from server.auth.service import AuthService
from server.ports import Reader
from server.search.parse import parse_criteria
from server.search.query import SearchQuery
from server.store.authorized import AuthorizedRepository
from server.store.sql.auth import RequestRow, UserRow

router = APIRouter(include_in_schema=False)
T = TypeVar("T")

COOKIE = "calaim_launch"
PICKER_LIMIT = 100
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem;"
    "line-height:1.5;color:#1b1b1b}label{display:block;margin-top:1rem;font-weight:600}"
    "input[type=text],input[type=password]{width:100%;padding:.5rem;font-size:1rem}"
    "button{margin-top:1.25rem;margin-right:.5rem;padding:.5rem 1.25rem;font-size:1rem}"
    ".error{color:#b50909;font-weight:600}fieldset{margin-top:1rem}"
    "li{margin:.25rem 0}.app{font-weight:600}"
)
_VERBS = {"c": "create", "r": "read", "u": "change", "d": "delete", "s": "search"}
_WORDS = re.compile(r"[A-Z][a-z]*")


def _page(title: str, body: str, status: int = 200, **headers: str) -> HTMLResponse:
    text = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main><h1>{html.escape(title)}</h1>{body}</main></body></html>"
    )
    return HTMLResponse(text, status_code=status, headers={**HEADERS, **headers})


def _problem(message: str, status: int = 400) -> HTMLResponse:
    return _page("Sign-in problem", f'<p class="error" role="alert">{html.escape(message)}</p>',
                 status)


def _things(type: str | None) -> str:
    if type is None:
        return "all kinds of records"
    words = [w.lower() for w in _WORDS.findall(type)] or [type.lower()]
    last = words[-1]
    words[-1] = last + ("es" if last.endswith(("s", "x", "ch", "sh")) else "s")
    return " ".join(words)


def describe(scope_text: str) -> list[str]:
    """The scopes of a request in words a caseworker understands."""
    lines: list[str] = []
    words = scope_text.split()
    if "openid" in words or "fhirUser" in words:
        lines.append("Know who you are: your name and your role at your organisation.")
    if "launch/patient" in words:
        lines.append("Work with the one member you choose below.")
    for word in words:
        scope = parse_scope(word)
        if scope is None:
            continue
        verbs = [_VERBS[c] for c in "rscud" if c in scope.letters]
        verb = ", ".join(verbs[:-1]) + (" and " if len(verbs) > 1 else "") + verbs[-1]
        whose = ("of the member you choose" if scope.context == "patient"
                 else "of the members you may see")
        query = f" (only those matching {scope.query[0][1]})" if scope.query else ""
        lines.append(f"{verb.capitalize()} {_things(scope.type)} {whose}{query}.")
    return lines


def _launch(request: Request) -> tuple[Launch, AuthService] | None:
    service: AuthService | None = getattr(request.app.state, "auth", None)
    if service is None:
        return None
    return Launch(service.store, service.settings.fhir_base, clock=service.clock,
                  enforce=service.enforce_query), service


async def _form(request: Request, names: tuple[str, ...]) -> dict[str, str]:
    form = await request.form(max_files=0, max_fields=20, max_part_size=16 * 1024)
    return {n: v for n in names if isinstance(v := form.get(n), str)}


def _cookie(response: Response, value: str) -> None:
    response.set_cookie(COOKIE, value, max_age=600, path="/fhir/auth", secure=True,
                        httponly=True, samesite="lax")


def _login_page(request_row: RequestRow, client_name: str, error: str | None = None,
                status: int = 200, **headers: str) -> HTMLResponse:
    alert = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    body = (
        f'<p><span class="app">{html.escape(client_name)}</span> asks to use this server '
        "for you. Sign in to continue.</p>"
        f"{alert}"
        '<form method="post" action="login">'
        f'<input type="hidden" name="csrf" value="{html.escape(request_row.csrf)}">'
        '<label for="username">Username</label>'
        '<input type="text" id="username" name="username" autocomplete="username" required>'
        '<label for="password">Password</label>'
        '<input type="password" id="password" name="password" '
        'autocomplete="current-password" required>'
        '<button type="submit">Sign in</button></form>'
    )
    return _page("Sign in", body, status, **headers)


def _user_principal(client_id: str, user: UserRow) -> Principal:
    return Principal(client_id, organization=user.organization, user=user.practitioner,
                     scopes=ScopeSet.of("user/Patient.rs"))


def _door(request: Request, principal: Principal) -> AuthorizedRepository:
    state = request.app.state
    return AuthorizedRepository(state.runner, principal, None, state.policies,
                                state.definitions, state.strict_access)


def _name(body: dict[str, Any]) -> str:
    for name in body.get("name") or []:
        if isinstance(name, dict):
            if isinstance(name.get("text"), str):
                return str(name["text"])
            given = " ".join(g for g in name.get("given") or [] if isinstance(g, str))
            text = f"{given} {name.get('family') or ''}".strip()
            if text:
                return text
    return f"Patient {body.get('id')}"


async def _members(request: Request, principal: Principal) -> list[tuple[str, str]]:
    """(id, label) of the Patients the user may see, by name (at most ``PICKER_LIMIT``)."""
    context = services_of(request).search.context

    def run(reader: Reader) -> list[tuple[str, str]]:
        page = reader.search(SearchQuery(parse_criteria("Patient", [], context), PICKER_LIMIT))
        found = []
        for version in page.items:
            if version.body is None:
                continue
            body = orjson.loads(version.body)
            birth = f", born {body['birthDate']}" if isinstance(body.get("birthDate"), str) else ""
            found.append((version.id, _name(body) + birth))
        return sorted(found, key=lambda item: item[1].lower())

    return await _door(request, principal).reading(run)


def _approval_page(request_row: RequestRow, client_name: str, user: UserRow, csrf: str,
                   members: list[tuple[str, str]] | None, error: str | None = None,
                   status: int = 200) -> HTMLResponse:
    alert = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    items = "".join(f"<li>{html.escape(line)}</li>" for line in describe(request_row.scope))
    picker = ""
    if members is not None:
        if members:
            choices = "".join(
                f'<div><input type="radio" id="m-{html.escape(id)}" name="patient" '
                f'value="{html.escape(id)}" required>'
                f' <label style="display:inline;font-weight:400" for="m-{html.escape(id)}">'
                f"{html.escape(label)}</label></div>"
                for id, label in members
            )
            picker = f"<fieldset><legend>Choose the member</legend>{choices}</fieldset>"
        else:
            picker = "<p>You may not see any member, so the app cannot be given one.</p>"
    body = (
        f"<p>Signed in as {html.escape(user.username)}.</p>"
        f'<p><span class="app">{html.escape(client_name)}</span> asks to:</p>'
        f"<ul>{items}</ul>{alert}"
        '<form method="post" action="approve">'
        f'<input type="hidden" name="csrf" value="{html.escape(csrf)}">'
        f"{picker}"
        '<button type="submit" name="decision" value="approve">Allow</button>'
        '<button type="submit" name="decision" value="deny" formnovalidate>Deny</button>'
        "</form>"
    )
    return _page("Allow the app?", body, status)


def _present(version: Any) -> bool:
    return version is not None and version.body is not None


async def _call(request: Request, fn: Callable[[], T]) -> T:
    """A short blocking call on the store, where its calls run (``runner.call``)."""
    result: T = await request.app.state.runner.call(fn)
    return result


async def _client(request: Request, service: AuthService, client_id: str) -> Client | None:
    row = await _call(request, lambda: service.store.client(client_id)) if client_id else None
    return None if row is None else Client.of(row)


@router.get("/auth/authorize")
async def authorize(request: Request) -> Response:
    found = _launch(request)
    if found is None:
        return _problem("Sign-in is not available: authentication is off.", 404)
    launch, service = found
    params = {k: v for k, v in request.query_params.items()}
    if any(len(request.query_params.getlist(k)) > 1 for k in params):
        return _problem("The app's request repeats a parameter.")
    client = await _client(request, service, params.get("client_id", ""))
    try:
        pending = await _call(request, lambda: launch.authorize(params, client))
    except LaunchError as exc:
        return _problem(str(exc))
    except Redirect as exc:
        return RedirectResponse(exc.url, status_code=302, headers=HEADERS)
    assert client is not None
    response = _login_page(pending, client.name)
    _cookie(response, pending.id)
    return response


@dataclass
class _Posted:
    """A form posted for a pending request (its CSRF token checked)."""

    launch: Launch
    service: AuthService
    pending: RequestRow
    form: dict[str, str]


async def _posted(request: Request, names: tuple[str, ...]) -> _Posted | Response:
    found = _launch(request)
    if found is None:
        return _problem("Sign-in is not available: authentication is off.", 404)
    launch, service = found
    form = await _form(request, ("csrf", *names))
    try:
        pending = await _call(request, lambda: launch.pending(request.cookies.get(COOKIE),
                                                              form.get("csrf", "")))
    except LaunchError as exc:
        return _problem(str(exc))
    return _Posted(launch, service, pending, form)


@router.post("/auth/login")
async def login(request: Request) -> Response:
    posted = await _posted(request, ("username", "password"))
    if isinstance(posted, Response):
        return posted
    launch, service, pending, form = posted.launch, posted.service, posted.pending, posted.form
    client = await _client(request, service, pending.client_id)
    if client is None:
        return _problem("The app is no longer registered.")
    source = request.client.host if request.client else "unknown"
    try:
        user, csrf = await _call(request, lambda: launch.sign_in(
            pending, form.get("username", ""), form.get("password", ""), source))
    except Throttled as exc:
        return _login_page(pending, client.name, str(exc), 429,
                           **{"Retry-After": str(exc.seconds)})
    except BadSignIn as exc:
        return _login_page(pending, client.name, str(exc), 401)
    members = None
    if "launch/patient" in pending.scope.split():
        members = await _members(request, _user_principal(client.client_id, user))
    return _approval_page(pending, client.name, user, csrf, members)


@router.post("/auth/approve")
async def approve(request: Request) -> Response:
    posted = await _posted(request, ("decision", "patient"))
    if isinstance(posted, Response):
        return posted
    launch, service, pending, form = posted.launch, posted.service, posted.pending, posted.form
    user = await _call(request, lambda: service.store.user(pending.username or ""))
    client = await _client(request, service, pending.client_id)
    if user is None or user.status != "active" or client is None:
        return _problem("Sign in first.")
    principal = _user_principal(client.client_id, user)
    patient = form.get("patient")
    visible = True
    if patient and "launch/patient" in pending.scope.split():
        door = _door(request, principal)
        visible = await door.reading(lambda reader: _present(reader.read("Patient", patient)))
    try:
        url = await _call(request, lambda: launch.approve(
            pending, form.get("decision") == "approve", patient, lambda _: visible))
    except LaunchError as exc:
        return _problem(str(exc))
    except ValueError as exc:
        members = await _members(request, principal)
        return _approval_page(pending, client.name, user, pending.csrf, members, str(exc), 400)
    response = RedirectResponse(url, status_code=303, headers=HEADERS)
    response.delete_cookie(COOKIE, path="/fhir/auth", secure=True, httponly=True,
                           samesite="lax")
    return response
