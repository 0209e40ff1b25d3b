"""Knowledge-alignment losses between source-language and target-language representations.

Everything here takes plain tensors and returns a scalar tensor; which representations a loss
is given (pooled hidden states or class logits) is what its registry entry declares
(``compares``, lowres/registry.py), and the training loop decides the weight.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lowres.errors import ConfigError
from lowres.registry import ALIGNMENT_LOSSES, POOLINGS


def first_pool(hidden_states: Tensor, mask: Tensor) -> Tensor:
    """The first token's hidden state ([CLS] or <s> on encoders)."""
    return hidden_states[:, 0]


def mean_pool(hidden_states: Tensor, mask: Tensor) -> Tensor:
    """The mean over the real (mask 1) tokens."""
    weights = mask.to(hidden_states.dtype).unsqueeze(-1)
    # A row with no real tokens pools to zeros instead of NaN (0/0).
    count = weights.sum(dim=1).clamp(min=1.0)
    return (hidden_states * weights).sum(dim=1) / count


def pool(hidden_states: Tensor, mask: Tensor, how: str) -> Tensor:
    """Pool ``[B, T, H]`` hidden states to ``[B, H]`` with the pooling ``how`` (``POOLINGS``)."""
    return POOLINGS.load(how)(hidden_states, mask)


def pool_layers(
    all_hidden_states: Sequence[Tensor],
    mask: Tensor,
    layers: Sequence[int] | Literal["last"],
    how: str,
) -> Tensor:
    """Pool each chosen layer and average them to ``[B, H]``.

    ``layers`` indexes ``all_hidden_states`` as returned with ``output_hidden_states=True``:
    index 0 is the embedding output, ``-1`` (or ``"last"``) the final layer.
    """
    n = len(all_hidden_states)
    if layers == "last":
        layers = [-1]
    if (
        isinstance(layers, str)
        or not layers
        or not all(isinstance(i, int) and not isinstance(i, bool) and -n <= i < n for i in layers)
    ):
        raise ConfigError(
            f"align.layers is {layers!r}, but it must be 'last' or a non-empty list of "
            f"integers in {-n}..{n - 1} (this model returns {n} hidden states: index 0 is the "
            "embedding output, -1 the last layer); set align.layers to 'last' or to indices "
            "in that range."
        )
    pooled = [pool(all_hidden_states[i], mask, how) for i in layers]
    return torch.stack(pooled).mean(dim=0)


def mse(source: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over all elements."""
    return F.mse_loss(target, source)


def cosine(source: Tensor, target: Tensor) -> Tensor:
    """Mean over the batch of ``1 - cos(source_i, target_i)``."""
    return (1.0 - F.cosine_similarity(source, target, dim=-1)).mean()


def contrastive(source: Tensor, target: Tensor, temperature: float = 0.05) -> Tensor:
    """Symmetric InfoNCE with in-batch negatives.

    ``logits[i, j] = cos(target_i, source_j) / temperature`` with the diagonal as positives;
    the loss averages the cross-entropy of target→source (rows) and source→target (columns), so
    neither language is favoured as the anchor. With a batch of one there are no negatives and
    the loss is 0.
    """
    logits = F.normalize(target, dim=-1) @ F.normalize(source, dim=-1).T / temperature
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def kl(source: Tensor, target: Tensor, temperature: float = 1.0) -> Tensor:
    """Distil source logits into target logits: ``KL(p_source || p_target) * T**2``, batchmean.

    Logits are ``[B, C]`` or ``[B, ..., C]`` (softmax over the last dimension; the sum over all
    other positions is divided by ``B``).
    """
    # The source language is the one with labelled data, so its predictions are the teacher:
    # letting gradient reach it would pull the well-trained side towards the weaker target side.
    teacher = F.log_softmax(source.detach() / temperature, dim=-1)
    student = F.log_softmax(target / temperature, dim=-1)
    # T**2 keeps gradient magnitudes comparable across temperatures (Hinton et al., 2015).
    loss = F.kl_div(student, teacher, reduction="sum", log_target=True) / source.shape[0]
    return loss * temperature**2


def _options(fn: Callable[..., Tensor]) -> set[str]:
    return set(inspect.signature(fn).parameters) - {"source", "target"}


def alignment_loss(kind: str, source: Tensor, target: Tensor, **kw: float) -> Tensor:
    """Apply the loss ``kind`` (``lowres.registry.ALIGNMENT_LOSSES``), passing it the options
    it takes."""
    fn = ALIGNMENT_LOSSES.load(kind)
    # One config carries options for every loss (align.temperature means nothing to mse), so
    # options another loss takes are dropped; a name no loss takes is a caller bug.
    losses = [fn, *map(ALIGNMENT_LOSSES.load, ALIGNMENT_LOSSES.builtins)]
    unknown = set(kw) - set().union(*map(_options, losses))
    if unknown:
        raise TypeError(f"unknown alignment loss options: {', '.join(sorted(unknown))}")
    accepted = _options(fn)
    kw = {key: value for key, value in kw.items() if key in accepted}
    if source.shape != target.shape:
        raise ValueError(f"source {tuple(source.shape)} and target {tuple(target.shape)} differ")
    return fn(source, target, **kw)


def warmup_weight(step: int, weight: float, warmup_steps: int) -> float:
    """Ramp the alignment weight linearly from 0 at ``step`` 0 to ``weight`` at ``warmup_steps``.

    ``warmup_steps == 0`` means the full weight from the first step.
    """
    if warmup_steps == 0:
        return weight
    return weight * min(1.0, max(step, 0) / warmup_steps)
