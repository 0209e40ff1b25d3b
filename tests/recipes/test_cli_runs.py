"""The ``lowres`` command end to end on tiny models: run folders, evaluate, resume, bad input."""

from __future__ import annotations

import hashlib
import json
import statistics
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import SMOKE, lowres_subprocess, run_lowres, write_squad

from lowres.data.roots import SAMPLE_ROOT


def run_cli(*args: str) -> None:
    run_lowres(*args)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, shared_data):
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    run_cli(
        "train", *SMOKE, "data.source=local", f"data.root={shared_data}", f"hydra.run.dir={run_dir}"
    )
    return run_dir


def _crash_after_step_2(run_dir: Path) -> None:
    """Leave the folder as a crash after the step-2 checkpoint would."""
    import shutil

    (run_dir / "metrics.json").unlink()
    shutil.rmtree(run_dir / "trainer" / "checkpoint-4")
    shutil.rmtree(run_dir / "checkpoint")
    assert (run_dir / "trainer" / "checkpoint-2" / "trainable.safetensors").is_file()


def train_on_local_files(root: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    return lowres_subprocess(
        "train",
        *SMOKE,
        "data.source=local",
        f"data.root={root}",
        "data.eval_languages=[en]",
        f"hydra.run.dir={tmp_path / 'run'}",
    )


def _assert_user_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr[-2000:])


def test_train_writes_the_run_folder(smoke_run):
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    assert metrics["task"] == "xquad" and metrics["backbone"] == "tiny-bert"
    assert set(metrics["per_language"]) == {"en", "de", "es"}
    for scores in metrics["per_language"].values():
        assert set(scores) == {"exact_match", "f1", "n"}
        assert scores["n"] == 16 and 0 <= scores["f1"] <= 100
    assert set(metrics["average"]) == {"exact_match", "f1"}
    assert 0 < metrics["trainable_parameters"] < metrics["total_parameters"]
    assert metrics["train_runtime_s"] > 0 and metrics["train_steps"] == 4
    assert (smoke_run / ".hydra" / "config.yaml").is_file()
    for lang in ("en", "de", "es"):
        answers = json.loads((smoke_run / "predictions" / f"{lang}.json").read_text())
        assert len(answers) == 16 and all(isinstance(a, str) for a in answers.values())
    manifest = json.loads((smoke_run / "checkpoint" / "manifest.json").read_text())
    assert manifest["count"] == metrics["trainable_parameters"]
    assert set(manifest["parameters"]) == {
        "prompt",
        "deep_prompts",
        "model.qa_outputs.weight",
        "model.qa_outputs.bias",
    }
    split = json.loads((smoke_run / "data_split.json").read_text())
    assert len(split["train"]) == 32
    assert not set(split["train"]) & set(split["evaluation"]["en"])


def test_evaluate_restores_the_same_scores(smoke_run, tmp_path):
    out = tmp_path / "eval"
    run_cli("evaluate", f"checkpoint={smoke_run}", "trainer.progress=false", f"hydra.run.dir={out}")
    trained = json.loads((smoke_run / "metrics.json").read_text())
    restored = json.loads((out / "metrics.json").read_text())
    assert restored["per_language"] == trained["per_language"]
    for lang in ("en", "de", "es"):
        assert (out / "predictions" / f"{lang}.json").read_text() == (
            smoke_run / "predictions" / f"{lang}.json"
        ).read_text()


def test_finished_run_is_never_overwritten(smoke_run, capsys):
    before = (smoke_run / "metrics.json").read_text()
    with pytest.raises(SystemExit) as exit_info:
        run_cli("train", *SMOKE, f"hydra.run.dir={smoke_run}")
    assert exit_info.value.code == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert (smoke_run / "metrics.json").read_text() == before


def test_resume_continues_from_the_last_checkpoint(tmp_path):
    from safetensors.torch import load_file, save_file

    run_dir = tmp_path / "run"
    run_cli("train", *SMOKE, "trainer.save_steps=2", f"hydra.run.dir={run_dir}")
    uninterrupted = load_file(run_dir / "checkpoint" / "trainable.safetensors")

    _crash_after_step_2(run_dir)
    run_cli("train", "--resume", str(run_dir))
    resumed = load_file(run_dir / "checkpoint" / "trainable.safetensors")
    assert json.loads((run_dir / "metrics.json").read_text())["train_steps"] == 4
    for name, value in uninterrupted.items():
        assert torch.allclose(resumed[name], value, atol=1e-6), name

    # The reported train time is the sum over both segments, read from the step-2 clock;
    # a checkpoint from before the clock existed says from which step the time counts.
    first_segment = json.loads(
        (run_dir / "trainer" / "checkpoint-2" / "train_clock.json").read_text()
    )
    assert first_segment["train_seconds"] > 0
    clock = run_dir / "trainer" / "checkpoint-2" / "train_clock.json"
    for stored, counted_from in ((1000.0, 0), (None, 2)):
        _crash_after_step_2(run_dir)
        if stored is None:
            clock.unlink()
        else:
            clock.write_text(json.dumps({"train_seconds": stored}))
        run_cli("train", "--resume", str(run_dir))
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["train_runtime_from_step"] == counted_from
        assert (metrics["train_runtime_s"] >= 1000.0) == (stored is not None)

    # The step-2 weights really are where it continued from: change them, and the end differs.
    _crash_after_step_2(run_dir)
    state_file = run_dir / "trainer" / "checkpoint-2" / "trainable.safetensors"
    state = load_file(state_file)
    save_file({k: v + 1.0 for k, v in state.items()}, state_file)
    # A checkpoint that holds these weights: its manifest records their hash (a file that
    # does not match is refused, tests/recipes/test_run_folders.py).
    manifest_file = state_file.with_name("manifest.json")
    manifest = json.loads(manifest_file.read_text())
    manifest["sha256"]["trainable.safetensors"] = hashlib.sha256(
        state_file.read_bytes()
    ).hexdigest()
    manifest_file.write_text(json.dumps(manifest))
    run_cli("train", "--resume", str(run_dir))
    shifted = load_file(run_dir / "checkpoint" / "trainable.safetensors")
    assert not torch.allclose(
        shifted["model.qa_outputs.weight"], uninterrupted["model.qa_outputs.weight"], atol=0.5
    )


def test_multirun_writes_one_folder_per_job_and_report_reads_it(tmp_path):
    sweep = tmp_path / "sweep"
    run_cli(
        "train",
        "-m",
        *SMOKE,
        "trainer.seed=1,2",
        "prompt.length=2,4",
        "data.eval_languages=[en]",
        f"hydra.sweep.dir={sweep}",
    )
    folders = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert len(folders) == 4
    from omegaconf import OmegaConf

    configs = {f: OmegaConf.load(f / ".hydra" / "config.yaml") for f in folders}
    assert {(c.trainer.seed, c.prompt.length) for c in configs.values()} == {
        (1, 2), (1, 4), (2, 2), (2, 4)
    }  # fmt: skip

    # The report groups the jobs by the swept key other than the seed: mean over seeds.
    run_cli("report", str(sweep))
    report = json.loads((sweep / "report" / "report.json").read_text())
    assert (report["planned"], report["finished"], report["partial"]) == (4, 4, False)
    for length in (2, 4):
        f1 = [
            json.loads((f / "metrics.json").read_text())["per_language"]["en"]["f1"]
            for f, c in configs.items()
            if c.prompt.length == length
        ]
        row = next(r for r in report["rows"] if r["method"] == f"configured prompt.length={length}")
        assert (row["k"], row["language"], row["seeds"]) == (0, "en", [1, 2])
        assert row["mean"] == pytest.approx(statistics.fmean(f1))
        assert row["std"] == pytest.approx(statistics.stdev(f1))

    # A job that has not finished (here: its metrics removed) makes the report partial.
    (folders[0] / "metrics.json").unlink()
    run_cli("report", str(sweep))
    text = (sweep / "report" / "report.md").read_text()
    assert "**PARTIAL**: 3 of 4 runs finished (0 failed, 1 not run)" in text


def test_cfg_job_prints_the_composed_config(capsys):
    run_cli("train", "+task=xquad", "prompt.length=7", "--cfg", "job")
    out = capsys.readouterr().out
    assert "length: 7" in out and "name: xquad" in out


def test_help_lists_verbs_and_groups(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("--help")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for word in (
        "train",
        "evaluate",
        "score",
        "backbone",
        "tiny-bert",
        "freeze",
        "lower_k",
        "prompt",
        "align",
        "contrastive",
        "trainer",
        "smoke",
        "data",
    ):
        assert word in out


def test_train_without_task_lists_the_tasks():
    result = lowres_subprocess("train")
    assert result.returncode != 0
    assert "xquad" in result.stderr and "+task=" in result.stderr
    assert "Traceback" not in result.stderr


def test_plain_task_override_is_accepted(capsys):
    run_cli("train", "task=xquad", "--cfg", "job")
    assert "name: xquad" in capsys.readouterr().out


def test_soft_prompt_overfits_a_handful_of_questions(tmp_path):
    """Input and deep prompts on a frozen tiny model learn 4 questions to EM 100."""
    root = tmp_path / "data"
    contexts = [
        ("The capital of Norway is Oslo and it lies by a fjord.", "Where?", "Oslo"),
        ("Marie Curie won two Nobel prizes in physics and chemistry.", "Who?", "Marie Curie"),
        ("The river Danube flows through ten countries in Europe.", "Which?", "Danube"),
        ("In 1969 the first people walked on the Moon.", "When?", "1969"),
    ]
    # Same texts, different ids: the source pool never contains an evaluation id.
    write_squad(
        root / "squad" / "dev-v1.1.json",
        [(f"train{i}", c, q, a) for i, (c, q, a) in enumerate(contexts)],
    )
    write_squad(
        root / "xquad" / "xquad.en.json",
        [(f"eval{i}", c, q, a) for i, (c, q, a) in enumerate(contexts)],
    )
    for layers in ("input", "all"):
        run_dir = tmp_path / layers
        run_cli(
            "train",
            "+task=xquad",
            "backbone=tiny-bert",
            "trainer.progress=false",
            "data.source=local",
            f"data.root={root}",
            "data.eval_languages=[en]",
            "freeze=backbone",
            f"prompt.layers={layers}",
            "prompt.length=8",
            "prompt.lr=0.05",
            "trainer.lr=0.01",
            "trainer.max_steps=300",
            "trainer.batch_size=4",
            "trainer.warmup_ratio=0.0",
            "trainer.logging_steps=50",
            "task.max_length=64",
            "task.stride=16",
            "task.max_question_length=16",
            f"hydra.run.dir={run_dir}",
        )
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["per_language"]["en"]["exact_match"] == 100.0, (layers, metrics)


def test_missing_data_root_is_named(tmp_path):
    result = lowres_subprocess(
        "train",
        *SMOKE,
        "data.source=local",
        f"data.root={tmp_path / 'nowhere'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    _assert_user_error(result, "data.root", "nowhere")


def test_truncated_json_is_named(tmp_path):
    root = tmp_path / "data"
    (root / "xquad").mkdir(parents=True)
    (root / "squad").mkdir()
    (root / "squad" / "dev-v1.1.json").write_text(
        (SAMPLE_ROOT / "squad" / "dev-v1.1.json").read_text()
    )
    text = (SAMPLE_ROOT / "xquad" / "xquad.en.json").read_text()
    (root / "xquad" / "xquad.en.json").write_text(text[: len(text) // 2])
    result = train_on_local_files(root, tmp_path)
    _assert_user_error(result, "xquad.en.json")


def test_answer_not_at_answer_start_is_named(tmp_path):
    root = tmp_path / "data"
    write_squad(root / "squad" / "dev-v1.1.json", [("q1", "Oslo is a city.", "Where?", "Oslo")])
    bad = {
        "version": "1.1",
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": "Oslo is a city.",
                        "qas": [
                            {
                                "id": "bad-q",
                                "question": "What?",
                                "answers": [{"text": "city", "answer_start": 0}],
                            }
                        ],
                    }
                ],
            }
        ],
    }
    (root / "xquad").mkdir(parents=True)
    (root / "xquad" / "xquad.en.json").write_text(json.dumps(bad))
    result = train_on_local_files(root, tmp_path)
    _assert_user_error(result, "bad-q", "answer_start")


def test_unreachable_hub_backbone_is_named(tmp_path):
    result = lowres_subprocess(
        "train",
        "+task=xquad",
        "backbone=mbert",
        "trainer=smoke",
        f"hydra.run.dir={tmp_path / 'run'}",
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
    )
    _assert_user_error(result, "mbert", "backbone=minilm")


def test_unreachable_hub_dataset_is_named(tmp_path):
    result = lowres_subprocess(
        "train",
        *SMOKE,
        "data.source=hub",
        f"hydra.run.dir={tmp_path / 'run'}",
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
    )
    _assert_user_error(result, "Hugging Face Hub", "rajpurkar/squad", "data.source=local")


def test_score_prints_official_json(golden, shared_data, capsys):
    expected = json.loads((golden / "qa-metrics" / "expected.json").read_text())["xquad.de"]
    run_cli(
        "score",
        "--metric",
        "squad",
        str(shared_data / "xquad" / "xquad.de.json"),
        str(golden / "qa-metrics" / "pred.xquad.de.json"),
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["n"] == expected["questions"]
    assert abs(printed["f1"] - expected["f1"]) < 1e-9
    assert abs(printed["exact_match"] - expected["exact_match"]) < 1e-9


def test_bf16_training_runs_on_a_cpu_with_native_bf16(tmp_path):
    from lowres.environment import cpu_bf16_flags

    if torch.cuda.is_available() or not cpu_bf16_flags():
        pytest.skip("needs a CPU with avx512_bf16 or AMX and no GPU (bf16 autocast on the CPU)")
    run = tmp_path / "bf16"
    run_lowres(
        "train",
        "+task=xquad",
        "backbone=tiny-bert",
        "trainer=smoke",
        "trainer.progress=false",
        "trainer.precision=bf16",
        f"hydra.run.dir={run}",
    )
    metrics = json.loads((run / "metrics.json").read_text())
    environment = json.loads((run / "environment.json").read_text())
    assert environment["precision"] == "bf16" and metrics["device"] == "cpu"
    assert metrics["train_steps"] == 4 and metrics["train_loss"] == metrics["train_loss"]  # not NaN


def test_evaluate_on_another_task_and_unlisted_languages(tmp_path, capsys):
    """A run trained on the English SQuAD pool for XQuAD, evaluated on MLQA without training."""
    run_dir = tmp_path / "xquad"
    run_cli("train", *SMOKE, "task.max_length=128", "task.stride=32", f"hydra.run.dir={run_dir}")
    mlqa = tmp_path / "mlqa"
    run_cli(
        "evaluate",
        f"checkpoint={run_dir}",
        "task=mlqa",
        "data.eval_languages=[de,ar]",
        "trainer.progress=false",
        f"hydra.run.dir={mlqa}",
    )
    metrics = json.loads((mlqa / "metrics.json").read_text())
    assert metrics["task"] == "mlqa" and metrics["trained_task"] == "xquad"
    assert set(metrics["per_language"]) == {"de", "ar"}
    assert all(s["n"] == 16 for s in metrics["per_language"].values())
    assert metrics["checkpoint"] == str(run_dir)
    # A language the XQuAD run did not list, on its own task.
    arabic = tmp_path / "ar"
    run_cli(
        "evaluate",
        f"checkpoint={run_dir}",
        "data.eval_languages=[ar]",
        "trainer.progress=false",
        f"hydra.run.dir={arabic}",
    )
    assert set(json.loads((arabic / "metrics.json").read_text())["per_language"]) == {"ar"}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(
            "evaluate", f"checkpoint={run_dir}", "task=pawsx", f"hydra.run.dir={tmp_path / 'p'}"
        )
    assert exit_info.value.code == 2
    error = " ".join(capsys.readouterr().err.split())
    assert (
        f"task=pawsx: the checkpoint {run_dir} was trained on xquad (kind extractive_qa)" in error
    )
    kinds = error.split("on a task of its kind (", 1)[1].split(")", 1)[0].split(", ")
    assert {"mlqa", "xquad", "tydiqa"} <= set(kinds) and "pawsx" not in kinds
    assert not (tmp_path / "p" / "metrics.json").exists()


def test_unknown_method_preset_is_named():
    result = lowres_subprocess("train", *SMOKE, "+method=deep_promt")
    _assert_user_error(result, "method=deep_promt: no method/deep_promt.yaml in", "deep_prompt")
