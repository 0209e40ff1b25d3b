"""The ``lowres`` command: picks the verb and hands the rest to Hydra (or argparse for the rest).

Each verb's module is imported when that verb runs: torch and transformers take seconds to
load, which ``lowres --help`` and ``lowres score`` should not pay.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import hydra
from rich.console import Console
from rich.text import Text

from lowres.commandline import (
    compose,
    config_groups,
    evaluate_overrides,
    prepare_folder,
    train_or_sweep_overrides,
)
from lowres.distributed import rank_overrides
from lowres.errors import LowresError
from lowres.files import DISK_ERRORS, disk_error
from lowres.launchers import check_launcher, end_with_dispatcher, pin_gpu_for_sweep_job
from lowres.overrides import read_all as read_overrides
from lowres.registry import METRICS
from lowres.runfolder import ClaimedFolder
from lowres.schema import config_dir, register_schemas
from lowres.sweeps.search import (
    OPTUNA,
    is_search,
    is_search_folder,
    plan_search,
    search_objective,
    start_search,
    write_search,
    write_search_report,
)

HYDRA_VERBS = {
    "train": "Train prompts/heads/adapters on a task and evaluate every eval language.",
    "evaluate": "Restore a run's trained parameters (checkpoint=RUN_DIR) and evaluate again.",
    "sweep": "Run k-shot x seeds x languages x methods (sweep.*) and summarise; resumable; "
    "hydra/launcher=slurm|local_gpus spreads the runs.",
}
OTHER_VERBS = {
    "score": "Score a predictions file against a data file with an official metric.",
    "report": "Tables and plots of one or more sweep folders, or a search folder's trials: "
    "lowres report DIR [DIR ...].",
    "convert": "Convert a bundled model into a transformers folder: lowres convert me5-small.",
    "study": "A study from its spec, resumable from its committed results: "
    "lowres study run|status|report configs/study/v2.yaml.",
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
        "  lowres train -m hydra/sweeper=optuna +task=xquad +method=full data=local "
        "data.source_dev_articles=5   # search on source dev (docs/study.md)",
        "  lowres train --resume outputs/xquad/me5-small/2026-01-01_10-00-00",
        "  lowres sweep +task=xquad backbone=tiny-bert trainer=smoke sweep.k=[0,8] "
        "sweep.seeds=[1,2] sweep.languages=[de,es] data.pool_fraction=0.3",
        "  lowres sweep +task=xquad +experiment=kshot_curve   # a preset, configs/experiment/",
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
        _print_error(str(err))
        sys.exit(2)
    except Exception as err:
        # A full or read-only disk is the machine's state, not a bug: name the file and
        # the fix. What was written before stays (a resumable run resumes from it).
        code = disk_error(err)
        if code is None:
            raise
        where = getattr(err, "filename", None) or "a file"
        _print_error(
            f"Cannot write {where}: {os.strerror(code)} (errno {code}). {DISK_ERRORS[code]} "
            "(hydra.run.dir=DIR, hydra.sweep.dir=DIR, lowres convert --out DIR); files "
            "written before are kept, so `lowres train --resume RUN` continues a run from "
            "its last checkpoint and `lowres sweep --resume SWEEP` skips finished runs."
        )
        sys.exit(2)


def _print_error(text: str) -> None:
    # The message is shown verbatim: user text such as sweep.languages=[de,es] or
    # context[answer_start:...] must not be read as rich markup and vanish.
    message = Text.assemble(("error:", "bold red"), " ", text)
    Console(stderr=True, soft_wrap=True).print(message, highlight=False)


def _run_hydra(verb: str, overrides: list[str]) -> None:
    register_schemas()
    if verb in ("train", "sweep"):
        overrides = train_or_sweep_overrides(verb, overrides)
        if overrides is None:
            return  # a finished run resumed: nothing to do
        job = _train_job if verb == "train" else _sweep_job
    else:
        overrides = evaluate_overrides(overrides)
        job = _evaluate_job

    check_launcher(overrides, config_dir())
    search_dir = None
    if verb == "train" and is_search(overrides):
        search_dir, extra = _prepare_search(overrides)
        overrides = [*overrides, *extra]
    folder = prepare_folder(verb, overrides)
    if folder is not None:
        overrides = [*overrides, *folder.overrides]
    overrides = [*overrides, *rank_overrides(config_dir() / f"{verb}.yaml", overrides)]
    sys.argv = [f"lowres {verb}", *overrides]
    app = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=verb)(job)
    if search_dir is not None:
        try:
            app()
        finally:
            record = write_search(search_dir)
            best = record["best"]
            print(f"lowres train: search folder {search_dir}; chosen: {best}", flush=True)
        return
    if folder is None:
        app()
        return
    _run_in_folder(verb, app, folder)


def _run_in_folder(verb: str, app, folder: ClaimedFolder) -> None:
    """Run the Hydra app in the folder chosen and locked for it."""
    print(f"lowres {verb}: run folder {folder.path}", flush=True)
    succeeded, user_error = False, False
    try:
        app()
        succeeded = True
    except SystemExit as exit_info:
        user_error = exit_info.code == 2
        raise
    finally:
        folder.close(succeeded=succeeded, user_error=user_error)
    print(f"lowres {verb}: done, run folder {folder.path}", flush=True)


def _prepare_search(overrides: list[str]) -> tuple[Path, list[str]]:
    """A search's checks and settings, before any trial: its folder, the added overrides."""
    if importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None:
        raise LowresError(
            f"{OPTUNA} needs Hydra's Optuna sweeper plugin, which is not installed; install "
            "it with `pip install -e '.[search]'` (hydra-optuna-sweeper)."
        )
    plain = [o for o in overrides if not o.startswith("-")]
    settings = read_overrides(plain)
    swept = {s.key: s.value_text for s in settings if s.sweep}
    fixed = [s.text for s in settings if not s.sweep]
    cfg, _ = compose("train", fixed)
    extra, folder, plan = plan_search(cfg, plain, swept)
    start_search(folder, plan)
    return folder, extra


def _searching() -> bool:
    """Whether this job is a trial of an Optuna search (its return value is the objective)."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized() and "optuna" in str(HydraConfig.get().sweeper.get("_target_"))


def _train_job(cfg) -> float | None:
    from lowres.recipes.train import train  # torch + transformers: only for this verb

    with user_errors():
        end_with_dispatcher()
        pin_gpu_for_sweep_job()
        metrics = train(cfg)
    if _searching():
        return search_objective(metrics.task_extras)
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
    parser.add_argument("--metric", required=True, choices=list(METRICS.builtins))
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
    parser.add_argument(
        "sweep_dir",
        type=Path,
        nargs="+",
        help="the folder `lowres sweep` wrote; several pool their runs into one report "
        "(folders that split one design, e.g. one sweep per language; --out then required)",
    )
    parser.add_argument("--out", type=Path, help="where to write (default SWEEP_DIR/report)")
    parser.add_argument(
        "--compare",
        nargs=2,
        action="append",
        metavar=("A", "B"),
        help="paired comparison of two methods (report labels) over the same seeds; "
        "repeatable; default: every pair when a task has at most four methods",
    )
    parser.add_argument(
        "--primary",
        nargs=4,
        action="append",
        metavar=("A", "B", "K", "LANGUAGE"),
        help="a pre-registered comparison (LANGUAGE avg: the mean over the task's languages); "
        "repeatable: Holm's correction runs over all of them, every other comparison is "
        "labelled exploratory",
    )
    args = parser.parse_args(argv)
    primary = []
    for a, b, k, language in args.primary or []:
        if not k.isdigit():
            raise LowresError(f"--primary {a} {b} {k} {language}: K is a shot count, e.g. 0.")
        primary.append((a, b, int(k), language))
    if len(args.sweep_dir) == 1 and is_search_folder(args.sweep_dir[0]):
        write_search_report(args.sweep_dir[0], args.out)  # a search's trials and choice
        return
    from lowres.sweeps.report import write_report  # matplotlib: only this verb's

    write_report(args.sweep_dir, args.out, [tuple(p) for p in args.compare or []] or None, primary)


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
    try:
        if args.out:
            folder = me5_small.convert_to(args.out, args.weights)
        else:
            folder = me5_small.ensure_converted(args.weights)
    except Exception as err:
        code = disk_error(err)
        if code is None or getattr(err, "filename", None):
            raise
        # safetensors and tokenizers write through their own code and name no file.
        target = args.out or "the cache folder"
        raise OSError(code, os.strerror(code), f"{target} (the converted model)") from err
    print(json.dumps({"folder": str(folder), "seconds": round(time.perf_counter() - started, 1)}))


def _study(argv: list[str]) -> None:
    # torch only for the machine check of a spec that pins its device or precision
    from lowres.sweeps import study, study_runner

    parser = argparse.ArgumentParser(
        prog="lowres study",
        description="Run a study spec's steps that have no results yet (run), list them "
        "(status), or rebuild its tables from its results without training (report).",
    )
    parser.add_argument("action", choices=["run", "status", "report"])
    parser.add_argument("spec", type=Path, help="the study spec, e.g. configs/study/v2.yaml")
    parser.add_argument("--limit", type=int, default=0, help="run: at most this many steps")
    parser.add_argument("--jobs", type=int, default=1, help="run: steps at once (cores shared)")
    parser.add_argument(
        "--retries", type=int, default=2, help="run: restarts of a step killed by a signal"
    )
    parser.add_argument(
        "--commit", action="store_true", help="run: git-commit each step and trial as it is kept"
    )
    parser.add_argument("--commands", action="store_true", help="status: each step's command")
    parser.add_argument(
        "--no-questions",
        action="store_true",
        help="report: leave out the intervals over test questions (they read the data)",
    )
    args = parser.parse_args(argv)
    spec = study.load_spec(args.spec)
    if args.action == "run":
        if args.jobs < 1:
            raise LowresError(f"lowres study run --jobs {args.jobs}: give 1 or more.")
        steps = study.plan(spec)  # one look at results/ for both checks
        problem = study.stale_problem(spec, steps) or study_runner.machine_problem(spec, steps)
        if problem:
            raise LowresError(f"{problem} No step was started.")
        ran = study_runner.run_study(
            spec,
            study_runner.process_launcher(args.jobs),
            jobs=args.jobs,
            limit=args.limit,
            retries=args.retries,
            commit=study_runner.git_committer() if args.commit else None,
            describe=study_runner.describe_machine,
        )
        kept = "committed" if args.commit else "commit them"
        print(f"lowres study: {ran} step(s) finished; results in {spec.results} ({kept})")
    elif args.action == "status":
        state = study.status(spec)
        for step in state["steps"]:
            line = f"{'done' if step['done'] else 'todo'}  {step['name']}"
            if step["trials_kept"] is not None and not step["done"]:
                line += f"  ({step['trials_kept']} of {spec.trials} trials kept)"
            print(line + (f"\n      lowres {' '.join(step['argv'])}" if args.commands else ""))
        waiting = state["waiting_for_search"]
        print(
            f"lowres study: {state['done']} of {state['planned']} planned steps done"
            + (
                f"; not yet planned: the steps after the search of {', '.join(waiting)}"
                if waiting
                else ""
            )
        )
        print(f"lowres study: {study_runner.next_words(spec)}")
        steps = study.plan(spec)
        for problem in (
            study.stale_problem(spec, steps),
            study_runner.machine_problem(spec, steps),
        ):
            if problem:
                print(f"lowres study: {problem}")
    else:
        study.report(spec, scorer=None if args.no_questions else _question_scorer(spec))
        print(f"lowres study: report in {Path(spec.results) / 'report'}")


def _question_scorer(spec):
    """Each question's score from a study run's kept predictions, against the data the spec's
    common overrides name (data.root): for the report's intervals over test questions."""
    from lowres.recipes.rescore import question_scorer

    register_schemas()
    scorers = {}

    def score(task: str, lang: str, predictions: dict) -> dict[str, float]:
        if task not in scorers:
            cfg, _ = compose("train", [f"+task={task}", f"backbone={spec.backbone}", *spec.common])
            scorers[task] = question_scorer(cfg)
        return scorers[task](lang, predictions)

    return score


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
        elif verb == "study":
            _study(rest)
        elif verb in OTHER_VERBS:
            _score(rest)
        else:
            raise LowresError(
                f"Unknown verb {verb!r}; expected one of "
                f"{', '.join([*HYDRA_VERBS, *OTHER_VERBS])}. See `lowres --help`."
            )


if __name__ == "__main__":
    main()
