"""``backbone=local backbone.path=DIR``: a saved model folder trains, evaluates and is named."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import run_lowres

from lowres.tiny_models import tiny_backbone_dir

SMOKE_LOCAL = ["trainer=smoke", "trainer.progress=false", "backbone=local"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Tiny encoder and decoder saved as a user's own model folders would be."""
    root = tmp_path_factory.mktemp("models")
    for architecture, name in (("bert", "my-bert"), ("llama", "my-llama")):
        shutil.copytree(tiny_backbone_dir(architecture), root / name)
    return root


def test_an_encoder_folder_trains_and_evaluates_under_its_name(folders, tmp_path):
    run_dir = tmp_path / "run"
    run_lowres(
        "train", "+task=xquad", *SMOKE_LOCAL, f"backbone.path={folders / 'my-bert'}",
        f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["backbone"] == "my-bert" and metrics["train_steps"] == 4
    assert set(metrics["per_language"]) == {"en", "de", "es"}
    config = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "loader: local" in config and "family: auto" in config
    # lowres evaluate rebuilds it from the saved config: same folder, same scores
    out = tmp_path / "eval"
    run_lowres(
        "evaluate", f"checkpoint={run_dir}", "trainer.progress=false", f"hydra.run.dir={out}"
    )
    restored = json.loads((out / "metrics.json").read_text())
    assert restored["backbone"] == "my-bert"
    assert restored["per_language"] == metrics["per_language"]


def test_a_decoder_folder_gets_lora_on_its_attention_projections(folders, tmp_path):
    run_dir = tmp_path / "run"
    run_lowres(
        "train", "+task=pawsx", *SMOKE_LOCAL, f"backbone.path={folders / 'my-llama'}",
        "prompt=none", "adapter=lora", "data.pool_fraction=0.5", f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["backbone"] == "my-llama" and metrics["average"]["accuracy"] >= 0
    trained = json.loads((run_dir / "checkpoint" / "manifest.json").read_text())["parameters"]
    projections = {name.split(".")[-4] for name in trained}
    assert projections == {"q_proj", "v_proj"}  # found in the model: lora_targets is []
    assert all(".lora_" in name for name in trained)  # a decoder has no new head
    # and the adapter is a PEFT folder for a causal LM, with the projections found
    peft_config = json.loads((run_dir / "checkpoint" / "peft" / "adapter_config.json").read_text())
    assert peft_config["task_type"] == "CAUSAL_LM" and peft_config["modules_to_save"] is None
    assert set(peft_config["target_modules"]) == {"q_proj", "v_proj"}


def test_a_folder_without_a_model_is_one_paragraph(tmp_path, capsys):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    (empty / "notes.txt").write_text("weights go here")
    with pytest.raises(SystemExit) as exit_info:
        run_lowres(
            "train", "+task=xquad", *SMOKE_LOCAL, f"backbone.path={empty}",
            f"hydra.run.dir={tmp_path / 'run'}",
        )  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no config.json" in err and "notes.txt" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "metrics.json").exists()
