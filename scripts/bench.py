"""Training and evaluation throughput per method, padded and unpadded, against the machine's limit.

    python scripts/bench.py --data-root ../shared/data     # minilm, CPU -> docs/benchmarks.md
    python scripts/bench.py --backbone tiny-bert --steps 2 --lengths 64 --out /tmp/bench.md
    python scripts/bench.py --backbone minilm --device cuda --precisions bf16

The backbone is any config name in configs/backbone/; the model is built by
``lowres.builders.build_model`` exactly as ``lowres train`` builds it, and every step is
the Trainer's: lowres's loss (``LowresTrainer.compute_loss``), the model's optimizer groups
(``create_optimizer``), the collator that pads each batch, autocast for bf16. Each method
runs in a fresh process, so its peak memory is its own. Inside that process:

* **the limit**: sustained matrix-product throughput (a square matmul repeated for about a
  second) in fp32 and, where the CPU (avx512_bf16/AMX) or GPU has it, bf16, with the threads
  the steps use;
* **training**: real source-pool windows (SQuAD v1.1 minus XQuAD under ``--data-root``, else
  the shipped sample), in the length-grouped batches ``lowres train`` forms, spread over the
  epoch. Every combination of ``--lengths`` x padding (``longest``: each batch to its own
  longest row; ``max_length``: every row to the window length, as before dynamic padding) x
  ``--precisions`` trains on the same windows, one step of each in turn (interleaved), so a
  busy machine slows them alike and their ratios stay fair;
* **evaluation**: ``trainer.predict`` on ``--eval-examples`` English XQuAD questions'
  windows, sorted by length as ``lowres train`` evaluates them, padded and unpadded;
* **FLOPs** (:mod:`lowres.methods.flops`): model FLOPs per real token (forward 2N, training
  6N for full fine-tuning and 4N for a frozen backbone under a prompt, plus attention over
  real positions), and the achieved share of the measured matmul peak;
* decoder backbones (``family: decoder``, e.g. tiny-llama) train on prompt + answer rows and
  evaluate by batched greedy generation (examples are questions there);
* peak memory: host = peak resident set of the process; device = CUDA's max allocated.

``--out`` gets (or has replaced) one section per backbone x device, so CPU and GPU results
live side by side in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import random
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

METHODS = {
    "full": ("full fine-tuning", ["freeze=none", "prompt=none"]),
    "prompt_input": ("soft prompt (input)", ["freeze=backbone", "prompt=input"]),
    "prompt_deep": ("deep prompt (all layers)", ["freeze=backbone", "prompt=deep"]),
    "lora": ("LoRA (r=8)", ["freeze=backbone", "prompt=none", "adapter=lora"]),
}
PADDINGS = ("longest", "max_length")


def backbone_config(name: str):
    from omegaconf import OmegaConf

    from lowres.schema import config_dir

    return OmegaConf.load(config_dir() / "backbone" / f"{name}.yaml")


def backbone_family(name: str) -> str:
    return backbone_config(name).get("family", "encoder")


def method_label(method: str, opts: dict) -> str:
    label = METHODS[method][0]
    if method == "lora" and opts.get("lora_targets"):
        label = f"{label[:-1]}, {'+'.join(opts['lora_targets'])})"
    return label


def compose_config(opts: dict, method: str, length: int, padding: str):
    from hydra import compose, initialize_config_dir

    from lowres.schema import config_dir, register_schemas

    register_schemas()
    data = ["data=local", f"data.root={opts['data_root']}"] if opts["data_root"] else []
    overrides = [
        "+task=xquad",
        f"backbone={opts['backbone']}",
        *METHODS[method][1],
        *data,
        f"trainer.device={opts['device']}",
        f"trainer.batch_size={opts['batch']}",
        f"trainer.eval_batch_size={opts['eval_batch']}",
        "trainer.progress=false",
        f"task.max_length={length}",
        f"task.padding={padding}",
        f"task.stride={min(128, length // 4)}",
        f"task.max_question_length={min(64, length // 4)}",
        "data.cache_dir=",
        "data.eval_languages=[en]",
        f"data.max_eval_examples={opts['eval_examples']}",
    ]
    if method == "lora" and opts.get("lora_targets"):
        overrides.append(f"adapter.target_modules=[{','.join(opts['lora_targets'])}]")
    if opts.get("family") == "decoder" and opts.get("eval_batch_given"):
        overrides.append(f"backbone.generation_batch_size={opts['eval_batch']}")
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("train", overrides=overrides)


def _result_or_exit(method: str, process, queue):
    """The child's result; a child killed before answering (OOM killer, a CUDA abort)
    would otherwise leave this process waiting on the queue forever."""
    import queue as queues

    while True:
        try:
            return queue.get(timeout=5)
        except queues.Empty:
            if not process.is_alive():
                sys.exit(f"{method}: the benchmark process died (exit code {process.exitcode}).")


def measure(method: str, opts: dict, queue) -> None:
    """One method in this (fresh) process; puts a result dict or an error string."""
    try:
        queue.put(_measure(method, opts))
    except Exception as err:  # reported by the parent with the method's name
        queue.put(f"{type(err).__name__}: {err}")


def matmul_peak(device, dtype_name: str, seconds: float = 1.0) -> float:
    """Sustained FLOP/s of a square matrix product in ``dtype_name``, as the steps run it."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    size = 8192 if device.type == "cuda" else 2048
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    (a @ b).sum().item()  # warm-up: kernels chosen, caches filled
    count, started = 0, time.perf_counter()
    while True:
        a @ b
        count += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return 2 * size**3 * count / elapsed


def precisions_available(device, requested: list[str]) -> list[str]:
    """The requested precisions this device runs natively (bf16 needs avx512_bf16/AMX on CPUs)."""
    import torch

    from lowres.environment import cpu_bf16_flags

    usable = []
    for name in requested:
        if name == "bf16" and device.type == "cpu" and not cpu_bf16_flags():
            continue
        if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            continue
        if name == "fp16" and device.type == "cpu":
            continue
        usable.append(name)
    return usable


def _batches(tasks: dict, records, tokenizer, opts: dict, collate) -> dict[str, list]:
    """The same windows in the same length-grouped batches, unpadded and padded.

    Batches are a seeded sample of the epoch's, so their lengths are representative and not
    only the longest ones the sampler puts first.
    """
    from lowres.training.trainer import EpochSeededLengthGroupedSampler

    features = {p: tasks[p].train_features(records, tokenizer) for p in PADDINGS}
    lengths = [len(ids) for ids in features["longest"]["input_ids"]]
    order = list(EpochSeededLengthGroupedSampler(opts["batch"], lengths=lengths, seed=1))
    groups = [order[i : i + opts["batch"]] for i in range(0, len(order), opts["batch"])]
    groups = [g for g in groups if len(g) == opts["batch"]]
    wanted = opts["warmup"] + opts["steps"]
    if len(groups) < wanted:
        raise ValueError(f"only {len(groups)} full batches of windows; lower --steps")
    # A seeded sample of the epoch's batches: evenly spaced picks would line up with the
    # sampler's mega-batches, whose first batch is always their longest.
    groups = [groups[i] for i in sorted(random.Random(0).sample(range(len(groups)), wanted))]
    return {
        padding: [collate([{k: rows[k][i] for k in rows} for i in group]) for group in groups]
        for padding, rows in features.items()
    }


def _task(cfg):
    from lowres.builders import build_task

    return build_task(cfg.task, cfg.data, cfg.trainer, cfg.backbone)


def _measure(method: str, opts: dict) -> dict:
    import torch

    from lowres.builders import build_model, build_trainer, training_arguments
    from lowres.methods.build import parameter_report
    from lowres.methods.flops import step_flops
    from lowres.recipes.train import quiet_libraries
    from lowres.schema import resolved_lr, validate
    from lowres.training.progress import RichProgress
    from lowres.training.trainer import PaddingCollator

    quiet_libraries()
    longest_window = max(opts["lengths"])
    cfg = compose_config(opts, method, longest_window, "longest")
    validate(cfg)
    model, tokenizer = build_model(
        cfg.backbone, cfg.freeze, cfg.prompt, cfg.adapter, task=cfg.task, seed=cfg.trainer.seed
    )
    report = parameter_report(model)
    args = training_arguments(
        cfg.trainer,
        Path(tempfile.mkdtemp(prefix="lowres-bench-")),
        task_kind=cfg.task.kind,
        learning_rate=resolved_lr(cfg.trainer.lr, cfg.freeze.strategy),
    )
    device = args.device
    cuda = device.type == "cuda"
    progress = RichProgress(bars=False)
    trainer = build_trainer(model, tokenizer, args, progress=progress, prompt_lr=cfg.prompt.lr)
    model.to(device)
    optimizer = trainer.create_optimizer()
    collate = PaddingCollator(tokenizer, 8 if cuda else None)
    decoder = cfg.backbone.family == "decoder"
    precisions = precisions_available(device, opts["precisions"])
    peaks = {name: matmul_peak(device, name) for name in precisions}

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def autocast(precision: str):
        if precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device.type, dtype=dtype)

    def train_step(batch: dict, precision: str) -> float:
        batch = {k: v.to(device) for k, v in batch.items()}
        sync()
        started = time.perf_counter()
        model.train()
        with autocast(precision):
            loss = trainer.compute_loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        return time.perf_counter() - started

    variants = []  # (length, padding, precision, batches)
    tasks = {}  # length -> padding -> task
    for length in opts["lengths"]:
        tasks[length] = {p: _task(compose_config(opts, method, length, p)) for p in PADDINGS}
        pool = tasks[length]["longest"].source_pool()
        records = pool[: opts["batch"] * (opts["warmup"] + opts["steps"]) * 8]
        batches = _batches(tasks[length], records, tokenizer, opts, collate)
        for padding in PADDINGS:
            for precision in precisions:
                variants.append((length, padding, precision, batches[padding]))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times: list[list[float]] = [[] for _ in variants]
    for step in range(opts["warmup"] + opts["steps"]):
        for index, (_, _, precision, batches) in enumerate(variants):
            seconds = train_step(batches[step], precision)
            if step >= opts["warmup"]:
                times[index].append(seconds)
    rows = []
    for (length, padding, precision, batches), seconds in zip(variants, times, strict=True):
        timed = batches[opts["warmup"] :]
        real = [int(n) for b in timed for n in b["attention_mask"].sum(dim=1).tolist()]
        computed = sum(b["attention_mask"].numel() for b in timed)
        flops = step_flops(model, real, causal=decoder)
        step_s = statistics.median(seconds)
        total_s = sum(seconds)
        rows.append(
            {
                "length": length,
                "padding": padding,
                "precision": precision,
                "step_s": step_s,
                "real_tokens_per_s": sum(real) / total_s,
                "padding_share": 1 - sum(real) / computed,
                "flops_per_real_token": flops.train / sum(real),
                "achieved_flops": flops.train / total_s,
                "peak_share": flops.train / total_s / peaks[precision],
            }
        )
    by_key = {(r["length"], r["padding"], r["precision"]): r for r in rows}
    for r in rows:
        padded = by_key[(r["length"], "max_length", r["precision"])]
        r["speedup_vs_padded"] = padded["step_s"] / r["step_s"]
    evaluation = _evaluate(trainer, tasks[opts["lengths"][0]], tokenizer, opts, decoder, sync)
    primary = by_key[(opts["lengths"][0], "longest", precisions[0])]
    return {
        "method": method,
        "trainable": report["trainable_parameters"],
        "total": report["total_parameters"],
        "family": "decoder" if decoder else "encoder",
        "step_s": primary["step_s"],
        "train_examples_per_s": opts["batch"] / primary["step_s"],
        "train_tokens_per_s": primary["real_tokens_per_s"],
        "variants": rows,
        "peak_flops": peaks,
        **evaluation,
        "host_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "tf32": args.tf32,
    }


def _evaluate(trainer, tasks: dict, tokenizer, opts: dict, decoder: bool, sync) -> dict:
    """Evaluation examples/s: unpadded and padded windows (encoders), generation (decoders)."""
    task = tasks["longest"]
    records = task.evaluation_records("en")
    if decoder:
        trainer.model.eval()
        task.predict(trainer, records[: task.batch_size], tokenizer)  # warm-up
        sync()
        started = time.perf_counter()
        predicted = task.predict(trainer, records, tokenizer)
        sync()
        seconds = time.perf_counter() - started
        return {
            "eval_examples": len(records),
            "eval_examples_per_s": len(records) / seconds,
            "eval_batch": task.batch_size,
            "max_new_tokens": task.max_answer_length,
            "nonempty_answers": sum(bool(a) for a in predicted.values()),
        }
    windows = len(task.eval_features(records, tokenizer)[1])
    task.model_outputs(trainer, records[:2], tokenizer)  # warm-up
    rates = {}
    for padding in PADDINGS:
        sync()
        started = time.perf_counter()
        tasks[padding].model_outputs(trainer, records, tokenizer)
        sync()
        rates[padding] = windows / (time.perf_counter() - started)
    return {
        "eval_examples": windows,
        "eval_examples_per_s": rates["longest"],
        "eval_examples_per_s_padded": rates["max_length"],
        "eval_batch": opts["eval_batch"],
        "max_new_tokens": None,
    }


def environment_line(device: str, dtype: str) -> dict:
    import torch

    from lowres.environment import cpu_name, environment

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    env = environment(device, dtype)
    env["cpu"] = cpu_name()
    return env


def markdown(opts: dict, env: dict, results: list[dict], command: str, marker: str) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    on_gpu = env["device"].startswith("cuda")
    first = results[0]
    peaks = ", ".join(
        f"{name} {statistics.median(r['peak_flops'][name] for r in results) / 1e9:,.0f} GFLOP/s"
        for name in first["peak_flops"]
    )
    lines = [
        f"<!-- bench: {marker} -->",
        f"### {opts['backbone']} · {env['device_name']} · {' and '.join(first['peak_flops'])}",
        "",
        "```bash",
        command,
        "```",
        "",
        f"- Machine: {env['machine']}, {env['cpu']}, {env['cpu_count']} cores, "
        f"{first['torch_threads']} torch threads, {env['platform']}, Python {env['python']}",
        f"- Device: {env['device_name']} ({env['device']}), "
        f"TF32 matmul {'on' if first['tf32'] else 'off'}",
        f"- Libraries: {versions}",
        f"- Matmul peak measured in the same processes (median over methods): {peaks}",
        workload(opts, first),
        "",
        "| method | trainable params | step (s) | real train tokens/s | eval examples/s "
        "| eval examples/s, padded | host peak (MB) | device peak (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        device_peak = f"{r['device_peak_mb']:.0f}" if on_gpu else "n/a"
        padded_eval = r.get("eval_examples_per_s_padded")
        lines.append(
            f"| {method_label(r['method'], opts)} | {r['trainable']:,} | {r['step_s']:.3f} | "
            f"{r['train_tokens_per_s']:.0f} | {r['eval_examples_per_s']:.2f} | "
            f"{f'{padded_eval:.2f}' if padded_eval else 'n/a'} | {r['host_peak_mb']:.0f} | "
            f"{device_peak} |"
        )
    lines += [
        "",
        "| method | length | padding | precision | step (s) | vs padded | real tokens/s "
        "| padding share | GFLOP / real token | achieved GFLOP/s | share of matmul peak |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for v in r["variants"]:
            lines.append(
                f"| {method_label(r['method'], opts)} | {v['length']} | {v['padding']} | "
                f"{v['precision']} | {v['step_s']:.3f} | {v['speedup_vs_padded']:.2f}x | "
                f"{v['real_tokens_per_s']:.0f} | {100 * v['padding_share']:.0f} % | "
                f"{v['flops_per_real_token'] / 1e9:.4g} | {v['achieved_flops'] / 1e9:.1f} | "
                f"{100 * v['peak_share']:.0f} % |"
            )
    lines.append(f"<!-- /bench: {marker} -->")
    return "\n".join(lines) + "\n"


def workload(opts: dict, first: dict) -> str:
    timing = (
        f"median of {opts['steps']} interleaved steps per variant after {opts['warmup']} "
        "warm-up steps"
    )
    source = (
        f"SQuAD v1.1 dev minus XQuAD from {opts['data_root']}"
        if opts["data_root"]
        else "the shipped SQuAD sample"
    )
    lengths = ", ".join(map(str, opts["lengths"]))
    n = first["eval_examples"]
    if first["family"] == "decoder":
        return (
            f"- Workload: {source} as decoder prompts of at most {lengths} tokens followed by "
            f"the answer and EOS (loss on the answer only), batch {opts['batch']}, {timing}; "
            f"evaluation: batched greedy generation (KV cache, at most "
            f"{first['max_new_tokens']} new tokens) on {n} English questions, generation batch "
            f"{first['eval_batch']}"
        )
    return (
        f"- Workload: {source}, windows of {lengths} tokens in length-grouped batches of "
        f"{opts['batch']} spread over the epoch, {timing}; evaluation on {n} English XQuAD "
        f"windows (first length), eval batch {opts['eval_batch']}"
    )


def write_section(path: Path, section: str, marker: str) -> None:
    """Replace this configuration's section in ``path``, or append it."""
    text = path.read_text("utf-8") if path.is_file() else "# Benchmarks\n\n"
    pattern = re.compile(
        rf"<!-- bench: {re.escape(marker)} -->.*?<!-- /bench: {re.escape(marker)} -->\n",
        re.S,
    )
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")


def default_data_root() -> str:
    """``LOWRES_DATA`` or ../shared/data when it holds SQuAD; "" for the shipped sample."""
    root = Path(os.environ.get("LOWRES_DATA", Path(__file__).resolve().parents[2] / "shared/data"))
    return str(root) if (root / "squad" / "dev-v1.1.json").is_file() else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="minilm", help="a name from configs/backbone/")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--precisions",
        default="fp32,bf16",
        help="comma-separated; those the device lacks natively are left out (bf16 on a CPU "
        "without avx512_bf16/AMX, fp16 on a CPU)",
    )
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--eval-batch",
        type=int,
        help="evaluation batch (default: 32; decoders: the backbone's generation_batch_size)",
    )
    parser.add_argument("--lengths", default="384,256", help="window lengths, comma-separated")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--eval-examples", type=int, default=48, help="English questions")
    parser.add_argument(
        "--data-root",
        default=default_data_root(),
        help="folder with squad/ and xquad/ (default: LOWRES_DATA or ../shared/data if there; "
        "'' uses the shipped sample)",
    )
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument(
        "--lora-targets",
        help="LoRA target modules, comma-separated (default: adapter/lora.yaml's; decoders: "
        "q_proj,v_proj)",
    )
    args = parser.parse_args()
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        sys.exit(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    from lowres.schema import config_dir

    if not (config_dir() / "backbone" / f"{args.backbone}.yaml").is_file():
        names = sorted(p.stem for p in (config_dir() / "backbone").glob("*.yaml"))
        sys.exit(f"unknown backbone {args.backbone!r}; choose from {', '.join(names)}")
    family = backbone_family(args.backbone)
    # Decoder rows name their targets (they differ from the encoders' query/value); the
    # backbone config's lora_targets is what lowres train uses too.
    lora_targets = args.lora_targets.split(",") if args.lora_targets else None
    if lora_targets is None and family == "decoder":
        lora_targets = list(backbone_config(args.backbone).get("lora_targets", []))
    opts = {
        "backbone": args.backbone,
        "family": family,
        "lora_targets": lora_targets,
        "device": args.device,
        "precisions": args.precisions.split(","),
        "batch": args.batch,
        "eval_batch": args.eval_batch or 32,
        "eval_batch_given": args.eval_batch is not None,
        "lengths": [int(n) for n in args.lengths.split(",")],
        "steps": args.steps,
        "warmup": args.warmup,
        "eval_examples": args.eval_examples,
        "data_root": args.data_root,
    }
    context = mp.get_context("spawn")
    results = []
    for method in methods:
        queue = context.Queue()
        process = context.Process(target=measure, args=(method, opts, queue))
        process.start()
        result = _result_or_exit(method, process, queue)
        process.join()
        if isinstance(result, str):
            sys.exit(f"{method}: {result}")
        print(json.dumps(result), flush=True)
        results.append(result)
    precisions = "+".join(results[0]["peak_flops"])
    env = environment_line(results[0]["device"], precisions)
    marker = f"{args.backbone} {env['device']} {precisions}"
    command = "python scripts/bench.py " + " ".join(sys.argv[1:])
    section = markdown(opts, env, results, command.strip(), marker)
    print(section)
    write_section(args.out, section, marker)
    if args.json:
        args.json.write_text(json.dumps({"options": opts, "environment": env, "results": results}))


if __name__ == "__main__":
    main()
