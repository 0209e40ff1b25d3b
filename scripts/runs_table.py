"""Tabulate finished run folders side by side, per language, and keep their results in results/.

    python scripts/runs_table.py --out docs/results/xquad_me5_1epoch.md \
        --keep results/xquad_me5_1epoch \
        me5-small=outputs/xquad/me5-small/<date> minilm=outputs/xquad/minilm/<date>

Each ``LABEL=RUN_DIR`` is one row: train and evaluation time, then the main score (and EM for
QA) of every language the runs share, their average and the average over the non-source
languages. ``--keep DIR`` copies each run's metrics.json, overrides.yaml, environment.json and
predictions/ (gzipped: ``predictions/<lang>.json.gz``) to ``DIR/LABEL/``, so the table's numbers
stay in git after ``outputs/`` is gone;
a folder there that already holds metrics.json is read instead of the run folder, so the
table can be remade from what is committed.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
from pathlib import Path

from compare_methods import train_time  # scripts/ is on sys.path when a script runs

KEPT = ("metrics.json", "environment.json")
# A `lowres evaluate` folder scores a trained run again; its training figures are that run's.
TRAINED = "checkpoint_metrics.json"
TRAINING_KEYS = ("train_runtime_s", "train_runtime_from_step", "train_steps", "seed")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR, one per row")
    parser.add_argument("--out", type=Path, help="Markdown file for the table")
    parser.add_argument("--keep", type=Path, help="copy each run's results to KEEP/LABEL/")
    args = parser.parse_args(argv)

    rows = []
    for spec in args.runs:
        label, sep, run_dir = spec.partition("=")
        if not sep or not label or not run_dir:
            sys.exit(f"runs_table: {spec!r} is not LABEL=RUN_DIR (e.g. me5=outputs/xquad/...).")
        source = Path(run_dir)
        if args.keep:
            source = keep(source, args.keep / label)
        if not (source / "metrics.json").is_file():
            sys.exit(
                f"runs_table: {source} holds no metrics.json; expected a finished run folder "
                "(lowres train writes metrics.json when it ends)."
            )
        rows.append((label, source))
    table = render(rows)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)


def keep(run_dir: Path, kept: Path) -> Path:
    """Copy a finished run's results to ``kept`` (once) and read them from there."""
    if (kept / "metrics.json").is_file():
        return kept
    if not (run_dir / "metrics.json").is_file():
        return run_dir
    kept.mkdir(parents=True, exist_ok=True)
    for name in KEPT:
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, kept / name)
    overrides = _overrides_file(run_dir)
    if overrides:
        shutil.copyfile(overrides, kept / "overrides.yaml")
    trained = _trained_metrics_file(run_dir)
    if trained:
        shutil.copyfile(trained, kept / TRAINED)
    if (run_dir / "predictions").is_dir():
        shutil.copytree(run_dir / "predictions", kept / "predictions", dirs_exist_ok=True)
    compress_predictions(kept)
    return kept


def compress_predictions(folder: Path) -> list[Path]:
    """Gzip every ``predictions/*.json`` under ``folder`` in place (``<lang>.json.gz``).

    Per-question predictions are most of a kept run's bytes and compress about 4x; the same
    content always gives the same bytes (no timestamp), so git stores a rewrite once."""
    written = []
    for path in sorted(folder.rglob("predictions/*.json")):
        packed = path.with_name(path.name + ".gz")
        packed.write_bytes(gzip.compress(path.read_bytes(), compresslevel=9, mtime=0))
        path.unlink()
        written.append(packed)
    return written


def _trained_metrics_file(run_dir: Path) -> Path | None:
    """The training run's metrics.json for an evaluate folder (kept copy first)."""
    if (run_dir / TRAINED).is_file():
        return run_dir / TRAINED
    checkpoint = json.loads((run_dir / "metrics.json").read_text()).get("checkpoint")
    if checkpoint and (Path(checkpoint) / "metrics.json").is_file():
        return Path(checkpoint) / "metrics.json"
    return None


def _metrics(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    if "train_runtime_s" not in metrics:
        trained = _trained_metrics_file(run_dir)
        if trained is None:
            sys.exit(
                f"runs_table: {run_dir} was made by lowres evaluate and its checkpoint "
                f"{metrics.get('checkpoint')} holds no metrics.json to take the training time "
                "from; keep the checkpoint folder or a kept copy (--keep)."
            )
        training = json.loads(trained.read_text())
        metrics.update({key: training.get(key, 0) for key in TRAINING_KEYS})
    return metrics


def _overrides_file(run_dir: Path) -> Path | None:
    """Hydra's record of the command line: in .hydra/ of a run, at the top of a kept copy."""
    for path in (run_dir / "overrides.yaml", run_dir / ".hydra" / "overrides.yaml"):
        if path.is_file():
            return path
    return None


def _overrides(run_dir: Path) -> str:
    path = _overrides_file(run_dir)
    if path is None:
        return "(not recorded)"
    lines = [line.removeprefix("- ").strip() for line in path.read_text().splitlines()]
    return " ".join(line for line in lines if line)


def render(rows: list[tuple[str, Path]]) -> str:
    metrics = {label: _metrics(run_dir) for label, run_dir in rows}
    first = next(iter(metrics.values()))
    shared = [set(m["per_language"]) for m in metrics.values()]
    languages = [lang for lang in first["per_language"] if all(lang in s for s in shared)]
    key = "f1" if "f1" in first["average"] else "accuracy"
    qa = key == "f1"
    head = ["run", "train time (s)", "eval time (s)", *languages, "avg", "avg without en"]
    what = "F1 / EM" if qa else "accuracy"
    lines = [
        f"Task {first['task']}; each cell is {what} (0-100) over every evaluated example of "
        "that language.",
        "",
        "| " + " | ".join(head) + " |",
        "|---|---:|---:|" + "---:|" * (len(languages) + 2),
    ]
    for label, m in metrics.items():
        scores = m["per_language"]

        def cell(values: list[dict]) -> str:
            main = sum(v[key] for v in values) / len(values)
            if not qa:
                return f"{main:.1f}"
            return f"{main:.1f} / {sum(v['exact_match'] for v in values) / len(values):.1f}"

        targets = [scores[lang] for lang in languages if lang != "en"]
        cells = [
            label,
            train_time(m),
            f"{m['eval_runtime_s']:.0f}",
            *(cell([scores[lang]]) for lang in languages),
            cell([scores[lang] for lang in languages]),
            cell(targets) if targets else "–",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Runs (`lowres train` overrides; each run's files are in the folder named):", ""]
    for label, run_dir in rows:
        m = metrics[label]
        lines.append(
            f"- **{label}** (`{run_dir}`): backbone {m['backbone']}, "
            f"{m['trainable_parameters']:,} trainable parameters, {m['train_steps']} steps, "
            f"seed {m['seed']}: `{_overrides(run_dir)}`"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
