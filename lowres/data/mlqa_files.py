"""Locate MLQA's per-language-pair files in a local copy of the MLQA_V1 release.

MLQA ships one SQuAD-format file per split and (context language, question language) pair:
``MLQA_V1/{split}/{split}-context-XX-question-YY.json``. In the dev files a pair's question ids
are exactly the ids its context language and its question language share, so ids link the
translations of a question across files.
"""

from __future__ import annotations

import re
from pathlib import Path

from lowres.errors import ConfigError, LowresError

MLQA_LANGUAGES = ("en", "de", "es", "ar", "hi", "vi", "zh")
MLQA_SPLITS = ("dev", "test")
_LAYOUT = "<root>/mlqa/MLQA_V1/{split}/{split}-context-XX-question-YY.json"


def mlqa_file(root: str | Path, split: str, context_lang: str, question_lang: str) -> Path:
    """Path of the MLQA file for ``split`` and a context/question language pair."""
    for role, lang in (("context", context_lang), ("question", question_lang)):
        if lang not in MLQA_LANGUAGES:
            raise ConfigError(
                f"Unknown MLQA {role} language {lang!r}. Expected one of "
                f"{', '.join(MLQA_LANGUAGES)}; set the {role} language to one of these codes."
            )
    base = _mlqa_base(root, split)
    path = base / split / f"{split}-context-{context_lang}-question-{question_lang}.json"
    if not path.is_file():
        splits = sorted(d.name for d in base.iterdir() if d.is_dir())
        pairs = available_pairs(root, split)
        found = (
            f"that folder holds {len(pairs)} pair(s): " + ", ".join(f"{c}-{q}" for c, q in pairs)
            if pairs
            else f"there is no {split} file there"
        )
        raise LowresError(
            f"MLQA file {path} does not exist ({found}; splits present in {base}: "
            f"{', '.join(splits) or 'none'}). Expected the layout {_LAYOUT}; download the full "
            f"MLQA_V1 release or choose an available pair."
        )
    return path


def available_pairs(root: str | Path, split: str) -> list[tuple[str, str]]:
    """``(context_lang, question_lang)`` pairs that have a file for ``split`` under ``root``."""
    folder = _mlqa_base(root, split) / split
    if not folder.is_dir():
        return []
    pattern = re.compile(rf"{re.escape(split)}-context-(\w+)-question-(\w+)\.json")
    pairs = []
    for path in folder.iterdir():
        match = pattern.fullmatch(path.name)
        if match and set(match.groups()) <= set(MLQA_LANGUAGES):
            pairs.append((match[1], match[2]))
    order = MLQA_LANGUAGES.index
    return sorted(pairs, key=lambda pair: (order(pair[0]), order(pair[1])))


def _mlqa_base(root: str | Path, split: str) -> Path:
    if split not in MLQA_SPLITS:
        raise ConfigError(
            f"Unknown MLQA split {split!r}. Expected one of {', '.join(MLQA_SPLITS)} (the "
            f"release's folder names; the Hub calls dev 'validation'); set the split to one of "
            f"these."
        )
    root = Path(root)
    # Users point data.root at the shared data folder, at .../mlqa, or at MLQA_V1 itself.
    candidates = [root / "mlqa" / "MLQA_V1", root / "MLQA_V1", root]
    for candidate in candidates:
        if candidate.name == "MLQA_V1" and candidate.is_dir():
            return candidate
    raise LowresError(
        f"No MLQA_V1 folder found for data.root={root} (looked in "
        f"{', '.join(str(c) for c in candidates)}). Expected the layout {_LAYOUT}; point "
        f"data.root at the folder that holds mlqa/MLQA_V1, or download MLQA_V1 there."
    )
