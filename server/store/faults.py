"""Deterministic fault-injection points for crash and concurrency tests.

Armed only through the environment variable ``CALAIM_FHIR_FAULTS``, a comma-separated list of
``point=action`` items; when it is unset every ``hit`` is a single global check.

Points: ``before-commit`` and ``after-commit`` (every write transaction), ``after-match``
(a conditional interaction, between its criteria search and its write), ``read`` (every
read of the store).
Actions: ``kill@N`` — SIGKILL this process on the N-th hit (1 = the first);
``sleep:S`` — sleep S seconds on every hit; ``error:CAUSE`` — the database driver fails with
the error it gives for CAUSE on every hit (``busy``, ``full``, ``readonly``, ``corrupt``,
``toobig``, ``ioerr``, ``serialization``, ``deadlock``, ``connection``:
``driver_errors.FAULTS``), as a storage fault would; ``error:CAUSE@N`` on the first N hits
only.

Tests arm points in-process with :func:`arm` (and :func:`disarm`).
"""

from __future__ import annotations

import os
import signal
import threading
import time

_SPEC = os.environ.get("CALAIM_FHIR_FAULTS", "")
ARMED = bool(_SPEC)
_actions: dict[str, str] = {}
_hits: dict[str, int] = {}
_lock = threading.Lock()


class Fault(Exception):
    """An ``error:CAUSE`` fault: the dialect raises its driver's error for ``cause``."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


def arm(spec: str) -> None:
    """Arm the points of ``spec`` (the ``CALAIM_FHIR_FAULTS`` syntax) in this process, on top
    of those armed already."""
    global ARMED
    for item in filter(None, (part.strip() for part in spec.split(","))):
        point, _, action = item.partition("=")
        _actions[point.strip()] = action.strip()
    ARMED = bool(_actions)


def disarm() -> None:
    global ARMED
    _actions.clear()
    _hits.clear()
    ARMED = False


arm(_SPEC)


def hit(point: str) -> None:
    if not ARMED:
        return
    action = _actions.get(point)
    if action is None:
        return
    if action.startswith("error:"):
        cause, _, times = action[6:].partition("@")
        if times:  # error:CAUSE@N: only the first N hits fail
            with _lock:
                _hits[point] = _hits.get(point, 0) + 1
                if _hits[point] > int(times):
                    return
        raise Fault(cause)
    if action.startswith("sleep:"):
        time.sleep(float(action[6:]))
        return
    if action.startswith("kill@"):
        with _lock:
            _hits[point] = _hits.get(point, 0) + 1
            if _hits[point] == int(action[5:]):
                os.kill(os.getpid(), signal.SIGKILL)
