"""``lowres train``: setup -> data -> model -> fit -> evaluate -> record.

The recipe reads the config and hands each group to its builder (:mod:`lowres.builders`);
everything below takes plain, already-checked values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.text import Text
from transformers import set_seed

from lowres.builders import (
    build_alignment,
    build_run_model,
    build_task,
    build_trainer,
    check_trainable,
    initialise_from,
    manifest,
    method_record,
    save_peft_adapter,
    training_arguments,
)
from lowres.cache import FeatureCache
from lowres.environment import environment
from lowres.errors import ConfigError, LowresError
from lowres.evaluation import Evaluation, evaluate_languages, parallel_distance, show_scores
from lowres.methods.build import parameter_report
from lowres.recipes.preflight import start_up
from lowres.recipes.pseudo import PseudoData, add_pseudo_data
from lowres.registry import ADAPTERS
from lowres.runfolder import RunFolder, RunMetrics
from lowres.schema import alignment_languages, measures_distance, resolved_lr, trains
from lowres.tasks import Split, Task
from lowres.tasks.base import article_of
from lowres.training.checkpoints import intact_checkpoint, save_trainable
from lowres.training.clock import TrainClock
from lowres.training.measure import PeriodicMeasure
from lowres.training.progress import RichProgress
from lowres.training.selection import CheckpointSelection
from lowres.training.trainer import LowresTrainer, feature_dataset


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
    set_seed(cfg.trainer.seed)
    task = build_task(cfg.task, cfg.data, cfg.trainer, cfg.backbone)
    split, pseudo = training_data(cfg, task, run)
    model, tokenizer = build_run_model(cfg)
    check_trainable(cfg.trainer, model, cfg.backbone)
    if cfg.init_from:
        initialise_from(model, cfg.init_from, OmegaConf.to_container(cfg.backbone, resolve=True))
    report = parameter_report(model)
    cache = FeatureCache.from_setting(cfg.data.cache_dir)
    fitted = fit(cfg, run, task, split, model, tokenizer, cache)
    method = method_record(cfg, fitted.learning_rate)
    if fitted.trainer.args.should_save:
        saved = manifest(cfg, method, report)
        if ADAPTERS.load(cfg.adapter.kind).peft:
            saved["peft_adapter"] = save_peft_adapter(
                cfg.backbone, cfg.task, cfg.trainer.seed, model, run.path / "checkpoint"
            )
            if not saved["peft_adapter"]["written"]:
                Console(soft_wrap=True).print(saved["peft_adapter"]["reason"], highlight=False)
        save_trainable(model, run.path / "checkpoint", manifest=saved)
    try:
        evaluation = evaluate_languages(
            fitted.trainer, task, split.evaluation, tokenizer, cache=cache
        )
        distances = held_out_distances(cfg, model, tokenizer, task)
        source_dev = score_source_dev(cfg, fitted.trainer, task, split, tokenizer, cache)
    finally:
        fitted.progress.stop()
    metrics = RunMetrics(
        task=task.name,
        backbone=cfg.backbone.name,
        method=method,
        **evaluation.scores(),
        parallel_distance=distances,
        task_extras={**task.extra_metrics(evaluation.per_language), **source_dev},
        **report,
        **fitted.record(cfg, split, pseudo),
        **cache.report(),
        init_from=cfg.init_from or None,
    )
    record(run, fitted.trainer, metrics, evaluation)
    return metrics


def score_source_dev(cfg: DictConfig, trainer, task: Task, split: Split, tokenizer, cache) -> dict:
    """``{"source_dev": scores}`` for metrics.json, or nothing without a source dev set.

    The source language's held-out articles (data.source_dev_articles): the score a
    hyperparameter search maximises, never a target language's evaluation questions.
    """
    if not split.source_dev:
        return {}
    lang = cfg.data.source_language
    scored = evaluate_languages(trainer, task, {lang: split.source_dev}, tokenizer, cache=cache)
    articles = len({article_of(r) for r in split.source_dev})
    return {
        "source_dev": {
            "language": lang,
            "articles": articles,
            "main_score": task.main_score,
            **scored.per_language[lang],
        }
    }


def training_data(cfg: DictConfig, task: Task, run: RunFolder) -> tuple[Split, PseudoData]:
    """The split (with pseudo data), written to data_split.json; refused if empty."""
    languages = alignment_languages(cfg.align, list(cfg.data.eval_languages))
    split = task.split(align_languages=languages, align_source=cfg.align.source_language)
    teacher_args = None
    if cfg.pseudo.kind == "self_train":  # the teacher predicts with the run's device and batch
        teacher_args = training_arguments(
            cfg.trainer, run.path / "teacher", task_kind=task.kind, learning_rate=0.0
        )
    split, pseudo = add_pseudo_data(cfg.pseudo, task, split, data=cfg.data, args=teacher_args)
    run.write_json("data_split.json", {**split.record(), "pseudo": pseudo.record()})
    run.write_json("data_files.json", task.data_record())
    # Before the backbone loads: an empty training set is a config problem, found cheaply.
    if trains(cfg.trainer) and not split.train:
        if cfg.data.source_pool:
            raise ConfigError(
                f"Nothing to train on: the {cfg.data.source_language} source pool "
                f"(data.source_split={cfg.data.source_split}) holds no records and no "
                f"target-language records were added (data.k={cfg.data.k}). Check the source "
                "files (data_files.json names them), or choose another data.source_split."
            )
        raise ConfigError(
            "Nothing to train on: the source pool is off (data.source_pool=false) and no "
            f"target-language records were added (data.k={cfg.data.k}, pseudo.kind="
            f"{cfg.pseudo.kind}, pseudo.mix={cfg.pseudo.mix}). Set data.k > 0, keep "
            "data.source_pool=true, lower pseudo.threshold, or evaluate without training "
            "with trainer.epochs=0."
        )
    return split, pseudo


@dataclass
class Fitted:
    """A trained (or, with trainer.epochs=0, untouched) model's trainer and bookkeeping."""

    trainer: LowresTrainer
    progress: RichProgress
    learning_rate: float
    train_windows: int
    steps: int
    loss: float
    seconds: float
    counted_from_step: int
    selection: CheckpointSelection | None

    def record(self, cfg: DictConfig, split: Split, pseudo: PseudoData) -> dict[str, Any]:
        """The training fields of metrics.json."""
        return {
            "k": cfg.data.k,
            "seed": cfg.trainer.seed,
            "source_pool": cfg.data.source_pool,
            "train_examples": len(split.train),
            "pseudo": pseudo.summary(),
            "train_windows": self.train_windows,
            "train_steps": self.steps,
            "train_loss": self.loss,
            "train_runtime_s": round(self.seconds, 3),
            "train_runtime_from_step": self.counted_from_step,
            "device": str(self.trainer.args.device),
            "selection": self.selection.record(len(split.selection))
            if self.selection
            else {"policy": "last", "requested": cfg.trainer.select_on},
        }


def fit(cfg: DictConfig, run: RunFolder, task: Task, split: Split, model, tokenizer, cache):
    """Train on the split's training records (resuming if asked); the progress stays open."""
    # trainer.epochs=0 evaluates the model as built (or as init_from left it): nothing to
    # tokenize for training, and the training set may be empty.
    features = (
        cache.train_features(task, split.train, tokenizer)
        if trains(cfg.trainer)
        else {"input_ids": []}
    )
    train_dataset = feature_dataset(features)
    learning_rate = resolved_lr(cfg.trainer.lr, cfg.freeze.strategy)
    args = training_arguments(
        cfg.trainer,
        run.path / "trainer",
        task_kind=task.kind,
        learning_rate=learning_rate,
        train_windows=len(train_dataset),
    )
    alignment = build_alignment(
        cfg.align,
        task,
        split.parallel,
        tokenizer,
        seed=cfg.trainer.seed,
        pad_to_multiple_of=8 if args.device.type == "cuda" else None,
    )
    progress = RichProgress(bars=cfg.trainer.progress)
    trainer = build_trainer(
        model,
        tokenizer,
        args,
        progress=progress,
        train_dataset=train_dataset,
        prompt_lr=cfg.prompt.lr,
        alignment=alignment,
    )
    run.write_json("environment.json", environment(args.device, args.precision, cfg.backbone.dtype))
    selection = _select_checkpoints(cfg, trainer, task, split, tokenizer, cache)
    _measure_distances(cfg, trainer, model, tokenizer, task)
    resume_from = resume_point(run.path / "trainer") if cfg.resume else None
    clock = TrainClock(resume_from)
    trainer.add_callback(clock)
    steps, loss = 0, math.nan  # trainer.epochs=0: the model as built (the untrained baseline)
    try:
        clock.start()
        if trains(cfg.trainer):
            result = trainer.train(resume_from_checkpoint=resume_from)
            # Over the whole run: the Trainer's own figure covers only a resumed stretch.
            steps, loss = result.global_step, trainer.run_loss()
        run.write_jsonl("train_log.jsonl", trainer.state.log_history)
    except BaseException:
        progress.stop()
        raise
    return Fitted(
        trainer=trainer,
        progress=progress,
        learning_rate=learning_rate,
        train_windows=len(train_dataset),
        steps=steps,
        loss=loss,
        seconds=clock.seconds(),
        counted_from_step=clock.counted_from_step,
        selection=selection,
    )


def _select_checkpoints(
    cfg: DictConfig, trainer, task: Task, split: Split, tokenizer, cache
) -> CheckpointSelection | None:
    """The checkpoint selection on source-language dev, when the split holds a dev set."""
    if not split.selection:
        return None
    dev = {cfg.data.source_language: split.selection}

    def dev_score() -> float:
        evaluation = evaluate_languages(trainer, task, dev, tokenizer, cache=cache)
        return evaluation.average[task.main_score]

    selection = CheckpointSelection(dev_score, every=cfg.trainer.select_every)
    trainer.add_callback(selection)
    return selection


def _measure_distances(cfg: DictConfig, trainer, model, tokenizer, task: Task) -> None:
    """The held-out parallel distance, logged every align.distance_every steps when asked."""
    if not (cfg.align.distance_every > 0 and measures_distance(cfg.align)):
        return

    def distances() -> dict[str, float]:
        measured = held_out_distances(cfg, model, tokenizer, task, cfg.align.distance_pairs)
        values = {f"held_out_distance_{k}": v["cosine_distance"] for k, v in measured.items()}
        if values:
            values["held_out_distance"] = sum(values.values()) / len(values)
        return values

    trainer.add_callback(PeriodicMeasure(distances, cfg.align.distance_every))


def resume_point(trainer_dir: Path) -> str | None:
    """The latest intact checkpoint to resume from (None: none saved yet), saying which
    damaged ones it passed over; an error when checkpoints exist but none is intact."""
    if not trainer_dir.is_dir():
        return None
    found, skipped = intact_checkpoint(trainer_dir)
    for reason in skipped:
        Console(stderr=True, soft_wrap=True).print(
            Text(f"warning: not resuming from {trainer_dir}/{reason}; trying an earlier one")
        )
    if found is None and skipped:
        raise LowresError(
            f"No intact checkpoint to resume from in {trainer_dir}: "
            f"{'; '.join(skipped)}. Start the run again in a new folder (the same command "
            "without --resume and hydra.run.dir)."
        )
    return str(found) if found else None


def held_out_distances(
    cfg: DictConfig, model, tokenizer, task: Task, max_pairs: int = 0
) -> dict | None:
    """Held-out parallel distances, when alignment trains or they are asked for."""
    if not measures_distance(cfg.align):
        return None
    return parallel_distance(
        model,
        tokenizer,
        task,
        list(cfg.data.eval_languages),
        cfg.align.source_language,
        max_length=cfg.align.max_length,
        pooling=cfg.align.pooling,
        layers=OmegaConf.to_container(cfg.align, resolve=True)["layers"],
        batch_size=cfg.trainer.eval_batch_size,
        max_pairs=max_pairs,
    )


def record(run: RunFolder, trainer: LowresTrainer, metrics: RunMetrics, evaluation: Evaluation):
    """Predictions and metrics.json (process 0 only), and the score table."""
    if trainer.args.should_save:
        for lang, answers in evaluation.predictions.items():
            run.write_json(f"predictions/{lang}.json", answers)
        run.write_metrics(metrics)
    if trainer.is_world_process_zero():
        show_scores(metrics)
