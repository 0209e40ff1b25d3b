"""Model FLOPs per step, against counts worked out by hand for the tiny BERT.

Tiny BERT: hidden 32, 2 layers, FFN 64. Per layer q, k, v, attention-out are 32x32 and the
FFN 32x64 + 64x32, so N = 2 x (4 x 1024 + 2 x 2048) = 16,384 weights in matrix products."""

from __future__ import annotations

import pytest
from helpers import build_flat, tiny_backbone

from lowres.methods.flops import step_flops

N, HIDDEN, LAYERS = 16_384, 32, 2


def _model(freeze: str, prompt_length: int = 0, layers: str = "input", freeze_k: int = 0):
    backbone = tiny_backbone()
    return build_flat(
        backbone,
        freeze=freeze,
        freeze_k=freeze_k,
        prompt_length=prompt_length,
        prompt_layers=layers,
    )


def test_full_fine_tuning_costs_three_forward_passes():
    flops = step_flops(_model("none", 0), [10, 20])
    tokens, pairs = 30, 10**2 + 20**2
    forward = 2 * N * tokens + 4 * HIDDEN * LAYERS * pairs
    assert flops.weights == N
    assert flops.forward == forward == 1_111_040
    assert flops.train == 3 * forward  # 6N per token, attention 3x forward
    assert flops.trained_from_layer == 0


def test_a_frozen_backbone_under_a_prompt_skips_the_weight_gradients():
    flops = step_flops(_model("backbone", 4), [10, 20])
    tokens, pairs = 38, 14**2 + 24**2  # the 4 prompt positions are computed too
    forward = 2 * N * tokens + 4 * HIDDEN * LAYERS * pairs
    assert flops.forward == forward
    # input gradients all the way down to the prompt (2N, attention 2x), no weight gradients
    assert flops.train == forward + 2 * N * tokens + 8 * HIDDEN * LAYERS * pairs == 3_083_264


def test_only_layers_above_the_lowest_trained_one_are_backpropagated():
    head_only = step_flops(_model("head_only", 0), [16])
    assert head_only.trained_from_layer == LAYERS
    assert head_only.train == head_only.forward  # the head is not counted
    upper = step_flops(_model("lower_k", 0, freeze_k=1), [16])
    layer = N // LAYERS
    # layer 1 trains: its input and weight gradients; layer 0 is never reached
    assert upper.trained_from_layer == 1
    attention = 4 * HIDDEN * 16**2
    assert upper.train == pytest.approx(
        upper.forward + (2 * layer * 16 + 2 * attention) + 2 * layer * 16
    )
