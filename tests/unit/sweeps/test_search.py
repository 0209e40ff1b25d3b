"""The search's checks and settings (lowres/sweeps/search.py), before any trial runs."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from lowres.errors import ConfigError, LowresError
from lowres.sweeps.search import (
    collect_search,
    params_text,
    plan_search,
    search_markdown,
    search_objective,
    start_search,
)


def composed(**changes):
    cfg = OmegaConf.create(
        {
            "task": {"name": "xquad", "kind": "extractive_qa"},
            "backbone": {"name": "tiny-bert"},
            "data": {
                "source_language": "en",
                "source_split": "dev_minus_xquad",
                "source_dev_articles": 5,
                "source_dev_examples": 0,
            },
            "search": {"objective": "source_dev", "trials": 8, "seed": 0, "space": {}},
        }
    )
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def test_a_search_objective_on_a_target_language_is_refused():
    with pytest.raises(ConfigError, match=r"search.objective='de'.*target-language evaluation"):
        plan_search(composed(**{"search.objective": "de"}), [], {"trainer.lr": "interval(1,2)"})


def test_a_search_without_source_dev_is_refused():
    with pytest.raises(ConfigError, match="data.source_dev_articles=0 holds out none"):
        plan_search(composed(**{"data.source_dev_articles": 0}), [], {"x": "interval(1,2)"})


def test_a_source_pool_holding_xquad_questions_is_refused():
    with pytest.raises(ConfigError, match="XQuAD's English questions"):
        plan_search(composed(**{"data.source_split": "dev"}), [], {"x": "interval(1,2)"})


def test_nothing_to_search_is_refused():
    with pytest.raises(ConfigError, match="nothing to search"):
        plan_search(composed(), [], {})


def test_the_preset_space_fills_in_what_the_command_line_does_not_sweep(tmp_path):
    cfg = composed(
        **{"search.space": {"trainer.lr": "interval(1,2)", "align.weight": "choice(0.1,1)"}}
    )
    given = [f"hydra.sweep.dir={tmp_path}", "trainer.lr=tag(log,interval(1e-5,1e-3))"]
    extra, folder, plan = plan_search(cfg, given, {"trainer.lr": "tag(log,interval(1e-5,1e-3))"})
    assert folder == tmp_path
    assert extra == [
        "align.weight=choice(0.1,1)",
        "hydra.sweeper.direction=maximize",
        "hydra.sweeper.n_trials=8",
        "hydra.sweeper.sampler.seed=0",
    ]
    assert plan["space"] == {
        "align.weight": "choice(0.1,1)",
        "trainer.lr": "tag(log,interval(1e-5,1e-3))",
    }
    with pytest.raises(ConfigError, match="maximises"):
        plan_search(cfg, ["hydra.sweeper.direction=minimize"], {})


def test_a_value_fixed_on_the_command_line_wins_over_the_preset_space(tmp_path):
    cfg = composed(
        **{"search.space": {"trainer.lr": "interval(1,2)", "align.weight": "choice(0.1,1)"}}
    )
    given = [f"hydra.sweep.dir={tmp_path}", "align.weight=0.5"]
    extra, _, plan = plan_search(cfg, given, {})
    assert plan["space"] == {"trainer.lr": "interval(1,2)"}  # align.weight is not searched
    assert "trainer.lr=interval(1,2)" in extra and not any("align.weight" in e for e in extra)


def test_a_key_both_swept_and_fixed_on_the_command_line_is_refused(tmp_path):
    sweep = "tag(log,interval(1e-5,1e-3))"
    given = [f"hydra.sweep.dir={tmp_path}", "trainer.lr=1e-4", f"trainer.lr={sweep}"]
    with pytest.raises(ConfigError, match=r"trainer.lr is both searched .* and fixed"):
        plan_search(composed(), given, {"trainer.lr": sweep})


def test_the_record_lists_every_trial_and_the_best(tmp_path):
    start_search(tmp_path, {"n_trials": 3, "seed": 0, "space": {"trainer.lr": "interval(1,2)"},
                            "source_language": "en", "source_dev_articles": 5,
                            "source_dev_examples": 0})  # fmt: skip
    for number, (lr, f1) in enumerate([(1.5, 40.0), (1.2, 55.5), (1.9, None)]):
        run = tmp_path / str(number)
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "overrides.yaml").write_text(f"- trainer.lr={lr}\n- +task=xquad\n")
        if f1 is not None:
            dev = {"language": "en", "main_score": "f1", "f1": f1, "n": 600, "articles": 5}
            (run / "metrics.json").write_text(json.dumps({"source_dev": dev, "train_steps": 9}))
    record = collect_search(tmp_path)
    assert [t["value"] for t in record["trials"]] == [40.0, 55.5, None]
    assert record["trials"][2]["state"] == "failed or unfinished"
    assert record["best"] == {"number": 1, "params": {"trainer.lr": 1.2}, "value": 55.5}
    table = search_markdown(record)
    assert "| 1 | 1.2 | 55.50 | 600 | 9 | finished |" in table
    assert "Chosen: trial 1 (trainer.lr=1.2), source dev 55.50." in table
    assert search_objective({"source_dev": {"main_score": "f1", "f1": 55.5}}) == 55.5
    with pytest.raises(LowresError, match="already holds a search"):
        start_search(tmp_path, {})


def test_searched_values_read_to_three_significant_digits_keys_sorted():
    params = {"trainer.lr": 0.00011387317092169066, "prompt.length": 5, "align.weight": 0.125206}
    text = params_text(params)
    assert text == "align.weight=0.125, prompt.length=5, trainer.lr=0.000114"
