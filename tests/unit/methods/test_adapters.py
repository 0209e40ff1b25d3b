"""Adapters by registry entry: which weights each injects and trains, and PEFT's refusals."""

from __future__ import annotations

import pytest
from helpers import build_flat, tiny_backbone

from lowres.errors import ConfigError
from lowres.methods.peft_export import peft_blocker


def trained_backbone_weights(model) -> set[str]:
    """Trainable tensors inside the backbone (the head excluded)."""
    return {n for n, p in model.model.bert.named_parameters() if p.requires_grad}


def test_ia3_trains_only_its_scaling_vectors_on_peft_s_default_modules() -> None:
    model = build_flat(tiny_backbone(), adapter="ia3", prompt_length=0)
    trained = trained_backbone_weights(model)
    assert trained and all(".ia3_l." in name for name in trained)
    modules = {name.split(".ia3_l.")[0].split(".", 3)[-1] for name in trained}
    # PEFT matches "output.dense" as a name suffix: the attention's output projection too
    assert modules == {
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "output.dense",
    }
    assert peft_blocker(model) is None


def test_dora_is_lora_with_a_magnitude_vector() -> None:
    options = {"target_modules": ["query", "value"], "options": {"use_dora": True}}
    model = build_flat(tiny_backbone(), adapter="lora", adapter_options=options, prompt_length=0)
    trained = trained_backbone_weights(model)
    assert any("lora_magnitude_vector" in name for name in trained)
    assert all("lora_" in name for name in trained)


def test_any_peft_tuner_by_its_type() -> None:
    options = {"peft_type": "loha", "target_modules": ["query"], "options": {"r": 2}}
    model = build_flat(tiny_backbone(), adapter="peft", adapter_options=options, prompt_length=0)
    trained = trained_backbone_weights(model)
    assert trained and all("hada_" in name for name in trained)
    assert model.model.peft_config["default"].r == 2


def test_a_peft_type_that_cannot_be_injected_is_refused() -> None:
    options = {"peft_type": "prompt_tuning"}
    with pytest.raises(ConfigError, match="adapter.peft_type.*LORA"):
        build_flat(tiny_backbone(), adapter="peft", adapter_options=options, prompt_length=0)


def test_an_option_peft_does_not_take_names_the_config_class() -> None:
    options = {"options": {"rank": 4}}
    with pytest.raises(ConfigError, match="LoraConfig refused.*rank"):
        build_flat(tiny_backbone(), adapter="lora", adapter_options=options, prompt_length=0)
