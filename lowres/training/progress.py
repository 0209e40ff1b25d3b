"""Rich progress bars and one log line per logging step, instead of tqdm and dict prints."""

from __future__ import annotations

import os

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from transformers import TrainerCallback


class RichProgress(TrainerCallback):
    """Rich progress bars for training and prediction, and log lines for the losses.

    ``bars=False`` (trainer.progress=false) keeps the log lines and drops the bars.
    """

    def __init__(self, bars: bool = True) -> None:
        self.console = Console(stderr=True)
        self.bars = bars
        self.progress = None
        self.train_task = None
        self.eval_task = None

    def _ensure(self):
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
