"""Progress output in a non-interactive log: one line per record, a heartbeat, verbatim text."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from lowres.cli import user_errors
from lowres.errors import LowresError
from lowres.training.progress import RichProgress, with_heartbeat


def test_a_long_log_record_stays_on_one_line(capsys):
    progress = RichProgress(bars=False)
    logs = {f"metric_{i}": 0.123456 for i in range(12)}  # far wider than 80 columns
    progress.on_log(None, SimpleNamespace(is_world_process_zero=True, global_step=7), None, logs)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("step 7  metric_0 0.1235")
    assert lines[0].endswith("metric_11 0.1235")


def test_training_without_bars_prints_a_heartbeat(capsys):
    progress = RichProgress(bars=False, heartbeat_s=0.0)
    state = SimpleNamespace(is_world_process_zero=True, global_step=0, max_steps=10)
    progress.on_train_begin(None, state, None)
    state.global_step = 3
    progress.on_step_end(None, state, None)
    progress.stop()
    assert "train: step 3/10" in capsys.readouterr().err


def test_a_long_computation_prints_a_heartbeat(capsys):
    slow = with_heartbeat(lambda: time.sleep(0.35) or 42, "tokenizing 9 train records", 0.1)
    assert slow() == 42
    beats = [line for line in capsys.readouterr().err.splitlines() if "tokenizing" in line]
    assert 2 <= len(beats) <= 4, beats


def test_error_messages_are_shown_verbatim(capsys):
    """rich markup ate [de,es] and [answer_start:...] from messages."""
    message = "sweep.languages=[de,es] is bad; context[answer_start:answer_start + 5] differs"
    with pytest.raises(SystemExit) as exit_info, user_errors():
        raise LowresError(message)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"
