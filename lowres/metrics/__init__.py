"""Evaluation metrics as local ``evaluate`` modules, loaded without touching the Hub.

The Hub copies of ``squad`` and friends are unreachable offline and not what the MLQA
paper scored, so each metric lives in a module directory next to this file.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from lowres.errors import ConfigError

if TYPE_CHECKING:
    import evaluate

_MODULES_DIR = Path(__file__).resolve().parent

METRICS: dict[str, Path] = {
    "squad": _MODULES_DIR / "squad_v1",
    "mlqa": _MODULES_DIR / "mlqa_v1",
    "accuracy": _MODULES_DIR / "accuracy",
}


def metric_path(name: str) -> Path:
    """The module directory of metric ``name``; ConfigError for an unknown name."""
    try:
        return METRICS[name]
    except KeyError:
        raise ConfigError(
            f"unknown metric {name!r}; expected one of {', '.join(sorted(METRICS))}"
        ) from None


@functools.cache
def load_metric(name: str) -> evaluate.EvaluationModule:
    """Load metric ``name`` from its local module directory (cached per process)."""
    path = metric_path(name)
    # Imported here because evaluate is slow to import and most callers only need scoring.
    import evaluate

    # A path to an existing directory never reaches the Hub: evaluate copies the script into
    # its modules cache and imports it. keep_in_memory avoids cache files and their locks.
    return evaluate.load(str(path), keep_in_memory=True)
