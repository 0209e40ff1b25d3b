"""MLQA v1 exact match and token F1, as the official evaluation script computes them."""

from __future__ import annotations

import evaluate

from lowres.metrics.qa_module import QA_FEATURES, NullablePredictions, score_predictions
from lowres.metrics.qa_scoring import get_normalizer

_DESCRIPTION = """\
The official MLQA v1 evaluation: like SQuAD v1.1, but the rules follow the answer language
(the context's language): all Unicode punctuation is dropped, articles are dropped per
language (en, es, de, vi, ar; none for hi and zh), and Chinese is split into single
characters before token F1.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: list of {"id": str, "prediction_text": str}.
    references: list of {"id": str, "answers": {"text": [str], "answer_start": [int]}}.
        Every reference is one question in the denominator. evaluate needs as many
        predictions as references, so an unanswered question is given as
        {"id": id, "prediction_text": None}; like a reference whose id has no prediction at
        all, it scores 0, as in the official script.
    answer_language: the context language, one of en, es, de, vi, zh, ar, hi.
Returns:
    exact_match: percentage (0-100) of questions whose answer matches a ground truth exactly.
    f1: mean token F1 against the best ground truth, 0-100.
"""

_CITATION = """\
@inproceedings{lewis-etal-2020-mlqa,
    title = "{MLQA}: Evaluating Cross-lingual Extractive Question Answering",
    author = "Lewis, Patrick and Oguz, Barlas and Rinott, Ruty and Riedel, Sebastian and
      Schwenk, Holger",
    booktitle = "Proceedings of ACL 2020",
    year = "2020",
    pages = "7315--7330",
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MlqaV1(NullablePredictions, evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=QA_FEATURES,
            codebase_urls=["https://github.com/facebookresearch/MLQA"],
        )

    def _compute(self, predictions, references, answer_language=None) -> dict[str, float]:
        normalize = get_normalizer("mlqa", answer_language)
        return score_predictions(predictions, references, normalize)
