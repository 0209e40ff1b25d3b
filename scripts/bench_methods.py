"""Step time and peak memory of the training methods on one model and one batch.

    python scripts/bench_methods.py                      # MiniLM, 8 x 384, CPU
    python scripts/bench_methods.py --backbone tiny-bert --steps 5
    python scripts/bench_methods.py --device cuda --batch 32

Methods: full fine-tuning; our soft prompt with a frozen backbone (input-only and deep, with
the frozen backbone's dropout off as lowres runs it by default, and input-only with dropout
kept); PEFT's PromptTuning; LoRA (PEFT). A step is forward, backward and optimizer step on the same
batch. Step time: the median over ``--steps`` rounds after ``--warmup``, with the methods'
steps interleaved in one process so that drift in the machine's speed hits all alike. Peak
memory: each method in a fresh process, on the CPU the peak resident set minus the resident
set before its first step, on CUDA ``torch.cuda.max_memory_allocated`` above the model.
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

METHODS = (
    "full",
    "prompt_input",
    "prompt_deep",
    "prompt_input_dropout",
    "peft_prompt_tuning",
    "lora",
)


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
        records[: batch * 2],
        tokenizer,
        max_length=length,
        stride=min(128, length // 4),
        max_question_length=min(64, length // 4),
    )
    return {k: torch.tensor(v[:batch]) for k, v in features.items()}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _peft_prompt_tuning(model, length):
    from peft import PromptTuningConfig, get_peft_model

    config = PromptTuningConfig(task_type="QUESTION_ANS", num_virtual_tokens=length)
    return get_peft_model(model, config)


def build(method: str, opts: dict):
    """The model for ``method`` and a function doing one training step on the fixed batch."""
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
    settings = {
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
            **settings,
        )
    elif method in ("prompt_input", "prompt_deep", "prompt_input_dropout"):
        # prompt_input_dropout keeps dropout inside the frozen backbone, as PEFT does.
        layers = "all" if method == "prompt_deep" else "input"
        settings["backbone_dropout"] = True if method == "prompt_input_dropout" else None
        model = build_method(
            backbone.model,
            backbone.tokenizer,
            freeze="backbone",
            prompt_length=length,
            prompt_layers=layers,
            adapter="none",
            **settings,
        )
    elif method == "lora":
        settings["adapter_options"] = {
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
            **settings,
        )
    else:
        model = _peft_prompt_tuning(backbone.model, length)
    model.to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

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

    trainable, total = count_parameters(model)
    return step, {"trainable": trainable, "total": total}


def measure_memory(method: str, opts: dict, queue) -> None:
    """Peak memory of training steps, in a fresh process so no other method's peak counts."""
    import torch

    step, _ = build(method, opts)
    cuda = opts["device"] == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_mb()
    for _ in range(opts["warmup"] + 1):
        step()
    if cuda:
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    queue.put(peak)


def measure_time(methods: list[str], opts: dict) -> dict[str, dict]:
    """Median step time, steps of all methods interleaved so machine drift hits them alike."""
    built = {m: build(m, opts) for m in methods}
    times: dict[str, list[float]] = {m: [] for m in methods}
    for round_index in range(opts["warmup"] + opts["steps"]):
        for method in methods:
            started = time.perf_counter()
            built[method][0]()
            if round_index >= opts["warmup"]:
                times[method].append(time.perf_counter() - started)
    return {m: {"method": m, "step_s": statistics.median(times[m]), **built[m][1]} for m in methods}


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

    methods = args.methods.split(",")
    context = mp.get_context("spawn")
    peaks = {}
    for method in methods:
        queue = context.Queue()
        process = context.Process(target=measure_memory, args=(method, opts, queue))
        process.start()
        process.join()
        if process.exitcode != 0:
            sys.exit(f"{method}: the memory measurement failed (exit code {process.exitcode})")
        peaks[method] = queue.get()
    results = measure_time(methods, opts)
    for method in methods:
        results[method]["peak_mb"] = peaks[method]

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
