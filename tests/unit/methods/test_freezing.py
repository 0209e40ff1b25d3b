"""Freezing strategies on tiny BERT QA, XLM-R classification and Llama/Qwen causal LMs."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForQuestionAnswering,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
)

from lowres.errors import ConfigError
from lowres.methods.freezing import (
    apply_freezing,
    count_parameters,
    find_layers,
    head_parameter_names,
    tied_head_parameters,
)
from lowres.registry import FREEZING_STRATEGIES

SMALL = {"vocab_size": 100, "hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32}


def bert_qa() -> BertForQuestionAnswering:
    torch.manual_seed(0)
    return BertForQuestionAnswering(BertConfig(num_hidden_layers=3, **SMALL))


def xlmr_cls() -> XLMRobertaForSequenceClassification:
    torch.manual_seed(0)
    config = XLMRobertaConfig(
        num_hidden_layers=2, max_position_embeddings=64, num_labels=3, **SMALL
    )
    return XLMRobertaForSequenceClassification(config)


def llama(tie: bool = False) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        num_hidden_layers=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
        **SMALL,
    )
    return LlamaForCausalLM(config)


def qwen2() -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(
        num_hidden_layers=2, num_key_value_heads=1, max_position_embeddings=64, **SMALL
    )
    return Qwen2ForCausalLM(config)


ENCODER_LAYER = [
    "attention.self.query.weight",
    "attention.self.query.bias",
    "attention.self.key.weight",
    "attention.self.key.bias",
    "attention.self.value.weight",
    "attention.self.value.bias",
    "attention.output.dense.weight",
    "attention.output.dense.bias",
    "attention.output.LayerNorm.weight",
    "attention.output.LayerNorm.bias",
    "intermediate.dense.weight",
    "intermediate.dense.bias",
    "output.dense.weight",
    "output.dense.bias",
    "output.LayerNorm.weight",
    "output.LayerNorm.bias",
]


ENCODER_EMBEDDINGS = [
    "embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight",
    "embeddings.token_type_embeddings.weight",
    "embeddings.LayerNorm.weight",
    "embeddings.LayerNorm.bias",
]


LLAMA_LAYER = [
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
]


def layer_names(prefix: str, layers: range, suffixes: list[str]) -> set[str]:
    return {f"{prefix}.{i}.{s}" for i in layers for s in suffixes}


BERT_HEAD = {"qa_outputs.weight", "qa_outputs.bias"}


BERT_EMB = {f"bert.{n}" for n in ENCODER_EMBEDDINGS}


XLMR_HEAD = {
    "classifier.dense.weight",
    "classifier.dense.bias",
    "classifier.out_proj.weight",
    "classifier.out_proj.bias",
}


XLMR_EMB = {f"roberta.{n}" for n in ENCODER_EMBEDDINGS}


def trainable(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def all_names(model: nn.Module) -> set[str]:
    return {n for n, _ in model.named_parameters()}


def bert_layers(layers: range) -> set[str]:
    return layer_names("bert.encoder.layer", layers, ENCODER_LAYER)


def xlmr_layers(layers: range) -> set[str]:
    return layer_names("roberta.encoder.layer", layers, ENCODER_LAYER)


def llama_layers(layers: range) -> set[str]:
    return layer_names("model.layers", layers, LLAMA_LAYER)


LLAMA_ALL = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"} | llama_layers(
    range(2)
)


class Blocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(2, 2)
        self.blocks = nn.ModuleList(nn.Linear(2, 2) for _ in range(4))
        self.mixed = nn.ModuleList([nn.Linear(2, 2), nn.ReLU()])


def bert_loss(model: nn.Module) -> torch.Tensor:
    ids = torch.tensor([[2, 5, 7, 9, 11, 3]])
    out = model(input_ids=ids, start_positions=torch.tensor([1]), end_positions=torch.tensor([3]))
    return out.loss


def xlmr_loss(model: nn.Module) -> torch.Tensor:
    ids = torch.tensor([[0, 5, 7, 9, 2], [0, 8, 6, 2, 1]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    return model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 2])).loss


def lm_loss(model: nn.Module) -> torch.Tensor:
    ids = torch.tensor([[2, 5, 7, 9, 11, 3]])
    return model(input_ids=ids, labels=ids).loss


CASES = [
    (bert_qa, bert_loss, "none", 0),
    (bert_qa, bert_loss, "backbone", 0),
    (bert_qa, bert_loss, "lower_k", 2),
    (bert_qa, bert_loss, "bitfit", 0),
    (xlmr_cls, xlmr_loss, "lower_k", 1),
    (xlmr_cls, xlmr_loss, "bitfit", 0),
    (llama, lm_loss, "lower_k", 1),
    (llama, lm_loss, "head_only", 0),
    (lambda: llama(tie=True), lm_loss, "lower_k", 1),
]


@pytest.mark.parametrize("strategy", FREEZING_STRATEGIES.names())
def test_every_registered_strategy_freezes_by_name(strategy: str) -> None:
    model = bert_qa()
    apply_freezing(model, strategy, k=1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable >= BERT_HEAD  # every strategy trains the new head
    assert (trainable == all_names(model)) == (strategy == "none")


def test_bert_names_are_what_the_tests_expect() -> None:
    assert all_names(bert_qa()) == BERT_EMB | bert_layers(range(3)) | BERT_HEAD


def test_bert_head_and_layers() -> None:
    model = bert_qa()
    assert head_parameter_names(model) == BERT_HEAD
    assert tied_head_parameters(model) == {}
    assert find_layers(model) is model.bert.encoder.layer


@pytest.mark.parametrize("strategy", ["backbone", "head_only"])
def test_bert_head_strategies(strategy: str) -> None:
    model = bert_qa()
    apply_freezing(model, strategy)
    assert trainable(model) == BERT_HEAD


def test_bert_none() -> None:
    model = bert_qa()
    apply_freezing(model, "backbone")
    apply_freezing(model, "none")
    assert trainable(model) == all_names(model)


def test_bert_bitfit() -> None:
    model = bert_qa()
    apply_freezing(model, "bitfit")
    layer_biases = [s for s in ENCODER_LAYER if s.endswith(".bias")]
    expected = (
        {"bert.embeddings.LayerNorm.bias"}
        | layer_names("bert.encoder.layer", range(3), layer_biases)
        | BERT_HEAD
    )
    assert trainable(model) == expected
    assert expected == {n for n in all_names(model) if n.endswith(".bias")} | BERT_HEAD


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_bert_lower_k(k: int) -> None:
    model = bert_qa()
    apply_freezing(model, "lower_k", k=k)
    assert trainable(model) == bert_layers(range(k, 3)) | BERT_HEAD


@pytest.mark.parametrize(("k", "top"), [(-1, 1), (-2, 2), (-3, 3)])
def test_bert_negative_k_trains_the_top_layers(k: int, top: int) -> None:
    model = bert_qa()
    apply_freezing(model, "lower_k", k=k)
    assert trainable(model) == bert_layers(range(3 - top, 3)) | BERT_HEAD


@pytest.mark.parametrize("k", [-4, 4, 1.5, True])
def test_bert_lower_k_out_of_range(k: object) -> None:
    with pytest.raises(ConfigError, match=r"freeze\.k.*0\.\.3.*-3\.\.-1"):
        apply_freezing(bert_qa(), "lower_k", k=k)


def test_bert_counts() -> None:
    # Embeddings: word 100*16 + position 512*16 + token type 2*16 + LayerNorm 2*16 = 9856.
    # Layer: q, k, v 3*(16*16+16) = 816; attention out 16*16+16 + LN 32 = 304;
    # intermediate 16*32+32 = 544; output 32*16+16 + LN 32 = 560 -> 2224, times 3 = 6672.
    # qa_outputs 16*2+2 = 34. Total 9856 + 6672 + 34 = 16562.
    model = bert_qa()
    assert count_parameters(model) == (16562, 16562)
    apply_freezing(model, "backbone")
    assert count_parameters(model) == (34, 16562)
    apply_freezing(model, "lower_k", k=1)
    assert count_parameters(model) == (2 * 2224 + 34, 16562)
    apply_freezing(model, "bitfit")
    # Biases: embeddings LN 16; per layer q, k, v, attn out, LN, LN 6*16 + intermediate 32
    # + output 16 = 144, times 3 = 432; plus the whole head 34.
    assert count_parameters(model) == (16 + 432 + 34, 16562)


def test_xlmr_names_are_what_the_tests_expect() -> None:
    assert all_names(xlmr_cls()) == XLMR_EMB | xlmr_layers(range(2)) | XLMR_HEAD


@pytest.mark.parametrize(
    ("strategy", "k", "expected"),
    [
        ("none", 0, XLMR_EMB | xlmr_layers(range(2)) | XLMR_HEAD),
        ("backbone", 0, XLMR_HEAD),
        ("head_only", 0, XLMR_HEAD),
        ("lower_k", 0, xlmr_layers(range(2)) | XLMR_HEAD),
        ("lower_k", 1, xlmr_layers(range(1, 2)) | XLMR_HEAD),
        ("lower_k", 2, XLMR_HEAD),
        (
            "bitfit",
            0,
            {"roberta.embeddings.LayerNorm.bias"}
            | layer_names(
                "roberta.encoder.layer", range(2), [s for s in ENCODER_LAYER if "bias" in s]
            )
            | XLMR_HEAD,
        ),
    ],
)
def test_xlmr_strategies(strategy: str, k: int, expected: set[str]) -> None:
    model = xlmr_cls()
    apply_freezing(model, strategy, k=k)
    assert trainable(model) == expected


def test_xlmr_counts_and_bounds() -> None:
    # Embeddings: word 1600 + position 64*16 + token type 2*16 + LN 32 = 2688; layers 2*2224;
    # classifier dense 16*16+16 = 272, out_proj 16*3+3 = 51. Total 2688 + 4448 + 323 = 7459.
    model = xlmr_cls()
    assert head_parameter_names(model) == XLMR_HEAD
    assert find_layers(model) is model.roberta.encoder.layer
    apply_freezing(model, "head_only")
    assert count_parameters(model) == (323, 7459)
    with pytest.raises(ConfigError, match=r"0\.\.2"):
        apply_freezing(model, "lower_k", k=3)


@pytest.mark.parametrize(
    ("strategy", "k", "expected"),
    [
        ("none", 0, LLAMA_ALL),
        ("backbone", 0, {"lm_head.weight"}),
        ("head_only", 0, {"lm_head.weight"}),
        # Llama has no biases: bitfit trains the head alone.
        ("bitfit", 0, {"lm_head.weight"}),
        ("lower_k", 0, llama_layers(range(2)) | {"model.norm.weight", "lm_head.weight"}),
        ("lower_k", 1, llama_layers(range(1, 2)) | {"model.norm.weight", "lm_head.weight"}),
        ("lower_k", 2, {"model.norm.weight", "lm_head.weight"}),
    ],
)
def test_llama_strategies(strategy: str, k: int, expected: set[str]) -> None:
    model = llama()
    assert all_names(model) == LLAMA_ALL
    apply_freezing(model, strategy, k=k)
    assert trainable(model) == expected


def test_llama_counts_and_layers() -> None:
    # embed 100*16 = 1600; per layer q 16*16 + k 16*8 + v 16*8 + o 16*16 = 768 (one KV head of
    # size 8), MLP 3*16*32 = 1536, two norms 32 -> 2336, times 2 = 4672; final norm 16;
    # lm_head 1600. Total 1600 + 4672 + 16 + 1600 = 7888.
    model = llama()
    assert find_layers(model) is model.model.layers
    assert count_parameters(model) == (7888, 7888)
    apply_freezing(model, "lower_k", k=1)
    assert count_parameters(model) == (2336 + 16 + 1600, 7888)


def test_tied_llama_keeps_embeddings_frozen(caplog: pytest.LogCaptureFixture) -> None:
    model = llama(tie=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert head_parameter_names(model) == set()
    assert tied_head_parameters(model) == {"lm_head.weight": "model.embed_tokens.weight"}
    # The shared tensor is counted once: 7888 - 1600.
    assert count_parameters(model) == (6288, 6288)

    with caplog.at_level(logging.WARNING, logger="lowres.methods.freezing"):
        apply_freezing(model, "backbone")
    assert "lm_head.weight is tied to model.embed_tokens.weight" in caplog.text
    assert not model.lm_head.weight.requires_grad
    assert count_parameters(model) == (0, 6288)

    apply_freezing(model, "lower_k", k=0)
    assert not model.lm_head.weight.requires_grad
    assert trainable(model) == llama_layers(range(2)) | {"model.norm.weight"}

    caplog.clear()
    apply_freezing(model, "none")
    assert model.lm_head.weight.requires_grad
    assert caplog.text == ""


def test_qwen2_bitfit_trains_attention_biases() -> None:
    model = qwen2()
    apply_freezing(model, "bitfit")
    biases = layer_names("model.layers", range(2), [f"self_attn.{x}_proj.bias" for x in "qkv"])
    assert trainable(model) == biases | {"lm_head.weight"}
    assert find_layers(model) is model.model.layers


def test_find_layers_fallback_and_error() -> None:
    module = Blocks()
    assert find_layers(module) is module.blocks
    with pytest.raises(ConfigError, match=r"freeze\.strategy"):
        find_layers(nn.Sequential(nn.Linear(2, 2)))


def test_plain_module_has_no_head() -> None:
    module = Blocks()
    assert head_parameter_names(module) == set()
    apply_freezing(module, "lower_k", k=2)
    assert trainable(module) == {f"blocks.{i}.{p}" for i in (2, 3) for p in ("weight", "bias")} | {
        "mixed.0.weight",
        "mixed.0.bias",
    }


def test_count_parameters_counts_shared_once() -> None:
    shared = nn.Linear(3, 2)
    module = nn.Sequential(shared, nn.ReLU(), shared)
    shared.bias.requires_grad_(False)
    assert count_parameters(module) == (6, 8)


@pytest.mark.parametrize(("build", "loss_fn", "strategy", "k"), CASES)
def test_optimizer_step_moves_only_trainable(
    build: Callable[[], nn.Module],
    loss_fn: Callable[[nn.Module], torch.Tensor],
    strategy: str,
    k: int,
) -> None:
    model = build()
    model.train()
    apply_freezing(model, strategy, k=k)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)

    loss_fn(model).backward()
    optimizer.step()

    trainable_params = set(params)
    assert set(optimizer.state) == trainable_params
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert not torch.equal(p, before[name]), f"{name} should have changed"
        else:
            assert p.grad is None, f"{name} is frozen but got a gradient"
            assert p not in optimizer.state
            assert torch.equal(p, before[name]), f"{name} is frozen but changed"
