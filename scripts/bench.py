"""Training and evaluation throughput per method, padded and unpadded, against the machine's limit.

    python scripts/bench.py --data-root ../shared/data     # minilm, CPU -> docs/benchmarks.md
    python scripts/bench.py --backbone me5-small --methods full,lora_all_linear,prompt_align
    python scripts/bench.py --backbone tiny-bert --steps 2 --lengths 64 --out /tmp/bench.md
    python scripts/bench.py --backbone minilm --device cuda --precisions bf16

The backbone is any config name in configs/backbone/, the methods any presets in
configs/method/ (``+method=NAME``, composed as ``lowres train`` composes them; ``NAME:KEY=VALUE``
adds overrides, e.g. ``lora_all_linear:trainer.fast_dropout=true``); the model is
built by ``lowres.builders.build_run_model`` exactly as ``lowres train`` builds it, and every
step is the Trainer's: the model's loss plus, for a method with the alignment loss, the
weighted ``AlignmentObjective.loss`` on the next parallel batch (the two parts
``LowresTrainer.compute_loss`` sums), the model's optimizer groups (``create_optimizer``),
the collator that pads each batch, autocast for bf16. All methods live in one process and
take their steps in turn, so a busy machine slows them alike and their ratios stay fair:

* **the limit**: sustained matrix-product throughput (a square matmul repeated for about a
  second) in fp32 and, where the CPU (avx512_bf16/AMX) or GPU has it, bf16, with the threads
  the steps use;
* **training**: real source-pool windows (SQuAD v1.1 minus XQuAD under ``--data-root``, else
  the shipped sample), in the length-grouped batches ``lowres train`` forms, spread over the
  epoch. Every method x ``--lengths`` x padding (``longest``: each batch to its own longest
  row; ``max_length``: every row to the window length, as before dynamic padding) x
  ``--precisions`` trains on the same windows, one step of each in turn (interleaved). Each
  step is timed in parts: the optimizer (``optimizer_share``: step and zeroing of the
  gradients) and, for alignment methods, the alignment pass (``alignment_share``: its
  forward and backward on the parallel batch, ``align.batch_size`` pairs);
* **evaluation**: ``trainer.predict`` on ``--eval-examples`` XQuAD questions per language of
  ``--eval-languages``, sorted by length as ``lowres train`` evaluates them, in each
  precision, interleaved language by language (bf16 as ``lowres train`` runs it: the
  Trainer's autocast);
* **FLOPs** (:mod:`lowres.methods.flops`): model FLOPs per real token (forward 2N, training
  6N for full fine-tuning and 4N for a frozen backbone under a prompt, plus attention over
  real positions; an alignment method's parallel rows count as trained tokens), and the
  achieved share of the measured matmul peak;
* decoder backbones (``family: decoder``, e.g. tiny-llama) train on prompt + answer rows and
  evaluate by batched greedy generation (examples are questions there);
* peak memory: host = peak resident set of the process (all methods together); device =
  CUDA's max allocated.

``--out`` gets (or has replaced) one section per backbone x device, so CPU and GPU results
live side by side in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import random
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_METHODS = "full,input_prompt,deep_prompt,lora"
PADDINGS = ("longest", "max_length")
# XQuAD's languages besides English: the alignment methods' parallel pairs and the
# evaluation languages by default.
XQUAD_TARGETS = ("ar", "de", "el", "es", "hi", "ru", "th", "tr", "vi", "zh")


def backbone_config(name: str):
    from omegaconf import OmegaConf

    from lowres.schema import config_dir

    return OmegaConf.load(config_dir() / "backbone" / f"{name}.yaml")


def backbone_family(name: str) -> str:
    return backbone_config(name).get("family", "encoder")


def method_names() -> list[str]:
    from lowres.schema import config_dir

    return sorted(p.stem for p in (config_dir() / "method").glob("*.yaml"))


def compose_config(
    opts: dict, method: str, length: int, padding: str, languages: list[str] | None = None
):
    """``lowres train +task=xquad +method=METHOD`` with the bench's workload."""
    from hydra import compose, initialize_config_dir

    from lowres.schema import alignment_on, config_dir, register_schemas

    register_schemas()
    data = ["data=local", f"data.root={opts['data_root']}"] if opts["data_root"] else []
    preset, *settings = method.split(":")  # a variant of a preset: PRESET:KEY=VALUE[:...]
    overrides = [
        "+task=xquad",
        f"+method={preset}",
        f"backbone={opts['backbone']}",
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
        f"data.eval_languages=[{','.join(languages or ['en'])}]",
        f"data.max_eval_examples={opts['eval_examples']}",
    ]
    if opts.get("lora_targets"):
        overrides.append(f"adapter.target_modules=[{','.join(opts['lora_targets'])}]")
    if opts.get("family") == "decoder" and opts.get("eval_batch_given"):
        overrides.append(f"backbone.generation_batch_size={opts['eval_batch']}")
    overrides += settings
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
        if alignment_on(cfg.align) and not cfg.align.parallel_file:
            # The parallel pairs come from the target pools of XQuAD's other languages.
            targets = ",".join(opts["align_languages"])
            extra = [f"align.target_languages=[{targets}]"]
            if cfg.data.pool_fraction <= 0:
                extra.append("data.pool_fraction=0.2")
            cfg = compose("train", overrides=[*overrides, *extra])
    return cfg


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

    features = {p: task.train_features(records, tokenizer) for p, task in tasks.items()}
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


def _autocast(device, precision: str):
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


class Method:
    """One method's model, trainer, optimizer and alignment batches, built as lowres train does."""

    def __init__(self, name: str, opts: dict) -> None:
        from lowres.builders import (
            build_alignment,
            build_run_model,
            build_trainer,
            training_arguments,
        )
        from lowres.methods.build import parameter_report
        from lowres.schema import alignment_languages, resolved_lr, validate
        from lowres.training.progress import RichProgress

        self.name = name
        self.opts = opts
        cfg = compose_config(opts, name, max(opts["lengths"]), "longest")
        validate(cfg)
        self.cfg = cfg
        self.model, self.tokenizer = build_run_model(cfg)
        self.report = parameter_report(self.model)
        self.learning_rate = resolved_lr(cfg.trainer.lr, cfg.freeze.strategy)
        self.args = training_arguments(
            cfg.trainer,
            Path(tempfile.mkdtemp(prefix="lowres-bench-")),
            task_kind=cfg.task.kind,
            learning_rate=self.learning_rate,
        )
        self.device = self.args.device
        alignment = None
        languages = alignment_languages(cfg.align, list(cfg.data.eval_languages))
        if languages or cfg.align.parallel_file:
            task = _task(cfg)
            split = task.split(align_languages=languages, align_source=cfg.align.source_language)
            alignment = build_alignment(
                cfg.align,
                task,
                split.parallel,
                self.tokenizer,
                seed=cfg.trainer.seed,
                pad_to_multiple_of=8 if self.device.type == "cuda" else None,
            )
        self.trainer = build_trainer(
            self.model,
            self.tokenizer,
            self.args,
            progress=RichProgress(bars=False),
            prompt_lr=cfg.prompt.lr,
            alignment=alignment,
        )
        self.model.to(self.device)
        self.optimizer = self.trainer.create_optimizer()
        self.alignment = alignment
        steps = opts["warmup"] + opts["steps"]
        # One parallel batch per step index: every variant of a step aligns the same pairs.
        drawn = alignment.batches() if alignment else None
        self.align_batches = [next(drawn) for _ in range(steps)] if drawn else []

    def step(self, batch: dict, step: int, precision: str, sync) -> dict[str, float]:
        """One training step; seconds of the whole, the alignment pass and the optimizer."""
        device = self.device
        batch = {k: v.to(device) for k, v in batch.items()}
        sync()
        started = time.perf_counter()
        self.model.train()
        with _autocast(device, precision):
            loss = self.model(**batch)["loss"]
        loss.backward()
        align_s = 0.0
        if self.alignment is not None:
            # loss = task + weight * align: the parts' gradients add up, so the alignment
            # pass can run its own backward and be timed apart.
            sync()
            align_started = time.perf_counter()
            source, target = (
                {k: v.to(device) for k, v in side.items()} for side in self.align_batches[step]
            )
            with _autocast(device, precision):
                align = self.alignment.loss(self.model, source, target)
            (self.alignment.weight * align).backward()
            sync()
            align_s = time.perf_counter() - align_started
        sync()
        optimizer_started = time.perf_counter()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        sync()
        ended = time.perf_counter()
        return {
            "step_s": ended - started,
            "alignment_s": align_s,
            "optimizer_s": ended - optimizer_started,
        }

    def alignment_lengths(self, steps: range) -> list[int]:
        """Real tokens of each parallel row of these steps (source and target sides)."""
        if not self.align_batches:
            return []
        return [
            int(n)
            for index in steps
            for side in self.align_batches[index]
            for n in side["attention_mask"].sum(dim=1).tolist()
        ]


def _measure(opts: dict) -> list[dict]:
    import torch

    from lowres.methods.flops import step_flops
    from lowres.recipes.preflight import quiet_libraries
    from lowres.training.trainer import PaddingCollator

    quiet_libraries()
    methods = [Method(name, opts) for name in opts["methods"]]
    first = methods[0]
    device = first.device
    cuda = device.type == "cuda"
    collate = PaddingCollator(first.tokenizer, 8 if cuda else None)
    decoder = first.cfg.backbone.family == "decoder"
    precisions = precisions_available(device, opts["precisions"])
    peaks = {name: matmul_peak(device, name) for name in precisions}

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    # The windows depend on the tokenizer and the task only, the same for every method.
    variants = []  # (length, padding, precision, batches)
    tasks = {}  # length -> padding -> task
    for length in opts["lengths"]:
        tasks[length] = {
            # longest always: its rows' lengths form the length-grouped batches
            p: _task(compose_config(opts, first.name, length, p))
            for p in {"longest", *opts["paddings"]}
        }
        pool = tasks[length]["longest"].source_pool()
        records = pool[: opts["batch"] * (opts["warmup"] + opts["steps"]) * 8]
        batches = _batches(tasks[length], records, first.tokenizer, opts, collate)
        for padding in opts["paddings"]:
            for precision in precisions:
                variants.append((length, padding, precision, batches[padding]))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = {(m.name, i): [] for m in methods for i in range(len(variants))}
    for step in range(opts["warmup"] + opts["steps"]):
        for index, (_, _, precision, batches) in enumerate(variants):
            for method in methods:  # round-robin: each method's step right after the other's
                seconds = method.step(batches[step], step, precision, sync)
                if step >= opts["warmup"]:
                    times[(method.name, index)].append(seconds)
    timed_steps = range(opts["warmup"], opts["warmup"] + opts["steps"])
    evaluation = _evaluate(methods, opts, precisions, decoder, sync)
    results = []
    for method in methods:
        rows = []
        for index, (length, padding, precision, batches) in enumerate(variants):
            parts = times[(method.name, index)]
            timed = batches[opts["warmup"] :]
            real = [int(n) for b in timed for n in b["attention_mask"].sum(dim=1).tolist()]
            computed = sum(b["attention_mask"].numel() for b in timed)
            aligned = method.alignment_lengths(timed_steps)
            flops = step_flops(method.model, real + aligned, causal=decoder)
            seconds = [p["step_s"] for p in parts]
            total_s = sum(seconds)
            rows.append(
                {
                    "length": length,
                    "padding": padding,
                    "precision": precision,
                    "step_s": statistics.median(seconds),
                    "optimizer_share": sum(p["optimizer_s"] for p in parts) / total_s,
                    "alignment_share": sum(p["alignment_s"] for p in parts) / total_s
                    if method.alignment
                    else None,
                    "real_tokens_per_s": sum(real) / total_s,
                    "alignment_tokens_per_step": sum(aligned) / len(parts),
                    "padding_share": 1 - sum(real) / computed,
                    "flops_per_real_token": flops.train / sum(real + aligned),
                    "achieved_flops": flops.train / total_s,
                    "peak_share": flops.train / total_s / peaks[precision],
                }
            )
        by_key = {(r["length"], r["padding"], r["precision"]): r for r in rows}
        for r in rows:
            padded = by_key.get((r["length"], "max_length", r["precision"]))
            r["speedup_vs_padded"] = padded["step_s"] / r["step_s"] if padded else None
            fp32 = by_key.get((r["length"], r["padding"], "fp32"))
            r["speedup_vs_fp32"] = fp32["step_s"] / r["step_s"] if fp32 else None
        primary = by_key[(opts["lengths"][0], opts["paddings"][0], precisions[0])]
        results.append(
            {
                "method": method.name,
                "trainable": method.report["trainable_parameters"],
                "total": method.report["total_parameters"],
                "family": "decoder" if decoder else "encoder",
                "alignment_pairs": method.alignment.batch_size if method.alignment else 0,
                "step_s": primary["step_s"],
                "train_examples_per_s": opts["batch"] / primary["step_s"],
                "train_tokens_per_s": primary["real_tokens_per_s"],
                "variants": rows,
                "peak_flops": peaks,
                **evaluation[method.name],
                "host_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "device_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
                "device": str(device),
                "torch_threads": torch.get_num_threads(),
                "tf32": method.args.tf32,
            }
        )
    return results


def _eval_trainer(method: Method, precision: str):
    """A trainer that evaluates in ``precision`` as ``lowres train`` would, on its own copy of
    the model: the Trainer's accelerator wraps the model's forward in autocast for bf16."""
    from lowres.builders import build_trainer, training_arguments
    from lowres.training.progress import RichProgress

    cfg = copy.deepcopy(method.cfg)
    cfg.trainer.precision = precision
    args = training_arguments(
        cfg.trainer,
        Path(tempfile.mkdtemp(prefix="lowres-bench-")),
        task_kind=cfg.task.kind,
        learning_rate=method.learning_rate,
    )
    model = copy.deepcopy(method.model)
    return build_trainer(model, method.tokenizer, args, progress=RichProgress(bars=False))


def _evaluate(methods: list, opts: dict, precisions: list[str], decoder: bool, sync) -> dict:
    """Evaluation examples/s per method and precision, interleaved language by language
    (encoders: windows of ``--eval-examples`` questions per language; decoders: questions
    answered by generation, English)."""
    results = {}
    for method in methods:
        languages = ["en"] if decoder else opts["eval_languages"]
        cfg = compose_config(opts, method.name, opts["lengths"][0], "longest", languages)
        task = _task(cfg)
        trainers = {p: _eval_trainer(method, p) for p in precisions}
        seconds = dict.fromkeys(precisions, 0.0)
        examples = 0
        for language in languages:
            records = task.evaluation_records(language)
            if decoder:
                examples += len(records)
            else:
                examples += len(task.eval_features(records, method.tokenizer)[1])
            run = task.predict if decoder else task.model_outputs
            warm_up = records[: task.batch_size] if decoder else records[:2]
            for precision, trainer in trainers.items():
                trainer.model.eval()
                run(trainer, warm_up, method.tokenizer)
                sync()
                started = time.perf_counter()
                run(trainer, records, method.tokenizer)
                sync()
                seconds[precision] += time.perf_counter() - started
        rates = {p: examples / s for p, s in seconds.items()}
        results[method.name] = {
            "eval_examples": examples,
            "eval_languages": languages,
            "eval_examples_per_s": rates[precisions[0]],
            "eval_examples_per_s_by_precision": rates,
            "eval_batch": task.batch_size if decoder else opts["eval_batch"],
            "max_new_tokens": task.max_answer_length if decoder else None,
        }
        del trainers
    return results


def environment_line(device: str, dtype: str) -> dict:
    import torch

    from lowres.environment import cpu_name, environment

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    env = environment(device, dtype)
    env["cpu"] = cpu_name()
    return env


def _share(value) -> str:
    return "n/a" if value is None else f"{100 * value:.0f} %"


def markdown(opts: dict, env: dict, results: list[dict], command: str, marker: str) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    on_gpu = env["device"].startswith("cuda")
    first = results[0]
    precisions = list(first["peak_flops"])
    peaks = ", ".join(
        f"{name} {first['peak_flops'][name] / 1e9:,.0f} GFLOP/s" for name in precisions
    )
    device_peak = f"{first['device_peak_mb']:.0f} MB" if on_gpu else "n/a"
    lines = [
        f"<!-- bench: {marker} -->",
        f"### {opts['backbone']} · {env['device_name']} · {' and '.join(precisions)}",
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
        f"- Matmul peak measured in the same process: {peaks}",
        f"- Peak memory of the process (all methods): host {first['host_peak_mb']:.0f} MB, "
        f"device {device_peak}",
        workload(opts, results),
        "",
        "| method | trainable params | step (s) | optimizer share | alignment share "
        "| real train tokens/s | " + " | ".join(f"eval examples/s, {p}" for p in precisions) + " |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(precisions),
    ]
    for r in results:
        primary = r["variants"][0]
        evals = " | ".join(f"{r['eval_examples_per_s_by_precision'][p]:.2f}" for p in precisions)
        lines.append(
            f"| {r['method']} | {r['trainable']:,} | {r['step_s']:.3f} | "
            f"{_share(primary['optimizer_share'])} | {_share(primary['alignment_share'])} | "
            f"{r['train_tokens_per_s']:.0f} | {evals} |"
        )
    lines += [
        "",
        "| method | length | padding | precision | step (s) | vs padded | vs fp32 "
        "| optimizer share | alignment share | real tokens/s | padding share "
        "| GFLOP / real token | achieved GFLOP/s | share of matmul peak |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for v in r["variants"]:
            vs_fp32 = f"{v['speedup_vs_fp32']:.2f}x" if v["speedup_vs_fp32"] else "n/a"
            vs_padded = f"{v['speedup_vs_padded']:.2f}x" if v["speedup_vs_padded"] else "n/a"
            lines.append(
                f"| {r['method']} | {v['length']} | {v['padding']} | "
                f"{v['precision']} | {v['step_s']:.3f} | {vs_padded} | "
                f"{vs_fp32} | {_share(v['optimizer_share'])} | "
                f"{_share(v['alignment_share'])} | {v['real_tokens_per_s']:.0f} | "
                f"{100 * v['padding_share']:.0f} % | "
                f"{v['flops_per_real_token'] / 1e9:.4g} | {v['achieved_flops'] / 1e9:.1f} | "
                f"{100 * v['peak_share']:.0f} % |"
            )
    lines.append(f"<!-- /bench: {marker} -->")
    return "\n".join(lines) + "\n"


def workload(opts: dict, results: list[dict]) -> str:
    first = results[0]
    timing = (
        f"median of {opts['steps']} steps per method and variant, methods and variants "
        f"interleaved, after {opts['warmup']} warm-up steps"
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
    aligned = [r for r in results if r["alignment_pairs"]]
    pairs = (
        f"; alignment methods add {aligned[0]['alignment_pairs']} parallel pairs a step"
        if aligned
        else ""
    )
    return (
        f"- Workload: {source}, windows of {lengths} tokens in length-grouped batches of "
        f"{opts['batch']} spread over the epoch{pairs}, {timing}; evaluation on {n} XQuAD "
        f"windows of {opts['eval_examples']} questions in each of "
        f"{', '.join(first['eval_languages'])} (first length), eval batch {opts['eval_batch']}"
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
    parser.add_argument(
        "--methods",
        default=DEFAULT_METHODS,
        help="method presets from configs/method/, comma-separated (e.g. full, "
        "full_frozen_embeddings, lora_all_linear, deep_prompt, prompt_align); a preset with "
        "overrides after colons is a variant of it (prompt_align:trainer.fast_dropout=true)",
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--eval-batch",
        type=int,
        help="evaluation batch (default: 32; decoders: the backbone's generation_batch_size)",
    )
    parser.add_argument("--lengths", default="384,256", help="window lengths, comma-separated")
    parser.add_argument(
        "--paddings",
        default=",".join(PADDINGS),
        help="longest (each batch to its own longest row, as lowres trains) and/or max_length "
        "(every row to the window length), comma-separated",
    )
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--eval-examples", type=int, default=16, help="XQuAD questions per evaluation language"
    )
    parser.add_argument(
        "--eval-languages",
        default="en," + ",".join(XQUAD_TARGETS),
        help="XQuAD languages evaluated, comma-separated (decoders: English only)",
    )
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
        help="LoRA target modules of every method, comma-separated (default: each method's, "
        "as lowres train chooses them)",
    )
    args = parser.parse_args()
    methods = args.methods.split(",")
    known = method_names()
    unknown = [m for m in methods if m.split(":")[0] not in known]
    if unknown:
        parser.exit(
            2,
            f"bench.py: --methods names {', '.join(unknown)}, which configs/method/ does not "
            f"have; choose presets from {', '.join(known)}.\n",
        )
    from lowres.schema import config_dir

    if not (config_dir() / "backbone" / f"{args.backbone}.yaml").is_file():
        names = sorted(p.stem for p in (config_dir() / "backbone").glob("*.yaml"))
        parser.exit(
            2, f"bench.py: unknown backbone {args.backbone!r}; choose from {', '.join(names)}.\n"
        )
    opts = {
        "backbone": args.backbone,
        "family": backbone_family(args.backbone),
        "methods": methods,
        "lora_targets": args.lora_targets.split(",") if args.lora_targets else None,
        "device": args.device,
        "precisions": args.precisions.split(","),
        "batch": args.batch,
        "eval_batch": args.eval_batch or 32,
        "eval_batch_given": args.eval_batch is not None,
        "lengths": [int(n) for n in args.lengths.split(",")],
        "paddings": [p for p in PADDINGS if p in args.paddings.split(",")],
        "steps": args.steps,
        "warmup": args.warmup,
        "eval_examples": args.eval_examples,
        "eval_languages": args.eval_languages.split(","),
        "align_languages": list(XQUAD_TARGETS),
        "data_root": args.data_root,
    }
    results = _measure(opts)
    for result in results:
        print(json.dumps(result), flush=True)
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
