"""Accuracy on a 0-100 scale, matching how QA scores are reported."""

from __future__ import annotations

import datasets
import evaluate

_DESCRIPTION = "Percentage of predictions equal to their reference label."

_KWARGS_DESCRIPTION = """\
Args:
    predictions: list of int labels.
    references: list of int labels, same length.
Returns:
    accuracy: 100 * correct / total.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
        )

    def _compute(self, predictions, references) -> dict[str, float]:
        if not references:
            raise ValueError("accuracy needs at least one prediction")
        correct = sum(int(p == r) for p, r in zip(predictions, references, strict=True))
        return {"accuracy": 100.0 * correct / len(references)}
