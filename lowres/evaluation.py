"""Evaluation: predictions per language, official scores, and ``lowres evaluate``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from lowres.errors import LowresError
from lowres.tasks import Task
from lowres.trainer import LENGTH_COLUMN, feature_dataset


def model_outputs(
    trainer, task: Task, records: list[dict], tokenizer, cache=None
) -> tuple[Any, dict]:
    """``(meta, outputs)`` of ``trainer.predict`` on ``records``, ready for task.predictions.

    Windows are predicted longest first, so each batch holds rows of similar length and
    pads little; the outputs come back in the order of ``meta``. Past a window's own end,
    span logits belong to padding (or are the Trainer's -100 filler beyond its batch's
    width); ``meta`` has no offsets there, so decoding never picks them.
    """
    if cache is not None:  # a lowres.cache.FeatureCache
        features, meta = cache.eval_features(task, records, tokenizer)
    else:
        features, meta = task.eval_features(records, tokenizer)
    dataset = feature_dataset(features)
    order = np.argsort(-np.asarray(dataset[LENGTH_COLUMN]), kind="stable")
    raw = trainer.predict(dataset.select(order)).predictions
    restore = np.empty_like(order)
    restore[order] = np.arange(len(order))
    if task.kind == "extractive_qa":
        return meta, {
            "start_logits": np.asarray(raw[0])[restore],
            "end_logits": np.asarray(raw[1])[restore],
        }
    return meta, {"logits": np.asarray(raw[0] if isinstance(raw, tuple) else raw)[restore]}


def evaluate_languages(
    trainer, task: Task, evaluation: dict[str, list[dict]], tokenizer, cache=None
) -> tuple[dict[str, Any], dict[str, dict], float]:
    """Predict and score each language; returns (scores, predictions, seconds)."""
    started = time.perf_counter()
    per_language: dict[str, dict] = {}
    predictions: dict[str, dict] = {}
    for lang, records in evaluation.items():
        if not records:
            raise LowresError(
                f"No {lang} records are left to evaluate on; lower data.pool_fraction or "
                "raise data.max_eval_examples."
            )
        if getattr(task, "generative", False):  # decoder backbones: lowres.tasks.generative
            predictions[lang] = task.generate_predictions(trainer, records, tokenizer)
        else:
            meta, outputs = model_outputs(trainer, task, records, tokenizer, cache)
            predictions[lang] = task.predictions(records, meta, outputs)
        per_language[lang] = task.score(predictions[lang], records, lang)
    keys = [k for k in next(iter(per_language.values())) if k != "n"]
    average = {k: float(np.mean([s[k] for s in per_language.values()])) for k in keys}
    return (
        {"per_language": per_language, "average": average},
        predictions,
        time.perf_counter() - started,
    )


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
) -> dict[str, dict[str, float]]:
    """Mean cosine distance between held-out parallel representations, per target language.

    The pairs are evaluation records (never trained on) that share an id with a
    source-language evaluation record, so this measures how far the alignment loss moved
    unseen translations together.
    """
    from lowres.losses.alignment import pool_layers
    from lowres.trainer import tokenize_pairs

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


def show_scores(metrics: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    per_language = metrics["per_language"]
    keys = [k for k in next(iter(per_language.values())) if k != "n"]
    table = Table(title=f"{metrics['task']} · {metrics['backbone']}")
    table.add_column("language")
    for key in keys:
        table.add_column(key, justify="right")
    table.add_column("n", justify="right")
    for lang, scores in per_language.items():
        table.add_row(lang, *(f"{scores[k]:.2f}" for k in keys), str(scores["n"]))
    table.add_row("average", *(f"{metrics['average'][k]:.2f}" for k in keys), "", style="bold")
    Console().print(table)
    console = Console()
    console.print(
        f"trainable parameters: {metrics['trainable_parameters']:,} of "
        f"{metrics['total_parameters']:,}"
    )
    skipped = {name: n for name, n in metrics.get("skipped_ns", {}).items() if n}
    if skipped:
        listed = ", ".join(f"{name} {n}" for name, n in skipped.items())
        console.print(
            f"rows dropped as untranslated (NS), as the official evaluation does: {listed}"
        )
    for lang, d in metrics.get("parallel_distance", {}).items():
        console.print(
            f"held-out parallel cosine distance {d['source']}-{lang}: {d['cosine_distance']:.4f} "
            f"({d['pairs']} pairs)"
        )


def saved_config(run_dir: Path, key: str = "checkpoint") -> DictConfig:
    """The config a finished run was trained with, over the current schema's defaults."""
    from lowres.schema import RunConfig

    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise LowresError(
            f"{key}={run_dir}: no {path}; expected a run folder written by `lowres train` "
            "(with .hydra/config.yaml and checkpoint/). Check the path."
        )
    return OmegaConf.merge(OmegaConf.structured(RunConfig), OmegaConf.load(path))


def restore_run(cfg: DictConfig, run_dir: Path):
    """``(task, model, tokenizer)`` rebuilt from ``cfg`` with ``run_dir``'s trained weights."""
    from lowres.train import model_from_config, task_from_config
    from lowres.trainer import load_trainable

    task = task_from_config(cfg)
    model, tokenizer = model_from_config(cfg)
    load_trainable(model, run_dir / "checkpoint")
    return task, model, tokenizer


def evaluate_checkpoint(cfg: DictConfig, output_dir: str | Path | None = None) -> dict[str, Any]:
    """Rebuild a run's model from its saved config, restore its weights, evaluate again.

    Overrides given on the command line (e.g. ``data.eval_languages=[de]``) apply on top
    of the saved config; the scores land in a new run folder, never the trained one.
    """
    from hydra.core.hydra_config import HydraConfig

    from lowres.runfolder import RunFolder
    from lowres.schema import validate
    from lowres.train import label_names, quiet_libraries, training_arguments
    from lowres.trainer import LowresTrainer, RichProgress

    run_dir = Path(cfg.checkpoint)
    if not run_dir.is_dir():
        raise LowresError(
            f"checkpoint={run_dir} is not a folder; give the run folder that `lowres train` "
            "wrote (it prints its path), e.g. checkpoint=outputs/xquad/minilm/<date>."
        )
    base = saved_config(run_dir)
    overrides = []
    if output_dir is None and HydraConfig.initialized():
        overrides = [
            o.lstrip("+")
            for o in HydraConfig.get().overrides.task
            if not o.startswith("checkpoint=")
        ]
    run_cfg = OmegaConf.merge(base, OmegaConf.from_dotlist(overrides))
    run_cfg.checkpoint = str(run_dir)
    validate(run_cfg)
    quiet_libraries()
    run = RunFolder.for_job(output_dir)
    task, model, tokenizer = restore_run(run_cfg, run_dir)
    args = training_arguments(
        run_cfg.trainer, run.path / "trainer", label_names=label_names(task.kind), learning_rate=0.0
    )
    progress = RichProgress(bars=run_cfg.trainer.progress)
    trainer = LowresTrainer(
        model=model, args=args, processing_class=tokenizer, callbacks=[progress]
    )
    evaluation = task.evaluation_sets()
    from lowres.cache import FeatureCache

    cache = FeatureCache.from_setting(run_cfg.data.cache_dir)
    try:
        scores, predictions, seconds = evaluate_languages(
            trainer, task, evaluation, tokenizer, cache=cache
        )
    finally:
        progress.stop()
    from lowres.methods.build import parameter_report

    metrics = {
        "task": task.name,
        "backbone": run_cfg.backbone.name,
        "checkpoint": str(run_dir),
        **scores,
        **task.extra_metrics(scores["per_language"]),
        **parameter_report(model),
        "eval_runtime_s": round(seconds, 3),
    }
    for lang, answers in predictions.items():
        run.write_json(f"predictions/{lang}.json", answers)
    run.write_json("metrics.json", metrics)
    show_scores(metrics)
    return metrics
