"""Overrides read through Hydra's parser: key, prefix and value as Hydra sees them."""

from __future__ import annotations

from lowres.overrides import key_of, read, read_all


def test_an_override_is_read_as_hydra_reads_it():
    added = read("+task=xquad")
    assert (added.prefix, added.key, added.value_text, added.sweep) == ("+", "task", "xquad", False)
    grid = read("++sweep.grid={align.weight:[0,0.1]}")
    assert (grid.prefix, grid.key) == ("++", "sweep.grid")
    assert grid.value() == {"align.weight": [0, 0.1]}
    assert read("~prompt").prefix == "~" and read("~prompt").key == "prompt"
    assert read("hydra/launcher=slurm").key == "hydra/launcher"
    # A value that holds '=' or ':' keeps them: the key ends where Hydra's key ends.
    path = read("hydra.searchpath=[file:///tmp/a,pkg://x]")
    assert path.value_text == "[file:///tmp/a,pkg://x]"
    assert path.value() == ["file:///tmp/a", "pkg://x"]
    assert read("data.root='/tmp/a=b'").value() == "/tmp/a=b"
    assert read("trainer.seed=1,2").sweep


def test_flags_and_text_hydra_cannot_parse_are_not_overrides():
    assert read("--cfg") is None and read("job") is None and read("-m") is None
    assert read("a=[1,") is None  # left to Hydra, whose compose names the syntax error
    assert key_of("--resume") == ""
    tokens = ["+task=xquad", "--cfg", "job", "trainer.lr=1e-3"]
    assert [s.key for s in read_all(tokens)] == ["task", "trainer.lr"]
