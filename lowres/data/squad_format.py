"""SQuAD v1.1 JSON (XQuAD, MLQA, SQuAD dev) into flat records in the Hub's ``squad`` layout.

A record is ``{"id", "title", "context", "question", "answers": {"text": [...],
"answer_start": [...]}}``. Every shipped file (XQuAD x 11, the 49 MLQA dev files, SQuAD dev)
passes span validation, so validation is on by default and a failure means a damaged or
hand-edited file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lowres.errors import DataFormatError, LowresError
from lowres.files import read_json

_LAYOUT = 'a SQuAD v1.1 document {"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}'


def read_squad_json(
    path: str | Path, *, validate_spans: bool = True, unique_ids: bool = False
) -> list[dict]:
    """Read a SQuAD v1.1 JSON file into flat records, one per question, in file order.

    A question id seen before is refused, unless ``unique_ids``: then its n-th repeat gets
    the id ``ID~n`` (TyDiQA-GoldP's release repeats ids). A file in which no question has a
    gold answer is refused as unlabeled (a test file with the answers withheld).
    """
    path = Path(path)
    doc = _read_document(path)
    reading = _Reading(path, validate_spans, unique_ids)
    for a, article in enumerate(doc["data"]):
        where = f"data[{a}]"
        _require(path, where, article, "paragraphs", list)
        # Titles are metadata only, so a file without them is still usable.
        title = article.get("title", "")
        if not isinstance(title, str):
            _wrong_type(path, where, "title", "a string", title)
        for p, paragraph in enumerate(article["paragraphs"]):
            reading.paragraph(f"data[{a}].paragraphs[{p}]", paragraph, title)
    _check_labelled(path, doc, reading)
    return reading.records


def _read_document(path: Path) -> dict:
    if not path.is_file():
        raise LowresError(
            f"SQuAD-format file {path} does not exist. Expected {_LAYOUT}; check the path "
            f"(or data.root) points at the downloaded file."
        )
    doc = read_json(path, _LAYOUT, "re-download or re-copy the file.")

    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise DataFormatError(
            f'{path} has no top-level "data" list. Expected {_LAYOUT}; this may be another '
            f"format (e.g. JSON lines or the Hub's flat layout); convert it to SQuAD v1.1."
        )
    return doc


class _Reading:
    """The records of one file as its paragraphs are read, with the ids seen so far."""

    def __init__(self, path: Path, validate_spans: bool, unique_ids: bool) -> None:
        self.path, self.validate_spans, self.unique_ids = path, validate_spans, unique_ids
        self.records: list[dict] = []
        self.seen: dict[str, str] = {}
        self.repeats: dict[str, int] = {}
        self.unanswered: list[str] = []  # where questions without a gold answer are
        # questions whose answers are present but every text is "" (XTREME's copies)
        self.blanked = 0

    def paragraph(self, where: str, paragraph: Any, title: str) -> None:
        path = self.path
        _require(path, where, paragraph, "context", str)
        _require(path, where, paragraph, "qas", list)
        context = paragraph["context"]
        for q, qa in enumerate(paragraph["qas"]):
            loc = f"{where}.qas[{q}]"
            qid = self._unique_id(loc, _question_id(path, loc, qa))
            where_qa = f"{loc} (question id {qid!r})"
            _require(path, where_qa, qa, "question", str)
            answers = _answers(path, where_qa, qa, context, self.validate_spans)
            if not any(answers["text"]):
                self.unanswered.append(where_qa)
                self.blanked += bool(answers["text"])
            self.records.append(
                {
                    "id": qid,
                    "title": title,
                    "context": context,
                    "question": qa["question"],
                    "answers": answers,
                }
            )

    def _unique_id(self, loc: str, qid: str) -> str:
        if qid in self.seen and self.unique_ids:
            self.repeats[qid] = self.repeats.get(qid, 1) + 1
            qid = f"{qid}~{self.repeats[qid]}"
        if qid in self.seen:
            raise DataFormatError(
                f"{self.path}: question id {qid!r} appears twice, at {self.seen[qid]} and at "
                f"{loc}. Expected every question id to be unique (ids link "
                f"translations and keep training and evaluation rows disjoint); remove "
                f"or rename the duplicate, or, for a task read by file pattern "
                f"(task.reader=squad_files), set task.unique_ids=true to number the "
                f"repeats ({qid}~2, {qid}~3, ...)."
            )
        self.seen[qid] = loc
        return qid


def _check_labelled(path: Path, doc: dict, reading: _Reading) -> None:
    records, unanswered = reading.records, reading.unanswered
    if not records:
        # Said here, by name: later steps would only see an empty pool or evaluation set.
        where = "its data list is empty" if not doc["data"] else "no article has a question"
        raise DataFormatError(
            f"{path} holds no questions ({where}). Expected {_LAYOUT} with at least one "
            f"question; re-download or re-copy the file."
        )
    if reading.blanked == len(records):
        raise DataFormatError(
            f"{path} has its answers blanked: each of its {len(records)} questions has answer "
            f'entries, but every answer text is "". XTREME\'s download script blanks the answers '
            f"of TyDiQA-GoldP dev this way (to hide them), so such a copy cannot be trained or "
            f"scored. Use the release's own files: tydiqa-goldp-v1.1-dev.tgz (and "
            f"tydiqa-goldp-v1.1-train.json) from the TyDiQA release, unpacked under data.root/"
            f"tydiqa/, which the tydiqa preset reads as they are."
        )
    if len(unanswered) == len(records):
        raise DataFormatError(
            f"{path} is unlabeled: none of its {len(records)} questions has a gold answer "
            f"(every 'answers' list is empty or holds only empty texts). Expected {_LAYOUT} "
            f"with the gold answers, which training and scoring need; use the labelled "
            f"release of this file (test files are often published without answers)."
        )
    if unanswered:
        raise DataFormatError(
            f"{path}: {unanswered[0]} has no gold answer ({len(unanswered)} of "
            f"{len(records)} questions have none). Expected at least one non-empty answer per "
            f"question (SQuAD v1.1; unanswerable SQuAD v2 questions are not supported); drop "
            f"those questions or add their answers."
        )


def records_from_hub(dataset: Any) -> list[dict]:
    """Convert a Hub ``datasets.Dataset`` in the ``squad`` layout into the same records."""
    missing = {"id", "context", "question", "answers"} - set(dataset.column_names)
    if missing:
        raise DataFormatError(
            f"Hub dataset {_describe(dataset)} lacks the column(s) {sorted(missing)} (it has "
            f"{dataset.column_names}). Expected the squad layout id, title, context, question, "
            f"answers{{text, answer_start}}; pick a SQuAD-style dataset or config."
        )
    has_title = "title" in dataset.column_names
    return [
        {
            "id": str(row["id"]),
            "title": row["title"] if has_title else "",
            "context": row["context"],
            "question": row["question"],
            "answers": {
                "text": list(row["answers"]["text"]),
                "answer_start": [int(s) for s in row["answers"]["answer_start"]],
            },
        }
        for row in dataset
    ]


def _describe(dataset: Any) -> str:
    info = getattr(dataset, "info", None)
    name = getattr(info, "dataset_name", None) or "<unnamed>"
    config = getattr(info, "config_name", None)
    split = getattr(dataset, "split", None)
    parts = [f"'{name}'"]
    if config:
        parts.append(f"config '{config}'")
    if split:
        parts.append(f"split '{split}'")
    return " ".join(parts)


def _require(path: Path, where: str, obj: Any, key: str, kind: type) -> None:
    if not isinstance(obj, dict):
        raise DataFormatError(
            f"{path}: {where} is a {type(obj).__name__}, expected an object with key "
            f"{key!r}. Expected {_LAYOUT}; fix the file's structure."
        )
    if key not in obj:
        raise DataFormatError(
            f"{path}: {where} has no {key!r} key (it has {sorted(obj)}). Expected {_LAYOUT} "
            f'with answers [{{"text", "answer_start"}}]; add the key or fix the structure.'
        )
    if not isinstance(obj[key], kind) or isinstance(obj[key], bool):
        _wrong_type(path, where, key, f"a {kind.__name__}", obj[key])


def _wrong_type(path: Path, where: str, key: str, expected: str, value: Any) -> None:
    raise DataFormatError(
        f"{path}: {where} has {key!r} = {value!r:.80} of type {type(value).__name__}, expected "
        f"{expected}. Expected {_LAYOUT}; fix that value."
    )


def _question_id(path: Path, where: str, qa: Any) -> str:
    if not isinstance(qa, dict) or "id" not in qa:
        _require(path, where, qa, "id", str)
    qid = qa["id"]
    # Some re-exports write numeric ids; they are still unique keys, so keep them as text.
    if isinstance(qid, int) and not isinstance(qid, bool):
        return str(qid)
    if not isinstance(qid, str) or not qid.strip():
        _wrong_type(path, where, "id", "a non-empty string", qid)
    return qid


def _answers(path: Path, where: str, qa: dict, context: str, validate_spans: bool) -> dict:
    _require(path, where, qa, "answers", list)
    texts: list[str] = []
    starts: list[int] = []
    for k, answer in enumerate(qa["answers"]):
        at = f"{where} answer {k}"
        _require(path, at, answer, "text", str)
        _require(path, at, answer, "answer_start", int)
        text, start = answer["text"], answer["answer_start"]
        if not text:  # a blanked answer (any start): counted, never a span to check
            texts.append(text)
            starts.append(start)
            continue
        if start < 0:
            _wrong_type(path, at, "answer_start", "a non-negative int", start)
        if validate_spans and context[start : start + len(text)] != text:
            found = context[start : start + len(text)]
            elsewhere = context.find(text)
            hint = (
                f"the text does occur at character {elsewhere}, so answer_start is probably off"
                if elsewhere >= 0
                else "the text does not occur in the context at all"
            )
            raise DataFormatError(
                f"{path}: {at} has text {text!r} at answer_start {start}, but the context "
                f"there reads {found!r} ({hint}). Expected context[answer_start:answer_start + "
                f"len(text)] to equal the answer text (training reads the answer at "
                f"answer_start); fix answer_start in the file."
            )
        texts.append(text)
        starts.append(start)
    return {"text": texts, "answer_start": starts}
