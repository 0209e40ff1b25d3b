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

from lowres.errors import LowresError


def _full(root: Path, pattern: str) -> str:
    path = Path(pattern).expanduser()
    return str(path if path.is_absolute() else root / path)


def match_files(root: Path, pattern: str, *, lang: str, split: str, key: str) -> list[Path]:
    """The files ``pattern`` names for ``lang`` and ``split``; refused, with the fix, if none.

    ``key`` is the config key that holds the pattern (``task.files.dev``), for the message.
    """
    full = _full(root, pattern).replace("{lang}", lang).replace("{split}", split)
    found = sorted(Path(p) for p in glob.glob(full) if Path(p).is_file())
    if found:
        return found
    others = languages_with_files(root, pattern, split)
    have = (
        f"files exist for {', '.join(others)}" if others else "no language has a file there either"
    )
    raise LowresError(
        f"{key}={pattern!r} matches no file for language {lang!r} (looked for {full}; {have})."
        f" Expected the {split} file of {lang} at that path; check data.root, the language "
        f"code and the pattern ({{lang}} and {{split}} are filled in, globs allowed), or drop "
        f"{lang} from data.eval_languages."
    )


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
