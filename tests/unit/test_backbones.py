"""Loading backbones: local model folders (checks, family, LoRA targets), misdirected paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import tiny_backbone
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lowres.backbones import check_model_folder, load_backbone, resolve_local
from lowres.errors import ConfigError, LowresError
from lowres.methods.build import block_linear_names, lora_targets_of
from lowres.schema import BackboneConfig, config_dir, register_schemas, validate
from lowres.tiny_models import tiny_backbone_dir

register_schemas()


def saved_folder(tmp_path: Path, architecture: str, name: str) -> Path:
    """A tiny model saved the way a user's fine-tuned model would be."""
    folder = tmp_path / name
    shutil.copytree(tiny_backbone_dir(architecture), folder)
    return folder


def local(path: Path | str, **fields) -> BackboneConfig:
    spec = BackboneConfig(
        name=Path(path).name, loader="local", path=str(path), family="auto", **fields
    )
    return OmegaConf.structured(spec)


def test_family_is_read_from_the_folder(tmp_path):
    encoder = local(saved_folder(tmp_path, "bert", "my-bert"))
    decoder = local(saved_folder(tmp_path, "llama", "my-llama"))
    resolve_local(encoder)
    resolve_local(decoder)
    assert (encoder.family, decoder.family) == ("encoder", "decoder")
    # a family given by the user is kept, and checked when the model loads
    given = local(tmp_path / "my-bert", lora_targets=[])
    given.family = "decoder"
    resolve_local(given)
    assert given.family == "decoder"
    with pytest.raises(ConfigError, match="is an encoder"):
        load_backbone(
            name="my-bert",
            loader="local",
            path=str(tmp_path / "my-bert"),
            architecture="",
            task_kind="extractive_qa",
            num_labels=2,
            seed=0,
            family="decoder",
        )


def test_local_folder_loads_the_same_weights_as_the_tiny_build(tmp_path):
    folder = saved_folder(tmp_path, "bert", "my-bert")
    loaded = load_backbone(
        name="my-bert",
        loader="local",
        path=str(folder),
        architecture="",
        task_kind="classification",
        num_labels=3,
        seed=0,
    )
    reference = tiny_backbone("bert", task_kind="classification")
    mine = dict(loaded.model.named_parameters())
    theirs = dict(reference.model.named_parameters())
    assert loaded.path == str(folder)
    assert loaded.model.classifier.out_features == 3
    embeddings = "bert.embeddings.word_embeddings.weight"
    assert mine[embeddings].equal(theirs[embeddings])


def test_lora_targets_are_found_in_the_model():
    assert lora_targets_of(tiny_backbone("bert").model) == ["query", "value"]
    llama = tiny_backbone("llama", family="decoder").model
    assert lora_targets_of(llama) == ["q_proj", "v_proj"]


def test_all_linear_names_every_linear_layer_of_a_block():
    assert block_linear_names(tiny_backbone("bert").model) == ["query", "key", "value", "dense"]
    llama = tiny_backbone("llama", family="decoder").model
    projections = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert block_linear_names(llama) == projections


def test_lora_targets_name_the_linear_layers_when_none_is_known():
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(ConfigError, match=r"adapter\.target_modules"):
        lora_targets_of(model)


@pytest.mark.parametrize(
    ("remove", "needle"),
    [
        ("config.json", "no config.json"),
        ("model.safetensors", "no weights"),
        ("tokenizer", "no tokenizer"),
    ],
)
def test_a_folder_without_a_model_is_refused_with_the_fix(tmp_path, remove, needle):
    folder = saved_folder(tmp_path, "bert", "broken")
    names = ["tokenizer.json", "tokenizer_config.json"] if remove == "tokenizer" else [remove]
    for name in names:
        (folder / name).unlink()
    with pytest.raises(LowresError, match=needle) as info:
        check_model_folder(str(folder))
    assert "save_pretrained" in str(info.value) and str(folder) in str(info.value)


def test_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(LowresError, match="is not a folder"):
        check_model_folder(str(tmp_path / "nowhere"))


def test_remote_code_is_refused_unless_trusted(tmp_path):
    folder = saved_folder(tmp_path, "bert", "custom")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(LowresError, match=r"backbone\.trust_remote_code=true"):
        resolve_local(local(folder))
    assert check_model_folder(str(folder), trust_remote_code=True) == folder


def compose_with_hydra(*overrides: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(
            config_name="train", overrides=["+task=xquad", *overrides], return_hydra_config=True
        )


def test_local_runs_are_filed_under_the_folder_name():
    cfg = compose_with_hydra("backbone=local", "backbone.path=/models/xlmr-ft-tydiqa/")
    assert cfg.backbone.name == "xlmr-ft-tydiqa"
    assert cfg.hydra.run.dir.startswith("outputs/xquad/xlmr-ft-tydiqa/")


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["backbone=local"], "backbone=local needs backbone.path=DIR"),
        (["backbone=mbert", "backbone.path={folder}"], "backbone=local backbone.path="),
        (["backbone=minilm", "backbone.family=auto"], "backbone.family=auto"),
    ],
)
def test_misdirected_backbone_paths_are_refused(tmp_path, overrides, needle):
    overrides = [o.format(folder=tmp_path) for o in overrides]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["+task=xquad", *overrides])
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        validate(cfg)


def test_a_packaged_backbone_given_a_folder_points_to_local(tmp_path):
    with pytest.raises(ConfigError, match="backbone=local"):
        load_backbone(
            name="minilm",
            loader="packaged",
            path=str(tmp_path),
            architecture="",
            task_kind="extractive_qa",
            num_labels=2,
            seed=0,
        )
