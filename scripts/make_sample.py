"""Build the small real data sample shipped in lowres/resources/sample.

    python scripts/make_sample.py --data ../shared/data

XQuAD: the first ARTICLES articles in all 11 languages (same question ids in each).
SQuAD v1.1 dev: POOL questions from articles outside that sample whose ids are not in XQuAD,
so the English training pool never holds an evaluation question. Licences: CC BY-SA 4.0.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ARTICLES = 3
POOL = 256
LANGS = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("lowres/resources/sample"))
    args = parser.parse_args()

    (args.out / "xquad").mkdir(parents=True, exist_ok=True)
    xquad_ids: set[str] = set()
    for lang in LANGS:
        data = json.loads((args.data / "xquad" / f"xquad.{lang}.json").read_text("utf-8"))
        for article in data["data"]:
            for paragraph in article["paragraphs"]:
                xquad_ids.update(q["id"] for q in paragraph["qas"])
        sample = {"version": data.get("version", "1.1"), "data": data["data"][:ARTICLES]}
        (args.out / "xquad" / f"xquad.{lang}.json").write_text(
            json.dumps(sample, ensure_ascii=False), "utf-8"
        )
    sampled_titles = {a["title"] for a in sample["data"]}

    squad = json.loads((args.data / "squad" / "dev-v1.1.json").read_text("utf-8"))
    kept, count = [], 0
    for article in squad["data"]:
        if article["title"] in sampled_titles or count >= POOL:
            continue
        paragraphs = []
        for paragraph in article["paragraphs"]:
            qas = [q for q in paragraph["qas"] if q["id"] not in xquad_ids][: POOL - count]
            if qas:
                paragraphs.append({"context": paragraph["context"], "qas": qas})
                count += len(qas)
            if count >= POOL:
                break
        if paragraphs:
            kept.append({"title": article["title"], "paragraphs": paragraphs})
    (args.out / "squad").mkdir(parents=True, exist_ok=True)
    (args.out / "squad" / "dev-v1.1.json").write_text(
        json.dumps({"version": "1.1", "data": kept}, ensure_ascii=False), "utf-8"
    )
    print(f"xquad: {ARTICLES} articles x {len(LANGS)} languages; squad pool: {count} questions")


if __name__ == "__main__":
    main()
