"""scripts/study_me5.py: every step's command composes; steps resume from what results/ holds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lowres.commandline import normalize_grid
from lowres.runfolder import RunFolder, RunMetrics
from lowres.schema import check_override_keys, config_dir, register_schemas, validate
from lowres.sweeps.plan import plan_from_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import study_me5  # noqa: E402

register_schemas()
run_step = study_me5.run_step  # the real one; the study fixture replaces it with a fake


def finished_run(run_dir: Path, score: float = 50.0) -> Path:
    """A run folder as `lowres train` leaves it: metrics, predictions, weights, checkpoints."""
    (run_dir / "checkpoint").mkdir(parents=True)
    (run_dir / "checkpoint" / "trainable.safetensors").write_bytes(b"weights")
    (run_dir / "trainer" / "checkpoint-10").mkdir(parents=True)
    (run_dir / "predictions").mkdir()
    (run_dir / "predictions" / "en.json").write_text('{"q1": "an answer"}')
    (run_dir / "train_log.jsonl").write_text('{"step": 10, "loss": 1.0}\n')
    # The fields every finished run's metrics.json has (a damaged one is no finished run).
    metrics = {"task": "xquad", "per_language": {"en": {"f1": score}}, "average": {"f1": score}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


@pytest.mark.parametrize("step", study_me5.steps(), ids=lambda s: s.name)
def test_every_step_composes_and_validates(step, tmp_path):
    where = {need: str(finished_run(tmp_path / need)) for need in step.needs}
    verb, *overrides = step.command("../shared/data", where)
    assert not any("<" in o for o in overrides), "a placeholder was left unfilled"
    if verb == "evaluate":
        assert overrides[0] == f"checkpoint={where[step.needs[0]]}"
        return
    overrides = normalize_grid(overrides)
    check_override_keys(overrides)
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train" if verb == "train" else "sweep", overrides=overrides)
    validate(cfg)
    assert cfg.backbone.name == "me5-small"
    if verb == "sweep":  # the plan's own checks (conflicting keys, stage-1 runs) pass too
        spec = OmegaConf.to_container(cfg.sweep, resolve=True)
        plan = plan_from_spec(spec, spec["languages"], tmp_path / "sweep", config=cfg)
        assert plan.runs
    if step.name.startswith("stage2-"):  # the stage-2 protocol check, each method its source
        sources = dict(zip(study_me5.STAGE2_METHODS, study_me5.STAGE2_RUNS, strict=True))
        parts = step.name.split("-")
        layers = {}  # the grid's adapter layers beside the protocol's passes, if any
        if "lora" in parts:  # (c)'s LoRA, with its first preset, from its own run
            sources = {"lora": "lora"}
            assert cfg.adapter.layers == "attention"
        if parts[-1] == "lora_all_linear":  # plain LoRA with the preset's targets, its own run
            sources = {"lora": "lora_all_linear"}
            layers = {"adapter.layers": "all_linear"}
        if "pseudo" in parts:  # (e): one method, taught by its own source run
            sources = {parts[-1]: sources[parts[-1]]}
            assert cfg.pseudo.kind == "self_train"
            assert cfg.pseudo.teacher == where[f"train-{sources[parts[-1]]}"]
        else:
            assert cfg.pseudo.kind == "none"
        if parts[1] != "en":  # the target steps: k = 8 and 32, and 128 in steps of its own
            expected_k = {"k128": [128], "lora_all_linear": [8, 32, 128]}.get(parts[-1], [8, 32])
            assert list(cfg.sweep.k) == expected_k
        stage2 = [run for run in plan.runs if run.stage == 2]
        assert stage2 and {run.method for run in stage2} == set(sources)
        candidates = [name for name, _, _ in study_me5.STAGE2_CANDIDATES]
        (protocol,) = [part for part in parts if part in candidates]
        for run in stage2:
            assert f"init_from={where['train-' + sources[run.method]]}" in run.overrides
            epochs = protocol.removeprefix("epochs")
            if epochs.isdigit():  # whole passes over the k examples, the last one kept
                assert run.grid == {"trainer.epochs": int(epochs), **layers}
                assert {"trainer.max_steps=-1", "trainer.select_on=last"} <= set(run.overrides)
            else:
                assert "trainer.max_steps=40" in run.overrides
    if step.name.startswith("train-"):
        assert cfg.trainer.epochs == 1 and cfg.task.max_length == 256
    if step.name.endswith("untrained"):
        assert cfg.trainer.epochs == 0  # nothing on the command line makes it train
    if step.name.endswith("all_linear") and verb == "sweep":  # (c), (e) for the preset now
        assert "adapter.layers=attention" not in overrides  # the sweep config has no method
        assert all("adapter.layers=all_linear" in run.overrides for run in plan.runs)
    elif step.name.endswith("all_linear"):  # the tuning steps' winner, and its rows in (a)
        assert list(cfg.adapter.target_modules) == ["query", "key", "value", "dense"]
    elif step.name == "pawsx-prompt_align":  # not run before the change: the preset as it is
        assert cfg.adapter.layers == "all_linear"
    elif cfg.adapter.kind == "lora":  # the steps run with the presets' first LoRA
        assert list(cfg.adapter.target_modules) == [] and cfg.adapter.layers == "attention"


@pytest.fixture
def study(tmp_path, monkeypatch):
    """The study's folders in tmp_path; running a step writes a finished run folder."""
    monkeypatch.setattr(study_me5, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(study_me5, "WORK", tmp_path / "outputs")
    monkeypatch.setattr(study_me5, "REPO", tmp_path)
    ran: list[tuple[str, list[str]]] = []

    def fake_run(step, data_root, where):
        ran.append((step.name, step.command(data_root, where)))
        finished_run(study_me5.WORK / step.name, score=len(ran))

    monkeypatch.setattr(study_me5, "run_step", fake_run)
    return ran


def test_a_finished_step_is_kept_without_weights_and_not_run_again(study):
    study_me5.main(["run", "choice-upper3"])
    kept = study_me5.RESULTS / "runs" / "choice-upper3"
    assert sorted(p.name for p in kept.iterdir()) == [
        "metrics.json",
        "predictions",
        "train_log.jsonl",
    ]
    study_me5.main(["run", "choice-upper3"])
    assert [name for name, _ in study] == ["choice-upper3"]


def test_a_step_whose_weights_are_gone_trains_them_again_first(study):
    study_me5.main(["run", "train-full", "xquad-full"])
    assert [name for name, _ in study] == ["train-full", "xquad-full"]
    evaluate = study[1][1]
    assert f"checkpoint={study_me5.WORK / 'train-full'}" in evaluate
    # A new machine: results/ came with git, outputs/ did not.
    for folder in (study_me5.WORK / "train-full", study_me5.WORK / "xquad-full"):
        for path in sorted(folder.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        folder.rmdir()
    study.clear()
    study_me5.main(["run", "mlqa-full"])
    assert [name for name, _ in study] == ["train-full", "mlqa-full"]
    # train-full's committed results stay those of its first run.
    kept = json.loads((study_me5.RESULTS / "runs" / "train-full" / "metrics.json").read_text())
    assert kept["per_language"]["en"]["f1"] == 1


def test_have_adopts_a_finished_run_and_refuses_a_folder_without_weights(study, tmp_path):
    elsewhere = finished_run(tmp_path / "elsewhere", score=70.1)
    study_me5.main(["run", "--have", f"train-full={elsewhere}", "xquad-full"])
    assert [name for name, _ in study] == ["xquad-full"]
    assert f"checkpoint={elsewhere}" in study[0][1]
    kept = json.loads((study_me5.RESULTS / "runs" / "train-full" / "metrics.json").read_text())
    assert kept["per_language"]["en"]["f1"] == 70.1
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="expected STEP=RUN_DIR"):
        study_me5.main(["run", "--have", f"train-lora={tmp_path / 'empty'}"])
    with pytest.raises(SystemExit, match="no step 'train-mystery'"):
        study_me5.main(["run", "train-mystery"])


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


def test_keep_saves_a_cut_short_sweep_which_resumes_from_git_on_a_new_machine(study, monkeypatch):
    sweep_dir = study_me5.WORK / "fewshot-de"
    finished_run(sweep_dir / "runs" / "full" / "k8_de_seed1")
    (sweep_dir / "runs" / "full" / "k8_de_seed2").mkdir(parents=True)  # cut short
    runs = [
        {"name": "full/k8_de_seed1", "status": "finished"},
        {"name": "full/k8_de_seed2", "status": "planned"},
    ]
    (sweep_dir / "sweep.json").write_text(json.dumps({"runs": runs}))
    study_me5.main(["keep", "fewshot-de"])
    kept = study_me5.RESULTS / "runs" / "fewshot-de"
    assert (kept / "runs" / "full" / "k8_de_seed1" / "metrics.json").is_file()
    assert not (kept / "runs" / "full" / "k8_de_seed1" / "checkpoint").exists()
    by_name = {s.name: s for s in study_me5.steps()}
    assert not study_me5.done(by_name["fewshot-de"])  # one run still to go

    # A new machine: outputs/ is gone; running the step brings the kept runs back and resumes.
    for path in sorted(study_me5.WORK.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    called: list[list[str]] = []
    monkeypatch.setattr(study_me5.subprocess, "call", lambda argv, **_: called.append(argv) or 0)
    run_step(by_name["fewshot-de"], "../shared/data", {})
    assert called[0][-3:] == ["sweep", "--resume", str(sweep_dir)]
    assert (sweep_dir / "runs" / "full" / "k8_de_seed1" / "metrics.json").is_file()

    with pytest.raises(SystemExit, match="keep train-full: expected a sweep step"):
        study_me5.main(["keep", "train-full"])


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
    for name, _, _ in study_me5.STAGE2_CANDIDATES:
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


def test_the_target_language_steps_run_the_protocol_the_committed_choice_names():
    committed = Path(__file__).resolve().parents[2] / "results/study_me5/stage2_en_report/choice.md"
    assert f"Chosen: **{study_me5.STAGE2_CHOSEN}**." in committed.read_text()
    targets = [s.name for s in study_me5.steps() if s.name.startswith("stage2-")]
    chosen = study_me5.STAGE2_CHOSEN
    languages = [] if chosen == "steps40" else ["de", "zh", "hi"]  # steps40's are (c)'s
    expected = [
        *(f"stage2-{lang}-{chosen}{end}" for end in ("", "-lora") for lang in languages),
        *(f"stage2-{lang}-{chosen}{end}-k128" for end in ("", "-lora") for lang in languages),
        *(f"stage2-{lang}-{chosen}-lora_all_linear" for lang in languages),
        *(
            f"stage2-pseudo-{lang}-{chosen}-{method}"
            for method in study_me5.STAGE2_METHODS
            for lang in languages
        ),
    ]
    assert [name for name in targets if "-en-" not in name] == expected


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
