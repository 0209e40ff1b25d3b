"""Readers for the SQuAD-format, PAWS-X and MLQA files: real data facts and bad-input errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lowres.data import hub
from lowres.data.mlqa_files import MLQA_LANGUAGES, available_pairs, mlqa_file
from lowres.data.pawsx_format import read_pawsx_tsv
from lowres.data.pawsx_format import records_from_hub as pawsx_from_hub
from lowres.data.squad_format import read_squad_json
from lowres.data.squad_format import records_from_hub as squad_from_hub
from lowres.errors import ConfigError, DataFormatError, HubError, LowresError

XQUAD_LANGUAGES = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")


PAWSX_LANGUAGES = ("en", "de", "es", "fr", "ja", "ko", "zh")


MLQA_DEV_COUNTS = {"en": 1148, "de": 512, "es": 500, "ar": 517, "hi": 507, "vi": 511, "zh": 504}


# Untranslated ("NS") pairs per XTREME dev file; English is the source and has none.
PAWSX_DEV_NS = {"en": 0, "de": 68, "es": 38, "fr": 8, "ja": 20, "ko": 35, "zh": 16}


@pytest.fixture(scope="module")
def xquad(shared_data: Path) -> dict[str, list[dict]]:
    return {
        lang: read_squad_json(shared_data / f"xquad/xquad.{lang}.json") for lang in XQUAD_LANGUAGES
    }


@pytest.fixture(scope="module")
def mlqa_dev(shared_data: Path) -> dict[tuple[str, str], dict[str, dict]]:
    return {
        (c, q): {r["id"]: r for r in read_squad_json(mlqa_file(shared_data, "dev", c, q))}
        for c in MLQA_LANGUAGES
        for q in MLQA_LANGUAGES
    }


@pytest.fixture(scope="module")
def pawsx_dev(shared_data: Path) -> dict[str, tuple[list[dict], int]]:
    return {
        lang: read_pawsx_tsv(shared_data / f"pawsx/xtreme-dev/dev-{lang}.tsv")
        for lang in PAWSX_LANGUAGES
    }


def _squad_doc(*qas: dict, context: str = "Paris is the capital of France.") -> dict:
    return {
        "version": "1.1",
        "data": [{"title": "T", "paragraphs": [{"context": context, "qas": list(qas)}]}],
    }


def _qa(qid: str = "q1", text: str = "Paris", start: int = 0) -> dict:
    return {"id": qid, "question": "Capital?", "answers": [{"text": text, "answer_start": start}]}


def _write_json(tmp_path: Path, doc: object, name: str = "mini.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def _write_tsv(tmp_path: Path, text: str, name: str = "mini.tsv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    datasets = pytest.importorskip("datasets")
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Both libraries read the flag and cache folders once at import, so patch the copies too.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    return datasets


def test_xquad_has_1190_parallel_questions_per_language(xquad):
    english_ids = {r["id"] for r in xquad["en"]}
    for lang, records in xquad.items():
        assert len(records) == 1190, lang
        assert {r["id"] for r in records} == english_ids, lang
        assert len({r["context"] for r in records}) == 240, lang
        assert len({r["title"] for r in records}) == 48, lang


def test_xquad_record_layout(xquad):
    record = xquad["de"][0]
    assert set(record) == {"id", "title", "context", "question", "answers"}
    text, start = record["answers"]["text"][0], record["answers"]["answer_start"][0]
    assert record["context"][start : start + len(text)] == text


def test_mlqa_dev_monolingual_counts(mlqa_dev):
    for lang, count in MLQA_DEV_COUNTS.items():
        assert len(mlqa_dev[lang, lang]) == count, lang


def test_mlqa_dev_cross_pairs_are_the_shared_questions(mlqa_dev):
    # True of all 49 files: a pair's ids are exactly the ids both monolingual files share,
    # its contexts/answers come from the context language and its questions from the other.
    for (c, q), records in mlqa_dev.items():
        assert set(records) == set(mlqa_dev[c, c]) & set(mlqa_dev[q, q]), (c, q)
        for qid, record in records.items():
            assert record["context"] == mlqa_dev[c, c][qid]["context"]
            assert record["answers"] == mlqa_dev[c, c][qid]["answers"]
            assert record["question"] == mlqa_dev[q, q][qid]["question"]
    for lang in MLQA_LANGUAGES:
        assert set(mlqa_dev[lang, lang]) <= set(mlqa_dev["en", "en"]), lang
    assert min(len(r) for r in mlqa_dev.values()) >= 161


def test_mlqa_available_pairs_and_root_forms(shared_data):
    pairs = available_pairs(shared_data, "dev")
    assert len(pairs) == 49 and pairs[0] == ("en", "en")
    expected = shared_data / "mlqa/MLQA_V1/dev/dev-context-de-question-en.json"
    for root in (shared_data, shared_data / "mlqa", shared_data / "mlqa/MLQA_V1"):
        assert mlqa_file(root, "dev", "de", "en") == expected


def test_squad_dev_minus_xquad_leaves_9380(shared_data, xquad):
    squad = read_squad_json(shared_data / "squad/dev-v1.1.json")
    assert len(squad) == 10570
    xquad_ids = {r["id"] for r in xquad["en"]}
    assert xquad_ids <= {r["id"] for r in squad}
    assert len([r for r in squad if r["id"] not in xquad_ids]) == 9380
    assert max(len(r["answers"]["text"]) for r in squad) > 1


def test_pawsx_xtreme_dev_rows_and_ns(pawsx_dev):
    for lang, (rows, skipped) in pawsx_dev.items():
        assert skipped == PAWSX_DEV_NS[lang], lang
        assert len(rows) + skipped == 2000, lang
        assert all(r["label"] in (0, 1) for r in rows)
        # A doubled quote only survives if the CSV quoting was not decoded.
        assert not any('""' in r["sentence1"] + r["sentence2"] for r in rows), lang


def test_pawsx_xtreme_dev_is_parallel_by_row(pawsx_dev):
    # Same row index = translation of the same English pair. Labels agree on every translated
    # row; the raw files disagree only on NS rows, whose placeholder label is always 0.
    english = {r["id"]: r["label"] for r in pawsx_dev["en"][0]}
    assert list(english) == [str(i) for i in range(2000)]
    for lang, (rows, _) in pawsx_dev.items():
        assert all(english[r["id"]] == r["label"] for r in rows), lang


def test_pawsx_quoted_fields_are_unquoted(pawsx_dev, shared_data):
    # Row 213 is CSV-quoted in the German file; the same row index is the same pair in English.
    german = {r["id"]: r for r in pawsx_dev["de"][0]}["213"]
    english = {r["id"]: r for r in pawsx_dev["en"][0]}["213"]
    assert german["sentence1"].startswith(
        'Am Anfang der Saison gehörte er zu der Allianz der "Moving'
    )
    assert "Moving Company" in english["sentence1"]
    rows, _ = read_pawsx_tsv(shared_data / "pawsx/official/de/test_2k.tsv")
    assert {r["id"]: r for r in rows}["68"]["sentence1"].startswith('"Angel Eyes" ist')


def test_pawsx_official_german_test(shared_data):
    rows, skipped = read_pawsx_tsv(shared_data / "pawsx/official/de/test_2k.tsv")
    assert skipped == 32
    assert len(rows) == 2000 - 32
    assert rows[0]["id"] == "10"
    assert len({r["id"] for r in rows}) == len(rows)


def test_squad_reads_small_file(tmp_path):
    path = _write_json(tmp_path, _squad_doc(_qa("a"), _qa("b", "France", 24)))
    records = read_squad_json(path)
    assert [r["id"] for r in records] == ["a", "b"]
    assert records[1]["answers"] == {"text": ["France"], "answer_start": [24]}
    assert records[0]["title"] == "T"


def test_squad_missing_file(tmp_path):
    with pytest.raises(LowresError, match="nothere.json does not exist"):
        read_squad_json(tmp_path / "nothere.json")


def test_squad_truncated_json(tmp_path):
    path = tmp_path / "cut.json"
    path.write_text(json.dumps(_squad_doc(_qa()))[:60], encoding="utf-8")
    with pytest.raises(DataFormatError) as err:
        read_squad_json(path)
    message = str(err.value)
    assert "cut.json is not valid JSON" in message
    assert "line 1, column" in message and "truncated" in message


def test_squad_not_squad_layout(tmp_path):
    path = _write_json(tmp_path, [{"id": "x"}], "list.json")
    with pytest.raises(DataFormatError, match=r'list.json has no top-level "data" list'):
        read_squad_json(path)


def test_squad_missing_keys_name_the_location(tmp_path):
    doc = _squad_doc(_qa("q1"))
    del doc["data"][0]["paragraphs"][0]["qas"][0]["answers"]
    with pytest.raises(DataFormatError) as err:
        read_squad_json(_write_json(tmp_path, doc))
    message = str(err.value)
    assert "mini.json" in message and "'answers'" in message
    assert "data[0].paragraphs[0].qas[0] (question id 'q1')" in message

    doc = _squad_doc(_qa())
    del doc["data"][0]["paragraphs"][0]["context"]
    with pytest.raises(DataFormatError, match=r"data\[0\]\.paragraphs\[0\] has no 'context' key"):
        read_squad_json(_write_json(tmp_path, doc))


def test_squad_wrong_types(tmp_path):
    doc = _squad_doc(_qa(start="0"))  # type: ignore[arg-type]
    with pytest.raises(DataFormatError, match=r"answer 0 has 'answer_start' = '0' of type str"):
        read_squad_json(_write_json(tmp_path, doc))
    doc = _squad_doc(_qa("q1"), {"id": "q2", "question": "Capital?", "answers": []})
    with pytest.raises(DataFormatError, match=r"question id 'q2'\) has no gold answer \(1 of 2"):
        read_squad_json(_write_json(tmp_path, doc))


def test_squad_file_without_gold_answers_is_refused_as_unlabeled(tmp_path):
    blank = {"text": "", "answer_start": 0}
    doc = _squad_doc(
        {"id": "q1", "question": "Capital?", "answers": []},
        {"id": "q2", "question": "Country?", "answers": [blank]},
    )
    with pytest.raises(DataFormatError, match="is unlabeled: none of its 2 questions"):
        read_squad_json(_write_json(tmp_path, doc))


def test_squad_duplicate_id(tmp_path):
    path = _write_json(tmp_path, _squad_doc(_qa("dup"), _qa("dup")))
    with pytest.raises(DataFormatError) as err:
        read_squad_json(path)
    message = str(err.value)
    assert "mini.json" in message and "'dup' appears twice" in message
    assert "qas[0]" in message and "qas[1]" in message
    assert "task.unique_ids=true" in message


def test_squad_repeated_ids_are_numbered_when_asked(tmp_path):
    path = _write_json(tmp_path, _squad_doc(_qa("dup"), _qa("other"), _qa("dup"), _qa("dup")))
    records = read_squad_json(path, unique_ids=True)
    assert [r["id"] for r in records] == ["dup", "other", "dup~2", "dup~3"]


def test_squad_misaligned_answer_start(tmp_path):
    path = _write_json(tmp_path, _squad_doc(_qa("q7", "France", 20)))
    with pytest.raises(DataFormatError) as err:
        read_squad_json(path)
    message = str(err.value)
    assert "mini.json" in message and "question id 'q7'" in message
    assert "'France' at answer_start 20" in message and "reads ' of Fr'" in message
    assert "occur at character 24" in message
    assert "validate_spans" not in message  # no key sets it; the fix is in the file
    records = read_squad_json(path, validate_spans=False)
    assert records[0]["answers"]["answer_start"] == [20]


def test_squad_records_from_hub():
    datasets = pytest.importorskip("datasets")
    table = datasets.Dataset.from_list(
        [
            {
                "id": 5,
                "title": "T",
                "context": "Paris is nice.",
                "question": "Where?",
                "answers": {"text": ["Paris"], "answer_start": [0]},
            }
        ]
    )
    assert squad_from_hub(table) == [
        {
            "id": "5",
            "title": "T",
            "context": "Paris is nice.",
            "question": "Where?",
            "answers": {"text": ["Paris"], "answer_start": [0]},
        }
    ]
    with pytest.raises(DataFormatError, match="lacks the column"):
        squad_from_hub(datasets.Dataset.from_list([{"id": "1", "text": "x"}]))


def test_pawsx_xtreme_layout_with_quotes_crlf_and_ns(tmp_path):
    text = (
        "A cat .\tThe cat .\t1\r\n"
        '"Er sang ""Angel Eyes"" ."\t"Tab\tinside"\t0\r\n'
        "NS\tSomething .\t0\r\n"
        "Last one .\tFinal .\t0\r\n"
    )
    rows, skipped = read_pawsx_tsv(_write_tsv(tmp_path, text))
    assert skipped == 1
    assert [r["id"] for r in rows] == ["0", "1", "3"]
    assert rows[1]["sentence1"] == 'Er sang "Angel Eyes" .'
    assert rows[1]["sentence2"] == "Tab\tinside"
    assert rows[0] == {"id": "0", "sentence1": "A cat .", "sentence2": "The cat .", "label": 1}


def test_pawsx_official_layout(tmp_path):
    text = "id\tsentence1\tsentence2\tlabel\n7\tA .\tB .\t0\n9\tC .\tNS\t1\n"
    rows, skipped = read_pawsx_tsv(_write_tsv(tmp_path, text))
    assert rows == [{"id": "7", "sentence1": "A .", "sentence2": "B .", "label": 0}]
    assert skipped == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A .\tB .\t1\nC .\t0\n", r"mini.tsv, line 2: the row is missing columns \(2 "),
        ("A .\tB .\t1\nC .\tD .\t0\textra\n", r"mini.tsv, line 2: the row has extra columns \(4 "),
        ("A .\tB .\t2\n", r"mini.tsv, line 1: label '2' is not 0 or 1"),
        ("A .\tB .\tyes\n", r"mini.tsv, line 1: label 'yes' is not 0 or 1"),
        ("A .\tB .\t1\nC .\t \t0\n", r"mini.tsv, line 2: sentence2 is empty"),
        ("id\tsentence_1\tsentence2\tlabel\n1\tA\tB\t0\n", r"mini.tsv, line 1: the header is"),
        (
            "id\tsentence1\tsentence2\tlabel\n1\tA\tB\t0\n1\tC\tD\t1\n",
            r"line 3: id '1' was already",
        ),
        ("id\tsentence1\tsentence2\tlabel\n1\tA\tB\t0\n2\tC\tD\n", r"line 3: the row is missing"),
        ('A .\t"B .\t1\n', r"mini.tsv, line 1: the TSV quoting is broken"),
        ("", r"mini.tsv is empty"),
        ("\n\n", r"mini.tsv is empty"),
        ("id\tsentence1\tsentence2\tlabel\n", r"mini.tsv has a header but no rows"),
    ],
)
def test_pawsx_bad_input(tmp_path, text, expected):
    with pytest.raises(DataFormatError, match=expected):
        read_pawsx_tsv(_write_tsv(tmp_path, text))


def test_pawsx_missing_file(tmp_path):
    with pytest.raises(LowresError, match="dev-xx.tsv does not exist"):
        read_pawsx_tsv(tmp_path / "dev-xx.tsv")


def test_pawsx_records_from_hub():
    datasets = pytest.importorskip("datasets")
    table = datasets.Dataset.from_list(
        [
            {"id": 1, "sentence1": "A", "sentence2": "B", "label": 1},
            {"id": 2, "sentence1": "NS", "sentence2": "C", "label": 0},
        ]
    )
    assert pawsx_from_hub(table) == (
        [{"id": "1", "sentence1": "A", "sentence2": "B", "label": 1}],
        1,
    )
    bad = datasets.Dataset.from_list([{"id": 3, "sentence1": "A", "sentence2": "B", "label": -1}])
    with pytest.raises(DataFormatError, match=r"row 0 \(id 3\): label -1 is not 0 or 1"):
        pawsx_from_hub(bad)


def test_mlqa_unknown_language(tmp_path):
    with pytest.raises(ConfigError) as err:
        mlqa_file(tmp_path, "dev", "en", "fr")
    assert "'fr'" in str(err.value) and "en, de, es, ar, hi, vi, zh" in str(err.value)


def test_mlqa_unknown_split(tmp_path):
    with pytest.raises(ConfigError, match="Unknown MLQA split 'validation'"):
        mlqa_file(tmp_path, "validation", "en", "en")


def test_mlqa_missing_file_lists_what_exists(tmp_path):
    folder = tmp_path / "mlqa/MLQA_V1/dev"
    folder.mkdir(parents=True)
    (folder / "dev-context-en-question-en.json").write_text("{}")
    (folder / "dev-context-de-question-en.json").write_text("{}")
    assert available_pairs(tmp_path, "dev") == [("en", "en"), ("de", "en")]
    assert available_pairs(tmp_path, "test") == []
    with pytest.raises(LowresError) as err:
        mlqa_file(tmp_path, "dev", "en", "de")
    message = str(err.value)
    assert "dev-context-en-question-de.json does not exist" in message
    assert "2 pair(s): en-en, de-en" in message and "splits present" in message and "dev" in message


def test_mlqa_missing_root(tmp_path):
    with pytest.raises(LowresError, match="No MLQA_V1 folder found"):
        mlqa_file(tmp_path, "dev", "en", "en")


def test_hub_offline_raises_hub_error(offline_hub):
    with pytest.raises(HubError) as err:
        hub.load_hub_split("google/xquad", "xquad.de", "validation")
    message = str(err.value)
    assert "'google/xquad'" in message and "'xquad.de'" in message and "'validation'" in message
    assert "data.source=local data.root=" in message and "xquad/xquad.XX.json" in message
    assert "\n" not in message


def test_hub_mlqa_is_read_from_parquet_copy(offline_hub, monkeypatch):
    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return "loaded"

    monkeypatch.setattr(offline_hub, "load_dataset", fake_load_dataset)
    assert hub.load_hub_split("facebook/mlqa", "mlqa.en.de", "validation") == "loaded"
    assert calls == [("google/xtreme", "MLQA.en.de", "validation")]


def test_hub_script_dataset_becomes_hub_error(offline_hub, monkeypatch):
    def refuse_script(path, name=None, split=None):
        raise RuntimeError("Dataset scripts are no longer supported, but found mlqa.py")

    monkeypatch.setattr(offline_hub, "load_dataset", refuse_script)
    with pytest.raises(HubError, match="'facebook/mlqa'.*only as a loading script"):
        hub.load_hub_split("facebook/mlqa", "mlqa-translate-train.de", "train")


@pytest.mark.parametrize(
    ("doc", "why"),
    [({"data": []}, "its data list is empty"), ({"data": [{"paragraphs": []}]}, "no article")],
)
def test_a_squad_file_without_questions_is_named(tmp_path, doc, why):
    """It used to surface later as an empty pool ("lower data.pool_fraction", "the source
    pool is off"), which named neither the file nor the cause."""
    path = _write_json(tmp_path, doc, name="xquad.de.json")
    with pytest.raises(DataFormatError, match=f"xquad.de.json holds no questions \\({why}"):
        read_squad_json(path)


def test_a_byte_order_mark_is_read_like_the_file_without_it(tmp_path):
    plain = _write_json(tmp_path, _squad_doc(_qa()))
    marked = tmp_path / "marked.json"
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    assert read_squad_json(marked) == read_squad_json(plain)


def _random_tsv(tmp_path):
    """A good first row, then 2 MB of random bytes (a 50 MB file behaves the same)."""
    import random

    noise = random.Random(0).randbytes(2_000_000)
    path = tmp_path / "random.tsv"
    path.write_bytes(b"id\tsentence1\tsentence2\tlabel\n1\ta\tb\t0\n\xff" + noise)
    return path


def test_random_bytes_in_a_tsv_name_the_file_byte_and_line(tmp_path):
    from lowres.data.pair_tsv import read_pair_tsv

    path = _random_tsv(tmp_path)
    where = f"{path} is not UTF-8 text (byte 37, line 3, cannot be decoded)"
    with pytest.raises(DataFormatError, match=re.escape(where)):
        read_pawsx_tsv(path)
    with pytest.raises(DataFormatError, match=re.escape(where)):
        read_pair_tsv(path, columns={}, num_labels=2)
