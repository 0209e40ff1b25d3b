"""Tasks by name. Adding one: a module here, a YAML file in configs/task, a test row."""

from __future__ import annotations

from lowres.errors import ConfigError
from lowres.tasks.base import DataSettings, Split, Task
from lowres.tasks.mlqa import MLQATask
from lowres.tasks.pawsx import PAWSXTask
from lowres.tasks.xquad import XQuADTask

TASKS: dict[str, type[Task]] = {
    "xquad": XQuADTask,
    "mlqa": MLQATask,
    "pawsx": PAWSXTask,
}


def create_task(name: str, settings: DataSettings, **params) -> Task:
    if name not in TASKS:
        raise ConfigError(f"task={name!r} is unknown; expected one of {', '.join(sorted(TASKS))}.")
    return TASKS[name](settings, **params)


__all__ = ["TASKS", "DataSettings", "Split", "Task", "create_task"]
