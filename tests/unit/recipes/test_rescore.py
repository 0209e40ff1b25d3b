"""Each question's score again from a run's predictions (lowres.recipes.rescore), against the
data the config names, with the task's own metric."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from lowres.errors import LowresError
from lowres.recipes.rescore import question_scorer
from lowres.schema import config_dir, register_schemas

register_schemas()
RELEASE = Path(__file__).resolve().parents[2] / "fixtures" / "tydiqa_release"


def scorer(*overrides: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return question_scorer(compose(config_name="train", overrides=list(overrides)))


def test_tydiqa_questions_are_scored_with_squad_f1_against_the_release():
    score = scorer("+task=tydiqa", "backbone=tiny-bert", "data=local", f"data.root={RELEASE}")
    predictions = {
        "swahili-7301958312846-0": "Bahari ya Hindi",  # the answer
        "swahili-7301958312846-1": "Mji",  # one of the answer's two tokens
        "swahili-7301958312943-0": "Dodoma",  # wrong
    }
    assert score("sw", predictions) == {
        "swahili-7301958312846-0": 100.0,
        "swahili-7301958312846-1": pytest.approx(100 * 2 / 3),  # precision 1, recall 1/2
        "swahili-7301958312943-0": 0.0,
    }
    with pytest.raises(LowresError, match="not tydiqa ar questions under data.root"):
        score("ar", predictions)  # Swahili ids are no Arabic questions


def test_mlqa_questions_are_scored_with_the_mlqa_normalisation_of_their_language():
    score = scorer("+task=mlqa", "backbone=tiny-bert", "data=sample")
    # Chinese answers are compared character by character: 2 of the answer's 4 characters
    # (SQuAD's whitespace tokens would give 0).
    assert score("zh", {"91ffaa60be80af84dd52f55bcc521ca24d9a6aeb": "巴斯"}) == {
        "91ffaa60be80af84dd52f55bcc521ca24d9a6aeb": pytest.approx(100 * 2 / 3)
    }
