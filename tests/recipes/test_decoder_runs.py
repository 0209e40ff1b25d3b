"""Decoder-only LLM backbones on tiny-llama: templates, answer-only labels, generation, CLI."""

from __future__ import annotations

import json

import pytest
from helpers import run_lowres, write_squad

LLAMA = ["backbone=tiny-llama", "trainer.progress=false"]


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


OVERFIT = [
    ("The capital of Norway is Oslo and it lies by a fjord.", "Where?", "Oslo"),
    ("Marie Curie won two Nobel prizes in physics and chemistry.", "Who?", "Marie Curie"),
    ("The river Danube flows through ten countries in Europe.", "Which?", "Danube"),
    ("In 1969 the first people walked on the Moon.", "When?", "1969"),
]


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


def test_gradient_accumulation_divides_the_decoder_loss(tmp_path):
    """The Trainer took the decoder (forward(**kwargs)) for one that scales its own loss by
    the accumulation steps, so grad_accum=4 logged (and trained on) 4x the loss."""
    first_loss = {}
    for accumulation in (1, 4):
        run_dir = tmp_path / f"ga{accumulation}"
        run_lowres(
            "train",
            "+task=xquad",
            *LLAMA,
            "trainer=smoke",
            "trainer.max_steps=1",
            "trainer.logging_steps=1",
            "trainer.batch_size=2",
            f"trainer.grad_accum={accumulation}",
            "data.eval_languages=[en]",
            "data.max_eval_examples=2",
            f"hydra.run.dir={run_dir}",
        )
        log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
        row = next(r for r in log if "loss" in r)
        first_loss[accumulation] = row["loss"]
        # the logged loss is the mean of the micro-batches' task losses, as without accumulation
        assert row["loss"] == pytest.approx(row["task_loss"], rel=1e-4)
    assert 0.7 < first_loss[4] / first_loss[1] < 1.4, first_loss
