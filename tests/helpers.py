"""Helpers shared by the test modules."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from lowres.backbones import load_backbone
from lowres.cli import main
from lowres.methods.build import build_method
from lowres.schema import AdapterConfig, FreezeConfig, PromptConfig
from lowres.tasks import DataSettings, create_task

REPO = Path(__file__).resolve().parents[1]
# The smallest real run: the tiny in-process BERT, a few steps on the shipped sample.
SMOKE = ["+task=xquad", "backbone=tiny-bert", "trainer=smoke", "trainer.progress=false"]


def run_lowres(*args: str) -> None:
    """``lowres ARGS`` through the console entry point, in this process.

    In-process saves the ~8 s of imports a subprocess pays per run. Hydra adds a log-file
    handler and rewrites sys.argv for every run; both are put back so runs stay independent.
    """
    argv, handlers = sys.argv[:], logging.getLogger().handlers[:]
    try:
        main(list(args))
    finally:
        sys.argv = argv
        root = logging.getLogger()
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
            handler.close()


def lowres_exit_code(*args: str) -> int:
    """The exit code of ``lowres ARGS`` run in this process, for commands that must stop."""
    import pytest

    with pytest.raises(SystemExit) as exit_info:
        run_lowres(*args)
    return exit_info.value.code


def on_next_training_run(monkeypatch, callback) -> None:
    """Add a Trainer callback to the next training run only (not to evaluation-only runs)."""
    import lowres.assembly as assembly

    original = assembly.build_trainer

    def build_trainer(*args, **kwargs):
        trainer = original(*args, **kwargs)
        if kwargs.get("train_dataset") is not None:
            trainer.add_callback(callback)
            monkeypatch.setattr(assembly, "build_trainer", original)  # once
        return trainer

    monkeypatch.setattr(assembly, "build_trainer", build_trainer)


def tiny_backbone(architecture: str = "bert", task_kind: str = "extractive_qa", **options):
    """The in-process tiny backbone with a fresh head (seed 0); ``options`` go to the loader."""
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


def build_flat(
    backbone,
    *,
    task_kind: str = "extractive_qa",
    family: str = "encoder",
    freeze: str = "backbone",
    freeze_k: int = 0,
    prompt_length: int = 4,
    prompt_init: str = "vocab",
    prompt_init_text: str = "",
    prompt_layers="input",
    adapter: str = "none",
    adapter_options: dict | None = None,
    seed: int = 0,
    backbone_dropout: bool | None = None,
):
    """``build_method`` from one flat set of options, as the method tests vary them."""
    return build_method(
        backbone.model,
        backbone.tokenizer,
        task_kind=task_kind,
        family=family,
        freeze=FreezeConfig(strategy=freeze, k=freeze_k, dropout=backbone_dropout),
        prompt=PromptConfig(
            length=prompt_length, init=prompt_init, init_text=prompt_init_text, layers=prompt_layers
        ),
        adapter=AdapterConfig(kind=adapter, **(adapter_options or {})),
        seed=seed,
    )


def lowres_subprocess(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lowres", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


def write_squad(path: Path, questions: list[tuple[str, str, str, str]]) -> None:
    """Write a SQuAD v1.1 file: one paragraph per (id, context, question, answer)."""
    paragraphs = [
        {
            "context": c,
            "qas": [{"id": i, "question": q, "answers": [{"text": a, "answer_start": c.index(a)}]}],
        }
        for i, c, q, a in questions
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]})
    )


def write_official(path: Path, rows: list[dict]) -> None:
    """A TSV in the official layout (header, ids) holding ``rows`` as they are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["id", "sentence1", "sentence2", "label"])
        writer.writerows([r["id"], r["sentence1"], r["sentence2"], r["label"]] for r in rows)


def pooled_sample_task(name: str, **params):
    """A task on the shipped sample with en and de, half of each pooled for 2 shots."""
    settings = DataSettings(
        source="sample",
        root="",
        source_language="en",
        eval_languages=["en", "de"],
        k=2,
        pool_fraction=0.5,
        seed=42,
    )
    return create_task(name, settings, **params)


def write_study_spec(tmp_path: Path, **changes):
    """A hand-made study spec (``lowres study``) in ``tmp_path``, loaded and checked: two
    methods, 3 source seeds with 2 nested stage-2 seeds, TyDiQA sw/te; ``changes`` replace
    its keys."""
    import yaml

    from lowres.sweeps import study

    spec = {
        "name": "hand",
        "results": str(tmp_path / "results"),
        "work": str(tmp_path / "work"),
        "methods": {"full": {}, "prompt_align": {}},
        "source_seeds": [1, 2, 3],
        "stage2_seeds": [1, 2],
        "k": [8],
        "tasks": {"tydiqa": {"zero_shot": ["sw", "te"], "few_shot": ["sw"]}},
        "primary": [["prompt_align", "full", 0, "tydiqa"], ["prompt_align", "full", 8, "tydiqa"]],
        **changes,
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return study.load_spec(path)
