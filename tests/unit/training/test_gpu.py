"""CUDA-only checks: bf16 training, TF32, pinned memory, the run environment on a GPU.

Run on a GPU machine with ``python -m pytest -m gpu`` (or ``bash scripts/gpu_check.sh``);
the default test run excludes the ``gpu`` marker, and without CUDA these tests skip."""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _args(tmp_path, **trainer):
    from omegaconf import OmegaConf

    from lowres.builders import training_arguments
    from lowres.schema import TrainerConfig

    cfg = OmegaConf.merge(OmegaConf.structured(TrainerConfig), trainer)
    return training_arguments(cfg, tmp_path, task_kind="classification", learning_rate=1e-3)


def test_tf32_follows_the_card_and_the_setting(tmp_path):
    from lowres.environment import tf32_enabled

    ampere = torch.cuda.get_device_capability()[0] >= 8
    on = _args(tmp_path, device="cuda")
    assert on.tf32 is (True if ampere else None)
    assert tf32_enabled() is ampere
    if ampere:
        off = _args(tmp_path, device="cuda", tf32=False)
        assert off.tf32 is False and not tf32_enabled()


def test_cuda_runs_pin_host_memory(tmp_path):
    assert _args(tmp_path, device="cuda").dataloader_pin_memory is True
    assert _args(tmp_path, device="cpu").dataloader_pin_memory is False


def test_bf16_on_a_card_without_it_is_a_config_error(tmp_path, monkeypatch):
    from lowres.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(ConfigError, match="trainer.precision=fp16"):
        _args(tmp_path, device="cuda", precision="bf16")
