"""Checkpoints that hold only what trained: safetensors of the trainable parameters + a manifest.

Frozen weights come from the backbone every time, so a checkpoint of a soft prompt is a few
kilobytes; restoring requires every saved name to exist in the model with the same shape.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from lowres.errors import LowresError
from lowres.files import MANIFEST_FILE, TRAINABLE_FILE, recorded_sha256, write_atomic

# The backbone settings that decide which weights a checkpoint's parameters belong to.
BACKBONE_IDENTITY = ("name", "architecture", "family", "loader", "path")


def save_trainable(model, directory: str | Path, manifest: dict[str, Any] | None = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = model.trainable_state_dict()
    data = save(state, metadata={"format": "pt"})
    write_atomic(directory / TRAINABLE_FILE, data)
    info = {
        "parameters": {name: list(t.shape) for name, t in state.items()},
        "count": int(sum(t.numel() for t in state.values())),
        # The weights this run trained: same-shape weights from elsewhere are refused.
        "sha256": {TRAINABLE_FILE: hashlib.sha256(data).hexdigest()},
        **(manifest or {}),
    }
    write_atomic(directory / MANIFEST_FILE, json.dumps(info, indent=2))
    return directory


def read_trainable(path: Path) -> dict[str, torch.Tensor]:
    """A trainable.safetensors file, or a LowresError saying it is damaged."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise LowresError(
            f"The checkpoint file {path} is damaged ({err}); expected a complete "
            "safetensors file as lowres writes it. It was probably cut short by a full disk or "
            "a copy that did not finish: restore it from a backup, or train the run again."
        ) from None


def check_backbone(directory: str | Path, backbone: dict[str, Any]) -> None:
    """Refuse a checkpoint trained on another backbone, before any shape comparison.

    Two small backbones can share every trainable shape (tiny-bert and tiny-xlmr do), so a
    shape check alone would load a checkpoint into a model it was never trained with.
    """
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        return  # intermediate Trainer checkpoints carry no manifest; the run's config rules
    saved = json.loads(path.read_text()).get("config", {}).get("backbone")
    if not saved:
        return
    differ = [k for k in BACKBONE_IDENTITY if k in saved and saved[k] != backbone.get(k)]
    if differ:
        was = ", ".join(f"backbone.{k}={saved[k]!r}" for k in differ)
        now = ", ".join(f"backbone.{k}={backbone.get(k)!r}" for k in differ)
        raise LowresError(
            f"The checkpoint {directory} was trained on another backbone ({was}) than this "
            f"run builds ({now}); its parameters belong to that model. Use the backbone it "
            "was trained with (lowres evaluate reads it from the run folder: drop the "
            "backbone overrides)."
        )


def digest_problem(directory: str | Path) -> str | None:
    """How trainable.safetensors differs from the hash its manifest recorded, or None
    (also for checkpoints written before manifests recorded one)."""
    directory = Path(directory)
    expected = recorded_sha256(directory)
    if not expected:
        return None
    actual = hashlib.sha256((directory / TRAINABLE_FILE).read_bytes()).hexdigest()
    if actual == expected:
        return None
    return (
        f"{TRAINABLE_FILE} has sha256 {actual[:12]}..., not the {expected[:12]}... "
        f"its {MANIFEST_FILE} recorded when the run saved it"
    )


def load_trainable(model, directory: str | Path, backbone: dict[str, Any] | None = None) -> None:
    """Restore trainable parameters; every saved name must exist and match in shape, and the
    manifest's backbone (when ``backbone`` is given) must be this one."""
    path = Path(directory) / TRAINABLE_FILE
    if not path.is_file():
        raise LowresError(
            f"No trained parameters at {path}; expected a checkpoint written by lowres "
            "(checkpoint/trainable.safetensors inside a run folder). Check the run folder, "
            "or rerun training if it did not finish."
        )
    if backbone is not None:
        check_backbone(directory, backbone)
    state = read_trainable(path)
    changed = digest_problem(directory)
    if changed:
        raise LowresError(
            f"The checkpoint {directory} holds other weights than the run trained: {changed}. "
            "The file was replaced or changed after training (weights copied from another "
            "run or backbone?). Restore the run's own file, or train the run again."
        )
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


def intact_checkpoint(trainer_dir: str | Path) -> tuple[Path | None, list[str]]:
    """The latest resumable checkpoint that is complete, and why later ones were skipped.

    A run killed while saving, or a damaged disk, can leave the newest checkpoint-N cut
    short; resuming then falls back to the one before it instead of failing.
    """
    folders = sorted(
        (p for p in Path(trainer_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
        reverse=True,
    )
    skipped = []
    for folder in folders:
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder, skipped
        skipped.append(f"{folder.name}: {problem}")
    return None, skipped


def checkpoint_problem(folder: Path) -> str | None:
    """What is wrong with a resumable checkpoint folder, or None when it is complete."""
    for name in ("trainer_state.json", TRAINABLE_FILE, "optimizer.pt", "scheduler.pt"):
        if not (folder / name).is_file() or (folder / name).stat().st_size == 0:
            return f"{name} is missing or empty"
    try:
        json.loads((folder / "trainer_state.json").read_text())
    except ValueError:
        return "trainer_state.json is not valid JSON"
    try:
        load_file(str(folder / TRAINABLE_FILE))
    except (SafetensorError, OSError, ValueError) as err:
        return f"{TRAINABLE_FILE} is damaged ({err})"
    changed = digest_problem(folder)
    if changed:
        return changed
    # torch.save writes zip archives; reading every member against its CRC finds a file cut
    # short or changed without unpickling it.
    for path in sorted(folder.glob("*.pt")) + sorted(folder.glob("rng_state*.pth")):
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            return f"{path.name} is damaged ({err})"
        if bad is not None:
            return f"{path.name} is damaged (its member {bad} fails its checksum)"
    return None
