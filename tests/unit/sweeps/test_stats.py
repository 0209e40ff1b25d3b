"""The bootstrap over test questions (lowres.sweeps.stats), on values whose answer is known."""

from __future__ import annotations

import math

import pytest

from lowres.sweeps.stats import bootstrap_mean, paired_bootstrap


def test_equal_scores_leave_nothing_to_resample():
    result = bootstrap_mean([[42.0] * 50, [7.0] * 3])
    assert result["mean"] == 24.5  # the mean of the group means, not of the 53 items
    assert result["ci95_low"] == pytest.approx(24.5) and result["ci95_high"] == pytest.approx(24.5)
    assert result["items"] == [50, 3] and result["resamples"] == 1000 and result["seed"] == 0


def test_two_items_give_the_extremes_as_the_interval():
    # Resampled means of [0, 100] are 0, 50 or 100 with chances 1/4, 1/2, 1/4: the 2.5 % and
    # 97.5 % points of 1,000 resamples are 0 and 100.
    result = bootstrap_mean([[0.0, 100.0]])
    assert result["mean"] == 50.0
    assert (result["ci95_low"], result["ci95_high"]) == (0.0, 100.0)


def test_languages_are_resampled_apart_and_weigh_the_same():
    # A constant language and a [0, 2] one: (1 + {0, 1, 2}) / 2, never mixing their items.
    result = bootstrap_mean([[1.0, 1.0, 1.0], [0.0, 2.0]])
    assert result["mean"] == 1.0
    assert (result["ci95_low"], result["ci95_high"]) == (0.5, 1.5)


def test_the_interval_has_the_width_of_the_normal_theory_on_many_questions():
    values = [0.0, 100.0] * 200  # 400 questions, half right: standard error 50 / sqrt(400)
    result = bootstrap_mean([values])
    half = (result["ci95_high"] - result["ci95_low"]) / 2
    assert half == pytest.approx(1.96 * 50 / math.sqrt(400), abs=0.35)  # 4.9
    assert result["ci95_low"] < 50.0 < result["ci95_high"]


def test_the_same_seed_gives_the_same_interval_and_another_seed_another():
    values = [[float(i % 7) for i in range(60)]]
    first, again = bootstrap_mean(values, seed=3), bootstrap_mean(values, seed=3)
    other = bootstrap_mean(values, seed=4)
    assert (first["ci95_low"], first["ci95_high"]) == (again["ci95_low"], again["ci95_high"])
    assert (first["ci95_low"], first["ci95_high"]) != (other["ci95_low"], other["ci95_high"])


def test_the_pairing_is_by_question_and_cancels_what_both_find_hard():
    # B scores every question 10 below A, however hard it is: the difference never varies.
    a = {"sw": {"q1": 90.0, "q2": 10.0, "q3": 50.0}, "te": {"t1": 30.0}}
    b = {"sw": {"q3": 40.0, "q1": 80.0, "q2": 0.0}, "te": {"t1": 20.0, "t2": 5.0}}
    result = paired_bootstrap(a, b)
    assert result["mean"] == 10.0 and result["items"] == [3, 1]  # t2: B's alone, not paired
    assert result["ci95_low"] == pytest.approx(10.0) and result["ci95_high"] == pytest.approx(10.0)
    # Unpaired, the same scores would vary with the questions drawn.
    assert bootstrap_mean([list(a["sw"].values())])["ci95_high"] > 60.0
    assert paired_bootstrap({"sw": {"q1": 1.0}}, {"te": {"q1": 1.0}}) is None


def test_an_empty_group_is_refused():
    with pytest.raises(ValueError, match="an item in every group"):
        bootstrap_mean([[1.0], []])
