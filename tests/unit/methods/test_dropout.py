"""trainer.fast_dropout: the masks, their gradient, the attention, and where they replace
torch's."""

from __future__ import annotations

import pytest
import torch
from helpers import build_flat, tiny_backbone
from torch.profiler import ProfilerActivity, profile
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from lowres.methods.dropout import (
    FAST_DROPOUT_ATTENTION,
    FastDropout,
    keep_mask,
    sdpa_with_fast_dropout,
    use_fast_dropout,
)


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


def test_no_dropout_mask_comes_from_torch_s_per_element_draw_after_the_swap():
    """The slow path: torch's ``bernoulli_`` masks, in dropout modules and inside attention."""
    torch.manual_seed(0)
    model = build_flat(tiny_backbone(), adapter="lora", prompt_length=4, prompt_layers="all")
    layers = len(model.model.bert.encoder.layer)
    assert _dropout_draws(model) > layers  # hidden, LoRA and attention-probability dropout
    replaced = use_fast_dropout(model)
    assert not any(type(m) is torch.nn.Dropout for m in model.modules())
    assert replaced == sum(isinstance(m, FastDropout) for m in model.modules())
    assert model.model.config._attn_implementation == FAST_DROPOUT_ATTENTION
    assert _dropout_draws(model) == 0


def test_the_attention_computes_what_sdpa_does_and_drops_probabilities_by_the_mask():
    torch.manual_seed(0)
    query, key, value = (torch.randn(2, 3, 6, 8) for _ in range(3))
    mask = torch.ones(2, 1, 6, 6, dtype=torch.bool)
    mask[0, ..., 4:] = False  # two padded key positions in the first row
    layer = torch.nn.Module()
    layer.is_causal = False
    expected, _ = sdpa_attention_forward(layer, query, key, value, mask, dropout=0.0)
    # a dropout so small that no entry is dropped still takes the masked path
    tiny, _ = sdpa_with_fast_dropout(layer, query, key, value, mask, dropout=1e-9)
    assert tiny.shape == expected.shape == (2, 6, 3, 8)
    assert torch.allclose(tiny, expected, atol=1e-5)
    # value = identity: each output row is its dropped-out, rescaled probabilities
    eye = torch.eye(6).expand(2, 3, 6, 6)
    probs, _ = sdpa_with_fast_dropout(layer, query, key, eye, mask, dropout=0.5)
    full, _ = sdpa_attention_forward(layer, query, key, eye, mask, dropout=0.0)
    dropped = probs == 0
    assert dropped.any() and (~dropped).any()
    assert torch.allclose(probs[~dropped], 2 * full[~dropped], atol=1e-6)
    assert (probs[..., 4:][0] == 0).all()  # padded keys get no weight


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
