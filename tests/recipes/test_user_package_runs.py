"""Extending lowres without editing it: a package of the user's own (an alignment loss and a
dataset reader) plus YAML files on the search path, trained through the CLI."""

from __future__ import annotations

import csv
import json
import textwrap
from pathlib import Path

import pytest
from helpers import run_lowres

from lowres.data.roots import SAMPLE_ROOT

LOSSES = '''
import torch.nn.functional as F


def squared_cosine(source, target):
    """(1 - cos)^2: pulls hard on pairs far apart, gently on close ones."""
    CALLS.append(len(source))
    return ((1.0 - F.cosine_similarity(source, target, dim=-1)) ** 2).mean()


CALLS = []
'''

READERS = '''
import json

from lowres.tasks.files import FileTask
from lowres.tasks.pairs import PairClassificationTask


class JsonlPairs(FileTask, PairClassificationTask):
    """Sentence pairs in JSON Lines: {"id", "sentence1", "sentence2", "label"} per line."""

    def read(self, path):
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def tag(self, records, lang):
        # translations share an id, hence a group (parallel pairs for the alignment loss)
        return [{**r, "language": lang, "group": r["id"]} for r in records]
'''

ALIGN_YAML = """
defaults:
  - align_schema
kind: userext_pkg.losses:squared_cosine
weight: 0.5
"""

TASK_YAML = """
defaults:
  - task_schema
name: jsonl_pairs
kind: classification
reader: userext_pkg.readers:JsonlPairs
metric: accuracy
split: dev
files:
  train: pairs/train.{lang}.jsonl
  dev: pairs/dev.{lang}.jsonl
max_length: 64
"""


def write_user_package(root: Path) -> tuple[Path, Path, Path]:
    """``(code, configs, data)``: the package, its YAML files, and PAWS-X rows as JSON Lines."""
    package = root / "code" / "userext_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "losses.py").write_text(textwrap.dedent(LOSSES))
    (package / "readers.py").write_text(textwrap.dedent(READERS))
    configs = root / "configs"
    (configs / "align").mkdir(parents=True)
    (configs / "align" / "squared_cosine.yaml").write_text(ALIGN_YAML)
    (configs / "task").mkdir()
    (configs / "task" / "jsonl_pairs.yaml").write_text(TASK_YAML)
    data = root / "data" / "pairs"
    data.mkdir(parents=True)
    for lang in ("en", "de"):
        source = SAMPLE_ROOT / "pawsx" / "xtreme-dev" / f"dev-{lang}.tsv"
        with source.open(encoding="utf-8", newline="") as handle:
            rows = [r for r in csv.reader(handle, delimiter="\t") if r][:48]
        for split, part in (("train", rows[:24]), ("dev", rows[24:])):
            lines = [
                json.dumps({"id": f"{split}{n}", "sentence1": a, "sentence2": b, "label": int(y)})
                for n, (a, b, y) in enumerate(part)
            ]
            (data / f"{split}.{lang}.jsonl").write_text("\n".join(lines) + "\n", "utf-8")
    return root / "code", configs, root / "data"


def test_a_user_loss_and_reader_train_through_the_cli(tmp_path, monkeypatch):
    code, configs, data = write_user_package(tmp_path)
    monkeypatch.syspath_prepend(str(code))
    run_dir = tmp_path / "run"
    run_lowres(
        "train", f"hydra.searchpath=[file://{configs}]", "+task=jsonl_pairs",
        "align=squared_cosine", "backbone=tiny-bert", "trainer=smoke", "trainer.progress=false",
        "data=local", f"data.root={data}", "data.eval_languages=[en,de]",
        "data.pool_fraction=0.5", f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["task"] == "jsonl_pairs"
    assert metrics["method"]["align_kind"] == "userext_pkg.losses:squared_cosine"
    for scores in metrics["per_language"].values():
        assert scores["n"] > 0 and 0 <= scores["accuracy"] <= 100
    from userext_pkg.losses import CALLS  # the run imported it; the loss ran once a step

    assert len(CALLS) == metrics["train_steps"] > 0
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert any(row.get("align_loss", 0) > 0 for row in log)


def test_a_user_name_that_does_not_import_is_one_paragraph(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_lowres(
            "train", "+task=xquad", "backbone=tiny-bert", "trainer=smoke",
            "align=mse", "align.kind=nowhere_pkg.losses:squared", f"hydra.run.dir={tmp_path}/r",
        )  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "align.kind='nowhere_pkg.losses:squared'" in err and "cannot be imported" in err
    assert "Traceback" not in err
