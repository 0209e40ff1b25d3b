"""Pseudo-data transfer: self-training on a teacher's confident labels, and translate-train."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from helpers import pooled_sample_task

from lowres.errors import ConfigError, DataFormatError
from lowres.recipes.pseudo import keep_confident, resolve_files, unlabelled
from lowres.tasks.qa import decode_answers


def test_qa_confidence_is_the_span_softmax_over_all_candidates():
    records = [
        {"id": "a", "context": "abc def ghi", "question": "q"},
        {"id": "b", "context": "xyz", "question": "q"},
    ]
    meta = [
        {"record": 0, "offsets": [None, (0, 3), (4, 7), (8, 11), None]},
        {"record": 0, "offsets": [None, (8, 11)]},  # a second window of the same question
        {"record": 1, "offsets": [None, None]},  # no context token: no valid span
    ]
    start = [np.array([9.0, 2, 1, 0, 9]), np.array([0.0, 1]), np.array([5.0, 5])]
    end = [np.array([9.0, 0, 1, 3, 9]), np.array([0.0, 1]), np.array([5.0, 5])]
    answers, details = decode_answers(records, meta, start, end, n_best=5, return_scores=True)
    # valid spans of window 1: (1,1)=2 (1,2)=3 (1,3)=5 (2,2)=2 (2,3)=4 (3,3)=3; window 2: 2
    scores = [2, 3, 5, 2, 4, 3, 2]
    assert answers == {"a": "abc def ghi", "b": ""}
    assert details["a"]["answer_start"] == 0
    assert details["a"]["confidence"] == pytest.approx(math.exp(5) / sum(map(math.exp, scores)))
    assert details["b"]["confidence"] == 0.0
    # without scores the answers are what evaluation always got
    assert decode_answers(records, meta, start, end, n_best=5) == answers

    # answers of at most 2 tokens: (1,3) is no longer a candidate
    answers, details = decode_answers(
        records, meta, start, end, n_best=5, max_answer_length=2, return_scores=True
    )
    scores = [2, 3, 2, 4, 3, 2]
    assert answers["a"] == "def ghi" and details["a"]["answer_start"] == 4
    assert details["a"]["confidence"] == pytest.approx(math.exp(4) / sum(map(math.exp, scores)))


def test_pawsx_confidence_is_the_largest_class_probability():
    task = pooled_sample_task("pawsx", max_length=128)
    records = [{"id": "r0"}, {"id": "r1"}, {"id": "r2"}]
    logits = np.array([[2.0, 0.0], [0.0, 0.0], [-1.0, 3.0]])
    labels, details = task.predictions(records, None, {"logits": logits}, return_scores=True)
    assert labels == {"r0": 0, "r1": 0, "r2": 1}
    assert details["r0"]["confidence"] == pytest.approx(1 / (1 + math.exp(-2)))
    assert details["r1"]["confidence"] == pytest.approx(0.5)
    assert details["r2"]["confidence"] == pytest.approx(1 / (1 + math.exp(-4)))
    assert task.predictions(records, None, {"logits": logits}) == labels


def test_keep_confident_keeps_exactly_the_records_above_the_threshold():
    labelled = [({"id": str(i)}, c) for i, c in enumerate([0.2, 0.5, 0.51, 0.95, 1.0, 0.7])]
    labelled.append((None, 0.99))  # the teacher gave no usable label: never kept
    kept = keep_confident(labelled, threshold=0.5)
    assert [(r["id"], c) for r, c in kept] == [("2", 0.51), ("3", 0.95), ("4", 1.0), ("5", 0.7)]
    # the cap keeps the most confident ones, in input order
    kept = keep_confident(labelled, threshold=0.5, max_examples=2)
    assert [r["id"] for r, _ in kept] == ["3", "4"]
    assert keep_confident(labelled, threshold=1.0) == []
    assert len(keep_confident(labelled, threshold=0.0)) == 6


def test_the_teacher_never_sees_gold_labels():
    records = [{"id": "1", "sentence1": "a", "sentence2": "b", "label": 1, "language": "de"}]
    assert unlabelled(records) == [
        {"id": "1", "sentence1": "a", "sentence2": "b", "language": "de"}
    ]
    assert records[0]["label"] == 1


def test_translate_file_settings_are_checked():
    languages = {"task_languages": ["en", "de", "fr"], "source_language": "en"}
    with pytest.raises(ConfigError, match=r"without \{lang\}"):
        resolve_files("data/train.tsv", ["de"], **languages)
    with pytest.raises(ConfigError, match="'xx'"):
        resolve_files({"xx": "a.tsv"}, ["de"], **languages)
    with pytest.raises(ConfigError, match="needs pseudo.files"):
        resolve_files("", ["de"], **languages)
    assert resolve_files("d/{lang}.tsv", ["de", "fr"], **languages) == {
        "de": Path("d/de.tsv"),
        "fr": Path("d/fr.tsv"),
    }


def test_missing_translate_file_names_the_path(tmp_path):
    from lowres.recipes.pseudo import read_translated

    with pytest.raises(ConfigError, match="nowhere.json") as info:
        read_translated("extractive_qa", "de", tmp_path / "nowhere.json")
    assert "SQuAD v1.1 JSON" in str(info.value)
    truncated = tmp_path / "de.json"
    truncated.write_text('{"data": [')
    with pytest.raises(DataFormatError, match="truncated"):
        read_translated("extractive_qa", "de", truncated)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("pseudo.threshold=1.5", "pseudo.threshold"),
        ("pseudo.kind=magic", "pseudo.kind"),
        ("pseudo.max_examples=-1", "pseudo.max_examples"),
    ],
)
def test_bad_pseudo_values_name_the_key(override, key):
    from hydra import compose, initialize_config_dir

    from lowres.schema import config_dir, register_schemas, validate

    register_schemas()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["+task=pawsx", "pseudo=self_train", override])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg)
