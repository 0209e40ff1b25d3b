"""``lowres sweep`` through Hydra launcher plugins (joblib, submitit's local executor).

The in-process sweep is the reference: the same sweep through a launcher must plan the same
runs, record the same statuses in sweep.json and report the same numbers. The tiny backbone
is built from a fixed seed in every process, so a run trains to the same scores wherever
it runs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, run_lowres

# Full fine-tuning at a high learning rate: the tiny model's German F1 is then above zero,
# so equal reports compare real numbers. One seed, k in {0, 2}, both schedules: 4 runs,
# and the two-stage k = 2 run must wait for its stage-1 run.
SWEEP = [
    "+task=xquad",
    "backbone=tiny-bert",
    "trainer=smoke",
    "trainer.progress=false",
    "trainer.lr=1e-3",
    "sweep.k=[0,2]",
    "sweep.seeds=[1]",
    "sweep.languages=[de]",
    "sweep.methods=[full]",
    "sweep.schedules=[joint,two_stage]",
]
TIMINGS = ("wall_s", "overhead_s")


def finished_runs(sweep_dir: Path) -> list[Path]:
    return sorted(p.parent for p in (sweep_dir / "runs").glob("**/metrics.json"))


def sweep_record(sweep_dir: Path) -> dict:
    """sweep.json without timings and with the sweep's own path (in init_from) factored out."""
    text = (sweep_dir / "sweep.json").read_text().replace(str(sweep_dir.resolve()), "SWEEP")
    sweep = json.loads(text)
    sweep["runs"] = [{k: v for k, v in r.items() if k not in TIMINGS} for r in sweep["runs"]]
    summary = sweep.pop("summary")
    sweep["counts"] = {k: summary[k] for k in ("planned", "finished", "skipped", "failed")}
    sweep.pop("launcher", None)
    return sweep


def scores(sweep_dir: Path) -> dict[str, tuple]:
    out = {}
    for run in finished_runs(sweep_dir):
        metrics = json.loads((run / "metrics.json").read_text())
        name = run.relative_to(sweep_dir / "runs").as_posix()
        out[name] = (metrics["per_language"], metrics["train_loss"], metrics["train_steps"])
    return out


def report_values(sweep_dir: Path) -> dict:
    run_lowres("report", str(sweep_dir))
    report = json.loads((sweep_dir / "report" / "report.json").read_text())
    keys = ("partial", "planned", "finished", "failed", "missing", "metric", "rows")
    return {k: report[k] for k in keys}


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("inprocess") / "s"
    run_lowres("sweep", *SWEEP, f"hydra.sweep.dir={sweep_dir}")
    return sweep_dir, report_values(sweep_dir)


def check_same_as_in_process(sweep_dir: Path, in_process, launcher: str) -> None:
    reference, reference_report = in_process
    assert launcher in json.loads((sweep_dir / "sweep.json").read_text())["launcher"]
    assert sweep_record(sweep_dir) == sweep_record(reference)
    assert sweep_record(sweep_dir)["counts"] == {
        "planned": 4,
        "finished": 4,
        "skipped": 0,
        "failed": 0,
    }
    assert scores(sweep_dir) == scores(reference)
    report = report_values(sweep_dir)
    assert report == reference_report
    assert any(row["mean"] > 0 for row in report["rows"]), report["rows"]  # real numbers
    # The two-stage k-shot run started from its stage-1 run of this very sweep.
    two_stage = sweep_dir / "runs" / "full" / "base" / "two_stage"
    stage2 = json.loads((two_stage / "k2_de_seed1" / "metrics.json").read_text())
    assert stage2["init_from"] == str((two_stage / "stage1_seed1").resolve())
    # Each run folder is an ordinary run folder: its config has no sweep node.
    config = (two_stage / "k2_de_seed1" / ".hydra" / "config.yaml").read_text()
    assert "\nsweep:" not in config and "stage1_seed1" in config


def test_joblib_sweep_matches_the_in_process_sweep(tmp_path, in_process):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep_dir = tmp_path / "s"
    run_lowres(
        "sweep",
        *SWEEP,
        "hydra/launcher=local_gpus",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep_dir}",
    )
    check_same_as_in_process(sweep_dir, in_process, "JoblibLauncher")


@pytest.mark.slow  # one fresh interpreter per run (torch imports): about a minute on 2 cores
def test_submitit_local_sweep_matches_the_in_process_sweep(tmp_path, in_process):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep_dir = tmp_path / "s"
    run_lowres(
        "sweep",
        *SWEEP,
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        f"hydra.sweep.dir={sweep_dir}",
    )
    check_same_as_in_process(sweep_dir, in_process, "LocalLauncher")
    assert list((sweep_dir / ".submitit").glob("*/*_log.out"))  # submitit's per-job logs


@pytest.mark.slow  # a sweep killed, then resumed, one interpreter per worker: 19 s in CI
def test_a_killed_launcher_sweep_resumes_through_the_same_launcher(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep_dir = tmp_path / "s"
    # Three runs of 10 steps, two at a time: the kill lands while a run remains.
    args = [
        "+task=xquad",
        "backbone=tiny-bert",
        "trainer=smoke",
        "trainer.progress=false",
        "trainer.max_steps=10",
        "sweep.k=[2]",
        "sweep.seeds=[1,2,3]",
        "sweep.languages=[de]",
        "hydra/launcher=local_gpus",
        "hydra.launcher.n_jobs=2",
    ]
    command = [sys.executable, "-m", "lowres", "sweep", *args, f"hydra.sweep.dir={sweep_dir}"]
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the joblib workers share its process group: one kill ends all
    )
    deadline = time.time() + 240
    while not finished_runs(sweep_dir) and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "the sweep ended before it could be killed"
    workers = _children(process.pid)
    assert workers, "no joblib worker found"
    # Only the dispatcher is killed: its workers used to go on training its runs.
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.time() + 10
    while any(_alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers), "orphan workers outlived the sweep"
    done_before = finished_runs(sweep_dir)
    assert 1 <= len(done_before) < 3
    stamps = {p: (p / "metrics.json").stat().st_mtime_ns for p in done_before}

    run_lowres("sweep", "--resume", str(sweep_dir))  # no launcher named: the recorded one
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert "JoblibLauncher" in sweep["launcher"]
    summary = sweep["summary"]
    assert summary["skipped"] == len(done_before)
    assert summary["finished"] == 3 - len(done_before) and summary["failed"] == 0
    assert len(finished_runs(sweep_dir)) == 3
    assert {p: (p / "metrics.json").stat().st_mtime_ns for p in done_before} == stamps


def test_a_sweep_on_a_missing_launcher_plugin_names_the_pip_command(monkeypatch, capsys):
    real = importlib.util.find_spec

    def without_joblib(name, *args):
        return None if name.startswith("hydra_plugins.hydra_joblib") else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_joblib)
    with pytest.raises(SystemExit) as exit_info:
        run_lowres("sweep", *SWEEP, "hydra/launcher=local_gpus")
    assert exit_info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "hydra/launcher=local_gpus runs through Hydra's joblib launcher plugin" in err
    assert "pip install hydra-joblib-launcher" in err and "Traceback" not in err


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat_file.parent.name))
    return found


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for a reaper."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
