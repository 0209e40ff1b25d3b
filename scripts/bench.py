"""Training and evaluation throughput and peak memory per method, through lowres's own Trainer.

    python scripts/bench.py                        # minilm, CPU, fp32 -> docs/benchmarks.md
    python scripts/bench.py --backbone tiny-bert --steps 2 --out /tmp/bench.md
    python scripts/bench.py --backbone tiny-llama --device cuda --dtype bf16

The backbone is any config name in configs/backbone/; it is built by
``lowres.train.model_from_config`` exactly as ``lowres train`` builds it, and each method
trains with ``LowresTrainer`` and the run's ``TrainingArguments`` (autocast dtype, TF32,
pinned memory), so the figures are those of real runs. Methods: full fine-tuning, soft
prompt on the input, deep prompt (every layer), LoRA; the frozen ones without backbone
dropout, as lowres runs them. Each method runs in a fresh process, so its peak memory is
its own.

* training: ``--steps`` optimizer steps of ``--batch`` windows of ``--length`` tokens
  (XQuAD task, the shipped SQuAD sample), timed after ``--warmup`` steps; examples/s are
  windows/s, tokens/s count the non-padding tokens of those windows;
* evaluation: ``trainer.predict`` on ``--eval-examples`` English XQuAD questions'
  windows, examples/s again windows/s;
* decoder backbones (``family: decoder``, e.g. tiny-llama) run lowres's decoder path instead:
  training rows are the rendered prompts (at most ``--length`` tokens) followed by the answer
  and EOS, the loss on the answer only; evaluation is the batched greedy generation that
  ``lowres train`` scores (KV cache, ``task.max_answer_length`` new tokens at most, batches of
  ``backbone.generation_batch_size`` unless ``--eval-batch`` is given); examples/s count
  questions. LoRA targets the family's attention projections (decoders: q_proj, v_proj;
  ``--lora-targets`` overrides);
* peak memory: host = peak resident set of the process (model, data and all); device =
  ``torch.cuda.max_memory_allocated``.

``--out`` gets (or has replaced) one section per backbone x device x dtype, so CPU and GPU
results live side by side in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import re
import resource
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


def backbone_config(name: str):
    from omegaconf import OmegaConf

    from lowres.cli import config_dir

    return OmegaConf.load(config_dir() / "backbone" / f"{name}.yaml")


def backbone_family(name: str) -> str:
    return backbone_config(name).get("family", "encoder")


def method_label(method: str, opts: dict) -> str:
    label = METHODS[method][0]
    if method == "lora" and opts.get("lora_targets"):
        label = f"{label[:-1]}, {'+'.join(opts['lora_targets'])})"
    return label


def compose_config(opts: dict, method: str):
    from hydra import compose, initialize_config_dir

    from lowres.cli import config_dir
    from lowres.schema import register_schemas

    register_schemas()
    length = opts["length"]
    overrides = [
        "+task=xquad",
        f"backbone={opts['backbone']}",
        *METHODS[method][1],
        f"trainer.device={opts['device']}",
        f"trainer.precision={opts['dtype']}",
        f"trainer.batch_size={opts['batch']}",
        f"trainer.eval_batch_size={opts['eval_batch']}",
        f"trainer.max_steps={opts['warmup'] + opts['steps']}",
        "trainer.warmup_ratio=0",
        "trainer.logging_steps=1000000",
        "trainer.progress=false",
        f"task.max_length={length}",
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


def _measure(method: str, opts: dict) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback

    from lowres.methods.build import parameter_report
    from lowres.schema import resolved_lr, validate
    from lowres.train import (
        label_names,
        model_from_config,
        quiet_libraries,
        task_from_config,
        training_arguments,
    )
    from lowres.trainer import LowresTrainer

    quiet_libraries()
    cfg = compose_config(opts, method)
    validate(cfg)
    task = task_from_config(cfg)
    model, tokenizer = model_from_config(cfg)
    report = parameter_report(model)
    decoder = getattr(task, "generative", False)
    records = task.source_pool()[: opts["batch"] * (opts["warmup"] + opts["steps"])]
    train = Dataset.from_dict(task.train_features(records, tokenizer))
    eval_records = task.evaluation_records("en")
    if decoder:  # lowres.tasks.generative: answered by generation, no span logits to predict
        evaluation = eval_records
        eval_batch = task.batch_size
    else:
        evaluation = Dataset.from_dict(task.eval_features(eval_records, tokenizer)[0])
        eval_batch = opts["eval_batch"]
    mask = train["attention_mask"]
    tokens_per_example = sum(map(sum, mask)) / len(mask)
    args = training_arguments(
        cfg.trainer,
        Path(tempfile.mkdtemp(prefix="lowres-bench-")),
        label_names=label_names(task.kind),
        learning_rate=resolved_lr(cfg.trainer.lr, cfg.freeze.strategy),
    )
    cuda = args.device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.started = 0.0

        def on_step_begin(self, *_, **__):
            sync()
            self.started = time.perf_counter()

        def on_step_end(self, *_, **__):
            sync()
            self.times.append(time.perf_counter() - self.started)

    clock = StepClock()
    trainer = LowresTrainer(
        model=model, args=args, train_dataset=train, prompt_lr=cfg.prompt.lr, callbacks=[clock]
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    timed = clock.times[opts["warmup"] :]
    step_s = sum(timed) / len(timed)
    if decoder:

        def predict(rows):
            return task.generate_predictions(trainer, rows, tokenizer)

        warm = evaluation[:eval_batch]
    else:
        predict = trainer.predict
        warm = evaluation.select(range(min(len(evaluation), eval_batch)))
    predict(warm)
    sync()
    started = time.perf_counter()
    predicted = predict(evaluation)
    sync()
    eval_s = time.perf_counter() - started
    answered = sum(bool(a) for a in predicted.values()) if decoder else None
    return {
        "method": method,
        "trainable": report["trainable_parameters"],
        "total": report["total_parameters"],
        "step_s": step_s,
        "train_examples_per_s": opts["batch"] / step_s,
        "train_tokens_per_s": opts["batch"] * tokens_per_example / step_s,
        "eval_examples": len(evaluation),
        "eval_examples_per_s": len(evaluation) / eval_s,
        "eval_batch": eval_batch,
        "family": "decoder" if decoder else "encoder",
        "train_examples": len(train),
        "max_new_tokens": task.max_answer_length if decoder else None,
        "nonempty_answers": answered,
        "host_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "device": str(args.device),
        "tf32": args.tf32,
    }


def environment_line(device: str, dtype: str) -> dict:
    import torch

    from lowres.environment import cpu_name, environment

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    env = environment(device, dtype)
    env["cpu"] = cpu_name()
    return env


def markdown(opts: dict, env: dict, results: list[dict], command: str) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    on_gpu = env["device"].startswith("cuda")
    lines = [
        f"<!-- bench: {opts['backbone']} {env['device']} {opts['dtype']} -->",
        f"### {opts['backbone']} · {env['device_name']} · {opts['dtype']}",
        "",
        "```bash",
        command,
        "```",
        "",
        f"- Machine: {env['machine']}, {env['cpu']}, {env['cpu_count']} cores, "
        f"{env['torch_threads']} torch threads, {env['platform']}, Python {env['python']}",
        f"- Device: {env['device_name']} ({env['device']}), dtype {opts['dtype']}, "
        f"TF32 matmul {'on' if results and results[0]['tf32'] else 'off'}",
        f"- Libraries: {versions}",
        workload(opts, results[0] if results else None),
        "",
        "| method | trainable params | train examples/s | train tokens/s | step (s) "
        "| eval examples/s | host peak (MB) | device peak (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        device_peak = f"{r['device_peak_mb']:.0f}" if on_gpu else "n/a"
        lines.append(
            f"| {method_label(r['method'], opts)} | {r['trainable']:,} | "
            f"{r['train_examples_per_s']:.2f} | {r['train_tokens_per_s']:.0f} | "
            f"{r['step_s']:.3f} | {r['eval_examples_per_s']:.2f} | {r['host_peak_mb']:.0f} | "
            f"{device_peak} |"
        )
    lines.append(f"<!-- /bench: {opts['backbone']} {env['device']} {opts['dtype']} -->")
    return "\n".join(lines) + "\n"


def workload(opts: dict, first: dict | None) -> str:
    timing = f"mean of {opts['steps']} steps after {opts['warmup']} warm-up steps"
    n = first["eval_examples"] if first else 0
    if first and first["family"] == "decoder":
        return (
            f"- Workload: XQuAD questions as decoder prompts of at most {opts['length']} tokens "
            f"followed by the answer and EOS (loss on the answer only), batch {opts['batch']}, "
            f"{timing}; evaluation: batched greedy generation (KV cache, at most "
            f"{first['max_new_tokens']} new tokens) on {n} English questions, generation batch "
            f"{first['eval_batch']}"
        )
    return (
        f"- Workload: XQuAD windows of {opts['length']} tokens, batch {opts['batch']}, "
        f"{timing}; evaluation on {n} English windows, eval batch {opts['eval_batch']}"
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="minilm", help="a name from configs/backbone/")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--eval-batch",
        type=int,
        help="evaluation batch (default: 32; decoders: the backbone's generation_batch_size)",
    )
    parser.add_argument("--length", type=int, default=384)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--eval-examples", type=int, default=48, help="English questions")
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
    from lowres.cli import config_dir

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
        "dtype": args.dtype,
        "batch": args.batch,
        "eval_batch": args.eval_batch or 32,
        "eval_batch_given": args.eval_batch is not None,
        "length": args.length,
        "steps": args.steps,
        "warmup": args.warmup,
        "eval_examples": args.eval_examples,
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
    env = environment_line(results[0]["device"], args.dtype)
    command = "python scripts/bench.py " + " ".join(sys.argv[1:])
    section = markdown(opts, env, results, command.strip())
    print(section)
    write_section(args.out, section, f"{args.backbone} {env['device']} {args.dtype}")
    if args.json:
        args.json.write_text(json.dumps({"options": opts, "environment": env, "results": results}))


if __name__ == "__main__":
    main()
