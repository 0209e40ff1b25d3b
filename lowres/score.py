"""Score prediction files against benchmark data files (the ``lowres score`` command)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from lowres.data.pawsx_format import read_pawsx_tsv
from lowres.data.squad_format import read_squad_json
from lowres.errors import ConfigError, DataFormatError, LowresError
from lowres.files import read_json
from lowres.metrics.qa_scoring import MLQA_ANSWER_LANGUAGES, get_normalizer, score_questions

log = logging.getLogger(__name__)

QA_METRICS = ("squad", "mlqa")

# MLQA names its files dev-context-<answer lang>-question-<question lang>.json.
_MLQA_FILE_LANG = re.compile(r"context-([a-z]{2})-question-[a-z]{2}")


def infer_mlqa_language(data_file: Path) -> str | None:
    """The context (answer) language in an MLQA file name, or None when the name has none."""
    match = _MLQA_FILE_LANG.search(Path(data_file).name)
    return match.group(1) if match else None


def score_qa(
    data_file: Path, predictions_file: Path, metric: str, lang: str | None = None
) -> dict[str, Any]:
    """Score ``{question_id: answer}`` predictions against a SQuAD v1.1-format data file.

    ``metric`` is ``"squad"`` (SQuAD v1.1 script, used for XQuAD) or ``"mlqa"`` (MLQA v1
    script, which needs the answer language: ``lang``, or inferred from an MLQA file name).
    Returns ``exact_match`` and ``f1`` (0-100) and ``n``, the number of questions.
    """
    data_file, predictions_file = Path(data_file), Path(predictions_file)
    if metric not in QA_METRICS:
        raise ConfigError(f"unknown QA metric {metric!r}; expected one of {', '.join(QA_METRICS)}")
    if metric == "mlqa":
        lang = _mlqa_language(data_file, lang)
    normalize = get_normalizer(metric, lang)
    _require_file(data_file, "data file")
    predictions = _read_predictions(predictions_file)
    for qid, answer in predictions.items():
        if not isinstance(answer, str):
            raise DataFormatError(
                f"{predictions_file}: the prediction for question {qid!r} is "
                f"{type(answer).__name__} {answer!r:.80}; expected the answer text as a string"
            )

    rows = read_squad_json(data_file, validate_spans=False)
    questions = [(row["id"], row["answers"]["text"]) for row in rows]
    _check_ids_overlap(predictions, {qid for qid, _ in questions}, predictions_file, data_file)
    scores = score_questions(predictions, questions, normalize)
    return {"exact_match": scores["exact_match"], "f1": scores["f1"], "n": scores["n"]}


def score_accuracy(data_file: Path, predictions_file: Path) -> dict[str, Any]:
    """Score ``{id: 0|1}`` predictions against a PAWS-X TSV file; accuracy is 0-100.

    Ids are the file's id column, or the 0-based row index (as a string) when it has none.
    A row without a prediction counts as wrong.
    """
    data_file, predictions_file = Path(data_file), Path(predictions_file)
    _require_file(data_file, "data file")
    predictions = _read_predictions(predictions_file)
    for pid, label in predictions.items():
        # bool is an int subclass, but true/false in the file is a sign of a different format.
        if type(label) is not int or label not in (0, 1):
            raise DataFormatError(
                f"{predictions_file}: the prediction for id {pid!r} is {label!r:.80}; "
                "expected the label 0 or 1"
            )

    rows, skipped = read_pawsx_tsv(data_file)
    if skipped:
        log.info("%s: %d untranslated (NS) rows are not scored", data_file, skipped)
    if not rows:
        raise DataFormatError(f"{data_file} has no labelled rows to score")
    _check_ids_overlap(predictions, {row["id"] for row in rows}, predictions_file, data_file)
    correct = 0
    missing = 0
    for row in rows:
        if row["id"] not in predictions:
            missing += 1
        elif predictions[row["id"]] == row["label"]:
            correct += 1
    if missing:
        log.warning("%d of %d rows have no prediction; they count as wrong", missing, len(rows))
    return {"accuracy": 100.0 * correct / len(rows), "n": len(rows)}


def _mlqa_language(data_file: Path, lang: str | None) -> str:
    inferred = infer_mlqa_language(data_file)
    if lang is None:
        if inferred is None:
            raise ConfigError(
                f"cannot tell the answer language of {data_file}: its name is not like "
                "dev-context-<lang>-question-<lang>.json; pass --lang with the context language "
                f"({', '.join(MLQA_ANSWER_LANGUAGES)})"
            )
        lang = inferred
    lang = lang.strip().lower()
    if lang not in MLQA_ANSWER_LANGUAGES:
        raise ConfigError(
            f"MLQA answer language {lang!r} is not supported; expected one of "
            f"{', '.join(MLQA_ANSWER_LANGUAGES)} (the language of the context, not of the question)"
        )
    if inferred is not None and inferred != lang:
        # An explicit --lang wins, but scoring with another language's rules is usually a slip.
        log.warning(
            "scoring %s with answer language %r, but its name says the context is %r",
            data_file,
            lang,
            inferred,
        )
    return lang


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise LowresError(f"{what} {path} does not exist or is not a file")


def _read_predictions(path: Path) -> dict[str, Any]:
    _require_file(path, "predictions file")
    expected = "a JSON object mapping each question id to its prediction"
    predictions = read_json(path, expected, "check the path, or write the predictions again.")
    if not isinstance(predictions, dict):
        raise DataFormatError(
            f"{path} holds a JSON {type(predictions).__name__}; expected {expected}"
        )
    return predictions


def _check_ids_overlap(
    predictions: dict[str, Any], ids: set[str], predictions_file: Path, data_file: Path
) -> None:
    # Unmatched ids would silently score 0; when none match at all, the files don't belong
    # together, which is worth an error rather than a zero.
    if predictions and not ids.intersection(predictions):
        example = next(iter(predictions))
        raise DataFormatError(
            f"none of the {len(predictions)} ids in {predictions_file} (e.g. {example!r}) are "
            f"ids in {data_file}; are these predictions for another file?"
        )
