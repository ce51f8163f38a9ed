"""The recall evaluation: a deterministic corpus with planted facts, real searches scored against
them, and a RESULTS.md update that touches only its own section."""

from __future__ import annotations

import random
from pathlib import Path

from agent_sessions.analysis import reciprocal_rank
from benchmarks.recall_eval import (
    BEGIN,
    END,
    FACTS,
    KINDS,
    Design,
    evaluate,
    generate,
    render,
    targets,
)
from benchmarks.recommendations import record

SMALL = Design(users=12)


def test_the_corpus_is_deterministic_and_each_fact_is_planted_once_where_its_queries_point() -> None:
    first, second = generate(SMALL, now=1e9), generate(SMALL, now=1e9)
    assert [r.history for r in first.restores] == [r.history for r in second.restores]
    assert first.queries == second.queries
    assert len(first.restores) == SMALL.users * SMALL.sessions
    assert len(first.queries) == SMALL.users * len(FACTS) * len(KINDS)
    entries = {f"{r.session.session_id}:{seq}": entry for r in first.restores for seq, entry in enumerate(r.history, 1)}
    for query in first.queries:
        planted = entries[query.target]
        assert planted["data"]["role"] == "user"
        fact = FACTS[query.fact]
        if query.kind == "keyword":  # both words in the planted entry
            assert all(word in planted["data"]["text"].lower() for word in fact.keyword.split())
    assert generate(Design(seed=1, users=12), now=1e9).queries != first.queries


def test_reciprocal_rank_is_one_over_the_first_relevant_rank_within_k() -> None:
    assert reciprocal_rank(["a", "b", "c"], {"b"}) == 0.5
    assert reciprocal_rank(["a", "b", "c"], {"c"}, k=2) == 0.0
    assert reciprocal_rank([], {"a"}) == 0.0


async def test_keyword_queries_find_the_planted_facts_and_paraphrases_are_reported_lower() -> None:
    report = await evaluate(SMALL, [1_000], ["memory", "redis"])
    by_kind = {q.kind: q for q in report.quality if q.backend == "memory"}
    assert by_kind["keyword"].recall >= 0.95
    assert by_kind["paraphrase"].recall < by_kind["keyword"].recall
    assert "SearchUnavailable" in report.unavailable["redis"]
    (speed,) = report.speed
    assert speed.backend == "memory" and speed.entries == 1_000 and speed.search_p50_ms > 0 and speed.rare_p50_ms > 0
    text = render(report)
    assert text.startswith("## Recall evaluation") and "| memory | keyword |" in text
    assert targets(report) == []


def test_recording_replaces_only_this_evaluations_section(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\nother section\n")
    record("## Recall evaluation\n\nfirst\n", results, begin=BEGIN, end=END)
    record(f"## Recall evaluation\n\nsecond {random.random()}\n", results, begin=BEGIN, end=END)
    text = results.read_text()
    assert text.count(BEGIN) == 1 and "first" not in text and "second" in text and "other section" in text
