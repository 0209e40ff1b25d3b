"""The step count and warm-up a run trains with (lowres.builders.planned_steps)."""

from __future__ import annotations

from lowres.builders import planned_steps, training_arguments
from lowres.schema import TrainerConfig


def test_min_steps_keeps_a_k_shot_stage_from_shrinking_with_k():
    two_passes = TrainerConfig(epochs=2.0, batch_size=8, warmup_ratio=0.1)
    assert planned_steps(two_passes, 8) == (2, 0)  # k = 8: two updates, none at lr 0
    assert planned_steps(two_passes, 128) == (32, 3)  # 16 batches x 2 passes, warm-up 3.2 -> 3
    learning = TrainerConfig(epochs=2.0, batch_size=8, warmup_ratio=0.1, min_steps=30)
    assert planned_steps(learning, 8) == (30, 3)
    assert planned_steps(learning, 128) == (32, 3)  # already above the floor
    assert planned_steps(TrainerConfig(max_steps=4, warmup_ratio=0.1), 1000) == (4, 0)
    accumulating = TrainerConfig(epochs=1.0, batch_size=4, grad_accum=2)
    assert planned_steps(accumulating, 20) == (2, 0)  # 5 batches // 2, as the Trainer counts
    assert planned_steps(accumulating, 20, processes=2)[0] == 1


def test_the_trainer_gets_the_planned_steps(tmp_path):
    trainer = TrainerConfig(epochs=1.0, batch_size=8, warmup_ratio=0.1, min_steps=30)
    args = training_arguments(
        trainer, tmp_path, task_kind="extractive_qa", learning_rate=1e-3, train_windows=8
    )
    assert (args.max_steps, args.get_warmup_steps(args.max_steps)) == (30, 3)
    tiny = TrainerConfig(max_steps=4, warmup_ratio=0.1)
    args = training_arguments(
        tiny, tmp_path, task_kind="extractive_qa", learning_rate=1e-3, train_windows=8
    )
    assert args.get_warmup_steps(4) == 0  # the Trainer alone would round 0.4 up to 1
