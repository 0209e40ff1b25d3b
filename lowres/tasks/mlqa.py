"""MLQA: extractive QA over 7 languages, scored with the official MLQA v1 metric.

Files: ``<root>/mlqa/MLQA_V1/{dev,test}/{split}-context-XX-question-YY.json`` (local; see
:mod:`lowres.data.mlqa_files`) or ``facebook/mlqa`` configs ``mlqa.XX.YY`` (hub, read from the
parquet copy in ``google/xtreme``). ``task.split`` picks dev or test.

* **Source pool**: English SQuAD v1.1 by ``data.source_split`` (:mod:`lowres.tasks.xquad`):
  ``train`` is the MLQA paper's protocol (SQuAD v1.1 train); the offline default
  ``dev_minus_xquad`` is SQuAD dev minus XQuAD's questions, the same pool as XQuAD runs.
  Questions whose id is also an MLQA id are dropped; on the real files there are none (MLQA
  and SQuAD v1.1 share no id, paragraph or article title).
* **XLT** (default): ``language_records(lang)`` is the context-``lang`` question-``lang`` file.
* **G-XLT**: with ``task.question_languages`` set, evaluation covers every (context language in
  ``data.eval_languages``) x (question language in ``task.question_languages``) pair under the
  key ``"CTX-Q"`` (e.g. ``"de-en"``: German context, English question). Answers are in the
  context language, so the metric's answer language is the key's first half.

**Groups.** An MLQA question id is shared by all the files of the same question (its
translations), but paragraphs are not parallel one to one: a German paragraph can hold
questions of two English paragraphs and the other way round. A question's group is therefore
the connected component of "same paragraph (any language) or same question id" over the 7
XLT files of the split, named by its smallest id. Pool membership hashes that group, so a
paragraph, in any language and any context/question pairing, is either pooled or evaluated,
never both, and a pooled question is never evaluated in any language.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lowres.data import squad_format
from lowres.data.hub import load_hub_split
from lowres.data.mlqa_files import MLQA_LANGUAGES, MLQA_SPLITS, mlqa_file
from lowres.data.roots import data_root
from lowres.errors import ConfigError, LowresError
from lowres.tasks.qa import QATask
from lowres.tasks.xquad import source_pool_record, squad_source_pool

HUB_REPO = "facebook/mlqa"
HUB_SPLITS = {"dev": "validation", "test": "test"}


@functools.lru_cache(maxsize=64)
def _read_local(path: str) -> tuple[dict, ...]:
    if not Path(path).is_file():
        raise LowresError(
            f"Data file {path} is missing; expected the official file at that path. Check "
            "data.root, or use data.source=hub."
        )
    return tuple(squad_format.read_squad_json(path))


@functools.lru_cache(maxsize=64)
def _read_hub(path: str, name: str | None, split: str) -> tuple[dict, ...]:
    return tuple(squad_format.records_from_hub(load_hub_split(path, name, split)))


def pair_key(context: str, question: str) -> str:
    """Evaluation key of a G-XLT pair: ``"de-en"`` is German context, English question."""
    return f"{context}-{question}"


def context_language(key: str) -> str:
    """The context (= answer) language of an evaluation key: ``"de-en"`` -> ``"de"``."""
    return key.split("-", 1)[0]


def question_groups(files: Sequence[Sequence[dict]]) -> dict[str, str]:
    """``{question id: group}``: components of "same paragraph or same id", named by min id."""
    parent: dict[Any, Any] = {}

    def find(node):
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for index, records in enumerate(files):
        for r in records:
            a, b = find(("paragraph", index, r.get("title", ""), r["context"])), find(r["id"])
            if a != b:
                parent[a] = b
    members: dict[Any, list[str]] = {}
    for r in (r for records in files for r in records):
        members.setdefault(find(r["id"]), []).append(r["id"])
    return {qid: min(ids) for ids in members.values() for qid in ids}


def gxlt_matrix(per_language: dict[str, dict]) -> dict[str, Any]:
    """The G-XLT table from ``per_language`` scores keyed ``"CTX-Q"``, for metrics.json.

    Rows are context languages, columns question languages, both in MLQA's order (en de es
    ar hi vi zh) restricted to the languages present; a pair that was not evaluated is None.
    ``mean_by_context``/``mean_by_question`` average F1 over a row or a column.
    """
    pairs = {tuple(k.split("-", 1)): v for k, v in per_language.items() if "-" in k}
    contexts = [lang for lang in MLQA_LANGUAGES if any(c == lang for c, _ in pairs)]
    questions = [lang for lang in MLQA_LANGUAGES if any(q == lang for _, q in pairs)]

    def table(metric: str) -> dict[str, dict[str, float | None]]:
        return {
            c: {q: (pairs[c, q][metric] if (c, q) in pairs else None) for q in questions}
            for c in contexts
        }

    def mean(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return sum(present) / len(present) if present else None

    f1 = table("f1")
    return {
        "rows": "context language",
        "columns": "question language",
        "context_languages": contexts,
        "question_languages": questions,
        "f1": f1,
        "exact_match": table("exact_match"),
        "n": table("n"),
        "mean_by_context": {c: mean(list(f1[c].values())) for c in contexts},
        "mean_by_question": {q: mean([f1[c][q] for c in contexts]) for q in questions},
    }


class MLQATask(QATask):
    name = "mlqa"
    metric_name = "mlqa"

    def __init__(self, settings, **params: Any) -> None:
        super().__init__(settings, **params)
        self.data_split = params.get("split", "dev")
        if self.data_split not in MLQA_SPLITS:
            raise ConfigError(
                f"task.split={self.data_split!r} is not an MLQA split; expected one of "
                f"{', '.join(MLQA_SPLITS)}."
            )
        self.question_languages = list(params.get("question_languages") or [])
        for lang in [*self.question_languages, *settings.eval_languages]:
            if lang not in MLQA_LANGUAGES:
                raise ConfigError(
                    f"Language {lang!r} is not in MLQA; it has {', '.join(MLQA_LANGUAGES)}. "
                    "Fix data.eval_languages or task.question_languages."
                )
        self._groups: dict[str, str] | None = None

    # -- files ---------------------------------------------------------------------------
    def _file(self, context: str, question: str) -> list[dict]:
        s = self.settings
        if s.source == "hub":
            name = f"mlqa.{context}.{question}"
            return list(_read_hub(HUB_REPO, name, HUB_SPLITS[self.data_split]))
        path = mlqa_file(data_root(s.source, s.root), self.data_split, context, question)
        return list(self.read_file(path, _read_local))

    def groups(self) -> dict[str, str]:
        """``{question id: group}`` over the 7 XLT files of ``task.split`` (see the module doc)."""
        if self._groups is None:
            self._groups = question_groups([self._file(lang, lang) for lang in MLQA_LANGUAGES])
        return self._groups

    def pair_records(self, context: str, question: str) -> list[dict]:
        """Records of the context-``context`` question-``question`` file, grouped."""
        groups = self.groups()
        language = context if context == question else pair_key(context, question)
        return [
            {**r, "language": language, "group": groups[r["id"]]}
            for r in self._file(context, question)
        ]

    # -- Task ----------------------------------------------------------------------------
    def language_records(self, lang: str) -> list[dict]:
        """XLT records of ``lang``; a ``"CTX-Q"`` key gives that G-XLT pair's records."""
        context, _, question = lang.partition("-")
        return self.pair_records(context, question or context)

    def source_pool(self) -> list[dict]:
        # every MLQA id of the split is in an XLT file; SQuAD shares none of them
        pool = squad_source_pool(self.settings, lambda: set(self.groups()), self.read_file)
        self.source_record = source_pool_record(self.settings, pool)
        return pool

    def evaluation_keys(self) -> list[str]:
        """``data.eval_languages`` for XLT; every ``"CTX-Q"`` pair for G-XLT."""
        languages = self.settings.eval_languages
        if not self.question_languages:
            return list(languages)
        return [pair_key(c, q) for c in languages for q in self.question_languages]

    def evaluation_sets(self) -> dict[str, list[dict]]:
        return {key: self.evaluation_records(key) for key in self.evaluation_keys()}

    def metric_kwargs(self, lang: str) -> dict[str, Any]:
        return {"answer_language": context_language(lang)}

    def extra_metrics(self, per_language: dict[str, dict]) -> dict[str, Any]:
        """What metrics.json adds to the scores: the G-XLT table when G-XLT was run."""
        extras = {"gxlt": gxlt_matrix(per_language)} if self.question_languages else {}
        record = getattr(self, "source_record", None)
        return {**extras, "protocol": record} if record else extras
