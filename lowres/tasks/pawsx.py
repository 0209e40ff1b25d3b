"""PAWS-X: paraphrase identification (sentence pairs, labels 0/1) in 7 languages.

Data, for ``task.split`` = dev | test (the split that is pooled and evaluated):

* **hub**: ``google-research-datasets/paws-x``, config = language, split ``validation``
  (dev) or ``test``; the source pool is the ``train`` split.
* **local** (under ``data.root`` or ``data.root/pawsx``), three layouts, tried in this order:

  1. ``official/XX/{dev_2k,test_2k}.tsv`` — the official release, header and ids;
  2. ``x-final/XX/{dev_2k,test_2k}.tsv`` — the same files under the release tarball's name;
  3. ``xtreme-dev/{dev,test}-XX.tsv`` — XTREME's reformat: no header, no id; a row's id is
     its line index, which lines up across languages because rows are translations in order.

  One layout serves the whole run: the first one that holds the split's file for the source
  language and every eval language. Mixing layouts is refused because their ids differ
  (official ids are PAWS row numbers, XTREME ids are line indices), and ids link translations.
* **sample**: the shipped first 200 rows of each XTREME dev file.

**Source pool.** The source language's training file in the chosen layout (``XX/train.tsv``,
else ``XX/translated_train.tsv``; XTREME: ``train-XX.tsv``), or the hub's ``train`` split. Its
ids are prefixed ``train-`` because the release numbers each split's rows separately, so a
training row's id never looks like an evaluation row's. Without a training file (the XTREME
dev copy, the sample) the source pool is the source language's rows of the evaluated split
that fall in the target pool: their translations share their id, hence their group, so no
translation of a training row is ever evaluated.

``NS`` rows (failed translations) are dropped; ``skipped`` counts them per file read, keyed
``"{split}-{lang}"`` (``"train-en"`` for a training file), for metrics.json.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from lowres.data import pawsx_format
from lowres.data.hub import load_hub_split
from lowres.data.roots import data_root
from lowres.errors import ConfigError, LowresError
from lowres.tasks.pairs import PairClassificationTask

PAWSX_LANGUAGES = ("en", "de", "es", "fr", "ja", "ko", "zh")
PAWSX_SPLITS = ("dev", "test")
HUB_REPO = "google-research-datasets/paws-x"
HUB_SPLITS = {"dev": "validation", "test": "test", "train": "train"}
LAYOUTS = ("official", "x-final", "xtreme-dev")


def layout_file(base: Path, layout: str, split: str, lang: str) -> Path:
    """Where ``layout`` keeps ``split`` (dev | test) of ``lang`` under the pawsx folder ``base``."""
    if layout == "xtreme-dev":
        return base / layout / f"{split}-{lang}.tsv"
    return base / layout / lang / f"{split}_2k.tsv"


def train_files(base: Path, layout: str, lang: str) -> list[Path]:
    """Candidate training files of ``lang`` in ``layout``, in order of preference."""
    if layout == "xtreme-dev":
        return [base / layout / f"train-{lang}.tsv"]
    return [base / layout / lang / "train.tsv", base / layout / lang / "translated_train.tsv"]


def pawsx_base(root: Path) -> Path:
    """The folder holding the layouts: ``root/pawsx``, or ``root`` itself."""
    for candidate in (root / "pawsx", root):
        if any((candidate / layout).is_dir() for layout in LAYOUTS):
            return candidate
    return root / "pawsx"


@functools.lru_cache(maxsize=64)
def _read_local(path: str) -> tuple[tuple[dict, ...], int]:
    rows, skipped = pawsx_format.read_pawsx_tsv(path)
    return tuple(rows), skipped


@functools.lru_cache(maxsize=64)
def _read_hub(lang: str, split: str) -> tuple[tuple[dict, ...], int]:
    rows, skipped = pawsx_format.records_from_hub(load_hub_split(HUB_REPO, lang, split))
    return tuple(rows), skipped


class PAWSXTask(PairClassificationTask):
    name = "pawsx"

    def __init__(self, settings, **params: Any) -> None:
        super().__init__(settings, **params)
        self.data_split = params.get("split", "dev")
        if self.data_split not in PAWSX_SPLITS:
            raise ConfigError(
                f"task.split={self.data_split!r} is not a PAWS-X evaluation split; expected "
                f"one of {', '.join(PAWSX_SPLITS)} (train is the source pool)."
            )
        self.skipped: dict[str, int] = {}
        self._layout: str | None = None
        self._passed_over: dict[str, list[str]] = {}

    # -- files ---------------------------------------------------------------------------
    def _base(self) -> Path:
        return pawsx_base(data_root(self.settings.source, self.settings.root))

    def layout(self) -> str:
        """The local layout this run reads (see the module doc for the order)."""
        if self._layout is None:
            base = self._base()
            s = self.settings
            languages = list(dict.fromkeys([s.source_language, *s.eval_languages]))
            missing: dict[str, list[Path]] = {}
            for layout in LAYOUTS:
                files = [layout_file(base, layout, self.data_split, lang) for lang in languages]
                missing[layout] = [f for f in files if not f.is_file()]
                if not missing[layout]:
                    self._layout = layout
                    self._passed_over = {
                        name: [str(f) for f in files]
                        for name, files in missing.items()
                        if name != layout and len(files) < len(languages)
                    }
                    break
            else:
                looked = "; ".join(
                    f"{layout}: missing {', '.join(str(f) for f in files)}"
                    for layout, files in missing.items()
                )
                raise LowresError(
                    f"No PAWS-X {self.data_split} files for {', '.join(languages)} in one "
                    f"layout under {base} ({looked}). Expected one of "
                    f"{base}/official/XX/{self.data_split}_2k.tsv, "
                    f"{base}/x-final/XX/{self.data_split}_2k.tsv or "
                    f"{base}/xtreme-dev/{self.data_split}-XX.tsv holding every language of the "
                    "run; point data.root at that folder, change data.eval_languages or "
                    "task.split, or use data.source=hub."
                )
        return self._layout

    def _rows(self, lang: str, split: str) -> list[dict]:
        """Rows of ``split`` (dev | test | train) of ``lang``; counts NS rows in ``skipped``."""
        if self.settings.source == "hub":
            rows, skipped = _read_hub(lang, HUB_SPLITS[split])
        else:
            if split == "train":
                path = self._train_file(lang)
                if path is None:
                    return []
            else:
                path = layout_file(self._base(), self.layout(), split, lang)
                if not path.is_file():
                    raise LowresError(
                        f"PAWS-X file {path} is missing; this run reads the {self.layout()} "
                        f"layout, which has no {split} file for {lang!r}. Add the file, or "
                        "drop that language."
                    )
            rows, skipped = self.read_file(path, _read_local)
        self.skipped[f"{split}-{lang}"] = skipped
        return list(rows)

    def _train_file(self, lang: str) -> Path | None:
        for path in train_files(self._base(), self.layout(), lang):
            if path.is_file():
                return path
        return None

    def data_record(self) -> dict[str, Any]:
        """Also the layout read, and the preferred layouts passed over for want of a file:
        a root with both the official zh files and the XTREME copy reads the XTREME one."""
        record = super().data_record()
        if self.settings.source != "hub" and self._layout is not None:
            record["pawsx_layout"] = self._layout
            record["layouts_passed_over"] = self._passed_over
        return record

    # -- Task ----------------------------------------------------------------------------
    def language_records(self, lang: str) -> list[dict]:
        if lang not in PAWSX_LANGUAGES:
            raise ConfigError(
                f"Language {lang!r} is not in PAWS-X; it has {', '.join(PAWSX_LANGUAGES)}."
            )
        return [
            {**r, "language": lang, "group": r["id"]} for r in self._rows(lang, self.data_split)
        ]

    def source_pool(self) -> list[dict]:
        s = self.settings
        lang = s.source_language
        train = self._rows(lang, "train")
        if train:
            return [
                {**r, "id": f"train-{r['id']}", "language": lang, "group": f"train-{r['id']}"}
                for r in train
            ]
        if s.pool_fraction <= 0:
            raise ConfigError(
                f"PAWS-X has no training file for {lang!r} here (no train.tsv or "
                "translated_train.tsv in the data layout, or data.source=sample), so the source "
                f"pool is the {lang} rows of the target pool, and data.pool_fraction=0 leaves "
                "none. Set data.pool_fraction (e.g. 0.2), add the official train file, or use "
                "data.source=hub."
            )
        return self.target_pool(lang)

    def extra_metrics(self, per_language: dict[str, dict]) -> dict[str, Any]:
        """What metrics.json adds to the scores: NS rows dropped per file read."""
        return {"skipped_ns": dict(self.skipped)}
