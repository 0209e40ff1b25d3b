"""Scale: data-parallel training, launcher sweeps, the feature cache, run environment."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import queue
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from helpers import run_lowres, tiny_backbone

from lowres.backbones import SAMPLE_ROOT

REPO = Path(__file__).resolve().parents[1]
SMOKE = ["+task=xquad", "backbone=tiny-bert", "trainer=smoke", "trainer.progress=false"]


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def _predictions(run_dir: Path) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in (run_dir / "predictions").glob("*.json")}


def test_tiny_backbones_are_identical_in_every_process():
    """DDP ranks, the feature cache and `lowres evaluate` in a new process rely on this."""
    from lowres.backbones import tiny_backbone_dir

    script = (
        "import hashlib, pathlib, sys\n"
        "from lowres.backbones import tiny_backbone_dir\n"
        "for arch in ('bert', 'xlmr', 'llama'):\n"
        "    folder = pathlib.Path(tiny_backbone_dir(arch))\n"
        "    print(hashlib.sha256((folder / 'tokenizer.json').read_bytes()).hexdigest())\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300
    ).stdout.split()
    here = [
        hashlib.sha256((Path(tiny_backbone_dir(a)) / "tokenizer.json").read_bytes()).hexdigest()
        for a in ("bert", "xlmr", "llama")
    ]
    assert other == here


def test_two_process_data_parallel_run_equals_the_single_process_run(tmp_path):
    common = [
        *SMOKE,
        "data.cache_dir=",
        "trainer.logging_steps=1",
    ]
    single = tmp_path / "single"
    run_lowres("train", *common, "trainer.batch_size=4", f"hydra.run.dir={single}")

    # No hydra.run.dir: each rank would derive its own ${now:...} folder if lowres did not
    # make them agree; the global batch is 2 ranks x 2 = the single run's 4.
    workdir = tmp_path / "ddp"
    workdir.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--standalone",
            "-m",
            "lowres",
            "train",
            *common,
            "trainer.batch_size=2",
        ],
        capture_output=True,
        text=True,
        cwd=workdir,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((workdir / "outputs" / "xquad" / "tiny-bert").iterdir())
    assert len(runs) == 1, runs
    ddp = runs[0]

    one, two = _metrics(single), _metrics(ddp)
    assert two["per_language"] == one["per_language"]
    assert two["train_steps"] == one["train_steps"] == 4
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5)
    assert _predictions(ddp) == _predictions(single)
    logged = [json.loads(line) for line in (ddp / "train_log.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (single / "train_log.jsonl").read_text().splitlines()]
    # task_loss is averaged over both ranks' shards, so it matches the single process too.
    for got, want in zip(logged[:4], expected[:4], strict=True):
        assert got["task_loss"] == pytest.approx(want["task_loss"], rel=1e-5)
    assert json.loads((ddp / "environment.json").read_text())["world_size"] == 2


def test_ranks_other_than_zero_write_nothing(tmp_path, monkeypatch):
    from lowres.cache import FeatureCache
    from lowres.runfolder import RunFolder

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    run = RunFolder(tmp_path / "run")
    run.write_json("metrics.json", {"a": 1})
    run.write_json("predictions/en.json", {"q": "a"})
    run.write_jsonl("train_log.jsonl", [{"loss": 1.0}])
    assert not (tmp_path / "run").exists()
    assert FeatureCache.from_setting(str(tmp_path / "cache")).read_only

    monkeypatch.setenv("RANK", "0")
    RunFolder(tmp_path / "run").write_json("metrics.json", {"a": 1})
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == {"a": 1}


def test_rank_zero_gives_up_on_ranks_that_never_read_the_run_time(monkeypatch):
    import socket

    from lowres import distributed
    from lowres.errors import LowresError

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    monkeypatch.setattr(distributed, "READ_TIMEOUT_S", 0.5)
    with pytest.raises(LowresError, match=r"other 2 ranks .* only 0 did.*MASTER_PORT"):
        distributed.shared_time()


def _copy_sample(root: Path) -> Path:
    for part in ("xquad", "squad"):
        shutil.copytree(SAMPLE_ROOT / part, root / part)
    return root


def test_feature_cache_hits_identical_runs_and_misses_after_the_data_changes(tmp_path):
    data = _copy_sample(tmp_path / "data")
    cache = tmp_path / "cache"
    # Whole sample (256 training questions, every eval question), so tokenization is real work.
    args = [
        *SMOKE,
        "data=local",
        "data.max_train_examples=0",
        "data.max_eval_examples=0",
        f"data.cache_dir={cache}",
    ]
    run_lowres("train", *args, f"data.root={data}", f"hydra.run.dir={tmp_path / 'r1'}")
    run_lowres("train", *args, f"data.root={data}", f"hydra.run.dir={tmp_path / 'r2'}")
    first, second = _metrics(tmp_path / "r1"), _metrics(tmp_path / "r2")
    assert first["feature_cache"]["misses"] == 4 and first["feature_cache"]["hits"] == 0
    assert second["feature_cache"]["hits"] == 4 and second["feature_cache"]["misses"] == 0
    # CPU time, not wall time: the claim is about work saved, whatever else shares the cores.
    assert second["preprocess_cpu_s"] <= 0.1 * first["preprocess_cpu_s"], (first, second)
    assert second["per_language"] == first["per_language"]
    assert second["train_windows"] == first["train_windows"]

    # The same content elsewhere still hits (the key is content, not a path); one edited
    # German question misses for German only.
    changed = _copy_sample(tmp_path / "changed")
    path = changed / "xquad" / "xquad.de.json"
    squad = json.loads(path.read_text("utf-8"))
    question = squad["data"][0]["paragraphs"][0]["qas"][0]
    question["question"] = "Wer " + question["question"]
    path.write_text(json.dumps(squad, ensure_ascii=False), "utf-8")
    run_lowres("train", *args, f"data.root={changed}", f"hydra.run.dir={tmp_path / 'r3'}")
    third = _metrics(tmp_path / "r3")
    assert third["feature_cache"]["hits"] == 3 and third["feature_cache"]["misses"] == 1
    assert third["per_language"]["en"] == first["per_language"]["en"]

    env = json.loads((tmp_path / "r1" / "environment.json").read_text())
    import torch

    assert env["device"] == "cpu" and env["precision"] == "fp32" and env["world_size"] == 1
    assert env["versions"]["torch"] == torch.__version__
    assert env["tf32_matmul"] is False


def _task(**params):
    from lowres.tasks import Settings, build_task

    settings = Settings(source="sample", root="", source_language="en", eval_languages=["en"])
    base = {"kind": "extractive_qa", "metric": "squad", "languages": [], "max_length": 128}
    base |= {"stride": 32, "max_question_length": 32, "n_best": 20, "max_answer_length": 30}
    base |= {"num_labels": 2, "question_languages": [], "split": "dev"}
    return build_task("xquad", settings, **(base | params))


def test_cache_key_changes_with_tokenizer_and_task_parameters(tmp_path):
    from lowres.cache import FeatureCache

    cache = FeatureCache(tmp_path / "cache")
    task = _task()
    records = task.evaluation_records("en")[:8]
    bert = tiny_backbone("bert").tokenizer
    features, _ = cache.eval_features(task, records, bert)
    again, _ = cache.eval_features(task, records, bert)
    assert again == features and (cache.hits, cache.misses) == (1, 1)

    cache.eval_features(task, records, tiny_backbone("xlmr").tokenizer)
    cache.eval_features(_task(max_length=96), records, bert)
    cache.train_features(task, records, bert)
    assert (cache.hits, cache.misses) == (1, 4)
    # A fresh cache object on the same folder (a new run) finds all five entries.
    fresh = FeatureCache(tmp_path / "cache")
    fresh.eval_features(task, records, bert)
    fresh.train_features(task, records, bert)
    assert (fresh.hits, fresh.misses) == (2, 0)


def test_unwritable_cache_dir_warns_once_and_the_run_goes_on(tmp_path):
    from lowres.cache import FeatureCache, FeatureCacheWarning

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    cache = FeatureCache(blocker / "cache")
    task = _task()
    records = task.evaluation_records("en")[:4]
    tokenizer = tiny_backbone("bert").tokenizer
    with pytest.warns(FeatureCacheWarning, match="not writable"):
        features, _ = cache.eval_features(task, records, tokenizer)
    assert features == task.eval_features(records, tokenizer)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache.eval_features(task, records, tokenizer)  # no second warning
    assert "NotADirectoryError" in cache.report()["feature_cache"]["disabled"]


def test_cache_dir_empty_turns_the_cache_off(tmp_path):
    from lowres.cache import FeatureCache

    cache = FeatureCache.from_setting("")
    task = _task()
    records = task.evaluation_records("en")[:4]
    tokenizer = tiny_backbone("bert").tokenizer
    cache.eval_features(task, records, tokenizer)
    cache.eval_features(task, records, tokenizer)
    assert (cache.hits, cache.misses) == (0, 0) and cache.report()["preprocess_s"] > 0


def test_submitit_local_sweep_runs_two_jobs(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    run_lowres(
        "train",
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        *SMOKE,
        "data.cache_dir=",
        "data.eval_languages=[en]",
        "trainer.seed=1,2",
        f"hydra.sweep.dir={sweep}",
    )
    seeds = sorted(_metrics(sweep / str(i))["seed"] for i in (0, 1))
    assert seeds == [1, 2]
    for i in (0, 1):
        assert _metrics(sweep / str(i))["per_language"]["en"]["n"] == 16


def test_launcher_configs_compose_with_their_plugin_keys():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    from hydra import compose, initialize_config_dir

    from lowres.cli import config_dir
    from lowres.schema import register_schemas

    register_schemas()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        slurm = compose(
            "train",
            ["+task=xquad", "hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
            return_hydra_config=True,
        ).hydra.launcher
        local = compose(
            "train", ["+task=xquad", "hydra/launcher=local_gpus"], return_hydra_config=True
        ).hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher")
    assert (slurm.partition, slurm.gpus_per_task, slurm.array_parallelism) == ("gpu", 1, 16)
    assert slurm.timeout_min == 240
    assert local._target_.endswith("JoblibLauncher") and local.n_jobs == 2


def test_a_missing_launcher_plugin_names_the_pip_command(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec

    def without_submitit(name, *args):
        return None if name.startswith("hydra_plugins.hydra_submitit") else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_submitit)
    with pytest.raises(SystemExit) as exit_info:
        run_lowres("train", "-m", "hydra/launcher=slurm", *SMOKE, "trainer.seed=1,2")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "pip install hydra-submitit-launcher" in err and "hydra/launcher=slurm" in err


def test_joblib_workers_pin_different_gpus(tmp_path, monkeypatch):
    import lowres.launchers as launchers

    monkeypatch.setattr(launchers, "_held_slot", None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "set by the test, restored after it")
    assert launchers.pin_gpu_per_worker(tmp_path, gpus=["3", "5"]) == "3"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert launchers.pin_gpu_per_worker(tmp_path, gpus=["3", "5"]) is None  # already pinned
    # Another worker process, while this one holds GPU 3, gets GPU 5.
    code = (
        "import sys, os; from pathlib import Path; from lowres.launchers import "
        "pin_gpu_per_worker as pin; print(pin(Path(sys.argv[1]), gpus=['3', '5']))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert other.stdout.strip() == "5", other.stderr[-2000:]
    launchers._held_slot.close()
    monkeypatch.setattr(launchers, "_held_slot", None)
    assert launchers.pin_gpu_per_worker(tmp_path, gpus=["0"]) is None  # one GPU: no pinning


def test_cuda_and_bf16_requests_on_a_cpu_machine_fail_with_the_fix(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the CPU-only errors cannot occur")
    from omegaconf import OmegaConf

    from lowres.errors import ConfigError
    from lowres.schema import TrainerConfig
    from lowres.train import training_arguments

    def args(**overrides):
        cfg = OmegaConf.merge(OmegaConf.structured(TrainerConfig), overrides)
        return training_arguments(cfg, tmp_path, label_names=["labels"], learning_rate=1e-3)

    with pytest.raises(ConfigError, match="trainer.device=auto"):
        args(device="cuda")
    with pytest.raises(ConfigError, match="trainer.precision=fp16 needs a CUDA device"):
        args(precision="fp16")
    cpu = args(device="auto")
    assert cpu.use_cpu and not cpu.dataloader_pin_memory and cpu.tf32 is None


def test_bf16_on_the_cpu_needs_native_bf16(tmp_path, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; bf16 would run there")
    from omegaconf import OmegaConf

    from lowres import train
    from lowres.errors import ConfigError
    from lowres.schema import TrainerConfig

    cfg = OmegaConf.merge(OmegaConf.structured(TrainerConfig), {"precision": "bf16"})
    monkeypatch.setattr(train, "cpu_bf16_flags", lambda: ())
    with pytest.raises(ConfigError, match=r"trainer.precision=bf16.*avx512_bf16 nor amx_bf16"):
        train.training_arguments(cfg, tmp_path, label_names=["labels"], learning_rate=1e-3)
    monkeypatch.setattr(train, "cpu_bf16_flags", lambda: ("avx512_bf16",))
    args = train.training_arguments(cfg, tmp_path, label_names=["labels"], learning_rate=1e-3)
    assert args.bf16 and args.use_cpu


@pytest.mark.slow  # a minute of timing loops; CI runs the slow tier separately
def test_bench_script_writes_a_table_per_backbone_device_and_dtype(tmp_path):
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\nhand-written notes stay\n")
    command = [
        sys.executable,
        "scripts/bench.py",
        "--backbone",
        "tiny-bert",
        "--methods",
        "full,prompt_deep",
        "--steps",
        "1",
        "--warmup",
        "1",
        "--lengths",
        "64",
        "--precisions",
        "fp32",
        "--data-root",
        "",
        "--eval-examples",
        "4",
        "--out",
        str(out),
        "--json",
        str(tmp_path / "bench.json"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for _ in range(2):  # the second run replaces its section instead of adding one
        result = subprocess.run(
            command, capture_output=True, text=True, cwd=REPO, timeout=300, env=env
        )
        assert result.returncode == 0, result.stderr[-2000:]
    text = out.read_text()
    assert text.startswith("# Benchmarks\n\nhand-written notes stay\n")
    assert text.count("<!-- bench: tiny-bert cpu fp32 -->") == 1
    assert "| full fine-tuning | 129,666 |" in text and "| deep prompt (all layers) |" in text
    assert "| full fine-tuning | 64 | longest | fp32 |" in text
    assert "| full fine-tuning | 64 | max_length | fp32 | " in text
    import torch

    assert f"torch {torch.__version__}" in text
    results = {r["method"]: r for r in json.loads((tmp_path / "bench.json").read_text())["results"]}
    assert results["full"]["trainable"] == results["full"]["total"]
    assert results["prompt_deep"]["trainable"] < results["full"]["trainable"]
    for r in results.values():
        assert r["train_examples_per_s"] > 0 and r["eval_examples_per_s"] > 0
        assert r["train_tokens_per_s"] > r["train_examples_per_s"]  # many tokens per window
        assert r["host_peak_mb"] > 100 and r["device_peak_mb"] is None
        assert r["peak_flops"]["fp32"] > 1e9  # any CPU multiplies faster than 1 GFLOP/s
        variants = {(v["padding"], v["precision"]): v for v in r["variants"]}
        assert set(variants) == {("longest", "fp32"), ("max_length", "fp32")}
        # the same windows: padding adds computed positions, never real tokens
        assert variants[("max_length", "fp32")]["padding_share"] > 0
        assert variants[("longest", "fp32")]["padding_share"] < 0.2
        assert variants[("max_length", "fp32")]["speedup_vs_padded"] == 1.0
        for v in variants.values():
            assert 0 < v["peak_share"] < 1.5 and v["flops_per_real_token"] > 0


class _InlineProcesses:
    """bench.py's spawn context, running each method's body in this process instead.

    A fresh interpreter per method re-imports torch, transformers and lowres (about 10 s
    each on the shared CI cores); only the host-peak column depends on the isolation, and
    the slow tiny-bert test above covers the spawned path.
    """

    Queue = queue.SimpleQueue

    class Process:
        def __init__(self, target, args):
            self.target, self.args = target, args

        def start(self):
            self.target(*self.args)

        def join(self):
            pass


def test_bench_script_measures_a_decoder_by_its_own_training_and_generation(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench", REPO / "scripts" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench.mp, "get_context", lambda _: _InlineProcesses())
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\nhand-written notes stay\n")
    argv = ["bench.py", "--backbone", "tiny-llama", "--steps", "1", "--warmup", "1"]
    argv += ["--lengths", "96", "--precisions", "fp32", "--data-root", ""]
    argv += ["--eval-examples", "4", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", [*argv, "--json", str(tmp_path / "bench.json")])
    bench.main()

    text = out.read_text()
    assert text.startswith("# Benchmarks\n\nhand-written notes stay\n")
    assert text.count("<!-- bench: tiny-llama cpu fp32 -->") == 1
    assert "batched greedy generation (KV cache, at most 30 new tokens) on 4 English" in text
    for label in ("full fine-tuning", "soft prompt (input)", "deep prompt (all layers)"):
        assert f"| {label} |" in text
    # Llama's projections, not the encoders' query/value, which tiny-llama does not have.
    assert "| LoRA (r=8, q_proj+v_proj) |" in text
    results = {r["method"]: r for r in json.loads((tmp_path / "bench.json").read_text())["results"]}
    assert list(results) == ["full", "prompt_input", "prompt_deep", "lora"]
    assert results["full"]["trainable"] == results["full"]["total"]
    # tiny-llama: hidden 64, 2 layers, v_proj 64 -> 32 (2 KV heads of 16); prompt.length 20.
    assert results["prompt_input"]["trainable"] == 20 * 64
    assert results["prompt_deep"]["trainable"] == 2 * 20 * 64
    assert results["lora"]["trainable"] == 2 * 8 * ((64 + 64) + (64 + 32))
    for r in results.values():
        assert r["family"] == "decoder" and r["eval_examples"] == 4  # questions, not windows
        assert r["eval_batch"] == 16  # tiny-llama's backbone.generation_batch_size
        assert r["train_examples_per_s"] > 0 and r["eval_examples_per_s"] > 0
        assert r["train_tokens_per_s"] > r["train_examples_per_s"]
        assert r["device_peak_mb"] is None
