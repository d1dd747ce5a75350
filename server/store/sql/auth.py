"""The SMART backend-services tables (migration 8): clients, signing keys, assertion ``jti``s.

Every method is one short statement (or one short transaction) on a connection of its own
that commits on its own (``Dialect.autocommit``), outside the group writer, as the outbox's
and the job table's are. The per-request check of a client's status is a primary-key lookup.

``use_assertion`` is the token-issuing transaction: one statement that records the
assertion's ``jti`` for an *active* client; the unique ``(client_id, jti)`` key makes a second
use of the same ``jti`` change nothing, in any process, so a replay is caught across workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from server.fhir.instant import now_us
from server.store.sql.dialect import Dialect

_CLIENT_COLUMNS = (
    "client_id, name, organization, scope, jwks, jwks_url, role, purposes, algorithms, status,"
    " created, revoked, redirect_uris, public"
)
_USER_COLUMNS = (
    "username, password_hash, practitioner_role, organization, practitioner, status, created,"
    " changed"
)


@dataclass(frozen=True, slots=True)
class ClientRow:
    """A registered client as stored (``server/auth/clients.py`` gives it meaning)."""

    client_id: str
    name: str
    organization: str | None
    scope: str
    jwks: str | None
    jwks_url: str | None
    role: str | None
    purposes: str
    algorithms: str
    status: str
    created: int
    revoked: int | None = None
    redirect_uris: str | None = None  # a launch app's, as a JSON array
    public: bool = False


@dataclass(frozen=True, slots=True)
class UserRow:
    """A user who signs in to approve launches (``server/auth/users.py``)."""

    username: str
    password_hash: str
    practitioner_role: str
    organization: str
    practitioner: str | None
    status: str
    created: int
    changed: int


def _client(row: Any) -> ClientRow:
    return ClientRow(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        row[6],
        row[7],
        row[8],
        row[9],
        int(row[10]),
        None if row[11] is None else int(row[11]),
        row[12],
        bool(row[13]),
    )


class SqlAuth:
    """Clients, signing keys and assertion ``jti``s on one database."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect

    # -- clients ------------------------------------------------------------------------------

    def add_client(self, client: ClientRow) -> None:
        with self._dialect.autocommit() as conn:
            conn.execute(
                f"INSERT INTO auth_client ({_CLIENT_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    client.client_id,
                    client.name,
                    client.organization,
                    client.scope,
                    client.jwks,
                    client.jwks_url,
                    client.role,
                    client.purposes,
                    client.algorithms,
                    client.status,
                    client.created,
                    client.revoked,
                    client.redirect_uris,
                    1 if client.public else 0,
                ),
            )

    def client(self, client_id: str) -> ClientRow | None:
        with self._dialect.autocommit() as conn:
            row = conn.execute(
                f"SELECT {_CLIENT_COLUMNS} FROM auth_client WHERE client_id = ?", (client_id,)
            ).fetchone()
        return None if row is None else _client(row)

    def clients(self) -> list[ClientRow]:
        with self._dialect.autocommit() as conn:
            rows = conn.execute(
                f"SELECT {_CLIENT_COLUMNS} FROM auth_client ORDER BY created, client_id"
            ).fetchall()
        return [_client(row) for row in rows]

    def active(self, client_id: str) -> bool:
        """Whether ``client_id`` is registered and not revoked (every request asks)."""
        with self._dialect.reading() as conn:
            row = conn.execute(
                "SELECT status FROM auth_client WHERE client_id = ?", (client_id,)
            ).fetchone()
        return row is not None and row[0] == "active"

    def revoke(self, client_id: str) -> bool:
        """Revoke an active client; False if there is no such active client."""
        with self._dialect.autocommit() as conn:
            rows = conn.execute(
                "UPDATE auth_client SET status = 'revoked', revoked = ?"
                " WHERE client_id = ? AND status = 'active' RETURNING client_id",
                (now_us(), client_id),
            ).fetchall()
        return bool(rows)

    # -- users --------------------------------------------------------------------------------

    def add_user(self, user: UserRow) -> bool:
        """Store a new user; False if the username is taken."""
        with self._dialect.autocommit() as conn:
            rows = conn.execute(
                f"INSERT INTO auth_user ({_USER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (username) DO NOTHING RETURNING username",
                (
                    user.username,
                    user.password_hash,
                    user.practitioner_role,
                    user.organization,
                    user.practitioner,
                    user.status,
                    user.created,
                    user.changed,
                ),
            ).fetchall()
        return bool(rows)

    def user(self, username: str) -> UserRow | None:
        with self._dialect.autocommit() as conn:
            row = conn.execute(
                f"SELECT {_USER_COLUMNS} FROM auth_user WHERE username = ?", (username,)
            ).fetchone()
        if row is None:
            return None
        return UserRow(row[0], row[1], row[2], row[3], row[4], row[5], int(row[6]), int(row[7]))

    def update_user(self, username: str, *, status: str | None = None,
                    password_hash: str | None = None) -> bool:
        """Set a user's status and/or password hash; False if there is no such user."""
        sets: list[str] = ["changed = ?"]
        args: list[Any] = [now_us()]
        if status is not None:
            sets.append("status = ?")
            args.append(status)
        if password_hash is not None:
            sets.append("password_hash = ?")
            args.append(password_hash)
        with self._dialect.autocommit() as conn:
            rows = conn.execute(
                f"UPDATE auth_user SET {', '.join(sets)} WHERE username = ? RETURNING username",
                (*args, username),
            ).fetchall()
        return bool(rows)

    # -- assertions ---------------------------------------------------------------------------

    def use_assertion(self, client_id: str, jti: str, expires_us: int) -> bool:
        """Record ``jti`` for ``client_id`` if the client is active and the ``jti`` unused;
        False otherwise (a replay, or a client revoked meanwhile)."""
        with self._dialect.autocommit() as conn:
            rows = conn.execute(
                "INSERT INTO auth_jti (client_id, jti, expires)"
                " SELECT client_id, ?, ? FROM auth_client WHERE client_id = ? AND status = 'active'"
                " ON CONFLICT (client_id, jti) DO NOTHING RETURNING jti",
                (jti, expires_us, client_id),
            ).fetchall()
        return bool(rows)

    def prune_assertions(self, before_us: int) -> int:
        """Forget the ``jti``s that expired before ``before_us`` (their assertions are refused
        for their ``exp`` alone)."""
        with self._dialect.autocommit() as conn:
            rows = conn.execute(
                "DELETE FROM auth_jti WHERE expires < ? RETURNING jti", (before_us,)
            ).fetchall()
        return len(rows)

    # -- signing keys -------------------------------------------------------------------------

    def add_key(self, kid: str, private_jwk: str, created_us: int) -> None:
        with self._dialect.autocommit() as conn:
            conn.execute(
                "INSERT INTO auth_signing_key (kid, private_jwk, created) VALUES (?, ?, ?)"
                " ON CONFLICT (kid) DO NOTHING",
                (kid, private_jwk, created_us),
            )

    def keys(self) -> list[tuple[str, str, int, int | None]]:
        """Every signing key, newest first: (kid, private JWK, created, retired)."""
        with self._dialect.autocommit() as conn:
            rows: Sequence[Any] = conn.execute(
                "SELECT kid, private_jwk, created, retired FROM auth_signing_key"
                " ORDER BY created DESC, kid"
            ).fetchall()
        return [
            (row[0], row[1], int(row[2]), None if row[3] is None else int(row[3])) for row in rows
        ]

    def retire_keys(self, keep: str, at_us: int) -> None:
        """Mark every key but ``keep`` retired at ``at_us`` (they still verify for a token's
        lifetime; ``drop_keys`` forgets them later)."""
        with self._dialect.autocommit() as conn:
            conn.execute(
                "UPDATE auth_signing_key SET retired = ? WHERE kid <> ? AND retired IS NULL",
                (at_us, keep),
            )

    def drop_keys(self, retired_before_us: int) -> int:
        with self._dialect.autocommit() as conn:
            rows = conn.execute(
                "DELETE FROM auth_signing_key WHERE retired IS NOT NULL AND retired < ?"
                " RETURNING kid",
                (retired_before_us,),
            ).fetchall()
        return len(rows)
