"""Checkpoints that hold only what trained: safetensors of the trainable parameters + a manifest.

Frozen weights come from the backbone every time, so a checkpoint of a soft prompt is a few
kilobytes; restoring requires every saved name to exist in the model with the same shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lowres.errors import LowresError

TRAINABLE_FILE = "trainable.safetensors"
MANIFEST_FILE = "manifest.json"


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
