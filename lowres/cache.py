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

Entries are JSON, which loading cannot turn into code (pickle could: anyone able to write
into a shared cache folder could run code in every later run). Each entry starts with a
header line that records its kind and the SHA-256 of the payload; an entry that is
truncated, altered or of the wrong shape is recomputed, with a warning, and rewritten.
Folders are created private to the user (0o700) and entries are written 0o600. An unwritable
or unusable folder never fails a run: the first failure is reported with a warning and the
run continues without the cache.
"""

from __future__ import annotations

import gc
import hashlib
import inspect
import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from lowres.distributed import is_main_process
from lowres.training.progress import with_heartbeat

# Bump when the stored layout or the features change (2: question cap; 3: JSON, not pickle).
FORMAT_VERSION = 3
MAGIC = "lowres-features"
# What each kind of entry must decode to: train features are a dict of columns; eval
# features are (columns, per-window bookkeeping), stored as a two-item JSON list.
KINDS = ("train", "eval")


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
            stored = self._load(path, kind)
            if stored is not None:
                self.hits += 1
                return stored
            value = compute(records, tokenizer)
            self.misses += 1
            if not self.read_only:
                self._store(path, value, kind)
            return value
        finally:
            self.seconds += time.perf_counter() - started
            self.cpu_seconds += time.process_time() - cpu_started

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def _load(self, path: Path, kind: str):
        collecting = gc.isenabled()
        # Features are millions of small lists; the cyclic collector would walk them again
        # and again while they load, for nothing (they hold no cycles).
        gc.disable()
        try:
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None  # not cached yet (a folder that cannot exist is reported on store)
        except OSError as err:
            return self._unusable(path, f"unreadable: {err}")
        try:
            return decode_entry(data, kind)
        except ValueError as err:
            # Truncated, altered, foreign or of another shape: recompute and overwrite it.
            return self._unusable(path, str(err))
        finally:
            if collecting:
                gc.enable()

    @staticmethod
    def _unusable(path: Path, why: str) -> None:
        warnings.warn(
            f"feature cache entry {path} is not a valid entry ({why}); recomputing it.",
            FeatureCacheWarning,
            stacklevel=5,
        )

    def _store(self, path: Path, value, kind: str) -> None:
        try:
            make_private_dirs(path.parent)
            # Write then rename, so concurrent runs of a sweep never read half a file.
            # mkstemp creates the file 0o600.
            handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(handle, "wb") as out:
                out.write(encode_entry(value, kind))
            os.replace(temporary, path)
        except (TypeError, ValueError) as err:
            # Features hold plain lists of numbers and strings; anything else is not stored
            # rather than stored in a form that loads differently.
            os.unlink(temporary)
            warnings.warn(
                f"{kind} features of task {path.stem[:8]}... are not plain JSON ({err}); they "
                "are not cached.",
                FeatureCacheWarning,
                stacklevel=4,
            )
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


def make_private_dirs(folder: Path) -> None:
    """``mkdir -p`` whose new folders are the user's alone (0o700); existing ones are kept
    as they are (a folder the user made shared stays shared)."""
    missing = []
    for parent in (folder, *folder.parents):
        if parent.exists():  # a file there fails the mkdir below, as NotADirectoryError
            break
        missing.append(parent)
    for new in reversed(missing):
        try:
            new.mkdir(mode=0o700)
        except FileExistsError:
            if not new.is_dir():
                raise


def encode_entry(value, kind: str) -> bytes:
    """A header line (magic, version, kind, payload SHA-256 and size), then JSON."""
    if kind == "eval":
        value = list(value)
    payload = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    body = payload.encode("utf-8")
    header = {
        "format": MAGIC,
        "version": FORMAT_VERSION,
        "kind": kind,
        "sha256": hashlib.sha256(body).hexdigest(),
        "bytes": len(body),
    }
    return json.dumps(header).encode("ascii") + b"\n" + body


def decode_entry(data: bytes, kind: str):
    """The value :func:`encode_entry` stored; ValueError for anything else."""
    line, newline, body = data.partition(b"\n")
    try:
        header = json.loads(line) if newline else None
    except (ValueError, RecursionError):
        header = None
    if not isinstance(header, dict) or header.get("format") != MAGIC:
        raise ValueError("no lowres feature-cache header")
    if header.get("version") != FORMAT_VERSION or header.get("kind") != kind:
        raise ValueError(
            f"a version {header.get('version')} {header.get('kind')!r} entry where a version "
            f"{FORMAT_VERSION} {kind!r} one belongs"
        )
    if len(body) != header.get("bytes"):
        raise ValueError(f"{len(body)} payload bytes where {header.get('bytes')} were written")
    if hashlib.sha256(body).hexdigest() != header.get("sha256"):
        raise ValueError("the payload does not match the SHA-256 recorded when it was written")
    value = json.loads(body)
    if kind == "train" and isinstance(value, dict) and _columns(value):
        return value
    if kind == "eval" and isinstance(value, list) and len(value) == 2 and _columns(value[0]):
        return value[0], value[1]
    raise ValueError(f"the payload is not {kind} features")


def _columns(value) -> bool:
    return isinstance(value, dict) and all(isinstance(v, list) for v in value.values())
