"""Tokenized features as the dataset the Trainer reads (tasks build them, training reads them)."""

from __future__ import annotations

from datasets import Dataset

# Tokens per row, read by the Trainer's length-grouped sampler and dropped before the model.
LENGTH_COLUMN = "length"


def feature_dataset(features: dict[str, list]) -> Dataset:
    """Features as a ``datasets.Dataset`` with the length column length grouping reads."""
    lengths = [len(ids) for ids in features["input_ids"]]
    return Dataset.from_dict({**features, LENGTH_COLUMN: lengths})
