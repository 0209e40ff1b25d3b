"""Source dev: whole articles of the source pool held out of training, scored after it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lowres.errors import ConfigError
from lowres.schema import config_dir
from lowres.tasks import DataSettings, create_task
from lowres.tasks.base import article_of

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def tydiqa_task(**settings):
    params = yaml.safe_load((config_dir() / "task" / "tydiqa.yaml").read_text())
    params.pop("defaults")
    data = DataSettings(
        source="local",
        root=str(FIXTURES / "tydiqa_release"),
        source_language="en",
        eval_languages=["sw"],
        **settings,
    )
    return create_task(params.pop("name"), data, **params)


def test_source_dev_holds_out_whole_articles_the_same_for_every_seed():
    split = tydiqa_task(source_dev_articles=2, seed=1).split()
    titles = {article_of(r) for r in split.source_dev}
    assert len(titles) == 2 and split.source_dev
    assert not titles & {article_of(r) for r in split.train}
    pool = tydiqa_task().source_pool()
    assert len(split.train) + len(split.source_dev) == len(pool)  # nothing else is dropped
    other_seed = tydiqa_task(source_dev_articles=2, seed=7).split()
    assert [r["id"] for r in other_seed.source_dev] == [r["id"] for r in split.source_dev]
    assert split.record()["source_dev"] == [r["id"] for r in split.source_dev]


def test_a_sample_of_source_dev_keeps_its_articles_out_of_training():
    full = tydiqa_task(source_dev_articles=3).split()
    sampled = tydiqa_task(source_dev_articles=3, source_dev_examples=2).split()
    assert len(sampled.source_dev) == 2
    assert {r["id"] for r in sampled.source_dev} <= {r["id"] for r in full.source_dev}
    assert [r["id"] for r in sampled.train] == [r["id"] for r in full.train]


def test_holding_out_every_article_is_refused():
    with pytest.raises(ConfigError, match="would hold out every article"):
        tydiqa_task(source_dev_articles=99).split()


def test_squad_source_dev_has_no_xquad_question(shared_data):
    settings = DataSettings(
        source="local",
        root=str(shared_data),
        source_language="en",
        eval_languages=["de"],
        source_dev_articles=5,
        source_split="dev_minus_xquad",
    )
    task = create_task("xquad", settings)
    split = task.split()
    xquad_ids = {r["id"] for r in task.language_records("en")}
    dev_titles = {r["title"] for r in split.source_dev}
    assert len(dev_titles) == 5 and len(split.source_dev) > 500
    assert not {r["id"] for r in split.source_dev} & xquad_ids
    assert not dev_titles & {r["title"] for r in split.train}
    assert len(split.train) + len(split.source_dev) == 9380  # SQuAD dev minus XQuAD's 1190
