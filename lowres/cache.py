"""Content-addressed cache of tokenized features (``data.cache_dir``).

Tokenizing the SQuAD pool into sliding windows costs seconds to minutes and is the same
for every run that shares the data, the tokenizer and the window settings, which is most
of a sweep. Each call to ``task.train_features``/``task.eval_features`` is keyed by
everything its output depends on:

* the records themselves (their JSON, so an edited data file or another split is a miss);
* the tokenizer's full serialization (vocabulary, normalizer, special tokens, sides);
* the task's name and parameters (lengths, stride, question length, ...);
* the source of the task modules that compute the features, so changed code is a miss.

Nothing is ever looked up by file name or date, so a stale entry cannot be hit; old
entries are simply never read again (delete the folder to reclaim the space).

Entries are pickles written by this module; point ``data.cache_dir`` only at a folder you
trust. An unwritable or unusable folder never fails a run: the first failure is reported
with a warning and the run continues without the cache.
"""

from __future__ import annotations

import gc
import hashlib
import inspect
import json
import os
import pickle
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from lowres.distributed import is_main_process
from lowres.training.progress import with_heartbeat

FORMAT_VERSION = 2  # bump when the stored layout or the features change (2: question cap)


class FeatureCacheWarning(UserWarning):
    """The feature cache could not be used; the run goes on without it."""


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode("utf-8")
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def records_digest(records) -> str:
    text = json.dumps(list(records), sort_keys=True, ensure_ascii=False, default=str)
    return _digest(text)


def tokenizer_fingerprint(tokenizer) -> str:
    """Changes whenever the tokenizer would encode anything differently."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # Truncation and padding are left behind by the previous call; every feature call
        # sets its own, so they would only make identical tokenizers look different. They
        # are switched off for the serialization and put back.
        truncation, padding = backend.truncation, backend.padding
        backend.no_truncation()
        backend.no_padding()
        try:
            serialized = backend.to_str()
        finally:
            if truncation:
                backend.enable_truncation(**truncation)
            if padding:
                backend.enable_padding(**padding)
    else:
        serialized = repr(sorted(tokenizer.get_vocab().items()))
    settings = {
        "class": type(tokenizer).__qualname__,
        "padding_side": getattr(tokenizer, "padding_side", None),
        "truncation_side": getattr(tokenizer, "truncation_side", None),
        "model_max_length": getattr(tokenizer, "model_max_length", None),
        "special": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
    }
    return _digest(serialized, json.dumps(settings, sort_keys=True, default=str))


def task_fingerprint(task) -> str:
    """The task's settings that shape features, plus the code that computes them."""
    sources = []
    for cls in type(task).__mro__:
        module = inspect.getmodule(cls)
        if module is None or not module.__name__.startswith("lowres."):
            continue
        path = inspect.getsourcefile(module)
        if path and path not in sources:
            sources.append(path)
    code = [Path(p).read_bytes() for p in sorted(sources)]
    params = json.dumps(task.params, sort_keys=True, default=str)
    return _digest(type(task).__qualname__, task.name, task.kind, params, *code)


class FeatureCache:
    """Wraps a task's feature calls; ``directory=None`` computes every time (cache off)."""

    def __init__(self, directory: str | Path | None, *, read_only: bool = False) -> None:
        self.directory = Path(directory).expanduser() if directory else None
        self.read_only = read_only  # data-parallel ranks other than 0 only read
        self.hits = 0
        self.misses = 0
        self.seconds = 0.0  # wall time spent producing features, cached or not
        # CPU time of this process for the same work: unlike wall time it does not grow
        # when other jobs share the cores, so hit-vs-miss comparisons stay meaningful.
        self.cpu_seconds = 0.0
        self._disabled_reason = ""
        # Fingerprints per object: a run tokenizes with one tokenizer and one task.
        self._fingerprints: dict[tuple[str, int], str] = {}

    @classmethod
    def from_setting(cls, cache_dir: str | None) -> FeatureCache:
        """``data.cache_dir``: a folder, or empty/None for no cache."""
        return cls(cache_dir or None, read_only=not is_main_process())

    def train_features(self, task, records, tokenizer) -> dict[str, list]:
        return self._cached("train", task, records, tokenizer, task.train_features)

    def eval_features(self, task, records, tokenizer):
        return self._cached("eval", task, records, tokenizer, task.eval_features)

    def report(self) -> dict[str, Any]:
        """For metrics.json: what preprocessing cost and whether the cache served it."""
        return {
            "preprocess_s": round(self.seconds, 4),
            "preprocess_cpu_s": round(self.cpu_seconds, 4),
            "feature_cache": {
                "dir": str(self.directory) if self.directory else "",
                "hits": self.hits,
                "misses": self.misses,
                "disabled": self._disabled_reason,
            },
        }

    def key(self, kind: str, task, records, tokenizer) -> str:
        return _digest(
            FORMAT_VERSION,
            kind,
            self._fingerprint("task", task, task_fingerprint),
            self._fingerprint("tokenizer", tokenizer, tokenizer_fingerprint),
            records_digest(records),
        )

    def _fingerprint(self, what: str, obj, compute) -> str:
        slot = (what, id(obj))
        if slot not in self._fingerprints:
            self._fingerprints[slot] = compute(obj)
        return self._fingerprints[slot]

    def _cached(self, kind: str, task, records, tokenizer, compute):
        started, cpu_started = time.perf_counter(), time.process_time()
        # Tokenizing a large pool takes minutes; say so now and then in a non-interactive log.
        compute = with_heartbeat(compute, f"tokenizing {len(records)} {kind} records")
        try:
            if self.directory is None or self._disabled_reason:
                return compute(records, tokenizer)
            path = self._path(self.key(kind, task, records, tokenizer))
            stored = self._load(path)
            if stored is not None:
                self.hits += 1
                return stored
            value = compute(records, tokenizer)
            self.misses += 1
            if not self.read_only:
                self._store(path, value)
            return value
        finally:
            self.seconds += time.perf_counter() - started
            self.cpu_seconds += time.process_time() - cpu_started

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.pkl"

    def _load(self, path: Path):
        collecting = gc.isenabled()
        # Features are millions of small lists; the cyclic collector would walk them again
        # and again while they load, for nothing (they hold no cycles).
        gc.disable()
        try:
            with path.open("rb") as handle:
                return pickle.load(handle)
        except (FileNotFoundError, NotADirectoryError):
            return None  # not cached yet (a folder that cannot exist is reported on store)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError) as err:
            # A truncated or foreign file: recompute and overwrite it rather than fail.
            warnings.warn(
                f"feature cache entry {path} is unreadable ({err}); recomputing it.",
                FeatureCacheWarning,
                stacklevel=4,
            )
            return None
        finally:
            if collecting:
                gc.enable()

    def _store(self, path: Path, value) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename, so concurrent runs of a sweep never read half a file.
            handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(handle, "wb") as out:
                pickle.dump(value, out, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(temporary, path)
        except OSError as err:
            self._disabled_reason = f"{type(err).__name__}: {err}"
            warnings.warn(
                f"data.cache_dir={self.directory} is not writable ({err}); tokenized features "
                "are not cached for this run, which is otherwise unaffected. Point "
                "data.cache_dir at a writable folder, or set data.cache_dir='' to turn the "
                "cache off and silence this warning.",
                FeatureCacheWarning,
                stacklevel=4,
            )
