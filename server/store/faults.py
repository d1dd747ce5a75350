"""Deterministic fault-injection points for crash and concurrency tests.

Armed only through the environment variable ``CALAIM_FHIR_FAULTS``, a comma-separated list of
``point=action`` items; when it is unset every ``hit`` is a single global check.

Points: ``before-commit`` and ``after-commit`` (every write transaction), ``after-match``
(a conditional interaction, between its criteria search and its write).
Actions: ``kill@N`` — SIGKILL this process on the N-th hit (1 = the first);
``sleep:S`` — sleep S seconds on every hit.
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

for _item in filter(None, (part.strip() for part in _SPEC.split(","))):
    _point, _, _action = _item.partition("=")
    _actions[_point.strip()] = _action.strip()


def hit(point: str) -> None:
    if not ARMED:
        return
    action = _actions.get(point)
    if action is None:
        return
    if action.startswith("sleep:"):
        time.sleep(float(action[6:]))
        return
    if action.startswith("kill@"):
        with _lock:
            _hits[point] = _hits.get(point, 0) + 1
            if _hits[point] == int(action[5:]):
                os.kill(os.getpid(), signal.SIGKILL)
