"""Helpers shared by the test modules."""

from __future__ import annotations

import logging
import sys


def run_lowres(*args: str) -> None:
    """``lowres ARGS`` through the console entry point, in this process.

    In-process saves the ~8 s of imports a subprocess pays per run. Hydra adds a log-file
    handler and rewrites sys.argv for every run; both are put back so runs stay independent.
    """
    from lowres.cli import main

    argv, handlers = sys.argv[:], logging.getLogger().handlers[:]
    try:
        main(list(args))
    finally:
        sys.argv = argv
        root = logging.getLogger()
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
            handler.close()


def tiny_backbone(architecture: str = "bert", task_kind: str = "extractive_qa", **options):
    """The in-process tiny backbone with a fresh head (seed 0); ``options`` go to the loader."""
    from lowres.backbones import load_backbone

    return load_backbone(
        name=f"tiny-{architecture}",
        loader="tiny",
        path="",
        architecture=architecture,
        task_kind=task_kind,
        num_labels=2,
        seed=0,
        **options,
    )
