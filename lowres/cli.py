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
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import hydra
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console
from rich.text import Text

from lowres.distributed import rank_overrides, world_size
from lowres.errors import ConfigError, LowresError
from lowres.files import DISK_ERRORS, disk_error, inside
from lowres.launchers import check_launcher, end_with_dispatcher, pin_gpu_for_sweep_job
from lowres.registry import METRICS
from lowres.runfolder import (
    LOCK_FILE,
    FolderLock,
    RunFolder,
    claim_new_folder,
    clear_folder,
    ensure_folder,
    held_locks,
    holds_run,
    produced_outputs,
    refuse_links,
    remove_empty_parents,
    remove_if_scaffolding,
    unexpected_entries,
)
from lowres.schema import check_override_keys, config_dir, register_schemas, validate
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

# The default run folders (configs/*.yaml hydra.run.dir) live under ./outputs.
OUTPUTS_ROOT = Path("outputs")


def config_groups() -> dict[str, list[str]]:
    root = config_dir()
    return {
        group.name: sorted(p.stem for p in group.glob("*.yaml"))
        for group in sorted(root.iterdir())
        # configs/study/ holds study specs (lowres study), not a config group
        if group.is_dir() and group.name != "study" and any(group.glob("*.yaml"))
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


def _normalize_task(overrides: list[str]) -> list[str]:
    # `task` is not in the defaults list (a run must name one), so Hydra needs `+task=`;
    # accept the plain form too because it is what people type first.
    return [f"+{o}" if o.startswith("task=") else o for o in overrides]


# Keys holding a path that the saved config must still find from another folder.
PATH_KEYS = ("data.root", "align.parallel_file", "init_from", "pseudo.teacher")


def _absolute_paths(overrides: list[str]) -> list[str]:
    """Relative paths made absolute: .hydra/config.yaml keeps them, and `lowres evaluate`
    or `--resume` run from another folder must read the same files."""
    out = []
    for override in overrides:
        prefix = override[: len(override) - len(override.lstrip("+"))]
        key, sep, value = override[len(prefix) :].partition("=")
        if sep and key in PATH_KEYS and value and not value.startswith(("/", "$", "'", '"')):
            override = f"{prefix}{key}={Path(value).expanduser().resolve()}"
        out.append(override)
    return out


# Sweep settings that are dicts keyed by the user's own names.
_OPEN_DICTS = ("sweep.grid=", "sweep.stage1_from=")


def _normalize_grid(overrides: list[str]) -> list[str]:
    # sweep.grid (config keys -> values) and sweep.stage1_from (methods -> run folders) are
    # dicts of new keys, which a plain override may not add to a struct config; `++` adds
    # them and, like a plain override, replaces a key's value when a preset already sets it.
    return [f"++{o}" if o.startswith(_OPEN_DICTS) else o for o in overrides]


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


def _check_option_names(overrides: list[str]) -> None:
    """A config group's option is a name inside the group's folder: ``+method=../../x``
    must not load a YAML file from elsewhere."""
    groups = set(config_groups())
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if not sep or key not in groups or not value:
            continue
        if value.startswith(("/", "~")) or not inside(config_dir() / key, f"{value}.yaml"):
            raise LowresError(
                f"{key}={value}: a {key} option is a preset's name (one of "
                f"{', '.join(config_groups()[key])}), not a path, and it may not lead out of "
                f"the {key}/ folder. A preset of your own goes in DIR/{key}/NAME.yaml, with "
                f"hydra.searchpath=[file://DIR] and {key}=NAME on the command line."
            )


def _has_task(overrides: list[str]) -> bool:
    return any(o.startswith(("+task=", "++task=")) for o in overrides)


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _launcher_overrides(run_dir: str, given: list[str]) -> list[str]:
    """The launcher a sweep was started with (``hydra/launcher=...``, ``hydra.launcher.*``).

    Hydra keeps these in .hydra/hydra.yaml, not overrides.yaml; a sweep started on SLURM
    resumes on SLURM. A launcher setting given again on the command line wins.
    """
    path = Path(run_dir) / ".hydra" / "hydra.yaml"
    if not path.is_file():
        return []
    recorded = (yaml.safe_load(path.read_text()) or {}).get("hydra", {}).get("overrides", {})
    given_keys = {_key(o) for o in given}
    if any(key.startswith("hydra/launcher") for key in given_keys):
        return []  # another launcher: none of the old one's settings apply
    return [
        o
        for o in recorded.get("hydra") or []
        if _key(o).startswith(("hydra/launcher", "hydra.launcher.")) and _key(o) not in given_keys
    ]


def _resume_overrides(
    run_dir: str, verb: str = "train", given: list[str] | None = None
) -> list[str]:
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
        return [
            *previous,
            *_launcher_overrides(run_dir, given or []),
            f"hydra.sweep.dir={Path(run_dir).resolve()}",
        ]
    return [*previous, f"hydra.run.dir={Path(run_dir).resolve()}", "resume=true"]


def _run_hydra(verb: str, overrides: list[str]) -> None:
    register_schemas()
    if verb in ("train", "sweep"):
        overrides = _train_or_sweep_overrides(verb, overrides)
        if overrides is None:
            return  # a finished run resumed: nothing to do
        job = _train_job if verb == "train" else _sweep_job
    else:
        overrides = _evaluate_overrides(overrides)
        job = _evaluate_job

    check_launcher(overrides, config_dir())
    search_dir = None
    if verb == "train" and is_search(overrides):
        search_dir, extra = _prepare_search(overrides)
        overrides = [*overrides, *extra]
    folder = _prepare_folder(verb, overrides)
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


def _wants_help(overrides: list[str]) -> bool:
    return any(o in ("--help", "-h", "--hydra-help", "--info") for o in overrides)


def _train_or_sweep_overrides(verb: str, overrides: list[str]) -> list[str] | None:
    """The overrides of a train or sweep command (``--resume DIR`` expanded into the run's
    own), checked; None when it resumes a finished run, which leaves nothing to do."""
    resuming, finished = None, False
    if "--resume" in overrides:
        at = overrides.index("--resume")
        if at + 1 >= len(overrides):
            raise LowresError(f"--resume needs a folder: lowres {verb} --resume DIR")
        resuming = overrides[at + 1]
        given = [*overrides[:at], *overrides[at + 2 :]]
        finished = verb == "train" and not _check_resumable(resuming, given)
        if verb == "sweep" and any(_key(o) == "hydra.sweep.dir" for o in given):
            raise LowresError(
                f"--resume {resuming} continues the sweep in its own folder, so "
                "hydra.sweep.dir cannot apply. Resume without it."
            )
        overrides = [*given, *_resume_overrides(resuming, verb, given)]
    overrides = _absolute_paths(_normalize_task(overrides))
    if resuming and finished:
        # Other settings are refused as for an unfinished run; the same ones find
        # nothing left to do, and say so instead of exiting 0 in silence.
        _check_same_overrides(Path(resuming), overrides)
        print(
            f"lowres train --resume {resuming}: the run finished already "
            f"({Path(resuming) / 'metrics.json'}); nothing was done.",
            file=sys.stderr,
            flush=True,
        )
        return None
    if verb == "sweep":
        overrides = _normalize_grid(overrides)
    _check_option_names(overrides)
    _check_method(overrides)
    if not _has_task(overrides) and not _wants_help(overrides):
        raise LowresError(
            f"lowres {verb} needs a task; choose one of "
            f"{', '.join(config_groups()['task'])}, e.g. `lowres {verb} +task=xquad`."
        )
    return overrides


def _evaluate_overrides(overrides: list[str]) -> list[str]:
    # evaluate: task=NAME evaluates the checkpoint on another task (same as +task=NAME).
    overrides = _normalize_task(overrides)
    _check_option_names(overrides)
    if not _wants_help(overrides) and not any(
        _key(o) == "checkpoint" and o.partition("=")[2].strip() for o in overrides
    ):
        raise LowresError(
            "lowres evaluate needs checkpoint=RUN_DIR: the folder `lowres train` wrote "
            "(it prints its path), e.g. `lowres evaluate "
            "checkpoint=outputs/xquad/me5-small/2026-01-01_10-00-00`."
        )
    return overrides


def _run_in_folder(verb: str, app, folder: _Folder) -> None:
    """Run the Hydra app in the folder chosen and locked for it; release the lock after,
    and leave no folder behind when the command failed before producing anything."""
    print(f"lowres {verb}: run folder {folder.path}", flush=True)
    succeeded, user_error = False, False
    try:
        app()
        succeeded = True
    except SystemExit as exit_info:
        user_error = exit_info.code == 2
        raise
    finally:
        # A new run stopped by a user error before training produced anything (a device
        # it cannot have, a prompt layer the backbone lacks) leaves nothing that would
        # block the corrected command in the same folder.
        if user_error and folder.fresh and not produced_outputs(folder.path):
            clear_folder(folder.path, keep=LOCK_FILE)
        folder.lock.release()
        # A command that failed before producing anything leaves no junk folder, nor the
        # empty task/backbone folders above a default one.
        if not succeeded and folder.created and remove_if_scaffolding(folder.path):
            remove_empty_parents(folder.path, OUTPUTS_ROOT)
    print(f"lowres {verb}: done, run folder {folder.path}", flush=True)


class _Folder:
    """The folder a train/evaluate/sweep command writes, chosen and locked before Hydra runs."""

    def __init__(
        self,
        path: Path,
        key: str,
        lock: FolderLock,
        *,
        created: bool,
        keep_saved_config: bool,
        extra: list[str],
        fresh: bool = False,
    ) -> None:
        self.path, self.created, self.lock = path, created, lock
        # A new run in a new or empty folder: all it holds is this command's own.
        self.fresh = fresh
        self.overrides = [f"{key}={path}", *extra]
        if keep_saved_config:
            # A resumed run already holds the config it was trained with; Hydra must not
            # rewrite .hydra/ (it would replace a finished run's config before any check).
            self.overrides.append("hydra.output_subdir=null")


def _compose(verb: str, overrides: list[str]):
    """The command's config as Hydra will compose it, with the hydra node; user errors as
    LowresError (exit 2), before Hydra creates or writes anything."""
    check_override_keys(overrides)
    try:
        with hydra.initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = hydra.compose(config_name=verb, overrides=overrides, return_hydra_config=True)
            key = "sweep" if verb == "sweep" else "run"
            folder = str(cfg.hydra[key].dir)
            if verb != "evaluate":
                # Every value checked before a folder exists (evaluate checks the
                # checkpoint's saved config, which it reads later).
                validate(cfg)
    except (HydraException, OmegaConfBaseException) as err:
        missing = re.search(r"Could not find '([^'/]+)/([^']+)'", str(err))
        if missing and missing.group(1) in config_groups():
            group, name = missing.groups()
            raise ConfigError(
                f"{group}={name} is not a {group} option; choose one of "
                f"{', '.join(config_groups()[group])} (configs/{group}/)."
            ) from None
        cause = f" {err.__cause__}" if isinstance(err.__cause__, OmegaConfBaseException) else ""
        raise ConfigError(
            f"The command line does not compose into a lowres {verb} config: "
            f"{' '.join(str(err).split())}{' '.join(cause.split())} "
            "See `lowres --help` for the config groups and their options."
        ) from None
    return cfg, folder


def _prepare_folder(verb: str, overrides: list[str]) -> _Folder | None:
    """Choose, check, create and lock the run folder before Hydra writes into it.

    Hydra writes .hydra/ into hydra.run.dir before any lowres code runs, so every refusal
    (a finished run, another run's folder, a folder in use) must happen here. A default
    folder is claimed atomically, so runs started in the same second get folders of their
    own. Hydra's own modes (--cfg, --help, -m) and data-parallel ranks (rank 0 picks the
    folder for all of them) keep Hydra's behaviour.
    """
    if world_size() > 1 or any(o.startswith("-") for o in overrides):
        return None
    if verb == "evaluate":
        _check_evaluate_overrides(overrides)
    cfg, folder = _compose(verb, overrides)
    key = "hydra.sweep.dir" if verb == "sweep" else "hydra.run.dir"
    explicit = any(o.lstrip("+").startswith(f"{key}=") for o in overrides)
    path = Path(folder)
    extra = []
    root = cfg.get("data", {}).get("root") if verb != "evaluate" else None
    if root and not Path(root).is_absolute():
        # A relative data.root (the data=local default is one) would be saved as such, and
        # `lowres evaluate` of the run from another folder would not find the files.
        extra.append(f"data.root={Path(root).expanduser().resolve()}")
    if not explicit:
        _check_default_folder(verb, cfg, path)
        claimed = claim_new_folder(path)
        lock = FolderLock(claimed).acquire()
        return _Folder(
            claimed, key, lock, created=True, keep_saved_config=False, extra=extra, fresh=True
        )
    created = not path.exists()
    folder = ensure_folder(path)
    # Locked before it is checked: a check without the lock could pass while another
    # process finishes a run there, and Hydra would then rewrite that run's .hydra/.
    lock = FolderLock(folder).acquire()
    try:
        refuse_links(folder)
        keep_saved_config = _check_folder(verb, cfg, folder, overrides)
    except BaseException:
        lock.release()
        if created:
            remove_if_scaffolding(folder)
        raise
    fresh = verb == "train" and not cfg.resume
    return _Folder(
        folder,
        key,
        lock,
        created=created,
        keep_saved_config=keep_saved_config,
        extra=extra,
        fresh=fresh,
    )


def _check_default_folder(verb: str, cfg, path: Path) -> None:
    """The default folder is built from names in the config (task.name, backbone.name); one
    holding ``..`` must not place the run outside outputs/."""
    if path.resolve().is_relative_to(OUTPUTS_ROOT.resolve()):
        return
    names = {"task.name": cfg.get("task", {}).get("name"), "backbone.name": None}
    if verb != "evaluate":
        names["backbone.name"] = cfg.get("backbone", {}).get("name")
    culprits = [f"{k}={v}" for k, v in names.items() if v and ".." in Path(str(v)).parts]
    named = " and ".join(culprits) or "a name in hydra.run.dir's default"
    raise LowresError(
        f"The run folder {path} lies outside {OUTPUTS_ROOT}/: {named} leads out of it. The "
        "default folder is outputs/<task.name>/<backbone.name>/<date>; give a name without "
        "'..' (or an absolute path), or choose the folder with hydra.run.dir=DIR."
    )


def _check_folder(verb: str, cfg, path: Path, overrides: list[str]) -> bool:
    """Refuse a given run folder this command must not write into (called under its lock);
    whether the folder's saved config is kept (a resumed run)."""
    keep_saved_config = False
    if verb == "train" and not cfg.resume and holds_run(path):
        if (path / "metrics.json").is_file():
            raise LowresError(
                f"The run folder {path} already holds a finished run (metrics.json); "
                "lowres never overwrites one. Choose another hydra.run.dir."
            )
        raise LowresError(
            f"The run folder {path} already holds another run's files (.hydra/); lowres does "
            f"not train a new run over them. Continue that run with `lowres train --resume "
            f"{path}`, or choose another hydra.run.dir."
        )
    if verb == "train" and cfg.resume and (path / ".hydra" / "overrides.yaml").is_file():
        _check_same_overrides(path, overrides)
        keep_saved_config = True
    if verb == "evaluate" and holds_run(path):
        raise LowresError(
            f"hydra.run.dir={path} already holds a run (.hydra/ or metrics.json); "
            "`lowres evaluate` writes its scores into a new folder and never into a trained "
            "run's. Leave hydra.run.dir out (a new folder under outputs/evaluate/) or give an "
            "empty one."
        )
    if verb == "sweep" and (path / "metrics.json").is_file():
        raise LowresError(
            f"hydra.sweep.dir={path} is a finished training run's folder, not a sweep folder; "
            "choose another hydra.sweep.dir."
        )
    if verb == "sweep":
        busy = held_locks(path / "runs")  # the sweep folder's own lock is this command's
        if busy:
            pids = ", ".join(sorted(set(busy.values())))
            names = ", ".join(str(folder.relative_to(path)) for folder in list(busy)[:3])
            raise LowresError(
                f"Runs of the sweep {path} are still being trained by process(es) {pids} "
                f"({names}{', ...' if len(busy) > 3 else ''}): workers left by a sweep that "
                "was killed, or another sweep command. Two writers in one run would mix its "
                f"results. Wait for them to finish or stop them (kill {pids.split(',')[0]}), "
                "then resume."
            )
    foreign = unexpected_entries(path)
    a_sweep = verb == "sweep" and (path / "sweep.json").is_file()
    if foreign and not holds_run(path) and not a_sweep:
        key = "hydra.sweep.dir" if verb == "sweep" else "hydra.run.dir"
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise LowresError(
            f"{key}={path} is a folder of other files ({shown}), not a lowres run; lowres "
            "writes a new run only into a new or empty folder, so that none of them is "
            f"overwritten. Choose another {key} (a folder that does not exist yet)."
        )
    return keep_saved_config


def _task_overrides(overrides: list[str]) -> list[str]:
    """The overrides Hydra saves in overrides.yaml: not its own, not resume."""
    return sorted(
        o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/", "resume="))
    )


def _settings(overrides: list[str]) -> dict[str, str]:
    """Override key -> value, the last one winning as in Hydra (``+``/``~`` prefixes kept
    apart from the key, so ``+task=x`` and ``task=x`` name the same setting)."""
    settings = {}
    for override in _task_overrides(overrides):
        key, _, value = override.partition("=")
        settings[key.lstrip("+")] = value
    return settings


def _check_same_overrides(path: Path, overrides: list[str]) -> None:
    saved = yaml.safe_load((path / ".hydra" / "overrides.yaml").read_text()) or []
    before, now = _settings(saved), _settings(overrides)
    added = [f"{k}={v}" for k, v in now.items() if k not in before]
    changed = [f"{k}={now[k]} (trained with {before[k]})" for k in now if k in before
               and now[k] != before[k]]  # fmt: skip
    dropped = [f"{k}={v}" for k, v in before.items() if k not in now]
    if added or changed or dropped:
        raise LowresError(
            f"Resuming {path} with other settings than it was trained with (added: "
            f"{', '.join(added) or 'none'}; changed: {', '.join(changed) or 'none'}; missing: "
            f"{', '.join(dropped) or 'none'}); a resumed run must continue the same run. "
            f"Resume it as it was with `lowres train --resume {path}` (no other overrides), "
            "or start a new run in another folder."
        )


def _check_resumable(run_dir: str, given: list[str]) -> bool:
    """Whether there is anything to resume: a finished run has nothing left (False); a
    folder without a checkpoint would silently start from step 0 (refused)."""
    path = Path(run_dir)
    elsewhere = [
        o for o in given if o.lstrip("+").startswith(("hydra.run.dir=", "hydra.sweep.dir="))
    ]
    if elsewhere:
        raise LowresError(
            f"--resume {run_dir} continues the run in its own folder, so {elsewhere[0]} "
            "cannot apply. Resume without it, or copy the folder there first and resume "
            "the copy: `lowres train --resume COPY`."
        )
    if not (path / ".hydra" / "overrides.yaml").is_file():
        return True  # not a run folder: _resume_overrides says so
    if RunFolder.finished_at(path):
        return False
    if not any((path / "trainer").glob("checkpoint-*")):
        raise LowresError(
            f"--resume {run_dir}: the run has no resumable checkpoint (no "
            f"{path / 'trainer'}/checkpoint-N); runs save them only with "
            "trainer.save_steps=N. Start it again in a new folder (the same command without "
            "--resume and hydra.run.dir), with trainer.save_steps set to make it resumable."
        )
    return True


def _check_evaluate_overrides(overrides: list[str]) -> None:
    """``lowres evaluate`` rebuilds the model from the run's saved config; a different
    backbone, prompt or method (a config group) cannot load its trained parameters."""
    # task=NAME is the one group evaluate takes: a checkpoint answers another task of its
    # kind (an XQuAD run on MLQA); recipes/evaluate.py checks that the head fits.
    groups = set(config_groups()) - {"task"}
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if key in groups:
            raise LowresError(
                f"lowres evaluate does not take {override}: it rebuilds the model from the "
                "checkpoint run's saved config (.hydra/config.yaml), config groups included "
                "(task=NAME is the one exception: another task of the same kind). "
                "Override single keys instead, e.g. data.eval_languages=[de,es] or "
                "trainer.eval_batch_size=64; to evaluate another model, train it first."
            )


def _prepare_search(overrides: list[str]) -> tuple[Path, list[str]]:
    """A search's checks and settings, before any trial: its folder, the added overrides."""
    if importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None:
        raise LowresError(
            f"{OPTUNA} needs Hydra's Optuna sweeper plugin, which is not installed; install "
            "it with `pip install -e '.[search]'` (hydra-optuna-sweeper)."
        )
    plain = [o for o in overrides if not o.startswith("-")]
    parsed = OverridesParser.create().parse_overrides(plain)
    swept = {
        p.get_key_element().lstrip("+~"): text.split("=", 1)[1]
        for p, text in zip(parsed, plain, strict=True)
        if p.is_sweep_override()
    }
    fixed = [text for p, text in zip(parsed, plain, strict=True) if not p.is_sweep_override()]
    cfg, _ = _compose("train", fixed)
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


def _run_step(argv: list[str]) -> None:
    """One study step as its own ``lowres`` process (a long study frees memory per step)."""
    result = subprocess.run([sys.executable, "-m", "lowres", *argv], check=False)
    if result.returncode:
        raise LowresError(
            f"The study step `lowres {' '.join(argv)}` failed (exit {result.returncode}); its "
            "output is above. Fix the cause and run `lowres study run` again: finished steps "
            "are skipped."
        )


def _study(argv: list[str]) -> None:
    from lowres.sweeps import study  # no torch: the steps run as their own processes

    parser = argparse.ArgumentParser(
        prog="lowres study",
        description="Run a study spec's steps that have no results yet (run), list them "
        "(status), or rebuild its tables from its results without training (report).",
    )
    parser.add_argument("action", choices=["run", "status", "report"])
    parser.add_argument("spec", type=Path, help="the study spec, e.g. configs/study/v2.yaml")
    parser.add_argument("--limit", type=int, default=0, help="run: at most this many steps")
    parser.add_argument("--commands", action="store_true", help="status: each step's command")
    args = parser.parse_args(argv)
    spec = study.load_spec(args.spec)
    if args.action == "run":
        ran = study.run_study(spec, _run_step, limit=args.limit)
        print(f"lowres study: {ran} step(s) ran; results in {spec.results} (commit them)")
    elif args.action == "status":
        state = study.status(spec)
        for step in state["steps"]:
            line = f"{'done' if step['done'] else 'todo'}  {step['name']}"
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
    else:
        study.report(spec)
        print(f"lowres study: report in {Path(spec.results) / 'report'}")


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
