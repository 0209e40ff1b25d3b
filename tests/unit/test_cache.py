"""The feature cache stores JSON that cannot run code, verifies each entry, stays private."""

from __future__ import annotations

import json
import pickle
import stat

import pytest
from helpers import tiny_backbone

from lowres.cache import FeatureCache, FeatureCacheWarning, encode_entry
from lowres.tasks import DataSettings, create_task


def _xquad():
    settings = DataSettings(source="sample", root="", source_language="en", eval_languages=["en"])
    params = {"kind": "extractive_qa", "metric": "squad", "languages": [], "max_length": 96}
    params |= {"stride": 32, "max_question_length": 32, "n_best": 20, "max_answer_length": 30}
    params |= {"num_labels": 2, "question_languages": [], "split": "dev"}
    return create_task("xquad", settings, **params)


def _pawsx():
    settings = DataSettings(source="sample", root="", source_language="en", eval_languages=["en"])
    params = {"kind": "classification", "metric": "accuracy", "languages": [], "max_length": 64}
    params |= {"num_labels": 2, "question_languages": [], "split": "dev"}
    return create_task("pawsx", settings, **params)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_backbone("bert").tokenizer


def _strict(value) -> str:
    """Equal strings only for equal values of equal types (a tuple is not a list)."""
    return repr(value)


@pytest.mark.parametrize("make_task", [_xquad, _pawsx])
def test_cached_features_are_identical_to_fresh_ones(make_task, tokenizer, tmp_path):
    task = make_task()
    records = task.evaluation_records("en")[:6]
    fresh_train = task.train_features(records, tokenizer)
    fresh_eval = task.eval_features(records, tokenizer)
    FeatureCache(tmp_path).train_features(task, records, tokenizer)  # stores
    FeatureCache(tmp_path).eval_features(task, records, tokenizer)
    cache = FeatureCache(tmp_path)
    assert _strict(cache.train_features(task, records, tokenizer)) == _strict(fresh_train)
    assert _strict(cache.eval_features(task, records, tokenizer)) == _strict(fresh_eval)
    assert (cache.hits, cache.misses) == (2, 0)


def _entry(cache, kind, task, records, tokenizer):
    return cache._path(cache.key(kind, task, records, tokenizer))


class _RunsCode:
    """A pickle that, when loaded, writes a file (what an attacker's entry would do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_crafted_pickle_entry_runs_nothing_and_is_recomputed(tokenizer, tmp_path):
    task, marker = _xquad(), tmp_path / "pwned"
    records = task.evaluation_records("en")[:4]
    cache = FeatureCache(tmp_path / "cache")
    fresh = cache.eval_features(task, records, tokenizer)
    entry = _entry(cache, "eval", task, records, tokenizer)
    entry.write_bytes(pickle.dumps(_RunsCode(marker)))
    again = FeatureCache(tmp_path / "cache")
    with pytest.warns(FeatureCacheWarning, match="no lowres feature-cache header"):
        assert _strict(again.eval_features(task, records, tokenizer)) == _strict(fresh)
    assert not marker.exists()
    assert again.misses == 1 and entry.read_bytes().startswith(b'{"format": "lowres-features"')


def _truncate(data):
    return data[: len(data) // 2]


def _flip(data):
    middle = len(data) - 40
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]


def _wrong_type(data):
    return encode_entry(["not", "columns"], "eval")


def _train_entry(data):
    return encode_entry({"input_ids": [[1, 2]]}, "train")


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (_truncate, "payload bytes where"),
        (_flip, "does not match the SHA-256"),
        (_wrong_type, "the payload is not eval features"),
        (_train_entry, "'train' entry where a version 3 'eval' one belongs"),
        (lambda data: b"", "no lowres feature-cache header"),
    ],
)
def test_a_damaged_entry_is_recomputed_with_a_warning(damage, why, tokenizer, tmp_path):
    task = _xquad()
    records = task.evaluation_records("en")[:4]
    fresh = FeatureCache(tmp_path).eval_features(task, records, tokenizer)
    entry = _entry(FeatureCache(tmp_path), "eval", task, records, tokenizer)
    entry.write_bytes(damage(entry.read_bytes()))
    cache = FeatureCache(tmp_path)
    with pytest.warns(FeatureCacheWarning, match=why):
        assert _strict(cache.eval_features(task, records, tokenizer)) == _strict(fresh)
    assert cache.misses == 1
    rewritten = FeatureCache(tmp_path)  # the entry was replaced by a good one
    rewritten.eval_features(task, records, tokenizer)
    assert rewritten.hits == 1


def test_cache_folders_are_private_and_entries_hold_a_digest(tokenizer, tmp_path):
    task = _pawsx()
    records = task.evaluation_records("en")[:4]
    cache = FeatureCache(tmp_path / "a" / "cache")
    cache.train_features(task, records, tokenizer)
    entry = _entry(cache, "train", task, records, tokenizer)
    for folder in (tmp_path / "a", tmp_path / "a" / "cache", entry.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    header = json.loads(entry.read_bytes().split(b"\n", 1)[0])
    assert header["kind"] == "train" and len(header["sha256"]) == 64
