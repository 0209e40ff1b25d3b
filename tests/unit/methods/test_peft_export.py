"""Which trained states have a PEFT adapter form, and which heads it saves."""

from __future__ import annotations

from helpers import build_flat, tiny_backbone

from lowres.methods.peft_export import head_modules, peft_blocker

LORA = {"target_modules": ["query", "value"]}


def test_lora_with_a_frozen_backbone_exports_with_its_head():
    model = build_flat(tiny_backbone(), adapter="lora", adapter_options=LORA, prompt_length=0)
    assert peft_blocker(model) is None
    assert head_modules(model.model) == ["qa_outputs"]


def test_a_soft_prompt_has_no_peft_form():
    model = build_flat(
        tiny_backbone(), adapter="lora", adapter_options=LORA, prompt_length=4, prompt_layers="all"
    )
    reason = peft_blocker(model)
    assert "soft prompt of 4 vectors" in reason and "deep injection" in reason


def test_backbone_weights_trained_outside_lora_have_no_peft_form():
    model = build_flat(
        tiny_backbone(), adapter="lora", adapter_options=LORA, prompt_length=0, freeze="bitfit"
    )
    reason = peft_blocker(model)
    assert "outside LoRA" in reason and "bias" in reason
