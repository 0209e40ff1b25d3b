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

Decoder backbones (``family: decoder`` in configs/backbone/, e.g. ``--backbone tiny-llama`` or
``qwen2.5-0.5b``) train as ``lowres train`` trains them: the batch is XQuAD questions rendered
as prompts of at most ``--length`` tokens followed by the answer and EOS, left-padded, with the
loss on the answer only; PEFT's PromptTuning runs as a causal-LM prompt over the same labels.
LoRA targets the family's attention projections (decoders: q_proj, v_proj; ``--lora-targets``
overrides). ``prompt_input_dropout`` is not run on decoders: Llama and Qwen2.5 have no
dropout, so it would be ``prompt_input`` again.
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
# Methods whose comparison needs dropout inside the backbone, which the decoders lack.
NEEDS_DROPOUT = ("prompt_input_dropout",)


def _backbone_options(name: str) -> dict:
    from omegaconf import OmegaConf

    from lowres.schema import BackboneConfig, config_dir

    path = config_dir() / "backbone" / f"{name}.yaml"
    if not path.is_file():
        sys.exit(f"unknown backbone {name!r}; see configs/backbone/")
    cfg = OmegaConf.load(path)
    return {
        "name": cfg.name,
        "loader": cfg.loader,
        "path": cfg.get("path", ""),
        "architecture": cfg.get("architecture", ""),
        "family": cfg.get("family", "encoder"),
        "dtype": cfg.get("dtype", "float32"),
        "gradient_checkpointing": cfg.get("gradient_checkpointing", False),
        "lora_targets": list(cfg.get("lora_targets", BackboneConfig().lora_targets)),
    }


def _decoder_batch(backbone: str, tokenizer, batch: int, length: int):
    """``batch`` prompt + answer rows as ``lowres train`` builds them for a decoder."""
    import torch
    from hydra import compose, initialize_config_dir

    from lowres.builders import build_task
    from lowres.schema import config_dir, register_schemas

    register_schemas()
    overrides = [
        "+task=xquad",
        f"backbone={backbone}",
        f"task.max_length={length}",
        f"task.max_question_length={min(64, length // 4)}",
        "task.padding=max_length",  # the comparison is at a fixed batch x length
        "data.cache_dir=",
    ]
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    task = build_task(cfg.task, cfg.data, cfg.trainer, cfg.backbone)
    # Questions whose answer falls outside a cut context are skipped, so read a few extra.
    features = task.train_features(task.source_pool()[: batch * 4], tokenizer)
    rows = {k: torch.tensor(v[:batch]) for k, v in features.items()}
    if len(rows["input_ids"]) < batch:
        sys.exit(f"only {len(rows['input_ids'])} questions fit --length {length}; raise it")
    # Left padding over the whole set: drop the columns that are padding in every kept row.
    first = int(rows["attention_mask"].any(dim=0).nonzero()[0])
    return {k: v[:, first:] for k, v in rows.items()}


def _batch(tokenizer, batch: int, length: int):
    import torch

    from lowres.data.roots import SAMPLE_ROOT
    from lowres.data.squad_format import read_squad_json
    from lowres.tasks.qa import train_features

    records = read_squad_json(SAMPLE_ROOT / "squad" / "dev-v1.1.json")
    features = train_features(
        records[: batch * 2],
        tokenizer,
        max_length=length,
        stride=min(128, length // 4),
        max_question_length=min(64, length // 4),
        padding="max_length",  # the comparison is at a fixed batch x length
    )
    return {k: torch.tensor(v[:batch]) for k, v in features.items()}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _peft_prompt_tuning(model, length, family):
    from peft import PromptTuningConfig, get_peft_model

    task_type = "CAUSAL_LM" if family == "decoder" else "QUESTION_ANS"
    config = PromptTuningConfig(task_type=task_type, num_virtual_tokens=length)
    return get_peft_model(model, config)


def build(method: str, opts: dict):
    """The model for ``method`` and a function doing one training step on the fixed batch."""
    import torch
    import transformers
    from torch.nn import functional as F

    from lowres.backbones import load_backbone
    from lowres.methods.build import build_method
    from lowres.methods.freezing import count_parameters
    from lowres.schema import AdapterConfig, FreezeConfig, PromptConfig

    transformers.utils.logging.set_verbosity_error()
    torch.manual_seed(0)
    options = _backbone_options(opts["backbone"])
    family = options["family"]
    lora_targets = options.pop("lora_targets")
    backbone = load_backbone(task_kind="extractive_qa", num_labels=2, seed=0, **options)
    device = torch.device(opts["device"])
    make_batch = (
        (lambda tok, b, n: _decoder_batch(opts["backbone"], tok, b, n))
        if family == "decoder"
        else _batch
    )
    batch = {
        k: v.to(device)
        for k, v in make_batch(backbone.tokenizer, opts["batch"], opts["length"]).items()
    }
    length = opts["prompt_length"]
    # One config object per part of the method, as lowres train builds them.
    targets = opts.get("lora_targets") or lora_targets
    parts = {
        "full": (FreezeConfig(strategy="none"), PromptConfig(length=0), AdapterConfig()),
        "prompt_input": (FreezeConfig(), PromptConfig(length=length), AdapterConfig()),
        "prompt_deep": (FreezeConfig(), PromptConfig(length=length, layers="all"), AdapterConfig()),
        # dropout kept inside the frozen backbone, as PEFT does
        "prompt_input_dropout": (
            FreezeConfig(dropout=True),
            PromptConfig(length=length),
            AdapterConfig(),
        ),
        "lora": (
            FreezeConfig(),
            PromptConfig(length=0),
            AdapterConfig(kind="lora", r=8, alpha=16, dropout=0.1, target_modules=targets),
        ),
    }
    if method in parts:
        freeze, prompt, adapter = parts[method]
        model = build_method(
            backbone.model,
            backbone.tokenizer,
            task_kind="extractive_qa",
            family=family,
            freeze=freeze,
            prompt=prompt,
            adapter=adapter,
            seed=0,
        )
    else:
        model = _peft_prompt_tuning(backbone.model, length, family)
    model.to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        if method == "peft_prompt_tuning" and family == "decoder":
            # PEFT prepends the virtual tokens and pads labels and mask for them itself.
            loss = model(**batch).loss
        elif method == "peft_prompt_tuning":
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
    return step, {
        "trainable": trainable,
        "total": total,
        "family": family,
        "batch_shape": list(batch["input_ids"].shape),
    }


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
    parser.add_argument(
        "--methods",
        help=f"comma-separated, from {', '.join(METHODS)} (default: all; decoders: all but "
        f"{', '.join(NEEDS_DROPOUT)})",
    )
    parser.add_argument(
        "--lora-targets",
        help="LoRA target modules, comma-separated (default: query,value; decoders: q_proj,v_proj)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    family = _backbone_options(args.backbone)["family"]
    if args.methods:
        methods = args.methods.split(",")
    else:
        methods = [m for m in METHODS if family != "decoder" or m not in NEEDS_DROPOUT]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        sys.exit(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    pointless = [m for m in methods if family == "decoder" and m in NEEDS_DROPOUT]
    if pointless:
        sys.exit(
            f"{', '.join(pointless)} keeps dropout inside the frozen backbone, and decoder "
            f"{args.backbone} (Llama/Qwen2.5 layers) has none, so it would time prompt_input "
            "again; leave it out of --methods."
        )
    opts = {
        "backbone": args.backbone,
        "device": args.device,
        "batch": args.batch,
        "length": args.length,
        "prompt_length": args.prompt_length,
        "steps": args.steps,
        "warmup": args.warmup,
        "lora_targets": args.lora_targets.split(",") if args.lora_targets else None,
    }

    import torch

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
    shape = next(iter(results.values()))["batch_shape"]
    data = (
        f"batch {args.batch} questions as prompt + answer rows of {shape[1]} columns (prompt "
        f"at most {args.length} tokens, loss on the answer)"
        if family == "decoder"
        else f"batch {args.batch} x {args.length}"
    )
    print(
        f"backbone {args.backbone}, {data}, prompt "
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
        if family == "decoder":
            print(f"targets set for MiniLM (README), shown for decoder {args.backbone}:")
        for name, ok in checks.items():
            print(f"{'PASS' if ok else 'FAIL'}: {name}")
    if args.json:
        args.json.write_text(
            json.dumps({"options": opts, "device": device, "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
