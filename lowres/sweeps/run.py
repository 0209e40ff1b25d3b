"""Running a sweep plan: each run through the train recipe, its status in sweep.json.

By default in one process rather than Hydra multirun, so that the backbone is loaded once
per (backbone, head, seed) and datasets once per process. With ``hydra/launcher=X`` (slurm,
local_gpus, submitit_local, joblib) the planned runs go to that launcher instead, as
explicit jobs, in waves: the runs that depend on nothing first, then the stage-2 runs whose
stage-1 run has settled. Either way a failing run is recorded and the rest go on, and a
rerun skips what finished; the plan and sweep.json are the same.
"""

from __future__ import annotations

import json
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
from rich.text import Text

from lowres.errors import ConfigError, LowresError
from lowres.launchers import (
    chosen_launcher,
    end_with_dispatcher,
    launch_jobs,
    pin_gpu_for_sweep_job,
)
from lowres.overrides import key_of
from lowres.recipes.preflight import backbones_reused, check_pools, quiet_libraries, start_up
from lowres.recipes.train import train
from lowres.runfolder import FolderLock, RunFolder, RunMetrics, ensure_folder
from lowres.schema import RunConfig
from lowres.sweeps.plan import (
    ERROR_FILE,
    PlannedRun,
    SweepPlan,
    grid_replaces,
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


def run_one(
    run_dir: Path,
    overrides: list[str],
    make_config: Callable[[], Any],
    train: Callable[..., RunMetrics],
) -> dict[str, Any]:
    """Compose, train and evaluate one planned run into ``run_dir``; its outcome as a dict.

    A failure is written to the run's error.json (with the traceback) and returned, never
    raised: one broken run must not stop the sweep.
    """
    started = time.perf_counter()
    try:
        # One writer per run: a worker of a killed sweep may still be training this one.
        lock = FolderLock(ensure_folder(run_dir)).acquire()
    except LowresError as err:
        return {"status": "failed", "error": str(err)}
    try:
        return _run_locked(run_dir, overrides, make_config, train, started)
    finally:
        lock.release()


def _run_locked(run_dir, overrides, make_config, train, started) -> dict[str, Any]:
    try:
        cfg = make_config()
        # An interrupted run continues from its last checkpoint instead of training from
        # step 0 again (its config is the same: same overrides).
        cfg.resume = any((run_dir / "trainer").glob("checkpoint-*"))
        _write_run_config(run_dir, cfg, overrides)
        metrics = train(cfg, output_dir=run_dir)
    except Exception as err:
        error = f"{type(err).__name__}: {err}"
        RunFolder(run_dir).write_json(
            ERROR_FILE,
            {"error": error, "overrides": overrides, "traceback": traceback.format_exc()},
        )
        return {"status": "failed", "error": error}
    wall = round(time.perf_counter() - started, 3)
    busy = (metrics.train_runtime_s or 0.0) + metrics.eval_runtime_s
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    return {"status": "finished", "error": "", "wall_s": wall, "overhead_s": round(wall - busy, 3)}


def _settle_without_running(run: PlannedRun, run_dir: Path, status_of: dict[str, str]) -> bool:
    """Mark a run that needs no job: finished before (skipped) or its stage 1 failed."""
    if RunFolder.finished_at(run_dir):
        run.status, run.error = "skipped", ""
        return True
    if run.depends_on and status_of.get(run.depends_on) == "failed":
        run.status = "failed"
        run.error = f"stage-1 run {run.depends_on} failed"
        RunFolder(run_dir).write_json(ERROR_FILE, {"error": run.error})
        return True
    return False


def _apply(run: PlannedRun, outcome: dict[str, Any]) -> None:
    run.status, run.error = outcome["status"], outcome["error"]
    run.wall_s, run.overhead_s = outcome.get("wall_s"), outcome.get("overhead_s")


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
    """Run the plan in this process; record each run's status in sweep.json once known."""
    extra = dict(extra or {})
    runs_dir = sweep_dir / "runs"
    status_of: dict[str, str] = {}
    for number, run in enumerate(plan.runs, start=1):
        run_dir = runs_dir / run.name
        if on_run:
            on_run(run, number, len(plan.runs))
        if not _settle_without_running(run, run_dir, status_of):
            overrides = [*base_overrides, *run.overrides]
            _apply(run, run_one(run_dir, overrides, lambda o=overrides: compose(o), train))
        status_of[run.name] = run.status
        write_plan(sweep_dir, plan, extra)
    summary = summarise(plan)
    write_plan(sweep_dir, plan, {**extra, "summary": summary})
    return summary


def run_config(composed) -> Any:
    """A run's config from the sweep config composed with its overrides.

    The sweep's own config (not train.yaml) is the base, so sweep-level settings such as
    data.pool_fraction hold in every run; the sweep node itself is dropped so the run
    folder's config is an ordinary run config.
    """
    plain = OmegaConf.to_container(composed, resolve=True)
    plain.pop("sweep", None)
    cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), plain)
    OmegaConf.set_struct(cfg, True)
    return cfg


class LauncherJob:
    """One planned run as a Hydra launcher job (pickled to submitit and joblib workers).

    Hydra composes the run's config and makes ``HydraConfig`` point at the run's folder
    (``hydra.sweep.subdir=runs/<name>``), so the job needs nothing but the module path.
    """

    def __call__(self, composed) -> dict[str, Any]:
        hydra_cfg = HydraConfig.get()
        end_with_dispatcher()
        pin_gpu_for_sweep_job()
        quiet_libraries()
        run_dir = Path(hydra_cfg.runtime.output_dir)
        overrides = list(hydra_cfg.overrides.task)
        return run_one(run_dir, overrides, lambda: run_config(composed), train)


def _outcome_on_disk(run_dir: Path, launcher_error: str) -> dict[str, Any]:
    """A launched run's outcome from its folder, when its job's return value is lost."""
    if RunFolder.finished_at(run_dir):
        return {"status": "finished", "error": ""}
    error_file = run_dir / ERROR_FILE
    if error_file.is_file():
        return {"status": "failed", "error": json.loads(error_file.read_text()).get("error", "")}
    error = "the launcher job ended without a result (killed, timed out or out of memory?)"
    if launcher_error:
        error += f"; the launcher said {launcher_error}"
    RunFolder(run_dir).write_json(ERROR_FILE, {"error": error})
    return {"status": "failed", "error": error}


def execute_launched(
    plan: SweepPlan,
    sweep_dir: Path,
    *,
    base_overrides: Sequence[str],
    task_overrides: Sequence[str],
    launcher: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the plan through the chosen Hydra launcher, one wave of independent runs at a time.

    Wave 1 holds every run that depends on nothing (joint runs, stage-1 runs); wave 2 the
    stage-2 runs, each submitted only once its stage-1 run finished. sweep.json is written
    before and after each wave; a killed dispatcher leaves the finished runs' folders, which
    the rerun skips as the in-process sweep does.
    """
    extra = dict(extra or {})
    console = Console(soft_wrap=True)
    runs_dir = sweep_dir / "runs"
    status_of: dict[str, str] = {}
    pending = list(plan.runs)
    launched = 0
    while pending:
        wave = [r for r in pending if not r.depends_on or r.depends_on in status_of]
        pending = [r for r in pending if r not in wave]
        to_launch = []
        for run in wave:
            if _settle_without_running(run, runs_dir / run.name, status_of):
                status_of[run.name] = run.status
            else:
                to_launch.append(run)
        write_plan(sweep_dir, plan, extra)
        if to_launch:
            console.print(
                f"[bold]launching {len(to_launch)} runs[/] through {launcher}", highlight=False
            )
            values, launcher_error = launch_jobs(
                [(f"runs/{run.name}", [*base_overrides, *run.overrides]) for run in to_launch],
                LauncherJob(),
                sweep_dir=sweep_dir,
                task_overrides=task_overrides,
                first_index=launched,
            )
            launched += len(to_launch)
            for run, value in zip(to_launch, values, strict=True):
                run_dir = runs_dir / run.name
                _apply(run, value or _outcome_on_disk(run_dir, launcher_error))
                status_of[run.name] = run.status
                console.print(f"  {run.status} {run.name}", highlight=False)
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
        console.print(Text.assemble("  ", ("failed", "red"), f" {name}: {error}"), highlight=False)
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
    start_up(cfg)
    hydra_cfg = HydraConfig.get()
    sweep_dir = Path(sweep_dir or hydra_cfg.sweep.dir)
    base = [o for o in hydra_cfg.overrides.task if not key_of(o).startswith("sweep")]
    # The user's config folders (their own method presets) must reach every run's compose.
    searchpath = list(hydra_cfg.searchpath)
    if searchpath:
        base.append(f"hydra.searchpath=[{','.join(searchpath)}]")
    spec = OmegaConf.to_container(cfg.sweep, resolve=True)
    languages = list(spec["languages"] or cfg.data.eval_languages)
    if cfg.task.languages and cfg.data.source != "local":  # local files decide (validate)
        unknown = [lang for lang in languages if lang not in cfg.task.languages]
        if unknown:
            raise ConfigError(
                f"sweep.languages holds {', '.join(unknown)}, which task {cfg.task.name} does "
                f"not have; it has {', '.join(cfg.task.languages)}."
            )
    plan = plan_from_spec(
        spec, languages, sweep_dir, config=cfg, config_dirs=user_config_dirs(searchpath)
    )
    check_pools(cfg, spec["k"], languages)
    extra = {"task": cfg.task.name, "sweep": spec, "base_overrides": base}
    replaced = grid_replaces(spec["methods"], spec["grid"], user_config_dirs(searchpath))
    if replaced:
        extra["grid_replaces"] = replaced
        for method, keys in replaced.items():
            Console(soft_wrap=True).print(
                f"sweep.grid sets {', '.join(keys)}, which method {method} also sets; "
                "each grid point's value replaces the preset's.",
                highlight=False,
            )

    launcher = chosen_launcher()
    if launcher:
        extra["launcher"] = launcher
        summary = execute_launched(
            plan,
            sweep_dir,
            base_overrides=base,
            task_overrides=list(hydra_cfg.overrides.task),
            launcher=launcher,
            extra=extra,
        )
    else:

        def compose(overrides: list[str]):
            return run_config(compose_config(config_name="sweep", overrides=overrides))

        def announce(run: PlannedRun, number: int, total: int) -> None:
            line = Text.assemble((f"run {number}/{total}", "bold"), f" {run.name}")
            Console(soft_wrap=True).print(line)

        with backbones_reused():
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
