"""Rich progress bars and one log line per logging step, instead of tqdm and dict prints."""

from __future__ import annotations

import functools
import os
import threading
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text
from transformers import TrainerCallback


class RichProgress(TrainerCallback):
    """Rich progress bars for training and prediction, and log lines for the losses.

    ``bars=False`` (trainer.progress=false) keeps the log lines and drops the bars. Without
    bars (also when stderr is not a terminal: a log file, a batch job) a heartbeat line says
    where training or evaluation is at least every ``heartbeat_s`` seconds, so a log never
    goes silent for minutes; every record is one line, however long (soft wrap: a log file
    has no width to wrap at).
    """

    HEARTBEAT_S = 30.0

    def __init__(self, bars: bool = True, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.console = Console(stderr=True, soft_wrap=True)
        self.bars = bars
        self.heartbeat_s = heartbeat_s
        self._beat = time.monotonic()
        self._eval_done = 0
        self._eval_total: int | None = None
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
            self.heartbeat(f"train: step {state.global_step}/{state.max_steps}")

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if not state.is_world_process_zero:
            return
        if self.eval_task is None:
            total = len(eval_dataloader) if eval_dataloader is not None else None
            self.eval_task = self._ensure().add_task("evaluate", total=total)
            self._eval_total, self._eval_done = total, 0
        self.progress.advance(self.eval_task)
        self._eval_done += 1
        self.heartbeat(f"evaluate: batch {self._eval_done}/{self._eval_total or '?'}")

    def heartbeat(self, where: str) -> None:
        """A line when no bar shows progress and ``heartbeat_s`` passed since the last one."""
        if self.progress is not None and not self.progress.disable:
            return
        now = time.monotonic()
        if now - self._beat >= self.heartbeat_s:
            self._beat = now
            self.console.print(f"{time.strftime('%H:%M:%S')} {where}", markup=False)

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
            self._beat = time.monotonic()  # a log line is a sign of life too
            line = Text.assemble((f"step {state.global_step}", "dim"), f"  {shown}")
            self.console.print(line, highlight=False)

    def on_train_end(self, args, state, control, **kwargs):
        if self.train_task is not None:
            self.progress.remove_task(self.train_task)
            self.train_task = None

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def with_heartbeat(function, what: str, every_s: float = RichProgress.HEARTBEAT_S):
    """``function`` wrapped to print a timed line every ``every_s`` seconds while it runs."""

    @functools.wraps(function)
    def run(*args, **kwargs):
        stop = threading.Event()
        started = time.monotonic()
        console = Console(stderr=True, soft_wrap=True)

        def beat() -> None:
            while not stop.wait(every_s):
                elapsed = time.monotonic() - started
                console.print(f"{time.strftime('%H:%M:%S')} {what}: {elapsed:.0f} s", markup=False)

        thread = threading.Thread(target=beat, name="lowres-heartbeat", daemon=True)
        thread.start()
        try:
            return function(*args, **kwargs)
        finally:
            stop.set()
            thread.join()

    return run
