"""A revocation stamp shared by every process on one SQLite store: what lets a worker keep a
client's (or a launch grant's) *active* status between requests and still refuse it at the
next request after a revocation made by any process.

The stamp is a 64-bit counter in a small file beside the store (``<store>-auth``), mapped
into memory by each process, so reading it costs no system call. Every change that can stop a
token — a client revoked, a user's status set, a grant revoked — runs inside ``changing``,
which takes an exclusive lock on the file, makes the counter odd before the change and even
again after its commit. A reader (``Statuses``) keeps an *active* answer only under an even
stamp that did not move while it asked the database, and uses it only while the stamp is
still that value. So:

- a change that committed has moved the stamp past every value an answer was kept under: the
  next request on every worker asks the database again;
- while a change is under way (odd) nothing is kept or used;
- a change that fails still makes the stamp even again (a new value); a process that died
  between its commit and the final step leaves the stamp odd: every request asks the database
  (as without a stamp) until the next change completes.

Only *active* answers are kept (a refusal always asks). Changes made to the tables by other
means than the store's methods (a SQL shell) do not move the stamp: restart the server after
such an edit. PostgreSQL keeps no stamp (its workers may run on other hosts): it asks on
every request.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_COUNTER = struct.Struct("<Q")
#: kept answers at most (a new client id per token is not expected; a bound all the same)
_KEEP = 4096


class AuthStamp:
    """The counter in ``path`` (created when missing)."""

    def __init__(self, path: str) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _COUNTER.size:
                os.ftruncate(fd, _COUNTER.size)  # zeros: even, nothing changed yet
            self._map = mmap.mmap(fd, _COUNTER.size)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._lock = threading.Lock()  # flock excludes other files, not this one's threads

    def value(self) -> int:
        value: int = _COUNTER.unpack_from(self._map)[0]
        return value

    @contextmanager
    def changing(self) -> Iterator[None]:
        """Around a change of a status (its commit inside): odd while it runs, even after."""
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                value = self.value()
                self._set(value if value & 1 else value + 1)
                try:
                    yield
                finally:  # committed or not, what was kept before is asked again
                    self._set(self.value() + 1)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _set(self, value: int) -> None:
        _COUNTER.pack_into(self._map, 0, value)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)


class Statuses:
    """*Active* answers kept under the ``AuthStamp`` of ``path`` (opened at first use; none
    kept without a path or when the file cannot be opened)."""

    def __init__(self, path: str | None) -> None:
        self._path = path
        self._stamp: AuthStamp | None = None
        self._kept: dict[tuple[str, ...], int] = {}

    def _opened(self) -> AuthStamp | None:
        if self._stamp is None and self._path is not None:
            try:
                self._stamp = AuthStamp(self._path)
            except OSError:
                self._path = None  # ask every time, as without a stamp
        return self._stamp

    def active(self, key: tuple[str, ...], ask: Callable[[], bool]) -> bool:
        """Whether ``key`` is active: the kept answer while the stamp has not moved, else
        ``ask()`` (the database)."""
        stamp = self._stamp or self._opened()
        if stamp is None:
            return ask()
        seen = stamp.value()
        if seen & 1:
            return ask()
        if self._kept.get(key) == seen:
            return True
        answer = ask()
        if answer and stamp.value() == seen:
            if len(self._kept) >= _KEEP:
                self._kept.clear()
            self._kept[key] = seen
        return answer

    @contextmanager
    def changing(self) -> Iterator[None]:
        """Around a change that can stop a token (see ``AuthStamp.changing``)."""
        stamp = self._opened()
        if stamp is None:
            yield
            return
        with stamp.changing():
            yield

    def close(self) -> None:
        if self._stamp is not None:
            self._stamp.close()
            self._stamp = None
