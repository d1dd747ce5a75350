"""Schema migrations, applied in order at start-up; the applied version is kept in the database.

Statements use three placeholders that the dialect fills: ``{blob}``, ``{bigint}``, ``{serial}``
(SQLite's serial is its rowid: history rows are never deleted, so it only grows).
Append new migrations; never edit one that has shipped.
"""

from __future__ import annotations

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
]
