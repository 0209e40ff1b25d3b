"""Scale: data-parallel training, launcher sweeps, the feature cache, run environment."""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings

import pytest
from helpers import REPO, tiny_backbone


def _task(**params):
    from lowres.tasks import DataSettings, create_task

    settings = DataSettings(source="sample", root="", source_language="en", eval_languages=["en"])
    base = {"kind": "extractive_qa", "metric": "squad", "languages": [], "max_length": 128}
    base |= {"stride": 32, "max_question_length": 32, "n_best": 20, "max_answer_length": 30}
    base |= {"num_labels": 2, "question_languages": [], "split": "dev"}
    return create_task("xquad", settings, **(base | params))


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


def test_launcher_configs_compose_with_their_plugin_keys():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    from hydra import compose, initialize_config_dir

    from lowres.schema import config_dir, register_schemas

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


def test_multirun_folders_default_to_outputs_multirun():
    """`-m` jobs land with every other output (and under the same .gitignore entry)."""
    from hydra import compose, initialize_config_dir

    from lowres.schema import config_dir, register_schemas

    register_schemas()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        for verb in ("train", "evaluate"):
            hydra_cfg = compose(verb, ["+task=xquad"], return_hydra_config=True).hydra
            assert hydra_cfg.sweep.dir.startswith("outputs/multirun/"), verb
    ignored = (REPO / ".gitignore").read_text().split()
    assert "outputs/" in ignored


def test_run_names_pass_through_hydra_overrides_quoted():
    """Grid labels hold = and , which Hydra would otherwise read as a sweep or a key."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from lowres.launchers import quote

    name = "runs/deep_prompt/align.weight=0.1,prompt.length=10/joint/k0_all_seed1"
    parsed = OverridesParser.create().parse_override(f"hydra.sweep.subdir={quote(name)}")
    assert not parsed.is_sweep_override() and parsed.value() == name
    odd = "/tmp/it's here"
    assert OverridesParser.create().parse_override(f"x={quote(odd)}").value() == odd


def test_sweep_resume_replays_the_recorded_launcher_unless_another_is_given(tmp_path):
    import yaml

    from lowres.runfolder import resume_overrides

    hydra_dir = tmp_path / ".hydra"
    hydra_dir.mkdir()
    (hydra_dir / "overrides.yaml").write_text(yaml.safe_dump(["+task=xquad", "sweep.k=[0,2]"]))
    recorded = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.verbose=true"]
    (hydra_dir / "hydra.yaml").write_text(
        yaml.safe_dump({"hydra": {"overrides": {"hydra": recorded, "task": []}}})
    )
    folder = f"hydra.sweep.dir={tmp_path.resolve()}"
    assert resume_overrides(str(tmp_path), "sweep", []) == [
        "+task=xquad", "sweep.k=[0,2]", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
        folder,
    ]  # fmt: skip
    # A setting given again wins; another launcher drops the old one's settings.
    given = ["hydra.launcher.partition=debug"]
    assert "hydra.launcher.partition=gpu" not in resume_overrides(str(tmp_path), "sweep", given)
    assert resume_overrides(str(tmp_path), "sweep", ["hydra/launcher=local_gpus"]) == [
        "+task=xquad", "sweep.k=[0,2]", folder
    ]  # fmt: skip


def test_cuda_and_bf16_requests_on_a_cpu_machine_fail_with_the_fix(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the CPU-only errors cannot occur")
    from omegaconf import OmegaConf

    from lowres.builders import training_arguments
    from lowres.errors import ConfigError
    from lowres.schema import TrainerConfig

    def args(**overrides):
        cfg = OmegaConf.merge(OmegaConf.structured(TrainerConfig), overrides)
        return training_arguments(cfg, tmp_path, task_kind="classification", learning_rate=1e-3)

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

    from lowres import builders as train
    from lowres import environment
    from lowres.errors import ConfigError
    from lowres.schema import TrainerConfig

    cfg = OmegaConf.merge(OmegaConf.structured(TrainerConfig), {"precision": "bf16"})
    monkeypatch.setattr(environment, "cpu_bf16_flags", lambda: ())
    with pytest.raises(ConfigError, match=r"trainer.precision=bf16.*avx512_bf16 nor amx_bf16"):
        train.training_arguments(cfg, tmp_path, task_kind="classification", learning_rate=1e-3)
    monkeypatch.setattr(environment, "cpu_bf16_flags", lambda: ("avx512_bf16",))
    args = train.training_arguments(cfg, tmp_path, task_kind="classification", learning_rate=1e-3)
    assert args.bf16 and args.use_cpu


def test_auto_precision_is_bf16_only_where_the_cpu_has_it(tmp_path, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; auto would follow the GPU")
    from omegaconf import OmegaConf

    from lowres import builders, environment
    from lowres.schema import TrainerConfig

    cfg = OmegaConf.merge(OmegaConf.structured(TrainerConfig), {"precision": "auto"})

    def args():
        return builders.training_arguments(
            cfg, tmp_path, task_kind="classification", learning_rate=1e-3
        )

    monkeypatch.setattr(environment, "cpu_bf16_flags", lambda: ("amx_bf16",))
    assert args().bf16 and not args().fp16 and args().precision == "bf16"
    monkeypatch.setattr(environment, "cpu_bf16_flags", lambda: ())
    # fp32, and no error where bf16 is missing
    assert not args().bf16 and not args().fp16 and args().precision == "fp32"


def test_bench_script_measures_a_decoder_by_its_own_training_and_generation(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench", REPO / "scripts" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
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
    for method in ("full", "input_prompt", "deep_prompt", "lora"):  # the presets' own names
        assert f"| {method} |" in text
    results = {r["method"]: r for r in json.loads((tmp_path / "bench.json").read_text())["results"]}
    assert list(results) == ["full", "input_prompt", "deep_prompt", "lora"]
    assert results["full"]["trainable"] == results["full"]["total"]
    # tiny-llama: hidden 64, 2 layers, v_proj 64 -> 32 (2 KV heads of 16); prompt.length 20.
    assert results["input_prompt"]["trainable"] == 20 * 64
    assert results["deep_prompt"]["trainable"] == 2 * 20 * 64
    # Llama's projections (the backbone's lora_targets), not the encoders' query/value.
    assert results["lora"]["trainable"] == 2 * 8 * ((64 + 64) + (64 + 32))
    for r in results.values():
        assert r["family"] == "decoder" and r["eval_examples"] == 4  # questions, not windows
        assert r["eval_batch"] == 16  # tiny-llama's backbone.generation_batch_size
        assert r["train_examples_per_s"] > 0 and r["eval_examples_per_s"] > 0
        assert r["train_tokens_per_s"] > r["train_examples_per_s"]
        assert r["device_peak_mb"] is None


def test_bench_script_times_presets_interleaved_with_optimizer_and_alignment_shares(
    tmp_path, monkeypatch, capsys
):
    spec = importlib.util.spec_from_file_location("bench", REPO / "scripts" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["bench.py", "--backbone", "tiny-bert", "--steps", "2", "--warmup", "1"]
    argv += ["--lengths", "64", "--precisions", "fp32", "--data-root", ""]
    argv += ["--eval-examples", "2", "--eval-languages", "en,de", "--out", str(tmp_path / "b.md")]
    monkeypatch.setattr(sys, "argv", [*argv, "--methods", "full,no_such_method"])
    with pytest.raises(SystemExit) as exit_info:
        bench.main()
    assert exit_info.value.code == 2
    assert "no_such_method, which configs/method/ does not have" in capsys.readouterr().err
    # a variant (PRESET:KEY=VALUE) is checked by its preset
    monkeypatch.setattr(sys, "argv", [*argv, "--methods", "full,nope:trainer.fast_dropout=true"])
    with pytest.raises(SystemExit) as exit_info:
        bench.main()
    assert exit_info.value.code == 2
    assert "nope:trainer.fast_dropout=true, which configs/method/" in capsys.readouterr().err

    monkeypatch.setattr(sys, "argv", [*argv, "--methods", "full,prompt_align"])
    monkeypatch.setattr(sys, "argv", [*sys.argv, "--json", str(tmp_path / "bench.json")])
    bench.main()
    results = {r["method"]: r for r in json.loads((tmp_path / "bench.json").read_text())["results"]}
    assert list(results) == ["full", "prompt_align"]
    full, aligned = results["full"], results["prompt_align"]
    assert aligned["alignment_pairs"] == 4  # prompt_align's align.batch_size
    assert full["eval_languages"] == ["en", "de"]
    for variant in full["variants"]:
        assert 0 < variant["optimizer_share"] < 1 and variant["alignment_share"] is None
        assert variant["alignment_tokens_per_step"] == 0
    for variant in aligned["variants"]:
        assert 0 < variant["optimizer_share"] + variant["alignment_share"] < 1
        assert variant["alignment_share"] > 0
        assert variant["alignment_tokens_per_step"] > 4  # both sides' real tokens
    text = (tmp_path / "b.md").read_text()
    assert "| prompt_align | 64 | longest | fp32 |" in text
    assert "alignment methods add 4 parallel pairs a step" in text
