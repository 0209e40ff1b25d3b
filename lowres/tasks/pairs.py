"""Sentence-pair classification (PAWS-X, and pair TSV files read by pattern): the model side.

Pairs are encoded as (sentence1, sentence2) with truncation to ``task.max_length``; the
classifier's argmax is the prediction, scored by accuracy beside the majority-class baseline.
k-shot samples are stratified by label and nested (:func:`stratified_order`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from lowres.metrics import load_metric
from lowres.tasks.base import Task, stable_fraction


def stratified_order(records: Sequence[dict], rank: Callable[[str], float]) -> list[dict]:
    """Records ordered by ``rank(id)`` within each label, then interleaved label by label.

    Any prefix holds the labels as evenly as the records allow (k/2 each for even k while both
    labels last), and a shorter prefix is inside a longer one. Which label comes first is
    ranked the same way, so odd k does not always favour label 0.
    """
    by_label: dict[int, list[dict]] = {}
    for r in sorted(records, key=lambda r: rank(r["id"])):
        by_label.setdefault(r["label"], []).append(r)
    labels = sorted(by_label, key=lambda label: rank(f"label-{label}"))
    longest = max((len(rs) for rs in by_label.values()), default=0)
    return [by_label[lb][i] for i in range(longest) for lb in labels if i < len(by_label[lb])]


class PairClassificationTask(Task):
    """Labelled sentence pairs; subclasses load the records (each with ``group``)."""

    kind = "classification"
    main_score = "accuracy"

    def shot_order(self, records: Sequence[dict], lang: str) -> list[dict]:
        """Stratified by label and nested (see stratified_order).

        Task.k_shot takes the first k of this order, so k-shot samples are label-balanced and
        the k = 8 sample is inside the k = 32 one for the same seed; data.max_train_examples
        takes a prefix of the source pool the same way.
        """
        seed = self.settings.seed
        return stratified_order(records, lambda key: stable_fraction(self.name, lang, seed, key))

    def text_pair(self, record: dict) -> tuple[str, str]:
        return record["sentence1"], record["sentence2"]

    def _encode(self, records: Sequence[dict], tokenizer) -> dict[str, list]:
        enc = tokenizer(
            [r["sentence1"] for r in records],
            [r["sentence2"] for r in records],
            truncation=True,
            max_length=self.params["max_length"],
            # "longest": the collator pads each batch to its own longest pair.
            padding="max_length" if self.params.get("padding") == "max_length" else False,
        )
        return {k: list(v) for k, v in enc.items()}

    def train_features(self, records, tokenizer):
        features = self._encode(records, tokenizer)
        features["labels"] = [int(r["label"]) for r in records]
        return features

    def eval_features(self, records, tokenizer):
        return self._encode(records, tokenizer), None

    def predictions(self, records, meta, outputs, return_scores=False):
        """``{id: label}``; ``return_scores`` adds ``{id: {"confidence": max class prob.}}``."""
        logits = np.asarray(outputs["logits"], dtype=np.float64)
        labels = logits.argmax(axis=-1)
        predicted = {r["id"]: int(label) for r, label in zip(records, labels, strict=True)}
        if not return_scores:
            return predicted
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        top = (shifted / shifted.sum(axis=-1, keepdims=True)).max(axis=-1)
        confidences = {r["id"]: {"confidence": float(c)} for r, c in zip(records, top, strict=True)}
        return predicted, confidences

    def score(self, predictions, records, lang):
        result = load_metric("accuracy").compute(
            predictions=[int(predictions.get(r["id"], -1)) for r in records],
            references=[int(r["label"]) for r in records],
        )
        labels = [int(r["label"]) for r in records]
        # The best constant prediction on this set: what a classifier must beat.
        majority = 100.0 * max(labels.count(c) for c in set(labels)) / len(labels)
        return {"accuracy": result["accuracy"], "majority_class": majority, "n": len(records)}
