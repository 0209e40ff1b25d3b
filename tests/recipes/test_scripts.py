"""The benchmark and study scripts run end to end on a tiny model."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys

import pytest
from helpers import REPO


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.mark.slow  # a minute of timing loops; CI runs the slow tier separately
def test_bench_methods_prints_every_method_and_the_checks(tmp_path):
    out = tmp_path / "bench.json"
    result = run_script(
        "scripts/bench_methods.py",
        "--backbone",
        "tiny-bert",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--length",
        "128",
        "--json",
        str(out),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for method in ("full", "prompt_input", "prompt_deep", "peft_prompt_tuning", "lora"):
        assert f"| {method} |" in result.stdout
    assert result.stdout.count("PASS") + result.stdout.count("FAIL") == 3

    results = json.loads(out.read_text())["results"]
    assert results["full"]["trainable"] == results["full"]["total"]
    assert results["prompt_input"]["trainable"] < results["prompt_deep"]["trainable"]
    assert all(r["step_s"] > 0 and r["peak_mb"] > 0 for r in results.values())


def test_compare_methods_writes_a_table(tmp_path):
    table = tmp_path / "table.md"
    result = run_script(
        "scripts/compare_methods.py",
        "--methods",
        "untrained,deep",
        "--steps",
        "2",
        "--backbone",
        "tiny-bert",
        "--runs",
        str(tmp_path / "runs"),
        "--out",
        str(table),
        "--",
        "trainer=smoke",
        "trainer.progress=false",
        "data.eval_languages=[en]",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    text = table.read_text()
    assert "| untrained |" in text and "| deep |" in text and "en f1" in text


def _compare_methods():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "compare_methods", REPO / "scripts/compare_methods.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("method", sorted(_compare_methods().METHODS))
def test_every_compare_methods_row_composes_on_minilm(method):
    from hydra import compose, initialize_config_dir

    from lowres.schema import config_dir, register_schemas, validate

    register_schemas()
    overrides = _compare_methods().METHODS[method]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["+task=xquad", "backbone=minilm", *overrides])
    validate(cfg)
    # Each row sets what it is named for (the later override wins over the preset's).
    if method.startswith("deep_lower"):
        frozen_layers = int(method.removeprefix("deep_lower"))
        assert (cfg.freeze.strategy, cfg.freeze.k, cfg.prompt.layers) == (
            "lower_k",
            frozen_layers,
            "all",
        )
        assert cfg.trainer.lr == pytest.approx(1e-4) and cfg.prompt.lr == pytest.approx(0.01)
    if method == "untrained":
        assert cfg.trainer.epochs == 0


def test_compare_methods_marks_a_train_time_that_misses_an_earlier_segment():
    train_time = _compare_methods().train_time
    assert train_time({"train_runtime_s": 812.4, "train_steps": 1338}) == "812"
    whole = {"train_runtime_s": 812.4, "train_steps": 1338, "train_runtime_from_step": 0}
    assert train_time(whole) == "812"
    part = {"train_runtime_s": 747.6, "train_steps": 1338, "train_runtime_from_step": 1000}
    assert train_time(part) == "748 (steps 1000-1338 only)"


def test_runs_table_tabulates_runs_and_keeps_their_results(tmp_path):
    committed = REPO / "results/speed_minilm_256/full-256-longest-bf16"
    # The run folder as lowres wrote it: predictions as plain JSON.
    run = tmp_path / "run"
    shutil.copytree(committed, run)
    for packed in (run / "predictions").glob("*.json.gz"):
        packed.with_suffix("").write_bytes(gzip.decompress(packed.read_bytes()))
        packed.unlink()
    metrics = json.loads((run / "metrics.json").read_text())
    kept, table = tmp_path / "kept", tmp_path / "table.md"
    result = run_script(
        "scripts/runs_table.py", "--out", str(table), "--keep", str(kept), f"bf16={run}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    en, de, es = (metrics["per_language"][lang] for lang in ("en", "de", "es"))
    row = (
        f"| bf16 | {metrics['train_runtime_s']:.0f} | {metrics['eval_runtime_s']:.0f} | "
        f"{en['f1']:.1f} / {en['exact_match']:.1f} | {de['f1']:.1f} / {de['exact_match']:.1f} | "
        f"{es['f1']:.1f} / {es['exact_match']:.1f} | "
        f"{(en['f1'] + de['f1'] + es['f1']) / 3:.1f} / "
        f"{(en['exact_match'] + de['exact_match'] + es['exact_match']) / 3:.1f} | "
        f"{(de['f1'] + es['f1']) / 2:.1f} / {(de['exact_match'] + es['exact_match']) / 2:.1f} |"
    )
    assert row in table.read_text()
    assert "trainer.precision=bf16" in table.read_text()
    for name in ("metrics.json", "overrides.yaml"):
        assert (kept / "bf16" / name).read_bytes() == (run / name).read_bytes()
    # Predictions are kept gzipped, without a timestamp: the committed bytes come out again.
    packed = (kept / "bf16" / "predictions/en.json.gz").read_bytes()
    assert gzip.decompress(packed) == (run / "predictions/en.json").read_bytes()
    assert packed == (committed / "predictions/en.json.gz").read_bytes()
    assert not (kept / "bf16" / "predictions/en.json").exists()
    # Once kept, the table is remade from the copy alone.
    again = run_script("scripts/runs_table.py", "--keep", str(kept), f"bf16={tmp_path / 'gone'}")
    assert again.returncode == 0 and row in again.stdout
    bad = run_script("scripts/runs_table.py", str(run))
    assert bad.returncode != 0 and "is not LABEL=RUN_DIR" in bad.stderr


def test_runs_table_takes_an_evaluate_folders_training_time_from_its_checkpoint():
    kept = REPO / "results/xquad_me5_1epoch/minilm"  # a kept `lowres evaluate` folder
    trained = json.loads((kept / "checkpoint_metrics.json").read_text())
    scored = json.loads((kept / "metrics.json").read_text())
    result = run_script("scripts/runs_table.py", f"minilm={kept}")
    assert result.returncode == 0, result.stderr[-2000:]
    row = next(line for line in result.stdout.splitlines() if line.startswith("| minilm |"))
    assert row.startswith(
        f"| minilm | {trained['train_runtime_s']:.0f} | {scored['eval_runtime_s']:.0f} | "
    )
    assert f"{trained['train_steps']} steps, seed {trained['seed']}" in result.stdout
