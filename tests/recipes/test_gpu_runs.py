"""CUDA-only checks: bf16 training, TF32, pinned memory, the run environment on a GPU.

Run on a GPU machine with ``python -m pytest -m gpu`` (or ``bash scripts/gpu_check.sh``);
the default test run excludes the ``gpu`` marker, and without CUDA these tests skip."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import SMOKE, run_lowres

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_bf16_training_run_on_cuda(tmp_path):
    if not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name()} has no bf16")
    run = tmp_path / "run"
    run_lowres(
        "train",
        *SMOKE,
        "trainer.device=cuda",
        "trainer.precision=bf16",
        "data.cache_dir=",
        f"hydra.run.dir={run}",
    )
    metrics = json.loads((run / "metrics.json").read_text())
    env = json.loads((run / "environment.json").read_text())
    assert metrics["device"].startswith("cuda") and metrics["train_steps"] == 4
    assert math.isfinite(metrics["train_loss"])
    assert env["precision"] == "bf16" and env["device_name"] == torch.cuda.get_device_name(0)
    assert env["cuda"] == torch.version.cuda and env["gpu_count"] >= 1
