"""Before/after of the me5-small speed changes, each pair interleaved in one process.

    python scripts/speed_ab.py --backbone me5-small --steps 5    # docs/benchmarks.md

* **optimizer**: full fine-tuning's forward and backward, then the same gradients stepped by
  torch's per-tensor AdamW (``foreach=False``, lowres's optimizer before) and by the fused
  AdamW ``LowresTrainer.create_optimizer`` builds now, each on its own copy of the model;
* **alignment pass**: ``prompt_align``'s contrastive loss on ``align.batch_size`` parallel
  pairs as two forward passes, one per side (before), and as the one joined pass of
  ``AlignmentObjective.loss`` (now), forward and backward, beside the task part of
  ``prompt_align`` and ``lora_all_linear`` on the same batch of windows.

fp32 and bf16 (autocast) in turn; medians over ``--steps`` after one warm-up step.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import statistics
import time
from pathlib import Path

import torch


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench", Path(__file__).with_name("bench.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _autocast(precision: str):
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="me5-small")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()
    bench = _bench_module()
    from lowres.losses.alignment import alignment_loss
    from lowres.recipes.preflight import quiet_libraries
    from lowres.training.trainer import PaddingCollator

    quiet_libraries()
    steps = args.steps + 1
    opts = {
        "backbone": args.backbone,
        "family": "encoder",
        "methods": [],
        "lora_targets": None,
        "device": "cpu",
        "precisions": ["fp32"],
        "batch": 8,
        "eval_batch": 32,
        "eval_batch_given": False,
        "lengths": [args.length],
        "paddings": ["longest"],
        "steps": args.steps,
        "warmup": 1,
        "eval_examples": 2,
        "eval_languages": ["en"],
        "align_languages": list(bench.XQUAD_TARGETS),
        "data_root": bench.default_data_root() if args.data_root is None else args.data_root,
    }
    full = bench.Method("full", opts)
    aligned = bench.Method("prompt_align", opts)
    lora = bench.Method("lora_all_linear", opts)
    full_twin = copy.deepcopy(full.model)
    looped = torch.optim.AdamW(
        full_twin.param_groups(lr=full.learning_rate, weight_decay=0.0),
        lr=full.learning_rate,
        foreach=False,
    )
    twins = list(zip(full.model.parameters(), full_twin.parameters(), strict=True))
    tasks = {
        p: bench._task(bench.compose_config(opts, "full", args.length, p))
        for p in ("longest", "max_length")
    }
    records = tasks["longest"].source_pool()[: 8 * steps * 8]
    collate = PaddingCollator(full.tokenizer)
    batches = bench._batches(tasks, records, full.tokenizer, opts, collate)["longest"]
    objective = aligned.alignment

    def two_passes(source, target):
        return alignment_loss(
            objective.kind,
            objective.represent(aligned.model, source).float(),
            objective.represent(aligned.model, target).float(),
            temperature=objective.temperature,
        )

    times: dict[tuple[str, str], list[float]] = {}
    for step in range(steps):
        batch = batches[step]
        source, target = aligned.align_batches[step]
        for precision in args.precisions.split(","):
            parts = {}
            started = time.perf_counter()
            full.model.train()
            with _autocast(precision):
                loss = full.model(**batch)["loss"]
            loss.backward()
            parts["full: forward and backward"] = time.perf_counter() - started
            for param, twin in twins:
                twin.grad = None if param.grad is None else param.grad.clone()
            started = time.perf_counter()
            looped.step()
            looped.zero_grad(set_to_none=True)
            parts["full: per-tensor AdamW step (before)"] = time.perf_counter() - started
            started = time.perf_counter()
            full.optimizer.step()
            full.optimizer.zero_grad(set_to_none=True)
            parts["full: fused AdamW step (now)"] = time.perf_counter() - started
            for name, method in (("lora_all_linear", lora), ("prompt_align", aligned)):
                method.model.train()
                started = time.perf_counter()
                with _autocast(precision):
                    loss = method.model(**batch)["loss"]
                loss.backward()
                parts[f"{name}: task forward and backward"] = time.perf_counter() - started
            for name, compute in (
                ("two passes (before)", two_passes),
                ("one joined pass (now)", lambda s, t: objective.loss(aligned.model, s, t)),
            ):
                started = time.perf_counter()
                with _autocast(precision):
                    loss = compute(source, target)
                (objective.weight * loss).backward()
                parts[f"prompt_align: alignment, {name}"] = time.perf_counter() - started
            for method in (lora, aligned):
                method.optimizer.zero_grad(set_to_none=True)
            if step:
                for name, seconds in parts.items():
                    times.setdefault((precision, name), []).append(seconds)
        print(f"step {step} done", flush=True)
    print("| precision | part | median (s) |\n|---|---|---:|")
    for (precision, name), seconds in times.items():
        print(f"| {precision} | {name} | {statistics.median(seconds):.3f} |")


if __name__ == "__main__":
    main()
