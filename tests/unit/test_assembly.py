"""One assembly step: a run's config -> every part of the run; the recipes read no config."""

from __future__ import annotations

import ast
import dataclasses
import json

import pytest
import torch
from helpers import REPO, run_lowres
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from safetensors.torch import load_file

import lowres.assembly
from lowres.assembly import assemble, assemble_evaluation
from lowres.builders import saved_config
from lowres.errors import ConfigError
from lowres.recipes.preflight import start_up
from lowres.recipes.pseudo import add_pseudo_data
from lowres.runfolder import RunFolder
from lowres.schema import config_dir, register_schemas
from lowres.training.clock import TrainClock
from lowres.training.progress import RichProgress

register_schemas()

TINY_PROMPT_ALIGN = [
    "+task=xquad",
    "+method=prompt_align",
    "backbone=tiny-bert",
    "trainer=smoke",
    "trainer.progress=false",
    "data.pool_fraction=0.2",
]


def run_config(*overrides: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*TINY_PROMPT_ALIGN, *overrides])
    start_up(cfg)
    return cfg


def test_a_tiny_prompt_align_run_is_assembled_in_one_call(tmp_path):
    cfg = run_config()
    run = RunFolder(tmp_path / "run")
    parts = assemble(cfg, run, pseudo_step=add_pseudo_data)

    # The plain values the recipe records, read once here (the smoke trainer, xquad's defaults).
    assert (parts.backbone, parts.source_language, parts.k, parts.seed) == (
        "tiny-bert",
        "en",
        0,
        42,
    )
    assert (parts.source_pool, parts.select_on, parts.init_from) == (True, "source", None)
    # The data: 32 source-pool questions (trainer=smoke), no pseudo data, no dev set.
    assert parts.task.name == "xquad" and parts.trains
    assert len(parts.split.train) == 32 and parts.split.selection == []
    assert sorted(parts.split.evaluation) == ["de", "en", "es"]
    assert parts.pseudo.summary()["kind"] == "none"
    # The model as the prompt_align preset builds it on tiny-bert.
    assert parts.parameters == {"trainable_parameters": 8514, "total_parameters": 138114}
    assert parts.method == {
        "freeze": "backbone",
        "prompt_length": 20,
        "prompt_layers": "all",
        "align_kind": "contrastive",
        "align_weight": 0.1,
        "adapter": "lora",
        "lr": 0.001,
        "prompt_lr": 0.01,
    }
    assert parts.manifest["method"] == parts.method
    assert parts.manifest["config"]["backbone"]["name"] == "tiny-bert"
    assert parts.peft_export is not None  # LoRA exports a PEFT adapter folder
    # The fit: 36 windows of 32 questions, 4 planned steps, alignment on, no dev selection.
    assert parts.train_windows == len(parts.trainer.train_dataset) == 36
    assert (parts.args.max_steps, parts.args.learning_rate, parts.learning_rate) == (4, 1e-3, 1e-3)
    assert parts.trainer.alignment is not None and parts.trainer.alignment.weight == 0.1
    assert parts.selection is None and parts.resume_from is None
    callbacks = parts.trainer.callback_handler.callbacks
    assert any(c is parts.progress for c in callbacks) and isinstance(parts.progress, RichProgress)
    assert callbacks[-1] is parts.clock and isinstance(parts.clock, TrainClock)
    # Written on the way; nothing trained yet.
    written = {p.name for p in run.path.iterdir()}
    assert {"data_split.json", "data_files.json", "environment.json"} <= written
    assert "metrics.json" not in written and "checkpoint" not in written
    assert list((run.path / "trainer").iterdir()) == []
    split = json.loads((run.path / "data_split.json").read_text())
    assert len(split["train"]) == 32 and split["pseudo"] == []
    distances = parts.held_out()
    assert sorted(distances) == ["de", "es"] and all(d["pairs"] == 16 for d in distances.values())
    # Built objects and plain values: no field is a config group.
    fields = {f.name: getattr(parts, f.name) for f in dataclasses.fields(parts)}
    assert [name for name, value in fields.items() if OmegaConf.is_config(value)] == []
    with pytest.raises(dataclasses.FrozenInstanceError):
        parts.k = 4
    parts.progress.stop()


def test_the_pseudo_step_gets_the_pseudo_group_and_the_teachers_arguments(tmp_path):
    """The pseudo step is handed in (it lives above this layer); a self-training teacher
    predicts with the run's own arguments, in the run folder's teacher/."""
    cfg = run_config("pseudo=self_train", "pseudo.teacher=/nowhere")
    calls = []

    class Stop(Exception):
        pass

    def pseudo_step(pseudo, task, split, *, data, args):
        calls.append((pseudo.kind, task.name, data.source_language, args))
        raise Stop

    with pytest.raises(Stop):
        assemble(cfg, RunFolder(tmp_path / "run"), pseudo_step=pseudo_step)
    [(kind, task, source, args)] = calls
    assert (kind, task, source) == ("self_train", "xquad", "en")
    assert args.output_dir == str(tmp_path / "run" / "teacher") and args.learning_rate == 0.0


def test_nothing_to_train_on_is_refused_before_the_backbone_loads(tmp_path, monkeypatch):
    def must_not_load(*args, **kwargs):
        raise AssertionError("the backbone was loaded for a run with nothing to train on")

    monkeypatch.setattr(lowres.assembly, "build_run_model", must_not_load)
    cfg = run_config("data.source_pool=false")
    with pytest.raises(ConfigError, match=r"Nothing to train on: the source pool is off"):
        assemble(cfg, RunFolder(tmp_path / "run"), pseudo_step=add_pseudo_data)


# The functions of a recipe allowed to read the command's config: its start (checks, run
# folder) and, for evaluate, the composition of the run config it hands to the assembly.
READS_CONFIG = {
    "lowres/recipes/train.py": {"start"},
    "lowres/recipes/evaluate.py": {"start", "checkpoint_config", "switch_task"},
}


def config_reads(path) -> dict[str, list[str]]:
    """``function -> ["cfg.x", ...]``: attribute reads on a name that holds a config."""
    reads: dict[str, list[str]] = {}
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef):
            continue
        for node in ast.walk(function):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id.endswith("cfg")
            ):
                reads.setdefault(function.name, []).append(f"{node.value.id}.{node.attr}")
    return reads


@pytest.mark.parametrize("recipe", sorted(READS_CONFIG))
def test_the_recipes_read_no_config_beyond_their_start(recipe):
    reads = config_reads(REPO / recipe)
    assert set(reads) <= READS_CONFIG[recipe], {
        name: found for name, found in reads.items() if name not in READS_CONFIG[recipe]
    }
    calls = {
        node.func.id
        for node in ast.walk(ast.parse((REPO / recipe).read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert calls & {"assemble", "assemble_evaluation"}


def test_the_config_read_check_finds_reads(tmp_path):
    recipe = tmp_path / "recipe.py"
    recipe.write_text(
        "def train(cfg):\n    return cfg.trainer.seed\n\ndef start(run_cfg):\n    run_cfg.x\n"
    )
    assert config_reads(recipe) == {"train": ["cfg.trainer"], "start": ["run_cfg.x"]}


def test_a_finished_run_is_assembled_for_evaluation(tmp_path):
    """``lowres evaluate``'s parts: the run's model with its trained parameters restored, an
    evaluation-only trainer, and what its record names."""
    trained = tmp_path / "trained"
    run_lowres("train", *TINY_PROMPT_ALIGN, "trainer.max_steps=1", f"hydra.run.dir={trained}")
    cfg = saved_config(trained)
    cfg.checkpoint = str(trained)
    start_up(cfg)
    parts = assemble_evaluation(cfg, RunFolder(tmp_path / "evaluated"))
    assert (parts.task.name, parts.trained_task) == ("xquad", "xquad")
    assert (parts.backbone, parts.checkpoint) == ("tiny-bert", str(trained))
    saved = json.loads((trained / "metrics.json").read_text())
    assert parts.parameters == {
        "trainable_parameters": saved["trainable_parameters"],
        "total_parameters": saved["total_parameters"],
    }
    assert parts.trainer.train_dataset is None and parts.trainer.alignment is None
    assert parts.trainer.args.learning_rate == 0.0
    restored = load_file(trained / "checkpoint" / "trainable.safetensors")
    state = parts.model.state_dict()
    assert restored and all(torch.equal(state[name], value) for name, value in restored.items())
    # ... and they are the trained ones, not the seed's fresh initialisation.
    fresh = assemble(run_config(), RunFolder(tmp_path / "fresh"), pseudo_step=add_pseudo_data)
    fresh.progress.stop()
    initial = fresh.model.state_dict()
    assert any(not torch.equal(initial[name], value) for name, value in restored.items())
    parts.progress.stop()
