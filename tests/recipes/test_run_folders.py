"""Run-folder integrity (issue #18): nothing written into a folder lowres then refuses, one
folder per run even in the same second, one writer per folder, no junk after a failure."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from datetime import datetime
from pathlib import Path

import pytest
import torch
from helpers import SMOKE, lowres_exit_code, run_lowres
from safetensors.torch import load_file, save_file

from lowres.errors import LowresError
from lowres.runfolder import LOCK_FILE, FolderLock, RunFolder, claim_new_folder

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="a user error only without a GPU")


def _digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and its content hash."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    run_lowres("train", *SMOKE, f"hydra.run.dir={run_dir}")
    return run_dir


def test_retraining_into_a_finished_run_changes_none_of_its_files(finished_run, capsys):
    before = _digest(finished_run)
    code = lowres_exit_code("train", *SMOKE, "prompt.length=5", f"hydra.run.dir={finished_run}")
    assert code == 2
    assert "already holds a finished run" in capsys.readouterr().err
    # Hydra used to rewrite .hydra/config.yaml and overrides.yaml before the refusal.
    assert _digest(finished_run) == before


def test_evaluate_into_the_checkpoint_folder_is_refused_before_writing(finished_run, capsys):
    before = _digest(finished_run)
    code = lowres_exit_code(
        "evaluate", f"checkpoint={finished_run}", f"hydra.run.dir={finished_run}"
    )
    assert code == 2
    assert "never into a trained run's" in capsys.readouterr().err
    assert _digest(finished_run) == before


def test_resume_with_other_settings_is_refused(finished_run, capsys):
    before = _digest(finished_run)
    assert lowres_exit_code("train", "--resume", str(finished_run), "prompt.length=5") == 2
    assert "(added: prompt.length=5; changed: none; missing: none)" in capsys.readouterr().err
    assert lowres_exit_code("train", "--resume", str(finished_run), "trainer.progress=true") == 2
    err = capsys.readouterr().err
    assert "changed: trainer.progress=true (trained with false)" in err
    assert _digest(finished_run) == before


def test_resume_of_a_finished_run_says_nothing_was_done(finished_run, capsys):
    before = _digest(finished_run)
    # Repeating one of the run's own settings is no change.
    run_lowres("train", "--resume", str(finished_run), "backbone=tiny-bert")
    captured = capsys.readouterr()
    assert "the run finished already" in captured.err and "nothing was done" in captured.err
    assert "Traceback" not in captured.err
    assert _digest(finished_run) == before


def test_resume_into_another_folder_is_refused(finished_run, tmp_path, capsys):
    other = tmp_path / "other"
    code = lowres_exit_code("train", "--resume", str(finished_run), f"hydra.run.dir={other}")
    assert code == 2
    assert f"hydra.run.dir={other} cannot apply" in capsys.readouterr().err
    assert not other.exists()
    code = lowres_exit_code("sweep", "--resume", str(tmp_path), f"hydra.sweep.dir={other}")
    assert code == 2
    assert "hydra.sweep.dir cannot apply" in capsys.readouterr().err


def test_evaluate_without_a_checkpoint_names_the_setting(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert lowres_exit_code("evaluate") == 2
    assert "lowres evaluate needs checkpoint=RUN_DIR" in capsys.readouterr().err
    assert lowres_exit_code("evaluate", "checkpoint=") == 2
    assert "lowres evaluate needs checkpoint=RUN_DIR" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_new_run_over_an_unfinished_run_is_refused(tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("interrupted: true\n")
    assert lowres_exit_code("train", *SMOKE, f"hydra.run.dir={run_dir}") == 2
    assert "lowres train --resume" in capsys.readouterr().err
    assert (run_dir / ".hydra" / "config.yaml").read_text() == "interrupted: true\n"


def test_resume_without_a_checkpoint_is_refused(tmp_path, capsys):
    """--resume used to retrain silently from step 0."""
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- +task=xquad\n")
    assert lowres_exit_code("train", "--resume", str(run_dir)) == 2
    assert "no resumable checkpoint" in capsys.readouterr().err
    assert sorted(p.name for p in run_dir.iterdir()) == [".hydra"]


class _FrozenClock(datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime(2026, 1, 1, 10, 0, 0)


def test_two_runs_in_the_same_second_get_two_complete_folders(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("hydra.core.utils.datetime", _FrozenClock)
    for seed in (1, 2):
        run_lowres("train", *SMOKE, f"trainer.seed={seed}")
    base = tmp_path / "outputs" / "xquad" / "tiny-bert"
    folders = sorted(p.name for p in base.iterdir())
    assert folders == ["2026-01-01_10-00-00", "2026-01-01_10-00-00_2"]
    for name, seed in zip(folders, (1, 2), strict=True):
        metrics = json.loads((base / name / "metrics.json").read_text())
        assert metrics["seed"] == seed
        log = (base / name / "train_log.jsonl").read_text().splitlines()
        assert log and (base / name / ".hydra" / "config.yaml").is_file()
        assert f"seed: {seed}" in (base / name / ".hydra" / "config.yaml").read_text()
        assert not (base / name / LOCK_FILE).exists()
    out = capsys.readouterr().out
    # The folder is printed when the run starts and when it ends.
    assert out.count(f"run folder {Path('outputs/xquad/tiny-bert/2026-01-01_10-00-00_2')}") == 2


def test_claimed_folders_are_distinct(tmp_path):
    first = claim_new_folder(tmp_path / "run")
    second = claim_new_folder(tmp_path / "run")
    assert (first.name, second.name) == ("run", "run_2")


def test_a_folder_another_process_writes_is_refused(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lock = FolderLock(run_dir).acquire()
    try:
        assert lowres_exit_code("train", *SMOKE, f"hydra.run.dir={run_dir}") == 2
    finally:
        lock.release()
    err = capsys.readouterr().err
    assert f"Another lowres process (pid {os.getpid()})" in err
    assert sorted(p.name for p in run_dir.iterdir()) == []


def test_failed_commands_leave_no_junk_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert lowres_exit_code("train", *SMOKE, "freeze.strategy=nope") == 2
    assert lowres_exit_code("evaluate", f"checkpoint={tmp_path / 'missing'}") == 2
    # Not even the empty task/backbone folders above the default run folder.
    assert list((tmp_path / "outputs").iterdir()) == []


def test_config_errors_exit_2_like_every_user_error(capsys):
    """Hydra's own errors used to exit 1, lowres's 2."""
    assert lowres_exit_code("train", "+task=xquad", "backbone=nope") == 2
    err = capsys.readouterr().err
    assert "backbone=nope is not a backbone option" in err and "tiny-bert" in err
    assert "backbone_schema" not in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("train", "+task=xquad", "+trainer.lrr=1"), "trainer has no key 'lrr'"),
        (("train", "+task=xquad", "backbone=backbone_schema"), "is the schema behind"),
        (("evaluate", "checkpoint=x", "+backbone=tiny-xlmr"), "does not take +backbone"),
        (("evaluate", "checkpoint=x", "backbone=tiny-xlmr"), "does not take backbone"),
    ],
)
def test_silently_ignored_or_crashing_overrides_are_refused(tmp_path, args, needle, capsys):
    assert lowres_exit_code(*args, f"hydra.run.dir={tmp_path / 'run'}") == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_run_files_are_written_with_the_normal_mode(finished_run):
    expected = 0o666 & ~_umask()
    for relative in ("metrics.json", "predictions/en.json", "data_split.json"):
        assert stat.S_IMODE((finished_run / relative).stat().st_mode) == expected, relative


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


def test_evaluate_refuses_a_checkpoint_of_another_backbone(finished_run, tmp_path, capsys):
    """tiny-bert's trainable shapes fit tiny-xlmr; the manifest says what it was trained on."""
    code = lowres_exit_code(
        "evaluate",
        f"checkpoint={finished_run}",
        "backbone.name=tiny-xlmr",
        "backbone.architecture=xlmr",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "trained on another backbone (backbone.name='tiny-bert'" in err
    assert not (tmp_path / "eval").exists()


def test_evaluate_names_a_truncated_checkpoint(finished_run, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    weights = copy / "checkpoint" / "trainable.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    code = lowres_exit_code("evaluate", f"checkpoint={copy}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert code == 2
    err = capsys.readouterr().err
    assert f"The checkpoint file {weights} is damaged" in err and "Traceback" not in err


def test_a_relative_data_root_is_saved_absolute(tmp_path, monkeypatch, shared_data):
    """A saved relative data.root broke `lowres evaluate` run from another folder."""
    monkeypatch.chdir(shared_data.parent)
    run_dir = tmp_path / "run"
    run_lowres("train", *SMOKE, "data=local", f"data.root={shared_data.name}",
               "data.eval_languages=[en]", f"hydra.run.dir={run_dir}")  # fmt: skip
    saved = (run_dir / ".hydra" / "config.yaml").read_text()
    assert f"root: {shared_data.resolve()}\n" in saved
    monkeypatch.chdir(tmp_path)
    run_lowres("evaluate", f"checkpoint={run_dir}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_a_run_that_finishes_between_the_check_and_the_lock_keeps_its_config(
    finished_run, tmp_path, monkeypatch, capsys
):
    """The folder is checked under its lock: a run that finished there while this command
    was starting is refused before Hydra writes .hydra/ (it used to rewrite the config)."""
    run_dir = tmp_path / "run"
    real_acquire = FolderLock.acquire

    def finish_first(lock):
        # Another process ran the whole run in this folder just before the lock was taken.
        shutil.copytree(finished_run, lock.folder, dirs_exist_ok=True)
        return real_acquire(lock)

    monkeypatch.setattr(FolderLock, "acquire", finish_first)
    assert lowres_exit_code("train", *SMOKE, "trainer.seed=7", f"hydra.run.dir={run_dir}") == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert _digest(run_dir) == _digest(finished_run)


def test_a_folder_of_other_files_is_refused_and_left_as_it_was(tmp_path, capsys):
    folder = tmp_path / "mine"
    (folder / "predictions").mkdir(parents=True)
    (folder / "predictions" / "en.json").write_text('{"mine": 1}')
    (folder / "train_log.jsonl").write_text("my notes\n")
    before = _digest(folder)
    assert lowres_exit_code("train", *SMOKE, f"hydra.run.dir={folder}") == 2
    err = capsys.readouterr().err
    assert f"hydra.run.dir={folder} is a folder of other files (predictions, train_log" in err
    assert _digest(folder) == before
    assert sorted(p.name for p in folder.iterdir()) == ["predictions", "train_log.jsonl"]
    assert lowres_exit_code("evaluate", "checkpoint=x", f"hydra.run.dir={folder}") == 2
    assert _digest(folder) == before


def test_a_symlinked_lock_file_is_refused_and_its_target_kept(tmp_path, capsys):
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LOCK_FILE).symlink_to(precious)
    assert lowres_exit_code("train", *SMOKE, f"hydra.run.dir={run_dir}") == 2
    assert "is a symbolic link" in capsys.readouterr().err
    assert precious.read_text() == "keep me\n"
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILE]


def test_a_symlinked_predictions_folder_is_refused_and_its_target_kept(
    finished_run, tmp_path, capsys
):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "en.json").write_text("theirs")
    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    shutil.rmtree(copy / "predictions")
    (copy / "predictions").symlink_to(elsewhere, target_is_directory=True)
    (copy / "metrics.json").unlink()
    # --resume of the copy (an unfinished run now) and evaluate into a linked folder.
    code = lowres_exit_code("train", *SMOKE, "resume=true", f"hydra.run.dir={copy}")
    assert code == 2
    assert f"{copy / 'predictions'} is a symbolic link" in capsys.readouterr().err
    assert [p.name for p in elsewhere.iterdir()] == ["en.json"]
    assert (elsewhere / "en.json").read_text() == "theirs"


def test_run_files_are_never_written_through_a_link(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = RunFolder(tmp_path / "run")
    (run.path / "predictions").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(LowresError, match="is a symbolic link"):
        run.write_json("predictions/en.json", {"q1": "a"})
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize(
    ("wrong", "needle"),
    [
        ("prompt.layers=[0,99]", "prompt.layers"),
        ("prompt.length=100000", "does not fit the backbone's 512 positions"),
        pytest.param("trainer.device=cuda", "cuda", marks=NO_GPU),
        pytest.param("trainer.precision=fp16", "needs a CUDA device", marks=NO_GPU),
    ],
)
def test_a_user_error_before_training_does_not_block_the_corrected_command(
    tmp_path, wrong, needle, capsys
):
    run_dir = tmp_path / "run"
    assert lowres_exit_code("train", *SMOKE, "prompt=deep", wrong, f"hydra.run.dir={run_dir}") == 2
    assert needle in capsys.readouterr().err
    assert not run_dir.exists()
    given = tmp_path / "given"
    given.mkdir()
    assert lowres_exit_code("train", *SMOKE, "prompt=deep", wrong, f"hydra.run.dir={given}") == 2
    assert list(given.iterdir()) == []  # the user's empty folder stays, empty
    run_lowres("train", *SMOKE, "prompt=deep", f"hydra.run.dir={run_dir}")
    assert (run_dir / "metrics.json").is_file()


def test_evaluate_refuses_weights_that_are_not_the_runs_own(finished_run, tmp_path, capsys):
    """Same names and shapes (as another backbone's weights can have), other values: only
    the manifest's hash tells them apart."""
    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    weights = copy / "checkpoint" / "trainable.safetensors"
    manifest = json.loads((copy / "checkpoint" / "manifest.json").read_text())
    assert (
        manifest["sha256"]["trainable.safetensors"]
        == hashlib.sha256(weights.read_bytes()).hexdigest()
    )
    state = load_file(weights)
    save_file({name: value + 0.5 for name, value in state.items()}, weights)
    code = lowres_exit_code("evaluate", f"checkpoint={copy}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert code == 2
    err = capsys.readouterr().err
    assert "holds other weights than the run trained" in err and "Traceback" not in err
    assert not (tmp_path / "eval").exists()


def test_a_preset_name_cannot_load_a_file_outside_the_config_folders(tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "x.yaml").write_text("# @package _global_\ntrainer:\n  lr: 0.5\n")
    # Up to / from any config folder, then down to the file.
    escape = "/".join([".."] * 40) + str(elsewhere / "x")
    for verb, option in (("train", f"+method={escape}"), ("evaluate", f"prompt={escape}")):
        extra = ["checkpoint=x"] if verb == "evaluate" else SMOKE
        code = lowres_exit_code(verb, *extra, option, f"hydra.run.dir={tmp_path / 'run'}")
        assert code == 2
        assert "not a path, and it may not lead out of" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    sweep = [*SMOKE, f"sweep.methods=[{escape}]", f"hydra.sweep.dir={tmp_path / 's'}"]
    assert lowres_exit_code("sweep", *sweep) == 2
    assert "no method/" in capsys.readouterr().err


def test_a_backbone_name_cannot_place_the_run_outside_outputs(tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    code = lowres_exit_code("train", *SMOKE, "backbone.name=../../../elsewhere")
    assert code == 2
    err = capsys.readouterr().err
    assert "lies outside outputs/: backbone.name=../../../elsewhere leads out of it" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]
