"""Alignment losses and pooling, checked against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from lowres.errors import ConfigError
from lowres.losses.alignment import (
    alignment_loss,
    contrastive,
    cosine,
    kl,
    mse,
    pool,
    pool_layers,
    warmup_weight,
)


def t(rows: list) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32, requires_grad=True)


HIDDEN = torch.tensor(
    [
        [[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]],
        [[5.0, 6.0], [50.0, 50.0], [-50.0, 7.0]],
    ]
)


MASK = torch.tensor([[1, 1, 0], [1, 0, 0]])


def test_mse_by_hand() -> None:
    # Differences 0, 2, 3, 0 -> squares 0, 4, 9, 0 -> mean 13 / 4.
    loss = mse(t([[1, 2], [3, 4]]), t([[1, 0], [0, 4]]))
    assert loss.item() == pytest.approx(3.25)


def test_cosine_by_hand() -> None:
    # Row 0: [1, 0] vs [0, 2] are orthogonal -> 1 - 0 = 1.
    # Row 1: [3, 4] vs [4, 3] -> cos = 24 / 25 -> 1 - 0.96 = 0.04. Mean (1 + 0.04) / 2.
    loss = cosine(t([[1, 0], [3, 4]]), t([[0, 2], [4, 3]]))
    assert loss.item() == pytest.approx(0.52)


def test_contrastive_identity_by_hand() -> None:
    # Unit vectors e0, e1 on both sides: logits = I / tau. Each row and column is a 2-way
    # softmax with the positive at 1/tau and the negative at 0: -log(e^(1/tau) / (e^(1/tau) + 1))
    # = log(1 + e^(-1/tau)).
    eye = [[1, 0], [0, 1]]
    assert contrastive(t(eye), t(eye), temperature=1.0).item() == pytest.approx(
        math.log(1 + math.exp(-1))
    )
    assert contrastive(t(eye), t(eye), temperature=0.5).item() == pytest.approx(
        math.log(1 + math.exp(-2))
    )


def test_contrastive_is_symmetric_average_by_hand() -> None:
    # target = [e0, e0], source = [e0, e1], tau = 1: logits[i, j] = cos(target_i, source_j)
    # = [[1, 0], [1, 0]].
    # target->source rows: row 0 (label 0) log(1 + e^-1); row 1 (label 1) log(1 + e).
    # source->target columns [[1, 1], [0, 0]]: both rows tie -> log 2 each.
    rows = (math.log(1 + math.exp(-1)) + math.log(1 + math.e)) / 2
    cols = math.log(2)
    loss = contrastive(t([[1, 0], [0, 1]]), t([[1, 0], [1, 0]]), temperature=1.0)
    assert loss.item() == pytest.approx((rows + cols) / 2)
    assert loss.item() == pytest.approx(0.7532044, abs=1e-6)


def test_contrastive_ignores_vector_length() -> None:
    eye = [[1, 0], [0, 1]]
    scaled = contrastive(t([[3, 0], [0, 5]]), t([[2, 0], [0, 7]]), temperature=1.0)
    assert scaled.item() == pytest.approx(contrastive(t(eye), t(eye), temperature=1.0).item())


def test_kl_by_hand() -> None:
    # Row 0: source logits [0, 0] -> p = [1/2, 1/2]; target [0, ln 3] -> q = [1/4, 3/4].
    # KL(p || q) = 1/2 ln(2) + 1/2 ln(2/3) = 1/2 ln(4/3). Row 1 is identical on both sides
    # -> 0. batchmean over 2 rows.
    source = t([[0, 0], [1, 2]])
    target = t([[0, math.log(3)], [1, 2]])
    assert kl(source, target).item() == pytest.approx(0.5 * math.log(4 / 3) / 2)


def test_kl_temperature_by_hand() -> None:
    # With T = 2 the target [0, 2 ln 3] becomes [0, ln 3] and the source stays uniform, so the
    # KL is 1/2 ln(4/3) as above, multiplied by T^2 = 4.
    loss = kl(t([[0, 0]]), t([[0, 2 * math.log(3)]]), temperature=2.0)
    assert loss.item() == pytest.approx(4 * 0.5 * math.log(4 / 3))


def test_kl_extra_dims_divide_by_batch() -> None:
    # [B=1, L=2, C=2]: two positions each with KL 1/2 ln(4/3), summed and divided by B = 1.
    source = t([[[0, 0], [0, 0]]])
    target = t([[[0, math.log(3)], [0, math.log(3)]]])
    assert kl(source, target).item() == pytest.approx(math.log(4 / 3))


def test_kl_gradient_reaches_target_only() -> None:
    source, target = t([[0.0, 1.0], [2.0, -1.0]]), t([[1.0, 0.0], [0.5, 0.5]])
    kl(source, target).backward()
    assert source.grad is None
    assert target.grad is not None and target.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["mse", "cosine", "contrastive"])
def test_representation_losses_train_both_sides(kind: str) -> None:
    source, target = t([[0.0, 1.0], [2.0, -1.0]]), t([[1.0, 0.0], [0.5, 0.5]])
    alignment_loss(kind, source, target).backward()
    assert source.grad is not None and source.grad.abs().sum() > 0
    assert target.grad is not None and target.grad.abs().sum() > 0


def test_dispatch_by_name() -> None:
    source, target = t([[1, 2], [3, 4]]), t([[1, 0], [0, 4]])
    assert alignment_loss("mse", source, target).item() == pytest.approx(3.25)
    eye = [[1, 0], [0, 1]]
    assert alignment_loss("contrastive", t(eye), t(eye), temperature=1.0).item() == (
        pytest.approx(math.log(1 + math.exp(-1)))
    )


def test_options_of_other_losses_are_ignored() -> None:
    # align.temperature is always passed from the config, and mse has no use for it.
    loss = alignment_loss("mse", t([[1, 2], [3, 4]]), t([[1, 0], [0, 4]]), temperature=0.1)
    assert loss.item() == pytest.approx(3.25)


def test_option_no_loss_takes_is_a_bug() -> None:
    with pytest.raises(TypeError, match="temprature"):
        alignment_loss("kl", t([[1.0]]), t([[1.0]]), temprature=0.1)


def test_shape_mismatch_is_a_bug() -> None:
    with pytest.raises(ValueError, match="differ"):
        alignment_loss("mse", t([[1.0, 2.0]]), t([[1.0, 2.0, 3.0]]))


def test_mean_pool_ignores_padding() -> None:
    # Row 0 averages positions 0 and 1: [2, 3]; row 1 keeps only position 0: [5, 6].
    assert torch.equal(pool(HIDDEN, MASK, "mean"), torch.tensor([[2.0, 3.0], [5.0, 6.0]]))


def test_first_pool() -> None:
    assert torch.equal(pool(HIDDEN, MASK, "first"), torch.tensor([[1.0, 2.0], [5.0, 6.0]]))


def test_mean_pool_empty_row_is_zero() -> None:
    pooled = pool(HIDDEN, torch.tensor([[1, 1, 0], [0, 0, 0]]), "mean")
    assert torch.equal(pooled[1], torch.zeros(2))


def test_pool_layers_averages_chosen_layers() -> None:
    # Three hidden states: embeddings (HIDDEN), HIDDEN + 10, HIDDEN + 20. Mean-pooled: row 0
    # [2, 3], [12, 13], [22, 23]. Layers [0, -1] -> ([2, 3] + [22, 23]) / 2 = [12, 13].
    states = (HIDDEN, HIDDEN + 10, HIDDEN + 20)
    pooled = pool_layers(states, MASK, [0, -1], "mean")
    assert torch.equal(pooled[0], torch.tensor([12.0, 13.0]))
    assert torch.equal(pool_layers(states, MASK, "last", "mean")[0], torch.tensor([22.0, 23.0]))
    assert torch.equal(pool_layers(states, MASK, [1], "first")[1], torch.tensor([15.0, 16.0]))


@pytest.mark.parametrize("layers", [[3], [-4], [], "first", [True], [1.0]])
def test_pool_layers_bad_layers(layers: object) -> None:
    states = (HIDDEN, HIDDEN, HIDDEN)
    with pytest.raises(ConfigError, match=r"align\.layers.*-3\.\.2"):
        pool_layers(states, MASK, layers, "mean")


@pytest.mark.parametrize(
    ("step", "warmup", "expected"),
    [(0, 4, 0.0), (1, 4, 0.5), (2, 4, 1.0), (4, 4, 2.0), (9, 4, 2.0), (0, 0, 2.0), (7, 0, 2.0)],
)
def test_warmup_weight(step: int, warmup: int, expected: float) -> None:
    assert warmup_weight(step, 2.0, warmup) == pytest.approx(expected)
