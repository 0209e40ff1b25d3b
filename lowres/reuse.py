"""Loaded backbones kept for the next run of the same process (sweeps of many small runs).

Each run gets a deep copy of a pristine model, so training one run never leaks into the
next; the key holds every loading argument, the head's seed included, so a reused model is
exactly what a fresh load would give.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterator
from typing import Any

_pristine: dict[tuple, Any] | None = None


@contextlib.contextmanager
def reuse_backbones() -> Iterator[None]:
    global _pristine
    previous, _pristine = _pristine, {}
    try:
        yield
    finally:
        _pristine = previous


def load_backbone_reused(**kwargs: Any):
    """``load_backbone(**kwargs)``, served from memory inside :func:`reuse_backbones`."""
    from lowres.backbones import load_backbone

    if _pristine is None:
        return load_backbone(**kwargs)
    key = tuple(sorted((name, repr(value)) for name, value in kwargs.items()))
    if key not in _pristine:
        _pristine[key] = load_backbone(**kwargs)
    kept = _pristine[key]
    return dataclasses.replace(kept, model=copy.deepcopy(kept.model))
