"""Subscription delivery in a process of its own (``subscription_delivery=process``).

``serve`` starts one ``calaim-fhir deliver`` child (``DeliveryProcess``) before the HTTP
server and stops it after: the server processes only append to the outbox in their write
transactions; the child, at lower priority, matches and delivers. A child that exits on its
own is started again (after 1 s, doubling up to 30 s while it keeps failing within a minute of
its start) and the exit is logged. The child stops itself when its parent is gone
(``parent_gone``), so a ``kill -9`` of the server leaves no deliverer behind; the delivery
leases make a second deliverer harmless meanwhile.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

logger = logging.getLogger("calaim_fhir.subscriptions")

STOP_SECONDS = 15.0  # how long a stopping child may finish its round before it is killed
FIRST_RESTART_SECONDS = 1.0
MAX_RESTART_SECONDS = 30.0
STABLE_SECONDS = 60.0  # a child that ran this long failed afresh: restart after the first wait


def command(parent: int) -> list[str]:
    """The child's command line: ``calaim-fhir deliver`` run by this interpreter."""
    return [sys.executable, "-m", "server.cli", "deliver", "--parent", str(parent)]


def parent_gone(parent: int) -> bool:
    """Whether the process that started this one has exited (this one was re-parented)."""
    return os.getppid() != parent


class DeliveryProcess:
    """Starts, watches (restarting it when it exits) and stops one delivery child."""

    def __init__(self, argv: list[str] | None = None) -> None:
        self._argv = argv or command(os.getpid())
        self._child: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watch: threading.Thread | None = None
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        child = self._child
        return None if child is None else child.pid

    def start(self) -> None:
        self._spawn()
        self._watch = threading.Thread(target=self._supervise, name="delivery-process", daemon=True)
        self._watch.start()

    def _spawn(self) -> None:
        with self._lock:
            if not self._stopping.is_set():
                # stdout/stderr shared with the server: the child's log lines join its log
                self._child = subprocess.Popen(self._argv)
                logger.info("subscriptions: delivery process %d started", self._child.pid)

    def _supervise(self) -> None:
        wait = FIRST_RESTART_SECONDS
        while not self._stopping.is_set():
            child = self._child
            if child is None:
                return
            started = time.monotonic()
            code = child.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= STABLE_SECONDS:
                wait = FIRST_RESTART_SECONDS
            logger.warning(
                "subscriptions: delivery process %d exited with %s; starting another in %.0f s",
                child.pid,
                code,
                wait,
            )
            if self._stopping.wait(wait):
                return
            wait = min(wait * 2, MAX_RESTART_SECONDS)
            self.restarts += 1
            self._spawn()

    def stop(self) -> None:
        """Ask the child to finish (SIGTERM: it ends its round and records what it sent); kill
        it if it has not after ``STOP_SECONDS``."""
        with self._lock:
            self._stopping.set()
            child = self._child
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if self._watch is not None:
            self._watch.join(STOP_SECONDS)
