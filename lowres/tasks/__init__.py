"""Tasks by name (``lowres.registry.TASKS``). A built-in task: a module here, a YAML file in
configs/task, a line in the registry.

A task on files in a known format needs no code: a YAML file with ``reader: squad_files`` or
``reader: pair_tsv`` and file patterns (:mod:`lowres.tasks.files`; ``configs/task/tydiqa.yaml``).
"""

from __future__ import annotations

from lowres.errors import ConfigError
from lowres.registry import READERS, TASKS
from lowres.tasks.base import DataSettings, Split, Task


def create_task(name: str, settings: DataSettings, **params) -> Task:
    reader = params.get("reader", "")
    if reader:
        return READERS.load(reader)(settings, name=name, **params)
    if name not in TASKS.names():  # names only: a task's name also names its run folders
        raise ConfigError(
            f"task={name!r} is unknown; expected one of {', '.join(sorted(TASKS.names()))}, "
            "or a task "
            "read from files by pattern (task.reader=squad_files or pair_tsv with task.files)."
        )
    return TASKS.load(name)(settings, **params)


__all__ = ["TASKS", "DataSettings", "Split", "Task", "create_task"]
