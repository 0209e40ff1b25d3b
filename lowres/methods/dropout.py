"""Dropout with a cheaper random mask, for CPU training (opt-in: ``trainer.fast_dropout``).

torch's CPU dropout draws its mask with ``bernoulli_``, one 64-bit generator call per
element in a serial loop: on me5-small with LoRA on every linear layer (109 dropouts a
step) that took about half of a training step, more than the matrix products, and it does
not get faster in bf16 (docs/benchmarks.md). ``FastDropout`` draws one 64-bit word per four
elements and keeps an element where its 16-bit share is at or above ``p`` of the range:
the same distribution up to the 1/65536 grid of ``p``, from the same seeded generator, but
other masks than torch's, so a run's numbers change (hence opt-in).
"""

from __future__ import annotations

import torch
from torch import nn

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


def use_fast_dropout(model: nn.Module) -> int:
    """Replace every ``nn.Dropout`` module of ``model`` by a ``FastDropout`` of the same
    ``p``, in place; returns how many were replaced. Dropout that a module applies through
    ``torch.nn.functional`` or inside attention (``scaled_dot_product_attention``'s
    ``dropout_p``) keeps torch's mask."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p, inplace=child.inplace))
                replaced += 1
    return replaced
