"""The command line of ``lowres train``, ``evaluate`` and ``sweep`` made into the overrides
Hydra composes: normalised (``task=`` as ``+task=``, relative paths made absolute), checked
(a task, preset names, ``--resume``), composed as Hydra will compose it so that every value
is checked before the run folder is chosen, and the run folder claimed
(:mod:`lowres.runfolder`).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import hydra
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from lowres.distributed import world_size
from lowres.errors import ConfigError, LowresError
from lowres.files import inside
from lowres.overrides import key_of
from lowres.overrides import read as read_override
from lowres.overrides import read_all as read_overrides
from lowres.runfolder import (
    ClaimedFolder,
    check_resumable,
    check_same_overrides,
    claim_run_folder,
    resume_overrides,
)
from lowres.schema import check_override_keys, config_dir, validate
from lowres.sweeps.plan import has_method, method_dirs, method_names, user_config_dirs


def config_groups() -> dict[str, list[str]]:
    root = config_dir()
    return {
        group.name: sorted(p.stem for p in group.glob("*.yaml"))
        for group in sorted(root.iterdir())
        # configs/study/ holds study specs (lowres study), not a config group
        if group.is_dir() and group.name != "study" and any(group.glob("*.yaml"))
    }


def _normalize_task(overrides: list[str]) -> list[str]:
    # `task` is not in the defaults list (a run must name one), so Hydra needs `+task=`;
    # accept the plain form too because it is what people type first.
    return [f"+{o}" if _plain(o, "task") else o for o in overrides]


def _plain(token: str, *keys: str) -> bool:
    """Whether ``token`` sets one of ``keys`` with a plain (unprefixed) override."""
    setting = read_override(token)
    return setting is not None and setting.prefix == "" and setting.key in keys


# Keys holding a path that the saved config must still find from another folder.
PATH_KEYS = ("data.root", "align.parallel_file", "init_from", "pseudo.teacher")


def _absolute_paths(overrides: list[str]) -> list[str]:
    """Relative paths made absolute: .hydra/config.yaml keeps them, and `lowres evaluate`
    or `--resume` run from another folder must read the same files."""
    out = []
    for override in overrides:
        setting = read_override(override)
        if setting and setting.prefix in ("", "+", "++") and setting.key in PATH_KEYS:
            value = setting.value_text
            if value and not value.startswith(("/", "$", "'", '"')):
                override = f"{setting.prefix}{setting.key}={Path(value).expanduser().resolve()}"
        out.append(override)
    return out


# Sweep settings that are dicts keyed by the user's own names.
_OPEN_DICTS = ("sweep.grid", "sweep.stage1_from")


def normalize_grid(overrides: list[str]) -> list[str]:
    # sweep.grid (config keys -> values) and sweep.stage1_from (methods -> run folders) are
    # dicts of new keys, which a plain override may not add to a struct config; `++` adds
    # them and, like a plain override, replaces a key's value when a preset already sets it.
    return [f"++{o}" if _plain(o, *_OPEN_DICTS) else o for o in overrides]


def _check_method(overrides: list[str]) -> None:
    """``+method=NAME`` must name a preset in lowres's configs or the user's search path."""
    settings = read_overrides(overrides)
    names = [s.value_text for s in settings if s.key == "method" and s.prefix in ("", "+")]
    if not names:
        return
    searchpath = next((s.value() for s in settings if s.key == "hydra.searchpath"), [])
    config_dirs = user_config_dirs([str(entry) for entry in searchpath or []])
    folders = method_dirs(config_dirs)
    for name in names:
        if not has_method(name, config_dirs):
            options = method_names(config_dirs)
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
    for setting in read_overrides(overrides):
        key, value = setting.key, setting.value_text
        if key not in groups or not value:
            continue
        if value.startswith(("/", "~")) or not inside(config_dir() / key, f"{value}.yaml"):
            raise LowresError(
                f"{key}={value}: a {key} option is a preset's name (one of "
                f"{', '.join(config_groups()[key])}), not a path, and it may not lead out of "
                f"the {key}/ folder. A preset of your own goes in DIR/{key}/NAME.yaml, with "
                f"hydra.searchpath=[file://DIR] and {key}=NAME on the command line."
            )


def _has_task(overrides: list[str]) -> bool:
    return any(s.key == "task" and s.prefix in ("+", "++") for s in read_overrides(overrides))


def _wants_help(overrides: list[str]) -> bool:
    return any(o in ("--help", "-h", "--hydra-help", "--info") for o in overrides)


def train_or_sweep_overrides(verb: str, overrides: list[str]) -> list[str] | None:
    """The overrides of a train or sweep command (``--resume DIR`` expanded into the run's
    own), checked; None when it resumes a finished run, which leaves nothing to do."""
    resuming, finished = None, False
    if "--resume" in overrides:
        at = overrides.index("--resume")
        if at + 1 >= len(overrides):
            raise LowresError(f"--resume needs a folder: lowres {verb} --resume DIR")
        resuming = overrides[at + 1]
        given = [*overrides[:at], *overrides[at + 2 :]]
        finished = verb == "train" and not check_resumable(resuming, given)
        if verb == "sweep" and any(key_of(o) == "hydra.sweep.dir" for o in given):
            raise LowresError(
                f"--resume {resuming} continues the sweep in its own folder, so "
                "hydra.sweep.dir cannot apply. Resume without it."
            )
        overrides = [*given, *resume_overrides(resuming, verb, given)]
    overrides = _absolute_paths(_normalize_task(overrides))
    if resuming and finished:
        # Other settings are refused as for an unfinished run; the same ones find
        # nothing left to do, and say so instead of exiting 0 in silence.
        check_same_overrides(Path(resuming), overrides)
        print(
            f"lowres train --resume {resuming}: the run finished already "
            f"({Path(resuming) / 'metrics.json'}); nothing was done.",
            file=sys.stderr,
            flush=True,
        )
        return None
    if verb == "sweep":
        overrides = normalize_grid(overrides)
    _check_option_names(overrides)
    _check_method(overrides)
    if not _has_task(overrides) and not _wants_help(overrides):
        raise LowresError(
            f"lowres {verb} needs a task; choose one of "
            f"{', '.join(config_groups()['task'])}, e.g. `lowres {verb} +task=xquad`."
        )
    return overrides


def evaluate_overrides(overrides: list[str]) -> list[str]:
    # evaluate: task=NAME evaluates the checkpoint on another task (same as +task=NAME).
    overrides = _normalize_task(overrides)
    _check_option_names(overrides)
    if not _wants_help(overrides) and not any(
        s.key == "checkpoint" and s.value_text.strip() for s in read_overrides(overrides)
    ):
        raise LowresError(
            "lowres evaluate needs checkpoint=RUN_DIR: the folder `lowres train` wrote "
            "(it prints its path), e.g. `lowres evaluate "
            "checkpoint=outputs/xquad/me5-small/2026-01-01_10-00-00`."
        )
    return overrides


def compose(verb: str, overrides: list[str]):
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


def prepare_folder(verb: str, overrides: list[str]) -> ClaimedFolder | None:
    """The run folder, chosen, checked, created and locked before Hydra writes into it
    (:func:`lowres.runfolder.claim_run_folder`).

    Hydra's own modes (--cfg, --help, -m) and data-parallel ranks (rank 0 picks the folder
    for all of them) keep Hydra's behaviour.
    """
    if world_size() > 1 or any(o.startswith("-") for o in overrides):
        return None
    if verb == "evaluate":
        _check_evaluate_overrides(overrides)
    cfg, folder = compose(verb, overrides)
    key = "hydra.sweep.dir" if verb == "sweep" else "hydra.run.dir"
    explicit = any(s.key == key and "~" not in s.prefix for s in read_overrides(overrides))
    extra = []
    root = cfg.get("data", {}).get("root") if verb != "evaluate" else None
    if root and not Path(root).is_absolute():
        # A relative data.root (the data=local default is one) would be saved as such, and
        # `lowres evaluate` of the run from another folder would not find the files.
        extra.append(f"data.root={Path(root).expanduser().resolve()}")
    return claim_run_folder(verb, cfg, Path(folder), overrides, explicit=explicit, extra=extra)


def _check_evaluate_overrides(overrides: list[str]) -> None:
    """``lowres evaluate`` rebuilds the model from the run's saved config; a different
    backbone, prompt or method (a config group) cannot load its trained parameters."""
    # task=NAME is the one group evaluate takes: a checkpoint answers another task of its
    # kind (an XQuAD run on MLQA); recipes/evaluate.py checks that the head fits.
    groups = set(config_groups()) - {"task"}
    for override in overrides:
        key = key_of(override)
        if key in groups:
            raise LowresError(
                f"lowres evaluate does not take {override}: it rebuilds the model from the "
                "checkpoint run's saved config (.hydra/config.yaml), config groups included "
                "(task=NAME is the one exception: another task of the same kind). "
                "Override single keys instead, e.g. data.eval_languages=[de,es] or "
                "trainer.eval_batch_size=64; to evaluate another model, train it first."
            )
