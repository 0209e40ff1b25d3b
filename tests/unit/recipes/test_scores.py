"""The score that ranks a run, as the sweep reports read it from a run's metrics."""

from __future__ import annotations

from lowres.recipes.scores import main_score


def test_a_built_in_task_ranks_by_its_own_main_score():
    assert main_score("xquad", {"de": {"f1": 1.0, "exact_match": 0.0}}) == "f1"
    assert main_score("pawsx", {"de": {"accuracy": 50.0, "f1": 40.0}}) == "accuracy"


def test_a_task_read_from_files_ranks_by_what_its_scores_hold():
    assert main_score("my_qa_files", {"sw": {"f1": 10.0, "exact_match": 5.0}}) == "f1"
    assert main_score("my_pairs", {"sw": {"accuracy": 60.0}}) == "accuracy"
