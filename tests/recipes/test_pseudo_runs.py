"""Pseudo-data transfer: self-training on a teacher's confident labels, and translate-train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import pooled_sample_task, run_lowres
from omegaconf import OmegaConf

PAWSX = [
    "+task=pawsx",
    "backbone=tiny-bert",
    "trainer=smoke",
    "trainer.progress=false",
    "data.pool_fraction=0.5",
    "data.eval_languages=[en,de]",
]


XQUAD = [
    "+task=xquad",
    "backbone=tiny-bert",
    "trainer=smoke",
    "trainer.progress=false",
    "data.eval_languages=[en,de]",
]


def read(run_dir: Path, name: str):
    return json.loads((run_dir / name).read_text())


@pytest.fixture(scope="module")
def pawsx_teacher(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pseudo") / "teacher"
    run_lowres("train", *PAWSX, f"hydra.run.dir={run_dir}")
    return run_dir


TSV_ROWS = [
    ("11", "Der Hund schläft.", "Der Hund ruht.", "1"),
    ("12", "Es regnet in Berlin.", "In Berlin scheint die Sonne.", "0"),
    ("13", "Sie liest ein Buch.", "Ein Buch wird von ihr gelesen.", "1"),
    ("14", "Er fährt nach Köln.", "Er fliegt nach Rom.", "0"),
    ("15", "Das Haus ist alt.", "NS", "1"),  # untranslated: dropped like in the official files
]


def write_tsv(path: Path, rows, header=True) -> Path:
    lines = ["id\tsentence1\tsentence2\tlabel"] if header else []
    lines += ["\t".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_self_training_trains_on_the_teachers_labels(pawsx_teacher, tmp_path):
    student = tmp_path / "student"
    run_lowres(
        "train",
        *PAWSX,
        "data.k=2",
        "pseudo=self_train",
        f"pseudo.teacher={pawsx_teacher}",
        "pseudo.threshold=0.0",
        f"hydra.run.dir={student}",
    )
    task = pooled_sample_task("pawsx", max_length=128, split="dev")
    pool = {r["id"]: r for r in task.target_pool("de")}
    shots = {r["id"] for r in task.k_shot("de", 2)}
    split = read(student, "data_split.json")
    pseudo = split["pseudo"]
    pseudo_ids = [p["id"] for p in pseudo]
    # every de pool row except the 2 real shots, which mix=true trains with their gold label
    assert len(shots) == 2 and shots <= set(split["train"])
    assert sorted(pseudo_ids) == sorted(set(pool) - shots)
    assert {p["language"] for p in pseudo} == {"de"}
    assert not set(pseudo_ids) & set(split["evaluation"]["de"])
    assert all(0.5 <= p["confidence"] <= 1.0 for p in pseudo)
    metrics = read(student, "metrics.json")
    assert metrics["pseudo"]["kind"] == "self_train"
    assert metrics["pseudo"]["teacher"] == str(pawsx_teacher)
    assert metrics["pseudo"]["kept"] == len(pseudo) == metrics["pseudo"]["candidates"]
    assert metrics["pseudo"]["threshold"] == 0.0
    assert metrics["train_examples"] == 32 + 2 + len(pseudo)

    # The labels are the teacher's predictions, as `lowres evaluate` restores it, not gold.
    evaluated = tmp_path / "evaluated"
    run_lowres(
        "evaluate",
        f"checkpoint={pawsx_teacher}",
        "data.pool_fraction=0",
        "data.max_eval_examples=0",
        "data.eval_languages=[de]",
        f"hydra.run.dir={evaluated}",
    )
    teacher_says = read(evaluated, "predictions/de.json")
    assert {p["id"]: p["label"] for p in pseudo} == {i: teacher_says[i] for i in pseudo_ids}
    assert any(pool[p["id"]]["label"] != p["label"] for p in pseudo)


def test_threshold_above_every_confidence_keeps_none(pawsx_teacher, tmp_path, capsys):
    student = tmp_path / "student"
    run_lowres(
        "train",
        *PAWSX,
        "data.k=2",
        "pseudo=self_train",
        f"pseudo.teacher={pawsx_teacher}",
        "pseudo.threshold=1.0",
        "pseudo.mix=false",
        f"hydra.run.dir={student}",
    )
    err = capsys.readouterr().err
    assert "kept 0 of" in err and "no pseudo-labelled example passed" in err
    metrics = read(student, "metrics.json")
    task = pooled_sample_task("pawsx", max_length=128, split="dev")
    assert metrics["pseudo"]["kept"] == 0
    # mix=false: the 2 real shots are dropped, so all pool rows were candidates
    assert metrics["pseudo"]["candidates"] == len(task.target_pool("de"))
    split = read(student, "data_split.json")
    assert split["pseudo"] == [] and split["train_languages"] == ["en"]
    assert metrics["train_examples"] == 32 and metrics["train_steps"] == 4


def test_qa_self_training_labels_spans_of_the_context(tmp_path):
    teacher = tmp_path / "teacher"
    run_lowres("train", *XQUAD, "data.pool_fraction=0.5", f"hydra.run.dir={teacher}")
    student = tmp_path / "student"
    run_lowres(
        "train",
        *XQUAD,
        "data.pool_fraction=0.5",
        "pseudo=self_train",
        f"pseudo.teacher={teacher}",
        "pseudo.threshold=0.0",
        "pseudo.max_examples=10",
        f"hydra.run.dir={student}",
    )
    task = pooled_sample_task(
        "xquad",
        max_length=384,
        stride=128,
        max_question_length=64,
        n_best=20,
        max_answer_length=30,
    )
    pool = {r["id"]: r for r in task.target_pool("de")}
    pseudo = read(student, "data_split.json")["pseudo"]
    assert len(pseudo) == 10
    for p in pseudo:
        assert p["language"] == "de" and 0.0 < p["confidence"] <= 1.0
        assert p["label"] and p["label"] in pool[p["id"]]["context"]
    summary = read(student, "metrics.json")["pseudo"]
    assert summary["kept"] == 10 and summary["candidates"] == len(pool)
    assert summary["per_language"] == {"de": {"kept": 10, "candidates": len(pool)}}

    # The labelled records point at their span, so training finds the answer tokens.
    from lowres.builders import training_arguments
    from lowres.recipes.pseudo import load_teacher, teacher_labels

    teacher_task, model, tokenizer = load_teacher(teacher, "extractive_qa", 2)
    cfg = OmegaConf.load(teacher / ".hydra" / "config.yaml")
    args = training_arguments(
        cfg.trainer, tmp_path / "t", task_kind="extractive_qa", learning_rate=0.0
    )
    labelled = teacher_labels(teacher_task, model, tokenizer, list(pool.values())[:8], args)
    spans = [r["answers"] for r, _ in labelled if r is not None]
    assert len(labelled) == 8 and spans
    for record, _ in (item for item in labelled if item[0] is not None):
        start, text = record["answers"]["answer_start"][0], record["answers"]["text"][0]
        assert record["context"][start : start + len(text)] == text


def test_self_training_without_a_teacher_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_lowres("train", *PAWSX, "pseudo=self_train", f"hydra.run.dir={tmp_path / 'r'}")
    assert exit_info.value.code == 2
    assert "pseudo.teacher" in capsys.readouterr().err


def test_translate_train_reads_a_pawsx_tsv(tmp_path):
    tsv = write_tsv(tmp_path / "translated_train.tsv", TSV_ROWS)
    run_dir = tmp_path / "run"
    run_lowres(
        "train",
        *PAWSX,
        "pseudo=translate_train",
        f"pseudo.files={{de:{tsv}}}",
        f"hydra.run.dir={run_dir}",
    )
    pseudo = read(run_dir, "data_split.json")["pseudo"]
    assert [(p["id"], p["language"], p["confidence"], p["label"]) for p in pseudo] == [
        ("translated-11", "de", None, 1),
        ("translated-12", "de", None, 0),
        ("translated-13", "de", None, 1),
        ("translated-14", "de", None, 0),
    ]
    metrics = read(run_dir, "metrics.json")
    assert metrics["pseudo"]["kind"] == "translate_train"
    assert metrics["pseudo"]["kept"] == 4 and metrics["pseudo"]["files"] == {"de": str(tsv)}
    assert metrics["train_examples"] == 32 + 4


def test_translate_train_reads_squad_json_through_a_pattern(tmp_path):
    def qa(qid: str, question: str, answer: str, start: int) -> dict:
        return {
            "id": qid,
            "question": question,
            "answers": [{"text": answer, "answer_start": start}],
        }

    paragraphs = [
        {
            "context": "Oslo ist die Hauptstadt von Norwegen.",
            "qas": [
                qa("t1", "Was ist Oslo?", "die Hauptstadt", 9),
                qa("t2", "Von welchem Land?", "Norwegen", 28),
            ],
        },
        {
            "context": "Der Rhein fließt durch Köln.",
            "qas": [qa("t3", "Welcher Fluss?", "Rhein", 4)],
        },
    ]
    (tmp_path / "squad.de.json").write_text(
        json.dumps({"version": "1.1", "data": [{"title": "x", "paragraphs": paragraphs}]})
    )
    run_dir = tmp_path / "run"
    run_lowres(
        "train",
        *XQUAD,
        "pseudo=translate_train",
        f"pseudo.files='{tmp_path}/squad.{{lang}}.json'",
        f"hydra.run.dir={run_dir}",
    )
    pseudo = read(run_dir, "data_split.json")["pseudo"]
    assert [(p["id"], p["label"]) for p in pseudo] == [
        ("translated-t1", "die Hauptstadt"),
        ("translated-t2", "Norwegen"),
        ("translated-t3", "Rhein"),
    ]
    metrics = read(run_dir, "metrics.json")
    assert metrics["train_examples"] == 32 + 3 and metrics["pseudo"]["candidates"] == 3


def test_malformed_translate_file_is_named(tmp_path, capsys):
    bad = write_tsv(tmp_path / "bad.tsv", [("1", "Ein Satz.", "Noch einer.", "yes")])
    with pytest.raises(SystemExit) as exit_info:
        run_lowres(
            "train",
            *PAWSX,
            "pseudo=translate_train",
            f"pseudo.files={{de:{bad}}}",
            f"hydra.run.dir={tmp_path / 'run'}",
        )
    assert exit_info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert str(bad) in err and "label 'yes' is not 0 or 1" in err
    assert "Traceback" not in err
