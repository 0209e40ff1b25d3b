"""The run folder: where a run's config, metrics, predictions and checkpoint live.

``metrics.json`` is written from one typed record, :class:`RunMetrics`, and read back into
it (``lowres report`` reads runs that way), so its fields are named in one place.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import math
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig

from lowres.distributed import is_main_process
from lowres.errors import DataFormatError, LowresError
from lowres.files import read_json, write_atomic

METRICS_FILE = "metrics.json"


@dataclass
class RunMetrics:
    """What a run measured. Fields left None (a training field of ``lowres evaluate``) are
    not written; ``task_extras`` (the task's own entries: MLQA's G-XLT table, PAWS-X's
    untranslated rows) sit at the top level of the file, after the scores."""

    task: str
    backbone: str
    per_language: dict[str, dict[str, float]]
    average: dict[str, float]
    trainable_parameters: int
    total_parameters: int
    eval_runtime_s: float
    method: dict[str, Any] | None = None
    checkpoint: str | None = None  # lowres evaluate: the run whose parameters were restored
    parallel_distance: dict[str, dict[str, Any]] | None = None
    task_extras: dict[str, Any] = field(default_factory=dict)
    k: int | None = None
    seed: int | None = None
    source_pool: bool | None = None
    train_examples: int | None = None
    pseudo: dict[str, Any] | None = None
    train_windows: int | None = None
    train_steps: int | None = None
    train_loss: float | None = None
    train_runtime_s: float | None = None
    # 0 unless resumed from a checkpoint older than the clock: the time before it is lost.
    train_runtime_from_step: int | None = None
    device: str | None = None
    preprocess_s: float | None = None
    preprocess_cpu_s: float | None = None
    feature_cache: dict[str, Any] | None = None
    selection: dict[str, Any] | None = None
    init_from: str | None = None

    # Keys in file order; eval_runtime_s sits with the other times.
    _ORDER = (
        "task", "backbone", "method", "checkpoint", "per_language", "average",
        "parallel_distance", "task_extras", "trainable_parameters", "total_parameters", "k",
        "seed", "source_pool", "train_examples", "pseudo", "train_windows", "train_steps",
        "train_loss", "train_runtime_s", "train_runtime_from_step", "eval_runtime_s", "device",
        "preprocess_s", "preprocess_cpu_s", "feature_cache", "selection", "init_from",
    )  # fmt: skip
    # Written even when None: a run without them says so (init_from: not a two-stage run).
    _ALWAYS = ("init_from",)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self._ORDER:
            value = getattr(self, name)
            if name == "task_extras":
                out.update(value)
            elif value is not None or (name in self._ALWAYS and self.method is not None):
                out[name] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunMetrics:
        names = {f.name for f in dataclasses.fields(cls)} - {"task_extras"}
        known = {k: v for k, v in data.items() if k in names}
        return cls(**known, task_extras={k: v for k, v in data.items() if k not in names})


class RunFolder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # In a data-parallel run every rank holds a RunFolder, but only rank 0 writes.
        self.writes = is_main_process()
        if self.writes:
            self.path.mkdir(parents=True, exist_ok=True)

    @classmethod
    def for_job(cls, output_dir: str | Path | None = None) -> RunFolder:
        """The given folder, or the one Hydra made for this job."""
        if output_dir is None:
            output_dir = HydraConfig.get().runtime.output_dir
        return cls(output_dir)

    def finished(self) -> bool:
        return self.finished_at(self.path)

    @staticmethod
    def finished_at(path: str | Path) -> bool:
        """Whether ``path`` holds a finished run, without creating the folder.

        A run is finished when its metrics.json is complete: one cut short or damaged (a
        full disk, a copy that did not finish) marks a run to train again, not one to skip.
        """
        try:
            data = json.loads((Path(path) / METRICS_FILE).read_bytes())
        except (OSError, ValueError, RecursionError):
            return False
        return isinstance(data, dict) and {"task", "per_language", "average"} <= data.keys()

    def metrics(self) -> RunMetrics:
        return read_metrics(self.path)

    def write_metrics(self, metrics: RunMetrics) -> Path:
        return self.write_json(METRICS_FILE, metrics.to_json())

    def write_json(self, relative: str, data: Any) -> Path:
        """Write atomically, so an interrupted run never leaves a half-written file."""
        target = self.path / relative
        if not self.writes:
            return target
        check_inside(self.path, target)
        return write_atomic(target, json.dumps(data, ensure_ascii=False, indent=2))

    def write_jsonl(self, relative: str, rows: list[dict[str, Any]]) -> Path:
        target = self.path / relative
        if not self.writes:
            return target
        check_inside(self.path, target)
        return write_atomic(target, "".join(json.dumps(r) + "\n" for r in rows))


def read_metrics(run_dir: str | Path) -> RunMetrics:
    """The metrics of a finished run folder; a damaged or hand-edited file is a
    DataFormatError naming the file and the key."""
    path = Path(run_dir) / METRICS_FILE
    fix = "rerun that run (delete its folder, or its metrics.json, first)."
    data = read_json(path, "the metrics.json a lowres run writes", fix)
    where = f"{path}: expected the metrics.json a lowres run writes; {fix}"
    if not isinstance(data, dict):
        raise DataFormatError(f"{path} holds a JSON {type(data).__name__}, not an object. {where}")
    for key, check, what in _METRICS_TYPES:
        if key not in data:
            if key in _METRICS_REQUIRED:
                raise DataFormatError(f"{path} has no {key!r}. {where}")
            continue
        value = data[key]
        if not check(value):
            raise DataFormatError(
                f"{path}: {key!r} is {value!r:.80} ({type(value).__name__}); it must be {what}. "
                f"{where}"
            )
    return RunMetrics.from_json(data)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _scores(value: Any) -> bool:
    return isinstance(value, dict) and all(_number(v) for v in value.values())


# The fields RunMetrics has no default for.
_METRICS_REQUIRED = (
    "task", "backbone", "per_language", "average", "trainable_parameters",
    "total_parameters", "eval_runtime_s",
)  # fmt: skip
_METRICS_TYPES = (
    ("task", lambda v: isinstance(v, str), "a task name"),
    ("backbone", lambda v: isinstance(v, str), "a backbone name"),
    (
        "per_language",
        lambda v: isinstance(v, dict) and all(_scores(s) for s in v.values()),
        "an object of languages, each an object of finite numbers such as f1",
    ),
    ("average", _scores, "an object of finite numbers such as f1"),
    ("method", lambda v: v is None or isinstance(v, dict), "an object"),
    ("selection", lambda v: v is None or isinstance(v, dict), "an object"),
    ("k", lambda v: v is None or _int(v), "an integer"),
    ("seed", lambda v: v is None or _int(v), "an integer"),
    ("trainable_parameters", _int, "an integer"),
    ("total_parameters", _int, "an integer"),
    # A diverged run's loss is NaN, and its metrics are still worth reporting.
    ("train_loss", lambda v: v is None or isinstance(v, float | int), "a number"),
    ("train_runtime_s", lambda v: v is None or _number(v), "a finite number"),
    ("eval_runtime_s", _number, "a finite number"),
)


LOCK_FILE = ".lowres.lock"
# What a command leaves in a folder before it has produced anything of its own: Hydra's
# saved config, its log file, our lock. A folder holding only these is removed after a
# user error, so failed commands leave no junk folders behind.
SCAFFOLDING = {".hydra", LOCK_FILE}


def holds_run(path: str | Path) -> bool:
    """Whether ``path`` holds files of a lowres run (finished or not)."""
    path = Path(path)
    return (path / METRICS_FILE).is_file() or (path / ".hydra").is_dir()


def claim_new_folder(path: str | Path) -> Path:
    """Create a folder that no other process has: ``path``, else ``path_2``, ``path_3``, ...

    ``os.mkdir`` either creates the folder or fails because it exists, atomically, so two
    runs started in the same second (the default folder names carry the second) get two
    folders instead of sharing one.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for number in range(1, 10_000):
            candidate = path if number == 1 else path.with_name(f"{path.name}_{number}")
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            return candidate
    except OSError as err:
        raise LowresError(
            f"The run folder {path} cannot be created ({err.strerror or err}); expected a "
            "writable location. Run from a folder you can write to, or choose one with "
            "hydra.run.dir=DIR (hydra.sweep.dir=DIR for sweeps)."
        ) from err
    raise LowresError(f"No free run folder name next to {path}; clean up {path.parent}.")


def ensure_folder(path: str | Path) -> Path:
    """An existing or new folder (a given hydra.run.dir), with a clear error if impossible."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LowresError(
            f"The run folder {path} cannot be created ({err.strerror or err}); expected a "
            "writable location. Choose another hydra.run.dir (or hydra.sweep.dir)."
        ) from err
    return path


class FolderLock:
    """An exclusive lock on a run folder for the life of the command: one writer per folder.

    ``flock`` is released by the kernel when the process ends, however it ends, so a killed
    run never leaves a stale lock behind; the file's content names the holder.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._handle = None

    def acquire(self) -> FolderLock:
        # A holder that releases removes the file; one opened just before that removal is
        # locked by nobody else, so the lock only counts while the path still names it.
        for _ in range(100):
            handle = self._open()
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                handle.close()
                raise LowresError(
                    f"Another lowres process (pid {holder}) is writing into {self.folder}; two "
                    "writers in one run folder would mix their results. Wait for it to finish, "
                    "or choose another hydra.run.dir."
                ) from None
            try:
                current = os.lstat(self.path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(handle.fileno()).st_ino:
                break
            handle.close()
        else:
            raise LowresError(f"The lock file {self.path} keeps changing; is another process "
                              "removing it? Choose another hydra.run.dir.")  # fmt: skip
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return self

    def _open(self):
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            descriptor = os.open(self.path, flags, 0o666)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise LowresError(_link_message(self.path, self.folder)) from None
            raise LowresError(
                f"The lock file {self.path} cannot be opened ({err.strerror or err}); expected "
                "a writable run folder. Choose another hydra.run.dir (or hydra.sweep.dir)."
            ) from None
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            os.close(descriptor)
            raise LowresError(
                f"{self.path} is not a regular file; lowres keeps its lock there. Remove it, or "
                "choose another hydra.run.dir."
            )
        return os.fdopen(descriptor, "r+", encoding="utf-8")

    def release(self) -> None:
        if self._handle is not None:
            self.path.unlink(missing_ok=True)
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def held_locks(folder: str | Path) -> dict[Path, str]:
    """The run folders below ``folder`` whose lock a live process holds, and its pid."""
    held: dict[Path, str] = {}
    if not Path(folder).is_dir():
        return held
    for path in sorted(Path(folder).rglob(LOCK_FILE)):
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        with os.fdopen(descriptor, encoding="utf-8") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                held[path.parent] = handle.read().strip() or "unknown"
    return held


def _link_message(link: Path, folder: Path) -> str:
    return (
        f"{link} is a symbolic link (to {os.readlink(link)}); lowres never follows links "
        f"inside a run folder, since writing through one would change files outside "
        f"{folder}. Remove the link (copy what it points to instead), or choose another "
        "run folder."
    )


def refuse_links(folder: str | Path) -> None:
    """Refuse a run folder with a symbolic link anywhere inside: lowres writes none, and
    writing through one (predictions/, the lock file) would change files elsewhere."""
    folder = Path(folder)
    for parent, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            if os.path.islink(os.path.join(parent, name)):
                raise LowresError(_link_message(Path(parent) / name, folder))


def check_inside(folder: str | Path, target: str | Path) -> None:
    """Refuse to write ``target`` when a folder between ``folder`` and it, or the target
    itself, is a symbolic link."""
    folder, target = Path(folder), Path(target)
    current = folder
    for part in target.relative_to(folder).parts:
        current = current / part
        if current.is_symlink():
            raise LowresError(_link_message(current, folder))


# What lowres writes into a run before training has produced anything of value: a run that
# fails with a user error at that point is removed, so the corrected command can reuse its
# folder. Anything else in it (a checkpoint, predictions, metrics) is kept.
TRAINED_OUTPUTS = ("metrics.json", "checkpoint", "predictions", "train_log.jsonl")


def produced_outputs(folder: str | Path) -> bool:
    folder = Path(folder)
    return any((folder / name).exists() for name in TRAINED_OUTPUTS) or any(
        (folder / "trainer").glob("checkpoint-*")
    )


def unexpected_entries(folder: str | Path) -> list[str]:
    """What a folder holds besides a killed command's scaffolding (its lock, its log)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(
        e.name for e in folder.iterdir() if e.name not in SCAFFOLDING and e.suffix != ".log"
    )


def clear_folder(folder: str | Path, keep: str) -> None:
    """Remove everything in ``folder`` but the entry ``keep`` (the lock still held)."""
    for entry in Path(folder).iterdir():
        if entry.name == keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def remove_if_scaffolding(folder: str | Path) -> bool:
    """Remove a folder that holds nothing but a failed command's scaffolding (and logs)."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    entries = list(folder.iterdir())
    if any(e.name not in SCAFFOLDING and e.suffix != ".log" for e in entries):
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return True


def remove_empty_parents(folder: str | Path, root: str | Path) -> None:
    """Remove the empty folders between ``folder`` and ``root`` (both excluded): what a
    default run folder such as outputs/<task>/<backbone>/<date> left above itself."""
    folder, root = Path(folder).resolve(), Path(root).resolve()
    if root not in folder.parents:
        return
    for parent in folder.parents:
        if parent == root:
            return
        try:
            parent.rmdir()  # only an empty folder goes; a sibling run keeps its parents
        except OSError:
            return
