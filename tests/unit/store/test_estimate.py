"""``_total=estimate`` on PostgreSQL: the planner's row estimate of the count's input."""

from __future__ import annotations

import json

from server.store.sql.dialect import planned_rows


def test_the_rows_below_the_aggregate() -> None:
    plan = [
        {
            "Plan": {
                "Node Type": "Aggregate",
                "Plan Rows": 1,
                "Plans": [{"Node Type": "Index Only Scan", "Plan Rows": 104250}],
            }
        }
    ]
    assert planned_rows(plan) == 104250
    assert planned_rows(json.dumps(plan)) == 104250


def test_a_parallel_plan_is_scaled_by_the_parallel_divisor() -> None:
    partial = {"Node Type": "Seq Scan", "Parallel Aware": True, "Plan Rows": 41667}
    plan = [
        {
            "Plan": {
                "Node Type": "Aggregate",
                "Partial Mode": "Finalize",
                "Plan Rows": 1,
                "Plans": [
                    {
                        "Node Type": "Gather",
                        "Workers Planned": 2,
                        "Plan Rows": 2,
                        "Plans": [
                            {
                                "Node Type": "Aggregate",
                                "Partial Mode": "Partial",
                                "Plan Rows": 1,
                                "Plans": [partial],
                            }
                        ],
                    }
                ],
            }
        }
    ]
    assert planned_rows(plan) == 100001  # 41,667 per process × (2 workers + 0.4 of the leader)


def test_no_estimate_without_rows() -> None:
    assert planned_rows([{"Plan": {"Node Type": "Result"}}]) is None
