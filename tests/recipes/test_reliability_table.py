"""docs/reliability.md cannot drift: its tests exist and its commands behave as it says."""

from __future__ import annotations

import hashlib
import re
import shlex
from pathlib import Path

import pytest
from helpers import REPO, SMOKE, run_lowres

TABLE = REPO / "docs" / "reliability.md"


def _rows() -> list[dict[str, str]]:
    lines = [line for line in TABLE.read_text().splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip().strip("|").split("|")]
    rows = []
    # Later sections repeat the header and its | --- | line; they are not rows.
    for line in (line for line in lines[2:] if line not in lines[:2]):
        # No cell holds a "|" of its own, so the pipes are the column borders.
        cells = [cell.strip() for cell in line.strip()[1:-1].split("|")]
        assert len(cells) == len(header), line
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_every_row_names_a_test_that_exists():
    rows = _rows()
    assert len(rows) >= 25
    for row in rows:
        path, _, name = row["test"].partition("::")
        source = (REPO / path).read_text()
        assert re.search(rf"^def {re.escape(name)}\(", source, re.MULTILINE), row["test"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("catalogue") / "run"
    run_lowres("train", *SMOKE, f"hydra.run.dir={run_dir}")
    return run_dir


def test_the_catalogue_holds(finished_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default folders, if any, land here
    before = _digest(finished_run)
    commands = [row for row in _rows() if row["command"]]
    assert len(commands) >= 15
    for number, row in enumerate(commands):
        scratch = tmp_path / f"case{number}"
        scratch.mkdir()
        command = row["command"].strip("`").format(run=finished_run, tmp=scratch)
        args = shlex.split(command)
        assert args[0] == "lowres", command
        code = 0
        try:
            run_lowres(*args[1:])
        except SystemExit as exit_info:
            code = exit_info.code
        err = capsys.readouterr().err
        assert str(code) == row["exit"], (command, err[-1500:])
        assert row["message (excerpt)"] in err, (command, err[-1500:])
        assert "Traceback" not in err, command
        assert _digest(finished_run) == before, command
