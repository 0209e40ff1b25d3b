"""``lowres evaluate checkpoint=RUN_DIR``: restore a run's trained parameters, evaluate again.

The same phases as training without the fit: the run's saved config (with the command line's
overrides on top) is rebuilt by the same builders, its checkpoint restored, and the scores
written to a new run folder, never the trained one.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lowres.assembly import assemble_evaluation
from lowres.builders import saved_config
from lowres.errors import LowresError
from lowres.evaluation import evaluate_languages
from lowres.overrides import key_of
from lowres.recipes.preflight import start_up
from lowres.recipes.results import record
from lowres.runfolder import RunFolder, RunMetrics
from lowres.schema import TaskConfig, config_dir

# The tokenization a checkpoint was trained with; a run evaluated on another task keeps it
# (e.g. task.max_length=256) unless the command line sets it.
WINDOW_KEYS = ("max_length", "stride", "max_question_length", "n_best", "max_answer_length")


def checkpoint_config(cfg: DictConfig, output_dir: str | Path | None) -> DictConfig:
    """The checkpoint's saved config with this command's overrides applied on top.

    ``task=NAME`` evaluates the run on another task of the same kind (a run trained on the
    English SQuAD pool for XQuAD, evaluated on MLQA): the task comes from configs/task/,
    the training-time window settings stay, and data.k and data.pool_fraction fall to 0
    unless given, since none of the new task's data trained the run.
    """
    run_dir = Path(cfg.checkpoint)
    if not run_dir.is_dir():
        raise LowresError(
            f"checkpoint={run_dir} is not a folder; give the run folder that `lowres train` "
            "wrote (it prints its path), e.g. checkpoint=outputs/xquad/me5-small/<date>."
        )
    overrides = []
    if output_dir is None and HydraConfig.initialized():
        overrides = [
            o.lstrip("+")
            for o in HydraConfig.get().overrides.task
            if not o.lstrip("+").startswith(("checkpoint=", "task="))
        ]
    saved = saved_config(run_dir)
    if cfg.get("task") is not None and cfg.task.name != saved.task.name:
        saved = switch_task(saved, cfg.task, run_dir, overrides)
    run_cfg = OmegaConf.merge(saved, OmegaConf.from_dotlist(overrides))
    run_cfg.checkpoint = str(run_dir)
    return run_cfg


def switch_task(saved: DictConfig, task: DictConfig, run_dir: Path, overrides: list[str]):
    """``saved`` with ``task`` in place of the task it was trained on; refused across kinds."""
    trained = saved.task
    if task.kind != trained.kind or task.num_labels != trained.num_labels:
        same = [name for name, kind in task_kinds().items() if kind == trained.kind]
        raise LowresError(
            f"task={task.name}: the checkpoint {run_dir} was trained on {trained.name} (kind "
            f"{trained.kind}), so its head predicts "
            + ("answer spans" if trained.kind == "extractive_qa" else "class labels")
            + f"; {task.name} is of kind {task.kind}, which that head cannot answer. Evaluate "
            f"it on a task of its kind ({', '.join(same)}), or train a run on {task.name}."
        )
    given = {key_of(o) for o in overrides}
    switched = OmegaConf.merge(OmegaConf.structured(TaskConfig), task)
    for key in WINDOW_KEYS:
        if f"task.{key}" not in given:
            switched[key] = trained[key]
    out = saved.copy()
    out.task = switched
    for key in ("data.k", "data.pool_fraction"):
        if key not in given:
            OmegaConf.update(out, key, 0)
    return out


def task_kinds() -> dict[str, str]:
    """Task name -> kind, from configs/task/."""
    return {
        path.stem: OmegaConf.load(path).get("kind", "")
        for path in sorted((config_dir() / "task").glob("*.yaml"))
    }


def start(cfg: DictConfig, output_dir: str | Path | None) -> tuple[DictConfig, RunFolder]:
    """The run config to evaluate (:func:`checkpoint_config`), checked, and the new run folder."""
    run_cfg = checkpoint_config(cfg, output_dir)
    start_up(run_cfg)
    return run_cfg, RunFolder.for_job(output_dir)


def evaluate(cfg: DictConfig, output_dir: str | Path | None = None) -> RunMetrics:
    """Rebuild a run's model from its saved config, restore its weights, evaluate again."""
    run_cfg, run = start(cfg, output_dir)
    parts = assemble_evaluation(run_cfg, run)
    task = parts.task
    try:
        evaluation = evaluate_languages(
            parts.trainer, task, task.evaluation_sets(), parts.tokenizer, cache=parts.cache
        )
    finally:
        parts.progress.stop()
    trained = parts.trained_task
    metrics = RunMetrics(
        task=task.name,
        backbone=parts.backbone,
        checkpoint=parts.checkpoint,
        **evaluation.scores(),
        task_extras={
            **task.extra_metrics(evaluation.per_language),
            **({"trained_task": trained} if trained != task.name else {}),
        },
        **parts.parameters,
    )
    record(run, parts.trainer, metrics, evaluation)
    return metrics
