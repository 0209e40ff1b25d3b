"""Checkpoint selection on held-out source-language dev data.

Trainer's own ``load_best_model_at_end`` needs its evaluation loop to produce the metric,
but extractive QA is scored only after windows are decoded into answer strings, and lowres
checkpoints hold trainable parameters only. So the best state is kept in memory here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import TrainerCallback


class CheckpointSelection(TrainerCallback):
    """Score the model at each candidate step; at the end, restore the best-scoring state."""

    def __init__(self, score: Callable[[], float], every: int) -> None:
        self.score = score
        self.every = every
        self.history: list[dict[str, float]] = []
        self.best_score: float | None = None
        self.best_step: int | None = None
        self._best_state: dict[str, torch.Tensor] | None = None

    def _consider(self, step: int, model) -> None:
        if self.history and self.history[-1]["step"] == step:
            return
        value = float(self.score())
        self.history.append({"step": step, "score": round(value, 4)})
        # Ties keep the earlier state: the later one has not shown it is better.
        if self.best_score is None or value > self.best_score:
            self.best_score, self.best_step = value, step
            self._best_state = {
                name: tensor.detach().clone()
                for name, tensor in model.trainable_state_dict().items()
            }

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every and state.global_step % self.every == 0:
            self._consider(state.global_step, model)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if not self.every:
            self._consider(state.global_step, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._consider(state.global_step, model)
        if self._best_state is None:
            return
        own = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self._best_state.items():
                own[name].copy_(value)

    def record(self, dev_examples: int) -> dict[str, Any]:
        return {
            "policy": "source",
            "dev_examples": dev_examples,
            "chosen_step": self.best_step,
            "chosen_score": None if self.best_score is None else round(self.best_score, 4),
            "history": self.history,
        }
