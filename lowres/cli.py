"""The ``lowres`` command: picks the verb and hands the rest to Hydra (or argparse for the rest).

Each verb's module is imported when that verb runs: torch and transformers take seconds to
load, which ``lowres --help`` and ``lowres score`` should not pay.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import hydra
import yaml
from rich.console import Console

from lowres.distributed import rank_overrides
from lowres.errors import LowresError
from lowres.launchers import check_launcher, pin_gpu_for_sweep_job
from lowres.schema import config_dir, register_schemas

HYDRA_VERBS = {
    "train": "Train prompts/heads/adapters on a task and evaluate every eval language.",
    "evaluate": "Restore a run's trained parameters (checkpoint=RUN_DIR) and evaluate again.",
    "sweep": "Run k-shot x seeds x languages x methods (sweep.*) and summarise; resumable.",
}
OTHER_VERBS = {
    "score": "Score a predictions file against a data file with an official metric.",
    "report": "Tables (Markdown, CSV, JSON) and plots of a sweep folder: lowres report DIR.",
    "convert": "Convert a bundled model into a transformers folder: lowres convert me5-small.",
}


def config_groups() -> dict[str, list[str]]:
    root = config_dir()
    return {
        group.name: sorted(p.stem for p in group.glob("*.yaml"))
        for group in sorted(root.iterdir())
        if group.is_dir() and any(group.glob("*.yaml"))
    }


def _usage() -> str:
    lines = ["usage: lowres VERB [overrides...]", "", "verbs:"]
    for verb, text in {**HYDRA_VERBS, **OTHER_VERBS}.items():
        lines.append(f"  {verb:<9} {text}")
    lines += ["", "config groups (group=option; + for task, e.g. +task=xquad):"]
    for group, options in config_groups().items():
        lines.append(f"  {group:<10} {' | '.join(options)}")
    lines += [
        "",
        "examples:",
        "  lowres train +task=xquad",
        "  lowres train +task=xquad backbone=tiny-bert trainer=smoke data=local "
        "data.root=../shared/data",
        "  lowres train -m +task=xquad prompt.length=10,20 trainer.seed=1,2",
        "  lowres train +task=xquad --cfg job        # print the composed config",
        "  lowres train --resume outputs/xquad/me5-small/2026-01-01_10-00-00",
        "  lowres sweep +task=xquad backbone=tiny-bert trainer=smoke sweep.k=[0,8] "
        "sweep.seeds=[1,2] sweep.languages=[de,es] data.pool_fraction=0.3",
        "  lowres sweep +experiment=kshot_curve     # a study preset from configs/experiment/",
        "  lowres report outputs/sweeps/xquad/2026-01-01_10-00-00",
        "  lowres evaluate checkpoint=outputs/xquad/me5-small/2026-01-01_10-00-00",
        "  lowres evaluate checkpoint=outputs/xquad/me5-small/2026-01-01_10-00-00 task=mlqa",
        "  lowres score --metric squad data.json predictions.json",
        "  lowres convert me5-small --out models/me5-small",
        "",
        "Hydra's own help: lowres train --hydra-help",
    ]
    return "\n".join(lines)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print a LowresError as one paragraph, without a traceback, and exit 2."""
    try:
        yield
    except LowresError as err:
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {err}", highlight=False)
        sys.exit(2)


def _normalize_task(overrides: list[str]) -> list[str]:
    # `task` is not in the defaults list (a run must name one), so Hydra needs `+task=`;
    # accept the plain form too because it is what people type first.
    return [f"+{o}" if o.startswith("task=") else o for o in overrides]


def _normalize_grid(overrides: list[str]) -> list[str]:
    # sweep.grid is a dict of new keys (align.weight, prompt.length, ...), which a plain
    # override may not add to a struct config; `++` adds them and, like a plain override,
    # replaces a key's values when a preset (+experiment=...) already sweeps that key.
    return [f"++{o}" if o.startswith("sweep.grid=") else o for o in overrides]


def _check_method(overrides: list[str]) -> None:
    """``+method=NAME`` must name a preset in lowres's configs or the user's search path."""
    names = [o.split("=", 1)[1] for o in overrides if o.startswith(("+method=", "method="))]
    if not names:
        return
    searchpath = next(
        (o.split("=", 1)[1] for o in overrides if o.startswith("hydra.searchpath=")), ""
    )
    folders = [
        Path(entry.strip().removeprefix("file://"))
        for entry in searchpath.strip("[]").split(",")
        if entry.strip() and ("://" not in entry or entry.strip().startswith("file://"))
    ]
    folders = [*(f / "method" for f in folders), config_dir() / "method"]
    for name in names:
        if not any((folder / f"{name}.yaml").is_file() for folder in folders):
            options = sorted({p.stem for folder in folders for p in folder.glob("*.yaml")})
            raise LowresError(
                f"method={name}: no method/{name}.yaml in "
                f"{', '.join(str(f) for f in folders)}; the method presets are "
                f"{', '.join(options)}. A preset of your own goes in DIR/method/NAME.yaml, "
                "with hydra.searchpath=[file://DIR] on the command line."
            )


def _has_task(overrides: list[str]) -> bool:
    return any(o.startswith(("+task=", "++task=")) for o in overrides)


def _resume_overrides(run_dir: str, verb: str = "train") -> list[str]:
    """Re-run a run folder's own overrides in that folder, with resume switched on."""
    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not path.is_file():
        raise LowresError(
            f"--resume {run_dir}: no {path} found; expected a folder written by "
            f"`lowres {verb}` (it holds .hydra/overrides.yaml). Check the path."
        )
    previous = [o for o in yaml.safe_load(path.read_text()) or [] if not o.startswith("resume=")]
    # overrides.yaml holds the job's overrides only; the user's config folders (their own
    # method presets) were a Hydra override, kept in hydra.yaml.
    hydra_file = path.parent / "hydra.yaml"
    if hydra_file.is_file():
        saved = (yaml.safe_load(hydra_file.read_text()) or {}).get("hydra", {})
        previous += [
            o
            for o in (saved.get("overrides") or {}).get("hydra") or []
            if o.startswith("hydra.searchpath=")
        ]
    if verb == "sweep":
        # A sweep resumes by skipping finished runs; no resume flag needed.
        return [*previous, f"hydra.sweep.dir={Path(run_dir).resolve()}"]
    return [*previous, f"hydra.run.dir={Path(run_dir).resolve()}", "resume=true"]


def _run_hydra(verb: str, overrides: list[str]) -> None:
    register_schemas()
    if verb in ("train", "sweep"):
        if "--resume" in overrides:
            at = overrides.index("--resume")
            if at + 1 >= len(overrides):
                raise LowresError(f"--resume needs a folder: lowres {verb} --resume DIR")
            run_dir = overrides[at + 1]
            overrides = [*overrides[:at], *overrides[at + 2 :], *_resume_overrides(run_dir, verb)]
        overrides = _normalize_task(overrides)
        if verb == "sweep":
            overrides = _normalize_grid(overrides)
        _check_method(overrides)
        wants_help = any(o in ("--help", "-h", "--hydra-help", "--info") for o in overrides)
        if not _has_task(overrides) and not wants_help:
            raise LowresError(
                f"lowres {verb} needs a task; choose one of "
                f"{', '.join(config_groups()['task'])}, e.g. `lowres {verb} +task=xquad`."
            )
        job = _train_job if verb == "train" else _sweep_job
    else:
        # evaluate: task=NAME evaluates the checkpoint on another task (same as +task=NAME).
        overrides = _normalize_task(overrides)
        job = _evaluate_job

    check_launcher(overrides, config_dir())
    overrides = [*overrides, *rank_overrides(config_dir() / f"{verb}.yaml", overrides)]
    sys.argv = [f"lowres {verb}", *overrides]
    app = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=verb)(job)
    app()


def _train_job(cfg) -> float | None:
    from lowres.recipes.train import train  # torch + transformers: only for this verb

    with user_errors():
        pin_gpu_for_sweep_job()
        metrics = train(cfg)
    return metrics.average.get("f1")


def _sweep_job(cfg) -> None:
    from lowres.sweeps.run import run_sweep  # torch + transformers: only for this verb

    with user_errors():
        run_sweep(cfg)


def _evaluate_job(cfg) -> None:
    from lowres.recipes.evaluate import evaluate  # torch + transformers: only for this verb

    with user_errors():
        evaluate(cfg)


def _score(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="lowres score",
        description="Score predictions with an official metric; prints one JSON object.",
    )
    parser.add_argument("--metric", required=True, choices=["squad", "mlqa", "accuracy"])
    parser.add_argument("--lang", help="mlqa: the answer (context) language, e.g. de")
    parser.add_argument("data_file", type=Path, help="SQuAD-format JSON or PAWS-X TSV")
    parser.add_argument("predictions_file", type=Path, help="JSON: id -> answer text or label")
    args = parser.parse_args(argv)
    from lowres.score import score_accuracy, score_qa  # the metrics' libraries: only this verb's

    if args.metric == "accuracy":
        result = score_accuracy(args.data_file, args.predictions_file)
    else:
        result = score_qa(args.data_file, args.predictions_file, args.metric, args.lang)
    print(json.dumps(result))


def _report(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="lowres report",
        description="Summarise a sweep folder: mean/std over seeds per method x k x language, "
        "stability figures, Markdown/CSV/JSON tables and PNG plots in SWEEP_DIR/report/.",
    )
    parser.add_argument("sweep_dir", type=Path, help="the folder `lowres sweep` wrote")
    parser.add_argument("--out", type=Path, help="where to write (default SWEEP_DIR/report)")
    parser.add_argument(
        "--compare",
        nargs=2,
        action="append",
        metavar=("A", "B"),
        help="paired comparison of two methods (report labels) over the same seeds; "
        "repeatable; default: every pair when a task has at most four methods",
    )
    args = parser.parse_args(argv)
    from lowres.sweeps.report import write_report  # matplotlib: only this verb's

    write_report(args.sweep_dir, args.out, [tuple(p) for p in args.compare or []] or None)


def _convert(argv: list[str]) -> None:
    from lowres.convert import me5_small  # numpy, tokenizers, transformers: only this verb's

    parser = argparse.ArgumentParser(
        prog="lowres convert",
        description="Convert a model shipped in another format into a transformers folder "
        "(safetensors, config.json, fast tokenizer) that AutoModel/AutoTokenizer load. Without "
        f"--out it fills the cache that backbone={me5_small.NAME} reads "
        f"(${me5_small.CACHE_ENV}, default {me5_small.DEFAULT_CACHE}).",
    )
    parser.add_argument("model", choices=[me5_small.NAME])
    parser.add_argument("--out", type=Path, help="a new folder to write (default: the cache)")
    parser.add_argument(
        "--weights",
        type=Path,
        help=f"the {me5_small.WEIGHTS_FILE} to convert (default: the one {me5_small.PACKAGE} "
        "bundles)",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.out:
        folder = me5_small.convert_to(args.out, args.weights)
    else:
        folder = me5_small.ensure_converted(args.weights)
    print(json.dumps({"folder": str(folder), "seconds": round(time.perf_counter() - started, 1)}))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        sys.exit(0 if argv else 2)
    verb, rest = argv[0], argv[1:]
    with user_errors():
        if verb in HYDRA_VERBS:
            _run_hydra(verb, rest)
        elif verb == "report":
            _report(rest)
        elif verb == "convert":
            _convert(rest)
        elif verb in OTHER_VERBS:
            _score(rest)
        else:
            raise LowresError(
                f"Unknown verb {verb!r}; expected one of "
                f"{', '.join([*HYDRA_VERBS, *OTHER_VERBS])}. See `lowres --help`."
            )


if __name__ == "__main__":
    main()
