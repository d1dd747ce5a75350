"""The subscription tables (migration 11): delivery state, numbered events, header secrets.

``subscription_state``: one row per Subscription the server has seen in the outbox — whose it
is (the client, organisation and user of its first version), the server's status
(``requested`` | ``active`` | ``error`` | ``off``), ``events`` (the numbers handed out: the
``events-since-subscription-start``), ``delivered`` (the highest number the endpoint
acknowledged: the per-subscription cursor), whether a handshake is due, the retry state
(``attempts``, ``next_attempt``, ``failing_since``, ``last_error``) and the delivery lease.

``subscription_match`` and ``subscription_run`` (migration 13): the numbered events, as runs.
Each distinct list of events a numbering matched (type, id, version, commit stamp, in commit
order) is written once; each subscription that matched it gets one ``subscription_run`` row,
its numbers ``first_number..last_number`` naming that list's events in order. Subscriptions
asking the same question of a batch share its list: a batch costs one row per subscription
(not one per subscription and event) and one list. Written in the same transaction that moves
the matcher's outbox cursor, so a number is handed out exactly once and never skipped. A run
is kept until all its events are older than ``subscription_event_retention_days`` and
delivered (``$events``); a list until no run names it.

``subscription_secret``: the ``channel.header`` values (write-only: the stored Subscription
holds only masked values and the secret's token), and under ``signing:<id>`` each
subscription's HMAC signing key.

Statements other than the matcher's transaction are one short statement on a connection of
their own that commits on its own (``Dialect.autocommit``).

The deliverer's outcomes (``record``) and leases commit without waiting for the disk
(``durable=False``, decision 0026): losing them in a power failure only repeats sends of the
same numbers. The numbering and the matcher's cursor always commit durably.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from server.store.base import Event, Matching, Numbered, Outcome, State
from server.store.sql.dialect import Connection, Dialect

CONSUMER = "subscriptions"
_STATE = (
    "id, owner, organization, user_id, status, events, delivered, handshake, attempts,"
    " next_attempt, failing_since, last_error, last_sent, lease_owner, lease_until, endpoint,"
    " created"
)


def _state(row: Any) -> State:
    return State(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        int(row[5]),
        int(row[6]),
        bool(row[7]),
        int(row[8]),
        int(row[9]),
        None if row[10] is None else int(row[10]),
        row[11],
        None if row[12] is None else int(row[12]),
        row[13],
        int(row[14]),
        row[15],
        int(row[16]),
    )


class SqlMatching:
    """The matcher's view inside its transaction: the states and the numbering."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def state(self, id: str) -> State | None:
        row = self._conn.execute(
            f"SELECT {_STATE} FROM subscription_state WHERE id = ?", (id,)
        ).fetchone()
        return None if row is None else _state(row)

    def live(self) -> list[State]:
        rows = self._conn.execute(
            f"SELECT {_STATE} FROM subscription_state WHERE status IN ('requested', 'active')"
        ).fetchall()
        return [_state(r) for r in rows]

    def upsert(self, state: State) -> None:
        self._conn.execute("DELETE FROM subscription_state WHERE id = ?", (state.id,))
        self._conn.execute(
            f"INSERT INTO subscription_state ({_STATE}) VALUES"
            f" ({', '.join('?' for _ in _STATE.split(','))})",
            (
                state.id,
                state.owner,
                state.organization,
                state.user,
                state.status,
                state.events,
                state.delivered,
                int(state.handshake),
                state.attempts,
                state.next_attempt,
                state.failing_since,
                state.last_error,
                state.last_sent,
                state.lease_owner,
                state.lease_until,
                state.endpoint,
                state.created,
            ),
        )

    def number(self, matches: Sequence[tuple[str, Event]]) -> None:
        """Hand each (subscription, event) match, in order, its subscription's next number:
        one read of the counters, each distinct list of matched events written once, one run
        row and one counter update per subscription."""
        if not matches:
            return
        per: dict[str, list[Event]] = {}
        for id, event in matches:
            per.setdefault(id, []).append(event)
        ids = sorted(per)
        marks = ", ".join("?" for _ in ids)
        counters = {
            str(r[0]): int(r[1])
            for r in self._conn.execute(
                f"SELECT id, events FROM subscription_state WHERE id IN ({marks})", tuple(ids)
            ).fetchall()
        }
        lists: dict[tuple[int, ...], tuple[str, str, int]] = {}
        runs = []
        for id in ids:
            if id not in counters:
                continue
            events = per[id]
            key = tuple(e.seq for e in events)
            found = lists.get(key)
            if found is None:
                found = lists[key] = _match_list(events)
            first = counters[id] + 1
            counters[id] += len(events)
            runs.append((id, first, counters[id], found[0], found[2]))
        self._conn.executemany(
            "INSERT INTO subscription_match (id, events, committed) VALUES (?, ?, ?)"
            " ON CONFLICT (id) DO NOTHING",
            list(lists.values()),
        )
        self._conn.executemany(
            "INSERT INTO subscription_run (subscription, first_number, last_number, match_id,"
            " committed) VALUES (?, ?, ?, ?, ?)",
            runs,
        )
        self._conn.executemany(
            "UPDATE subscription_state SET events = ? WHERE id = ?",
            [(n, id) for id, n in counters.items()],
        )


def _match_list(events: Sequence[Event]) -> tuple[str, str, int]:
    """A list of matched events as stored: its id (named by its events' sequence numbers,
    which are never handed out twice), its JSON and its last event's commit stamp."""
    seqs = [e.seq for e in events]
    digest = hashlib.blake2b(orjson.dumps(seqs), digest_size=8).hexdigest()
    body = orjson.dumps([[e.seq, e.type, e.id, e.version, e.committed] for e in events])
    return f"{seqs[0]}-{seqs[-1]}-{len(seqs)}-{digest}", body.decode(), events[-1].committed


class _Lists:
    """Stored lists of matched events, parsed once: a list never changes under its id."""

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._parsed: OrderedDict[str, list[tuple[int, str, str, int, int]]] = OrderedDict()
        self._lock = threading.Lock()  # deliveries read from several threads

    def get(self, id: str, text: str) -> list[tuple[int, str, str, int, int]]:
        with self._lock:
            found = self._parsed.get(id)
            if found is not None:
                self._parsed.move_to_end(id)
                return found
        found = [
            (int(e[0]), str(e[1]), str(e[2]), int(e[3]), int(e[4])) for e in orjson.loads(text)
        ]
        with self._lock:
            self._parsed[id] = found
            if len(self._parsed) > self._size:
                self._parsed.popitem(last=False)
        return found


class SqlSubscriptions:
    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._lists = _Lists()

    # -- the matcher ---------------------------------------------------------------------

    def matcher_cursor(self) -> int | None:
        """Where the matcher stands in the outbox. It registers as an outbox consumer with
        the first Subscription ever written (from just before its event: nothing earlier can
        match); until then there is nothing to match (None) and the outbox is pruned by age
        alone."""
        with self._dialect.autocommit() as conn:
            row = conn.execute(
                "SELECT cursor FROM outbox_consumer WHERE name = ?", (CONSUMER,)
            ).fetchone()
            if row is not None:
                return int(row[0])
            first = conn.execute(
                "SELECT MIN(seq) FROM outbox WHERE rtype = 'Subscription'"
            ).fetchone()
            if first is None or first[0] is None:
                return None
            conn.execute(
                "INSERT INTO outbox_consumer (name, cursor, updated) VALUES (?, ?, 0)"
                " ON CONFLICT (name) DO NOTHING",
                (CONSUMER, int(first[0]) - 1),
            )
            row = conn.execute(
                "SELECT cursor FROM outbox_consumer WHERE name = ?", (CONSUMER,)
            ).fetchone()
        return int(row[0])

    def commit_batch(
        self, cursor: int, events: Sequence[Event], fn: Callable[[Matching], None]
    ) -> bool:
        """In one transaction: ``fn`` (the numbering of ``events``) and the matcher's cursor
        moved from ``cursor`` past them. False (nothing committed) when another process
        moved the cursor first."""
        with self._dialect.writing() as conn:
            moved = conn.execute(
                "UPDATE outbox_consumer SET cursor = ?, updated = ? WHERE name = ? AND cursor = ?"
                " RETURNING name",
                (events[-1].seq, events[-1].committed, CONSUMER, cursor),
            ).fetchall()
            if not moved:
                return False
            fn(SqlMatching(conn))
        return True

    def lag(self) -> int:
        """Outbox events the matcher has not read yet."""
        with self._dialect.autocommit() as conn:
            row = conn.execute(
                "SELECT (SELECT COALESCE(MAX(seq), 0) FROM outbox) - COALESCE("
                "(SELECT cursor FROM outbox_consumer WHERE name = ?), 0)",
                (CONSUMER,),
            ).fetchone()
        return max(0, int(row[0]))

    # -- delivery ------------------------------------------------------------------------

    def state(self, id: str) -> State | None:
        with self._dialect.autocommit() as conn:
            row = conn.execute(
                f"SELECT {_STATE} FROM subscription_state WHERE id = ?", (id,)
            ).fetchone()
        return None if row is None else _state(row)

    def states_of(self, ids: Sequence[str]) -> dict[str, State]:
        """The states of ``ids`` (one query); ids without one are left out."""
        if not ids:
            return {}
        marks = ", ".join("?" for _ in ids)
        with self._dialect.autocommit() as conn:
            rows = conn.execute(
                f"SELECT {_STATE} FROM subscription_state WHERE id IN ({marks})", tuple(ids)
            ).fetchall()
        return {s.id: s for s in map(_state, rows)}

    def states(self) -> list[State]:
        with self._dialect.autocommit() as conn:
            rows = conn.execute(f"SELECT {_STATE} FROM subscription_state ORDER BY id").fetchall()
        return [_state(r) for r in rows]

    def due(self, now: int, limit: int, sent_before: int | None = None) -> list[State]:
        """Live subscriptions with something to send whose lease is free and retry due;
        with ``sent_before``, only those whose last notification went out before it (a
        handshake or a retry is due whenever)."""
        gap = "" if sent_before is None else (
            " AND (handshake = 1 OR attempts > 0 OR last_sent IS NULL OR last_sent < ?)"
        )
        args = (now, now) if sent_before is None else (now, now, sent_before)
        with self._dialect.autocommit() as conn:
            rows = conn.execute(
                f"SELECT {_STATE} FROM subscription_state WHERE status IN ('requested', 'active')"
                " AND (handshake = 1 OR (status = 'active' AND events > delivered))"
                f" AND next_attempt <= ? AND lease_until <= ?{gap} ORDER BY next_attempt"
                f" LIMIT {int(limit)}",
                args,
            ).fetchall()
        return [_state(r) for r in rows]

    def live(self) -> list[State]:
        with self._dialect.autocommit() as conn:
            rows = conn.execute(
                f"SELECT {_STATE} FROM subscription_state WHERE status = 'active'"
            ).fetchall()
        return [_state(r) for r in rows]

    def lease(self, id: str, owner: str, now: int, until: int) -> bool:
        """Take (or renew) the delivery lease of ``id``: one deliverer per subscription."""
        with self._dialect.autocommit(durable=False) as conn:
            rows = conn.execute(
                "UPDATE subscription_state SET lease_owner = ?, lease_until = ? WHERE id = ?"
                " AND (lease_until <= ? OR lease_owner = ?) RETURNING id",
                (owner, until, id, now, owner),
            ).fetchall()
        return bool(rows)

    def lease_many(self, ids: Sequence[str], owner: str, now: int, until: int) -> list[str]:
        """``lease`` for several subscriptions in one statement; the ids leased."""
        if not ids:
            return []
        marks = ", ".join("?" for _ in ids)
        with self._dialect.autocommit(durable=False) as conn:
            rows = conn.execute(
                "UPDATE subscription_state SET lease_owner = ?, lease_until = ?"
                f" WHERE id IN ({marks}) AND (lease_until <= ? OR lease_owner = ?) RETURNING id",
                (owner, until, *ids, now, owner),
            ).fetchall()
        return sorted(str(r[0]) for r in rows)

    def release(self, id: str, owner: str) -> None:
        with self._dialect.autocommit(durable=False) as conn:
            conn.execute(
                "UPDATE subscription_state SET lease_owner = NULL, lease_until = 0"
                " WHERE id = ? AND lease_owner = ?",
                (id, owner),
            )

    def events(self, id: str, after: int, until: int | None, limit: int) -> list[Numbered]:
        """The numbered events of ``id`` after ``after`` up to ``until``, ``limit`` at most,
        in number order (read from the runs that hold them)."""
        last = until if until is not None else 2**62
        with self._dialect.autocommit() as conn:
            rows = conn.execute(
                "SELECT r.first_number, r.last_number, m.id, m.events FROM subscription_run r"
                " JOIN subscription_match m ON m.id = r.match_id WHERE r.subscription = ?"
                " AND r.last_number > ? AND r.first_number <= ? ORDER BY r.first_number"
                f" LIMIT {int(limit)}",
                (id, after, last),
            ).fetchall()
        out: list[Numbered] = []
        for first, high, match, text in rows:
            events = self._lists.get(str(match), str(text))
            for number in range(max(int(first), after + 1), min(int(high), last) + 1):
                if len(out) >= limit:
                    return out
                out.append(Numbered._make((number, *events[number - int(first)])))
        return out

    def record(self, outcomes: Sequence[Outcome]) -> list[str]:
        """Record the outcomes of several deliveries in one transaction (one commit, however
        many subscriptions a round sent to); the ids whose lease was still the deliverer's.

        Acknowledged: the cursor moves to ``number`` (never back), a handshake makes the
        subscription active, the retry state clears, and the lease is released, or renewed
        until ``keep_until`` when more waits to be sent. Failed: ``attempts`` grows, the next
        attempt is due at ``next_attempt``, ``error`` is kept for ``$status``; with
        ``give_up`` the subscription goes to ``error``. Either way only under the lease."""
        if not outcomes:
            return []
        kept = []
        with self._dialect.writing(durable=False) as conn:
            for o in outcomes:
                if o.error is None:
                    status = ", status = 'active', handshake = 0" if o.handshake else ""
                    owner = None if o.keep_until is None else o.owner
                    rows = conn.execute(
                        "UPDATE subscription_state SET"
                        f" delivered = CASE WHEN delivered > ? THEN delivered ELSE ? END{status},"
                        " attempts = 0, failing_since = NULL, last_error = NULL, last_sent = ?,"
                        " next_attempt = 0, lease_owner = ?, lease_until = ?"
                        " WHERE id = ? AND lease_owner = ? RETURNING id",
                        (o.number, o.number, o.now, owner, o.keep_until or 0, o.id, o.owner),
                    ).fetchall()
                else:
                    status = ", status = 'error'" if o.give_up else ""
                    rows = conn.execute(
                        f"UPDATE subscription_state SET attempts = attempts + 1{status},"
                        " failing_since = COALESCE(failing_since, ?), last_error = ?,"
                        " next_attempt = ?, lease_owner = NULL, lease_until = 0"
                        " WHERE id = ? AND lease_owner = ? RETURNING id",
                        (o.now, o.error, o.next_attempt, o.id, o.owner),
                    ).fetchall()
                if rows:
                    kept.append(o.id)
        return kept

    def set_status(self, id: str, status: str, reason: str | None) -> None:
        with self._dialect.autocommit() as conn:
            conn.execute(
                "UPDATE subscription_state SET status = ?, last_error = COALESCE(?, last_error)"
                " WHERE id = ?",
                (status, reason, id),
            )

    def prune_events(self, before: int) -> int:
        """Delete the runs of numbered events all committed before ``before`` and delivered,
        and the lists no run names any more; the number of events deleted."""
        with self._dialect.autocommit() as conn:
            rows = conn.execute(
                "DELETE FROM subscription_run WHERE committed < ? AND last_number <= COALESCE("
                "(SELECT delivered FROM subscription_state s WHERE s.id = subscription),"
                " last_number) RETURNING last_number - first_number + 1",
                (before,),
            ).fetchall()
            conn.execute(
                "DELETE FROM subscription_match WHERE committed < ? AND NOT EXISTS"
                " (SELECT 1 FROM subscription_run r WHERE r.match_id = subscription_match.id)",
                (before,),
            )
        return sum(int(r[0]) for r in rows)

    # -- header secrets ------------------------------------------------------------------

    def put_secret(self, token: str, headers: Sequence[tuple[str, str]], now: int) -> None:
        with self._dialect.autocommit() as conn:
            conn.execute(
                "INSERT INTO subscription_secret (token, headers, created) VALUES (?, ?, ?)",
                (token, orjson.dumps([list(h) for h in headers]).decode(), now),
            )

    def secret(self, token: str) -> list[tuple[str, str]] | None:
        with self._dialect.autocommit() as conn:
            row = conn.execute(
                "SELECT headers FROM subscription_secret WHERE token = ?", (token,)
            ).fetchone()
        if row is None:
            return None
        return [(str(n), str(v)) for n, v in orjson.loads(row[0])]

    def set_signing_key(self, id: str, key: str, now: int) -> None:
        with self._dialect.autocommit() as conn:
            conn.execute(
                "INSERT INTO subscription_secret (token, headers, created) VALUES (?, ?, ?)"
                " ON CONFLICT (token) DO UPDATE SET headers = excluded.headers,"
                " created = excluded.created",
                (_signing(id), orjson.dumps([["key", key]]).decode(), now),
            )

    def signing_key(self, id: str) -> str | None:
        found = self.secret(_signing(id))
        return None if not found else found[0][1]

    def delivery_secrets(
        self, wanted: Mapping[str, str | None]
    ) -> dict[str, tuple[list[tuple[str, str]], str | None]]:
        """For each subscription id of ``wanted`` (mapped to its header values' token, if
        any), its header values and signing key, in one query."""
        tokens = [t for id, token in wanted.items() for t in (_signing(id), token) if t]
        if not tokens:
            return {}
        marks = ", ".join("?" for _ in tokens)
        with self._dialect.autocommit() as conn:
            rows = conn.execute(
                f"SELECT token, headers FROM subscription_secret WHERE token IN ({marks})",
                tuple(tokens),
            ).fetchall()
        found = {str(t): [(str(n), str(v)) for n, v in orjson.loads(h)] for t, h in rows}
        out: dict[str, tuple[list[tuple[str, str]], str | None]] = {}
        for id, token in wanted.items():
            key = found.get(_signing(id))
            out[id] = (found.get(token, []) if token else [], key[0][1] if key else None)
        return out


def _signing(id: str) -> str:
    """The secret row of a subscription's signing key."""
    return f"signing:{id}"
