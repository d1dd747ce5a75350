"""The SQLite store's file: a cheap sanity check at start-up and a store-identity marker.

A database file that lost its content must not silently become a new, empty store. So:

- **At start-up**, before SQLite opens it, the file's header is read: the magic string, a
  valid page size, and the page count the header records against the file's size (a file
  shorter than its pages is truncated). A damaged file is refused with the reason.
- **The identity.** The first start-up of a new store gives it an id, kept in the database
  (table ``store_identity``) and in a marker file next to it (``<database>.store-id``).
  When the marker exists but the database file is missing or empty, or holds another store's
  id, start-up is refused: a store that had data is never replaced by an empty one. A new
  store is created only when there is neither. (Deleting the marker is how an operator says
  that starting afresh is intended.)

On PostgreSQL the marker is the database's comment (``calaim-fhir store <id>``), which
outlives the store's tables: a database whose store tables were dropped or emptied is refused
the same way (a database dropped and created anew loses its comment too, and cannot be told
from a new one).

The full check (``PRAGMA integrity_check``) runs on demand: ``calaim-fhir check``.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

_MAGIC = b"SQLite format 3\x00"
MARKER_SUFFIX = ".store-id"
PG_MARKER = re.compile(r"calaim-fhir store ([0-9a-f\-]{36})")
"""A PostgreSQL database's comment naming the store it holds (``PostgresDialect``)."""


class StoreRefused(RuntimeError):
    """The store cannot be opened safely; the message says why and what to do."""


def marker_path(database: str) -> Path:
    return Path(database + MARKER_SUFFIX)


def _has_content(database: str) -> bool:
    try:
        return os.path.getsize(database) > 0
    except FileNotFoundError:
        return False


def header_problem(database: str) -> str | None:
    """Why the file at ``database`` is not a sound SQLite database by its header and size;
    None when it looks sound (or is missing or empty: a new database)."""
    if not _has_content(database):
        return None
    size = os.path.getsize(database)
    with open(database, "rb") as file:
        header = file.read(100)
    if len(header) < 100 or not header.startswith(_MAGIC):
        return "it is not a SQLite database (its header is damaged)"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        return f"its header records an impossible page size ({page_size})"
    pages = int.from_bytes(header[28:32], "big")
    counter_valid = header[24:28] == header[92:96]  # the page count is kept up to date
    if counter_valid and pages and size < pages * page_size:
        return (
            f"it is truncated: its header records {pages} pages of {page_size} bytes "
            f"({pages * page_size} bytes) but the file has {size} bytes"
        )
    if size % page_size:
        return f"its size ({size} bytes) is not a whole number of {page_size}-byte pages"
    return None


def check_before_open(database: str) -> None:
    """Refuse a database file that is damaged, or missing/empty where a store was."""
    marker = marker_path(database)
    if marker.exists() and not _has_content(database):
        state = "empty" if os.path.exists(database) else "missing"
        raise StoreRefused(
            f"The database file {database} is {state}, but {marker} says a store was there: "
            "refusing to start with an empty store. Restore the database file from a backup, "
            f"or delete {marker} to start a new, empty store deliberately."
        )
    problem = header_problem(database)
    # another process may be checkpointing into the file right now (pages written, size
    # not yet reached): a real problem persists
    for _ in range(20):
        if problem is None or not _has_content(database + "-wal"):
            break
        time.sleep(0.05)
        problem = header_problem(database)
    if problem is not None:
        raise StoreRefused(
            f"The database file {database} is damaged: {problem}. Restore it from a backup; "
            "`calaim-fhir check` runs the full check."
        )


IDENTITY_TABLE = "CREATE TABLE IF NOT EXISTS store_identity (id TEXT PRIMARY KEY)"


def identity(conn: Any) -> str:
    """The store's id, given to it now if it has none (inside the caller's transaction)."""
    conn.execute(IDENTITY_TABLE)
    row = conn.execute("SELECT id FROM store_identity").fetchone()
    if row is not None:
        return str(row[0])
    new = str(uuid.uuid4())
    conn.execute("INSERT INTO store_identity (id) VALUES (?)", (new,))
    return new


def marker_problem(database: str, store_id: str) -> str | None:
    """Why the marker does not vouch for the store ``store_id`` at ``database`` (None if it
    does): it is missing, or names another store."""
    marker = marker_path(database)
    try:
        recorded = marker.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return f"the store's marker {marker} is missing"
    if recorded != store_id:
        return f"the database holds store {store_id}, but {marker} names store {recorded}"
    return None


def bind_marker(database: str, store_id: str) -> None:
    """Check the marker names ``store_id``; write it (durably) when there is none."""
    marker = marker_path(database)
    if marker.exists():
        recorded = marker.read_text(encoding="utf-8").strip()
        if recorded != store_id:
            raise StoreRefused(
                f"The database file {database} holds store {store_id}, but {marker} names "
                f"store {recorded}: this is not the database that was here. Put the right file "
                f"back, or delete {marker} if this database is meant to replace it."
            )
        return
    # several worker processes may start at once: each writes its own file, and the same id
    temporary = marker.with_name(f"{marker.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    with open(temporary, "w", encoding="utf-8") as file:
        file.write(store_id + "\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, marker)
    folder = os.open(marker.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
