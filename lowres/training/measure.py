"""A measurement taken every n training steps and logged with the losses (train_log.jsonl)."""

from __future__ import annotations

from collections.abc import Callable

from transformers import TrainerCallback


class PeriodicMeasure(TrainerCallback):
    """Every ``every`` optimizer steps, ``measure()``'s numbers join the log history.

    The Trainer writes only losses and the learning rate over steps; what the alignment loss
    is for (held-out translations moving together) needs its own curve beside them.
    """

    def __init__(self, measure: Callable[[], dict[str, float]], every: int) -> None:
        self.measure = measure
        self.every = every

    def on_step_end(self, args, state, control, **kwargs):
        if self.every > 0 and state.global_step % self.every == 0:
            state.log_history.append({**self.measure(), "step": state.global_step})
        return control
