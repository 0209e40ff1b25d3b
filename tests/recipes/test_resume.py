"""Exact resume (issue #18, item 3): a run killed at a random step and resumed ends
bit-identical to the uninterrupted run, alignment loss on; the same inside a sweep."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, SMOKE, on_next_training_run, run_lowres
from safetensors.torch import load_file
from transformers import TrainerCallback

# Alignment on (the iterator that used to restart on resume), checkpoints every 2 steps.
ALIGNED_TRAINING = [
    "data.eval_languages=[en,de]",
    "align=contrastive",
    "align.weight=0.5",
    "trainer.max_steps=8",
    "trainer.save_steps=2",
    "trainer.logging_steps=2",
    "trainer.select_on=last",
]
ALIGNED = [*SMOKE, "data.pool_fraction=0.5", *ALIGNED_TRAINING]


class Killed(BaseException):
    """A kill: not an Exception, so neither the sweep nor Hydra handles it."""


class _KillAt(TrainerCallback):
    def __init__(self, step: int, after_save: bool = False) -> None:
        self.step = step
        self.after_save = after_save

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step and not self.after_save:
            raise Killed(f"killed at step {self.step}")

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step and self.after_save:
            raise Killed(f"killed after the checkpoint of step {self.step}")


@pytest.fixture
def kill_at(monkeypatch):
    """Make the next training run die at the end of the given step (``after_save``: once
    that step's checkpoint is written)."""

    def arm(step: int, after_save: bool = False) -> None:
        on_next_training_run(monkeypatch, _KillAt(step, after_save))

    return arm


def _outcome(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return {
        "weights": load_file(run_dir / "checkpoint" / "trainable.safetensors"),
        "predictions": {
            p.name: p.read_text() for p in sorted((run_dir / "predictions").glob("*.json"))
        },
        "train_loss": metrics["train_loss"],
        "per_language": metrics["per_language"],
        "losses": [(r["step"], r["loss"], r.get("align_loss")) for r in log if "loss" in r],
    }


def _assert_identical(resumed: dict, uninterrupted: dict, step: int) -> None:
    assert resumed["losses"] == uninterrupted["losses"], step
    assert resumed["train_loss"] == uninterrupted["train_loss"], step
    assert resumed["predictions"] == uninterrupted["predictions"], step
    assert resumed["per_language"] == uninterrupted["per_language"], step
    assert resumed["weights"].keys() == uninterrupted["weights"].keys()
    for name, value in uninterrupted["weights"].items():
        assert torch.equal(resumed["weights"][name], value), (step, name)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    run_dir = tmp_path_factory.mktemp("whole") / "run"
    run_lowres("train", *ALIGNED, f"hydra.run.dir={run_dir}")
    return _outcome(run_dir)


def test_a_run_killed_at_a_random_step_resumes_bit_identical(tmp_path, kill_at, uninterrupted):
    step = random.randint(3, 8)  # at least one checkpoint (step 2) exists by then
    run_dir = tmp_path / "run"
    kill_at(step)
    with pytest.raises(Killed):
        run_lowres("train", *ALIGNED, f"hydra.run.dir={run_dir}")
    assert not (run_dir / "metrics.json").exists()
    run_lowres("train", "--resume", str(run_dir))
    outcome = _outcome(run_dir)
    assert uninterrupted["losses"][-1][0] == 8
    _assert_identical(outcome, uninterrupted, step)


def test_a_run_killed_after_its_last_checkpoint_resumes_bit_identical(
    tmp_path, kill_at, uninterrupted
):
    # Killed after checkpoint-8 (the last step) and before metrics.json: the resumed run
    # used to train a 9th step, log it and average train_loss over it.
    run_dir = tmp_path / "run"
    kill_at(8, after_save=True)
    with pytest.raises(Killed):
        run_lowres("train", *ALIGNED, f"hydra.run.dir={run_dir}")
    assert (run_dir / "trainer" / "checkpoint-8").is_dir()
    assert not (run_dir / "metrics.json").exists()
    run_lowres("train", "--resume", str(run_dir))
    assert json.loads((run_dir / "metrics.json").read_text())["train_steps"] == 8
    _assert_identical(_outcome(run_dir), uninterrupted, 8)
    log = (run_dir / "train_log.jsonl").read_text().splitlines()
    assert json.loads(log[-1])["train_loss"] == uninterrupted["train_loss"]


def test_resumed_at_the_last_step_with_a_constant_rate_trains_no_step_more(tmp_path, kill_at):
    # With a linear schedule the extra step had a learning rate of 0; with a constant one
    # it moved the weights.
    constant = [*SMOKE, "trainer.scheduler=constant", "trainer.save_steps=2"]
    run_lowres("train", *constant, f"hydra.run.dir={tmp_path / 'whole'}")
    kill_at(4, after_save=True)
    with pytest.raises(Killed):
        run_lowres("train", *constant, f"hydra.run.dir={tmp_path / 'run'}")
    run_lowres("train", "--resume", str(tmp_path / "run"))
    _assert_identical(_outcome(tmp_path / "run"), _outcome(tmp_path / "whole"), 4)


@pytest.mark.parametrize("damaged", ["trainable.safetensors", "optimizer.pt", "rng_state.pth"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before(
    tmp_path, kill_at, uninterrupted, capsys, damaged
):
    run_dir = tmp_path / "run"
    kill_at(7)  # checkpoints 4 and 6 are kept (save_total_limit=2)
    with pytest.raises(Killed):
        run_lowres("train", *ALIGNED, f"hydra.run.dir={run_dir}")
    latest = run_dir / "trainer" / "checkpoint-6" / damaged
    latest.write_bytes(latest.read_bytes()[:-60])  # cut short, as by a full disk
    run_lowres("train", "--resume", str(run_dir))
    err = capsys.readouterr().err
    assert f"not resuming from {run_dir / 'trainer'}/checkpoint-6: {damaged} is damaged" in err
    _assert_identical(_outcome(run_dir), uninterrupted, 4)


def test_no_intact_checkpoint_is_a_clear_error(tmp_path, kill_at, capsys):
    run_dir = tmp_path / "run"
    kill_at(5)
    with pytest.raises(Killed):
        run_lowres("train", *ALIGNED, f"hydra.run.dir={run_dir}")
    for checkpoint in (run_dir / "trainer").glob("checkpoint-*"):
        (checkpoint / "trainable.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(SystemExit) as exit_info:
        run_lowres("train", "--resume", str(run_dir))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "No intact checkpoint to resume from" in err and "Traceback" not in err


SWEEP = [
    "+task=xquad",
    "backbone=tiny-bert",
    "trainer=smoke",
    "trainer.progress=false",
    "sweep.k=[4]",
    "sweep.seeds=[1]",
    "sweep.languages=[de]",
    *ALIGNED_TRAINING,
]


def test_a_killed_sweep_resumes_its_interrupted_run_from_the_checkpoint(tmp_path, kill_at):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_lowres("sweep", *SWEEP, f"hydra.sweep.dir={whole}")
    step = random.randint(3, 8)
    kill_at(step)
    with pytest.raises(Killed):
        run_lowres("sweep", *SWEEP, f"hydra.sweep.dir={killed}")
    (run,) = {p.parent.parent for p in (killed / "runs").rglob("trainer/checkpoint-*")}
    assert not (run / "metrics.json").exists()
    run_lowres("sweep", "--resume", str(killed))
    _assert_identical(_outcome(run), _outcome(whole / run.relative_to(killed)), step)
    # It continued from the checkpoint: its log holds the steps before the kill as well.
    assert _outcome(run)["losses"][0][0] == 2


def test_a_sweep_killed_after_a_runs_last_checkpoint_records_its_real_train_loss(tmp_path, kill_at):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_lowres("sweep", *SWEEP, f"hydra.sweep.dir={whole}")
    kill_at(8, after_save=True)
    with pytest.raises(Killed):
        run_lowres("sweep", *SWEEP, f"hydra.sweep.dir={killed}")
    (run,) = {p.parent.parent for p in (killed / "runs").rglob("trainer/checkpoint-8")}
    run_lowres("sweep", "--resume", str(killed))
    reference = _outcome(whole / run.relative_to(killed))
    assert reference["train_loss"] > 1.0  # the resumed sweep run used to record 0.0
    _assert_identical(_outcome(run), reference, 8)


# Every step checkpointed and logged (a resumed loss sum then adds up in the same order);
# no feature cache, so every run reaches the same kill points in the same order.
KILL_ANYWHERE = [*ALIGNED, "trainer.max_steps=4", "trainer.save_steps=1",
                 "trainer.logging_steps=1", "data.cache_dir="]  # fmt: skip
# The kill points are drawn from this seed; a failure names it and the point, and
# LOWRES_KILL_SEED=N reruns with other points.
KILL_SEED = int(os.environ.get("LOWRES_KILL_SEED", "29"))


def _train_killed_at(point: int, events: Path, run_dir: Path) -> subprocess.Popen:
    """``lowres train`` in a process of its own, SIGKILLed at kill point ``point`` (0:
    never); tests/killpoints.py says what the points are. Its output goes to EVENTS.log."""
    command = [sys.executable, str(REPO / "tests" / "killpoints.py"), str(events), str(point),
               "train", *KILL_ANYWHERE, f"hydra.run.dir={run_dir}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(events.with_suffix(".log"), "w") as log:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def _log(events: Path) -> str:
    return events.with_suffix(".log").read_text()[-3000:]


@pytest.mark.slow  # nine lowres processes: 24 s in a clean CI run; CI runs the slow tier
def test_a_run_killed_anywhere_resumes_bit_identical(tmp_path):
    """kill -9 during a training step, during evaluation, half-way through a checkpoint
    file and just before a file is moved into place; each run resumed ends as the
    uninterrupted one."""
    events = tmp_path / "points.txt"
    whole = _train_killed_at(0, events, tmp_path / "whole")
    assert whole.wait(timeout=300) == 0, _log(events)
    points = [line.split(" ", 2) for line in events.read_text().splitlines()]
    # Resumable once checkpoint-1 is complete: its trainer_state.json is written last.
    first = next(int(n) for n, kind, what in points if what == "checkpoint-1/trainer_state.json")
    rng = random.Random(KILL_SEED)
    chosen = [
        rng.choice([p for p in points if int(p[0]) > first and p[1] == kind])
        for kind in ("train", "eval", "checkpoint-write", "replace")
    ]
    # The killed runs side by side: each pays the imports of a process of its own.
    killed = {
        tuple(point): _train_killed_at(int(point[0]), tmp_path / f"points-{n}.txt",
                                       tmp_path / f"killed-{point[0]}")
        for n, point in enumerate(chosen)
    }  # fmt: skip
    reference = _outcome(tmp_path / "whole")
    for (number, kind, what), process in killed.items():
        where = f"seed {KILL_SEED}, kill point {number} ({kind} {what})"
        run_dir = tmp_path / f"killed-{number}"
        log = tmp_path / f"points-{chosen.index([number, kind, what])}.txt"
        assert process.wait(timeout=300) == -signal.SIGKILL, (where, _log(log))
        assert not (run_dir / "metrics.json").exists(), where
        run_lowres("train", "--resume", str(run_dir))
        _assert_identical(_outcome(run_dir), reference, where)
