"""A narrowed read's parameters on SQLite: repeated values bound once, under numbered
parameters, with the same answer as the statement as compiled."""

from __future__ import annotations

import sqlite3

from server.store.sql.adapter import _numbered


def test_repeated_values_are_bound_once_and_literals_are_left_alone() -> None:
    text = "a = ? AND b = 'what?' AND c = ? AND d = 'it''s ?' AND e = ? AND f = ?"
    numbered, args = _numbered(text, ("x", 1, "x", True))
    assert numbered == "a = ?3 AND b = 'what?' AND c = ?4 AND d = 'it''s ?' AND e = ?3 AND f = ?5"
    assert args == ("x", 1, True)  # 1 and True are different values to bind


def test_a_text_whose_parameters_do_not_match_its_values_is_left_as_it_is() -> None:
    assert _numbered("a = ? AND b = ?", ("x",)) == ("a = ? AND b = ?", ("x",))


def test_the_numbered_statement_selects_what_the_compiled_one_does() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (rtype, id, org, kind, label)")
    rows = [("P", str(i), f"o{i % 3}", f"k{i % 2}", "it's ?" if i % 4 else "x") for i in range(40)]
    conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", rows)
    text = "(org = ? OR org = ?) AND kind = ? AND (label = 'it''s ?' OR org = ?) AND kind = ?"
    args = ("o1", "o2", "k1", "o1", "k1")
    numbered, distinct = _numbered(text, args)
    for i in range(40):
        plain = conn.execute(
            f"SELECT id FROM t WHERE rtype = ? AND id = ? AND {text}", ("P", str(i), *args)
        ).fetchall()
        again = conn.execute(
            f"SELECT id FROM t WHERE rtype = ?1 AND id = ?2 AND {numbered}",
            ("P", str(i), *distinct),
        ).fetchall()
        assert plain == again
