"""The alignment objective: parallel (source, target) input batches and the loss between them."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from lowres.losses.alignment import alignment_loss, pool_layers
from lowres.registry import ALIGNMENT_LOSSES


@dataclass
class AlignmentObjective:
    """Batches of parallel (source, target) inputs and the loss that pulls them together."""

    source: list[dict[str, list[int]]]
    target: list[dict[str, list[int]]]
    kind: str
    weight: float
    warmup_steps: int
    pooling: str
    layers: Any
    temperature: float
    batch_size: int
    tokenizer: Any
    seed: int = 0
    pad_to_multiple_of: int | None = None  # 8 on CUDA, as the training batches
    # What the loss compares, as its registry entry declares: class logits or hidden states.
    compares: str = field(init=False)

    def __post_init__(self) -> None:
        self.compares = ALIGNMENT_LOSSES.trait(self.kind, "compares")

    def batches(self, start: int = 0) -> Iterator[tuple[dict, dict]]:
        """Padded (source, target) batches, endlessly, epoch after epoch of seeded orders.

        ``start`` skips the first ``start`` batches without padding them, so a resumed run
        continues with exactly the batch the interrupted one would have drawn next: the
        orders come from the same generator, drawn the same number of times.
        """
        generator = torch.Generator().manual_seed(self.seed)
        skip = start
        for _ in itertools.count():
            order = torch.randperm(len(self.source), generator=generator).tolist()
            starts = range(0, len(order) - self.batch_size + 1 or 1, self.batch_size)
            if skip >= len(starts):
                skip -= len(starts)
                continue
            for first in starts[skip:]:
                rows = order[first : first + self.batch_size]
                yield (
                    self._pad([self.source[i] for i in rows]),
                    self._pad([self.target[i] for i in rows]),
                )
            skip = 0

    def _pad(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        """Each side padded to its own longest row, as training batches are."""
        return self.tokenizer.pad(
            rows, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt"
        )

    def represent(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.compares == "logits"
        out = model(**batch, output_hidden_states=not logits)
        if logits:
            return out["logits"]
        mask = model.text_mask(batch["attention_mask"])
        layers = "last" if self.layers == "last" else [int(i) for i in self.layers]
        return pool_layers(out["hidden_states"], mask, layers, self.pooling)

    def loss(self, model, source: dict, target: dict) -> torch.Tensor:
        """The loss between both sides, represented in one forward pass over their rows.

        Padding is masked, so each row's representation is what a pass over its own side
        alone gives (up to float rounding); one pass of 2B rows instead of two of B halves
        the per-layer overhead that dominates small batches on a CPU. With dropout on, the
        masks are drawn once for both sides instead of once per side.
        """
        both = join_batches(source, target, self.tokenizer.pad_token_id, self._left_padded())
        represented = self.represent(model, both).float()
        rows = source["input_ids"].shape[0]
        return alignment_loss(
            self.kind,
            represented[:rows],
            represented[rows:],
            temperature=self.temperature,
        )

    def _left_padded(self) -> bool:
        return getattr(self.tokenizer, "padding_side", "right") == "left"


def join_batches(
    first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], pad_id: int, left: bool
) -> dict[str, torch.Tensor]:
    """Two padded batches as one: rows of ``first`` then ``second``, padded to the longer."""
    length = max(first["input_ids"].shape[1], second["input_ids"].shape[1])
    joined = {}
    for key in first:
        value = pad_id if key == "input_ids" else 0
        sides = []
        for batch in (first, second):
            missing = length - batch[key].shape[1]
            widths = (missing, 0) if left else (0, missing)
            sides.append(F.pad(batch[key], widths, value=value))
        joined[key] = torch.cat(sides)
    return joined
