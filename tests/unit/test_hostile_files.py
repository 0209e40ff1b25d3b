"""Property-based tests (Hypothesis): hostile files never crash the readers, score or report.

Random bytes, nesting far past the recursion limit, integers past Python's 4300-digit
conversion limit, truncations, byte-order marks and values of the wrong type anywhere in
an otherwise valid file: each reader returns records or raises a user error (exit 2) whose
message names the file; `lowres score` and `lowres report` exit 0 or 2 and name the file,
never a traceback. Runs in-process for speed; one subprocess per command checks the real
exit code.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers import REPO, run_lowres
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lowres.data.pair_tsv import read_pair_tsv
from lowres.data.pawsx_format import read_pawsx_tsv
from lowres.data.squad_format import read_squad_json
from lowres.errors import LowresError
from lowres.runfolder import RunFolder, RunMetrics

FAST = settings(
    max_examples=40,
    deadline=5000,  # ms per example; 200,000-deep documents take ~0.1 s
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SQUAD_DOC = {
    "version": "1.1",
    "data": [
        {
            "title": "T",
            "paragraphs": [
                {
                    "context": "Paris is the capital of France.",
                    "qas": [
                        {
                            "id": "q1",
                            "question": "Capital?",
                            "answers": [{"text": "Paris", "answer_start": 0}],
                        }
                    ],
                }
            ],
        }
    ],
}
SQUAD_BYTES = json.dumps(SQUAD_DOC).encode()
PAWSX_BYTES = b"id\tsentence1\tsentence2\tlabel\n7\tA cat.\tA cat.\t1\n8\tA dog.\tA cat.\t0\n"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)


def _deep(depth: int, opener: bytes, closer: bytes) -> bytes:
    return opener * depth + closer * depth


def _paths(node, prefix=()):
    """Every place in a JSON document a value sits, as key/index tuples."""
    yield prefix
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, child in items:
        yield from _paths(child, (*prefix, key))


@st.composite
def wrong_types(draw, doc):
    """A valid document with one value, anywhere, replaced by a random JSON value."""
    doc = json.loads(json.dumps(doc))
    path = draw(st.sampled_from(list(_paths(doc))[1:]))
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = draw(json_values)
    return json.dumps(doc).encode()


def hostile_json(valid: bytes, doc) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=512),
        st.integers(1_000, 200_000).map(lambda n: _deep(n, b"[", b"]")),
        st.integers(1_000, 50_000).map(
            lambda n: _deep(n, b'{"data":', b"}")[:-n] + b"1" + b"}" * n
        ),
        st.integers(4_301, 20_000).map(lambda n: b'{"data": [], "q1": ' + b"9" * n + b"}"),
        st.integers(0, len(valid)).map(lambda n: valid[:n]),
        st.just(b"\xef\xbb\xbf" + valid),
        json_values.map(lambda v: json.dumps(v).encode()),
        wrong_types(doc),
    )


def hostile_tsv(valid: bytes) -> st.SearchStrategy[bytes]:
    cells = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
    rows = st.lists(st.lists(cells, min_size=1, max_size=5), max_size=6)
    return st.one_of(
        st.binary(max_size=1024),
        st.binary(max_size=1024).map(lambda junk: valid + junk),
        st.integers(0, len(valid)).map(lambda n: valid[:n]),
        st.just(b"\xef\xbb\xbf" + valid),
        rows.map(lambda rs: "\n".join("\t".join(r) for r in rs).encode("utf-8", "surrogatepass")),
        rows.map(
            lambda rs: valid + "\n".join("\t".join(r) for r in rs).encode("utf-8", "surrogatepass")
        ),
    )


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


def _user_error_or_records(read, path: Path):
    try:
        result = read(path)
    except LowresError as err:
        assert str(path) in str(err), str(err)
        return None
    assert isinstance(result, list | tuple)
    return result


@FAST
@given(content=hostile_json(SQUAD_BYTES, SQUAD_DOC))
def test_the_squad_reader_returns_records_or_names_the_file(scratch, content):
    """The reader behind XQuAD, MLQA, SQuAD and task.reader=squad_files."""
    path = scratch / "xquad.de.json"
    path.write_bytes(content)
    records = _user_error_or_records(read_squad_json, path)
    if content in (SQUAD_BYTES, b"\xef\xbb\xbf" + SQUAD_BYTES):
        assert records == read_squad_json_from(SQUAD_DOC, scratch)


def read_squad_json_from(doc, folder: Path) -> list[dict]:
    path = folder / "reference.json"
    path.write_text(json.dumps(doc))
    return read_squad_json(path)


@FAST
@given(content=hostile_tsv(PAWSX_BYTES))
def test_the_pawsx_reader_returns_rows_or_names_the_file(scratch, content):
    path = scratch / "dev-de.tsv"
    path.write_bytes(content)
    _user_error_or_records(read_pawsx_tsv, path)


@FAST
@given(content=hostile_tsv(PAWSX_BYTES))
@example(content=b"\n")  # a blank first line used to raise IndexError
def test_the_pair_tsv_reader_returns_rows_or_names_the_file(scratch, content):
    path = scratch / "pairs.tsv"
    path.write_bytes(content)
    _user_error_or_records(lambda p: read_pair_tsv(p, columns={}, num_labels=2), path)


def _lowres(*args: str) -> tuple[int, str]:
    """`lowres ARGS` in this process: its exit code and what it printed on stderr."""
    err = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            run_lowres(*args)
        except SystemExit as exit_info:
            code = exit_info.code
    return code, err.getvalue()


def _one_line(text: str) -> str:
    return "".join(text.split())


@FAST
@given(
    data=hostile_json(SQUAD_BYTES, SQUAD_DOC),
    predictions=hostile_json(b'{"q1": "Paris"}', {"q1": "Paris"}),
    which=st.sampled_from(["data", "predictions"]),
)
def test_lowres_score_exits_0_or_2_naming_the_file(scratch, data, predictions, which):
    data_file, predictions_file = scratch / "data.json", scratch / "predictions.json"
    data_file.write_bytes(data if which == "data" else SQUAD_BYTES)
    predictions_file.write_bytes(predictions if which == "predictions" else b'{"q1": "Paris"}')
    code, err = _lowres("score", "--metric", "squad", str(data_file), str(predictions_file))
    assert code in (0, 2) and "Traceback" not in err
    if code == 2:
        named = data_file if which == "data" else predictions_file
        assert _one_line(str(named)) in _one_line(err), err


def _sweep(folder: Path) -> Path:
    """A finished one-run sweep folder, as `lowres sweep` leaves it."""
    name = "full/base/joint/k8_seed1"
    run = {"name": name, "method": "full", "grid": {}, "schedule": "joint", "k": 8, "seed": 1}
    run["stage"] = 0
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sweep.json").write_text(json.dumps({"task": "xquad", "runs": [run]}))
    RunFolder(folder / "runs" / name).write_metrics(
        RunMetrics(
            task="xquad", backbone="tiny-bert", per_language={"de": {"f1": 30.0, "n": 10}},
            average={"f1": 30.0}, trainable_parameters=1, total_parameters=2, eval_runtime_s=0.0,
            train_steps=5, selection={"policy": "last"},
        )
    )  # fmt: skip
    return folder / "runs" / name / "metrics.json"


@FAST
@given(content=st.data(), which=st.sampled_from(["metrics.json", "sweep.json"]))
def test_lowres_report_exits_0_or_2_naming_the_file(scratch, content, which):
    metrics = _sweep(scratch / "sweep")
    damaged = metrics if which == "metrics.json" else scratch / "sweep" / "sweep.json"
    valid = damaged.read_bytes()
    damaged.write_bytes(content.draw(hostile_json(valid, json.loads(valid))))
    code, err = _lowres("report", str(scratch / "sweep"), "--out", str(scratch / "report"))
    assert code in (0, 2) and "Traceback" not in err
    if code == 2:
        # A sweep.json that parses but lists no runs is named by its folder ("holds no
        # finished runs yet").
        named = damaged if which == "metrics.json" else damaged.parent
        assert _one_line(str(named)) in _one_line(err), err


@pytest.mark.parametrize(
    "command",
    # report imports the tasks, hence torch and transformers: ~20 s in a fresh process on
    # the shared CI cores, so the default tier checks it in-process (above) only.
    ["score", pytest.param("report", marks=pytest.mark.slow)],
)
def test_the_commands_exit_2_in_a_real_process(tmp_path, command):
    bad = tmp_path / "bad.json"
    bad.write_bytes(os.urandom(4096) + b"\xff")
    if command == "score":
        args = ["score", "--metric", "squad", str(bad), str(bad)]
    else:
        metrics = _sweep(tmp_path / "sweep")
        metrics.write_bytes(bad.read_bytes())
        args, bad = ["report", str(tmp_path / "sweep")], metrics
    done = subprocess.run(
        [sys.executable, "-m", "lowres", *args], capture_output=True, text=True, cwd=REPO,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert _one_line(str(bad)) in _one_line(done.stderr) and "Traceback" not in done.stderr
