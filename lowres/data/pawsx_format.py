"""PAWS-X TSV files (official release and XTREME reformat) into labelled sentence pairs.

Two layouts exist: the official one (header ``id sentence1 sentence2 label``) and XTREME's (no
header, no id, CRLF, fields CSV-quoted when they contain ``"``). Both are read with the csv
module, because a naive split on tabs would keep the CSV quotes and doubled inner quotes.
Pairs whose translation failed hold the placeholder ``NS`` and are dropped and counted; in the
XTREME dev files they all carry label 0 whatever the English label was.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from lowres.errors import DataFormatError, LowresError
from lowres.files import not_utf8_error

HEADER = ["id", "sentence1", "sentence2", "label"]
NOT_TRANSLATED = "NS"
_LAYOUTS = (
    "either the official layout (header 'id<TAB>sentence1<TAB>sentence2<TAB>label') or the "
    "XTREME layout (no header, 'sentence1<TAB>sentence2<TAB>label')"
)


def read_pawsx_tsv(path: str | Path) -> tuple[list[dict], int]:
    """Read a PAWS-X TSV file; return ``(rows, skipped_ns)``.

    Without an id column, a row's id is its 0-based index among the file's data rows, counted
    before ``NS`` rows are dropped, so ids are the same in every language of a parallel file.
    """
    path = Path(path)
    if not path.is_file():
        raise LowresError(
            f"PAWS-X file {path} does not exist. Expected a TSV file in {_LAYOUTS}; check the "
            f"path (or data.root) points at the downloaded file."
        )
    rows: list[dict] = []
    skipped = 0
    seen: dict[str, int] = {}
    # utf-8-sig drops a byte-order mark that would otherwise glue itself to the header's "id".
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", strict=True)
        has_header: bool | None = None
        index = 0  # data rows seen, NS included; it is the id in the XTREME layout
        try:
            for fields in reader:
                line = reader.line_num
                if not fields:
                    continue
                if has_header is None:
                    has_header = _is_header(fields)
                    if has_header:
                        if fields != HEADER:
                            raise DataFormatError(
                                f"{path}, line {line}: the header is {fields}, expected exactly "
                                f"{HEADER} (tab-separated). Fix the header, or remove it if the "
                                f"file is in the XTREME layout."
                            )
                        continue
                row = _parse_row(path, line, fields, has_header, index)
                index += 1
                if row["id"] in seen:
                    raise DataFormatError(
                        f"{path}, line {line}: id {row['id']!r} was already used on line "
                        f"{seen[row['id']]}. Expected unique ids (they keep few-shot pools and "
                        f"evaluation rows disjoint); remove or renumber the duplicate."
                    )
                seen[row["id"]] = line
                if NOT_TRANSLATED in (row["sentence1"], row["sentence2"]):
                    skipped += 1
                    continue
                rows.append(row)
        except UnicodeDecodeError:
            raise not_utf8_error(path, _LAYOUTS, "re-download the file.") from None
        except csv.Error as exc:
            raise DataFormatError(
                f"{path}, line {reader.line_num}: the TSV quoting is broken ({exc}). Expected "
                f"{_LAYOUTS}, with a field that contains a double quote wrapped in quotes and "
                f'its quotes doubled (""); fix the quoting on that line.'
            ) from exc
    if index == 0:
        what = "has a header but no rows" if has_header else "is empty"
        raise DataFormatError(
            f"{path} {what}. Expected a TSV file in {_LAYOUTS} with one sentence pair per "
            f"line; re-download the file."
        )
    return rows, skipped


def records_from_hub(dataset: Any) -> tuple[list[dict], int]:
    """Convert a Hub paws-x ``datasets.Dataset`` (id, sentence1, sentence2, label) to rows."""
    missing = set(HEADER) - set(dataset.column_names)
    if missing:
        raise DataFormatError(
            f"Hub dataset {getattr(dataset.info, 'dataset_name', None)!r} lacks the column(s) "
            f"{sorted(missing)} (it has {dataset.column_names}). Expected the paws-x layout "
            f"{HEADER}; pick the paws-x dataset or a config with that layout."
        )
    rows: list[dict] = []
    skipped = 0
    for position, item in enumerate(dataset):
        label = _label(str(item["label"]))
        if label is None:
            raise DataFormatError(
                f"Hub dataset {getattr(dataset.info, 'dataset_name', None)!r}, row {position} "
                f"(id {item['id']!r}): label {item['label']!r} is not 0 or 1. Expected binary "
                f"paraphrase labels; test splits with hidden labels cannot be used here."
            )
        if NOT_TRANSLATED in (item["sentence1"], item["sentence2"]):
            skipped += 1
            continue
        rows.append(
            {
                "id": str(item["id"]),
                "sentence1": item["sentence1"],
                "sentence2": item["sentence2"],
                "label": label,
            }
        )
    return rows, skipped


def _is_header(fields: list[str]) -> bool:
    # A header is recognised by its column names, so a mangled one is reported, not read as data.
    names = {field.strip().lower() for field in fields}
    return bool(names & {"id", "sentence1", "sentence2", "label"})


def _parse_row(path: Path, line: int, fields: list[str], has_header: bool, index: int) -> dict:
    expected = HEADER if has_header else HEADER[1:]
    if len(fields) != len(expected):
        problem = "is missing" if len(fields) < len(expected) else "has extra"
        raise DataFormatError(
            f"{path}, line {line}: the row {problem} columns ({len(fields)} tab-separated "
            f"fields, expected {len(expected)}: {', '.join(expected)}). Expected {_LAYOUTS}; a "
            f"sentence containing a tab must be wrapped in double quotes."
        )
    values = dict(zip(expected, fields, strict=True))
    label = _label(values["label"])
    if label is None:
        raise DataFormatError(
            f"{path}, line {line}: label {values['label']!r} is not 0 or 1. Expected a binary "
            f"paraphrase label in the last column; fix the label or the column order."
        )
    for key in ("sentence1", "sentence2"):
        if not values[key].strip():
            raise DataFormatError(
                f"{path}, line {line}: {key} is empty. Expected a sentence in every pair "
                f"(untranslated pairs are marked {NOT_TRANSLATED!r}); fix or drop that line."
            )
    row_id = values["id"].strip() if has_header else str(index)
    if not row_id:
        raise DataFormatError(
            f"{path}, line {line}: the id column is empty. Expected a unique id per row in the "
            f"official layout; fill it in, or drop the header and id column (XTREME layout)."
        )
    return {
        "id": row_id,
        "sentence1": values["sentence1"],
        "sentence2": values["sentence2"],
        "label": label,
    }


def _label(value: str) -> int | None:
    value = value.strip()
    return int(value) if value in ("0", "1") else None
