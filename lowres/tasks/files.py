"""Tasks configured by YAML alone: data files named by a pattern per split and language.

``task.reader`` picks one of these instead of a built-in task's code:

* ``squad_files``: extractive QA on SQuAD v1.1 JSON files (TyDiQA-GoldP, a new XQuAD-style
  language, your own translations); scored with ``task.metric`` (squad or mlqa).
* ``pair_tsv``: sentence-pair classification on headed TSV files, columns named by
  ``task.columns`` and labels by ``task.label_names`` (PAWS-X-, XNLI-style files).

``task.files`` maps a split to a path pattern (``{lang}``, ``{split}``, ``{language}`` (the
language's name from ``task.language_names``), globs; relative to ``data.root``).
``task.fallback_files`` holds another layout of the same release, read for a language whose
``task.files`` pattern matches nothing (TyDiQA-GoldP as released, or as XTREME renames it). A
pattern without ``{lang}`` or ``{language}`` names one file that holds every language: a
language's records are those whose id starts with ``task.language_id_prefix`` (TyDiQA's
train file: ``english-...``, ``swahili-...``).

``files.train`` of ``data.source_language`` is the labelled source pool;
``files[task.split]`` of every language is pooled and evaluated under the shared protocol
(:mod:`lowres.tasks.base`). Any language whose file exists can be evaluated, listed in
``task.languages`` or not, so ``lowres evaluate`` can add one.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from lowres.data import squad_format
from lowres.data.pair_tsv import read_pair_tsv
from lowres.data.patterns import find_files, languages_with_files
from lowres.data.roots import data_root
from lowres.errors import ConfigError, LowresError
from lowres.metrics.qa_scoring import MLQA_ANSWER_LANGUAGES
from lowres.registry import METRICS
from lowres.tasks.base import DataSettings, Task
from lowres.tasks.pairs import PairClassificationTask
from lowres.tasks.qa import QATask, with_groups

SOURCE_SPLIT = "train"


@functools.lru_cache(maxsize=64)
def _read_squad(path: str, unique_ids: bool) -> tuple[dict, ...]:
    return tuple(squad_format.read_squad_json(path, unique_ids=unique_ids))


@functools.lru_cache(maxsize=64)
def _read_tsv(
    path: str, columns: tuple[tuple[str, str], ...], num_labels: int, label_names: tuple[str, ...]
) -> tuple[dict, ...]:
    rows = read_pair_tsv(
        path, columns=dict(columns), num_labels=num_labels, label_names=label_names
    )
    return tuple(rows)


class FileTask(Task):
    """The file side shared by both readers: patterns, the source pool, the evaluated split."""

    def __init__(self, settings: DataSettings, *, name: str, **params: Any) -> None:
        super().__init__(settings, **params)
        self.name = name
        self.files = dict(params.get("files") or {})
        self.fallback_files = dict(params.get("fallback_files") or {})
        self.language_names = dict(params.get("language_names") or {})
        self.language_id_prefix = params.get("language_id_prefix", "")
        self.data_split = params.get("split", "dev")
        reader = params.get("reader", "")
        for split in dict.fromkeys([SOURCE_SPLIT, self.data_split]):
            if not self.files.get(split):
                raise ConfigError(
                    f"task {name} (task.reader={reader}) has no file pattern for the {split} "
                    f"split: task.files holds {sorted(self.files) or 'nothing'}. Set "
                    f"task.files.{split}='DIR/name.{{lang}}.{split}.json' (relative to "
                    "data.root; {lang} and {split} are filled in): train is the source pool, "
                    "task.split the split that is pooled and evaluated."
                )
        if settings.source == "hub":
            raise ConfigError(
                f"task {name} reads its files by pattern (task.reader={reader}) and has no Hub "
                "copy; use data=local data.root=DIR with the files under DIR."
            )

    def _patterns(self, split: str) -> list[tuple[str, str]]:
        """(config key, pattern) for ``split``, the primary layout first."""
        found = [(f"task.files.{split}", self.files[split])]
        if self.fallback_files.get(split):
            found.append((f"task.fallback_files.{split}", self.fallback_files[split]))
        return found

    def _fill_name(self, pattern: str, lang: str) -> str:
        return pattern.replace("{language}", self.language_names.get(lang, lang))

    def locate(self, split: str, lang: str) -> tuple[str, list[Path]]:
        """The pattern that matches files for ``lang`` (primary layout first), and its files."""
        root = data_root(self.settings.source, self.settings.root)
        for _, pattern in self._patterns(split):
            found = find_files(root, self._fill_name(pattern, lang), lang=lang, split=split)
            if found:
                return pattern, found
        tried = []
        codes = {name: code for code, name in self.language_names.items()}
        for key, pattern in self._patterns(split):
            as_codes = pattern.replace("{language}", "{lang}")
            others = [codes.get(o, o) for o in languages_with_files(root, as_codes, split)]
            have = f"files exist for {', '.join(others)}" if others else "no language has a file"
            full = self._fill_name(pattern, lang).replace("{lang}", lang).replace("{split}", split)
            tried.append(f"{key}={pattern!r} (looked for {root / full}; {have})")
        raise LowresError(
            f"No {split} file of language {lang!r} for task {self.name}: "
            f"{'; '.join(tried)}. Expected the {split} file of {lang} at one of those paths; "
            f"check data.root, the language code and the patterns ({{lang}}, {{language}} and "
            f"{{split}} are filled in, globs allowed), or drop {lang} from data.eval_languages."
        )

    def paths(self, split: str, lang: str) -> list[Path]:
        return self.locate(split, lang)[1]

    def read(self, path: Path) -> list[dict]:
        raise NotImplementedError

    def records(self, split: str, lang: str) -> list[dict]:
        """Every file the matching pattern names for ``lang``, in sorted order."""
        pattern, paths = self.locate(split, lang)
        records = [r for path in paths for r in self.read(path)]
        if "{lang}" in pattern or "{language}" in pattern:
            return records
        return self._of_language(records, pattern, split, lang)

    def _of_language(self, records: list[dict], pattern: str, split: str, lang: str) -> list[dict]:
        """A file shared by every language: the records whose id carries ``lang``'s prefix."""
        if not self.language_id_prefix:
            raise ConfigError(
                f"The {split} pattern {pattern!r} of task {self.name} names one file for every "
                "language (no {lang} or {language} in it), and task.language_id_prefix is "
                "empty, so nothing says which records are which language's. Set "
                "task.language_id_prefix (e.g. '{language}-' for ids like swahili-123-0), or "
                "give a pattern with {lang}."
            )
        prefix = self._fill_name(self.language_id_prefix, lang).replace("{lang}", lang)
        mine = [r for r in records if r["id"].startswith(prefix)]
        if not mine:
            seen = sorted({r["id"].split("-")[0] + "-" for r in records})
            raise LowresError(
                f"The {split} file {pattern!r} of task {self.name} has no record of language "
                f"{lang!r}: no question id starts with {prefix!r} (task.language_id_prefix; "
                f"the ids start with {', '.join(seen[:12]) or 'nothing'}). Check the language "
                "code and task.language_names, or drop the language."
            )
        return mine

    def language_records(self, lang: str) -> list[dict]:
        return self.tag(self.records(self.data_split, lang), lang)

    def source_pool(self) -> list[dict]:
        lang = self.settings.source_language
        pool = self.tag(self.records(SOURCE_SPLIT, lang), lang)
        # Training ids get their own prefix: a release numbers each split separately, so a
        # train id may equal a dev id, and ids decide groups and k-shot order.
        return [{**r, "id": f"train-{r['id']}", "group": f"train-{r['group']}"} for r in pool]

    def tag(self, records: list[dict], lang: str) -> list[dict]:
        raise NotImplementedError


class SquadFilesTask(FileTask, QATask):
    """Extractive QA on SQuAD v1.1 JSON files (``task.reader=squad_files``)."""

    def __init__(self, settings: DataSettings, *, name: str, **params: Any) -> None:
        super().__init__(settings, name=name, **params)
        self.metric_name = params.get("metric", "squad")
        # A metric of the user's own (lowres.registry.METRICS) is trusted to score QA.
        if self.metric_name in METRICS.builtins and self.metric_name not in ("squad", "mlqa"):
            raise ConfigError(
                f"task.metric={self.metric_name!r} cannot score extractive QA; expected squad "
                "(SQuAD v1.1 EM/F1: XQuAD, TyDiQA-GoldP) or mlqa (MLQA's per-language "
                "normalisation)."
            )
        unknown = [lang for lang in settings.eval_languages if lang not in MLQA_ANSWER_LANGUAGES]
        if self.metric_name == "mlqa" and unknown:
            # Found here, not after training: the metric is what would refuse them.
            raise ConfigError(
                f"task.metric=mlqa normalises answers per language and knows "
                f"{', '.join(MLQA_ANSWER_LANGUAGES)}, not {', '.join(unknown)} "
                "(data.eval_languages). Use task.metric=squad, or drop those languages."
            )
        self.unique_ids = bool(params.get("unique_ids", False))

    def read(self, path: Path) -> list[dict]:
        return list(_read_squad(str(path), self.unique_ids))

    def tag(self, records: list[dict], lang: str) -> list[dict]:
        return with_groups(records, lang)

    def metric_kwargs(self, lang: str) -> dict[str, Any]:
        return {"answer_language": lang} if self.metric_name == "mlqa" else {}


class PairTsvTask(FileTask, PairClassificationTask):
    """Sentence-pair classification on headed TSV files (``task.reader=pair_tsv``)."""

    def __init__(self, settings: DataSettings, *, name: str, **params: Any) -> None:
        super().__init__(settings, name=name, **params)
        self.columns = tuple(sorted(dict(params.get("columns") or {}).items()))
        self.label_names = tuple(params.get("label_names") or ())
        self.num_labels = int(params.get("num_labels", 2))
        if self.label_names and len(self.label_names) != self.num_labels:
            raise ConfigError(
                f"task.label_names={list(self.label_names)} names {len(self.label_names)} "
                f"classes but task.num_labels={self.num_labels}; give one name per class, in "
                "class order, or set task.num_labels to match."
            )

    def read(self, path: Path) -> list[dict]:
        return list(_read_tsv(str(path), self.columns, self.num_labels, self.label_names))

    def tag(self, records: list[dict], lang: str) -> list[dict]:
        # A row is its own group: rows that are translations share an id, hence a group.
        return [{**r, "language": lang, "group": r["id"]} for r in records]
