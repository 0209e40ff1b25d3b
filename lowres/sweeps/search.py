"""Hyperparameter search on source dev: ``lowres train -m hydra/sweeper=optuna ...``.

Hydra's Optuna sweeper (the ``search`` extra) proposes each trial; every trial is a normal
training run whose objective is the source language's held-out dev score (whole articles of
the source pool, ``data.source_dev_articles``), never a target language's evaluation
questions. A method preset may carry its search space (``search.space``). After the search,
``search.json`` in the search folder records every trial and the chosen values; ``lowres
report SEARCH_DIR`` tables it.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import yaml

from lowres.errors import ConfigError, LowresError
from lowres.overrides import read_all

OPTUNA = "hydra/sweeper=optuna"
OBJECTIVE = "source_dev"
RECORD = "search.json"
# SQuAD v1.1 dev holds XQuAD's English questions: a source dev drawn from it could score them.
LEAKY_SOURCE_SPLITS = {"dev": "SQuAD v1.1 dev, which holds XQuAD's English questions"}


def is_search(overrides: list[str]) -> bool:
    return any(o.lstrip("+") == OPTUNA for o in overrides)


def check_search(cfg: Any) -> None:
    """Refuse a search whose objective would score anything but the source language's dev."""
    objective = cfg.search.objective
    if objective != OBJECTIVE:
        raise ConfigError(
            f"search.objective={objective!r}: a search maximises the source language's "
            f"held-out dev score (search.objective={OBJECTIVE}); scoring {objective!r} would "
            "choose hyperparameters on target-language evaluation questions, so every score "
            "reported on them afterwards would be optimistic. Leave search.objective out."
        )
    if cfg.data.source_dev_articles <= 0:
        raise ConfigError(
            "A search (hydra/sweeper=optuna) scores each trial on the source language's dev "
            "set, held out from the training pool by article, and data.source_dev_articles=0 "
            "holds out none. Set data.source_dev_articles=N (e.g. 5 of SQuAD dev's 48 "
            "articles), optionally data.source_dev_examples=M to score a fixed sample of them."
        )
    if cfg.task.kind == "extractive_qa" and cfg.data.source_split in LEAKY_SOURCE_SPLITS:
        raise ConfigError(
            f"data.source_split={cfg.data.source_split} is "
            f"{LEAKY_SOURCE_SPLITS[cfg.data.source_split]}: source dev articles drawn from it "
            "could hold target-language test questions. Search with data.source_split="
            "dev_minus_xquad or train."
        )


PLAN = "search_plan.json"


def plan_search(
    cfg: Any, overrides: list[str], swept: dict[str, str]
) -> tuple[list[str], Path, dict[str, Any]]:
    """What the command adds for the Optuna sweeper (direction, budget, seed, the preset's
    space, the folder), the search folder, and the plan written there before any trial.

    ``swept``: the command line's own sweeps (key -> Hydra sweep text); they win over the
    space a method preset carries.
    """
    check_search(cfg)
    # Hydra's Optuna sweeper drops a key from the space when the command line also fixes
    # it, so a key both swept and fixed would silently not be searched at all.
    fixed = {s.key: s.text for s in read_all(overrides) if not s.sweep}
    both = sorted(set(swept) & set(fixed))
    if both:
        key = both[0]
        raise ConfigError(
            f"{key} is both searched ({key}={swept[key]}) and fixed ({fixed[key]}) on the "
            "command line; Hydra's Optuna sweeper would keep the fixed value and search "
            f"nothing for {key}. Give {key} once: as a sweep to search it, or as a value to "
            "fix it."
        )
    # A value fixed on the command line wins over the preset's space for that key.
    preset = {
        k: str(v) for k, v in dict(cfg.search.space).items() if k not in swept and k not in fixed
    }
    space = {**preset, **swept}
    if not space:
        raise ConfigError(
            "The search has nothing to search: no key on the command line is a sweep (e.g. "
            "trainer.lr=tag(log,interval(1e-5,1e-3))) and search.space is empty (a method "
            "preset may carry one). Add a sweep, or choose a method whose preset has one."
        )
    extra = [f"{key}={value}" for key, value in sorted(preset.items())]
    given = {setting.key: setting.value_text for setting in read_all(overrides)}
    if given.get("hydra.sweeper.direction", "maximize") != "maximize":
        raise ConfigError(
            f"hydra.sweeper.direction={given['hydra.sweeper.direction']}: a search maximises "
            "the source dev score; leave hydra.sweeper.direction out."
        )
    settings = {
        "hydra.sweeper.direction": "maximize",
        "hydra.sweeper.n_trials": str(cfg.search.trials),
        "hydra.sweeper.sampler.seed": str(cfg.search.seed),
    }
    extra += [f"{key}={value}" for key, value in settings.items() if key not in given]
    folder = given.get("hydra.sweep.dir") or (
        f"outputs/search/{cfg.task.name}/{cfg.backbone.name}/{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    )
    if "hydra.sweep.dir" not in given:
        extra.append(f"hydra.sweep.dir={folder}")
    plan = {
        "objective": OBJECTIVE,
        "source_language": cfg.data.source_language,
        "source_dev_articles": cfg.data.source_dev_articles,
        "source_dev_examples": cfg.data.source_dev_examples,
        "n_trials": int(given.get("hydra.sweeper.n_trials", cfg.search.trials)),
        "seed": int(given.get("hydra.sweeper.sampler.seed", cfg.search.seed)),
        "space": dict(sorted(space.items())),
        "overrides": [o for o in overrides if not o.startswith("-")],
    }
    return extra, Path(folder), plan


def start_search(folder: Path, plan: dict[str, Any]) -> None:
    if (folder / PLAN).is_file() or (folder / RECORD).is_file():
        raise LowresError(
            f"{folder} already holds a search ({PLAN}); a search never writes over another. "
            "Choose another hydra.sweep.dir, or leave it out for a new folder."
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PLAN).write_text(json.dumps(plan, indent=2) + "\n", encoding="utf-8")


def search_objective(extras: dict[str, Any]) -> float:
    """A trial's objective: its source dev main score (checked present before any trial)."""
    dev = extras["source_dev"]
    return float(dev[dev["main_score"]])


def _overrides_file(run_dir: Path) -> Path:
    """A trial's overrides: Hydra's file in a run folder, or its copy in kept results."""
    hydra_file = run_dir / ".hydra" / "overrides.yaml"
    return hydra_file if hydra_file.is_file() else run_dir / "overrides.yaml"


def _trial_params(run_dir: Path, keys: list[str]) -> dict[str, Any]:
    saved = yaml.safe_load(_overrides_file(run_dir).read_text()) or []
    return {s.key: yaml.safe_load(s.value_text) for s in read_all(saved) if s.key in keys}


def collect_search(search_dir: str | Path) -> dict[str, Any]:
    """Every trial of a finished (or stopped) search folder, and the best one."""
    folder = Path(search_dir)
    if not (folder / PLAN).is_file():
        raise LowresError(
            f"{folder} is not a search folder: it has no {PLAN} (written when `lowres train -m "
            "hydra/sweeper=optuna ...` starts). Give the folder the search printed."
        )
    plan = json.loads((folder / PLAN).read_text())
    keys = sorted(plan["space"])
    trials = []
    for run_dir in sorted(
        (p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    ):
        metrics_file = run_dir / "metrics.json"
        trial: dict[str, Any] = {"number": int(run_dir.name), "run_dir": run_dir.name}
        if _overrides_file(run_dir).is_file():
            trial["params"] = _trial_params(run_dir, keys)
        if metrics_file.is_file():
            metrics = json.loads(metrics_file.read_text())
            dev = metrics.get("source_dev") or {}
            trial.update(
                value=dev.get(dev.get("main_score", "f1")),
                source_dev=dev,
                train_steps=metrics.get("train_steps"),
                train_runtime_s=metrics.get("train_runtime_s"),
                state="finished",
            )
        else:
            trial.update(value=None, state="failed or unfinished")
        trials.append(trial)
    scored = [t for t in trials if t["value"] is not None and math.isfinite(t["value"])]
    best = max(scored, key=lambda t: (t["value"], -t["number"])) if scored else None
    return {
        "search_dir": str(folder),
        "objective": f"{OBJECTIVE}: the source language's held-out dev articles (maximised)",
        "direction": "maximize",
        "n_trials": plan["n_trials"],
        "sampler": {"name": "TPE", "seed": plan["seed"]},
        # a search resumed from kept trials: each part's first trial and sampler seed
        **({"parts": plan["parts"]} if "parts" in plan else {}),
        "source_dev": {
            k: plan[k] for k in ("source_language", "source_dev_articles", "source_dev_examples")
        },
        "space": plan["space"],
        "searched": keys,
        "trials": trials,
        "best": None
        if best is None
        else {"number": best["number"], "params": best.get("params", {}), "value": best["value"]},
    }


def write_search(search_dir: str | Path) -> dict[str, Any]:
    record = collect_search(search_dir)
    Path(search_dir, RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def params_text(params: dict[str, Any]) -> str:
    """Searched values for a reader: ``key=value``, floats to 3 significant digits (the exact
    values stay in ``search.json``, which is what a run is given)."""
    return ", ".join(
        f"{key}={f'{value:.3g}' if isinstance(value, float) else value}"
        for key, value in sorted(params.items())
    )


def search_markdown(record: dict[str, Any]) -> str:
    """The trials table and the choice, for ``lowres report SEARCH_DIR``."""
    keys = record["searched"]
    lines = [
        f"# Search: {record['search_dir']}",
        "",
        f"Objective: {record['objective']}. Trials: {len(record['trials'])} of "
        f"{record['n_trials']}; sampler {record['sampler']['name']} (seed "
        f"{record['sampler']['seed']}); source dev: {record['source_dev']}.",
        "",
        "| trial | " + " | ".join(keys) + " | source dev | n | steps | state |",
        "| --- | " + " | ".join("---" for _ in keys) + " | --- | --- | --- | --- |",
    ]
    for trial in record["trials"]:
        params = trial.get("params", {})
        value = trial["value"]
        lines.append(
            f"| {trial['number']} | "
            + " | ".join(f"{params.get(k, '')}" for k in keys)
            + f" | {'' if value is None else f'{value:.2f}'}"
            + f" | {trial.get('source_dev', {}).get('n', '')} | {trial.get('train_steps', '')}"
            + f" | {trial['state']} |"
        )
    best = record["best"]
    lines.append("")
    if best:
        chosen = params_text(best["params"])
        lines.append(f"Chosen: trial {best['number']} ({chosen}), source dev {best['value']:.2f}.")
    else:
        lines.append("No trial has finished: nothing is chosen.")
    return "\n".join(lines) + "\n"


def write_search_report(search_dir: Path, out_dir: Path | None) -> dict[str, Any]:
    record = write_search(search_dir)
    out = out_dir or search_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    (out / "search.md").write_text(search_markdown(record), encoding="utf-8")
    print(f"lowres report: {out / 'search.md'}")
    return record


def is_search_folder(folder: Path) -> bool:
    return (folder / PLAN).is_file()
