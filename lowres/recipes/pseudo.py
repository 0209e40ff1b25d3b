"""Pseudo-data transfer: target-language training data that no human labelled.

Two kinds, chosen with ``pseudo.kind``:

* **self_train**: a finished source-trained run (the *teacher*, restored as ``lowres evaluate``
  restores it) labels the target pool of every target language, its gold labels removed
  first. Labels whose confidence is strictly above ``threshold`` are kept, at most
  ``max_examples`` per language (the most confident ones). Confidence is the teacher's own
  probability for its answer:

  - extractive QA: the softmax probability of the chosen span's score (start logit + end
    logit) among every valid candidate span of the question (the n-best starts x n-best ends
    of each of its windows), see :func:`lowres.tasks.qa.decode_answers`; a question without
    a valid span gets no label;
  - classification (PAWS-X): the largest class probability, softmax of the logits.

* **translate_train**: labelled files the user translated (PAWS-X TSV in the
  ``translated_train.tsv`` layout, SQuAD v1.1 JSON for QA), one per target language.

Either way the pseudo records join the split's training records (``mix=True``) or replace
its real target-language k-shot examples (``mix=False``); the source pool is untouched.
:func:`add_pseudo_data` reads the ``pseudo`` group; everything else takes plain arguments.
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from rich.console import Console

from lowres.builders import build_trainer, restore_run, saved_config
from lowres.data import pawsx_format, squad_format
from lowres.errors import ConfigError, DataFormatError
from lowres.registry import PSEUDO_KINDS
from lowres.schema import DataConfig, PseudoConfig
from lowres.tasks import Split, Task
from lowres.training.progress import RichProgress

LABEL_KEYS = ("answers", "label")
SUPPORTED_KINDS = ("extractive_qa", "classification")
FILE_LAYOUTS = {
    "extractive_qa": (
        'SQuAD v1.1 JSON ({"data": [{"title", "paragraphs": [{"context", "qas": [{"id", '
        '"question", "answers": [{"text", "answer_start"}]}]}]}]})'
    ),
    "classification": (
        "a PAWS-X TSV in the translated_train.tsv layout (header "
        "id<TAB>sentence1<TAB>sentence2<TAB>label) or the XTREME layout (no header, "
        "sentence1<TAB>sentence2<TAB>label)"
    ),
}


@dataclass
class PseudoData:
    """The pseudo-labelled training records of a run and how they were obtained."""

    kind: str = "none"
    records: list[dict] = field(default_factory=list)  # labelled, ready to train on
    confidences: list[float | None] = field(default_factory=list)  # one per record
    candidates: dict[str, int] = field(default_factory=dict)  # per language: inputs considered
    threshold: float | None = None
    max_examples: int = 0
    mix: bool = True
    teacher: str | None = None
    files: dict[str, str] = field(default_factory=dict)

    def kept_by_language(self) -> dict[str, int]:
        kept = dict.fromkeys(self.candidates, 0)
        for r in self.records:
            kept[r["language"]] = kept.get(r["language"], 0) + 1
        return kept

    def summary(self) -> dict[str, Any]:
        """For metrics.json, so reports can put pseudo-data runs beside real-data runs."""
        kept = self.kept_by_language()
        return {
            "kind": self.kind,
            "teacher": self.teacher,
            "kept": len(self.records),
            "candidates": sum(self.candidates.values()),
            "threshold": self.threshold,
            "max_examples": self.max_examples,
            "mix": self.mix,
            "files": dict(self.files),
            "per_language": {
                lang: {"kept": kept.get(lang, 0), "candidates": n}
                for lang, n in self.candidates.items()
            },
        }

    def record(self) -> list[dict[str, Any]]:
        """For data_split.json: which training records carry pseudo labels."""
        return [
            {
                "id": r["id"],
                "language": r["language"],
                "confidence": c,
                "label": r["answers"]["text"][0] if "answers" in r else r["label"],
            }
            for r, c in zip(self.records, self.confidences, strict=True)
        ]


def unlabelled(records: Sequence[dict]) -> list[dict]:
    """Copies of ``records`` without their gold labels, so the teacher cannot see them."""
    return [{k: v for k, v in r.items() if k not in LABEL_KEYS} for r in records]


def keep_confident(
    labelled: Sequence[tuple[dict | None, float]], threshold: float, max_examples: int = 0
) -> list[tuple[dict, float]]:
    """The ``(record, confidence)`` pairs with confidence strictly above ``threshold``.

    ``None`` records (inputs the teacher gave no usable label) never pass. With
    ``max_examples > 0`` only that many stay, the most confident first (ties: input order);
    the survivors keep their input order.
    """
    passing = [(i, r, c) for i, (r, c) in enumerate(labelled) if r is not None and c > threshold]
    if max_examples > 0:
        passing = sorted(passing, key=lambda item: (-item[2], item[0]))[:max_examples]
        passing.sort(key=lambda item: item[0])
    return [(r, c) for _, r, c in passing]


def teacher_labels(
    task: Task, model, tokenizer, records: Sequence[dict], args
) -> list[tuple[dict | None, float]]:
    """Label ``records`` of one language with the teacher: ``(labelled record, confidence)``.

    Gold labels are dropped before the teacher sees the inputs. Prediction and decoding are
    the evaluation's (``task.model_outputs``, ``task.predictions``); ``args`` are the
    TrainingArguments it predicts with (device, batch size, precision). A QA question with no
    valid span gives ``(None, 0.0)``.
    """
    if not records:
        return []
    inputs = unlabelled(records)
    progress = RichProgress(bars=False)
    trainer = build_trainer(model, tokenizer, args, progress=progress)
    try:
        meta, outputs = task.model_outputs(trainer, inputs, tokenizer)
    finally:
        progress.stop()
    predicted, details = task.predictions(inputs, meta, outputs, return_scores=True)
    labelled: list[tuple[dict | None, float]] = []
    for r in inputs:
        confidence = float(details[r["id"]]["confidence"])
        if task.kind == "extractive_qa":
            text = predicted[r["id"]]
            if not text:
                labelled.append((None, 0.0))
                continue
            start = int(details[r["id"]]["answer_start"])
            label = {"answers": {"text": [text], "answer_start": [start]}}
        else:
            label = {"label": int(predicted[r["id"]])}
        labelled.append(({**r, **label}, confidence))
    return labelled


def load_teacher(run_dir: str | Path, task_kind: str, num_labels: int):
    """``(task, model, tokenizer)`` of a finished run, restored as ``lowres evaluate`` does.

    The teacher's own task object is returned because its window length, stride and n-best
    settings are the ones its model was trained and validated with.
    """
    path = Path(run_dir)
    if not (path / "metrics.json").is_file() or not (path / ".hydra" / "config.yaml").is_file():
        raise ConfigError(
            f"pseudo.teacher={run_dir} is not a finished lowres run folder (expected "
            f"metrics.json, .hydra/config.yaml and checkpoint/ in it). Give the folder that "
            "`lowres train` printed for the source-trained run, e.g. "
            "pseudo.teacher=outputs/pawsx/me5-small/<date>."
        )
    cfg = saved_config(path, key="pseudo.teacher")
    if cfg.task is None or cfg.task.kind != task_kind or cfg.task.num_labels != num_labels:
        theirs = "no task" if cfg.task is None else f"task {cfg.task.name} ({cfg.task.kind})"
        raise ConfigError(
            f"pseudo.teacher={run_dir} was trained on {theirs}, which cannot label this run's "
            f"{task_kind} inputs with {num_labels} labels. Use a teacher trained on a task of "
            "the same kind (e.g. an xquad or mlqa run for QA, a pawsx run for PAWS-X)."
        )
    if cfg.backbone.family == "decoder":
        raise ConfigError(
            f"pseudo.teacher={run_dir} is a decoder ({cfg.backbone.name}), which answers by "
            "generation and gives no span or class probabilities to filter on. Use a teacher "
            "run with an encoder backbone (e.g. backbone=xlmr-base)."
        )
    return restore_run(cfg, path)


def self_train(
    task: Task,
    records: Mapping[str, Sequence[dict]],
    teacher: str | Path,
    *,
    threshold: float,
    max_examples: int,
    args,
) -> PseudoData:
    """Teacher labels for ``records`` (``{language: inputs}``), filtered by confidence."""
    teacher_task, model, tokenizer = load_teacher(
        teacher, task.kind, int(task.params.get("num_labels", 2))
    )
    data = PseudoData(
        kind="self_train", threshold=threshold, max_examples=max_examples, teacher=str(teacher)
    )
    try:
        for lang, inputs in records.items():
            labelled = teacher_labels(teacher_task, model, tokenizer, inputs, args)
            data.candidates[lang] = len(labelled)
            for record, confidence in keep_confident(labelled, threshold, max_examples):
                data.records.append(record)
                data.confidences.append(confidence)
    finally:
        # The student is built next; the teacher's memory must be free by then.
        del model
        gc.collect()
        _empty_cuda_cache()
    return data


def _empty_cuda_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def resolve_files(
    files: Any, languages: Sequence[str], *, task_languages: Sequence[str], source_language: str
) -> dict[str, Path]:
    """``{language: path}`` from ``pseudo.files``: a mapping, or a path pattern with ``{lang}``.

    A pattern is filled in for every target language in ``languages``; a mapping names its
    languages itself.
    """
    example = (
        "e.g. pseudo.files={de:data/de.tsv,fr:data/fr.tsv} or, quoted for Hydra, "
        "\"pseudo.files='data/translate-train/{lang}.tsv'\""
    )
    if isinstance(files, str) and files.strip():
        if "{lang}" not in files:
            raise ConfigError(
                f"pseudo.files={files!r} is one path without {{lang}}, so every target "
                f"language would train on the same file. Give a pattern with {{lang}} or a "
                f"mapping per language, {example}."
            )
        if not languages:
            raise ConfigError(
                f"pseudo.files={files!r} is filled in per target language, but "
                f"data.eval_languages holds only the source language {source_language}. Add "
                "target languages to data.eval_languages, or give pseudo.files as a mapping."
            )
        resolved = {lang: files.replace("{lang}", lang) for lang in languages}
    elif isinstance(files, Mapping) and files:
        resolved = {str(lang): str(path) for lang, path in files.items()}
    else:
        raise ConfigError(
            f"pseudo.kind=translate_train needs pseudo.files, the translated training files "
            f"per target language, {example}."
        )
    for lang, path in resolved.items():
        if lang not in task_languages:
            raise ConfigError(
                f"pseudo.files names language {lang!r}, which this task does not have (it has "
                f"{', '.join(task_languages)}). Fix the language code in pseudo.files."
            )
        if lang == source_language:
            raise ConfigError(
                f"pseudo.files names {lang!r}, the source language, whose labelled pool "
                "already trains; translate-train files are for target languages. Drop it."
            )
        if not path.strip():
            raise ConfigError(f"pseudo.files has an empty path for {lang!r}; {example}.")
    return {lang: Path(path) for lang, path in resolved.items()}


def read_translated(task_kind: str, lang: str, path: Path) -> list[dict]:
    """Labelled records of one translated file, ids prefixed ``translated-``.

    The prefix keeps them apart from evaluation ids, which a file in the XTREME layout (ids
    are line numbers) would otherwise repeat.
    """
    layout = FILE_LAYOUTS[task_kind]
    if not path.is_file():
        raise ConfigError(
            f"pseudo.files: the {lang} translate-train file {path} does not exist. Expected "
            f"{layout}; fix the path in pseudo.files (relative paths are read from the "
            "directory lowres runs in)."
        )
    if task_kind == "extractive_qa":
        rows = squad_format.read_squad_json(path)
    else:
        rows, _ = pawsx_format.read_pawsx_tsv(path)
    if not rows:
        raise DataFormatError(
            f"{path} (pseudo.files, {lang}) holds no usable examples: every row is marked "
            f"untranslated (NS). Expected {layout} with translated rows; translate it again "
            "or drop the language from pseudo.files."
        )
    return [
        {**r, "id": f"translated-{r['id']}", "language": lang, "group": f"translated-{r['id']}"}
        for r in rows
    ]


def translate_train(task: Task, files: Mapping[str, Path], *, max_examples: int = 0) -> PseudoData:
    """Records of the translated files; ``max_examples`` takes the task's k-shot order prefix."""
    data = PseudoData(
        kind="translate_train",
        max_examples=max_examples,
        files={lang: str(path) for lang, path in files.items()},
    )
    for lang, path in files.items():
        records = read_translated(task.kind, lang, path)
        data.candidates[lang] = len(records)
        if max_examples > 0:
            records = task.shot_order(records, lang)[:max_examples]
        data.records += records
        data.confidences += [None] * len(records)
    return data


def real_training(split: Split, *, mix: bool, source_language: str) -> list[dict]:
    """The split's gold-labelled training records that stay: all, or without the k-shot ones."""
    if mix:
        return list(split.train)
    return [r for r in split.train if r.get("language", source_language) == source_language]


def target_candidates(
    task: Task, languages: Sequence[str], trained: Sequence[dict]
) -> dict[str, list[dict]]:
    """Target-pool records of each language that do not already train with their gold label."""
    seen = {(r.get("language"), r["id"]) for r in trained}
    return {
        lang: [r for r in task.target_pool(lang) if (lang, r["id"]) not in seen]
        for lang in languages
    }


def build(
    kind: str,
    task: Task,
    split: Split,
    *,
    source_language: str,
    target_languages: Sequence[str],
    mix: bool = True,
    teacher: str = "",
    threshold: float = 0.0,
    max_examples: int = 0,
    files: Any = "",
    args=None,
) -> tuple[Split, PseudoData]:
    """The run's training split with pseudo data of ``kind`` (``lowres.registry.PSEUDO_KINDS``)
    added, and what was added.

    ``args`` (TrainingArguments) are only needed for self-training, to run the teacher.
    """
    targets = [lang for lang in target_languages if lang != source_language]
    real = real_training(split, mix=mix, source_language=source_language)
    data = PSEUDO_KINDS.load(kind)(
        task,
        targets,
        real,
        source_language=source_language,
        teacher=teacher,
        threshold=threshold,
        max_examples=max_examples,
        files=files,
        args=args,
    )
    if data is None:
        return split, PseudoData()
    data.mix = mix
    _announce(data)
    return dataclasses.replace(split, train=real + data.records), data


# The pseudo-data kinds: (task, target languages, the real training records, **options) ->
# PseudoData, or None for none. Each takes the options it reads by name and ignores the rest.


def no_pseudo_data(task: Task, targets: Sequence[str], real: list[dict], **options) -> None:
    return None


def self_train_data(
    task: Task,
    targets: Sequence[str],
    real: list[dict],
    *,
    teacher: str,
    threshold: float,
    max_examples: int,
    args,
    **options,
) -> PseudoData:
    _check_supported("self_train", task)
    if not teacher:
        raise ConfigError(
            "pseudo.kind=self_train needs pseudo.teacher, the folder of a finished "
            "source-trained `lowres train` run, e.g. "
            "pseudo.teacher=outputs/pawsx/me5-small/<date>."
        )
    if task.settings.pool_fraction <= 0 or not targets:
        raise ConfigError(
            "pseudo.kind=self_train labels the target-language pool, but "
            f"data.pool_fraction={task.settings.pool_fraction} and target languages "
            f"{list(targets) or 'none'} leave it empty. Set data.pool_fraction (e.g. 0.5) and "
            "put target languages in data.eval_languages."
        )
    return self_train(
        task,
        target_candidates(task, targets, real),
        teacher,
        threshold=threshold,
        max_examples=max_examples,
        args=args,
    )


def translate_train_data(
    task: Task,
    targets: Sequence[str],
    real: list[dict],
    *,
    files: Any,
    source_language: str,
    max_examples: int,
    **options,
) -> PseudoData:
    _check_supported("translate_train", task)
    paths = resolve_files(
        files,
        targets,
        task_languages=list(task.params.get("languages") or [*targets, source_language]),
        source_language=source_language,
    )
    return translate_train(task, paths, max_examples=max_examples)


def _check_supported(kind: str, task: Task) -> None:
    if task.kind not in SUPPORTED_KINDS:
        raise ConfigError(
            f"pseudo.kind={kind} supports extractive QA and classification tasks; task "
            f"{task.name} is {task.kind}. Use pseudo=none."
        )


def _announce(data: PseudoData) -> None:
    console = Console(stderr=True, soft_wrap=True)
    summary = data.summary()
    source = f"teacher {data.teacher}" if data.teacher else "translated files"
    line = (
        f"pseudo ({data.kind}, {source}): kept {summary['kept']} of "
        f"{summary['candidates']} target-language examples"
    )
    if data.threshold is not None:
        line += f" with confidence above {data.threshold}"
    console.print(line, highlight=False)
    if not data.records:
        console.print(
            "[yellow]warning:[/] no pseudo-labelled example passed; this run trains on the "
            "real data alone (metrics.json records pseudo.kept = 0). Lower pseudo.threshold to "
            "keep some.",
            highlight=False,
        )


def add_pseudo_data(
    pseudo: PseudoConfig, task: Task, split: Split, *, data: DataConfig, args
) -> tuple[Split, PseudoData]:
    """The ``pseudo`` group applied to a run's split (``pseudo=none``: unchanged).

    ``args`` are the TrainingArguments the self-training teacher predicts with.
    """
    files = (
        OmegaConf.to_container(pseudo.files) if OmegaConf.is_config(pseudo.files) else pseudo.files
    )
    return build(
        pseudo.kind,
        task,
        split,
        source_language=data.source_language,
        target_languages=list(data.eval_languages),
        mix=pseudo.mix,
        teacher=pseudo.teacher,
        threshold=pseudo.threshold,
        max_examples=pseudo.max_examples,
        files=files,
        args=args,
    )
