"""The method on tiny models: injection, prompt init, alignment through the CLI, baselines."""

from __future__ import annotations

import json

import pytest
from helpers import run_lowres

TINY = ["backbone=tiny-bert", "trainer.progress=false", "data.eval_languages=[en,de]"]


@pytest.mark.parametrize("kind", ["mse", "cosine", "contrastive"])
def test_alignment_runs_through_the_cli_and_logs_both_losses(kind, tmp_path):
    run_dir = tmp_path / kind
    run_lowres(
        "train",
        "+task=xquad",
        *TINY,
        "trainer=smoke",
        f"align={kind}",
        "align.weight=0.5",
        "data.pool_fraction=0.5",
        f"hydra.run.dir={run_dir}",
    )
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    logged = [row for row in log if "task_loss" in row]
    assert logged and all("align_loss" in row and row["align_loss"] >= 0 for row in logged)
    for row in logged:  # loss = task + lambda * align, averaged over the same steps
        assert row["loss"] == pytest.approx(row["task_loss"] + 0.5 * row["align_loss"], rel=0.02)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["method"]["align_kind"] == kind
    assert metrics["parallel_distance"]["de"]["pairs"] > 0
    split = json.loads((run_dir / "data_split.json").read_text())
    parallel_ids = {pair[1] for pair in split["parallel"]}
    assert parallel_ids and not parallel_ids & set(split["evaluation"]["de"])


def test_kl_alignment_on_pawsx(tmp_path):
    run_dir = tmp_path / "kl"
    run_lowres(
        "train",
        "+task=pawsx",
        *TINY,
        "trainer=smoke",
        "align=kl",
        "align.weight=1.0",
        "data.pool_fraction=0.5",
        f"hydra.run.dir={run_dir}",
    )
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert any("align_loss" in row for row in log)


def test_alignment_without_parallel_data_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_lowres(
            "train",
            "+task=xquad",
            *TINY,
            "trainer=smoke",
            "align=mse",
            f"hydra.run.dir={tmp_path / 'run'}",
        )
    assert "data.pool_fraction" in capsys.readouterr().err


def test_alignment_pulls_held_out_translations_together(tmp_path):
    """Same seed and data: with lambda > 0 unseen en-de pairs end closer than with lambda = 0."""
    common = [
        "+task=xquad",
        "backbone=tiny-bert",
        "trainer.progress=false",
        "data.eval_languages=[en,de]",
        "data.pool_fraction=0.5",
        "freeze=none",
        "prompt=none",
        "trainer.max_steps=40",
        "trainer.lr=1e-3",
        "trainer.batch_size=4",
        "data.max_train_examples=40",
        "task.max_length=128",
        "task.stride=32",
        "align.kind=cosine",
        "align.report_distance=true",
        "trainer.logging_steps=20",
    ]
    distances = {}
    for weight in (0.0, 1.0):
        run_dir = tmp_path / f"w{weight}"
        run_lowres("train", *common, f"align.weight={weight}", f"hydra.run.dir={run_dir}")
        metrics = json.loads((run_dir / "metrics.json").read_text())
        distances[weight] = metrics["parallel_distance"]["de"]["cosine_distance"]
    assert distances[1.0] < distances[0.0], distances


def test_alignment_from_a_parallel_file(tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("the city\tdie Stadt\nthe river\tder Fluss\nthe war\tder Krieg\n")
    run_dir = tmp_path / "run"
    _train_aligned_on(pairs, run_dir)
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert any("align_loss" in row for row in log)


def test_malformed_parallel_file_names_the_line(tmp_path, capsys):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("the city\tdie Stadt\nonly one field\n")
    with pytest.raises(SystemExit):
        _train_aligned_on(pairs, tmp_path / "run")
    assert "line 2" in capsys.readouterr().err


def _train_aligned_on(pairs, run_dir) -> None:
    """A smoke run with the MSE alignment loss on the parallel pairs of ``pairs``."""
    run_lowres(
        "train",
        "+task=xquad",
        *TINY,
        "trainer=smoke",
        "align=mse",
        "align.weight=0.5",
        f"align.parallel_file={pairs}",
        f"hydra.run.dir={run_dir}",
    )


@pytest.mark.parametrize("strategy", ["lower_k", "bitfit", "head_only"])
def test_freezing_strategies_run_through_the_cli(strategy, tmp_path):
    run_dir = tmp_path / strategy
    extra = ["freeze.k=1"] if strategy == "lower_k" else []
    run_lowres(
        "train",
        "+task=xquad",
        *TINY,
        "trainer=smoke",
        f"freeze={strategy}",
        *extra,
        f"hydra.run.dir={run_dir}",
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 < metrics["trainable_parameters"] < metrics["total_parameters"]


def test_lower_k_beyond_the_depth_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_lowres(
            "train",
            "+task=xquad",
            *TINY,
            "trainer=smoke",
            "freeze=lower_k",
            "freeze.k=7",
            f"hydra.run.dir={tmp_path / 'run'}",
        )
    assert "freeze.k" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("targets", "adapted"),
    [
        ("adapter.target_modules=[query,value]", {"query", "value"}),
        # the paper's method's LoRA: every linear layer of the blocks, found in the model
        ("adapter.layers=all_linear", {"query", "key", "value", "dense"}),
    ],
)
def test_lora_checkpoint_reload_reproduces_scores(tmp_path, targets, adapted):
    run_dir = tmp_path / "lora"
    run_lowres(
        "train",
        "+task=xquad",
        *TINY,
        "trainer=smoke",
        "adapter=lora",
        "prompt=none",
        targets,
        f"hydra.run.dir={run_dir}",
    )
    run_lowres(
        "evaluate",
        f"checkpoint={run_dir}",
        "trainer.progress=false",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    trained = json.loads((run_dir / "metrics.json").read_text())
    restored = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert restored["per_language"] == trained["per_language"]
    manifest = json.loads((run_dir / "checkpoint" / "manifest.json").read_text())
    lora = {name.split(".lora_")[0] for name in manifest["parameters"] if ".lora_" in name}
    assert {name.rsplit(".", 1)[-1] for name in lora} == adapted
    # dense: the attention output and both feed-forward layers of each of the 2 layers
    assert sum(name.endswith("dense") for name in lora) == (6 if "dense" in adapted else 0)
    assert manifest["count"] == trained["trainable_parameters"]


def test_fast_dropout_is_opt_in_and_changes_the_training_masks_only(tmp_path):
    """trainer.fast_dropout=true trains with other dropout masks (another training loss);
    off, the default, the run is the one before the switch existed."""
    losses = {}
    for fast in ("false", "true"):
        run_dir = tmp_path / fast
        run_lowres(
            "train",
            "+task=xquad",
            "+method=prompt_align",
            *TINY,
            "trainer=smoke",
            "data.pool_fraction=0.5",
            f"trainer.fast_dropout={fast}",
            f"hydra.run.dir={run_dir}",
        )
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert set(metrics["per_language"]) == {"en", "de"}
        losses[fast] = metrics["train_loss"]
    assert losses["true"] != losses["false"]
