"""The trainer's own parts: the model's optimizer groups and the task + lambda * alignment loss."""

from __future__ import annotations

import pytest
import torch
from helpers import build_flat, tiny_backbone
from transformers import TrainingArguments

from lowres.data.pairs import tokenize_pairs
from lowres.tasks import DataSettings, create_task
from lowres.training.alignment import AlignmentObjective
from lowres.training.trainer import LENGTH_COLUMN, LowresTrainer, PaddingCollator


def _model(**options):
    return build_flat(tiny_backbone(), prompt_layers="all", **options)


def test_optimizer_groups_come_from_the_model_and_skip_frozen_weights():
    model = _model(freeze="lower_k", freeze_k=1)
    groups = model.param_groups(lr=1e-4, weight_decay=0.01, prompt_lr=0.3)
    by_id = {id(p): n for n, p in model.named_parameters()}
    names = [{by_id[id(p)] for p in g["params"]} for g in groups]
    decay, no_decay, prompt = names
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert decay | no_decay | prompt == trainable  # every trainable tensor, once
    assert not (decay & no_decay) and not (decay & prompt) and not (no_decay & prompt)
    assert prompt == {"prompt", "deep_prompts"}
    assert "model.bert.encoder.layer.1.attention.self.query.weight" in decay
    assert "model.bert.encoder.layer.1.attention.self.query.bias" in no_decay
    assert "model.bert.encoder.layer.1.output.LayerNorm.weight" in no_decay
    assert not any(".layer.0." in n or "embeddings" in n for n in trainable)  # frozen below k
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(1e-4, 0.01), (1e-4, 0.0), (0.3, 0.0)]
    # without a prompt rate the prompts train at the weights' rate
    assert model.param_groups(lr=1e-4, weight_decay=0.0)[-1]["lr"] == 1e-4


def test_a_frozen_backbone_optimizes_only_prompt_and_head():
    model = _model()
    groups = model.param_groups(lr=1e-3, weight_decay=0.0, prompt_lr=0.01)
    count = sum(p.numel() for g in groups for p in g["params"])
    # tiny BERT, hidden 32: prompt 4 x 32, deep prompt (layer 1) 4 x 32, QA head 32 x 2 + 2
    assert count == sum(p.numel() for p in model.parameters() if p.requires_grad) == 322


def test_the_training_loss_is_task_plus_weighted_alignment(tmp_path):
    backbone = tiny_backbone()
    model = _model()
    settings = DataSettings(source="sample", root="", source_language="en", eval_languages=["en"])
    task = create_task(
        "xquad",
        settings,
        kind="extractive_qa",
        max_length=128,
        stride=32,
        max_question_length=32,
        n_best=20,
        max_answer_length=30,
    )
    records = task.source_pool()[:4]
    features = task.train_features(records, backbone.tokenizer)
    rows = [{k: features[k][i] for k in features} for i in range(4)]
    batch = PaddingCollator(backbone.tokenizer)(rows)
    pairs = [("the cat sat", "die Katze sass"), ("a red house", "ein rotes Haus")] * 2
    objective = AlignmentObjective(
        source=tokenize_pairs(backbone.tokenizer, [(s, "") for s, _ in pairs], 32),
        target=tokenize_pairs(backbone.tokenizer, [(t, "") for _, t in pairs], 32),
        kind="mse",
        weight=0.5,
        warmup_steps=4,
        pooling="mean",
        layers="last",
        temperature=0.05,
        batch_size=2,
        tokenizer=backbone.tokenizer,
        seed=3,
    )
    args = TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", length_column_name=LENGTH_COLUMN
    )
    trainer = LowresTrainer(
        model=model, args=args, processing_class=backbone.tokenizer, alignment=objective
    )
    trainer.state.global_step = 2  # halfway through the 4 warm-up steps: weight 0.25
    # training mode (compute_loss adds alignment only then); a frozen backbone runs without
    # dropout, so the parts can be recomputed exactly
    model.train()
    source, target = next(objective.batches())  # the batch the trainer's iterator yields first
    with torch.no_grad():
        task_loss = model(**batch)["loss"]
        align_loss = objective.loss(model, source, target)
        total = trainer.compute_loss(model, batch)
    assert float(align_loss) > 0
    assert total.item() == pytest.approx(task_loss.item() + 0.25 * align_loss.item(), rel=1e-6)
    assert trainer._sums["task_loss"] == pytest.approx(task_loss.item(), rel=1e-6)
    assert trainer._sums["align_loss"] == pytest.approx(align_loss.item(), rel=1e-6)
    assert trainer._sums["align_weight"] == 0.25 and trainer._count == 1


def test_periodic_measure_logs_beside_the_losses():
    from types import SimpleNamespace

    from lowres.training.measure import PeriodicMeasure

    calls = iter([0.3, 0.2])
    callback = PeriodicMeasure(lambda: {"held_out_distance": next(calls)}, every=2)
    state = SimpleNamespace(global_step=0, log_history=[{"loss": 1.0, "step": 1}])
    for step in (1, 2, 3, 4):
        state.global_step = step
        callback.on_step_end(None, state, None)
    assert state.log_history == [
        {"loss": 1.0, "step": 1},
        {"held_out_distance": 0.3, "step": 2},
        {"held_out_distance": 0.2, "step": 4},
    ]


def test_report_to_tensorboard_needs_the_package(tmp_path, monkeypatch):
    import importlib.util

    from lowres.builders import training_arguments
    from lowres.errors import ConfigError
    from lowres.schema import TrainerConfig

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("tensorboard") else real(name, *a),
    )
    config = TrainerConfig(report_to="tensorboard", device="cpu")
    with pytest.raises(ConfigError, match="trainer.report_to=tensorboard needs the tensorboard"):
        training_arguments(config, tmp_path, task_kind="extractive_qa", learning_rate=1e-3)
    args = training_arguments(
        TrainerConfig(device="cpu"), tmp_path, task_kind="extractive_qa", learning_rate=1e-3
    )
    assert args.report_to in ([], ["none"], "none")


def test_the_fused_adamw_updates_as_the_per_tensor_loop_did(tmp_path):
    """Full fine-tuning with a prompt group: the trainer's fused AdamW and torch's per-tensor
    AdamW (the optimizer before) make the same updates, step after step, from the same
    gradients. (Recomputing gradients from each model would let rounding differences grow
    where Adam divides a gradient near its eps by itself.)"""
    import copy

    model = _model(freeze="none")
    reference = copy.deepcopy(model)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", learning_rate=1e-3
    )
    fused = LowresTrainer(model=model, args=args, prompt_lr=0.01).create_optimizer()
    assert fused.defaults["fused"] is True  # the slow path would leave it None
    looped = torch.optim.AdamW(
        reference.param_groups(lr=1e-3, weight_decay=0.0, prompt_lr=0.01),
        lr=1e-3,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
        foreach=False,
    )
    pairs = list(zip(model.parameters(), reference.parameters(), strict=True))
    generator = torch.Generator().manual_seed(1)
    reference.eval()  # no dropout
    for _ in range(4):
        ids = torch.randint(5, 100, (3, 12), generator=generator)
        batch = {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "start_positions": torch.randint(0, 12, (3,), generator=generator),
            "end_positions": torch.randint(0, 12, (3,), generator=generator),
        }
        reference(**batch)["loss"].backward()
        for param, twin in pairs:
            param.grad = None if twin.grad is None else twin.grad.clone()
        fused.step()
        looped.step()
        fused.zero_grad(set_to_none=True)
        looped.zero_grad(set_to_none=True)
    trained = dict(reference.named_parameters())
    for name, param in model.named_parameters():
        torch.testing.assert_close(param, trained[name], rtol=1e-6, atol=1e-7)
    assert not torch.equal(trained["prompt"], start["prompt"])
    assert not torch.equal(trained["model.qa_outputs.weight"], start["model.qa_outputs.weight"])
