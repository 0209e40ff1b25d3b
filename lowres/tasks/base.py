"""The task protocol and the cross-lingual protocol shared by every task.

A task knows how to load records for a language, which labelled source pool it trains on,
how to turn records into model inputs and model outputs into predictions, and how to score
them with the official metric. The protocol around it is the same for every task:

* the **source pool** (labelled, source language) always trains;
* each target language's records are split by a stable hash of their *group* (a paragraph
  for QA, a row for PAWS-X) into a **target pool** (``data.pool_fraction`` of the groups)
  and the **evaluation set** (the rest), so no paragraph is both trained and evaluated on;
* **k-shot** samples come from the target pool in an order fixed by (task, language, seed),
  so the k = 8 sample is inside the k = 32 sample for the same seed;
* **parallel pairs** for the alignment loss join source- and target-language records of the
  target pool that share an id (translations of each other).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lowres.data.features import LENGTH_COLUMN, feature_dataset
from lowres.errors import ConfigError


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stable_fraction(*parts: object) -> float:
    """A number in [0, 1) fixed by ``parts`` on every machine and Python version."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass
class DataSettings:
    """The data-side settings a task needs; plain values, no config objects."""

    source: str  # sample | local | hub
    root: str
    source_language: str
    eval_languages: list[str]
    k: int = 0
    pool_fraction: float = 0.0
    max_train_examples: int = 0
    max_eval_examples: int = 0
    seed: int = 42
    use_source_pool: bool = True  # False: only target-language shots train (two-stage, stage 2)
    select_examples: int = 0  # source records held out as the checkpoint-selection dev set
    source_split: str = "dev_minus_xquad"  # QA's English SQuAD pool: train | dev_minus_xquad | dev
    source_dev_articles: int = 0  # whole source-pool articles held out as source dev
    source_dev_examples: int = 0  # > 0: a fixed random sample of their questions


@dataclass
class Split:
    """Which records train, which evaluate, and the pairs the alignment loss may use."""

    train: list[dict]
    evaluation: dict[str, list[dict]]
    parallel: list[tuple[dict, dict]] = field(default_factory=list)
    selection: list[dict] = field(default_factory=list)  # source-language dev set
    source_dev: list[dict] = field(default_factory=list)  # held out by article; scored after

    def record(self) -> dict[str, Any]:
        """Ids that went where, for the run folder."""
        return {
            "train": [r["id"] for r in self.train],
            "selection": [r["id"] for r in self.selection],
            "source_dev": [r["id"] for r in self.source_dev],
            "train_languages": sorted({r.get("language", "") for r in self.train}),
            "evaluation": {lang: [r["id"] for r in rs] for lang, rs in self.evaluation.items()},
            "parallel": [[s["id"], t["id"], t.get("language", "")] for s, t in self.parallel],
        }


def article_of(record: dict) -> str:
    """A record's article: its title (QA), else its group (a row with no title is its own)."""
    return record.get("title") or record["group"]


def stratified_sample(records: Sequence[dict], size: int, salt: str) -> list[dict]:
    """``size`` records, each article's share in proportion to its size, in file order.

    Quotas are the proportional shares rounded down, the remaining places going to the
    largest remainders; within an article the records are taken in a hashed order of their
    ids. The hash does not depend on the run's seed or language, so every method and seed is
    scored on the same questions, and parallel languages (shared ids) on the same ones.
    """
    if size >= len(records):
        return list(records)
    articles: dict[str, list[dict]] = {}
    for record in records:
        articles.setdefault(article_of(record), []).append(record)
    shares = {a: size * len(rs) / len(records) for a, rs in articles.items()}
    quota = {a: int(share) for a, share in shares.items()}
    left = size - sum(quota.values())
    by_remainder = sorted(
        articles, key=lambda a: (quota[a] - shares[a], stable_fraction(salt, "eval", a))
    )
    for article in by_remainder[:left]:
        quota[article] += 1
    keep = set()
    for article, members in articles.items():
        ordered = sorted(members, key=lambda r: stable_fraction(salt, "eval", r["id"]))
        keep |= {id(r) for r in ordered[: quota[article]]}
    return [r for r in records if id(r) in keep]


class Task(ABC):
    """One benchmark. Subclasses load records; the protocol above is implemented here."""

    name: str
    kind: str  # extractive_qa | classification
    main_score: str  # what ranks checkpoints and runs: f1 (QA) | accuracy (classification)

    def __init__(self, settings: DataSettings, **params: Any) -> None:
        self.settings = settings
        self.params = params
        # Every local data file this task read, in order: recorded in the run folder with
        # its sha256 (data_files.json), so a run says which files its numbers come from.
        self.files_read: dict[str, None] = {}

    def read_file(self, path: str | Path, read: Callable[[str], Any]) -> Any:
        """``read(path)``, noting the file as read by this task."""
        self.files_read[str(Path(path).resolve())] = None
        return read(str(path))

    def data_record(self) -> dict[str, Any]:
        """What data_files.json says about the data: each file read, with its sha256."""
        return {
            "source": self.settings.source,
            "files": {path: _sha256(Path(path)) for path in self.files_read},
        }

    # -- loading, per task --------------------------------------------------------------
    @abstractmethod
    def source_pool(self) -> list[dict]:
        """Labelled training records in the source language."""

    @abstractmethod
    def language_records(self, lang: str) -> list[dict]:
        """Every record of ``lang`` that may be pooled or evaluated, each with ``group``."""

    @abstractmethod
    def text_pair(self, record: dict) -> tuple[str, str]:
        """The two texts the model reads (question, context) or (sentence1, sentence2)."""

    # -- model side, per task kind -----------------------------------------------------
    @abstractmethod
    def train_features(self, records: Sequence[dict], tokenizer) -> dict[str, list]: ...

    @abstractmethod
    def eval_features(self, records: Sequence[dict], tokenizer) -> tuple[dict[str, list], Any]: ...

    @abstractmethod
    def predictions(
        self, records, meta, outputs: dict[str, np.ndarray], return_scores: bool = False
    ) -> Any:
        """Map model outputs to ``{record id: prediction}`` (answer text or label).

        ``return_scores=True`` returns ``(predictions, {record id: {"confidence", ...}})``,
        which self-training filters on; the confidence is task-specific (see the subclasses).
        """

    @abstractmethod
    def score(self, predictions: dict[str, Any], records: Sequence[dict], lang: str) -> dict:
        """The official metric for ``lang``; includes ``n``."""

    # -- prediction: how this task's model answers ------------------------------------------
    def model_outputs(self, trainer, records: list[dict], tokenizer, cache=None):
        """``(meta, outputs)`` of ``trainer.predict`` on ``records``, for :meth:`predictions`.

        Windows are predicted longest first, so each batch holds rows of similar length and
        pads little; the outputs come back in the order of ``meta``. Past a window's own end,
        span logits belong to padding (or are the Trainer's -100 filler beyond its batch's
        width); ``meta`` has no offsets there, so decoding never picks them.
        """
        if cache is not None:  # a lowres.cache.FeatureCache
            features, meta = cache.eval_features(self, records, tokenizer)
        else:
            features, meta = self.eval_features(records, tokenizer)
        dataset = feature_dataset(features)
        order = np.argsort(-np.asarray(dataset[LENGTH_COLUMN]), kind="stable")
        raw = trainer.predict(dataset.select(order)).predictions
        restore = np.empty_like(order)
        restore[order] = np.arange(len(order))
        if self.kind == "extractive_qa":
            return meta, {
                "start_logits": np.asarray(raw[0])[restore],
                "end_logits": np.asarray(raw[1])[restore],
            }
        return meta, {"logits": np.asarray(raw[0] if isinstance(raw, tuple) else raw)[restore]}

    def predict(self, trainer, records: list[dict], tokenizer, cache=None) -> dict[str, Any]:
        """``{record id: prediction}``: the model's outputs decoded by this task."""
        meta, outputs = self.model_outputs(trainer, records, tokenizer, cache)
        return self.predictions(records, meta, outputs)

    # -- the shared cross-lingual protocol --------------------------------------------
    def in_pool(self, record: dict) -> bool:
        fraction = self.settings.pool_fraction
        return fraction > 0 and stable_fraction(self.name, record["group"]) < fraction

    def target_pool(self, lang: str) -> list[dict]:
        return [r for r in self.language_records(lang) if self.in_pool(r)]

    def evaluation_records(self, lang: str) -> list[dict]:
        """Every record outside the target pool; with ``data.max_eval_examples``, a fixed
        random sample of them stratified by article (never the first N, which would be the
        file's first few articles)."""
        records = [r for r in self.language_records(lang) if not self.in_pool(r)]
        cap = self.settings.max_eval_examples
        return stratified_sample(records, cap, self.name) if cap else records

    def evaluation_sets(self) -> dict[str, list[dict]]:
        """What gets scored, by evaluation key (a language; MLQA G-XLT: "ctx-q")."""
        return {lang: self.evaluation_records(lang) for lang in self.settings.eval_languages}

    def extra_metrics(self, per_language: dict[str, dict]) -> dict[str, Any]:
        """Task-specific entries for metrics.json (MLQA: the G-XLT table; PAWS-X: NS skips)."""
        return {}

    def shot_order(self, records: Sequence[dict], lang: str) -> list[dict]:
        """Pool records in the order k-shot samples take them (prefixes are nested)."""
        seed = self.settings.seed
        return sorted(records, key=lambda r: stable_fraction(self.name, lang, seed, r["id"]))

    def k_shot(self, lang: str, k: int) -> list[dict]:
        pool = self.target_pool(lang)
        if k > len(pool):
            raise ConfigError(
                f"data.k={k} asks for more {lang} examples than the target pool holds "
                f"({len(pool)} with data.pool_fraction={self.settings.pool_fraction}); lower "
                "data.k or raise data.pool_fraction."
            )
        return self.shot_order(pool, lang)[:k]

    def parallel_pairs(self, source_lang: str, target_lang: str) -> list[tuple[dict, dict]]:
        """(source, target) records of the target pool that are translations (same id)."""
        source = {r["id"]: r for r in self.language_records(source_lang)}
        return [(source[r["id"]], r) for r in self.target_pool(target_lang) if r["id"] in source]

    def split(self, align_languages: Sequence[str] = (), align_source: str = "") -> Split:
        s = self.settings
        if (s.k or align_languages) and s.pool_fraction <= 0:
            needs = "data.k > 0" if s.k else "the alignment loss"
            raise ConfigError(
                f"{needs} needs target-language examples held out from evaluation, but "
                "data.pool_fraction=0. Set data.pool_fraction (e.g. 0.2) so that a share of "
                "paragraphs/rows becomes the training pool and never enters evaluation."
            )
        reads_pool = s.use_source_pool or s.select_examples or s.source_dev_articles
        pool = list(self.source_pool()) if reads_pool else []
        source_dev, dev_articles = self.source_dev_records(pool)
        pool = [r for r in pool if article_of(r) not in dev_articles]
        selection = self.selection_records(pool, s.select_examples)
        held_out = {r["group"] for r in selection}
        train = [r for r in pool if r["group"] not in held_out] if s.use_source_pool else []
        if s.max_train_examples:
            train = self.shot_order(train, s.source_language)[: s.max_train_examples]
        for lang in s.eval_languages:
            # With the source pool off (a two-stage run's stage 2) the source language is a
            # target like any other: its k examples come from its own held-out target pool.
            if s.k and (lang != s.source_language or not s.use_source_pool):
                train += self.k_shot(lang, s.k)
        parallel: list[tuple[dict, dict]] = []
        for lang in align_languages:
            if lang != align_source:
                parallel += self.parallel_pairs(align_source, lang)
        if align_languages and set(align_languages) == {align_source}:
            # A run evaluated on the source language alone (a sweep's en cell): with
            # align.target_languages unset, its one eval language is the alignment's source.
            raise ConfigError(
                f"The alignment loss has no target language: its languages "
                f"({', '.join(align_languages)}) are only its source language {align_source} "
                f"(align.target_languages, or data.eval_languages when that is unset). Name "
                "the languages to align with, e.g. align.target_languages=[de,es], or turn "
                "the loss off with align.weight=0."
            )
        if align_languages and not parallel:
            raise ConfigError(
                f"The alignment loss found no parallel pairs between {align_source} and "
                f"{', '.join(align_languages)} in task {self.name}'s target pool; check "
                "align.source_language and align.target_languages, or give a parallel file "
                "with align.parallel_file."
            )
        return Split(
            train=train,
            evaluation=self.evaluation_sets(),
            parallel=parallel,
            selection=selection,
            source_dev=source_dev,
        )

    def source_dev_records(self, pool: Sequence[dict]) -> tuple[list[dict], set[str]]:
        """The source dev set and the articles it holds out of training (whole articles).

        ``data.source_dev_articles`` articles (titles) in a fixed hashed order: the same for
        every seed and trial, so trials are compared on the same questions. With
        ``data.source_dev_examples``, a fixed random sample of their questions is scored
        (never the first N); the articles stay out of training whole either way.
        """
        wanted = self.settings.source_dev_articles
        if not wanted:
            return [], set()
        articles: dict[str, list[dict]] = {}
        for record in pool:
            articles.setdefault(article_of(record), []).append(record)
        if wanted >= len(articles):
            raise ConfigError(
                f"data.source_dev_articles={wanted} would hold out every article of task "
                f"{self.name}'s source pool ({len(articles)} articles), leaving nothing to "
                "train on; hold out fewer (e.g. a tenth of them)."
            )
        chosen = sorted(articles, key=lambda a: stable_fraction(self.name, "source_dev", a))
        chosen = chosen[:wanted]
        records = [r for a in chosen for r in articles[a]]
        sample = self.settings.source_dev_examples
        if sample and sample < len(records):
            order = sorted(records, key=lambda r: stable_fraction(self.name, "dev_sample", r["id"]))
            keep = {r["id"] for r in order[:sample]}
            records = [r for r in records if r["id"] in keep]
        return records, set(chosen)

    def selection_records(self, pool: Sequence[dict], size: int) -> list[dict]:
        """Whole groups of the source pool, in a fixed hashed order, until ``size`` records.

        Whole groups, so no paragraph is both trained on and used to pick the checkpoint.
        """
        if not size:
            return []
        groups: dict[str, list[dict]] = {}
        for record in pool:
            groups.setdefault(record["group"], []).append(record)
        chosen: list[dict] = []
        for group in sorted(groups, key=lambda g: stable_fraction(self.name, "select", g)):
            if len(chosen) >= size:
                break
            chosen += groups[group]
        return chosen
