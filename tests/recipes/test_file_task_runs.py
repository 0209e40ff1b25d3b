"""Datasets by config, end to end: +task=tydiqa, tasks from a YAML file alone, and
``lowres evaluate`` adding a language whose file exists in the data root."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import run_lowres

from lowres.data.roots import SAMPLE_ROOT
from lowres.schema import config_dir

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TINY = ["backbone=tiny-bert", "trainer=smoke", "trainer.progress=false"]


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def test_tydiqa_trains_and_evaluates_on_the_release_as_downloaded(tmp_path):
    run_dir = tmp_path / "run"
    run_lowres(
        "train", "+task=tydiqa", *TINY, "data=local", f"data.root={FIXTURES / 'tydiqa_release'}",
        "data.eval_languages=[en,sw]", f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    metrics = metrics_of(run_dir)
    assert {lang: s["n"] for lang, s in metrics["per_language"].items()} == {"en": 4, "sw": 4}
    split = json.loads((run_dir / "data_split.json").read_text())
    # the train file's Arabic questions stay out of the English source pool
    assert len(split["train"]) == 12 and all(i.startswith("train-english-") for i in split["train"])


def test_a_copy_with_blanked_answers_is_one_paragraph(tmp_path, capsys):
    folder = tmp_path / "tydiqa" / "tydiqa-goldp-v1.1-dev"
    folder.mkdir(parents=True)
    shutil.copytree(
        FIXTURES / "tydiqa" / "tydiqa-goldp-v1.1-train", folder.parent / "tydiqa-goldp-v1.1-train"
    )
    doc = json.loads((FIXTURES / "tydiqa" / folder.name / "tydiqa.goldp.sw.dev.json").read_text())
    for article in doc["data"]:
        for qa in article["paragraphs"][0]["qas"]:
            qa["answers"] = [{"text": "", "answer_start": 0}]
    (folder / "tydiqa.goldp.sw.dev.json").write_text(json.dumps(doc))
    with pytest.raises(SystemExit) as exit_info:
        run_lowres(
            "train", "+task=tydiqa", *TINY, "data=local", f"data.root={tmp_path}",
            "data.eval_languages=[sw]", f"hydra.run.dir={tmp_path / 'run'}",
        )  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "answers blanked" in err and "XTREME" in err and "Traceback" not in err


def test_tydiqa_trains_and_evaluates_on_xtreme_copies(tmp_path):
    run_dir = tmp_path / "run"
    run_lowres(
        "train", "+task=tydiqa", *TINY, "data=local", f"data.root={FIXTURES}",
        "data.eval_languages=[en,ar,fi,sw]", f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    metrics = metrics_of(run_dir)
    assert metrics["task"] == "tydiqa" and metrics["train_steps"] == 4
    assert {lang: s["n"] for lang, s in metrics["per_language"].items()} == {
        "en": 4,
        "ar": 4,
        "fi": 4,
        "sw": 4,
    }
    split = json.loads((run_dir / "data_split.json").read_text())
    assert len(split["train"]) == 12 and "train-english-7301958313040-0~2" in split["train"]
    answers = json.loads((run_dir / "predictions" / "sw.json").read_text())
    assert "swahili-7301958312943-0~2" in answers  # the repeated dev id, numbered


def task_yaml(folder: Path, name: str, base: str, **changes) -> None:
    """A task YAML of the user's own: a shipped generic preset with other files and name."""
    text = (config_dir() / "task" / f"{base}.yaml").read_text()
    spec = yaml.safe_load(text)
    spec.update(name=name, **changes)
    (folder / "task").mkdir(parents=True, exist_ok=True)
    (folder / "task" / f"{name}.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))


def test_a_qa_task_runs_from_a_yaml_file_alone(tmp_path):
    configs = tmp_path / "configs"
    files = {
        "train": "tydiqa/tydiqa-goldp-v1.1-{split}/tydiqa.goldp.{lang}.{split}.json",
        "dev": "tydiqa/*-{split}/tydiqa.goldp.{lang}.{split}.json",  # a glob
    }
    task_yaml(configs, "myqa", "qa_files", files=files, unique_ids=True)
    run_dir = tmp_path / "run"
    run_lowres(
        "train", f"hydra.searchpath=[file://{configs}]", "+task=myqa", *TINY, "data=local",
        f"data.root={FIXTURES}", "data.eval_languages=[en,id]", f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    metrics = metrics_of(run_dir)
    assert metrics["task"] == "myqa"
    assert {lang: s["n"] for lang, s in metrics["per_language"].items()} == {"en": 4, "id": 2}


def test_a_pair_task_runs_from_a_yaml_file_alone(tmp_path):
    # PAWS-X sample rows under other column names and label values, in a headed TSV.
    root = tmp_path / "data"
    for lang in ("en", "de"):
        source = SAMPLE_ROOT / "pawsx" / "xtreme-dev" / f"dev-{lang}.tsv"
        with source.open(encoding="utf-8", newline="") as handle:
            rows = [r for r in csv.reader(handle, delimiter="\t") if r][:40]
        for split, part in (("train", rows[:24]), ("test", rows[24:])):
            out = root / "para" / lang / f"{split}.tsv"
            out.parent.mkdir(parents=True, exist_ok=True)
            with out.open("w", encoding="utf-8", newline="") as handle:
                writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
                writer.writerow(["left", "right", "verdict"])
                names = ["different", "same"]
                writer.writerows([a, b, names[int(label)]] for a, b, label in part)
    configs = tmp_path / "configs"
    task_yaml(
        configs, "mypairs", "pair_tsv", split="test",
        files={"train": "para/{lang}/train.tsv", "test": "para/{lang}/test.tsv"},
        columns={"sentence1": "left", "sentence2": "right", "label": "verdict"},
        label_names=["different", "same"],
    )  # fmt: skip
    run_dir = tmp_path / "run"
    run_lowres(
        "train", f"hydra.searchpath=[file://{configs}]", "+task=mypairs", *TINY, "data=local",
        f"data.root={root}", "data.eval_languages=[en,de]", f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    metrics = metrics_of(run_dir)
    assert metrics["task"] == "mypairs"
    for scores in metrics["per_language"].values():
        assert scores["n"] == 16 and 0 <= scores["accuracy"] <= 100  # smoke caps at 16
    split = json.loads((run_dir / "data_split.json").read_text())
    assert split["train"][:1] and all(i.startswith("train-") for i in split["train"])


def test_a_pattern_that_matches_no_file_is_one_paragraph(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_lowres(
            "train", "+task=tydiqa", *TINY, "data=local", f"data.root={FIXTURES}",
            "data.eval_languages=[en,ko]", f"hydra.run.dir={tmp_path / 'run'}",
        )  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "tydiqa.goldp.ko.dev.json" in err and "files exist for ar, en, fi, id, sw" in err
    assert "Traceback" not in err


def test_evaluate_adds_a_language_whose_file_exists(tmp_path):
    # XQuAD has no Romanian; a file of one's own in the data root is evaluated like the rest.
    root = tmp_path / "data"
    shutil.copytree(SAMPLE_ROOT / "xquad", root / "xquad")
    shutil.copytree(SAMPLE_ROOT / "squad", root / "squad")
    run_dir = tmp_path / "run"
    run_lowres(
        "train", "+task=xquad", *TINY, "data=local", f"data.root={root}",
        "data.eval_languages=[en,de]", f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    shutil.copy(FIXTURES / "xquad_ro" / "xquad" / "xquad.ro.json", root / "xquad")
    out = tmp_path / "eval"
    run_lowres(
        "evaluate", f"checkpoint={run_dir}", "data.eval_languages=[en,ro]",
        "trainer.progress=false", f"hydra.run.dir={out}",
    )  # fmt: skip
    trained, evaluated = metrics_of(run_dir), metrics_of(out)
    assert set(evaluated["per_language"]) == {"en", "ro"}
    assert evaluated["per_language"]["ro"]["n"] == 5
    assert evaluated["per_language"]["en"] == trained["per_language"]["en"]
    answers = json.loads((out / "predictions" / "ro.json").read_text())
    assert sorted(answers) == ["ro-q1", "ro-q2", "ro-q3", "ro-q4", "ro-q5"]


def test_min_steps_trains_at_least_that_many_updates_with_no_zero_lr_step(tmp_path):
    run_dir = tmp_path / "run"
    run_lowres(
        "train", "+task=tydiqa", *TINY, "data=local", f"data.root={FIXTURES / 'tydiqa_release'}",
        "data.eval_languages=[sw]", "trainer.max_steps=-1", "trainer.epochs=1",
        "trainer.min_steps=7", "trainer.warmup_ratio=0.1", "trainer.lr=1e-3",
        f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    assert metrics_of(run_dir)["train_steps"] == 7  # one pass over 12 questions is 3 updates
    logged = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    rates = {e["step"]: e["learning_rate"] for e in logged if "learning_rate" in e}
    # Warm-up 0.7 rounds down to none: the first update runs at the full rate and the log's
    # step-2 rate (the second update's) is 6/7 of it. Rounded up to one warm-up step, the
    # first update would run at rate 0 and the second at the full rate.
    assert rates[2] == pytest.approx(1e-3 * 6 / 7)
