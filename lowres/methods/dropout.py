"""Dropout with a cheaper random mask, for CPU training (opt-in: ``trainer.fast_dropout``).

torch's CPU dropout draws its mask with ``bernoulli_``, one 64-bit generator call per
element in a serial loop: on me5-small with LoRA on every linear layer (109 dropouts a
step) dropout took about half of a training step, and it does not get faster in bf16
(docs/benchmarks.md). ``FastDropout`` draws one 64-bit word per four
elements and keeps an element where its 16-bit share is at or above ``p`` of the range:
the same distribution up to the 1/65536 grid of ``p``, from the same seeded generator, but
other masks than torch's, so a run's numbers change (hence opt-in).

Attention-probability dropout happens inside ``scaled_dot_product_attention``, which also
falls back from its fused kernel to the plain one when dropout is on; ``sdpa`` attention
is therefore swapped for :func:`sdpa_with_fast_dropout`, the same computation with
``keep_mask``'s mask on the probabilities of bidirectional layers while training, and
``sdpa`` itself otherwise (evaluation, causal or grouped-head layers).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

_LOW, _HIGH = torch.iinfo(torch.int64).min, torch.iinfo(torch.int64).max
_SHARES = 4  # 16-bit draws per 64-bit word


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """A boolean mask of ``shape`` whose entries are True with probability ``1 - p``
    (``p`` rounded to a multiple of 1/65536)."""
    count = shape.numel()
    words = torch.randint(_LOW, _HIGH, (-(-count // _SHARES),), dtype=torch.int64, device=device)
    draws = words.view(torch.int16)[:count].view(shape)  # uniform over -32768..32767
    return draws >= round(p * 65536) - 32768


class FastDropout(nn.Dropout):
    """``nn.Dropout`` with the mask of :func:`keep_mask`; the identity in eval mode."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return input
        if self.p == 1:
            return torch.zeros_like(input)
        # As torch's CPU dropout: a mask of 0 and 1/(1-p) in the input's dtype, one product
        # forward and one backward.
        noise = keep_mask(input.shape, self.p, input.device).to(input.dtype)
        return input * noise.div_(1.0 - self.p)


FAST_DROPOUT_ATTENTION = "lowres_sdpa_fast_dropout"


def sdpa_with_fast_dropout(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' ``sdpa`` attention, with :func:`keep_mask` for the dropout of the
    attention probabilities of a bidirectional layer whose heads are not grouped."""
    grouped = getattr(module, "num_key_value_groups", 1) > 1
    # as sdpa_attention_forward decides it: a layer that does not say is causal
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    masked = attention_mask is None or attention_mask.dtype == torch.bool
    if not dropout or grouped or causal or not masked or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            **kwargs,
        )
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(-2, -1)) * scale
    if attention_mask is not None:  # True: attend
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    noise = keep_mask(probs.shape, dropout, probs.device).to(probs.dtype)
    output = torch.matmul(probs * noise.div_(1.0 - dropout), value)
    return output.transpose(1, 2).contiguous(), None


AttentionInterface.register(FAST_DROPOUT_ATTENTION, sdpa_with_fast_dropout)
AttentionMaskInterface.register(FAST_DROPOUT_ATTENTION, sdpa_mask)


def use_fast_dropout(model: nn.Module) -> int:
    """Replace every ``nn.Dropout`` module of ``model`` by a ``FastDropout`` of the same
    ``p``, and ``sdpa`` attention by :func:`sdpa_with_fast_dropout` (not in the decoder of
    an encoder-decoder model), in place; returns how many dropout modules were replaced.
    Dropout that a module applies through ``torch.nn.functional`` keeps torch's mask."""
    replaced = 0
    for parent in list(model.modules()):
        config = getattr(parent, "config", None)
        if (
            config is not None
            and getattr(config, "_attn_implementation", None) == "sdpa"
            and not getattr(config, "is_decoder", False)
        ):
            config._attn_implementation = FAST_DROPOUT_ATTENTION
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p, inplace=child.inplace))
                replaced += 1
    return replaced
