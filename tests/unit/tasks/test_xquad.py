"""XQuAD's (and MLQA's) English source pool by data.source_split."""

from __future__ import annotations

import shutil

import pytest
from helpers import write_squad

from lowres.data.roots import SAMPLE_ROOT
from lowres.data.squad_format import read_squad_json
from lowres.errors import ConfigError, LowresError
from lowres.tasks import DataSettings, create_task

PARAMS = {"max_length": 384, "stride": 128, "max_question_length": 64, "n_best": 20}
TRAIN = [
    (f"train-q{i}", f"Paragraph {i} says the answer is word{i}.", f"Answer {i}?", f"word{i}")
    for i in range(7)
]


@pytest.fixture
def root(tmp_path):
    """The sample's XQuAD and SQuAD dev, plus a small SQuAD v1.1 train file."""
    shutil.copytree(SAMPLE_ROOT / "xquad", tmp_path / "xquad")
    shutil.copytree(SAMPLE_ROOT / "squad", tmp_path / "squad")
    shutil.copytree(SAMPLE_ROOT / "mlqa", tmp_path / "mlqa")
    write_squad(tmp_path / "squad" / "train-v1.1.json", TRAIN)
    return tmp_path


def task(root, split: str, name: str = "xquad", source: str = "local", pool_fraction=0.0):
    settings = DataSettings(
        source=source, root=str(root), source_language="en", eval_languages=["en", "de"],
        source_split=split, pool_fraction=pool_fraction,
    )  # fmt: skip
    return create_task(name, settings, **PARAMS, max_answer_length=30)


def test_train_reads_squad_train(root):
    xquad = task(root, "train")
    pool = xquad.source_pool()
    assert [r["id"] for r in pool] == [i for i, *_ in TRAIN]
    record = xquad.extra_metrics({})["protocol"]
    assert record["source_split"] == "train" and record["questions"] == 7
    assert "the standard protocol" in record["description"]


def test_dev_minus_xquad_drops_every_question_xquad_translates(root):
    dev = read_squad_json(root / "squad" / "dev-v1.1.json")
    xquad_ids = {r["id"] for r in read_squad_json(root / "xquad" / "xquad.en.json")}
    expected = [r["id"] for r in dev if r["id"] not in xquad_ids]
    pool = task(root, "dev_minus_xquad").source_pool()
    assert [r["id"] for r in pool] == expected and len(expected) > 200
    # all of dev keeps them
    assert len(task(root, "dev").source_pool()) == len(dev)


def test_mlqa_trains_on_the_same_pools(root):
    for split in ("train", "dev_minus_xquad"):
        mlqa = task(root, split, name="mlqa")
        pool = [r["id"] for r in mlqa.source_pool()]
        assert pool == [r["id"] for r in task(root, split).source_pool()]
        assert mlqa.extra_metrics({})["protocol"]["source_split"] == split


def test_train_without_the_file_says_where_to_get_it():
    with pytest.raises(LowresError, match=r"train-v1\.1\.json.*only a dev excerpt.*data=hub"):
        task(SAMPLE_ROOT, "train", source="sample").source_pool()


def test_dev_minus_xquad_without_xquad_names_the_alternatives(root):
    (root / "xquad" / "xquad.en.json").unlink()
    with pytest.raises(LowresError, match=r"xquad\.en\.json.*data\.source_split=train"):
        task(root, "dev_minus_xquad", name="mlqa").source_pool()


def test_an_unknown_split_is_refused(root):
    with pytest.raises(ConfigError, match="data.source_split='test'"):
        task(root, "test").source_pool()


def shots_task(root, *, use_source_pool: bool):
    settings = DataSettings(
        source="local", root=str(root), source_language="en", eval_languages=["en", "de"],
        source_split="dev_minus_xquad", k=4, pool_fraction=0.5, use_source_pool=use_source_pool,
    )  # fmt: skip
    return create_task("xquad", settings, **PARAMS, max_answer_length=30)


def test_stage_two_takes_source_language_shots_from_its_own_target_pool(root):
    # Stage 2 (source pool off): English is a target like German, k from each one's pool.
    stage2 = shots_task(root, use_source_pool=False)
    train = stage2.split().train
    english = [r["id"] for r in stage2.k_shot("en", 4)]
    german = [r["id"] for r in stage2.k_shot("de", 4)]
    assert [r["id"] for r in train] == english + german
    assert {r["language"] for r in train} == {"en", "de"}
    # Those English questions are held out of evaluation and were never in the source pool.
    assert not set(english) & {r["id"] for r in stage2.evaluation_sets()["en"]}
    assert not set(english) & {r["id"] for r in stage2.source_pool()}
    # With the source pool on, English already has its labelled data: only German shots join.
    joint = shots_task(root, use_source_pool=True).split().train
    shots = [r["id"] for r in joint if r["id"] in set(english) | set(german)]
    assert shots == german


def test_alignment_with_only_its_source_language_names_the_cause(root):
    # A sweep's cell evaluated on English alone: unset align.target_languages fall back to
    # the eval languages, so the alignment would pair English with itself.
    with pytest.raises(ConfigError, match=r"no target language.*align\.target_languages"):
        task(root, "train", pool_fraction=0.2).split(align_languages=["en"], align_source="en")
    split = task(root, "train", pool_fraction=0.2).split(
        align_languages=["en", "de"], align_source="en"
    )
    assert split.parallel and {t["language"] for _, t in split.parallel} == {"de"}
