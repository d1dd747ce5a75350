"""Driver errors mapped to FHIR errors by their cause (the SQLite result code, the PostgreSQL
SQLSTATE), never by their Python class alone.

=====================================  ======  =============================================
cause                                  status  notes
=====================================  ======  =============================================
busy / locked, connection lost,        503     ``Retry-After``: the same request can succeed
too many connections, shutting down,           later
out of memory, I/O error, cannot open
serialization failure, deadlock        503     retried by the group writer first (3 times);
                                               then ``Retry-After`` (nothing was written)
read-only database or file system      503     the reason given; an operator must act
disk full                              507     the reason given
corrupt, not a database                500     the server log says so
too large / too many (expression       400     ``too-costly``: retrying cannot help
tree, variables, statement, string)
a search past its time budget          400     ``too-costly`` (``query_budget_ms``)
a unique-key race                      409     (a concurrent write)
anything else (a defect)               500
=====================================  ======  =============================================

Each is logged (``calaim_fhir.store``) with its cause and the driver's message; SQLite's
messages never carry bound values, and of PostgreSQL's only those of system conditions
(connection, resources, operator intervention, system and internal errors) are logged, since
the others may quote a value.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from server.errors import (
    Conflict,
    DatabaseDamaged,
    FhirError,
    InsufficientStorage,
    ServiceUnavailable,
    TooCostly,
    TransactionConflict,
)

logger = logging.getLogger("calaim_fhir.store")

# SQLite primary result codes (sqlite.org/rescode.html)
_BUSY, _LOCKED, _NOMEM, _READONLY, _IOERR, _CORRUPT = 5, 6, 7, 8, 10, 11
_FULL, _CANTOPEN, _TOOBIG, _CONSTRAINT, _NOTADB, _PERM = 13, 14, 18, 19, 26, 3
_TOO_MANY = ("too many sql variables", "expression tree is too large", "too many terms",
             "string or blob too big", "too many columns", "statement too long")  # fmt: skip


def _logged(error: FhirError, cause: str, message: str) -> FhirError:
    logger.error("database error: %s (%s) -> %d", cause, message, error.status)
    return error


def sqlite_busy(exc: sqlite3.Error) -> bool:
    """Whether SQLite refused because another connection holds a lock (BUSY or LOCKED)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (_BUSY, _LOCKED)


def sqlite_error(exc: sqlite3.Error) -> FhirError:
    """The FHIR error for a SQLite error."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    message = str(exc)[:200]
    if isinstance(exc, sqlite3.IntegrityError) or primary == _CONSTRAINT:
        return Conflict("A concurrent write changed the same resource; retry")
    if sqlite_busy(exc):
        error: FhirError = ServiceUnavailable("The database is busy; retry")
    elif primary == _FULL:
        error = InsufficientStorage("The database cannot grow: the disk is full")
    elif primary == _READONLY or primary == _PERM:
        error = ServiceUnavailable("The database is read-only (its file or folder)")
    elif primary in (_CORRUPT, _NOTADB):
        error = DatabaseDamaged("The database file is damaged; see the server log")
    elif primary == _TOOBIG or any(t in message.lower() for t in _TOO_MANY):
        error = TooCostly("The request is too large for the database to run; narrow it")
    elif (
        primary in (_IOERR, _CANTOPEN, _NOMEM)
        or isinstance(exc, sqlite3.OperationalError)
        or "closed database" in message  # the server is stopping
    ):
        error = ServiceUnavailable(f"The database is unavailable ({name})")
    else:
        error = FhirError("Internal database error; see the server log")
    return _logged(error, f"sqlite {name}", message)


def over_budget(budget_ms: int, database: str) -> FhirError:
    """A search the database stopped at the query time budget (``query_budget_ms``)."""
    error = TooCostly(
        f"The search ran longer than its budget of {budget_ms} ms and was stopped; narrow it "
        "(fewer :contains, chained or _has parameters, a more selective parameter first)"
    )
    return _logged(error, f"{database} query budget", f"stopped after {budget_ms} ms")


# PostgreSQL SQLSTATE classes and codes (postgresql.org/docs/current/errcodes-appendix.html)
_RETRY_CLASSES = ("08", "57", "58")  # connection, operator intervention, system
_LOGGED_CLASSES = ("08", "25", "40", "53", "54", "57", "58", "XX")


def postgres_error(exc: Exception) -> FhirError:
    """The FHIR error for a psycopg error (or a pool timeout: no connection)."""
    state: str = getattr(exc, "sqlstate", None) or ""
    name = type(exc).__name__
    diag: Any = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) or str(exc)
    message = primary[:200] if not state or state[:2] in _LOGGED_CLASSES else name
    if state == "23505":
        return Conflict("A concurrent write changed the same resource; retry")
    if not state:  # no server answer: a connection failure or the pool's timeout
        error: FhirError = ServiceUnavailable(f"The database is unavailable ({name})")
    elif state in ("40001", "40P01"):
        error = TransactionConflict("A concurrent transaction conflicted; retry")
    elif state == "53100":
        error = InsufficientStorage("The database cannot grow: the disk is full")
    elif state.startswith("53") or state[:2] in _RETRY_CLASSES:
        error = ServiceUnavailable(f"The database is unavailable ({name})")
    elif state == "25006":
        error = ServiceUnavailable("The database is read-only")
    elif state in ("XX001", "XX002"):
        error = DatabaseDamaged("The database is damaged; see the server log")
    elif state.startswith("54"):
        error = TooCostly("The request is too large for the database to run; narrow it")
    else:
        error = FhirError("Internal database error; see the server log")
    return _logged(error, f"postgresql {state or '-'} {name}", message)


# what a storage fault of each kind makes the driver raise (``faults.py``, ``error:CAUSE``):
# SQLite (result code, message) and the PostgreSQL SQLSTATE
FAULTS: dict[str, tuple[int, str, str]] = {
    "busy": (_BUSY, "database is locked", "57P03"),
    "full": (_FULL, "database or disk is full", "53100"),
    "readonly": (_READONLY, "attempt to write a readonly database", "25006"),
    "corrupt": (_CORRUPT, "database disk image is malformed", "XX001"),
    "toobig": (1, "too many SQL variables", "54001"),
    "ioerr": (_IOERR, "disk I/O error", "58030"),
    "serialization": (_BUSY, "database is locked", "40001"),
    "deadlock": (_BUSY, "database is locked", "40P01"),
    "connection": (_CANTOPEN, "unable to open database file", "08006"),
}


def sqlite_fault(cause: str) -> sqlite3.Error:
    code, message, _ = FAULTS[cause]
    exc = sqlite3.OperationalError(message)
    exc.sqlite_errorcode = code
    exc.sqlite_errorname = f"SQLITE_{cause.upper()}"
    return exc


def postgres_fault(psycopg: Any, cause: str) -> Exception:
    error: Exception = psycopg.errors.lookup(FAULTS[cause][2])(FAULTS[cause][1])
    return error
