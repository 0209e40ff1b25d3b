"""MLQA on the real dev files: XLT/G-XLT records, the cross-lingual protocol, the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_lowres

from lowres.data.mlqa_files import MLQA_LANGUAGES
from lowres.tasks.mlqa import gxlt_matrix


def run_cli(*overrides: str) -> None:
    run_lowres("train", *overrides, "trainer.progress=false")


def _check_run(run: Path, languages: list[str], n: int | None) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "mlqa"
    assert list(metrics["per_language"]) == languages
    split = json.loads((run / "data_split.json").read_text())
    for lang in languages:
        scores = metrics["per_language"][lang]
        assert set(scores) == {"exact_match", "f1", "n"}
        assert 0 <= scores["exact_match"] <= scores["f1"] <= 100
        if n is not None:
            assert scores["n"] == n
        predictions = json.loads((run / "predictions" / f"{lang}.json").read_text())
        assert sorted(predictions) == sorted(split["evaluation"][lang])
        assert all(isinstance(text, str) for text in predictions.values())
    return metrics


def test_gxlt_matrix_places_scores_by_context_and_question():
    per_language = {
        f"{c}-{q}": {"exact_match": 10.0 * i, "f1": 10.0 * i + 5, "n": 100 + i}
        for i, (c, q) in enumerate((c, q) for c in MLQA_LANGUAGES for q in MLQA_LANGUAGES)
    }
    del per_language["zh-hi"]
    table = gxlt_matrix(per_language)
    assert table["context_languages"] == list(MLQA_LANGUAGES)
    assert table["question_languages"] == list(MLQA_LANGUAGES)
    assert table["f1"]["de"]["ar"] == per_language["de-ar"]["f1"]
    assert table["exact_match"]["vi"]["en"] == per_language["vi-en"]["exact_match"]
    assert table["n"]["en"]["zh"] == per_language["en-zh"]["n"]
    assert table["f1"]["zh"]["hi"] is None
    row = [per_language[f"es-{q}"]["f1"] for q in MLQA_LANGUAGES]
    assert table["mean_by_context"]["es"] == pytest.approx(sum(row) / 7)
    json.dumps(table)  # storable in metrics.json as it is


def test_cli_trains_and_evaluates_on_local_files(shared_data, tmp_path):
    run_cli(
        "+task=mlqa",
        "backbone=tiny-bert",
        "trainer=smoke",
        "data.source=local",
        f"data.root={shared_data}",
        "data.eval_languages=[en,de]",
        "data.max_eval_examples=20",
        f"hydra.run.dir={tmp_path}",
    )
    metrics = _check_run(tmp_path, ["en", "de"], n=20)
    assert metrics["train_examples"] == 32  # trainer=smoke caps the SQuAD pool


def test_cli_runs_on_the_shipped_sample(tmp_path):
    run_cli(
        "+task=mlqa",
        "backbone=tiny-bert",
        "trainer=smoke",
        "data.source=sample",
        "data.eval_languages=[en,de,zh]",
        "data.pool_fraction=0.3",
        "data.k=2",
        f"hydra.run.dir={tmp_path}",
    )
    metrics = _check_run(tmp_path, ["en", "de", "zh"], n=None)
    assert metrics["train_examples"] == 32 + 2 * 2  # smoke-capped SQuAD + k=2 for de and zh


def test_cli_gxlt_evaluates_every_context_question_pair(shared_data, tmp_path):
    run_cli(
        "+task=mlqa",
        "backbone=tiny-bert",
        "trainer=smoke",
        "data.source=local",
        f"data.root={shared_data}",
        "data.eval_languages=[de,zh]",
        "data.max_eval_examples=5",
        "task.question_languages=[en,de]",
        f"hydra.run.dir={tmp_path}",
    )
    _check_run(tmp_path, ["de-en", "de-de", "zh-en", "zh-de"], n=5)
