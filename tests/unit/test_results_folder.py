"""results/ stays light: no weights, predictions gzipped, no large file (docs/results/index.md)."""

from __future__ import annotations

import subprocess

from helpers import REPO

WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")
LARGEST = 1_000_000  # bytes; the largest file kept today is a 217 KB plot


def tracked(folder: str) -> list:
    listed = subprocess.run(
        ["git", "ls-files", "-z", folder], cwd=REPO, capture_output=True, check=True, text=True
    ).stdout
    return [REPO / name for name in listed.split("\0") if name]


def test_results_hold_no_weights_no_plain_predictions_and_no_large_file():
    files = [path for path in tracked("results") if path.is_file()]
    assert len(files) > 1000  # the study's runs are here, not in docs/
    assert not [p for p in files if p.suffix in WEIGHTS or "checkpoint" in p.parts]
    plain = [p for p in files if p.parent.name == "predictions" and p.suffix == ".json"]
    assert plain == [], f"gzip them: scripts/runs_table.py compress_predictions ({plain[:3]})"
    large = [(p, p.stat().st_size) for p in files if p.stat().st_size > LARGEST]
    assert large == []


def test_docs_holds_prose_not_run_outputs():
    kinds = {path.suffix for path in tracked("docs")}
    assert not [p for p in tracked("docs") if p.name in ("metrics.json", "train_log.jsonl")]
    assert ".md" in kinds and ".png" not in kinds
