"""Extractive QA shared by XQuAD and MLQA: sliding windows, labels, n-best decoding.

Records use the Hugging Face ``squad`` layout: ``id, title, context, question,
answers={"text": [...], "answer_start": [...]}``. Windows are tokenized as (question,
context) pairs; only the context is split, with ``stride`` tokens of overlap. Offsets of
non-context tokens are dropped so a prediction can only be a span of the context text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

from lowres.metrics import load_metric
from lowres.tasks.base import Task


def _truncate_questions(
    questions: Sequence[str], tokenizer: PreTrainedTokenizerBase, max_question_length: int
) -> list[str]:
    """Cut each question after ``max_question_length`` tokens, at a character boundary."""
    out = []
    # Strip before tokenizing: the offsets must index the text that is cut (offsets from
    # the unstripped text cut the stripped one too late, keeping 65+ tokens of 64).
    questions = [q.lstrip() for q in questions]  # leading spaces waste a window's tokens
    encoded = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    for question, offsets in zip(questions, encoded["offset_mapping"], strict=True):
        if len(offsets) > max_question_length:
            cut = offsets[max_question_length - 1][1]
            out.append(question[:cut])
        else:
            out.append(question)
    return out


def _encode_windows(
    records: Sequence[dict],
    tokenizer,
    max_length: int,
    stride: int,
    max_question_length: int,
    padding: str,
):
    questions = _truncate_questions(
        [r["question"] for r in records], tokenizer, max_question_length
    )
    return tokenizer(
        questions,
        [r["context"] for r in records],
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        # "longest": no padding here; each batch is padded to its own longest window by the
        # trainer's collator. "max_length": every window padded to max_length (as measured
        # before dynamic padding; kept so both can be compared).
        padding="max_length" if padding == "max_length" else False,
    )


def train_features(
    records: Sequence[dict],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    stride: int,
    max_question_length: int,
    padding: str = "longest",
) -> dict[str, list]:
    """Windows with ``start_positions``/``end_positions``; windows without the answer point at 0."""
    enc = _encode_windows(records, tokenizer, max_length, stride, max_question_length, padding)
    starts, ends = [], []
    for i, offsets in enumerate(enc["offset_mapping"]):
        record = records[enc["overflow_to_sample_mapping"][i]]
        sequence_ids = enc.sequence_ids(i)
        answer_start = record["answers"]["answer_start"][0]
        answer_end = answer_start + len(record["answers"]["text"][0])
        context_tokens = [t for t, s in enumerate(sequence_ids) if s == 1]
        first, last = context_tokens[0], context_tokens[-1]
        if not (offsets[first][0] <= answer_start and offsets[last][1] >= answer_end):
            starts.append(0)
            ends.append(0)
            continue
        start = first
        while start <= last and offsets[start][0] <= answer_start:
            start += 1
        end = last
        while end >= first and offsets[end][1] >= answer_end:
            end -= 1
        starts.append(start - 1)
        ends.append(end + 1)
    features = {k: enc[k] for k in enc if k not in ("offset_mapping", "overflow_to_sample_mapping")}
    features["start_positions"] = starts
    features["end_positions"] = ends
    return features


def eval_features(
    records: Sequence[dict],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    stride: int,
    max_question_length: int,
    padding: str = "longest",
) -> tuple[dict[str, list], list[dict[str, Any]]]:
    """Model inputs, plus per-window bookkeeping (record index, context-only offsets)."""
    enc = _encode_windows(records, tokenizer, max_length, stride, max_question_length, padding)
    meta = []
    for i, offsets in enumerate(enc["offset_mapping"]):
        sequence_ids = enc.sequence_ids(i)
        meta.append(
            {
                "record": enc["overflow_to_sample_mapping"][i],
                "offsets": [
                    list(o) if sequence_ids[t] == 1 else None for t, o in enumerate(offsets)
                ],
            }
        )
    features = {k: enc[k] for k in enc if k not in ("offset_mapping", "overflow_to_sample_mapping")}
    return features, meta


def decode_answers(
    records: Sequence[dict],
    meta: Sequence[dict[str, Any]],
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    *,
    n_best: int = 20,
    max_answer_length: int = 30,
    return_scores: bool = False,
) -> dict[str, str] | tuple[dict[str, str], dict[str, dict[str, float | int]]]:
    """Best-scoring valid span per question over all its windows, as context text.

    Start and end candidates are the ``n_best`` highest-scoring context tokens of each
    window (logits past a window's offsets, i.e. padding, are never read). A span is valid
    when end >= start and it is at most ``max_answer_length`` tokens long; its score is
    start logit + end logit. A question with
    no valid span gets the empty answer, which the metrics score as wrong.

    ``return_scores=True`` also returns ``{id: {"answer_start", "confidence"}}``: the answer's
    character offset in the context, and the softmax probability of the chosen span's score
    among the scores of every valid candidate span (the n-best starts x n-best ends of each
    of the question's windows). A question without a valid span has confidence 0.
    """
    best: dict[int, tuple[float, int, int]] = {}
    candidate_scores: dict[int, list[float]] = {}
    for window, info in enumerate(meta):
        record_index = info["record"]
        offsets = info["offsets"]
        # The n best are taken among context tokens only: question, special and padding
        # positions would otherwise use up candidate slots, and how many padding positions
        # a window has (none when unpadded) would change the answer.
        context = np.array([o is not None for o in offsets], dtype=bool)
        starts = np.where(context, start_logits[window][: len(offsets)], -np.inf)
        ends = np.where(context, end_logits[window][: len(offsets)], -np.inf)
        start_candidates = np.argsort(starts)[::-1][: min(n_best, int(context.sum()))]
        end_candidates = np.argsort(ends)[::-1][: min(n_best, int(context.sum()))]
        for s in start_candidates:
            for e in end_candidates:
                if e < s or e - s + 1 > max_answer_length:
                    continue
                score = float(starts[s] + ends[e])
                if return_scores:
                    candidate_scores.setdefault(record_index, []).append(score)
                if record_index not in best or score > best[record_index][0]:
                    best[record_index] = (score, offsets[s][0], offsets[e][1])
    answers = {}
    for index, record in enumerate(records):
        _, begin, end = best.get(index, (0.0, 0, 0))
        answers[record["id"]] = record["context"][begin:end]
    if not return_scores:
        return answers
    details = {}
    for index, record in enumerate(records):
        if index not in best:
            details[record["id"]] = {"answer_start": 0, "confidence": 0.0}
            continue
        scores = np.asarray(candidate_scores[index], dtype=np.float64)
        # log-sum-exp around the maximum, so large logits cannot overflow
        top = scores.max()
        confidence = float(np.exp(best[index][0] - top) / np.exp(scores - top).sum())
        details[record["id"]] = {"answer_start": best[index][1], "confidence": confidence}
    return answers, details


def qa_references(records: Sequence[dict]) -> list[dict]:
    return [{"id": r["id"], "answers": r["answers"]} for r in records]


def with_groups(records: list[dict], language: str) -> list[dict]:
    """Tag records with their language and paragraph group (the smallest id sharing the context).

    Splitting by paragraph keeps a context out of evaluation once any of its questions
    trains; ids are shared across translations, so the groups line up across languages.
    """
    smallest: dict[tuple[str, str], str] = {}
    for r in records:
        key = (r.get("title", ""), r["context"])
        smallest[key] = min(smallest.get(key, r["id"]), r["id"])
    return [
        {**r, "language": language, "group": smallest[(r.get("title", ""), r["context"])]}
        for r in records
    ]


class QATask(Task):
    """Extractive QA on SQuAD-layout records; subclasses load files and pick the metric."""

    kind = "extractive_qa"
    main_score = "f1"
    metric_name = "squad"

    def _window_params(self) -> dict[str, int]:
        p = self.params
        return {
            "max_length": p["max_length"],
            "stride": p["stride"],
            "max_question_length": p["max_question_length"],
            "padding": p.get("padding", "longest"),
        }

    def text_pair(self, record: dict) -> tuple[str, str]:
        return record["question"], record["context"]

    def train_features(self, records, tokenizer):
        return train_features(records, tokenizer, **self._window_params())

    def eval_features(self, records, tokenizer):
        return eval_features(records, tokenizer, **self._window_params())

    def predictions(self, records, meta, outputs, return_scores=False):
        return decode_answers(
            records,
            meta,
            outputs["start_logits"],
            outputs["end_logits"],
            n_best=self.params["n_best"],
            max_answer_length=self.params["max_answer_length"],
            return_scores=return_scores,
        )

    def metric_kwargs(self, lang: str) -> dict[str, Any]:
        return {}

    def score(self, predictions, records, lang):
        metric = load_metric(self.metric_name)
        result = metric.compute(
            predictions=[
                {"id": r["id"], "prediction_text": predictions.get(r["id"], "")} for r in records
            ],
            references=qa_references(records),
            **self.metric_kwargs(lang),
        )
        return {"exact_match": result["exact_match"], "f1": result["f1"], "n": len(records)}
