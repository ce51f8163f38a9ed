"""The offline evaluation script: a deterministic planted data set the algorithms must exploit,
and a RESULTS.md update that touches only its own section."""

from __future__ import annotations

from pathlib import Path

from benchmarks.recommendations import BEGIN, END, Design, evaluate, generate, record

SMALL = Design(users_per_group=30, groups=4, items_per_group=24)


def test_the_generated_data_set_is_deterministic_and_holds_out_the_last_interactions() -> None:
    first, second = generate(SMALL), generate(SMALL)
    assert first.train == second.train and first.held_out == second.held_out
    assert len(first.train) == 4 * 30 and len(first.catalogue) == 4 * 24
    for user, items in first.held_out.items():
        assert len(items) == SMALL.held_out
        assert items.isdisjoint(item for item, _ in first.train[user])
    assert generate(Design(seed=8, users_per_group=30, groups=4, items_per_group=24)).train != first.train


async def test_collaborative_and_content_based_beat_popularity_on_the_planted_structure() -> None:
    report = await evaluate(SMALL, [5])
    by_name = {r.name: r for r in report.results}
    popularity = by_name["popularity"]
    for algorithm in ("collaborative", "content_based"):
        assert by_name[algorithm].hit_rate > 1.2 * popularity.hit_rate, algorithm
        assert by_name[algorithm].ndcg > 1.2 * popularity.ndcg, algorithm
    # Every ranking respects the exclusion of training items.
    run = report.runs[0]
    data = generate(run.design)
    for algorithm, rankings in run.rankings.items():
        for user, ranking in rankings.items():
            assert len(ranking) == 10, algorithm
            assert set(ranking).isdisjoint(item for item, _ in data.train[user]), algorithm


def test_recording_replaces_only_this_evaluations_section(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n<!-- other:begin -->\nother numbers\n<!-- other:end -->\n")
    record("first\n", results)
    record("second\n", results)
    text = results.read_text()
    assert "<!-- other:begin -->\nother numbers\n<!-- other:end -->" in text
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert f"{BEGIN}\nsecond\n{END}" in text and "first" not in text
