"""QA pre- and post-processing on real XQuAD examples: windows, offsets, long contexts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import build_flat, tiny_backbone

from lowres.data.roots import SAMPLE_ROOT
from lowres.data.squad_format import read_squad_json
from lowres.tasks.qa import _truncate_questions, decode_answers, eval_features, train_features

WINDOW = {"max_length": 128, "stride": 32, "max_question_length": 64}


@pytest.fixture(scope="module")
def backbone():
    return tiny_backbone()


@pytest.fixture(scope="module")
def records():
    return read_squad_json(SAMPLE_ROOT / "xquad" / "xquad.de.json")


def _normalized(text: str) -> str:
    return " ".join(text.lower().split())


def test_long_contexts_split_into_overlapping_windows(backbone, records):
    features, meta = eval_features(records[:20], backbone.tokenizer, **WINDOW)
    per_record = np.bincount([m["record"] for m in meta])
    assert per_record.max() > 1, "the sample has contexts longer than one 128-token window"
    # unpadded (task.padding=longest): a full window holds max_length tokens, none more
    lengths = [len(ids) for ids in features["input_ids"]]
    assert max(lengths) == WINDOW["max_length"] and min(lengths) < WINDOW["max_length"]
    # consecutive windows of one record overlap: the second starts before the first ends
    first = [m for m in meta if m["record"] == int(per_record.argmax())]
    ends = [max(o[1] for o in m["offsets"] if o) for m in first]
    starts = [min(o[0] for o in m["offsets"] if o) for m in first]
    assert all(starts[i + 1] < ends[i] for i in range(len(first) - 1))


def test_train_labels_point_at_the_answer_characters(backbone, records):
    tokenizer = backbone.tokenizer
    subset = records[:40]
    features = train_features(subset, tokenizer, **WINDOW)
    enc = tokenizer(
        [r["question"] for r in subset],
        [r["context"] for r in subset],
        truncation="only_second",
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length",
        max_length=WINDOW["max_length"],
        stride=WINDOW["stride"],
    )
    inside = 0
    for i, (start, end) in enumerate(
        zip(features["start_positions"], features["end_positions"], strict=True)
    ):
        record = subset[enc["overflow_to_sample_mapping"][i]]
        if start == 0 and end == 0:
            continue
        inside += 1
        offsets = enc["offset_mapping"][i]
        span = record["context"][offsets[start][0] : offsets[end][1]]
        # the tokenizer lowercases, so compare after normalising; tokens may extend a word
        assert _normalized(record["answers"]["text"][0]) in _normalized(span)
        assert len(span) <= len(record["answers"]["text"][0]) + 15
    assert inside >= len(subset) * 0.9


def test_decoding_perfect_logits_recovers_every_answer(backbone, records):
    tokenizer = backbone.tokenizer
    subset = records[:30]
    features, meta = eval_features(subset, tokenizer, **WINDOW)
    labels = train_features(subset, tokenizer, **WINDOW)
    n, length = len(meta), WINDOW["max_length"]
    start_logits = np.full((n, length), -10.0)
    end_logits = np.full((n, length), -10.0)
    for w, (s, e) in enumerate(
        zip(labels["start_positions"], labels["end_positions"], strict=True)
    ):
        if s or e:
            start_logits[w, s] = 10.0
            end_logits[w, e] = 10.0
    answers = decode_answers(subset, meta, start_logits, end_logits, max_answer_length=64)
    exact = sum(answers[r["id"]] == r["answers"]["text"][0] for r in subset)
    assert exact >= 0.85 * len(subset), (exact, len(subset))
    for r in subset:
        assert answers[r["id"]] in r["context"]


def test_decoding_never_returns_question_text(backbone, records):
    subset = records[:5]
    features, meta = eval_features(subset, backbone.tokenizer, **WINDOW)
    # Highest logits on the question tokens (right after [CLS]) must be ignored.
    start = np.zeros((len(meta), WINDOW["max_length"]))
    end = np.zeros((len(meta), WINDOW["max_length"]))
    start[:, 1:4] = 100.0
    end[:, 1:4] = 100.0
    answers = decode_answers(subset, meta, start, end)
    for r in subset:
        assert answers[r["id"]] in r["context"]


@pytest.mark.parametrize("layers", ["input", "all"])
def test_prompt_logits_line_up_with_the_original_tokens(backbone, records, layers):
    """The sliced logits are the full model's logits with exactly the prompt positions removed."""
    tokenizer = backbone.tokenizer
    model = build_flat(backbone, prompt_length=5, prompt_layers=layers).eval()
    features, _ = eval_features(records[:2], tokenizer, **WINDOW)
    batch = {k: torch.tensor(v[:2]) for k, v in features.items()}
    with torch.no_grad():
        out = model(**batch)
        model._injecting = model.deep_prompts is not None
        full = model.model(**model._prompted_inputs(**batch)).start_logits
        model._injecting = False
    assert out["start_logits"].shape == batch["input_ids"].shape
    assert full.shape[1] == batch["input_ids"].shape[1] + 5
    assert torch.equal(out["start_logits"][:, 0], full[:, 0])  # [CLS] stays at 0
    assert torch.equal(out["start_logits"][:, 1:], full[:, 6:])  # text tokens after the prompt

    labels = train_features(records[:2], tokenizer, **WINDOW)
    s = torch.tensor(labels["start_positions"][:2])
    e = torch.tensor(labels["end_positions"][:2])
    with torch.no_grad():
        loss = model(**batch, start_positions=s, end_positions=e)["loss"]
    manual = (
        torch.nn.functional.cross_entropy(out["start_logits"], s)
        + torch.nn.functional.cross_entropy(out["end_logits"], e)
    ) / 2
    assert torch.allclose(loss, manual)


def test_a_question_with_leading_spaces_is_capped_at_max_question_length(backbone):
    """Offsets came from the unstripped text and the cut from the stripped one, so a question
    with leading spaces kept more than max_question_length tokens."""
    question = "      " + " ".join(f"word{i}" for i in range(100))
    capped = _truncate_questions([question], backbone.tokenizer, 64)[0]
    tokens = backbone.tokenizer(capped, add_special_tokens=False)["input_ids"]
    assert len(tokens) == 64
    assert capped == question.lstrip()[: len(capped)] and not capped.startswith(" ")
