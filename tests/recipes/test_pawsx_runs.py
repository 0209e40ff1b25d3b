"""PAWS-X on the real files: both layouts, NS rows, stratified nested k-shot, the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import run_lowres, write_official

from lowres.data.pawsx_format import read_pawsx_tsv
from lowres.data.roots import SAMPLE_ROOT


def run_cli(*overrides: str) -> None:
    run_lowres("train", *overrides, "trainer.progress=false")


def _check_run(run: Path, languages: list[str], n: int | None) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "pawsx"
    assert list(metrics["per_language"]) == languages
    split = json.loads((run / "data_split.json").read_text())
    for lang in languages:
        scores = metrics["per_language"][lang]
        assert set(scores) == {"accuracy", "majority_class", "n"}
        assert 0 <= scores["accuracy"] <= 100 and 50 <= scores["majority_class"] <= 100
        if n is not None:
            assert scores["n"] == n
        predictions = json.loads((run / "predictions" / f"{lang}.json").read_text())
        assert sorted(predictions) == sorted(split["evaluation"][lang])
        assert set(predictions.values()) <= {0, 1}
    return metrics


def test_cli_trains_and_evaluates_on_local_files(shared_data, tmp_path):
    run_cli(
        "+task=pawsx",
        "backbone=tiny-bert",
        "trainer=smoke",
        "data.source=local",
        f"data.root={shared_data}",
        "data.eval_languages=[en,de]",
        "data.pool_fraction=0.2",
        "data.max_eval_examples=40",
        f"hydra.run.dir={tmp_path}",
    )
    metrics = _check_run(tmp_path, ["en", "de"], n=40)
    assert metrics["train_examples"] == 32


def test_cli_runs_on_the_shipped_sample(tmp_path):
    run_cli(
        "+task=pawsx",
        "backbone=tiny-xlmr",
        "trainer=smoke",
        "data.source=sample",
        "data.eval_languages=[en,ja,zh]",
        "data.pool_fraction=0.2",
        "data.k=4",
        f"hydra.run.dir={tmp_path}",
    )
    metrics = _check_run(tmp_path, ["en", "ja", "zh"], n=16)  # smoke: 16 per language
    assert metrics["train_examples"] == 32 + 4 * 2


def test_cli_overfits_a_handful_of_pairs(tmp_path):
    """Full fine-tuning with an input prompt learns 8 real pairs to 100% accuracy.

    The 8 pairs are both the training file and the evaluated dev file (the training copy's
    ids get the ``train-`` prefix), so evaluation reads exactly the pairs that trained.
    """
    rows, _ = read_pawsx_tsv(SAMPLE_ROOT / "pawsx" / "xtreme-dev" / "dev-en.tsv")
    pairs = [r for r in rows if r["label"] == 0][:4] + [r for r in rows if r["label"] == 1][:4]
    for name in ("train.tsv", "dev_2k.tsv"):
        write_official(tmp_path / "data" / "pawsx" / "official" / "en" / name, pairs)
    run = tmp_path / "run"
    run_cli(
        "+task=pawsx",
        "backbone=tiny-bert",
        "trainer=smoke",
        "freeze=none",
        "prompt=input",
        "data.source=local",
        f"data.root={tmp_path / 'data'}",
        "data.eval_languages=[en]",
        "data.pool_fraction=0",
        "data.max_train_examples=8",
        "trainer.max_steps=20",
        "trainer.lr=1e-2",
        "trainer.batch_size=8",
        f"hydra.run.dir={run}",
    )
    split = json.loads((run / "data_split.json").read_text())
    assert sorted(split["train"]) == sorted(f"train-{i}" for i in split["evaluation"]["en"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["per_language"]["en"] == {"accuracy": 100.0, "majority_class": 50.0, "n": 8}
    losses = [e["loss"] for e in map(json.loads, (run / "train_log.jsonl").open()) if "loss" in e]
    assert losses[0] > 0.5 and losses[-1] < 0.1  # it learned them; it did not start there
