"""``lowres report SWEEP_DIR``: what a sweep found, as tables and figures.

Per task, one row per (method, k, language) with mean +- std over seeds, the 95 % t-interval
of the mean, min, max and the number of seeds, an average over languages (per seed first,
so its std is a spread over seeds too), and stability figures: std, range (max - min) and
the coefficient of variation (std / mean). Paired comparisons of methods over the seeds
they share (lowres/sweeps/stats.py), score against each swept numeric grid key, and the
reference scores (untrained floor, majority class). Written as Markdown, CSV and JSON,
shown as a rich table, and plotted: score vs k per method with +-std bands, score vs each
swept key, training curves from train_log.jsonl, a language x method heatmap per k and,
when MLQA G-XLT was run, the context x question matrix.

It reads a ``lowres sweep`` folder (its plan in sweep.json) or a ``lowres train -m``
multirun folder (multirun.yaml and one job folder per sweep point), whose runs it groups
by the keys the multirun swept. Several folders make one report when they split one design
between them (e.g. one sweep per target language, run on different days or machines): their
runs are pooled, and a score that two of them both hold is refused rather than overwritten.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from lowres.errors import LowresError
from lowres.files import read_json
from lowres.overrides import read as read_override
from lowres.recipes.scores import main_score
from lowres.runfolder import RunMetrics, read_metrics
from lowres.sweeps.plan import ERROR_FILE, SWEEP_FILE, read_sweep
from lowres.sweeps.plots import (
    plot_gxlt,
    plot_heatmaps,
    plot_score_vs_k,
    plot_score_vs_value,
    plot_training_curves,
)
from lowres.sweeps.stats import CONFIDENCE, holm_family, paired, summary

AVERAGE = "avg"
# What one seed of a sweep changes: its intervals vary this, nothing else.
SEEDS_VARY = "seeds (each seed: its own k-shot sample, data order and initialisation)"
LOG_FILE = "train_log.jsonl"
MULTIRUN_FILE = "multirun.yaml"  # what Hydra writes at the top of a -m folder
# A multirun's own axes in the report (seeds are the spread, k a column, languages rows), so
# they are not part of a run's grid label; `method` names the run's method instead.
NOT_GRID = ("trainer.seed", "data.k", "data.eval_languages", "method")


@dataclass(frozen=True)
class Cell:
    task: str
    method: str
    k: int
    language: str


def method_label(
    run: dict[str, Any], schedules: list[str], metrics: RunMetrics, without: str = ""
) -> str:
    """The row label: method, grid point (less ``without``), schedule, pseudo data."""
    label = run["method"]
    grid = {k: v for k, v in run["grid"].items() if k != without}
    if grid:
        label += " " + ",".join(f"{k}={v}" for k, v in grid.items())
    if len(schedules) > 1 or run["schedule"] != "joint":
        label += f" ({run['schedule'].replace('_', '-')})"
    pseudo = metrics.pseudo or {}
    if pseudo.get("kind", "none") != "none":
        label += f" +pseudo:{pseudo['kind']}"
    return label


def _plain_override(override: str) -> tuple[str, str]:
    setting = read_override(override)
    return setting.key, setting.value_text


def multirun_sweep(folder: Path) -> dict[str, Any]:
    """A ``lowres train -m`` folder as the record :func:`collect` reads from sweep.json.

    Every job folder (one holding .hydra/overrides.yaml) is a run. Its method is its
    ``method`` override (``configured`` without one); its grid point is its value of each
    other key the multirun swept; k and seed come from its composed config. ``planned`` is
    the size of the sweep multirun.yaml records, so jobs not started yet count as not run.
    """
    master = OmegaConf.load(folder / MULTIRUN_FILE)
    task_overrides = [str(o) for o in OmegaConf.select(master, "hydra.overrides.task") or []]
    parsed = OverridesParser.create().parse_overrides(task_overrides)
    sweeps = [o for o in parsed if o.is_sweep_override()]
    swept = [o.key_or_group for o in sweeps if o.key_or_group not in NOT_GRID]
    planned = math.prod(sum(1 for _ in o.sweep_string_iterator()) for o in sweeps)
    runs = []
    job_files = sorted(folder.glob("**/.hydra/overrides.yaml"))
    for job_file in job_files:
        job_dir = job_file.parent.parent
        overrides = dict(map(_plain_override, yaml.safe_load(job_file.read_text()) or []))
        cfg = OmegaConf.load(job_dir / ".hydra" / "config.yaml")
        runs.append(
            {
                "name": job_dir.relative_to(folder).as_posix(),
                "dir": str(job_dir),
                "method": overrides.get("method", "configured"),
                "schedule": "two_stage" if OmegaConf.select(cfg, "init_from") else "joint",
                "grid": {key: overrides[key] for key in swept if key in overrides},
                "k": int(OmegaConf.select(cfg, "data.k") or 0),
                "seed": int(OmegaConf.select(cfg, "trainer.seed")),
                "stage": 0,
            }
        )
    return {
        "kind": "multirun",
        "task": OmegaConf.select(master, "task.name") or "",
        "runs": runs,
        "planned": max(planned, len(runs)),
        "sweep": {"schedules": sorted({r["schedule"] for r in runs}) or ["joint"]},
    }


def load_sweep(sweep_dir: Path) -> dict[str, Any]:
    """The runs of a ``lowres sweep`` folder or a ``lowres train -m`` folder, each with its dir."""
    if not (sweep_dir / SWEEP_FILE).is_file() and (sweep_dir / MULTIRUN_FILE).is_file():
        return multirun_sweep(sweep_dir)
    sweep = read_sweep(sweep_dir)
    for run in sweep["runs"]:
        run["dir"] = str(sweep_dir / "runs" / run["name"])
    return sweep


def load_sweeps(sweep_dirs: list[Path]) -> dict[str, Any]:
    """One folder as it is; several pooled: their runs, planned counts, k values and schedules."""
    if len(sweep_dirs) == 1:
        return load_sweep(sweep_dirs[0])
    loaded = [load_sweep(d) for d in sweep_dirs]
    designs = [s.get("sweep", {}) for s in loaded]
    schedules = list(dict.fromkeys(x for d in designs for x in d.get("schedules", ["joint"])))
    k_values = sorted({k for d in designs for k in d.get("k", [0])})
    return {
        "task": loaded[0].get("task", ""),
        "kind": "several",
        "sweep": {"schedules": schedules, "k": k_values},
        "planned": sum(s.get("planned", len(s["runs"])) for s in loaded),
        "runs": [run for s in loaded for run in s["runs"]],
    }


def collect(sweep_dirs: list[Path]) -> dict[str, Any]:
    """Scores per cell and seed from every finished run; which runs failed or are missing."""
    sweep = load_sweeps(sweep_dirs)
    schedules = sweep.get("sweep", {}).get("schedules", ["joint"])
    found = _Collected()
    failed, missing = {}, []
    finished = 0
    for run in sweep["runs"]:
        run_dir = Path(run["dir"])
        metrics_file = run_dir / "metrics.json"
        if not metrics_file.is_file():
            error_file = run_dir / ERROR_FILE
            if error_file.is_file():
                error = read_json(error_file, "the error record of a failed run", "rerun it.")
                failed[run["name"]] = (
                    str(error.get("error", "failed")) if isinstance(error, dict) else "failed"
                )
            else:
                missing.append(run["name"])
            continue
        finished += 1
        metrics = read_metrics(run_dir)
        if run["stage"] == 1 and 0 not in sweep.get("sweep", {}).get("k", [0]):
            continue  # a stage-1 run whose zero-shot row the sweep did not ask for
        found.add(run, run_dir, metrics, schedules, metrics.task or sweep.get("task", ""))
    planned = sweep.get("planned", len(sweep["runs"]))
    if not finished:
        where = " ".join(str(d) for d in sweep_dirs)
        rerun = (
            "rerun the multirun command"
            if sweep.get("kind") == "multirun"
            else f"rerun it with `lowres sweep --resume DIR` for each of {where}"
        )
        raise LowresError(
            f"The sweep {where} holds no finished runs yet ({len(failed)} failed, "
            f"{planned - len(failed)} not run); {rerun}."
        )
    return {
        "scores": found.scores,
        "gxlt": found.gxlt,
        "swept": found.swept,
        "floor": found.floor,
        "curves": found.curves,
        "majority": found.majority,
        "failed": failed,
        "missing": missing,
        "not_run": planned - finished - len(failed),
        "planned": planned,
        "finished": finished,
        "policies": sorted(found.policies),
        "protocols": sorted(found.protocols),
        "metric": "/".join(sorted(found.metric_names)),
        "summary": sweep.get("summary", {}),
    }


class _Collected:
    """What :func:`collect` gathers from the finished runs, one run at a time."""

    def __init__(self) -> None:
        self.scored_by: dict[tuple[Cell, int], str] = {}  # which run gave each score
        self.scores: dict[Cell, dict[int, float]] = defaultdict(dict)
        self.gxlt: dict[tuple[str, str, int], list[dict]] = defaultdict(list)
        self.protocols: set[str] = set()  # the source pools the runs trained on
        # (task, key, label without the key, k, language) -> value -> seed -> score
        self.swept: dict[tuple, dict[Any, dict[int, float]]] = defaultdict(
            lambda: defaultdict(dict)
        )
        # Runs that did not train (trainer.epochs=0, e.g. sweep.methods=[untrained,...]) are
        # the untrained floor, drawn as a reference line rather than as a method.
        self.floor: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
        self.majority: dict[tuple[str, str], float] = {}
        # (task, label, k) -> each run's logged rows: task loss, alignment loss, distance
        self.curves: dict[tuple[str, str, int], list[list[dict]]] = defaultdict(list)
        self.policies: set[str] = set()
        self.metric_names: set[str] = set()

    def add(
        self,
        run: dict[str, Any],
        run_dir: Path,
        metrics: RunMetrics,
        schedules: list[str],
        task: str,
    ) -> None:
        name = main_score(metrics.task, metrics.per_language)
        self.metric_names.add(name)
        label = method_label(run, schedules, metrics)
        untrained = metrics.train_steps == 0 and not metrics.init_from
        if (run_dir / LOG_FILE).is_file() and not untrained:
            self.curves[(task, label, run["k"])].append(_read_log(run_dir / LOG_FILE))
        for language, values in metrics.per_language.items():
            score = float(values[name])
            if "majority_class" in values:  # PAWS-X: always predicting the larger class
                self.majority[(task, language)] = float(values["majority_class"])
            if untrained:
                self.floor[(task, language)][run["seed"]] = score
                continue
            self._score(Cell(task, label, run["k"], language), run, run_dir, score)
            for key, value in run["grid"].items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    rest = method_label(run, schedules, metrics, without=key)
                    self.swept[(task, key, rest, run["k"], language)][value][run["seed"]] = score
        selection = metrics.selection or {}
        if selection.get("policy") == "source":
            self.policies.add(f"source-language dev ({selection.get('dev_examples')} examples)")
        else:
            self.policies.add("last checkpoint")
        source = metrics.task_extras.get("protocol")
        if source:
            self.protocols.add(f"{task}: {source['description']} ({source['questions']} questions)")
        if metrics.task_extras.get("gxlt"):
            self.gxlt[(task, label, run["k"])].append(metrics.task_extras["gxlt"])

    def _score(self, cell: Cell, run: dict[str, Any], run_dir: Path, score: float) -> None:
        if (cell, run["seed"]) in self.scored_by:
            raise LowresError(
                f"Two runs score {cell.method} at k={run['k']} in {cell.language} with seed "
                f"{run['seed']}: {self.scored_by[cell, run['seed']]} and {run_dir}. A report "
                "over several sweep folders takes each (method, k, language, seed) once; give "
                "folders that split one design (e.g. one per language), not repeats of it."
            )
        self.scored_by[cell, run["seed"]] = str(run_dir)
        self.scores[cell][run["seed"]] = score


def table_rows(scores: dict[Cell, dict[int, float]]) -> list[dict[str, Any]]:
    """One row per cell, plus the per-seed language average for each (task, method, k)."""
    rows = []
    for cell in sorted(scores, key=lambda c: (c.task, c.method, c.k, c.language)):
        per_seed = scores[cell]
        rows.append(
            {**cell.__dict__, **summary(list(per_seed.values())), "seeds": sorted(per_seed)}
        )
    # The average over languages, per seed first, so its spread is a spread over seeds too.
    for (task, k), methods in sorted(_per_seed_averages(scores).items()):
        for method, per_seed in sorted(methods.items()):
            rows.append(
                {
                    "task": task,
                    "method": method,
                    "k": k,
                    "language": AVERAGE,
                    **summary(list(per_seed.values())),
                    "seeds": sorted(per_seed),
                }
            )
    return sorted(
        rows,
        key=lambda r: (r["task"], r["method"], r["k"], r["language"] == AVERAGE, r["language"]),
    )


def _read_log(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash; the rest of the curve still holds
    return rows


def swept_rows(swept: dict[tuple, dict[Any, dict[int, float]]]) -> list[dict[str, Any]]:
    """Score against each numeric grid key (lambda, prompt length), other settings fixed."""
    swept = dict(swept)
    # The average over languages per (value, seed), over seeds that have every language.
    groups: dict[tuple, dict[str, dict[Any, dict[int, float]]]] = defaultdict(dict)
    for (task, key, series, k, language), by_value in swept.items():
        groups[(task, key, series, k)][language] = by_value
    for (task, key, series, k), by_language in groups.items():
        if len(by_language) < 2:
            continue
        average: dict[Any, dict[int, float]] = {}
        for value in set.intersection(*(set(v) for v in by_language.values())):
            seeds = set.intersection(*(set(v[value]) for v in by_language.values()))
            if seeds:
                average[value] = {
                    s: statistics.fmean(v[value][s] for v in by_language.values()) for s in seeds
                }
        swept[(task, key, series, k, AVERAGE)] = average
    rows = []
    for (task, key, series, k, language), by_value in sorted(swept.items(), key=str):
        if len(by_value) < 2:
            continue  # one value: nothing to draw against
        for value in sorted(by_value):
            per_seed = by_value[value]
            rows.append(
                {
                    "task": task,
                    "key": key,
                    "series": series,
                    "k": k,
                    "language": language,
                    "value": value,
                    **summary(list(per_seed.values())),
                    "seeds": sorted(per_seed),
                }
            )
    return rows


def references(collected: dict[str, Any]) -> dict[tuple[str, str], dict[str, float]]:
    """Per (task, language): the untrained floor (mean over its seeds) and the majority class."""
    out: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for key, per_seed in collected["floor"].items():
        out[key]["untrained"] = statistics.fmean(per_seed.values())
    for key, value in collected["majority"].items():
        out[key]["majority class"] = value
    return dict(out)


def comparisons(
    scores: dict[Cell, dict[int, float]],
    pairs: list[tuple[str, str]] | None = None,
    also: list[tuple[str, str]] = (),
) -> list[dict[str, Any]]:
    """Paired differences A - B per (k, language) over the seeds both methods ran.

    ``pairs`` names the methods to compare (their report labels); by default every pair
    when a task has at most four methods (beyond that the table would drown the reader).
    ``also``: pairs compared in any case (the primary comparisons').
    """
    by_cell: dict[tuple[str, int, str], dict[str, dict[int, float]]] = defaultdict(dict)
    for cell, per_seed in scores.items():
        by_cell[(cell.task, cell.k, cell.language)][cell.method] = per_seed
    for (task, k), languages in _per_seed_averages(scores).items():
        by_cell[(task, k, AVERAGE)] = languages
    rows = []
    for (task, k, language), methods in sorted(by_cell.items()):
        names = sorted(methods)
        chosen = pairs
        if chosen is None:
            chosen = list(itertools.combinations(names, 2)) if len(names) <= 4 else []
        for a, b in dict.fromkeys([*chosen, *also]):
            if a in methods and b in methods:
                result = paired(methods[a], methods[b])
                if result:
                    rows.append(
                        {"task": task, "a": a, "b": b, "k": k, "language": language, **result}
                    )
    return rows


def mark_family(
    rows: list[dict[str, Any]], primary: list[tuple[str, str, int, str]]
) -> dict[str, Any]:
    """Holm's correction over the declared primary comparisons; every other row exploratory.

    ``primary``: (A, B, k, language) as the report labels them (language ``average`` for the
    mean over a task's languages), matched in every task of the report. Returns the family:
    its size, the members found, the declared ones with no row (not run, or one seed).
    """
    declared = {(a, b, int(k), language) for a, b, k, language in primary}
    members = [
        r
        for r in rows
        if (r["a"], r["b"], r["k"], r["language"]) in declared and r.get("p") is not None
    ]
    found = {(r["a"], r["b"], r["k"], r["language"]) for r in members}
    untested = sorted(declared - found)  # each counts in the family as p = 1
    adjusted = holm_family([r["p"] for r in members] + [None] * len(untested))
    for r in rows:
        r["family"], r["p_holm"], r["holm_rejects"] = "exploratory", None, None
    for r, p in zip(members, adjusted[: len(members)], strict=True):
        r["family"], r["p_holm"], r["holm_rejects"] = "primary", p, p <= 1 - CONFIDENCE
    return {
        "size": len(members) + len(untested),
        "declared": [list(d) for d in sorted(declared)],
        "without_a_test": [list(d) for d in untested],
    }


def _per_seed_averages(
    scores: dict[Cell, dict[int, float]],
) -> dict[tuple[str, int], dict[str, dict[int, float]]]:
    """(task, k) -> method -> seed -> mean over the task's languages (seeds with every
    language). A method that lacks one of the languages the task has elsewhere in the report
    (a sweep still running, a failed run) has no average: one over fewer languages would sit
    in the same column as, and be paired with, averages over all of them."""
    groups: dict[tuple, dict[str, dict[int, float]]] = defaultdict(dict)
    task_languages: dict[str, set[str]] = defaultdict(set)
    for cell, per_seed in scores.items():
        groups[(cell.task, cell.method, cell.k)][cell.language] = per_seed
        task_languages[cell.task].add(cell.language)
    out: dict[tuple[str, int], dict[str, dict[int, float]]] = defaultdict(dict)
    for (task, method, k), by_language in groups.items():
        if len(by_language) < 2 or set(by_language) != task_languages[task]:
            continue
        seeds = set.intersection(*(set(s) for s in by_language.values()))
        if seeds:
            out[(task, k)][method] = {
                s: statistics.fmean(by_language[lang][s] for lang in by_language) for s in seeds
            }
    return out


def _ci(row: dict[str, Any]) -> str:
    if row["ci95_low"] is None:
        return "–"
    return f"[{row['ci95_low']:.2f}, {row['ci95_high']:.2f}]"


def _pm(row: dict[str, Any]) -> str:
    if row["std"] is None:
        return f"{row['mean']:.1f}"
    return f"{row['mean']:.1f} ± {row['std']:.1f}"


def markdown(collected: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = ["# Sweep report", ""]
    if collected["finished"] < collected["planned"]:
        lines += [
            f"**PARTIAL**: {collected['finished']} of {collected['planned']} runs finished "
            f"({len(collected['failed'])} failed, {collected['not_run']} not run).",
            "",
        ]
    lines += [
        f"Score: {collected['metric']} (0-100), mean ± std over seeds (sample std; a cell "
        "with one seed shows the mean alone).",
        "Checkpoint selection: " + "; ".join(collected["policies"]) + ". Target-language "
        "test data is never used to choose checkpoints.",
    ]
    if collected["protocols"]:
        lines.append("Source pool: " + "; ".join(collected["protocols"]) + ".")
    lines.append("")
    for task in sorted({r["task"] for r in rows}):
        task_rows = [r for r in rows if r["task"] == task]
        languages = sorted({r["language"] for r in task_rows} - {AVERAGE})
        has_average = any(r["language"] == AVERAGE for r in task_rows)
        columns = languages + ([AVERAGE] if has_average else [])
        lines += [f"## {task}", "", "| method | k | " + " | ".join(columns) + " | seeds |"]
        lines.append("|---|---:|" + "---:|" * len(columns) + "---:|")
        by_key = {(r["method"], r["k"], r["language"]): r for r in task_rows}
        for method, k in sorted({(r["method"], r["k"]) for r in task_rows}):
            cells = [
                _pm(by_key[method, k, lang]) if (method, k, lang) in by_key else "–"
                for lang in columns
            ]
            seeds = max(
                len(by_key[method, k, lang]["seeds"])
                for lang in columns
                if (method, k, lang) in by_key
            )
            lines.append(f"| {method} | {k} | " + " | ".join(cells) + f" | {seeds} |")
        lines += ["", f"### {task}: stability over seeds", ""]
        lines += [
            "95 % CI: Student-t interval of the mean over seeds (mean ± t(0.975, n-1) · std/√n).",
            "",
            "| method | k | language | n | mean ± std | 95 % CI | min | max | range | CV |",
        ]
        lines.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in task_rows:
            cv = "–" if r["cv"] is None else f"{r['cv']:.3f}"
            std = "" if r["std"] is None else f" ± {r['std']:.2f}"
            lines.append(
                f"| {r['method']} | {r['k']} | {r['language']} | {r['n']} | {r['mean']:.2f}{std} "
                f"| {_ci(r)} | {r['min']:.2f} | {r['max']:.2f} | {r['range']:.2f} | {cv} |"
            )
        lines.append("")
        lines += _swept_markdown([r for r in collected["swept_rows"] if r["task"] == task])
        lines += _comparison_markdown(
            [r for r in collected["comparisons"] if r["task"] == task], collected
        )
        refs = {lang: v for (t, lang), v in collected["references"].items() if t == task}
        if refs:
            lines += [f"### {task}: reference scores", ""]
            lines += [
                f"- {lang}: " + ", ".join(f"{name} {value:.1f}" for name, value in v.items())
                for lang, v in sorted(refs.items())
            ]
            lines.append("")
    if collected["failed"]:
        lines += ["## Failed runs", ""]
        lines += [f"- `{name}`: {error}" for name, error in sorted(collected["failed"].items())]
        lines.append("")
    if collected["missing"]:
        lines += ["## Runs not run yet", ""] + [f"- `{n}`" for n in collected["missing"]] + [""]
    summary = collected["summary"]
    if summary.get("overhead_first_run_s") is not None:
        lines += [
            "## Set-up overhead",
            "",
            "Wall time per run minus its train and eval time, in the sweep's last "
            f"invocation: first run {summary['overhead_first_run_s']:.2f} s, later runs "
            f"median {summary.get('overhead_later_runs_median_s') or 0:.2f} s.",
            "",
        ]
    return "\n".join(lines)


def _swept_markdown(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for key in sorted({r["key"] for r in rows}):
        key_rows = [r for r in rows if r["key"] == key]
        values = sorted({r["value"] for r in key_rows})
        lines += [f"### {key_rows[0]['task']}: score vs {key}", ""]
        lines.append("| series | k | language | " + " | ".join(f"{key}={v}" for v in values) + " |")
        lines.append("|---|---:|---|" + "---:|" * len(values))
        cells = {(r["series"], r["k"], r["language"], r["value"]): r for r in key_rows}
        for series, k, language in sorted({(r["series"], r["k"], r["language"]) for r in key_rows}):
            shown = [
                _pm(cells[series, k, language, v]) if (series, k, language, v) in cells else "–"
                for v in values
            ]
            lines.append(f"| {series} | {k} | {language} | " + " | ".join(shown) + " |")
        lines.append("")
    return lines


def _p(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}" if value >= 0.001 else "<0.001"


def _comparison_markdown(rows: list[dict[str, Any]], collected: dict[str, Any]) -> list[str]:
    if not rows:
        return []
    family = collected.get("family") or {"size": 0}
    lines = [
        f"### {rows[0]['task']}: paired comparisons",
        "",
        f"A − B over the seeds both ran; the intervals vary {collected.get('varies', SEEDS_VARY)}"
        ", not the test questions. *Beyond seed spread*: the 95 % t-interval of the mean "
        "difference excludes 0 (paired t-test, 5 %, uncorrected).",
    ]
    if family["size"]:
        lines.append(
            f"*Primary* rows are the {family['size']} pre-registered comparisons, corrected "
            "together by Holm (family-wise 5 %; *Holm p* is the adjusted p-value"
            + (
                f"; the {len(family['without_a_test'])} declared without a test count as p = 1"
                if family["without_a_test"]
                else ""
            )
            + "). Every other row is *exploratory*: uncorrected, a lead to test, not a finding."
        )
    else:
        lines.append(
            "No primary comparisons were declared: every row is *exploratory* (uncorrected "
            "for the number of comparisons; a lead to test, not a finding)."
        )
    lines += [
        "",
        "| family | A | B | k | language | pairs | mean A − B | std of differences | 95 % CI | "
        "p | Holm p | beyond seed spread |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    ordered = sorted(rows, key=lambda r: r.get("family") != "primary")
    for r in ordered:
        std = "–" if r["std_difference"] is None else f"{r['std_difference']:.2f}"
        verdict = {None: "one seed: cannot tell", True: "yes", False: "no"}[
            r["larger_than_seed_spread"]
        ]
        if r.get("holm_rejects") is not None:
            verdict = "yes (Holm)" if r["holm_rejects"] else "no (Holm)"
        lines.append(
            f"| {r.get('family', 'exploratory')} | {r['a']} | {r['b']} | {r['k']} | "
            f"{r['language']} | {r['n']} | {r['mean_difference']:+.2f} | {std} | {_ci(r)} | "
            f"{_p(r.get('p'))} | {_p(r.get('p_holm'))} | {verdict} |"
        )
    lines.append("")
    return lines


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    fields = ["task", "method", "k", "language", "n", "mean", "std", "ci95_low", "ci95_high"]
    fields += ["min", "max", "range", "cv"]
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=[*fields, "seeds"])
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {**{f: row[f] for f in fields}, "seeds": " ".join(map(str, row["seeds"]))}
            )


def show(rows: list[dict[str, Any]], collected: dict[str, Any]) -> None:
    console = Console(soft_wrap=True)
    for task in sorted({r["task"] for r in rows}):
        table = Table(title=f"{task} · {collected['metric']} mean ± std over seeds")
        for column in ("method", "k", "language", "mean ± std", "95 % CI", "min", "max", "CV", "n"):
            table.add_column(
                column, justify="left" if column in ("method", "language") else "right"
            )
        for r in (r for r in rows if r["task"] == task):
            cv = "–" if r["cv"] is None else f"{r['cv']:.3f}"
            table.add_row(
                r["method"],
                str(r["k"]),
                r["language"],
                _pm(r),
                _ci(r),
                f"{r['min']:.1f}",
                f"{r['max']:.1f}",
                cv,
                str(r["n"]),
            )
        console.print(table)
    if collected["finished"] < collected["planned"]:
        console.print(
            f"[bold yellow]partial sweep[/]: {collected['finished']} of {collected['planned']} "
            f"runs finished, {len(collected['failed'])} failed"
        )


def write_report(
    sweep_dir: str | Path | list[str | Path],
    out_dir: str | Path | None = None,
    compare: list[tuple[str, str]] | None = None,
    primary: list[tuple[str, str, int, str]] = (),
    varies: str = SEEDS_VARY,
) -> dict[str, Any]:
    """Tables and figures of a sweep, or of several pooled; ``compare`` picks method pairs.

    ``primary``: the pre-registered comparisons (A, B, k, language), corrected together by
    Holm; every other comparison is labelled exploratory. ``varies``: what the intervals
    vary, said on every table (a sweep: its seeds).
    """
    sweep_dirs = [Path(d) for d in sweep_dir] if isinstance(sweep_dir, list) else [Path(sweep_dir)]
    if len(sweep_dirs) > 1 and out_dir is None:
        raise LowresError(
            f"A report over {len(sweep_dirs)} sweep folders needs --out DIR: no one of them is "
            "the place for it. Add e.g. --out outputs/sweeps/pooled_report."
        )
    collected = collect(sweep_dirs)
    rows = table_rows(collected["scores"])
    collected["swept_rows"] = swept_rows(collected["swept"])
    collected["references"] = references(collected)
    if compare:
        _check_compared(compare, {cell.method for cell in collected["scores"]})
    collected["comparisons"] = comparisons(
        collected["scores"], compare, [(a, b) for a, b, _, _ in primary]
    )
    collected["family"] = mark_family(collected["comparisons"], list(primary))
    collected["varies"] = varies
    out = Path(out_dir) if out_dir else sweep_dirs[0] / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LowresError(f"Cannot write the report to {out} ({err}); choose --out.") from err
    (out / "report.md").write_text(markdown(collected, rows), encoding="utf-8")
    write_csv(out / "report.csv", rows)
    report = {
        "sweep": str(sweep_dirs[0]) if len(sweep_dirs) == 1 else [str(d) for d in sweep_dirs],
        "partial": collected["finished"] < collected["planned"],
        "planned": collected["planned"],
        "finished": collected["finished"],
        "failed": collected["failed"],
        "missing": collected["missing"],
        "selection": collected["policies"],
        "source_pool": collected["protocols"],
        "metric": collected["metric"],
        "rows": rows,
        "swept": collected["swept_rows"],
        "comparisons": collected["comparisons"],
        "family": collected["family"],
        "intervals_vary": varies,
        "references": [
            {"task": t, "language": lang, **v} for (t, lang), v in collected["references"].items()
        ],
    }
    report["figures"] = [str(f) for f in _figures(rows, collected, out) if f]
    (out / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    show(rows, collected)
    Console(soft_wrap=True).print(f"report written to {out}", highlight=False)
    return report


def _check_compared(compare: list[tuple[str, str]], labels: set[str]) -> None:
    unknown = [name for pair in compare for name in pair if name not in labels]
    if unknown:
        raise LowresError(
            f"--compare names {', '.join(unknown)}, which is not a method of this sweep; "
            f"its methods (as the report labels them) are {', '.join(sorted(labels))}."
        )


def _figures(rows: list[dict[str, Any]], collected: dict[str, Any], out: Path) -> list:
    """Every figure of the report, per task; None where a figure has nothing to draw."""
    figures = []
    for task in sorted({r["task"] for r in rows}):
        task_rows = [r for r in rows if r["task"] == task]
        refs = {lang: v for (t, lang), v in collected["references"].items() if t == task}
        figures.append(plot_score_vs_k(task_rows, task, collected["metric"], out, refs))
        swept = [r for r in collected["swept_rows"] if r["task"] == task]
        for key in sorted({r["key"] for r in swept}):
            key_rows = [r for r in swept if r["key"] == key]
            figures.append(plot_score_vs_value(key_rows, task, key, collected["metric"], out, refs))
        figures.append(plot_heatmaps(task_rows, task, collected["metric"], out))
        task_curves = {(m, k): logs for (t, m, k), logs in collected["curves"].items() if t == task}
        figures.append(plot_training_curves(task_curves, task, out))
    for (task, method, k), tables in sorted(collected["gxlt"].items()):
        figures.append(plot_gxlt(tables, task, method, k, out))
    return figures
