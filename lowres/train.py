"""``train(cfg) -> metrics``: the one place that reads the whole config.

Everything below it takes plain arguments: the task, the backbone loader, the method
builder, the trainer and the evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from lowres.cache import FeatureCache
from lowres.environment import cpu_bf16_flags, cpu_name, environment
from lowres.errors import ConfigError, LowresError
from lowres.evaluation import evaluate_languages, parallel_distance, show_scores
from lowres.methods.build import build_method, parameter_report
from lowres.reuse import load_backbone_reused
from lowres.runfolder import RunFolder
from lowres.schema import resolved_lr, validate
from lowres.selection import CheckpointSelection, selection_active
from lowres.tasks import Settings, Task, build_task
from lowres.trainer import (
    LENGTH_COLUMN,
    AlignmentObjective,
    LowresTrainer,
    RichProgress,
    TrainClock,
    feature_dataset,
    load_trainable,
    save_trainable,
    tokenize_pairs,
)


def quiet_libraries() -> None:
    """Keep the terminal for our progress and tables; library chatter goes to the log level."""
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()


def task_from_config(cfg: DictConfig) -> Task:
    settings = Settings(
        source=cfg.data.source,
        root=cfg.data.root,
        source_language=cfg.data.source_language,
        eval_languages=list(cfg.data.eval_languages),
        k=cfg.data.k,
        pool_fraction=cfg.data.pool_fraction,
        max_train_examples=cfg.data.max_train_examples,
        max_eval_examples=cfg.data.max_eval_examples,
        seed=cfg.trainer.seed,
        use_source_pool=cfg.data.source_pool,
        select_examples=cfg.trainer.select_examples if _selects(cfg) else 0,
    )
    params = OmegaConf.to_container(cfg.task, resolve=True)
    task = build_task(params.pop("name"), settings, **params)
    if cfg.backbone.family == "decoder":
        from lowres.tasks.generative import generative_task

        task = generative_task(task, cfg.task, cfg.backbone)
    return task


def model_from_config(cfg: DictConfig):
    """Backbone + method, exactly as configured; returns (model, tokenizer)."""
    backbone = load_backbone_reused(
        name=cfg.backbone.name,
        loader=cfg.backbone.loader,
        path=cfg.backbone.path,
        architecture=cfg.backbone.architecture,
        task_kind=cfg.task.kind,
        num_labels=cfg.task.num_labels,
        seed=cfg.trainer.seed,
        dtype=cfg.backbone.dtype,
        family=cfg.backbone.family,
        gradient_checkpointing=cfg.backbone.gradient_checkpointing,
    )
    model = build_method(
        backbone.model,
        backbone.tokenizer,
        task_kind=cfg.task.kind,
        family=cfg.backbone.family,
        freeze=cfg.freeze.strategy,
        freeze_k=cfg.freeze.k,
        prompt_length=cfg.prompt.length,
        prompt_init=cfg.prompt.init,
        prompt_init_text=cfg.prompt.init_text,
        prompt_layers=cfg.prompt.layers,
        adapter=cfg.adapter.kind,
        adapter_options={
            "r": cfg.adapter.r,
            "alpha": cfg.adapter.alpha,
            "dropout": cfg.adapter.dropout,
            # The module names differ by architecture (BERT query/value, Llama q_proj/v_proj),
            # so the backbone supplies the default and adapter.target_modules overrides it.
            "target_modules": list(cfg.adapter.target_modules or cfg.backbone.lora_targets),
        },
        seed=cfg.trainer.seed,
        backbone_dropout=cfg.freeze.dropout,
    )
    if cfg.backbone.family == "decoder":
        from lowres.tasks.generative import check_decoder_config

        check_decoder_config(cfg, model, backbone.tokenizer)
    if cfg.task.kind == "extractive_qa" and cfg.task.max_length > model.max_text_positions():
        raise ConfigError(
            f"task.max_length={cfg.task.max_length} plus prompt.length={cfg.prompt.length} "
            f"exceeds backbone {cfg.backbone.name}'s "
            f"{model.max_text_positions() + cfg.prompt.length} positions; lower task.max_length "
            f"to at most {model.max_text_positions()} or shorten the prompt."
        )
    return model, backbone.tokenizer


def training_arguments(
    trainer_cfg: DictConfig, output_dir: Path, *, label_names: list[str], learning_rate: float
):
    from transformers import TrainingArguments
    from transformers.utils import is_torch_tf32_available

    device = trainer_cfg.device
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "trainer.device=cuda but no CUDA device is visible; use trainer.device=auto "
            "(falls back to the CPU) or trainer.device=cpu."
        )
    on_gpu = device != "cpu" and torch.cuda.is_available()
    precision = trainer_cfg.precision
    if precision == "fp16" and not on_gpu:
        raise ConfigError(
            "trainer.precision=fp16 needs a CUDA device, and this run is on the CPU; use "
            "trainer.precision=fp32, or bf16 on a CPU with native bf16 (avx512_bf16 or AMX)."
        )
    if precision == "bf16" and not on_gpu and not cpu_bf16_flags():
        raise ConfigError(
            f"trainer.precision=bf16 on the CPU needs native bf16 matrix instructions, and "
            f"this CPU ({cpu_name()}) reports neither avx512_bf16 nor amx_bf16 in "
            "/proc/cpuinfo, so bf16 would be emulated and slower than fp32. Use "
            "trainer.precision=fp32 here, or run on a GPU."
        )
    if precision == "bf16" and on_gpu and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            "trainer.precision=bf16 but this GPU has no bf16 support; use trainer.precision=fp16."
        )
    return TrainingArguments(
        output_dir=str(output_dir),
        learning_rate=learning_rate,
        num_train_epochs=trainer_cfg.epochs,
        max_steps=trainer_cfg.max_steps,
        per_device_train_batch_size=trainer_cfg.batch_size,
        per_device_eval_batch_size=trainer_cfg.eval_batch_size,
        gradient_accumulation_steps=trainer_cfg.grad_accum,
        warmup_steps=trainer_cfg.warmup_ratio,
        weight_decay=trainer_cfg.weight_decay,
        lr_scheduler_type=trainer_cfg.scheduler,
        seed=trainer_cfg.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not on_gpu,
        # None leaves torch's default; transformers sets TF32 only where the card has it.
        tf32=trainer_cfg.tf32 if on_gpu and is_torch_tf32_available() else None,
        logging_steps=trainer_cfg.logging_steps,
        save_strategy="steps" if trainer_cfg.save_steps > 0 else "no",
        save_steps=max(trainer_cfg.save_steps, 1),
        save_total_limit=2,
        report_to="none",
        disable_tqdm=True,
        label_names=label_names,
        dataloader_num_workers=trainer_cfg.dataloader_workers,
        dataloader_pin_memory=on_gpu,
        remove_unused_columns=False,
        # Batches of similar length pad less; the sampler reads the dataset's length column
        # and shuffles with the seeded global generator, so the order is fixed by the seed.
        train_sampling_strategy="group_by_length" if trainer_cfg.group_by_length else "random",
        length_column_name=LENGTH_COLUMN,
    )


def _alignment(
    cfg: DictConfig, task: Task, split, tokenizer, pad_to_multiple_of: int | None
) -> AlignmentObjective | None:
    if cfg.align.weight <= 0:
        return None
    if cfg.align.parallel_file:
        pairs = read_parallel_file(Path(cfg.align.parallel_file))
        source = tokenize_pairs(tokenizer, [(s, "") for s, _ in pairs], cfg.align.max_length)
        target = tokenize_pairs(tokenizer, [(t, "") for _, t in pairs], cfg.align.max_length)
    else:
        source = tokenize_pairs(
            tokenizer, [task.text_pair(s) for s, _ in split.parallel], cfg.align.max_length
        )
        target = tokenize_pairs(
            tokenizer, [task.text_pair(t) for _, t in split.parallel], cfg.align.max_length
        )
    return AlignmentObjective(
        source=source,
        target=target,
        kind=cfg.align.kind,
        weight=cfg.align.weight,
        warmup_steps=cfg.align.warmup_steps,
        pooling=cfg.align.pooling,
        layers=cfg.align.layers,
        temperature=cfg.align.temperature,
        batch_size=min(cfg.align.batch_size, len(source)),
        tokenizer=tokenizer,
        seed=cfg.trainer.seed,
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


def _selects(cfg: DictConfig) -> bool:
    t = cfg.trainer
    return selection_active(t.select_on, t.select_every, t.epochs, t.max_steps)


def main_score(task_kind: str) -> str:
    """The score that ranks checkpoints and runs: F1 for QA, accuracy for classification."""
    return "f1" if task_kind == "extractive_qa" else "accuracy"


def initialise_from(model, run_dir: str) -> None:
    """Two-stage transfer: start from another run's trained prompts, head and adapters."""
    path = Path(run_dir)
    if not RunFolder.finished_at(path):
        raise LowresError(
            f"init_from={run_dir} is not a finished lowres run (no metrics.json there); give "
            "the folder of a completed `lowres train` run, e.g. a sweep's stage-1 run."
        )
    load_trainable(model, path / "checkpoint")


def _pseudo(cfg: DictConfig, task: Task, split, run_dir: Path):
    """Self-training or translate-train data added to the split (pseudo=none: unchanged)."""
    from lowres import pseudo

    p = cfg.pseudo
    args = None
    if p.kind == "self_train":
        args = training_arguments(
            cfg.trainer, run_dir / "teacher", label_names=label_names(task.kind), learning_rate=0.0
        )
    files = OmegaConf.to_container(p.files) if OmegaConf.is_config(p.files) else p.files
    return pseudo.build(
        p.kind,
        task,
        split,
        source_language=cfg.data.source_language,
        target_languages=list(cfg.data.eval_languages),
        mix=p.mix,
        teacher=p.teacher,
        threshold=p.threshold,
        max_examples=p.max_examples,
        files=files,
        args=args,
    )


def label_names(task_kind: str) -> list[str]:
    return ["start_positions", "end_positions"] if task_kind == "extractive_qa" else ["labels"]


def train(cfg: DictConfig, output_dir: str | Path | None = None) -> dict[str, Any]:
    """Train as configured, evaluate every eval language, write the run folder."""
    from transformers import set_seed
    from transformers.trainer_utils import TrainOutput, get_last_checkpoint

    if cfg.task is None:
        raise ConfigError("No task chosen; add +task=xquad (see `lowres --help` for the tasks).")
    validate(cfg)
    quiet_libraries()
    run = RunFolder.for_job(output_dir)
    if run.finished():
        if not cfg.resume:
            raise LowresError(
                f"The run folder {run.path} already holds a finished run (metrics.json); "
                "lowres never overwrites one. Choose another hydra.run.dir."
            )
        return run.metrics()
    set_seed(cfg.trainer.seed)
    task = task_from_config(cfg)
    align_languages = []
    if cfg.align.weight > 0 and not cfg.align.parallel_file:
        align_languages = list(cfg.align.target_languages or cfg.data.eval_languages)
    split = task.split(align_languages=align_languages, align_source=cfg.align.source_language)
    split, pseudo_data = _pseudo(cfg, task, split, run.path)
    run.write_json("data_split.json", {**split.record(), "pseudo": pseudo_data.record()})

    # Before the backbone loads: an empty training set is a config problem, found cheaply.
    wants_training = cfg.trainer.max_steps > 0 or cfg.trainer.epochs > 0
    if wants_training and not split.train:
        raise ConfigError(
            "Nothing to train on: the source pool is off (data.source_pool=false) and no "
            f"target-language records were added (data.k={cfg.data.k}, pseudo.kind="
            f"{cfg.pseudo.kind}, pseudo.mix={cfg.pseudo.mix}). Set data.k > 0, keep "
            "data.source_pool=true, lower pseudo.threshold, or evaluate without training "
            "with trainer.epochs=0."
        )
    model, tokenizer = model_from_config(cfg)
    if cfg.init_from:
        initialise_from(model, cfg.init_from)
    report = parameter_report(model)
    cache = FeatureCache.from_setting(cfg.data.cache_dir)
    features = cache.train_features(task, split.train, tokenizer)
    train_dataset = feature_dataset(features)
    learning_rate = resolved_lr(cfg.trainer.lr, cfg.freeze.strategy)
    args = training_arguments(
        cfg.trainer,
        run.path / "trainer",
        label_names=label_names(task.kind),
        learning_rate=learning_rate,
    )
    progress = RichProgress(bars=cfg.trainer.progress)
    trainer = LowresTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        prompt_lr=cfg.prompt.lr,
        alignment=_alignment(
            cfg, task, split, tokenizer, 8 if args.device.type == "cuda" else None
        ),
        callbacks=[progress],
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    run.write_json(
        "environment.json",
        environment(trainer.args.device, cfg.trainer.precision, cfg.backbone.dtype),
    )
    selection = None
    if split.selection:
        main = main_score(task.kind)
        dev = {cfg.data.source_language: split.selection}

        def dev_score() -> float:
            scores = evaluate_languages(trainer, task, dev, tokenizer, cache=cache)[0]
            return scores["average"][main]

        selection = CheckpointSelection(dev_score, every=cfg.trainer.select_every)
        trainer.add_callback(selection)
    resume_from = None
    if cfg.resume and (run.path / "trainer").is_dir():
        resume_from = get_last_checkpoint(str(run.path / "trainer"))
    clock = TrainClock(resume_from)
    trainer.add_callback(clock)
    try:
        clock.start()
        if cfg.trainer.max_steps <= 0 and cfg.trainer.epochs <= 0:
            # trainer.epochs=0: evaluate the model as built (the untrained baseline).
            result = TrainOutput(global_step=0, training_loss=float("nan"), metrics={})
        else:
            result = trainer.train(resume_from_checkpoint=resume_from)
        train_seconds = clock.seconds()
        run.write_jsonl("train_log.jsonl", trainer.state.log_history)
        if trainer.args.should_save:
            save_trainable(model, run.path / "checkpoint", manifest=_manifest(cfg, report))
        scores, predictions, eval_seconds = evaluate_languages(
            trainer, task, split.evaluation, tokenizer, cache=cache
        )
        if cfg.align.weight > 0 or cfg.align.report_distance:
            scores["parallel_distance"] = parallel_distance(
                model,
                tokenizer,
                task,
                list(cfg.data.eval_languages),
                cfg.align.source_language,
                max_length=cfg.align.max_length,
                pooling=cfg.align.pooling,
                layers=cfg.align.layers,
                batch_size=cfg.trainer.eval_batch_size,
            )
    finally:
        progress.stop()
    metrics = {
        "task": task.name,
        "backbone": cfg.backbone.name,
        "method": _method(cfg),
        **scores,
        **task.extra_metrics(scores["per_language"]),
        **report,
        "k": cfg.data.k,
        "seed": cfg.trainer.seed,
        "source_pool": cfg.data.source_pool,
        "train_examples": len(split.train),
        "pseudo": pseudo_data.summary(),
        "train_windows": len(train_dataset),
        "train_steps": result.global_step,
        "train_loss": result.training_loss,
        "train_runtime_s": round(train_seconds, 3),
        # 0 unless resumed from a checkpoint older than the clock: then the time before is lost.
        "train_runtime_from_step": clock.counted_from_step,
        "eval_runtime_s": round(eval_seconds, 3),
        "device": str(trainer.args.device),
        **cache.report(),
        "selection": selection.record(len(split.selection))
        if selection
        else {"policy": "last", "requested": cfg.trainer.select_on},
        "init_from": cfg.init_from or None,
    }
    if trainer.args.should_save:
        for lang, answers in predictions.items():
            run.write_json(f"predictions/{lang}.json", answers)
        run.write_json("metrics.json", metrics)
    if trainer.is_world_process_zero():
        show_scores(metrics)
    return metrics


def _method(cfg: DictConfig) -> dict[str, Any]:
    return {
        "freeze": cfg.freeze.strategy,
        "prompt_length": cfg.prompt.length,
        "prompt_layers": OmegaConf.to_container(cfg.prompt, resolve=True)["layers"],
        "align_kind": cfg.align.kind if cfg.align.weight > 0 else "none",
        "align_weight": cfg.align.weight,
        "adapter": cfg.adapter.kind,
        "lr": resolved_lr(cfg.trainer.lr, cfg.freeze.strategy),
        "prompt_lr": cfg.prompt.lr if cfg.prompt.lr is not None else None,
    }


def _manifest(cfg: DictConfig, report: dict[str, int]) -> dict[str, Any]:
    return {
        "task": cfg.task.name,
        "backbone": cfg.backbone.name,
        "method": _method(cfg),
        **report,
        "config": json.loads(json.dumps(OmegaConf.to_container(cfg, resolve=True))),
    }
