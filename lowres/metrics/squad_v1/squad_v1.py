"""SQuAD v1.1 exact match and token F1, as the official evaluation script computes them."""

from __future__ import annotations

import evaluate

from lowres.metrics.qa_module import QA_FEATURES, NullablePredictions, score_predictions
from lowres.metrics.qa_scoring import normalize_squad

_DESCRIPTION = """\
The official SQuAD v1.1 evaluation: answers are lowercased and stripped of ASCII punctuation,
the articles a/an/the and extra whitespace, then scored by exact match and token F1 against
the best-matching ground truth. XQuAD and XTREME report this metric for every language.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: list of {"id": str, "prediction_text": str}.
    references: list of {"id": str, "answers": {"text": [str], "answer_start": [int]}}.
        Every reference is one question in the denominator. evaluate needs as many
        predictions as references, so an unanswered question is given as
        {"id": id, "prediction_text": None}; like a reference whose id has no prediction at
        all, it scores 0, as in the official script.
Returns:
    exact_match: percentage (0-100) of questions whose answer matches a ground truth exactly.
    f1: mean token F1 against the best ground truth, 0-100.
"""

_CITATION = """\
@inproceedings{rajpurkar-etal-2016-squad,
    title = "{SQ}u{AD}: 100,000+ Questions for Machine Comprehension of Text",
    author = "Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy",
    booktitle = "Proceedings of EMNLP 2016",
    year = "2016",
    pages = "2383--2392",
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SquadV1(NullablePredictions, evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=QA_FEATURES,
            reference_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
        )

    def _compute(self, predictions, references) -> dict[str, float]:
        return score_predictions(predictions, references, normalize_squad)
