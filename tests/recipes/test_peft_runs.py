"""A LoRA run's PEFT folder: ``PeftModel.from_pretrained`` predicts what the run predicted."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import SMOKE, run_lowres
from peft import PeftModel
from transformers import (
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from lowres.builders import restore_run, saved_config

HEADS = {"xquad": AutoModelForQuestionAnswering, "pawsx": AutoModelForSequenceClassification}


def logits_of(model, features: dict[str, list], tokenizer) -> dict[str, np.ndarray]:
    """Outputs of ``model`` on unpadded features, padded per batch as the trainer pads."""
    rows = [{k: features[k][i] for k in features} for i in range(len(features["input_ids"]))]
    batch = tokenizer.pad(rows, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        out = model(**batch)
    if "start_logits" in out:
        return {key: out[key].numpy() for key in ("start_logits", "end_logits")}
    return {"logits": out["logits"].numpy()}


# What each adapter's PEFT folder must say, and how to tell that training moved it: LoRA's B
# and DoRA's B start at zero, IA3's scaling vectors at one.
ADAPTERS = {
    "lora": ({"peft_type": "LORA", "r": 8, "use_dora": False}, "lora_B.default.weight", 0.0),
    "dora": ({"peft_type": "LORA", "r": 8, "use_dora": True}, "lora_B.default.weight", 0.0),
    "ia3": ({"peft_type": "IA3"}, "ia3_l.default", 1.0),
}


@pytest.mark.parametrize(
    ("task_name", "adapter"),
    [("xquad", "lora"), ("pawsx", "lora"), ("xquad", "ia3"), ("pawsx", "dora")],
)
def test_peft_loads_the_adapter_and_predicts_identically(task_name, adapter, tmp_path):
    run_dir = tmp_path / "run"
    overrides = [o.replace("+task=xquad", f"+task={task_name}") for o in SMOKE]
    run_lowres(
        "train", *overrides, "+method=lora", f"adapter={adapter}", "data.eval_languages=[en,de]",
        "data.pool_fraction=0.5", f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    manifest = json.loads((run_dir / "checkpoint" / "manifest.json").read_text())
    assert manifest["peft_adapter"]["written"] is True
    folder = run_dir / "checkpoint" / "peft"
    adapter_config = json.loads((folder / "adapter_config.json").read_text())
    expected, trained_part, initial = ADAPTERS[adapter]
    assert {key: adapter_config[key] for key in expected} == expected
    if adapter == "ia3":  # PEFT's modules for BERT: the attention's key and value, the FFN out
        assert set(adapter_config["target_modules"]) == {"key", "value", "output.dense"}
    else:
        assert set(adapter_config["target_modules"]) == {"query", "value"}
    head = "qa_outputs" if task_name == "xquad" else "classifier"
    assert head in adapter_config["modules_to_save"]
    # QA stays a plain PeftModel: PEFT's QA class drops token_type_ids (see peft_export)
    assert adapter_config["task_type"] == (None if task_name == "xquad" else "SEQ_CLS")

    # What a PEFT user does: the base model from its path, the adapter on top.
    base_path = adapter_config["base_model_name_or_path"]
    options = {"num_labels": 2} if task_name == "pawsx" else {}
    base = HEADS[task_name].from_pretrained(base_path, **options)
    peft_model = PeftModel.from_pretrained(base, str(folder))
    tokenizer = AutoTokenizer.from_pretrained(base_path)

    task, lowres_model, _ = restore_run(saved_config(run_dir), run_dir)
    for lang in ("en", "de"):
        records = task.evaluation_records(lang)
        features, meta = task.eval_features(records, tokenizer)
        theirs = logits_of(peft_model, features, tokenizer)
        ours = logits_of(lowres_model, features, tokenizer)
        for key in ours:
            np.testing.assert_allclose(theirs[key], ours[key], atol=1e-5)
        predicted = task.predictions(records, meta, theirs)
        written = json.loads((run_dir / "predictions" / f"{lang}.json").read_text())
        assert predicted == written and len(predicted) == len(records) > 0
    # the adapter's weights left their initial values (training moved them), so the test bites
    trained = peft_model.base_model.model.state_dict()
    moved = [k for k, v in trained.items() if k.endswith(trained_part) and (v != initial).any()]
    assert moved


def test_a_lora_run_with_a_soft_prompt_says_why_it_has_no_peft_folder(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_lowres("train", *SMOKE, "adapter=lora", f"hydra.run.dir={run_dir}")
    entry = json.loads((run_dir / "checkpoint" / "manifest.json").read_text())["peft_adapter"]
    assert entry["written"] is False and "soft prompt" in entry["reason"]
    assert "deep injection" in entry["reason"] and "prompt=none" in entry["reason"]
    assert not (run_dir / "checkpoint" / "peft").exists()
    assert "no PEFT adapter folder" in capsys.readouterr().out
