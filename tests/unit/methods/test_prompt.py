"""The method on tiny models: injection, prompt init, alignment through the CLI, baselines."""

from __future__ import annotations

import pytest
import torch
from helpers import build_flat, tiny_backbone

from lowres.errors import ConfigError
from lowres.methods.prompt import resolve_layers


def tiny(architecture="bert", task_kind="extractive_qa"):
    return tiny_backbone(architecture, task_kind)


def method(backbone, **options):
    settings = {
        "task_kind": "extractive_qa",
        "family": "encoder",
        "freeze": "backbone",
        "freeze_k": 0,
        "prompt_length": 4,
        "prompt_init": "vocab",
        "prompt_init_text": "",
        "prompt_layers": "input",
        "adapter": "none",
        "adapter_options": {},
        "seed": 0,
    }
    settings.update(options)
    return build_flat(backbone, **settings)


def test_layer_selection_and_its_errors():
    assert resolve_layers("input", 6) == []
    assert resolve_layers("all", 6) == [1, 2, 3, 4, 5]
    assert resolve_layers([4, 0, 4], 6) == [0, 4]
    with pytest.raises(ConfigError, match=r"0\.\.5"):
        resolve_layers([6], 6)


def test_deep_prompts_start_as_the_input_prompt_function():
    """At initialisation deep injection writes exactly what the input prompt produces there."""
    backbone = tiny()
    probe = torch.tensor([backbone.tokenizer("")["input_ids"]])  # the input init probes with
    mask = torch.ones_like(probe)
    shallow = method(tiny(), prompt_layers="input").eval()
    deep = method(backbone, prompt_layers="all").eval()
    with torch.no_grad():
        a = shallow(input_ids=probe, attention_mask=mask)["start_logits"]
        b = deep(input_ids=probe, attention_mask=mask)["start_logits"]
        assert torch.allclose(a, b, atol=1e-6)
        ids = torch.randint(5, 200, (2, 12))
        before = deep(input_ids=ids, attention_mask=torch.ones_like(ids))["start_logits"]
        deep.deep_prompts.add_(1.0)
        after = deep(input_ids=ids, attention_mask=torch.ones_like(ids))["start_logits"]
    assert not torch.allclose(before, after, atol=1e-4), "injected vectors must matter"


def test_deep_injection_works_on_xlmr_and_gets_gradients():
    model = method(tiny("xlmr"), prompt_layers=[0, 1])
    ids = torch.randint(5, 200, (2, 10))
    out = model(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        start_positions=torch.tensor([1, 2]),
        end_positions=torch.tensor([2, 3]),
    )
    out["loss"].backward()
    assert model.deep_prompts.grad is not None and model.deep_prompts.grad.abs().sum() > 0
    assert model.prompt.grad is None or model.deep_prompts.shape == (2, 4, 32)


def test_prompt_plus_sequence_must_fit_xlmr_positions():
    model = method(tiny("xlmr"), prompt_length=20)
    assert model.max_text_positions() == 514 - 2 - 20
    assert model.fits(492) and not model.fits(493)
    ids = torch.randint(5, 200, (1, 500))
    with pytest.raises(ConfigError, match="positions"):
        model(input_ids=ids, attention_mask=torch.ones_like(ids))


def test_text_init_uses_the_words_embeddings():
    backbone = tiny()
    model = method(backbone, prompt_init="text", prompt_init_text="the city", prompt_length=4)
    ids = backbone.tokenizer("the city", add_special_tokens=False)["input_ids"]
    table = backbone.model.get_input_embeddings().weight
    expected = table[torch.tensor((ids * 4)[:4])]
    assert torch.allclose(model.prompt.detach(), expected)


def test_head_only_keeps_the_prompt_fixed():
    model = method(tiny(), freeze="head_only", prompt_layers="all")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"model.qa_outputs.weight", "model.qa_outputs.bias"}


def test_lora_trains_adapters_and_head_only():
    model = method(
        tiny(),
        adapter="lora",
        prompt_length=0,
        adapter_options={"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["query", "value"]},
    )
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"model.qa_outputs.weight", "model.qa_outputs.bias"} <= trainable
    lora = trainable - {"model.qa_outputs.weight", "model.qa_outputs.bias"}
    # 2 layers x (query, value) x (A, B)
    assert len(lora) == 8 and all("lora_" in n for n in lora)


def test_lora_on_missing_modules_names_them():
    with pytest.raises(ConfigError, match="q_proj"):
        method(
            tiny(),
            adapter="lora",
            prompt_length=0,
            adapter_options={"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["q_proj"]},
        )


def test_dropout_is_off_only_inside_a_fully_frozen_backbone():
    def rates(model):
        base = {m.p for m in model.model.base_model.modules() if isinstance(m, torch.nn.Dropout)}
        return base

    assert rates(method(tiny(), freeze="backbone")) == {0.0}
    assert rates(method(tiny(), freeze="none", prompt_length=0)) == {0.1}
    assert rates(method(tiny(), freeze="bitfit")) == {0.1}
    assert rates(method(tiny(), freeze="backbone", backbone_dropout=True)) == {0.1}
    assert rates(method(tiny(), freeze="none", backbone_dropout=False)) == {0.0}
    lora = {"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["query"]}
    assert 0.1 in rates(method(tiny(), adapter="lora", prompt_length=0, adapter_options=lora))


def test_prompt_lr_null_follows_the_weights_rate_and_a_given_one_is_used():
    """metrics.json records prompt_lr as given; null means the prompt trains at "lr"."""

    def prompt_rate(prompt_lr):
        model = method(tiny(), prompt_layers="all")
        groups = model.param_groups(lr=0.5, weight_decay=0.0, prompt_lr=prompt_lr)
        prompts = {id(model.prompt), id(model.deep_prompts)}
        return {g["lr"] for g in groups if any(id(p) in prompts for p in g["params"])}

    assert prompt_rate(None) == {0.5}
    assert prompt_rate(0.03) == {0.03}
