"""Train and evaluate several methods in one setting; print and save a Markdown table.

    python scripts/compare_methods.py --methods untrained,full,deep --steps 300 \
        --out docs/results/xquad_minilm_300steps.md -- data=local data.root=../shared/data

Everything after ``--`` is passed to every ``lowres train`` run (the shared setting). Each
method adds its own overrides (below). Runs go to ``outputs/compare/<method>``; a method
whose folder already holds metrics.json is not rerun, so the script resumes after a crash.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

# Each method is a preset from configs/method/ (the same ones sweeps use); "untrained"
# evaluates the freshly built model: the floor every method starts from.
METHODS: dict[str, list[str]] = {
    "untrained": ["+method=full", "trainer.epochs=0", "trainer.max_steps=-1"],
    "full": ["+method=full"],
    "input": ["+method=input_prompt"],
    "deep": ["+method=deep_prompt"],
    "bitfit": ["+method=bitfit"],
    "lora": ["+method=lora"],
    # The deep prompt with the embeddings and the lowest k layers frozen instead of the whole
    # backbone; the upper layers train at the full fine-tuning rate.
    "deep_lower3": ["+method=deep_prompt_lower_k", "freeze.k=3"],
    "deep_lower2": ["+method=deep_prompt_lower_k", "freeze.k=2"],
}


def main() -> None:
    argv = sys.argv[1:]
    shared = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default="untrained,full,input,deep,bitfit,lora")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps; 0 = epochs")
    parser.add_argument("--task", default="xquad")
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--runs", type=Path, default=Path("outputs/compare"))
    parser.add_argument("--out", type=Path, help="Markdown file for the table")
    args = parser.parse_args(own)

    rows = []
    for method in args.methods.split(","):
        run_dir = args.runs / method
        if not (run_dir / "metrics.json").is_file():
            steps = (
                []
                if method == "untrained" or args.steps <= 0
                else [f"trainer.max_steps={args.steps}"]
            )
            command = [
                sys.executable,
                "-m",
                "lowres",
                "train",
                f"+task={args.task}",
                f"backbone={args.backbone}",
                *shared,
                *METHODS[method],
                *steps,
                f"hydra.run.dir={run_dir}",
            ]
            print("$", " ".join(command[2:]), flush=True)
            started = time.time()
            subprocess.run(command, check=True)
            print(f"{method}: {time.time() - started:.0f} s", flush=True)
        rows.append((method, json.loads((run_dir / "metrics.json").read_text())))

    table = render(rows, shared, args)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)


def render(rows, shared, args) -> str:
    langs = list(rows[0][1]["per_language"])
    key = "f1" if "f1" in rows[0][1]["average"] else "accuracy"
    head = [
        "method",
        "trainable params",
        *(f"{lang} {key}" for lang in langs),
        f"avg {key}",
        "train time (s)",
    ]
    budget = f"{args.steps} optimizer steps" if args.steps else "epochs from the config"
    device = f"CUDA {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "CPU"
    lines = [
        f"Task {args.task}, backbone {args.backbone}, {budget}, "
        f"shared overrides: `{' '.join(shared) or '(none)'}`.",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, {device}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for method, m in rows:
        cells = [
            method,
            f"{m['trainable_parameters']:,}",
            *(f"{m['per_language'][lang][key]:.1f}" for lang in langs),
            f"{m['average'][key]:.1f}",
            train_time(m),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def train_time(metrics: dict) -> str:
    """Seconds, marked where a resumed run's earlier segment went unclocked."""
    seconds = f"{metrics['train_runtime_s']:.0f}"
    since = metrics.get("train_runtime_from_step", 0)
    return f"{seconds} (steps {since}-{metrics['train_steps']} only)" if since else seconds


if __name__ == "__main__":
    main()
