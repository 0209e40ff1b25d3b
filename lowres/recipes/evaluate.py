"""``lowres evaluate checkpoint=RUN_DIR``: restore a run's trained parameters, evaluate again.

The same phases as training without the fit: the run's saved config (with the command line's
overrides on top) is rebuilt by the same builders, its checkpoint restored, and the scores
written to a new run folder, never the trained one.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lowres.backbones import resolve_local
from lowres.builders import build_trainer, restore_run, saved_config, training_arguments
from lowres.cache import FeatureCache
from lowres.errors import LowresError
from lowres.evaluation import evaluate_languages
from lowres.methods.build import parameter_report
from lowres.recipes.train import quiet_libraries, record
from lowres.runfolder import RunFolder, RunMetrics
from lowres.schema import validate
from lowres.training.progress import RichProgress


def checkpoint_config(cfg: DictConfig, output_dir: str | Path | None) -> DictConfig:
    """The checkpoint's saved config with this command's overrides applied on top."""
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
            if not o.startswith("checkpoint=")
        ]
    run_cfg = OmegaConf.merge(saved_config(run_dir), OmegaConf.from_dotlist(overrides))
    run_cfg.checkpoint = str(run_dir)
    return run_cfg


def evaluate(cfg: DictConfig, output_dir: str | Path | None = None) -> RunMetrics:
    """Rebuild a run's model from its saved config, restore its weights, evaluate again."""
    run_cfg = checkpoint_config(cfg, output_dir)
    resolve_local(run_cfg.backbone)
    validate(run_cfg)
    quiet_libraries()
    run = RunFolder.for_job(output_dir)
    task, model, tokenizer = restore_run(run_cfg, Path(run_cfg.checkpoint))
    args = training_arguments(
        run_cfg.trainer, run.path / "trainer", task_kind=task.kind, learning_rate=0.0
    )
    progress = RichProgress(bars=run_cfg.trainer.progress)
    trainer = build_trainer(model, tokenizer, args, progress=progress)
    cache = FeatureCache.from_setting(run_cfg.data.cache_dir)
    try:
        evaluation = evaluate_languages(
            trainer, task, task.evaluation_sets(), tokenizer, cache=cache
        )
    finally:
        progress.stop()
    metrics = RunMetrics(
        task=task.name,
        backbone=run_cfg.backbone.name,
        checkpoint=str(run_cfg.checkpoint),
        **evaluation.scores(),
        task_extras=task.extra_metrics(evaluation.per_language),
        **parameter_report(model),
    )
    record(run, trainer, metrics, evaluation)
    return metrics
