"""What the SQuAD v1.1 and MLQA v1 ``evaluate`` modules share: their inputs and their scoring.

Kept apart from ``qa_scoring`` so that scoring alone never imports ``datasets``. The mixin
is not an ``evaluate`` module itself: evaluate takes the first module class it finds in a
metric script as the metric, so nothing here may subclass ``evaluate.Metric``.
"""

from __future__ import annotations

from typing import Any

import datasets

from lowres.metrics.qa_scoring import Normalizer, score_questions

# An answer (text, start) list per question, a predicted text per question: SQuAD's format.
QA_FEATURES = datasets.Features(
    {
        "predictions": {
            "id": datasets.Value("string"),
            "prediction_text": datasets.Value("string"),
        },
        "references": {
            "id": datasets.Value("string"),
            "answers": datasets.Sequence(
                {
                    "text": datasets.Value("string"),
                    "answer_start": datasets.Value("int32"),
                }
            ),
        },
    }
)


class NullablePredictions:
    """Mix into a QA metric before ``evaluate.Metric``: an unanswered question is ``None``."""

    def _enforce_nested_string_type(self, schema: Any, obj: Any) -> Any:
        # evaluate rejects None for string features, but None is how an unanswered question
        # is passed (it needs one prediction per reference); the Arrow column holds nulls fine.
        if obj is None:
            return None
        return super()._enforce_nested_string_type(schema, obj)  # type: ignore[misc]


def score_predictions(
    predictions: list[dict[str, Any]], references: list[dict[str, Any]], normalize: Normalizer
) -> dict[str, float]:
    """Exact match and F1 of evaluate's predictions and references; ``None`` scores 0."""
    answers = {
        p["id"]: p["prediction_text"] for p in predictions if p["prediction_text"] is not None
    }
    questions = ((r["id"], r["answers"]["text"]) for r in references)
    scores = score_questions(answers, questions, normalize)
    return {"exact_match": scores["exact_match"], "f1": scores["f1"]}
