"""trainer.fast_dropout: FastDropout's masks, its gradient, and where it replaces torch's."""

from __future__ import annotations

import pytest
import torch
from helpers import build_flat, tiny_backbone
from torch.profiler import ProfilerActivity, profile

from lowres.methods.dropout import FastDropout, keep_mask, use_fast_dropout


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_the_mask_keeps_each_entry_with_probability_one_minus_p(p):
    torch.manual_seed(0)
    kept = keep_mask(torch.Size([400, 1000]), p, torch.device("cpu")).float().mean().item()
    assert kept == pytest.approx(1 - p, abs=0.003)  # 400k draws: standard error below 0.001


def test_the_mask_follows_the_seeded_generator():
    shape = torch.Size([7, 13])  # 91 entries: not a multiple of the four draws per word
    torch.manual_seed(3)
    first = keep_mask(shape, 0.3, torch.device("cpu"))
    torch.manual_seed(3)
    assert torch.equal(first, keep_mask(shape, 0.3, torch.device("cpu")))
    assert not torch.equal(first, keep_mask(shape, 0.3, torch.device("cpu")))


def test_fast_dropout_scales_what_it_keeps_and_passes_the_gradient_through_the_mask():
    torch.manual_seed(0)
    x = torch.randn(64, 48, requires_grad=True)
    layer = FastDropout(0.25)
    y = layer(x)
    kept = y != 0
    assert 0.6 < kept.float().mean() < 0.9
    assert torch.allclose(y[kept], x[kept] / 0.75)
    y.sum().backward()
    assert torch.allclose(x.grad, kept.float() / 0.75)
    layer.eval()
    assert layer(x) is x


def _dropout_draws(model) -> int:
    """torch's own dropout masks drawn in one training forward and backward."""
    ids = torch.randint(5, 100, (2, 24))
    model.train()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model(input_ids=ids, attention_mask=torch.ones_like(ids))["start_logits"].sum().backward()
    return sum(e.count for e in prof.key_averages() if e.key == "aten::bernoulli_")


def test_only_attention_dropout_keeps_torch_s_masks_after_the_swap():
    """The slow path (torch's per-element mask) is left only inside attention."""
    torch.manual_seed(0)
    model = build_flat(tiny_backbone(), adapter="lora", prompt_length=4, prompt_layers="all")
    layers = len(model.model.bert.encoder.layer)
    before = _dropout_draws(model)
    replaced = use_fast_dropout(model)
    assert not any(type(m) is torch.nn.Dropout for m in model.modules())
    assert replaced == sum(isinstance(m, FastDropout) for m in model.modules())
    assert before > layers
    assert _dropout_draws(model) == layers  # the attention probabilities' masks


def test_evaluation_is_unchanged_by_the_swap():
    torch.manual_seed(0)
    model = build_flat(tiny_backbone(), adapter="lora", prompt_length=4, prompt_layers="all")
    ids = torch.randint(5, 100, (3, 20))
    mask = torch.ones_like(ids)
    model.eval()
    before = model(input_ids=ids, attention_mask=mask)["start_logits"]
    use_fast_dropout(model)
    model.eval()
    assert torch.equal(model(input_ids=ids, attention_mask=mask)["start_logits"], before)
