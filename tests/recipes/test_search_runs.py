"""``lowres train -m hydra/sweeper=optuna``: a search on source dev, end to end on tiny-bert."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import run_lowres

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the search extra")

RELEASE = Path(__file__).resolve().parents[1] / "fixtures" / "tydiqa_release"
TINY = ["backbone=tiny-bert", "trainer=smoke", "trainer.progress=false"]
DATA = ["+task=tydiqa", "data=local", f"data.root={RELEASE}", "data.eval_languages=[sw]"]


def test_a_search_records_every_trial_and_its_choice(tmp_path):
    folder = tmp_path / "search"
    run_lowres(
        "train", "-m", "hydra/sweeper=optuna", *DATA, *TINY, "data.source_dev_articles=2",
        "search.trials=3", "trainer.lr=tag(log,interval(1e-4,1e-2))",
        f"hydra.sweep.dir={folder}",
    )  # fmt: skip
    record = json.loads((folder / "search.json").read_text())
    assert len(record["trials"]) == 3 and record["searched"] == ["trainer.lr"]
    values = []
    for trial in record["trials"]:
        metrics = json.loads((folder / trial["run_dir"] / "metrics.json").read_text())
        # the objective is the held-out English articles' F1, not the Swahili score
        assert trial["value"] == metrics["source_dev"]["f1"]
        assert metrics["source_dev"]["articles"] == 2 and metrics["source_dev"]["language"] == "en"
        assert 1e-4 <= trial["params"]["trainer.lr"] <= 1e-2
        values.append(trial["value"])
    assert record["best"]["value"] == max(values)
    # what each trial returned to Optuna was that source dev score (Optuna's own record)
    optuna_best = yaml.safe_load((folder / "optimization_results.yaml").read_text())
    assert optuna_best["best_value"] == max(values)
    assert optuna_best["best_params"] == record["best"]["params"] or values.count(max(values)) > 1
    run_lowres("report", str(folder))
    table = (folder / "report" / "search.md").read_text()
    assert "| trial | trainer.lr | source dev |" in table and "Chosen: trial" in table


def test_a_search_without_source_dev_exits_2_before_any_trial(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_lowres(
            "train", "-m", "hydra/sweeper=optuna", *DATA, *TINY, "trainer.lr=interval(0.1,1)",
            f"hydra.sweep.dir={tmp_path / 'search'}",
        )  # fmt: skip
    assert exit_info.value.code == 2
    assert "data.source_dev_articles=0 holds out none" in capsys.readouterr().err
    assert not (tmp_path / "search").exists()


def test_a_key_both_searched_and_fixed_exits_2_before_any_trial(tmp_path, capsys):
    # Hydra's Optuna sweeper would keep the fixed 1e-3 and run every trial at it
    with pytest.raises(SystemExit) as exit_info:
        run_lowres(
            "train", "-m", "hydra/sweeper=optuna", *DATA, *TINY, "data.source_dev_articles=2",
            "trainer.lr=1e-3", "trainer.lr=tag(log,interval(1e-4,1e-2))",
            f"hydra.sweep.dir={tmp_path / 'search'}",
        )  # fmt: skip
    assert exit_info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "trainer.lr is both searched (trainer.lr=tag(log,interval(1e-4,1e-2)))" in err
    assert "and fixed (trainer.lr=1e-3)" in err
    assert not (tmp_path / "search").exists()
