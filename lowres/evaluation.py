"""Evaluation: each task's predictions per language, their official scores, and held-out
parallel distances; the same for ``lowres train``, ``lowres evaluate`` and the teacher."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from lowres.data.pairs import tokenize_pairs
from lowres.errors import LowresError
from lowres.losses.alignment import pool_layers
from lowres.runfolder import RunMetrics
from lowres.tasks import Task


@dataclass
class Evaluation:
    """Each evaluation set's predictions and official scores, and their average."""

    per_language: dict[str, dict[str, float]]
    average: dict[str, float]
    predictions: dict[str, dict[str, Any]]
    seconds: float

    def scores(self) -> dict[str, Any]:
        """The score fields of metrics.json."""
        return {
            "per_language": self.per_language,
            "average": self.average,
            "eval_runtime_s": round(self.seconds, 3),
        }


def evaluate_languages(
    trainer, task: Task, evaluation: dict[str, list[dict]], tokenizer, cache=None
) -> Evaluation:
    """Predict and score each evaluation set (a language; MLQA G-XLT: a language pair)."""
    started = time.perf_counter()
    per_language: dict[str, dict] = {}
    predictions: dict[str, dict] = {}
    for lang, records in evaluation.items():
        if not records:
            fraction = task.settings.pool_fraction
            cause = (
                f"data.pool_fraction={fraction} held them all out as the target pool; lower it"
                if fraction > 0
                else "the task's data for it holds none (data_files.json names the files "
                "read); check that file"
            )
            raise LowresError(f"No {lang} records are left to evaluate on: {cause}.")
        predictions[lang] = task.predict(trainer, records, tokenizer, cache)
        per_language[lang] = task.score(predictions[lang], records, lang)
    keys = [k for k in next(iter(per_language.values())) if k != "n"]
    average = {k: float(np.mean([s[k] for s in per_language.values()])) for k in keys}
    return Evaluation(per_language, average, predictions, time.perf_counter() - started)


@torch.no_grad()
def parallel_distance(
    model,
    tokenizer,
    task: Task,
    languages: list[str],
    source_language: str,
    *,
    max_length: int = 128,
    pooling: str = "mean",
    layers: Any = "last",
    batch_size: int = 32,
    max_pairs: int = 0,
) -> dict[str, dict[str, float]]:
    """Mean cosine distance between held-out parallel representations, per target language.

    ``max_pairs`` > 0 measures the first that many pairs of each language (the cheap
    during-training curve); 0 measures them all.

    The pairs are evaluation records (never trained on) that share an id with a
    source-language evaluation record, so this measures how far the alignment loss moved
    unseen translations together.
    """
    source = {r["id"]: r for r in task.evaluation_records(source_language)}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    layer_list = "last" if layers == "last" else [int(i) for i in layers]

    def represent(records):
        encoded = tokenize_pairs(tokenizer, [task.text_pair(r) for r in records], max_length)
        chunks = []
        for start in range(0, len(encoded), batch_size):
            batch = tokenizer.pad(encoded[start : start + batch_size], return_tensors="pt")
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(**batch, output_hidden_states=True)
            mask = model.text_mask(batch["attention_mask"])
            chunks.append(pool_layers(out["hidden_states"], mask, layer_list, pooling).float())
        return torch.cat(chunks)

    result = {}
    try:
        for lang in languages:
            if lang == source_language or lang not in task.settings.eval_languages:
                continue
            pairs = [
                (source[r["id"]], r) for r in task.evaluation_records(lang) if r["id"] in source
            ]
            if max_pairs > 0:
                pairs = pairs[:max_pairs]
            if not pairs:
                continue
            a = represent([s for s, _ in pairs])
            b = represent([t for _, t in pairs])
            cosine = torch.nn.functional.cosine_similarity(a, b, dim=-1)
            result[lang] = {
                "cosine_distance": float((1 - cosine).mean()),
                "pairs": len(pairs),
                "source": source_language,
            }
    finally:
        model.train(was_training)
    return result


def show_scores(metrics: RunMetrics) -> None:
    per_language = metrics.per_language
    keys = [k for k in next(iter(per_language.values())) if k != "n"]
    table = Table(title=f"{metrics.task} · {metrics.backbone}")
    table.add_column("language")
    for key in keys:
        table.add_column(key, justify="right")
    table.add_column("n", justify="right")
    for lang, scores in per_language.items():
        table.add_row(lang, *(f"{scores[k]:.2f}" for k in keys), str(scores["n"]))
    table.add_row("average", *(f"{metrics.average[k]:.2f}" for k in keys), "", style="bold")
    console = Console()
    console.print(table)
    console.print(
        f"trainable parameters: {metrics.trainable_parameters:,} of {metrics.total_parameters:,}"
    )
    skipped = {name: n for name, n in metrics.task_extras.get("skipped_ns", {}).items() if n}
    if skipped:
        listed = ", ".join(f"{name} {n}" for name, n in skipped.items())
        console.print(
            f"rows dropped as untranslated (NS), as the official evaluation does: {listed}"
        )
    for lang, d in (metrics.parallel_distance or {}).items():
        console.print(
            f"held-out parallel cosine distance {d['source']}-{lang}: {d['cosine_distance']:.4f} "
            f"({d['pairs']} pairs)"
        )
