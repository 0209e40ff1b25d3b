"""``lowres study run``'s scheduler on fake steps (no training): steps at once, a step that
waits for its source model, a failure, trials kept while a search runs, commits."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import write_study_spec

from lowres.errors import LowresError
from lowres.sweeps import study, study_runner


def write_spec(tmp_path, **changes):
    """Two methods searched with 2 trials each, one source seed, one zero-shot language."""
    fake = {"name": "fake", "methods": {"full": {}, "lora": {}}, "trials": 2, "primary": []}
    fake |= {"source_seeds": [1], "stage2_seeds": [1], "tasks": {"tydiqa": {"zero_shot": ["sw"]}}}
    return write_study_spec(tmp_path, **{**fake, **changes})


def folder_of(argv: list[str]) -> Path:
    key = next(a for a in argv if a.startswith(("hydra.run.dir=", "hydra.sweep.dir=")))
    return Path(key.split("=", 1)[1])


def fake_sha(machine: str, folder: Path) -> str:
    """The sha256 a fake training on ``machine`` records for its weights."""
    return hashlib.sha256(f"{machine}:{folder}".encode()).hexdigest()


class FakeJob:
    """A step that takes ``polls`` polls; a search writes one trial per poll. A run on
    another ``machine`` than "a" scores differently and saves other weights."""

    def __init__(self, argv, log, polls=2, code=0, machine="a"):
        self.argv, self.log, self.left, self.code = argv, log, polls, code
        self.machine = machine
        self.folder = folder_of(argv)
        self.trials = 0
        self.folder.mkdir(parents=True, exist_ok=True)

    def poll(self):
        self.log.append(("poll", self.folder.name))
        if "-m" in self.argv:
            self._trial()
            if self.code == -9:
                return self.code  # killed after its first trial
        self.left -= 1
        if self.left > 0:
            return None
        if self.code == 0 and "-m" not in self.argv:
            (self.folder / "checkpoint").mkdir()
            sha = {"trainable.safetensors": fake_sha(self.machine, self.folder)}
            (self.folder / "checkpoint" / "manifest.json").write_text(json.dumps({"sha256": sha}))
            f1 = 50.0 if self.machine == "a" else 50.5
            scores = {"sw": {"f1": f1, "exact_match": 40.0, "n": 10}}
            (self.folder / "metrics.json").write_text(json.dumps({"per_language": scores}))
        return self.code

    def _trial(self):
        wanted = int(next(a for a in self.argv if a.startswith("search.trials=")).split("=")[1])
        if self.trials >= wanted:
            return
        seed = int(next(a for a in self.argv if a.startswith("search.seed=")).split("=")[1])
        plan = {"space": {"trainer.lr": "x"}, "n_trials": wanted, "seed": seed}
        plan |= {"source_language": "en", "source_dev_articles": 5, "source_dev_examples": 0}
        (self.folder / "search_plan.json").write_text(json.dumps(plan))
        trial = self.folder / str(self.trials)
        (trial / ".hydra").mkdir(parents=True)
        (trial / ".hydra" / "config.yaml").write_text("{}\n")  # written when a trial starts
        (trial / ".hydra" / "overrides.yaml").write_text(
            f"- trainer.lr={0.001 * (self.trials + 1)}\n"
        )
        dev = {"main_score": "f1", "f1": 60.0 + self.trials, "n": 5}
        (trial / "metrics.json").write_text(json.dumps({"source_dev": dev}))
        self.trials += 1


def launcher(log, fail=(), killed=(), machine="a"):
    """Fake steps on ``machine``; those whose folder names one of ``fail`` exit 1, of
    ``killed`` are killed (SIGKILL) the first time they run."""
    kills = set()

    def launch(argv):
        name = str(folder_of(argv))
        log.append(("start", name))
        code = 1 if any(f in name for f in fail) else 0
        if any(k in name for k in killed) and not any(k in name for k in kills):
            kills.update(k for k in killed if k in name)
            code = -9
        return FakeJob(argv, log, code=code, machine=machine)

    return launch


def test_two_jobs_run_two_searches_at_once_and_a_source_run_waits_for_its_search(tmp_path):
    spec = write_spec(tmp_path)
    log, said = [], []
    kept = []
    finished = study_runner.run_study(
        spec, launcher(log), jobs=2, poll_s=0, echo=said.append,
        commit=lambda paths, message: kept.append((message, paths)),
    )  # fmt: skip
    starts = [entry[1] for entry in log if entry[0] == "start"]
    work = tmp_path / "work"
    # both searches start before either ends; each method's source run after its search
    assert starts[:2] == [str(work / "search/full/part0"), str(work / "search/lora/part0")]
    assert log.index(("start", str(work / "source/full/seed1"))) > 2
    assert finished == 6  # 2 searches, 2 source runs, 2 zero-shot evaluations
    assert study_runner.next_words(spec) == "nothing is left to run"
    results = tmp_path / "results"
    assert study_runner.kept_trials(results / "search/full") == [0, 1]
    chosen = json.loads((results / "search/full/search.json").read_text())["best"]
    assert chosen["params"] == {"trainer.lr": 0.002} and chosen["value"] == 61.0
    # every trial and step committed as it was kept, trials first, each trial with the
    # search's plan (its parts and sampler seeds: what a resume elsewhere needs)
    assert [message for message, _ in kept[:2]] == [
        "fake: search/full trial 0", "fake: search/lora trial 0"
    ]  # fmt: skip
    assert kept[0][1] == [results / "search/full/0", results / "search/full/search_plan.json"]
    kept = [message for message, _ in kept]
    assert "fake: search/full" in kept and "fake: zeroshot/tydiqa/lora/seed1" in kept
    assert len(kept) == 4 + 6
    provenance = json.loads((results / "zeroshot/tydiqa/full/seed1/provenance.json").read_text())
    assert provenance["command"][:2] == ["lowres", "evaluate"] and provenance["wall_s"] >= 0


def test_a_failed_step_stops_new_starts_lets_the_others_finish_and_names_itself(tmp_path):
    spec = write_spec(tmp_path)
    log = []
    with pytest.raises(LowresError, match=r"search/lora .* failed \(exit 1\)"):
        study_runner.run_study(
            spec, launcher(log, fail=("search/lora",)), jobs=2, poll_s=0, echo=lambda _: None
        )
    starts = [entry[1] for entry in log if entry[0] == "start"]
    assert len(starts) == 2  # nothing started after the failure
    results = tmp_path / "results"
    assert (results / "search/full/search.json").is_file()  # the other search was kept whole
    assert study_runner.kept_trials(results / "search/lora") == [0, 1]  # its trials too


def test_a_committed_source_run_without_weights_here_is_trained_again_not_kept(tmp_path):
    spec = write_spec(tmp_path, methods={"full": {}})
    study_runner.run_study(spec, launcher([]), poll_s=0, echo=lambda _: None)
    source = tmp_path / "results/source/full/seed1/metrics.json"
    before = source.read_bytes()
    for path in (tmp_path / "results/zeroshot").rglob("*"):
        if path.name == "metrics.json":
            path.unlink()
    shutil.rmtree(tmp_path / "work" / "source" / "full" / "seed1" / "checkpoint")
    log, said = [], []
    assert study_runner.run_study(spec, launcher(log), poll_s=0, echo=said.append) == 1
    starts = [Path(entry[1]).relative_to(tmp_path / "work").as_posix() for entry in log
              if entry[0] == "start"]  # fmt: skip
    assert starts == ["source/full/seed1", "zeroshot/tydiqa/full/seed1"]
    assert any("weights not under" in line for line in said)
    assert source.read_bytes() == before  # the committed results are not replaced


def test_later_steps_record_the_weights_they_start_from_and_each_retrain_is_kept(tmp_path):
    zero_shot = {"zero_shot": ["sw"]}
    spec = write_spec(
        tmp_path, methods={"full": {}}, tasks={"tydiqa": zero_shot, "mlqa": zero_shot}
    )
    study_runner.run_study(spec, launcher([]), poll_s=0, echo=lambda _: None)
    results, work = tmp_path / "results", tmp_path / "work"
    source = results / "source/full/seed1"
    committed = fake_sha("a", work / "source/full/seed1")
    assert json.loads((source / "provenance.json").read_text())["weights_sha256"] == committed
    first = json.loads((results / "zeroshot/tydiqa/full/seed1/provenance.json").read_text())
    assert first["source_model"] == {
        "step": "source/full/seed1", "sha256": committed, "scores_as_kept": True
    }  # fmt: skip
    assert not (source / "retrains.json").exists()  # trained once, on this machine

    # Machine "b": no weights here, one zero-shot evaluation left. The model is trained
    # again there, scores differently, and the evaluation after it says so.
    (results / "zeroshot/mlqa/full/seed1/metrics.json").unlink()
    shutil.rmtree(work)
    said, kept = [], []
    commit = lambda paths, message: kept.append((message, paths))  # noqa: E731
    study_runner.run_study(
        spec, launcher([], machine="b"), poll_s=0, echo=said.append, commit=commit
    )
    assert any("scores differently" in line for line in said)
    retrained = fake_sha("b", work / "source/full/seed1")
    retrains = json.loads((source / "retrains.json").read_text())
    assert [(r["weights_sha256"], r["scores_as_kept"]) for r in retrains] == [(retrained, False)]
    assert retrains[0]["command"][:2] == ["lowres", "train"] and retrains[0]["wall_s"] >= 0
    assert kept[0] == (
        "fake: source/full/seed1 trained again (other scores)",
        [source / "retrains.json"],
    )
    second = json.loads((results / "zeroshot/mlqa/full/seed1/provenance.json").read_text())
    assert second["source_model"]["sha256"] == retrained
    assert second["source_model"]["scores_as_kept"] is False

    # The report says that the two evaluations started from two different models.
    record = study.report(spec)
    assert record["source_models"] == [{
        "source": "source/full/seed1", "steps": 2, "trainings": 2,
        "committed_sha256": committed, "weights_used": sorted([committed, retrained]),
        "not_recorded": 0, "scored_as_committed": 1,
    }]  # fmt: skip
    text = (results / "report" / "report.md").read_text()
    assert "## Source models behind the later steps" in text
    shown = sorted([f"{committed[:12]} (the committed run's)", retrained[:12]])
    assert (
        f"| source/full/seed1 | 2 | 2 | **2 different:** {'; '.join(shown)} | **1 of 2** |" in text
    )


def test_stage_two_search_trials_count_among_the_steps_from_a_source_model(tmp_path):
    space = {"trainer.lr": "tag(log,interval(1e-5,1e-3))"}
    tasks = {"tydiqa": {"zero_shot": ["sw"], "few_shot": ["sw"]}}
    spec = write_spec(tmp_path, methods={"full": {"stage2_space": space}}, k=[2], tasks=tasks)
    assert study_runner.run_study(spec, launcher([]), poll_s=0, echo=lambda _: None) == 5
    trial = tmp_path / "results/stage2search/full/1/provenance.json"
    assert json.loads(trial.read_text())["source_model"]["step"] == "source/full/seed1"
    (model,) = study.report(spec)["source_models"]
    committed = fake_sha("a", tmp_path / "work/source/full/seed1")
    # the zero-shot evaluation, the stage-2 search's 2 trials and the few-shot run
    assert (model["steps"], model["weights_used"], model["scored_as_committed"]) == (
        4, [committed], 4
    )  # fmt: skip


def test_a_spec_that_pins_no_device_or_precision_is_not_checked_against_the_machine(tmp_path):
    spec = write_spec(tmp_path, common=["trainer.progress=false"])
    assert study_runner.machine_problem(spec) is None
    spec = write_spec(tmp_path, common=["trainer.precision=fp32", "trainer.device=cpu"])
    assert study_runner.machine_problem(spec) is None  # every CPU runs fp32


def test_steps_kept_under_another_command_than_the_plan_are_stale_until_moved(tmp_path):
    import dataclasses
    import shutil

    spec = write_spec(tmp_path, common=["trainer.precision=bf16"])
    assert study_runner.run_study(spec, launcher([]), poll_s=0, echo=lambda _: None) == 6
    assert study.stale(spec) == [] and study.stale_problem(spec) is None
    # the spec amended after its runs: the source runs and their evaluations' commands differ
    amended = dataclasses.replace(spec, common=["trainer.precision=fp32"])
    found = {f["step"]: f for f in study.stale(amended)}
    assert list(found) == [  # with the evaluations that started from their models
        "source/full/seed1", "zeroshot/tydiqa/full/seed1",
        "source/lora/seed1", "zeroshot/tydiqa/lora/seed1",
    ]  # fmt: skip
    assert found["source/full/seed1"]["ran"] == ["trainer.precision=bf16"]
    assert found["source/full/seed1"]["planned"] == ["trainer.precision=fp32"]
    assert found["zeroshot/tydiqa/full/seed1"]["from"] == "source/full/seed1"
    problem = study.stale_problem(amended)
    assert problem.startswith("4 kept step(s) of the study fake ran a command its spec no")
    assert "source/full/seed1, ran with trainer.precision=bf16 where the spec now plans" in problem
    assert f"under {tmp_path / 'results' / 'superseded'}/" in problem
    # only the source runs moved aside: their evaluations are stale on their own
    results = tmp_path / "results"
    for method in ("full", "lora"):
        shutil.move(results / f"source/{method}/seed1", results / f"superseded/bf16/{method}")
    problem = study.stale_problem(amended)
    assert "the first, zeroshot/tydiqa/full/seed1, started from source/full/seed1" in problem
    for method in ("full", "lora"):
        old = results / f"zeroshot/tydiqa/{method}/seed1"
        shutil.move(old, results / f"superseded/bf16/zeroshot-{method}")
    assert study.stale(amended) == [] and study.stale_problem(amended) is None
    assert study_runner.next_words(amended) == "the next step is source/full/seed1"


def test_only_the_steps_still_to_run_are_checked_against_the_machine(tmp_path, monkeypatch):
    from lowres import environment

    monkeypatch.setattr(environment, "cpu_bf16_flags", lambda: ())  # a CPU without native bf16
    monkeypatch.setattr(environment, "runs_on_gpu", lambda device: False)
    spec = write_spec(
        tmp_path,
        common=["trainer.precision=fp32"],
        source={"search_overrides": ["trainer.precision=bf16"]},
    )
    problem = study_runner.machine_problem(spec)  # the searches, in bf16, are still to run
    assert "pins trainer.precision=bf16 for 2 of its steps still to run" in problem
    assert "(the first: search/full)" in problem and "neither avx512_bf16 nor amx_bf16" in problem
    for method in ("full", "lora"):  # both searches finished (on a machine with bf16)
        chosen = tmp_path / "results" / "search" / method
        chosen.mkdir(parents=True)
        best = {"params": {"trainer.lr": 1e-3}, "value": 50.0, "number": 0}
        (chosen / "search.json").write_text(json.dumps({"best": best, "trials": []}))
    assert study_runner.machine_problem(spec) is None  # what is left runs in fp32


def test_the_git_committer_commits_only_the_kept_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args in (["init", "-q"], ["config", "user.email", "t@t"], ["config", "user.name", "t"]):
        subprocess.run(["git", *args], check=True)
    (tmp_path / "other.txt").write_text("staged, not a result\n")
    subprocess.run(["git", "add", "other.txt"], check=True)
    kept = tmp_path / "results" / "search" / "full" / "0"
    kept.mkdir(parents=True)
    (kept / "metrics.json").write_text("{}")
    said = []
    study_runner.git_committer(said.append)([kept], "fake: search/full trial 0")
    shown = subprocess.run(["git", "show", "--name-only", "--format=%s"], capture_output=True,
                           text=True, check=True).stdout.split()  # fmt: skip
    assert shown[-1] == "results/search/full/0/metrics.json" and "other.txt" not in shown
    assert said == []
    study_runner.git_committer(said.append)([tmp_path / "missing"], "nothing")
    assert said and "could not commit" in said[0]


def chosen(tmp_path, *methods, stage="search"):
    """Each method's search (or stage-2 search) has chosen, so its later steps are planned."""
    for method in methods:
        folder = tmp_path / "results" / stage / method
        folder.mkdir(parents=True)
        best = {"params": {"trainer.lr": 1e-4}, "value": 1.0, "number": 0}
        (folder / "search.json").write_text(json.dumps({"best": best, "trials": []}))


def test_steps_run_seed_by_seed_each_seed_stage_by_stage_in_the_spec_method_order(tmp_path):
    space = {"stage2_space": {"trainer.lr": "tag(log,interval(1e-5,1e-3))"}}
    tasks = {"tydiqa": {"zero_shot": ["sw"], "few_shot": ["sw"]}}
    spec = write_spec(tmp_path, methods={"full": space, "lora": space}, source_seeds=[1, 2],
                      k=[8], tasks=tasks)  # fmt: skip
    chosen(tmp_path, "full", "lora")
    chosen(tmp_path, "full", "lora", stage="stage2search")
    names = [s.name for s in study_runner._order(spec, study.plan(spec))]
    assert names == [
        "search/full", "search/lora",
        "source/full/seed1", "source/lora/seed1",
        "zeroshot/tydiqa/full/seed1", "zeroshot/tydiqa/lora/seed1",
        "stage2search/full", "stage2search/lora",  # from the first seed's models
        "fewshot/tydiqa/sw/full/seed1/k8/s1", "fewshot/tydiqa/sw/lora/seed1/k8/s1",
        "source/full/seed2", "source/lora/seed2",
        "zeroshot/tydiqa/full/seed2", "zeroshot/tydiqa/lora/seed2",
        "fewshot/tydiqa/sw/full/seed2/k8/s1", "fewshot/tydiqa/sw/lora/seed2/k8/s1",
    ]  # fmt: skip


def test_a_step_whose_source_model_is_here_goes_before_training_any_model(tmp_path):
    """Weights are never committed: a model trained again in a later session costs a whole
    source run, so what starts from a model on this machine runs first."""
    spec = write_spec(tmp_path, source_seeds=[1, 2])
    chosen(tmp_path, "full", "lora")
    work, results = tmp_path / "work", tmp_path / "results"
    for name in ("source/full/seed1", "source/lora/seed1", "source/full/seed2"):
        (results / name).mkdir(parents=True)
        (results / name / "metrics.json").write_text("{}")  # kept
    (work / "source/full/seed2/checkpoint").mkdir(parents=True)  # only this model is here
    (work / "source/full/seed2/metrics.json").write_text("{}")
    step, kept = study_runner.next_step(spec, study.plan(spec), busy=set())
    assert (step.name, kept) == ("zeroshot/tydiqa/full/seed2", True)
    step, kept = study_runner.next_step(spec, study.plan(spec), busy={step.name})
    assert (step.name, kept) == ("source/full/seed1", False)  # seed 1's model trained again
    assert study_runner.next_words(spec) == "the next step is zeroshot/tydiqa/full/seed2"
    # a source model trained here but not yet kept is not used: keeping it would restart it
    (results / "source/full/seed2/metrics.json").unlink()
    step, kept = study_runner.next_step(spec, study.plan(spec), busy=set())
    assert (step.name, kept) == ("source/full/seed1", False)
    assert study_runner.next_words(spec) == (
        "the next step trains source/full/seed1 again: its results are kept, its weights are "
        f"not under {work} (the steps that start from it need them)"
    )


def test_a_method_outside_the_primary_family_runs_after_every_primary_step(tmp_path):
    methods = {"frozen": {}, "full": {}, "lora": {}}  # the exploratory one first in the spec
    spec = write_spec(tmp_path, methods=methods, primary=[["lora", "full", 0, "tydiqa"]])
    assert spec.exploratory("frozen") and not spec.exploratory("full")
    chosen(tmp_path, "frozen", "full", "lora")
    names = [s.name for s in study_runner._order(spec, study.plan(spec))]
    assert names == [
        "search/full", "search/lora", "source/full/seed1", "source/lora/seed1",
        "zeroshot/tydiqa/full/seed1", "zeroshot/tydiqa/lora/seed1",
        "search/frozen", "source/frozen/seed1", "zeroshot/tydiqa/frozen/seed1",
    ]  # fmt: skip
    busy = {s.name for s in study.plan(spec) if not spec.exploratory(s.method)}
    step, kept = study_runner.next_step(spec, study.plan(spec), busy)
    assert (step.name, kept) == ("source/frozen/seed1", True)  # its search has chosen


def test_a_search_part_replaces_the_folder_budget_and_seed_through_hydras_parser(tmp_path):
    spec = write_spec(tmp_path)
    step = study.plan(spec)[0]
    argv = study_runner._search_argv(spec, step, first_trial=0)
    assert argv.count(f"hydra.sweep.dir={tmp_path / 'work' / 'search/full/part0'}") == 1
    assert "search.trials=2" in argv and "search.seed=0" in argv
    assert not any(a.startswith("hydra.sweeper.storage=") for a in argv)  # a fresh search
    assert len(argv) == len(step.argv)  # replaced, not added


def test_the_process_launcher_shares_the_cores_and_provenance_records_it(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "")  # records the real value, restored after
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    study_runner.process_launcher(jobs=2)
    assert study_runner.describe_machine()["omp_num_threads"] == "4"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's own setting is kept
    study_runner.process_launcher(jobs=2)
    assert study_runner.describe_machine()["omp_num_threads"] == "3"


def test_a_killed_search_goes_on_from_its_kept_trial_and_a_second_runner_is_refused(tmp_path):
    spec = write_spec(tmp_path, methods={"full": {}})
    log, said = [], []
    assert study_runner.run_study(
        spec, launcher(log, killed=("search/full",)), poll_s=0, echo=said.append
    ) == 3  # fmt: skip
    starts = [Path(entry[1]).name for entry in log if entry[0] == "start"][:2]
    assert starts == ["part0", "part1"]  # killed after trial 0; trial 1 in a second part
    assert any("killed by signal 9" in line and "retry 1 of 2" in line for line in said)
    results = tmp_path / "results" / "search" / "full"
    assert study_runner.kept_trials(results) == [0, 1]
    plan = json.loads((results / "search_plan.json").read_text())
    assert [(p["first_trial"], p["sampler_seed"]) for p in plan["parts"]] == [(0, 0), (1, 1)]

    refused = pytest.raises(LowresError, match=r"Another `lowres study run` \(PID \d+\)")
    with study_runner._study_lock(spec), refused:  # a study run holds the work folder
        study_runner.run_study(spec, launcher([]), poll_s=0, echo=said.append)


def test_a_step_killed_more_often_than_its_retries_stops_the_study(tmp_path):
    spec = write_spec(tmp_path, methods={"full": {}})
    with pytest.raises(LowresError, match=r"search/full .* failed \(exit -9\)"):
        study_runner.run_study(
            spec, launcher([], killed=("search/full",)), retries=0, poll_s=0, echo=print
        )


def test_a_search_killed_after_its_last_trial_is_finished_without_running_again(tmp_path):
    spec = write_spec(tmp_path, methods={"full": {}}, trials=1)
    log = []
    study_runner.run_study(spec, launcher(log, killed=("search/full",)), poll_s=0, echo=print)
    starts = [Path(entry[1]).name for entry in log if entry[0] == "start"]
    assert starts[0] == "part0" and "part1" not in starts  # nothing left to run
    assert (tmp_path / "results" / "search" / "full" / "search.json").is_file()
