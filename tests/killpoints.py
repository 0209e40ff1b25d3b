"""Run ``lowres ARGS`` and SIGKILL the process at its N-th kill point (0: never).

    python tests/killpoints.py EVENTS_FILE N lowres-args...

Kill points are the moments a kill can land on: each training micro-step, each evaluation
batch, each file about to be moved into place (``os.replace``: the temporary file is
complete, the target still the old one), and each checkpoint file half written
(``torch.save``: optimizer, scheduler, RNG state; the Trainer's ``trainer_state.json``).
Each point reached is appended to EVENTS_FILE as ``INDEX KIND DETAIL`` before the kill, so
a counting run (N=0) lists them all and the test picks some with a seeded generator.
"""

from __future__ import annotations

import io
import os
import signal
import sys
from pathlib import Path

import torch
import transformers
from transformers.trainer_callback import TrainerState

EVENTS = Path(sys.argv[1])
KILL_AT = int(sys.argv[2])
_count = 0


def _reached(kind: str, detail: object = "") -> bool:
    """Record a kill point; True when this is the one to die at."""
    global _count
    _count += 1
    with open(EVENTS, "a", encoding="utf-8") as out:
        out.write(f"{_count} {kind} {detail}\n")
    return _count == KILL_AT


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _half_written(path, data: bytes) -> None:
    with open(path, "wb") as out:
        out.write(data[: len(data) // 2])
        out.flush()
        os.fsync(out.fileno())
    _die()


real_training_step = transformers.Trainer.training_step
real_prediction_step = transformers.Trainer.prediction_step
real_replace = os.replace
real_save = torch.save
real_save_to_json = TrainerState.save_to_json


def training_step(self, *args, **kwargs):
    if _reached("train", self.state.global_step):
        _die()
    return real_training_step(self, *args, **kwargs)


def prediction_step(self, *args, **kwargs):
    if _reached("eval"):
        _die()
    return real_prediction_step(self, *args, **kwargs)


def replace(src, dst, *args, **kwargs):
    if _reached("replace", Path(dst).name):
        _die()
    return real_replace(src, dst, *args, **kwargs)


def save(obj, f, *args, **kwargs):
    if isinstance(f, (str, os.PathLike)) and _reached("checkpoint-write", Path(f).name):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        _half_written(f, buffer.getvalue())
    return real_save(obj, f, *args, **kwargs)


def save_to_json(self, json_path):
    if _reached("checkpoint-write", f"{Path(json_path).parent.name}/trainer_state.json"):
        real_save_to_json(self, json_path)
        _half_written(json_path, Path(json_path).read_bytes())
    return real_save_to_json(self, json_path)


transformers.Trainer.training_step = training_step
transformers.Trainer.prediction_step = prediction_step
os.replace = replace
torch.save = save
TrainerState.save_to_json = save_to_json

if __name__ == "__main__":
    from lowres.cli import main

    main(sys.argv[3:])
