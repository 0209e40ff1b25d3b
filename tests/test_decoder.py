"""Decoder-only LLM backbones on tiny-llama: templates, answer-only labels, generation, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import run_lowres, tiny_backbone
from test_cli import write_squad

from lowres.backbones import SAMPLE_ROOT, load_backbone
from lowres.data.pawsx_format import read_pawsx_tsv
from lowres.data.squad_format import read_squad_json
from lowres.errors import ConfigError, HubError
from lowres.losses.alignment import pool_layers
from lowres.methods.build import build_method
from lowres.tasks import Settings, build_task
from lowres.tasks.generative import GenerativeTask, generative_task, left_pad, stop_ids

LLAMA = ["backbone=tiny-llama", "trainer.progress=false"]


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
    return build_method(backbone.model, backbone.tokenizer, **settings), backbone.tokenizer


def sample_task(name: str, **params) -> GenerativeTask:
    settings = Settings(source="sample", root="", source_language="en", eval_languages=["en"])
    params = {"max_length": 384, "max_question_length": 64, "max_answer_length": 30, **params}
    return generative_task(build_task(name, settings, **params), params, {})


def squad_record(index: int = 0) -> dict:
    return {**read_squad_json(SAMPLE_ROOT / "squad" / "dev-v1.1.json")[index], "language": "en"}


# -- templates and labels -----------------------------------------------------------------


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
    settings = Settings(source="sample", root="", source_language="en", eval_languages=["de"])
    inner = build_task("pawsx", settings, max_length=128, num_labels=2)
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


# -- the prompted decoder -----------------------------------------------------------------


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
    settings = Settings(source="sample", root="", source_language="en", eval_languages=["de"])
    task = GenerativeTask(build_task("pawsx", settings, max_length=128, num_labels=2))
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


# -- freezing, LoRA -----------------------------------------------------------------------


def trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


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


# -- the CLI ------------------------------------------------------------------------------


def _check_run(run_dir, languages, keys):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["backbone"] == "tiny-llama" and set(metrics["per_language"]) == set(languages)
    for scores in metrics["per_language"].values():
        assert set(scores) == keys and scores["n"] == 16
    assert metrics["train_steps"] == 4 and metrics["trainable_parameters"] > 0
    for lang in languages:
        predictions = json.loads((run_dir / "predictions" / f"{lang}.json").read_text())
        assert len(predictions) == 16
    manifest = json.loads((run_dir / "checkpoint" / "manifest.json").read_text())
    assert manifest["count"] == metrics["trainable_parameters"]
    return metrics


@pytest.mark.parametrize("task", ["xquad", "mlqa"])
def test_cli_qa_on_tiny_llama(task, tmp_path):
    run_lowres("train", f"+task={task}", *LLAMA, "trainer=smoke", f"hydra.run.dir={tmp_path}")
    metrics = _check_run(tmp_path, ["en", "de", "es"], {"exact_match", "f1", "n"})
    answers = json.loads((tmp_path / "predictions" / "de.json").read_text())
    assert all(isinstance(a, str) and "\n" not in a for a in answers.values())
    assert metrics["method"]["prompt_layers"] == "all"


def test_cli_pawsx_on_tiny_llama_and_evaluate_reproduces_it(tmp_path):
    run = tmp_path / "run"
    run_lowres(
        "train",
        "+task=pawsx",
        *LLAMA,
        "trainer=smoke",
        "freeze=head_only",
        "data.pool_fraction=0.5",
        "data.eval_languages=[en,ja,zh]",
        f"hydra.run.dir={run}",
    )
    metrics = _check_run(run, ["en", "ja", "zh"], {"accuracy", "majority_class", "n"})
    manifest = json.loads((run / "checkpoint" / "manifest.json").read_text())
    assert set(manifest["parameters"]) == {"model.lm_head.weight"}
    labels = json.loads((run / "predictions" / "ja.json").read_text())
    assert set(labels.values()) <= {0, 1}
    run_lowres(
        "evaluate", f"checkpoint={run}", "trainer.progress=false", f"hydra.run.dir={tmp_path}/e"
    )
    restored = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert restored["per_language"] == metrics["per_language"]


OVERFIT = [
    ("The capital of Norway is Oslo and it lies by a fjord.", "Where?", "Oslo"),
    ("Marie Curie won two Nobel prizes in physics and chemistry.", "Who?", "Marie Curie"),
    ("The river Danube flows through ten countries in Europe.", "Which?", "Danube"),
    ("In 1969 the first people walked on the Moon.", "When?", "1969"),
]


@pytest.mark.parametrize(
    "method",
    [
        [
            "freeze=none",
            "prompt=input",
            "trainer.lr=3e-3",
            "prompt.lr=3e-2",
            "trainer.max_steps=60",
        ],
        [
            "freeze=lower_k",
            "freeze.k=1",
            "prompt=deep",
            "trainer.lr=1e-2",
            "prompt.lr=5e-2",
            "trainer.max_steps=80",
        ],
    ],
    ids=["input-prompt-full", "deep-prompt-lower_k"],
)
def test_soft_prompted_decoder_overfits_a_handful_of_questions(method, tmp_path):
    """Generated answers match 4 trained questions exactly (EM 100), prompt in the model."""
    root = tmp_path / "data"
    write_squad(
        root / "squad" / "dev-v1.1.json",
        [(f"train{i}", c, q, a) for i, (c, q, a) in enumerate(OVERFIT)],
    )
    write_squad(
        root / "xquad" / "xquad.en.json",
        [(f"eval{i}", c, q, a) for i, (c, q, a) in enumerate(OVERFIT)],
    )
    run = tmp_path / "run"
    run_lowres(
        "train",
        "+task=xquad",
        *LLAMA,
        "data.source=local",
        f"data.root={root}",
        "data.eval_languages=[en]",
        "prompt.length=8",
        *method,
        "trainer.batch_size=4",
        "trainer.warmup_ratio=0.0",
        "trainer.logging_steps=20",
        "task.max_length=64",
        "task.max_question_length=16",
        "task.max_answer_length=8",
        f"hydra.run.dir={run}",
    )
    answers = json.loads((run / "predictions" / "en.json").read_text())
    assert answers == {f"eval{i}": a for i, (_, _, a) in enumerate(OVERFIT)}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["per_language"]["en"]["exact_match"] == 100.0
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in log if "loss" in row]
    assert losses[0] > 1.0  # it learned the answers; it did not start there


def test_alignment_loss_runs_on_decoder_hidden_states(tmp_path):
    run_lowres(
        "train",
        "+task=xquad",
        *LLAMA,
        "trainer=smoke",
        "data.eval_languages=[en,de]",
        "data.pool_fraction=0.5",
        "align=cosine",
        "align.weight=0.5",
        f"hydra.run.dir={tmp_path}",
    )
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    logged = [row for row in log if "align_loss" in row]
    assert logged and all(row["align_loss"] > 0 for row in logged)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["parallel_distance"]["de"]["pairs"] > 0


# -- bad input ----------------------------------------------------------------------------


def test_encoder_head_on_a_decoder_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_lowres(
            "train",
            "+task=xquad",
            *LLAMA,
            "trainer=smoke",
            "backbone.family=encoder",
            f"hydra.run.dir={tmp_path}",
        )
    err = capsys.readouterr().err
    assert "decoder-only model (llama)" in err and "backbone.family=decoder" in err
    with pytest.raises(SystemExit):
        run_lowres(
            "train",
            "+task=pawsx",
            "backbone=tiny-bert",
            "backbone.family=decoder",
            "trainer=smoke",
            "trainer.progress=false",
            "data.pool_fraction=0.5",
            f"hydra.run.dir={tmp_path}/b",
        )
    err = capsys.readouterr().err
    assert "is an encoder (bert)" in err and "backbone.family=encoder" in err


def test_prompt_longer_than_the_context_window_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_lowres(
            "train",
            "+task=xquad",
            *LLAMA,
            "trainer=smoke",
            "task.max_length=1000",
            f"hydra.run.dir={tmp_path}",
        )
    err = capsys.readouterr().err
    assert "context window of backbone tiny-llama (1024)" in err
    assert "lower task.max_length to at most 973" in err  # 1024 - 20 prompt - 31 answer


def test_nothing_to_train_on_a_decoder_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_lowres(
            "train",
            "+task=xquad",
            *LLAMA,
            "trainer=smoke",
            "prompt=none",
            f"hydra.run.dir={tmp_path}",
        )
    assert "Nothing would train" in capsys.readouterr().err


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


def test_lora_preset_targets_the_decoders_own_projections(tmp_path):
    """+method=lora works on any backbone: the backbone config names its LoRA modules."""
    run_dir = tmp_path / "lora"
    run_lowres(
        "train",
        "+task=xquad",
        "backbone=tiny-llama",
        "trainer=smoke",
        "trainer.progress=false",
        "+method=lora",
        f"hydra.run.dir={run_dir}",
    )
    manifest = json.loads((run_dir / "checkpoint" / "manifest.json").read_text())
    trained = list(manifest["parameters"])
    assert trained and all("lora_" in name for name in trained)
    assert {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in trained} == {"q_proj", "v_proj"}
