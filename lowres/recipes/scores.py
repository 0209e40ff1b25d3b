"""Which score ranks a run's results: its task's main score (f1 for QA, accuracy for
classification), for the sweep reports, which read run folders and build no task."""

from __future__ import annotations

from typing import Any

from lowres.tasks import TASKS


def main_score(task: str, per_language: dict[str, dict[str, Any]]) -> str:
    """The score a run is ranked by: its task's, or (a task read from files, which has no
    entry in TASKS) f1 for QA scores and accuracy for classification."""
    if task in TASKS:
        return TASKS[task].main_score
    first = next(iter(per_language.values()), {})
    return "f1" if "f1" in first else "accuracy"
