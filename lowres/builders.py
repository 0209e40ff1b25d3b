"""Config groups -> the objects a run is made of: task, model, training arguments, trainer,
alignment objective, a restored run.

Each builder takes its own config group (the schema dataclasses or plain values), never the
whole config, so what a builder depends on is visible in its signature. Values were checked
once at start (:func:`lowres.schema.validate`); what can only be checked against a built
object (a prompt that must fit the backbone's positions) is checked here, once.
"""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from transformers import TrainingArguments
from transformers.trainer_callback import PrinterCallback
from transformers.utils import is_torch_tf32_available

from lowres.backbones import load_backbone_reused, resolve_local
from lowres.data.pairs import tokenize_pairs
from lowres.distributed import world_size
from lowres.environment import device_problem, resolved_precision, runs_on_gpu
from lowres.errors import ConfigError, LowresError
from lowres.methods.build import build_method
from lowres.methods.dropout import use_fast_dropout
from lowres.methods.peft_export import PEFT_DIR, export_peft, peft_blocker
from lowres.registry import ADAPTERS
from lowres.runfolder import RunFolder
from lowres.schema import (
    AdapterConfig,
    AlignConfig,
    BackboneConfig,
    DataConfig,
    FreezeConfig,
    PromptConfig,
    RunConfig,
    TaskConfig,
    TrainerConfig,
    alignment_on,
    selects_checkpoints,
    trains,
)
from lowres.tasks import DataSettings, Task, create_task
from lowres.tasks.generative import check_decoder_method, generative_task
from lowres.training.alignment import AlignmentObjective
from lowres.training.checkpoints import load_trainable
from lowres.training.progress import RichProgress
from lowres.training.trainer import LENGTH_COLUMN, LowresTrainer


def typed(group: Any, schema: type) -> Any:
    """A config group as its schema dataclass (plain values the library can trust)."""
    if isinstance(group, schema):
        return group
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), group))


def build_task(
    task: TaskConfig, data: DataConfig, trainer: TrainerConfig, backbone: BackboneConfig
) -> Task:
    """The task with the run's data protocol; decoders read it through their templates."""
    settings = DataSettings(
        source=data.source,
        root=data.root,
        source_language=data.source_language,
        eval_languages=list(data.eval_languages),
        k=data.k,
        pool_fraction=data.pool_fraction,
        max_train_examples=data.max_train_examples,
        max_eval_examples=data.max_eval_examples,
        seed=trainer.seed,
        use_source_pool=data.source_pool,
        select_examples=trainer.select_examples if selects_checkpoints(trainer) else 0,
        source_split=data.source_split,
        source_dev_articles=data.source_dev_articles,
        source_dev_examples=data.source_dev_examples,
    )
    params = OmegaConf.to_container(task, resolve=True) if OmegaConf.is_config(task) else vars(task)
    params = dict(params)
    built = create_task(params.pop("name"), settings, **params)
    if backbone.family == "decoder":
        built = generative_task(built, task, backbone)
    return built


def backbone_arguments(backbone: BackboneConfig, task: TaskConfig, seed: int) -> dict[str, Any]:
    """What :func:`lowres.backbones.load_backbone` takes for this backbone, task and seed."""
    return {
        "name": backbone.name,
        "loader": backbone.loader,
        "path": backbone.path,
        "architecture": backbone.architecture,
        "task_kind": task.kind,
        "num_labels": task.num_labels,
        "seed": seed,
        "dtype": backbone.dtype,
        "family": backbone.family,
        "gradient_checkpointing": backbone.gradient_checkpointing,
        "trust_remote_code": backbone.trust_remote_code,
    }


def build_model(
    backbone: BackboneConfig,
    freeze: FreezeConfig,
    prompt: PromptConfig,
    adapter: AdapterConfig,
    *,
    task: TaskConfig,
    seed: int,
    fast_dropout: bool = False,
):
    """Backbone + method, exactly as configured; returns ``(model, tokenizer)``.

    ``fast_dropout`` (``trainer.fast_dropout``) swaps the model's dropout modules for
    :class:`lowres.methods.dropout.FastDropout`; evaluation, without dropout, is unchanged.
    """
    loaded = load_backbone_reused(**backbone_arguments(backbone, task, seed))
    adapter = typed(adapter, AdapterConfig)
    if not adapter.target_modules:  # the adapter's default for this backbone, if it has one
        adapter.target_modules = ADAPTERS.load(adapter.kind).default_targets(
            adapter, loaded.model, backbone.lora_targets
        )
    model = build_method(
        loaded.model,
        loaded.tokenizer,
        task_kind=task.kind,
        family=backbone.family,
        freeze=typed(freeze, FreezeConfig),
        prompt=typed(prompt, PromptConfig),
        adapter=adapter,
        seed=seed,
    )
    if fast_dropout:
        use_fast_dropout(model)
    if backbone.family == "decoder":
        check_decoder_method(backbone.name, task, model, loaded.tokenizer)
    elif task.kind == "extractive_qa" and not model.fits(task.max_length):
        raise ConfigError(
            f"task.max_length={task.max_length} plus prompt.length={prompt.length} "
            f"exceeds backbone {backbone.name}'s "
            f"{model.max_text_positions() + prompt.length} positions; lower task.max_length "
            f"to at most {model.max_text_positions()} or shorten the prompt."
        )
    return model, loaded.tokenizer


def save_peft_adapter(
    backbone: BackboneConfig, task: TaskConfig, seed: int, model, checkpoint_dir: Path
) -> dict[str, Any]:
    """A PEFT adapter run's folder ``checkpoint/peft`` (:mod:`lowres.methods.peft_export`).

    Returns the checkpoint manifest's ``peft_adapter`` entry: where the folder is, or why
    the run has none (a soft prompt, or backbone weights trained outside LoRA).
    """
    blocker = peft_blocker(model)
    if blocker:
        return {"written": False, "reason": f"no PEFT adapter folder: {blocker}"}
    # A pristine backbone (from memory in a sweep) becomes the PEFT model's base.
    base = load_backbone_reused(**backbone_arguments(backbone, task, seed)).model
    folder = export_peft(
        model, base, checkpoint_dir / PEFT_DIR, task_kind=task.kind, family=backbone.family
    )
    return {"written": True, "folder": folder.name, "base_model": backbone.path or backbone.name}


def label_names(task_kind: str) -> list[str]:
    return ["start_positions", "end_positions"] if task_kind == "extractive_qa" else ["labels"]


def planned_steps(trainer: TrainerConfig, windows: int, processes: int = 1) -> tuple[int, int]:
    """(optimizer updates, warm-up updates) of a run on ``windows`` training rows.

    Updates per epoch are counted as the Trainer counts them; ``trainer.min_steps`` raises the
    total (a k-shot stage learns at every k). Warm-up is ``warmup_ratio`` of the total rounded
    *down*: the linear schedule's first warm-up update has learning rate 0, and rounding up
    would spend a whole update of a 2-step run on it.
    """
    if trainer.max_steps > 0:
        total = trainer.max_steps
    else:
        batches = math.ceil(windows / (trainer.batch_size * processes))
        total = math.ceil(trainer.epochs * max(batches // trainer.grad_accum, 1))
    total = max(total, trainer.min_steps)
    return total, int(trainer.warmup_ratio * total)


@dataclass
class RunTrainingArguments(TrainingArguments):
    """The Trainer's arguments, with the autocast precision the run resolved (``auto`` made
    bf16, fp16 or fp32) kept as one string: the bf16/fp16 flags are derived from it, and
    environment.json records it."""

    precision: str = field(default="fp32", metadata={"help": "bf16, fp16 or fp32"})


def training_arguments(
    trainer: TrainerConfig,
    output_dir: Path,
    *,
    task_kind: str,
    learning_rate: float,
    train_windows: int = 0,
) -> RunTrainingArguments:
    """The Trainer's arguments; with ``train_windows`` (a run that trains), its step count and
    warm-up fixed here (:func:`planned_steps`) rather than left to the Trainer."""
    problem = device_problem(trainer.device, trainer.precision)
    if problem:
        raise ConfigError(f"{problem[0]}; {problem[1]}.")
    on_gpu = runs_on_gpu(trainer.device)
    precision = resolved_precision(trainer.precision, on_gpu)
    if trainer.report_to == "tensorboard" and not (
        importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")
    ):
        raise ConfigError(
            "trainer.report_to=tensorboard needs the tensorboard package, which is not "
            "installed; pip install tensorboard, or leave trainer.report_to=none."
        )
    max_steps, warmup = trainer.max_steps, trainer.warmup_ratio
    if train_windows:
        max_steps, warmup = planned_steps(trainer, train_windows, world_size())
    return RunTrainingArguments(
        output_dir=str(output_dir),
        precision=precision,
        learning_rate=learning_rate,
        num_train_epochs=trainer.epochs,
        max_steps=max_steps,
        per_device_train_batch_size=trainer.batch_size,
        per_device_eval_batch_size=trainer.eval_batch_size,
        gradient_accumulation_steps=trainer.grad_accum,
        warmup_steps=warmup,
        weight_decay=trainer.weight_decay,
        lr_scheduler_type=trainer.scheduler,
        seed=trainer.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not on_gpu,
        # None leaves torch's default; transformers sets TF32 only where the card has it.
        tf32=trainer.tf32 if on_gpu and is_torch_tf32_available() else None,
        logging_steps=trainer.logging_steps,
        save_strategy="steps" if trainer.save_steps > 0 else "no",
        save_steps=max(trainer.save_steps, 1),
        save_total_limit=2,
        # Off by default: metrics.json and train_log.jsonl hold what the report needs.
        report_to=trainer.report_to,
        disable_tqdm=True,
        label_names=label_names(task_kind),
        dataloader_num_workers=trainer.dataloader_workers,
        dataloader_pin_memory=on_gpu,
        remove_unused_columns=False,
        # Batches of similar length pad less; the sampler reads the dataset's length column.
        train_sampling_strategy="group_by_length" if trainer.group_by_length else "random",
        length_column_name=LENGTH_COLUMN,
    )


def build_trainer(
    model,
    tokenizer,
    args: TrainingArguments,
    *,
    progress: RichProgress,
    train_dataset=None,
    prompt_lr: float | None = None,
    alignment: AlignmentObjective | None = None,
) -> LowresTrainer:
    """The one trainer of a run (also evaluation-only and teacher runs): our progress lines
    replace the Trainer's printed dicts."""
    trainer = LowresTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        prompt_lr=prompt_lr,
        alignment=alignment,
        callbacks=[progress],
    )
    trainer.remove_callback(PrinterCallback)
    return trainer


def build_alignment(
    align: AlignConfig,
    task: Task,
    parallel: list[tuple[dict, dict]],
    tokenizer,
    *,
    seed: int,
    pad_to_multiple_of: int | None,
) -> AlignmentObjective | None:
    """The alignment objective over the task's parallel pairs or a user's file; None if off."""
    if not alignment_on(align):
        return None
    if align.parallel_file:
        texts = [((s, ""), (t, "")) for s, t in read_parallel_file(Path(align.parallel_file))]
    else:
        texts = [(task.text_pair(s), task.text_pair(t)) for s, t in parallel]
    source = tokenize_pairs(tokenizer, [s for s, _ in texts], align.max_length)
    target = tokenize_pairs(tokenizer, [t for _, t in texts], align.max_length)
    return AlignmentObjective(
        source=source,
        target=target,
        kind=align.kind,
        weight=align.weight,
        warmup_steps=align.warmup_steps,
        pooling=align.pooling,
        layers=align.layers,
        temperature=align.temperature,
        batch_size=min(align.batch_size, len(source)),
        tokenizer=tokenizer,
        seed=seed,
        pad_to_multiple_of=pad_to_multiple_of,
    )


def read_parallel_file(path: Path) -> list[tuple[str, str]]:
    """A user TSV of parallel sentences: ``source<TAB>target`` per line."""
    if not path.is_file():
        raise LowresError(
            f"align.parallel_file={path} does not exist; expected a TSV with one "
            "source<TAB>target sentence pair per line."
        )
    pairs = []
    for number, line in enumerate(path.read_text("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2 or not all(f.strip() for f in fields):
            raise LowresError(
                f"{path}, line {number}: expected two non-empty tab-separated fields "
                f"(source<TAB>target), found {len(fields)} field(s). Fix or drop that line."
            )
        pairs.append((fields[0], fields[1]))
    if not pairs:
        raise LowresError(f"align.parallel_file={path} holds no sentence pairs.")
    return pairs


def check_trainable(trainer: TrainerConfig, model, backbone: BackboneConfig) -> None:
    """A run that trains needs something trainable; a decoder has no new task head."""
    if trains(trainer) and not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(
            f"Nothing would train: on backbone {backbone.name} ({backbone.family}), the "
            "freezing strategy, prompt and adapter leave no trainable parameter (a decoder has "
            "no new task head; bitfit finds no biases in Llama). Add a soft prompt "
            "(prompt=input), an adapter (adapter=lora; decoders: "
            "adapter.target_modules=[q_proj,v_proj]), choose freeze=none, lower_k or "
            "head_only, or set trainer.epochs=0 to evaluate the model as it is."
        )


def initialise_from(model, run_dir: str, backbone: dict[str, Any]) -> None:
    """Two-stage transfer: start from another run's trained prompts, head and adapters."""
    path = Path(run_dir)
    if not RunFolder.finished_at(path):
        raise LowresError(
            f"init_from={run_dir} is not a finished lowres run (no metrics.json there); give "
            "the folder of a completed `lowres train` run, e.g. a sweep's stage-1 run."
        )
    load_trainable(model, path / "checkpoint", backbone=backbone)


def saved_config(run_dir: Path, key: str = "checkpoint") -> DictConfig:
    """The config a finished run was trained with, over the current schema's defaults."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise LowresError(
            f"{key}={run_dir}: no {path}; expected a run folder written by `lowres train` "
            "(with .hydra/config.yaml and checkpoint/). Check the path."
        )
    cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), OmegaConf.load(path))
    resolve_local(cfg.backbone)  # backbone=local: family auto, read from the folder again
    return cfg


def build_run_task(cfg: DictConfig) -> Task:
    """``build_task`` from a run's config groups: the one place a run config is unpacked
    into its task (training, evaluation, rescoring, a sweep's data check)."""
    return build_task(cfg.task, cfg.data, cfg.trainer, cfg.backbone)


def build_run_model(cfg: DictConfig, *, training: bool = True):
    """``build_model`` from a run's config groups: the one place a run config is unpacked
    into a model (training, evaluation and the bench). Evaluation keeps torch's dropout
    modules: they are the identity there, whatever ``trainer.fast_dropout`` says."""
    return build_model(
        cfg.backbone,
        cfg.freeze,
        cfg.prompt,
        cfg.adapter,
        task=cfg.task,
        seed=cfg.trainer.seed,
        fast_dropout=training and cfg.trainer.fast_dropout,
    )


def restore_run(cfg: DictConfig, run_dir: Path):
    """``(task, model, tokenizer)`` rebuilt from ``cfg`` with ``run_dir``'s trained weights."""
    task = build_run_task(cfg)
    model, tokenizer = build_run_model(cfg, training=False)
    backbone = OmegaConf.to_container(cfg.backbone, resolve=True)
    load_trainable(model, run_dir / "checkpoint", backbone=backbone)
    return task, model, tokenizer


def method_record(cfg: DictConfig, learning_rate: float) -> dict[str, Any]:
    """What metrics.json and the checkpoint manifest say the method was."""
    return {
        "freeze": cfg.freeze.strategy,
        "prompt_length": cfg.prompt.length,
        "prompt_layers": OmegaConf.to_container(cfg.prompt, resolve=True)["layers"],
        "align_kind": cfg.align.kind if alignment_on(cfg.align) else "none",
        "align_weight": cfg.align.weight,
        "adapter": cfg.adapter.kind,
        "lr": learning_rate,
        "prompt_lr": cfg.prompt.lr,  # null: the prompt trains at "lr" (0 is refused)
    }


def manifest(cfg: DictConfig, method: dict[str, Any], report: dict[str, int]) -> dict[str, Any]:
    """The checkpoint's manifest: what it was trained as, and the whole config."""
    return {
        "task": cfg.task.name,
        "backbone": cfg.backbone.name,
        "method": method,
        **report,
        "config": json.loads(json.dumps(OmegaConf.to_container(cfg, resolve=True))),
    }
