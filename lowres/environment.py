"""What a run ran on: machine, device, precision and library versions.

Written to ``environment.json`` in every run folder and into the benchmark tables, so
that a number can always be traced to the hardware and software that produced it.
"""

from __future__ import annotations

import functools
import os
import platform
from importlib import metadata
from typing import Any

import torch

from lowres.distributed import world_size

PACKAGES = (
    "lowres",
    "torch",
    "transformers",
    "accelerate",
    "peft",
    "datasets",
    "tokenizers",
    "hydra-core",
)


# Fixed for the life of a process; a sweep asks once per run.
@functools.cache
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def cpu_bf16_flags() -> tuple[str, ...]:
    """The CPU's native bf16 matrix features (avx512_bf16, amx_bf16); empty if it has none.

    Without them torch still runs bf16 on the CPU, but by conversion, slower than fp32.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return tuple(f for f in ("avx512_bf16", "amx_bf16") if f in flags)
    except OSError:
        pass
    return ()


@functools.cache
def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def tf32_enabled() -> bool:
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9; the legacy flag warns there
        return matmul.fp32_precision == "tf32" or (
            matmul.fp32_precision == "none" and torch.backends.fp32_precision == "tf32"
        )
    return bool(matmul.allow_tf32)


def device_name(device: Any) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def environment(device: Any, precision: str, weights_dtype: str = "float32") -> dict[str, Any]:
    on_cuda = torch.device(device).type == "cuda"
    return {
        "device": str(device),
        "device_name": device_name(device),
        "precision": precision,  # autocast dtype of training and evaluation
        "weights_dtype": weights_dtype,
        "tf32_matmul": tf32_enabled() if on_cuda else False,
        "world_size": world_size(),
        "cuda": torch.version.cuda if on_cuda else None,
        "gpu_count": torch.cuda.device_count() if on_cuda else 0,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": dict(versions()),
    }


def device_problem(device: str, precision: str) -> tuple[str, str] | None:
    """Why this machine cannot run ``trainer.device`` at ``trainer.precision`` (``auto``
    resolved as a run would) and what a run should do instead, or None. The one place that
    decides it: a run's training arguments and a study's check before its first step."""
    if device == "cuda" and not torch.cuda.is_available():
        return (
            "trainer.device=cuda but no CUDA device is visible",
            "use trainer.device=auto (falls back to the CPU) or trainer.device=cpu",
        )
    on_gpu = runs_on_gpu(device)
    precision = resolved_precision(precision, on_gpu)
    if precision == "fp16" and not on_gpu:
        return (
            "trainer.precision=fp16 needs a CUDA device, and this run is on the CPU",
            "use trainer.precision=fp32, or bf16 on a CPU with native bf16 (avx512_bf16 or AMX)",
        )
    if precision == "bf16" and not on_gpu and not cpu_bf16_flags():
        return (
            f"trainer.precision=bf16 on the CPU needs native bf16 matrix instructions, and "
            f"this CPU ({cpu_name()}) reports neither avx512_bf16 nor amx_bf16 in "
            "/proc/cpuinfo, so bf16 would be emulated and slower than fp32",
            "use trainer.precision=fp32 here, or run on a GPU",
        )
    if precision == "bf16" and on_gpu and not torch.cuda.is_bf16_supported():
        return (
            "trainer.precision=bf16 but this GPU has no bf16 support",
            "use trainer.precision=fp16",
        )
    return None


def runs_on_gpu(device: str) -> bool:
    """Whether a run with ``trainer.device`` trains on the GPU (auto: where one is visible)."""
    return device != "cpu" and torch.cuda.is_available()


def resolved_precision(precision: str, on_gpu: bool) -> str:
    """``auto``: bf16 where the device computes it natively (a bf16 GPU, a CPU with
    avx512_bf16 or AMX), else fp32. bf16 matched fp32 within 0.2 F1 on the one-epoch MiniLM
    XQuAD run at half the time (docs/speed.md); other values are kept as given."""
    if precision != "auto":
        return precision
    native = torch.cuda.is_bf16_supported() if on_gpu else bool(cpu_bf16_flags())
    return "bf16" if native else "fp32"
