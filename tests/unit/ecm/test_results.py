"""Three-valued logic of criteria: how all() and any() combine results."""

from __future__ import annotations

import pytest

from server.ecm.results import Result, all_of, any_of, negate

M, N, A, X = "met", "not-met", "needs-attestation", "insufficient-data"


@pytest.mark.parametrize(
    ("results", "expected"),
    [([M, M], M), ([M, A], A), ([M, A, X], X), ([M, A, X, N], N), ([], M)],
)
def test_all_of(results: list[Result], expected: Result) -> None:
    assert all_of(results) == expected


@pytest.mark.parametrize(
    ("results", "expected"),
    [([N, N], N), ([N, X], X), ([N, X, A], A), ([N, X, A, M], M), ([], N)],
)
def test_any_of(results: list[Result], expected: Result) -> None:
    assert any_of(results) == expected


def test_negate_keeps_unknowns() -> None:
    assert negate("met") == "not-met"
    assert negate("not-met") == "met"
    assert negate("needs-attestation") == "needs-attestation"
    assert negate("insufficient-data") == "insufficient-data"
