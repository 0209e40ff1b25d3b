"""The alignment objective's loss: both sides in one forward pass, as two passes computed it."""

from __future__ import annotations

import sys

import pytest
import torch
from helpers import build_flat, tiny_backbone

from lowres.data.pairs import tokenize_pairs
from lowres.losses.alignment import alignment_loss
from lowres.training.alignment import AlignmentObjective

# Sides of different lengths, so the joined batch pads the shorter one.
PAIRS = [
    ("the cat sat on the mat", "die Katze"),
    ("a red house", "ein rotes Haus am Rande der grossen Stadt"),
    ("hello", "hallo Welt"),
]


def _objective(tokenizer, kind: str, pooling: str) -> AlignmentObjective:
    return AlignmentObjective(
        source=tokenize_pairs(tokenizer, [(s, "") for s, _ in PAIRS], 32),
        target=tokenize_pairs(tokenizer, [(t, "") for _, t in PAIRS], 32),
        kind=kind,
        weight=0.1,
        warmup_steps=0,
        pooling=pooling,
        layers=[-1, 1],
        temperature=0.05,
        batch_size=3,
        tokenizer=tokenizer,
        seed=0,
    )


def _separate_passes(objective, model, source, target) -> torch.Tensor:
    """The loss as it was computed before: one forward pass per side."""
    return alignment_loss(
        objective.kind,
        objective.represent(model, source).float(),
        objective.represent(model, target).float(),
        temperature=objective.temperature,
    )


@pytest.mark.parametrize(("kind", "pooling"), [("contrastive", "mean"), ("mse", "first")])
def test_one_joined_pass_gives_the_loss_and_gradients_of_two(kind, pooling):
    backbone = tiny_backbone()
    # prompt_align's parts: deep prompts and LoRA on every linear layer of a frozen backbone
    model = build_flat(
        backbone,
        prompt_layers="all",
        adapter="lora",
        adapter_options={"target_modules": ["query", "key", "value", "dense"]},
    )
    model.eval()  # no LoRA dropout: both computations see the same function
    objective = _objective(backbone.tokenizer, kind, pooling)
    source, target = next(objective.batches())
    assert source["input_ids"].shape[1] != target["input_ids"].shape[1]

    trained = [p for p in model.parameters() if p.requires_grad]
    _separate_passes(objective, model, source, target).backward()
    separate = [None if p.grad is None else p.grad.clone() for p in trained]
    assert sum(g is not None for g in separate) > len(trained) // 2  # prompts and LoRA
    expected = _separate_passes(objective, model, source, target).detach()
    model.zero_grad(set_to_none=True)

    calls = []
    hook = model.model.register_forward_hook(lambda *_: calls.append(1))
    joined = objective.loss(model, source, target)
    hook.remove()
    joined.backward()
    assert len(calls) == 1  # both sides in one pass (two would be the slow path)
    assert float(joined.detach()) > 0
    torch.testing.assert_close(joined.detach(), expected, rtol=1e-5, atol=1e-6)
    for param, grad in zip(trained, separate, strict=True):
        if grad is None:  # the task head: the alignment loss never reaches it
            assert param.grad is None
        else:
            torch.testing.assert_close(param.grad, grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("declares_logits", [True, False])
def test_a_user_loss_gets_the_logits_it_declares_it_compares(
    tmp_path, monkeypatch, declares_logits
):
    declared = "agree.compares = 'logits'\n" if declares_logits else ""
    (tmp_path / "objtest_losses.py").write_text(
        "def agree(source, target):\n    return ((source - target) ** 2).mean()\n\n\n" + declared
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "objtest_losses", raising=False)
    backbone = tiny_backbone(task_kind="classification")
    model = build_flat(backbone, task_kind="classification")
    model.eval()
    user = _objective(backbone.tokenizer, "objtest_losses:agree", "mean")
    source, target = next(user.batches())
    represented = user.represent(model, source)
    if not declares_logits:  # pooled hidden states, as mse gets them
        hidden = _objective(backbone.tokenizer, "mse", "mean").represent(model, source)
        torch.testing.assert_close(represented, hidden)
        return
    # class logits, as the built-in kl gets them
    assert represented.shape == (len(PAIRS), 2)
    torch.testing.assert_close(represented, model(**source)["logits"])
    kl = _objective(backbone.tokenizer, "kl", "mean")
    torch.testing.assert_close(represented, kl.represent(model, source))
    expected = ((user.represent(model, source) - user.represent(model, target)) ** 2).mean()
    torch.testing.assert_close(user.loss(model, source, target), expected, rtol=1e-5, atol=1e-6)
