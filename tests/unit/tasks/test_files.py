"""Tasks read by file pattern: the tydiqa preset on its fixture, squad_files and pair_tsv."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from lowres.data.pair_tsv import read_pair_tsv
from lowres.errors import ConfigError, DataFormatError, LowresError
from lowres.schema import config_dir
from lowres.tasks import DataSettings, create_task

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def preset(name: str) -> dict:
    params = yaml.safe_load((config_dir() / "task" / f"{name}.yaml").read_text())
    params.pop("defaults")
    return params


def tydiqa(eval_languages=("en", "ar", "fi", "sw"), root=FIXTURES, source="en", **overrides):
    settings = DataSettings(
        source="local",
        root=str(root),
        source_language=source,
        eval_languages=list(eval_languages),
        pool_fraction=0.5,
    )
    params = {**preset("tydiqa"), **overrides}
    return create_task(params.pop("name"), settings, **params)


def test_tydiqa_reads_xtreme_per_language_copies():
    task = tydiqa()
    pool = task.source_pool()
    assert len(pool) == 12 and {r["language"] for r in pool} == {"en"}
    # The train file repeats an id, as the release does; the preset numbers the repeat.
    repeated = [r["id"] for r in pool if r["id"].endswith("~2")]
    assert repeated == ["train-english-7301958313040-0~2"]
    assert len({r["id"] for r in pool}) == 12
    for lang, n in {"en": 4, "ar": 4, "fi": 4, "sw": 4}.items():
        records = task.language_records(lang)
        assert len(records) == n and all(r["language"] == lang for r in records)
        assert all(r["context"][s:].startswith(t) for r in records for s, t in _spans(r))
    assert task.name == "tydiqa" and task.kind == "extractive_qa" and task.metric_name == "squad"
    # two questions per paragraph: whole paragraphs are pooled or evaluated, never split
    split = task.split()
    pooled = 0
    for lang in ("ar", "fi", "sw"):
        evaluated = {r["group"] for r in split.evaluation[lang]}
        target = {r["group"] for r in task.target_pool(lang)}
        assert not evaluated & target and len(evaluated | target) == 2
        pooled += len(target)
    assert 0 < pooled < 6  # the hash pools some paragraphs, not all
    assert len(split.train) == 12  # zero-shot: the English source pool only


RELEASE = FIXTURES / "tydiqa_release"


def test_tydiqa_reads_the_release_as_downloaded():
    # One train file for every language (here English and Arabic): the source pool is the
    # English questions, picked by their id prefix; dev files are named by language.
    task = tydiqa(root=RELEASE)
    pool = task.source_pool()
    assert len(pool) == 12 and all(r["id"].startswith("train-english-") for r in pool)
    assert len({r["id"] for r in pool}) == 12  # the release's ids are unique: nothing numbered
    xtreme = tydiqa()
    for lang in ("en", "ar", "fi", "sw"):
        records = task.language_records(lang)
        assert [r["question"] for r in records] == [
            r["question"] for r in xtreme.language_records(lang)
        ]
        assert all(r["id"].startswith(NAMES[lang] + "-") for r in records)
    assert task.locate("dev", "sw")[1] == [
        RELEASE / "tydiqa" / "tydiqa-goldp-v1.1-dev" / "tydiqa-goldp-dev-swahili.json"
    ]


NAMES = {"en": "english", "ar": "arabic", "fi": "finnish", "sw": "swahili"}


def test_a_shared_file_without_the_language_is_refused_with_the_prefixes_it_has(tmp_path):
    folder = tmp_path / "tydiqa"
    folder.mkdir()
    (folder / "tydiqa-goldp-v1.1-train.json").symlink_to(
        RELEASE / "tydiqa" / "tydiqa-goldp-v1.1-train.json"
    )
    # Finnish has no train questions here (the release has some): the pool cannot be read.
    with pytest.raises(LowresError) as info:
        tydiqa(root=tmp_path, source="fi").source_pool()
    assert "no question id starts with 'finnish-'" in str(info.value)
    assert "arabic-, english-" in str(info.value)
    no_prefix = tydiqa(root=tmp_path, language_id_prefix="")
    with pytest.raises(ConfigError, match="task.language_id_prefix is empty"):
        no_prefix.source_pool()


def test_tydiqa_reads_the_shared_release_in_every_language(shared_data):
    if not (shared_data / "tydiqa").is_dir():
        pytest.skip(f"TyDiQA-GoldP not found under {shared_data}")
    counts = {"ar": 921, "bn": 113, "en": 440, "fi": 782, "id": 565, "ko": 276, "ru": 812,
              "sw": 499, "te": 669}  # fmt: skip
    task = tydiqa(root=shared_data, eval_languages=list(counts))
    for lang, n in counts.items():
        records = task.language_records(lang)
        assert len(records) == n and len({r["id"] for r in records}) == n
        assert all(r["answers"]["text"][0] for r in records)


def _spans(record):
    return zip(record["answers"]["answer_start"], record["answers"]["text"], strict=True)


def test_tydiqa_scores_with_the_squad_metric():
    task = tydiqa(eval_languages=["sw"])
    records = task.language_records("sw")
    gold = {r["id"]: r["answers"]["text"][0] for r in records}
    assert task.score(gold, records, "sw") == {"exact_match": 100.0, "f1": 100.0, "n": 4}
    wrong = {r["id"]: "" for r in records}
    assert task.score(wrong, records, "sw")["f1"] == 0.0


def test_repeated_ids_are_refused_without_the_opt_in():
    task = tydiqa(unique_ids=False)
    with pytest.raises(DataFormatError, match=r"appears twice.*task\.unique_ids=true"):
        task.source_pool()


def test_a_pattern_that_matches_no_file_names_what_exists():
    task = tydiqa(eval_languages=["ko"])
    with pytest.raises(LowresError) as info:
        task.language_records("ko")
    message = str(info.value)
    assert "task.files.dev=" in message and "tydiqa.goldp.ko.dev.json" in message
    assert "files exist for ar, en, fi, id, sw" in message


def test_a_language_outside_the_list_is_read_when_its_file_exists(tmp_path):
    # Indonesian is in TyDiQA, but not in this task's languages: its file decides.
    root = tmp_path / "data"
    (root / "tydiqa").mkdir(parents=True)
    for split in ("train", "dev"):
        source = FIXTURES / "tydiqa" / f"tydiqa-goldp-v1.1-{split}"
        (root / "tydiqa" / source.name).symlink_to(source)
    task = tydiqa(eval_languages=["en", "id"], root=root, languages=["en", "ar"])
    assert len(task.language_records("id")) == 2


def test_an_unlabeled_file_is_refused(tmp_path):
    folder = tmp_path / "tydiqa" / "tydiqa-goldp-v1.1-dev"
    folder.mkdir(parents=True)
    doc = json.loads((FIXTURES / "tydiqa" / folder.name / "tydiqa.goldp.sw.dev.json").read_text())
    for article in doc["data"]:
        for qa in article["paragraphs"][0]["qas"]:
            qa["answers"] = []
    (folder / "tydiqa.goldp.sw.dev.json").write_text(json.dumps(doc))
    task = tydiqa(eval_languages=["sw"], root=tmp_path)
    with pytest.raises(DataFormatError, match="is unlabeled: none of its 4 questions"):
        task.language_records("sw")


def test_a_copy_with_blanked_answers_names_xtreme_as_the_cause(tmp_path):
    # XTREME's download keeps every answer entry but empties its text.
    folder = tmp_path / "tydiqa" / "tydiqa-goldp-v1.1-dev"
    folder.mkdir(parents=True)
    doc = json.loads((FIXTURES / "tydiqa" / folder.name / "tydiqa.goldp.sw.dev.json").read_text())
    for article in doc["data"]:
        for qa in article["paragraphs"][0]["qas"]:
            qa["answers"] = [{"text": "", "answer_start": -1}]
    (folder / "tydiqa.goldp.sw.dev.json").write_text(json.dumps(doc))
    task = tydiqa(eval_languages=["sw"], root=tmp_path)
    with pytest.raises(DataFormatError) as info:
        task.language_records("sw")
    message = str(info.value)
    assert "answers blanked" in message and "each of its 4 questions" in message
    assert "XTREME's download script" in message and "tydiqa-goldp-v1.1-dev.tgz" in message


def test_the_mlqa_metric_refuses_languages_it_cannot_normalise_before_training():
    with pytest.raises(ConfigError, match=r"task\.metric=mlqa .* not fi, sw"):
        tydiqa(eval_languages=["en", "fi", "sw"], metric="mlqa")


def test_file_tasks_refuse_the_hub():
    settings = DataSettings(source="hub", root="", source_language="en", eval_languages=["en"])
    params = preset("qa_files")
    with pytest.raises(ConfigError, match="data=local"):
        create_task(params.pop("name"), settings, **params)


# -- pair_tsv -----------------------------------------------------------------------------

HEADER = ["pair_id", "premise", "hypothesis", "gold"]


def write_tsv(path: Path, rows: list[list[str]], header=HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


COLUMNS = {"id": "pair_id", "sentence1": "premise", "sentence2": "hypothesis", "label": "gold"}


def test_pair_tsv_reads_configured_columns_and_label_names(tmp_path):
    path = write_tsv(
        tmp_path / "nli.tsv",
        [["a1", "It rains.", "The street is wet.", "entailment"], ["a2", "Hi", "Bye", "neutral"]],
    )
    rows = read_pair_tsv(
        path, columns=COLUMNS, num_labels=3, label_names=["entailment", "neutral", "contra"]
    )
    assert rows == [
        {"id": "a1", "sentence1": "It rains.", "sentence2": "The street is wet.", "label": 0},
        {"id": "a2", "sentence1": "Hi", "sentence2": "Bye", "label": 1},
    ]


def test_pair_tsv_without_an_id_column_numbers_the_rows(tmp_path):
    path = write_tsv(tmp_path / "p.tsv", [["x", "y", "1"], ["u", "v", "0"]], header=HEADER[1:])
    rows = read_pair_tsv(path, columns=COLUMNS, num_labels=2)
    assert [(r["id"], r["label"]) for r in rows] == [("0", 1), ("1", 0)]


def test_pair_tsv_without_the_configured_columns_is_one_paragraph(tmp_path):
    path = write_tsv(tmp_path / "p.tsv", [["1", "x", "y", "1"]], header=["id", "s1", "s2", "gold"])
    with pytest.raises(DataFormatError) as info:
        read_pair_tsv(path, columns={"label": "gold"}, num_labels=2)
    message = str(info.value)
    assert "sentence1 -> 'sentence1'" in message and "sentence2 -> 'sentence2'" in message
    assert "['id', 's1', 's2', 'gold']" in message and "task.columns.sentence1=" in message
    assert "\n" not in message


def test_pair_tsv_labels_outside_the_classes_are_refused(tmp_path):
    path = write_tsv(tmp_path / "p.tsv", [["1", "x", "y", "2"]])
    with pytest.raises(DataFormatError, match=r"label '2' is not a class index 0\.\.1"):
        read_pair_tsv(path, columns=COLUMNS, num_labels=2)


def test_pair_tsv_task_pools_and_scores(tmp_path):
    rows = [[f"r{i}", f"first {i}", f"second {i}", str(i % 2)] for i in range(10)]
    for lang in ("en", "de"):
        write_tsv(tmp_path / "pairs" / f"train.{lang}.tsv", rows)
        write_tsv(tmp_path / "pairs" / f"dev.{lang}.tsv", rows)
    settings = DataSettings(
        source="local", root=str(tmp_path), source_language="en", eval_languages=["de"]
    )
    params = {**preset("pair_tsv"), "name": "mypairs", "columns": COLUMNS}
    task = create_task(params.pop("name"), settings, **params)
    assert task.kind == "classification" and task.name == "mypairs"
    assert [r["id"] for r in task.source_pool()][:2] == ["train-r0", "train-r1"]
    records = task.evaluation_records("de")
    predictions = {r["id"]: 1 for r in records}
    assert task.score(predictions, records, "de") == {
        "accuracy": 50.0,
        "majority_class": 50.0,
        "n": 10,
    }
