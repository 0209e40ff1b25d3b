"""Hydra launcher plugins for sweeps: a clear error when one is missing, GPU pinning for joblib,
and dispatching a list of jobs through the chosen launcher.

The launcher configs live in ``configs/hydra/launcher/`` (README, "Scale"). They extend the
plugins' own configs, so the plugin must be installed; Hydra's message for a missing one
("Could not find 'hydra/launcher/submitit_slurm'") does not say what to install.

``lowres train -m`` hands its jobs to the launcher through Hydra's own sweeper. ``lowres
sweep`` plans its runs itself (nested k-shot samples, two-stage dependencies), so it cannot
express them as one cartesian sweep; :func:`launch_jobs` gives the launcher an explicit list
of jobs instead, the same way Hydra's basic sweeper does with each batch.
"""

from __future__ import annotations

import ctypes
import fcntl
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Hydra exports no public constructor for the callbacks a HydraContext needs; this is the
# class Hydra's own multirun builds (hydra/_internal/hydra.py), in every 1.3 release.
from hydra._internal.callbacks import Callbacks
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.types import HydraContext, RunMode
from omegaconf import OmegaConf

from lowres.errors import ConfigError
from lowres.overrides import key_of
from lowres.overrides import read_all as read_overrides

# plugin name as it appears in launcher names -> (module it installs, pip package)
PLUGINS = {
    "submitit": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
}


def _launcher_base(name: str, config_root: Path) -> str:
    """The plugin config a launcher option builds on: its own name or its defaults list."""
    own = config_root / "hydra" / "launcher" / f"{name}.yaml"
    if not own.is_file():
        return name
    defaults = OmegaConf.load(own).get("defaults") or []
    return " ".join([name, *(str(d) for d in defaults)])


def check_launcher(overrides: list[str], config_root: Path) -> None:
    """Raise ConfigError if ``hydra/launcher=X`` needs a plugin that is not installed."""
    for setting in read_overrides(overrides):
        name = setting.value_text
        if setting.key != "hydra/launcher" or not name:
            continue
        base = _launcher_base(name, config_root)
        for plugin, (module, package) in PLUGINS.items():
            if plugin in base and importlib.util.find_spec(module) is None:
                raise ConfigError(
                    f"hydra/launcher={name} runs through Hydra's {plugin} launcher plugin, "
                    f"which is not installed in this environment; install it with "
                    f"`pip install {package}` (or `pip install -e '.[cluster]'` for both "
                    "launcher plugins), then run the sweep again."
                )


def visible_gpus() -> list[str]:
    """GPU ids this process may use, found without initializing CUDA in this process."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g for g in listed.split(",") if g.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


_held_slot = None  # the lock file that reserves this worker's GPU for its lifetime


def pin_gpu_per_worker(lock_dir: Path, gpus: list[str] | None = None) -> str | None:
    """Restrict this worker process to one GPU of several, a different one per worker.

    joblib runs a sweep's jobs in long-lived worker processes; without this every job
    would see all GPUs and the Trainer would spread it over all of them (DataParallel).
    Each worker reserves a slot with an exclusive lock that the OS drops when the worker
    exits, so a restarted worker takes a free GPU. Returns the GPU id, or None when
    there is nothing to pin (one GPU or none, or already pinned in this worker).
    """
    global _held_slot
    if _held_slot is not None:
        return None
    import torch  # the CLI imports this module: torch loads only when a sweep job pins a GPU

    gpus = visible_gpus() if gpus is None else gpus
    if len(gpus) <= 1 or torch.cuda.is_initialized():
        return None
    lock_dir.mkdir(parents=True, exist_ok=True)
    for index, gpu in enumerate(gpus):
        handle = open(lock_dir / f"gpu-{index}.lock", "w")  # noqa: SIM115 - held open on purpose
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _held_slot = handle
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        return gpu
    warnings.warn(
        f"more parallel jobs than GPUs ({len(gpus)}): this job sees all of them; set the "
        "joblib launcher's n_jobs to the number of GPUs.",
        stacklevel=2,
    )
    return None


def pin_gpu_for_sweep_job() -> str | None:
    """In a joblib sweep job, pin one GPU (see ``pin_gpu_per_worker``); else do nothing."""
    if not _in_joblib_job():
        return None
    return pin_gpu_per_worker(Path(HydraConfig.get().sweep.dir) / ".gpu-slots")


def _in_joblib_job() -> bool:
    if not HydraConfig.initialized():
        return False
    hydra_cfg = HydraConfig.get()
    target = str(hydra_cfg.launcher.get("_target_", ""))
    return hydra_cfg.mode == RunMode.MULTIRUN and "joblib" in target.lower()


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> bool:
    """Have the kernel kill this process when its parent dies (Linux); False elsewhere.

    joblib's workers outlive a sweep killed with SIGKILL (nothing runs to stop them) and
    would go on training its runs beside the sweep's resume.
    """
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return False
    if parent == 1 or os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)
    return True


def end_with_dispatcher() -> bool:
    """In a joblib sweep job: the worker dies with the sweep that started it."""
    return _in_joblib_job() and die_with_parent()


BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
# Hydra overrides that belong to the command that dispatches the jobs, not to the jobs: it ran
# in RUN mode with its own folder; the jobs run in MULTIRUN mode (so joblib workers pin their
# GPU, see pin_gpu_for_sweep_job) under the given folder, each in its own subdir.
_DISPATCHER_ONLY = ("hydra.mode", "hydra.run.dir", "hydra.sweep.dir", "hydra.sweep.subdir")


def chosen_launcher() -> str | None:
    """The ``_target_`` of the launcher this Hydra job was started with; None for the basic one."""
    target = str(HydraConfig.get().launcher.get("_target_", ""))
    return None if target in ("", BASIC_LAUNCHER) else target


def quote(value: str | Path) -> str:
    """``value`` as a quoted Hydra override value: commas, brackets and = stay literal."""
    return "'" + str(value).replace("'", "\\'") + "'"


def launch_jobs(
    jobs: Sequence[tuple[str, Sequence[str]]],
    task_function: Callable[[Any], Any],
    *,
    sweep_dir: Path,
    task_overrides: Sequence[str],
    first_index: int = 0,
) -> tuple[list[Any], str]:
    """Run ``jobs`` (subdir under ``sweep_dir``, task overrides) through this job's launcher.

    Must run inside a Hydra job (the one that chose ``hydra/launcher=...``). Each job's
    config is composed from the same primary config with the command's Hydra overrides plus
    its own, and ``task_function`` gets it, with ``HydraConfig`` pointing at
    ``sweep_dir/subdir``. Returns each job's return value (None where the job failed or its
    result did not come back) and, when the launcher itself raised (a submitit job that was
    killed, say), that error as text: the caller then reads what the jobs left on disk.
    """
    hydra_cfg = HydraConfig.get()
    saved = HydraConfig.instance().cfg
    hydra = GlobalHydra.instance().hydra
    assert hydra is not None, "launch_jobs runs inside a Hydra app"
    kept = [o for o in hydra_cfg.overrides.hydra if key_of(o) not in _DISPATCHER_ONLY]
    master = hydra.compose_config(
        config_name=hydra_cfg.job.config_name,
        overrides=[
            *kept,
            "hydra.mode=MULTIRUN",
            f"hydra.sweep.dir={quote(sweep_dir)}",
            *task_overrides,
        ],
        run_mode=RunMode.MULTIRUN,
    )
    context = HydraContext(config_loader=hydra.config_loader, callbacks=Callbacks(master))
    launcher = Plugins.instance().instantiate_launcher(
        config=master, hydra_context=context, task_function=task_function
    )
    job_overrides = [[*o, f"hydra.sweep.subdir={quote(subdir)}"] for subdir, o in jobs]
    try:
        returns = launcher.launch(job_overrides, initial_job_idx=first_index)
    except Exception as err:  # the jobs' own outcomes are on disk; the caller reads them
        return [None] * len(jobs), f"{type(err).__name__}: {err}"
    finally:
        # run_job restores it when a job ran in this process; a launcher that raised may not.
        HydraConfig.instance().cfg = saved
    values = [r.return_value if r.status == JobStatus.COMPLETED else None for r in returns]
    return values, ""
