"""Answer normalization and scoring of the official SQuAD v1.1 and MLQA v1 evaluation scripts.

Both scripts lowercase, drop punctuation, drop articles and fix whitespace, then score exact
match and token F1 against the best ground truth. They differ in which punctuation and
articles they drop and in how they tokenize Chinese. Everything here reproduces their
behaviour exactly, quirks included, so scores match published numbers.
"""

from __future__ import annotations

import logging
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

from lowres.errors import ConfigError, DataFormatError

log = logging.getLogger(__name__)

Normalizer = Callable[[str], str]

_ASCII_PUNCT = frozenset(string.punctuation)

# Same patterns as the scripts: on str patterns \b is Unicode-aware, so word boundaries next
# to accented or non-Latin letters fall where the official scores expect them.
_ARTICLES: dict[str, re.Pattern[str] | None] = {
    "en": re.compile(r"\b(a|an|the)\b"),
    "es": re.compile(r"\b(un|una|unos|unas|el|la|los|las)\b"),
    "de": re.compile(r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b"),
    "vi": re.compile(r"\b(của|là|cái|chiếc|những)\b"),
    # The MLQA script's Arabic pattern: its first branch can never match ("^" after two
    # characters), so in effect every "ال" is replaced, even inside a word. Kept verbatim
    # because official scores depend on it.
    "ar": re.compile(r"\sال^|ال"),
    "hi": None,
    "zh": None,
}
# The answer languages the MLQA script has rules for: the languages its metric accepts.
MLQA_ANSWER_LANGUAGES: tuple[str, ...] = tuple(_ARTICLES)
_SQUAD_ARTICLES = _ARTICLES["en"]
_CJK = re.compile(r"[\u4e00-\u9fa5]")


def is_mlqa_punct(ch: str) -> bool:
    """True for characters the MLQA script drops: any Unicode 'P*' category or ASCII punct."""
    # Equivalent to the script's precomputed set over range(sys.maxunicode): the one code
    # point it leaves out (U+10FFFF) is unassigned, so never punctuation.
    return ch in _ASCII_PUNCT or unicodedata.category(ch).startswith("P")


def mixed_segmentation(text: str) -> list[str]:
    """Split into single CJK characters and punctuation marks, other runs on whitespace."""
    tokens: list[str] = []
    run: list[str] = []
    for ch in text:
        if _CJK.match(ch) or is_mlqa_punct(ch):
            if run:
                tokens.extend("".join(run).split())
                run = []
            tokens.append(ch)
        else:
            run.append(ch)
    if run:
        tokens.extend("".join(run).split())
    return tokens


def normalize_squad(text: str) -> str:
    """SQuAD v1.1 normalization: lowercase, drop ASCII punctuation and a/an/the, fix spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _ASCII_PUNCT)
    text = _SQUAD_ARTICLES.sub(" ", text)
    return " ".join(text.split())


def normalize_mlqa(text: str, lang: str) -> str:
    """MLQA v1 normalization for answer language ``lang``."""
    check_mlqa_language(lang)
    text = "".join(ch for ch in text.lower() if not is_mlqa_punct(ch))
    articles = _ARTICLES[lang]
    if articles is not None:
        text = articles.sub(" ", text)
    tokens = mixed_segmentation(text) if lang == "zh" else text.split()
    return " ".join(t for t in tokens if t.strip() != "")


def check_mlqa_language(lang: str | None) -> str:
    """Return ``lang`` if MLQA scoring knows it, else raise ConfigError."""
    if lang not in _ARTICLES:
        raise ConfigError(
            f"unknown MLQA answer language {lang!r}; expected one of "
            f"{', '.join(MLQA_ANSWER_LANGUAGES)}"
        )
    return lang


def get_normalizer(metric: str, lang: str | None = None) -> Normalizer:
    """The normalizer for metric ``"squad"`` or ``"mlqa"`` (which needs ``lang``)."""
    if metric == "squad":
        return normalize_squad
    if metric == "mlqa":
        checked = check_mlqa_language(lang)
        return lambda text: normalize_mlqa(text, checked)
    raise ConfigError(f"unknown QA metric {metric!r}; expected 'squad' or 'mlqa'")


def exact_match_score(prediction: str, ground_truth: str, normalize: Normalizer) -> bool:
    return normalize(prediction) == normalize(ground_truth)


def f1_score(prediction: str, ground_truth: str, normalize: Normalizer) -> float:
    """Token F1 over whitespace tokens of the normalized strings (0 when nothing overlaps)."""
    pred_tokens = normalize(prediction).split()
    truth_tokens = normalize(ground_truth).split()
    num_same = sum((Counter(pred_tokens) & Counter(truth_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def _best_against(
    qid: str, prediction: str, truths: Sequence[str], normalize: Normalizer
) -> tuple[float, float]:
    """(exact match, F1) of one prediction against its best ground truth, each 0-1."""
    if not truths:
        # The official scripts crash here (max of an empty list); say why instead.
        raise DataFormatError(
            f"question {qid!r} has no reference answers; SQuAD-style scoring needs at least one"
        )
    match = max(exact_match_score(prediction, t, normalize) for t in truths)
    return float(match), max(f1_score(prediction, t, normalize) for t in truths)


def question_scores(
    predictions: Mapping[str, str],
    questions: Iterable[tuple[str, Sequence[str]]],
    normalize: Normalizer,
) -> dict[str, dict[str, float]]:
    """Each question's ``exact_match`` and ``f1`` (0-100), scored as :func:`score_questions`
    scores it: their means over the questions are its scores. A question without a
    prediction scores 0. What a bootstrap over the test questions resamples."""
    out = {}
    for qid, truths in questions:
        if qid not in predictions:
            out[qid] = {"exact_match": 0.0, "f1": 0.0}
            continue
        match, overlap = _best_against(qid, predictions[qid], truths, normalize)
        out[qid] = {"exact_match": 100.0 * match, "f1": 100.0 * overlap}
    return out


def score_questions(
    predictions: Mapping[str, str],
    questions: Iterable[tuple[str, Sequence[str]]],
    normalize: Normalizer,
) -> dict[str, float | int]:
    """Score ``{id: answer}`` against ``(id, ground_truth_texts)`` pairs, official-script style.

    Every question counts in the denominator; one without a prediction scores 0. Returns
    ``exact_match`` and ``f1`` (0-100), ``n`` questions and how many were ``unanswered``.
    """
    exact_match = 0.0
    f1 = 0.0
    total = 0
    unanswered = 0
    for qid, truths in questions:
        total += 1
        if qid not in predictions:
            unanswered += 1
            continue
        match, overlap = _best_against(qid, predictions[qid], truths, normalize)
        exact_match += match
        f1 += overlap
    if total == 0:
        raise DataFormatError("there are no questions to score")
    if unanswered:
        log.warning("%d of %d questions have no prediction; they score 0", unanswered, total)
    return {
        "exact_match": 100.0 * exact_match / total,
        "f1": 100.0 * f1 / total,
        "n": total,
        "unanswered": unanswered,
    }
