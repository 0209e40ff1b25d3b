"""Running a study's steps: ``lowres study run SPEC [--jobs N] [--commit]``.

The plan (:func:`lowres.sweeps.study.plan`) says what the steps are; this module runs those
without results, up to ``jobs`` at a time, and keeps each finished step's results (never
weights) under the spec's ``results`` folder with a ``provenance.json`` (the command, the
lowres commit it ran at, the machine, its times, the sha256 of the weights it trained and
of the source model's weights it started from). Nothing here depends on ``outputs/``
surviving: a fresh clone with only the committed results continues where they end.

A search step is kept trial by trial, as each trial finishes: a study stopped in the middle
of a search loses at most the trial in progress. It resumes with the remaining trials: the
kept trials are told to Optuna first (a storage rebuilt from the results), and the sampler
is seeded with the search seed plus the number of kept trials, so a resumed search never
proposes the values its first part started with. Which trials came from which part, and at
which seed, is recorded in ``search_plan.json``.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import shutil
import time
import warnings
from collections.abc import Callable, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from lowres.errors import LowresError
from lowres.files import recorded_sha256
from lowres.overrides import read_all
from lowres.sweeps.search import PLAN, write_search
from lowres.sweeps.study import PROVENANCE, RETRAINS, Step, StudySpec, done, plan

# environment.json: the device, resolved precision, threads and library versions of the run
KEPT = ("metrics.json", "train_log.jsonl", "data_split.json", "data_files.json", "environment.json")


class Job(Protocol):
    """A started step: ``poll()`` is None while it runs, then its exit code."""

    def poll(self) -> int | None: ...


Launcher = Callable[[list[str]], Job]  # starts ``lowres ARGV``
Committer = Callable[[list[Path], str], None]  # commits these paths with this message
Describer = Callable[[], dict[str, Any]]  # the code and machine a step runs on


class _Ended:
    """A step with nothing left to run (a search whose every trial is kept)."""

    def poll(self) -> int:
        return 0


@dataclass
class Running:
    step: Step
    job: Job
    argv: list[str]
    started: float
    provenance: dict[str, Any]
    keep: bool = True  # False: a source model retrained for its weights only
    first_trial: int = 0  # a search part: the number of its first trial


# -- searches, kept trial by trial ---------------------------------------------------------


def kept_trials(folder: Path) -> list[int]:
    """The trial numbers whose results are kept in a search's results folder."""
    if not folder.is_dir():
        return []
    return sorted(
        int(p.name) for p in folder.iterdir() if p.name.isdigit() and (p / "metrics.json").is_file()
    )


def _argv_with(argv: list[str], **values: str) -> list[str]:
    """``argv`` with each ``key=value`` replaced (keys given with ``.`` as ``__``)."""
    keys = {key.replace("__", "."): value for key, value in values.items()}
    replaced = {setting.text for setting in read_all(argv) if setting.key in keys}
    return [*(a for a in argv if a not in replaced), *(f"{k}={v}" for k, v in keys.items())]


def _space(argv: list[str]) -> list[str]:
    """The sweep overrides of a search command (its space)."""
    return [setting.text for setting in read_all(argv) if setting.sweep]


def _storage_with_kept_trials(
    spec: StudySpec, step: Step, storage: Path, study_name: str, first_trial: int
) -> str:
    """An Optuna storage that already holds the kept trials, for a resumed search to see."""
    import optuna
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    distributions, _ = create_params_from_overrides(_space(step.argv))
    url = f"sqlite:///{storage.resolve()}"
    storage.parent.mkdir(parents=True, exist_ok=True)
    storage.unlink(missing_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=study_name, storage=url, direction="maximize")
    results = Path(spec.results) / step.name
    # add_trial and create_trial are what optuna 2 offers for telling past trials; they are
    # marked experimental there, and the warning says nothing a study user can act on
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for number in kept_trials(results)[:first_trial]:
            trial = results / str(number)
            metrics = json.loads((trial / "metrics.json").read_text())
            dev = metrics.get("source_dev") or {}
            value = dev.get(dev.get("main_score", "f1"))
            saved = yaml.safe_load((trial / "overrides.yaml").read_text()) or []
            params = {
                s.key: _as_param(distributions[s.key], s.value_text)
                for s in read_all(saved)
                if s.key in distributions
            }
            finite = isinstance(value, int | float) and value == value
            study.add_trial(
                optuna.trial.create_trial(
                    params=params,
                    distributions=distributions,
                    value=float(value) if finite else None,
                    state=optuna.trial.TrialState.COMPLETE
                    if finite
                    else optuna.trial.TrialState.FAIL,
                )
            )
    return url


def _as_param(distribution: Any, text: str) -> Any:
    """A kept override's value as the distribution holds it (choices are matched as text)."""
    choices = getattr(distribution, "choices", None)
    if choices is not None:
        return next(c for c in choices if str(c) == text or str(c) == str(yaml.safe_load(text)))
    value = yaml.safe_load(text)
    return int(value) if "Int" in type(distribution).__name__ else float(value)


def _search_argv(spec: StudySpec, step: Step, first_trial: int) -> list[str]:
    """The search command for the trials still to run, in its own part folder."""
    part = Path(spec.work) / step.name / f"part{first_trial}"
    changes = {
        "hydra__sweep__dir": str(part),
        "search__trials": str(spec.trials - first_trial),
        "search__seed": str(spec.search_seed + first_trial),
    }
    if first_trial:
        name = step.name.replace("/", "-")
        storage = Path(spec.work) / step.name / f"optuna-part{first_trial}.db"
        changes["hydra__sweeper__storage"] = _storage_with_kept_trials(
            spec, step, storage, name, first_trial
        )
        changes["hydra__sweeper__study_name"] = name
    return _argv_with(step.argv, **changes)


def _keep_new_trials(spec: StudySpec, running: Running, commit: Committer | None) -> list[int]:
    """Copy the part's finished trials not yet in results/ (number = part start + index)."""
    part = Path(spec.work) / running.step.name / f"part{running.first_trial}"
    target = Path(spec.results) / running.step.name
    have = set(kept_trials(target))
    new = []
    for trial in sorted((p for p in part.glob("[0-9]*") if p.name.isdigit()), key=_number):
        number = running.first_trial + int(trial.name)
        if number in have or not (trial / "metrics.json").is_file():
            continue
        folder = target / str(number)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        shutil.copy2(trial / ".hydra" / "overrides.yaml", folder / "overrides.yaml")
        for name in ("train_log.jsonl", "environment.json"):
            if (trial / name).is_file():
                shutil.copy2(trial / name, folder / name)
        # a trial starts when Hydra writes its config, not when its part (search) started
        started = (trial / ".hydra" / "config.yaml").stat().st_mtime
        _write_provenance(folder, running, started=started, part_trial=int(trial.name))
        shutil.copy2(trial / "metrics.json", folder / "metrics.json")  # last: marks it kept
        new.append(number)
        plan_file = _record_plan(spec, running, part)  # committed with the trial: a resume
        if commit:  # elsewhere needs its parts and seeds
            commit([folder, plan_file], f"{spec.name}: {running.step.name} trial {number}")
    return new


def _number(path: Path) -> int:
    return int(path.name)


def _record_plan(spec: StudySpec, running: Running, part: Path) -> Path:
    """results/<search>/search_plan.json: the part's plan, the study's budget, the parts."""
    target = Path(spec.results) / running.step.name / PLAN
    planned = json.loads((part / PLAN).read_text())
    previous = json.loads(target.read_text()) if target.is_file() else {}
    parts = [p for p in previous.get("parts", []) if p["first_trial"] != running.first_trial]
    parts.append(
        {
            "first_trial": running.first_trial,
            "sampler_seed": planned["seed"],
            "lowres_commit": running.provenance.get("lowres_commit"),
        }
    )
    record = {
        **planned,
        "n_trials": spec.trials,
        "seed": spec.search_seed,
        "parts": sorted(parts, key=lambda p: p["first_trial"]),
    }
    target.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return target


def _finish_search(spec: StudySpec, step: Step) -> dict[str, Any]:
    """search.json in results/ from the kept trials: the step is done."""
    folder = Path(spec.results) / step.name
    record = write_search(folder)
    record_file = folder / "search.json"
    data = json.loads(record_file.read_text())
    data["search_dir"] = step.name
    record_file.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return record


# -- other steps ---------------------------------------------------------------------------


def _keep_run(spec: StudySpec, running: Running) -> Path:
    """Copy a finished run's results (never weights, only their sha256) from work/ into
    results/."""
    source, target = Path(spec.work) / running.step.name, Path(spec.results) / running.step.name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name in KEPT:
        if name != "metrics.json" and (source / name).is_file():
            shutil.copy2(source / name, target / name)
    if (source / "predictions").is_dir():  # gzipped: results/ stays light (docs/results)
        (target / "predictions").mkdir()
        for file in sorted((source / "predictions").iterdir()):
            packed = gzip.compress(file.read_bytes(), compresslevel=9, mtime=0)
            (target / "predictions" / f"{file.name}.gz").write_bytes(packed)
    if (source / ".hydra" / "overrides.yaml").is_file():
        shutil.copy2(source / ".hydra" / "overrides.yaml", target / "overrides.yaml")
    sha = recorded_sha256(source / "checkpoint")  # the weights stay out; their fingerprint not
    _write_provenance(target, running, **({"weights_sha256": sha} if sha else {}))
    shutil.copy2(source / "metrics.json", target / "metrics.json")  # last: marks it done
    return target


def _provenance(running: Running, started: float | None = None, **extra: Any) -> dict[str, Any]:
    """What ran, on which code and machine, when: a kept step's provenance.json."""
    finished, started = time.time(), started or running.started
    return {
        "step": running.step.name,
        "command": ["lowres", *running.argv],
        **running.provenance,
        "started_utc": _utc(started),
        "finished_utc": _utc(finished),
        "wall_s": round(finished - started, 1),
        **extra,
    }


def _write_provenance(
    folder: Path, running: Running, started: float | None = None, **extra: Any
) -> None:
    record = _provenance(running, started, **extra)
    (folder / PROVENANCE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _weights_ready(spec: StudySpec, name: str) -> bool:
    """A finished run with its checkpoint under work/ (a killed retrain is not ready)."""
    folder = Path(spec.work) / name
    return (folder / "metrics.json").is_file() and (folder / "checkpoint").is_dir()


def _same_run(spec: StudySpec, name: str) -> bool:
    """Whether a retrained source model scored what its committed results say."""
    fresh = json.loads((Path(spec.work) / name / "metrics.json").read_text())
    kept = json.loads((Path(spec.results) / name / "metrics.json").read_text())
    return all(fresh.get(key) == kept.get(key) for key in ("per_language", "train_loss"))


def _source_model(spec: StudySpec, name: str) -> dict[str, Any]:
    """The source model a step starts from, as its provenance records it: the sha256 of the
    weights under work/ and whether that training scored what the committed run says (a
    model trained again on another machine can differ, and the steps after it use it)."""
    checkpoint = Path(spec.work) / name / "checkpoint"
    return {
        "step": name,
        "sha256": recorded_sha256(checkpoint),
        "scores_as_kept": _same_run(spec, name),
    }


def _record_retrain(spec: StudySpec, state: Running, same: bool) -> Path:
    """Add this training of a kept source model to its results' retrains.json."""
    path = Path(spec.results) / state.step.name / RETRAINS
    retrains = json.loads(path.read_text()) if path.is_file() else []
    sha = recorded_sha256(Path(spec.work) / state.step.name / "checkpoint")
    retrains.append(_provenance(state, weights_sha256=sha, scores_as_kept=same))
    path.write_text(json.dumps(retrains, indent=2) + "\n", encoding="utf-8")
    return path


def machine_problem(spec: StudySpec, steps: list[Step] | None = None) -> str | None:
    """Why this machine cannot run the study's steps still to run, or None: the device and
    precision their commands pin, checked as each step's run would check them, before any
    starts (finished steps are not looked at: a spec can record that its searches ran at a
    setting the later steps do not use; steps that pin neither leave them to each run)."""
    wanted: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for step in plan(spec) if steps is None else steps:
        if done(spec, step):
            continue
        pinned = {
            s.key: s.value_text
            for s in read_all(step.argv)
            if s.key in ("trainer.device", "trainer.precision")
        }
        if pinned:
            wanted.setdefault(tuple(sorted(pinned.items())), []).append(step.name)
    if not wanted:
        return None
    from lowres.environment import device_problem  # imports torch: only for a pinned spec

    for pinned, names in wanted.items():
        by_key = dict(pinned)
        problem = device_problem(
            by_key.get("trainer.device", "auto"), by_key.get("trainer.precision", "auto")
        )
        if problem is None:
            continue
        settings = " and ".join(f"{key}={value}" for key, value in pinned)
        return (
            f"The study {spec.name} pins {settings} for {len(names)} of its steps still to run "
            f"(the first: {names[0]}), and this machine cannot run them: {problem[0]}. "
            "Changing a pinned setting after a study's first step changes its protocol, so "
            "continue it on a machine that can run it (its committed results stay as they "
            "are), or amend the spec and say so where its protocol is written; before its "
            "first step, change the spec instead."
        )
    return None


# -- the scheduler -------------------------------------------------------------------------


STAGES = ("search", "source", "zeroshot", "fewshot")  # stage 2's search is a "search" step


def _order(spec: StudySpec, steps: list[Step]) -> list[Step]:
    """The primary family's methods first, then the exploratory ones (named in no primary
    comparison): a study that runs out of time loses exploratory work, not a registered test.
    Within each: every search, then source seed by source seed, each seed's source runs,
    zero-shot evaluations, stage-2 searches (they start from the first seed's models) and
    few-shot runs; methods in the spec's order. A study stopped anywhere has the same seeds
    at every stage for every method it compares, and the steps that start from a source
    model follow it closely, while its weights are still on the machine (weights are never
    committed: a later session on another machine would have to train the model again)."""

    def key(item: tuple[int, Step]) -> tuple:
        position, step = item
        stage2 = step.name.startswith("stage2search/")
        rank = 2.5 if stage2 else STAGES.index(step.kind)  # after zero-shot
        seed = re.search(r"/seed(\d+)", step.needs if stage2 else step.name)
        return (spec.exploratory(step.method), int(seed.group(1)) if seed else 0, rank, position)

    return [step for _, step in sorted(enumerate(steps), key=key)]


def next_step(
    spec: StudySpec, steps: list[Step], busy: Set[str] = frozenset()
) -> tuple[Step, bool] | None:
    """The first step that can start now, and whether it is kept (False: a retrain of a
    source model whose results are committed but whose weights are not here). A step whose
    source model's weights are here goes before any other, so that no model is trained
    twice because the session ended before the steps that start from it."""
    by_name = {s.name: s for s in steps}
    kept = {s.name for s in steps if done(spec, s)}  # each results folder looked at once
    ordered = [s for s in _order(spec, steps) if s.name not in busy and s.name not in kept]
    # a source step trained but not yet kept would start again, clearing the folder in use
    startable = [s for s in ordered if not s.needs or (s.needs in kept and s.needs not in busy)]
    for step in startable:
        if step.needs and _weights_ready(spec, step.needs):
            return step, True  # its source model is here
    if not startable:
        return None
    first = startable[0]  # with a source model, a kept one whose weights are not here
    return (by_name[first.needs], False) if first.needs else (first, True)


def next_words(spec: StudySpec) -> str:
    """What ``lowres study run`` would start first here, in words (``lowres study status``)."""
    found = next_step(spec, plan(spec))
    if found is None:
        return "nothing is left to run"
    step, keep = found
    if keep:
        return f"the next step is {step.name}"
    return (
        f"the next step trains {step.name} again: its results are kept, its weights are not "
        f"under {spec.work} (the steps that start from it need them)"
    )


def run_study(
    spec: StudySpec,
    launch: Launcher,
    *,
    jobs: int = 1,
    limit: int = 0,
    retries: int = 2,
    echo: Callable[[str], None] = print,
    commit: Committer | None = None,
    describe: Describer = dict,
    poll_s: float = 10.0,
) -> int:
    """Run the steps without results, up to ``jobs`` at once (at most ``limit`` when > 0);
    returns how many finished. The plan is made again after each finished step, so the
    steps after a search appear once its choice is kept. A step killed by a signal (the
    out-of-memory killer, say) starts again from what is kept, up to ``retries`` times; a
    step that fails with an error stops new starts."""
    with _study_lock(spec):
        running: dict[str, Running] = {}
        kills: dict[str, int] = {}
        finished, failure = 0, None
        while True:
            done_now, failed = _collect(spec, running, kills, retries, commit, echo)
            finished, failure = finished + done_now, failure or failed
            steps = plan(spec)
            while failure is None and len(running) < jobs and not (limit and finished >= limit):
                found = next_step(spec, steps, set(running))
                if found is None:
                    break
                step, keep = found
                running[step.name] = _start(spec, step, keep, launch, describe, echo)
                if not keep:
                    echo(f"study: {step.name}: weights not under {spec.work}; training it again")
            if not running:
                break
            time.sleep(poll_s)
    if failure:
        raise failure
    return finished


def _collect(
    spec: StudySpec,
    running: dict[str, Running],
    kills: dict[str, int],
    retries: int,
    commit: Committer | None,
    echo: Callable[[str], None],
) -> tuple[int, LowresError | None]:
    """Keep what the running steps have finished: new search trials, ended steps. Returns
    how many steps finished and the first failure."""
    finished, failure = 0, None
    for name, state in list(running.items()):
        code = state.job.poll()  # before keeping: a trial written just before the end
        if state.step.kind == "search" and state.keep:
            for number in _keep_new_trials(spec, state, commit):
                echo(f"study: {name}: trial {number} kept")
        if code is None:
            continue
        del running[name]
        if code < 0 and kills.get(name, 0) < retries:  # killed by a signal, not failed
            kills[name] = kills.get(name, 0) + 1
            echo(
                f"study: {name}: killed by signal {-code} (the out-of-memory killer, or a "
                f"stop); started again from what is kept (retry {kills[name]} of {retries})"
            )
        elif code:
            failure = failure or _failed(state, code)
        else:
            try:
                finished += _finish(spec, state, commit, echo)
            except LowresError as err:
                failure = failure or err
    return finished, failure


@contextlib.contextmanager
def _study_lock(spec: StudySpec):
    """One ``lowres study run`` per work folder: a second would restart the first one's
    steps in the same folders."""
    import fcntl
    import os

    work = Path(spec.work)
    work.mkdir(parents=True, exist_ok=True)
    with open(work / ".study.lock", "a+", encoding="utf-8") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise LowresError(
                f"Another `lowres study run` ({holder}) is running the study in {work}; two "
                "would run the same steps in the same folders. Wait for it to end, or stop "
                "it (its kept trials and steps stay kept) and run again."
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"PID {os.getpid()}\n")
        lock.flush()
        yield


def _failed(state: Running, code: int) -> LowresError:
    return LowresError(
        f"The study step {state.step.name} (`lowres {' '.join(state.argv)}`) failed (exit "
        f"{code}); its output is above. Fix the cause and run `lowres study run` again: "
        "finished steps and kept search trials are not run again."
    )


def _start(
    spec: StudySpec, step: Step, keep: bool, launch: Launcher, describe: Describer, echo
) -> Running:
    shutil.rmtree(Path(spec.work) / step.name, ignore_errors=True)  # an unfinished try
    first = len(kept_trials(Path(spec.results) / step.name)) if step.kind == "search" else 0
    if step.kind == "search" and first >= spec.trials:  # stopped after its last trial
        echo(f"study: {step.name}: every trial kept; the search is finished without running")
        return Running(step, _Ended(), [], time.time(), describe(), keep, first)
    argv = _search_argv(spec, step, first) if step.kind == "search" else step.argv
    if first:
        echo(f"study: {step.name}: {first} trial(s) kept; the search goes on from trial {first}")
    echo(f"study: {step.name}: lowres {' '.join(argv)}")
    provenance = describe()
    if keep and step.needs:  # which weights it starts from: a retrain elsewhere can differ
        provenance["source_model"] = _source_model(spec, step.needs)
    return Running(step, launch(argv), argv, time.time(), provenance, keep, first)


def _finish(spec: StudySpec, state: Running, commit: Committer | None, echo) -> int:
    """Keep a finished step; 1 if it counts as a finished step of the study."""
    name = state.step.name
    if not state.keep:
        same = _same_run(spec, name)
        if not same:
            echo(
                f"study: warning: {name} retrained here scores differently from its committed "
                "results (another machine or library version); the steps after it use these "
                "weights, and their provenance.json says so and names this machine."
            )
        record = _record_retrain(spec, state, same)
        if commit:
            commit(
                [record],
                f"{spec.name}: {name} trained again ({'same' if same else 'other'} scores)",
            )
        return 0
    if state.step.kind == "search":
        kept = kept_trials(Path(spec.results) / name)
        if len(kept) < spec.trials:
            raise LowresError(
                f"The search {name} ended with {len(kept)} of {spec.trials} trials finished "
                "(a trial failed without stopping the search); run `lowres study run` again "
                "to run the rest."
            )
        best = _finish_search(spec, state.step)["best"]
        echo(f"study: {name}: chosen {best and best['params']}")
        paths = [Path(spec.results) / name]
    else:
        paths = [_keep_run(spec, state)]
        echo(f"study: {name}: kept in {paths[0]}")
    if commit:
        commit(paths, f"{spec.name}: {name}")
    return 1


# -- processes, commits, provenance (what ``lowres study run`` plugs in) -------------------


def process_launcher(jobs: int) -> Launcher:
    """Each step as its own ``lowres`` process (a long study frees memory per step), the
    cores shared out between the ``jobs`` that run at once unless OMP_NUM_THREADS is set."""
    import os
    import subprocess
    import sys

    # set here, not only for the children, so that each step's provenance records it
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))

    def launch(argv: list[str]) -> Job:
        return subprocess.Popen([sys.executable, "-m", "lowres", *argv])

    return launch


def _git(*args: str, cwd: Path) -> str:
    import subprocess

    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode:
        raise OSError(result.stderr.strip() or f"git {' '.join(args)} failed")
    return result.stdout.strip()


def git_committer(echo: Callable[[str], None] = print) -> Committer:
    """Commit kept results as they land, only those paths (other staged work is left alone).
    A failed commit is said and the study goes on: the results stay on disk for the next."""

    def commit(paths: list[Path], message: str) -> None:
        names = [str(p) for p in paths]
        try:
            _git("add", "--", *names, cwd=Path.cwd())
            _git("commit", "-q", "-m", message, "--", *names, cwd=Path.cwd())
        except OSError as err:
            echo(f"study: warning: could not commit {', '.join(names)}: {err}")

    return commit


def describe_machine() -> dict[str, Any]:
    """The code and machine a step runs on, for its provenance.json."""
    import os
    import platform
    from importlib.metadata import version

    here = Path(__file__).resolve().parents[2]
    try:
        commit = _git("rev-parse", "HEAD", cwd=here)
        changed = _git(
            "status", "--porcelain", "--", "lowres", "configs", "pyproject.toml", cwd=here
        )
    except OSError:
        commit, changed = None, ""
    cpu = platform.processor()
    if Path("/proc/cpuinfo").is_file():
        names = [
            line for line in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in line
        ]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    return {
        "lowres_commit": commit,
        "lowres_changed_files": changed.splitlines(),  # uncommitted code: the commit is not all
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch": version("torch"),
        "transformers": version("transformers"),
        "python": platform.python_version(),
    }
