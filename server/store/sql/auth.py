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
from typing import Any

from server.fhir.instant import now_us
from server.store.base import ClientRow, CodeRow, GrantRow, RequestRow, UserRow
from server.store.sql.auth_stamp import Statuses
from server.store.sql.dialect import Dialect, SQLiteDialect

_CLIENT_COLUMNS = (
    "client_id, name, organization, scope, jwks, jwks_url, role, purposes, algorithms, status,"
    " created, revoked, redirect_uris, public"
)
_USER_COLUMNS = (
    "username, password_hash, practitioner_role, organization, practitioner, status, created,"
    " changed"
)


_GRANT_COLUMNS = "g.grant_id, g.client_id, g.username, g.scope, g.patient, g.status, g.expires"


def _grant(row: Any) -> GrantRow:
    return GrantRow(
        row[0], row[1], row[2], row[3], row[4], row[5], None if row[6] is None else int(row[6])
    )


_REQUEST_COLUMNS = (
    "id, client_id, redirect_uri, scope, state, code_challenge, csrf, username, expires"
)
#: back-off after failed sign-ins: none for the first ones, then doubling, at most 15 min
FREE_FAILURES = 5
MAX_BACKOFF_S = 900
FORGET_AFTER_US = 3600 * 10**6  # failures older than an hour are forgotten


def backoff_s(failures: int) -> int:
    """Seconds a key is blocked after its ``failures``-th failure."""
    if failures < FREE_FAILURES:
        return 0
    return int(min(2 ** (failures - FREE_FAILURES), MAX_BACKOFF_S))


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
        # SQLite: active answers kept under a stamp every process on the store moves
        self._statuses = Statuses(
            dialect.path + "-auth" if isinstance(dialect, SQLiteDialect) else None
        )

    def close(self) -> None:
        self._statuses.close()

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
        """Whether ``client_id`` is registered and not revoked (every request asks; SQLite
        answers from the kept answer while no status changed, ``auth_stamp.py``)."""
        return self._statuses.active(("client", client_id), lambda: self._active(client_id))

    def _active(self, client_id: str) -> bool:
        with self._dialect.reading() as conn:
            row = conn.execute(
                "SELECT status FROM auth_client WHERE client_id = ?", (client_id,)
            ).fetchone()
        return row is not None and row[0] == "active"

    def revoke(self, client_id: str) -> bool:
        """Revoke an active client; False if there is no such active client."""
        with self._statuses.changing(), self._dialect.autocommit() as conn:
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

    def update_user(
        self, username: str, *, status: str | None = None, password_hash: str | None = None
    ) -> bool:
        """Set a user's status and/or password hash; False if there is no such user."""
        sets: list[str] = ["changed = ?"]
        args: list[Any] = [now_us()]
        if status is not None:
            sets.append("status = ?")
            args.append(status)
        if password_hash is not None:
            sets.append("password_hash = ?")
            args.append(password_hash)
        with self._statuses.changing(), self._dialect.autocommit() as conn:
            rows = conn.execute(
                f"UPDATE auth_user SET {', '.join(sets)} WHERE username = ? RETURNING username",
                (*args, username),
            ).fetchall()
        return bool(rows)

    # -- the launch: requests, grants, codes, throttling --------------------------------------

    def add_request(self, r: RequestRow) -> None:
        with self._dialect.autocommit() as conn:
            conn.execute(
                f"INSERT INTO auth_request ({_REQUEST_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    r.id,
                    r.client_id,
                    r.redirect_uri,
                    r.scope,
                    r.state,
                    r.code_challenge,
                    r.csrf,
                    r.username,
                    r.expires,
                ),
            )
            conn.execute("DELETE FROM auth_request WHERE expires < ?", (now_us(),))

    def request(self, id: str) -> RequestRow | None:
        with self._dialect.autocommit() as conn:
            row = conn.execute(
                f"SELECT {_REQUEST_COLUMNS} FROM auth_request WHERE id = ?", (id,)
            ).fetchone()
        if row is None:
            return None
        return RequestRow(
            row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], int(row[8])
        )

    def signed_in(self, id: str, username: str, csrf: str) -> None:
        """The request's user has signed in: remember who, with a new CSRF token."""
        with self._dialect.autocommit() as conn:
            conn.execute(
                "UPDATE auth_request SET username = ?, csrf = ? WHERE id = ?", (username, csrf, id)
            )

    def end_request(self, id: str) -> bool:
        """Forget a pending request; False if it was already gone (a second approval)."""
        with self._dialect.autocommit() as conn:
            rows = conn.execute(
                "DELETE FROM auth_request WHERE id = ? RETURNING id", (id,)
            ).fetchall()
        return bool(rows)

    def add_code(
        self,
        grant: tuple[str, str, str, str, str | None],
        code_hash: str,
        redirect_uri: str,
        challenge: str,
        expires_us: int,
    ) -> None:
        """A grant (id, client, username, scope, patient), then its code (a grant without a
        code, should the second statement fail, is never reached)."""
        grant_id, client_id, username, scope, patient = grant
        with self._dialect.autocommit() as conn:
            conn.execute(
                "INSERT INTO auth_grant (grant_id, client_id, username, scope, patient, status,"
                " created) VALUES (?, ?, ?, ?, ?, 'active', ?)",
                (grant_id, client_id, username, scope, patient, now_us()),
            )
            conn.execute(
                "INSERT INTO auth_code (code_hash, grant_id, client_id, redirect_uri,"
                " code_challenge, expires) VALUES (?, ?, ?, ?, ?, ?)",
                (code_hash, grant_id, client_id, redirect_uri, challenge, expires_us),
            )

    def use_code(self, code_hash: str) -> tuple[CodeRow | None, bool]:
        """Mark a code used: (its row, True) the first time; (its row, False) when it had
        been used before (a replay); (None, False) for an unknown code."""
        select = (
            "SELECT c.grant_id, c.client_id, c.redirect_uri, c.code_challenge, c.expires,"
            " g.username, g.scope, g.patient FROM auth_code c"
            " JOIN auth_grant g ON g.grant_id = c.grant_id WHERE c.code_hash = ?"
        )
        with self._dialect.autocommit() as conn:
            fresh = conn.execute(
                "UPDATE auth_code SET used = 1 WHERE code_hash = ? AND used = 0"
                " RETURNING code_hash",
                (code_hash,),
            ).fetchall()
            row = conn.execute(select, (code_hash,)).fetchone()
            conn.execute("DELETE FROM auth_code WHERE expires < ?", (now_us() - 3600 * 10**6,))
        if row is None:
            return None, False
        code = CodeRow(row[0], row[1], row[2], row[3], int(row[4]), row[5], row[6], row[7])
        return code, bool(fresh)

    def add_refresh(self, token_hash: str, grant_id: str, expires_us: int | None = None) -> None:
        """A new refresh token of a grant (``expires_us``: set the grant's absolute lifetime,
        for its first token)."""
        with self._dialect.autocommit() as conn:
            if expires_us is not None:
                conn.execute(
                    "UPDATE auth_grant SET expires = ? WHERE grant_id = ?", (expires_us, grant_id)
                )
            conn.execute(
                "INSERT INTO auth_refresh (token_hash, grant_id, status, created)"
                " VALUES (?, ?, 'active', ?)",
                (token_hash, grant_id, now_us()),
            )

    def use_refresh(self, token_hash: str) -> tuple[GrantRow | None, bool]:
        """Rotate a refresh token: (its grant, True) the first time; (its grant, False) when
        it had been rotated before (a reuse); (None, False) for an unknown token."""
        with self._dialect.autocommit() as conn:
            fresh = conn.execute(
                "UPDATE auth_refresh SET status = 'rotated' WHERE token_hash = ?"
                " AND status = 'active' RETURNING token_hash",
                (token_hash,),
            ).fetchall()
            row = conn.execute(
                f"SELECT {_GRANT_COLUMNS} FROM auth_grant g JOIN auth_refresh r"
                " ON r.grant_id = g.grant_id WHERE r.token_hash = ?",
                (token_hash,),
            ).fetchone()
        return (None, False) if row is None else (_grant(row), bool(fresh))

    def grant_of_refresh(self, token_hash: str) -> GrantRow | None:
        with self._dialect.autocommit() as conn:
            row = conn.execute(
                f"SELECT {_GRANT_COLUMNS} FROM auth_grant g JOIN auth_refresh r"
                " ON r.grant_id = g.grant_id WHERE r.token_hash = ?",
                (token_hash,),
            ).fetchone()
        return None if row is None else _grant(row)

    def grant(self, grant_id: str) -> GrantRow | None:
        with self._dialect.autocommit() as conn:
            row = conn.execute(
                f"SELECT {_GRANT_COLUMNS} FROM auth_grant g WHERE g.grant_id = ?", (grant_id,)
            ).fetchone()
        return None if row is None else _grant(row)

    def revoke_grant(self, grant_id: str) -> None:
        with self._statuses.changing(), self._dialect.autocommit() as conn:
            conn.execute("UPDATE auth_grant SET status = 'revoked' WHERE grant_id = ?", (grant_id,))
            conn.execute(
                "UPDATE auth_refresh SET status = 'revoked' WHERE grant_id = ?", (grant_id,)
            )

    def grant_active(self, client_id: str, grant_id: str) -> bool:
        """Whether the grant, its client and its user are all still active (every request
        of a launch token asks; one indexed read, or the kept answer as in ``active``)."""
        return self._statuses.active(
            ("grant", client_id, grant_id), lambda: self._grant_active(client_id, grant_id)
        )

    def _grant_active(self, client_id: str, grant_id: str) -> bool:
        with self._dialect.reading() as conn:
            row = conn.execute(
                "SELECT 1 FROM auth_grant g JOIN auth_client c ON c.client_id = g.client_id"
                " JOIN auth_user u ON u.username = g.username"
                " WHERE g.grant_id = ? AND g.client_id = ? AND g.status = 'active'"
                " AND c.status = 'active' AND u.status = 'active'",
                (grant_id, client_id),
            ).fetchone()
        return row is not None

    def blocked_until(self, keys: Sequence[str]) -> int:
        """The latest time (µs) any of ``keys`` is blocked until (0: none)."""
        marks = ", ".join("?" for _ in keys)
        with self._dialect.autocommit() as conn:
            row = conn.execute(
                f"SELECT MAX(blocked_until) FROM auth_throttle WHERE key IN ({marks})",
                tuple(keys),
            ).fetchone()
        return int(row[0]) if row is not None and row[0] is not None else 0

    def failed(self, keys: Sequence[str], now: int) -> None:
        """A failed sign-in for each of ``keys``: one more failure (forgotten after an hour
        without one), and the back-off it earns."""
        with self._dialect.autocommit() as conn:
            for key in keys:
                row = conn.execute(
                    "SELECT failures, updated FROM auth_throttle WHERE key = ?", (key,)
                ).fetchone()
                failures = 1
                if row is not None and now - int(row[1]) < FORGET_AFTER_US:
                    failures = int(row[0]) + 1
                until = now + backoff_s(failures) * 10**6
                conn.execute(
                    "INSERT INTO auth_throttle (key, failures, blocked_until, updated)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
                    " failures = excluded.failures, blocked_until = excluded.blocked_until,"
                    " updated = excluded.updated",
                    (key, failures, until, now),
                )

    def clear_throttle(self, key: str) -> None:
        with self._dialect.autocommit() as conn:
            conn.execute("DELETE FROM auth_throttle WHERE key = ?", (key,))

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

    def add_first_key(self, kid: str, private_jwk: str, created_us: int) -> bool:
        """Add the key unless one that signs exists already: one statement under the store's
        write lock, so workers starting together on an empty store agree on one key. True
        when this key was added."""
        with self._dialect.writing() as conn:
            rows = conn.execute(
                "INSERT INTO auth_signing_key (kid, private_jwk, created) SELECT ?, ?, ?"
                " WHERE NOT EXISTS (SELECT 1 FROM auth_signing_key WHERE retired IS NULL)"
                " RETURNING kid",
                (kid, private_jwk, created_us),
            ).fetchall()
        return bool(rows)

    def has_key(self, kid: str) -> bool:
        with self._dialect.autocommit() as conn:
            row = conn.execute(
                "SELECT 1 FROM auth_signing_key WHERE kid = ?", (kid,)
            ).fetchone()
        return row is not None

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
