"""``lowres study report``'s intervals over test questions, beside those over source seeds, on
hand-made results whose per-question scores are known."""

from __future__ import annotations

import json
import statistics

import pytest
from helpers import write_study_spec

from lowres.errors import LowresError
from lowres.sweeps import study
from lowres.sweeps.stats import bootstrap_mean, paired_bootstrap

QUESTIONS = {"sw": ["s1", "s2", "s3", "s4"], "te": ["t1", "t2", "t3"]}


spec_in = write_study_spec


def put(folder, scores: dict[str, dict[str, float]], gzipped: bool = False) -> None:
    """A kept run: metrics.json and its predictions; a prediction's text is the F1 the fake
    scorer gives it, and metrics.json holds their mean, as a real run's would."""
    (folder / "predictions").mkdir(parents=True)
    per_language = {}
    for lang, by_question in scores.items():
        answers = {q: str(f1) for q, f1 in by_question.items()}
        if gzipped:
            import gzip

            with gzip.open(folder / "predictions" / f"{lang}.json.gz", "wt") as f:
                json.dump(answers, f)
        else:
            (folder / "predictions" / f"{lang}.json").write_text(json.dumps(answers))
        f1 = statistics.fmean(by_question.values())
        per_language[lang] = {"f1": f1, "exact_match": 0.0, "n": len(by_question)}
    (folder / "metrics.json").write_text(json.dumps({"per_language": per_language}))


def fake_scorer(calls: list):
    def score(task, lang, predictions):
        calls.append((task, lang))
        return {q: float(text) for q, text in predictions.items()}

    return score


def question_scores(lang: str, base: float, step: float) -> dict[str, float]:
    return {q: base + step * i for i, q in enumerate(QUESTIONS[lang])}


@pytest.fixture
def results(tmp_path):
    """Full fine-tuning's questions get harder in order; the paper's method scores every
    question 3 F1 higher on every source seed, while the seeds move both by 0, 2, 4."""
    results = tmp_path / "results"
    for seed in (1, 2, 3):
        shift = 2.0 * (seed - 1)
        for method, lead in (("full", 0.0), ("prompt_align", 3.0)):
            put(
                results / f"zeroshot/tydiqa/{method}/seed{seed}",
                {
                    "sw": question_scores("sw", 60.0 + shift + lead, -10.0),
                    "te": question_scores("te", 40.0 + shift + lead, -5.0),
                },
                gzipped=method == "full",  # as results/study_me5/ keeps them
            )
            for s2, noise in ((1, -1.0), (2, 1.0)):  # stage-2 seeds: each question -1 and +1
                put(
                    results / f"fewshot/tydiqa/sw/{method}/seed{seed}/k8/s{s2}",
                    {"sw": question_scores("sw", 50.0 + noise + lead * seed, -4.0)},
                )
    return results


def test_each_cell_and_comparison_gets_an_interval_over_the_questions(tmp_path, results):
    spec = spec_in(tmp_path)
    calls: list = []
    record = study.report(spec, scorer=fake_scorer(calls))
    assert ("tydiqa", "te") in calls and ("tydiqa", "sw") in calls
    cells = {(c["method"], c["k"], c["language"]): c for c in record["cells"]}
    # Over the seeds each question averages to its seed-2 score: sw 62, 52, 42, 32 for full.
    full_sw = cells["full", 0, "sw"]["questions"]
    assert full_sw == bootstrap_mean([[62.0, 52.0, 42.0, 32.0]])
    assert full_sw["mean"] == 47.0 and full_sw["items"] == [4]
    assert cells["full", 0, "sw"]["mean"] == 47.0  # the seeds' mean, the same number
    # Few-shot: each question's stage-2 seeds averaged first (-1 and +1 cancel).
    assert cells["full", 8, "sw"]["questions"] == bootstrap_mean([[50.0, 46.0, 42.0, 38.0]])
    averages = {(a["method"], a["k"]): a for a in record["averages"]}
    both = averages["full", 0]["questions"]
    assert both == bootstrap_mean([[62.0, 52.0, 42.0, 32.0], [42.0, 37.0, 32.0]])
    assert both["items"] == [4, 3]  # the languages resampled apart

    zero, few = record["primary"]
    # The same +3 on every question: nothing varies with the questions, while the seeds'
    # interval is the t-interval over three identical differences (also +3, zero width).
    assert zero["questions"]["mean"] == pytest.approx(3.0)
    assert zero["questions"]["ci95_low"] == pytest.approx(3.0)
    assert zero["questions"]["ci95_high"] == pytest.approx(3.0)
    # k = 8: the lead is 3 x the source seed (3, 6, 9), the same on every question.
    assert few["mean_difference"] == pytest.approx(6.0)
    assert few["ci95_low"] < 0.0  # the seeds disagree: wide, t with 2 degrees of freedom
    assert few["questions"] == paired_bootstrap(
        {"sw": {q: 56.0 - 4.0 * i for i, q in enumerate(QUESTIONS["sw"])}},
        {"sw": {q: 50.0 - 4.0 * i for i, q in enumerate(QUESTIONS["sw"])}},
    )
    assert few["questions"]["ci95_low"] == pytest.approx(6.0)
    assert few["questions"]["ci95_high"] == pytest.approx(6.0)

    text = (tmp_path / "results" / "report" / "report.md").read_text()
    assert "| full | 47.0 [" in text and "q[" in text
    assert "a bootstrap of 1,000 resamples (seed 0)" in text
    assert "| 95 % CI, source seeds | 95 % CI, questions |" in text
    assert "the interval varies the source seed" in text
    assert record["questions_interval_varies"].startswith("test questions")


def test_without_a_scorer_the_report_has_the_seed_intervals_alone(tmp_path, results):
    record = study.report(spec_in(tmp_path))
    assert all(c["questions"] is None for c in record["cells"])
    assert "questions" not in record["primary"][0]
    text = (tmp_path / "results" / "report" / "report.md").read_text()
    assert "q[" not in text and record["questions_interval_varies"] is None


def test_predictions_that_do_not_score_what_the_run_recorded_are_refused(tmp_path, results):
    def other_data(task, lang, predictions):  # as if data.root held another version
        return {q: float(text) + 1.0 for q, text in predictions.items()}

    with pytest.raises(LowresError, match="not what the run was scored on"):
        study.report(spec_in(tmp_path), scorer=other_data)
