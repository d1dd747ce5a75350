"""The revocation stamp: a client's *active* status is kept between requests on SQLite, and a
revocation made by any process on the store is seen at the next request by every other."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server.auth.clients import new_client
from server.store.sql.adapter import SqlRepository
from server.store.sql.auth_stamp import AuthStamp, Statuses
from server.store.sql.dialect import SQLiteDialect
from tests.auth.partners import Partner


def _two_workers(tmp_path: Path) -> tuple[SqlRepository, SqlRepository, str]:
    """Two repositories on one store (as two worker processes have), one client added."""
    path = str(tmp_path / "s.db")
    first = SqlRepository(SQLiteDialect(path))
    first.migrate()
    second = SqlRepository(SQLiteDialect(path))
    row = new_client(
        name="c",
        organization="Organization/o",
        scope="system/*.rs",
        jwks={"keys": [Partner("RS384").jwk]},
    )
    first.auth.add_client(row)
    return first, second, row.client_id


def test_a_revocation_by_one_worker_stops_the_client_at_the_next_request_of_the_other(
    tmp_path: Path,
) -> None:
    first, second, client = _two_workers(tmp_path)
    try:
        assert second.auth.active(client) and second.auth.active(client)  # kept
        assert first.auth.revoke(client)
        assert not second.auth.active(client)
        assert not first.auth.active(client)
    finally:
        first.close()
        second.close()


def test_a_disabled_user_and_a_revoked_grant_move_the_stamp(tmp_path: Path) -> None:
    first, second, _ = _two_workers(tmp_path)
    stamp = AuthStamp(str(tmp_path / "s.db") + "-auth")
    try:
        before = stamp.value()
        first.auth.update_user("nobody", status="disabled")
        first.auth.revoke_grant("no-grant")
        assert stamp.value() == before + 4 and stamp.value() % 2 == 0
    finally:
        stamp.close()
        first.close()
        second.close()


class _Asked:
    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.times = 0

    def __call__(self) -> bool:
        self.times += 1
        return self.answer


@pytest.fixture
def stamp_and_statuses(tmp_path: Path) -> Iterator[tuple[AuthStamp, Statuses]]:
    """A stamp (as a process that changes statuses holds it) and a reader's kept answers."""
    path = str(tmp_path / "x-auth")
    stamp, statuses = AuthStamp(path), Statuses(path)
    yield stamp, statuses
    statuses.close()
    stamp.close()


def test_only_active_answers_are_kept_and_only_while_the_stamp_stands(
    stamp_and_statuses: tuple[AuthStamp, Statuses],
) -> None:
    stamp, statuses = stamp_and_statuses
    asked = _Asked()
    assert statuses.active(("client", "a"), asked) and statuses.active(("client", "a"), asked)
    assert asked.times == 1
    refused = _Asked(False)
    assert not statuses.active(("client", "b"), refused)
    assert not statuses.active(("client", "b"), refused)
    assert refused.times == 2
    with stamp.changing():
        assert statuses.active(("client", "a"), asked)  # under way: asked, not kept
        assert asked.times == 2
    assert statuses.active(("client", "a"), asked)
    assert asked.times == 3


def test_an_answer_whose_question_overlapped_a_change_is_not_kept(
    stamp_and_statuses: tuple[AuthStamp, Statuses],
) -> None:
    stamp, statuses = stamp_and_statuses
    asked = _Asked()

    def racing() -> bool:
        with stamp.changing():  # a change commits while the database is asked
            pass
        return asked()

    assert statuses.active(("client", "a"), racing)
    assert statuses.active(("client", "a"), asked)
    assert asked.times == 2


def test_a_change_that_died_midway_leaves_every_request_asking(
    stamp_and_statuses: tuple[AuthStamp, Statuses],
) -> None:
    stamp, statuses = stamp_and_statuses
    with open(stamp.path, "r+b") as file:  # what a process killed inside ``changing`` leaves
        file.write((stamp.value() + 1).to_bytes(8, "little"))
    asked = _Asked()
    for _ in range(3):
        assert statuses.active(("client", "a"), asked)
    assert asked.times == 3
    with stamp.changing():  # the next change completes: answers are kept again
        pass
    for _ in range(3):
        assert statuses.active(("client", "a"), asked)
    assert asked.times == 4


def test_a_failed_change_leaves_the_stamp_moved_and_even(
    stamp_and_statuses: tuple[AuthStamp, Statuses],
) -> None:
    stamp, statuses = stamp_and_statuses
    asked = _Asked()
    assert statuses.active(("client", "a"), asked)
    before = stamp.value()
    with pytest.raises(RuntimeError), stamp.changing():
        raise RuntimeError("the database refused the change")
    assert stamp.value() == before + 2
    assert statuses.active(("client", "a"), asked) and statuses.active(("client", "a"), asked)
    assert asked.times == 2  # asked again once, then kept


def test_without_a_stamp_every_request_asks() -> None:
    asked = _Asked()
    statuses = Statuses(None)
    for _ in range(3):
        assert statuses.active(("client", "a"), asked)
    assert asked.times == 3
