"""Data files named by a pattern per split: ``{lang}`` and ``{split}`` placeholders, globs.

Tasks read by file pattern (``task.reader``) name their files in YAML, relative to
``data.root`` (or absolute): ``tydiqa/tydiqa-goldp-v1.1-{split}/tydiqa.goldp.{lang}.{split}.json``.
A pattern may hold glob characters (``*``, ``?``, ``[...]``); every file it matches is read,
in sorted order.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path


def _full(root: Path, pattern: str) -> str:
    path = Path(pattern).expanduser()
    return str(path if path.is_absolute() else root / path)


def find_files(root: Path, pattern: str, *, lang: str, split: str) -> list[Path]:
    """The files ``pattern`` names for ``lang`` and ``split``, sorted; empty if none."""
    full = _full(root, pattern).replace("{lang}", lang).replace("{split}", split)
    return sorted(Path(p) for p in glob.glob(full) if Path(p).is_file())


def languages_with_files(root: Path, pattern: str, split: str) -> list[str]:
    """Every language code for which ``pattern`` matches a file under ``root``, sorted."""
    full = _full(root, pattern).replace("{split}", split)
    if "{lang}" not in full:
        return []
    wildcard = glob.glob(full.replace("{lang}", "*"))
    # The language is what stands where {lang} stands; the rest of the pattern must match.
    before, _, after = full.partition("{lang}")
    shape = re.compile(
        _glob_regex(before) + r"(?P<lang>[^/\\]+?)" + _glob_regex(after.replace("{lang}", "*"))
    )
    found = {m["lang"] for p in wildcard if (m := shape.fullmatch(p))}
    return sorted(found)


def _glob_regex(text: str) -> str:
    out = []
    for char in text:
        out.append({"*": r"[^/\\]*", "?": r"[^/\\]"}.get(char, re.escape(char)))
    return "".join(out)
