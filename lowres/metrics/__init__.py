"""Evaluation metrics as local ``evaluate`` modules, loaded without touching the Hub.

The Hub copies of ``squad`` and friends are unreachable offline and not what the MLQA
paper scored, so each metric lives in a module directory next to this file.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from lowres.registry import METRICS

_MODULES_DIR = Path(__file__).resolve().parent
# The built-in entries of lowres.registry.METRICS: evaluate module folders.
SQUAD_V1 = _MODULES_DIR / "squad_v1"
MLQA_V1 = _MODULES_DIR / "mlqa_v1"
ACCURACY = _MODULES_DIR / "accuracy"


@functools.cache
def load_metric(name: str) -> Any:
    """Metric ``name`` (``METRICS``), ready to ``compute`` (cached per process).

    An entry is an evaluate module folder, loaded from disk, or any object with a
    ``compute(predictions=..., references=...)`` method, used as it is.
    """
    entry = METRICS.load(name)
    if not isinstance(entry, str | Path):
        return entry
    # Imported here because evaluate is slow to import and most callers only need scoring.
    import evaluate

    # A path to an existing directory never reaches the Hub: evaluate copies the script into
    # its modules cache and imports it. keep_in_memory avoids cache files and their locks.
    return evaluate.load(str(entry), keep_in_memory=True)
