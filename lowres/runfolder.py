"""The run folder: where a run's config, metrics, predictions and checkpoint live, and its
life: claimed and locked before Hydra writes into it, checked (a finished run, another run's
files, a resume with other settings than it was trained with), released.

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

import yaml
from hydra.core.hydra_config import HydraConfig

from lowres.distributed import is_main_process
from lowres.errors import DataFormatError, LowresError
from lowres.files import read_json, write_atomic
from lowres.overrides import key_of
from lowres.overrides import read_all as read_overrides

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


# -- the life of a run folder: claimed and locked before Hydra runs, checked, released ----

# The default run folders (configs/*.yaml hydra.run.dir) live under ./outputs.
OUTPUTS_ROOT = Path("outputs")


def claim_run_folder(
    verb: str, cfg: Any, path: Path, overrides: list[str], *, explicit: bool, extra: list[str]
) -> ClaimedFolder:
    """Choose, check, create and lock the run folder of a train, evaluate or sweep command
    before Hydra writes into it.

    Hydra writes .hydra/ into hydra.run.dir before any lowres code runs, so every refusal
    (a finished run, another run's folder, a folder in use) must happen here. A default
    folder (not ``explicit``) is claimed atomically, so runs started in the same second get
    folders of their own.
    """
    key = "hydra.sweep.dir" if verb == "sweep" else "hydra.run.dir"
    if not explicit:
        _check_default_folder(verb, cfg, path)
        claimed = claim_new_folder(path)
        lock = FolderLock(claimed).acquire()
        return ClaimedFolder(
            claimed, key, lock, created=True, keep_saved_config=False, extra=extra, fresh=True
        )
    created = not path.exists()
    folder = ensure_folder(path)
    # Locked before it is checked: a check without the lock could pass while another
    # process finishes a run there, and Hydra would then rewrite that run's .hydra/.
    lock = FolderLock(folder).acquire()
    try:
        refuse_links(folder)
        keep_saved_config = _check_folder(verb, cfg, folder, overrides)
    except BaseException:
        lock.release()
        if created:
            remove_if_scaffolding(folder)
        raise
    fresh = verb == "train" and not cfg.resume
    return ClaimedFolder(
        folder,
        key,
        lock,
        created=created,
        keep_saved_config=keep_saved_config,
        extra=extra,
        fresh=fresh,
    )


def _launcher_overrides(run_dir: str, given: list[str]) -> list[str]:
    """The launcher a sweep was started with (``hydra/launcher=...``, ``hydra.launcher.*``).

    Hydra keeps these in .hydra/hydra.yaml, not overrides.yaml; a sweep started on SLURM
    resumes on SLURM. A launcher setting given again on the command line wins.
    """
    path = Path(run_dir) / ".hydra" / "hydra.yaml"
    if not path.is_file():
        return []
    recorded = (yaml.safe_load(path.read_text()) or {}).get("hydra", {}).get("overrides", {})
    given_keys = {key_of(o) for o in given}
    if any(key.startswith("hydra/launcher") for key in given_keys):
        return []  # another launcher: none of the old one's settings apply
    return [
        o
        for o in recorded.get("hydra") or []
        if key_of(o).startswith(("hydra/launcher", "hydra.launcher."))
        and key_of(o) not in given_keys
    ]


def resume_overrides(
    run_dir: str, verb: str = "train", given: list[str] | None = None
) -> list[str]:
    """Re-run a run folder's own overrides in that folder, with resume switched on."""
    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not path.is_file():
        raise LowresError(
            f"--resume {run_dir}: no {path} found; expected a folder written by "
            f"`lowres {verb}` (it holds .hydra/overrides.yaml). Check the path."
        )
    previous = [o for o in yaml.safe_load(path.read_text()) or [] if key_of(o) != "resume"]
    # overrides.yaml holds the job's overrides only; the user's config folders (their own
    # method presets) were a Hydra override, kept in hydra.yaml.
    hydra_file = path.parent / "hydra.yaml"
    if hydra_file.is_file():
        saved = (yaml.safe_load(hydra_file.read_text()) or {}).get("hydra", {})
        previous += [
            o
            for o in (saved.get("overrides") or {}).get("hydra") or []
            if key_of(o) == "hydra.searchpath"
        ]
    if verb == "sweep":
        # A sweep resumes by skipping finished runs; no resume flag needed.
        return [
            *previous,
            *_launcher_overrides(run_dir, given or []),
            f"hydra.sweep.dir={Path(run_dir).resolve()}",
        ]
    return [*previous, f"hydra.run.dir={Path(run_dir).resolve()}", "resume=true"]


class ClaimedFolder:
    """The folder a train/evaluate/sweep command writes, chosen and locked before Hydra runs."""

    def __init__(
        self,
        path: Path,
        key: str,
        lock: FolderLock,
        *,
        created: bool,
        keep_saved_config: bool,
        extra: list[str],
        fresh: bool = False,
    ) -> None:
        self.path, self.created, self.lock = path, created, lock
        # A new run in a new or empty folder: all it holds is this command's own.
        self.fresh = fresh
        self.overrides = [f"{key}={path}", *extra]
        if keep_saved_config:
            # A resumed run already holds the config it was trained with; Hydra must not
            # rewrite .hydra/ (it would replace a finished run's config before any check).
            self.overrides.append("hydra.output_subdir=null")

    def close(self, *, succeeded: bool, user_error: bool) -> None:
        """Release the lock; leave nothing behind when the command failed before it
        produced anything."""
        # A new run stopped by a user error before training produced anything (a device
        # it cannot have, a prompt layer the backbone lacks) leaves nothing that would
        # block the corrected command in the same folder.
        if user_error and self.fresh and not produced_outputs(self.path):
            clear_folder(self.path, keep=LOCK_FILE)
        self.lock.release()
        # A command that failed before producing anything leaves no junk folder, nor the
        # empty task/backbone folders above a default one.
        if not succeeded and self.created and remove_if_scaffolding(self.path):
            remove_empty_parents(self.path, OUTPUTS_ROOT)


def _check_default_folder(verb: str, cfg, path: Path) -> None:
    """The default folder is built from names in the config (task.name, backbone.name); one
    holding ``..`` must not place the run outside outputs/."""
    if path.resolve().is_relative_to(OUTPUTS_ROOT.resolve()):
        return
    names = {"task.name": cfg.get("task", {}).get("name"), "backbone.name": None}
    if verb != "evaluate":
        names["backbone.name"] = cfg.get("backbone", {}).get("name")
    culprits = [f"{k}={v}" for k, v in names.items() if v and ".." in Path(str(v)).parts]
    named = " and ".join(culprits) or "a name in hydra.run.dir's default"
    raise LowresError(
        f"The run folder {path} lies outside {OUTPUTS_ROOT}/: {named} leads out of it. The "
        "default folder is outputs/<task.name>/<backbone.name>/<date>; give a name without "
        "'..' (or an absolute path), or choose the folder with hydra.run.dir=DIR."
    )


def _check_folder(verb: str, cfg, path: Path, overrides: list[str]) -> bool:
    """Refuse a given run folder this command must not write into (called under its lock);
    whether the folder's saved config is kept (a resumed run)."""
    keep_saved_config = False
    if verb == "train" and not cfg.resume and holds_run(path):
        if (path / "metrics.json").is_file():
            raise LowresError(
                f"The run folder {path} already holds a finished run (metrics.json); "
                "lowres never overwrites one. Choose another hydra.run.dir."
            )
        raise LowresError(
            f"The run folder {path} already holds another run's files (.hydra/); lowres does "
            f"not train a new run over them. Continue that run with `lowres train --resume "
            f"{path}`, or choose another hydra.run.dir."
        )
    if verb == "train" and cfg.resume and (path / ".hydra" / "overrides.yaml").is_file():
        check_same_overrides(path, overrides)
        keep_saved_config = True
    if verb == "evaluate" and holds_run(path):
        raise LowresError(
            f"hydra.run.dir={path} already holds a run (.hydra/ or metrics.json); "
            "`lowres evaluate` writes its scores into a new folder and never into a trained "
            "run's. Leave hydra.run.dir out (a new folder under outputs/evaluate/) or give an "
            "empty one."
        )
    if verb == "sweep" and (path / "metrics.json").is_file():
        raise LowresError(
            f"hydra.sweep.dir={path} is a finished training run's folder, not a sweep folder; "
            "choose another hydra.sweep.dir."
        )
    if verb == "sweep":
        busy = held_locks(path / "runs")  # the sweep folder's own lock is this command's
        if busy:
            pids = ", ".join(sorted(set(busy.values())))
            names = ", ".join(str(folder.relative_to(path)) for folder in list(busy)[:3])
            raise LowresError(
                f"Runs of the sweep {path} are still being trained by process(es) {pids} "
                f"({names}{', ...' if len(busy) > 3 else ''}): workers left by a sweep that "
                "was killed, or another sweep command. Two writers in one run would mix its "
                f"results. Wait for them to finish or stop them (kill {pids.split(',')[0]}), "
                "then resume."
            )
    foreign = unexpected_entries(path)
    a_sweep = verb == "sweep" and (path / "sweep.json").is_file()
    if foreign and not holds_run(path) and not a_sweep:
        key = "hydra.sweep.dir" if verb == "sweep" else "hydra.run.dir"
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise LowresError(
            f"{key}={path} is a folder of other files ({shown}), not a lowres run; lowres "
            "writes a new run only into a new or empty folder, so that none of them is "
            f"overwritten. Choose another {key} (a folder that does not exist yet)."
        )
    return keep_saved_config


def _task_overrides(overrides: list[str]) -> list[str]:
    """The overrides Hydra saves in overrides.yaml: not its own, not resume."""
    return sorted(
        o
        for o in overrides
        if not (key_of(o).startswith(("hydra.", "hydra/")) or key_of(o) == "resume")
    )


def _settings(overrides: list[str]) -> dict[str, str]:
    """Override key -> value, the last one winning as in Hydra (``+``/``~`` prefixes kept
    apart from the key, so ``+task=x`` and ``task=x`` name the same setting)."""
    settings = {}
    for setting in read_overrides(_task_overrides(overrides)):
        settings[setting.prefix.lstrip("+") + setting.key] = setting.value_text
    return settings


def check_same_overrides(path: Path, overrides: list[str]) -> None:
    saved = yaml.safe_load((path / ".hydra" / "overrides.yaml").read_text()) or []
    before, now = _settings(saved), _settings(overrides)
    added = [f"{k}={v}" for k, v in now.items() if k not in before]
    changed = [f"{k}={now[k]} (trained with {before[k]})" for k in now if k in before
               and now[k] != before[k]]  # fmt: skip
    dropped = [f"{k}={v}" for k, v in before.items() if k not in now]
    if added or changed or dropped:
        raise LowresError(
            f"Resuming {path} with other settings than it was trained with (added: "
            f"{', '.join(added) or 'none'}; changed: {', '.join(changed) or 'none'}; missing: "
            f"{', '.join(dropped) or 'none'}); a resumed run must continue the same run. "
            f"Resume it as it was with `lowres train --resume {path}` (no other overrides), "
            "or start a new run in another folder."
        )


def check_resumable(run_dir: str, given: list[str]) -> bool:
    """Whether there is anything to resume: a finished run has nothing left (False); a
    folder without a checkpoint would silently start from step 0 (refused)."""
    path = Path(run_dir)
    elsewhere = [
        s.text
        for s in read_overrides(given)
        if s.key in ("hydra.run.dir", "hydra.sweep.dir") and "~" not in s.prefix
    ]
    if elsewhere:
        raise LowresError(
            f"--resume {run_dir} continues the run in its own folder, so {elsewhere[0]} "
            "cannot apply. Resume without it, or copy the folder there first and resume "
            "the copy: `lowres train --resume COPY`."
        )
    if not (path / ".hydra" / "overrides.yaml").is_file():
        return True  # not a run folder: resume_overrides says so
    if RunFolder.finished_at(path):
        return False
    if not any((path / "trainer").glob("checkpoint-*")):
        raise LowresError(
            f"--resume {run_dir}: the run has no resumable checkpoint (no "
            f"{path / 'trainer'}/checkpoint-N); runs save them only with "
            "trainer.save_steps=N. Start it again in a new folder (the same command without "
            "--resume and hydra.run.dir), with trainer.save_steps set to make it resumable."
        )
    return True
