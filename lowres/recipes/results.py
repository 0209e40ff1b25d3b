"""The last step of a run that scores (``lowres train``, ``lowres evaluate``): its record."""

from __future__ import annotations

from lowres.evaluation import Evaluation, show_scores
from lowres.runfolder import RunFolder, RunMetrics
from lowres.training.trainer import LowresTrainer


def record(run: RunFolder, trainer: LowresTrainer, metrics: RunMetrics, evaluation: Evaluation):
    """Predictions and metrics.json (process 0 only), and the score table."""
    if trainer.args.should_save:
        for lang, answers in evaluation.predictions.items():
            run.write_json(f"predictions/{lang}.json", answers)
        run.write_metrics(metrics)
    if trainer.is_world_process_zero():
        show_scores(metrics)
