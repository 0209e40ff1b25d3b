"""One assembly step: a run's config -> every part the run is made of.

:func:`assemble` builds a training run (:class:`RunParts`), :func:`assemble_evaluation` a
restored run to score again (:class:`EvaluationParts`). The recipes
(:mod:`lowres.recipes.train`, :mod:`lowres.recipes.evaluate`) only sequence what follows
(train, save, evaluate, record) and read no config: what they need, built objects and the
plain values a run records alike, is a field of the parts returned here.

The parts are built in one fixed order, the order in which a run draws its random numbers:
seed -> task -> split and pseudo data -> model -> trainable check -> init_from -> parameter
report -> feature cache -> features -> training arguments -> alignment objective -> trainer
-> callbacks (checkpoint selection, distance measure, clock) -> resume point. Reordering
changes every score. An empty training set is refused before the backbone loads.

Pseudo data is the one step that lives above this layer (its self-training teacher is a
finished run restored and run by :mod:`lowres.recipes.pseudo`), so the train recipe hands it
in as a plain callable, :data:`PseudoStep`, and this layer never imports a recipe.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.text import Text
from transformers import set_seed

from lowres.builders import (
    RunTrainingArguments,
    build_alignment,
    build_run_model,
    build_run_task,
    build_trainer,
    check_trainable,
    initialise_from,
    manifest,
    method_record,
    restore_run,
    save_peft_adapter,
    saved_config,
    training_arguments,
)
from lowres.cache import FeatureCache
from lowres.environment import environment
from lowres.errors import ConfigError, LowresError
from lowres.evaluation import evaluate_languages, parallel_distance
from lowres.methods.build import parameter_report
from lowres.registry import ADAPTERS
from lowres.runfolder import RunFolder
from lowres.schema import alignment_languages, measures_distance, resolved_lr, trains
from lowres.tasks import Split, Task
from lowres.training.checkpoints import intact_checkpoint
from lowres.training.clock import TrainClock
from lowres.training.measure import PeriodicMeasure
from lowres.training.progress import RichProgress
from lowres.training.selection import CheckpointSelection
from lowres.training.trainer import LowresTrainer, feature_dataset

# (pseudo group, task, split, *, data=data group, args=teacher's TrainingArguments or None)
# -> (the split with pseudo data added, a record of what was added: ``.record()``, ``.summary()``)
PseudoStep = Callable[..., tuple[Split, Any]]


@dataclass(frozen=True)
class RunParts:
    """A training run, assembled: its built objects and the plain values its record needs."""

    task: Task
    split: Split
    pseudo: Any  # what the pseudo step added (lowres.recipes.pseudo.PseudoData)
    model: Any
    tokenizer: Any
    parameters: dict[str, int]  # trainable_parameters, total_parameters, as built
    cache: FeatureCache
    trains: bool  # False with trainer.epochs=0: the model as built is evaluated
    train_windows: int
    learning_rate: float
    args: RunTrainingArguments
    trainer: LowresTrainer
    progress: RichProgress  # open; the recipe stops it
    selection: CheckpointSelection | None
    clock: TrainClock
    resume_from: str | None
    method: dict[str, Any]  # metrics.json's "method"
    manifest: dict[str, Any]  # the checkpoint's manifest
    held_out: Callable[[], dict | None]  # the held-out parallel distances, measured when called
    peft_export: Callable[[Path], dict[str, Any]] | None  # a PEFT adapter's checkpoint/peft
    backbone: str
    source_language: str
    k: int
    seed: int
    source_pool: bool
    select_on: str
    init_from: str | None


def assemble(cfg: DictConfig, run: RunFolder, *, pseudo_step: PseudoStep) -> RunParts:
    """Every part of the training run ``cfg`` describes, in the order its randomness is drawn.

    Writes data_split.json, data_files.json and environment.json into ``run`` on the way.
    """
    set_seed(cfg.trainer.seed)
    task = build_run_task(cfg)
    split, pseudo = training_data(cfg, task, run, pseudo_step)
    model, tokenizer = build_run_model(cfg)
    check_trainable(cfg.trainer, model, cfg.backbone)
    if cfg.init_from:
        initialise_from(model, cfg.init_from, OmegaConf.to_container(cfg.backbone, resolve=True))
    report = parameter_report(model)
    cache = FeatureCache.from_setting(cfg.data.cache_dir)
    fitting = fit_parts(cfg, run, task, split, model, tokenizer, cache)
    method = method_record(cfg, fitting["learning_rate"])
    peft = ADAPTERS.load(cfg.adapter.kind).peft
    return RunParts(
        task=task,
        split=split,
        pseudo=pseudo,
        model=model,
        tokenizer=tokenizer,
        parameters=report,
        cache=cache,
        **fitting,
        method=method,
        manifest=manifest(cfg, method, report),
        held_out=functools.partial(held_out_distances, cfg, model, tokenizer, task),
        peft_export=functools.partial(
            save_peft_adapter, cfg.backbone, cfg.task, cfg.trainer.seed, model
        )
        if peft
        else None,
        backbone=cfg.backbone.name,
        source_language=cfg.data.source_language,
        k=cfg.data.k,
        seed=cfg.trainer.seed,
        source_pool=cfg.data.source_pool,
        select_on=cfg.trainer.select_on,
        init_from=cfg.init_from or None,
    )


def training_data(
    cfg: DictConfig, task: Task, run: RunFolder, pseudo_step: PseudoStep
) -> tuple[Split, Any]:
    """The split (with pseudo data), written to data_split.json; refused if empty."""
    languages = alignment_languages(cfg.align, list(cfg.data.eval_languages))
    split = task.split(align_languages=languages, align_source=cfg.align.source_language)
    teacher_args = None
    if cfg.pseudo.kind == "self_train":  # the teacher predicts with the run's device and batch
        teacher_args = training_arguments(
            cfg.trainer, run.path / "teacher", task_kind=task.kind, learning_rate=0.0
        )
    split, pseudo = pseudo_step(cfg.pseudo, task, split, data=cfg.data, args=teacher_args)
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


def fit_parts(
    cfg: DictConfig, run: RunFolder, task: Task, split: Split, model, tokenizer, cache
) -> dict[str, Any]:
    """The training set, arguments, trainer, callbacks and resume point (RunParts' fields)."""
    training = trains(cfg.trainer)
    # trainer.epochs=0 evaluates the model as built (or as init_from left it): nothing to
    # tokenize for training, and the training set may be empty.
    features = cache.train_features(task, split.train, tokenizer) if training else {"input_ids": []}
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
    selection = select_checkpoints(cfg, trainer, task, split, tokenizer, cache)
    measure_distances(cfg, trainer, model, tokenizer, task)
    resume_from = resume_point(run.path / "trainer") if cfg.resume else None
    clock = TrainClock(resume_from)
    trainer.add_callback(clock)
    return {
        "trains": training,
        "train_windows": len(train_dataset),
        "learning_rate": learning_rate,
        "args": args,
        "trainer": trainer,
        "progress": progress,
        "selection": selection,
        "clock": clock,
        "resume_from": resume_from,
    }


def select_checkpoints(
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


def measure_distances(cfg: DictConfig, trainer, model, tokenizer, task: Task) -> None:
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


@dataclass(frozen=True)
class EvaluationParts:
    """A finished run restored to be evaluated again (``lowres evaluate``)."""

    task: Task
    model: Any
    tokenizer: Any
    parameters: dict[str, int]
    cache: FeatureCache
    trainer: LowresTrainer  # evaluation only: no training set
    progress: RichProgress  # open; the recipe stops it
    backbone: str
    checkpoint: str  # the run folder whose parameters were restored
    trained_task: str  # the task that run was trained on (the evaluated one may differ)


def assemble_evaluation(cfg: DictConfig, run: RunFolder) -> EvaluationParts:
    """The run ``cfg.checkpoint`` rebuilt from ``cfg`` with its trained weights restored."""
    checkpoint = Path(cfg.checkpoint)
    trained_task = saved_config(checkpoint).task.name
    task, model, tokenizer = restore_run(cfg, checkpoint)
    args = training_arguments(
        cfg.trainer, run.path / "trainer", task_kind=task.kind, learning_rate=0.0
    )
    progress = RichProgress(bars=cfg.trainer.progress)
    trainer = build_trainer(model, tokenizer, args, progress=progress)
    return EvaluationParts(
        task=task,
        model=model,
        tokenizer=tokenizer,
        parameters=parameter_report(model),
        cache=FeatureCache.from_setting(cfg.data.cache_dir),
        trainer=trainer,
        progress=progress,
        backbone=cfg.backbone.name,
        checkpoint=str(cfg.checkpoint),
        trained_task=trained_task,
    )
