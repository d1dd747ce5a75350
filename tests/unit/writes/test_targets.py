"""The cache of validation targets stays within its bounds and forgets what is written."""

from __future__ import annotations

from typing import Any

from server.ports import Version
from server.writes.checks import Targets


class Reads:
    def __init__(self, bodies: dict[tuple[str, str], bytes]) -> None:
        self.bodies = bodies
        self.count = 0

    def read(self, type: str, id: str) -> Version | None:
        self.count += 1
        body = self.bodies.get((type, id))
        return None if body is None else Version(type, id, 1, 0, False, body)


def _reader(**bodies: bytes) -> Any:
    return Reads({("Basic", id): body for id, body in bodies.items()})


def test_a_target_is_read_once_until_it_is_forgotten() -> None:
    reader = _reader(a=b"{}")
    targets = Targets()
    assert targets.read(reader, "Basic", "a") == targets.read(reader, "Basic", "a")
    assert targets.read(reader, "Basic", "missing") is None
    targets.read(reader, "Basic", "missing")
    assert reader.count == 2  # a and missing, once each
    targets.forget([("Basic", "a")])
    targets.read(reader, "Basic", "a")
    assert reader.count == 3


def test_the_cache_keeps_to_its_count_and_byte_bounds() -> None:
    reader = _reader(**{f"r{i}": b"x" * 100 for i in range(10)}, big=b"y" * 1000)
    targets = Targets(size=4, max_bytes=250, max_body=500)
    for i in range(10):
        targets.read(reader, "Basic", f"r{i}")
    assert reader.count == 10
    targets.read(reader, "Basic", "r9")  # the newest two of 100 bytes stayed
    targets.read(reader, "Basic", "r8")
    assert reader.count == 10
    targets.read(reader, "Basic", "r0")  # long gone
    assert reader.count == 11
    targets.read(reader, "Basic", "big")
    targets.read(reader, "Basic", "big")  # a body over max_body is never kept
    assert reader.count == 13
