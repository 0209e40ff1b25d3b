"""``lowres sweep`` and ``lowres report`` on the tiny backbone: plans, reruns, failures, tables."""

from __future__ import annotations

import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, lowres_subprocess, run_lowres

from lowres.sweeps.report import write_report
from lowres.tasks import DataSettings, create_task

TINY = ["+task=xquad", "backbone=tiny-bert", "trainer=smoke", "trainer.progress=false"]


GRID = ["sweep.k=[2,4]", "sweep.seeds=[1,2]", "sweep.languages=[de,es]"]


METHODS = "sweep.methods=[deep_prompt,full]"


def finished_runs(sweep_dir: Path) -> list[Path]:
    return sorted(p.parent for p in (sweep_dir / "runs").glob("**/metrics.json"))


@pytest.fixture(scope="module")
def full_sweep(tmp_path_factory):
    """2 k x 2 seeds x 2 languages x 2 methods = 16 runs, then the report."""
    import lowres.backbones

    sweep_dir = tmp_path_factory.mktemp("sweep") / "s"
    loads = []
    original = lowres.backbones.load_backbone

    def counting(**kwargs):
        loads.append(kwargs["seed"])
        return original(**kwargs)

    lowres.backbones.load_backbone = counting
    try:
        run_lowres("sweep", *TINY, *GRID, METHODS, f"hydra.sweep.dir={sweep_dir}")
    finally:
        lowres.backbones.load_backbone = original
    run_lowres("report", str(sweep_dir))
    return sweep_dir, loads


def test_sweep_runs_every_combination_and_reuses_the_backbone(full_sweep):
    sweep_dir, loads = full_sweep
    runs = finished_runs(sweep_dir)
    assert len(runs) == 16
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert sweep["summary"]["finished"] == 16 and sweep["summary"]["failed"] == 0
    # One load per (backbone, head, seed): the two methods and four k x language runs of a
    # seed reuse it.
    assert sorted(loads) == [1, 2]
    first, later = (
        sweep["summary"][k] for k in ("overhead_first_run_s", "overhead_later_runs_median_s")
    )
    assert first > 0 and later > 0
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert {"k", "seed", "selection", "per_language"} <= set(metrics)


def test_k_shot_samples_are_nested_and_recorded(full_sweep):
    sweep_dir, _ = full_sweep
    base = sweep_dir / "runs" / "deep_prompt" / "base" / "joint"

    splits = {
        name: json.loads((base / name / "data_split.json").read_text())
        for name in ("k2_de_seed1", "k4_de_seed1", "k2_de_seed2")
    }
    task = create_task(
        "xquad",
        DataSettings(
            source="sample", root="", source_language="en", eval_languages=["de"], pool_fraction=0.3
        ),
    )
    german_pool = {r["id"] for r in task.target_pool("de")}
    shots = {n: [i for i in s["train"] if i in german_pool] for n, s in splits.items()}
    assert len(shots["k4_de_seed1"]) == 4
    assert len(shots["k2_de_seed1"]) == 2
    assert set(shots["k2_de_seed1"]) <= set(shots["k4_de_seed1"])
    assert shots["k2_de_seed2"] != shots["k2_de_seed1"]  # another seed, another sample
    # Every shot is a German record the evaluation never sees.
    evaluation = set(splits["k4_de_seed1"]["evaluation"]["de"])
    assert not set(shots["k4_de_seed1"]) & evaluation
    assert splits["k4_de_seed1"]["train_languages"] == ["de", "en"]


def test_report_tables_hold_the_runs_numbers(full_sweep):
    sweep_dir, _ = full_sweep
    report = sweep_dir / "report"
    for name in (
        "report.md",
        "report.csv",
        "report.json",
        "xquad_score_vs_k.png",
        "xquad_heatmap.png",
    ):
        assert (report / name).is_file() and (report / name).stat().st_size > 0, name
    assert (report / "xquad_score_vs_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((report / "report.csv").open()))
    assert len(rows) == 2 * 2 * 3  # methods x k x (de, es, avg)
    seeds = []
    for seed in (1, 2):
        run = sweep_dir / "runs" / "full" / "base" / "joint" / f"k4_es_seed{seed}"
        seeds.append(json.loads((run / "metrics.json").read_text())["per_language"]["es"]["f1"])
    row = next(r for r in rows if (r["method"], r["k"], r["language"]) == ("full", "4", "es"))
    assert float(row["mean"]) == pytest.approx(statistics.fmean(seeds))
    assert float(row["std"]) == pytest.approx(statistics.stdev(seeds))
    assert int(row["n"]) == 2 and row["seeds"] == "1 2"
    text = (report / "report.md").read_text()
    assert "PARTIAL" not in text
    assert "Checkpoint selection: last checkpoint" in text
    # the results page names the source pool's protocol
    assert "Source pool: xquad: SQuAD v1.1 dev minus the questions XQuAD translates" in text
    assert json.loads((report / "report.json").read_text())["source_pool"][0].startswith("xquad")


def test_rerun_after_a_kill_skips_finished_runs(tmp_path):
    sweep_dir = tmp_path / "s"
    # Six runs of 20 steps: slow enough that the kill lands while runs remain.
    args = [
        *TINY,
        "trainer.max_steps=20",
        "sweep.k=[2]",
        "sweep.seeds=[1,2,3]",
        "sweep.languages=[de,es]",
    ]
    command = [sys.executable, "-m", "lowres", "sweep", *args, f"hydra.sweep.dir={sweep_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 240
    while not finished_runs(sweep_dir) and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "the sweep ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done_before = finished_runs(sweep_dir)
    assert 1 <= len(done_before) < 6
    stamps = {p: (p / "metrics.json").stat().st_mtime_ns for p in done_before}

    run_lowres("sweep", "--resume", str(sweep_dir))
    summary = json.loads((sweep_dir / "sweep.json").read_text())["summary"]
    assert summary["skipped"] == len(done_before)
    assert summary["finished"] == 6 - len(done_before)
    assert len(finished_runs(sweep_dir)) == 6
    assert {p: (p / "metrics.json").stat().st_mtime_ns for p in done_before} == stamps


def test_a_failing_run_is_recorded_and_the_rest_finish(tmp_path, monkeypatch):
    import lowres.sweeps.run

    sweep_dir = tmp_path / "s"
    real_train = lowres.sweeps.run.train

    def flaky(cfg, output_dir=None):
        if Path(output_dir).name == "k2_es_seed2":
            raise RuntimeError("simulated out-of-memory")
        return real_train(cfg, output_dir=output_dir)

    monkeypatch.setattr(lowres.sweeps.run, "train", flaky)
    args = [
        "sweep",
        *TINY,
        "sweep.k=[2]",
        "sweep.seeds=[1,2]",
        "sweep.languages=[de,es]",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    run_lowres(*args)
    summary = json.loads((sweep_dir / "sweep.json").read_text())["summary"]
    assert summary["finished"] == 3 and summary["failed"] == 1
    failed = "configured/base/joint/k2_es_seed2"
    assert summary["failed_runs"] == {failed: "RuntimeError: simulated out-of-memory"}
    error = json.loads((sweep_dir / "runs" / failed / "error.json").read_text())
    assert "simulated out-of-memory" in error["traceback"]

    run_lowres("report", str(sweep_dir))
    text = (sweep_dir / "report" / "report.md").read_text()
    assert "**PARTIAL**: 3 of 4 runs finished (1 failed, 0 not run)" in text
    assert f"`{failed}`: RuntimeError: simulated out-of-memory" in text
    report = json.loads((sweep_dir / "report" / "report.json").read_text())
    es = next(r for r in report["rows"] if r["language"] == "es")
    assert es["n"] == 1 and es["seeds"] == [1] and es["std"] is None  # no spread from one seed

    monkeypatch.setattr(lowres.sweeps.run, "train", real_train)
    run_lowres(*args)  # the retry runs the failed run only
    summary = json.loads((sweep_dir / "sweep.json").read_text())["summary"]
    assert (summary["finished"], summary["skipped"], summary["failed"]) == (1, 3, 0)
    assert not (sweep_dir / "runs" / failed / "error.json").exists()


def test_two_stage_starts_k_shot_runs_from_the_stage_one_run(tmp_path):
    sweep_dir = tmp_path / "s"
    run_lowres(
        "sweep",
        *TINY,
        "sweep.k=[0,2]",
        "sweep.seeds=[1]",
        "sweep.languages=[de]",
        "sweep.schedules=[two_stage]",
        "sweep.stage2=['trainer.max_steps=2']",
        f"hydra.sweep.dir={sweep_dir}",
    )
    base = sweep_dir / "runs" / "configured" / "base" / "two_stage"
    stage1 = json.loads((base / "stage1_seed1" / "metrics.json").read_text())
    stage2 = json.loads((base / "k2_de_seed1" / "metrics.json").read_text())
    assert stage1["train_examples"] == 32 and stage1["init_from"] is None
    assert stage2["init_from"] == str((base / "stage1_seed1").resolve())
    assert stage2["source_pool"] is False
    assert stage2["train_examples"] == 2 and stage2["train_steps"] == 2


def test_stage1_from_starts_k_shot_runs_from_a_given_source_run(tmp_path):
    source, sweep_dir = tmp_path / "source", tmp_path / "s"
    run_lowres("train", *TINY, "+method=full", "data.pool_fraction=0.3", f"hydra.run.dir={source}")
    run_lowres(
        "sweep",
        *TINY,
        "sweep.k=[0,2]",
        "sweep.seeds=[1,2]",
        "sweep.languages=[de]",
        "sweep.methods=[full]",
        "sweep.schedules=[two_stage]",
        f"sweep.stage1_from={{full:'{source}'}}",
        "sweep.stage2=['trainer.max_steps=2']",
        f"hydra.sweep.dir={sweep_dir}",
    )
    runs = sweep_dir / "runs" / "full" / "base" / "two_stage"
    assert sorted(p.name for p in runs.iterdir()) == [
        "k0_all_seed1",
        "k2_de_seed1",
        "k2_de_seed2",
    ]  # no stage-1 run of its own, and the given run is scored once
    trained = json.loads((source / "metrics.json").read_text())
    zero = json.loads((runs / "k0_all_seed1" / "metrics.json").read_text())
    assert zero["train_steps"] == 0 and zero["init_from"] == str(source)
    assert zero["per_language"]["de"] == trained["per_language"]["de"]
    for seed in (1, 2):
        shot = json.loads((runs / f"k2_de_seed{seed}" / "metrics.json").read_text())
        assert shot["init_from"] == str(source) and shot["train_steps"] == 2
    run_lowres("report", str(sweep_dir))
    report = (sweep_dir / "report" / "report.md").read_text()
    assert "full (two-stage)" in report


def test_init_from_restores_the_other_runs_parameters(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    run_lowres("train", *TINY, f"hydra.run.dir={first}")
    run_lowres(
        "train",
        *TINY,
        "trainer.epochs=0",
        "trainer.max_steps=-1",
        f"init_from={first}",
        f"hydra.run.dir={second}",
    )
    a, b = (json.loads((p / "metrics.json").read_text()) for p in (first, second))
    assert b["train_steps"] == 0
    assert b["per_language"] == a["per_language"]


def test_selection_keeps_the_best_source_dev_checkpoint(tmp_path):
    run_dir = tmp_path / "r"
    run_lowres(
        "train",
        *TINY,
        "trainer.max_steps=6",
        "trainer.select_every=2",
        "trainer.select_examples=8",
        f"hydra.run.dir={run_dir}",
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    selection = metrics["selection"]
    assert [h["step"] for h in selection["history"]] == [2, 4, 6]
    best = max(selection["history"], key=lambda h: h["score"])  # first of ties wins
    assert selection["chosen_step"] == best["step"]
    split = json.loads((run_dir / "data_split.json").read_text())
    assert len(split["selection"]) >= 8
    assert not set(split["selection"]) & set(split["train"])


def test_bad_sweep_input_gets_one_paragraph(tmp_path):
    wrong_language = lowres_subprocess(
        "sweep", *TINY, "sweep.languages=[de,xx]", f"hydra.sweep.dir={tmp_path / 'a'}"
    )
    assert wrong_language.returncode == 2
    assert "sweep.languages holds xx, which task xquad does not have" in wrong_language.stderr
    too_many = lowres_subprocess(
        "sweep", *TINY, "sweep.k=[500]", "sweep.languages=[de]", f"hydra.sweep.dir={tmp_path / 'b'}"
    )
    assert too_many.returncode == 2
    assert "sweep.k holds 500, but the de target pool of task xquad has" in too_many.stderr
    assert "Traceback" not in too_many.stderr + wrong_language.stderr
    assert not (tmp_path / "b" / "runs").exists()


def test_report_refuses_folders_that_are_not_sweeps(tmp_path):
    missing = lowres_subprocess("report", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = lowres_subprocess("report", str(tmp_path / "empty"))
    assert empty.returncode == 2 and "not a lowres sweep folder" in empty.stderr
    planned = {"name": "a/b", "method": "a", "schedule": "joint", "grid": {}, "k": 0, "seed": 1}
    (tmp_path / "empty" / "sweep.json").write_text(json.dumps({"runs": [{**planned, "stage": 1}]}))
    unfinished = lowres_subprocess("report", str(tmp_path / "empty"))
    assert unfinished.returncode == 2 and "holds no finished runs yet" in unfinished.stderr


def test_no_training_data_is_refused_before_the_backbone_loads(tmp_path, capsys, monkeypatch):
    import lowres.assembly

    def must_not_load(*args, **kwargs):
        raise AssertionError("the backbone was loaded for a run with nothing to train on")

    monkeypatch.setattr(lowres.assembly, "build_run_model", must_not_load)
    with pytest.raises(SystemExit) as exit_info:
        run_lowres("train", *TINY, "data.source_pool=false", f"hydra.run.dir={tmp_path / 'r'}")
    assert exit_info.value.code == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "Nothing to train on: the source pool is off (data.source_pool=false)" in error
    assert "data.k=0, pseudo.kind=none" in error


def test_grid_form_user_presets_and_pseudo_compose(full_sweep, tmp_path):
    """The README's sweep.grid form, a method preset from the user's own config folder, and
    a pseudo group chosen on the sweep's command line; the report draws score vs the key."""
    presets = tmp_path / "my_configs"
    (presets / "method").mkdir(parents=True)
    (presets / "method" / "my_prompt.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - override /freeze: backbone\n  - override /prompt: input\n"
        "trainer:\n  lr: 0.002\nprompt:\n  length: 3\n"
    )
    sweep_dir = tmp_path / "s"
    run_lowres(
        "sweep",
        *TINY,
        "sweep.k=[0]",
        "sweep.seeds=[1]",
        "sweep.languages=[de]",
        "sweep.methods=[my_prompt]",
        "align=contrastive",
        "sweep.grid={align.weight:[0,0.1]}",
        f"hydra.searchpath=[file://{presets}]",
        f"hydra.sweep.dir={sweep_dir}",
    )
    runs = finished_runs(sweep_dir)
    assert [p.relative_to(sweep_dir / "runs").parts[:2] for p in runs] == [
        ("my_prompt", "align.weight=0"),
        ("my_prompt", "align.weight=0.1"),
    ]
    config = (runs[1] / ".hydra" / "config.yaml").read_text()
    assert "length: 3" in config and "lr: 0.002" in config and "weight: 0.1" in config
    report = write_report(sweep_dir)
    assert {(r["key"], r["value"]) for r in report["swept"]} == {
        ("align.weight", 0),
        ("align.weight", 0.1),
    }
    assert (sweep_dir / "report" / "xquad_score_vs_align_weight.png").is_file()
    run_lowres("sweep", "--resume", str(sweep_dir))  # finds the user's preset folder again
    summary = json.loads((sweep_dir / "sweep.json").read_text())["summary"]
    assert (summary["skipped"], summary["failed"]) == (2, 0)

    teacher = sweep_dir.parent / "teacher"
    teacher.symlink_to(full_sweep[0] / "runs" / "full" / "base" / "joint" / "k2_de_seed1")
    pseudo_dir = tmp_path / "p"
    run_lowres(
        "sweep",
        *TINY,
        "sweep.k=[2]",
        "sweep.seeds=[1]",
        "sweep.languages=[de]",
        "pseudo=self_train",
        f"pseudo.teacher={teacher}",
        f"hydra.sweep.dir={pseudo_dir}",
    )
    (run,) = finished_runs(pseudo_dir)
    assert json.loads((run / "metrics.json").read_text())["pseudo"]["kind"] == "self_train"


def test_a_grid_key_that_is_not_a_config_key_is_refused(tmp_path):
    result = lowres_subprocess(
        "sweep",
        *TINY,
        "sweep.k=[0]",
        "sweep.grid={prompt.lenght:[2,4]}",
        f"hydra.sweep.dir={tmp_path / 's'}",
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    error = " ".join(result.stderr.split())
    assert "sweep.grid holds 'prompt.lenght', which is not a config key or group" in error
    assert "Did you mean prompt.length" in error
    assert not (tmp_path / "s" / "runs").exists()


@pytest.mark.parametrize("damage", ["truncated", "not an object"])
def test_resume_retrains_a_run_whose_metrics_file_is_damaged(tmp_path, damage):
    sweep_dir = tmp_path / "s"
    args = [*TINY, "sweep.k=[2]", "sweep.seeds=[1,2]", "sweep.languages=[de]"]
    run_lowres("sweep", *args, f"hydra.sweep.dir={sweep_dir}")
    damaged, intact = sorted(finished_runs(sweep_dir))
    metrics = damaged / "metrics.json"
    whole = json.loads(metrics.read_text())
    text = metrics.read_text()
    metrics.write_text(text[: len(text) // 2] if damage == "truncated" else "[1, 2]")
    run_lowres("sweep", "--resume", str(sweep_dir))
    summary = json.loads((sweep_dir / "sweep.json").read_text())["summary"]
    assert (summary["skipped"], summary["finished"]) == (1, 1)
    again = json.loads(metrics.read_text())
    assert again["per_language"] == whole["per_language"]
    assert again["train_loss"] == whole["train_loss"]


def test_resume_is_refused_while_a_process_still_trains_one_of_its_runs(tmp_path, capsys):
    sweep_dir = tmp_path / "s"
    run_lowres("sweep", *TINY, "sweep.k=[2]", "sweep.seeds=[1]", "sweep.languages=[de]",
               f"hydra.sweep.dir={sweep_dir}")  # fmt: skip
    (run,) = finished_runs(sweep_dir)
    (run / "metrics.json").unlink()  # unfinished, as while a worker of a killed sweep trains it
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from lowres.runfolder import FolderLock\n"
         "held = FolderLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(120)",
         str(run)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SystemExit) as exit_info:
            run_lowres("sweep", "--resume", str(sweep_dir))
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert f"still being trained by process(es) {holder.pid}" in err
        assert not (run / "metrics.json").exists()
    finally:
        holder.kill()
        holder.wait()
    run_lowres("sweep", "--resume", str(sweep_dir))
    assert (run / "metrics.json").is_file()
