"""Tasks by name. Adding one: a module here, a YAML file in configs/task, a test row."""

from __future__ import annotations

from lowres.tasks.base import Settings, Split, Task
from lowres.tasks.mlqa import MLQATask
from lowres.tasks.pawsx import PAWSXTask
from lowres.tasks.xquad import XQuADTask

TASKS: dict[str, type[Task]] = {
    "xquad": XQuADTask,
    "mlqa": MLQATask,
    "pawsx": PAWSXTask,
}


def build_task(name: str, settings: Settings, **params) -> Task:
    from lowres.errors import ConfigError

    if name not in TASKS:
        raise ConfigError(f"task={name!r} is unknown; expected one of {', '.join(sorted(TASKS))}.")
    return TASKS[name](settings, **params)


__all__ = ["TASKS", "Settings", "Split", "Task", "build_task"]
