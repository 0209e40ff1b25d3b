"""What a command does before its first run: the start-up every recipe and the sweep share,
and the sweep's check of the task's data.

Recipe level, so that a sweep plans and launches runs without building a run's parts itself
(the import-linter contract on ``lowres.sweeps`` in pyproject.toml).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import datasets
import transformers

from lowres.backbones import resolve_local, reuse_backbones
from lowres.builders import build_run_task
from lowres.errors import ConfigError
from lowres.schema import validate


def quiet_libraries() -> None:
    """Keep the terminal for our progress and tables; library chatter goes to the log level."""
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()


def start_up(cfg: Any) -> None:
    """A local backbone's folder resolved, every value checked, the libraries quiet."""
    resolve_local(cfg.backbone)
    validate(cfg)
    quiet_libraries()


def check_pools(cfg: Any, k_values: Sequence[int], languages: Sequence[str]) -> None:
    """The task as the sweep's runs will read it (a missing file fails here, before any
    run); fail when a k is larger than a language's target pool."""
    task = build_run_task(cfg)
    largest = max(k_values)
    if largest == 0:
        return
    if task.settings.pool_fraction <= 0:
        raise ConfigError(
            f"sweep.k holds {largest} but data.pool_fraction=0, so no target-language examples "
            "are held out for k-shot training. Set data.pool_fraction (e.g. 0.2)."
        )
    for lang in languages:
        size = len(task.target_pool(lang))
        if largest > size:
            raise ConfigError(
                f"sweep.k holds {largest}, but the {lang} target pool of task {task.name} has "
                f"{size} examples at data.pool_fraction={task.settings.pool_fraction}; lower "
                "sweep.k or raise data.pool_fraction."
            )


@contextlib.contextmanager
def backbones_reused() -> Iterator[None]:
    """Runs in this block that load the same backbone get one copy of it, loaded once."""
    with reuse_backbones():
        yield
