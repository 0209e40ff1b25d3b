"""Training wall time that survives a resume."""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import TrainerCallback

from lowres.files import write_atomic


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
                # Atomic: a run killed while writing it must still resume.
                write_atomic(
                    folder / self.FILE, json.dumps({"train_seconds": round(self.seconds(), 3)})
                )
