"""Decoder-only LLM backbones on tiny-llama: templates, answer-only labels, generation, CLI."""

from __future__ import annotations

import pytest
import torch
from helpers import build_flat, tiny_backbone

from lowres.backbones import load_backbone
from lowres.data.pawsx_format import read_pawsx_tsv
from lowres.data.roots import SAMPLE_ROOT
from lowres.data.squad_format import read_squad_json
from lowres.errors import ConfigError, HubError
from lowres.losses.alignment import pool_layers
from lowres.tasks import DataSettings, create_task
from lowres.tasks.generative import GenerativeTask, generative_task, left_pad, stop_ids


def tiny_llama(**options):
    return tiny_backbone("llama", family="decoder", **options)


def prompted(backbone=None, **options):
    backbone = backbone or tiny_llama()
    settings = {
        "task_kind": "extractive_qa",
        "family": "decoder",
        "freeze": "backbone",
        "freeze_k": 0,
        "prompt_length": 4,
        "prompt_init": "vocab",
        "prompt_init_text": "",
        "prompt_layers": "all",
        "adapter": "none",
        "adapter_options": {},
        "seed": 0,
    }
    settings.update(options)
    return build_flat(backbone, **settings), backbone.tokenizer


def sample_task(name: str, **params) -> GenerativeTask:
    settings = DataSettings(source="sample", root="", source_language="en", eval_languages=["en"])
    params = {"max_length": 384, "max_question_length": 64, "max_answer_length": 30, **params}
    return generative_task(create_task(name, settings, **params), params, {})


def squad_record(index: int = 0) -> dict:
    return {**read_squad_json(SAMPLE_ROOT / "squad" / "dev-v1.1.json")[index], "language": "en"}


def trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_templates_render_the_fields_and_bad_ones_are_refused():
    qa = sample_task("xquad")
    record = squad_record()
    text = qa.render(qa.fields(record))
    assert text == (
        f"Context: {record['context']}\nQuestion: {record['question'].strip()}\nAnswer:"
    )
    pawsx = sample_task("pawsx")
    assert pawsx.render({"sentence1": "A cat.", "sentence2": "Eine Katze."}) == (
        "Sentence 1: A cat.\nSentence 2: Eine Katze.\n"
        "Question: Do both sentences mean the same thing?\nAnswer:"
    )
    custom = sample_task("xquad", template="Q: {question} C: {context} A:")
    assert custom.render({"context": "x", "question": "y"}) == "Q: y C: x A:"
    with pytest.raises(ConfigError, match=r"\['context', 'question'\]"):
        sample_task("xquad", template="Passage: {passage}\nAnswer:")


def test_answer_only_loss_mask_on_a_real_example():
    tokenizer = tiny_llama().tokenizer
    task = sample_task("xquad")
    record = squad_record()
    features = task.train_features([record], tokenizer)
    ids, labels, mask = (features[k][0] for k in ("input_ids", "labels", "attention_mask"))
    assert len(ids) == len(labels) == len(mask) and all(mask)  # one row: no padding
    answer = record["answers"]["text"][0]
    prompt_text = task.render(task.fields(record))
    prompt_ids = tokenizer(prompt_text)["input_ids"]
    # The prompt (BOS included) is masked; the answer and EOS carry the loss.
    assert ids[: len(prompt_ids)] == prompt_ids and ids[0] == tokenizer.bos_token_id
    assert labels[: len(prompt_ids)] == [-100] * len(prompt_ids)
    target = labels[len(prompt_ids) :]
    assert -100 not in target and target == ids[len(prompt_ids) :]
    assert target[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(target[:-1]) == " " + answer
    assert tokenizer.decode(ids, skip_special_tokens=True) == prompt_text + " " + answer


def test_long_contexts_are_cut_and_cut_answers_skip_training():
    tokenizer = tiny_llama().tokenizer
    task = sample_task("xquad", max_length=48)
    records = [squad_record(i) for i in range(12)]
    features = task.train_features(records, tokenizer)
    assert max(sum(m) for m in features["attention_mask"]) <= 48 + 30
    kept = len(features["input_ids"])
    assert 0 < kept < len(records) and task.skipped_long == len(records) - kept
    for record in records:
        ids, fields = task.prompt(record, tokenizer)
        assert len(ids) <= 48 and record["context"].startswith(fields["context"])


def test_label_words_defaults_overrides_and_errors():
    tokenizer = tiny_llama().tokenizer
    settings = DataSettings(source="sample", root="", source_language="en", eval_languages=["de"])
    inner = create_task("pawsx", settings, max_length=128, num_labels=2)
    task = GenerativeTask(inner, label_words={"de": ["nein", "jawohl"]})
    assert task.label_words["ja"] == ["いいえ", "はい"] and task.label_words["de"] == [
        "nein",
        "jawohl",
    ]
    nein, jawohl = task.word_ids("de", tokenizer)
    assert tokenizer.decode(jawohl) == " jawohl" and tokenizer.decode(nein) == " nein"
    with pytest.raises(ConfigError, match=r"task\.label_words\.fr=\['Oui'\]"):
        GenerativeTask(inner, label_words={"fr": ["Oui"]})
    # WordPiece drops a zero-width space entirely: such a word cannot be scored.
    bert = load_backbone(
        name="tiny-bert",
        loader="tiny",
        path="",
        architecture="bert",
        task_kind="classification",
        num_labels=2,
        seed=0,
    ).tokenizer
    odd = GenerativeTask(inner, label_words={"de": ["\u200b", "ja"]})
    with pytest.raises(ConfigError, match="tokenizes to nothing"):
        odd.word_ids("de", bert)
    # Tokenized once per (language, tokenizer): scoring 10k records must not redo it each time.
    calls = []

    def counting(text, **options):
        calls.append(text)
        return tokenizer(text, **options)

    fresh = GenerativeTask(inner, label_words={"de": ["nein", "jawohl"]})
    assert [fresh.word_ids("de", counting) for _ in range(3)][2] == [nein, jawohl]
    assert calls == [" nein", " jawohl"]
    assert [bert.decode(ids) for ids in fresh.word_ids("de", bert)] == ["nein", "jawohl"]


def test_prompt_sits_after_bos_and_left_padding_changes_nothing():
    model, tokenizer = prompted()
    model.eval()
    texts = ["Context: Oslo lies by a fjord.\nQuestion: Where?\nAnswer:", "Hi", "A third one"]
    rows = [tokenizer(t)["input_ids"] for t in texts]
    ids, mask = left_pad(rows, tokenizer.pad_token_id)
    assert model.insert_at == 1
    with torch.no_grad():
        batched = model(ids, mask, output_hidden_states=True)
        laid_out = model.text_mask(mask)
        assert laid_out.shape == batched["hidden_states"][-1].shape[:2]
        # Row 1 ("Hi") is [BOS] P1..P4 [pads] text: BOS first, then the prompt (masked out).
        assert laid_out[1, :5].tolist() == [1, 0, 0, 0, 0]
        pooled = pool_layers(batched["hidden_states"], laid_out, "last", "mean")
        for i, row in enumerate(rows):
            one_ids = torch.tensor([row])
            alone = model(one_ids, torch.ones_like(one_ids), output_hidden_states=True)
            assert torch.allclose(batched["logits"][i, -1], alone["logits"][0, -1], atol=1e-5)
            one_mask = model.text_mask(torch.ones_like(one_ids))
            alone_pooled = pool_layers(alone["hidden_states"], one_mask, "last", "mean")
            assert torch.allclose(pooled[i], alone_pooled[0], atol=1e-5)
        # The prompt matters: other vectors give other next-token logits.
        model.prompt.add_(1.0)
        moved = model(ids, mask)["logits"][:, -1]
    assert not torch.allclose(moved, batched["logits"][:, -1], atol=1e-3)


@pytest.mark.parametrize("bos", [True, False], ids=["after-bos", "no-bos"])
def test_left_padded_batched_generation_equals_one_by_one(bos):
    backbone = tiny_llama()
    # Larger random weights than the init: greedy steps then pick varied tokens, not a loop.
    with torch.no_grad():
        for p in backbone.model.parameters():
            p.mul_(25.0 if p.dim() > 1 else 1.0)
    model, tokenizer = prompted(backbone)
    model.eval()
    records = [squad_record(i) for i in range(0, 40, 7)]
    task = sample_task("xquad")
    prompts = [task.prompt(r, tokenizer)[0] for r in records]
    if not bos:  # a tokenizer without BOS (Qwen2.5): the prompt goes first
        prompts = [p[1:] for p in prompts]
        model.insert_at = 0
    assert len({len(p) for p in prompts}) > 1  # really padded
    stops = stop_ids(tokenizer, backbone.model)
    ids, mask = left_pad(prompts, tokenizer.pad_token_id)
    batched = model.generate_greedy(ids, mask, max_new_tokens=12, stop_ids=stops).tolist()
    distinct = set()
    for i, prompt in enumerate(prompts):
        one = torch.tensor([prompt])
        alone = model.generate_greedy(one, torch.ones_like(one), max_new_tokens=12, stop_ids=stops)
        alone = alone[0].tolist()
        assert batched[i][: len(alone)] == alone
        distinct.update(alone)
    assert len(distinct) > 3, distinct


def test_generation_uses_the_kv_cache_consistently_with_a_full_forward():
    model, tokenizer = prompted()
    model.eval()
    prompt = torch.tensor([tokenizer("Context: The Danube flows.\nAnswer:")["input_ids"]])
    mask = torch.ones_like(prompt)
    generated = model.generate_greedy(prompt, mask, max_new_tokens=5, stop_ids=[10**6])[0]
    # Re-running the whole sequence without a cache predicts each generated token again.
    full = torch.cat([prompt[0], generated[:-1]]).unsqueeze(0)
    with torch.no_grad():
        logits = model(full, torch.ones_like(full))["logits"][0]
    assert logits[-5:].argmax(-1).tolist() == generated.tolist()


def test_label_word_scores_are_log_likelihoods_of_the_words():
    model, tokenizer = prompted(prompt_layers="input")
    model.eval()
    rows, _ = read_pawsx_tsv(SAMPLE_ROOT / "pawsx" / "xtreme-dev" / "dev-de.tsv")
    records = [{**r, "language": "de"} for r in rows[:3]]
    settings = DataSettings(source="sample", root="", source_language="en", eval_languages=["de"])
    task = GenerativeTask(create_task("pawsx", settings, max_length=128, num_labels=2))
    scores = task.label_scores(model, records, tokenizer, "cpu")
    assert scores.shape == (3, 2)
    with torch.no_grad():
        for record, row in zip(records, scores, strict=True):
            prompt = task.prompt(record, tokenizer)[0]
            for word, score in zip(task.word_ids("de", tokenizer), row, strict=True):
                ids = torch.tensor([prompt + word])
                logits = model(ids, torch.ones_like(ids))["logits"][0]
                logprobs = torch.log_softmax(logits[:-1], -1)
                positions = range(len(prompt) - 1, len(prompt) + len(word) - 1)
                expected = sum(float(logprobs[p, ids[0, p + 1]]) for p in positions)
                assert score == pytest.approx(expected, abs=1e-4)


def test_gradient_checkpointing_gives_the_same_prompt_gradients():
    grads = []
    for checkpointing in (False, True):
        backbone = tiny_llama(gradient_checkpointing=checkpointing)
        assert all(
            layer.gradient_checkpointing == checkpointing for layer in backbone.model.model.layers
        )
        model, tokenizer = prompted(backbone, freeze="lower_k", freeze_k=1)
        model.train()
        task = sample_task("xquad", max_length=64, padding="max_length")
        features = task.train_features([squad_record(i) for i in range(4)], tokenizer)
        batch = {k: torch.tensor(v) for k, v in features.items()}
        model(**batch)["loss"].backward()
        grads.append([model.prompt.grad, model.deep_prompts.grad])
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-6)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6)
    assert grads[0][1].abs().sum() > 0


def test_freezing_strategies_on_a_decoder():
    assert trainable(prompted(freeze="backbone")[0]) == {"prompt", "deep_prompts"}
    assert trainable(prompted(freeze="bitfit")[0]) == {"prompt", "deep_prompts"}  # no biases
    lower = trainable(prompted(freeze="lower_k", freeze_k=1)[0])
    assert "model.model.norm.weight" in lower and "model.model.layers.1.mlp.up_proj.weight" in lower
    assert not any(".layers.0." in n or "embed_tokens" in n for n in lower)
    full = trainable(prompted(freeze="none")[0])
    assert "model.model.embed_tokens.weight" in full
    # head_only: the tied LM head gets its own copy; the embeddings stay frozen.
    model, _ = prompted(freeze="head_only")
    head, embeddings = model.model.lm_head.weight, model.model.model.embed_tokens.weight
    assert head is not embeddings and torch.equal(head, embeddings)
    assert trainable(model) == {"model.lm_head.weight"}


def test_lora_on_decoder_attention_projections():
    lora = {"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    model, _ = prompted(adapter="lora", adapter_options=lora, prompt_length=0)
    names = trainable(model)
    assert len(names) == 8 and all("lora_" in n for n in names)  # 2 layers x q,v x A,B


def test_hub_decoder_offline_gives_the_hub_error(monkeypatch, tmp_path):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(HubError, match=r"qwen2\.5-0\.5b: could not load 'Qwen/Qwen2\.5-0\.5B'"):
        load_backbone(
            name="qwen2.5-0.5b",
            loader="hub",
            path="Qwen/Qwen2.5-0.5B",
            architecture="",
            task_kind="extractive_qa",
            num_labels=2,
            seed=0,
            dtype="bfloat16",
            family="decoder",
        )
