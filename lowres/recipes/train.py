"""``lowres train``: start -> assemble -> fit -> save -> evaluate -> record.

The recipe checks the config at start and hands it to one assembly call
(:func:`lowres.assembly.assemble`), which builds every part of the run; from there on it
only sequences the steps, reading the parts, never the config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.console import Console

from lowres.assembly import RunParts, assemble
from lowres.errors import ConfigError, LowresError
from lowres.evaluation import evaluate_languages
from lowres.recipes.preflight import start_up
from lowres.recipes.pseudo import add_pseudo_data
from lowres.recipes.results import record
from lowres.runfolder import RunFolder, RunMetrics
from lowres.tasks.base import article_of
from lowres.training.checkpoints import save_trainable


def start(cfg: DictConfig, output_dir: str | Path | None) -> RunFolder:
    """Checks at start: a task, valid values, a run folder that holds no finished run."""
    if cfg.task is None:
        raise ConfigError("No task chosen; add +task=xquad (see `lowres --help` for the tasks).")
    start_up(cfg)
    run = RunFolder.for_job(output_dir)
    if run.finished() and not cfg.resume:
        raise LowresError(
            f"The run folder {run.path} already holds a finished run (metrics.json); "
            "lowres never overwrites one. Choose another hydra.run.dir."
        )
    return run


def train(cfg: DictConfig, output_dir: str | Path | None = None) -> RunMetrics:
    """Train as configured, evaluate every eval language, write the run folder."""
    run = start(cfg, output_dir)
    if run.finished():  # resume=true on a finished run: nothing left to do
        return run.metrics()
    parts = assemble(cfg, run, pseudo_step=add_pseudo_data)
    fitted = fit(parts, run)
    if parts.trainer.args.should_save:
        save_checkpoint(parts, run)
    try:
        evaluation = evaluate_languages(
            parts.trainer, parts.task, parts.split.evaluation, parts.tokenizer, cache=parts.cache
        )
        distances = parts.held_out()
        source_dev = score_source_dev(parts)
    finally:
        parts.progress.stop()
    metrics = RunMetrics(
        task=parts.task.name,
        backbone=parts.backbone,
        method=parts.method,
        **evaluation.scores(),
        parallel_distance=distances,
        task_extras={**parts.task.extra_metrics(evaluation.per_language), **source_dev},
        **parts.parameters,
        **fitted.record(parts),
        **parts.cache.report(),
        init_from=parts.init_from,
    )
    record(run, parts.trainer, metrics, evaluation)
    return metrics


def save_checkpoint(parts: RunParts, run: RunFolder) -> None:
    """The trained parameters and their manifest; a PEFT adapter's folder as well."""
    saved = dict(parts.manifest)
    if parts.peft_export is not None:
        saved["peft_adapter"] = parts.peft_export(run.path / "checkpoint")
        if not saved["peft_adapter"]["written"]:
            Console(soft_wrap=True).print(saved["peft_adapter"]["reason"], highlight=False)
    save_trainable(parts.model, run.path / "checkpoint", manifest=saved)


def score_source_dev(parts: RunParts) -> dict:
    """``{"source_dev": scores}`` for metrics.json, or nothing without a source dev set.

    The source language's held-out articles (data.source_dev_articles): the score a
    hyperparameter search maximises, never a target language's evaluation questions.
    """
    split = parts.split
    if not split.source_dev:
        return {}
    lang = parts.source_language
    scored = evaluate_languages(
        parts.trainer, parts.task, {lang: split.source_dev}, parts.tokenizer, cache=parts.cache
    )
    articles = len({article_of(r) for r in split.source_dev})
    return {
        "source_dev": {
            "language": lang,
            "articles": articles,
            "main_score": parts.task.main_score,
            **scored.per_language[lang],
        }
    }


@dataclass
class Fitted:
    """What training did (with trainer.epochs=0, nothing: the model as built is evaluated)."""

    steps: int
    loss: float
    seconds: float
    counted_from_step: int

    def record(self, parts: RunParts) -> dict[str, Any]:
        """The training fields of metrics.json."""
        return {
            "k": parts.k,
            "seed": parts.seed,
            "source_pool": parts.source_pool,
            "train_examples": len(parts.split.train),
            "pseudo": parts.pseudo.summary(),
            "train_windows": parts.train_windows,
            "train_steps": self.steps,
            "train_loss": self.loss,
            "train_runtime_s": round(self.seconds, 3),
            "train_runtime_from_step": self.counted_from_step,
            "device": str(parts.trainer.args.device),
            "selection": parts.selection.record(len(parts.split.selection))
            if parts.selection
            else {"policy": "last", "requested": parts.select_on},
        }


def fit(parts: RunParts, run: RunFolder) -> Fitted:
    """Train on the split's training records (from the resume point, if any); the progress
    stays open for the evaluation, and is stopped here only if training fails."""
    trainer = parts.trainer
    steps, loss = 0, math.nan  # trainer.epochs=0: the model as built (the untrained baseline)
    try:
        parts.clock.start()
        if parts.trains:
            result = trainer.train(resume_from_checkpoint=parts.resume_from)
            # Over the whole run: the Trainer's own figure covers only a resumed stretch.
            steps, loss = result.global_step, trainer.run_loss()
        run.write_jsonl("train_log.jsonl", trainer.state.log_history)
    except BaseException:
        parts.progress.stop()
        raise
    return Fitted(
        steps=steps,
        loss=loss,
        seconds=parts.clock.seconds(),
        counted_from_step=parts.clock.counted_from_step,
    )
