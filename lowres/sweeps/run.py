"""Running a sweep plan: each run through the train recipe, its status in sweep.json at once.

One process rather than Hydra multirun so that the backbone is loaded once per (backbone,
head, seed) and datasets once per process, a failing run is recorded and the rest go on,
and a rerun skips what finished.
"""

from __future__ import annotations

import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra import compose as compose_config
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from rich.console import Console

from lowres.backbones import reuse_backbones
from lowres.builders import build_task
from lowres.errors import ConfigError
from lowres.recipes.train import quiet_libraries, train
from lowres.runfolder import RunFolder, RunMetrics
from lowres.schema import RunConfig, validate
from lowres.sweeps.plan import (
    ERROR_FILE,
    PlannedRun,
    SweepPlan,
    _key,
    check_pools,
    plan_from_spec,
    user_config_dirs,
    write_plan,
)


def _write_run_config(run_dir: Path, cfg, overrides: list[str]) -> None:
    """What ``lowres train`` leaves in .hydra/, so evaluate and --resume work on sweep runs."""
    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, hydra_dir / "config.yaml")
    (hydra_dir / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))


def execute(
    plan: SweepPlan,
    sweep_dir: Path,
    *,
    base_overrides: Sequence[str],
    compose: Callable[[list[str]], Any],
    train: Callable[..., RunMetrics],
    extra: dict[str, Any] | None = None,
    on_run: Callable[[PlannedRun, int, int], None] | None = None,
) -> dict[str, Any]:
    """Run the plan; record each run's status in sweep.json as soon as it is known."""
    extra = dict(extra or {})
    runs_dir = sweep_dir / "runs"
    status_of: dict[str, str] = {}
    for number, run in enumerate(plan.runs, start=1):
        run_dir = runs_dir / run.name
        if on_run:
            on_run(run, number, len(plan.runs))
        if RunFolder.finished_at(run_dir):
            run.status, run.error = "skipped", ""
        elif run.depends_on and status_of.get(run.depends_on) == "failed":
            run.status = "failed"
            run.error = f"stage-1 run {run.depends_on} failed"
            RunFolder(run_dir).write_json(ERROR_FILE, {"error": run.error})
        else:
            overrides = [*base_overrides, *run.overrides]
            started = time.perf_counter()
            try:
                cfg = compose(overrides)
                _write_run_config(run_dir, cfg, overrides)
                metrics = train(cfg, output_dir=run_dir)
            except Exception as err:  # one broken run must not stop the sweep
                run.status, run.error = "failed", f"{type(err).__name__}: {err}"
                RunFolder(run_dir).write_json(
                    ERROR_FILE,
                    {
                        "error": run.error,
                        "overrides": overrides,
                        "traceback": traceback.format_exc(),
                    },
                )
            else:
                run.status, run.error = "finished", ""
                run.wall_s = round(time.perf_counter() - started, 3)
                busy = (metrics.train_runtime_s or 0.0) + metrics.eval_runtime_s
                run.overhead_s = round(run.wall_s - busy, 3)
                (run_dir / ERROR_FILE).unlink(missing_ok=True)
        status_of[run.name] = run.status
        write_plan(sweep_dir, plan, extra)
    summary = summarise(plan)
    write_plan(sweep_dir, plan, {**extra, "summary": summary})
    return summary


def summarise(plan: SweepPlan) -> dict[str, Any]:
    """Counts by status, and the set-up overhead of the first run against later ones."""
    counts = {s: sum(r.status == s for r in plan.runs) for s in ("finished", "skipped", "failed")}
    overheads = [r.overhead_s for r in plan.runs if r.overhead_s is not None]
    later = overheads[1:]
    return {
        "planned": len(plan.runs),
        **counts,
        "failed_runs": {r.name: r.error for r in plan.runs if r.status == "failed"},
        "overhead_first_run_s": overheads[0] if overheads else None,
        "overhead_later_runs_median_s": round(statistics.median(later), 3) if later else None,
    }


def show_summary(summary: dict[str, Any], sweep_dir: Path) -> None:
    console = Console(soft_wrap=True)
    console.print(
        f"sweep {sweep_dir}: {summary['planned']} runs planned, {summary['finished']} "
        f"finished now, {summary['skipped']} skipped (finished before), "
        f"{summary['failed']} failed"
    )
    for name, error in summary["failed_runs"].items():
        console.print(f"  [red]failed[/] {name}: {error}", highlight=False)
    if summary["overhead_first_run_s"] is not None:
        later = summary["overhead_later_runs_median_s"]
        console.print(
            "per-run overhead (wall time minus train and eval): first run "
            f"{summary['overhead_first_run_s']:.2f} s, later runs median "
            + (f"{later:.2f} s" if later is not None else "n/a (one run)")
        )
    console.print(f"report: lowres report {sweep_dir}")


def run_sweep(cfg, sweep_dir: str | Path | None = None) -> dict[str, Any]:
    """The ``lowres sweep`` job: plan from ``cfg.sweep``, run, summarise."""
    if cfg.task is None:
        raise ConfigError("No task chosen; add +task=xquad (see `lowres --help` for the tasks).")
    validate(cfg)
    quiet_libraries()
    hydra_cfg = HydraConfig.get()
    sweep_dir = Path(sweep_dir or hydra_cfg.sweep.dir)
    base = [o for o in hydra_cfg.overrides.task if not _key(o).startswith("sweep")]
    # The user's config folders (their own method presets) must reach every run's compose.
    searchpath = list(hydra_cfg.searchpath)
    if searchpath:
        base.append(f"hydra.searchpath=[{','.join(searchpath)}]")
    spec = OmegaConf.to_container(cfg.sweep, resolve=True)
    languages = list(spec["languages"] or cfg.data.eval_languages)
    if cfg.task.languages:
        unknown = [lang for lang in languages if lang not in cfg.task.languages]
        if unknown:
            raise ConfigError(
                f"sweep.languages holds {', '.join(unknown)}, which task {cfg.task.name} does "
                f"not have; it has {', '.join(cfg.task.languages)}."
            )
    plan = plan_from_spec(
        spec, languages, sweep_dir, config=cfg, config_dirs=user_config_dirs(searchpath)
    )
    task = build_task(cfg.task, cfg.data, cfg.trainer, cfg.backbone)
    check_pools(task, spec["k"], languages, cfg.data.source_language)
    extra = {"task": cfg.task.name, "sweep": spec, "base_overrides": base}

    def compose(overrides: list[str]):
        # The sweep's own config (not train.yaml) is the base, so sweep-level settings such
        # as data.pool_fraction hold in every run; the sweep node itself is dropped so the
        # run folder's config is an ordinary run config.
        composed = compose_config(config_name="sweep", overrides=overrides)
        plain = OmegaConf.to_container(composed, resolve=True)
        plain.pop("sweep", None)
        run_cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), plain)
        OmegaConf.set_struct(run_cfg, True)
        return run_cfg

    def announce(run: PlannedRun, number: int, total: int) -> None:
        Console(soft_wrap=True).print(f"[bold]run {number}/{total}[/] {run.name}")

    with reuse_backbones():
        summary = execute(
            plan,
            sweep_dir,
            base_overrides=base,
            compose=compose,
            train=train,
            extra=extra,
            on_run=announce,
        )
    show_summary(summary, sweep_dir)
    return summary
