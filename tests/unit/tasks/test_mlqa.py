"""MLQA on the real dev files: XLT/G-XLT records, the cross-lingual protocol, the CLI end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from lowres.data.mlqa_files import MLQA_LANGUAGES
from lowres.data.roots import SAMPLE_ROOT
from lowres.data.squad_format import read_squad_json
from lowres.errors import ConfigError
from lowres.tasks import DataSettings, create_task

PARAMS = {
    "split": "dev",
    "question_languages": [],
    "max_length": 384,
    "stride": 128,
    "max_question_length": 64,
    "n_best": 20,
    "max_answer_length": 30,
}


XLT_COUNTS = {"en": 1148, "de": 512, "es": 500, "ar": 517, "hi": 507, "vi": 511, "zh": 504}


def mlqa(root: Path, source: str = "local", question_languages=(), **settings):
    base = {"source_language": "en", "eval_languages": list(MLQA_LANGUAGES), "pool_fraction": 0.2}
    return create_task(
        "mlqa",
        DataSettings(source=source, root=str(root), **{**base, **settings}),
        **{**PARAMS, "question_languages": list(question_languages)},
    )


def test_xlt_records_per_language_match_the_release(shared_data):
    task = mlqa(shared_data)
    counts = {lang: len(task.language_records(lang)) for lang in MLQA_LANGUAGES}
    assert counts == XLT_COUNTS
    de = task.language_records("de")
    assert {r["language"] for r in de} == {"de"}
    assert all(
        r["context"][s : s + len(t)] == t
        for r in de
        for t, s in zip(r["answers"]["text"], r["answers"]["answer_start"], strict=True)
    )


def test_source_pool_is_english_squad_and_shares_no_id_with_mlqa(shared_data):
    task = mlqa(shared_data)
    pool = task.source_pool()
    mlqa_ids = {r["id"] for lang in MLQA_LANGUAGES for r in task.language_records(lang)}
    # The offline default (data.source_split=dev_minus_xquad) drops XQuAD's 1190 questions;
    # MLQA and SQuAD v1.1 dev share no id, so all of dev keeps SQuAD's 10,570.
    assert len(pool) == 9380
    assert len(mlqa(shared_data, source_split="dev").source_pool()) == 10570
    assert not {r["id"] for r in pool} & mlqa_ids
    assert {r["language"] for r in pool} == {"en"}


def test_pool_and_evaluation_are_disjoint_by_id_and_paragraph(shared_data):
    task = mlqa(shared_data, k=16)
    split = task.split()
    evaluated = {r["id"] for records in split.evaluation.values() for r in records}
    pooled = {r["id"] for lang in MLQA_LANGUAGES for r in task.target_pool(lang)}
    assert not {r["id"] for r in split.train} & evaluated
    # A question pooled in any language is evaluated in none (ids link translations).
    assert not pooled & evaluated
    for lang in MLQA_LANGUAGES:
        pool, evaluation = task.target_pool(lang), split.evaluation[lang]
        assert len(pool) + len(evaluation) == XLT_COUNTS[lang]
        assert 0.1 < len(pool) / XLT_COUNTS[lang] < 0.3
        assert not {r["context"] for r in pool} & {r["context"] for r in evaluation}
    shots = [r for r in split.train if r["language"] != "en"]
    assert len(shots) == 16 * 6
    assert len(split.train) == 9380 + 16 * 6


def test_k_shot_samples_are_nested_and_seeded(shared_data):
    small = mlqa(shared_data, k=8).k_shot("de", 8)
    large = mlqa(shared_data, k=32).k_shot("de", 32)
    other = mlqa(shared_data, k=8, seed=7).k_shot("de", 8)
    assert [r["id"] for r in large[:8]] == [r["id"] for r in small]
    assert {r["id"] for r in other} != {r["id"] for r in small}


def test_parallel_pairs_share_ids_and_differ_in_language(shared_data):
    task = mlqa(shared_data, eval_languages=["en", "de", "zh"])
    split = task.split(align_languages=["de", "zh"], align_source="en")
    assert len(split.parallel) == len(task.target_pool("de")) + len(task.target_pool("zh"))
    english_eval = {r["id"] for r in split.evaluation["en"]}
    for source, target in split.parallel:
        assert source["id"] == target["id"]
        assert source["language"] == "en" and target["language"] in {"de", "zh"}
        assert source["question"] != target["question"]
        assert source["id"] not in english_eval  # its English version is pooled too
    assert {t["language"] for _, t in split.parallel} == {"de", "zh"}


def test_gxlt_split_has_every_context_question_pair(shared_data):
    task = mlqa(shared_data, question_languages=["en", "de"], eval_languages=["de", "zh"], k=4)
    split = task.split()
    assert list(split.evaluation) == ["de-en", "de-de", "zh-en", "zh-de"]
    files = {
        (c, q): read_squad_json(
            shared_data / "mlqa" / "MLQA_V1" / "dev" / f"dev-context-{c}-question-{q}.json"
        )
        for c, q in [("de", "en"), ("de", "de"), ("zh", "en"), ("zh", "de")]
    }
    assert {k: len(v) for k, v in files.items()} == {
        ("de", "en"): 512,
        ("de", "de"): 512,
        ("zh", "en"): 504,
        ("zh", "de"): 190,
    }
    pooled = {r["id"] for lang in MLQA_LANGUAGES for r in task.target_pool(lang)}
    trained = {r["id"] for r in split.train}
    contexts_trained = {r["context"] for r in split.train}
    xlt = {lang: {r["id"]: r for r in task.language_records(lang)} for lang in ("de", "zh", "en")}
    for key, records in split.evaluation.items():
        context, question = key.split("-")
        assert [r["id"] for r in records] == [
            r["id"] for r in files[context, question] if r["id"] not in pooled
        ]
        assert not {r["id"] for r in records} & trained
        assert not {r["context"] for r in records} & contexts_trained
        for r in records:  # context (and answers) of the context language, question of the other
            assert r["context"] == xlt[context][r["id"]]["context"]
            assert r["question"] == xlt[question][r["id"]]["question"]
            assert r["group"] == xlt[context][r["id"]]["group"]
    assert {r["language"] for r in split.evaluation["zh-de"]} == {"zh-de"}


def test_gxlt_scores_with_the_context_language_rules(shared_data):
    task = mlqa(shared_data, question_languages=["en"], eval_languages=["zh"])
    records = [
        r
        for r in task.split().evaluation["zh-en"]
        if len(r["answers"]["text"][0]) > 3 and r["answers"]["text"][0][-1].isalnum()
    ]
    gold = {r["id"]: r["answers"]["text"][0] for r in records}
    assert task.score(gold, records, "zh-en")["exact_match"] == 100.0
    clipped = {qid: text[:-1] for qid, text in gold.items()}  # last character cut off
    chinese = task.score(clipped, records, "zh-en")
    # Chinese rules split answers into characters, so a clipped answer still mostly overlaps;
    # the English rules read an unspaced Chinese answer as one token, which then never matches.
    assert chinese["exact_match"] == 0.0 and chinese["f1"] > 60
    assert task.score(clipped, records, "en-zh")["f1"] < 10
    assert chinese["n"] == len(records) > 100


def test_unknown_languages_and_splits_are_refused(shared_data):
    with pytest.raises(ConfigError, match="question_languages"):
        mlqa(shared_data, question_languages=["fr"])
    with pytest.raises(ConfigError, match="task.split"):
        create_task(
            "mlqa",
            DataSettings("local", str(shared_data), "en", ["de"]),
            **{**PARAMS, "split": "train"},
        )


def test_sample_holds_real_rows_for_every_language():
    task = mlqa(SAMPLE_ROOT, source="sample", pool_fraction=0.0)
    counts = {lang: len(task.language_records(lang)) for lang in MLQA_LANGUAGES}
    assert min(counts.values()) >= 20
    assert sum(p.stat().st_size for p in (SAMPLE_ROOT / "mlqa").rglob("*.json")) < 400_000
    # MLQA shares no id with SQuAD, so the whole shipped SQuAD sample is the source pool
    assert len(task.source_pool()) == len(read_squad_json(SAMPLE_ROOT / "squad" / "dev-v1.1.json"))
