"""data.source_split end to end: the standard protocol's SQuAD train, named in metrics.json."""

from __future__ import annotations

import json
import shutil

from helpers import SMOKE, run_lowres, write_squad

from lowres.data.roots import SAMPLE_ROOT


def test_source_split_train_trains_on_squad_train_and_says_so(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(SAMPLE_ROOT / "xquad", root / "xquad")
    shutil.copytree(SAMPLE_ROOT / "squad", root / "squad")
    questions = [
        (f"tr{i}", f"The river number {i} is called Name{i}.", f"River {i}?", f"Name{i}")
        for i in range(10)
    ]
    write_squad(root / "squad" / "train-v1.1.json", questions)
    run_dir = tmp_path / "run"
    run_lowres(
        "train", *SMOKE, "data=local", f"data.root={root}", "data.source_split=train",
        "data.eval_languages=[en,de]", f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["protocol"]["source_split"] == "train"
    assert metrics["protocol"]["questions"] == 10
    assert metrics["protocol"]["description"].startswith("SQuAD v1.1 train")
    split = json.loads((run_dir / "data_split.json").read_text())
    assert sorted(split["train"]) == sorted(i for i, *_ in questions)
