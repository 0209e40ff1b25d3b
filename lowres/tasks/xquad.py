"""XQuAD: SQuAD v1.1 translated into 10 languages; English SQuAD trains, every language evaluates.

Files: ``<root>/xquad/xquad.<lang>.json`` and ``<root>/squad/dev-v1.1.json`` (local), or
``google/xquad`` and ``rajpurkar/squad`` (hub). XQuAD's English paragraphs come from SQuAD
v1.1 dev, so the source pool drops every SQuAD question whose id is in XQuAD.
"""

from __future__ import annotations

import functools
from pathlib import Path

from lowres.data import squad_format
from lowres.data.hub import load_hub_split
from lowres.data.roots import data_root
from lowres.errors import LowresError
from lowres.tasks.qa import QATask, with_groups

XQUAD_LANGUAGES = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")


@functools.lru_cache(maxsize=64)
def _read_local(path: str) -> tuple[dict, ...]:
    file = Path(path)
    if not file.is_file():
        raise LowresError(
            f"Data file {file} is missing; expected the official file at that path. Check "
            "data.root and the language codes, or use data.source=hub."
        )
    return tuple(squad_format.read_squad_json(file))


@functools.lru_cache(maxsize=64)
def _read_hub(path: str, name: str | None) -> tuple[dict, ...]:
    return tuple(squad_format.records_from_hub(load_hub_split(path, name, "validation")))


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
        s = self.settings
        if s.source == "hub":
            squad = list(_read_hub("rajpurkar/squad", None))
        else:
            path = data_root(s.source, s.root) / "squad" / "dev-v1.1.json"
            squad = list(self.read_file(path, _read_local))
        held_out = {r["id"] for r in self._records("en")}
        return with_groups([r for r in squad if r["id"] not in held_out], "en")
