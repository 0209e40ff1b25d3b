"""XQuAD: SQuAD v1.1 translated into 10 languages; English SQuAD trains, every language evaluates.

Files: ``<root>/xquad/xquad.<lang>.json`` and ``<root>/squad/{train,dev}-v1.1.json`` (local),
or ``google/xquad`` and ``rajpurkar/squad`` (hub).

**Source pool** (XQuAD and MLQA), by ``data.source_split``:

* ``train``: SQuAD v1.1 train, 87,599 questions: the standard protocol (XTREME, the MLQA
  paper), under which published baselines were measured. Default with ``data=hub``.
* ``dev_minus_xquad``: SQuAD v1.1 dev minus every question XQuAD translates (XQuAD's
  English paragraphs come from SQuAD dev): 9,380 of 10,570 questions. Not the standard
  protocol; the offline default, because SQuAD train is not shipped or in ../shared/data.
* ``dev``: all of SQuAD v1.1 dev (what MLQA runs trained on before data.source_split).

The evaluated task's own ids are dropped in every case (MLQA and SQuAD share none).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lowres.data import squad_format
from lowres.data.hub import load_hub_split
from lowres.data.patterns import languages_with_files
from lowres.data.roots import data_root
from lowres.errors import ConfigError, LowresError
from lowres.tasks.base import DataSettings
from lowres.tasks.qa import QATask, with_groups

XQUAD_LANGUAGES = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")


@functools.lru_cache(maxsize=64)
def _read_local(path: str) -> tuple[dict, ...]:
    file = Path(path)
    if not file.is_file():
        # A language outside the release (a translation of your own) is read from the same
        # layout, so say which languages this folder has.
        found = languages_with_files(file.parent, "xquad.{lang}.json", "")
        have = f"that folder has {', '.join(found)}" if found else "that folder has none"
        raise LowresError(
            f"Data file {file} is missing ({have}); expected the official file, or one of "
            "your own in the same SQuAD v1.1 format, at that path. Check data.root and the "
            "language codes (data.eval_languages), or use data.source=hub."
        )
    return tuple(squad_format.read_squad_json(file))


@functools.lru_cache(maxsize=64)
def _read_hub(path: str, name: str | None) -> tuple[dict, ...]:
    return tuple(squad_format.records_from_hub(load_hub_split(path, name, "validation")))


SOURCE_SPLITS = {
    "train": "SQuAD v1.1 train (the standard protocol: XTREME, the MLQA paper)",
    "dev_minus_xquad": "SQuAD v1.1 dev minus the questions XQuAD translates (not the standard "
    "protocol: fine for comparing methods, not beside published scores)",
    "dev": "SQuAD v1.1 dev (not the standard protocol)",
}
SQUAD_FILES = {"train": "train-v1.1.json", "dev": "dev-v1.1.json"}
SQUAD_HUB_SPLITS = {"train": "train", "dev": "validation"}


@functools.lru_cache(maxsize=4)
def _squad_hub(split: str) -> tuple[dict, ...]:
    return tuple(squad_format.records_from_hub(load_hub_split("rajpurkar/squad", None, split)))


def _read_directly(path: Path, read: Callable[[str], Any]) -> Any:
    return read(str(path))


# How a file is read: a task passes its own ``read_file``, which records the file (with its
# sha256) in the run folder's data_files.json.
FileReader = Callable[[Path, Callable[[str], Any]], Any]


def squad_records(
    settings: DataSettings, which: str, read_file: FileReader = _read_directly
) -> list[dict]:
    """SQuAD v1.1 ``which`` (train | dev) from the run's data source."""
    if settings.source == "hub":
        return list(_squad_hub(SQUAD_HUB_SPLITS[which]))
    path = data_root(settings.source, settings.root) / "squad" / SQUAD_FILES[which]
    if which == "train" and not path.is_file():
        where = "the shipped sample has only a dev excerpt" if settings.source == "sample" else ""
        raise LowresError(
            f"data.source_split=train reads SQuAD v1.1 train from {path}, which is missing"
            f"{' (' + where + ')' if where else ''}. Put train-v1.1.json there (the official "
            "file, 87,599 questions), use data=hub, or train on the dev pool with "
            "data.source_split=dev_minus_xquad."
        )
    return list(read_file(path, _read_local))


def xquad_english_ids(settings: DataSettings, read_file: FileReader = _read_directly) -> set[str]:
    """The ids of the SQuAD dev questions that XQuAD translates (its English file)."""
    if settings.source == "hub":
        return {r["id"] for r in _read_hub("google/xquad", "xquad.en")}
    path = data_root(settings.source, settings.root) / "xquad" / "xquad.en.json"
    if not path.is_file():
        raise LowresError(
            f"data.source_split=dev_minus_xquad drops the SQuAD v1.1 dev questions that XQuAD "
            f"translates, listed by XQuAD's English file {path}, which is missing. Add that "
            "file, or use data.source_split=train (the standard protocol) or dev (all of SQuAD "
            "v1.1 dev)."
        )
    return {r["id"] for r in read_file(path, _read_local)}


def squad_source_pool(
    settings: DataSettings,
    own_ids: Callable[[], set[str]],
    read_file: FileReader = _read_directly,
) -> list[dict]:
    """The English SQuAD pool of ``data.source_split`` (see the module doc), minus ``own_ids()``.

    SQuAD is read first, so an unreachable source is the error a run reports first.
    """
    split = settings.source_split
    if split not in SOURCE_SPLITS:
        raise ConfigError(
            f"data.source_split={split!r} is not a SQuAD source pool; expected one of "
            f"{', '.join(SOURCE_SPLITS)}."
        )
    records = squad_records(settings, "train" if split == "train" else "dev", read_file)
    drop = set(own_ids())
    if split == "dev_minus_xquad":
        drop |= xquad_english_ids(settings, read_file)
    return with_groups([r for r in records if r["id"] not in drop], "en")


def source_pool_record(settings: DataSettings, pool: list[dict]) -> dict:
    """What metrics.json says the source pool was: results pages name their protocol."""
    split = settings.source_split
    return {"source_split": split, "description": SOURCE_SPLITS[split], "questions": len(pool)}


class XQuADTask(QATask):
    name = "xquad"
    metric_name = "squad"

    def _records(self, lang: str) -> list[dict]:
        s = self.settings
        if s.source == "hub":
            return list(_read_hub("google/xquad", f"xquad.{lang}"))
        path = data_root(s.source, s.root) / "xquad" / f"xquad.{lang}.json"
        return list(self.read_file(path, _read_local))

    def language_records(self, lang: str) -> list[dict]:
        return with_groups(self._records(lang), lang)

    def source_pool(self) -> list[dict]:
        pool = squad_source_pool(
            self.settings, lambda: {r["id"] for r in self._records("en")}, self.read_file
        )
        self.source_record = source_pool_record(self.settings, pool)
        return pool

    def extra_metrics(self, per_language: dict[str, dict]) -> dict[str, Any]:
        """What metrics.json adds: the source pool's protocol, when this run read it."""
        record = getattr(self, "source_record", None)
        return {"protocol": record} if record else {}
