"""The parts of transformers' Trainer that are wrong for us, and nothing else.

* the loss is task + lambda * alignment, each part logged on its own;
* the prompt has its own learning rate (prompts need steps 100x larger than weights);
* checkpoints hold only the trainable parameters (safetensors + manifest), also the
  intermediate ones a run resumes from;
* progress is shown with rich instead of tqdm;
* batches are padded to their own longest row (a multiple of 8 on CUDA) by the libraries'
  collators, with length-grouped training batches from the Trainer's own sampler; the
  evaluation sampler stays sequential, because evaluation orders windows itself.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from safetensors.torch import load_file, save_file
from torch.utils.data import SequentialSampler
from transformers import (
    DataCollatorForSeq2Seq,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
)
from transformers.trainer_pt_utils import LengthGroupedSampler

from lowres.errors import LowresError
from lowres.losses.alignment import alignment_loss, pool_layers, warmup_weight

TRAINABLE_FILE = "trainable.safetensors"
MANIFEST_FILE = "manifest.json"
# Tokens per row, read by the Trainer's length-grouped sampler and dropped before the model.
LENGTH_COLUMN = "length"


def feature_dataset(features: dict[str, list]) -> Dataset:
    """Features as a ``datasets.Dataset`` with the length column length grouping reads."""
    lengths = [len(ids) for ids in features["input_ids"]]
    return Dataset.from_dict({**features, LENGTH_COLUMN: lengths})


class PaddingCollator:
    """Pads each batch to its own longest row, with the libraries' collators.

    Encoder rows (scalar labels: spans, classes) go through ``DataCollatorWithPadding``;
    decoder rows, whose ``labels`` are token sequences, through ``DataCollatorForSeq2Seq``,
    which pads labels with -100 on the tokenizer's padding side. The length column is for
    the sampler only and never reaches the model.
    """

    def __init__(self, tokenizer, pad_to_multiple_of: int | None = None) -> None:
        self.inputs = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)
        self.sequences = DataCollatorForSeq2Seq(
            tokenizer, pad_to_multiple_of=pad_to_multiple_of, label_pad_token_id=-100
        )

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [{k: v for k, v in row.items() if k != LENGTH_COLUMN} for row in features]
        sequence_labels = isinstance(rows[0].get("labels"), list)
        return (self.sequences if sequence_labels else self.inputs)(rows)


def save_trainable(model, directory: str | Path, manifest: dict[str, Any] | None = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = model.trainable_state_dict()
    save_file(state, str(directory / TRAINABLE_FILE), metadata={"format": "pt"})
    info = {
        "parameters": {name: list(t.shape) for name, t in state.items()},
        "count": int(sum(t.numel() for t in state.values())),
        **(manifest or {}),
    }
    (directory / MANIFEST_FILE).write_text(json.dumps(info, indent=2))
    return directory


def load_trainable(model, directory: str | Path) -> None:
    """Restore trainable parameters; every saved name must exist and match in shape."""
    path = Path(directory) / TRAINABLE_FILE
    if not path.is_file():
        raise LowresError(
            f"No trained parameters at {path}; expected a checkpoint written by lowres "
            "(checkpoint/trainable.safetensors inside a run folder). Check the run folder, "
            "or rerun training if it did not finish."
        )
    state = load_file(str(path))
    own = dict(model.named_parameters())
    unknown = [n for n in state if n not in own]
    mismatched = [n for n in state if n in own and tuple(own[n].shape) != tuple(state[n].shape)]
    if unknown or mismatched:
        raise LowresError(
            f"The checkpoint {path} does not fit this model: unknown parameters "
            f"{unknown[:5]}, shape mismatches {mismatched[:5]}. Evaluate it with the "
            "backbone, prompt and adapter settings it was trained with (lowres evaluate "
            "reads them from the run folder)."
        )
    with torch.no_grad():
        for name, value in state.items():
            own[name].copy_(value.to(own[name].dtype))


@dataclass
class AlignmentObjective:
    """Batches of parallel (source, target) inputs and the loss that pulls them together."""

    source: list[dict[str, list[int]]]
    target: list[dict[str, list[int]]]
    kind: str
    weight: float
    warmup_steps: int
    pooling: str
    layers: Any
    temperature: float
    batch_size: int
    tokenizer: Any
    seed: int = 0
    pad_to_multiple_of: int | None = None  # 8 on CUDA, as the training batches

    def batches(self) -> Iterator[tuple[dict, dict]]:
        generator = torch.Generator().manual_seed(self.seed)
        for _ in itertools.count():
            order = torch.randperm(len(self.source), generator=generator).tolist()
            for start in range(0, len(order) - self.batch_size + 1 or 1, self.batch_size):
                rows = order[start : start + self.batch_size]
                yield (
                    self._pad([self.source[i] for i in rows]),
                    self._pad([self.target[i] for i in rows]),
                )

    def _pad(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        """Each side padded to its own longest row, as training batches are."""
        return self.tokenizer.pad(
            rows, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt"
        )

    def represent(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = model(**batch, output_hidden_states=self.kind != "kl")
        if self.kind == "kl":
            return out["logits"]
        mask = model.text_mask(batch["attention_mask"])
        layers = "last" if self.layers == "last" else [int(i) for i in self.layers]
        return pool_layers(out["hidden_states"], mask, layers, self.pooling)

    def loss(self, model, source: dict, target: dict) -> torch.Tensor:
        return alignment_loss(
            self.kind,
            self.represent(model, source).float(),
            self.represent(model, target).float(),
            temperature=self.temperature,
        )


def tokenize_pairs(tokenizer, pairs: Sequence[tuple[str, str]], max_length: int) -> list[dict]:
    firsts = [a for a, _ in pairs]
    seconds = [b for _, b in pairs]
    has_second = any(seconds)
    enc = tokenizer(firsts, seconds if has_second else None, truncation=True, max_length=max_length)
    return [{k: enc[k][i] for k in enc} for i in range(len(firsts))]


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """The Trainer's length-grouped order, drawn from a generator seeded by (seed, epoch).

    The parent draws from the global generator, whose state at that moment depends on what
    the process did before (data-parallel start-up, a resume); seeding per epoch makes the
    order the same in every process and after a resume, as the random sampler's already is.
    """

    def __init__(self, batch_size: int, *, lengths: list[int], seed: int) -> None:
        super().__init__(batch_size, lengths=lengths)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # called by accelerate's loaders each epoch
        self.epoch = epoch

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return super().__iter__()


class LowresTrainer(Trainer):
    def __init__(
        self,
        *args,
        prompt_lr: float | None = None,
        alignment: AlignmentObjective | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if kwargs.get("data_collator") is None and self.processing_class is not None:
            # Tensor cores work on multiples of 8; on the CPU any length is as good.
            multiple = 8 if self.args.device.type == "cuda" else None
            self.data_collator = PaddingCollator(self.processing_class, multiple)
        self.prompt_lr = prompt_lr
        self.alignment = alignment
        self._alignment_batches = alignment.batches() if alignment else None
        self._sums = {"task_loss": 0.0, "align_loss": 0.0, "align_weight": 0.0}
        self._count = 0

    def _get_train_sampler(self, train_dataset=None):
        if self.args.train_sampling_strategy != "group_by_length":
            return super()._get_train_sampler(train_dataset)
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        # Groups of one *global* batch: the Trainer groups per device, so data-parallel
        # ranks would train on other batches than a single process with the same total batch.
        args = self.args
        return EpochSeededLengthGroupedSampler(
            args.train_batch_size * args.gradient_accumulation_steps * max(1, args.world_size),
            lengths=dataset[LENGTH_COLUMN],
            seed=args.seed,
        )

    def _get_eval_sampler(self, eval_dataset):
        # The Trainer would shuffle evaluation rows into length groups along with training
        # ones; evaluation sorts its windows itself and needs outputs back in that order.
        if self.args.world_size <= 1:
            return SequentialSampler(eval_dataset)
        return None  # distributed evaluation: accelerate shards in order and gathers

    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        model = model if model is not None else self.model
        prompt, decay, no_decay = [], [], []
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue  # frozen weights get neither gradients nor optimizer state
            if name in ("prompt", "deep_prompts"):
                prompt.append(param)
            elif param.ndim < 2 or "LayerNorm" in name or "norm" in name.lower():
                no_decay.append(param)
            else:
                decay.append(param)
        lr = self.args.learning_rate
        groups = [
            {"params": decay, "weight_decay": self.args.weight_decay, "lr": lr},
            {"params": no_decay, "weight_decay": 0.0, "lr": lr},
            {"params": prompt, "weight_decay": 0.0, "lr": self.prompt_lr or lr},
        ]
        groups = [g for g in groups if g["params"]]
        self.optimizer = torch.optim.AdamW(
            groups,
            lr=lr,
            betas=(self.args.adam_beta1, self.args.adam_beta2),
            eps=self.args.adam_epsilon,
        )
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        loss = outputs["loss"]
        if self.alignment is not None and model.training:
            weight = warmup_weight(
                self.state.global_step, self.alignment.weight, self.alignment.warmup_steps
            )
            source, target = next(self._alignment_batches)
            device = loss.device
            align = self.alignment.loss(
                model,
                {k: v.to(device) for k, v in source.items()},
                {k: v.to(device) for k, v in target.items()},
            )
            self._sums["align_loss"] += float(align.detach())
            self._sums["align_weight"] += weight
            self._sums["task_loss"] += float(loss.detach())
            self._count += 1
            loss = loss + weight * align
        elif model.training:
            self._sums["task_loss"] += float(loss.detach())
            self._count += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and self._count:
            sums, count = dict(self._sums), self._count
            if self.args.world_size > 1:
                # Each rank saw its own shard; log the mean over all of them, as "loss" is.
                local = torch.tensor(
                    [*sums.values(), count], dtype=torch.float64, device=self.args.device
                )
                *totals, count = self.accelerator.reduce(local, reduction="sum").tolist()
                sums = dict(zip(sums, totals, strict=True))
            logs["task_loss"] = round(sums["task_loss"] / count, 6)
            if self.alignment is not None:
                logs["align_loss"] = round(sums["align_loss"] / count, 6)
                logs["align_weight"] = round(sums["align_weight"] / count, 6)
            self._sums = dict.fromkeys(self._sums, 0.0)
            self._count = 0
        super().log(logs, *args, **kwargs)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        if self.args.should_save:
            save_trainable(self.model, output_dir or self.args.output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        load_trainable(model if model is not None else self.model, resume_from_checkpoint)


class TrainClock(TrainerCallback):
    """Training wall time summed over the segments of a resumed run.

    Trainer's own ``train_runtime`` restarts at zero on resume, so a run interrupted once
    would report only its last stretch. Each resumable checkpoint therefore records the
    seconds spent up to it, and a resumed run starts counting from there.
    """

    FILE = "train_clock.json"

    def __init__(self, resumed_from: str | Path | None = None) -> None:
        self.before = 0.0
        # The step the total counts from: 0, or the resume point when an older checkpoint
        # carries no clock (its earlier time is then unknown, and said to be).
        self.counted_from_step = 0
        self._started: float | None = None
        if resumed_from is not None:
            path = Path(resumed_from) / self.FILE
            if path.is_file():
                self.before = float(json.loads(path.read_text())["train_seconds"])
            else:
                state = Path(resumed_from) / "trainer_state.json"
                self.counted_from_step = int(json.loads(state.read_text())["global_step"])

    def start(self) -> None:
        self._started = time.perf_counter()

    def seconds(self) -> float:
        running = 0.0 if self._started is None else time.perf_counter() - self._started
        return self.before + running

    def on_save(self, args, state, control, **kwargs):
        if args.should_save:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                (folder / self.FILE).write_text(
                    json.dumps({"train_seconds": round(self.seconds(), 3)})
                )


class RichProgress(TrainerCallback):
    """Rich progress bars for training and prediction, and log lines for the losses.

    ``bars=False`` (trainer.progress=false) keeps the log lines and drops the bars.
    """

    def __init__(self, bars: bool = True) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.bars = bars
        self.progress = None
        self.train_task = None
        self.eval_task = None

    def _ensure(self):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        if self.progress is None:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                disable=not self.bars
                or (not self.console.is_terminal and os.environ.get("LOWRES_PROGRESS") != "1"),
            )
            self.progress.start()
        return self.progress

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.train_task = self._ensure().add_task(
                "train", total=state.max_steps, completed=state.global_step
            )

    def on_step_end(self, args, state, control, **kwargs):
        if self.train_task is not None:
            self.progress.update(self.train_task, completed=state.global_step)

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if not state.is_world_process_zero:
            return
        if self.eval_task is None:
            total = len(eval_dataloader) if eval_dataloader is not None else None
            self.eval_task = self._ensure().add_task("evaluate", total=total)
        self.progress.advance(self.eval_task)

    def on_predict(self, args, state, control, **kwargs):
        self.close_eval()

    def close_eval(self) -> None:
        if self.eval_task is not None:
            self.progress.remove_task(self.eval_task)
            self.eval_task = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            shown = "  ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in logs.items()
            )
            self.console.print(f"[dim]step {state.global_step}[/]  {shown}", highlight=False)

    def on_train_end(self, args, state, control, **kwargs):
        if self.train_task is not None:
            self.progress.remove_task(self.train_task)
            self.train_task = None

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
