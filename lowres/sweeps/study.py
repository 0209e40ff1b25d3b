"""A study as configuration: ``lowres study run|status|report SPEC.yaml``.

A spec (``configs/study/*.yaml``, checked against :class:`StudySpec`) names the methods and
their search spaces, the trial budget, the seeds at each stage, the k values, the tasks and
languages, and the pre-registered comparisons. The study is planned into steps:

1. ``search/<method>``: an Optuna search on source dev (``lowres train -m
   hydra/sweeper=optuna``), the same budget for every method;
2. ``source/<method>/seed<s>``: the chosen configuration trained on the source pool, once
   per source seed;
3. ``zeroshot/<task>/<method>/seed<s>``: that model evaluated on a task's languages;
4. ``stage2search/<method>`` (with a ``stage2_space``): stage 2's own search, English k-shot
   runs from the first source seed's model scored on source dev, the same budget;
5. ``fewshot/<task>/<lang>/<method>/seed<s>/k<k>/s<t>``: stage 2, k target examples on top of
   source seed s, stage-2 seed t (nested in s).

A step is done when its results are under ``results`` (``results/study_v2/<step>/``):
metrics, predictions, training log, overrides and provenance (with the weights' sha256),
never weights; a search's trials are kept one by one as they finish. Running the steps is
:mod:`lowres.sweeps.study_runner`'s; whatever is committed is what a fresh clone resumes
from (``--commit`` commits each step and trial as it is kept). A step that needs a source
model's weights finds them under ``work``; on a machine without them the source step is
run again there first (same command, same seed), recorded in its ``retrains.json``; the
steps after it record which weights they started from. ``report`` rebuilds every table from
``results`` alone, without training.
"""

from __future__ import annotations

import itertools
import json
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lowres.errors import ConfigError, LowresError
from lowres.overrides import key_of
from lowres.sweeps.search import params_text
from lowres.sweeps.stats import CONFIDENCE, holm_family, paired, summary

# In a kept step's results folder: what ran, on which code and machine, when (and, for a step
# that starts from a source model, that model's weights: ``source_model``)
PROVENANCE = "provenance.json"
# In a source step's results folder: each time its model was trained again for the steps after
# it (weights are not committed; another machine's can differ from the committed run's)
RETRAINS = "retrains.json"


@dataclass
class MethodSpec:
    preset: str = ""  # configs/method/<preset>.yaml; "" = the method's own name
    space: dict[str, str] = field(default_factory=dict)  # key -> Hydra sweep; {} = preset's
    overrides: list[str] = field(default_factory=list)  # this method's fixed extras
    # stage 2's own search (English k-shot runs from source seed 1, scored on source dev);
    # {} = stage 2 keeps the source choice and the spec's stage2 overrides
    stage2_space: dict[str, str] = field(default_factory=dict)


@dataclass
class SourceSpec:
    task: str = "xquad"  # whose source pool trains (XQuAD: SQuAD v1.1 minus XQuAD's ids)
    languages: list[str] = field(default_factory=lambda: ["en"])  # evaluated after training
    dev_articles: int = 5  # data.source_dev_articles: the search's objective
    dev_examples: int = 0  # data.source_dev_examples
    overrides: list[str] = field(default_factory=list)  # e.g. trainer.epochs=1
    # the source searches' trials alone, in place of the same keys above (a spec records
    # here a setting its finished searches ran with and the later steps do not)
    search_overrides: list[str] = field(default_factory=list)


@dataclass
class TaskSpec:
    zero_shot: list[str] = field(default_factory=list)  # languages evaluated at k = 0
    few_shot: list[str] = field(default_factory=list)  # languages with stage-2 runs
    overrides: list[str] = field(default_factory=list)  # e.g. data.pool_fraction=0.3


@dataclass
class StudySpec:
    name: str = "study"
    description: str = ""
    results: str = "results/study"  # committed: what the study resumes from
    work: str = "outputs/study"  # run folders with weights: never committed
    backbone: str = "me5-small"
    common: list[str] = field(default_factory=list)  # overrides for every step
    methods: dict[str, MethodSpec] = field(default_factory=dict)
    trials: int = 8  # the same search budget for every method
    search_seed: int = 0
    source: SourceSpec = field(default_factory=SourceSpec)
    source_seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    stage2_seeds: list[int] = field(default_factory=lambda: [1, 2, 3])  # nested in each
    k: list[int] = field(default_factory=lambda: [8, 32, 128])  # stage-2 shots (0: zero-shot)
    stage2: list[str] = field(default_factory=list)  # stage-2 overrides (schedule: min_steps)
    stage2_search_k: int = 32  # English shots in the stage-2 search's runs
    evaluate: list[str] = field(default_factory=list)  # zero-shot evaluation overrides
    tasks: dict[str, TaskSpec] = field(default_factory=dict)
    # [A, B, k, task]: A - B averaged over the task's target languages at k (the source's
    # languages are shown, never averaged); Holm over all of them
    primary: list[list[Any]] = field(default_factory=list)

    def exploratory(self, method: str) -> bool:
        """Whether no primary comparison names ``method`` (with none declared, none is)."""
        return bool(self.primary) and all(method not in pair[:2] for pair in self.primary)


def load_spec(path: str | Path) -> StudySpec:
    """The spec file, checked against :class:`StudySpec`; errors name the key."""
    file = Path(path)
    if not file.is_file():
        raise LowresError(f"Study spec {file} does not exist; give a YAML file (configs/study/).")
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        merged = OmegaConf.merge(OmegaConf.structured(StudySpec), raw)
        spec: StudySpec = OmegaConf.to_object(merged)
    except (yaml.YAMLError, OmegaConfBaseException) as err:
        raise ConfigError(
            f"Study spec {file} does not fit the study schema: {' '.join(str(err).split())} "
            "(the keys and types are those of lowres.sweeps.study.StudySpec; docs/study.md)."
        ) from None
    _check(spec, file)
    return spec


def _check(spec: StudySpec, file: Path) -> None:
    if not spec.methods:
        raise ConfigError(f"Study spec {file} names no method (methods: {{name: {{...}}}}).")
    if not spec.source_seeds or not spec.stage2_seeds:
        raise ConfigError(f"Study spec {file}: source_seeds and stage2_seeds need a seed each.")
    if spec.trials < 1:
        raise ConfigError(f"Study spec {file}: trials={spec.trials}; give at least 1.")
    for comparison in spec.primary:
        if len(comparison) != 4:
            raise ConfigError(
                f"Study spec {file}: primary entry {comparison} is not [A, B, k, task]."
            )
        a, b, k, task = comparison
        unknown = [m for m in (a, b) if m not in spec.methods]
        if unknown or task not in spec.tasks or (k and k not in spec.k):
            raise ConfigError(
                f"Study spec {file}: primary comparison {comparison} names "
                f"{', '.join(map(str, unknown)) or f'k={k} or task {task}'}, which the study "
                f"does not run (methods {', '.join(spec.methods)}; tasks "
                f"{', '.join(spec.tasks)}; k 0 or {spec.k})."
            )


@dataclass
class Step:
    name: str  # also its folder under results/ and work/
    kind: str  # search | source | zeroshot | fewshot
    argv: list[str]
    needs: str = ""  # a source step whose weights this one starts from
    method: str = ""  # the spec's method it belongs to


def _chosen(results: Path, method: str, stage: str = "search") -> list[str] | None:
    record = results / stage / method / "search.json"
    if not record.is_file():
        return None
    best = json.loads(record.read_text())["best"]
    if best is None:
        raise LowresError(f"{record}: no trial of the search finished; run it again.")
    return [f"{key}={value}" for key, value in sorted(best["params"].items())]


def plan(spec: StudySpec) -> list[Step]:
    """Every step, in the order they run. Steps after a search are planned once its choice
    is in results/ (before that, ``status`` counts them as waiting for it)."""
    steps = []
    for method, m in spec.methods.items():
        steps += [replace(step, method=method) for step in _method_steps(spec, method, m)]
    return steps


def _method_steps(spec: StudySpec, method: str, m: MethodSpec) -> list[Step]:
    """One method's steps: its search; once that has chosen, each source seed's training and
    zero-shot evaluations, then stage 2's own search (with a ``stage2_space``); once stage 2
    has its choice, the few-shot runs."""
    results, work = Path(spec.results), Path(spec.work)
    preset = f"+method={m.preset or method}"
    run = [
        *_source_task(spec),
        preset,
        *_base_overrides(spec),
        *spec.source.overrides,
        *m.overrides,
    ]
    searched = _replaced(run, spec.source.search_overrides)
    steps = [_search_step(spec, f"search/{method}", _unfixed(searched, m.space), _sweeps(m.space))]
    chosen = _chosen(results, method)
    if chosen is None:
        return steps
    for seed in spec.source_seeds:
        steps += _source_steps(spec, method, seed, [*run, *chosen])
    stage2_chosen: list[str] | None = []
    if m.stage2_space:
        first = f"source/{method}/seed{spec.source_seeds[0]}"
        stage2 = [*chosen, *spec.stage2, f"init_from={work / first}",
                  "data.source_pool=false", f"data.k={spec.stage2_search_k}"]  # fmt: skip
        name = f"stage2search/{method}"
        fixed = _unfixed([*run, *stage2], m.stage2_space)  # searched, not the source's choice
        steps.append(_search_step(spec, name, fixed, _sweeps(m.stage2_space), first))
        stage2_chosen = _chosen(results, method, "stage2search")
    if stage2_chosen is None:
        return steps
    fixed = [*m.overrides, *chosen]
    for seed in spec.source_seeds:
        steps += _fewshot_steps(spec, method, seed, preset, fixed, stage2_chosen)
    return steps


def _base_overrides(spec: StudySpec) -> list[str]:
    """The overrides every training run starts with: the backbone and the spec's common ones."""
    return [f"backbone={spec.backbone}", *spec.common]


def _source_task(spec: StudySpec) -> list[str]:
    """The source task and the languages it is evaluated on after training."""
    return [
        f"+task={spec.source.task}",
        f"data.eval_languages=[{','.join(spec.source.languages)}]",
    ]


def _replaced(overrides: list[str], changes: list[str]) -> list[str]:
    """``overrides`` with each of ``changes`` in place of the one that sets the same key
    (where that key was set), the others after them."""
    by_key = {key_of(change): change for change in changes}
    set_before = {key_of(o) for o in overrides}
    return [
        *(by_key.get(key_of(o), o) for o in overrides),
        *(change for key, change in by_key.items() if key not in set_before),
    ]


def _unfixed(overrides: list[str], space: dict[str, str]) -> list[str]:
    """``overrides`` without those that fix a key of the search ``space`` (the source
    search's choice, a stage-2 default): a key both fixed and swept would not be searched."""
    return [o for o in overrides if key_of(o) not in space]


def _sweeps(space: dict[str, str]) -> list[str]:
    """A search space as Hydra sweep overrides, sorted by key so that the argv is stable."""
    return [f"{key}={value}" for key, value in sorted(space.items())]


def _search_step(
    spec: StudySpec, name: str, overrides: list[str], space: list[str], needs: str = ""
) -> Step:
    """An Optuna search scored on source dev, with the study's trial budget."""
    work = Path(spec.work)
    return Step(
        name, "search",
        ["train", "-m", "hydra/sweeper=optuna", *overrides,
         f"data.source_dev_articles={spec.source.dev_articles}",
         f"data.source_dev_examples={spec.source.dev_examples}", *space,
         f"search.trials={spec.trials}", f"search.seed={spec.search_seed}",
         f"hydra.sweep.dir={work / name}"],
        needs=needs,
    )  # fmt: skip


def _source_steps(spec: StudySpec, method: str, seed: int, run: list[str]) -> list[Step]:
    """Source seed ``seed``'s training with the search's choice (``run`` holds both), then
    each task's zero-shot evaluation of that model."""
    work = Path(spec.work)
    source_step = f"source/{method}/seed{seed}"
    steps = [
        Step(
            source_step, "source",
            ["train", *run, f"data.source_dev_articles={spec.source.dev_articles}",
             f"data.source_dev_examples={spec.source.dev_examples}",
             f"trainer.seed={seed}", f"hydra.run.dir={work / source_step}"],
        )
    ]  # fmt: skip
    for task, t in spec.tasks.items():
        if t.zero_shot:
            name = f"zeroshot/{task}/{method}/seed{seed}"
            steps.append(
                Step(
                    name, "zeroshot",
                    ["evaluate", f"checkpoint={work / source_step}", f"task={task}",
                     f"data.eval_languages=[{','.join(t.zero_shot)}]", *t.overrides,
                     *spec.evaluate, f"hydra.run.dir={work / name}"],
                    needs=source_step,
                )
            )  # fmt: skip
    return steps


def _fewshot_steps(
    spec: StudySpec,
    method: str,
    seed: int,
    preset: str,
    fixed: list[str],
    stage2_chosen: list[str],
) -> list[Step]:
    """Stage 2 on top of source seed ``seed``: each task's few-shot languages, every k and
    stage-2 seed (``fixed``: the method's own overrides and its source search's choice)."""
    work = Path(spec.work)
    source_step = f"source/{method}/seed{seed}"
    steps = []
    for task, t in spec.tasks.items():
        for lang, k, s2 in itertools.product(t.few_shot, spec.k, spec.stage2_seeds):
            name = f"fewshot/{task}/{lang}/{method}/seed{seed}/k{k}/s{s2}"
            steps.append(
                Step(
                    name, "fewshot",
                    ["train", f"+task={task}", preset, *_base_overrides(spec), *fixed,
                     *t.overrides, *spec.stage2, *stage2_chosen,
                     f"init_from={work / source_step}", "data.source_pool=false",
                     f"data.eval_languages=[{lang}]", f"data.k={k}",
                     f"trainer.seed={s2}", f"hydra.run.dir={work / name}"],
                    needs=source_step,
                )
            )  # fmt: skip
    return steps


def done(spec: StudySpec, step: Step) -> bool:
    kept = "search.json" if step.kind == "search" else "metrics.json"
    return (Path(spec.results) / step.name / kept).is_file()


def stale(spec: StudySpec, steps: list[Step] | None = None) -> list[dict[str, Any]]:
    """Kept steps whose recorded command is not the one the spec plans now (the spec changed
    after they ran), each with the overrides only it ran and those only the plan has, and
    kept steps that started from a source model which is stale or no longer kept (``from``).
    A search is not compared: its parts' commands carry their own sampler seeds and storage."""
    steps = plan(spec) if steps is None else steps
    kept = {s.name for s in steps if done(spec, s)}
    found: list[dict[str, Any]] = []
    stale_names: set[str] = set()
    for step in steps:
        record = Path(spec.results) / step.name / PROVENANCE
        if step.kind == "search" or step.name not in kept or not record.is_file():
            continue
        ran = json.loads(record.read_text(encoding="utf-8"))["command"][1:]  # after "lowres"
        outdated = step.needs and (step.needs not in kept or step.needs in stale_names)
        if ran != step.argv or outdated:
            stale_names.add(step.name)
            found.append({
                "step": step.name,
                "ran": [a for a in ran if a not in step.argv],
                "planned": [a for a in step.argv if a not in ran],
                "from": step.needs if outdated else "",
            })  # fmt: skip
    return found


def stale_problem(spec: StudySpec, steps: list[Step] | None = None) -> str | None:
    """Why the study cannot go on as its spec stands (kept steps ran another command), or
    None: going on would put two protocols in one table."""
    found = stale(spec, steps)
    if not found:
        return None
    first = found[0]
    if first["from"]:
        why = f"started from {first['from']}, whose kept run is gone or stale"
    else:
        ran = " ".join(first["ran"]) or "the same overrides in another order"
        planned = " ".join(first["planned"]) or "the same overrides in another order"
        why = f"ran with {ran} where the spec now plans {planned}"
    return (
        f"{len(found)} kept step(s) of the study {spec.name} ran a command its spec no longer "
        f"plans, or started from a model that did; the first, {first['step']}, {why}. Going on "
        "would mix two protocols in one table. Restore the spec, or move the kept results "
        f"of those steps under {Path(spec.results) / 'superseded'}/ (git mv keeps them) and "
        "say why where the protocol is written; the study then runs them again."
    )


def status(spec: StudySpec) -> dict[str, Any]:
    steps = plan(spec)
    results = Path(spec.results)
    waiting = [m for m in spec.methods if _chosen(results, m) is None]
    waiting += [
        f"{m} (stage 2)"
        for m, method in spec.methods.items()
        if method.stage2_space and _chosen(results, m, "stage2search") is None
    ]

    def trials(step: Step) -> int | None:
        """A search's kept trials (a stopped search goes on from them)."""
        if step.kind != "search":
            return None
        folder = results / step.name
        return sum(1 for p in folder.glob("[0-9]*") if (p / "metrics.json").is_file())

    return {
        "steps": [
            {"name": s.name, "done": done(spec, s), "argv": s.argv, "trials_kept": trials(s)}
            for s in steps
        ],
        "done": sum(done(spec, s) for s in steps),
        "planned": len(steps),
        "waiting_for_search": waiting,
    }


# -- report -------------------------------------------------------------------------------


def _metrics(path: Path) -> dict[str, Any]:
    return json.loads((path / "metrics.json").read_text())


def _kept_runs(spec: StudySpec):
    """Every kept evaluation the report reads, in one walk of results/ (the one place that
    knows its layout): ``(task, method, seed, 0, None, [zero-shot folder])`` for a model's
    zero-shot run (all its languages), ``(task, method, seed, k, lang, [stage-2 folders])``
    for a few-shot cell with every one of its nested stage-2 seeds kept."""
    results = Path(spec.results)
    for method in spec.methods:
        for seed in spec.source_seeds:
            for task, t in spec.tasks.items():
                folder = results / "zeroshot" / task / method / f"seed{seed}"
                if (folder / "metrics.json").is_file():
                    yield task, method, seed, 0, None, [folder]
                for lang in t.few_shot:
                    for k in spec.k:
                        cell = results / "fewshot" / task / lang / method / f"seed{seed}" / f"k{k}"
                        runs = [cell / f"s{s2}" for s2 in spec.stage2_seeds]
                        kept = [run for run in runs if (run / "metrics.json").is_file()]
                        yield task, method, seed, k, lang, kept


def _score_table(spec: StudySpec) -> tuple[dict[tuple, dict[int, float]], dict[tuple, int]]:
    """(task, method, k, language) -> source seed -> F1 (stage-2 seeds averaged within it),
    and (task, language) -> questions scored."""
    table: dict[tuple, dict[int, float]] = defaultdict(dict)
    questions: dict[tuple, int] = {}
    for task, method, seed, k, lang, runs in _kept_runs(spec):
        if not k:
            for language, scores in _metrics(runs[0])["per_language"].items():
                table[task, method, 0, language][seed] = scores["f1"]
                questions[task, language] = scores["n"]
            continue
        scores = [_metrics(run)["per_language"][lang] for run in runs]
        if scores:
            questions[task, lang] = scores[-1]["n"]
        if len(scores) == len(spec.stage2_seeds):
            table[task, method, k, lang][seed] = statistics.fmean(s["f1"] for s in scores)
    return table, questions


def _languages(spec: StudySpec, task: str, k: int) -> list[str]:
    t = spec.tasks[task]
    return list(t.few_shot) if k else list(t.zero_shot)


def _targets(spec: StudySpec, task: str, k: int) -> list[str]:
    """The languages a method's average is over: the source languages are not targets."""
    return [lang for lang in _languages(spec, task, k) if lang not in spec.source.languages]


def _averages(spec, table) -> dict[tuple[str, str, int], dict[int, float]]:
    """(task, method, k) -> source seed -> mean over the languages (seeds with all of them)."""
    out = {}
    for task in spec.tasks:
        for method in spec.methods:
            for k in [0, *spec.k]:
                langs = _targets(spec, task, k)
                if not langs:
                    continue
                cells = [table.get((task, method, k, lang), {}) for lang in langs]
                seeds = set.intersection(*(set(c) for c in cells)) if cells else set()
                if seeds:
                    out[task, method, k] = {
                        s: statistics.fmean(c[s] for c in cells) for s in sorted(seeds)
                    }
    return out


# (task, language, predictions) -> each question's main score (lowres.recipes.rescore)
QuestionScorer = Callable[[str, str, dict[str, Any]], dict[str, float]]


def _predictions(run: Path, lang: str) -> dict[str, Any] | None:
    """A run's kept predictions for ``lang`` (``predictions/<lang>.json``, or gzipped)."""
    import gzip

    for path in (run / "predictions" / f"{lang}.json", run / "predictions" / f"{lang}.json.gz"):
        if path.is_file():
            with (gzip.open if path.suffix == ".gz" else open)(path, "rt", encoding="utf-8") as f:
                return json.load(f)
    return None


def _rescored(run: Path, task: str, lang: str, scorer: QuestionScorer) -> dict[str, float] | None:
    """Each question's F1 from the run's predictions; their mean must be the run's own F1."""
    predictions = _predictions(run, lang)
    if predictions is None:
        return None
    scores = scorer(task, lang, predictions)
    kept = _metrics(run)["per_language"][lang]
    mean = statistics.fmean(scores.values()) if scores else float("nan")
    if len(scores) != kept["n"] or not abs(mean - kept["f1"]) <= 1e-6 * max(1.0, kept["f1"]):
        raise LowresError(
            f"{run}: its {lang} predictions score {mean:.4f} F1 over {len(scores)} questions "
            f"when scored again, but the run recorded {kept['f1']:.4f} over {kept['n']}: the "
            "data under data.root is not what the run was scored on. Point the spec's "
            "data.root at that data, or report without the question intervals "
            "(lowres study report --no-questions)."
        )
    return scores


def _shared_mean(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per question, the mean over runs, on the questions every run scored."""
    shared = set.intersection(*(set(r) for r in runs))
    return {q: statistics.fmean(r[q] for r in runs) for q in sorted(shared)}


def _question_table(spec: StudySpec, scorer: QuestionScorer) -> dict[tuple, dict[int, dict]]:
    """(task, method, k, language) -> source seed -> question -> F1, as :func:`_score_table`
    (few-shot: each question's F1 averaged over the stage-2 seeds first)."""
    table: dict[tuple, dict[int, dict[str, float]]] = defaultdict(dict)
    for task, method, seed, k, lang, runs in _kept_runs(spec):
        if not k:
            for language in _metrics(runs[0])["per_language"]:
                scores = _rescored(runs[0], task, language, scorer)
                if scores:
                    table[task, method, 0, language][seed] = scores
            continue
        rescored = [_rescored(run, task, lang, scorer) for run in runs]
        if len(rescored) == len(spec.stage2_seeds) and all(rescored):
            table[task, method, k, lang][seed] = _shared_mean(rescored)
    return table


def _by_language(
    spec: StudySpec, questions: dict, task: str, method: str, k: int, seeds: list[int]
) -> dict[str, dict[str, float]] | None:
    """Target language -> question -> F1 averaged over ``seeds`` (the source models of the
    seed-interval beside it); None where a language or seed has no rescored predictions."""
    out = {}
    for lang in _targets(spec, task, k):
        per_seed = questions.get((task, method, k, lang), {})
        if not seeds or any(seed not in per_seed for seed in seeds):
            return None
        out[lang] = _shared_mean([per_seed[seed] for seed in seeds])
    return out


def _question_interval(per_question: dict[str, dict[str, float]] | None, resamples: int):
    from lowres.sweeps.stats import bootstrap_mean

    if not per_question:
        return None
    return bootstrap_mean([list(scores.values()) for scores in per_question.values()], resamples)


def _cell(values: dict[int, float], questions: dict[str, Any] | None = None) -> str:
    row = summary(list(values.values()))
    text = (
        f"{row['mean']:.1f} (1 seed)"
        if row["ci95_low"] is None
        else f"{row['mean']:.1f} [{row['ci95_low']:.1f}, {row['ci95_high']:.1f}]"
    )
    if questions:
        text += f" q[{questions['ci95_low']:.1f}, {questions['ci95_high']:.1f}]"
    return text


def report(
    spec: StudySpec,
    out: Path | None = None,
    scorer: QuestionScorer | None = None,
    resamples: int = 1000,
) -> dict[str, Any]:
    """Tables and the Holm-corrected primary comparisons, from results/ alone.

    With ``scorer`` (each question's score from a run's kept predictions), every cell and
    primary comparison also gets a 95 % interval over the test questions: a bootstrap of
    ``resamples`` (seeded), the source models fixed, languages resampled apart.
    """
    table, questions = _score_table(spec)
    averages = _averages(spec, table)
    by_question = _question_table(spec, scorer) if scorer else {}
    intervals = _question_intervals(spec, table, averages, by_question, resamples)
    comparisons = _primary(spec, averages, by_question, resamples)
    samples = _samples(spec)
    models = _source_models(spec)
    superseded = _superseded(spec)
    lines = [
        *_preamble(spec, scorer is not None, resamples),
        *_table_lines(spec, table, questions, averages, intervals),
        *_primary_lines(spec, comparisons),
        *_in_words(comparisons),
        *_sample_lines(samples),
        *_search_lines(spec),
        *_source_model_lines(models),
        *_superseded_lines(superseded),
    ]
    out = out or Path(spec.results) / "report"
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    record = {
        "cells": [
            {"task": t, "method": m, "k": k, "language": lang, "per_source_seed": v,
             **summary(list(v.values())), "questions": intervals.get((t, m, k, lang))}
            for (t, m, k, lang), v in sorted(table.items())
        ],
        "averages": [
            {"task": t, "method": m, "k": k, "per_source_seed": v,
             "questions": intervals.get((t, m, k, "average"))}
            for (t, m, k), v in sorted(averages.items())
        ],
        "primary": comparisons,
        "samples": samples,
        "source_models": models,
        "superseded": superseded,
        "intervals_vary": "source seeds (stage-2 seeds averaged within each)",
        "questions_interval_varies": (
            f"test questions: a bootstrap of {resamples} resamples (seed 0) of each question's "
            "F1 from the kept predictions, averaged over the source (and stage-2) seeds first; "
            "languages resampled apart" if scorer else None
        ),
    }  # fmt: skip
    record["figures"] = [str(f) for f in plot_averages(spec, averages, out)]
    (out / "report.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def _shown_tables(spec: StudySpec, table: dict) -> Iterator[tuple[str, int, list[str], list[str]]]:
    """Each table the report shows, in order: (task, k, its languages, the methods with a
    score in it); a (task, k) no method has a score for is left out."""
    for task in spec.tasks:
        for k in [0, *spec.k]:
            langs = _languages(spec, task, k)
            rows = [m for m in spec.methods if any((task, m, k, lang) in table for lang in langs)]
            if rows:
                yield task, k, langs, rows


def _question_intervals(
    spec: StudySpec, table: dict, averages: dict, by_question: dict, resamples: int
) -> dict[tuple, dict[str, Any] | None]:
    """(task, method, k, language or "average") -> the interval over the test questions of
    each cell the tables show; None where a seed of the cell has no rescored predictions."""
    intervals: dict[tuple, dict[str, Any] | None] = {}
    for task, k, langs, rows in _shown_tables(spec, table):
        for method in rows:
            for lang in langs:
                if (task, method, k, lang) in table:
                    seeds = sorted(table[task, method, k, lang])
                    per_seed = by_question.get((task, method, k, lang), {})
                    interval = _cell_questions(per_seed, lang, seeds, resamples)
                    intervals[task, method, k, lang] = interval
            avg = averages.get((task, method, k))
            found = _by_language(spec, by_question, task, method, k, sorted(avg)) if avg else None
            intervals[task, method, k, "average"] = _question_interval(found, resamples)
    return intervals


def _cell_questions(
    per_seed: dict[int, dict[str, float]], lang: str, seeds: list[int], resamples: int
) -> dict[str, Any] | None:
    """One language's interval over its questions, each averaged over the cell's source
    seeds first; None unless every one of them has rescored predictions."""
    if not seeds or any(seed not in per_seed for seed in seeds):
        return None
    return _question_interval({lang: _shared_mean([per_seed[seed] for seed in seeds])}, resamples)


def _preamble(spec: StudySpec, rescored: bool, resamples: int) -> list[str]:
    """The title, the description and what each kind of interval varies."""
    nested = len(spec.stage2_seeds)
    lines = [f"# {spec.name}: report", "", spec.description.strip(), ""]
    lines.append(
        f"F1 (0-100). Each cell: mean over source seeds and its {CONFIDENCE:.0%} t-interval; "
        f"the interval varies the source seed (one source model per seed)"
        + (
            f", each few-shot value first averaged over {nested} nested stage-2 seeds"
            if nested
            else ""
        )
        + "; it does not vary the test questions. n: questions scored per language."
    )
    lines.append("")
    if rescored:
        lines += [
            f"q[low, high]: the {CONFIDENCE:.0%} interval over the test questions, beside it: "
            f"a bootstrap of {resamples:,} resamples (seed 0) of the questions each cell was "
            "scored on, each question's F1 scored again from the committed predictions and "
            "averaged over the source seeds (and stage-2 seeds) first, so the models stay "
            "fixed and only the questions vary; a target average resamples each language "
            "apart. Neither interval varies both.",
            "",
        ]
    return lines


def _table_lines(
    spec: StudySpec, table: dict, questions: dict, averages: dict, intervals: dict
) -> list[str]:
    """A table per task and k: a row per method, a cell per language, the target average."""
    lines = []
    for task, k, langs, rows in _shown_tables(spec, table):
        lines += [f"## {task}, k = {k}", ""]
        header = [f"{lang} (n={questions.get((task, lang), '?')})" for lang in langs]
        lines.append("| method | " + " | ".join(header) + " | target average | seeds |")
        lines.append("|---|" + "---:|" * (len(langs) + 2))
        for method in rows:
            cells = [
                _cell(table[task, method, k, lang], intervals[task, method, k, lang])
                if (task, method, k, lang) in table
                else "–"
                for lang in langs
            ]
            avg = averages.get((task, method, k))
            seeds = len(avg) if avg else 0
            average = _cell(avg, intervals[task, method, k, "average"]) if avg else "–"
            lines.append(f"| {method} | " + " | ".join(cells) + f" | {average} | {seeds} |")
        lines.append("")
    return lines


def _primary(
    spec: StudySpec, averages: dict, by_question: dict, resamples: int
) -> list[dict[str, Any]]:
    """The pre-registered comparisons, paired over source seeds (and, with rescored
    predictions, over the questions), Holm-corrected over the whole family, where one not yet
    tested counts as p = 1."""
    from lowres.sweeps.stats import paired_bootstrap

    comparisons = []
    for a, b, k, task in spec.primary:
        first, second = averages.get((task, a, k)), averages.get((task, b, k))
        result = paired(first, second) if first and second else None
        row = {"a": a, "b": b, "k": k, "task": task, **(result or {"n": 0})}
        if result and by_question:
            seeds = result["seeds"]
            row["questions"] = paired_bootstrap(
                _by_language(spec, by_question, task, a, k, seeds) or {},
                _by_language(spec, by_question, task, b, k, seeds) or {},
                resamples=resamples,
            )
        comparisons.append(row)
    for c, p in zip(comparisons, holm_family([c.get("p") for c in comparisons]), strict=True):
        if p is not None:
            c["p_holm"], c["holm_rejects"] = p, p <= 1 - CONFIDENCE
    return comparisons


def _primary_lines(spec: StudySpec, comparisons: list[dict[str, Any]]) -> list[str]:
    """The primary comparisons' section: what each interval varies, then a row each."""
    tested = [c for c in comparisons if c.get("p") is not None]
    size = len(spec.primary)
    lines = [
        "## Primary comparisons (pre-registered; Holm over the family)",
        "",
        f"A − B of the language-averaged F1, paired over source seeds; family of "
        f"{size}, Holm over all {size}"
        + (
            f": the {size - len(tested)} not yet tested (fewer than two source seeds) count "
            "as p = 1, so a report of a study still running corrects for no fewer tests than "
            "the finished one. "
            if size > len(tested)
            else ". "
        )
        + "Every "
        "other difference in these tables is exploratory. *95 % CI, source seeds*: the "
        "t-interval of the paired differences, which varies the source seed (the p-values "
        "and Holm's test are on it). *95 % CI, questions*: the paired bootstrap over the "
        "test questions (each question's A − B, the same source seeds' models, fixed), "
        "which varies the questions; it is shown, not tested.",
        "",
        "| A | B | k | task | seeds | mean A − B | 95 % CI, source seeds "
        "| 95 % CI, questions | p | Holm p | verdict |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines += [_comparison_row(c) for c in comparisons]
    lines.append("")
    return lines


# The table's words for each direction; the sentences (_in_words) name the two methods.
_TABLE_VERDICTS = {0: "no difference shown", 1: "A ahead (Holm, 5 %)", -1: "A behind (Holm, 5 %)"}


def _direction(c: dict[str, Any]) -> int:
    """A tested comparison's verdict, no stronger than Holm's test on it: +1 (A ahead of B)
    or -1 (A behind) when Holm rejects, 0 (no difference shown) when it does not."""
    if not c["holm_rejects"]:
        return 0
    return 1 if c["mean_difference"] > 0 else -1


def _in_words(comparisons: list[dict[str, Any]]) -> list[str]:
    """Each primary comparison as a sentence: the difference, what its interval varies, the
    corrected test and what it allows one to say."""
    lines = ["## The primary comparisons in words", ""]
    for c in comparisons:
        what = f"{c['a']} against {c['b']} on {c['task']} at k = {c['k']}"
        if not c["n"]:
            lines.append(f"- {what}: not run yet.")
        elif c.get("p") is None:
            lines.append(
                f"- {what}: {c['mean_difference']:+.2f} F1 from one source seed; not tested."
            )
        else:
            said = {
                0: "no difference shown",
                1: f"{c['a']} is ahead of {c['b']}",
                -1: f"{c['a']} is behind {c['b']}",
            }[_direction(c)]
            lines.append(
                f"- {what}, target-language average: A − B = {c['mean_difference']:+.2f} F1, "
                f"95 % t-interval [{c['ci95_low']:+.2f}, {c['ci95_high']:+.2f}] over "
                f"{c['n']} source seeds (uncorrected), Holm-adjusted p = {c['p_holm']:.3f}: "
                f"{said}."
            )
    lines.append("")
    return lines


def _comparison_row(c: dict[str, Any]) -> str:
    """One comparison's row; one not run or with one seed says so instead of a test."""
    q = c.get("questions")
    by_questions = f"[{q['ci95_low']:+.2f}, {q['ci95_high']:+.2f}]" if q else "–"
    if c.get("p") is None:
        done = "" if not c["n"] else f"{c['mean_difference']:+.2f} | – | {by_questions} | "
        return (
            f"| {c['a']} | {c['b']} | {c['k']} | {c['task']} | {c['n']} | {done}"
            + "– | " * (2 if done else 5)
            + ("one seed: not tested |" if done else "not run |")
        )
    verdict = _TABLE_VERDICTS[_direction(c)]
    return (
        f"| {c['a']} | {c['b']} | {c['k']} | {c['task']} | {c['n']} | "
        f"{c['mean_difference']:+.2f} | [{c['ci95_low']:+.2f}, {c['ci95_high']:+.2f}] | "
        f"{by_questions} | {c['p']:.3f} | {c['p_holm']:.3f} | {verdict} |"
    )


def _search_lines(spec: StudySpec) -> list[str]:
    """The searches' section: each finished search's trials, choice and source dev F1; a
    search still running, its kept trials (no choice yet, and no score shown before one).
    Both stages' searches are scored on source dev; a row per method and stage."""
    searches = []
    for folder, stage in (("search", "source"), ("stage2search", "stage 2")):
        for method in spec.methods:
            record = Path(spec.results) / folder / method / "search.json"
            kept = [p for p in record.parent.glob("[0-9]*") if (p / "metrics.json").is_file()]
            if not record.is_file() and kept:
                searches.append(
                    f"| {method} | {stage} | {len(kept)} of {spec.trials} (running) | – | – |"
                )
            if record.is_file():
                data = json.loads(record.read_text())
                best = data["best"]
                chosen = f"trial {best['number']}: {params_text(best['params'])}" if best else "–"
                value = f"{best['value']:.2f}" if best else "–"
                searches.append(
                    f"| {method} | {stage} | {len(data['trials'])} | {chosen} | {value} |"
                )
    if not searches:
        return []
    return ["## Searches (source dev, held out by article)", "",
            "| method | stage | trials | chosen | source dev F1 |", "|---|---|---:|---|---:|",
            *searches, ""]  # fmt: skip


def _samples(spec: StudySpec) -> list[dict[str, Any]]:
    """Per few-shot (task, language, k): the k-shot samples the kept stage-2 runs trained on
    (``data_split.json``), whether each stage-2 seed drew the same examples for every method
    and source seed, and how many examples two stage-2 seeds' samples under one source
    model share on average."""
    cells: dict[tuple, list[dict[str, frozenset]]] = defaultdict(list)
    for task, _method, _seed, k, lang, runs in _kept_runs(spec):
        if not k:
            continue  # zero-shot: no sample
        splits = [run / "data_split.json" for run in runs]
        drawn = {
            split.parent.name: frozenset(json.loads(split.read_text(encoding="utf-8"))["train"])
            for split in splits
            if split.is_file()
        }
        if drawn:
            cells[task, lang, k].append(drawn)
    rows = []
    for (task, lang, k), models in sorted(cells.items()):
        seeds = sorted({s2 for drawn in models for s2 in drawn})
        shared = [
            len(drawn[a] & drawn[b])
            for drawn in models
            for i, a in enumerate(seeds)
            for b in seeds[i + 1 :]
            if a in drawn and b in drawn
        ]
        rows.append({
            "task": task, "language": lang, "k": k, "stage2_seeds": len(seeds),
            "same_for_every_run": all(
                len({drawn[s2] for drawn in models if s2 in drawn}) == 1 for s2 in seeds
            ),
            "shared_between_seeds": statistics.fmean(shared) if shared else None,
        })  # fmt: skip
    return rows


def _sample_lines(samples: list[dict[str, Any]]) -> list[str]:
    if not samples:
        return []
    lines = [
        "## k-shot samples (stage 2)",
        "",
        "From each kept run's `data_split.json`. A stage-2 seed draws one sample of k "
        "examples from the language's pool; *same for every run*: that seed's sample is the "
        "same for every method and source seed, so methods are compared on the same examples "
        "and the interval over source seeds does not vary the sample. *Shared*: the mean "
        "number of examples two stage-2 seeds' samples under one source model have in common.",
        "",
        "| task | language | k | stage-2 seeds | same for every run | shared |",
        "|---|---|---:|---:|---|---:|",
    ]
    for r in samples:
        shared = r["shared_between_seeds"]
        in_common = "–" if shared is None else f"{shared:.1f} of {r['k']}"
        same = "yes" if r["same_for_every_run"] else "no"
        lines.append(
            f"| {r['task']} | {r['language']} | {r['k']} | {r['stage2_seeds']} | {same} | "
            f"{in_common} |"
        )
    lines.append("")
    return lines


def _source_models(spec: StudySpec) -> list[dict[str, Any]]:
    """Per source model that kept steps started from (zero-shot evaluations, stage-2 search
    trials, few-shot runs): how often it was trained, which weights those steps started
    from (sha256, from their provenance) and how many of them started from a training that
    scored what the committed source run says."""
    results = Path(spec.results)
    used: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for step in plan(spec):
        if not step.needs:
            continue
        folder = results / step.name
        kept = (
            sorted(folder.glob(f"[0-9]*/{PROVENANCE}"))
            if step.kind == "search"
            else [folder / PROVENANCE]
        )
        for path in kept:
            if path.is_file() and (path.parent / "metrics.json").is_file():
                used[step.needs].append(json.loads(path.read_text()).get("source_model") or {})
    rows = []
    for source, records in used.items():
        provenance, retrains = results / source / PROVENANCE, results / source / RETRAINS
        shas = [r.get("sha256") for r in records]
        rows.append({
            "source": source,
            "steps": len(records),
            "trainings": 1 + (len(json.loads(retrains.read_text())) if retrains.is_file() else 0),
            "committed_sha256": (
                json.loads(provenance.read_text()).get("weights_sha256")
                if provenance.is_file() else None
            ),
            "weights_used": sorted({sha for sha in shas if sha}),
            "not_recorded": sum(1 for sha in shas if not sha),
            "scored_as_committed": sum(1 for r in records if r.get("scores_as_kept")),
        })  # fmt: skip
    return rows


def _source_model_lines(models: list[dict[str, Any]]) -> list[str]:
    if not models:
        return []
    lines = [
        "## Source models behind the later steps",
        "",
        "Weights are not committed, so a source model is trained again on each machine that "
        "runs steps from it. Each step that starts from one records the sha256 of the weights "
        "it started from and whether that training scored what the committed source run says "
        "(English scores and training loss, exactly): a training on another machine can "
        "differ, and the steps from it then start from another model than the committed one. "
        "*Trainings*: the committed run and each training again (`retrains.json`).",
        "",
        "| source model | later steps | trainings | weights they started from | "
        "scored as committed |",
        "|---|---:|---:|---|---|",
    ]
    for m in models:
        weights = [
            sha[:12] + (" (the committed run's)" if sha == m["committed_sha256"] else "")
            for sha in m["weights_used"]
        ]
        if len(weights) > 1:
            weights[0] = f"**{len(weights)} different:** {weights[0]}"
        if m["not_recorded"]:
            weights.append(f"{m['not_recorded']} not recorded")
        scored = m["scored_as_committed"]
        as_committed = "all" if scored == m["steps"] else f"**{scored} of {m['steps']}**"
        lines.append(
            f"| {m['source']} | {m['steps']} | {m['trainings']} | {'; '.join(weights)} | "
            f"{as_committed} |"
        )
    lines.append("")
    return lines


def _score_of(metrics: dict[str, Any]) -> tuple[str, float] | None:
    """What a kept run scored that a run of the same step elsewhere can be set beside:
    source dev (a source run's tuning split), else its languages' mean F1."""
    if metrics.get("source_dev"):
        return "source dev F1", metrics["source_dev"]["f1"]
    languages = metrics.get("per_language") or {}
    if not languages:
        return None
    return "mean F1", statistics.fmean(v["f1"] for v in languages.values())


def _superseded(spec: StudySpec) -> list[dict[str, Any]]:
    """Per label of results/superseded/<label>/ (runs kept under an earlier form of the
    spec, moved aside when it changed): each run beside the run of the same step that
    replaced it, and the paired difference over those that both have."""
    root = Path(spec.results) / "superseded"
    groups = []
    for label in sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        rows = []
        for metrics in sorted((root / label).rglob("metrics.json")):
            name = metrics.parent.relative_to(root / label).as_posix()
            before = _score_of(_metrics(metrics.parent))
            current = Path(spec.results) / name
            now = _score_of(_metrics(current)) if (current / "metrics.json").is_file() else None
            if before is not None:
                rows.append({"step": name, "score": before[0], "superseded": before[1],
                             "now": now[1] if now and now[0] == before[0] else None})  # fmt: skip
        pairs = [r for r in rows if r["now"] is not None]
        difference = paired(
            {i: r["now"] for i, r in enumerate(pairs)},
            {i: r["superseded"] for i, r in enumerate(pairs)},
        )
        groups.append({"label": label, "runs": rows, "now_minus_superseded": difference})
    return groups


def _superseded_lines(groups: list[dict[str, Any]]) -> list[str]:
    if not groups:
        return []
    lines = [
        "## Superseded runs beside the runs that replaced them (exploratory)",
        "",
        "Runs kept under an earlier form of the spec, moved to `superseded/<label>/` when the "
        "spec changed (the study page says why); no table or test above reads them. Each is "
        "set beside the run of the same step under the spec as it is now: same configuration "
        "and seed, so the difference is what the change did to that run.",
        "",
    ]
    for group in groups:
        lines += [
            f"### {group['label']}",
            "",
            "| step | scored on | superseded | now | now − superseded |",
            "|---|---|---:|---:|---:|",
        ]
        for r in group["runs"]:
            now = "not run yet" if r["now"] is None else f"{r['now']:.1f}"
            change = "" if r["now"] is None else f"{r['now'] - r['superseded']:+.1f}"
            lines.append(
                f"| {r['step']} | {r['score']} | {r['superseded']:.1f} | {now} | {change} |"
            )
        d = group["now_minus_superseded"]
        if d and d["n"] > 1:
            lines.append(
                f"\nMean of now − superseded over the {d['n']} runs both have: "
                f"{d['mean_difference']:+.2f} [{d['ci95_low']:+.2f}, {d['ci95_high']:+.2f}] "
                "(95 % t-interval over those runs, each a method and seed; not corrected for "
                "multiple comparisons: exploratory)."
            )
        elif d:
            lines.append(f"\nOne run has both so far: {d['mean_difference']:+.2f}.")
        lines.append("")
    return lines


def plot_averages(spec: StudySpec, averages: dict, out: Path) -> list[Path]:
    """Per task: each method's target-language average against k, with its 95 % interval
    over source seeds as error bars (k = 0: the task's zero-shot languages)."""
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    figures = []
    for task in spec.tasks:
        points = {m: [] for m in spec.methods}
        for (t, method, k), values in sorted(averages.items()):
            if t == task:
                row = summary(list(values.values()))
                low = row["ci95_low"] if row["ci95_low"] is not None else row["mean"]
                points[method].append((k, row["mean"], row["mean"] - low))
        if not any(points.values()):
            continue
        figure, axis = plt.subplots(figsize=(6, 4))
        for method, rows in points.items():
            if rows:
                ks, means, halves = zip(*rows, strict=True)
                axis.errorbar(ks, means, yerr=halves, marker="o", capsize=3, label=method)
        axis.set_xlabel("k (target examples at stage 2)")
        axis.set_ylabel("F1, target-language average")
        axis.set_title(f"{spec.name}: {task} (95 % interval over source seeds)")
        axis.legend(fontsize=7)
        path = out / f"{task}_average_vs_k.png"
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        plt.close(figure)
        figures.append(path)
    return figures
