"""Evaluation metrics on tiny cases computed by hand."""

from __future__ import annotations

import math

import pytest

from agent_sessions.analysis import evaluate_rankings, hit_rate_at_k, ndcg_at_k, recall_at_k, results_table


def test_hit_rate_is_one_when_a_relevant_item_is_in_the_top_k() -> None:
    assert hit_rate_at_k(["x", "a", "y"], {"a"}, k=2) == 1.0
    assert hit_rate_at_k(["x", "y", "a"], {"a"}, k=2) == 0.0


def test_ndcg_by_hand() -> None:
    ranking, relevant = ["x", "a", "y", "b"], {"a", "b"}
    # k=3: DCG = 1/log2(3) (a at rank 2); IDCG = 1 + 1/log2(3); 0.6309 / 1.6309 = 0.38685
    assert ndcg_at_k(ranking, relevant, k=3) == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert ndcg_at_k(ranking, relevant, k=3) == pytest.approx(0.38685, abs=1e-5)
    # k=4: DCG = 1/log2(3) + 1/log2(5) = 1.06158; same IDCG: 0.65092
    assert ndcg_at_k(ranking, relevant, k=4) == pytest.approx(0.65092, abs=1e-5)
    assert ndcg_at_k(["a", "b", "x"], relevant, k=3) == pytest.approx(1.0)
    assert ndcg_at_k(["x", "y"], relevant, k=2) == 0.0
    # more relevant items than k: the ideal list is k long
    assert ndcg_at_k(["a"], {"a", "b", "c"}, k=1) == 1.0


def test_recall_is_the_share_of_relevant_items_found() -> None:
    assert recall_at_k(["x", "a", "y", "b"], {"a", "b", "c", "d"}, k=3) == 0.25
    assert recall_at_k(["a"], set(), k=3) == 0.0


def test_evaluation_averages_over_users_with_held_out_items() -> None:
    result = evaluate_rankings(
        {"u1": ["a", "x"], "u2": ["x", "b"], "u3": ["y"]},
        {"u1": {"a"}, "u2": {"b"}, "u3": {"z"}, "u4": {"q"}, "u5": set()},
        k=2,
        name="algo",
    )
    # users u1..u4 (u5 has nothing held out; u4 has no ranking and scores 0).
    assert result.users == 4
    assert result.hit_rate == 0.5
    assert result.ndcg == pytest.approx((1.0 + 1 / math.log2(3)) / 4)
    assert result.recall == 0.5
    table = results_table([result, evaluate_rankings({"u1": ["a"]}, {"u1": {"a"}, "u2": {"b"}}, name="popularity")])
    assert table.to_records()[0]["hit rate vs base"] == 1.0
    with pytest.raises(ValueError, match="no user"):
        evaluate_rankings({}, {"u": set()})
    with pytest.raises(ValueError, match="k must be"):
        hit_rate_at_k([], {"a"}, k=0)
