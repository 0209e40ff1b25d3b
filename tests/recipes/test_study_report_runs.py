"""``lowres study report`` scores each kept prediction again against the data (the TyDiQA
release fixture) for its intervals over test questions; no training."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml
from helpers import run_lowres

from lowres.sweeps.stats import bootstrap_mean, paired_bootstrap

RELEASE = Path(__file__).resolve().parents[1] / "fixtures" / "tydiqa_release"
# The fixture's four Swahili questions, and what each method answered (its F1 beside it).
ANSWERS = {
    "full": {
        "swahili-7301958312846-0": ("Bahari ya Hindi", 100.0),
        "swahili-7301958312846-1": ("Mji", 100 * 2 / 3),
        "swahili-7301958312943-0": ("Dodoma", 0.0),
        "swahili-7301958312943-1": ("1984", 0.0),
    },
    "prompt_align": {
        "swahili-7301958312846-0": ("Bahari ya Hindi", 100.0),
        "swahili-7301958312846-1": ("Mji Mkongwe", 100.0),
        "swahili-7301958312943-0": ("Dodoma", 0.0),
        "swahili-7301958312943-1": ("1985", 100.0),
    },
}


def write_study(tmp_path: Path, recorded_f1: float | None = None) -> Path:
    results = tmp_path / "results"
    for method, answers in ANSWERS.items():
        for seed in (1, 2):
            run = results / "zeroshot" / "tydiqa" / method / f"seed{seed}"
            (run / "predictions").mkdir(parents=True)
            predictions = {q: text for q, (text, _) in answers.items()}
            (run / "predictions" / "sw.json").write_text(json.dumps(predictions))
            f1 = statistics.fmean(score for _, score in answers.values())
            scores = {"f1": recorded_f1 or f1, "exact_match": 0.0, "n": 4}
            (run / "metrics.json").write_text(json.dumps({"per_language": {"sw": scores}}))
    spec = {
        "name": "rescored",
        "results": str(results),
        "work": str(tmp_path / "work"),
        "backbone": "tiny-bert",
        "common": ["data=local", f"data.root={RELEASE}"],
        "methods": {"full": {}, "prompt_align": {}},
        "source_seeds": [1, 2],
        "stage2_seeds": [1],
        "k": [8],
        "tasks": {"tydiqa": {"zero_shot": ["sw"]}},
        "primary": [["prompt_align", "full", 0, "tydiqa"]],
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_the_report_rescores_the_kept_predictions_for_its_question_intervals(tmp_path):
    run_lowres("study", "report", str(write_study(tmp_path)))
    record = json.loads((tmp_path / "results" / "report" / "report.json").read_text())
    f1 = {m: [score for _, score in answers.values()] for m, answers in ANSWERS.items()}
    cells = {(c["method"], c["language"]): c["questions"] for c in record["cells"]}
    expected = bootstrap_mean([f1["full"]])
    for key in ("mean", "ci95_low", "ci95_high"):
        assert cells["full", "sw"][key] == pytest.approx(expected[key], abs=1e-9)
    assert cells["full", "sw"]["mean"] == pytest.approx(100 * (1 + 2 / 3) / 4)
    (primary,) = record["primary"]
    by_question = {m: {"sw": dict(zip(ANSWERS[m], f1[m], strict=True))} for m in ANSWERS}
    expected = paired_bootstrap(by_question["prompt_align"], by_question["full"])
    for key in ("mean", "ci95_low", "ci95_high"):  # 100 * 2/3 rounds either way in the last bit
        assert primary["questions"][key] == pytest.approx(expected[key], abs=1e-9)
    assert primary["questions"]["items"] == [4]
    assert primary["questions"]["mean"] == pytest.approx(100 * (1 / 3 + 1) / 4)
    text = (tmp_path / "results" / "report" / "report.md").read_text()
    assert "95 % CI, questions" in text and "q[" in text


def test_no_questions_leaves_the_data_alone_and_other_data_is_refused(tmp_path, capsys):
    path = write_study(tmp_path, recorded_f1=75.0)  # not what these predictions score
    run_lowres("study", "report", str(path), "--no-questions")
    assert "q[" not in (tmp_path / "results" / "report" / "report.md").read_text()
    with pytest.raises(SystemExit) as exit_info:
        run_lowres("study", "report", str(path))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "the data under data.root is not what the run was scored on" in error
    assert "--no-questions" in error
