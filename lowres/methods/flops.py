"""Model FLOPs of a step, counted from the model's shapes: what a benchmark divides by time.

Only matrix products are counted; they are nearly all of a transformer's work. Per token, a
linear layer with ``W`` weights costs ``2W`` forward. Backward costs ``2W`` more for the
gradient of its input, needed wherever something at or below the layer trains, and ``2W``
for the gradient of its weights, only when they train. So full fine-tuning costs the usual
``6N`` per token, and a frozen backbone under a soft prompt ``4N`` (the gradient still has to
reach the prompt at the bottom, but no weight gradient is formed). Attention adds ``4·d``
per pair of positions and layer forward (scores and weighted sum), twice that backward.

The head (a few thousand weights on an encoder) and the embedding lookups are left out.
Positions are the text tokens plus the soft prompt; padding is never counted, so FLOPs over
time give the *useful* throughput of a padded or unpadded batch alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from lowres.methods.freezing import find_layers


@dataclass(frozen=True)
class StepFlops:
    forward: float  # one forward pass over the sequences
    train: float  # forward + backward as this model trains (its frozen parts included)
    weights: int  # weights of the layer stack's matrix products
    trained_from_layer: int  # lowest layer that backward has to reach; = layers if none


def _linear_weights(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(
        m.weight.numel()
        for m in module.modules()
        if isinstance(m, nn.Linear) and (m.weight.requires_grad or not trainable_only)
    )


def lowest_trained_layer(model) -> int:
    """The lowest layer whose input gradient backward must compute (layers if none)."""
    layers = find_layers(model.model)
    if model.prompt is not None and model.prompt.requires_grad:
        return 0  # the input prompt sits below every layer
    embeddings = model.model.get_input_embeddings()
    if any(p.requires_grad for p in embeddings.parameters()):
        return 0
    if model.deep_prompts is not None and model.deep_prompts.requires_grad:
        return min(model.inject_layers)
    for index, layer in enumerate(layers):
        if any(p.requires_grad for p in layer.parameters()):
            return index
    return len(layers)


def step_flops(model, text_lengths: Sequence[int], *, causal: bool = False) -> StepFlops:
    """FLOPs of one step of ``model`` (a prompted model) over sequences of these lengths."""
    layers = find_layers(model.model)
    depth = len(layers)
    hidden = model.config.hidden_size
    per_layer = [_linear_weights(layer) for layer in layers]
    trained = sum(_linear_weights(layer, trainable_only=True) for layer in layers)
    lowest = lowest_trained_layer(model)
    above = sum(per_layer[lowest:])
    weights = sum(per_layer)
    pair_share = 0.5 if causal else 1.0  # a causal mask computes half the score matrix
    positions = [n + model.length for n in text_lengths]
    tokens = sum(positions)
    pairs = pair_share * sum(n * n for n in positions)
    forward = 2 * weights * tokens + 4 * hidden * depth * pairs
    input_gradients = 2 * above * tokens + 8 * hidden * (depth - lowest) * pairs
    weight_gradients = 2 * trained * tokens
    return StepFlops(
        forward=float(forward),
        train=float(forward + input_gradients + weight_gradients),
        weights=weights,
        trained_from_layer=lowest,
    )
