"""MLQA v1 exact match and token F1, as the official evaluation script computes them."""

from __future__ import annotations

import datasets
import evaluate

from lowres.metrics.qa_scoring import get_normalizer, score_questions

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
class MlqaV1(evaluate.Metric):
    def _enforce_nested_string_type(self, schema, obj):
        # evaluate rejects None for string features, but None is how an unanswered question
        # is passed (it needs one prediction per reference); the Arrow column holds nulls fine.
        if obj is None:
            return None
        return super()._enforce_nested_string_type(schema, obj)

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
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
            ),
            codebase_urls=["https://github.com/facebookresearch/MLQA"],
        )

    def _compute(self, predictions, references, answer_language=None) -> dict[str, float]:
        normalize = get_normalizer("mlqa", answer_language)
        answers = {
            p["id"]: p["prediction_text"] for p in predictions if p["prediction_text"] is not None
        }
        questions = ((r["id"], r["answers"]["text"]) for r in references)
        scores = score_questions(answers, questions, normalize)
        return {"exact_match": scores["exact_match"], "f1": scores["f1"]}
