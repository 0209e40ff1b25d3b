"""Step time and peak memory of the training methods on one model and one batch.

    python scripts/bench_methods.py                      # MiniLM, 8 x 384, CPU
    python scripts/bench_methods.py --backbone tiny-bert --steps 5
    python scripts/bench_methods.py --device cuda --batch 32

Methods: full fine-tuning; our soft prompt with a frozen backbone (input-only and deep);
PEFT's PromptTuning; LoRA (PEFT). Each runs in its own process so its peak memory is its
own: on the CPU the peak resident set during the steps minus the resident set before the
first step, on CUDA ``torch.cuda.max_memory_allocated``. A step is forward, backward,
optimizer step; the time is the median over ``--steps`` steps after ``--warmup``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

METHODS = ("full", "prompt_input", "prompt_deep", "peft_prompt_tuning", "lora")


def _backbone_options(name: str) -> dict:
    from omegaconf import OmegaConf

    from lowres.cli import config_dir

    path = config_dir() / "backbone" / f"{name}.yaml"
    if not path.is_file():
        sys.exit(f"unknown backbone {name!r}; see configs/backbone/")
    cfg = OmegaConf.load(path)
    return {
        "name": cfg.name,
        "loader": cfg.loader,
        "path": cfg.get("path", ""),
        "architecture": cfg.get("architecture", ""),
    }


def _batch(tokenizer, batch: int, length: int):
    import torch

    from lowres.backbones import SAMPLE_ROOT
    from lowres.data.squad_format import read_squad_json
    from lowres.tasks.qa import train_features

    records = read_squad_json(SAMPLE_ROOT / "squad" / "dev-v1.1.json")
    features = train_features(
        records[: batch * 2], tokenizer, max_length=length, stride=128, max_question_length=64
    )
    return {k: torch.tensor(v[:batch]) for k, v in features.items()}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _peft_prompt_tuning(model, length):
    from peft import PromptTuningConfig, get_peft_model

    config = PromptTuningConfig(task_type="QUESTION_ANS", num_virtual_tokens=length)
    return get_peft_model(model, config)


def run_method(method: str, opts: dict, queue) -> None:
    import torch
    import transformers
    from torch.nn import functional as F

    from lowres.backbones import load_backbone
    from lowres.methods.build import build_method
    from lowres.methods.freezing import count_parameters

    transformers.utils.logging.set_verbosity_error()
    torch.manual_seed(0)
    backbone = load_backbone(
        task_kind="extractive_qa", num_labels=2, seed=0, **_backbone_options(opts["backbone"])
    )
    device = torch.device(opts["device"])
    batch = {
        k: v.to(device)
        for k, v in _batch(backbone.tokenizer, opts["batch"], opts["length"]).items()
    }
    length = opts["prompt_length"]
    build = {
        "task_kind": "extractive_qa",
        "family": "encoder",
        "freeze_k": 0,
        "prompt_init": "vocab",
        "prompt_init_text": "",
        "adapter_options": {},
        "seed": 0,
    }
    if method == "full":
        model = build_method(
            backbone.model,
            backbone.tokenizer,
            freeze="none",
            prompt_length=0,
            prompt_layers="input",
            adapter="none",
            **build,
        )
    elif method in ("prompt_input", "prompt_deep"):
        layers = "input" if method == "prompt_input" else "all"
        model = build_method(
            backbone.model,
            backbone.tokenizer,
            freeze="backbone",
            prompt_length=length,
            prompt_layers=layers,
            adapter="none",
            **build,
        )
    elif method == "lora":
        build["adapter_options"] = {
            "r": 8,
            "alpha": 16,
            "dropout": 0.1,
            "target_modules": ["query", "value"],
        }
        model = build_method(
            backbone.model,
            backbone.tokenizer,
            freeze="backbone",
            prompt_length=0,
            prompt_layers="input",
            adapter="lora",
            **build,
        )
    else:
        model = _peft_prompt_tuning(backbone.model, length)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    trainable, total = count_parameters(model)

    def step():
        if method == "peft_prompt_tuning":
            out = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                token_type_ids=batch.get("token_type_ids"),
            )
            # PEFT prepends the prompt and returns L + n logits; drop the prompt positions.
            start, end = out.start_logits[:, length:], out.end_logits[:, length:]
            loss = (
                F.cross_entropy(start, batch["start_positions"])
                + F.cross_entropy(end, batch["end_positions"])
            ) / 2
        else:
            loss = model(**batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base_rss = _rss_mb()
    base_cuda = torch.cuda.memory_allocated() if device.type == "cuda" else 0
    times = []
    for i in range(opts["warmup"] + opts["steps"]):
        started = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= opts["warmup"]:
            times.append(time.perf_counter() - started)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base_cuda) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base_rss
    queue.put(
        {
            "method": method,
            "step_s": statistics.median(times),
            "peak_mb": peak,
            "trainable": trainable,
            "total": total,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=384)
    parser.add_argument("--prompt-length", type=int, default=20)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    opts = {
        "backbone": args.backbone,
        "device": args.device,
        "batch": args.batch,
        "length": args.length,
        "prompt_length": args.prompt_length,
        "steps": args.steps,
        "warmup": args.warmup,
    }

    import torch

    context = mp.get_context("spawn")
    results = {}
    for method in args.methods.split(","):
        queue = context.Queue()
        process = context.Process(target=run_method, args=(method, opts, queue))
        process.start()
        results[method] = queue.get()
        process.join()

    full = results.get("full")
    device = (
        torch.cuda.get_device_name()
        if args.device == "cuda"
        else (
            f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
        )
    )
    print(
        f"backbone {args.backbone}, batch {args.batch} x {args.length}, prompt "
        f"{args.prompt_length}, {device}, torch {torch.__version__}, median of {args.steps} "
        "steps"
    )
    print("| method | trainable | step (s) | vs full | peak memory (MB) | vs full |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results.values():
        time_ratio = r["step_s"] / full["step_s"] if full else float("nan")
        mem_ratio = r["peak_mb"] / full["peak_mb"] if full else float("nan")
        print(
            f"| {r['method']} | {r['trainable']:,} | {r['step_s']:.3f} | {time_ratio:.2f} | "
            f"{r['peak_mb']:.0f} | {mem_ratio:.2f} |"
        )
    ours, peft = results.get("prompt_input"), results.get("peft_prompt_tuning")
    if full and ours and peft:
        checks = {
            "prompt step <= 0.70 x full": ours["step_s"] <= 0.70 * full["step_s"],
            "prompt step <= 1.0 x PEFT PromptTuning": ours["step_s"] <= peft["step_s"],
            "prompt peak memory <= 0.75 x full": ours["peak_mb"] <= 0.75 * full["peak_mb"],
        }
        for name, ok in checks.items():
            print(f"{'PASS' if ok else 'FAIL'}: {name}")
    if args.json:
        args.json.write_text(
            json.dumps({"options": opts, "device": device, "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
