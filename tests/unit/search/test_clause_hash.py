"""Access clauses keep their hash once computed: equal clauses still hash alike, a clause
made from another (``replace``) computes its own, and the statement caches keyed by them
tell them apart."""

import pickle
from dataclasses import replace

from server.search.query import AllClause, AnyClause, GrantClause, TypeClause
from server.store.sql.query import within

REACH = (("Observation", ("performer", "subject"), ("ecm",)),)


def grant(now: int) -> GrantClause:
    return GrantClause("Organization/ecm", REACH, ("ecm",), (), (("ecm", 0),), now)


def test_equal_clauses_hash_alike_before_and_after_the_hash_is_kept() -> None:
    first = AnyClause((TypeClause(("Practitioner",)), grant(1)))
    hash(first)  # kept
    second = AnyClause((TypeClause(("Practitioner",)), grant(1)))
    assert first == second and hash(first) == hash(second)
    assert {first: 1}[second] == 1


def test_a_clause_made_from_another_keeps_no_stale_hash() -> None:
    earlier = grant(1_000_000)
    hash(earlier)
    later = replace(earlier, now=2_000_000)
    assert later != earlier
    assert hash(later) == hash(grant(2_000_000))
    assert AllClause((later,)) != AllClause((earlier,))


def test_the_view_cache_compiles_each_second_of_a_view_apart() -> None:
    earlier, later = within([grant(1_000_000)]), within([grant(2_000_000)])
    assert 1_000_000 in earlier[1] and 2_000_000 not in earlier[1]
    assert 2_000_000 in later[1] and 1_000_000 not in later[1]


def test_a_pickled_clause_computes_its_hash_again() -> None:
    """String hashes differ between processes: a clause sent to another process carries no
    kept hash, and equals and hashes like the original."""
    original = AnyClause((TypeClause(("Practitioner",)), grant(1)))
    hash(original)
    copied = pickle.loads(pickle.dumps(original))
    assert copied._hash == 0 and copied.alternatives[1]._hash == 0
    assert copied == original and hash(copied) == hash(original)
