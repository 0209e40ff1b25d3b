"""Sentence-pair classification rows from a TSV file with a header, columns named in config.

``columns`` maps the fields lowres needs (``sentence1``, ``sentence2``, ``label``; ``id``
optional) to the file's header names, so any NLI- or paraphrase-style TSV reads without code.
Without an id column a row's id is its 0-based index among the data rows, which lines up
across languages when the files are translations in the same order (as XTREME's are).
Labels are class indices 0..num_labels-1, or, with ``label_names``, the names in class order.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

from lowres.errors import DataFormatError, LowresError
from lowres.files import not_utf8_error

NEEDED = ("sentence1", "sentence2", "label")
DEFAULT_COLUMNS = {"id": "id", "sentence1": "sentence1", "sentence2": "sentence2", "label": "label"}


def read_pair_tsv(
    path: str | Path,
    *,
    columns: Mapping[str, str],
    num_labels: int,
    label_names: Sequence[str] = (),
) -> list[dict]:
    """Rows ``{"id", "sentence1", "sentence2", "label"}`` of a headed TSV file, in file order."""
    path = Path(path)
    if not path.is_file():
        raise LowresError(f"TSV file {path} does not exist; check data.root and task.files.")
    names = {**DEFAULT_COLUMNS, **dict(columns)}
    rows: list[dict] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", strict=True)
        try:
            header = next((row for row in reader if row), None)  # blank lines skipped
            if header is None:
                raise DataFormatError(
                    f"{path} is empty. Expected a TSV file with a header row naming the columns "
                    f"{', '.join(names[n] for n in NEEDED)}; re-download the file."
                )
            missing = [n for n in NEEDED if names[n] not in header]
            if missing:
                wanted = ", ".join(f"{n} -> {names[n]!r}" for n in missing)
                raise DataFormatError(
                    f"{path} has no column for {wanted}: its header is {header}. Expected a "
                    f"tab-separated header naming the configured columns; point "
                    f"task.columns.{missing[0]} at the header name that holds it (e.g. "
                    f"task.columns.{missing[0]}={header[0]}), or fix the header."
                )
            index = {n: header.index(names[n]) for n in NEEDED}
            id_column = header.index(names["id"]) if names["id"] in header else None
            for number, fields in enumerate(reader):
                line = reader.line_num
                if not fields:
                    continue
                if len(fields) != len(header):
                    raise DataFormatError(
                        f"{path}, line {line}: {len(fields)} tab-separated fields, but the header "
                        f"has {len(header)} ({', '.join(header)}). Expected one field per column; "
                        f"a field containing a tab must be wrapped in double quotes."
                    )
                row_id = fields[id_column].strip() if id_column is not None else str(number)
                if row_id in seen:
                    raise DataFormatError(
                        f"{path}, line {line}: id {row_id!r} was already used on line "
                        f"{seen[row_id]}. Expected unique ids (they keep few-shot pools and "
                        f"evaluation rows disjoint); fix the id column, or drop "
                        f"task.columns.id so that row numbers become the ids."
                    )
                seen[row_id] = line
                label = _label(path, line, fields[index["label"]], num_labels, label_names)
                rows.append(
                    {
                        "id": row_id,
                        "sentence1": fields[index["sentence1"]],
                        "sentence2": fields[index["sentence2"]],
                        "label": label,
                    }
                )
        except UnicodeDecodeError:
            expected = f"a TSV file with a header naming {', '.join(names[n] for n in NEEDED)}"
            raise not_utf8_error(path, expected, "re-download the file.") from None
        except csv.Error as exc:
            raise DataFormatError(
                f"{path}, line {reader.line_num}: the TSV quoting is broken ({exc}). Expected a "
                f'field that contains a double quote wrapped in quotes, its quotes doubled ("");'
                f" fix the quoting on that line."
            ) from exc
    if not rows:
        raise DataFormatError(
            f"{path} has a header but no rows. Expected one sentence pair per line; "
            f"re-download the file."
        )
    return rows


def _label(path: Path, line: int, value: str, num_labels: int, names: Sequence[str]) -> int:
    value = value.strip()
    if names:
        if value in names:
            return list(names).index(value)
        expected = f"one of the names in task.label_names ({', '.join(names)})"
    else:
        if value.isdigit() and int(value) < num_labels:
            return int(value)
        expected = f"a class index 0..{num_labels - 1} (task.num_labels={num_labels})"
    raise DataFormatError(
        f"{path}, line {line}: label {value!r} is not {expected}. Fix the label, or set "
        f"task.label_names to the file's label values in class order (e.g. "
        f"task.label_names=[entailment,neutral,contradiction])."
    )
