"""Schema migrations, applied in order at start-up; the applied version is kept in the database.

Statements use placeholders that the dialect fills: ``{blob}``, ``{bigint}``, ``{serial}``
(SQLite's serial is its rowid: history rows are never deleted, so it only grows), ``{text}``
(text compared bytewise: PostgreSQL's ``COLLATE "C"``, SQLite's plain TEXT) and ``{double}``.
Append new migrations; never edit one that has shipped.

The search index tables (migration 2) hold the rows of ``server/search/rows.py``, one table per
search parameter type, each row keyed by its resource (``rtype``, ``id``), the parameter key
and the composite group (``grp``). Each table has a lookup index beginning with
``(rtype, param, <value columns>)``, so every search clause is an index range scan, and an
owner index ``(rtype, id, param)`` for deleting a resource's rows, sort keys and the
per-resource checks of ``:not`` and ``:missing``. Resource keys and reference targets keep the
``resource`` table's collation (they are joined with it); values compare bytewise.

Migration 3 adds ``async_job``: asynchronous jobs, visible to every worker process
(``sql/jobs.py``, ``server/jobs.py``).

Migration 4 adds the outbox (``sql/outbox.py``): one row per committed version, written in the
version's own transaction, and the consumers' cursors. Its sequence is the serial (SQLite's
rowid: pruning never deletes the newest row, so a number is never handed out twice).
It is also indexed by resource, for the events of one resource (who changed it:
``Task/[id]/$transitions``).

Migration 5 (``_COVERING``) makes the indexes cover the search plans (``sql/query.py``):
every lookup index ends with the resource ``id`` and the ``search_reference_target`` index with
the source's ``(rtype, id)``, so a clause's matching keys are read, counted (``_total``) and
followed along chains from the index alone; every owner index carries the value columns after
``(rtype, id, param)``, so the per-resource probe of a clause (and a sort value) reads no table
row either, and stays the cheapest index for it in PostgreSQL's estimates. The date, number
and quantity tables get a partial ``*_inverted`` index of the rows whose ``low > high``, so a
plan reads the ordered rows' ranges bounded on both sides and the inverted ones apart.

Migration 7 adds the access facts of every version (``labels``, ``owners`` on ``resource`` and
``resource_history``, ``search/access_facts.py``): written with each version from its index
rows, read by the door's per-resource decision. Versions stored before it have NULL there
(the door hides them from restricted principals) until ``calaim-fhir reindex`` fills them in
(``sql/reindex.py``, ``fill_facts``).

Migration 6 (PostgreSQL only) adds extended statistics on each index table's lookup columns,
whose values depend on each other (a ``param`` belongs to one ``rtype``; a code to a param), so
the planner's row estimates, which ``_total=estimate`` reports, are not off by orders of
magnitude; it analyzes the database once, and autovacuum keeps the statistics from then on.

Migration 8 adds the tables of SMART backend services (``sql/auth.py``): the registered
clients (``auth_client``; looked up by primary key on every request, so a revocation stops
its tokens at the next request on every worker), the server's token signing keys
(``auth_signing_key``) and the client assertions' ``jti`` values (``auth_jti``, unique per
client: a replay is refused on every worker; pruned after expiry).

Migration 9 adds launch apps' redirect URIs and public flag to ``auth_client``, the users
who sign in to a launch (``auth_user``), pending authorization requests (``auth_request``),
approved grants (``auth_grant``, with the absolute lifetime of their refresh tokens),
refresh tokens (``auth_refresh``), authorization codes (``auth_code``) and sign-in throttling
(``auth_throttle``).

Migration 10 adds ``access_grant``: the care relationships of members and organisations
(``server/auth/grants.py``), replaced with every version of their source resource in its own
transaction and read by the relationship policy's clause (``GrantClause``) inside every
narrowed statement; ``calaim-fhir reindex`` rebuilds them (``sql/reindex.py``,
``rebuild_grants``).

Migration 11 adds the subscription tables (``sql/subscriptions.py``): each subscription's
delivery state (status, numbering, cursor, retries, lease), its numbered events (kept for
``$events``) and its write-only channel header values.

Migration 12 adds the audit trail (``sql/audit.py``): ``audit_event``, one append-only row per
audited interaction (reads and searches batched off the request path, writes copied from the
outbox by its ``audit`` consumer), and ``audit_ref``, the references each row is searched by
(its entities, patients and agents).

Migration 13 numbers a subscription's events in runs (``sql/subscriptions.py``): the matcher
writes, per batch, each distinct list of matched events once (``subscription_match``) and, per
subscription, one row naming its run of numbers over that list (``subscription_run``) instead
of one row per (subscription, event); the rows of ``subscription_event`` move over as runs of
one event each.

Migration 14 (``_OWNED``) writes into every search index row its resource's member and
insertion order: ``member``, the one Patient compartment its access facts name when it carries
no security label (``access_facts.index_member``; NULL when it belongs to several members or
none, is labelled, or its facts are unknown), and ``seq``, its ``created_seq``; both written
with the rows, in the version's transaction, and appended to each lookup index, so a narrowed
search driven by a clause reads its visible matches, counted and in insertion order, from the
index alone (``sql/query.py``, ``Plan.owned_matches``). Existing rows are filled from
their resource rows; a NULL member is always tested on the resource row as before.
"""

from __future__ import annotations

POSTGRESQL_ONLY = "-- postgresql only\n"  # a statement that starts so is skipped on SQLite


def _table(name: str, columns: str, *lookups: tuple[str, str]) -> list[str]:
    """A search index table with its owner index and its lookup indexes."""
    statements = [
        f"""CREATE TABLE {name} (
            rtype TEXT NOT NULL,
            id TEXT NOT NULL,
            param TEXT NOT NULL,
            grp INTEGER NOT NULL DEFAULT 0,
            {columns}
        )""",
        f"CREATE INDEX {name}_owner ON {name} (rtype, id, param)",
    ]
    statements.extend(
        f"CREATE INDEX {name}_{suffix} ON {name} ({cols})" for suffix, cols in lookups
    )
    return statements


# the lookup indexes of migration 2 (after rtype, param) and the value columns the owner
# indexes (after rtype, id, param) carry since ``_COVERING``
_VALUES = {
    "search_token": ("code, system", "code, system"),
    "search_string": ("value", "value"),
    "search_reference": ("target_id, target_type, url", "target_type, target_id, url"),
    "search_date": ("low, high", "low, high"),
    "search_number": ("low, high", "low, high"),
    "search_quantity": ("low, high", "low, high"),
    "search_uri": ("uri", "uri"),
}
_COVERING = [
    *(
        statement
        for table, (lookup, owned) in _VALUES.items()
        for statement in (
            f"DROP INDEX {table}_lookup",
            f"CREATE INDEX {table}_lookup ON {table} (rtype, param, {lookup}, id)",
            f"DROP INDEX {table}_owner",
            f"CREATE INDEX {table}_owner ON {table} (rtype, id, param, {owned})",
        )
    ),
    # the rows whose range is inverted (a Period ending before it starts): searched apart, so
    # the lookup index can bound the others' ranges on both sides
    *(
        f"CREATE INDEX {table}_inverted ON {table} (rtype, param, low, high, id) WHERE low > high"
        for table in ("search_date", "search_number", "search_quantity")
    ),
    "DROP INDEX search_reference_target",
    "CREATE INDEX search_reference_target ON search_reference"
    " (target_type, target_id, param, rtype, id)",
]

# the member of a version as ``access_facts.index_member`` computes it, from its row
# ``r``'s facts (a literal newline separates their values)
_MEMBER = (
    "CASE WHEN r.labels = '' AND substr(r.owners, 1, 8) = 'Patient/'"
    " AND replace(r.owners, '\n', '') = r.owners THEN substr(r.owners, 9) END"
)


def _owned(table: str, lookup: str) -> list[str]:
    """Migration 14 for one index table: its member and seq columns, filled from the
    resource rows, at the end of its lookup index."""
    of = f"FROM resource r WHERE r.rtype = {table}.rtype AND r.id = {table}.id"
    return [
        f"ALTER TABLE {table} ADD COLUMN member TEXT",
        f"ALTER TABLE {table} ADD COLUMN seq {{bigint}}",
        f"UPDATE {table} SET member = (SELECT {_MEMBER} {of}), seq = (SELECT r.created_seq {of})",
        f"DROP INDEX {table}_lookup",
        f"CREATE INDEX {table}_lookup ON {table} (rtype, param, {lookup}, id, member, seq)",
    ]


_OWNED = [s for table, (lookup, _) in _VALUES.items() for s in _owned(table, lookup)]

MIGRATIONS: list[list[str]] = [
    [
        # the current version of every resource (a deleted resource keeps its row, body NULL)
        """CREATE TABLE resource (
            rtype TEXT NOT NULL,
            id TEXT NOT NULL,
            version INTEGER NOT NULL,
            last_updated {bigint} NOT NULL,
            deleted SMALLINT NOT NULL,
            seq {bigint} NOT NULL,
            created_seq {bigint} NOT NULL,
            body {blob},
            PRIMARY KEY (rtype, id)
        )""",
        "CREATE INDEX resource_type_order ON resource (rtype, created_seq)",
        "CREATE INDEX resource_type_updated ON resource (rtype, last_updated)",
        # every version, in commit order
        """CREATE TABLE resource_history (
            seq {serial},
            rtype TEXT NOT NULL,
            id TEXT NOT NULL,
            version INTEGER NOT NULL,
            last_updated {bigint} NOT NULL,
            deleted SMALLINT NOT NULL,
            method TEXT NOT NULL,
            body {blob}
        )""",
        "CREATE UNIQUE INDEX resource_history_version ON resource_history (rtype, id, version)",
        "CREATE INDEX resource_history_type ON resource_history (rtype, seq)",
        "CREATE INDEX resource_history_updated ON resource_history (last_updated)",
        # token search index (identifier); the search tables of later migrations sit beside it
        """CREATE TABLE search_token (
            rtype TEXT NOT NULL,
            id TEXT NOT NULL,
            param TEXT NOT NULL,
            system TEXT NOT NULL,
            code TEXT NOT NULL
        )""",
        "CREATE INDEX search_token_lookup ON search_token (rtype, param, code, system)",
        "CREATE INDEX search_token_owner ON search_token (rtype, id)",
        # one row: the last stamp handed out; writers take it in commit order
        "CREATE TABLE clock (id INTEGER PRIMARY KEY, ts {bigint} NOT NULL)",
        "INSERT INTO clock (id, ts) VALUES (1, 0)",
    ],
    [
        # search_token again, with the composite group and bytewise values (its rows are kept)
        "ALTER TABLE search_token RENAME TO search_token_v1",
        "DROP INDEX search_token_lookup",
        "DROP INDEX search_token_owner",
        *_table(
            "search_token",
            "system {text} NOT NULL, code {text} NOT NULL",
            ("lookup", "rtype, param, code, system"),
        ),
        "INSERT INTO search_token (rtype, id, param, grp, system, code)"
        " SELECT rtype, id, param, 0, system, code FROM search_token_v1",
        "DROP TABLE search_token_v1",
        *_table(
            "search_string",
            "value {text} NOT NULL, exact {text} NOT NULL",
            ("lookup", "rtype, param, value"),
        ),
        # a url row has empty target_type and target_id: the lookup index finds it by url
        *_table(
            "search_reference",
            "target_type TEXT NOT NULL, target_id TEXT NOT NULL, url {text} NOT NULL",
            ("lookup", "rtype, param, target_id, target_type, url"),
            ("target", "target_type, target_id, param"),
        ),
        *_table(
            "search_date",
            "low {bigint} NOT NULL, high {bigint} NOT NULL",
            ("lookup", "rtype, param, low, high"),
        ),
        *_table(
            "search_number",
            "low {double} NOT NULL, high {double} NOT NULL",
            ("lookup", "rtype, param, low, high"),
        ),
        *_table(
            "search_quantity",
            "system {text} NOT NULL, code {text} NOT NULL, unit {text} NOT NULL,"
            " low {double} NOT NULL, high {double} NOT NULL",
            ("lookup", "rtype, param, low, high"),
        ),
        *_table("search_uri", "uri {text} NOT NULL", ("lookup", "rtype, param, uri")),
        # which definition (digest) each search parameter's rows were built with, for reindexing
        """CREATE TABLE search_param_state (
            url TEXT PRIMARY KEY,
            digest TEXT NOT NULL,
            state TEXT NOT NULL,
            cursor {bigint}
        )""",
    ],
    [
        # asynchronous jobs (Prefer: respond-async), shared by every worker process
        # (sql/jobs.py): state running | completed | failed | cancelled; request is JSON
        # (method, url); result the JSON of the result resource or of the failure's
        # OperationOutcome, status its HTTP status; updated is the worker's last heartbeat
        """CREATE TABLE async_job (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            state TEXT NOT NULL,
            request TEXT NOT NULL,
            principal TEXT NOT NULL,
            unit TEXT NOT NULL,
            done INTEGER NOT NULL,
            total INTEGER,
            created {bigint} NOT NULL,
            updated {bigint} NOT NULL,
            expires {bigint} NOT NULL,
            owner TEXT NOT NULL,
            result {blob},
            status INTEGER
        )""",
        "CREATE INDEX async_job_expires ON async_job (expires)",
    ],
    [
        # one row per committed version (the outbox); seq increases in commit order
        """CREATE TABLE outbox (
            seq {serial},
            rtype TEXT NOT NULL,
            id TEXT NOT NULL,
            version INTEGER NOT NULL,
            previous INTEGER,
            interaction TEXT NOT NULL,
            committed {bigint} NOT NULL,
            client TEXT,
            organization TEXT,
            user_id TEXT,
            request_id TEXT,
            transaction_id TEXT NOT NULL
        )""",
        "CREATE INDEX outbox_committed ON outbox (committed)",
        # the events of one resource (who changed it: Task/[id]/$transitions)
        "CREATE INDEX outbox_resource ON outbox (rtype, id, seq)",
        # the registered consumers of the outbox and how far each has read
        """CREATE TABLE outbox_consumer (
            name TEXT PRIMARY KEY,
            cursor {bigint} NOT NULL,
            updated {bigint} NOT NULL
        )""",
    ],
    # lookup and target indexes that cover the search plans' key sources (see above)
    _COVERING,
    # PostgreSQL: statistics of the lookup columns taken together, so the planner's estimate of
    # a clause's rows (``_total=estimate``) sees that param and value depend on the type
    [
        *(
            POSTGRESQL_ONLY
            + f"CREATE STATISTICS {table}_lookup_stats (dependencies, mcv, ndistinct)"
            f" ON {columns} FROM {table}"
            for table, columns in (
                ("search_token", "rtype, param, code"),
                ("search_string", "rtype, param, value"),
                ("search_reference", "rtype, param, target_type"),
                ("search_date", "rtype, param"),
                ("search_number", "rtype, param"),
                ("search_quantity", "rtype, param, code"),
                ("search_uri", "rtype, param, uri"),
            )
        ),
        POSTGRESQL_ONLY + "ANALYZE",
    ],
    # the access facts of every version (``search/access_facts.py``), for the door's
    # per-resource decision; NULL until ``calaim-fhir reindex`` fills in the versions stored
    # before this migration
    [
        f"ALTER TABLE {table} ADD COLUMN {column} {{text}}"
        for table in ("resource", "resource_history")
        for column in ("labels", "owners")
    ],
    [
        # SMART backend-services clients (sql/auth.py); scope is the space-separated grant,
        # jwks the JWKS by value (JSON) or jwks_url the registered jwks_uri, algorithms the
        # comma-separated assertion algorithms it may use; status active | revoked
        """CREATE TABLE auth_client (
            client_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            organization TEXT,
            scope TEXT NOT NULL,
            jwks TEXT,
            jwks_url TEXT,
            role TEXT,
            purposes TEXT NOT NULL,
            algorithms TEXT NOT NULL,
            status TEXT NOT NULL,
            created {bigint} NOT NULL,
            revoked {bigint}
        )""",
        # the server's access-token signing keys (private JWK as JSON); the newest signs
        """CREATE TABLE auth_signing_key (
            kid TEXT PRIMARY KEY,
            private_jwk TEXT NOT NULL,
            created {bigint} NOT NULL,
            retired {bigint}
        )""",
        # every client assertion's jti until it expires: a replay violates the key
        """CREATE TABLE auth_jti (
            client_id TEXT NOT NULL,
            jti TEXT NOT NULL,
            expires {bigint} NOT NULL,
            PRIMARY KEY (client_id, jti)
        )""",
        "CREATE INDEX auth_jti_expires ON auth_jti (expires)",
    ],
    [
        # launch apps (SMART App Launch): their registered redirect URIs (a JSON array,
        # compared as exact strings) and whether they are public (no key: PKCE only)
        "ALTER TABLE auth_client ADD COLUMN redirect_uris TEXT",
        "ALTER TABLE auth_client ADD COLUMN public INTEGER NOT NULL DEFAULT 0",
        # the people who sign in to approve a launch; username lower-cased (unique),
        # password_hash a self-describing scrypt hash (server/auth/users.py), status
        # active | disabled; the PractitionerRole gives the organisation and the Practitioner
        """CREATE TABLE auth_user (
            username TEXT PRIMARY KEY,
            password_hash TEXT NOT NULL,
            practitioner_role TEXT NOT NULL,
            organization TEXT NOT NULL,
            practitioner TEXT,
            status TEXT NOT NULL,
            created {bigint} NOT NULL,
            changed {bigint} NOT NULL
        )""",
        # a pending authorization request (the login and approval pages), found by the
        # session cookie's id; csrf is bound to it and changes at sign-in
        """CREATE TABLE auth_request (
            id TEXT PRIMARY KEY,
            client_id TEXT NOT NULL,
            redirect_uri TEXT NOT NULL,
            scope TEXT NOT NULL,
            state TEXT NOT NULL,
            code_challenge TEXT NOT NULL,
            csrf TEXT NOT NULL,
            username TEXT,
            expires {bigint} NOT NULL
        )""",
        # what a user approved for a client: every token issued from it names it (gid), and
        # each request checks it is still active (a reused code revokes it)
        """CREATE TABLE auth_grant (
            grant_id TEXT PRIMARY KEY,
            client_id TEXT NOT NULL,
            username TEXT NOT NULL,
            scope TEXT NOT NULL,
            patient TEXT,
            status TEXT NOT NULL,
            created {bigint} NOT NULL,
            expires {bigint}
        )""",
        # refresh tokens, by the SHA-256 of the token; a grant is one family: a token is
        # rotated on use, and presenting a rotated one revokes the grant
        """CREATE TABLE auth_refresh (
            token_hash TEXT PRIMARY KEY,
            grant_id TEXT NOT NULL,
            status TEXT NOT NULL,
            created {bigint} NOT NULL
        )""",
        "CREATE INDEX auth_refresh_grant ON auth_refresh (grant_id)",
        # authorization codes, by the SHA-256 of the code: single use, short-lived
        """CREATE TABLE auth_code (
            code_hash TEXT PRIMARY KEY,
            grant_id TEXT NOT NULL,
            client_id TEXT NOT NULL,
            redirect_uri TEXT NOT NULL,
            code_challenge TEXT NOT NULL,
            expires {bigint} NOT NULL,
            used INTEGER NOT NULL DEFAULT 0
        )""",
        # failed sign-ins per account and per source, with the back-off they earned
        """CREATE TABLE auth_throttle (
            key TEXT PRIMARY KEY,
            failures INTEGER NOT NULL,
            blocked_until {bigint} NOT NULL,
            updated {bigint} NOT NULL
        )""",
    ],
    [
        # the care relationships of members and organisations (``auth/grants.py``), rewritten
        # with every version of their source resource; scope_type/scope_id empty for a
        # relationship with the member, else the one resource the row reaches
        """CREATE TABLE access_grant (
            source_type TEXT NOT NULL,
            source_id TEXT NOT NULL,
            member TEXT NOT NULL,
            organization TEXT NOT NULL,
            kind TEXT NOT NULL,
            period_start {bigint},
            period_end {bigint},
            scope_type TEXT NOT NULL,
            scope_id TEXT NOT NULL
        )""",
        "CREATE INDEX access_grant_member ON access_grant (organization, member, kind)",
        "CREATE INDEX access_grant_scope ON access_grant (organization, scope_type, scope_id)",
        "CREATE INDEX access_grant_source ON access_grant (source_type, source_id)",
    ],
    [
        # per-subscription delivery state (sql/subscriptions.py): status requested | active |
        # error | off; events: numbers handed out; delivered: the highest acknowledged
        """CREATE TABLE subscription_state (
            id TEXT PRIMARY KEY,
            owner TEXT,
            organization TEXT,
            user_id TEXT,
            status TEXT NOT NULL,
            events {bigint} NOT NULL,
            delivered {bigint} NOT NULL,
            handshake INTEGER NOT NULL,
            attempts INTEGER NOT NULL,
            next_attempt {bigint} NOT NULL,
            failing_since {bigint},
            last_error TEXT,
            last_sent {bigint},
            lease_owner TEXT,
            lease_until {bigint} NOT NULL,
            endpoint TEXT,
            created {bigint} NOT NULL
        )""",
        # each subscription's numbered events, in number order
        """CREATE TABLE subscription_event (
            subscription TEXT NOT NULL,
            number {bigint} NOT NULL,
            seq {bigint} NOT NULL,
            rtype TEXT NOT NULL,
            rid TEXT NOT NULL,
            version INTEGER NOT NULL,
            committed {bigint} NOT NULL,
            PRIMARY KEY (subscription, number)
        )""",
        "CREATE INDEX subscription_event_committed ON subscription_event (committed)",
        # write-only channel header values, named by the token the stored Subscription holds
        """CREATE TABLE subscription_secret (
            token TEXT PRIMARY KEY,
            headers TEXT NOT NULL,
            created {bigint} NOT NULL
        )""",
    ],
    [
        # one row per audited interaction; never updated, never deleted by the server
        """CREATE TABLE audit_event (
            seq {serial},
            id TEXT NOT NULL UNIQUE,
            recorded {bigint} NOT NULL,
            interaction TEXT NOT NULL,
            action TEXT NOT NULL,
            status INTEGER NOT NULL,
            client TEXT,
            organization TEXT,
            user_id TEXT,
            purposes TEXT,
            address TEXT,
            method TEXT,
            path TEXT,
            query TEXT,
            request_id TEXT,
            entities TEXT NOT NULL
        )""",
        "CREATE INDEX audit_event_recorded ON audit_event (recorded)",
        # what each row is searched by: kind entity | patient | agent, ref Type/id
        """CREATE TABLE audit_ref (
            event TEXT NOT NULL,
            kind TEXT NOT NULL,
            ref TEXT NOT NULL
        )""",
        "CREATE INDEX audit_ref_lookup ON audit_ref (kind, ref, event)",
    ],
    [
        # each distinct list of matched events of a matcher batch, once: JSON
        # [[seq, rtype, rid, version, committed], ...] in commit order; committed: the last's
        """CREATE TABLE subscription_match (
            id TEXT PRIMARY KEY,
            events TEXT NOT NULL,
            committed {bigint} NOT NULL
        )""",
        # a subscription's numbers first_number..last_number name the events of match_id in
        # order; committed: the run's last event's
        """CREATE TABLE subscription_run (
            subscription TEXT NOT NULL,
            first_number {bigint} NOT NULL,
            last_number {bigint} NOT NULL,
            match_id TEXT NOT NULL,
            committed {bigint} NOT NULL,
            PRIMARY KEY (subscription, first_number)
        )""",
        "CREATE INDEX subscription_run_match ON subscription_run (match_id)",
        "CREATE INDEX subscription_match_committed ON subscription_match (committed)",
        """INSERT INTO subscription_match (id, events, committed)
            SELECT subscription || ':' || number, '[[' || seq || ',"' || rtype || '","' || rid
                || '",' || version || ',' || committed || ']]', committed
            FROM subscription_event""",
        """INSERT INTO subscription_run (subscription, first_number, last_number, match_id,
            committed)
            SELECT subscription, number, number, subscription || ':' || number, committed
            FROM subscription_event""",
        "DROP TABLE subscription_event",
    ],
    _OWNED,
]
