"""``lowres study``: a tiny spec end to end (tiny-bert, the TyDiQA fixtures): run, stop and
resume from results alone (on a "new machine" without the weights), report without training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import run_lowres

from lowres.sweeps import study

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the search extra")

RELEASE = Path(__file__).resolve().parents[1] / "fixtures" / "tydiqa_release"


def tiny_spec(tmp_path: Path, methods=("full",), seeds=(1,)) -> Path:
    space = {"trainer.lr": "tag(log,interval(1e-4,1e-2))"}
    spec = {
        "name": "tiny",
        "results": str(tmp_path / "results"),
        "work": str(tmp_path / "work"),
        "backbone": "tiny-bert",
        "common": ["trainer=smoke", "trainer.progress=false", "data=local", f"data.root={RELEASE}"],
        "methods": {m: {"space": space} for m in methods},
        "trials": 1,
        "source": {"task": "tydiqa", "languages": ["en"], "dev_articles": 2},
        "source_seeds": list(seeds),
        "stage2_seeds": [1],
        "k": [2],
        "stage2": ["trainer.max_steps=-1", "trainer.min_steps=3"],
        "tasks": {
            "tydiqa": {
                "zero_shot": ["ar", "sw"],
                "few_shot": ["sw"],
                "overrides": ["data.pool_fraction=0.3"],
            }
        },
        "primary": [[methods[0], methods[-1], 0, "tydiqa"]],
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_study_runs_resumes_from_its_results_and_reports_without_training(tmp_path):
    spec = study.load_spec(tiny_spec(tmp_path))
    ran: list[str] = []

    def runner(argv: list[str]) -> None:
        ran.append(argv[-1].split("=", 1)[1])  # the step's hydra.run.dir / hydra.sweep.dir
        run_lowres(*argv)

    # Stopped after two steps: the search and the source run are kept in results/.
    assert study.run_study(spec, runner, limit=2, echo=lambda _: None) == 2
    state = study.status(spec)
    assert [s["name"] for s in state["steps"] if s["done"]] == ["search/full", "source/full/seed1"]
    search = json.loads((tmp_path / "results" / "search" / "full" / "search.json").read_text())
    assert len(search["trials"]) == 1 and search["best"]["params"]["trainer.lr"] > 0
    chosen = f"trainer.lr={search['best']['params']['trainer.lr']}"
    fewshot = [s for s in state["steps"] if s["name"].startswith("fewshot/")]
    assert [s["name"] for s in fewshot] == ["fewshot/tydiqa/sw/full/seed1/k2/s1"]
    assert chosen in fewshot[0]["argv"] and "data.source_pool=false" in fewshot[0]["argv"]

    # A new machine: no work folder (no weights), only the results. The search and the
    # source run are not run again as steps; the source model is retrained once, for the
    # zero-shot evaluation that needs its weights.
    shutil.rmtree(tmp_path / "work")
    ran.clear()
    assert study.run_study(spec, runner, echo=lambda _: None) == 2
    assert [Path(r).relative_to(tmp_path / "work").as_posix() for r in ran] == [
        "source/full/seed1", "zeroshot/tydiqa/full/seed1", "fewshot/tydiqa/sw/full/seed1/k2/s1",
    ]  # fmt: skip
    state = study.status(spec)
    assert state["done"] == state["planned"] == 4
    assert not (tmp_path / "results" / "source" / "full" / "seed1" / "checkpoint").exists()
    assert study.run_study(spec, runner, echo=lambda _: None) == 0  # nothing left

    # The report from results alone.
    shutil.rmtree(tmp_path / "work")
    record = study.report(spec)
    text = (tmp_path / "results" / "report" / "report.md").read_text()
    assert "## tydiqa, k = 0" in text and "## tydiqa, k = 2" in text
    assert "| sw (n=2) |" in text and "the interval varies the source seed" in text
    results = tmp_path / "results"
    zero = json.loads((results / "zeroshot/tydiqa/full/seed1/metrics.json").read_text())
    few = json.loads((results / "fewshot/tydiqa/sw/full/seed1/k2/s1/metrics.json").read_text())
    cells = {(c["k"], c["language"]): c["per_source_seed"] for c in record["cells"]}
    assert cells[0, "sw"] == {1: zero["per_language"]["sw"]["f1"]}
    assert cells[2, "sw"] == {1: few["per_language"]["sw"]["f1"]}
    assert few["train_steps"] >= 3  # stage 2's floor on updates


def test_study_status_and_a_bad_spec_through_the_cli(tmp_path, capsys):
    path = tiny_spec(tmp_path, methods=("full", "lora_all_linear"))
    run_lowres("study", "status", str(path))
    out = capsys.readouterr().out
    assert "todo  search/full" in out and "0 of 2 planned steps done" in out
    assert "not yet planned: the steps after the search of full, lora_all_linear" in out
    bad = yaml.safe_load(path.read_text())
    bad["primary"] = [["full", "lora", 0, "tydiqa"]]
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(SystemExit) as exit_info:
        run_lowres("study", "status", str(path))
    assert exit_info.value.code == 2
    assert "primary comparison ['full', 'lora', 0, 'tydiqa'] names lora" in capsys.readouterr().err
