"""PAWS-X on the real files: both layouts, NS rows, stratified nested k-shot, the CLI end to end."""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_backbone, write_official

from lowres.data.pawsx_format import read_pawsx_tsv
from lowres.data.roots import SAMPLE_ROOT
from lowres.errors import ConfigError, LowresError
from lowres.tasks import DataSettings, create_task
from lowres.tasks.pawsx import PAWSX_LANGUAGES

NS_ROWS = {"en": 0, "de": 68, "es": 38, "fr": 8, "ja": 20, "ko": 35, "zh": 16}


def pawsx(root: Path, source: str = "local", split: str = "dev", **settings):
    base = {
        "source_language": "en",
        "eval_languages": list(PAWSX_LANGUAGES),
        "pool_fraction": 0.2,
    }
    return create_task(
        "pawsx",
        DataSettings(source=source, root=str(root), **{**base, **settings}),
        split=split,
        max_length=128,
        num_labels=2,
    )


@pytest.mark.parametrize("lang", PAWSX_LANGUAGES)
def test_xtreme_layout_has_2000_rows_per_language_minus_ns(shared_data, lang):
    task = pawsx(shared_data, eval_languages=[lang], source_language=lang)
    records = task.language_records(lang)
    assert task.layout() == "xtreme-dev"
    assert task.skipped == {f"dev-{lang}": NS_ROWS[lang]}
    assert len(records) == 2000 - NS_ROWS[lang]
    # ids are line indices, so row i is the translation of English row i
    assert {int(r["id"]) for r in records} <= set(range(2000))
    assert all(r["group"] == r["id"] and r["language"] == lang for r in records)


def test_official_layout_german_test_split(shared_data):
    task = pawsx(shared_data, split="test", source_language="de", eval_languages=["de"])
    records = task.language_records("de")
    assert task.layout() == "official"
    assert len(records) == 1968 and task.skipped == {"test-de": 32}
    assert records[0]["id"] == "10" and records[0]["label"] == 1
    assert Counter(r["label"] for r in records) == {0: 1073, 1: 895}


def test_missing_layout_names_every_path_looked_for(shared_data):
    task = pawsx(shared_data, split="test", eval_languages=["de"])  # no English test file
    with pytest.raises(LowresError) as error:
        task.split()
    message = str(error.value)
    for needle in ("official/en/test_2k.tsv", "x-final/de/test_2k.tsv", "xtreme-dev/test-en.tsv"):
        assert needle in message


def test_k_shot_is_stratified_nested_and_seeded(shared_data):
    task = pawsx(shared_data, k=32)
    small, large = task.k_shot("de", 8), task.k_shot("de", 32)
    assert Counter(r["label"] for r in small) == {0: 4, 1: 4}
    assert Counter(r["label"] for r in large) == {0: 16, 1: 16}
    assert [r["id"] for r in large[:8]] == [r["id"] for r in small]
    pool = {r["id"] for r in task.target_pool("de")}
    assert {r["id"] for r in large} <= pool
    again = pawsx(shared_data, k=8).k_shot("de", 8)
    other = pawsx(shared_data, k=8, seed=7).k_shot("de", 8)
    assert [r["id"] for r in again] == [r["id"] for r in small]
    assert {r["id"] for r in other} != {r["id"] for r in small}
    assert Counter(r["label"] for r in other) == {0: 4, 1: 4}


def test_pool_and_evaluation_are_disjoint_by_id_across_languages(shared_data):
    task = pawsx(shared_data, k=16)
    split = task.split()
    evaluated = {r["id"] for records in split.evaluation.values() for r in records}
    pooled = {r["id"] for lang in PAWSX_LANGUAGES for r in task.target_pool(lang)}
    assert not pooled & evaluated
    assert not {r["id"] for r in split.train} & evaluated
    for lang in PAWSX_LANGUAGES:
        assert len(task.target_pool(lang)) + len(split.evaluation[lang]) == 2000 - NS_ROWS[lang]
    # the same row is pooled in every language it exists in
    assert {r["id"] for r in task.target_pool("en")} >= {r["id"] for r in task.target_pool("ja")}


def test_source_pool_without_train_file_is_the_pooled_english_rows(shared_data):
    task = pawsx(shared_data, k=8)
    split = task.split()
    source = task.source_pool()
    assert [r["id"] for r in source] == [r["id"] for r in task.target_pool("en")]
    evaluated = {r["id"] for records in split.evaluation.values() for r in records}
    assert (
        not {r["id"] for r in source} & evaluated
    )  # no translation of a training row is evaluated
    assert len(split.train) == len(source) + 8 * 6
    with pytest.raises(ConfigError, match="data.pool_fraction"):
        pawsx(shared_data, pool_fraction=0.0).split()


def test_source_pool_reads_the_train_file_with_prefixed_ids(tmp_path):
    rows, _ = read_pawsx_tsv(SAMPLE_ROOT / "pawsx" / "xtreme-dev" / "dev-en.tsv")
    write_official(tmp_path / "pawsx" / "official" / "en" / "train.tsv", rows[:100])
    write_official(tmp_path / "pawsx" / "official" / "en" / "dev_2k.tsv", rows[100:])
    task = pawsx(tmp_path, eval_languages=["en"], pool_fraction=0.0, max_train_examples=10)
    split = task.split()
    assert task.layout() == "official"
    assert len(split.train) == 10 and Counter(r["label"] for r in split.train) == {0: 5, 1: 5}
    assert all(r["id"].startswith("train-") for r in split.train)
    assert len(split.evaluation["en"]) == 100
    assert task.skipped == {"train-en": 0, "dev-en": 0}


def test_features_predictions_and_accuracy():
    task = pawsx(SAMPLE_ROOT, source="sample", eval_languages=["de"], source_language="de")
    records = task.language_records("de")[:4]
    tokenizer = tiny_backbone(task_kind="classification").tokenizer
    features = task.train_features(records, tokenizer)
    # unpadded: each pair keeps its own length (the collator pads batches), at most 128
    assert all(
        sum(mask) == len(ids) <= 128
        for ids, mask in zip(features["input_ids"], features["attention_mask"], strict=True)
    )
    assert len({len(ids) for ids in features["input_ids"]}) > 1
    assert features["labels"] == [r["label"] for r in records]
    # both sentences are in the input, the first in segment 0 and the second in segment 1
    assert set(features["token_type_ids"][0]) == {0, 1}
    eval_features, meta = task.eval_features(records, tokenizer)
    assert "labels" not in eval_features and meta is None
    wanted = [r["label"] for r in records]
    logits = np.array([[1.0, 0.0] if label == 0 else [0.0, 1.0] for label in wanted])
    logits[0] = logits[0][::-1]  # one wrong prediction
    predictions = task.predictions(records, meta, {"logits": logits})
    assert predictions == {
        r["id"]: (1 - w if i == 0 else w)
        for i, (r, w) in enumerate(zip(records, wanted, strict=True))
    }
    majority = 100.0 * max(wanted.count(0), wanted.count(1)) / 4
    assert task.score(predictions, records, "de") == {
        "accuracy": 75.0,
        "majority_class": majority,
        "n": 4,
    }
    assert task.text_pair(records[0]) == (records[0]["sentence1"], records[0]["sentence2"])


def test_the_layout_read_and_its_files_are_recorded_with_their_sha256(tmp_path):
    """A root with the official zh file and the XTREME copy of every language reads the
    XTREME one; data_files.json says so, and names each file with its hash."""
    rows, _ = read_pawsx_tsv(SAMPLE_ROOT / "pawsx" / "xtreme-dev" / "dev-zh.tsv")
    write_official(tmp_path / "pawsx" / "official" / "zh" / "dev_2k.tsv", rows)
    xtreme = tmp_path / "pawsx" / "xtreme-dev"
    xtreme.mkdir(parents=True)
    for lang in ("en", "zh"):
        shutil.copy(SAMPLE_ROOT / "pawsx" / "xtreme-dev" / f"dev-{lang}.tsv", xtreme)
    task = pawsx(tmp_path, eval_languages=["zh"])
    task.split()
    record = task.data_record()
    assert record["pawsx_layout"] == "xtreme-dev"
    assert record["layouts_passed_over"] == {
        "official": [str(tmp_path / "pawsx" / "official" / "en" / "dev_2k.tsv")]
    }
    expected = {
        str((xtreme / f"dev-{lang}.tsv").resolve()): hashlib.sha256(
            (xtreme / f"dev-{lang}.tsv").read_bytes()
        ).hexdigest()
        for lang in ("en", "zh")
    }
    assert record["files"] == expected
