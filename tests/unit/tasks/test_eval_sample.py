"""Evaluation sets: every question outside the pool, or a sample stratified by article."""

from __future__ import annotations

from collections import Counter

from lowres.tasks import DataSettings, create_task
from lowres.tasks.base import stratified_sample


def records(sizes: dict[str, int]) -> list[dict]:
    return [
        {"id": f"{title}-{n}", "title": title, "group": f"{title}-p"}
        for title, size in sizes.items()
        for n in range(size)
    ]


def test_a_sample_gives_each_article_its_share_in_file_order():
    rows = records({"A": 6, "B": 3, "C": 1})
    sample = stratified_sample(rows, 5, "xquad")
    counts = Counter(r["title"] for r in sample)
    # shares 3, 1.5, 0.5: A gets 3, and B or C the one place left by the remainders
    assert counts["A"] == 3 and counts["B"] + counts["C"] == 2 and counts["B"] >= 1
    assert sample == [r for r in rows if r in sample]  # file order kept
    assert sample != rows[:5]  # not the first N (those are all A's)
    assert stratified_sample(rows, 5, "xquad") == sample  # fixed: the same for every run
    assert stratified_sample(rows, 50, "xquad") == rows


def test_xquad_capped_evaluation_spans_the_articles_and_matches_across_languages(shared_data):
    settings = DataSettings(
        source="local",
        root=str(shared_data),
        source_language="en",
        eval_languages=["de", "es"],
        max_eval_examples=300,
        seed=3,
    )
    task = create_task("xquad", settings)
    de, es = task.evaluation_records("de"), task.evaluation_records("es")
    assert len(de) == len(es) == 300
    assert len({r["title"] for r in de}) == 48  # the first 300 questions cover 13 of 48
    assert [r["id"] for r in de] == [r["id"] for r in es]  # the same questions in each language
