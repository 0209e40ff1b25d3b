"""The parts of transformers' Trainer that are wrong for us, and nothing else.

* the loss is task + lambda * alignment, each part logged on its own;
* the optimizer groups come from the model (``param_groups``): the prompt has its own
  learning rate, frozen weights get no optimizer state; AdamW runs torch's fused kernel
  where the device has one;
* checkpoints hold only the trainable parameters (:mod:`lowres.training.checkpoints`), also
  the intermediate ones a run resumes from;
* batches are padded to their own longest row (a multiple of 8 on CUDA) by the libraries'
  collators, with length-grouped training batches from the Trainer's own sampler, seeded
  per epoch; the evaluation sampler stays sequential, because evaluation orders windows
  itself.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import SequentialSampler
from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding, Trainer
from transformers.trainer_pt_utils import LengthGroupedSampler

from lowres.data.features import LENGTH_COLUMN, feature_dataset  # noqa: F401 (re-exported)
from lowres.files import write_atomic
from lowres.losses.alignment import warmup_weight
from lowres.training.alignment import AlignmentObjective
from lowres.training.checkpoints import load_trainable, save_trainable

# lowres's part of a resumable checkpoint, beside the Trainer's own files.
RESUME_STATE_FILE = "lowres_state.json"


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


# Devices with torch's fused AdamW kernel (one pass over all tensors of a group). On the CPU
# torch's default is the per-tensor loop, which took 4x the fused time on me5-small's 118M
# weights and a third of a full fine-tuning step (docs/benchmarks.md).
FUSED_ADAMW_DEVICES = ("cpu", "cuda")


def fused_adamw_supported(groups: list[dict[str, Any]]) -> bool:
    """Whether every parameter of ``groups`` is a floating tensor on a fused-AdamW device."""
    params = [p for group in groups for p in group["params"]]
    return bool(params) and all(
        p.device.type in FUSED_ADAMW_DEVICES and p.is_floating_point() for p in params
    )


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
        # Our compute_loss never passes num_items_in_batch to the model, whose loss is
        # therefore a per-batch mean; the Trainer must divide it by the accumulation steps.
        # Left to its signature check (decoders take **kwargs), the Trainer assumed the
        # model scaled its own loss, and runs with grad_accum=4 trained at 4x the loss.
        self.model_accepts_loss_kwargs = False
        self.prompt_lr = prompt_lr
        self.alignment = alignment
        self._alignment_batches = alignment.batches() if alignment else None
        # Alignment batches drawn so far and the loss summed over finished steps before a
        # resume: saved with each checkpoint, so a resumed run continues both exactly.
        self._alignment_drawn = 0
        self._loss_before: float | None = None
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
        args = self.args
        groups = model.param_groups(
            lr=args.learning_rate, weight_decay=args.weight_decay, prompt_lr=self.prompt_lr
        )
        self.optimizer = torch.optim.AdamW(
            groups,
            lr=args.learning_rate,
            betas=(args.adam_beta1, args.adam_beta2),
            eps=args.adam_epsilon,
            fused=fused_adamw_supported(groups),
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
            self._alignment_drawn += 1
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
        if "train_loss" in logs:
            # The Trainer's closing figure covers only this call's steps; a resumed run's
            # log must say what an uninterrupted run's says.
            logs["train_loss"] = self.run_loss()
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

    def _save_checkpoint(self, model, trial) -> None:
        # Written first: the Trainer's own trainer_state.json, written last, marks the
        # checkpoint complete (lowres.training.checkpoints.intact_checkpoint).
        folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
        if self.args.should_save:
            write_atomic(
                folder / RESUME_STATE_FILE,
                json.dumps(
                    {
                        "alignment_batches_drawn": self._alignment_drawn,
                        "loss_sum": self._total_loss_scalar + float(self._tr_loss),
                    }
                ),
            )
        try:
            super()._save_checkpoint(model, trial)
        except RuntimeError as err:
            converted = _disk_error_of(err, folder)
            if converted is err:
                raise
            raise converted from err

    def _take_loss_before(self) -> None:
        if self._loss_before is not None:
            # The Trainer restarts its loss sum at 0 on resume; start it where the checkpoint
            # left it, so train_loss covers the whole run, summed in the same order.
            self._total_loss_scalar += self._loss_before
            self._loss_before = None

    def _maybe_log_save_evaluate(self, tr_loss, *args, **kwargs):
        self._take_loss_before()
        return super()._maybe_log_save_evaluate(tr_loss, *args, **kwargs)

    def _run_epoch(self, *args, **kwargs):
        if self.state.global_step >= self.state.max_steps:
            # Resumed from the checkpoint of the last step: nothing is left to train. The
            # Trainer checks for the end only after a step, so it would train one step more.
            self.control.should_training_stop = True
            return None
        return super()._run_epoch(*args, **kwargs)

    def run_loss(self) -> float:
        """The mean training loss over every step of the run, resumed stretches included."""
        self._take_loss_before()  # a run resumed at its last step logs no step to take it
        return self._total_loss_scalar / max(self.state.global_step, 1)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        if self.args.should_save:
            save_trainable(self.model, output_dir or self.args.output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        load_trainable(model if model is not None else self.model, resume_from_checkpoint)
        folder = Path(resume_from_checkpoint)
        state_file = folder / RESUME_STATE_FILE
        trainer_state = json.loads((folder / "trainer_state.json").read_text())
        if state_file.is_file():
            state = json.loads(state_file.read_text())
            drawn, self._loss_before = state["alignment_batches_drawn"], state["loss_sum"]
        else:
            # A checkpoint from before this file: one alignment batch per micro-batch, and
            # the loss of the finished steps from the logged history (rounded by the log).
            step = trainer_state["global_step"]
            drawn = step * self.args.gradient_accumulation_steps
            logged = [r for r in trainer_state.get("log_history", []) if "loss" in r]
            self._loss_before = _logged_loss_sum(logged)
        if self.alignment is not None:
            self._alignment_drawn = drawn
            self._alignment_batches = self.alignment.batches(start=drawn)


def _logged_loss_sum(logged: list[dict]) -> float:
    """The summed per-step loss of the logged steps: each entry is a mean over its window."""
    total, last = 0.0, 0
    for row in logged:
        total += row["loss"] * (row["step"] - last)
        last = row["step"]
    return total


def _disk_error_of(err: RuntimeError, folder: Path) -> BaseException:
    """torch.save's error for a write that failed, as the OSError it stands for when the
    disk is full or read-only ("unexpected pos ..." names neither), else ``err`` itself."""
    if "unexpected pos" not in str(err) and "write failed" not in str(err):
        return err
    try:
        disk = os.statvfs(folder if folder.exists() else folder.parent)
    except OSError:
        return err
    if disk.f_flag & os.ST_RDONLY:
        return OSError(errno.EROFS, os.strerror(errno.EROFS), str(folder))
    if disk.f_bavail * disk.f_frsize < 64 * 2**20:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder))
    return err
