"""scripts/study_me5.py: the me5-small study's tables, plots and pooled reports are rebuilt from
its committed results alone (the study's own engine is retired: `lowres study` runs studies)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from lowres.errors import LowresError
from lowres.runfolder import RunFolder, RunMetrics

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import study_me5  # noqa: E402

COMMITTED = REPO / "results" / "study_me5"


@pytest.fixture
def study(tmp_path, monkeypatch):
    """The study's results folder in tmp_path (the report writes there); no benchmark data,
    so no intervals over test questions (the hand-made runs have no predictions)."""
    monkeypatch.setattr(study_me5, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(study_me5, "REPO", tmp_path)
    monkeypatch.setenv("LOWRES_DATA", str(tmp_path / "no-data"))
    # main() works from REPO (os.chdir); the working folder is restored after the test, so a
    # later test reading a path relative to the checkout still finds it.
    monkeypatch.chdir(Path.cwd())


def test_the_zero_shot_tables_rebuilt_from_the_committed_runs_are_the_committed_ones(
    monkeypatch,
):
    monkeypatch.setattr(study_me5, "RESULTS", COMMITTED)
    committed = (COMMITTED / "main_tables.md").read_text()
    for task, languages, key in (
        ("xquad", study_me5.XQUAD, "f1"),
        ("mlqa", study_me5.MLQA, "f1"),
        ("pawsx", study_me5.PAWSX, "accuracy"),
    ):
        table, found = study_me5.main_table(task, languages, key)
        assert table in committed
        assert "not run yet" not in table and len(found) >= 6
    # v1's headline figures, as the study page quotes them
    xquad = study_me5.main_table("xquad", study_me5.XQUAD, "f1")[0].splitlines()
    average = {
        line.split(" | ")[0].strip("| "): line.split(" | ")[-1].strip(" |") for line in xquad
    }
    assert (average["full"], average["prompt_align (LoRA on every linear layer)"]) == (
        "54.1",
        "55.5",
    )


def test_report_tables_hold_the_kept_scores_and_mark_missing_rows(study):
    languages = study_me5.XQUAD

    def write(name: str, f1: float, trainable: int, seconds: float) -> None:
        folder = study_me5.RESULTS / "runs" / name
        folder.mkdir(parents=True)
        metrics = {
            "per_language": {
                lang: {"f1": f1 + i, "exact_match": f1 / 2, "n": 1015}
                for i, lang in enumerate(languages)
            },
            "trainable_parameters": trainable,
            "total_parameters": 1000,
            "train_runtime_s": seconds,
        }
        (folder / "metrics.json").write_text(json.dumps(metrics))

    write("train-full", 0.0, 1000, 2975.2)
    write("xquad-full", 50.0, 1000, 0.0)
    write("xquad-untrained", 5.0, 1000, 0.0)
    study_me5.main(["report"])
    tables = (study_me5.RESULTS / "main_tables.md").read_text()
    full = next(line for line in tables.splitlines() if line.startswith("| full |"))
    cells = [c.strip() for c in full.strip("|").split("|")]
    assert cells[:5] == ["full", "100.00", "2975", "1015", "50.0 / 25.0"]  # ar comes first
    targets = [50.0 + i for i, lang in enumerate(languages) if lang != "en"]
    assert cells[-1] == f"{sum(targets) / len(targets):.1f}"
    assert "| lora | (not run yet) |" in tables
    assert "| prompt_align (LoRA on every linear layer) | (not run yet) |" in tables
    pawsx = tables.split("### PAWS-X")[1]
    assert "| bitfit |" in pawsx and "every linear" not in pawsx  # PAWS-X: one row a preset
    assert (study_me5.RESULTS / "main_xquad.png").stat().st_size > 10_000
    assert not (study_me5.RESULTS / "main_mlqa.png").exists()  # nothing scored on MLQA yet


def test_pawsx_table_and_plot_give_the_majority_class(study):
    for name, accuracy in (("pawsx-untrained", 44.0), ("pawsx-lora", 55.0)):
        folder = study_me5.RESULTS / "runs" / name
        folder.mkdir(parents=True)
        per = {
            lang: {"accuracy": accuracy + i, "majority_class": 58.0 - i / 10, "n": 950}
            for i, lang in enumerate(study_me5.PAWSX)
        }
        metrics = {"per_language": per, "trainable_parameters": 10, "total_parameters": 1000}
        (folder / "metrics.json").write_text(json.dumps({**metrics, "train_runtime_s": 368.0}))
    study_me5.main(["report"])
    pawsx = (study_me5.RESULTS / "main_tables.md").read_text().split("### PAWS-X")[1]
    assert "Majority class (always predicting the larger class): en 58.0, de 57.9," in pawsx
    lora = next(line for line in pawsx.splitlines() if line.startswith("| lora |"))
    assert [c.strip() for c in lora.strip("|").split("|")][:5] == [
        "lora",
        "1.00",
        "368",
        "950",
        "55.0",
    ]
    assert (study_me5.RESULTS / "main_pawsx.png").stat().st_size > 10_000


def fake_sweep_step(
    step: str, cells: list[tuple[str, dict, int, str, int, float]], pseudo: str = "none"
) -> None:
    """A kept sweep step: one finished run per (method, grid, k, language, seed, score), with
    pseudo data of kind ``pseudo``."""
    folder = study_me5.RESULTS / "runs" / step
    two_stage = step.startswith(("fewshot", "pseudo", "stage2"))
    runs, schedule = [], "two_stage" if two_stage else "joint"
    for method, grid, k, lang, seed, score in cells:
        label = ",".join(f"{key}={value}" for key, value in grid.items()) or "base"
        name = f"{method}/{label}/{schedule}/k{k}_{lang}_seed{seed}"
        runs.append(
            {"name": name, "method": method, "grid": grid, "schedule": schedule, "k": k,
             "seed": seed, "stage": 2 if k else 0, "status": "finished"}
        )  # fmt: skip
        RunFolder(folder / "runs" / name).write_metrics(
            RunMetrics(
                task="xquad", backbone="me5-small",
                per_language={lang: {"f1": score, "n": 300}}, average={"f1": score},
                trainable_parameters=1, total_parameters=2, eval_runtime_s=0.0,
                train_steps=40, init_from="stage1" if k else None, pseudo={"kind": pseudo},
            )
        )  # fmt: skip
    design = {"k": sorted({cell[2] for cell in cells}), "schedules": [schedule]}
    (folder / "sweep.json").write_text(json.dumps({"task": "xquad", "runs": runs, "sweep": design}))


def test_report_pools_the_per_language_few_shot_steps(study):
    for lang, base in (("de", 40.0), ("zh", 30.0)):
        fake_sweep_step(
            f"fewshot-{lang}",
            [
                (method, {}, 8, lang, seed, base + gain + seed)
                for method, gain in (("full", 0.0), ("prompt_align", 2.0))
                for seed in (1, 2)
            ],
        )
    # The preset as it is now, in de only so far: a row of its own beside the first preset's.
    now = {"adapter.layers": "all_linear"}
    fake_sweep_step("fewshot-de-all_linear", [("prompt_align", now, 8, "de", 1, 50.0)])
    study_me5.main(["report"])
    pooled = json.loads((study_me5.RESULTS / "fewshot_report" / "report.json").read_text())
    rows = {(r["method"], r["language"]): r["mean"] for r in pooled["rows"]}
    assert rows["prompt_align adapter.layers=all_linear (two-stage)", "de"] == 50.0
    assert rows["prompt_align (two-stage)", "de"] == 43.5
    assert rows["prompt_align (two-stage)", "zh"] == 33.5
    assert rows["full (two-stage)", "avg"] == 36.5  # (41.5 + 31.5) / 2
    assert not (study_me5.RESULTS / "pseudo_report").exists()  # (e) has not run: no comparison


def test_report_pools_the_alignment_steps_into_score_against_lambda_and_kind(study):
    for weight in study_me5.ALIGN_WEIGHTS:
        fake_sweep_step(
            f"align-weight-{weight}",
            [
                ("prompt_align", {"align.weight": weight}, 0, lang, seed, 40 + 10 * weight + seed)
                for lang in ("de", "zh")
                for seed in (1, 2, 3)
            ],
        )
    fake_sweep_step(
        "align-kind-mse",
        [
            ("prompt_align", {"align": "mse", "align.weight": 0.2}, 0, lang, seed, 30.0 + seed)
            for lang in ("de", "zh")
            for seed in (1, 2, 3)
        ],
    )
    study_me5.main(["report"])
    by_weight = json.loads((study_me5.RESULTS / "align_weight_report" / "report.json").read_text())
    line = [(r["value"], r["mean"]) for r in by_weight["swept"] if r["language"] == "avg"]
    assert line == [(0, 42.0), (0.05, 42.5), (0.2, 44.0), (1.0, 52.0)]
    assert (study_me5.RESULTS / "align_weight_report" / "xquad_score_vs_align_weight.png").is_file()
    by_kind = json.loads((study_me5.RESULTS / "align_kind_report" / "report.json").read_text())
    rows = {r["method"]: r["mean"] for r in by_kind["rows"] if r["language"] == "avg"}
    assert rows == {
        "prompt_align align.weight=0.2": 44.0,  # the preset's contrastive loss
        "prompt_align align=mse,align.weight=0.2": 32.0,
    }


def test_report_chooses_the_stage2_protocol_on_english_by_the_fixed_rule(study):
    # Full fine-tuning gains most from 2 epochs, the paper's method from 8; the rule takes the
    # best average over both methods and k = 8, 32, so 8 epochs (54.5 against 53.0) wins.
    gains = {"steps40": (0.0, 0.0), "epochs2": (6.0, 0.0), "epochs8": (1.0, 8.0)}
    for name in study_me5.STAGE2_CANDIDATES:
        grid = {"trainer.epochs": int(name[6:])} if name.startswith("epochs") else {}
        cells = [
            (method, grid, k, "en", seed, 50.0 + gains[name][m] + seed - 2)
            for m, method in enumerate(study_me5.STAGE2_METHODS)
            for k in (8, 32)
            for seed in (1, 2, 3)
        ]
        fake_sweep_step(f"stage2-en-{name}", cells)
        if name == "steps40":  # one candidate alone chooses nothing yet
            study_me5.main(["report"])
            assert not (study_me5.RESULTS / "stage2_en_report" / "choice.md").exists()
    study_me5.main(["report"])
    choice = (study_me5.RESULTS / "stage2_en_report" / "choice.md").read_text()
    assert "Chosen: **epochs8**." in choice
    assert "| epochs2 | 56.0 | 56.0 | 50.0 | 50.0 | 53.0 |" in choice
    assert "| **epochs8** | 51.0 | 51.0 | 58.0 | 58.0 | **54.5** |" in choice
    pooled = json.loads((study_me5.RESULTS / "stage2_en_report" / "report.json").read_text())
    means = {r["method"]: r["mean"] for r in pooled["rows"] if r["language"] == "en"}
    assert means["full trainer.epochs=2 (two-stage)"] == 56.0
    assert means["prompt_align trainer.epochs=8 (two-stage)"] == 58.0
    assert means["full (two-stage)"] == 50.0


def test_the_stage2_steps_are_those_the_committed_pooled_reports_were_made_from():
    committed = (COMMITTED / "stage2_en_report" / "choice.md").read_text()
    assert f"Chosen: **{study_me5.STAGE2_CHOSEN}**." in committed
    steps = study_me5.stage2_steps()
    for report, names in (
        ("stage2_en_report", [n for n in steps if n.startswith("stage2-en-")]),
        ("stage2_report", [n for n in steps if not n.startswith(("stage2-en-", "stage2-pseudo-"))]),
    ):
        pooled = json.loads((COMMITTED / report / "report.json").read_text())
        assert pooled["sweep"] == [f"results/study_me5/runs/{name}" for name in names]
    assert all((COMMITTED / "runs" / name / "sweep.json").is_file() for name in steps)


def test_report_sets_self_training_against_the_same_runs_without_under_the_chosen_protocol(
    study,
):
    grid = {"trainer.epochs": int(study_me5.STAGE2_CHOSEN.removeprefix("epochs"))}
    methods = study_me5.STAGE2_METHODS
    fake_sweep_step(
        f"stage2-de-{study_me5.STAGE2_CHOSEN}",
        [(m, grid, 8, "de", seed, 50.0 + seed) for m in methods for seed in (1, 2, 3)],
    )
    # The paper's method with self-training first, alone: compared with itself without.
    taught = {m: f"stage2-pseudo-de-{study_me5.STAGE2_CHOSEN}-{m}" for m in methods}
    fake_sweep_step(
        taught["prompt_align"],
        [("prompt_align", grid, 8, "de", seed, 54.0 + 2 * seed) for seed in (1, 2, 3)],
        pseudo="self_train",
    )
    study_me5.main(["report"])
    pooled = json.loads((study_me5.RESULTS / "stage2_pseudo_report" / "report.json").read_text())
    gains = {(c["a"], c["b"]): c for c in pooled["comparisons"] if c["language"] == "de"}
    with_ = study_me5.stage2_label("prompt_align", study_me5.STAGE2_CHOSEN, pseudo=True)
    without = study_me5.stage2_label("prompt_align", study_me5.STAGE2_CHOSEN)
    assert list(gains) == [(with_, without)]
    assert gains[with_, without]["mean_difference"] == pytest.approx(6.0)  # 58 against 52
    # Then full fine-tuning's: its own pair, and the two methods with it against each other.
    fake_sweep_step(
        taught["full"],
        [("full", grid, 8, "de", seed, 53.0 + seed) for seed in (1, 2, 3)],
        pseudo="self_train",
    )
    study_me5.main(["report"])
    pooled = json.loads((study_me5.RESULTS / "stage2_pseudo_report" / "report.json").read_text())
    gains = {(c["a"], c["b"]): c["mean_difference"] for c in pooled["comparisons"]}
    full_with = study_me5.stage2_label("full", study_me5.STAGE2_CHOSEN, pseudo=True)
    assert gains[full_with, study_me5.stage2_label("full", study_me5.STAGE2_CHOSEN)] == 3.0
    assert gains[with_, full_with] == pytest.approx(3.0)  # 58 against 55


def test_report_sets_the_paper_method_against_each_stage2_baseline_that_ran(study):
    chosen = study_me5.STAGE2_CHOSEN
    grid = {"trainer.epochs": int(chosen.removeprefix("epochs"))}
    fake_sweep_step(
        f"stage2-de-{chosen}",
        [
            (m, grid, 8, "de", seed, base + seed)
            for m, base in (("full", 50.0), ("prompt_align", 51.0))
            for seed in (1, 2, 3)
        ],
    )
    # k = 128 in a step of its own joins the same rows; plain LoRA on every linear layer
    # comes from a step with a second grid key, which labels its rows apart.
    fake_sweep_step(
        f"stage2-de-{chosen}-k128",
        [
            (m, grid, 128, "de", seed, 60.0 + seed)
            for m in ("full", "prompt_align")
            for seed in (1, 2, 3)
        ],
    )
    all_linear = {**grid, "adapter.layers": "all_linear"}
    fake_sweep_step(
        f"stage2-de-{chosen}-lora_all_linear",
        [("lora", all_linear, k, "de", seed, 47.0 + seed) for k in (8, 128) for seed in (1, 2, 3)],
    )
    study_me5.main(["report"])
    pooled = json.loads((study_me5.RESULTS / "stage2_report" / "report.json").read_text())
    paper = study_me5.stage2_label("prompt_align", chosen)
    lora = study_me5.stage2_label("lora", chosen, layers="all_linear")
    assert (
        lora
        == f"lora trainer.epochs={grid['trainer.epochs']},adapter.layers=all_linear (two-stage)"
    )
    differences = {
        (c["b"], c["k"]): c["mean_difference"]
        for c in pooled["comparisons"]
        if c["a"] == paper and c["language"] == "de"
    }
    full = study_me5.stage2_label("full", chosen)
    assert differences == {(full, 8): 1.0, (full, 128): 0.0, (lora, 8): 4.0, (lora, 128): 13.0}
    # Plain LoRA on every linear layer is set against full fine-tuning too.
    against_full = {
        c["k"]: c["mean_difference"]
        for c in pooled["comparisons"]
        if (c["a"], c["b"], c["language"]) == (lora, full, "de")
    }
    assert against_full == {8: -3.0, 128: -13.0}


def test_each_question_is_scored_again_to_the_committed_score(shared_data, monkeypatch):
    monkeypatch.setattr(study_me5, "RESULTS", COMMITTED)
    score = study_me5._scorer("mlqa", shared_data)
    scores = study_me5.question_scores("mlqa", "full", ["hi"], score)["hi"]
    committed = json.loads((COMMITTED / "runs" / "mlqa-full" / "metrics.json").read_text())
    assert len(scores) == committed["per_language"]["hi"]["n"] == 507
    mean = sum(scores.values()) / len(scores)
    assert mean == pytest.approx(committed["per_language"]["hi"]["f1"], abs=1e-9)
    # The shipped sample is not the data the study scored: refused, not averaged.
    sample = REPO / "lowres" / "resources" / "sample"
    with pytest.raises(LowresError, match="not mlqa hi questions under data.root"):
        study_me5.question_scores("mlqa", "full", ["hi"], study_me5._scorer("mlqa", sample))


@pytest.mark.slow
def test_the_question_intervals_rebuilt_are_the_committed_ones(shared_data, monkeypatch):
    monkeypatch.setattr(study_me5, "RESULTS", COMMITTED)
    committed = (COMMITTED / "question_bootstrap.md").read_text()
    assert study_me5.question_bootstrap(shared_data) == committed
    assert "| prompt_align (LoRA on every linear layer) − full | +1.31 | [+0.65, +1.98] |" in (
        committed
    )
