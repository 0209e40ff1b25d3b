"""``lowres study``: a tiny spec end to end (tiny-bert, the TyDiQA fixtures): run, stop and
resume from results alone (on a "new machine" without the weights), report without training."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import run_lowres

from lowres.sweeps import study, study_runner

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the search extra")

RELEASE = Path(__file__).resolve().parents[1] / "fixtures" / "tydiqa_release"


def tiny_spec(tmp_path: Path, methods=("full",), seeds=(1,), trials=1) -> Path:
    space = {"trainer.lr": "tag(log,interval(1e-4,1e-2))"}
    spec = {
        "name": "tiny",
        "results": str(tmp_path / "results"),
        "work": str(tmp_path / "work"),
        "backbone": "tiny-bert",
        "common": ["trainer=smoke", "trainer.progress=false", "data=local", f"data.root={RELEASE}"],
        "methods": {m: {"space": space} for m in methods},
        "trials": trials,
        "source": {"task": "tydiqa", "languages": ["en"], "dev_articles": 2},
        "source_seeds": list(seeds),
        "stage2_seeds": [1],
        "k": [2],
        "stage2": ["trainer.max_steps=-1", "trainer.min_steps=3"],
        "tasks": {
            "tydiqa": {
                "zero_shot": ["ar", "sw"],
                "few_shot": ["sw"],
                "overrides": ["data.pool_fraction=0.3"],
            }
        },
        "primary": [[methods[0], methods[-1], 0, "tydiqa"]],
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


class Finished:
    """A step run to its end in this process (the tests' launcher): its exit code."""

    def __init__(self, argv: list[str]):
        try:
            run_lowres(*argv)
            self.code = 0
        except SystemExit as exit_info:
            self.code = exit_info.code

    def poll(self) -> int:
        return self.code


def in_process(ran: list[str]):
    def launch(argv: list[str]) -> Finished:
        # the step's folder: hydra.run.dir, or a search part's hydra.sweep.dir
        folder = next(a for a in argv if a.startswith(("hydra.run.dir=", "hydra.sweep.dir=")))
        ran.append(folder.split("=", 1)[1])
        return Finished(argv)

    return launch


def run_study(spec, ran, **options) -> int:
    return study_runner.run_study(spec, in_process(ran), echo=lambda _: None, poll_s=0, **options)


def test_a_study_runs_resumes_from_its_results_and_reports_without_training(tmp_path):
    spec = study.load_spec(tiny_spec(tmp_path))
    ran: list[str] = []  # the folders of the steps launched, in order

    # Stopped after two steps: the search and the source run are kept in results/.
    assert run_study(spec, ran, limit=2) == 2
    state = study.status(spec)
    assert [s["name"] for s in state["steps"] if s["done"]] == ["search/full", "source/full/seed1"]
    search = json.loads((tmp_path / "results" / "search" / "full" / "search.json").read_text())
    assert len(search["trials"]) == 1 and search["best"]["params"]["trainer.lr"] > 0
    chosen = f"trainer.lr={search['best']['params']['trainer.lr']}"
    fewshot = [s for s in state["steps"] if s["name"].startswith("fewshot/")]
    assert [s["name"] for s in fewshot] == ["fewshot/tydiqa/sw/full/seed1/k2/s1"]
    assert chosen in fewshot[0]["argv"] and "data.source_pool=false" in fewshot[0]["argv"]

    # A new machine: no work folder (no weights), only the results. The search and the
    # source run are not run again as steps; the source model is retrained once, for the
    # zero-shot evaluation that needs its weights.
    shutil.rmtree(tmp_path / "work")
    ran.clear()
    assert run_study(spec, ran) == 2
    assert [Path(r).relative_to(tmp_path / "work").as_posix() for r in ran] == [
        "source/full/seed1", "zeroshot/tydiqa/full/seed1", "fewshot/tydiqa/sw/full/seed1/k2/s1",
    ]  # fmt: skip
    state = study.status(spec)
    assert state["done"] == state["planned"] == 4
    assert not (tmp_path / "results" / "source" / "full" / "seed1" / "checkpoint").exists()
    kept = tmp_path / "results" / "zeroshot" / "tydiqa" / "full" / "seed1" / "predictions"
    fresh = tmp_path / "work" / "zeroshot" / "tydiqa" / "full" / "seed1" / "predictions"
    assert sorted(p.name for p in kept.iterdir()) == ["ar.json.gz", "sw.json.gz"]  # gzipped
    assert gzip.decompress((kept / "sw.json.gz").read_bytes()) == (fresh / "sw.json").read_bytes()
    assert run_study(spec, ran) == 0  # nothing left

    # The retraining is recorded, and on the same machine it gives the committed run's weights
    # (same sha256, same scores): both later steps started from the model that was committed.
    results = tmp_path / "results"
    source = results / "source" / "full" / "seed1"
    committed = json.loads((source / "provenance.json").read_text())["weights_sha256"]
    retrains = json.loads((source / "retrains.json").read_text())
    assert [(r["weights_sha256"], r["scores_as_kept"]) for r in retrains] == [(committed, True)]
    for later in ("zeroshot/tydiqa/full/seed1", "fewshot/tydiqa/sw/full/seed1/k2/s1"):
        provenance = json.loads((results / later / "provenance.json").read_text())
        assert provenance["source_model"] == {
            "step": "source/full/seed1", "sha256": committed, "scores_as_kept": True
        }  # fmt: skip

    # The report from results alone.
    shutil.rmtree(tmp_path / "work")
    record = study.report(spec)
    text = (tmp_path / "results" / "report" / "report.md").read_text()
    assert "## tydiqa, k = 0" in text and "## tydiqa, k = 2" in text
    assert "| sw (n=2) |" in text and "the interval varies the source seed" in text
    assert f"| source/full/seed1 | 2 | 2 | {committed[:12]} (the committed run's) | all |" in text
    zero = json.loads((results / "zeroshot/tydiqa/full/seed1/metrics.json").read_text())
    few = json.loads((results / "fewshot/tydiqa/sw/full/seed1/k2/s1/metrics.json").read_text())
    cells = {(c["k"], c["language"]): c["per_source_seed"] for c in record["cells"]}
    assert cells[0, "sw"] == {1: zero["per_language"]["sw"]["f1"]}
    assert cells[2, "sw"] == {1: few["per_language"]["sw"]["f1"]}
    assert few["train_steps"] >= 3  # stage 2's floor on updates


def test_study_status_and_a_bad_spec_through_the_cli(tmp_path, capsys):
    path = tiny_spec(tmp_path, methods=("full", "lora_all_linear"))
    run_lowres("study", "status", str(path))
    out = capsys.readouterr().out
    assert "todo  search/full" in out and "0 of 2 planned steps done" in out
    assert "not yet planned: the steps after the search of full, lora_all_linear" in out
    assert "lowres study: the next step is search/full" in out
    bad = yaml.safe_load(path.read_text())
    bad["primary"] = [["full", "lora", 0, "tydiqa"]]
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(SystemExit) as exit_info:
        run_lowres("study", "status", str(path))
    assert exit_info.value.code == 2
    assert "primary comparison ['full', 'lora', 0, 'tydiqa'] names lora" in capsys.readouterr().err


def test_a_study_pinning_what_this_machine_cannot_run_starts_no_step(tmp_path, capsys, monkeypatch):
    import torch

    from lowres import environment

    path = tiny_spec(tmp_path)
    pinned = yaml.safe_load(path.read_text())
    pinned["common"].append("trainer.precision=bf16")
    path.write_text(yaml.safe_dump(pinned))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(environment, "cpu_bf16_flags", lambda: ())  # a CPU without native bf16
    with pytest.raises(SystemExit) as exit_info:
        run_lowres("study", "run", str(path))
    assert exit_info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    pinned_words = "pins trainer.precision=bf16 for 1 of its steps still to run"
    assert f"The study tiny {pinned_words} (the first: search/full)" in err
    assert "neither avx512_bf16 nor amx_bf16" in err and "No step was started." in err
    assert not (tmp_path / "work").exists()  # not even the study's lock
    run_lowres("study", "status", str(path))
    assert "this machine cannot run them" in capsys.readouterr().out
    # the same spec on a CPU with native bf16: nothing to say
    monkeypatch.setattr(environment, "cpu_bf16_flags", lambda: ("amx_bf16",))
    run_lowres("study", "status", str(path))
    assert "cannot run" not in capsys.readouterr().out
    # a pinned device is checked too
    pinned["common"][-1] = "trainer.device=cuda"
    path.write_text(yaml.safe_dump(pinned))
    with pytest.raises(SystemExit):
        run_lowres("study", "run", str(path))
    assert "pins trainer.device=cuda" in capsys.readouterr().err


def test_a_study_whose_spec_changed_after_a_kept_step_starts_no_step(tmp_path, capsys):
    path = tiny_spec(tmp_path)
    spec = study.load_spec(path)
    chosen = tmp_path / "results" / "search" / "full"
    chosen.mkdir(parents=True)
    best = {"params": {"trainer.lr": 1e-3}, "value": 50.0, "number": 0}
    (chosen / "search.json").write_text(json.dumps({"best": best, "trials": []}))
    source = {s.name: s for s in study.plan(spec)}["source/full/seed1"]
    kept = tmp_path / "results" / "source" / "full" / "seed1"
    kept.mkdir(parents=True)
    ran = [a.replace("trainer.lr=0.001", "trainer.lr=0.002") for a in source.argv]
    (kept / "provenance.json").write_text(json.dumps({"command": ["lowres", *ran]}))
    (kept / "metrics.json").write_text(json.dumps({"per_language": {}}))
    with pytest.raises(SystemExit) as exit_info:
        run_lowres("study", "run", str(path))
    assert exit_info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert (
        "source/full/seed1, ran with trainer.lr=0.002 where the spec now plans trainer.lr=0.001"
        in err
    )
    assert "No step was started." in err and not (tmp_path / "work").exists()
    run_lowres("study", "status", str(path))
    assert "1 kept step(s) of the study tiny ran a command" in capsys.readouterr().out


def test_a_search_stopped_between_trials_goes_on_from_its_kept_trials(tmp_path):
    spec = study.load_spec(tiny_spec(tmp_path, trials=3))
    ran: list[str] = []
    assert run_study(spec, ran, limit=1) == 1
    results = tmp_path / "results" / "search" / "full"
    whole = json.loads((results / "search.json").read_text())
    assert [t["number"] for t in whole["trials"]] == [0, 1, 2]
    for trial in (0, 1, 2):  # each kept with its command's provenance and environment
        provenance = json.loads((results / str(trial) / "provenance.json").read_text())
        assert provenance["step"] == "search/full" and provenance["part_trial"] == trial
        environment = json.loads((results / str(trial) / "environment.json").read_text())
        assert environment["precision"] in ("fp32", "bf16")

    # A new machine whose last commit held trial 0 only: trials 1 and 2 run again, as a
    # second part told trial 0 first, its sampler seeded past the first part's.
    first = (results / "0" / "metrics.json").read_bytes()
    for stale in ("1", "2", "search.json"):
        path = results / stale
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    shutil.rmtree(tmp_path / "work")
    assert study.status(spec)["steps"][0] == {
        "name": "search/full", "done": False, "argv": study.plan(spec)[0].argv, "trials_kept": 1
    }  # fmt: skip
    ran.clear()
    assert run_study(spec, ran, limit=1) == 1
    assert ran == [str(tmp_path / "work" / "search" / "full" / "part1")]
    part = tmp_path / "work" / "search" / "full" / "part1"
    told = yaml.safe_load((part / "0" / ".hydra" / "hydra.yaml").read_text())["hydra"]
    assert told["sweeper"]["n_trials"] == 2 and told["sweeper"]["sampler"]["seed"] == 1
    assert told["sweeper"]["storage"].endswith("optuna-part1.db")
    import optuna

    storage = told["sweeper"]["storage"]
    trials = optuna.load_study(study_name=told["sweeper"]["study_name"], storage=storage).trials
    assert len(trials) == 3 and trials[0].value == whole["trials"][0]["value"]  # told first
    resumed = json.loads((results / "search.json").read_text())
    assert [t["number"] for t in resumed["trials"]] == [0, 1, 2]
    assert resumed["trials"][0] == whole["trials"][0]
    assert (results / "0" / "metrics.json").read_bytes() == first
    assert [(p["first_trial"], p["sampler_seed"]) for p in resumed["parts"]] == [(0, 0), (1, 1)]


@pytest.mark.slow  # each step a fresh `lowres` process (torch imports): about a minute
def test_the_study_command_runs_two_steps_at_once_and_commits_each_as_it_lands(tmp_path):
    import os
    import subprocess
    import sys

    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (["init", "-q"], ["config", "user.email", "t@t"], ["config", "user.name", "t"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    spec = yaml.safe_load(tiny_spec(tmp_path, methods=("full", "lora_all_linear")).read_text())
    spec |= {"results": "results/tiny", "work": "outputs/tiny", "k": [], "primary": []}
    spec["tasks"]["tydiqa"]["few_shot"] = []
    (repo / "tiny.yaml").write_text(yaml.safe_dump(spec))
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    done = subprocess.run(
        [sys.executable, "-m", "lowres", "study", "run", "tiny.yaml", "--jobs", "2", "--commit"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "6 step(s) finished" in done.stdout  # 2 searches, 2 source runs, 2 evaluations
    log = subprocess.run(["git", "log", "--format=%s"], cwd=repo, capture_output=True,
                         text=True, check=True).stdout.splitlines()  # fmt: skip
    assert sorted(log) == sorted([
        "tiny: search/full trial 0", "tiny: search/full",
        "tiny: search/lora_all_linear trial 0", "tiny: search/lora_all_linear",
        "tiny: source/full/seed1", "tiny: source/lora_all_linear/seed1",
        "tiny: zeroshot/tydiqa/full/seed1", "tiny: zeroshot/tydiqa/lora_all_linear/seed1",
    ])  # fmt: skip
    untracked = subprocess.run(["git", "status", "--porcelain", "results"], cwd=repo,
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert untracked == ""  # every kept file is committed
    results = repo / "results" / "tiny"
    starts = {}
    for method in ("full", "lora_all_linear"):
        provenance = json.loads((results / "search" / method / "0" / "provenance.json").read_text())
        assert provenance["omp_num_threads"] == str(max(1, (os.cpu_count() or 1) // 2))
        starts[method] = provenance
    first, second = (starts[m] for m in ("full", "lora_all_linear"))
    assert second["started_utc"] <= first["finished_utc"]  # the two searches overlapped
