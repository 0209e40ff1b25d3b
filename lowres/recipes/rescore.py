"""Each test question's score again, from a finished run's kept predictions.

A run keeps ``predictions/<lang>.json`` (or ``.json.gz``): the answer it gave to every
question it was scored on. Scored again here, one question at a time, with the task's
official metric and the gold answers from ``data.root``, they are what a bootstrap over the
test questions resamples (``lowres study report``). Their mean is the run's own score; the
caller checks that, so a data folder that is not the one the run read is caught.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from lowres.builders import build_run_task
from lowres.errors import LowresError
from lowres.metrics.qa_scoring import get_normalizer, question_scores

QuestionScorer = Callable[[str, dict[str, Any]], dict[str, float]]


def question_scorer(cfg: DictConfig) -> QuestionScorer:
    """``score(lang, predictions) -> {question id: main score, 0-100}`` for ``cfg``'s task.

    QA scores are each question's F1 under the task's metric (SQuAD v1.1, or MLQA's with the
    context language); classification scores are 100 for a right label and 0 for a wrong
    one. Every predicted id must be a question of that language in the data.
    """
    task = build_run_task(cfg)
    metric = getattr(task, "metric_name", "")
    if task.kind == "extractive_qa" and metric not in ("squad", "mlqa"):
        raise LowresError(
            f"task={task.name} scores with metric {metric!r}, which cannot be scored one "
            "question at a time here (squad and mlqa can); leave this task out of the "
            "question bootstrap."
        )

    def score(lang: str, predictions: dict[str, Any]) -> dict[str, float]:
        records = {r["id"]: r for r in task.language_records(lang)}
        unknown = [qid for qid in predictions if qid not in records]
        if unknown:
            raise LowresError(
                f"{len(unknown)} of {len(predictions)} predicted ids (e.g. {unknown[0]!r}) are "
                f"not {task.name} {lang} questions under data.root={cfg.data.root}; point "
                "data.root at the data the run was scored on."
            )
        if task.kind != "extractive_qa":
            return {
                qid: 100.0 * (int(label) == int(records[qid]["label"]))
                for qid, label in predictions.items()
            }
        answer_language = task.metric_kwargs(lang).get("answer_language")
        normalize = get_normalizer(metric, answer_language if metric == "mlqa" else None)
        questions = [(qid, records[qid]["answers"]["text"]) for qid in predictions]
        return {
            qid: s["f1"] for qid, s in question_scores(predictions, questions, normalize).items()
        }

    return score
