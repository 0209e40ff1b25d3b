"""Build the MLQA and PAWS-X parts of the small real sample in lowres/resources/sample.

    python scripts/make_sample_tasks.py --data ../shared/data

MLQA (CC BY-SA 3.0): a few English dev paragraphs and their translations, in the 7 monolingual
(XLT) dev files ``mlqa/MLQA_V1/dev/dev-context-XX-question-XX.json``. Each MLQA question is
translated into only some languages, and a target paragraph can hold questions of several
English paragraphs, so a paragraph is taken with its closure over "shares a question id or a
paragraph": every paragraph of every language linked to it, whole, with all its questions.
English paragraphs are taken in file order, skipping one whose closure adds questions to a
language that already has TARGET, which keeps the languages balanced and the files small.
Rows are copied unmodified; articles keep only the kept paragraphs, in file order.

PAWS-X ("free for any purpose, acknowledgement of Google appreciated"): the first ROWS lines
of each XTREME dev file ``pawsx/xtreme-dev/dev-XX.tsv``, byte for byte (CRLF and CSV quoting
kept), so row ids (the line index) line up across languages as in the full files.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

TARGET = 25
ROWS = 200
MLQA_LANGS = ("en", "de", "es", "ar", "hi", "vi", "zh")
PAWSX_LANGS = ("en", "de", "es", "fr", "ja", "ko", "zh")


def _xlt_path(root: Path, lang: str) -> Path:
    return root / "mlqa" / "MLQA_V1" / "dev" / f"dev-context-{lang}-question-{lang}.json"


def mlqa_sample(data: Path, out: Path) -> dict[str, int]:
    docs = {lang: json.loads(_xlt_path(data, lang).read_text("utf-8")) for lang in MLQA_LANGS}
    # Paragraph keys (lang, article index, paragraph index) and the question ids they hold.
    paragraph_ids: dict[tuple[str, int, int], set[str]] = {}
    by_id: dict[str, set[tuple[str, int, int]]] = {}
    for lang, doc in docs.items():
        for a, article in enumerate(doc["data"]):
            for p, paragraph in enumerate(article["paragraphs"]):
                key = (lang, a, p)
                paragraph_ids[key] = {q["id"] for q in paragraph["qas"]}
                for qid in paragraph_ids[key]:
                    by_id.setdefault(qid, set()).add(key)

    def closure(start: list[tuple[str, int, int]]) -> set[tuple[str, int, int]]:
        found: set[tuple[str, int, int]] = set()
        todo = list(start)
        while todo:
            key = todo.pop()
            if key not in found:
                found.add(key)
                for qid in paragraph_ids[key]:
                    todo.extend(by_id[qid] - found)
        return found

    kept: set[tuple[str, int, int]] = set()
    have = dict.fromkeys(MLQA_LANGS, 0)
    english = [
        ("en", a, p)
        for a, art in enumerate(docs["en"]["data"])
        for p in range(len(art["paragraphs"]))
    ]
    for key in english:
        if min(have.values()) >= TARGET:
            break
        added = closure([key]) - kept
        gain = dict.fromkeys(MLQA_LANGS, 0)
        for lang, a, p in added:
            gain[lang] += len(paragraph_ids[(lang, a, p)])
        if all(have[lang] < TARGET for lang in MLQA_LANGS if gain[lang] and lang != "en"):
            kept |= added
            for lang in MLQA_LANGS:
                have[lang] += gain[lang]
    counts = {}
    folder = out / "mlqa" / "MLQA_V1" / "dev"
    folder.mkdir(parents=True, exist_ok=True)
    for lang, doc in docs.items():
        articles = []
        for a, article in enumerate(doc["data"]):
            paragraphs = [
                par for p, par in enumerate(article["paragraphs"]) if (lang, a, p) in kept
            ]
            if paragraphs:
                articles.append({**article, "paragraphs": paragraphs})
        counts[lang] = sum(len(par["qas"]) for art in articles for par in art["paragraphs"])
        path = folder / _xlt_path(data, lang).name
        path.write_text(
            json.dumps(
                {"version": doc.get("version", "1.0"), "data": articles}, ensure_ascii=False
            ),
            "utf-8",
        )
    shutil.copyfile(data / "mlqa" / "MLQA_V1" / "LICENSE", out / "mlqa" / "MLQA_V1" / "LICENSE")
    return counts


def pawsx_sample(data: Path, out: Path) -> None:
    folder = out / "pawsx" / "xtreme-dev"
    folder.mkdir(parents=True, exist_ok=True)
    for lang in PAWSX_LANGS:
        raw = (data / "pawsx" / "xtreme-dev" / f"dev-{lang}.tsv").read_bytes()
        # keepends: the CRLF line ends stay as they are. No field in these files spans lines.
        lines = raw.splitlines(keepends=True)[:ROWS]
        (folder / f"dev-{lang}.tsv").write_bytes(b"".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("lowres/resources/sample"))
    args = parser.parse_args()
    counts = mlqa_sample(args.data, args.out)
    pawsx_sample(args.data, args.out)
    print("mlqa questions:", ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"pawsx: first {ROWS} rows x {len(PAWSX_LANGS)} languages")


if __name__ == "__main__":
    main()
