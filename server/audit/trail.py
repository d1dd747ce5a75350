"""The audit writer: records of reads and searches written in batches off the request path.

Batch mode (the default, ``CALAIM_FHIR_AUDIT_READS=batch``): an answered request's capture is
queued and a thread writes the queue every ``audit_flush_seconds`` (default 1 s) in one
transaction. The loss window is what is queued when the process dies: at most the requests
answered in the last ``audit_flush_seconds`` plus the one write in flight. ``sync``: the
record is written (committed) before the answer is sent. ``off``: reads are not recorded.

Writes are recorded in every mode, from their outbox rows in their own transaction
(``store/sql/audit.py``). A failed flush keeps its captures queued and is tried again; the
failure is logged without content.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from server.audit.capture import Captured, record
from server.errors import FhirError
from server.store.base import Audit

logger = logging.getLogger("calaim_fhir.audit")
MODES = ("batch", "sync", "off")


class AuditTrail:
    def __init__(self, store: Audit, mode: str = "batch", flush_seconds: float = 1.0) -> None:
        self.store = store
        self.mode = mode
        self.flush_seconds = flush_seconds
        self._queue: deque[Captured] = deque()
        self._lock = threading.Lock()  # one flush at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def reads(self) -> bool:
        return self.mode != "off"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def add(self, captured: Captured) -> None:
        """Queue a capture (batch mode): written by the next flush."""
        self._queue.append(captured)

    def write(self, captured: Captured) -> None:
        """Write a capture now, durably (sync mode; called off the event loop)."""
        with self._lock:
            self.store.store([record(captured)])

    def flush(self) -> None:
        """Write everything queued, in one transaction."""
        with self._lock:
            taken = [self._queue.popleft() for _ in range(len(self._queue))]
            try:
                self.store.store([record(c) for c in taken])
            except FhirError:
                self._queue.extendleft(reversed(taken))
                raise

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            try:
                self.flush()
            except FhirError as error:  # the database is unavailable: next time
                logger.warning("audit: not written (%s)", type(error).__name__)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.flush()
        except FhirError as error:
            logger.warning("audit: not written at shutdown (%s)", type(error).__name__)
