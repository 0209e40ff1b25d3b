"""The method on tiny models: injection, prompt init, alignment through the CLI, baselines."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import run_lowres, tiny_backbone

from lowres.errors import ConfigError
from lowres.methods.build import build_method
from lowres.methods.prompt import resolve_layers

TINY = ["backbone=tiny-bert", "trainer.progress=false", "data.eval_languages=[en,de]"]


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
    return build_method(backbone.model, backbone.tokenizer, **settings)


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


@pytest.mark.parametrize("kind", ["mse", "cosine", "contrastive"])
def test_alignment_runs_through_the_cli_and_logs_both_losses(kind, tmp_path):
    run_dir = tmp_path / kind
    run_lowres(
        "train",
        "+task=xquad",
        *TINY,
        "trainer=smoke",
        f"align={kind}",
        "align.weight=0.5",
        "data.pool_fraction=0.5",
        f"hydra.run.dir={run_dir}",
    )
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    logged = [row for row in log if "task_loss" in row]
    assert logged and all("align_loss" in row and row["align_loss"] >= 0 for row in logged)
    for row in logged:  # loss = task + lambda * align, averaged over the same steps
        assert row["loss"] == pytest.approx(row["task_loss"] + 0.5 * row["align_loss"], rel=0.02)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["method"]["align_kind"] == kind
    assert metrics["parallel_distance"]["de"]["pairs"] > 0
    split = json.loads((run_dir / "data_split.json").read_text())
    parallel_ids = {pair[1] for pair in split["parallel"]}
    assert parallel_ids and not parallel_ids & set(split["evaluation"]["de"])


def test_kl_alignment_on_pawsx(tmp_path):
    run_dir = tmp_path / "kl"
    run_lowres(
        "train",
        "+task=pawsx",
        *TINY,
        "trainer=smoke",
        "align=kl",
        "align.weight=1.0",
        "data.pool_fraction=0.5",
        f"hydra.run.dir={run_dir}",
    )
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert any("align_loss" in row for row in log)


def test_alignment_without_parallel_data_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_lowres(
            "train",
            "+task=xquad",
            *TINY,
            "trainer=smoke",
            "align=mse",
            f"hydra.run.dir={tmp_path / 'run'}",
        )
    assert "data.pool_fraction" in capsys.readouterr().err


def test_alignment_pulls_held_out_translations_together(tmp_path):
    """Same seed and data: with lambda > 0 unseen en-de pairs end closer than with lambda = 0."""
    common = [
        "+task=xquad",
        "backbone=tiny-bert",
        "trainer.progress=false",
        "data.eval_languages=[en,de]",
        "data.pool_fraction=0.5",
        "freeze=none",
        "prompt=none",
        "trainer.max_steps=40",
        "trainer.lr=1e-3",
        "trainer.batch_size=4",
        "data.max_train_examples=40",
        "task.max_length=128",
        "task.stride=32",
        "align.kind=cosine",
        "align.report_distance=true",
        "trainer.logging_steps=20",
    ]
    distances = {}
    for weight in (0.0, 1.0):
        run_dir = tmp_path / f"w{weight}"
        run_lowres("train", *common, f"align.weight={weight}", f"hydra.run.dir={run_dir}")
        metrics = json.loads((run_dir / "metrics.json").read_text())
        distances[weight] = metrics["parallel_distance"]["de"]["cosine_distance"]
    assert distances[1.0] < distances[0.0], distances


def test_alignment_from_a_parallel_file(tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("the city\tdie Stadt\nthe river\tder Fluss\nthe war\tder Krieg\n")
    run_dir = tmp_path / "run"
    run_lowres(
        "train",
        "+task=xquad",
        *TINY,
        "trainer=smoke",
        "align=mse",
        "align.weight=0.5",
        f"align.parallel_file={pairs}",
        f"hydra.run.dir={run_dir}",
    )
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert any("align_loss" in row for row in log)


def test_malformed_parallel_file_names_the_line(tmp_path, capsys):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("the city\tdie Stadt\nonly one field\n")
    with pytest.raises(SystemExit):
        run_lowres(
            "train",
            "+task=xquad",
            *TINY,
            "trainer=smoke",
            "align=mse",
            "align.weight=0.5",
            f"align.parallel_file={pairs}",
            f"hydra.run.dir={tmp_path / 'run'}",
        )
    assert "line 2" in capsys.readouterr().err


@pytest.mark.parametrize("strategy", ["lower_k", "bitfit", "head_only"])
def test_freezing_strategies_run_through_the_cli(strategy, tmp_path):
    run_dir = tmp_path / strategy
    extra = ["freeze.k=1"] if strategy == "lower_k" else []
    run_lowres(
        "train",
        "+task=xquad",
        *TINY,
        "trainer=smoke",
        f"freeze={strategy}",
        *extra,
        f"hydra.run.dir={run_dir}",
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 < metrics["trainable_parameters"] < metrics["total_parameters"]


def test_lower_k_beyond_the_depth_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_lowres(
            "train",
            "+task=xquad",
            *TINY,
            "trainer=smoke",
            "freeze=lower_k",
            "freeze.k=7",
            f"hydra.run.dir={tmp_path / 'run'}",
        )
    assert "freeze.k" in capsys.readouterr().err


def test_lora_checkpoint_reload_reproduces_scores(tmp_path):
    run_dir = tmp_path / "lora"
    run_lowres(
        "train",
        "+task=xquad",
        *TINY,
        "trainer=smoke",
        "adapter=lora",
        "prompt=none",
        "adapter.target_modules=[query,value]",
        f"hydra.run.dir={run_dir}",
    )
    run_lowres(
        "evaluate",
        f"checkpoint={run_dir}",
        "trainer.progress=false",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    trained = json.loads((run_dir / "metrics.json").read_text())
    restored = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert restored["per_language"] == trained["per_language"]
    manifest = json.loads((run_dir / "checkpoint" / "manifest.json").read_text())
    assert any("lora_" in name for name in manifest["parameters"])
    assert manifest["count"] == trained["trainable_parameters"]


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
