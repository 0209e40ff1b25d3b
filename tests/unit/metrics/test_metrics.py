"""QA metrics match the official SQuAD v1.1 / MLQA v1 scripts; accuracy and file scoring."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from lowres.errors import ConfigError, DataFormatError, LowresError
from lowres.metrics import METRICS, load_metric
from lowres.metrics.qa_scoring import (
    exact_match_score,
    f1_score,
    get_normalizer,
    mixed_segmentation,
    normalize_mlqa,
    normalize_squad,
    question_scores,
    score_questions,
)
from lowres.score import infer_mlqa_language, score_accuracy, score_qa

# Listed here so parametrize ids exist at collection time; test_golden_entries_are_all_listed
# keeps the list in step with expected.json.
GOLDEN_ENTRIES = [
    "xquad.en",
    "xquad.de",
    "xquad.zh",
    "xquad.ar",
    "dev-context-en-question-en",
    "dev-context-de-question-de",
    "dev-context-es-question-es",
    "dev-context-ar-question-ar",
    "dev-context-hi-question-hi",
    "dev-context-vi-question-vi",
    "dev-context-zh-question-zh",
    "dev-context-de-question-en",
    "dev-context-zh-question-es",
]


GOLDEN_METRICS = {"squad_v1.1": "squad", "mlqa_v1": "mlqa"}


def _golden_case(golden: Path, shared_data: Path, name: str) -> tuple[dict, Path, Path]:
    expected = json.loads((golden / "qa-metrics" / "expected.json").read_text(encoding="utf-8"))
    entry = expected[name]
    folder = "xquad" if entry["metric"] == "squad_v1.1" else "mlqa/MLQA_V1/dev"
    return (
        entry,
        shared_data / folder / entry["data_file"],
        golden / "qa-metrics" / f"pred.{name}.json",
    )


def _write_squad(path: Path, qas: list[tuple[str, list[str]]]) -> Path:
    context = "The cat sat on the mat next to a dog."
    data = {
        "version": "1.1",
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [
                            {
                                "id": qid,
                                "question": "q?",
                                "answers": [{"text": t, "answer_start": 0} for t in texts],
                            }
                            for qid, texts in qas
                        ],
                    }
                ],
            }
        ],
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _write_json(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


@pytest.fixture
def squad_file(tmp_path: Path) -> Path:
    return _write_squad(tmp_path / "data.json", [("q1", ["the cat"]), ("q2", ["a dog", "dog"])])


def _write_tsv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def pawsx_file(tmp_path: Path) -> Path:
    return _write_tsv(
        tmp_path / "test.tsv",
        [
            "id\tsentence1\tsentence2\tlabel",
            "7\tA cat.\tA cat.\t1",
            "8\tA dog.\tA cat.\t0",
            "9\tOne.\tTwo.\t0",
            "10\tSame.\tSame.\t1",
        ],
    )


def test_golden_entries_are_all_listed(golden: Path) -> None:
    expected = json.loads((golden / "qa-metrics" / "expected.json").read_text(encoding="utf-8"))
    assert sorted(expected) == sorted(GOLDEN_ENTRIES)
    assert {e["metric"] for e in expected.values()} <= set(GOLDEN_METRICS)


@pytest.mark.parametrize("name", GOLDEN_ENTRIES)
def test_golden_score_qa(golden: Path, shared_data: Path, name: str) -> None:
    entry, data_file, pred_file = _golden_case(golden, shared_data, name)
    scores = score_qa(
        data_file, pred_file, GOLDEN_METRICS[entry["metric"]], entry["answer_language"]
    )
    assert scores["n"] == entry["questions"]
    assert scores["exact_match"] == pytest.approx(entry["exact_match"], abs=1e-9, rel=0)
    assert scores["f1"] == pytest.approx(entry["f1"], abs=1e-9, rel=0)


@pytest.mark.parametrize("name", GOLDEN_ENTRIES)
def test_golden_evaluate_module(golden: Path, shared_data: Path, name: str) -> None:
    from lowres.data.squad_format import read_squad_json

    entry, data_file, pred_file = _golden_case(golden, shared_data, name)
    answers = json.loads(pred_file.read_text(encoding="utf-8"))
    rows = read_squad_json(data_file, validate_spans=False)
    assert len(rows) == entry["questions"]
    assert sum(row["id"] in answers for row in rows) == entry["answered"]
    references = [{"id": row["id"], "answers": row["answers"]} for row in rows]
    # evaluate wants one prediction per reference; None marks an unanswered question.
    predictions = [{"id": row["id"], "prediction_text": answers.get(row["id"])} for row in rows]
    kwargs = {}
    if entry["metric"] == "mlqa_v1":
        kwargs["answer_language"] = entry["answer_language"]
    metric = load_metric(GOLDEN_METRICS[entry["metric"]])
    scores = metric.compute(predictions=predictions, references=references, **kwargs)
    assert set(scores) == {"exact_match", "f1"}
    assert scores["exact_match"] == pytest.approx(entry["exact_match"], abs=1e-9, rel=0)
    assert scores["f1"] == pytest.approx(entry["f1"], abs=1e-9, rel=0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Cat!", "cat"),
        ("an apple, a pear", "apple pear"),
        ("theater  Anthem", "theater anthem"),
        ("  spaced\t\nout  ", "spaced out"),
        # ASCII punctuation only: Unicode quotes and Spanish marks survive.
        ("«Berlin»", "«berlin»"),
        ("¿Qué?", "¿qué"),
        ("", ""),
    ],
)
def test_normalize_squad(text: str, expected: str) -> None:
    assert normalize_squad(text) == expected


@pytest.mark.parametrize(
    ("text", "lang", "expected"),
    [
        ("The Cat!", "en", "cat"),
        ("«Berlin» — “the” capital", "en", "berlin capital"),
        ("El niño y la niña", "es", "niño y niña"),
        ("¡Unos perros!", "es", "perros"),
        ("Der Hund, die Katze und das Haus", "de", "hund katze und haus"),
        ("dieser Einbau", "de", "dieser einbau"),
        ("Cái bàn của tôi", "vi", "bàn tôi"),
        ("الكتاب", "ar", "كتاب"),
        # The script's Arabic rule drops "ال" inside words too.
        ("مالك", "ar", "م ك"),
        ("भारत।", "hi", "भारत"),
        ("a the", "hi", "a the"),
        ("a the", "zh", "a the"),
        ("北京，大学", "zh", "北 京 大 学"),
        ("2008年北京奥运会", "zh", "2008 年 北 京 奥 运 会"),
        ("abc def北京", "zh", "abc def 北 京"),
        # Only U+4E00..U+9FA5 is split; later CJK characters stay in their run.
        ("龦龦", "zh", "龦龦"),
        ("", "zh", ""),
    ],
)
def test_normalize_mlqa(text: str, lang: str, expected: str) -> None:
    assert normalize_mlqa(text, lang) == expected


def test_mixed_segmentation_keeps_punctuation_as_tokens() -> None:
    assert mixed_segmentation("北京, ab c。") == ["北", "京", ",", "ab", "c", "。"]


def test_unknown_mlqa_language() -> None:
    with pytest.raises(ConfigError, match="en, es, de, vi, ar, hi, zh"):
        normalize_mlqa("x", "fr")
    with pytest.raises(ConfigError):
        get_normalizer("mlqa", None)


def test_f1_and_exact_match_by_hand() -> None:
    squad = get_normalizer("squad")
    assert f1_score("the quick brown fox", "quick fox jumps", squad) == pytest.approx(2 / 3)
    assert f1_score("fox fox", "fox", squad) == pytest.approx(2 / 3)
    assert f1_score("dog", "cat", squad) == 0.0
    assert exact_match_score("The  cat.", "cat", squad)
    zh = get_normalizer("mlqa", "zh")
    assert f1_score("北京大学", "北京", zh) == pytest.approx(2 / 3)
    assert not exact_match_score("北京大学", "北京", zh)


def test_empty_prediction() -> None:
    squad = get_normalizer("squad")
    assert f1_score("", "cat", squad) == 0.0
    assert not exact_match_score("", "cat", squad)
    # Official quirk: a ground truth that normalizes to nothing matches an empty answer
    # exactly, yet has F1 0 because no token overlaps.
    assert exact_match_score("", "The", squad)
    assert f1_score("", "The", squad) == 0.0


def test_missing_prediction_counts_zero_and_max_over_truths() -> None:
    scores = score_questions(
        {"a": "cat", "b": "half right"},
        [("a", ["dog", "the cat"]), ("b", ["right"]), ("c", ["anything"])],
        get_normalizer("squad"),
    )
    assert scores["n"] == 3
    assert scores["unanswered"] == 1
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)


def test_each_question_scores_what_its_share_of_the_official_mean_is() -> None:
    questions = [("a", ["dog", "the cat"]), ("b", ["right"]), ("c", ["anything"])]
    predictions = {"a": "cat", "b": "half right"}
    each = question_scores(predictions, questions, get_normalizer("squad"))
    assert each == {
        "a": {"exact_match": 100.0, "f1": 100.0},
        "b": {"exact_match": 0.0, "f1": pytest.approx(100 * 2 / 3)},
        "c": {"exact_match": 0.0, "f1": 0.0},  # no prediction
    }
    zh = question_scores({"z": "北京大学"}, [("z", ["北京"])], get_normalizer("mlqa", "zh"))
    assert zh["z"]["f1"] == pytest.approx(100 * 2 / 3)


@pytest.mark.parametrize("name", ["xquad.de", "dev-context-zh-question-zh"])
def test_per_question_scores_average_to_the_golden_scores(
    golden: Path, shared_data: Path, name: str
) -> None:
    from lowres.data.squad_format import read_squad_json

    entry, data_file, pred_file = _golden_case(golden, shared_data, name)
    metric = GOLDEN_METRICS[entry["metric"]]
    normalize = get_normalizer(metric, entry["answer_language"] if metric == "mlqa" else None)
    questions = [(r["id"], r["answers"]["text"]) for r in read_squad_json(data_file)]
    each = question_scores(json.loads(pred_file.read_text()), questions, normalize)
    assert len(each) == entry["questions"]
    mean_f1 = sum(s["f1"] for s in each.values()) / len(each)
    assert mean_f1 == pytest.approx(entry["f1"], abs=1e-9, rel=0)


def test_question_without_answers_is_an_error() -> None:
    with pytest.raises(DataFormatError, match="'q1'"):
        score_questions({"q1": "x"}, [("q1", [])], get_normalizer("squad"))
    with pytest.raises(DataFormatError, match="'q1'"):
        question_scores({"q1": "x"}, [("q1", [])], get_normalizer("squad"))


def test_evaluate_modules_missing_predictions() -> None:
    refs = [
        {"id": "1", "answers": {"text": ["the cat"], "answer_start": [0]}},
        {"id": "2", "answers": {"text": ["dog"], "answer_start": [0]}},
    ]
    preds = [{"id": "2", "prediction_text": "a dog"}, {"id": "1", "prediction_text": None}]
    assert load_metric("squad").compute(predictions=preds, references=refs) == {
        "exact_match": 50.0,
        "f1": 50.0,
    }
    scores = load_metric("mlqa").compute(predictions=preds, references=refs, answer_language="de")
    assert scores == {"exact_match": 0.0, "f1": pytest.approx(100 * (2 / 3) / 2)}


def test_mlqa_module_needs_language() -> None:
    refs = [{"id": "1", "answers": {"text": ["x"], "answer_start": [0]}}]
    preds = [{"id": "1", "prediction_text": "x"}]
    with pytest.raises(ConfigError):
        load_metric("mlqa").compute(predictions=preds, references=refs)


def test_accuracy_module() -> None:
    scores = load_metric("accuracy").compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])
    assert scores == {"accuracy": 75.0}


def test_load_metric_unknown_name() -> None:
    with pytest.raises(ConfigError, match="squad, mlqa, accuracy"):
        load_metric("bleu")


def test_load_metric_is_offline_and_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    load_metric.cache_clear()
    try:
        for name in METRICS:
            assert load_metric(name) is load_metric(name)
    finally:
        load_metric.cache_clear()


def test_score_qa_small_file(tmp_path: Path, squad_file: Path) -> None:
    preds = _write_json(tmp_path / "p.json", {"q1": "Cat", "extra": "ignored"})
    assert score_qa(squad_file, preds, "squad", None) == {"exact_match": 50.0, "f1": 50.0, "n": 2}


def test_score_qa_mlqa_infers_language(tmp_path: Path) -> None:
    data = _write_squad(tmp_path / "dev-context-zh-question-en.json", [("q1", ["北京"])])
    preds = _write_json(tmp_path / "p.json", {"q1": "北京大学"})
    scores = score_qa(data, preds, "mlqa", None)
    assert scores["f1"] == pytest.approx(100 * 2 / 3)
    # An explicit language wins over the file name.
    assert score_qa(data, preds, "mlqa", "EN")["f1"] == 0.0


def test_infer_mlqa_language() -> None:
    assert infer_mlqa_language(Path("x/dev-context-de-question-en.json")) == "de"
    assert infer_mlqa_language(Path("test-context-zh-question-zh.json")) == "zh"
    assert infer_mlqa_language(Path("xquad.de.json")) is None


def test_score_qa_mlqa_without_language(tmp_path: Path, squad_file: Path) -> None:
    preds = _write_json(tmp_path / "p.json", {"q1": "cat"})
    with pytest.raises(ConfigError, match="--lang"):
        score_qa(squad_file, preds, "mlqa", None)


@pytest.mark.parametrize("lang", ["fr", "", "english"])
def test_score_qa_mlqa_bad_language(tmp_path: Path, squad_file: Path, lang: str) -> None:
    preds = _write_json(tmp_path / "p.json", {"q1": "cat"})
    with pytest.raises(ConfigError, match="en, es, de, vi, ar, hi, zh"):
        score_qa(squad_file, preds, "mlqa", lang)


def test_score_qa_unknown_metric(tmp_path: Path, squad_file: Path) -> None:
    preds = _write_json(tmp_path / "p.json", {"q1": "cat"})
    with pytest.raises(ConfigError, match="squad, mlqa"):
        score_qa(squad_file, preds, "bleu", None)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "is not valid JSON"),
        ('[{"id": "q1", "prediction_text": "cat"}]', "holds a JSON list"),
        ('"cat"', "holds a JSON str"),
        ('{"q1": ["cat"]}', "'q1'.*expected the answer text as a string"),
        ('{"q1": null}', "'q1'"),
    ],
)
def test_score_qa_bad_predictions(tmp_path: Path, squad_file: Path, content: str, match: str):
    preds = tmp_path / "p.json"
    preds.write_text(content, encoding="utf-8")
    with pytest.raises(DataFormatError, match=match) as info:
        score_qa(squad_file, preds, "squad", None)
    assert str(preds) in str(info.value)


def test_score_qa_predictions_not_utf8(tmp_path: Path, squad_file: Path) -> None:
    preds = tmp_path / "p.json"
    preds.write_bytes(b'{"q1": "\xff"}')
    with pytest.raises(DataFormatError, match="UTF-8"):
        score_qa(squad_file, preds, "squad", None)


def test_score_qa_predictions_for_another_file(tmp_path: Path, squad_file: Path) -> None:
    preds = _write_json(tmp_path / "p.json", {"other1": "cat", "other2": "dog"})
    with pytest.raises(DataFormatError, match="another file"):
        score_qa(squad_file, preds, "squad", None)


def test_score_qa_missing_files(tmp_path: Path, squad_file: Path) -> None:
    preds = _write_json(tmp_path / "p.json", {"q1": "cat"})
    missing = tmp_path / "nope.json"
    with pytest.raises(LowresError, match="nope.json"):
        score_qa(squad_file, missing, "squad", None)
    with pytest.raises(LowresError, match="nope.json"):
        score_qa(missing, preds, "squad", None)


def test_score_qa_malformed_data_file(tmp_path: Path) -> None:
    data = tmp_path / "data.json"
    data.write_text('{"data": [', encoding="utf-8")
    preds = _write_json(tmp_path / "p.json", {"q1": "cat"})
    with pytest.raises(DataFormatError):
        score_qa(data, preds, "squad", None)


def test_score_accuracy_small_file(tmp_path: Path, pawsx_file: Path) -> None:
    preds = _write_json(tmp_path / "p.json", {"7": 1, "8": 1, "9": 0})
    # "10" has no prediction, so it counts as wrong.
    assert score_accuracy(pawsx_file, preds) == {"accuracy": 50.0, "n": 4}


@pytest.mark.parametrize("value", [2, -1, "1", 1.0, True, None])
def test_score_accuracy_bad_label(tmp_path: Path, pawsx_file: Path, value: object) -> None:
    preds = _write_json(tmp_path / "p.json", {"7": 1, "8": value})
    with pytest.raises(DataFormatError, match="'8'") as info:
        score_accuracy(pawsx_file, preds)
    assert str(preds) in str(info.value)


@pytest.mark.parametrize("content", ["not json", "[1, 0]"])
def test_score_accuracy_bad_predictions_file(tmp_path: Path, pawsx_file: Path, content: str):
    preds = tmp_path / "p.json"
    preds.write_text(content, encoding="utf-8")
    with pytest.raises(DataFormatError, match="[Ee]xpected a JSON object"):
        score_accuracy(pawsx_file, preds)


def test_score_accuracy_missing_file(tmp_path: Path, pawsx_file: Path) -> None:
    with pytest.raises(LowresError, match="missing.json"):
        score_accuracy(pawsx_file, tmp_path / "missing.json")


@pytest.mark.parametrize(
    "relpath", ["pawsx/official/de/test_2k.tsv", "pawsx/xtreme-dev/dev-en.tsv"]
)
def test_score_accuracy_real_files(tmp_path: Path, shared_data: Path, relpath: str) -> None:
    from lowres.data.pawsx_format import read_pawsx_tsv

    data_file = shared_data / relpath
    rows, _ = read_pawsx_tsv(data_file)
    # Every fourth row wrong; ids are the id column, or row indices for the XTREME copy.
    preds = {row["id"]: row["label"] if i % 4 else 1 - row["label"] for i, row in enumerate(rows)}
    scores = score_accuracy(data_file, _write_json(tmp_path / "p.json", preds))
    wrong = len(range(0, len(rows), 4))
    assert scores == {
        "accuracy": pytest.approx(100 * (len(rows) - wrong) / len(rows)),
        "n": len(rows),
    }


_HOSTILE_JSON = {
    "random bytes": (bytes(range(256)) * 40, "is not UTF-8 text (byte 128"),
    "nested 200,000 deep": (b"[" * 200_000 + b"]" * 200_000, "nest deeper than"),
    "a 5000-digit integer": (b'{"q1": ' + b"9" * 5000 + b"}", "an integer of more than"),
    "truncated": (b'{"q1": "ca', "probably truncated"),
}


@pytest.mark.parametrize("case", sorted(_HOSTILE_JSON))
@pytest.mark.parametrize("which", ["data", "predictions"])
def test_score_names_an_unreadable_json_file(tmp_path: Path, squad_file: Path, case, which):
    content, needle = _HOSTILE_JSON[case]
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    preds = _write_json(tmp_path / "p.json", {"q1": "cat"})
    data, predictions = (bad, preds) if which == "data" else (squad_file, bad)
    with pytest.raises(DataFormatError, match=re.escape(needle)) as info:
        score_qa(data, predictions, "squad", None)
    assert str(info.value).startswith(str(bad))


def test_a_byte_order_mark_is_accepted(tmp_path: Path, squad_file: Path) -> None:
    preds = tmp_path / "p.json"
    preds.write_bytes(b"\xef\xbb\xbf" + json.dumps({"q1": "cat"}).encode())
    data = tmp_path / "data.json"
    data.write_bytes(b"\xef\xbb\xbf" + squad_file.read_bytes())
    assert score_qa(data, preds, "squad", None) == score_qa(squad_file, preds, "squad", None)
